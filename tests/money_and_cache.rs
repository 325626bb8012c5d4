//! Money and cache correctness under odd requests, races and faults: cache
//! tenants, keys over the body as sent, what is stored, followers of a slow
//! leader, and charges for requests whose client left early.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::{Fault, MockProvider};

const OTHER: &str = "sk-sluice-other";
const CAPPED: &str = "sk-sluice-capped";

fn keys() -> String {
    format!(
        r#"
[[keys]]
name = "other"
sha256 = "{}"
user = "olga"

[[keys]]
name = "capped"
sha256 = "{}"
user = "carl"
max_output_tokens = 5
"#,
        sha256_hex(OTHER),
        sha256_hex(CAPPED)
    )
}

async fn start(server_extra: &str, extra: &str) -> (MockProvider, Sluice) {
    let mock = MockProvider::start().await.expect("mock");
    // The test key's team is dropped: keys without a team.
    let cfg = config(&mock.url(), server_extra, &format!("{}{extra}", keys()))
        .replace("team = \"research\"\n", "");
    let s = Sluice::start(&cfg).await;
    (mock, s)
}

fn chat(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "temperature": 0,
        "messages": [{"role": "user", "content": content}]})
}

async fn as_key(
    s: &Sluice,
    key: &str,
    body: &Value,
    extra: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap) {
    let auth = format!("Bearer {key}");
    let mut h = vec![("authorization", auth.as_str())];
    h.extend_from_slice(extra);
    let (st, headers, _) = call(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &h,
        body.to_string(),
    )
    .await;
    (st, headers)
}

#[tokio::test]
async fn team_scope_never_pools_keys_without_a_team_or_client_keys() {
    let (mock, s) = start(
        "passthrough_keys = true",
        "[cache]\nmode = \"deterministic\"\nscope = \"team\"\n",
    )
    .await;
    let body = chat("tenant test");
    let (st, h) = as_key(&s, KEY, &body, &[]).await;
    assert_eq!(
        (st, &h["x-sluice-cache"]),
        (StatusCode::OK, &"miss".parse().expect("h"))
    );
    let (_, h) = as_key(&s, KEY, &body, &[]).await;
    assert_eq!(h["x-sluice-cache"], "hit");
    // Another key without a team, and client keys, are their own tenants.
    for key in [OTHER, "sk-client-one"] {
        let (st, h) = as_key(&s, key, &body, &[]).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(h["x-sluice-cache"], "miss", "{key}");
    }
    // A key the provider refuses never gets an answer from the cache.
    let (st, _) = as_key(&s, "bad-key", &body, &[]).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(mock.request_count(), 4);
}

#[tokio::test]
async fn the_key_is_the_body_as_sent() {
    let (mock, s) = start(
        "",
        "[cache]\nmode = \"deterministic\"\nscope = \"shared\"\n",
    )
    .await;
    let body = chat("cap test");
    // The capped key's answer is truncated at its cap: the uncapped key must
    // not get it, nor the capped key a longer one.
    let (st, h) = as_key(&s, CAPPED, &body, &[]).await;
    assert_eq!(
        (st, h["x-sluice-cache"].to_str().ok()),
        (StatusCode::OK, Some("miss"))
    );
    assert_eq!(
        mock.last_request().expect("r").json().expect("j")["max_tokens"],
        5
    );
    let (_, h) = as_key(&s, KEY, &body, &[]).await;
    assert_eq!(h["x-sluice-cache"], "miss");
    let (_, h) = as_key(&s, OTHER, &body, &[]).await;
    assert_eq!(
        h["x-sluice-cache"], "hit",
        "same body as sent, shared scope"
    );
    // Headers that change the answer are part of the key.
    let (_, h) = as_key(&s, OTHER, &body, &[("openai-beta", "assistants=v2")]).await;
    assert_eq!(h["x-sluice-cache"], "miss");
    assert_eq!(mock.request_count(), 3);
}

#[tokio::test]
async fn only_real_answers_are_stored_and_clients_cannot_lengthen_the_ttl() {
    let (mock, s) = start("", "[cache]\nmode = \"deterministic\"\nttl = \"1s\"\n").await;
    mock.push_fault(Fault::Status {
        status: 200,
        body: r#"{"error":{"message":"overloaded","type":"server_error"}}"#.into(),
        retry_after: None,
    });
    let body = chat("error test");
    let (st, _) = as_key(&s, KEY, &body, &[]).await;
    assert_eq!(st, StatusCode::OK);
    let (_, h) = as_key(&s, KEY, &body, &[]).await;
    assert_eq!(
        h["x-sluice-cache"], "miss",
        "a 200 error object is not an answer"
    );
    // Stored now, with the client asking for ten years: the operator's
    // one-second TTL still holds.
    let ttl = chat("ttl test");
    let (_, h) = as_key(&s, KEY, &ttl, &[("x-sluice-cache-ttl", "315360000")]).await;
    assert_eq!(h["x-sluice-cache"], "miss");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, h) = as_key(&s, KEY, &ttl, &[]).await;
    assert_eq!(
        h["x-sluice-cache"], "miss",
        "expired after the operator's TTL"
    );
}

#[tokio::test]
async fn a_follower_does_not_wait_on_a_leader_whose_client_does_not_read() {
    let (mock, s) = start(
        "",
        "[cache]\nmode = \"deterministic\"\nmax_entry_bytes = \"64MiB\"\nmax_bytes = \"256MiB\"\n\
         [timeouts]\nidle = \"1s\"\n",
    )
    .await;
    let mut body = chat("slow leader");
    body["stream"] = json!(true);
    let auth = format!("Bearer {KEY}");
    // ~24 MB of stream: more than the socket buffers hold, so the leader's
    // tap stops when its client stops reading.
    let big = [
        ("authorization", auth.as_str()),
        ("x-mock-words", "3000000"),
        ("x-mock-chunk-chars", "65536"),
    ];
    let leader = send(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &big,
        body.to_string(),
    )
    .await;
    assert_eq!(leader.status(), StatusCode::OK);
    // The follower: identical request, must be answered (by going upstream
    // itself once the leader stalls), not held until the leader's client
    // goes away. The bound below only guards against a hang.
    let follower = tokio::time::timeout(
        Duration::from_secs(60),
        call(
            Method::POST,
            &s.url("/v1/chat/completions"),
            &[("authorization", auth.as_str())],
            body.to_string(),
        ),
    )
    .await
    .expect("the follower was held by a stalled leader");
    assert_eq!(follower.0, StatusCode::OK);
    assert!(
        mock.request_count() >= 2,
        "the follower went upstream itself"
    );
    drop(leader);
}

#[tokio::test]
async fn a_client_gone_before_the_headers_is_still_charged() {
    let (_mock, s) = start(
        "",
        "[[pricing]]\nmodel = \"mock-model\"\ninput = 1.0\noutput = 2.0\n\
         [[budgets]]\nname = \"daily\"\nscope = [\"user\"]\nwindow = \"day\"\nlimit_usd = 10.0\n",
    )
    .await;
    let auth = format!("Bearer {KEY}");
    let h = [
        ("authorization", auth.as_str()),
        ("x-mock-first-byte-delay-ms", "1500"),
    ];
    let gone = tokio::time::timeout(
        Duration::from_millis(300),
        call(
            Method::POST,
            &s.url("/v1/chat/completions"),
            &h,
            chat("leaving early").to_string(),
        ),
    )
    .await;
    assert!(gone.is_err(), "the client left before the answer");
    let recs = s.wait_usage(1).await;
    let rec = &recs[0];
    assert_eq!(rec["status"], 499, "{rec}");
    assert_eq!(rec["end"], "client_gone", "{rec}");
    assert!(rec["input_tokens"].as_u64().is_some_and(|n| n > 0), "{rec}");
    assert!(rec["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "{rec}");
}

#[tokio::test]
async fn streams_cut_at_the_drain_timeout_are_recorded_and_charged() {
    let (_mock, s) = start(
        "drain_timeout = \"300ms\"",
        "[[pricing]]\nmodel = \"mock-model\"\ninput = 1.0\noutput = 2.0\n\
         [[budgets]]\nname = \"daily\"\nscope = [\"user\"]\nwindow = \"day\"\nlimit_usd = 10.0\n",
    )
    .await;
    let mut body = chat("a long answer");
    body["stream"] = json!(true);
    let auth = format!("Bearer {KEY}");
    // 200 words, 100 ms apart: still streaming when the drain time is up.
    let resp = send(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &[
            ("authorization", auth.as_str()),
            ("x-mock-words", "200"),
            ("x-mock-delay-ms", "100"),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut b = resp.into_body();
    for _ in 0..3 {
        http_body_util::BodyExt::frame(&mut b)
            .await
            .expect("frame")
            .expect("ok");
    }
    let (status, usage) = s.stop().await;
    assert!(status.success(), "{status}");
    let recs: Vec<Value> = usage
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(recs.len(), 1, "{usage}");
    assert_eq!(recs[0]["end"], "client_gone", "{}", recs[0]);
    assert!(
        recs[0]["cost_usd"].as_f64().is_some_and(|c| c > 0.0),
        "{}",
        recs[0]
    );
    // Under a budget the usage line is written only once its charge is in
    // the journal: the record is the proof the charge was persisted.
    drop(b);
}
