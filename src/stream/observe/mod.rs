//! Watches a response as it passes: usage, end-of-stream markers, in-stream
//! errors, how the answer ended and the tools it called (`answer`), and the
//! streamed text (for counting output when usage never comes).
//!
//! For OpenAI streams where Sluice asked for `stream_options.include_usage`
//! on the client's behalf, it also rewrites events so the client sees exactly
//! what it would have seen without that option.

use crate::find::{contains, find};
use std::borrow::Cow;

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ownership::IdSink;
use crate::protocol::sse::{parse_block, SseSplitter};
use crate::usage::{Usage, UsageAcc, UsageFields};
pub use answer::AnswerFacts;

pub mod answer;
mod lenient;

/// Streamed output text kept for counting, at most this many bytes.
const MAX_TEXT: usize = 4 << 20;
/// What the raw event buffer starts with (about 30 chunks of a chat stream).
const RAW_FIRST: usize = 4096;
/// A non-streamed JSON body is parsed for usage only up to this size.
const MAX_JSON: usize = 16 << 20;

/// What was learned from a response body.
#[derive(Debug, Default)]
pub struct Observed {
    /// Usage as the provider reported it.
    pub usage: Option<Usage>,
    /// The stream ended with its protocol's final event (`[DONE]`,
    /// `message_stop`, `response.completed`).
    pub complete: bool,
    /// The provider sent an error inside the stream.
    pub stream_error: bool,
    /// Streamed text (content, tool arguments), for counting output tokens
    /// when usage is missing.
    pub text: String,
    /// Number of SSE events seen.
    pub events: u64,
    /// The finish reason and the tools called.
    pub answer: AnswerFacts,
    /// Batch results read back: what the read charged.
    pub batch: Option<Box<crate::batch::Charge>>,
}

/// Per-response observer; one of four modes chosen from the response
/// (batch results: chosen by the passthrough stage).
#[derive(Debug)]
pub enum Observer {
    /// Server-sent events.
    Sse {
        splitter: SseSplitter,
        state: Box<SseState>,
    },
    /// A JSON body, kept (up to a cap) to read its usage at the end.
    Json {
        chunks: Vec<Bytes>,
        len: usize,
        anthropic: bool,
        /// Keep the answer's text (for a shadow's comparison).
        keep_text: bool,
    },
    /// Batch results (JSONL), priced line by line as they pass.
    Batch(Box<crate::batch::Tally>),
    /// Not inspected.
    None,
}

/// Event-level state of an SSE observer.
#[derive(Debug)]
pub struct SseState {
    acc: UsageAcc,
    strip_injected_usage: bool,
    out: Observed,
    /// Data of the JSON events seen, back to back, and where each ends.
    raw: Vec<u8>,
    raw_ends: Vec<usize>,
    /// Where the first JSON event's object id goes (a stored response or
    /// chat completion), before that event reaches the client.
    ids: Option<IdSink>,
    /// Keep the answer's text even when usage is reported (for a shadow's
    /// comparison).
    keep_text: bool,
}

impl Observer {
    pub fn sse(anthropic: bool, strip_injected_usage: bool) -> Self {
        Observer::Sse {
            splitter: SseSplitter::default(),
            state: Box::new(SseState {
                acc: UsageAcc::new(anthropic),
                strip_injected_usage,
                out: Observed::default(),
                raw: Vec::new(),
                raw_ends: Vec::new(),
                ids: None,
                keep_text: false,
            }),
        }
    }

    pub fn json(anthropic: bool) -> Self {
        Observer::Json {
            chunks: Vec::new(),
            len: 0,
            anthropic,
            keep_text: false,
        }
    }

    /// Keeps the answer's text in [`Observed::text`] whatever the usage.
    pub fn with_text(mut self) -> Self {
        match &mut self {
            Observer::Sse { state, .. } => state.keep_text = true,
            Observer::Json { keep_text, .. } => *keep_text = true,
            Observer::Batch(_) | Observer::None => {}
        }
        self
    }

    /// Bounds the size of one SSE event (see [`SseSplitter::with_max_event`]).
    pub fn with_max_event(mut self, max_event: usize) -> Self {
        if let Observer::Sse { splitter, .. } = &mut self {
            *splitter = SseSplitter::with_max_event(max_event);
        }
        self
    }

    /// Records the object id of an SSE stream's first JSON event (a chat
    /// chunk's `id`, `response.created`'s `response.id`) for the key that
    /// asked; other observers ignore it.
    pub fn with_ids(mut self, sink: IdSink) -> Self {
        if let Observer::Sse { state, .. } = &mut self {
            state.ids = Some(sink);
        }
        self
    }

    /// The event bound, once an SSE event has grown past it: the stream can
    /// no longer be followed and must end.
    pub fn oversized(&self) -> Option<usize> {
        match self {
            Observer::Sse { splitter, .. } if splitter.oversized() => Some(splitter.max_event()),
            _ => None,
        }
    }

    /// Whether the body is an event stream.
    pub fn is_stream(&self) -> bool {
        matches!(self, Observer::Sse { .. })
    }

    /// Whether frames must be rewritten (not just observed).
    pub fn rewrites(&self) -> bool {
        matches!(self, Observer::Sse { state, .. } if state.strip_injected_usage)
    }

    /// Observes a frame that passes through unchanged.
    pub fn observe(&mut self, chunk: &Bytes) {
        match self {
            Observer::Sse { splitter, state } => splitter.feed(chunk, |b| {
                state.on_event(b);
            }),
            Observer::Json { chunks, len, .. } => {
                *len += chunk.len();
                if *len <= MAX_JSON {
                    chunks.push(chunk.clone());
                }
            }
            Observer::Batch(tally) => tally.feed(chunk),
            Observer::None => {}
        }
    }

    /// Observes a frame and returns what to forward in its place: whole
    /// events only, with the injected usage removed. `None` = nothing yet.
    pub fn rewrite(&mut self, chunk: Bytes) -> Option<Bytes> {
        let Observer::Sse { splitter, state } = self else {
            self.observe(&chunk);
            return Some(chunk);
        };
        let was_empty = splitter.pending().is_empty();
        // At most what was held back and this chunk: no growth on the way.
        let mut out: Vec<u8> = Vec::with_capacity(splitter.pending().len() + chunk.len());
        let mut changed = false;
        splitter.feed(&chunk, |block| match state.on_event(block) {
            Keep::Unchanged => out.extend_from_slice(block),
            Keep::Drop => changed = true,
            Keep::Cut(at, len) => {
                changed = true;
                out.extend_from_slice(&block[..at]);
                out.extend_from_slice(&block[at + len..]);
            }
        });
        if was_empty && !changed && splitter.pending().is_empty() {
            return Some(chunk);
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    /// True when no event is half-forwarded, so a new event can be sent.
    pub fn at_event_boundary(&self) -> bool {
        match self {
            Observer::Sse { splitter, state } => {
                state.strip_injected_usage || splitter.pending().is_empty()
            }
            _ => false,
        }
    }

    /// Bytes held back by `rewrite` when the stream ends (an incomplete
    /// final event): forwarded as they are.
    pub fn take_pending(&mut self) -> Option<Bytes> {
        match self {
            Observer::Sse { splitter, state } if state.strip_injected_usage => {
                let rest = splitter.pending();
                (!rest.is_empty()).then(|| Bytes::copy_from_slice(rest))
            }
            _ => None,
        }
    }

    /// The streamed text so far (computed on demand).
    #[cfg(test)]
    pub fn streamed_text(&self) -> String {
        match self {
            Observer::Sse { state, .. } => state.text(),
            _ => String::new(),
        }
    }

    /// Everything learned, at the end of the body (or when it is dropped).
    pub fn finish(&mut self) -> Observed {
        match self {
            Observer::Sse { state, .. } => {
                let mut out = std::mem::take(&mut state.out);
                out.usage = state.acc.get();
                if out.usage.is_none() || state.keep_text {
                    out.text = state.text();
                }
                out
            }
            Observer::Json {
                chunks,
                len,
                anthropic,
                keep_text,
            } => {
                let mut out = Observed::default();
                if *len <= MAX_JSON {
                    // One chunk (the usual case): read in place, not copied.
                    let joined;
                    let body: &[u8] = match chunks.as_slice() {
                        [one] => one,
                        _ => {
                            joined = chunks.concat();
                            &joined
                        }
                    };
                    // Read as text (one UTF-8 check, not one per string).
                    let parsed = std::str::from_utf8(body).ok().and_then(answer::Whole::read);
                    if let Some(mut top) = parsed {
                        let usage = top.usage.take();
                        out.answer = top.facts();
                        if let Some(u) = &usage {
                            let mut acc = UsageAcc::new(*anthropic);
                            acc.add(u);
                            out.usage = acc.get();
                            if out.usage.is_none() {
                                // Implausible usage: count the answer instead.
                                out.text = answer_text(body);
                            }
                        }
                        out.complete = true;
                    }
                    if *keep_text && out.text.is_empty() {
                        out.text = answer_text(body);
                    }
                }
                out
            }
            Observer::Batch(tally) => Observed {
                batch: Some(Box::new(tally.finish())),
                ..Observed::default()
            },
            Observer::None => Observed::default(),
        }
    }
}

enum Keep {
    Unchanged,
    Drop,
    /// Forwarded without the `len` bytes at `at`.
    Cut(usize, usize),
}

const USAGE_NULL: &[u8] = b",\"usage\":null";

impl SseState {
    /// Looks at one event. Only the few events that carry a usage object or
    /// an error are parsed; the rest are kept as raw bytes (up to a cap) and
    /// parsed for their text only if the stream ends without usage.
    fn on_event(&mut self, block: &[u8]) -> Keep {
        let ev = parse_block(block);
        self.out.events += 1;
        let data: &[u8] = &ev.data;
        match ev.event {
            b"error" => self.out.stream_error = true,
            b"message_stop" | b"response.completed" => self.out.complete = true,
            _ => {}
        }
        if data == b"[DONE]" {
            self.out.complete = true;
            return Keep::Unchanged;
        }
        if data.first() != Some(&b'{') {
            return Keep::Unchanged;
        }
        if let Some(sink) = self.ids.take() {
            if let Some(id) = crate::ownership::answer_ids(data).first() {
                sink.owners.record(id, &sink.key);
            }
        }
        self.out.answer.on_event(ev.event, data);
        if self.raw.len() + data.len() <= MAX_TEXT {
            if self.raw.capacity() == 0 {
                // A short answer's events fit without growing the buffer.
                self.raw.reserve(RAW_FIRST);
                self.raw_ends.reserve(RAW_FIRST / 64);
            }
            self.raw.extend_from_slice(data);
            self.raw_ends.push(self.raw.len());
        }
        let key = usage_key(data);
        let usage = key.object;
        if usage || contains!(data, b"\"error\"") {
            if let Ok(probe) = serde_json::from_slice::<Probe<'_>>(data) {
                if probe.error.is_some() {
                    self.out.stream_error = true;
                }
                for u in [
                    probe.usage.as_ref(),
                    nested(&probe.message),
                    nested(&probe.response),
                ]
                .into_iter()
                .flatten()
                {
                    self.acc.add(u);
                }
            }
        }
        if !self.strip_injected_usage {
            return Keep::Unchanged;
        }
        // The chunk Sluice asked for: `"choices":[]` with the usage object.
        if usage && contains!(data, b"\"choices\":[]") {
            return Keep::Drop;
        }
        // The `,"usage":null` to cut was met by the key's search: placed in
        // the block, whose slice the data is unless it spans lines (then,
        // or should the place not hold it, the block is searched).
        let placed = match (&ev.data, key.null_at) {
            (Cow::Borrowed(_), None) => Some(None),
            (Cow::Borrowed(d), Some(i)) => (d.as_ptr() as usize)
                .checked_sub(block.as_ptr() as usize)
                .map(|start| start + i)
                .filter(|&at| block.get(at..).is_some_and(|b| b.starts_with(USAGE_NULL)))
                .map(Some),
            (Cow::Owned(_), _) => None,
        };
        let at = placed.unwrap_or_else(|| find!(block, USAGE_NULL));
        match at {
            Some(at) => Keep::Cut(at, USAGE_NULL.len()),
            None => Keep::Unchanged,
        }
    }

    /// The streamed text, from the raw events (only needed without usage).
    fn text(&self) -> String {
        let mut text = String::new();
        let mut start = 0;
        for &end in &self.raw_ends {
            if let Ok(probe) = serde_json::from_slice::<Probe<'_>>(&self.raw[start..end]) {
                collect_text(&probe, &mut text);
            }
            start = end;
        }
        text
    }
}

/// What an event's `"usage":` keys hold.
#[derive(Debug, Default, PartialEq, Eq)]
struct UsageKey {
    /// A `usage` object (not `"usage":null`), in compact or spaced JSON.
    object: bool,
    /// Where the first `,"usage":null` starts (the member Sluice cuts from
    /// chunks when it asked for usage itself).
    null_at: Option<usize>,
}

/// One search for the key, then each value's first byte.
fn usage_key(data: &[u8]) -> UsageKey {
    const KEY: &[u8] = b"\"usage\":";
    let mut key = UsageKey::default();
    for at in crate::find::find_iter!(data, KEY) {
        let value = &data[at + KEY.len()..];
        if key.null_at.is_none() && at > 0 && data[at - 1] == b',' && value.starts_with(b"null") {
            key.null_at = Some(at - 1);
        }
        if !key.object && value.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            key.object = true;
        }
        if key.object && key.null_at.is_some() {
            break;
        }
    }
    key
}

fn collect_text(probe: &Probe<'_>, text: &mut String) {
    let mut push = |s: &str| {
        if text.len() + s.len() <= MAX_TEXT {
            text.push_str(s);
        }
    };
    for choice in &probe.choices {
        if let Some(t) = &choice.text {
            push(t);
        }
        if let Some(d) = &choice.delta {
            d.push_text(&mut push);
        }
    }
    if let Some(raw) = probe.delta {
        let s = raw.get();
        if s.starts_with('"') {
            if let Ok(t) = serde_json::from_str::<Cow<'_, str>>(s) {
                push(&t);
            }
        } else if let Ok(d) = serde_json::from_str::<Delta<'_>>(s) {
            d.push_text(&mut push);
        }
    }
}

/// The generated text of a complete JSON answer (any API shape), for
/// counting when its usage cannot be trusted: every string under `choices`,
/// `content` or `output`, except ids and enum-like fields.
fn answer_text(body: &[u8]) -> String {
    fn walk(v: &serde_json::Value, text: &mut String) {
        match v {
            serde_json::Value::String(s) if text.len() + s.len() <= MAX_TEXT => {
                text.push_str(s);
                text.push(' ');
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, text)),
            serde_json::Value::Object(o) => o
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "id" | "type"
                            | "role"
                            | "finish_reason"
                            | "stop_reason"
                            | "status"
                            | "object"
                    )
                })
                .for_each(|(_, v)| walk(v, text)),
            _ => {}
        }
    }
    let mut text = String::new();
    if let Ok(serde_json::Value::Object(top)) = serde_json::from_slice(body) {
        for key in ["choices", "content", "output"] {
            if let Some(v) = top.get(key) {
                walk(v, &mut text);
            }
        }
    }
    text
}

fn nested(n: &Option<Nested>) -> Option<&UsageFields> {
    n.as_ref().and_then(|n| n.usage.as_ref())
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(borrow)]
    delta: Option<&'a RawValue>,
    usage: Option<UsageFields>,
    message: Option<Nested>,
    response: Option<Nested>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Nested {
    usage: Option<UsageFields>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Vec<ToolCall<'a>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

impl Delta<'_> {
    fn push_text(&self, push: &mut impl FnMut(&str)) {
        for t in [&self.content, &self.text, &self.partial_json]
            .into_iter()
            .flatten()
        {
            push(t);
        }
        for call in &self.tool_calls {
            if let Some(f) = &call.function {
                for t in [&f.name, &f.arguments].into_iter().flatten() {
                    push(t);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
