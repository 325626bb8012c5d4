//! OpenAI chat and text completions: merge `chat.completion.chunk` /
//! `text_completion` chunks into the object the non-streaming API returns.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{append, merge_logprobs, Step};

/// Top-level fields copied from the chunks besides id/created/model (others,
/// like per-chunk `obfuscation` padding, do not belong in the answer).
const EXTRA_FIELDS: [&str; 2] = ["service_tier", "system_fingerprint"];

/// What every OpenAI chunk stream shares: the head fields, the usage chunk
/// and the `[DONE]` marker.
#[derive(Debug, Default)]
struct Common {
    head: Map<String, Value>,
    extras: Map<String, Value>,
    usage: Option<Value>,
    done: bool,
}

impl Common {
    /// Parses one event; `None` means nothing more to do with it.
    fn parse(&mut self, data: &[u8]) -> Result<Option<Map<String, Value>>, Step> {
        if data.is_empty() {
            return Ok(None);
        }
        if data == b"[DONE]" {
            self.done = true;
            return Ok(None);
        }
        let Ok(chunk) = serde_json::from_slice::<Map<String, Value>>(data) else {
            return Err(Step::Fail);
        };
        if chunk.contains_key("error") {
            return Err(Step::Fail);
        }
        for name in ["id", "created", "model"] {
            if let Some(v) = chunk.get(name) {
                self.head.entry(name).or_insert_with(|| v.clone());
            }
        }
        for name in EXTRA_FIELDS {
            match chunk.get(name) {
                Some(Value::Null) | None => {}
                Some(v) => {
                    self.extras.insert(name.to_owned(), v.clone());
                }
            }
        }
        if let Some(usage @ Value::Object(_)) = chunk.get("usage") {
            self.usage = Some(usage.clone());
        }
        Ok(Some(chunk))
    }

    /// The response object around `choices`, in the API's field order.
    fn build(self, object: &str, choices: Vec<Value>) -> Value {
        let mut out = Map::new();
        if let Some(id) = self.head.get("id") {
            out.insert("id".into(), id.clone());
        }
        out.insert("object".into(), Value::from(object));
        for name in ["created", "model"] {
            if let Some(v) = self.head.get(name) {
                out.insert(name.into(), v.clone());
            }
        }
        out.insert("choices".into(), Value::Array(choices));
        if let Some(usage) = self.usage {
            out.insert("usage".into(), usage);
        }
        out.extend(self.extras);
        Value::Object(out)
    }
}

/// The `index` of a choice or tool call (its position when absent).
fn index_of(item: &Value, position: usize) -> u64 {
    item.get("index")
        .and_then(Value::as_u64)
        .unwrap_or(position as u64)
}

/// Accumulates a chat completion stream.
#[derive(Debug, Default)]
pub(super) struct ChatAcc {
    common: Common,
    choices: BTreeMap<u64, ChatChoice>,
}

#[derive(Debug, Default)]
struct ChatChoice {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, ToolCall>,
    function_call: Option<(String, String)>,
    annotations: Vec<Value>,
    /// Other streamed text fields (`reasoning_content` of some
    /// OpenAI-compatible providers), concatenated like `content`.
    extra_text: Map<String, Value>,
    logprobs: Option<Map<String, Value>>,
    finish_reason: Option<Value>,
}

/// Delta fields with their own merge rule; any other string field is text.
pub(crate) const CHAT_DELTA_FIELDS: [&str; 6] = [
    "role",
    "content",
    "refusal",
    "tool_calls",
    "function_call",
    "annotations",
];

#[derive(Debug, Default)]
struct ToolCall {
    id: Option<Value>,
    kind: Option<Value>,
    name: String,
    arguments: String,
}

impl ChatAcc {
    pub(super) fn event(&mut self, data: &[u8]) -> Step {
        let chunk = match self.common.parse(data) {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Step::More,
            Err(step) => return step,
        };
        let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
            return Step::More;
        };
        for (position, c) in choices.iter().enumerate() {
            let choice = self.choices.entry(index_of(c, position)).or_default();
            if let Some(delta) = c.get("delta") {
                choice.delta(delta);
            }
            if let Some(lp) = c.get("logprobs") {
                merge_logprobs(&mut choice.logprobs, lp);
            }
            match c.get("finish_reason") {
                None | Some(Value::Null) => {}
                Some(reason) => choice.finish_reason = Some(reason.clone()),
            }
        }
        Step::More
    }

    pub(super) fn finish(self) -> Option<Value> {
        // Complete means `[DONE]` and a finish reason on every choice.
        if !self.common.done
            || self.choices.is_empty()
            || self.choices.values().any(|c| c.finish_reason.is_none())
        {
            return None;
        }
        let choices = self
            .choices
            .into_iter()
            .map(|(index, c)| c.build(index))
            .collect();
        Some(self.common.build("chat.completion", choices))
    }
}

impl ChatChoice {
    fn delta(&mut self, delta: &Value) {
        if let Some(role) = delta.get("role").and_then(Value::as_str) {
            self.role = Some(role.to_owned());
        }
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            append(&mut self.content, text);
        }
        if let Some(text) = delta.get("refusal").and_then(Value::as_str) {
            append(&mut self.refusal, text);
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (position, call) in calls.iter().enumerate() {
                let acc = self.tool_calls.entry(index_of(call, position)).or_default();
                acc.delta(call);
            }
        }
        if let Some(call) = delta.get("function_call") {
            let (name, arguments) = self.function_call.get_or_insert_with(Default::default);
            if let Some(n) = call.get("name").and_then(Value::as_str) {
                if name.is_empty() {
                    name.push_str(n);
                }
            }
            if let Some(a) = call.get("arguments").and_then(Value::as_str) {
                arguments.push_str(a);
            }
        }
        if let Some(more) = delta.get("annotations").and_then(Value::as_array) {
            self.annotations.extend(more.iter().cloned());
        }
        let Some(fields) = delta.as_object() else {
            return;
        };
        for (name, value) in fields {
            let Some(text) = value.as_str() else {
                continue;
            };
            if CHAT_DELTA_FIELDS.contains(&name.as_str()) {
                continue;
            }
            match self.extra_text.get_mut(name) {
                Some(Value::String(have)) => have.push_str(text),
                _ => {
                    self.extra_text.insert(name.clone(), Value::from(text));
                }
            }
        }
    }

    fn build(self, index: u64) -> Value {
        let mut message = Map::new();
        message.insert(
            "role".into(),
            Value::from(self.role.unwrap_or_else(|| "assistant".to_owned())),
        );
        // A tool-call answer has `content: null`, even where a provider
        // streamed an empty string first.
        let content = self
            .content
            .filter(|c| !c.is_empty() || self.tool_calls.is_empty());
        message.insert("content".into(), content.map_or(Value::Null, Value::from));
        message.insert(
            "refusal".into(),
            self.refusal.map_or(Value::Null, Value::from),
        );
        if !self.tool_calls.is_empty() {
            let calls = self.tool_calls.into_values().map(ToolCall::build).collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        if let Some((name, arguments)) = self.function_call {
            let mut call = Map::new();
            call.insert("name".into(), Value::from(name));
            call.insert("arguments".into(), Value::from(arguments));
            message.insert("function_call".into(), Value::Object(call));
        }
        if !self.annotations.is_empty() {
            message.insert("annotations".into(), Value::Array(self.annotations));
        }
        message.extend(self.extra_text);
        let mut choice = Map::new();
        choice.insert("index".into(), Value::from(index));
        choice.insert("message".into(), Value::Object(message));
        choice.insert(
            "logprobs".into(),
            self.logprobs.map_or(Value::Null, Value::Object),
        );
        choice.insert(
            "finish_reason".into(),
            self.finish_reason.unwrap_or(Value::Null),
        );
        Value::Object(choice)
    }
}

impl ToolCall {
    fn delta(&mut self, call: &Value) {
        // Some providers repeat `id` and `name` on every delta: first wins.
        if let Some(id) = call.get("id").filter(|v| !v.is_null()) {
            self.id.get_or_insert_with(|| id.clone());
        }
        if let Some(kind) = call.get("type").filter(|v| !v.is_null()) {
            self.kind.get_or_insert_with(|| kind.clone());
        }
        let Some(function) = call.get("function") else {
            return;
        };
        if let Some(name) = function.get("name").and_then(Value::as_str) {
            if self.name.is_empty() {
                self.name.push_str(name);
            }
        }
        if let Some(args) = function.get("arguments").and_then(Value::as_str) {
            self.arguments.push_str(args);
        }
    }

    fn build(self) -> Value {
        let mut function = Map::new();
        function.insert("name".into(), Value::from(self.name));
        function.insert("arguments".into(), Value::from(self.arguments));
        let mut call = Map::new();
        call.insert("id".into(), self.id.unwrap_or(Value::Null));
        call.insert(
            "type".into(),
            self.kind.unwrap_or_else(|| Value::from("function")),
        );
        call.insert("function".into(), Value::Object(function));
        Value::Object(call)
    }
}

/// Accumulates a text completion stream.
#[derive(Debug, Default)]
pub(super) struct CompletionsAcc {
    common: Common,
    choices: BTreeMap<u64, TextChoice>,
}

#[derive(Debug, Default)]
struct TextChoice {
    text: String,
    logprobs: Option<Map<String, Value>>,
    finish_reason: Option<Value>,
}

impl CompletionsAcc {
    pub(super) fn event(&mut self, data: &[u8]) -> Step {
        let chunk = match self.common.parse(data) {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Step::More,
            Err(step) => return step,
        };
        let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
            return Step::More;
        };
        for (position, c) in choices.iter().enumerate() {
            let choice = self.choices.entry(index_of(c, position)).or_default();
            if let Some(text) = c.get("text").and_then(Value::as_str) {
                choice.text.push_str(text);
            }
            if let Some(lp) = c.get("logprobs") {
                merge_logprobs(&mut choice.logprobs, lp);
            }
            match c.get("finish_reason") {
                None | Some(Value::Null) => {}
                Some(reason) => choice.finish_reason = Some(reason.clone()),
            }
        }
        Step::More
    }

    pub(super) fn finish(self) -> Option<Value> {
        if !self.common.done
            || self.choices.is_empty()
            || self.choices.values().any(|c| c.finish_reason.is_none())
        {
            return None;
        }
        let choices = self
            .choices
            .into_iter()
            .map(|(index, c)| {
                let mut choice = Map::new();
                choice.insert("text".into(), Value::from(c.text));
                choice.insert("index".into(), Value::from(index));
                choice.insert(
                    "logprobs".into(),
                    c.logprobs.map_or(Value::Null, Value::Object),
                );
                choice.insert("finish_reason".into(), c.finish_reason.unwrap_or_default());
                Value::Object(choice)
            })
            .collect();
        Some(self.common.build("text_completion", choices))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(acc: &mut ChatAcc, events: &[Value]) {
        for e in events {
            assert_eq!(acc.event(e.to_string().as_bytes()), Step::More);
        }
    }

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({"id":"c1","object":"chat.completion.chunk","created":7,"model":"gpt-4o-mini",
               "system_fingerprint":"fp_1","obfuscation":"xyz",
               "choices":[{"index":0,"delta":delta,"logprobs":null,"finish_reason":finish}],
               "usage":null})
    }

    #[test]
    fn chat_text_and_tool_calls() {
        let mut acc = ChatAcc::default();
        run(
            &mut acc,
            &[
                chunk(
                    json!({"role":"assistant","content":"","refusal":null}),
                    Value::Null,
                ),
                chunk(json!({"content":"Hel"}), Value::Null),
                chunk(json!({"content":"lo"}), Value::Null),
                chunk(
                    json!({"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"g","arguments":""}}]}),
                    Value::Null,
                ),
                chunk(
                    json!({"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":"{\"a\""}}]}),
                    Value::Null,
                ),
                chunk(
                    json!({"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}),
                    Value::Null,
                ),
                chunk(
                    json!({"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]}),
                    Value::Null,
                ),
                chunk(json!({}), json!("tool_calls")),
                json!({"id":"c1","object":"chat.completion.chunk","created":7,"model":"gpt-4o-mini",
                       "choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}),
            ],
        );
        assert_eq!(acc.event(b"[DONE]"), Step::More);
        let out = acc.finish().expect("complete");
        assert_eq!(
            out,
            json!({"id":"c1","object":"chat.completion","created":7,"model":"gpt-4o-mini",
                   "choices":[{"index":0,"message":{"role":"assistant","content":"Hello","refusal":null,
                       "tool_calls":[
                           {"id":"call_a","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},
                           {"id":"call_b","type":"function","function":{"name":"g","arguments":"{}"}}]},
                       "logprobs":null,"finish_reason":"tool_calls"}],
                   "usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8},
                   "system_fingerprint":"fp_1"})
        );
    }

    #[test]
    fn chat_needs_done_and_finish_reason() {
        let mut acc = ChatAcc::default();
        run(&mut acc, &[chunk(json!({"content":"x"}), Value::Null)]);
        acc.event(b"[DONE]");
        assert_eq!(acc.finish(), None);

        let mut acc = ChatAcc::default();
        run(&mut acc, &[chunk(json!({"content":"x"}), json!("stop"))]);
        assert_eq!(acc.finish(), None);
    }

    #[test]
    fn chat_error_event_fails() {
        let mut acc = ChatAcc::default();
        assert_eq!(
            acc.event(br#"{"error":{"message":"overloaded","type":"server_error"}}"#),
            Step::Fail
        );
        assert_eq!(acc.event(b"{not json"), Step::Fail);
    }

    #[test]
    fn completions_concatenate_text() {
        let mut acc = CompletionsAcc::default();
        let chunk = |text: &str, finish: Value| {
            json!({"id":"cmpl-1","object":"text_completion","created":7,"model":"m",
                   "choices":[{"text":text,"index":0,"logprobs":null,"finish_reason":finish}]})
        };
        for e in [
            chunk("Hello", Value::Null),
            chunk(" world", Value::Null),
            chunk("", json!("length")),
        ] {
            assert_eq!(acc.event(e.to_string().as_bytes()), Step::More);
        }
        acc.event(b"[DONE]");
        assert_eq!(
            acc.finish(),
            Some(
                json!({"id":"cmpl-1","object":"text_completion","created":7,"model":"m",
                "choices":[{"text":"Hello world","index":0,"logprobs":null,"finish_reason":"length"}]})
            )
        );
    }
}
