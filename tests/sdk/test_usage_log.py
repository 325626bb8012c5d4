"""Runs after every other SDK test: the usage log holds one line per request they made."""

from __future__ import annotations

import json
import time

import pytest

REQUIRED = ("request_id", "endpoint", "model", "status")


def _read(path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.run_last
def test_usage_log_has_one_line_per_request(sluice) -> None:
    expected = list(sluice.request_ids)
    assert expected, "no request went through Sluice before this test"
    assert "<missing>" not in expected, "a response came back without x-sluice-request-id"
    assert len(set(expected)) == len(expected), "request ids are not unique"

    # The writer runs off the request path: give it a moment to catch up.
    deadline = time.monotonic() + 10
    records = _read(sluice.usage_path)
    while len(records) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.1)
        records = _read(sluice.usage_path)

    for record in records:
        for key in REQUIRED:
            assert key in record, f"usage record without {key}: {record}"
    ids = [r["request_id"] for r in records]
    assert len(set(ids)) == len(ids), "a request was logged more than once"
    assert sorted(ids) == sorted(expected), (
        f"missing from the log: {sorted(set(expected) - set(ids))}; "
        f"logged but not seen by a client: {sorted(set(ids) - set(expected))}"
    )

    for r in records:
        assert isinstance(r["status"], int) and 100 <= r["status"] <= 599, r
        assert isinstance(r["endpoint"], str) and r["endpoint"], r
        if r["status"] == 200 and r["endpoint"] not in ("models", "other"):
            assert r["model"], f"a successful model request logged without its model: {r}"
        if r.get("stream") and r["status"] == 200:
            assert r.get("output_tokens") is not None, f"stream logged without output_tokens: {r}"

    by_endpoint = {r["endpoint"] for r in records}
    for endpoint in ("chat_completions", "embeddings", "responses", "messages", "count_tokens"):
        assert endpoint in by_endpoint, f"no {endpoint} request in the usage log"
    streams = [r for r in records if r.get("stream") and r["status"] == 200]
    assert any(r["endpoint"] == "chat_completions" for r in streams)
    assert any(r["endpoint"] == "messages" for r in streams)
    assert {r["status"] for r in records} >= {200, 400, 401, 403, 404, 429, 500}


@pytest.mark.run_last
def test_usage_log_marks_delivered_responses_complete(sluice) -> None:
    """A body the client read to the end is `end: complete`, sized (non-stream) ones too.

    Regression: sized bodies used to be logged `client_gone`, because hyper stops polling a
    body once Content-Length bytes are written and only the tap's Drop saw the end.
    """
    deadline = time.monotonic() + 10
    records = _read(sluice.usage_path)
    while len(records) < len(sluice.request_ids) and time.monotonic() < deadline:
        time.sleep(0.1)
        records = _read(sluice.usage_path)
    # Every client in these tests read its whole response (errors included).
    wrong = [
        (r["endpoint"], r["status"], r["stream"], r.get("end"))
        for r in records
        if r.get("end") != "complete"
    ]
    assert not wrong, f"responses the client fully read but logged as not complete: {wrong}"
