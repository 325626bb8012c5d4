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
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::Header;

    fn frame(message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        write_message_to(message, &mut out).expect("encode");
        out
    }

    fn chunk(event: &Value) -> Vec<u8> {
        let b64 = aws_smithy_types::base64::encode(event.to_string());
        let m = Message::new(json!({ "bytes": b64 }).to_string())
            .add_header(Header::new(
                ":message-type",
                FrameValue::String("event".into()),
            ))
            .add_header(Header::new(
                ":event-type",
                FrameValue::String("chunk".into()),
            ));
        frame(&m)
    }

    #[test]
    fn a_messages_body_becomes_a_bedrock_body() {
        let body = br#"{"model":"claude-x","stream":true,"max_tokens":5,"messages":[]}"#;
        let (out, stream) = request_body(body, &["tools-2024".into()]).expect("body");
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert!(stream);
        assert_eq!(v.get("model"), None);
        assert_eq!(v.get("stream"), None);
        assert_eq!(v["anthropic_version"], ANTHROPIC_VERSION);
        assert_eq!(v["anthropic_beta"], json!(["tools-2024"]));
        assert_eq!(v["max_tokens"], 5);
        assert!(request_body(b"[1]", &[]).is_err());
        assert_eq!(
            invoke_path("anthropic.claude-3-5-sonnet-20241022-v2:0", false),
            "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/invoke"
        );
        assert!(invoke_path("m", true).ends_with("/invoke-with-response-stream"));
    }

    #[test]
    fn signing_adds_a_sigv4_authorization_that_follows_the_body() {
        let creds = AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("token-1".into()),
        };
        let signer = Signer {
            credentials: creds.clone(),
            region: "us-east-1".into(),
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let uri = "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/invoke";
        let host = "bedrock-runtime.us-east-1.amazonaws.com";
        let signed = |body: &[u8]| {
            let mut h = HeaderMap::new();
            sign(&signer, "POST", uri, host, &mut h, body, at).expect("sign");
            h
        };
        let a = signed(b"{\"a\":1}");
        let auth = a["authorization"].to_str().expect("ascii");
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/bedrock/aws4_request, SignedHeaders="
            ),
            "{auth}"
        );
        assert!(
            auth.contains("host") && auth.contains("x-amz-date"),
            "{auth}"
        );
        assert_eq!(a["x-amz-date"], "20231114T221320Z");
        assert_eq!(a["x-amz-security-token"], "token-1");
        assert!(a["authorization"].is_sensitive());
        // The same request signs the same; another body signs differently.
        assert_eq!(signed(b"{\"a\":1}")["authorization"], a["authorization"]);
        assert_ne!(signed(b"{\"a\":2}")["authorization"], a["authorization"]);
        assert!(!format!("{creds:?}").contains("EXAMPLEKEY"));
    }

    #[test]
    fn event_frames_become_anthropic_sse_whatever_the_chunking() {
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hé"}}),
            json!({"type": "message_stop"}),
        ];
        let wire: Vec<u8> = events.iter().flat_map(chunk).collect();
        for size in [1, 7, 64, wire.len()] {
            let mut d = EventStreamToSse::default();
            let mut text = Vec::new();
            for piece in wire.chunks(size) {
                text.extend_from_slice(&d.push(piece).expect("decode"));
            }
            assert!(!d.pending());
            let text = String::from_utf8(text).expect("utf8");
            let blocks: Vec<&str> = text.split("\n\n").filter(|b| !b.is_empty()).collect();
            assert_eq!(blocks.len(), 3, "chunks of {size}: {text}");
            assert!(blocks[0].starts_with("event: message_start\ndata: {"));
            let data: Value = serde_json::from_str(blocks[1].split_once("data: ").expect("data").1)
                .expect("json");
            assert_eq!(data["delta"]["text"], "hé");
            assert_eq!(
                blocks[2],
                "event: message_stop\ndata: {\"type\":\"message_stop\"}"
            );
        }
        // A cut frame stays pending; a corrupt one is an error.
        let mut d = EventStreamToSse::default();
        d.push(&wire[..10]).expect("partial");
        assert!(d.pending());
        let mut bad = wire.clone();
        bad[20] ^= 0xff;
        assert!(EventStreamToSse::default().push(&bad).is_err());
    }

    fn converse_frame(kind: &str, payload: &Value) -> Vec<u8> {
        let m = Message::new(payload.to_string())
            .add_header(Header::new(
                ":message-type",
                FrameValue::String("event".into()),
            ))
            .add_header(Header::new(
                ":event-type",
                FrameValue::String(kind.to_owned().into()),
            ));
        frame(&m)
    }

    #[test]
    fn converse_frames_become_the_same_anthropic_sse_whatever_the_chunking() {
        let wire: Vec<u8> = [
            ("messageStart", json!({"role": "assistant", "p": "abcd"})),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "hé"}}),
            ),
            ("contentBlockStop", json!({"contentBlockIndex": 0})),
            ("messageStop", json!({"stopReason": "end_turn"})),
            (
                "metadata",
                json!({"usage": {"inputTokens": 3, "outputTokens": 1}}),
            ),
        ]
        .iter()
        .flat_map(|(k, p)| converse_frame(k, p))
        .collect();
        let decode = |size: usize| {
            let events = StreamEvents::new("m".into(), "msg_bdrk_1".into());
            let mut d = EventStreamToSse::converse(events);
            let mut text = Vec::new();
            for piece in wire.chunks(size) {
                text.extend_from_slice(&d.push(piece).expect("decode"));
            }
            assert!(!d.pending());
            String::from_utf8(text).expect("utf8")
        };
        let whole = decode(wire.len());
        let kinds: Vec<&str> = whole
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(whole.contains(r#""text":"hé""#), "{whole}");
        for size in 1..wire.len() {
            assert_eq!(decode(size), whole, "chunks of {size}");
        }
    }

    #[test]
    fn exceptions_become_anthropic_error_events_and_bodies() {
        let m = Message::new(json!({"message": "Too many requests"}).to_string())
            .add_header(Header::new(
                ":message-type",
                FrameValue::String("exception".into()),
            ))
            .add_header(Header::new(
                ":exception-type",
                FrameValue::String("throttlingException".into()),
            ));
        let text = EventStreamToSse::default()
            .push(&frame(&m))
            .expect("decode");
        let text = String::from_utf8(text.to_vec()).expect("utf8");
        assert!(text.starts_with("event: error\ndata: "), "{text}");
        assert!(text.contains("rate_limit_error") && text.contains("Too many requests"));
        let body = error_body(429, br#"{"message":"Rate exceeded"}"#);
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["message"], "Rate exceeded");
        assert_eq!(error_type(503), "overloaded_error");
        assert!(
            String::from_utf8_lossy(&error_body(500, b"<html>")).contains("Bedrock answered 500")
        );
    }
}
