//! OpenAI chat completion chunks as Anthropic message events.

use serde_json::{Map, Value};

use super::push_named;
use crate::translate::error::openai_type_to_anthropic;
use crate::translate::json::{object, str_at};
use crate::translate::response::{stop_reason, usage_to_anthropic};

/// The content block being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(usize),
    /// A tool_use block, with the OpenAI tool call index it streams.
    Tool(usize, u64),
}

/// Translates one OpenAI chat completion stream into Anthropic message
/// events. OpenAI streams one tool call after another; a delta for a call
/// whose block is already closed cannot be placed and ends the stream with
/// an error event.
#[derive(Debug, Default)]
pub struct ChatToMessages {
    started: bool,
    open: Option<Open>,
    next_index: usize,
    /// OpenAI tool call indices already given a block.
    seen_tools: Vec<u64>,
    finish: Option<&'static str>,
    usage: Option<Value>,
    done: bool,
}

impl ChatToMessages {
    /// A translator for one stream.
    pub fn new() -> ChatToMessages {
        ChatToMessages::default()
    }

    /// Whether the stream ended (`message_stop` or an error event went out).
    pub fn done(&self) -> bool {
        self.done
    }

    /// Translates one chunk's `data:` into zero or more events on `out`.
    pub fn event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.done || data.is_empty() {
            return;
        }
        if data == b"[DONE]" {
            self.end(out);
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(data) else {
            self.error(
                "api_error",
                "the provider sent a malformed stream event",
                out,
            );
            return;
        };
        if let Some(error) = chunk.get("error").filter(|e| e.is_object()) {
            let ty = openai_type_to_anthropic(str_at(error, "type"), None);
            self.error(ty, str_at(error, "message"), out);
            return;
        }
        self.start(&chunk, out);
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter()
                    .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
            });
        let Some(choice) = choice else {
            return;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        for key in ["content", "refusal"] {
            let text = str_at(delta, key);
            if !text.is_empty() {
                let index = self.text_block(out);
                let text_delta = object([("type", "text_delta".into()), ("text", text.into())]);
                self.block_delta(index, text_delta, out);
            }
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !self.tool_delta(call, out) {
                return;
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(stop_reason(reason));
            self.close(out);
        }
    }

    /// The upstream stream ended. A provider that stops after the finish
    /// reason without `[DONE]` still gets a proper end; a stream cut before
    /// its finish reason gets none (the client sees it was cut). Returns
    /// whether the stream ended properly.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> bool {
        if !self.done && self.finish.is_some() {
            self.end(out);
        }
        self.done
    }

    fn start(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        // OpenAI reports usage only at the end: zero here, the real counts in
        // `message_delta`.
        let message = object([
            ("id", chunk.get("id").cloned().unwrap_or_default()),
            ("type", "message".into()),
            ("role", "assistant".into()),
            ("model", chunk.get("model").cloned().unwrap_or_default()),
            ("content", Value::Array(Vec::new())),
            ("stop_reason", Value::Null),
            ("stop_sequence", Value::Null),
            (
                "usage",
                object([("input_tokens", 0.into()), ("output_tokens", 0.into())]),
            ),
        ]);
        push_named(
            out,
            "message_start",
            &object([("type", "message_start".into()), ("message", message)]),
        );
    }

    /// The index of the open text block, opening one if needed.
    fn text_block(&mut self, out: &mut Vec<u8>) -> usize {
        if let Some(Open::Text(i)) = self.open {
            return i;
        }
        let block = object([("type", "text".into()), ("text", "".into())]);
        self.open_block(block, Open::Text, out)
    }

    /// One tool call delta; false when it could not be placed (the stream
    /// has ended with an error).
    fn tool_delta(&mut self, call: &Value, out: &mut Vec<u8>) -> bool {
        let k = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = call.get("function").unwrap_or(&Value::Null);
        if !self.seen_tools.contains(&k) {
            self.seen_tools.push(k);
            let block = object([
                ("type", "tool_use".into()),
                ("id", call.get("id").cloned().unwrap_or_default()),
                ("name", function.get("name").cloned().unwrap_or_default()),
                ("input", Value::Object(Map::new())),
            ]);
            self.open_block(block, |i| Open::Tool(i, k), out);
        }
        let arguments = str_at(function, "arguments");
        if arguments.is_empty() {
            return true;
        }
        match self.open {
            Some(Open::Tool(i, open_k)) if open_k == k => {
                let delta = object([
                    ("type", "input_json_delta".into()),
                    ("partial_json", arguments.into()),
                ]);
                self.block_delta(i, delta, out);
                true
            }
            _ => {
                self.error(
                    "api_error",
                    "the provider interleaved tool call deltas, which Anthropic streams cannot carry",
                    out,
                );
                false
            }
        }
    }

    fn open_block(
        &mut self,
        block: Value,
        open: impl FnOnce(usize) -> Open,
        out: &mut Vec<u8>,
    ) -> usize {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        push_named(
            out,
            "content_block_start",
            &object([
                ("type", "content_block_start".into()),
                ("index", index.into()),
                ("content_block", block),
            ]),
        );
        self.open = Some(open(index));
        index
    }

    fn block_delta(&mut self, index: usize, delta: Value, out: &mut Vec<u8>) {
        push_named(
            out,
            "content_block_delta",
            &object([
                ("type", "content_block_delta".into()),
                ("index", index.into()),
                ("delta", delta),
            ]),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        let index = match self.open.take() {
            Some(Open::Text(i) | Open::Tool(i, _)) => i,
            None => return,
        };
        push_named(
            out,
            "content_block_stop",
            &object([
                ("type", "content_block_stop".into()),
                ("index", index.into()),
            ]),
        );
    }

    /// `message_delta` with the stop reason and the usage, then
    /// `message_stop`.
    fn end(&mut self, out: &mut Vec<u8>) {
        self.start(&Value::Null, out);
        self.close(out);
        let usage = usage_to_anthropic(self.usage.as_ref().unwrap_or(&Value::Null));
        push_named(
            out,
            "message_delta",
            &object([
                ("type", "message_delta".into()),
                (
                    "delta",
                    object([
                        ("stop_reason", self.finish.unwrap_or("end_turn").into()),
                        ("stop_sequence", Value::Null),
                    ]),
                ),
                ("usage", usage),
            ]),
        );
        push_named(
            out,
            "message_stop",
            &object([("type", "message_stop".into())]),
        );
        self.done = true;
    }

    /// An `error` event, as Anthropic sends one mid-stream.
    fn error(&mut self, ty: &str, message: &str, out: &mut Vec<u8>) {
        push_named(
            out,
            "error",
            &object([
                ("type", "error".into()),
                (
                    "error",
                    object([("type", ty.into()), ("message", message.into())]),
                ),
            ]),
        );
        self.done = true;
    }
}
