//! Issue 16, item 3: a batch read back is charged at the batch rate to the
//! creating key — once, however often it is read and across a restart —
//! and the charge moves its budgets even past their limit.

#[path = "support/harness.rs"]
mod harness;
#[path = "support/redis.rs"]
mod redis;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::MockProvider;

const A: &str = "sk-sluice-batcher";
const B: &str = "sk-sluice-other";

/// Prices (USD per 1M tokens; batch = half the list price by default):
/// mock-model $2 in / $8 out, claude-mock-sonnet $3 / $15.
///
/// OpenAI results (see the mock): mock-model 1000/500 and 2000/1000, so
/// 3000 × $2 + 1500 × $8 = $0.018 list, $0.009 at the batch rate; the
/// expired line, the 400 and mock-unpriced (100/50) cost nothing.
const OPENAI_COST: f64 = (3000.0 * 2.0 + 1500.0 * 8.0) / 1e6 / 2.0;
/// Anthropic: claude-mock-sonnet 3000 × $3 + 1500 × $15 = $0.0315 list.
const ANTHROPIC_COST: f64 = (3000.0 * 3.0 + 1500.0 * 15.0) / 1e6 / 2.0;

fn cfg(mock: &MockProvider) -> String {
    let extra = format!(
        r#"
[[keys]]
name = "batcher"
sha256 = "{}"
user = "ann"
team = "data"
passthrough = ["files", "batches"]

[[keys]]
name = "other"
sha256 = "{}"
user = "bob"
passthrough = ["files", "batches"]

[[pricing]]
model = "mock-model"
input = 2.0
output = 8.0

[[pricing]]
model = "claude-mock-sonnet"
input = 3.0
output = 15.0

# Limited to these models, so the batch APIs stay open to the key; one
# cent a day, which the Anthropic batch takes past its limit.
[[budgets]]
name = "batch-daily"
scope = ["key"]
window = "day"
limit_usd = 0.01
models = ["mock-model", "claude-mock-sonnet"]
"#,
        sha256_hex(A),
        sha256_hex(B)
    );
    config(&mock.url(), "", &extra).replace(
        "trust_identity_headers = true",
        "trust_identity_headers = false",
    )
}

/// A call with key `key` (OpenAI's header, or Anthropic's for
/// `/v1/messages…`); returns the status, the request id and the body.
async fn send_as(
    s: &Sluice,
    method: Method,
    path: &str,
    key: &str,
    body: Value,
) -> (StatusCode, String, bytes::Bytes) {
    let bearer = format!("Bearer {key}");
    let headers: Vec<(&str, &str)> = if path.starts_with("/v1/messages") {
        vec![
            ("x-api-key", key),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
        ]
    } else {
        vec![
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
        ]
    };
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (st, h, b) = call(method, &s.url(path), &headers, body).await;
    let id = h
        .get("x-sluice-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (st, id, b)
}

/// Creates an OpenAI batch with key A and reads it: its output file id.
async fn openai_batch(s: &Sluice) -> String {
    let (st, _, b) = send_as(s, Method::POST, "/v1/files", A, json!({"purpose": "batch"})).await;
    assert_eq!(st, StatusCode::OK);
    let file = json(&b)["id"].as_str().expect("file").to_owned();
    let create = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let (st, _, b) = send_as(s, Method::POST, "/v1/batches", A, create).await;
    assert_eq!(st, StatusCode::OK);
    let batch = json(&b)["id"].as_str().expect("batch").to_owned();
    let (st, _, b) = send_as(
        s,
        Method::GET,
        &format!("/v1/batches/{batch}"),
        A,
        Value::Null,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    json(&b)["output_file_id"]
        .as_str()
        .expect("output file")
        .to_owned()
}

/// Reads results back; returns the body and the read's usage record.
async fn read(s: &Sluice, path: &str) -> (bytes::Bytes, Value) {
    let (st, id, body) = send_as(s, Method::GET, path, A, Value::Null).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    (body, s.usage_for(&id).await)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Spent so far in the key's bucket of `batch-daily`.
async fn spent(s: &Sluice) -> f64 {
    let (st, v) = admin_as(s, Method::GET, "/admin/budgets").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["budgets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["bucket"] == "batch-daily|key=batcher")
        .map_or(0.0, |b| b["spent_usd"].as_f64().expect("spent"))
}

#[tokio::test]
async fn a_batch_read_back_is_charged_at_the_batch_rate_to_the_creating_key() {
    let mock = MockProvider::start().await.expect("mock");
    let config = cfg(&mock);
    let s = Sluice::start(&config).await;
    let out = openai_batch(&s).await;
    let path = format!("/v1/files/{out}/content");

    // The client gets the results untouched.
    let (body, rec) = read(&s, &path).await;
    assert_eq!(String::from_utf8_lossy(&body).lines().count(), 5);
    assert!(
        close(rec["cost_usd"].as_f64().expect("cost"), OPENAI_COST),
        "{rec}"
    );
    assert_eq!(rec["key"], "batcher");
    assert_eq!(
        (&rec["user"], &rec["team"]),
        (&json!("ann"), &json!("data"))
    );
    assert_eq!(
        (rec["input_tokens"].as_u64(), rec["output_tokens"].as_u64()),
        (Some(3100), Some(1550))
    );
    let batch = &rec["batch"];
    assert_eq!(batch["id"], out.as_str());
    assert_eq!(
        (
            &batch["lines"],
            &batch["charged"],
            &batch["not_charged"],
            &batch["skipped"]
        ),
        (&json!(5), &json!(3), &json!(2), &json!(0)),
        "{batch}"
    );
    let unpriced = batch["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["model"] == "mock-unpriced")
        .expect("unpriced")
        .clone();
    assert_eq!(
        (&unpriced["cost_usd"], &unpriced["priced"]),
        (&json!(0.0), &json!(false))
    );
    assert!(close(spent(&s).await, OPENAI_COST));

    // Read again: nothing new is charged.
    let (body2, rec) = read(&s, &path).await;
    assert_eq!(body2, body);
    assert_eq!(rec["cost_usd"], json!(0.0), "{rec}");
    assert_eq!(
        (&rec["batch"]["charged"], &rec["batch"]["already_charged"]),
        (&json!(0), &json!(3))
    );
    assert!(close(spent(&s).await, OPENAI_COST));

    // Another key cannot read it (ownership), so cannot be charged for it.
    let (st, _, _) = send_as(&s, Method::GET, &path, B, Value::Null).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // After a restart: the mark and the spend are both still there.
    let dir = s.stop_keeping_dir().await;
    let s = Sluice::start_in(dir, &config).await;
    let (_, rec) = read(&s, &path).await;
    assert_eq!(rec["cost_usd"], json!(0.0), "{rec}");
    assert_eq!(rec["batch"]["already_charged"], json!(3));
    assert!(close(spent(&s).await, OPENAI_COST));
    let charged: f64 = s
        .usage()
        .iter()
        .filter_map(|r| {
            r["batch"]["id"]
                .as_str()
                .map(|_| r["cost_usd"].as_f64().unwrap_or(0.0))
        })
        .sum();
    assert!(
        close(charged, OPENAI_COST),
        "charged once in all: {charged}"
    );
}

#[tokio::test]
async fn anthropic_results_are_charged_once_and_may_take_a_budget_past_its_limit() {
    let mock = MockProvider::start().await.expect("mock");
    let config = cfg(&mock);
    let s = Sluice::start(&config).await;
    let (st, _, b) = send_as(
        &s,
        Method::POST,
        "/v1/messages/batches",
        A,
        json!({"requests": []}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let id = json(&b)["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/messages/batches/{id}/results");
    // Another key's read is 404 and charges nothing.
    let (st, _, _) = send_as(&s, Method::GET, &path, B, Value::Null).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let (body, rec) = read(&s, &path).await;
    assert_eq!(String::from_utf8_lossy(&body).lines().count(), 6);
    assert!(
        close(rec["cost_usd"].as_f64().expect("cost"), ANTHROPIC_COST),
        "{rec}"
    );
    assert_eq!(rec["key"], "batcher");
    assert_eq!(
        (&rec["batch"]["charged"], &rec["batch"]["not_charged"]),
        (&json!(3), &json!(3)),
        "errored, expired and canceled are not charged"
    );
    // One cent a day: the batch is charged anyway (the provider billed it).
    let after = spent(&s).await;
    assert!(close(after, ANTHROPIC_COST), "{after}");
    assert!(after > 0.01);

    let (_, rec) = read(&s, &path).await;
    assert_eq!(rec["cost_usd"], json!(0.0), "{rec}");
    assert!(close(spent(&s).await, ANTHROPIC_COST));

    // Past the limit, the key's next request on a budgeted model is refused.
    let chat = json!({"model": "mock-model", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let (st, _, b) = send_as(&s, Method::POST, "/v1/chat/completions", A, chat).await;
    assert_eq!(
        st,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        String::from_utf8_lossy(&b)
    );

    let dir = s.kill9().await;
    let s = Sluice::start_in(dir, &config).await;
    let (_, rec) = read(&s, &path).await;
    assert_eq!(rec["cost_usd"], json!(0.0), "{rec}");
    assert!(close(spent(&s).await, ANTHROPIC_COST));
}

#[tokio::test]
async fn a_read_cut_halfway_charges_the_lines_it_got_and_the_next_read_the_rest() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&cfg(&mock)).await;
    let out = openai_batch(&s).await;
    let path = format!("/v1/files/{out}/content");
    let bearer = format!("Bearer {A}");
    // The provider sends half the file, then drops the connection.
    let resp = send(
        Method::GET,
        &s.url(&path),
        &[
            ("authorization", bearer.as_str()),
            ("x-mock-abort-after", "1"),
        ],
        "",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.headers()["x-sluice-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let (_, body) = resp.into_parts();
    assert!(
        http_body_util::BodyExt::collect(body).await.is_err(),
        "the body fails"
    );
    let first = s.usage_for(&id).await;
    let got = first["cost_usd"].as_f64().expect("cost");
    assert!(got > 0.0 && got < OPENAI_COST, "{first}");
    let charged = first["batch"]["charged"].as_u64().expect("charged");

    let (_, rec) = read(&s, &path).await;
    let rest = rec["cost_usd"].as_f64().expect("cost");
    assert!(close(got + rest, OPENAI_COST), "{got} + {rest}: {rec}");
    assert_eq!(rec["batch"]["already_charged"].as_u64(), Some(charged));
    assert!(close(spent(&s).await, OPENAI_COST));
}

#[tokio::test]
async fn in_a_fleet_the_charge_reaches_the_shared_budget() {
    let mock = MockProvider::start().await.expect("mock");
    let redis = redis::RedisServer::start();
    let config = cfg(&mock).replacen(
        "[state]\n",
        &format!(
            "[state]\nbackend = \"redis\"\nurl = \"{}\"\ntimeout = \"2s\"\n",
            redis.url()
        ),
        1,
    );
    let s = Sluice::start(&config).await;
    let out = openai_batch(&s).await;
    let path = format!("/v1/files/{out}/content");
    let (_, rec) = read(&s, &path).await;
    assert!(
        close(rec["cost_usd"].as_f64().expect("cost"), OPENAI_COST),
        "{rec}"
    );
    // Owed to Redis, paid at its next probe (every second).
    let mut shared = 0.0;
    for _ in 0..100 {
        shared = spent(&s).await;
        if shared > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let report = admin_as(&s, Method::GET, "/admin/budgets").await;
    assert!(
        close(shared, OPENAI_COST),
        "{shared} {report:?}\n{}",
        s.log()
    );
    let (_, rec) = read(&s, &path).await;
    assert_eq!(rec["cost_usd"], json!(0.0), "{rec}");
}
