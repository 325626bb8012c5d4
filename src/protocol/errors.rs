//! Errors as each API reports them: the JSON body, the terminal SSE error
//! event of a stream cut short, the request-id header, and the error type a
//! status maps to, so the client's SDK classifies and retries an error from
//! Sluice as it would one from its provider.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::vocab::ApiShape;

/// What an error says; each API shows the parts it has.
#[derive(Debug, Clone, Copy)]
pub struct ErrorFields<'a> {
    pub message: &'a str,
    /// The API's `error.type`.
    pub kind: &'a str,
    /// OpenAI's `error.param` and `error.code`.
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
    /// Anthropic's top-level `request_id`.
    pub request_id: Option<&'a str>,
}

/// The JSON error body: OpenAI's `{"error":{message,type,param,code}}`,
/// Anthropic's `{"type":"error","error":{type,message}}`.
pub fn json(api: ApiShape, f: &ErrorFields<'_>) -> Value {
    match api {
        ApiShape::OpenAi => json!({"error": {
            "message": f.message, "type": f.kind, "param": f.param, "code": f.code,
        }}),
        ApiShape::Anthropic => {
            let mut v = json!({"type": "error", "error": {"type": f.kind, "message": f.message}});
            if let (Some(id), Value::Object(o)) = (f.request_id, &mut v) {
                o.insert("request_id".into(), Value::from(id));
            }
            v
        }
    }
}

/// The error type of a status, for an error Sluice itself raises (`quota`:
/// a spent budget, which OpenAI reports as `insufficient_quota`).
pub fn status_type(api: ApiShape, status: u16, quota: bool) -> &'static str {
    match (api, status) {
        (_, 401) => "authentication_error",
        (_, 403) => "permission_error",
        (ApiShape::OpenAi, 429) if quota => "insufficient_quota",
        (ApiShape::OpenAi, 429) => "requests",
        (ApiShape::OpenAi, 400..=499) => "invalid_request_error",
        (ApiShape::OpenAi, _) => "server_error",
        (ApiShape::Anthropic, 404) => "not_found_error",
        (ApiShape::Anthropic, 413) => "request_too_large",
        (ApiShape::Anthropic, 429) => "rate_limit_error",
        (ApiShape::Anthropic, 503) => "overloaded_error",
        (ApiShape::Anthropic, 400..=499) => "invalid_request_error",
        (ApiShape::Anthropic, _) => "api_error",
    }
}

/// The terminal SSE event of a stream that failed after its first byte:
/// OpenAI's `data: {"error":…}`, Anthropic's `event: error`.
pub fn event(api: ApiShape, message: &str) -> Bytes {
    let text = match api {
        ApiShape::OpenAi => format!(
            "data: {}\n\n",
            json(
                api,
                &ErrorFields {
                    message,
                    kind: "server_error",
                    param: None,
                    code: Some("upstream_stream_error"),
                    request_id: None,
                }
            )
        ),
        ApiShape::Anthropic => format!(
            "event: error\ndata: {}\n\n",
            json(
                api,
                &ErrorFields {
                    message,
                    kind: "api_error",
                    param: None,
                    code: None,
                    request_id: None,
                }
            )
        ),
    };
    Bytes::from(text)
}

/// The response header carrying the provider's request id.
pub fn request_id_header(api: ApiShape) -> &'static str {
    match api {
        ApiShape::OpenAi => "x-request-id",
        ApiShape::Anthropic => "request-id",
    }
}

/// Whether the API tells its SDKs outright that an error is worth a retry
/// (Anthropic's `x-should-retry`).
pub fn says_retry(api: ApiShape) -> bool {
    api == ApiShape::Anthropic
}

/// Whether an error body says the prompt did not fit the model's context:
/// OpenAI's `context_length_exceeded` (or "maximum context length" from
/// compatible servers), Anthropic's "prompt is too long", Bedrock's "Input
/// is too long". A byte search: the body is read only to decide a fallback.
pub fn is_context_length(body: &[u8]) -> bool {
    let find = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    find(b"context_length_exceeded")
        || find(b"prompt is too long")
        || find(b"maximum context length")
        || find(b"Input is too long")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_api_shapes_its_errors() {
        let f = ErrorFields {
            message: "m",
            kind: "k",
            param: Some("model"),
            code: Some("c"),
            request_id: Some("req_1"),
        };
        assert_eq!(
            json(ApiShape::OpenAi, &f),
            json!({"error": {"message": "m", "type": "k", "param": "model", "code": "c"}})
        );
        assert_eq!(
            json(ApiShape::Anthropic, &f),
            json!({"type": "error", "error": {"type": "k", "message": "m"}, "request_id": "req_1"})
        );
        assert_eq!(
            status_type(ApiShape::OpenAi, 429, true),
            "insufficient_quota"
        );
        assert_eq!(
            status_type(ApiShape::Anthropic, 429, true),
            "rate_limit_error"
        );
        assert_eq!(status_type(ApiShape::Anthropic, 502, false), "api_error");
        let e = event(ApiShape::Anthropic, "cut");
        assert!(e.starts_with(b"event: error\ndata: {"));
        assert!(event(ApiShape::OpenAi, "cut").starts_with(b"data: {\"error\""));
    }

    #[test]
    fn context_length_errors() {
        assert!(is_context_length(
            br#"{"error":{"code":"context_length_exceeded","message":"..."}}"#
        ));
        assert!(is_context_length(
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 250000 tokens > 200000 maximum"}}"#
        ));
        assert!(!is_context_length(br#"{"error":{"code":"invalid_value"}}"#));
    }
}
