//! The response cache through the real binary.

#[path = "support/harness.rs"]
mod harness;

use std::sync::Arc;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::MockProvider;

const CACHE: &str = "[cache]\nmode = \"deterministic\"\n[[pricing]]\nmodel = \"mock-model\"\ninput = 1.0\noutput = 2.0\n";

async fn start(extra: &str) -> (MockProvider, Sluice) {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", &format!("{CACHE}{extra}"))).await;
    (mock, s)
}

fn chat(content: &str) -> Value {
    json!({"model": "mock-model", "temperature": 0, "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn identical_requests_hit_and_cost_nothing() {
    let (mock, s) = start("").await;
    let (st, h1, b1) = post(&s, "/v1/chat/completions", &[], &chat("cache me")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h1["x-sluice-cache"], "miss");
    // Key order, number format and `user` do not change the key.
    let same = json!({"messages": [{"content": "cache me", "role": "user"}], "temperature": 0.0, "model": "mock-model", "user": "someone"});
    let (st, h2, b2) = post(&s, "/v1/chat/completions", &[], &same).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h2["x-sluice-cache"], "hit");
    assert_eq!(b1, b2, "the cached answer is the original answer");
    assert_eq!(
        h2["x-sluice-cost-usd"], "0.000000000",
        "a hit costs nothing"
    );
    assert_ne!(h1["x-sluice-cost-usd"], "0.000000000");
    assert_eq!(mock.request_count(), 1);
    let rec = s
        .usage_for(h2["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["cache"], "hit");
    assert_eq!(rec["cost_usd"], 0.0);
    assert!(rec["cost_saved_usd"].as_f64().unwrap_or(0.0) > 0.0);
    assert_eq!(rec["input_tokens"], json(&b1)["usage"]["prompt_tokens"]);

    // Not deterministic, or told not to: bypass.
    let mut warm = chat("cache me");
    warm["temperature"] = json!(0.7);
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &warm).await;
    assert_eq!(h["x-sluice-cache"], "bypass");
    let (_, h, _) = post(
        &s,
        "/v1/chat/completions",
        &[("cache-control", "no-store")],
        &chat("cache me"),
    )
    .await;
    assert_eq!(h["x-sluice-cache"], "bypass");
    let (_, h, _) = post(
        &s,
        "/v1/chat/completions",
        &[("cache-control", "no-cache")],
        &chat("cache me"),
    )
    .await;
    assert_eq!(h["x-sluice-cache"], "miss", "no-cache refreshes");
    assert_eq!(mock.request_count(), 4);

    // Admin: stats and purge.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (_, b) = get(&s.admin_url("/admin/cache"), &[("authorization", &auth)])
        .await
        .expect("stats");
    assert!(json(&b)["hits"].as_u64().unwrap_or(0) >= 1);
    let (st, _, b) = call(
        Method::POST,
        &s.admin_url("/admin/cache/purge?model=mock-model"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(json(&b)["purged"].as_u64().unwrap_or(0) >= 1);
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &chat("cache me")).await;
    assert_eq!(h["x-sluice-cache"], "miss");
}

#[tokio::test]
async fn tenants_never_share_answers() {
    let extra = format!(
        "[[keys]]\nname = \"other\"\nsha256 = \"{}\"\nuser = \"bob\"\n",
        sha256_hex("sk-other")
    );
    let (mock, s) = start(&extra).await;
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &chat("secret plan")).await;
    assert_eq!(h["x-sluice-cache"], "miss");
    let (_, h, _) = call(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &[("authorization", "Bearer sk-other")],
        chat("secret plan").to_string(),
    )
    .await;
    assert_eq!(
        h["x-sluice-cache"], "miss",
        "another key's answer is not served"
    );
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn a_streamed_miss_is_replayed_as_sse_and_as_json() {
    let (mock, s) = start("").await;
    let mut streamed = chat("stream then replay");
    streamed["stream"] = json!(true);
    let (_, h, live) = post(
        &s,
        "/v1/chat/completions",
        &[("x-mock-fragment", "1")],
        &streamed,
    )
    .await;
    assert_eq!(h["x-sluice-cache"], "miss");
    let (_, h, replay) = post(&s, "/v1/chat/completions", &[], &streamed).await;
    assert_eq!(h["x-sluice-cache"], "hit");
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(chat_stream_text(&replay), chat_stream_text(&live));
    let text = String::from_utf8_lossy(&replay);
    assert!(
        text.ends_with("data: [DONE]\n\n") && !text.contains("usage"),
        "{text}"
    );

    streamed["stream_options"] = json!({"include_usage": true});
    let (_, h, with_usage) = post(&s, "/v1/chat/completions", &[], &streamed).await;
    assert_eq!(h["x-sluice-cache"], "hit");
    let data = sse_data(&with_usage);
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).expect("usage chunk");
    assert_eq!(usage["usage"]["completion_tokens"], 4);

    let (_, h, b) = post(&s, "/v1/chat/completions", &[], &chat("stream then replay")).await;
    assert_eq!(h["x-sluice-cache"], "hit");
    assert_eq!(
        json(&b)["choices"][0]["message"]["content"],
        "echo: stream then replay"
    );
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn anthropic_and_responses_are_cached_too() {
    let (mock, s) = start("").await;
    let msg = json!({"model": "claude-x", "max_tokens": 50, "temperature": 0, "stream": true, "messages": [{"role": "user", "content": "hola"}]});
    let h = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    let (_, h1, _) = call(Method::POST, &s.url("/v1/messages"), &h, msg.to_string()).await;
    assert_eq!(h1["x-sluice-cache"], "miss");
    let mut plain = msg.clone();
    plain["stream"] = json!(false);
    let (_, h2, b) = call(Method::POST, &s.url("/v1/messages"), &h, plain.to_string()).await;
    assert_eq!(h2["x-sluice-cache"], "hit");
    assert_eq!(json(&b)["content"][0]["text"], "echo: hola");
    let (_, h3, sse) = call(Method::POST, &s.url("/v1/messages"), &h, msg.to_string()).await;
    assert_eq!(h3["x-sluice-cache"], "hit");
    let text = String::from_utf8_lossy(&sse);
    assert!(
        text.contains("event: message_start") && text.contains("event: message_stop"),
        "{text}"
    );

    let r = json!({"model": "m", "temperature": 0, "input": "tell me", "stream": true});
    let (_, h1, _) = post(&s, "/v1/responses", &[], &r).await;
    assert_eq!(h1["x-sluice-cache"], "miss");
    let (_, h2, b) = post(
        &s,
        "/v1/responses",
        &[],
        &json!({"model": "m", "temperature": 0, "input": "tell me"}),
    )
    .await;
    assert_eq!(h2["x-sluice-cache"], "hit");
    assert_eq!(json(&b)["output"][0]["content"][0]["text"], "echo: tell me");
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn an_aborted_stream_is_not_cached() {
    let (mock, s) = start("").await;
    let mut streamed = chat("a b c d e f g");
    streamed["stream"] = json!(true);
    let (_, _, b) = post(
        &s,
        "/v1/chat/completions",
        &[("x-mock-abort-after", "3")],
        &streamed,
    )
    .await;
    assert!(String::from_utf8_lossy(&b).contains("upstream_stream_error"));
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &streamed).await;
    assert_eq!(h["x-sluice-cache"], "miss");
    let (_, h, _) = post(
        &s,
        "/v1/chat/completions",
        &[("x-mock-status", "500")],
        &chat("an error"),
    )
    .await;
    assert_eq!(h["x-sluice-cache"], "miss");
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("an error")).await;
    assert_eq!(
        (st, h["x-sluice-cache"].to_str().expect("h")),
        (StatusCode::OK, "miss"),
        "errors are not cached"
    );
    assert!(mock.request_count() >= 4);
}

#[tokio::test]
async fn twenty_identical_concurrent_requests_go_upstream_once() {
    let (mock, s) = start("").await;
    let s = Arc::new(s);
    let mut streamed = chat("single flight");
    streamed["stream"] = json!(true);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (s, mut body) = (s.clone(), streamed.clone());
            if i % 2 == 1 {
                body["stream"] = json!(false);
            }
            tokio::spawn(async move {
                (
                    i,
                    post(
                        &s,
                        "/v1/chat/completions",
                        &[("x-mock-delay-ms", "30")],
                        &body,
                    )
                    .await,
                )
            })
        })
        .collect();
    for t in tasks {
        let (i, (st, _, b)) = t.await.expect("task");
        assert_eq!(st, StatusCode::OK);
        if i % 2 == 0 {
            assert_eq!(chat_stream_text(&b), "echo: single flight");
        } else {
            assert_eq!(
                json(&b)["choices"][0]["message"]["content"],
                "echo: single flight"
            );
        }
    }
    assert_eq!(
        mock.request_count(),
        1,
        "one upstream request for 20 identical ones"
    );
}

#[tokio::test]
async fn a_hit_is_free_under_a_budget() {
    let (_mock, s) =
        start("[[budgets]]\nname = \"b\"\nscope = [\"user\"]\nwindow = \"day\"\nlimit_usd = 1.0\n")
            .await;
    let mut body = chat("budgeted");
    body["max_tokens"] = json!(10);
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &body).await;
    assert_eq!(h["x-sluice-cache"], "miss");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    s.wait_usage(1).await;
    let spent = |b: &bytes::Bytes| json(b)["budgets"][0]["spent_usd"].as_f64().expect("spent");
    let (_, before) = get(&s.admin_url("/admin/budgets"), &[("authorization", &auth)])
        .await
        .expect("budgets");
    for _ in 0..3 {
        let (_, h, _) = post(&s, "/v1/chat/completions", &[], &body).await;
        assert_eq!(h["x-sluice-cache"], "hit");
    }
    s.wait_usage(4).await;
    let (_, after) = get(&s.admin_url("/admin/budgets"), &[("authorization", &auth)])
        .await
        .expect("budgets");
    assert!(spent(&before) > 0.0);
    assert_eq!(spent(&before), spent(&after), "hits did not spend");
}

#[tokio::test]
async fn anthropic_breakpoints_are_added_counted_and_priced() {
    let mock = MockProvider::start().await.expect("mock");
    let extra = "[cache]\nmode = \"deterministic\"\nanthropic_breakpoints = true\nbreakpoint_min_tokens = 50\n\
                 [[pricing]]\nmodel = \"claude-x\"\ninput = 3.0\ncached_input = 0.3\ncache_write = 3.75\noutput = 15.0\n";
    let s = Sluice::start(&config(&mock.url(), "", extra)).await;
    let system = "You are a careful assistant. ".repeat(40);
    let body = json!({"model": "claude-x", "max_tokens": 20, "system": system, "messages": [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]});
    let h = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    let (st, h1, _) = call(Method::POST, &s.url("/v1/messages"), &h, body.to_string()).await;
    assert_eq!(st, StatusCode::OK);
    let sent = mock.last_request().expect("req").json().expect("json");
    assert_eq!(sent["system"][0]["cache_control"]["type"], "ephemeral");
    assert_eq!(sent["system"][0]["text"], system.as_str());
    let (_, h2, _) = call(Method::POST, &s.url("/v1/messages"), &h, body.to_string()).await;
    let first = s
        .usage_for(h1["x-sluice-request-id"].to_str().expect("id"))
        .await;
    let second = s
        .usage_for(h2["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert!(
        first["prompt_cache_breakpoints"].as_u64().unwrap_or(0) >= 1,
        "{first}"
    );
    assert!(
        first["cache_write_tokens"].as_u64().unwrap_or(0) > 0,
        "{first}"
    );
    assert!(
        second["cached_input_tokens"].as_u64().unwrap_or(0) > 0,
        "{second}"
    );
    assert_eq!(
        first["input_tokens"], second["input_tokens"],
        "the same prompt, counted whole both times"
    );
    assert!(
        second["cost_usd"].as_f64() < first["cost_usd"].as_f64(),
        "cache reads are cheaper"
    );

    // A client that places its own breakpoints is left alone.
    let own = json!({"model": "claude-x", "max_tokens": 20, "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                     "messages": [{"role": "user", "content": "q"}]});
    call(Method::POST, &s.url("/v1/messages"), &h, own.to_string()).await;
    assert_eq!(
        mock.last_request().expect("req").body,
        own.to_string().as_bytes()
    );
}

#[tokio::test]
async fn hour_long_cache_writes_are_recorded_and_priced_at_their_rate() {
    let mock = MockProvider::start().await.expect("mock");
    let extra =
        "[[pricing]]\nmodel = \"claude-x\"\ninput = 3.0\ncached_input = 0.3\ncache_write = 3.75\n\
                 cache_write_1h = 6.0\noutput = 15.0\n";
    let s = Sluice::start(&config(&mock.url(), "", extra)).await;
    let system = "You are a careful assistant. ".repeat(40);
    let body = json!({"model": "claude-x", "max_tokens": 20,
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [{"role": "user", "content": "q"}]});
    let h = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    let (st, h1, _) = call(Method::POST, &s.url("/v1/messages"), &h, body.to_string()).await;
    assert_eq!(st, StatusCode::OK);
    let rec = s
        .usage_for(h1["x-sluice-request-id"].to_str().expect("id"))
        .await;
    let n = |f: &str| rec[f].as_u64().unwrap_or(0);
    assert!(n("cache_write_tokens") > 0, "{rec}");
    assert_eq!(n("cache_write_1h_tokens"), n("cache_write_tokens"), "{rec}");
    // Nano-dollars per token: 3,000 fresh input, 6,000 per hour-long write, 15,000 output.
    let fresh = n("input_tokens") - n("cache_write_tokens");
    let nanos = fresh * 3_000 + n("cache_write_tokens") * 6_000 + n("output_tokens") * 15_000;
    assert_eq!(rec["cost_usd"].as_f64(), Some(nanos as f64 / 1e9), "{rec}");
}
