//! Replays a cached JSON response as the SSE stream the same API would have
//! sent, so a client that asks to stream gets a stream from a cache hit.
//! The events follow each provider's format closely enough for the official
//! SDKs; the text arrives in small pieces, all at once.

mod anthropic;
mod openai;
mod responses;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::vocab::Endpoint;

/// Text pieces aim for about this many bytes, cut after whitespace (a few
/// words each, as a model would stream them).
const PIECE_BYTES: usize = 20;
/// A piece with no whitespace to cut at is cut at this size.
const MAX_PIECE_BYTES: usize = 64;

/// The SSE events (one complete `data: ...\n\n` or `event: ...\ndata: ...\n\n`
/// block each) that stream `entry`'s response; `include_usage` adds the
/// OpenAI usage chunk (the client's `stream_options.include_usage`). `None`
/// when the body is not a JSON object, holds something a stream cannot carry,
/// or the endpoint does not stream.
pub fn to_sse(endpoint: Endpoint, body: &[u8], include_usage: bool) -> Option<Vec<Bytes>> {
    let Ok(Value::Object(response)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    match endpoint {
        Endpoint::ChatCompletions => openai::chat(&response, include_usage),
        Endpoint::Completions => openai::completions(&response, include_usage),
        Endpoint::Responses => responses::events(&response),
        Endpoint::Messages => anthropic::events(&response),
        _ => None,
    }
}

/// Splits `text` into stream-sized pieces whose concatenation is `text`.
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut previous_ws = false;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        let len = i - start;
        if (len >= PIECE_BYTES && previous_ws && !ws) || len >= MAX_PIECE_BYTES {
            out.push(&text[start..i]);
            start = i;
        }
        previous_ws = ws;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// A `data:`-only event (OpenAI).
fn data_event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// An event with an `event:` line naming its type (Anthropic, Responses).
fn named_event(name: &str, value: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

/// A JSON object from `(key, value)` pairs, in order.
fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Map<String, Value>>(),
    )
}

/// `value[key]`, or null.
fn field(value: &Map<String, Value>, key: &str) -> Value {
    value.get(key).cloned().unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::assemble::StreamAssembler;
    use crate::protocol::sse::parse_block;
    use serde_json::json;

    fn sse(endpoint: Endpoint, body: &Value, include_usage: bool) -> Option<Vec<Bytes>> {
        to_sse(
            endpoint,
            &serde_json::to_vec(body).expect("json"),
            include_usage,
        )
    }

    /// JSON → SSE → assembled JSON, fed in uneven pieces.
    fn round_trip(endpoint: Endpoint, body: &Value, include_usage: bool) -> Value {
        let events = sse(endpoint, body, include_usage).expect("replayable");
        let stream: Vec<u8> = events.concat();
        let mut a = StreamAssembler::new(endpoint);
        for piece in stream.chunks(13) {
            a.feed(piece);
        }
        serde_json::from_slice(&a.finish().expect("complete")).expect("json")
    }

    fn events_of(endpoint: Endpoint, body: &Value, include_usage: bool) -> Vec<Value> {
        sse(endpoint, body, include_usage)
            .expect("replayable")
            .iter()
            .map(|block| {
                assert!(block.ends_with(b"\n\n"));
                let event = parse_block(block);
                serde_json::from_slice(&event.data).unwrap_or(Value::Null)
            })
            .collect()
    }

    #[test]
    fn pieces_concatenate_to_the_text() {
        for text in [
            "",
            "short",
            "The quick brown fox jumps over the lazy dog, twice over, then rests.",
            "  leading space and trailing  ",
            &"x".repeat(200),
            "éèê ünïcödé 日本語のテキストはスペースがありません日本語のテキストはスペースがありません",
        ] {
            let ps = pieces(text);
            assert_eq!(ps.concat(), text);
            assert!(ps.iter().all(|p| !p.is_empty() && p.len() <= MAX_PIECE_BYTES + 4));
        }
        assert!(pieces("one two three four five six seven eight nine ten").len() > 1);
    }

    fn chat_text() -> Value {
        json!({
            "id": "chatcmpl-mock-1", "object": "chat.completion", "created": 1700000000,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0,
                "message": {"role": "assistant",
                    "content": "echo: The quick brown fox jumps over the lazy dog. Ünïcode too.",
                    "refusal": null},
                "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 13, "total_tokens": 25,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0}},
            "system_fingerprint": "fp_abc"
        })
    }

    fn chat_tools() -> Value {
        json!({
            "id": "chatcmpl-mock-2", "object": "chat.completion", "created": 1700000000,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0,
                "message": {"role": "assistant", "content": null, "refusal": null,
                    "tool_calls": [
                        {"id": "call_mock_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}},
                        {"id": "call_mock_2", "type": "function",
                         "function": {"name": "get_time", "arguments": "{}"}}]},
                "logprobs": null, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}
        })
    }

    #[test]
    fn chat_round_trips() {
        for body in [chat_text(), chat_tools()] {
            assert_eq!(round_trip(Endpoint::ChatCompletions, &body, true), body);
        }
        // Two choices, logprobs and a reasoning field from a compatible provider.
        let body = json!({
            "id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "a b c", "refusal": null,
                    "reasoning_content": "think think"},
                 "logprobs": {"content": [{"token": "a", "logprob": -0.1}], "refusal": null},
                 "finish_reason": "stop"},
                {"index": 1, "message": {"role": "assistant", "content": "", "refusal": "no"},
                 "logprobs": null, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        });
        assert_eq!(round_trip(Endpoint::ChatCompletions, &body, true), body);
    }

    #[test]
    fn chat_chunks_follow_openai_format() {
        let with = events_of(Endpoint::ChatCompletions, &chat_text(), true);
        assert_eq!(
            with[0],
            json!({"id": "chatcmpl-mock-1", "object": "chat.completion.chunk",
                "created": 1700000000, "model": "gpt-4o-mini", "system_fingerprint": "fp_abc",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null},
                    "logprobs": null, "finish_reason": null}],
                "usage": null})
        );
        let n = with.len();
        assert_eq!(with[n - 1], Value::Null, "[DONE] last");
        assert_eq!(with[n - 2]["choices"], json!([]));
        assert_eq!(with[n - 2]["usage"]["total_tokens"], 25);
        assert_eq!(with[n - 3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(with[n - 3]["choices"][0]["delta"], json!({}));
        for chunk in &with[..n - 2] {
            let last = chunk
                .as_object()
                .and_then(|o| o.keys().next_back().cloned());
            assert_eq!(last.as_deref(), Some("usage"), "usage:null comes last");
            assert_eq!(chunk["usage"], Value::Null);
        }
        let text: String = with[1..n - 3]
            .iter()
            .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(text, chat_text()["choices"][0]["message"]["content"]);

        let without = events_of(Endpoint::ChatCompletions, &chat_text(), false);
        assert_eq!(without.len(), n - 1, "no usage chunk");
        assert!(without.iter().all(|c| c.get("usage").is_none()));
        let assembled = round_trip(Endpoint::ChatCompletions, &chat_text(), false);
        let mut expected = chat_text();
        expected.as_object_mut().map(|o| o.remove("usage"));
        assert_eq!(assembled, expected);
    }

    #[test]
    fn completions_round_trip() {
        let body = json!({
            "id": "cmpl-mock-1", "object": "text_completion", "created": 1700000000,
            "model": "gpt-3.5-turbo-instruct",
            "choices": [{"text": "echo: once upon a time there was a proxy that cached answers",
                "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 11, "total_tokens": 16}
        });
        assert_eq!(round_trip(Endpoint::Completions, &body, true), body);
        let events = events_of(Endpoint::Completions, &body, true);
        assert_eq!(events[0]["object"], "text_completion");
        assert_eq!(events[0]["usage"], Value::Null);
    }

    fn response_object(output: Value, status: &str) -> Value {
        json!({
            "id": "resp_mock_1", "object": "response", "created_at": 1700000000,
            "status": status, "background": false, "error": null,
            "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
            "instructions": null, "max_output_tokens": null, "model": "gpt-4o-mini",
            "output": output, "parallel_tool_calls": true, "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null}, "store": true, "temperature": 1.0,
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
            "top_p": 1.0, "truncation": "disabled",
            "usage": {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 16},
            "user": null, "metadata": {}
        })
    }

    #[test]
    fn responses_round_trip_and_event_sequence() {
        let message = json!({"id": "msg_mock_1", "type": "message", "status": "completed",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                "text": "echo: hello there, general kenobi, you are a bold one"}],
            "role": "assistant"});
        let call = json!({"id": "fc_mock_1", "type": "function_call", "status": "completed",
            "arguments": "{\"city\": \"Paris\"}", "call_id": "call_mock_1", "name": "get_weather"});
        let body = response_object(json!([message, call]), "completed");
        assert_eq!(round_trip(Endpoint::Responses, &body, false), body);

        let events = events_of(Endpoint::Responses, &body, false);
        let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(
            types[..6],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
            ]
        );
        assert_eq!(types.last(), Some(&"response.completed"));
        for name in [
            "response.output_text.done",
            "response.content_part.done",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
        ] {
            assert!(types.contains(&name), "{name}");
        }
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["sequence_number"], i, "sequence");
        }
        assert_eq!(events[0]["response"]["status"], "in_progress");
        assert_eq!(events[0]["response"]["output"], json!([]));
        assert_eq!(events[0]["response"]["usage"], Value::Null);
        let text: String = events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(text, body["output"][0]["content"][0]["text"]);

        let cut = response_object(json!([]), "incomplete");
        assert_eq!(round_trip(Endpoint::Responses, &cut, false), cut);
        let last = events_of(Endpoint::Responses, &cut, false)
            .pop()
            .expect("events");
        assert_eq!(last["type"], "response.incomplete");
    }

    #[test]
    fn messages_round_trip_and_event_sequence() {
        let body = json!({
            "id": "msg_mock_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
            "content": [
                {"type": "thinking", "thinking": "The user wants the weather; call the tool.", "signature": "EqQBCkYIAxgC"},
                {"type": "text", "text": "Let me check the weather in Paris for you right now."},
                {"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather",
                 "input": {"city": "Paris", "days": [1, 2], "detail": {"hourly": false}}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 30, "output_tokens": 42,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100}
        });
        assert_eq!(round_trip(Endpoint::Messages, &body, false), body);

        let events = events_of(Endpoint::Messages, &body, false);
        let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(types.first(), Some(&"message_start"));
        assert_eq!(types[types.len() - 2..], ["message_delta", "message_stop"]);
        let start = &events[0]["message"];
        assert_eq!(start["content"], json!([]));
        assert_eq!(start["stop_reason"], Value::Null);
        assert_eq!(start["usage"]["input_tokens"], 30);
        assert_eq!(start["usage"]["output_tokens"], 1);
        let delta = &events[events.len() - 2];
        assert_eq!(
            delta["delta"],
            json!({"stop_reason": "tool_use", "stop_sequence": null})
        );
        assert_eq!(delta["usage"], json!({"output_tokens": 42}));
        assert_eq!(
            types
                .iter()
                .filter(|t| **t == "content_block_start")
                .count(),
            3
        );
        assert_eq!(
            types.iter().filter(|t| **t == "content_block_stop").count(),
            3
        );

        let plain = json!({"id": "msg_2", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "text", "text": ""}], "stop_reason": "end_turn",
            "stop_sequence": null, "usage": {"input_tokens": 3, "output_tokens": 0}});
        assert_eq!(round_trip(Endpoint::Messages, &plain, false), plain);
    }

    #[test]
    fn unreplayable_entries() {
        assert!(sse(Endpoint::Embeddings, &json!({"data": []}), false).is_none());
        assert!(to_sse(Endpoint::ChatCompletions, b"[1]", false).is_none());
        let audio = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "audio": {"id": "a", "data": "..."}}, "logprobs": null, "finish_reason": "stop"}]});
        assert!(sse(Endpoint::ChatCompletions, &audio, false).is_none());
    }
}
