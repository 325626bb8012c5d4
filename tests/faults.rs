//! Chaos faults through the real binary: each kind as the client sees it,
//! matching and percent, upstream faults under Sluice's own retries, the
//! admin API with its mandatory expiry, usage records and the metric.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::MockProvider;

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 50, "stream": stream,
           "messages": [{"role": "user", "content": "hi"}]})
}

fn messages(stream: bool) -> Value {
    json!({"model": "claude-3-5-haiku", "max_tokens": 50, "stream": stream,
           "messages": [{"role": "user", "content": "hi"}]})
}

const FAULTS: &str = r#"
[retry]
max_retries = 2
base_backoff = "1ms"
max_backoff = "2ms"

[[faults]]
name = "rate-limited"
header = "x-chaos=429"
status = 429
retry_after = 3

[[faults]]
name = "overloaded"
header = "x-chaos=529"
status = 529

[[faults]]
name = "server-error"
header = "x-chaos=500"
status = 500

[[faults]]
name = "unavailable"
header = "x-chaos=503"
status = 503

[[faults]]
name = "too-long"
header = "x-chaos=ctx"
status = 400

[[faults]]
name = "never"
header = "x-chaos=never"
status = 500
percent = 0.0

[[faults]]
name = "search-down"
feature = "search"
user = "alice"
key = "test"
model = "gpt-4o*"
status = 503

[[faults]]
name = "cut"
header = "x-chaos=truncate"
truncate_after = 2

[[faults]]
name = "garbled"
header = "x-chaos=malformed"
malformed_after = 1

[[faults]]
name = "reset-mid"
header = "x-chaos=reset"
reset_after = 2

[[faults]]
name = "reset-head"
header = "x-chaos=reset-head"
reset_after = 0

[[faults]]
name = "slow"
header = "x-chaos=slow"
chunk_delay = "5ms"

[[faults]]
name = "late"
header = "x-chaos=delay"
delay = "20ms"

[[faults]]
name = "upstream-503"
header = "x-chaos=up-503"
status = 503
at = "upstream"

[[faults]]
name = "upstream-reset"
header = "x-chaos=up-reset"
reset_after = 0
at = "upstream"
"#;

async fn start() -> (MockProvider, Sluice) {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", FAULTS)).await;
    (mock, s)
}

fn id(h: &http::HeaderMap) -> String {
    h["x-sluice-request-id"].to_str().expect("id").to_owned()
}

/// The body's bytes, and the error it ended with (if it did not end cleanly).
async fn read_all(mut body: hyper::body::Incoming) -> (Vec<u8>, Option<String>) {
    use http_body_util::BodyExt;
    let mut out = Vec::new();
    while let Some(f) = body.frame().await {
        match f {
            Ok(f) => out.extend_from_slice(&f.into_data().unwrap_or_default()),
            Err(e) => return (out, Some(e.to_string())),
        }
    }
    (out, None)
}

async fn metric_line(s: &Sluice, fault: &str, kind: &str) -> Option<f64> {
    let (_, m) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
    let text = String::from_utf8_lossy(&m).into_owned();
    let want = format!("sluice_faults_injected_total{{fault=\"{fault}\",kind=\"{kind}\"}}");
    text.lines()
        .find(|l| l.starts_with(&want))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn status_faults_look_like_the_providers_own_and_never_reach_it() {
    let (mock, s) = start().await;
    // OpenAI's 429, with retry-after, instead of an upstream call.
    let (st, h, b) = post(
        &s,
        "/v1/chat/completions",
        &[("x-chaos", "429")],
        &chat("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["retry-after"], "3");
    let e = json(&b);
    assert_eq!(e["error"]["code"], "rate_limit_exceeded", "{e}");
    assert_eq!(e["error"]["type"], "requests");
    let rec = s.usage_for(&id(&h)).await;
    assert_eq!(rec["fault"], "rate-limited", "{rec}");
    assert_eq!(rec["status"], 429);
    assert_eq!(rec["attempts"], 0);

    // The context-length 400 in each shape.
    let (st, _, b) = post(
        &s,
        "/v1/chat/completions",
        &[("x-chaos", "ctx")],
        &chat("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(json(&b)["error"]["code"], "context_length_exceeded");
    let anthropic = [("x-chaos", "ctx"), ("anthropic-version", "2023-06-01")];
    let (st, h, b) = post(&s, "/v1/messages", &anthropic, &messages(false)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let e = json(&b);
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("prompt is too long"),
        "{e}"
    );
    assert!(h.get("x-should-retry").is_none());

    // Anthropic's 529 overloaded, 500 and 503 in its shape, retry advised.
    for (chaos, status, kind) in [
        ("529", 529, "overloaded_error"),
        ("500", 500, "api_error"),
        ("503", 503, "api_error"),
    ] {
        let headers = [("x-chaos", chaos), ("anthropic-version", "2023-06-01")];
        let (st, h, b) = post(&s, "/v1/messages", &headers, &messages(false)).await;
        assert_eq!(st.as_u16(), status);
        assert_eq!(h["x-should-retry"], "true");
        assert!(h["request-id"].to_str().unwrap_or("").starts_with("req_"));
        let e = json(&b);
        assert_eq!(e["error"]["type"], kind, "{e}");
        assert!(e["request_id"].is_string(), "{e}");
    }
    // OpenAI's 500 and 503.
    for (chaos, status) in [("500", 500), ("503", 503)] {
        let (st, _, b) = post(
            &s,
            "/v1/chat/completions",
            &[("x-chaos", chaos)],
            &chat("gpt-4o-mini", false),
        )
        .await;
        assert_eq!(st.as_u16(), status);
        assert_eq!(json(&b)["error"]["type"], "server_error");
    }
    assert_eq!(mock.request_count(), 0, "no injected failure went upstream");

    // 0 % never fires; no header, no fault.
    for _ in 0..20 {
        let (st, _, _) = post(
            &s,
            "/v1/chat/completions",
            &[("x-chaos", "never")],
            &chat("gpt-4o-mini", false),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
    }
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("gpt-4o-mini", false)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(s.usage_for(&id(&h)).await.get("fault").is_none());
    assert_eq!(mock.request_count(), 21);

    assert_eq!(
        metric_line(&s, "rate-limited", "status_429").await,
        Some(1.0)
    );
    assert_eq!(
        metric_line(&s, "too-long", "context_length").await,
        Some(2.0)
    );
    assert_eq!(metric_line(&s, "overloaded", "status_529").await, Some(1.0));
    assert_eq!(metric_line(&s, "never", "status_500").await, None);
}

#[tokio::test]
async fn every_condition_of_a_match_must_hold() {
    let (_mock, s) = start().await;
    // key "test" (user alice), model gpt-4o*, feature search: all hold.
    let search = [("x-sluice-feature", "search")];
    let (st, _, _) = post(
        &s,
        "/v1/chat/completions",
        &search,
        &chat("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    // Another feature, another model: not this fault.
    let other = [("x-sluice-feature", "chat")];
    let (st, _, _) = post(
        &s,
        "/v1/chat/completions",
        &other,
        &chat("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = post(&s, "/v1/chat/completions", &search, &chat("o3-mini", false)).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn stream_faults_spoil_the_stream_as_configured() {
    let (_mock, s) = start().await;
    let auth = format!("Bearer {KEY}");
    let stream = |chaos: &'static str| {
        let auth = auth.clone();
        let url = s.url("/v1/chat/completions");
        async move {
            let resp = send(
                Method::POST,
                &url,
                &[
                    ("authorization", &auth),
                    ("x-chaos", chaos),
                    ("x-mock-words", "12"),
                ],
                chat("gpt-4o-mini", true).to_string(),
            )
            .await;
            let status = resp.status();
            let rid = id(resp.headers());
            (status, rid, read_all(resp.into_body()).await)
        }
    };
    // Truncated: two events, a clean end, no [DONE].
    let (st, rid, body) = stream("truncate").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body.1, None, "a clean end");
    let data = sse_data(&body.0);
    assert_eq!(data.len(), 2, "{data:?}");
    assert!(data.iter().all(|d| d != "[DONE]"));
    assert_eq!(s.usage_for(&rid).await["fault"], "cut");

    // Malformed: an event that is not JSON after the first one.
    let (_, _, body) = stream("malformed").await;
    let data = sse_data(&body.0);
    assert!(serde_json::from_str::<Value>(&data[0]).is_ok());
    assert!(serde_json::from_str::<Value>(&data[1]).is_err(), "{data:?}");
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "the stream goes on"
    );

    // Reset mid-stream: the body fails after two events.
    let (st, _, body) = stream("reset").await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.1.is_some(), "the connection is dropped");
    assert_eq!(sse_data(&body.0).len(), 2, "after two events");

    // Slow chunks: everything arrives, in order.
    let (_, rid, body) = stream("slow").await;
    assert_eq!(body.1, None);
    let data = sse_data(&body.0);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(s.usage_for(&rid).await["fault"], "slow");

    // A stream fault leaves a non-streamed request alone.
    let (st, h, _) = post(
        &s,
        "/v1/chat/completions",
        &[("x-chaos", "truncate")],
        &chat("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(s.usage_for(&id(&h)).await.get("fault").is_none());

    // Reset before the head: no answer at all.
    let req = http::Request::builder()
        .method(Method::POST)
        .uri(s.url("/v1/chat/completions"))
        .header("authorization", &auth)
        .header("x-chaos", "reset-head")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            chat("gpt-4o-mini", false).to_string(),
        )))
        .expect("request");
    assert!(
        client().request(req).await.is_err(),
        "connection closed without a response"
    );

    // Delay: the answer comes, late.
    let (st, h, _) = post(
        &s,
        "/v1/chat/completions",
        &[("x-chaos", "delay")],
        &chat("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(s.usage_for(&id(&h)).await["fault"], "late");

    assert_eq!(metric_line(&s, "cut", "truncate").await, Some(1.0));
    assert_eq!(metric_line(&s, "garbled", "malformed").await, Some(1.0));
    assert_eq!(metric_line(&s, "reset-mid", "reset").await, Some(1.0));
    assert_eq!(metric_line(&s, "reset-head", "reset").await, Some(1.0));
    assert_eq!(metric_line(&s, "slow", "slow_chunks").await, Some(1.0));
    assert_eq!(metric_line(&s, "late", "delay").await, Some(1.0));
}

#[tokio::test]
async fn upstream_faults_go_through_sluices_own_retries() {
    let (mock, s) = start().await;
    let (st, h, b) = post(
        &s,
        "/v1/chat/completions",
        &[("x-chaos", "up-503")],
        &chat("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h["x-sluice-attempts"], "3", "1 + max_retries");
    assert_eq!(json(&b)["error"]["type"], "server_error");
    let rec = s.usage_for(&id(&h)).await;
    assert_eq!(rec["fault"], "upstream-503");
    let log = rec["attempt_log"].as_array().expect("log");
    assert!(
        log.iter()
            .all(|a| a["status"] == 503 && a["outcome"] == "retryable"),
        "{rec}"
    );

    let (st, h, b) = post(
        &s,
        "/v1/chat/completions",
        &[("x-chaos", "up-reset")],
        &chat("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_GATEWAY);
    assert_eq!(h["x-sluice-attempts"], "3");
    assert_eq!(json(&b)["error"]["code"], "upstream_unreachable");
    assert_eq!(mock.request_count(), 0);
    assert_eq!(
        metric_line(&s, "upstream-503", "status_503").await,
        Some(3.0)
    );
}

async fn admin_post(s: &Sluice, body: &Value) -> (StatusCode, Value) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (st, _, b) = call(
        Method::POST,
        &s.admin_url("/admin/faults"),
        &[
            ("authorization", &auth),
            ("x-sluice-operator", "chaos-carol"),
        ],
        body.to_string(),
    )
    .await;
    (st, json(&b))
}

#[tokio::test]
async fn runtime_faults_need_an_expiry_expire_and_are_bounded() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", "")).await;
    let (st, v) = admin_post(&s, &json!({"name": "drill", "status": 529})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "no expiry: {v}");
    let (st, v) = admin_post(
        &s,
        &json!({"name": "drill", "status": 529, "expires_in": 86401}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = admin_post(
        &s,
        &json!({"name": "drill", "status": 418, "expires_in": 60}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["errors"][0].as_str().unwrap_or("").starts_with("status"),
        "{v}"
    );

    // On for requests from the anthropic shape, for 2 seconds.
    let (st, v) = admin_post(
        &s,
        &json!({"name": "drill", "status": 529, "model": "claude-*", "expires_in": 2}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["fault"]["by"], "chaos-carol");
    let anthropic = [("anthropic-version", "2023-06-01")];
    let (st, h, _) = post(&s, "/v1/messages", &anthropic, &messages(false)).await;
    assert_eq!(st.as_u16(), 529);
    assert_eq!(s.usage_for(&id(&h)).await["fault"], "drill");
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("gpt-4o-mini", false)).await;
    assert_eq!(st, StatusCode::OK, "another model");
    let (_, v) = admin_as(&s, Method::GET, "/admin/faults").await;
    assert_eq!(v["faults"][0]["fault"]["name"], "drill", "{v}");
    assert_eq!(metric_line(&s, "runtime", "status_529").await, Some(1.0));

    // Expired: gone from the list, and no longer applied.
    let mut listed = true;
    for _ in 0..100 {
        let (_, v) = admin_as(&s, Method::GET, "/admin/faults").await;
        listed = !v["faults"].as_array().is_some_and(Vec::is_empty);
        if !listed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!listed, "the fault expired");
    let (st, _, _) = post(&s, "/v1/messages", &anthropic, &messages(false)).await;
    assert_eq!(st, StatusCode::OK);

    // Switched off by hand; then the bound.
    let (st, _) = admin_post(
        &s,
        &json!({"name": "again", "status": 500, "expires_in": 600}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = admin_as(&s, Method::DELETE, "/admin/faults?name=again").await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = admin_as(&s, Method::DELETE, "/admin/faults?name=again").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("gpt-4o-mini", false)).await;
    assert_eq!(st, StatusCode::OK);
    for i in 0..64 {
        let (st, v) = admin_post(&s, &json!({"name": format!("f{i}"), "status": 500, "header": "x-never=1", "expires_in": 600})).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let (st, v) = admin_post(
        &s,
        &json!({"name": "f64", "status": 500, "expires_in": 600}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
}

#[tokio::test]
async fn sluice_check_names_every_bad_fault_field() {
    let mock = MockProvider::start().await.expect("mock");
    let cfg = config(
        &mock.url(),
        "",
        r#"
[[faults]]
name = "a"
status = 418

[[faults]]
name = "a"
truncate_after = 2
at = "upstream"

[[faults]]
name = "b"
status = 500
percent = 150.0
"#,
    );
    let dir = temp_dir();
    let path = dir.join("proxy.toml");
    std::fs::write(&path, cfg).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    for want in ["faults[0].status", "faults[1].at", "faults[2].percent"] {
        assert!(text.contains(want), "{want} in {text}");
    }
    let bad_key = config(
        &mock.url(),
        "",
        "[[faults]]\nname = \"x\"\nstatus = 500\nwhen = \"now\"\n",
    );
    std::fs::write(&path, bad_key).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    assert!(!out.status.success(), "unknown keys are refused");
}
