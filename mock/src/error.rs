//! Error bodies in each provider's own shape (OpenAI `{"error":{…}}`, Anthropic
//! `{"type":"error","error":{…}}`), rendered in one place.

use hyper::StatusCode;
use serde_json::json;

use crate::reply::{Ctx, Reply, ReplyKind};

// Errors
// ---------------------------------------------------------------------------------------------

pub(crate) fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub(crate) fn default_error_message(status: u16) -> String {
    match status {
        400 => "Invalid request (mock).".to_owned(),
        401 => "Invalid authentication (mock).".to_owned(),
        403 => "Permission denied (mock).".to_owned(),
        404 => "Not found (mock).".to_owned(),
        408 => "Request timed out (mock).".to_owned(),
        413 => "Request too large (mock).".to_owned(),
        429 => "Rate limit reached for requests (mock).".to_owned(),
        500 => "The server had an error while processing your request (mock).".to_owned(),
        502 => "Bad gateway (mock).".to_owned(),
        503 => "The engine is currently overloaded, please try again later (mock).".to_owned(),
        529 => "Overloaded (mock).".to_owned(),
        other => format!("Mock error with status {other}."),
    }
}

/// OpenAI `(type, code)` for a status.
fn openai_error_kind(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        400 | 404 | 413 | 422 => ("invalid_request_error", None),
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("permission_error", None),
        408 => ("timeout", None),
        429 => ("requests", Some("rate_limit_exceeded")),
        500..=599 => ("server_error", None),
        _ => ("api_error", None),
    }
}

fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    }
}

pub(crate) fn error_reply(ctx: &Ctx, status: u16, message: &str) -> Reply {
    let body = if ctx.bedrock {
        json!({ "message": message })
    } else if ctx.anthropic {
        json!({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}})
    } else {
        let (kind, code) = openai_error_kind(status);
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
    };
    Reply {
        status: status_code(status),
        kind: ReplyKind::Json(body),
        headers: Vec::new(),
    }
}
