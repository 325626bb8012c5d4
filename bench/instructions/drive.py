"""Sends N chat requests on one keep-alive connection (bench/instructions/run.sh).

usage: drive.py PORT N [json|stream]
"""
import http.client
import json
import sys

port, n = int(sys.argv[1]), int(sys.argv[2])
stream = len(sys.argv) > 3 and sys.argv[3] == "stream"
body = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say five words about rivers."},
    ],
    "temperature": 0,
    "max_tokens": 256,
}
if stream:
    body["stream"] = True
raw = json.dumps(body)
headers = {
    "authorization": "Bearer sk-test",
    "content-type": "application/json",
    "x-mock-words": "20",
}
conn = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    conn.request("POST", "/v1/chat/completions", raw, headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        sys.exit(f"status {resp.status}: {data[:300]!r}")
