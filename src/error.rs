//! The data-plane error: one enum, one status table, rendered in the shape of
//! the API the client called (OpenAI or Anthropic) in one place.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::protocol::errors::{self, ErrorFields};
pub use crate::vocab::ApiShape;
use crate::vocab::{Exhausted, LimitKind, RateLimited};

/// The most characters of a client-supplied string (model name, path,
/// identity) an error message repeats; the rest becomes `…`.
pub const MAX_ECHO_CHARS: usize = 256;
/// The most characters of a free-form detail (a parse error, a transport
/// error chain) in an error message.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// A string cut to at most `.1` characters (plus `…` when cut), for
/// repeating client strings in error messages and logs: the one place they
/// are bounded. `{:?}` quotes and escapes it like a `str`.
pub struct Clip<'a>(pub &'a str, pub usize);

impl Clip<'_> {
    fn cut(&self) -> std::borrow::Cow<'_, str> {
        match self.0.char_indices().nth(self.1) {
            None => std::borrow::Cow::Borrowed(self.0),
            Some((end, _)) => std::borrow::Cow::Owned(format!("{}…", &self.0[..end])),
        }
    }
}

impl std::fmt::Display for Clip<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.cut())
    }
}

impl std::fmt::Debug for Clip<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.cut(), f)
    }
}

/// Everything that can end a request before or instead of an upstream answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{}", Clip(.0, MAX_MESSAGE_CHARS))]
    InvalidRequest(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body did not arrive within {}s (server.body_timeout)", .after.as_secs_f64())]
    BodyTimeout { after: std::time::Duration },
    #[error("missing API key: send it as `Authorization: Bearer KEY` or `x-api-key: KEY`")]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("this key is not allowed to use model {:?}", Clip(.model, MAX_ECHO_CHARS))]
    ModelNotAllowed { model: String },
    #[error("the model {:?} does not exist or is not served here", Clip(.model, MAX_ECHO_CHARS))]
    UnknownModel { model: String },
    #[error("unknown path {}", Clip(.0, MAX_ECHO_CHARS))]
    NotFound(String),
    #[error("method {method} is not allowed here; this endpoint takes {allowed}")]
    MethodNotAllowed {
        method: String,
        allowed: &'static str,
    },
    #[error(
        "this key may not use the {family} endpoints (an operator can allow them with \
         [[keys]] passthrough = [\"{family}\"])"
    )]
    FamilyNotAllowed { family: &'static str },
    #[error("{0}")]
    Forbidden(String),
    #[error("No such object: {:?}", Clip(.id, MAX_ECHO_CHARS))]
    ObjectNotFound { id: String },
    #[error(
        "listing {family} is not allowed through a virtual key (the provider's list holds every \
         key's objects); keep the ids your key creates and use them directly"
    )]
    ListingNotAllowed { family: &'static str },
    #[error("provider {provider:?} has no API key configured (set {env})")]
    ProviderKeyMissing { provider: String, env: String },
    #[error("could not reach provider {provider:?}: {}", Clip(.detail, MAX_MESSAGE_CHARS))]
    UpstreamConnect { provider: String, detail: String },
    #[error("provider {provider:?} sent a response body over the limit of {limit} bytes (server.max_response_body)")]
    UpstreamBodyTooLarge { provider: String, limit: usize },
    #[error("provider {provider:?} did not answer within the {phase} timeout")]
    UpstreamTimeout {
        provider: String,
        phase: &'static str,
    },
    #[error("{}", input_too_long(.tokens, .limit, .context_window, .max_output))]
    InputTooLong {
        tokens: u64,
        limit: u64,
        context_window: Option<u64>,
        max_output: Option<u64>,
    },
    #[error("{}", rate_limited(.0))]
    RateLimited(RateLimited),
    #[error("{}", budget_exhausted(.0))]
    BudgetExhausted(Exhausted),
    #[error("no price is configured for model {:?}, and a budget applies (add a [[pricing]] entry)", Clip(.model, MAX_ECHO_CHARS))]
    ModelNotPriced { model: String },
    #[error("this request could cost up to ${worst:.6}, over the per-request cap of ${cap:.6}")]
    RequestTooExpensive { worst: f64, cap: f64 },
    #[error(
        "no healthy deployment: every deployment of this model is ejected or its circuit is open"
    )]
    NoHealthyDeployment,
    #[error("Sluice is shutting down")]
    ShuttingDown,
    #[error("this exact request was already sent {repeats} times in the last {within_secs} s by this {scope}: refused as a loop")]
    LoopDetected {
        repeats: u32,
        within_secs: u64,
        scope: &'static str,
    },
    #[error("this agent run reached its limit of {limit} {what} ([runs]); start a new run")]
    RunLimit { what: &'static str, limit: u64 },
    #[error("the shared budget and rate-limit state is unreachable; retry shortly")]
    StateUnavailable,
    #[error("{} {:?} is disabled by an operator: {}", .kind, Clip(.value, MAX_ECHO_CHARS), Clip(.reason, MAX_MESSAGE_CHARS))]
    Disabled {
        kind: &'static str,
        value: String,
        reason: String,
    },
    #[error("internal error: {}", Clip(.0, MAX_MESSAGE_CHARS))]
    Internal(String),
}

/// Where an error came from, for logs and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Upstream,
    Internal,
}

impl ProxyError {
    /// The HTTP status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) | Self::InputTooLong { .. } => StatusCode::BAD_REQUEST,
            Self::RateLimited(_)
            | Self::BudgetExhausted(_)
            | Self::LoopDetected { .. }
            | Self::RunLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::ModelNotPriced { .. } | Self::RequestTooExpensive { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::MissingKey | Self::InvalidKey => StatusCode::UNAUTHORIZED,
            Self::ModelNotAllowed { .. }
            | Self::FamilyNotAllowed { .. }
            | Self::Forbidden(_)
            | Self::ListingNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnknownModel { .. } | Self::NotFound(_) | Self::ObjectNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::ProviderKeyMissing { .. } | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::UpstreamConnect { .. } | Self::UpstreamBodyTooLarge { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::ShuttingDown
            | Self::NoHealthyDeployment
            | Self::StateUnavailable
            | Self::Disabled { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn origin(&self) -> Origin {
        match self {
            Self::UpstreamConnect { .. }
            | Self::UpstreamTimeout { .. }
            | Self::UpstreamBodyTooLarge { .. }
            | Self::NoHealthyDeployment => Origin::Upstream,
            Self::ProviderKeyMissing { .. }
            | Self::Internal(_)
            | Self::ShuttingDown
            | Self::StateUnavailable => Origin::Internal,
            _ => Origin::Client,
        }
    }

    /// Whether another attempt could succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::UpstreamConnect { .. } | Self::UpstreamTimeout { .. }
        )
    }

    /// A short, fixed label for metrics and usage records.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InputTooLong { .. } => "context_length_exceeded",
            Self::RateLimited(_) => "rate_limited",
            Self::BudgetExhausted(e) if e.per_run => "run_budget_exceeded",
            Self::BudgetExhausted(_) => "budget_exhausted",
            Self::LoopDetected { .. } => "loop_detected",
            Self::RunLimit { .. } => "run_budget_exceeded",
            Self::ModelNotPriced { .. } => "model_not_priced",
            Self::RequestTooExpensive { .. } => "request_too_expensive",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::MissingKey => "missing_key",
            Self::InvalidKey => "invalid_key",
            Self::ModelNotAllowed { .. } => "model_not_allowed",
            Self::UnknownModel { .. } => "unknown_model",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::FamilyNotAllowed { .. } => "endpoint_not_allowed",
            Self::Forbidden(_) => "forbidden",
            Self::ObjectNotFound { .. } => "object_not_found",
            Self::ListingNotAllowed { .. } => "listing_not_allowed",
            Self::ProviderKeyMissing { .. } => "provider_key_missing",
            Self::UpstreamConnect { .. } => "upstream_connect",
            Self::UpstreamBodyTooLarge { .. } => "upstream_body_too_large",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::ShuttingDown => "shutting_down",
            Self::StateUnavailable => "state_unavailable",
            Self::Disabled { .. } => "disabled",
            Self::NoHealthyDeployment => "no_healthy_deployment",
            Self::Internal(_) => "internal",
        }
    }

    /// OpenAI's `error.code`.
    fn openai_code(&self) -> Option<&'static str> {
        Some(match self {
            Self::BodyTooLarge { .. } => "request_too_large",
            Self::BodyTimeout { .. } => "request_timeout",
            Self::InputTooLong { .. } => "context_length_exceeded",
            Self::RateLimited(_) => "rate_limit_exceeded",
            Self::BudgetExhausted(e) if e.per_run => "run_budget_exceeded",
            Self::BudgetExhausted(_) => "insufficient_quota",
            Self::LoopDetected { .. } => "loop_detected",
            Self::RunLimit { .. } => "run_budget_exceeded",
            Self::ModelNotPriced { .. } => "model_not_priced",
            Self::RequestTooExpensive { .. } => "request_too_expensive",
            Self::MissingKey => "missing_api_key",
            Self::InvalidKey => "invalid_api_key",
            Self::ModelNotAllowed { .. } => "model_not_allowed",
            Self::UnknownModel { .. } => "model_not_found",
            Self::NotFound(_) => "unknown_url",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::FamilyNotAllowed { .. } => "endpoint_not_allowed",
            Self::ListingNotAllowed { .. } => "listing_not_allowed",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::UpstreamConnect { .. } => "upstream_unreachable",
            Self::UpstreamBodyTooLarge { .. } => "upstream_response_too_large",
            Self::StateUnavailable => "state_unavailable",
            Self::Disabled { .. } => "disabled",
            _ => return None,
        })
    }

    /// The JSON error body in the given API's shape.
    pub fn body(&self, shape: ApiShape) -> Bytes {
        let message = self.to_string();
        let value = errors::json(
            shape,
            &ErrorFields {
                message: &message,
                kind: errors::status_type(
                    shape,
                    self.status().as_u16(),
                    matches!(self, Self::BudgetExhausted(_)),
                ),
                param: match self {
                    Self::UnknownModel { .. } | Self::ModelNotAllowed { .. } => Some("model"),
                    Self::InputTooLong { .. } => Some("messages"),
                    Self::ObjectNotFound { .. } => Some("id"),
                    _ => None,
                },
                code: self.openai_code(),
                request_id: None,
            },
        );
        Bytes::from(value.to_string())
    }

    /// A complete error response.
    pub fn into_response(self, shape: ApiShape) -> Response<Bytes> {
        let mut resp = Response::new(self.body(shape));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Self::MethodNotAllowed { allowed, .. } = &self {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allowed));
        }
        if let Self::BodyTimeout { .. } = &self {
            // The rest of the body may still be on its way: do not reuse the
            // connection (HTTP/1; hyper drops this header on HTTP/2).
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Self::BudgetExhausted(_)
        | Self::LoopDetected { .. }
        | Self::RunLimit { .. }
        | Self::Disabled { .. } = &self
        {
            // Waiting will not help until the window rolls over (or the
            // same request stops being sent).
            resp.headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if let Self::StateUnavailable = &self {
            // Redis usually comes back within seconds: SDKs may retry.
            let h = resp.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            h.insert("x-should-retry", HeaderValue::from_static("true"));
        }
        if let Self::RateLimited(r) = &self {
            let h = resp.headers_mut();
            let secs = r.retry_after.as_secs_f64().ceil().max(1.0) as u64;
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            if r.never_fits {
                // Waiting will not help: tell SDKs not to retry.
                h.insert("x-should-retry", HeaderValue::from_static("false"));
            }
            crate::protocol::ratelimit::refused(h, r, shape);
        }
        resp
    }
}

fn input_too_long(
    tokens: &u64,
    limit: &u64,
    window: &Option<u64>,
    max_output: &Option<u64>,
) -> String {
    let (tokens, limit, out) = (*tokens, *limit, max_output.unwrap_or(0));
    match *window {
        Some(w) if tokens + out > w => format!(
            "This model's maximum context length is {w} tokens. However, you requested {} \
             tokens ({tokens} in the messages, {out} in the completion). Please reduce the \
             length of the messages or completion.",
            tokens + out
        ),
        _ => format!(
            "The input is {tokens} tokens, over this gateway's limit of {limit} input tokens. \
             Please reduce the length of the messages."
        ),
    }
}

fn budget_exhausted(e: &Exhausted) -> String {
    let usd = crate::pricing::nanos_to_usd;
    format!(
        "You exceeded your current quota: budget {:?} ({}) has ${:.6} of ${:.6} used or reserved, \
         and this request could cost up to ${:.6}.",
        e.budget,
        Clip(&e.bucket, MAX_ECHO_CHARS),
        usd(e.spent),
        usd(e.limit),
        usd(e.requested)
    )
}

fn rate_limited(r: &RateLimited) -> String {
    let what = match r.kind {
        LimitKind::Requests => "requests per minute",
        LimitKind::Tokens => "tokens per minute",
        LimitKind::Concurrent => "concurrent requests",
    };
    if r.never_fits {
        format!(
            "Request too large for rate limit {:?}: limit {} {what}, requested {}.",
            r.rule, r.limit, r.requested
        )
    } else {
        format!(
            "Rate limit {:?} reached: limit {} {what}. Please try again in {:.1}s.",
            r.rule,
            r.limit,
            r.retry_after.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: Bytes) -> serde_json::Value {
        serde_json::from_slice(&b).expect("json")
    }

    #[test]
    fn openai_shape() {
        let e = ProxyError::UnknownModel {
            model: "gpt-9".into(),
        };
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let v = parse(e.body(ApiShape::OpenAi));
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("gpt-9"));
    }

    #[test]
    fn client_strings_are_cut_in_messages() {
        let huge = "m".repeat(100_000);
        for e in [
            ProxyError::UnknownModel {
                model: huge.clone(),
            },
            ProxyError::ModelNotAllowed {
                model: huge.clone(),
            },
            ProxyError::ModelNotPriced {
                model: huge.clone(),
            },
            ProxyError::NotFound(huge.clone()),
        ] {
            let v = parse(e.body(ApiShape::OpenAi));
            let msg = v["error"]["message"].as_str().expect("message");
            assert!(
                msg.contains(&format!("{}…", "m".repeat(MAX_ECHO_CHARS))),
                "{msg}"
            );
            assert!(msg.len() < MAX_ECHO_CHARS + 200, "{} bytes", msg.len());
        }
        let e = ProxyError::InvalidRequest(huge.clone());
        assert!(e.to_string().chars().count() <= MAX_MESSAGE_CHARS + 1);
        // Short strings are untouched; multi-byte characters are cut whole.
        assert_eq!(format!("{:?}", Clip("gpt-9", 256)), "\"gpt-9\"");
        assert_eq!(Clip("ééé", 2).to_string(), "éé…");
        assert_eq!(Clip("abc", 3).to_string(), "abc");
    }

    #[test]
    fn anthropic_shape() {
        let e = ProxyError::InvalidKey;
        let v = parse(e.body(ApiShape::Anthropic));
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
    }

    #[test]
    fn upstream_errors_are_retryable_and_5xx() {
        let e = ProxyError::UpstreamTimeout {
            provider: "p".into(),
            phase: "first byte",
        };
        assert!(e.retryable());
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(e.origin(), Origin::Upstream);
        assert!(!ProxyError::InvalidKey.retryable());
    }
}
