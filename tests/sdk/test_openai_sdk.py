"""The official OpenAI Python SDK against Sluice, with the mock provider behind it.

The mock answers `"echo: " + <last user text>`, streams one piece per word, and counts
prompt tokens as words + 3 per message and completion tokens as streamed pieces.
`gpt-4o-mini` is routed with `upstream_model = "mock-model"` (so Sluice rewrites the
body); any other name goes through `*` unchanged.
"""

from __future__ import annotations

import json

import openai
import pytest

REWRITTEN = "gpt-4o-mini"  # -> upstream "mock-model"
PASSED = "gpt-4.1-nano"  # -> upstream under its own name
HI = [{"role": "user", "content": "hi"}]
MODELS = [pytest.param(REWRITTEN, id="rewritten-model"), pytest.param(PASSED, id="same-model")]

WEATHER_TOOLS = [
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

# Emoji (with skin tone and ZWJ sequences, outside the BMP), CJK, combining marks, RTL,
# an ideographic space and characters JSON escapes.
UNICODE_PROMPT = (
    "Héllo wörld 👋🏽 👨‍👩‍👧‍👦 你好，世界\u3000日本語のテキスト 한국어 "
    "e\u0301 a\u0308\u0323 Z\u0351\u0364\u036b 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 مرحبا \"quoted\" back\\slash tab\there"
)


def upstream_model(model: str) -> str:
    return "mock-model" if model == REWRITTEN else model


def prompt_tokens(*texts: str) -> int:
    return sum(len(t.split()) + 3 for t in texts)


def echo_pieces(prompt: str) -> int:
    return len(("echo: " + prompt).split())


# --------------------------------------------------------------------------------------------
# Chat completions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_chat_non_stream(openai_client: openai.OpenAI, model: str) -> None:
    prompt = "Say hello to Sluice"
    raw = openai_client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )
    assert raw.status_code == 200
    assert raw.headers.get("x-sluice-request-id")
    assert raw.headers.get("x-sluice-model") == upstream_model(model)
    assert raw.headers.get("x-sluice-provider") == "mock-openai"
    completion = raw.parse()
    assert completion.model == upstream_model(model)
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == f"echo: {prompt}"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == prompt_tokens(prompt)
    assert completion.usage.completion_tokens == echo_pieces(prompt)
    assert completion.usage.total_tokens == prompt_tokens(prompt) + echo_pieces(prompt)


def test_chat_system_and_history(openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.create(
        model=REWRITTEN,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "question"}],
            },
        ],
    )
    assert completion.choices[0].message.content == "echo: second question"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == prompt_tokens(
        "You are terse.", "first question", "first answer", "second question"
    )


@pytest.mark.parametrize("model", MODELS)
def test_chat_stream_without_usage(openai_client: openai.OpenAI, model: str) -> None:
    """Sluice asks upstream for usage on its own behalf; the client must not see it."""
    prompt = "stream these few words please"
    stream = openai_client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], stream=True
    )
    chunks = list(stream)
    assert chunks, "no chunks"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"echo: {prompt}"
    for chunk in chunks:
        assert chunk.usage is None, f"usage leaked into a chunk: {chunk}"
        assert "usage" not in chunk.model_fields_set, f"chunk carries a usage key: {chunk}"
        assert chunk.choices, f"a usage-only chunk (choices: []) leaked: {chunk}"
        assert chunk.model == upstream_model(model)
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", MODELS)
def test_chat_stream_with_usage(openai_client: openai.OpenAI, model: str) -> None:
    prompt = "count my tokens"
    stream = openai_client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"echo: {prompt}"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == prompt_tokens(prompt)
    assert last.usage.completion_tokens == echo_pieces(prompt)
    for chunk in chunks[:-1]:
        assert chunk.usage is None


def test_chat_stream_headers(openai_client: openai.OpenAI) -> None:
    with openai_client.chat.completions.with_streaming_response.create(
        model=REWRITTEN, messages=[{"role": "user", "content": "hi"}], stream=True
    ) as response:
        assert response.status_code == 200
        assert response.headers.get("content-type", "").startswith("text/event-stream")
        assert response.headers.get("x-sluice-request-id")
        assert response.headers.get("x-sluice-model") == "mock-model"
        body = "".join(response.iter_text())
    assert body.rstrip().endswith("data: [DONE]")
    assert '"usage"' not in body


def test_chat_stream_helper(openai_client: openai.OpenAI) -> None:
    """The SDK's higher-level `.stream()` helper accumulates the same answer."""
    prompt = "helper stream"
    with openai_client.chat.completions.stream(
        model=PASSED, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == f"echo: {prompt}"


# --------------------------------------------------------------------------------------------
# Tool calls
# --------------------------------------------------------------------------------------------


def test_tool_call_non_stream(openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.create(
        model=REWRITTEN,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=WEATHER_TOOLS,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1
    assert calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}


def test_tool_call_stream(openai_client: openai.OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model=REWRITTEN,
        messages=[{"role": "user", "content": "weather in Paris, please"}],
        tools=WEATHER_TOOLS,
        stream=True,
    )
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    finish = None
    for chunk in stream:
        assert chunk.usage is None
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


# --------------------------------------------------------------------------------------------
# Embeddings, Responses, models
# --------------------------------------------------------------------------------------------


def test_embeddings_single(openai_client: openai.OpenAI) -> None:
    result = openai_client.embeddings.create(model="text-embedding-3-small", input="hello world")
    assert len(result.data) == 1
    vector = result.data[0].embedding
    assert len(vector) == 8
    assert all(-1.0 <= x <= 1.0 for x in vector)
    assert result.usage.prompt_tokens == 2
    again = openai_client.embeddings.create(model="text-embedding-3-small", input="hello world")
    assert again.data[0].embedding == vector


def test_embeddings_list(openai_client: openai.OpenAI) -> None:
    inputs = ["alpha", "beta gamma", "délta 東京"]
    result = openai_client.embeddings.create(
        model="text-embedding-3-small", input=inputs, encoding_format="float"
    )
    assert [d.index for d in result.data] == [0, 1, 2]
    vectors = [tuple(d.embedding) for d in result.data]
    assert all(len(v) == 8 for v in vectors)
    assert len(set(vectors)) == 3
    assert result.usage.prompt_tokens == 5


def test_responses_non_stream(openai_client: openai.OpenAI) -> None:
    response = openai_client.responses.create(
        model=REWRITTEN, instructions="Be brief.", input="Tell me something"
    )
    assert response.status == "completed"
    assert response.model == "mock-model"
    assert response.output_text == "echo: Tell me something"
    assert response.usage is not None
    assert response.usage.input_tokens == prompt_tokens("Be brief.", "Tell me something")
    assert response.usage.output_tokens == echo_pieces("Tell me something")


def test_responses_stream(openai_client: openai.OpenAI) -> None:
    prompt = "stream a response"
    stream = openai_client.responses.create(model=PASSED, input=prompt, stream=True)
    deltas: list[str] = []
    types: list[str] = []
    final = None
    for event in stream:
        types.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            final = event.response
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert "".join(deltas) == f"echo: {prompt}"
    assert final is not None
    assert final.output_text == f"echo: {prompt}"
    assert final.usage is not None and final.usage.output_tokens == echo_pieces(prompt)


def test_responses_stream_helper(openai_client: openai.OpenAI) -> None:
    with openai_client.responses.stream(model=REWRITTEN, input="helper response") as stream:
        final = stream.get_final_response()
    assert final.output_text == "echo: helper response"


def test_models_list(openai_client: openai.OpenAI) -> None:
    ids = [m.id for m in openai_client.models.list()]
    assert "gpt-4o-mini" in ids


def test_models_list_includes_glob_routed_provider_ids(
    openai_client: openai.OpenAI, make_openai, keys: dict
) -> None:
    # `*` sends any name on to mock-openai, so its own list is merged in after the
    # configured names (the mock lists mock-model, mock-model-large, ...).
    models = list(openai_client.models.list())
    ids = [m.id for m in models]
    assert ids[0] == "gpt-4o-mini"
    assert "mock-model-large" in ids
    assert len(ids) == len(set(ids))
    large = next(m for m in models if m.id == "mock-model-large")
    assert large.object == "model" and large.owned_by == "mock-openai"
    assert openai_client.models.retrieve("mock-model-large").id == "mock-model-large"
    # The limited key (gpt-4o-mini, claude-*) sees only what it may use.
    limited = make_openai(keys["limited"])
    assert [m.id for m in limited.models.list()] == ["gpt-4o-mini"]
    with pytest.raises(openai.NotFoundError):
        limited.models.retrieve("mock-model-large")


# --------------------------------------------------------------------------------------------
# Content fidelity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_unicode_round_trip_non_stream(openai_client: openai.OpenAI, model: str) -> None:
    completion = openai_client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": UNICODE_PROMPT}]
    )
    assert completion.choices[0].message.content == f"echo: {UNICODE_PROMPT}"


@pytest.mark.parametrize("model", MODELS)
def test_unicode_round_trip_stream(openai_client: openai.OpenAI, model: str) -> None:
    # Small chunks so that pieces split grapheme clusters (and the SSE rewriter sees them).
    stream = openai_client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": UNICODE_PROMPT}],
        stream=True,
        extra_headers={"x-mock-chunk-chars": "3", "x-mock-fragment": "1"},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == f"echo: {UNICODE_PROMPT}"


def _big_prompt(target_bytes: int = 2 * 1024 * 1024) -> str:
    words = "sluice lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod "
    return (words * (target_bytes // len(words) + 1))[:target_bytes].strip()


def test_big_prompt_non_stream(openai_client: openai.OpenAI) -> None:
    prompt = _big_prompt()
    assert len(prompt.encode()) > 2_000_000
    completion = openai_client.chat.completions.create(
        model=REWRITTEN, messages=[{"role": "user", "content": prompt}]
    )
    assert completion.choices[0].message.content == f"echo: {prompt}"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == prompt_tokens(prompt)


def test_big_prompt_stream(openai_client: openai.OpenAI) -> None:
    prompt = _big_prompt()
    stream = openai_client.chat.completions.create(
        model=REWRITTEN,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        extra_headers={"x-mock-chunk-chars": "65536"},
    )
    chunks = list(stream)
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"echo: {prompt}"


# --------------------------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------------------------


def test_provider_key_replaces_virtual_key(openai_client: openai.OpenAI, keys: dict) -> None:
    """The mock echoes what it received on unknown paths: the provider key, never ours."""
    echoed = openai_client.get("/echo-headers", cast_to=object)
    headers = echoed["headers"]
    assert headers.get("authorization") == f"Bearer {keys['upstream_openai']}"
    assert keys["test"] not in json.dumps(echoed)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_bad_key_is_401(make_openai) -> None:
    client = make_openai("sk-not-a-sluice-key")
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model=REWRITTEN, messages=HI)
    err = info.value
    assert err.status_code == 401
    assert err.response.headers.get("x-sluice-request-id")
    assert isinstance(err.body, dict) and err.body.get("code") == "invalid_api_key"
    assert "sk-not-a-sluice-key" not in err.response.text


def test_model_not_allowed_is_403(make_openai, keys: dict) -> None:
    client = make_openai(keys["limited"])
    ok = client.chat.completions.create(model=REWRITTEN, messages=HI)
    assert ok.choices[0].message.content == "echo: hi"
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model=PASSED, messages=HI)
    assert info.value.status_code == 403


def test_empty_model_is_400(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model="", messages=[])
    assert info.value.status_code == 400
    assert isinstance(info.value.body, dict) and info.value.body.get("message")


def test_invalid_json_is_400(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        openai_client.post(
            "/chat/completions",
            cast_to=object,
            content=b'{"model": "gpt-4o-mini", "messages": [',
            options={"headers": {"content-type": "application/json"}},
        )


def test_upstream_500(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        openai_client.chat.completions.create(
            model=REWRITTEN,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "500"},
        )
    assert info.value.status_code == 500
    assert info.value.response.headers.get("x-sluice-request-id")


def test_upstream_429(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        openai_client.chat.completions.create(
            model=REWRITTEN,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "429", "x-mock-retry-after": "7"},
        )
    assert info.value.status_code == 429
    assert info.value.response.headers.get("retry-after") == "7"


def test_upstream_500_on_stream(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        openai_client.chat.completions.create(
            model=REWRITTEN,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_headers={"x-mock-status": "500"},
        )
