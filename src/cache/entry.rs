//! One cached answer: the complete non-streaming response body plus what the
//! pipeline needs to serve, account and purge it.

use std::mem;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;

use crate::sniff::Endpoint;
use crate::usage::{Usage, UsageAcc, UsageFields};

/// A complete, successful response held in the cache. Streamed answers are
/// stored in their non-streaming form and replayed as SSE on demand.
#[derive(Debug, Clone)]
pub struct CachedResponse {
    /// The endpoint that produced it (decides how it is replayed).
    pub endpoint: Endpoint,
    /// The upstream HTTP status (a success).
    pub status: u16,
    /// The `content-type` of `body`, normally `application/json`.
    pub content_type: String,
    /// The complete JSON response, as the non-streaming API returns it.
    pub body: Bytes,
    /// The usage the original request reported (what a hit saved).
    pub usage: Option<Usage>,
    /// When the answer was stored.
    pub created: Instant,
    /// The tenant scope the entry belongs to (for purging by tenant).
    pub tenant: String,
    /// The upstream model that produced it (for purging by model).
    pub model: String,
}

impl CachedResponse {
    /// A JSON response stored now, its usage read from `body`.
    pub fn json(endpoint: Endpoint, tenant: &str, model: &str, body: Bytes) -> CachedResponse {
        CachedResponse {
            endpoint,
            status: 200,
            content_type: "application/json".to_owned(),
            usage: usage_of(endpoint, &body),
            body,
            created: Instant::now(),
            tenant: tenant.to_owned(),
            model: model.to_owned(),
        }
    }

    /// Bytes the entry holds, for the cache's byte bound: the body, the
    /// strings, and the struct itself; saturates at `u32::MAX`.
    pub fn weight(&self) -> u32 {
        let total = mem::size_of::<CachedResponse>()
            .saturating_add(self.body.len())
            .saturating_add(self.content_type.len())
            .saturating_add(self.tenant.len())
            .saturating_add(self.model.len());
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    /// How long ago the entry was stored (for an `age` header).
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }
}

/// Whether `body` is a well-formed successful answer of `endpoint`'s API
/// (a provider can send `200 {"error": ...}`; that is never cached).
pub fn is_answer(endpoint: Endpoint, body: &[u8]) -> bool {
    let Ok(serde_json::Value::Object(o)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    if o.contains_key("error") {
        return false;
    }
    let is = |k: &str, v: &str| o.get(k).and_then(|x| x.as_str()) == Some(v);
    let array = |k: &str| o.get(k).is_some_and(|x| x.is_array());
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Completions => array("choices"),
        Endpoint::Messages => is("type", "message") && array("content"),
        Endpoint::Responses => is("object", "response") && array("output"),
        Endpoint::Embeddings => array("data"),
        _ => false,
    }
}

/// The normalised `usage` of a complete JSON response of `endpoint`, if it
/// has one.
pub fn usage_of(endpoint: Endpoint, body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct WithUsage {
        usage: Option<UsageFields>,
    }
    let fields = serde_json::from_slice::<WithUsage>(body).ok()?.usage?;
    let mut acc = UsageAcc::new(endpoint == Endpoint::Messages);
    acc.add(&fields);
    acc.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_counts_body_and_strings() {
        let e = CachedResponse::json(
            Endpoint::ChatCompletions,
            "team:a",
            "gpt-4o-mini",
            Bytes::from(vec![b' '; 1000]),
        );
        let fixed = mem::size_of::<CachedResponse>() as u32;
        assert_eq!(e.weight(), fixed + 1000 + 16 + 6 + 11);
    }

    #[test]
    fn only_real_answers_are_answers() {
        let e = Endpoint::ChatCompletions;
        assert!(is_answer(e, br#"{"id":"x","choices":[]}"#));
        assert!(!is_answer(
            e,
            br#"{"error":{"message":"boom"},"choices":[]}"#
        ));
        assert!(!is_answer(e, br#"{"id":"x"}"#));
        assert!(!is_answer(e, b"[]"));
        assert!(is_answer(
            Endpoint::Messages,
            br#"{"type":"message","content":[]}"#
        ));
        assert!(!is_answer(Endpoint::Messages, br#"{"type":"error"}"#));
        assert!(is_answer(
            Endpoint::Responses,
            br#"{"object":"response","output":[]}"#
        ));
        assert!(is_answer(Endpoint::Embeddings, br#"{"data":[]}"#));
    }

    #[test]
    fn usage_is_read_from_the_body() {
        let chat =
            br#"{"id":"x","usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}}"#;
        let u = usage_of(Endpoint::ChatCompletions, chat).expect("usage");
        assert_eq!((u.input, u.output), (10, 3));
        let msg =
            br#"{"usage":{"input_tokens":5,"output_tokens":2,"cache_read_input_tokens":100}}"#;
        let u = usage_of(Endpoint::Messages, msg).expect("usage");
        assert_eq!((u.input, u.cached_input, u.output), (105, 100, 2));
        assert_eq!(usage_of(Endpoint::ChatCompletions, b"{}"), None);
        assert_eq!(usage_of(Endpoint::ChatCompletions, b"not json"), None);
    }
}
