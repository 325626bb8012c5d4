//! AWS Bedrock's Converse API: `POST /model/{id}/converse` (a Converse
//! answer as JSON) and `POST /model/{id}/converse-stream` (Converse events,
//! each the JSON of one event in a binary `application/vnd.amazon.eventstream`
//! frame named by `:event-type`, padded with `p` as AWS pads them). The
//! body is checked as Bedrock checks it (known top-level keys only, roles
//! alternating, `toolConfig` present when tool blocks are), then answered
//! as the Anthropic API would answer the same conversation (same words,
//! tool calls and prompt-cache accounting, `cachePoint` standing for
//! `cache_control`), in Converse's shape.

use serde_json::{json, Map, Value};

use crate::anthropic;
use crate::bedrock::{event_frame, event_json};
use crate::error::error_reply;
use crate::reply::{Ctx, Reply, ReplyKind};

/// The top-level keys a Converse request may carry.
const KEYS: [&str; 10] = [
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "guardrailConfig",
    "promptVariables",
    "requestMetadata",
    "performanceConfig",
];

/// A Converse call to `model`.
pub(crate) fn converse(ctx: &Ctx, model: &str, stream: bool) -> Reply {
    let request = match anthropic_request(&ctx.body, model, stream) {
        Ok(r) => r,
        Err(message) => return error_reply(ctx, 400, &message),
    };
    let reply = anthropic::messages(ctx, &request);
    if !reply.status.is_success() {
        return reply;
    }
    match reply.kind {
        ReplyKind::Json(message) => Reply {
            kind: ReplyKind::Json(converse_answer(&message)),
            ..reply
        },
        ReplyKind::Sse(events) => {
            let mut usage = Map::new();
            let frames = events
                .iter()
                .filter_map(event_json)
                .flat_map(|e| converse_events(&e, &mut usage))
                .filter_map(|(kind, payload)| event_frame(kind, &payload))
                .collect();
            Reply {
                kind: ReplyKind::EventStream(frames),
                ..reply
            }
        }
        kind => Reply { kind, ..reply },
    }
}

/// The Anthropic request a Converse body stands for, or Bedrock's
/// validation message.
fn anthropic_request(body: &[u8], model: &str, stream: bool) -> Result<Value, String> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return Err("Malformed input request, please reformat your input and try again.".into());
    };
    if let Some(key) = body.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "Malformed input request: extraneous key [{key}] is not permitted, please reformat your input and try again."
        ));
    }
    let Some(Value::Array(turns)) = body.get("messages") else {
        return Err("1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null".into());
    };
    let mut messages = Vec::with_capacity(turns.len());
    let mut tool_blocks = false;
    for (i, turn) in turns.iter().enumerate() {
        let role = turn.get("role").and_then(Value::as_str).unwrap_or("");
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if role != expected {
            return Err("A conversation must start with a user message and alternate between user and assistant roles. Try again.".into());
        }
        let Some(Value::Array(blocks)) = turn.get("content") else {
            return Err(format!("messages[{i}].content must be an array"));
        };
        let mut content: Vec<Value> = Vec::with_capacity(blocks.len());
        for b in blocks {
            tool_blocks |= b.get("toolUse").is_some() || b.get("toolResult").is_some();
            match anthropic_block(b) {
                Some(Marker::Block(block)) => content.push(block),
                Some(Marker::CachePoint) => mark(content.last_mut()),
                None => return Err(format!("messages[{i}].content has an unknown block: {b}")),
            }
        }
        messages.push(json!({"role": role, "content": content}));
    }
    let tools = body
        .get("toolConfig")
        .and_then(|c| c.get("tools"))
        .and_then(Value::as_array);
    if tool_blocks && tools.is_none() {
        return Err("The toolConfig field must be defined when using toolUse and toolResult content blocks.".into());
    }
    let mut anthropic_tools: Vec<Value> = Vec::new();
    for t in tools.into_iter().flatten() {
        match t.get("toolSpec") {
            Some(spec) => anthropic_tools.push(json!({
                "name": spec.get("name"),
                "description": spec.get("description"),
                "input_schema": spec.pointer("/inputSchema/json"),
            })),
            None if t.get("cachePoint").is_some() => mark(anthropic_tools.last_mut()),
            None => return Err(format!("toolConfig.tools has an unknown entry: {t}")),
        }
    }
    let mut system: Vec<Value> = Vec::new();
    for s in body
        .get("system")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match s.get("text") {
            Some(text) => system.push(json!({"type": "text", "text": text})),
            None => mark(system.last_mut()),
        }
    }
    let mut request = json!({"model": model, "stream": stream, "messages": messages});
    if let Some(max) = body.get("inferenceConfig").and_then(|c| c.get("maxTokens")) {
        request["max_tokens"] = max.clone();
    }
    if !system.is_empty() {
        request["system"] = Value::Array(system);
    }
    if !anthropic_tools.is_empty() {
        request["tools"] = Value::Array(anthropic_tools);
    }
    Ok(request)
}

enum Marker {
    Block(Value),
    CachePoint,
}

/// A `cachePoint` marks the block before it, as `cache_control` would.
fn mark(block: Option<&mut Value>) {
    if let Some(b) = block {
        b["cache_control"] = json!({"type": "ephemeral"});
    }
}

/// One Converse content block as the Anthropic block it stands for (the
/// mock only reads text, tool use and tool results).
fn anthropic_block(b: &Value) -> Option<Marker> {
    let block = if let Some(text) = b.get("text") {
        json!({"type": "text", "text": text})
    } else if let Some(t) = b.get("toolUse") {
        json!({"type": "tool_use", "id": t.get("toolUseId"), "name": t.get("name"), "input": t.get("input")})
    } else if let Some(r) = b.get("toolResult") {
        let text: Vec<&str> = r
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("text").and_then(Value::as_str))
            .collect();
        json!({"type": "tool_result", "tool_use_id": r.get("toolUseId"), "content": text.join(" ")})
    } else if b.get("image").is_some() || b.get("document").is_some() {
        json!({"type": "image"})
    } else if b.get("reasoningContent").is_some() {
        json!({"type": "thinking", "thinking": ""})
    } else if b.get("cachePoint").is_some() {
        return Some(Marker::CachePoint);
    } else {
        return None;
    };
    Some(Marker::Block(block))
}

/// Converse's usage for an Anthropic usage object.
fn usage(u: &Map<String, Value>) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (input, output) = (n("input_tokens"), n("output_tokens"));
    let (read, write) = (
        n("cache_read_input_tokens"),
        n("cache_creation_input_tokens"),
    );
    json!({
        "inputTokens": input, "outputTokens": output,
        "totalTokens": input + output + read + write,
        "cacheReadInputTokens": read, "cacheWriteInputTokens": write,
    })
}

/// An Anthropic message as a Converse answer.
fn converse_answer(message: &Value) -> Value {
    let content: Vec<Value> = message["content"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| match b["type"].as_str() {
            Some("tool_use") => {
                json!({"toolUse": {"toolUseId": b["id"], "name": b["name"], "input": b["input"]}})
            }
            _ => json!({"text": b["text"]}),
        })
        .collect();
    let u = message["usage"].as_object().cloned().unwrap_or_default();
    json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": message["stop_reason"],
        "usage": usage(&u),
        "metrics": {"latencyMs": 1},
    })
}

/// The Converse events of one Anthropic event; `usage` gathers Anthropic's
/// usage for the closing `metadata`.
fn converse_events(e: &Value, u: &mut Map<String, Value>) -> Vec<(&'static str, Value)> {
    let index = &e["index"];
    match e["type"].as_str().unwrap_or("") {
        "message_start" => {
            if let Some(m) = e.pointer("/message/usage").and_then(Value::as_object) {
                u.extend(m.clone());
            }
            vec![("messageStart", json!({"role": "assistant"}))]
        }
        "content_block_start" if e["content_block"]["type"] == "tool_use" => {
            let b = &e["content_block"];
            vec![(
                "contentBlockStart",
                json!({"contentBlockIndex": index,
                       "start": {"toolUse": {"toolUseId": b["id"], "name": b["name"]}}}),
            )]
        }
        "content_block_delta" => {
            let d = &e["delta"];
            let delta = match d["type"].as_str() {
                Some("input_json_delta") => json!({"toolUse": {"input": d["partial_json"]}}),
                _ => json!({"text": d["text"]}),
            };
            vec![(
                "contentBlockDelta",
                json!({"contentBlockIndex": index, "delta": delta}),
            )]
        }
        "content_block_stop" => vec![("contentBlockStop", json!({"contentBlockIndex": index}))],
        "message_delta" => {
            if let Some(m) = e["usage"].as_object() {
                u.extend(m.clone());
            }
            vec![(
                "messageStop",
                json!({"stopReason": e["delta"]["stop_reason"]}),
            )]
        }
        "message_stop" => vec![(
            "metadata",
            json!({"usage": usage(u), "metrics": {"latencyMs": 1}}),
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_converse_body_reads_as_the_anthropic_request_it_stands_for() {
        let body = json!({
            "system": [{"text": "sys"}, {"cachePoint": {"type": "default"}}],
            "inferenceConfig": {"maxTokens": 9},
            "toolConfig": {"tools": [{"toolSpec": {"name": "w", "inputSchema": {"json": {}}}}]},
            "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        });
        let r = anthropic_request(body.to_string().as_bytes(), "m", true).expect("valid");
        assert_eq!(r["max_tokens"], 9);
        assert_eq!(r["system"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(r["tools"][0]["name"], "w");
        for bad in [
            json!({"model": "m", "messages": []}),
            json!({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}),
            json!({"messages": [{"role": "user", "content": [{"toolResult": {}}]}]}),
        ] {
            assert!(anthropic_request(bad.to_string().as_bytes(), "m", false).is_err());
        }
    }
}
