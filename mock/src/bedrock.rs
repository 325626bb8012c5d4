//! AWS Bedrock's runtime for Anthropic models: `POST /model/{id}/invoke`
//! (an Anthropic message as JSON) and `POST /model/{id}/invoke-with-response-stream`
//! (the Anthropic events, each base64 in `{"bytes"}` inside a binary
//! `application/vnd.amazon.eventstream` frame). The body is Bedrock's: no
//! `model` or `stream`, `anthropic_version` required. Requests must carry a
//! SigV4 `authorization` header for service `bedrock`; errors are Bedrock's
//! `{"message"}`. The Converse API's paths are answered in `converse`.
//!
//! `x-mock-exception-after: N` ends a stream (either API's) after N frames
//! with an exception frame (`:exception-type` from `x-mock-exception-type`,
//! default `modelStreamErrorException`), as Bedrock reports a failure once
//! the answer has begun.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::anthropic;
use crate::error::error_reply;
use crate::reply::{Ctx, Reply, ReplyKind};
use crate::server::lock;

/// The access key id that the mock refuses (as AWS refuses an unknown one).
pub const BAD_ACCESS_KEY: &str = "AKIDBADKEY";

/// A call to Bedrock's runtime.
pub(crate) struct Invocation {
    pub(crate) model: String,
    pub(crate) stream: bool,
    /// The Converse API (else InvokeModel).
    pub(crate) converse: bool,
}

/// The call a Bedrock path makes.
pub(crate) fn invocation(path: &str) -> Option<Invocation> {
    let rest = path.strip_prefix("/model/")?;
    let (model, verb) = rest.rsplit_once('/')?;
    let (stream, converse) = match verb {
        "invoke" => (false, false),
        "invoke-with-response-stream" => (true, false),
        "converse" => (false, true),
        "converse-stream" => (true, true),
        _ => return None,
    };
    Some(Invocation {
        model: percent_decode(model),
        stream,
        converse,
    })
}

/// Bedrock's answer to `call`, a stream cut by an exception frame when
/// `x-mock-exception-after` asks.
pub(crate) fn answer(ctx: &Ctx, call: &Invocation) -> Reply {
    let reply = if call.converse {
        crate::converse::converse(ctx, &call.model, call.stream)
    } else {
        invoke(ctx, &call.model, call.stream)
    };
    let header = |name: &str| ctx.headers.get(name).and_then(|v| v.to_str().ok());
    let after = header("x-mock-exception-after").and_then(|v| v.parse::<usize>().ok());
    match (reply.kind, after) {
        (ReplyKind::EventStream(mut frames), Some(n)) => {
            frames.truncate(n);
            let kind = header("x-mock-exception-type").unwrap_or("modelStreamErrorException");
            frames.extend(exception_frame(kind, "The model stream failed (mock)."));
            Reply {
                kind: ReplyKind::EventStream(frames),
                ..reply
            }
        }
        (kind, _) => Reply { kind, ..reply },
    }
}

/// An exception frame, as Bedrock sends one inside a stream.
fn exception_frame(kind: &str, message: &str) -> Option<Bytes> {
    let message = Message::new(json!({ "message": message }).to_string())
        .add_header(Header::new(
            ":exception-type",
            HeaderValue::String(kind.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("exception".into()),
        ));
    let mut out = Vec::new();
    write_message_to(&message, &mut out).ok()?;
    Some(Bytes::from(out))
}

/// Why a request's signature is refused (`None`: it looks like SigV4 for
/// Bedrock). Only its shape is checked, not the HMAC: the mock has no secret.
pub(crate) fn refused_signature(ctx: &Ctx) -> Option<Reply> {
    let auth = ctx
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let scope = auth
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")
        .and_then(|r| r.split_once(','))
        .map(|(scope, _)| scope.split('/').collect::<Vec<_>>());
    let ok = matches!(
        scope.as_deref(),
        Some([key, date, region, "bedrock", "aws4_request"])
            if !key.is_empty() && date.len() == 8 && !region.is_empty()
    ) && auth.contains("SignedHeaders=")
        && auth.contains("Signature=")
        && ctx.headers.contains_key("x-amz-date");
    if !ok {
        let message = "Missing Authentication Token";
        return Some(error_reply(ctx, 403, message));
    }
    if scope.is_some_and(|s| s.first() == Some(&BAD_ACCESS_KEY)) {
        let message = "The security token included in the request is invalid.";
        return Some(error_reply(ctx, 403, message));
    }
    let secret = lock(&ctx.shared.aws_secret).clone();
    if let Some(secret) = secret {
        if expected_authorization(ctx, &secret).as_deref() != Some(auth) {
            let message = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.";
            return Some(error_reply(ctx, 403, message));
        }
    }
    None
}

/// The `authorization` AWS would expect for this request as received,
/// signed with `secret` (the key id, region and time from the request).
fn expected_authorization(ctx: &Ctx, secret: &str) -> Option<String> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;

    let header = |name: &str| ctx.headers.get(name).and_then(|v| v.to_str().ok());
    let auth = header("authorization")?;
    let scope = auth.strip_prefix("AWS4-HMAC-SHA256 Credential=")?;
    let mut parts = scope.split(['/', ',']);
    let (key, _date, region) = (parts.next()?, parts.next()?, parts.next()?);
    let signed: Vec<&str> = auth
        .split_once("SignedHeaders=")?
        .1
        .split(',')
        .next()?
        .split(';')
        .collect();
    let identity = aws_credential_types::Credentials::new(
        key,
        secret,
        header("x-amz-security-token").map(str::to_owned),
        None,
        "mock",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("bedrock")
        .time(amz_time(header("x-amz-date")?)?)
        .settings(SigningSettings::default())
        .build()
        .ok()?
        .into();
    // The signer adds its own `x-amz-*` headers; the others are the request's.
    let mut headers = Vec::new();
    for name in signed.iter().filter(|n| !n.starts_with("x-amz-")) {
        headers.push((*name, header(name)?));
    }
    let uri = format!("http://{}{}", header("host")?, ctx.path_and_query);
    let request = SignableRequest::new(
        &ctx.method,
        uri,
        headers.into_iter(),
        SignableBody::Bytes(&ctx.body),
    )
    .ok()?;
    let (instructions, _) = sign(request, &params).ok()?.into_parts();
    let expected = instructions
        .headers()
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.to_owned());
    expected
}

/// `20261130T184500Z` as a time.
fn amz_time(text: &str) -> Option<std::time::SystemTime> {
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// An invocation: the body checked as Bedrock checks it, then answered as
/// the Anthropic API would, in Bedrock's framing.
fn invoke(ctx: &Ctx, model: &str, stream: bool) -> Reply {
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&ctx.body) else {
        return error_reply(
            ctx,
            400,
            "Malformed input request, please reformat your input and try again.",
        );
    };
    for key in ["model", "stream"] {
        if body.contains_key(key) {
            let message = format!("Malformed input request: extraneous key [{key}] is not permitted, please reformat your input and try again.");
            return error_reply(ctx, 400, &message);
        }
    }
    if body.get("anthropic_version").and_then(Value::as_str) != Some("bedrock-2023-05-31") {
        let message = "Malformed input request: #: required key [anthropic_version] not found, please reformat your input and try again.";
        return error_reply(ctx, 400, message);
    }
    body.insert("model".into(), json!(model));
    body.insert("stream".into(), json!(stream));
    let reply = anthropic::messages(ctx, &Value::Object(body));
    match reply.kind {
        ReplyKind::Sse(events) => {
            let events: Vec<Value> = events.iter().filter_map(event_json).collect();
            let tokens = |ty: &str, at: &str| {
                events
                    .iter()
                    .filter(|e| e["type"] == ty)
                    .find_map(|e| e.pointer(at).and_then(Value::as_u64))
                    .unwrap_or(0)
            };
            let metrics = json!({
                "inputTokenCount": tokens("message_start", "/message/usage/input_tokens"),
                "outputTokenCount": tokens("message_delta", "/usage/output_tokens"),
                "invocationLatency": 1, "firstByteLatency": 1
            });
            let frames = events
                .into_iter()
                .filter_map(|e| frame(e, &metrics))
                .collect();
            Reply {
                kind: ReplyKind::EventStream(frames),
                ..reply
            }
        }
        _ => reply,
    }
}

/// The JSON of one SSE event.
pub(crate) fn event_json(event: &Bytes) -> Option<Value> {
    let text = std::str::from_utf8(event).ok()?;
    let data = text.lines().find_map(|l| l.strip_prefix("data: "))?;
    serde_json::from_str(data).ok()
}

/// One Anthropic event as a Bedrock `chunk` frame (`message_stop` with the
/// invocation metrics Bedrock adds to it).
fn frame(mut value: Value, metrics: &Value) -> Option<Bytes> {
    if value["type"] == "message_stop" {
        value["amazon-bedrock-invocationMetrics"] = metrics.clone();
    }
    let bytes = aws_smithy_types::base64::encode(value.to_string());
    event_frame("chunk", &json!({ "bytes": bytes }))
}

/// An event frame named `kind` carrying `payload`, padded with `p` as AWS
/// pads its frames (so their sizes say nothing of the text).
pub(crate) fn event_frame(kind: &'static str, payload: &Value) -> Option<Bytes> {
    let mut payload = payload.clone();
    if let Some(obj) = payload.as_object_mut() {
        obj.insert("p".into(), json!("abcdefghijklmnopqrstuvwxyzABCDEF"));
    }
    let header =
        |name: &'static str, v: &'static str| Header::new(name, HeaderValue::String(v.into()));
    let message = Message::new(payload.to_string())
        .add_header(header(":event-type", kind))
        .add_header(header(":content-type", "application/json"))
        .add_header(header(":message-type", "event"));
    let mut out = Vec::new();
    write_message_to(&message, &mut out).ok()?;
    Some(Bytes::from(out))
}

/// `%XX` escapes decoded (a model id's `:` comes as `%3A`).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
