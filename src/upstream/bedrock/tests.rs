//! Bedrock's wire format without a socket: bodies, SigV4, event frames.

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
        let data: Value =
            serde_json::from_str(blocks[1].split_once("data: ").expect("data").1).expect("json");
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
    assert!(String::from_utf8_lossy(&error_body(500, b"<html>")).contains("Bedrock answered 500"));
}
