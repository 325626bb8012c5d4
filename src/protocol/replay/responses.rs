//! The Responses API event sequence: `response.created`, per output item its
//! added / delta / done events, and the terminal event with the response.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{field, named_event, pieces};

/// Numbers events in order (`sequence_number`) as the API does.
struct Events {
    out: Vec<Bytes>,
}

impl Events {
    /// Adds `type`, then `sequence_number`, then `fields`.
    fn push<const N: usize>(&mut self, ty: &str, fields: [(&str, Value); N]) {
        let mut event = Map::new();
        event.insert("type".into(), Value::from(ty));
        event.insert("sequence_number".into(), Value::from(self.out.len()));
        for (k, v) in fields {
            event.insert(k.to_owned(), v);
        }
        self.out.push(named_event(ty, &Value::Object(event)));
    }
}

/// The events that stream `response`.
pub(super) fn events(response: &Map<String, Value>) -> Option<Vec<Bytes>> {
    let output = response.get("output")?.as_array()?;
    let mut pending = response.clone();
    pending.insert("status".into(), Value::from("in_progress"));
    pending.insert("output".into(), Value::Array(Vec::new()));
    pending.insert("usage".into(), Value::Null);
    for name in ["incomplete_details", "error", "completed_at"] {
        if let Some(slot) = pending.get_mut(name) {
            *slot = Value::Null;
        }
    }
    let pending = Value::Object(pending);
    let mut events = Events { out: Vec::new() };
    events.push("response.created", [("response", pending.clone())]);
    events.push("response.in_progress", [("response", pending)]);
    for (output_index, item) in output.iter().enumerate() {
        let item = item.as_object()?;
        let added = in_progress(item);
        events.push(
            "response.output_item.added",
            [
                ("output_index", Value::from(output_index)),
                ("item", Value::Object(added)),
            ],
        );
        match item.get("type").and_then(Value::as_str) {
            Some("message") => message_parts(&mut events, output_index, item)?,
            Some("function_call") => function_call(&mut events, output_index, item),
            // Other items (reasoning, tool calls run by the API) arrive whole.
            _ => {}
        }
        events.push(
            "response.output_item.done",
            [
                ("output_index", Value::from(output_index)),
                ("item", Value::Object(item.clone())),
            ],
        );
    }
    let terminal = match response.get("status").and_then(Value::as_str) {
        Some("incomplete") => "response.incomplete",
        _ => "response.completed",
    };
    events.push(terminal, [("response", Value::Object(response.clone()))]);
    Some(events.out)
}

/// An item as `output_item.added` shows it: in progress, nothing generated.
fn in_progress(item: &Map<String, Value>) -> Map<String, Value> {
    let mut added = item.clone();
    if added.contains_key("status") {
        added.insert("status".into(), Value::from("in_progress"));
    }
    match item.get("type").and_then(Value::as_str) {
        Some("message") => {
            added.insert("content".into(), Value::Array(Vec::new()));
        }
        Some("function_call") => {
            added.insert("arguments".into(), Value::from(""));
        }
        _ => {}
    }
    added
}

fn message_parts(
    events: &mut Events,
    output_index: usize,
    item: &Map<String, Value>,
) -> Option<()> {
    let item_id = field(item, "id");
    let parts = item.get("content").and_then(Value::as_array)?;
    for (content_index, part) in parts.iter().enumerate() {
        let part_map = part.as_object()?;
        let at = || {
            [
                ("item_id", item_id.clone()),
                ("output_index", Value::from(output_index)),
                ("content_index", Value::from(content_index)),
            ]
        };
        let ty = part_map.get("type").and_then(Value::as_str);
        let text_key = match ty {
            Some("output_text") => Some("text"),
            Some("refusal") => Some("refusal"),
            _ => None,
        };
        let mut empty = part_map.clone();
        if let Some(key) = text_key {
            empty.insert(key.into(), Value::from(""));
            for list in ["annotations", "logprobs"] {
                if empty.contains_key(list) {
                    empty.insert(list.into(), Value::Array(Vec::new()));
                }
            }
        }
        let [a, b, c] = at();
        events.push(
            "response.content_part.added",
            [a, b, c, ("part", Value::Object(empty))],
        );
        match (ty, text_key) {
            (Some("output_text"), Some(key)) => {
                let text = part_map.get(key).and_then(Value::as_str).unwrap_or("");
                for piece in pieces(text) {
                    let [a, b, c] = at();
                    events.push(
                        "response.output_text.delta",
                        [a, b, c, ("delta", piece.into()), ("logprobs", empty_list())],
                    );
                }
                let [a, b, c] = at();
                events.push(
                    "response.output_text.done",
                    [a, b, c, ("text", text.into()), ("logprobs", empty_list())],
                );
            }
            (_, Some(key)) => {
                let text = part_map.get(key).and_then(Value::as_str).unwrap_or("");
                for piece in pieces(text) {
                    let [a, b, c] = at();
                    events.push("response.refusal.delta", [a, b, c, ("delta", piece.into())]);
                }
                let [a, b, c] = at();
                events.push("response.refusal.done", [a, b, c, ("refusal", text.into())]);
            }
            _ => {}
        }
        let [a, b, c] = at();
        events.push(
            "response.content_part.done",
            [a, b, c, ("part", part.clone())],
        );
    }
    Some(())
}

fn function_call(events: &mut Events, output_index: usize, item: &Map<String, Value>) {
    let item_id = field(item, "id");
    let arguments = item.get("arguments").and_then(Value::as_str).unwrap_or("");
    for piece in pieces(arguments) {
        events.push(
            "response.function_call_arguments.delta",
            [
                ("item_id", item_id.clone()),
                ("output_index", Value::from(output_index)),
                ("delta", piece.into()),
            ],
        );
    }
    events.push(
        "response.function_call_arguments.done",
        [
            ("item_id", item_id),
            ("output_index", Value::from(output_index)),
            ("name", field(item, "name")),
            ("arguments", arguments.into()),
        ],
    );
}

fn empty_list() -> Value {
    Value::Array(Vec::new())
}
