//! Anthropic messages: `message_start`, each content block's start / deltas /
//! stop, `message_delta` with the stop reason and output tokens, and
//! `message_stop`.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{named_event, object, pieces};

/// Block types whose `input` streams as `input_json_delta`.
const TOOL_BLOCKS: [&str; 3] = ["tool_use", "server_tool_use", "mcp_tool_use"];

/// The events that stream `message`.
pub(super) fn events(message: &Map<String, Value>) -> Option<Vec<Bytes>> {
    let blocks = message.get("content")?.as_array()?;
    let mut out = Vec::new();
    let mut push = |event: Value| {
        let ty = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        out.push(named_event(ty, &event));
    };

    let usage = message.get("usage").and_then(Value::as_object);
    let output_tokens = usage
        .and_then(|u| u.get("output_tokens"))
        .and_then(Value::as_u64);
    let mut start = message.clone();
    start.insert("content".into(), Value::Array(Vec::new()));
    start.insert("stop_reason".into(), Value::Null);
    start.insert("stop_sequence".into(), Value::Null);
    if let (Some(Value::Object(u)), Some(n)) = (start.get_mut("usage"), output_tokens) {
        // The API reports a token or so at the start, the total at the end.
        u.insert("output_tokens".into(), Value::from(n.min(1)));
    }
    push(object([
        ("type", "message_start".into()),
        ("message", Value::Object(start)),
    ]));

    for (index, block) in blocks.iter().enumerate() {
        let block = block.as_object()?;
        let ty = block.get("type").and_then(Value::as_str).unwrap_or("");
        let mut first = block.clone();
        let mut deltas: Vec<Value> = Vec::new();
        let mut text_deltas = |key: &str, delta_type: &str, first: &mut Map<String, Value>| {
            let text = block.get(key).and_then(Value::as_str).unwrap_or("");
            first.insert(key.into(), Value::from(""));
            for piece in pieces(text) {
                deltas.push(object([("type", delta_type.into()), (key, piece.into())]));
            }
        };
        match ty {
            "text" => {
                text_deltas("text", "text_delta", &mut first);
                if let Some(citations) = block.get("citations").and_then(Value::as_array) {
                    first.insert("citations".into(), Value::Array(Vec::new()));
                    for citation in citations {
                        deltas.push(object([
                            ("type", "citations_delta".into()),
                            ("citation", citation.clone()),
                        ]));
                    }
                }
            }
            "thinking" => {
                text_deltas("thinking", "thinking_delta", &mut first);
                let signature = block.get("signature").and_then(Value::as_str).unwrap_or("");
                if block.contains_key("signature") {
                    first.insert("signature".into(), Value::from(""));
                }
                if !signature.is_empty() {
                    deltas.push(object([
                        ("type", "signature_delta".into()),
                        ("signature", signature.into()),
                    ]));
                }
            }
            _ if TOOL_BLOCKS.contains(&ty) => {
                let input = block.get("input").cloned().unwrap_or_default();
                first.insert("input".into(), Value::Object(Map::new()));
                let json = serde_json::to_string(&input).ok()?;
                for piece in pieces(&json) {
                    deltas.push(object([
                        ("type", "input_json_delta".into()),
                        ("partial_json", piece.into()),
                    ]));
                }
            }
            // Other blocks (redacted thinking, tool results) arrive whole.
            _ => {}
        }
        push(object([
            ("type", "content_block_start".into()),
            ("index", index.into()),
            ("content_block", Value::Object(first)),
        ]));
        for delta in deltas {
            push(object([
                ("type", "content_block_delta".into()),
                ("index", index.into()),
                ("delta", delta),
            ]));
        }
        push(object([
            ("type", "content_block_stop".into()),
            ("index", index.into()),
        ]));
    }

    let mut end_usage = Map::new();
    if let Some(n) = output_tokens {
        end_usage.insert("output_tokens".into(), n.into());
    }
    push(object([
        ("type", "message_delta".into()),
        (
            "delta",
            object([
                (
                    "stop_reason",
                    message.get("stop_reason").cloned().unwrap_or_default(),
                ),
                (
                    "stop_sequence",
                    message.get("stop_sequence").cloned().unwrap_or_default(),
                ),
            ]),
        ),
        ("usage", Value::Object(end_usage)),
    ]));
    push(object([("type", "message_stop".into())]));
    Some(out)
}
