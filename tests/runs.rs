//! Agent runs (`x-sluice-run`): per-run budgets and loop detection, through
//! the real binary.

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use http::StatusCode;
use serde_json::{json, Value};
use sluice_mock::MockProvider;

const PRICING: &str = "[[pricing]]\nmodel = \"mock-model\"\ninput = 1.0\noutput = 2.0\n";

fn chat(text: &str) -> Value {
    json!({"model": "mock-model", "max_tokens": 10,
           "messages": [{"role": "user", "content": text}]})
}

async fn start(server: &str, extra: &str) -> (MockProvider, Sluice) {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), server, &format!("{PRICING}{extra}"))).await;
    (mock, s)
}

fn upstream_calls(mock: &MockProvider) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .count()
}

#[tokio::test]
async fn a_run_repeating_one_request_is_stopped_at_the_configured_count() {
    let loops = "[loop_detection]\nscope = [\"run\"]\nmax_repeats = 3\nwithin = \"10m\"\n";
    let (mock, s) = start("", loops).await;
    let run = [("x-sluice-run", "run-1")];
    let mut codes = Vec::new();
    for _ in 0..10 {
        let (st, h, b) = post(
            &s,
            "/v1/chat/completions",
            &run,
            &chat("call the same tool"),
        )
        .await;
        if st != StatusCode::OK {
            assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(json(&b)["error"]["code"], "loop_detected");
            assert_eq!(h["x-should-retry"], "false");
        }
        codes.push(st.as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 429, 429, 429, 429, 429, 429, 429]);
    assert_eq!(
        upstream_calls(&mock),
        3,
        "refused loops never reach the provider"
    );
    // The same run asking something else, and another run asking the same, go through.
    let (st, _, _) = post(&s, "/v1/chat/completions", &run, &chat("something new")).await;
    assert_eq!(st, StatusCode::OK);
    let other = [("x-sluice-run", "run-2")];
    let (st, _, _) = post(
        &s,
        "/v1/chat/completions",
        &other,
        &chat("call the same tool"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let records = s.wait_usage(12).await;
    let flagged: Vec<&Value> = records
        .iter()
        .filter(|r| r["loop_detected"] == true)
        .collect();
    assert_eq!(flagged.len(), 7);
    assert!(flagged
        .iter()
        .all(|r| r["run"] == "run-1" && r["error"] == "loop_detected"));
    let (_, m) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
    assert!(
        String::from_utf8_lossy(&m).contains("sluice_loops_detected_total{action=\"reject\"} 7")
    );
}

#[tokio::test]
async fn an_alerting_detector_flags_loops_and_serves_them() {
    let loops = "[loop_detection]\nscope = [\"key\"]\nmax_repeats = 2\naction = \"alert\"\n";
    let (mock, s) = start("", loops).await;
    for _ in 0..4 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("again")).await;
        assert_eq!(st, StatusCode::OK);
    }
    assert_eq!(upstream_calls(&mock), 4);
    let records = s.wait_usage(4).await;
    let flags: Vec<bool> = records.iter().map(|r| r["loop_detected"] == true).collect();
    assert_eq!(flags, [false, false, true, true]);
}

#[tokio::test]
async fn a_run_budget_stops_a_runaway_run_while_the_users_other_runs_go_on() {
    // Each request's worst case is ~$0.00003; a run may spend $0.0001.
    let budget = "[[budgets]]\nname = \"per-run\"\nscope = [\"run\"]\nwindow = \"day\"\nlimit_usd = 0.0001\n";
    let (_mock, s) = start("", budget).await;
    let run = [("x-sluice-run", "runaway")];
    let mut ok = 0;
    let mut refusal = Value::Null;
    for i in 0..20 {
        let (st, h, b) = post(
            &s,
            "/v1/chat/completions",
            &run,
            &chat(&format!("step {i}")),
        )
        .await;
        if st == StatusCode::OK {
            ok += 1;
        } else {
            assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(h["x-should-retry"], "false");
            refusal = json(&b);
            break;
        }
    }
    assert!((2..20).contains(&ok), "{ok}");
    assert_eq!(refusal["error"]["code"], "run_budget_exceeded", "{refusal}");
    // The same user (the test key's alice), another run.
    let (st, _, _) = post(
        &s,
        "/v1/chat/completions",
        &[("x-sluice-run", "next-task")],
        &chat("fresh start"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn run_ids_are_bounded_and_can_come_from_traceparent() {
    let loops = "[loop_detection]\nmax_repeats = 1\n";
    let (_mock, s) = start("run_from_traceparent = true", loops).await;
    let long = "r".repeat(129);
    let (st, _, b) = post(
        &s,
        "/v1/chat/completions",
        &[("x-sluice-run", &long)],
        &chat("x"),
    )
    .await;
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    // Two requests of one trace are one run.
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (st, _, _) = post(
        &s,
        "/v1/chat/completions",
        &[("traceparent", tp)],
        &chat("y"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let tp2 = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01";
    let (st, _, b) = post(
        &s,
        "/v1/chat/completions",
        &[("traceparent", tp2)],
        &chat("y"),
    )
    .await;
    assert_eq!(
        st,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        String::from_utf8_lossy(&b)
    );
    let records = s.wait_usage(3).await;
    assert_eq!(records[2]["run"], "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[tokio::test]
async fn a_run_past_its_request_or_token_totals_is_refused_and_others_go_on() {
    let (mock, s) = start("", "[runs]\nmax_requests = 3\nidle_expiry = \"1h\"\n").await;
    let run = [("x-sluice-run", "run-a")];
    for i in 0..3 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &run, &chat(&format!("q{i}"))).await;
        assert_eq!(st, StatusCode::OK);
    }
    let before = upstream_calls(&mock);
    let (st, h, b) = post(&s, "/v1/chat/completions", &run, &chat("one more")).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        json(&b)["error"]["code"],
        "run_budget_exceeded",
        "{}",
        json(&b)
    );
    assert_eq!(h["x-should-retry"], "false");
    assert_eq!(upstream_calls(&mock), before, "refused before the provider");
    // Another run, and a request with no run, are untouched.
    let (st, _, _) = post(
        &s,
        "/v1/chat/completions",
        &[("x-sluice-run", "run-b")],
        &chat("x"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("x")).await;
    assert_eq!(st, StatusCode::OK);

    // Tokens: the first answer's tokens spend a 5-token total.
    let (_mock, s) = start("", "[runs]\nmax_tokens = 5\n").await;
    let run = [("x-sluice-run", "run-t")];
    let (st, _, _) = post(&s, "/v1/chat/completions", &run, &chat("hello there")).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, b) = post(&s, "/v1/chat/completions", &run, &chat("again")).await;
    assert_eq!(
        st,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert!(json(&b)["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("5 tokens"));
}
