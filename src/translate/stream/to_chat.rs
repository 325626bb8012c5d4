//! Anthropic message events as OpenAI chat completion chunks.

use serde_json::{Map, Value};

use super::push_data;
use crate::translate::error::anthropic_type_to_openai;
use crate::translate::json::{object, str_at, to_text};
use crate::translate::response::{finish_reason, usage_to_openai};
use crate::translate::{Plan, JSON_TOOL};

/// Translates one Anthropic message stream into OpenAI chunks ending with
/// `data: [DONE]`.
#[derive(Debug)]
pub struct MessagesToChat {
    id: Value,
    model: Value,
    created: u64,
    include_usage: bool,
    json_tool: bool,
    /// The block streaming the JSON tool's input (the content, in JSON mode).
    json_block: Option<u64>,
    /// Anthropic usage so far (`message_start`, then `message_delta`s).
    usage: Map<String, Value>,
    /// Anthropic block index → OpenAI tool call index, per `tool_use` block.
    tools: Vec<(u64, usize)>,
    finish: Option<&'static str>,
    done: bool,
}

impl MessagesToChat {
    /// A translator for one stream; `created` is the Unix time its chunks
    /// carry.
    pub fn new(plan: Plan, created: u64) -> MessagesToChat {
        MessagesToChat {
            id: Value::from(""),
            model: Value::from(""),
            created,
            include_usage: plan.include_usage,
            json_tool: plan.json_tool,
            json_block: None,
            usage: Map::new(),
            tools: Vec::new(),
            finish: None,
            done: false,
        }
    }

    /// Whether the stream ended: `message_stop` (after `[DONE]` went out) or
    /// an error event.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Translates one event's `data:` into zero or more chunks on `out`.
    pub fn event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.done || data.is_empty() {
            return;
        }
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            self.error(
                "api_error",
                "the provider sent a malformed stream event",
                out,
            );
            return;
        };
        let index = event.get("index").and_then(Value::as_u64);
        match str_at(&event, "type") {
            "message_start" => {
                let message = event.get("message").unwrap_or(&Value::Null);
                self.id = message.get("id").cloned().unwrap_or_default();
                self.model = message.get("model").cloned().unwrap_or_default();
                if let Some(Value::Object(u)) = message.get("usage") {
                    self.usage.extend(u.clone());
                }
                let delta = object([
                    ("role", "assistant".into()),
                    ("content", "".into()),
                    ("refusal", Value::Null),
                ]);
                self.chunk(delta, Value::Null, out);
            }
            "content_block_start" => {
                let block = event.get("content_block").unwrap_or(&Value::Null);
                match str_at(block, "type") {
                    "text" => self.text(str_at(block, "text"), out),
                    "tool_use" if self.json_tool && str_at(block, "name") == JSON_TOOL => {
                        self.json_block = index;
                    }
                    "tool_use" => {
                        let k = self.tools.len();
                        self.tools.push((index.unwrap_or(0), k));
                        let input = block
                            .get("input")
                            .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()));
                        let arguments = input.map(to_text).unwrap_or_default();
                        let call = object([
                            ("index", k.into()),
                            ("id", block.get("id").cloned().unwrap_or_default()),
                            ("type", "function".into()),
                            (
                                "function",
                                object([
                                    ("name", block.get("name").cloned().unwrap_or_default()),
                                    ("arguments", arguments.into()),
                                ]),
                            ),
                        ]);
                        self.chunk(
                            object([("tool_calls", Value::Array(vec![call]))]),
                            Value::Null,
                            out,
                        );
                    }
                    // Thinking and server-side blocks have no chat form.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                match str_at(delta, "type") {
                    "text_delta" => self.text(str_at(delta, "text"), out),
                    "input_json_delta" if index.is_some() && index == self.json_block => {
                        self.text(str_at(delta, "partial_json"), out);
                    }
                    "input_json_delta" => {
                        let part = str_at(delta, "partial_json");
                        let tool = self.tools.iter().find(|(b, _)| Some(*b) == index);
                        if let (false, Some(&(_, k))) = (part.is_empty(), tool) {
                            let call = object([
                                ("index", k.into()),
                                ("function", object([("arguments", part.into())])),
                            ]);
                            self.chunk(
                                object([("tool_calls", Value::Array(vec![call]))]),
                                Value::Null,
                                out,
                            );
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = event
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.finish = Some(match reason {
                        "tool_use" if self.json_block.is_some() => "stop",
                        _ => finish_reason(reason),
                    });
                }
                if let Some(Value::Object(u)) = event.get("usage") {
                    for (k, v) in u {
                        if !v.is_null() {
                            self.usage.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            "message_stop" => {
                let finish = self.finish.unwrap_or("stop");
                self.chunk(Value::Object(Map::new()), finish.into(), out);
                if self.include_usage {
                    let usage = usage_to_openai(&Value::Object(self.usage.clone()));
                    let mut chunk = self.head();
                    chunk.insert("choices".into(), Value::Array(Vec::new()));
                    chunk.insert("usage".into(), usage);
                    push_data(out, &Value::Object(chunk));
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            "error" => {
                let error = event.get("error").unwrap_or(&Value::Null);
                self.error(str_at(error, "type"), str_at(error, "message"), out);
            }
            // `ping`, content_block_stop and event types added later.
            _ => {}
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        if !text.is_empty() {
            self.chunk(object([("content", text.into())]), Value::Null, out);
        }
    }

    /// An error mid-stream, as OpenAI sends one (the SDKs raise on a `data:`
    /// object with an `error`); no `[DONE]` follows.
    fn error(&mut self, anthropic_type: &str, message: &str, out: &mut Vec<u8>) {
        let error = object([(
            "error",
            object([
                ("message", message.into()),
                ("type", anthropic_type_to_openai(anthropic_type).into()),
                ("param", Value::Null),
                ("code", Value::Null),
            ]),
        )]);
        push_data(out, &error);
        self.done = true;
    }

    fn head(&self) -> Map<String, Value> {
        let mut chunk = Map::new();
        chunk.insert("id".into(), self.id.clone());
        chunk.insert("object".into(), "chat.completion.chunk".into());
        chunk.insert("created".into(), self.created.into());
        chunk.insert("model".into(), self.model.clone());
        chunk
    }

    fn chunk(&self, delta: Value, finish: Value, out: &mut Vec<u8>) {
        let mut chunk = self.head();
        chunk.insert(
            "choices".into(),
            Value::Array(vec![object([
                ("index", 0.into()),
                ("delta", delta),
                ("logprobs", Value::Null),
                ("finish_reason", finish),
            ])]),
        );
        if self.include_usage {
            chunk.insert("usage".into(), Value::Null);
        }
        push_data(out, &Value::Object(chunk));
    }
}
