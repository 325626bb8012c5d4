//! The wire formats Sluice speaks, behind one interface: OpenAI chat
//! completions, text completions and Responses, Anthropic messages (and the
//! bodies Sluice only passes through: embeddings, token counts, model lists,
//! other paths). The rest of Sluice asks a [`Protocol`] what a format does:
//! which field caps the output, how many answers a request asks for, whether
//! a body is a well-formed answer, what usage it reports, how its stream is
//! framed, assembled into JSON and replayed from JSON, how errors and
//! rate-limit headers look. It never branches on the endpoint or the API
//! itself.
//!
//! A leaf beside [`crate::vocab`] and [`crate::usage`]: it depends on no
//! domain module, so the error type, the cache, the limits and the stream
//! tap may all depend on it.
//!
//! What lives where:
//! - [`sse`]: the SSE framing both APIs stream in;
//! - [`assemble`]: a streamed answer rebuilt as the JSON the non-streaming
//!   API returns (one accumulator per format);
//! - [`replay`]: a JSON answer replayed as the SSE events the same API sends;
//! - [`crossing`]: which way a request crossing APIs is translated;
//! - [`errors`]: error bodies, error events, request ids;
//! - [`headers`]: request headers that belong to one API;
//! - [`models`]: model lists;
//! - [`ratelimit`]: rate-limit headers in each API's style;
//! - [`request`]: what a request says (output cap, choices, input, system
//!   prompt, stored objects);
//! - this file: what an answer is and the usage it reports.

pub mod assemble;
pub mod crossing;
pub mod errors;
pub mod headers;
pub mod models;
pub mod ratelimit;
pub mod replay;
pub mod request;
pub mod sse;

use bytes::Bytes;
use serde::Deserialize;

use crate::usage::{Usage, UsageAcc, UsageFields};
pub use crate::vocab::{ApiShape, Endpoint};
pub use assemble::StreamAssembler;
pub use crossing::Across;
pub use request::{CapFields, Input};

/// One wire format: the endpoint a request targets and the API it speaks
/// (model lists and other paths follow the client's API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocol {
    endpoint: Endpoint,
    api: ApiShape,
}

impl Protocol {
    /// The format of `endpoint` as a client of `api` speaks it.
    pub fn new(endpoint: Endpoint, api: ApiShape) -> Protocol {
        Protocol { endpoint, api }
    }

    /// The format of an endpoint whose API it fixes (an OpenAI client's for
    /// model lists and other paths).
    pub fn of(endpoint: Endpoint) -> Protocol {
        Protocol::new(endpoint, endpoint.shape(false))
    }

    pub fn endpoint(self) -> Endpoint {
        self.endpoint
    }

    pub fn api(self) -> ApiShape {
        self.api
    }

    /// Whether usage, finish reasons and errors are reported the Anthropic
    /// way (`input_tokens` beside cache tokens, `stop_reason`, typed errors).
    pub fn anthropic(self) -> bool {
        self.api == ApiShape::Anthropic
    }

    /// Whether Sluice reads this format's answers (usage, finish reasons,
    /// errors): every format but model lists and paths it passes through.
    pub fn reads_answers(self) -> bool {
        !matches!(self.endpoint, Endpoint::Models | Endpoint::Other)
    }

    /// Whether `body` is a well-formed successful answer of this format (a
    /// provider can send `200 {"error": ...}`; that is never an answer).
    pub fn is_answer(self, body: &[u8]) -> bool {
        let Ok(serde_json::Value::Object(o)) = serde_json::from_slice::<serde_json::Value>(body)
        else {
            return false;
        };
        if o.contains_key("error") {
            return false;
        }
        let is = |k: &str, v: &str| o.get(k).and_then(|x| x.as_str()) == Some(v);
        let array = |k: &str| o.get(k).is_some_and(|x| x.is_array());
        match self.endpoint {
            Endpoint::ChatCompletions | Endpoint::Completions => array("choices"),
            Endpoint::Messages => is("type", "message") && array("content"),
            Endpoint::Responses => is("object", "response") && array("output"),
            Endpoint::Embeddings => array("data"),
            _ => false,
        }
    }

    /// A fresh accumulator for the usage this format reports.
    pub fn usage_acc(self) -> UsageAcc {
        UsageAcc::new(self.anthropic())
    }

    /// The normalised `usage` of a complete JSON answer, if it has one.
    pub fn usage_of(self, body: &[u8]) -> Option<Usage> {
        #[derive(Deserialize)]
        struct WithUsage {
            usage: Option<UsageFields>,
        }
        let fields = serde_json::from_slice::<WithUsage>(body).ok()?.usage?;
        let mut acc = self.usage_acc();
        acc.add(&fields);
        acc.get()
    }

    /// An assembler of this format's stream that gives up past `max_bytes`
    /// (one that assembles nothing for a format that does not stream).
    pub fn assembler(self, max_bytes: usize) -> StreamAssembler {
        StreamAssembler::with_limit(self.endpoint, max_bytes)
    }

    /// The SSE events that stream the JSON answer `body` as this format
    /// would (`include_usage`: OpenAI's usage chunk); `None` when the body
    /// is not a JSON object, holds what a stream cannot carry, or the format
    /// does not stream.
    pub fn replay(self, body: &[u8], include_usage: bool) -> Option<Vec<Bytes>> {
        replay::to_sse(self.endpoint, body, include_usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_answers_are_answers() {
        let chat = Protocol::of(Endpoint::ChatCompletions);
        assert!(chat.is_answer(br#"{"id":"x","choices":[]}"#));
        assert!(!chat.is_answer(br#"{"error":{"message":"boom"},"choices":[]}"#));
        assert!(!chat.is_answer(br#"{"id":"x"}"#));
        assert!(!chat.is_answer(b"[]"));
        let messages = Protocol::of(Endpoint::Messages);
        assert!(messages.is_answer(br#"{"type":"message","content":[]}"#));
        assert!(!messages.is_answer(br#"{"type":"error"}"#));
        assert!(
            Protocol::of(Endpoint::Responses).is_answer(br#"{"object":"response","output":[]}"#)
        );
        assert!(Protocol::of(Endpoint::Embeddings).is_answer(br#"{"data":[]}"#));
    }

    #[test]
    fn usage_is_read_from_the_body() {
        let chat = Protocol::of(Endpoint::ChatCompletions);
        let body =
            br#"{"id":"x","usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}}"#;
        let u = chat.usage_of(body).expect("usage");
        assert_eq!((u.input, u.output), (10, 3));
        let msg =
            br#"{"usage":{"input_tokens":5,"output_tokens":2,"cache_read_input_tokens":100}}"#;
        let u = Protocol::of(Endpoint::Messages)
            .usage_of(msg)
            .expect("usage");
        assert_eq!((u.input, u.cached_input, u.output), (105, 100, 2));
        assert_eq!(chat.usage_of(b"{}"), None);
        assert_eq!(chat.usage_of(b"not json"), None);
    }
}
