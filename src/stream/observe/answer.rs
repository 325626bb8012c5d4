//! How an answer ended and what it called: the finish (stop) reason and the
//! tools the model called, in every API shape. A stream is read from the
//! events the observer already sees — a byte check first, a parse only for
//! the few events that carry either — and a complete JSON answer from the
//! fields its usage parse borrowed. Nothing is buffered for this.

use crate::find::{contains, find};
use std::borrow::Cow;

use serde::de::MapAccess;

use super::lenient::{fields, value, Lenient, Shape};
use crate::usage::UsageFields;

/// Most distinct tool names kept per answer; calls past it are still
/// counted in `tool_calls`, their names not listed.
pub const MAX_TOOL_NAMES: usize = 16;
/// Longest tool name kept, in bytes (cut at a character boundary).
pub const MAX_TOOL_NAME_BYTES: usize = 64;
/// Longest finish reason kept: it is the provider's string, not trusted to
/// be short.
const MAX_REASON_BYTES: usize = 64;

/// How an answer ended, and the tools it called.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerFacts {
    /// OpenAI's `choices[0].finish_reason`, Anthropic's `stop_reason`, or for
    /// a Responses answer `incomplete_details.reason` when it is incomplete,
    /// else its `status`.
    pub finish_reason: Option<String>,
    /// Tool calls made (all of them, past the name bound too).
    pub tool_calls: u32,
    /// Distinct names of the tools called, in order of first call; at most
    /// [`MAX_TOOL_NAMES`], each at most [`MAX_TOOL_NAME_BYTES`].
    pub tool_names: Vec<String>,
}

impl AnswerFacts {
    /// The answer stopped because it reached its output cap (`length`,
    /// `max_tokens`, `max_output_tokens`).
    pub fn hit_output_cap(&self) -> bool {
        matches!(
            self.finish_reason.as_deref(),
            Some("length" | "max_tokens" | "max_output_tokens")
        )
    }

    fn finish(&mut self, reason: &str) {
        self.finish_reason = Some(cut(reason, MAX_REASON_BYTES).to_owned());
    }

    fn tool(&mut self, name: &str) {
        self.tool_calls = self.tool_calls.saturating_add(1);
        let name = cut(name, MAX_TOOL_NAME_BYTES);
        if self.tool_names.len() < MAX_TOOL_NAMES && !self.tool_names.iter().any(|n| n == name) {
            self.tool_names.push(name.to_owned());
        }
    }

    /// Looks at one SSE event's JSON data (`event` is its name, empty when
    /// the stream names none, as OpenAI chat and completions streams).
    pub fn on_event(&mut self, event: &[u8], data: &[u8]) {
        match event {
            b"message_delta" => {
                let delta = read::<DeltaOf<StopReasonOf<Cow<'_, str>>>>(data);
                if let Some(r) = delta.and_then(|m| m.0?.0) {
                    self.finish(&r);
                }
            }
            b"content_block_start" => {
                if !contains!(data, b"tool_use\"") {
                    return;
                }
                if let Some(b) = read::<ContentBlockOf<Block<'_>>>(data).and_then(|s| s.0) {
                    self.block(&b);
                }
            }
            b"response.output_item.added" => {
                if !contains!(data, b"_call\"") {
                    return;
                }
                if let Some(item) = read::<ItemOf<Block<'_>>>(data).and_then(|a| a.0) {
                    self.item(&item);
                }
            }
            b"response.completed" | b"response.incomplete" | b"response.failed" => {
                if let Some(r) = read::<ResponseOf<ResponseEnd<'_>>>(data).and_then(|f| f.0) {
                    self.response_end(&r);
                }
            }
            // OpenAI chat and completions streams name no events.
            b"" | b"message" => self.on_chunk(data),
            _ => {}
        }
    }

    /// An OpenAI chat or completions chunk: parsed only when it carries a
    /// finish reason (not `null`) or a tool call's name.
    fn on_chunk(&mut self, data: &[u8]) {
        let finish = find!(data, b"\"finish_reason\":").is_some_and(|at| {
            let rest = &data[at + b"\"finish_reason\":".len()..];
            rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'"')
        });
        let tools = contains!(data, b"_call") && contains!(data, b"\"name\"");
        if !finish && !tools {
            return;
        }
        if let Some(choices) = read::<ChoicesOf<Vec<Choice<'_>>>>(data).and_then(|c| c.0) {
            self.choices(choices);
        }
    }

    fn choices(&mut self, choices: Vec<Choice<'_>>) {
        for c in choices {
            if let (0, Some(r)) = (c.index, &c.finish_reason) {
                self.finish(r);
            }
            // A stream names a call in its first delta only.
            for m in [c.delta, c.message].into_iter().flatten() {
                for name in m.names() {
                    self.tool(&name);
                }
            }
        }
    }

    /// An Anthropic content block: a client tool, a server tool or an MCP
    /// tool call.
    fn block(&mut self, b: &Block<'_>) {
        if matches!(&*b.kind, "tool_use" | "server_tool_use" | "mcp_tool_use") {
            if let Some(n) = &b.name {
                self.tool(n);
            }
        }
    }

    /// A Responses output item: a named call (function, custom tool, MCP),
    /// or a built-in tool's call, named for its tool (`web_search_call` →
    /// `web_search`).
    fn item(&mut self, item: &Block<'_>) {
        match (&*item.kind, &item.name) {
            ("function_call" | "custom_tool_call" | "mcp_call", Some(n)) => self.tool(n),
            (kind, _) => {
                if let Some(tool) = kind.strip_suffix("_call") {
                    self.tool(tool);
                }
            }
        }
    }

    fn response_end(&mut self, r: &ResponseEnd<'_>) {
        let reason = r.incomplete_details.as_ref().and_then(|d| d.0.as_ref());
        match (r.status.as_deref(), reason) {
            (Some("incomplete"), Some(reason)) => self.finish(reason),
            (Some(status), _) => self.finish(status),
            _ => {}
        }
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A complete JSON answer (any API shape): its usage, and the fields that
/// say how it ended, read in the same pass. A fact field of an odd shape
/// reads as absent, so it never costs the usage.
#[derive(Default)]
pub(super) struct Whole<'a> {
    pub usage: Option<UsageFields>,
    choices: Option<Vec<Choice<'a>>>,
    stop_reason: Option<Cow<'a, str>>,
    content: Option<Vec<Block<'a>>>,
    output: Option<Vec<Block<'a>>>,
    object: Option<Cow<'a, str>>,
    end: ResponseEnd<'a>,
}

impl<'de: 'a, 'a> Shape<'de> for Whole<'a> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let mut w = Whole::default();
        fields(map, |key, map| {
            match key {
                "usage" => w.usage = map.next_value()?,
                "choices" => w.choices = value(map)?,
                "stop_reason" => w.stop_reason = value(map)?,
                "content" => w.content = value(map)?,
                "output" => w.output = value(map)?,
                "object" => w.object = value(map)?,
                "status" => w.end.status = value(map)?,
                "incomplete_details" => w.end.incomplete_details = value(map)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(Some(w))
    }
}

impl<'a> Whole<'a> {
    /// Reads a complete answer; `None` if it is not a JSON object.
    pub fn read(body: &'a str) -> Option<Whole<'a>> {
        serde_json::from_str::<Lenient<Whole<'a>>>(body).ok()?.0
    }

    /// How the answer ended and what it called.
    pub fn facts(self) -> AnswerFacts {
        let mut f = AnswerFacts::default();
        if let Some(choices) = self.choices {
            f.choices(choices);
        }
        if let Some(reason) = self.stop_reason {
            f.finish(&reason);
        }
        for b in self.content.unwrap_or_default() {
            f.block(&b);
        }
        if self.object.as_deref() == Some("response") {
            for item in self.output.unwrap_or_default() {
                f.item(&item);
            }
            f.response_end(&self.end);
        }
        f
    }
}

/// The complete answer's facts (a cached answer, replayed).
pub fn of_json(body: &[u8]) -> AnswerFacts {
    read::<Whole<'_>>(body)
        .map(Whole::facts)
        .unwrap_or_default()
}

/// Declares an object read for one field only: `Name<T>` holds its
/// `"key"` member when that has shape `T`.
macro_rules! one_field {
    ($(#[$doc:meta])* $name:ident, $key:literal) => {
        $(#[$doc])*
        struct $name<T>(Option<T>);

        impl<'de, T: Shape<'de>> Shape<'de> for $name<T> {
            fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
                let mut v = None;
                fields(map, |key, map| {
                    if key != $key {
                        return Ok(false);
                    }
                    v = value(map)?;
                    Ok(true)
                })?;
                Ok(Some($name(v)))
            }
        }
    };
}

one_field!(
    /// An OpenAI chat or completions chunk: only its choices.
    ChoicesOf,
    "choices"
);
one_field!(
    /// A chat tool call: its function.
    FunctionOf,
    "function"
);
one_field!(
    /// A function (call): its name.
    NameOf,
    "name"
);
one_field!(
    /// Anthropic's `message_delta` event: its delta.
    DeltaOf,
    "delta"
);
one_field!(
    /// A `message_delta` event's delta: its stop reason.
    StopReasonOf,
    "stop_reason"
);
one_field!(
    /// Anthropic's `content_block_start` event: the block.
    ContentBlockOf,
    "content_block"
);
one_field!(
    /// The Responses API's `response.output_item.added` event: the item.
    ItemOf,
    "item"
);
one_field!(
    /// The Responses API's final events: the response.
    ResponseOf,
    "response"
);
one_field!(
    /// A Responses answer's `incomplete_details`: the reason.
    ReasonOf,
    "reason"
);

type Name<'a> = NameOf<Cow<'a, str>>;

#[derive(Default)]
struct Choice<'a> {
    index: u64,
    finish_reason: Option<Cow<'a, str>>,
    delta: Option<Message<'a>>,
    message: Option<Message<'a>>,
}

impl<'de: 'a, 'a> Shape<'de> for Choice<'a> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let mut c = Choice::default();
        fields(map, |key, map| {
            match key {
                "index" => c.index = value(map)?.unwrap_or_default(),
                "finish_reason" => c.finish_reason = value(map)?,
                "delta" => c.delta = value(map)?,
                "message" => c.message = value(map)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(Some(c))
    }
}

/// A chat message or delta: only the names of the tools it calls.
#[derive(Default)]
struct Message<'a> {
    tool_calls: Vec<FunctionOf<Name<'a>>>,
    function_call: Option<Name<'a>>,
}

impl<'a> Message<'a> {
    fn names(self) -> impl Iterator<Item = Cow<'a, str>> {
        let calls = self.tool_calls.into_iter().filter_map(|c| c.0?.0);
        calls.chain(self.function_call.and_then(|f| f.0))
    }
}

impl<'de: 'a, 'a> Shape<'de> for Message<'a> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let mut m = Message::default();
        fields(map, |key, map| {
            match key {
                "tool_calls" => m.tool_calls = value(map)?.unwrap_or_default(),
                "function_call" => m.function_call = value(map)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(Some(m))
    }
}

/// An Anthropic content block or a Responses output item (one without a
/// string `type` is left out).
struct Block<'a> {
    kind: Cow<'a, str>,
    name: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Shape<'de> for Block<'a> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let (mut kind, mut name) = (None, None);
        fields(map, |key, map| {
            match key {
                "type" => kind = value(map)?,
                "name" => name = value(map)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(kind.map(|kind| Block { kind, name }))
    }
}

/// A Responses answer's end: its status, and why it is incomplete.
#[derive(Default)]
struct ResponseEnd<'a> {
    status: Option<Cow<'a, str>>,
    incomplete_details: Option<ReasonOf<Cow<'a, str>>>,
}

impl<'de: 'a, 'a> Shape<'de> for ResponseEnd<'a> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let mut r = ResponseEnd::default();
        fields(map, |key, map| {
            match key {
                "status" => r.status = value(map)?,
                "incomplete_details" => r.incomplete_details = value(map)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(Some(r))
    }
}

/// `data` read as shape `T`, or `None` (malformed JSON or another shape).
fn read<'a, T: Shape<'a>>(data: &'a [u8]) -> Option<T> {
    serde_json::from_slice::<Lenient<T>>(data).ok()?.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(events: &[(&str, &str)]) -> AnswerFacts {
        let mut f = AnswerFacts::default();
        for (event, data) in events {
            f.on_event(event.as_bytes(), data.as_bytes());
        }
        f
    }

    #[test]
    fn openai_chat_stream() {
        let f = stream(&[
            (
                "",
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            ),
            (
                "",
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#,
            ),
            (
                "",
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"name\":1}"}}]},"finish_reason":null}]}"#,
            ),
            (
                "",
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"c2","function":{"name":"get_time","arguments":""}}]}}]}"#,
            ),
            (
                "",
                r#"{"choices":[{"index":1,"delta":{},"finish_reason":"length"}]}"#,
            ),
            (
                "",
                r#"{"choices":[{"index":0,"delta":{},"finish_reason": "tool_calls"}]}"#,
            ),
        ]);
        assert_eq!(f.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(f.tool_calls, 2);
        assert_eq!(f.tool_names, ["get_weather", "get_time"]);
        assert!(!f.hit_output_cap());
    }

    #[test]
    fn anthropic_stream() {
        let f = stream(&[
            (
                "message_start",
                r#"{"type":"message_start","message":{"stop_reason":null}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"search","input":{}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":2,"content_block":{"type":"server_tool_use","id":"s","name":"web_search","input":{}}}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":9}}"#,
            ),
        ]);
        assert_eq!(f.finish_reason.as_deref(), Some("max_tokens"));
        assert_eq!(f.tool_names, ["search", "web_search"]);
        assert!(f.hit_output_cap());
    }

    #[test]
    fn responses_stream() {
        let f = stream(&[
            (
                "response.created",
                r#"{"type":"response.created","response":{"status":"in_progress"}}"#,
            ),
            (
                "response.output_item.added",
                r#"{"type":"response.output_item.added","item":{"type":"function_call","name":"lookup","arguments":""}}"#,
            ),
            (
                "response.output_item.added",
                r#"{"type":"response.output_item.added","item":{"type":"web_search_call","id":"ws"}}"#,
            ),
            (
                "response.output_item.added",
                r#"{"type":"response.output_item.added","item":{"type":"message","content":[]}}"#,
            ),
            (
                "response.incomplete",
                r#"{"type":"response.incomplete","response":{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"}}}"#,
            ),
        ]);
        assert_eq!(f.finish_reason.as_deref(), Some("max_output_tokens"));
        assert_eq!(f.tool_names, ["lookup", "web_search"]);
        assert!(f.hit_output_cap());
        let done = stream(&[(
            "response.completed",
            r#"{"type":"response.completed","response":{"status":"completed","incomplete_details":null}}"#,
        )]);
        assert_eq!(done.finish_reason.as_deref(), Some("completed"));
    }

    #[test]
    fn whole_answers_in_every_shape() {
        let chat = of_json(
            br#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":null,
                "tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{}"}},
                              {"id":"b","type":"function","function":{"name":"f","arguments":"{}"}}]},
                "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
        );
        assert_eq!(chat.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            (chat.tool_calls, chat.tool_names.as_slice()),
            (2, &["f".to_owned()][..])
        );
        let completion =
            of_json(br#"{"choices":[{"text":"x","index":0,"finish_reason":"length"}]}"#);
        assert!(completion.hit_output_cap());
        let msg = of_json(
            br#"{"type":"message","content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"t","name":"g","input":{}}],
                "stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":1}}"#,
        );
        assert_eq!(msg.finish_reason.as_deref(), Some("tool_use"));
        assert_eq!(msg.tool_names, ["g"]);
        let resp = of_json(
            br#"{"object":"response","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},
                "output":[{"type":"message","content":[]}]}"#,
        );
        assert_eq!(resp.finish_reason.as_deref(), Some("max_output_tokens"));
        // An odd field never breaks the parse (nor the usage beside it).
        let odd = of_json(br#"{"choices":"x","content":"text","stop_reason":7,"status":500}"#);
        assert_eq!(odd, AnswerFacts::default());
        let w =
            Whole::read(r#"{"content":"s","status":1,"usage":{"input_tokens":3}}"#).expect("whole");
        assert!(w.usage.is_some());
        // One odd choice costs only itself; repeated keys: the last wins.
        let mixed = of_json(
            br#"{"choices":[7,{"index":"0","message":{"tool_calls":[{"function":{"name":"a"}},"x",
                {"function":{"name":1}}],"function_call":{"name":"b"}}},
                {"index":0,"finish_reason":"stop","finish_reason":"length"}]}"#,
        );
        assert_eq!(mixed.tool_names, ["a", "b"]);
        assert_eq!(mixed.finish_reason.as_deref(), Some("length"));
        // Escaped strings are read too.
        let escaped = of_json(br#"{"stop_reason":"end\u005fturn"}"#);
        assert_eq!(escaped.finish_reason.as_deref(), Some("end_turn"));
    }

    #[test]
    fn names_and_reasons_are_bounded() {
        let mut f = AnswerFacts::default();
        for i in 0..40 {
            f.tool(&format!("tool_{i}_{}", "é".repeat(40)));
        }
        f.tool("tool_0");
        assert_eq!(f.tool_calls, 41);
        assert_eq!(f.tool_names.len(), MAX_TOOL_NAMES);
        assert!(f.tool_names.iter().all(|n| n.len() <= MAX_TOOL_NAME_BYTES));
        f.finish(&"x".repeat(10_000));
        assert_eq!(f.finish_reason.map(|r| r.len()), Some(MAX_REASON_BYTES));
    }
}
