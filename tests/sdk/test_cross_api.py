"""Crossing providers with the official SDKs, unchanged: the OpenAI SDK talking to a model
only an Anthropic deployment serves (`claude-*`, first in the config) and the Anthropic SDK
talking to one only an OpenAI deployment serves (`gpt-4o-mini`). Sluice translates the request,
the answer, the stream (chunk by chunk, tool-call arguments included) and the errors.

The mock answers `"echo: " + <last user text>` in either API, and calls the weather tool when
the text asks about the weather and tools are offered.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

CLAUDE = "claude-sluice-test"  # claude-* -> the Anthropic mock
GPT = "gpt-4o-mini"  # -> the OpenAI mock as "mock-model"

OPENAI_WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]

ANTHROPIC_WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def test_openai_sdk_to_an_anthropic_deployment(openai_client: openai.OpenAI) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(
        model=CLAUDE,
        messages=[
            {"role": "system", "content": "You are a test."},
            {"role": "user", "content": "Hello across the APIs"},
        ],
        max_tokens=64,
    )
    assert raw.headers.get("x-sluice-provider") == "mock-anthropic"
    completion = raw.parse()
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.message.content == "echo: Hello across the APIs"
    assert choice.finish_reason == "stop"
    assert completion.usage.completion_tokens == 5
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_openai_sdk_streams_from_an_anthropic_deployment(openai_client: openai.OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model=CLAUDE,
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == "echo: one two three"
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 4


def test_openai_sdk_tool_call_stream_from_an_anthropic_deployment(
    openai_client: openai.OpenAI,
) -> None:
    stream = openai_client.chat.completions.create(
        model=CLAUDE,
        messages=[{"role": "user", "content": "weather in Paris, please"}],
        tools=OPENAI_WEATHER,
        stream=True,
    )
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                if call.function and call.function.name:
                    names[call.index] = call.function.name
                if call.function and call.function.arguments:
                    arguments[call.index] = arguments.get(call.index, "") + call.function.arguments
            finish = choice.finish_reason or finish
    assert names == {0: "get_weather"}
    assert json.loads(arguments[0]) == {"city": "Paris"}
    assert finish == "tool_calls"


def test_openai_sdk_tool_call_from_an_anthropic_deployment(openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.create(
        model=CLAUDE,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=OPENAI_WEATHER,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}


def test_anthropic_sdk_to_an_openai_deployment(anthropic_client: anthropic.Anthropic) -> None:
    raw = anthropic_client.messages.with_raw_response.create(
        model=GPT,
        max_tokens=64,
        system="You are a test.",
        messages=[{"role": "user", "content": "Hello across the APIs"}],
    )
    assert raw.headers.get("x-sluice-provider") == "mock-openai"
    message = raw.parse()
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: Hello across the APIs"
    assert message.usage.output_tokens == 5


def test_anthropic_sdk_streams_from_an_openai_deployment(
    anthropic_client: anthropic.Anthropic,
) -> None:
    with anthropic_client.messages.stream(
        model=GPT,
        max_tokens=64,
        messages=[{"role": "user", "content": "one two three"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: one two three"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4


def test_anthropic_sdk_tool_use_stream_from_an_openai_deployment(
    anthropic_client: anthropic.Anthropic,
) -> None:
    with anthropic_client.messages.stream(
        model=GPT,
        max_tokens=256,
        tools=[ANTHROPIC_WEATHER],
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = next(b for b in final.content if b.type == "tool_use")
    assert block.name == "get_weather"
    assert block.input == {"city": "Paris"}


def test_errors_keep_their_meaning_across_the_apis(make_openai, keys: dict) -> None:
    """An Anthropic 529 (overloaded) is an OpenAI 503: the OpenAI SDK retries it."""
    client = make_openai(keys["test"])
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(
            model=CLAUDE,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "529"},
        )
    assert info.value.status_code == 503
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=CLAUDE, messages=[{"role": "user", "content": "hi"}], n=2
        )
    assert "cannot be translated" in str(info.value)
