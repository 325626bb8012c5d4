//! Provider prompt caching for Anthropic: `cache_control` breakpoints on the
//! stable, long parts of a request — the tool definitions, the system prompt
//! and the conversation before the latest turn — so the provider bills
//! repeats of that prefix at its cache-read rate (a tenth of the input
//! price). Never more than the provider's four breakpoints, never where the
//! prefix is too short to be cached, and never when the client placed its
//! own.

use serde_json::{json, Map, Value};

use crate::limits::tokens::Family;

/// Anthropic allows at most this many breakpoints per request.
const MAX_BREAKPOINTS: usize = 4;

/// Adds breakpoints to an Anthropic Messages body; returns how many. A
/// prefix gets one only when it is at least `min_tokens` long (estimated).
pub fn add_breakpoints(body: &mut Map<String, Value>, min_tokens: u64) -> usize {
    if has_cache_control(&Value::Object(body.clone())) {
        return 0;
    }
    let family = Family::Claude;
    let mut prefix = 0u64;
    let mut added = 0;

    // 1. Tools come first in the prompt.
    if let Some(Value::Array(tools)) = body.get_mut("tools") {
        prefix += family.count(&Value::Array(tools.clone()).to_string());
        if prefix >= min_tokens {
            if let Some(Value::Object(last)) = tools.last_mut() {
                last.insert("cache_control".into(), ephemeral());
                added += 1;
            }
        }
    }
    // 2. The system prompt.
    if let Some(system) = body.get_mut("system") {
        prefix += family.count(&text_of(system));
        if prefix >= min_tokens && mark_last_block(system) {
            added += 1;
        }
    }
    // 3. The conversation before the latest message: stable across turns.
    if let Some(Value::Array(messages)) = body.get_mut("messages") {
        let n = messages.len();
        if n >= 2 && added < MAX_BREAKPOINTS {
            for m in &messages[..n - 1] {
                prefix += family.count(&m.get("content").map(text_of).unwrap_or_default());
            }
            if prefix >= min_tokens {
                if let Some(content) = messages[n - 2].get_mut("content") {
                    if mark_last_block(content) {
                        added += 1;
                    }
                }
            }
        }
    }
    added
}

fn ephemeral() -> Value {
    json!({"type": "ephemeral"})
}

/// Puts a breakpoint on the last block of a string-or-blocks field.
fn mark_last_block(v: &mut Value) -> bool {
    match v {
        Value::String(s) => {
            let text = std::mem::take(s);
            *v = json!([{"type": "text", "text": text, "cache_control": ephemeral()}]);
            true
        }
        Value::Array(blocks) => match blocks.last_mut() {
            Some(Value::Object(b)) => {
                b.insert("cache_control".into(), ephemeral());
                true
            }
            _ => false,
        },
        _ => false,
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn has_cache_control(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.contains_key("cache_control") || o.values().any(has_cache_control),
        Value::Array(a) => a.iter().any(has_cache_control),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(o) => o,
            _ => Map::new(),
        }
    }

    #[test]
    fn long_prefixes_get_breakpoints() {
        let long = "lorem ipsum dolor sit amet ".repeat(200);
        let mut b = body(json!({
            "model": "claude-x",
            "tools": [{"name": "a", "input_schema": {}}, {"name": "b", "description": long, "input_schema": {}}],
            "system": long,
            "messages": [
                {"role": "user", "content": long},
                {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
                {"role": "user", "content": "next question"},
            ],
        }));
        assert_eq!(add_breakpoints(&mut b, 1024), 3);
        assert_eq!(b["tools"][1]["cache_control"]["type"], "ephemeral");
        assert!(b["tools"][0].get("cache_control").is_none());
        assert_eq!(b["system"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(b["system"][0]["text"], long.as_str());
        assert_eq!(
            b["messages"][1]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
        assert!(b["messages"][2].get("cache_control").is_none());
    }

    #[test]
    fn short_prompts_and_client_breakpoints_are_left_alone() {
        let mut short =
            body(json!({"system": "be brief", "messages": [{"role": "user", "content": "hi"}]}));
        let before = short.clone();
        assert_eq!(add_breakpoints(&mut short, 1024), 0);
        assert_eq!(short, before);
        let long = "x y z ".repeat(2000);
        let mut own = body(
            json!({"system": [{"type": "text", "text": long, "cache_control": {"type": "ephemeral"}}],
                                  "messages": [{"role": "user", "content": long}, {"role": "user", "content": "q"}]}),
        );
        let before = own.clone();
        assert_eq!(add_breakpoints(&mut own, 10), 0);
        assert_eq!(own, before);
    }
}
