//! Provider error bodies in the other API's shape, with the status the
//! client's SDK expects, so it retries (or not) exactly as it would against
//! its own provider.
//!
//! Both official SDK families retry 408, 409, 429 and every 5xx and honour
//! `retry-after` and `x-should-retry` (the caller keeps the provider's
//! headers), so the status class is kept; two statuses change: Anthropic's
//! 529 `overloaded_error` is OpenAI's 503, and the other way round.
//! Context-length errors are worded as each API words them, because clients
//! match on that text to trim their history.

use serde_json::Value;

use super::json::{object, str_at};

/// The most characters of a provider's unparseable error body kept.
const MAX_RAW: usize = 1024;

/// An error response for the client: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// An Anthropic error (`{"type":"error","error":{"type","message"}}`) for an
/// OpenAI client.
pub fn anthropic_to_openai(status: u16, body: &[u8]) -> ErrorReply {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let ty = error.map_or("", |e| str_at(e, "type"));
    let message = error
        .map(|e| str_at(e, "message").to_owned())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| raw_message(status, body));
    let context = message.contains("prompt is too long");
    let (status, code) = match (ty, status) {
        ("overloaded_error", _) | (_, 529) => (503, Some("overloaded")),
        ("rate_limit_error", _) => (429, Some("rate_limit_exceeded")),
        ("billing_error", _) => (429, Some("insufficient_quota")),
        ("request_too_large", _) => (413, Some("request_too_large")),
        _ if context => (400, Some("context_length_exceeded")),
        _ => (status, None),
    };
    let message = if context {
        format!("This model's maximum context length was exceeded: {message}")
    } else {
        message
    };
    let openai_type = if code == Some("insufficient_quota") {
        "insufficient_quota"
    } else {
        status_type_openai(status)
    };
    let body = object([(
        "error",
        object([
            ("message", message.into()),
            ("type", openai_type.into()),
            (
                "param",
                if context {
                    "messages".into()
                } else {
                    Value::Null
                },
            ),
            ("code", code.map_or(Value::Null, Value::from)),
        ]),
    )]);
    ErrorReply {
        status,
        body: body.to_string().into_bytes(),
    }
}

/// An OpenAI error (`{"error":{"message","type","param","code"}}`) for an
/// Anthropic client.
pub fn openai_to_anthropic(status: u16, body: &[u8]) -> ErrorReply {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let (ty, code) = error.map_or(("", ""), |e| (str_at(e, "type"), str_at(e, "code")));
    let message = error
        .map(|e| str_at(e, "message").to_owned())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| raw_message(status, body));
    let context = code == "context_length_exceeded" || message.contains("maximum context length");
    let status = if status == 503 { 529 } else { status };
    let (ty, message) = if context && status == 400 {
        (
            "invalid_request_error",
            format!("prompt is too long: {message}"),
        )
    } else {
        (openai_type_to_anthropic(ty, Some(status)), message)
    };
    let body = object([
        ("type", "error".into()),
        (
            "error",
            object([("type", ty.into()), ("message", message.into())]),
        ),
    ]);
    ErrorReply {
        status,
        body: body.to_string().into_bytes(),
    }
}

/// OpenAI's `error.type` for a status (as Sluice renders its own errors).
fn status_type_openai(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "requests",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// An Anthropic error type (from a stream's `error` event) as OpenAI's.
pub(crate) fn anthropic_type_to_openai(ty: &str) -> &'static str {
    match ty {
        "invalid_request_error" | "not_found_error" | "request_too_large" => {
            "invalid_request_error"
        }
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "rate_limit_error" => "requests",
        "billing_error" => "insufficient_quota",
        _ => "server_error",
    }
}

/// An OpenAI error type (and status, when known) as Anthropic's.
pub(crate) fn openai_type_to_anthropic(ty: &str, status: Option<u16>) -> &'static str {
    match status {
        Some(401) => return "authentication_error",
        Some(403) => return "permission_error",
        Some(404) => return "not_found_error",
        Some(413) => return "request_too_large",
        Some(429) => return "rate_limit_error",
        Some(529) => return "overloaded_error",
        Some(400..=499) => return "invalid_request_error",
        Some(_) => return "api_error",
        None => {}
    }
    match ty {
        "invalid_request_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "requests" | "tokens" | "rate_limit_exceeded" | "insufficient_quota" => "rate_limit_error",
        _ => "api_error",
    }
}

/// A message for a body that is not the expected JSON: its text, cut.
fn raw_message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!("the provider answered HTTP {status}");
    }
    match text.char_indices().nth(MAX_RAW) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(r: &ErrorReply) -> Value {
        serde_json::from_slice(&r.body).expect("json")
    }

    #[test]
    fn overload_is_503_for_openai_and_529_for_anthropic() {
        let a = json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}});
        let r = anthropic_to_openai(529, a.to_string().as_bytes());
        assert_eq!(r.status, 503);
        assert_eq!(body(&r)["error"]["type"], "server_error");
        let o = json!({"error":{"message":"busy","type":"server_error","param":null,"code":null}});
        let r = openai_to_anthropic(503, o.to_string().as_bytes());
        assert_eq!(r.status, 529);
        assert_eq!(body(&r)["error"]["type"], "overloaded_error");
    }

    #[test]
    fn context_length_is_worded_for_each_api() {
        let a = json!({"type":"error","error":{"type":"invalid_request_error",
            "message":"prompt is too long: 210000 tokens > 200000 maximum"}});
        let r = anthropic_to_openai(400, a.to_string().as_bytes());
        let v = body(&r);
        assert_eq!(
            (r.status, &v["error"]["code"]),
            (400, &json!("context_length_exceeded"))
        );
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("maximum context length")));
        let o = json!({"error":{"message":"This model's maximum context length is 128000 tokens.",
            "type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}});
        let r = openai_to_anthropic(400, o.to_string().as_bytes());
        let v = body(&r);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("prompt is too long")));
    }

    #[test]
    fn statuses_keep_their_class() {
        for (status, ty) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
        ] {
            let r = openai_to_anthropic(status, b"{\"error\":{\"message\":\"m\",\"type\":\"x\"}}");
            assert_eq!(
                (r.status, body(&r)["error"]["type"].clone()),
                (status, json!(ty))
            );
            let a = json!({"type":"error","error":{"type":ty,"message":"m"}});
            let back = anthropic_to_openai(status, a.to_string().as_bytes());
            assert_eq!(back.status, status);
        }
        let r = anthropic_to_openai(502, b"<html>bad gateway</html>");
        assert_eq!(r.status, 502);
        assert_eq!(body(&r)["error"]["message"], "<html>bad gateway</html>");
        assert_eq!(body(&r)["error"]["type"], "server_error");
    }
}
