"""The official Anthropic Python SDK against Sluice, with the mock provider behind it.

`claude-*` is routed to the `anthropic` provider (the mock at its bare origin). The mock
answers `"echo: " + <last user text>`; input tokens are words + 3 per message (the system
prompt counts as one message), output tokens are streamed pieces (one per word).
"""

from __future__ import annotations

import json

import anthropic
import pytest

# A made-up name: real ones get deprecation warnings from the SDK as they age.
MODEL = "claude-sluice-test"

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

UNICODE_PROMPT = "Grüße 👋🏽 👩‍🔬 こんにちは 世界 e\u0301 a\u0308\u0323 𝔘𝔫𝔦 שלום"


def input_tokens(*texts: str) -> int:
    return sum(len(t.split()) + 3 for t in texts)


def echo_pieces(prompt: str) -> int:
    return len(("echo: " + prompt).split())


def test_messages_non_stream(anthropic_client: anthropic.Anthropic) -> None:
    prompt = "Hello from the Anthropic SDK"
    raw = anthropic_client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=256,
        system="You are a test.",
        messages=[{"role": "user", "content": prompt}],
    )
    assert raw.headers.get("x-sluice-request-id")
    assert raw.headers.get("x-sluice-provider") == "mock-anthropic"
    assert raw.headers.get("x-sluice-model") == MODEL
    message = raw.parse()
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert len(message.content) == 1
    assert message.content[0].type == "text"
    assert message.content[0].text == f"echo: {prompt}"
    assert message.usage.input_tokens == input_tokens("You are a test.", prompt)
    assert message.usage.output_tokens == echo_pieces(prompt)


def test_messages_max_tokens_truncates(anthropic_client: anthropic.Anthropic) -> None:
    message = anthropic_client.messages.create(
        model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "one two three four"}]
    )
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text == "echo: one"


def test_messages_stream(anthropic_client: anthropic.Anthropic) -> None:
    prompt = "stream me some words"
    with anthropic_client.messages.stream(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        deltas = list(stream.text_stream)
        text = stream.get_final_text()
        final = stream.get_final_message()
    assert "".join(deltas) == f"echo: {prompt}"
    assert len(deltas) == echo_pieces(prompt)
    assert text == f"echo: {prompt}"
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == input_tokens(prompt)
    assert final.usage.output_tokens == echo_pieces(prompt)


def test_messages_stream_raw_events(anthropic_client: anthropic.Anthropic) -> None:
    stream = anthropic_client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "raw events"}],
        stream=True,
        extra_headers={"x-mock-fragment": "1"},
    )
    types = [event.type for event in stream]
    assert types[0] == "message_start"
    assert types[-1] == "message_stop"
    assert "content_block_delta" in types and "message_delta" in types


def test_unicode_round_trip(anthropic_client: anthropic.Anthropic) -> None:
    message = anthropic_client.messages.create(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": UNICODE_PROMPT}]
    )
    assert message.content[0].text == f"echo: {UNICODE_PROMPT}"
    with anthropic_client.messages.stream(
        model=MODEL,
        max_tokens=256,
        messages=[{"role": "user", "content": UNICODE_PROMPT}],
        extra_headers={"x-mock-chunk-chars": "2", "x-mock-fragment": "1"},
    ) as stream:
        assert stream.get_final_text() == f"echo: {UNICODE_PROMPT}"


def test_tool_use_non_stream(anthropic_client: anthropic.Anthropic) -> None:
    message = anthropic_client.messages.create(
        model=MODEL,
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
    )
    assert message.stop_reason == "tool_use"
    blocks = [b for b in message.content if b.type == "tool_use"]
    assert len(blocks) == 1
    assert blocks[0].name == "get_weather"
    assert blocks[0].input == {"city": "Paris"}


def test_tool_use_stream(anthropic_client: anthropic.Anthropic) -> None:
    with anthropic_client.messages.stream(
        model=MODEL,
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "weather for Paris"}],
    ) as stream:
        partial = "".join(
            event.delta.partial_json
            for event in stream
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta"
        )
        final = stream.get_final_message()
    assert json.loads(partial) == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use"
    assert block.name == "get_weather"
    assert block.input == {"city": "Paris"}
    assert final.usage.output_tokens > 0


def test_count_tokens(anthropic_client: anthropic.Anthropic) -> None:
    result = anthropic_client.messages.count_tokens(
        model=MODEL,
        system="Count carefully.",
        messages=[{"role": "user", "content": "how many tokens is this"}],
    )
    assert result.input_tokens == input_tokens("Count carefully.", "how many tokens is this")


def test_provider_key_replaces_virtual_key(
    anthropic_client: anthropic.Anthropic, keys: dict
) -> None:
    echoed = anthropic_client.get("/v1/echo-headers", cast_to=object)
    headers = echoed["headers"]
    assert headers.get("x-api-key") == keys["upstream_anthropic"]
    assert headers.get("anthropic-version")
    assert keys["test"] not in json.dumps(echoed)


def test_bad_key_is_401(make_anthropic) -> None:
    client = make_anthropic("sk-ant-not-a-sluice-key")
    with pytest.raises(anthropic.AuthenticationError) as info:
        client.messages.create(
            model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    err = info.value
    assert err.status_code == 401
    assert isinstance(err.body, dict) and err.body.get("type") == "error"
    assert err.body["error"]["type"] == "authentication_error"
    assert err.response.headers.get("x-sluice-request-id")


def test_model_of_the_other_api_is_translated(anthropic_client: anthropic.Anthropic) -> None:
    """`gpt-4o` matches only `*` (the OpenAI mock): the request is translated, not a 404
    (more in test_cross_api.py)."""
    raw = anthropic_client.messages.with_raw_response.create(
        model="gpt-4o", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers.get("x-sluice-provider") == "mock-openai"
    assert raw.parse().content[0].text == "echo: hi"


def test_model_not_allowed_is_403(make_anthropic, keys: dict) -> None:
    client = make_anthropic(keys["limited"])
    ok = client.messages.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert ok.content[0].text == "echo: hi"
    # The limited key allows claude-* only: a glob-matched but disallowed name is refused.
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.count_tokens(
            model="not-claude", messages=[{"role": "user", "content": "hi"}]
        )


def test_upstream_400_passes_through(anthropic_client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        anthropic_client.messages.create(
            model=MODEL,
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "400"},
        )
    assert info.value.body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("status", [500, 529])
def test_upstream_fault(anthropic_client: anthropic.Anthropic, status: int) -> None:
    with pytest.raises(anthropic.InternalServerError) as info:
        anthropic_client.messages.create(
            model=MODEL,
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": str(status)},
        )
    assert info.value.status_code == status
    assert info.value.response.headers.get("x-sluice-request-id")


def test_upstream_fault_on_stream(anthropic_client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError):
        with anthropic_client.messages.stream(
            model=MODEL,
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "500"},
        ) as stream:
            stream.get_final_text()
