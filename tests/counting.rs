//! When the input is counted exactly: only when the cheap upper bound cannot
//! settle a decision (issue 17). `sluice_input_counts_total{reason}` counts
//! the exact counts made.

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use http::StatusCode;
use serde_json::{json, Value};
use sluice_mock::MockProvider;

/// $1 per 1M input tokens, $2 per 1M output tokens.
const PRICING: &str = "[[pricing]]\nmodel = \"mock-model\"\ninput = 1.0\noutput = 2.0\n";

async fn start(extra: &str) -> (MockProvider, Sluice) {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", &format!("{PRICING}{extra}"))).await;
    (mock, s)
}

/// A prompt of `words` short words: about `words` tokens, five bytes each,
/// so its byte bound is about five times its count.
fn chat(words: usize) -> Value {
    json!({"model": "mock-model", "max_tokens": 10,
           "messages": [{"role": "user", "content": "word ".repeat(words)}]})
}

async fn counts(s: &Sluice, reason: &str) -> f64 {
    let (_, b) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
    let name = format!("sluice_input_counts_total{{reason=\"{reason}\"}}");
    String::from_utf8_lossy(&b)
        .lines()
        .find(|l| l.starts_with(&name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_budget_with_room_does_not_count_and_a_tight_one_counts_before_refusing() {
    // Bound ≈ 10,000 tokens ($0.010 of input), count ≈ 2,000 ($0.002).
    let (mock, s) = start(
        "[[budgets]]\nname = \"daily\"\nscope = [\"user\"]\nwindow = \"day\"\nlimit_usd = 0.004\n",
    )
    .await;
    // Short prompts: the bound settles the reservation, nothing is counted.
    for _ in 0..3 {
        let (st, _, b) = post(&s, "/v1/chat/completions", &[], &chat(5)).await;
        assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    }
    assert_eq!(counts(&s, "budget").await, 0.0);
    // The bound of this prompt is over what is left, its count is not: it
    // is counted, then admitted, and charged what the provider reports.
    let (st, h, b) = post(&s, "/v1/chat/completions", &[], &chat(2_000)).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(counts(&s, "budget").await, 1.0);
    let id = h["x-sluice-request-id"].to_str().expect("id").to_owned();
    let rec = s.usage_for(&id).await;
    let u = &json(&b)["usage"];
    let expected = u["prompt_tokens"].as_f64().expect("p") * 1e-6
        + u["completion_tokens"].as_f64().expect("c") * 2e-6;
    assert!((rec["cost_usd"].as_f64().expect("cost") - expected).abs() < 1e-12);
    // Now the count itself does not fit what is left: refused, not sent.
    let before = mock.request_count();
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &chat(2_000)).await;
    assert_eq!(
        st,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert_eq!(json(&b)["error"]["type"], "insufficient_quota");
    assert_eq!(mock.request_count(), before);
    assert_eq!(counts(&s, "budget").await, 2.0);
}

#[tokio::test]
async fn a_tokens_per_minute_limit_counts_only_when_the_bound_would_refuse() {
    let (mock, s) = start("[[rate_limits]]\nscope = [\"user\"]\ntokens_per_minute = 4000\n").await;
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat(5)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(counts(&s, "rate_limit").await, 0.0);
    // Bound ≈ 10,000 > 4,000 per minute; count ≈ 2,000 fits.
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &chat(2_000)).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(counts(&s, "rate_limit").await, 1.0);
    // Settled to the provider's usage, the window now holds ≈ 2,000: one
    // more such prompt fits, the third does not (refused unsent).
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat(1_000)).await;
    assert_eq!(st, StatusCode::OK);
    let before = mock.request_count();
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat(2_000)).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(mock.request_count(), before);
}

#[tokio::test]
async fn an_input_limit_the_bound_fits_is_not_counted() {
    let (mock, s) = start("[limits]\nmax_input_tokens = 3000\n").await;
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat(100)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(counts(&s, "input_limit").await, 0.0);
    // Bound over the limit, count under it: counted, sent.
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat(2_000)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(counts(&s, "input_limit").await, 1.0);
    // Count over the limit: refused with the provider's 400, unsent.
    let before = mock.request_count();
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &chat(4_000)).await;
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert_eq!(mock.request_count(), before);
}
