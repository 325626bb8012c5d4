//! Converse's streamed events as Anthropic's, one frame at a time: each
//! Converse event yields the Anthropic events it completes, so nothing but
//! the stop reason waits (Converse sends usage in `metadata`, after
//! `messageStop`; Anthropic's `message_delta` carries both, so it is sent
//! once both have come).

use serde_json::{json, Value};

use super::response::{stop_reason, usage};

/// The state of one streamed answer.
#[derive(Debug)]
pub struct StreamEvents {
    model: String,
    id: String,
    started: bool,
    /// The content block open on the Anthropic side.
    open: Option<u64>,
    stop: Option<&'static str>,
    usage: Option<Value>,
    ended: bool,
}

impl StreamEvents {
    /// A stream answered by `model`, its Anthropic message id `id`.
    pub fn new(model: String, id: String) -> Self {
        Self {
            model,
            id,
            started: false,
            open: None,
            stop: None,
            usage: None,
            ended: false,
        }
    }

    /// The Anthropic events for one Converse event (`kind` is the frame's
    /// `:event-type`). Unknown kinds yield nothing (AWS adds events).
    pub fn event(&mut self, kind: &str, p: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        let index = p.get("contentBlockIndex").and_then(Value::as_u64);
        match kind {
            "messageStart" => self.start(&mut out),
            "contentBlockStart" => {
                self.start(&mut out);
                let index = index.unwrap_or(0);
                if let Some(t) = p.pointer("/start/toolUse") {
                    let block = json!({"type": "tool_use", "id": t.get("toolUseId"),
                                       "name": t.get("name"), "input": {}});
                    self.open_block(index, block, &mut out);
                }
            }
            "contentBlockDelta" => {
                self.start(&mut out);
                self.delta(index.unwrap_or(0), p.get("delta"), &mut out);
            }
            "contentBlockStop" if self.open.is_some() && self.open == index => {
                self.close(&mut out);
            }
            "messageStop" => {
                self.start(&mut out);
                self.close(&mut out);
                let reason = p.get("stopReason").and_then(Value::as_str).unwrap_or("");
                self.stop = Some(stop_reason(reason));
                self.end(&mut out);
            }
            "metadata" => {
                self.usage = Some(usage(p.get("usage").unwrap_or(&Value::Null)));
                self.end(&mut out);
            }
            _ => {}
        }
        out
    }

    fn start(&mut self, out: &mut Vec<Value>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(json!({"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }}));
    }

    fn open_block(&mut self, index: u64, block: Value, out: &mut Vec<Value>) {
        self.close(out);
        self.open = Some(index);
        out.push(json!({"type": "content_block_start", "index": index, "content_block": block}));
    }

    fn close(&mut self, out: &mut Vec<Value>) {
        if let Some(index) = self.open.take() {
            out.push(json!({"type": "content_block_stop", "index": index}));
        }
    }

    /// A delta; a text or reasoning block opens with its first delta
    /// (Converse sends `contentBlockStart` for tool use only).
    fn delta(&mut self, index: u64, d: Option<&Value>, out: &mut Vec<Value>) {
        let Some(d) = d else { return };
        let (block, delta) = if let Some(text) = d.get("text") {
            (
                json!({"type": "text", "text": ""}),
                json!({"type": "text_delta", "text": text}),
            )
        } else if let Some(input) = d.pointer("/toolUse/input") {
            (
                json!({"type": "tool_use", "id": null, "name": null, "input": {}}),
                json!({"type": "input_json_delta", "partial_json": input}),
            )
        } else if let Some(r) = d.get("reasoningContent") {
            if let Some(data) = r.get("redactedContent") {
                let block = json!({"type": "redacted_thinking", "data": data});
                self.open_block(index, block, out);
                return;
            }
            let block = json!({"type": "thinking", "thinking": ""});
            match (r.get("text"), r.get("signature")) {
                (Some(t), _) => (block, json!({"type": "thinking_delta", "thinking": t})),
                (None, Some(s)) => (block, json!({"type": "signature_delta", "signature": s})),
                (None, None) => return,
            }
        } else {
            return;
        };
        if self.open != Some(index) {
            self.open_block(index, block, out);
        }
        out.push(json!({"type": "content_block_delta", "index": index, "delta": delta}));
    }

    /// `message_delta` and `message_stop` once the stop reason and the
    /// usage have both come.
    fn end(&mut self, out: &mut Vec<Value>) {
        let (Some(stop), Some(usage)) = (self.stop, self.usage.as_ref()) else {
            return;
        };
        self.ended = true;
        out.push(json!({"type": "message_delta",
                        "delta": {"stop_reason": stop, "stop_sequence": null},
                        "usage": usage}));
        out.push(json!({"type": "message_stop"}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(events: &[(&str, Value)]) -> Vec<Value> {
        let mut s = StreamEvents::new("m-1".into(), "msg_bdrk_r".into());
        events.iter().flat_map(|(k, p)| s.event(k, p)).collect()
    }

    #[test]
    fn text_and_tool_use_events_become_anthropics_golden() {
        let got = run(&[
            ("messageStart", json!({"role": "assistant", "p": "abc"})),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": " there"}}),
            ),
            ("contentBlockStop", json!({"contentBlockIndex": 0})),
            (
                "contentBlockStart",
                json!({"contentBlockIndex": 1,
                "start": {"toolUse": {"toolUseId": "tu1", "name": "weather"}}}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 1,
                "delta": {"toolUse": {"input": "{\"city\":"}}}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 1,
                "delta": {"toolUse": {"input": "\"Paris\"}"}}}),
            ),
            ("contentBlockStop", json!({"contentBlockIndex": 1})),
            ("messageStop", json!({"stopReason": "tool_use"})),
            (
                "metadata",
                json!({"usage": {"inputTokens": 5, "outputTokens": 4,
                "cacheReadInputTokens": 2, "cacheWriteInputTokens": 1}, "metrics": {"latencyMs": 9}}),
            ),
        ]);
        let want = vec![
            json!({"type": "message_start", "message": {"id": "msg_bdrk_r", "type": "message",
                "role": "assistant", "model": "m-1", "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " there"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block":
                {"type": "tool_use", "id": "tu1", "name": "weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta":
                {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
            json!({"type": "content_block_delta", "index": 1, "delta":
                {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 5, "output_tokens": 4,
                          "cache_read_input_tokens": 2, "cache_creation_input_tokens": 1}}),
            json!({"type": "message_stop"}),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn reasoning_opens_a_thinking_block_and_unclosed_blocks_close_at_the_stop() {
        let got = run(&[
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0,
                "delta": {"reasoningContent": {"text": "hm"}}}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0,
                "delta": {"reasoningContent": {"signature": "sig"}}}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"text": "ok"}}),
            ),
            ("someNewEvent", json!({})),
            (
                "metadata",
                json!({"usage": {"inputTokens": 1, "outputTokens": 2}}),
            ),
            ("messageStop", json!({"stopReason": "max_tokens"})),
            ("metadata", json!({"usage": {"inputTokens": 9}})),
        ]);
        let kinds: Vec<&str> = got.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(got[1]["content_block"]["type"], "thinking");
        assert_eq!(
            got[3]["delta"],
            json!({"type": "signature_delta", "signature": "sig"})
        );
        assert_eq!(got[8]["delta"]["stop_reason"], "max_tokens");
        assert_eq!(
            got[8]["usage"]["output_tokens"], 2,
            "usage before the stop counts"
        );
    }
}
