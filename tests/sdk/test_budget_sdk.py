"""The official OpenAI SDK against an exhausted Sluice budget: `insufficient_quota`, no retry."""

from __future__ import annotations

import openai
import pytest

from conftest import TEST_KEY


def test_openai_sdk_gets_insufficient_quota_and_does_not_retry(sluice) -> None:
    seen: list[int] = []

    def note(response) -> None:
        seen.append(response.status_code)
        sluice.note_response(response)

    client = openai.OpenAI(
        base_url=f"http://{sluice.data}/v1",
        api_key=TEST_KEY,
        max_retries=2,  # the SDK default: it would retry a plain 429
        timeout=30.0,
        http_client=openai.DefaultHttpxClient(trust_env=False, event_hooks={"response": [note]}),
    )
    try:
        # $1000 per 1M tokens: each request's worst case is a few cents; $0.05 runs out fast.
        with pytest.raises(openai.RateLimitError) as excinfo:
            for _ in range(20):
                client.chat.completions.create(
                    model="budget-test-model",
                    max_tokens=5,
                    messages=[{"role": "user", "content": "spend"}],
                )
        err = excinfo.value
        assert err.status_code == 429
        assert err.code == "insufficient_quota"
        assert err.type == "insufficient_quota"
        assert err.response.headers["x-should-retry"] == "false"
        assert seen.count(429) == 1, f"the SDK retried an insufficient_quota answer: {seen}"
    finally:
        client.close()
