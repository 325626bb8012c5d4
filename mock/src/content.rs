//! What the mock says and how it counts: generated text (echo, `x-mock-words`, sized modes,
//! truncation at the output cap), the text of messages, and word-based token accounting.

use serde_json::Value;

use crate::reply::Ctx;

/// Fixed `created` timestamp (2023-11-14T22:13:20Z) so responses are reproducible.
pub(crate) const CREATED: u64 = 1_700_000_000;
pub(crate) const CREATED_RFC3339: &str = "2023-11-14T22:13:20Z";
pub(crate) const DEFAULT_MODEL: &str = "mock-model";
/// Tool-call arguments and the fragments they are streamed in (OpenAI-like splitting).
pub(crate) const TOOL_ARGS: &str = "{\"city\":\"Paris\"}";
pub(crate) const TOOL_ARG_FRAGMENTS: [&str; 5] = ["{\"", "city", "\":\"", "Paris", "\"}"];

pub(crate) struct Generated {
    pub(crate) text: String,
    pub(crate) pieces: Vec<String>,
    pub(crate) truncated: bool,
}

impl Generated {
    pub(crate) fn completion_tokens(&self) -> u64 {
        self.pieces.len() as u64
    }
}

pub(crate) fn generate(ctx: &Ctx, user_text: &str, max_tokens: Option<u64>) -> Generated {
    let full = if ctx.opts.echo_body {
        format!("len:{}", ctx.body.len())
    } else if let Some(kb) = ctx.opts.large_kb {
        large_text(kb.saturating_mul(1024))
    } else if let Some(n) = ctx.opts.words {
        (0..n)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        format!("echo: {user_text}")
    };
    // The size-oriented modes ignore the token limit: their point is an exact body size.
    let sized = ctx.opts.echo_body || ctx.opts.large_kb.is_some();
    let words = split_words(&full);
    let (text, truncated) = match max_tokens {
        Some(max) if !sized && (max as usize) < words.len() => {
            let kept = words
                .iter()
                .take(max as usize)
                .map(String::as_str)
                .collect::<String>();
            (kept.trim_end().to_owned(), true)
        }
        _ => (full, false),
    };
    let pieces = match ctx.opts.chunk_chars {
        Some(n) => chunk_chars(&text, n),
        None => split_words(&text),
    };
    Generated {
        text,
        pieces,
        truncated,
    }
}

/// Exactly `len` bytes of ASCII words.
pub(crate) fn large_text(len: usize) -> String {
    const WORDS: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do ";
    let mut text = String::with_capacity(len);
    while text.len() < len {
        let take = (len - text.len()).min(WORDS.len());
        text.push_str(&WORDS[..take]);
    }
    text
}

/// Splits into pieces of one word plus the whitespace after it; leading whitespace stays with
/// the first word. Concatenating the pieces gives back `text`.
pub(crate) fn split_words(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut previous_ws = false;
    let mut seen_word = false;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if !ws && previous_ws && seen_word {
            pieces.push(text[start..i].to_owned());
            start = i;
        }
        seen_word |= !ws;
        previous_ws = ws;
    }
    if start < text.len() {
        pieces.push(text[start..].to_owned());
    }
    pieces
}

pub(crate) fn chunk_chars(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

pub(crate) fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Text of a message `content`: a string, or the text parts of an array joined by one space.
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(part_text)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Text of one content part (`text`, `input_text`, `output_text`, Anthropic `tool_result`...).
pub(crate) fn part_text(part: &Value) -> Option<String> {
    match part {
        Value::String(s) => Some(s.clone()),
        Value::Object(obj) => {
            if let Some(text) = obj.get("text").and_then(Value::as_str) {
                Some(text.to_owned())
            } else if let Some(content) = obj.get("content") {
                Some(content_text(content)).filter(|t| !t.is_empty())
            } else {
                obj.get("output").and_then(Value::as_str).map(str::to_owned)
            }
        }
        _ => None,
    }
}

pub(crate) fn messages_of(request: &Value) -> &[Value] {
    request
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Words of every message + 3 per message.
pub(crate) fn messages_prompt_tokens(messages: &[Value]) -> u64 {
    messages
        .iter()
        .map(|m| {
            3 + m
                .get("content")
                .map_or(0, |c| count_words(&content_text(c)))
        })
        .sum()
}

pub(crate) fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default()
}

/// Text that may trigger a tool call: that of the last message when it is a user turn without
/// tool results (after a tool result the mock answers with text, as a model would).
pub(crate) fn tool_trigger_text(messages: &[Value]) -> String {
    let Some(last) = messages.last() else {
        return String::new();
    };
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return String::new();
    }
    let content = last.get("content");
    let has_tool_result = content.and_then(Value::as_array).is_some_and(|blocks| {
        blocks
            .iter()
            .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
    });
    if has_tool_result {
        String::new()
    } else {
        content.map(content_text).unwrap_or_default()
    }
}

pub(crate) fn model_of(request: &Value) -> String {
    request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_MODEL)
        .to_owned()
}

pub(crate) fn u64_field(request: &Value, names: &[&str]) -> Option<u64> {
    names
        .iter()
        .find_map(|name| request.get(*name).and_then(Value::as_u64))
}

pub(crate) fn bool_at(request: &Value, pointer: &str) -> bool {
    request
        .pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The names of the tools to call, when the request has tools and `trigger_text` (see
/// [`tool_trigger_text`]) mentions the weather: `calls` parallel calls, of the request's tools
/// in order and round again when there are fewer tools than calls (`x-mock-tool-calls`;
/// default one call, of the first tool). Empty: answer with text.
pub(crate) fn tools_to_call(request: &Value, trigger_text: &str, calls: usize) -> Vec<String> {
    let tools = match request.get("tools").and_then(Value::as_array) {
        Some(t) if !t.is_empty() => t,
        _ => return Vec::new(),
    };
    if !trigger_text.to_lowercase().contains("weather") {
        return Vec::new();
    }
    let name = |tool: &Value| {
        tool.pointer("/function/name")
            .or_else(|| tool.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("get_weather")
            .to_owned()
    };
    (0..calls.max(1))
        .map(|i| name(&tools[i % tools.len()]))
        .collect()
}
