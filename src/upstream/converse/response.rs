//! A Converse JSON answer as an Anthropic message.

use bytes::Bytes;
use serde_json::{json, Value};

/// Anthropic's `stop_reason` for Converse's `stopReason`. A guardrail or
/// content filter stopping the answer is Anthropic's `refusal`.
pub fn stop_reason(converse: &str) -> &'static str {
    match converse {
        "tool_use" => "tool_use",
        "max_tokens" => "max_tokens",
        "stop_sequence" => "stop_sequence",
        "guardrail_intervened" | "content_filtered" => "refusal",
        "model_context_window_exceeded" => "model_context_window_exceeded",
        // end_turn, and anything new (malformed_model_output, …).
        _ => "end_turn",
    }
}

/// Converse usage (`inputTokens` excludes cache reads and writes, as
/// Anthropic's `input_tokens` does) in Anthropic's names.
pub(super) fn usage(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    json!({
        "input_tokens": n("inputTokens"),
        "output_tokens": n("outputTokens"),
        "cache_read_input_tokens": n("cacheReadInputTokens"),
        "cache_creation_input_tokens": n("cacheWriteInputTokens"),
    })
}

/// The Anthropic message for a Converse answer from `model`, its id `id`.
/// Output blocks Anthropic has no block for (an image a model drew) are
/// left out with a log line.
pub fn message_from_converse(body: &[u8], model: &str, id: &str) -> Result<Bytes, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the Converse answer is not JSON: {e}"))?;
    let blocks = v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or("the Converse answer has no output.message.content")?;
    let content: Vec<Value> = blocks.iter().filter_map(block).collect();
    let stop = v.get("stopReason").and_then(Value::as_str).unwrap_or("");
    let message = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(stop),
        "stop_sequence": null,
        "usage": usage(v.get("usage").unwrap_or(&Value::Null)),
    });
    serde_json::to_vec(&message)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

fn block(b: &Value) -> Option<Value> {
    if let Some(text) = b.get("text").and_then(Value::as_str) {
        return Some(json!({"type": "text", "text": text}));
    }
    if let Some(t) = b.get("toolUse") {
        return Some(json!({
            "type": "tool_use",
            "id": t.get("toolUseId").cloned().unwrap_or(Value::Null),
            "name": t.get("name").cloned().unwrap_or(Value::Null),
            "input": t.get("input").cloned().unwrap_or_else(|| json!({})),
        }));
    }
    if let Some(r) = b.get("reasoningContent") {
        if let Some(t) = r.get("reasoningText") {
            let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("");
            return Some(
                json!({"type": "thinking", "thinking": s("text"), "signature": s("signature")}),
            );
        }
        if let Some(data) = r.get("redactedContent") {
            return Some(json!({"type": "redacted_thinking", "data": data}));
        }
    }
    let kind = b.as_object().and_then(|o| o.keys().next().cloned());
    tracing::debug!(?kind, "a Converse output block Anthropic has no block for");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_converse_answer_becomes_its_anthropic_golden() {
        let answer = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "hm", "signature": "sig"}}},
                {"text": "Let me look."},
                {"toolUse": {"toolUseId": "tu1", "name": "weather", "input": {"city": "Paris"}}},
                {"image": {"format": "png", "source": {"bytes": "x"}}},
            ]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 10, "outputTokens": 7, "totalTokens": 47,
                      "cacheReadInputTokens": 20, "cacheWriteInputTokens": 10},
            "metrics": {"latencyMs": 120}
        });
        let out = message_from_converse(answer.to_string().as_bytes(), "m-1", "msg_bdrk_r")
            .expect("maps");
        let got: Value = serde_json::from_slice(&out).expect("json");
        let want = json!({
            "id": "msg_bdrk_r", "type": "message", "role": "assistant", "model": "m-1",
            "content": [
                {"type": "thinking", "thinking": "hm", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "tu1", "name": "weather", "input": {"city": "Paris"}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 7,
                      "cache_read_input_tokens": 20, "cache_creation_input_tokens": 10},
        });
        assert_eq!(got, want);
        assert!(message_from_converse(b"{}", "m", "i").is_err());
        assert!(message_from_converse(b"<html>", "m", "i").is_err());
    }

    #[test]
    fn stop_reasons_map_to_anthropics() {
        for (converse, anthropic) in [
            ("end_turn", "end_turn"),
            ("tool_use", "tool_use"),
            ("max_tokens", "max_tokens"),
            ("stop_sequence", "stop_sequence"),
            ("guardrail_intervened", "refusal"),
            ("content_filtered", "refusal"),
            (
                "model_context_window_exceeded",
                "model_context_window_exceeded",
            ),
            ("malformed_tool_use", "end_turn"),
        ] {
            assert_eq!(stop_reason(converse), anthropic, "{converse}");
        }
    }
}
