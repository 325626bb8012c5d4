//! Anthropic messages: apply `message_start`, the content block events and
//! `message_delta` to rebuild the final `message` object.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Step;

/// Accumulates an Anthropic message stream.
#[derive(Debug, Default)]
pub(super) struct MessagesAcc {
    message: Option<Map<String, Value>>,
    blocks: BTreeMap<u64, Block>,
    done: bool,
}

#[derive(Debug)]
struct Block {
    block: Map<String, Value>,
    /// Concatenated `input_json_delta` fragments, parsed at the block's end.
    json: String,
}

impl MessagesAcc {
    pub(super) fn event(&mut self, data: &[u8]) -> Step {
        if data.is_empty() {
            return Step::More;
        }
        let Ok(mut event) = serde_json::from_slice::<Map<String, Value>>(data) else {
            return Step::Fail;
        };
        let ty = event.get("type").and_then(Value::as_str).unwrap_or("");
        let index = event.get("index").and_then(Value::as_u64);
        match (ty, index) {
            ("message_start", _) => match event.remove("message") {
                Some(Value::Object(message)) => self.message = Some(message),
                _ => return Step::Fail,
            },
            ("content_block_start", Some(i)) => match event.remove("content_block") {
                Some(Value::Object(block)) => {
                    self.blocks.insert(
                        i,
                        Block {
                            block,
                            json: String::new(),
                        },
                    );
                }
                _ => return Step::Fail,
            },
            ("content_block_delta", Some(i)) => {
                let (Some(block), Some(delta)) = (self.blocks.get_mut(&i), event.get("delta"))
                else {
                    return Step::Fail;
                };
                return block.delta(delta);
            }
            ("content_block_stop", Some(i)) => {
                let Some(block) = self.blocks.get_mut(&i) else {
                    return Step::Fail;
                };
                return block.stop();
            }
            ("message_delta", _) => {
                let Some(message) = self.message.as_mut() else {
                    return Step::Fail;
                };
                if let Some(Value::Object(delta)) = event.remove("delta") {
                    message.extend(delta);
                }
                if let Some(Value::Object(usage)) = event.remove("usage") {
                    match message.get_mut("usage") {
                        Some(Value::Object(have)) => have.extend(usage),
                        _ => {
                            message.insert("usage".into(), Value::Object(usage));
                        }
                    }
                }
            }
            ("content_block_start" | "content_block_delta" | "content_block_stop", None) => {
                return Step::Fail;
            }
            ("message_stop", _) => self.done = true,
            ("error", _) => return Step::Fail,
            // `ping` and event types added later carry nothing we keep.
            _ => {}
        }
        Step::More
    }

    pub(super) fn finish(mut self) -> Option<Value> {
        if !self.done {
            return None;
        }
        let mut message = self.message.take()?;
        let mut content = Vec::with_capacity(self.blocks.len());
        for mut block in self.blocks.into_values() {
            if block.stop() == Step::Fail {
                return None;
            }
            content.push(Value::Object(block.block));
        }
        message.insert("content".into(), Value::Array(content));
        Some(Value::Object(message))
    }
}

impl Block {
    fn delta(&mut self, delta: &Value) -> Step {
        let ty = delta.get("type").and_then(Value::as_str).unwrap_or("");
        let text_field = match ty {
            "text_delta" => ("text", "text"),
            "thinking_delta" => ("thinking", "thinking"),
            "signature_delta" => ("signature", "signature"),
            "input_json_delta" => {
                if let Some(part) = delta.get("partial_json").and_then(Value::as_str) {
                    self.json.push_str(part);
                }
                return Step::More;
            }
            "citations_delta" => {
                let Some(citation) = delta.get("citation") else {
                    return Step::Fail;
                };
                match self.block.get_mut("citations") {
                    Some(Value::Array(list)) => list.push(citation.clone()),
                    _ => {
                        self.block
                            .insert("citations".into(), Value::Array(vec![citation.clone()]));
                    }
                }
                return Step::More;
            }
            // A delta we cannot apply would leave the answer incomplete.
            _ => return Step::Fail,
        };
        let (from, to) = text_field;
        let Some(more) = delta.get(from).and_then(Value::as_str) else {
            return Step::Fail;
        };
        match self.block.get_mut(to) {
            Some(Value::String(have)) => have.push_str(more),
            _ => {
                self.block.insert(to.into(), Value::from(more));
            }
        }
        Step::More
    }

    /// Parses the collected tool input; an empty one keeps the start's input.
    fn stop(&mut self) -> Step {
        if self.json.is_empty() {
            return Step::More;
        }
        match serde_json::from_str::<Value>(&self.json) {
            Ok(input) => {
                self.block.insert("input".into(), input);
                self.json.clear();
                Step::More
            }
            Err(_) => Step::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(events: &[Value]) -> Option<Value> {
        let mut acc = MessagesAcc::default();
        for e in events {
            if acc.event(e.to_string().as_bytes()) == Step::Fail {
                return None;
            }
        }
        acc.finish()
    }

    fn start() -> Value {
        json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",
            "model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,
            "usage":{"input_tokens":12,"output_tokens":1}}})
    }

    #[test]
    fn text_thinking_and_tool_use() {
        let out = run(&[
            start(),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}}),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}),
            json!({"type":"ping"}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi "}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"there"}}),
            json!({"type":"content_block_stop","index":1}),
            json!({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}),
            json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}),
            json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}),
            json!({"type":"content_block_stop","index":2}),
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":9}}),
            json!({"type":"message_stop"}),
        ])
        .expect("complete");
        assert_eq!(
            out,
            json!({"id":"msg_1","type":"message","role":"assistant","model":"claude-x",
                "content":[
                    {"type":"thinking","thinking":"hmm","signature":"sig"},
                    {"type":"text","text":"Hi there"},
                    {"type":"tool_use","id":"toolu_1","name":"f","input":{"city":"Paris"}}],
                "stop_reason":"tool_use","stop_sequence":null,
                "usage":{"input_tokens":12,"output_tokens":9}})
        );
    }

    #[test]
    fn incomplete_or_failed_streams_give_nothing() {
        let text = [
            start(),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":1}}),
        ];
        assert_eq!(run(&text), None);
        let mut errored = text.to_vec();
        errored.push(json!({"type":"error","error":{"type":"overloaded_error","message":"x"}}));
        errored.push(json!({"type":"message_stop"}));
        assert_eq!(run(&errored), None);
        let mut ok = text.to_vec();
        ok.push(json!({"type":"message_stop"}));
        assert!(run(&ok).is_some());
        let mut bad_json = ok.clone();
        bad_json[1] = json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}});
        bad_json[2] = json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\""}});
        assert_eq!(run(&bad_json), None);
    }
}
