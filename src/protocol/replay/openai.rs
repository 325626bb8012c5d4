//! OpenAI chat and text completions as `data:` chunks ending in `[DONE]`.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{data_event, field, object, pieces};
use crate::protocol::assemble::CHAT_DELTA_FIELDS;

const DONE: &[u8] = b"data: [DONE]\n\n";

/// Builds chunks that share the response's id, created, model and
/// fingerprint; with `include_usage`, every chunk but the usage chunk ends
/// in `"usage":null`, as OpenAI's do.
struct Chunks {
    head: Map<String, Value>,
    include_usage: bool,
    out: Vec<Bytes>,
}

impl Chunks {
    fn new(response: &Map<String, Value>, object: &str, include_usage: bool) -> Chunks {
        let mut head = Map::new();
        head.insert("id".into(), field(response, "id"));
        head.insert("object".into(), Value::from(object));
        head.insert("created".into(), field(response, "created"));
        head.insert("model".into(), field(response, "model"));
        for name in ["service_tier", "system_fingerprint"] {
            if let Some(v) = response.get(name).filter(|v| !v.is_null()) {
                head.insert(name.into(), v.clone());
            }
        }
        Chunks {
            head,
            include_usage,
            out: Vec::new(),
        }
    }

    fn push(&mut self, choice: Value) {
        let mut chunk = self.head.clone();
        chunk.insert("choices".into(), Value::Array(vec![choice]));
        if self.include_usage {
            chunk.insert("usage".into(), Value::Null);
        }
        self.out.push(data_event(&Value::Object(chunk)));
    }

    /// The usage chunk (when asked for and known) and `[DONE]`.
    fn finish(mut self, response: &Map<String, Value>) -> Vec<Bytes> {
        if let Some(usage) = response.get("usage").filter(|_| self.include_usage) {
            let mut chunk = self.head.clone();
            chunk.insert("choices".into(), Value::Array(Vec::new()));
            chunk.insert("usage".into(), usage.clone());
            self.out.push(data_event(&Value::Object(chunk)));
        }
        self.out.push(Bytes::from_static(DONE));
        self.out
    }
}

/// A chat completion as `chat.completion.chunk` events.
pub(super) fn chat(response: &Map<String, Value>, include_usage: bool) -> Option<Vec<Bytes>> {
    let mut chunks = Chunks::new(response, "chat.completion.chunk", include_usage);
    for (position, choice) in response.get("choices")?.as_array()?.iter().enumerate() {
        let index = choice
            .get("index")
            .cloned()
            .unwrap_or_else(|| Value::from(position));
        let message = choice.get("message")?.as_object()?;
        let delta_chunk = |delta: Value| {
            object([
                ("index", index.clone()),
                ("delta", delta),
                ("logprobs", Value::Null),
                ("finish_reason", Value::Null),
            ])
        };
        let content = message.get("content").unwrap_or(&Value::Null);
        let first_content = if content.is_string() {
            Value::from("")
        } else {
            Value::Null
        };
        chunks.push(delta_chunk(object([
            (
                "role",
                message
                    .get("role")
                    .cloned()
                    .unwrap_or_else(|| "assistant".into()),
            ),
            ("content", first_content),
            ("refusal", Value::Null),
        ])));
        for name in ["content", "refusal"] {
            match message.get(name) {
                None | Some(Value::Null) => {}
                Some(Value::String(text)) => {
                    for piece in pieces(text) {
                        chunks.push(delta_chunk(object([(name, Value::from(piece))])));
                    }
                }
                // Array content (audio, parts) has no delta form here.
                Some(_) => return None,
            }
        }
        if let Some(calls) = message.get("tool_calls").filter(|v| !v.is_null()) {
            for (i, call) in calls.as_array()?.iter().enumerate() {
                let function = call.get("function")?;
                let name = function.get("name").cloned().unwrap_or_default();
                let arguments = function
                    .get("arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let tool_delta = |call: Value| object([("tool_calls", Value::Array(vec![call]))]);
                chunks.push(delta_chunk(tool_delta(object([
                    ("index", Value::from(i)),
                    ("id", call.get("id").cloned().unwrap_or_default()),
                    (
                        "type",
                        call.get("type")
                            .cloned()
                            .unwrap_or_else(|| "function".into()),
                    ),
                    (
                        "function",
                        object([("name", name), ("arguments", Value::from(""))]),
                    ),
                ]))));
                for piece in pieces(arguments) {
                    chunks.push(delta_chunk(tool_delta(object([
                        ("index", Value::from(i)),
                        ("function", object([("arguments", Value::from(piece))])),
                    ]))));
                }
            }
        }
        if let Some(call) = message.get("function_call").filter(|v| !v.is_null()) {
            let name = call.get("name").cloned().unwrap_or_default();
            let arguments = call.get("arguments").and_then(Value::as_str).unwrap_or("");
            chunks.push(delta_chunk(object([(
                "function_call",
                object([("name", name), ("arguments", Value::from(""))]),
            )])));
            for piece in pieces(arguments) {
                chunks.push(delta_chunk(object([(
                    "function_call",
                    object([("arguments", Value::from(piece))]),
                )])));
            }
        }
        if let Some(list) = message.get("annotations").and_then(Value::as_array) {
            if !list.is_empty() {
                chunks.push(delta_chunk(object([(
                    "annotations",
                    Value::Array(list.clone()),
                )])));
            }
        }
        for (name, value) in message {
            if CHAT_DELTA_FIELDS.contains(&name.as_str()) {
                continue;
            }
            match value {
                Value::Null => {}
                // Extra text fields (`reasoning_content`) stream like content.
                Value::String(text) => {
                    for piece in pieces(text) {
                        chunks.push(delta_chunk(object([(name.as_str(), Value::from(piece))])));
                    }
                }
                // Anything else (`audio`) would be lost: not replayable.
                _ => return None,
            }
        }
        chunks.push(object([
            ("index", index.clone()),
            ("delta", Value::Object(Map::new())),
            ("logprobs", field(choice.as_object()?, "logprobs")),
            ("finish_reason", field(choice.as_object()?, "finish_reason")),
        ]));
    }
    Some(chunks.finish(response))
}

/// A text completion as `text_completion` chunks.
pub(super) fn completions(
    response: &Map<String, Value>,
    include_usage: bool,
) -> Option<Vec<Bytes>> {
    let mut chunks = Chunks::new(response, "text_completion", include_usage);
    for (position, choice) in response.get("choices")?.as_array()?.iter().enumerate() {
        let choice = choice.as_object()?;
        let index = choice
            .get("index")
            .cloned()
            .unwrap_or_else(|| Value::from(position));
        let text = choice.get("text").and_then(Value::as_str).unwrap_or("");
        for piece in pieces(text) {
            chunks.push(object([
                ("text", Value::from(piece)),
                ("index", index.clone()),
                ("logprobs", Value::Null),
                ("finish_reason", Value::Null),
            ]));
        }
        chunks.push(object([
            ("text", Value::from("")),
            ("index", index),
            ("logprobs", field(choice, "logprobs")),
            ("finish_reason", field(choice, "finish_reason")),
        ]));
    }
    Some(chunks.finish(response))
}
