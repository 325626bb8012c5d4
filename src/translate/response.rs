//! Non-streaming response bodies, and the stop-reason and usage mappings the
//! stream translators share.

use serde_json::{Map, Value};

use super::json::{object, str_at, u64_at, Refused};
use super::{Plan, JSON_TOOL};

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`.
pub(crate) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything new.
        _ => "stop",
    }
}

/// OpenAI's `finish_reason` as Anthropic's `stop_reason`. OpenAI does not
/// say which stop sequence matched, so `stop` is always `end_turn`.
pub(crate) fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic usage as OpenAI usage: the prompt counts every input token
/// (uncached, read from cache and written to cache), cache reads are the
/// `cached_tokens`.
pub(crate) fn usage_to_openai(usage: &Value) -> Value {
    let read = u64_at(usage, "cache_read_input_tokens");
    let prompt =
        u64_at(usage, "input_tokens") + read + u64_at(usage, "cache_creation_input_tokens");
    let completion = u64_at(usage, "output_tokens");
    object([
        ("prompt_tokens", prompt.into()),
        ("completion_tokens", completion.into()),
        ("total_tokens", (prompt + completion).into()),
        (
            "prompt_tokens_details",
            object([("cached_tokens", read.into())]),
        ),
    ])
}

/// OpenAI usage as Anthropic usage: cached prompt tokens are cache reads,
/// the rest plain input (OpenAI never reports cache writes).
pub(crate) fn usage_to_anthropic(usage: &Value) -> Value {
    let cached = usage
        .get("prompt_tokens_details")
        .map_or(0, |d| u64_at(d, "cached_tokens"));
    let prompt = u64_at(usage, "prompt_tokens");
    object([
        ("input_tokens", prompt.saturating_sub(cached).into()),
        ("cache_creation_input_tokens", 0.into()),
        ("cache_read_input_tokens", cached.into()),
        ("output_tokens", u64_at(usage, "completion_tokens").into()),
    ])
}

/// An Anthropic message as an OpenAI `chat.completion` (`created` is the
/// Unix time the caller stamps it with). Thinking blocks are dropped: the
/// OpenAI request had no way to ask for them. With `plan.json_tool`, the
/// JSON tool's input is the content.
pub fn message_to_chat(message: &Value, plan: Plan, created: u64) -> Result<Value, Refused> {
    let blocks = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| Refused("the Anthropic response has no `content` list".into()))?;
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for block in blocks {
        match str_at(block, "type") {
            "text" => text
                .get_or_insert_with(String::new)
                .push_str(str_at(block, "text")),
            "tool_use" if plan.json_tool && str_at(block, "name") == JSON_TOOL => text
                .get_or_insert_with(String::new)
                .push_str(&super::json::to_text(
                    block.get("input").unwrap_or(&Value::Null),
                )),
            "tool_use" => calls.push(object([
                ("id", str_at(block, "id").into()),
                ("type", "function".into()),
                (
                    "function",
                    object([
                        ("name", str_at(block, "name").into()),
                        (
                            "arguments",
                            super::json::to_text(block.get("input").unwrap_or(&Value::Null)).into(),
                        ),
                    ]),
                ),
            ])),
            _ => {}
        }
    }
    let mut reply = Map::new();
    reply.insert("role".into(), "assistant".into());
    reply.insert("content".into(), text.map_or(Value::Null, Value::from));
    reply.insert("refusal".into(), Value::Null);
    if !calls.is_empty() {
        reply.insert("tool_calls".into(), Value::Array(calls));
    }
    let finish = match message.get("stop_reason").and_then(Value::as_str) {
        Some("tool_use") if plan.json_tool => Value::from("stop"),
        Some(r) => Value::from(finish_reason(r)),
        None => Value::Null,
    };
    Ok(object([
        ("id", message.get("id").cloned().unwrap_or_default()),
        ("object", "chat.completion".into()),
        ("created", created.into()),
        ("model", message.get("model").cloned().unwrap_or_default()),
        (
            "choices",
            Value::Array(vec![object([
                ("index", 0.into()),
                ("message", Value::Object(reply)),
                ("logprobs", Value::Null),
                ("finish_reason", finish),
            ])]),
        ),
        (
            "usage",
            usage_to_openai(message.get("usage").unwrap_or(&Value::Null)),
        ),
    ]))
}

/// An OpenAI `chat.completion` as an Anthropic message. Tool arguments that
/// are not a JSON object cannot be an Anthropic `input`: refused, and the
/// caller answers 502 (the provider's answer, not the client's request, is
/// at fault).
pub fn chat_to_message(completion: &Value) -> Result<Value, Refused> {
    let choice = completion
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| Refused("the OpenAI response has no choices".into()))?;
    let reply = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    let text_block = |t: &str| object([("type", "text".into()), ("text", t.into())]);
    let refusal = str_at(reply, "refusal");
    for t in [str_at(reply, "content"), refusal] {
        if !t.is_empty() {
            content.push(text_block(t));
        }
    }
    for call in reply
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let function = call.get("function").unwrap_or(&Value::Null);
        let arguments = str_at(function, "arguments");
        let input = if arguments.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_str::<Value>(arguments)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| {
                    Refused("the provider's tool call arguments are not a JSON object".into())
                })?
        };
        content.push(object([
            ("type", "tool_use".into()),
            ("id", str_at(call, "id").into()),
            ("name", str_at(function, "name").into()),
            ("input", input),
        ]));
    }
    let stop = match choice.get("finish_reason").and_then(Value::as_str) {
        _ if !refusal.is_empty() => Value::from("refusal"),
        Some(r) => Value::from(stop_reason(r)),
        None => Value::Null,
    };
    Ok(object([
        ("id", completion.get("id").cloned().unwrap_or_default()),
        ("type", "message".into()),
        ("role", "assistant".into()),
        (
            "model",
            completion.get("model").cloned().unwrap_or_default(),
        ),
        ("content", Value::Array(content)),
        ("stop_reason", stop),
        ("stop_sequence", Value::Null),
        (
            "usage",
            usage_to_anthropic(completion.get("usage").unwrap_or(&Value::Null)),
        ),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_counts_cache_reads_and_writes_as_prompt() {
        let u = usage_to_openai(&json!({"input_tokens":10,"cache_read_input_tokens":100,
            "cache_creation_input_tokens":5,"output_tokens":7}));
        assert_eq!(
            u,
            json!({"prompt_tokens":115,"completion_tokens":7,"total_tokens":122,
                "prompt_tokens_details":{"cached_tokens":100}})
        );
        let back = usage_to_anthropic(&u);
        assert_eq!(back["input_tokens"], 15);
        assert_eq!(back["cache_read_input_tokens"], 100);
        assert_eq!(back["output_tokens"], 7);
    }

    #[test]
    fn stop_reasons_both_ways() {
        for (a, o) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ] {
            assert_eq!(finish_reason(a), o);
        }
        for (o, a) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("content_filter", "refusal"),
        ] {
            assert_eq!(stop_reason(o), a);
        }
    }

    #[test]
    fn bad_tool_arguments_are_refused() {
        let c = json!({"id":"x","model":"m","choices":[{"index":0,"finish_reason":"tool_calls",
            "message":{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function",
            "function":{"name":"f","arguments":"[1,2"}}]}}]});
        assert!(chat_to_message(&c).is_err());
    }
}
