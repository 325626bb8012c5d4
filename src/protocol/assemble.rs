//! Rebuilds the non-streaming JSON response from the SSE events of a
//! streamed one, so a streamed answer can be cached once and served later in
//! either form. Only a stream that ended properly (`[DONE]`, `message_stop`,
//! `response.completed`) and carried no error event yields a response.

mod anthropic;
mod openai;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::sse::{parse_block, SseSplitter};
use crate::vocab::Endpoint;

pub(crate) use openai::CHAT_DELTA_FIELDS;

/// Collects a streamed response as it passes and builds its JSON form.
#[derive(Debug)]
pub struct StreamAssembler {
    splitter: SseSplitter,
    state: State,
    /// Bytes fed so far, and the most this assembler will hold.
    fed: usize,
    max_bytes: usize,
}

#[derive(Debug)]
enum State {
    Chat(openai::ChatAcc),
    Completions(openai::CompletionsAcc),
    Responses(ResponsesAcc),
    Messages(anthropic::MessagesAcc),
    /// Nothing to build: an endpoint that does not stream, an error event, a
    /// malformed event, or a stream over the size limit.
    Abandoned,
}

/// What one event did to the stream.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Keep going.
    More,
    /// The stream cannot be cached (error event, malformed data).
    Fail,
}

impl StreamAssembler {
    /// An assembler for a stream of `endpoint`, without a size limit.
    pub fn new(endpoint: Endpoint) -> StreamAssembler {
        StreamAssembler::with_limit(endpoint, usize::MAX)
    }

    /// An assembler that gives up (and frees what it holds) once the stream
    /// passes `max_bytes`, so a huge answer costs no more than the limit.
    pub fn with_limit(endpoint: Endpoint, max_bytes: usize) -> StreamAssembler {
        let state = match endpoint {
            Endpoint::ChatCompletions => State::Chat(openai::ChatAcc::default()),
            Endpoint::Completions => State::Completions(openai::CompletionsAcc::default()),
            Endpoint::Responses => State::Responses(ResponsesAcc::default()),
            Endpoint::Messages => State::Messages(anthropic::MessagesAcc::default()),
            _ => State::Abandoned,
        };
        StreamAssembler {
            splitter: SseSplitter::default(),
            state,
            fed: 0,
            max_bytes,
        }
    }

    /// Feeds one chunk of the stream, split anywhere.
    pub fn feed(&mut self, chunk: &[u8]) {
        if matches!(self.state, State::Abandoned) {
            return;
        }
        self.fed = self.fed.saturating_add(chunk.len());
        if self.fed > self.max_bytes {
            self.abandon();
            return;
        }
        let state = &mut self.state;
        self.splitter.feed(chunk, |block| {
            let event = parse_block(block);
            let step = match state {
                State::Chat(acc) => acc.event(&event.data),
                State::Completions(acc) => acc.event(&event.data),
                State::Responses(acc) => acc.event(&event.data),
                State::Messages(acc) => acc.event(&event.data),
                State::Abandoned => Step::More,
            };
            if step == Step::Fail {
                *state = State::Abandoned;
            }
        });
        if matches!(self.state, State::Abandoned) {
            self.abandon();
        }
    }

    /// Whether the stream can still produce a cacheable response (false after
    /// an error event, malformed data or passing the size limit), so the
    /// caller can stop feeding.
    pub fn is_viable(&self) -> bool {
        !matches!(self.state, State::Abandoned)
    }

    /// The complete JSON response, or `None` if the stream did not end
    /// properly, carried an error, or its endpoint does not stream.
    pub fn finish(self) -> Option<Bytes> {
        let value = match self.state {
            State::Chat(acc) => acc.finish()?,
            State::Completions(acc) => acc.finish()?,
            State::Responses(acc) => acc.finish()?,
            State::Messages(acc) => acc.finish()?,
            State::Abandoned => return None,
        };
        serde_json::to_vec(&value).ok().map(Bytes::from)
    }

    fn abandon(&mut self) {
        self.state = State::Abandoned;
        self.splitter = SseSplitter::default();
    }
}

/// Responses API: the terminal event carries the whole final response.
#[derive(Debug, Default)]
struct ResponsesAcc {
    last: Option<Value>,
}

impl ResponsesAcc {
    fn event(&mut self, data: &[u8]) -> Step {
        if data.is_empty() {
            return Step::More;
        }
        let Ok(mut event) = serde_json::from_slice::<Map<String, Value>>(data) else {
            return Step::Fail;
        };
        match event.get("type").and_then(Value::as_str) {
            // `response.incomplete` is a finished answer too (cut at
            // `max_output_tokens`), as `finish_reason: "length"` is for chat.
            Some("response.completed" | "response.incomplete") => {
                self.last = event.remove("response");
                Step::More
            }
            Some("error" | "response.failed") => Step::Fail,
            _ => Step::More,
        }
    }

    fn finish(self) -> Option<Value> {
        self.last.filter(Value::is_object)
    }
}

/// Appends the arrays of a streamed `logprobs` object to the accumulated one
/// (other fields: first value wins).
fn merge_logprobs(acc: &mut Option<Map<String, Value>>, chunk: &Value) {
    let Value::Object(chunk) = chunk else {
        return;
    };
    let acc = acc.get_or_insert_with(Map::new);
    for (k, v) in chunk {
        match (acc.get_mut(k), v) {
            (Some(Value::Array(have)), Value::Array(more)) => have.extend(more.iter().cloned()),
            (Some(slot @ Value::Null), Value::Array(_)) => *slot = v.clone(),
            (None, _) => {
                acc.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
}

/// Appends `more` to an optional string.
fn append(slot: &mut Option<String>, more: &str) {
    slot.get_or_insert_with(String::new).push_str(more);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(endpoint: Endpoint, stream: &str) -> Option<Value> {
        let mut a = StreamAssembler::new(endpoint);
        // Feed in awkward 7-byte pieces to exercise the framing.
        for piece in stream.as_bytes().chunks(7) {
            a.feed(piece);
        }
        let body = a.finish()?;
        Some(serde_json::from_slice(&body).expect("json"))
    }

    #[test]
    fn responses_uses_the_completed_event() {
        let stream = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"r\",\"status\":\"in_progress\"}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"hi\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"r\",\"status\":\"completed\",\"output\":[]}}\n\n",
        );
        assert_eq!(
            assemble(Endpoint::Responses, stream),
            Some(serde_json::json!({"id":"r","status":"completed","output":[]}))
        );
        let cut = &stream[..stream.find("event: response.completed").expect("event")];
        assert_eq!(assemble(Endpoint::Responses, cut), None);
        let failed =
            format!("{cut}event: error\ndata: {{\"type\":\"error\",\"message\":\"x\"}}\n\n");
        assert_eq!(assemble(Endpoint::Responses, &failed), None);
    }

    #[test]
    fn other_endpoints_assemble_nothing() {
        let mut a = StreamAssembler::new(Endpoint::Embeddings);
        a.feed(b"data: {}\n\ndata: [DONE]\n\n");
        assert!(!a.is_viable());
        assert_eq!(a.finish(), None);
    }

    #[test]
    fn size_limit_abandons() {
        let mut a = StreamAssembler::with_limit(Endpoint::Responses, 10);
        a.feed(b"event: x\n");
        assert!(a.is_viable());
        a.feed(b"data: {}\n\n");
        assert!(!a.is_viable());
        assert_eq!(a.finish(), None);
    }

    #[test]
    fn logprobs_merge_appends_arrays() {
        let mut acc = None;
        merge_logprobs(&mut acc, &serde_json::json!({"content":[1],"refusal":null}));
        merge_logprobs(
            &mut acc,
            &serde_json::json!({"content":[2,3],"refusal":null}),
        );
        assert_eq!(
            acc.map(Value::Object),
            Some(serde_json::json!({"content":[1,2,3],"refusal":null}))
        );
    }
}
