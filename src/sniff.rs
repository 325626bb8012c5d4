//! What a request is: its endpoint (from the path) and the few body fields
//! the pipeline needs (from one borrowed parse of the JSON), plus the body
//! rewrite applied only when something must change.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{ApiShape, ProxyError};

/// The API endpoint a request targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Models,
    Messages,
    CountTokens,
    /// Any other `/v1/*` path, passed through to the default provider.
    Other,
}

impl Endpoint {
    /// Classifies a path below `/v1`.
    pub fn from_path(path: &str) -> Endpoint {
        match path.trim_end_matches('/') {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/completions" => Endpoint::Completions,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/v1/responses" => Endpoint::Responses,
            "/v1/models" => Endpoint::Models,
            "/v1/messages" => Endpoint::Messages,
            "/v1/messages/count_tokens" => Endpoint::CountTokens,
            _ => Endpoint::Other,
        }
    }

    /// The API shape of this endpoint; `/v1/models` and other paths follow
    /// the client (Anthropic clients send `anthropic-version`).
    pub fn shape(self, anthropic_client: bool) -> ApiShape {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => ApiShape::Anthropic,
            Endpoint::Models | Endpoint::Other if anthropic_client => ApiShape::Anthropic,
            _ => ApiShape::OpenAi,
        }
    }

    /// Endpoints whose POST body is JSON naming a model.
    pub fn has_model(self) -> bool {
        !matches!(self, Endpoint::Models | Endpoint::Other)
    }

    /// Endpoints that generate tokens (and so are accounted and may stream).
    pub fn generates(self) -> bool {
        matches!(
            self,
            Endpoint::ChatCompletions
                | Endpoint::Completions
                | Endpoint::Responses
                | Endpoint::Messages
        )
    }

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Models => "models",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
            Endpoint::Other => "other",
        }
    }
}

/// The request fields the pipeline reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sniffed {
    pub model: String,
    pub stream: bool,
    /// Whether the client asked for `stream_options.include_usage`.
    pub include_usage: bool,
    /// The output cap the client asked for, and the field it used.
    pub max_output: Option<u64>,
    pub max_output_field: Option<&'static str>,
    /// OpenAI `user` or Anthropic `metadata.user_id`.
    pub end_user: Option<String>,
    /// The request defines tools.
    pub has_tools: bool,
    /// The request carries image parts.
    pub has_images: bool,
    pub temperature: Option<f64>,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
    temperature: Option<f64>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
    metadata: Option<Metadata>,
    #[serde(borrow)]
    tools: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct Metadata {
    user_id: Option<String>,
}

/// Reads the fields the pipeline needs; a body that is not a JSON object, or
/// has no model, is a 400.
pub fn sniff(body: &[u8]) -> Result<Sniffed, ProxyError> {
    let trimmed = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| &body[i..]);
    match trimmed.and_then(|b| b.first()) {
        Some(b'{') => {}
        None => {
            return Err(ProxyError::InvalidRequest(
                "request body is empty; expected a JSON object".into(),
            ))
        }
        Some(_) => {
            return Err(ProxyError::InvalidRequest(
                "request body must be a JSON object".into(),
            ))
        }
    }
    let raw: Raw<'_> = serde_json::from_slice(body)
        .map_err(|e| ProxyError::InvalidRequest(format!("invalid JSON in request body: {e}")))?;
    let model = match raw.model {
        Some(m) if !m.is_empty() => m.into_owned(),
        _ => {
            return Err(ProxyError::InvalidRequest(
                "you must provide a model parameter".into(),
            ))
        }
    };
    Ok(Sniffed {
        model,
        stream: raw.stream.unwrap_or(false),
        include_usage: raw
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        max_output: raw
            .max_completion_tokens
            .or(raw.max_tokens)
            .or(raw.max_output_tokens),
        max_output_field: if raw.max_completion_tokens.is_some() {
            Some("max_completion_tokens")
        } else if raw.max_tokens.is_some() {
            Some("max_tokens")
        } else if raw.max_output_tokens.is_some() {
            Some("max_output_tokens")
        } else {
            None
        },
        end_user: raw
            .user
            .map(Cow::into_owned)
            .or(raw.metadata.and_then(|m| m.user_id)),
        temperature: raw.temperature,
        has_tools: raw
            .tools
            .is_some_and(|t| !matches!(t.get().trim(), "[]" | "null")),
        has_images: ["\"image_url\"", "\"input_image\"", "\"type\":\"image\""]
            .iter()
            .any(|n| memchr::memmem::find(body, n.as_bytes()).is_some()),
    })
}

/// Changes to make to a request body before it goes upstream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// Replace `model` with this upstream name.
    pub model: Option<String>,
    /// Set `stream_options.include_usage = true`.
    pub include_usage: bool,
    /// Set this output-cap field to this value.
    pub max_output: Option<(&'static str, u64)>,
}

impl Rewrite {
    pub fn is_empty(&self) -> bool {
        self.model.is_none() && !self.include_usage && self.max_output.is_none()
    }
}

/// Applies `rw` to a JSON object body; the original bytes are returned
/// untouched when there is nothing to change. Key order is preserved.
pub fn rewrite(body: Bytes, rw: &Rewrite) -> Result<Bytes, ProxyError> {
    if rw.is_empty() {
        return Ok(body);
    }
    let mut obj: Map<String, Value> = serde_json::from_slice(&body)
        .map_err(|e| ProxyError::InvalidRequest(format!("invalid JSON in request body: {e}")))?;
    if let Some(m) = &rw.model {
        obj.insert("model".into(), Value::String(m.clone()));
    }
    if let Some((field, n)) = rw.max_output {
        obj.insert(field.into(), Value::from(n));
    }
    if rw.include_usage {
        let opts = obj
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if !opts.is_object() {
            *opts = Value::Object(Map::new());
        }
        if let Value::Object(o) = opts {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    serde_json::to_vec(&obj)
        .map(Bytes::from)
        .map_err(|e| ProxyError::Internal(format!("re-encoding request body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::from_path("/v1/chat/completions"),
            Endpoint::ChatCompletions
        );
        assert_eq!(Endpoint::from_path("/v1/messages/"), Endpoint::Messages);
        assert_eq!(Endpoint::from_path("/v1/files"), Endpoint::Other);
        assert_eq!(Endpoint::Models.shape(true), ApiShape::Anthropic);
        assert_eq!(Endpoint::Models.shape(false), ApiShape::OpenAi);
        assert_eq!(Endpoint::CountTokens.shape(false), ApiShape::Anthropic);
    }

    #[test]
    fn sniff_fields() {
        let s = sniff(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi \u00e9"}],"stream":true,
                "stream_options":{"include_usage":true},"max_completion_tokens":50,"user":"u1"}"#,
        )
        .expect("ok");
        assert_eq!(s.model, "gpt-4o");
        assert!(s.stream && s.include_usage);
        assert_eq!(s.max_output, Some(50));
        assert_eq!(s.end_user.as_deref(), Some("u1"));

        let a =
            sniff(br#"{"model":"claude","max_tokens":9,"metadata":{"user_id":"x"}}"#).expect("ok");
        assert_eq!(a.max_output, Some(9));
        assert_eq!(a.end_user.as_deref(), Some("x"));
        assert!(!a.stream);
    }

    #[test]
    fn bad_bodies_are_400() {
        for body in [
            &b""[..],
            b"[1,2]",
            b"{\"model\":",
            b"{}",
            b"{\"model\":\"\"}",
            b"nope",
        ] {
            let e = sniff(body).expect_err("bad");
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{body:?}");
        }
    }

    #[test]
    fn rewrite_only_when_needed() {
        let body = Bytes::from_static(br#"{"z":1,"model":"a","stream":true}"#);
        let same = rewrite(body.clone(), &Rewrite::default()).expect("ok");
        assert_eq!(same.as_ptr(), body.as_ptr());
        let rw = Rewrite {
            model: Some("b".into()),
            include_usage: true,
            max_output: None,
        };
        let out = rewrite(body, &rw).expect("ok");
        assert_eq!(
            std::str::from_utf8(&out).expect("utf8"),
            r#"{"z":1,"model":"b","stream":true,"stream_options":{"include_usage":true}}"#
        );
    }
}
