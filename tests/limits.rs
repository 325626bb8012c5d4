//! Token limits and rate limits through the real binary.

#[path = "support/harness.rs"]
mod harness;

use std::sync::Arc;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::MockProvider;

fn chat(content: &str) -> Value {
    json!({"model": "mock-model", "messages": [{"role": "user", "content": content}]})
}

async fn start(extra: &str) -> (MockProvider, Sluice) {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", extra)).await;
    (mock, s)
}

#[tokio::test]
async fn over_long_input_is_refused_before_the_provider() {
    let (mock, s) = start("[limits]\nmax_input_tokens = 50\n").await;
    let long = "lorem ipsum dolor sit amet ".repeat(20);
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &chat(&long)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let v = json(&b);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains("limit of 50 input tokens") && msg.contains("The input is"),
        "{msg}"
    );

    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/messages"),
        &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
        json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": long}]}).to_string(),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(json(&b)["error"]["type"], "invalid_request_error");
    assert_eq!(
        mock.request_count(),
        0,
        "refused without contacting the provider"
    );

    // A short prompt passes.
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("short")).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn context_window_counts_the_output_too() {
    let mock = MockProvider::start().await.expect("mock");
    let cfg = config(&mock.url(), "", "").replace(
        "upstream_model = \"mock-model\"",
        "upstream_model = \"mock-model\"\ncontext_window = 100",
    );
    let s = Sluice::start(&cfg).await;
    let mut body = chat(&"word ".repeat(40));
    body["model"] = json!("gpt-4o-mini");
    body["max_tokens"] = json!(90);
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &body).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let msg = json(&b)["error"]["message"]
        .as_str()
        .expect("msg")
        .to_owned();
    assert!(
        msg.contains("maximum context length is 100 tokens"),
        "{msg}"
    );
    body["max_tokens"] = json!(10);
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &body).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn output_is_capped_on_every_api_shape() {
    let (mock, s) = start("[limits]\nmax_output_tokens = 7\n").await;
    let last = || mock.last_request().expect("req").json().expect("json");

    let mut c = chat("x");
    c["max_tokens"] = json!(1000);
    post(&s, "/v1/chat/completions", &[], &c).await;
    assert_eq!(last()["max_tokens"], 7, "clamped");
    post(&s, "/v1/chat/completions", &[], &chat("x")).await;
    assert_eq!(
        last()["max_tokens"],
        7,
        "injected (openai-compatible uses max_tokens)"
    );
    let mut c = chat("x");
    c["max_completion_tokens"] = json!(3);
    post(&s, "/v1/chat/completions", &[], &c).await;
    assert_eq!(last()["max_completion_tokens"], 3, "a lower cap is kept");
    assert!(last().get("max_tokens").is_none());

    post(
        &s,
        "/v1/responses",
        &[],
        &json!({"model": "m", "input": "hi", "max_output_tokens": 99}),
    )
    .await;
    assert_eq!(last()["max_output_tokens"], 7);
    post(
        &s,
        "/v1/completions",
        &[],
        &json!({"model": "m", "prompt": "hi"}),
    )
    .await;
    assert_eq!(last()["max_tokens"], 7);

    let (st, _, _) = call(
        Method::POST,
        &s.url("/v1/messages"),
        &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
        json!({"model": "claude-x", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(last()["max_tokens"], 7);
}

#[tokio::test]
async fn requests_per_minute_hold_under_50_concurrent_clients() {
    let (mock, s) = start(
        "[[rate_limits]]\nname = \"team-rpm\"\nscope = [\"team\"]\nrequests_per_minute = 20\n",
    )
    .await;
    let s = Arc::new(s);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                post(&s, "/v1/chat/completions", &[], &chat(&format!("n{i}"))).await
            })
        })
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        let (st, h, b) = t.await.expect("task");
        match st {
            StatusCode::OK => {
                ok += 1;
                assert_eq!(h["x-ratelimit-limit-requests"], "20");
            }
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                let v = json(&b);
                assert_eq!(v["error"]["code"], "rate_limit_exceeded");
                assert!(v["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("team-rpm"));
                let retry: u64 = h["retry-after"].to_str().expect("s").parse().expect("secs");
                // A use counts until the 61st second after it (one-second buckets).
                assert!((1..=61).contains(&retry), "{retry}");
                assert_eq!(h["x-ratelimit-remaining-requests"], "0");
                assert!(
                    h.get("x-should-retry").is_none(),
                    "waiting helps: SDKs may retry"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, limited), (20, 30));
    assert_eq!(
        mock.request_count(),
        20,
        "no more than the limit reached the provider"
    );

    let (_, m) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
    assert!(
        String::from_utf8_lossy(&m).contains("sluice_rate_limited_total{scope=\"team-rpm\"} 30")
    );
}

#[tokio::test]
async fn tokens_per_minute_reserve_and_settle_exactly() {
    let (mock, s) = start("[[rate_limits]]\nscope = [\"user\"]\ntokens_per_minute = 400\n").await;
    let s = Arc::new(s);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut body = chat(&format!("tell me about number {i}"));
                body["max_tokens"] = json!(10);
                post(&s, "/v1/chat/completions", &[], &body).await
            })
        })
        .collect();
    let mut used = 0;
    let mut ok = 0;
    for t in tasks {
        let (st, h, b) = t.await.expect("task");
        if st == StatusCode::OK {
            ok += 1;
            let u = &json(&b)["usage"];
            used += u["prompt_tokens"].as_u64().expect("p")
                + u["completion_tokens"].as_u64().expect("c");
            assert!(h.contains_key("x-ratelimit-remaining-tokens"));
        } else {
            assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
        }
    }
    assert!(ok > 0 && ok < 50, "{ok} admitted");
    assert!(used <= 400, "{used} tokens passed a 400-token limit");
    assert_eq!(mock.request_count(), ok);

    // Settled with the real (smaller) usage: the admin view shows actual use.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    s.wait_usage(50).await;
    let (st, b) = get(
        &s.admin_url("/admin/limits?filter=user%3Dalice"),
        &[("authorization", &auth)],
    )
    .await
    .expect("admin");
    assert_eq!(st, StatusCode::OK);
    let v = json(&b);
    assert_eq!(v["buckets"][0]["bucket"], "user-0|user=alice");
    assert_eq!(v["buckets"][0]["tokens_last_minute"], used);

    // A request that can never fit is told not to retry.
    let mut huge = chat("x");
    huge["max_tokens"] = json!(5000);
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &huge).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["x-should-retry"], "false");
}

#[tokio::test]
async fn concurrency_cap_per_key() {
    let (_mock, s) = start("[[rate_limits]]\nscope = [\"key\"]\nmax_concurrent = 1\n").await;
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let auth = format!("Bearer {KEY}");
    let slow = send(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &[
            ("authorization", &auth),
            ("x-mock-words", "5"),
            ("x-mock-delay-ms", "100"),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(slow.status(), StatusCode::OK);
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &chat("second")).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert!(json(&b)["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("concurrent"));
    frames(slow.into_body()).await.expect("stream");
    let mut ok = false;
    for _ in 0..50 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("third")).await;
        if st == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "the slot is released when the stream ends");
}

#[tokio::test]
async fn disconnected_stream_is_counted_and_charged() {
    let (mock, s) =
        start("[[rate_limits]]\nscope = [\"user\"]\ntokens_per_minute = 100000\n").await;
    let body = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "count these words please"}]});
    let id = abandon_stream(
        &s,
        &body,
        &[("x-mock-words", "40"), ("x-mock-delay-ms", "50")],
        4,
    )
    .await;
    let rec = s.usage_for(&id).await;
    assert_eq!(rec["end"], "client_gone");
    assert_eq!(rec["usage_source"], "estimated");
    // Input counted exactly with o200k: 3 + "user" + text + 3 priming.
    let input = rec["input_tokens"].as_u64().expect("input");
    assert!((9..=16).contains(&input), "{input}");
    let output = rec["output_tokens"].as_u64().expect("output");
    assert!((1..40).contains(&output), "{output}");
    assert!(mock.cancelled_streams() <= 1);

    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (_, b) = get(&s.admin_url("/admin/limits"), &[("authorization", &auth)])
        .await
        .expect("admin");
    assert_eq!(
        json(&b)["buckets"][0]["tokens_last_minute"],
        input + output,
        "settled with what was used"
    );
}

#[tokio::test]
async fn anthropic_clients_get_anthropic_rate_limit_headers() {
    let (_mock, s) = start(
        "[[rate_limits]]\nscope = [\"key\"]\nrequests_per_minute = 1\ntokens_per_minute = 100000\n",
    )
    .await;
    let body = json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let h = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    let (st, headers, _) = call(Method::POST, &s.url("/v1/messages"), &h, body.to_string()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(headers["anthropic-ratelimit-requests-limit"], "1");
    assert_eq!(headers["anthropic-ratelimit-requests-remaining"], "0");
    assert!(headers["anthropic-ratelimit-tokens-reset"]
        .to_str()
        .expect("s")
        .ends_with('Z'));
    assert!(!headers.contains_key("x-ratelimit-limit-requests"));
    let (st, headers, b) = call(Method::POST, &s.url("/v1/messages"), &h, body.to_string()).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(json(&b)["error"]["type"], "rate_limit_error");
    assert!(headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_long_prompt_over_the_context_window_is_refused_while_the_provider_thinks() {
    let mock = MockProvider::start().await.expect("mock");
    let cfg = config(&mock.url(), "", "").replace(
        "upstream_model = \"mock-model\"",
        "upstream_model = \"mock-model\"\ncontext_window = 1000",
    );
    let s = Sluice::start(&cfg).await;
    // ~100 KB: counted beside the upstream request, which the provider takes
    // seconds to answer; the count finishes first and refuses it.
    let mut body = chat(&"lorem ipsum dolor sit amet ".repeat(4000));
    body["model"] = json!("gpt-4o-mini");
    let (st, _, b) = post(
        &s,
        "/v1/chat/completions",
        &[("x-mock-first-byte-delay-ms", "5000")],
        &body,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let v = json(&b);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("maximum context length is 1000"));
    // Another long prompt, for a model with no known window, goes through.
    let mut fits = chat(&"lorem ipsum dolor sit amet ".repeat(4000));
    fits["model"] = json!("mock-model");
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &fits).await;
    assert_eq!(st, StatusCode::OK);
}
