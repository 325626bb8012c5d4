//! Bad input and broken upstreams: clear errors in the provider's own shape,
//! with the right status, never a panic or a hang, and accounting intact.

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::{Fault, MockProvider};

async fn setup_with(server_extra: &str, extra: &str) -> (MockProvider, Sluice) {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), server_extra, extra)).await;
    (mock, s)
}

fn assert_openai_error(body: &[u8], kind: &str) -> Value {
    let v = json(&bytes::Bytes::copy_from_slice(body));
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    v
}

fn assert_anthropic_error(body: &[u8], kind: &str) {
    let v = json(&bytes::Bytes::copy_from_slice(body));
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
}

#[tokio::test]
async fn malformed_bodies_are_400_without_an_upstream_call() {
    let (mock, s) = setup_with("max_body = \"64KiB\"", "").await;
    let auth = format!("Bearer {KEY}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    for body in [
        "{\"model\": \"m\", ",
        "[{\"model\":\"m\"}]",
        "",
        "{\"messages\":[]}",
        "null",
    ] {
        let (st, headers, b) = call(Method::POST, &s.url("/v1/chat/completions"), &h, body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(headers["content-type"], "application/json");
        assert_openai_error(&b, "invalid_request_error");
    }
    let ah = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    let (st, _, b) = call(Method::POST, &s.url("/v1/messages"), &ah, "{oops").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_anthropic_error(&b, "invalid_request_error");

    let big = "x".repeat(70 * 1024);
    let (st, _, b) = call(Method::POST, &s.url("/v1/chat/completions"), &h, big).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        assert_openai_error(&b, "invalid_request_error")["error"]["code"],
        "request_too_large"
    );
    let big = "x".repeat(70 * 1024);
    let (st, _, b) = call(Method::POST, &s.url("/v1/messages"), &ah, big).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_anthropic_error(&b, "request_too_large");

    assert_eq!(
        mock.request_count(),
        0,
        "no bad request may reach the provider"
    );
    // Every request still left a usage record.
    let records = s.wait_usage(8).await;
    assert!(records
        .iter()
        .all(|r| r["status"].as_u64().is_some_and(|s| s >= 400)));
}

#[tokio::test]
async fn keys_models_and_paths() {
    let extra = format!(
        "[[keys]]\nname = \"limited\"\nsha256 = \"{}\"\nmodels = [\"gpt-4o-mini\"]\n",
        sha256_hex("sk-limited")
    );
    let cfg = |mock: &MockProvider| {
        config(&mock.url(), "", &extra)
            .replace("[[models]]\nname = \"*\"\nprovider = \"mock-openai\"\n", "")
    };
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&cfg(&mock)).await;
    let chat = |model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": "x"}]}).to_string()
    };

    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &[],
        chat("gpt-4o-mini"),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_openai_error(&b, "authentication_error");
    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &[("authorization", "Bearer sk-wrong")],
        chat("gpt-4o-mini"),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(
        assert_openai_error(&b, "authentication_error")["error"]["code"],
        "invalid_api_key"
    );
    assert!(
        !String::from_utf8_lossy(&b).contains("sk-wrong"),
        "key echoed back"
    );
    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/messages"),
        &[
            ("x-api-key", "sk-wrong"),
            ("anthropic-version", "2023-06-01"),
        ],
        chat("claude-x"),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_anthropic_error(&b, "authentication_error");

    let auth = format!("Bearer {KEY}");
    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &[("authorization", &auth)],
        chat("gpt-9"),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(
        assert_openai_error(&b, "invalid_request_error")["error"]["code"],
        "model_not_found"
    );
    // An unknown model in Anthropic's shape (a model only the other API
    // serves is reached by translation: tests/cross_provider.rs).
    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/messages"),
        &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
        chat("gpt-9"),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_anthropic_error(&b, "not_found_error");

    let limited = [("authorization", "Bearer sk-limited")];
    let (st, _, _) = call(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &limited,
        chat("gpt-4o-mini"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/messages"),
        &[
            ("x-api-key", "sk-limited"),
            ("anthropic-version", "2023-06-01"),
        ],
        chat("claude-x"),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_anthropic_error(&b, "permission_error");

    let (st, _, b) = call(
        Method::GET,
        &s.url("/healthz"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_openai_error(&b, "invalid_request_error");
    assert_eq!(
        mock.request_count(),
        1,
        "only the allowed request reached the provider"
    );
}

#[tokio::test]
async fn passthrough_forwards_the_client_key_unchanged() {
    let (mock, s) = setup_with("passthrough_keys = true", "").await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}).to_string();
    let (st, h, _) = call(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &[("authorization", "Bearer sk-client-own")],
        body,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        mock.last_request().expect("req").header("authorization"),
        Some("Bearer sk-client-own")
    );
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    let key = rec["key"].as_str().expect("key");
    assert!(
        key.starts_with("passthrough:") && !key.contains("sk-client-own"),
        "{key}"
    );
    // The upstream's own 401 passes through unchanged.
    let body = json!({"model": "m", "messages": []}).to_string();
    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &[("authorization", "Bearer bad-key")],
        body,
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_openai_error(&b, "invalid_request_error");
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged() {
    let (mock, s) = setup_with("", "[retry]\nmax_retries = 0\n").await;
    mock.push_fault(Fault::Status {
        status: 429,
        body: r#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.into(),
        retry_after: Some(7),
    });
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let (st, h, b) = post(&s, "/v1/chat/completions", &[], &body).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["retry-after"], "7");
    assert_eq!(&b[..], br#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#);
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["status"], 429);
}

#[tokio::test]
async fn unreachable_provider_is_502_and_slow_one_504() {
    // A port nothing listens on.
    let (_dead, dead_addr) = refused_addr();
    let dead_url = format!("http://{dead_addr}");
    let mock = MockProvider::start().await.expect("mock");
    let cfg = config(&mock.url(), "", "").replacen(
        &format!("{}/v1", mock.url()),
        &format!("{dead_url}/v1"),
        1,
    ) + "\n[timeouts]\nfirst_byte = \"300ms\"\nidle = \"300ms\"\n";
    let s = Sluice::start(&cfg).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &body).await;
    assert_eq!(st, StatusCode::BAD_GATEWAY);
    let v = assert_openai_error(&b, "server_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("mock-openai"));

    // Anthropic provider is the live mock, slow to answer.
    let msg = json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/messages"),
        &[
            ("x-api-key", KEY),
            ("anthropic-version", "2023-06-01"),
            ("x-mock-first-byte-delay-ms", "3000"),
        ],
        msg.to_string(),
    )
    .await;
    assert_eq!(st, StatusCode::GATEWAY_TIMEOUT);
    assert_anthropic_error(&b, "api_error");
}

/// A chat stream through a Sluice with `[timeouts]` lines `timeouts`, paced
/// by the mock as `mock` asks: the stream's data fields, whether it ended
/// with `[DONE]`, and its usage record.
async fn timed_stream(timeouts: &str, mock: &[(&str, &str)]) -> (Vec<String>, bool, Value) {
    let provider = MockProvider::start().await.expect("mock");
    let cfg = config(&provider.url(), "", "") + "\n[timeouts]\n" + timeouts;
    let s = Sluice::start(&cfg).await;
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "a b c"}]});
    let (st, h, b) = post(&s, "/v1/chat/completions", mock, &body).await;
    assert_eq!(st, StatusCode::OK);
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    let done = String::from_utf8_lossy(&b).contains("[DONE]");
    (sse_data(&b), done, rec)
}

/// The terminal error event a stream cut by Sluice ends with.
fn last_error_code(data: &[String]) -> Value {
    let last: Value = serde_json::from_str(data.last().expect("events")).expect("json");
    last["error"]["code"].clone()
}

#[tokio::test]
async fn stalled_stream_ends_with_an_error_event() {
    let (data, done, rec) =
        timed_stream("idle = \"300ms\"\n", &[("x-mock-delay-ms", "2000")]).await;
    assert_eq!(last_error_code(&data), "upstream_stream_error", "{data:?}");
    assert!(!done);
    assert_eq!(rec["end"], "idle_timeout");
}

/// Events closer together than the idle timeout never trip it, however
/// long the stream runs (the timer is pushed out, not re-armed per event).
#[tokio::test]
async fn a_paced_stream_outlives_its_idle_timeout() {
    // Nine events 300 ms apart: about three idle timeouts end to end.
    let pace = [("x-mock-words", "8"), ("x-mock-delay-ms", "300")];
    let (_, done, rec) = timed_stream("idle = \"1s\"\n", &pace).await;
    assert!(done);
    assert_eq!(rec["end"], "complete");
}

/// A stream that keeps sending is still cut at the request's total timeout.
#[tokio::test]
async fn a_stream_past_the_total_timeout_ends_with_an_error_event() {
    let pace = [("x-mock-words", "30"), ("x-mock-delay-ms", "200")];
    let (data, done, rec) = timed_stream("idle = \"5s\"\ntotal = \"1s\"\n", &pace).await;
    assert!(data.len() > 2, "some events went through first: {data:?}");
    assert_eq!(last_error_code(&data), "upstream_stream_error", "{data:?}");
    assert!(!done);
    assert_eq!(rec["end"], "total_timeout");
}

#[tokio::test]
async fn upstream_dying_mid_stream_is_never_a_clean_end() {
    let (_mock, s) = setup_with("", "").await;
    // OpenAI stream: a terminal error event in OpenAI's shape, no [DONE].
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "a b c d e f"}]});
    let (st, h, b) = post(
        &s,
        "/v1/chat/completions",
        &[("x-mock-abort-after", "3")],
        &body,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let text = String::from_utf8_lossy(&b);
    assert!(!text.contains("[DONE]"), "{text}");
    let last: Value = serde_json::from_str(sse_data(&b).last().expect("events")).expect("json");
    assert_eq!(last["error"]["type"], "server_error");
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["end"], "upstream_error");
    assert_eq!(rec["usage_source"], "estimated");

    // Anthropic stream: `event: error` in Anthropic's shape.
    let msg = json!({"model": "claude-x", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "a b c d e f"}]});
    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/messages"),
        &[
            ("x-api-key", KEY),
            ("anthropic-version", "2023-06-01"),
            ("x-mock-abort-after", "4"),
        ],
        msg.to_string(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let text = String::from_utf8_lossy(&b);
    assert!(
        text.contains("event: error\ndata: {\"type\":\"error\""),
        "{text}"
    );
    assert!(!text.contains("message_stop"));

    // Non-streaming body cut short: Sluice reads these bodies whole (for the
    // cost header), so the client gets a clean 502 instead of half a JSON.
    let auth = format!("Bearer {KEY}");
    let resp = send(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &[
            ("authorization", &auth),
            ("x-mock-abort-after", "1"),
            ("x-mock-large-response-kb", "256"),
        ],
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}).to_string(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body = frames(resp.into_body())
        .await
        .expect("a complete error body")
        .concat();
    let v: Value = serde_json::from_slice(&body).expect("json error");
    assert_eq!(v["error"]["type"], "server_error");
}

#[tokio::test]
async fn missing_provider_key_is_a_clear_server_error() {
    let mock = MockProvider::start().await.expect("mock");
    let cfg =
        config(&mock.url(), "", "").replace("SLUICE_TEST_OPENAI_KEY", "SLUICE_TEST_UNSET_KEY");
    let s = Sluice::start(&cfg).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &body).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    let v = assert_openai_error(&b, "server_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("SLUICE_TEST_UNSET_KEY"));
    assert_eq!(mock.request_count(), 0);
}
