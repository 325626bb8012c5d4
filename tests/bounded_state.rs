//! Client-chosen strings never become unbounded state: thousands of invented
//! identities and model names through the real binary leave the metrics,
//! the deployment registry, rate-limit buckets, budget buckets and spend
//! attribution bounded, and error messages cut what they repeat.

#[path = "support/harness.rs"]
mod harness;

use std::sync::Arc;

use harness::*;
use http::{Method, StatusCode};
use serde_json::json;
use sluice_mock::MockProvider;

const MAX_BUCKETS: usize = 500;

fn config(mock: &MockProvider) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
trust_identity_headers = true
passthrough_keys = true
[admin]
listen = "127.0.0.1:0"
token_env = "SLUICE_TEST_ADMIN_TOKEN"
[log]
usage = "USAGE_PATH"
[state]
path = "STATE_PATH"
max_buckets = {MAX_BUCKETS}
[[providers]]
name = "p0"
kind = "openai-compatible"
client_keys = true
base_url = "{}/v1"
api_key_env = "SLUICE_TEST_OPENAI_KEY"
[[models]]
name = "*"
provider = "p0"
[[keys]]
sha256 = "{}"
[[rate_limits]]
name = "per-user"
scope = ["user", "model"]
requests_per_minute = 1000000
[[budgets]]
name = "per-user"
scope = ["user"]
window = "day"
limit_usd = 100.0
models = ["gpt-4o-mini"]
"#,
        mock.url(),
        sha256_hex(KEY)
    )
}

async fn admin(s: &Sluice, path: &str) -> serde_json::Value {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (st, b) = get(&s.admin_url(path), &[("authorization", &auth)])
        .await
        .expect("admin");
    assert_eq!(st, StatusCode::OK, "{path}");
    json(&b)
}

struct Sizes {
    metric_series: usize,
    deployments: usize,
    rate_buckets: usize,
    budget_buckets: usize,
    spenders: usize,
}

async fn sizes(s: &Sluice) -> (Sizes, String) {
    let (_, m) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
    let text = String::from_utf8_lossy(&m).into_owned();
    let len = |v: serde_json::Value, field: &str| v[field].as_array().expect(field).len();
    let sizes = Sizes {
        metric_series: text.lines().filter(|l| !l.starts_with('#')).count(),
        deployments: len(admin(s, "/admin/deployments").await, "deployments"),
        rate_buckets: len(admin(s, "/admin/limits").await, "buckets"),
        budget_buckets: len(admin(s, "/admin/budgets").await, "budgets"),
        spenders: len(admin(s, "/admin/spend?by=user&top=1000000").await, "top"),
    };
    (sizes, text)
}

/// Sends `n` requests, `i` from `from`, 16 at a time: each with its own
/// user, half of them for an invented model name (with CR/NUL bytes), some
/// with a bad key.
async fn flood(s: &Arc<Sluice>, from: usize, n: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(from));
    for _ in 0..16 {
        let (s, next) = (s.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= from + n {
                    return;
                }
                let user = format!("user-{i}");
                let model = match i % 4 {
                    0 | 2 => "gpt-4o-mini".to_owned(),
                    1 => format!("invented-{i}-modèle"),
                    // Control bytes are refused at the door (400).
                    _ => format!("invented-{i}\r\n\u{0}x"),
                };
                let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
                let key = if i % 10 == 9 {
                    "Bearer sk-sluice-wrong".to_owned()
                } else {
                    format!("Bearer {KEY}")
                };
                let (st, _, b) = call(
                    Method::POST,
                    &s.url("/v1/chat/completions"),
                    &[
                        ("authorization", &key),
                        ("content-type", "application/json"),
                        ("x-sluice-user", &user),
                        ("x-sluice-feature", &format!("feature-{i}")),
                    ],
                    body.to_string(),
                )
                .await;
                assert!(
                    st == StatusCode::OK
                        || st == StatusCode::UNAUTHORIZED
                        || (st == StatusCode::BAD_REQUEST && i % 4 == 3),
                    "{st}: {b:?}"
                );
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("client task");
    }
}

#[tokio::test]
async fn twenty_thousand_invented_identities_and_models_leave_state_flat() {
    let mock = MockProvider::start().await.expect("mock");
    mock.set_recording(false);
    let s = Arc::new(Sluice::start(&config(&mock)).await);
    flood(&s, 0, 2_000).await;
    let (early, _) = sizes(&s).await;
    flood(&s, 2_000, 18_000).await;
    let (late, text) = sizes(&s).await;

    // The same metric series after 2,000 and 20,000 distinct names.
    assert_eq!(
        early.metric_series, late.metric_series,
        "new series appeared:\n{text}"
    );
    assert!(
        !text.contains("invented"),
        "a client's model name became a label"
    );
    assert!(!text.contains("user-"), "a user id became a label");
    assert!(
        text.bytes()
            .all(|b| b == b'\n' || (0x20..0x7f).contains(&b)),
        "non-printable bytes in /metrics"
    );
    assert!(
        text.contains("model=\"*\""),
        "glob-matched names are labelled by the rule pattern"
    );

    // One deployment (provider + rule), not one per invented name.
    assert_eq!((early.deployments, late.deployments), (1, 1));
    // Per-identity maps stop at the cap (plus one shared overflow entry).
    for (what, n) in [
        ("rate buckets", late.rate_buckets),
        ("budget buckets", late.budget_buckets),
        ("spenders", late.spenders),
    ] {
        assert!(n <= MAX_BUCKETS + 1, "{n} {what}");
    }
    assert!(text.contains("sluice_state_entries{map=\"rate_buckets\"}"));
    let overflow = admin(&s, "/admin/limits?filter=~overflow").await;
    assert_eq!(overflow["buckets"].as_array().expect("buckets").len(), 1);
}

#[tokio::test]
async fn error_messages_cut_what_a_client_sent() {
    let mock = MockProvider::start().await.expect("mock");
    let mut c = config(&mock);
    c = c.replace("limit_usd = 100.0", "limit_usd = 0.000000001");
    let s = Sluice::start(&c).await;
    let user = "u".repeat(5_000);
    let (st, _, b) = post(
        &s,
        "/v1/chat/completions",
        &[("x-sluice-user", &user)],
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    let message = json(&b)["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(
        message.contains(&format!("{}…", "u".repeat(200))),
        "{message}"
    );
    assert!(message.len() < 800, "{} bytes echoed", message.len());
}
