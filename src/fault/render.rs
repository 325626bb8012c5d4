//! Injected failures as the real providers send them: OpenAI's
//! `{"error":{message,type,param,code}}` with `x-request-id`, Anthropic's
//! `{"type":"error","error":{type,message},"request_id"}` with `request-id`
//! and `x-should-retry` — so the client's SDK classifies and retries them as
//! it would the real thing. (Sluice's own errors are rendered in
//! `crate::error`; these imitate a provider's, not Sluice's.)

use crate::error::ApiShape;
use crate::protocol::errors::{self, ErrorFields};
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// An SSE event whose data is not JSON (the `malformed_after` fault).
pub const MALFORMED_EVENT: &[u8] = b"data: {\"id\":\"chatcmpl-fault\",\"object\":\n\n";

/// The provider's answer for `status` (400 is its context-length error).
pub fn status_response(
    status: u16,
    retry_after: Option<u64>,
    shape: ApiShape,
    model: &str,
    request_id: &str,
) -> Response<Bytes> {
    let request_id = format!("req_{request_id}");
    // What the provider says for the status, in its words.
    let (message, kind, param, code) = match shape {
        ApiShape::OpenAi => openai(status, model, retry_after),
        ApiShape::Anthropic => {
            let (kind, message) = anthropic(status);
            (message.to_owned(), kind, None, None)
        }
    };
    let body = errors::json(
        shape,
        &ErrorFields {
            message: &message,
            kind,
            param,
            code,
            request_id: Some(&request_id),
        },
    );
    let mut resp = Response::new(Bytes::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert(errors::request_id_header(shape), v);
    }
    if let Some(secs) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if errors::says_retry(shape) && status != 400 {
        // Anthropic tells its SDKs outright that these are worth a retry.
        h.insert("x-should-retry", HeaderValue::from_static("true"));
    }
    if shape == ApiShape::OpenAi && status == 429 {
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("0"),
        );
        if let Some(secs) = retry_after {
            if let Ok(v) = HeaderValue::from_str(&format!("{secs}s")) {
                h.insert("x-ratelimit-reset-requests", v);
            }
        }
    }
    resp
}

/// OpenAI's message, type, param and code for a status.
fn openai(
    status: u16,
    model: &str,
    retry_after: Option<u64>,
) -> (
    String,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
) {
    let model = crate::error::Clip(model, crate::error::MAX_ECHO_CHARS);
    match status {
        400 => (
            "This model's maximum context length is 128000 tokens. However, your messages \
             resulted in 128001 tokens. Please reduce the length of the messages."
                .into(),
            "invalid_request_error",
            Some("messages"),
            Some("context_length_exceeded"),
        ),
        429 => (
            format!(
                "Rate limit reached for {model} in organization org-sluice-fault on requests per \
                 min (RPM): Limit 3, Used 3, Requested 1. Please try again in {}s. Visit \
                 https://platform.openai.com/account/rate-limits to learn more.",
                retry_after.unwrap_or(1)
            ),
            "requests",
            None,
            Some("rate_limit_exceeded"),
        ),
        500 => (
            "The server had an error while processing your request. Sorry about that!".into(),
            "server_error",
            None,
            None,
        ),
        503 => (
            "The server is overloaded or not ready yet.".into(),
            "server_error",
            None,
            None,
        ),
        // 529 is Anthropic's; an OpenAI-shaped client sees it as a server error.
        _ => ("Overloaded".into(), "server_error", None, None),
    }
}

/// Anthropic's error type and message for a status.
fn anthropic(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => (
            "invalid_request_error",
            "prompt is too long: 200001 tokens > 200000 maximum",
        ),
        429 => (
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests per \
             minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can \
             see the response headers for current usage. Please reduce the prompt length or the \
             maximum tokens requested, or try again later. You may also contact sales at \
             https://www.anthropic.com/contact-sales to discuss your options for a rate limit \
             increase.",
        ),
        500 => ("api_error", "Internal server error"),
        503 => ("api_error", "Service unavailable"),
        _ => ("overloaded_error", "Overloaded"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).expect("json")
    }

    #[test]
    fn each_status_in_each_providers_shape() {
        let r = status_response(429, Some(2), ApiShape::OpenAi, "gpt-4o", "1");
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(r.headers()["x-request-id"], "req_1");
        let v = json(r.body());
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert_eq!(v["error"]["type"], "requests");
        assert!(v["error"]["param"].is_null());

        let r = status_response(400, None, ApiShape::OpenAi, "gpt-4o", "1");
        let v = json(r.body());
        assert_eq!(v["error"]["code"], "context_length_exceeded");
        assert_eq!(v["error"]["param"], "messages");

        let r = status_response(529, None, ApiShape::Anthropic, "claude", "7");
        assert_eq!(r.status(), 529);
        assert_eq!(r.headers()["x-should-retry"], "true");
        assert_eq!(r.headers()["request-id"], "req_7");
        let v = json(r.body());
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "overloaded_error");
        assert_eq!(v["request_id"], "req_7");

        let r = status_response(400, None, ApiShape::Anthropic, "claude", "7");
        assert!(r.headers().get("x-should-retry").is_none());
        let v = json(r.body());
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("prompt is too long")));
        for s in [500, 503] {
            let v = json(status_response(s, None, ApiShape::Anthropic, "c", "1").body());
            assert_eq!(v["error"]["type"], "api_error");
            let v = json(status_response(s, None, ApiShape::OpenAi, "c", "1").body());
            assert_eq!(v["error"]["type"], "server_error");
        }
    }
}
