//! AWS Bedrock's wire format for Anthropic models (`InvokeModel` and
//! `InvokeModelWithResponseStream`): what changes between an Anthropic
//! Messages request and a Bedrock one, SigV4 signing, and the binary event
//! stream Bedrock answers a streamed request with, turned back into the
//! Anthropic SSE events inside it.
//!
//! Each part is a plain function (or a push-driven decoder) so it can be
//! tested without a socket; signing and the frame format come from AWS's own
//! crates (`aws-sigv4`, `aws-smithy-eventstream`).

use std::time::SystemTime;

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue as FrameValue, Message};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use super::converse::StreamEvents;

/// The `anthropic_version` Bedrock's Anthropic models take in the body.
pub const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// The SigV4 service name of the Bedrock runtime.
const SERVICE: &str = "bedrock";

/// The longest event-stream frame accepted (Bedrock's chunks are a few KB).
pub const MAX_FRAME: usize = 1 << 20;

/// AWS credentials, read from the environment when the config is loaded.
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Who signs and where: the credentials and the AWS region.
#[derive(Debug, Clone)]
pub struct Signer {
    pub credentials: AwsCredentials,
    pub region: String,
}

/// What a model id escapes in a path segment (`:` in `…-v2:0` included).
pub(super) const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The path of an invocation of `model`.
pub fn invoke_path(model: &str, stream: bool) -> String {
    let verb = if stream {
        "invoke-with-response-stream"
    } else {
        "invoke"
    };
    format!("/model/{}/{verb}", utf8_percent_encode(model, SEGMENT))
}

/// An Anthropic Messages body as Bedrock takes it: without `model` (it is
/// in the path) and `stream` (so is that), with `anthropic_version`, and
/// the allowed `anthropic-beta` values in `anthropic_beta`. Returns the body
/// and whether the client asked for a stream.
pub fn request_body(body: &[u8], betas: &[String]) -> Result<(Bytes, bool), String> {
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(body) else {
        return Err("the request body is not a JSON object".into());
    };
    obj.remove("model");
    let stream = obj
        .remove("stream")
        .is_some_and(|v| v.as_bool() == Some(true));
    obj.entry("anthropic_version")
        .or_insert_with(|| json!(ANTHROPIC_VERSION));
    if !betas.is_empty() {
        obj.insert("anthropic_beta".into(), json!(betas));
    }
    let bytes = serde_json::to_vec(&Value::Object(obj)).map_err(|e| e.to_string())?;
    Ok((Bytes::from(bytes), stream))
}

/// Signs a request with SigV4: adds `authorization`, `x-amz-date` and (with
/// temporary credentials) `x-amz-security-token` to `headers`. `uri` is the
/// full URL as sent; only `host` and `content-type` are signed besides what
/// the signer adds, so proxies that add headers do not break the signature.
pub fn sign(
    signer: &Signer,
    method: &str,
    uri: &str,
    host: &str,
    headers: &mut HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), String> {
    let (creds, region) = (&signer.credentials, signer.region.as_str());
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;

    let identity = aws_credential_types::Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        creds.session_token.clone(),
        None,
        "sluice-environment",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("SigV4 parameters: {e}"))?
        .into();
    let signed = [("host", host), ("content-type", "application/json")];
    let request = SignableRequest::new(method, uri, signed.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| format!("SigV4 request: {e}"))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| format!("SigV4 signing: {e}"))?
        .into_parts();
    for (name, value) in instructions.headers() {
        let mut v = HeaderValue::from_str(value).map_err(|e| format!("{name}: {e}"))?;
        v.set_sensitive(name.eq_ignore_ascii_case("authorization"));
        headers.insert(
            http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?,
            v,
        );
    }
    Ok(())
}

/// The Anthropic error `type` for a Bedrock error status, so an Anthropic
/// SDK retries exactly as it would against Anthropic.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 424 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// A Bedrock error body (`{"message": "…"}`) in Anthropic's shape.
pub fn error_body(status: u16, body: &[u8]) -> Bytes {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("Bedrock answered {status}"));
    let v = json!({"type": "error", "error": {"type": error_type(status), "message": message}});
    Bytes::from(v.to_string())
}

/// Turns Bedrock's `application/vnd.amazon.eventstream` answer back into the
/// Anthropic SSE events it carries, chunk by chunk: each complete frame
/// becomes its `event: …\ndata: …\n\n` blocks as soon as it is whole; a
/// partial frame waits for the next chunk (at most [`MAX_FRAME`] bytes).
/// InvokeModel's frames carry Anthropic events; Converse's are translated.
#[derive(Default)]
pub struct EventStreamToSse {
    decoder: MessageFrameDecoder,
    buf: BytesMut,
    converse: Option<StreamEvents>,
}

impl EventStreamToSse {
    /// A decoder for a Converse stream (`converse-stream`).
    pub fn converse(events: StreamEvents) -> Self {
        Self {
            converse: Some(events),
            ..Self::default()
        }
    }

    /// Feeds one chunk of the response body; returns the SSE text of every
    /// frame it completed. An error means the stream is corrupt: end it.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, String> {
        self.buf.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        loop {
            match self.decoder.decode_frame(&mut self.buf) {
                Ok(DecodedFrame::Complete(message)) => {
                    for event in self.events(&message)? {
                        sse_block(&event, &mut out);
                    }
                }
                Ok(DecodedFrame::Incomplete) => break,
                Err(e) => return Err(format!("Bedrock event stream: {e}")),
            }
        }
        if self.buf.len() > MAX_FRAME {
            return Err(format!("Bedrock event frame over {MAX_FRAME} bytes"));
        }
        Ok(out.freeze())
    }

    /// Whether a partial frame is still waiting (at the end of the body,
    /// the stream was cut).
    pub fn pending(&self) -> bool {
        !self.buf.is_empty()
    }
}

fn header<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            FrameValue::String(s) => Some(s.as_str()),
            _ => None,
        })
}

impl EventStreamToSse {
    /// The Anthropic events of one frame: an InvokeModel `chunk`'s `bytes`
    /// (base64 of an Anthropic event), a Converse event translated, or an
    /// exception as Anthropic's `error` event.
    fn events(&mut self, m: &Message) -> Result<Vec<Value>, String> {
        let payload: Value = serde_json::from_slice(m.payload())
            .map_err(|e| format!("Bedrock event payload is not JSON: {e}"))?;
        if header(m, ":message-type") != Some("event") {
            return Ok(vec![exception(m, &payload)]);
        }
        if let Some(c) = self.converse.as_mut() {
            return Ok(c.event(header(m, ":event-type").unwrap_or(""), &payload));
        }
        let b64 = payload
            .get("bytes")
            .and_then(Value::as_str)
            .ok_or("Bedrock chunk without bytes")?;
        let raw = aws_smithy_types::base64::decode(b64)
            .map_err(|e| format!("Bedrock chunk bytes: {e}"))?;
        let event = serde_json::from_slice::<Value>(&raw)
            .map_err(|e| format!("Bedrock chunk is not JSON: {e}"))?;
        Ok(vec![event])
    }
}

/// An exception frame as Anthropic's `error` event; `:exception-type`
/// names it (throttlingException, …).
fn exception(m: &Message, payload: &Value) -> Value {
    let status = match header(m, ":exception-type") {
        Some("throttlingException") => 429,
        Some("validationException") => 400,
        Some("serviceUnavailableException") => 503,
        Some("modelTimeoutException") => 408,
        _ => 500,
    };
    let message = payload
        .get("message")
        .or_else(|| payload.get("Message"))
        .and_then(Value::as_str)
        .unwrap_or("Bedrock stream error");
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

/// One Anthropic event as an SSE block.
fn sse_block(event: &Value, out: &mut BytesMut) {
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(event.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests;
