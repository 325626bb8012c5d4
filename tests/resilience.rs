//! Routing, load balancing, retries, fallbacks and circuit breakers through
//! the real binary, against mock providers that fail on cue.

#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::{Fault, MockProvider};

fn fault(status: u16) -> Fault {
    Fault::Status {
        status,
        body: String::new(),
        retry_after: None,
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// A config with one provider per mock (`p0`, `p1`, …) and the given models.
fn cfg(mocks: &[&MockProvider], models: &str, extra: &str) -> String {
    let mut c = format!(
        r#"
[server]
listen = "127.0.0.1:0"
trust_identity_headers = true
[admin]
listen = "127.0.0.1:0"
token_env = "SLUICE_TEST_ADMIN_TOKEN"
[log]
usage = "USAGE_PATH"
[state]
path = "STATE_PATH"
[[keys]]
sha256 = "{}"
user = "alice"
{extra}
"#,
        sha256_hex(KEY)
    );
    for (i, m) in mocks.iter().enumerate() {
        c.push_str(&format!(
            "[[providers]]\nname = \"p{i}\"\nkind = \"openai-compatible\"\nbase_url = \"{}/v1\"\napi_key_env = \"SLUICE_TEST_OPENAI_KEY\"\n",
            m.url()
        ));
    }
    c + models
}

const FAST_RETRY: &str = "[retry]\nbase_backoff = \"5ms\"\nmax_backoff = \"20ms\"\n";

async fn usage_of(s: &Sluice, h: &http::HeaderMap) -> Value {
    s.usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await
}

fn deployments(rec: &Value) -> Vec<String> {
    rec["attempt_log"]
        .as_array()
        .expect("attempt_log")
        .iter()
        .map(|a| format!("{}:{}", a["deployment"].as_str().unwrap_or(""), a["status"]))
        .collect()
}

#[tokio::test]
async fn a_429_then_200_is_recovered_transparently() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&cfg(
        &[&mock],
        "[[models]]\nname = \"*\"\nprovider = \"p0\"\n",
        FAST_RETRY,
    ))
    .await;
    mock.push_fault(fault(429));
    let (st, h, b) = post(&s, "/v1/chat/completions", &[], &chat("m")).await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    assert_eq!(h["x-sluice-attempts"], "2");
    assert_eq!(mock.request_count(), 2);
    let rec = usage_of(&s, &h).await;
    assert_eq!(deployments(&rec), vec!["p0/m:429", "p0/m:200"]);
    assert_eq!(rec["attempt_log"][0]["outcome"], "retryable");
}

#[tokio::test]
async fn retry_after_is_waited() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&cfg(
        &[&mock],
        "[[models]]\nname = \"*\"\nprovider = \"p0\"\n",
        FAST_RETRY,
    ))
    .await;
    mock.push_fault(Fault::Status {
        status: 503,
        body: String::new(),
        retry_after: Some(1),
    });
    let t0 = Instant::now();
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("m")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );

    // Longer than max_retry_after: not waited, the provider's answer passes through.
    mock.push_fault(Fault::Status {
        status: 429,
        body: String::new(),
        retry_after: Some(3600),
    });
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("m")).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["retry-after"], "3600");
}

#[tokio::test]
async fn retry_budget_stops_a_storm() {
    let mock = MockProvider::start().await.expect("mock");
    let extra = "[retry]\nbase_backoff = \"1ms\"\nmax_backoff = \"2ms\"\nmax_retries = 2\nbudget_ratio = 0.1\nbudget_min_per_second = 0.2\n\
                 [circuit_breaker]\nconsecutive_failures = 1000\nmin_requests = 1000\n";
    let s = Sluice::start(&cfg(
        &[&mock],
        "[[models]]\nname = \"*\"\nprovider = \"p0\"\n",
        extra,
    ))
    .await;
    for _ in 0..20 {
        let (st, _, _) = post(
            &s,
            "/v1/chat/completions",
            &[("x-mock-status", "500")],
            &chat("m"),
        )
        .await;
        assert_eq!(
            st,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the provider's error passes through"
        );
    }
    // 20 first attempts; retries capped at 10% of them plus 0.2/s over 10 s.
    let calls = mock.request_count();
    assert!(
        (20..=24).contains(&calls),
        "{calls} upstream calls during the outage (no budget: 60)"
    );
}

#[tokio::test]
async fn fallback_chain_walks_in_order() {
    let (_dead, dead_addr) = refused_addr();
    let (m1, m2) = (
        MockProvider::start().await.expect("m1"),
        MockProvider::start().await.expect("m2"),
    );
    let models = r#"
[[models]]
name = "first"
provider = "p0"
upstream_model = "a"
fallbacks = ["second", "third"]
[[models]]
name = "second"
provider = "p1"
upstream_model = "b"
[[models]]
name = "third"
provider = "p2"
upstream_model = "c"
"#;
    let mut c = cfg(
        &[&m1, &m1, &m2],
        models,
        "[retry]\nmax_retries = 0\nbase_backoff = \"1ms\"\n",
    );
    c = c.replacen(
        &format!("{}/v1", m1.url()),
        &format!("http://{dead_addr}/v1"),
        1,
    );
    let s = Sluice::start(&c).await;
    m1.push_fault(fault(502));
    let (st, h, b) = post(&s, "/v1/chat/completions", &[], &chat("first")).await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    assert_eq!(h["x-sluice-model"], "c");
    assert_eq!(h["x-sluice-provider"], "p2");
    let rec = usage_of(&s, &h).await;
    assert_eq!(deployments(&rec), vec!["p0/a:0", "p1/b:502", "p2/c:200"]);
    assert_eq!(rec["attempt_log"][0]["outcome"], "connect_error");
    assert_eq!(
        m2.last_request().expect("req").json().expect("json")["model"],
        "c"
    );
}

#[tokio::test]
async fn breaker_opens_probes_closes_and_obeys_the_admin() {
    let (m1, m2) = (
        MockProvider::start().await.expect("m1"),
        MockProvider::start().await.expect("m2"),
    );
    let models = "[[models]]\nname = \"main\"\nprovider = \"p0\"\nupstream_model = \"x\"\nfallbacks = [\"backup\"]\n\
                  [[models]]\nname = \"backup\"\nprovider = \"p1\"\nupstream_model = \"y\"\n";
    let extra = "[retry]\nmax_retries = 0\nbase_backoff = \"1ms\"\n[circuit_breaker]\nconsecutive_failures = 2\nopen_for = \"300ms\"\n";
    let s = Sluice::start(&cfg(&[&m1, &m2], models, extra)).await;
    m1.push_fault(fault(500));
    m1.push_fault(fault(500));
    for _ in 0..2 {
        let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("main")).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(h["x-sluice-provider"], "p1");
    }
    // Open: the primary is skipped.
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &chat("main")).await;
    assert_eq!(deployments(&usage_of(&s, &h).await), vec!["p1/y:200"]);
    assert_eq!(m1.request_count(), 2);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (_, b) = get(
        &s.admin_url("/admin/deployments"),
        &[("authorization", &auth)],
    )
    .await
    .expect("admin");
    let report = json(&b);
    let p0 = report["deployments"]
        .as_array()
        .expect("list")
        .iter()
        .find(|d| d["deployment"] == "p0/x")
        .cloned()
        .expect("p0");
    assert_eq!(p0["circuit"], "open");
    let (_, m) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
    assert!(String::from_utf8_lossy(&m).contains("sluice_circuit_open{deployment=\"p0/x\"} 1"));

    // After the cool-down a probe goes through, succeeds, and closes it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &chat("main")).await;
    assert_eq!(deployments(&usage_of(&s, &h).await), vec!["p0/x:200"]);
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &chat("main")).await;
    assert_eq!(h["x-sluice-provider"], "p0", "closed again");

    // Manual eject and restore.
    let (st, _, _) = call(
        Method::POST,
        &s.admin_url("/admin/deployments/p0/x/eject"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &chat("main")).await;
    assert_eq!(h["x-sluice-provider"], "p1");
    let (st, _, _) = call(
        Method::POST,
        &s.admin_url("/admin/deployments/p0/x/restore"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &chat("main")).await;
    assert_eq!(h["x-sluice-provider"], "p0");
}

#[tokio::test]
async fn streams_are_retried_before_the_first_byte_never_after() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&cfg(
        &[&mock],
        "[[models]]\nname = \"*\"\nprovider = \"p0\"\n",
        FAST_RETRY,
    ))
    .await;
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "a b c"}]});
    mock.push_fault(fault(503));
    let (st, h, b) = post(&s, "/v1/chat/completions", &[], &body).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-sluice-attempts"], "2");
    assert_eq!(chat_stream_text(&b), "echo: a b c");

    let before = mock.request_count();
    let (st, h, b) = post(
        &s,
        "/v1/chat/completions",
        &[("x-mock-abort-after", "2")],
        &body,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-sluice-attempts"], "1");
    assert!(String::from_utf8_lossy(&b).contains("upstream_stream_error"));
    assert_eq!(
        mock.request_count(),
        before + 1,
        "never retried once bytes went out"
    );
}

#[tokio::test]
async fn four_hundreds_are_not_retried_but_context_errors_fall_back() {
    let (m1, m2) = (
        MockProvider::start().await.expect("m1"),
        MockProvider::start().await.expect("m2"),
    );
    let models = "[[models]]\nname = \"small\"\nprovider = \"p0\"\ncontext_fallback = \"big\"\n\
                  [[models]]\nname = \"big\"\nprovider = \"p1\"\nupstream_model = \"big-ctx\"\n";
    let s = Sluice::start(&cfg(&[&m1, &m2], models, FAST_RETRY)).await;
    m1.push_fault(Fault::Status {
        status: 400,
        body: r#"{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":"invalid_value"}}"#.into(),
        retry_after: None,
    });
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &chat("small")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&b).contains("invalid_value"),
        "passed through"
    );
    assert_eq!((m1.request_count(), m2.request_count()), (1, 0));

    m1.push_fault(Fault::Status {
        status: 400,
        body: r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#.into(),
        retry_after: None,
    });
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("small")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-sluice-model"], "big-ctx");
    assert_eq!(m2.request_count(), 1);
}

#[tokio::test]
async fn weighted_balancing_and_failover_between_deployments() {
    let (m1, m2) = (
        MockProvider::start().await.expect("m1"),
        MockProvider::start().await.expect("m2"),
    );
    let models = "[[models]]\nname = \"m\"\n\
                  [[models.deployments]]\nprovider = \"p0\"\nupstream_model = \"a\"\nweight = 3\n\
                  [[models.deployments]]\nprovider = \"p1\"\nupstream_model = \"b\"\nweight = 1\n";
    let s = Sluice::start(&cfg(&[&m1, &m2], models, FAST_RETRY)).await;
    for _ in 0..200 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("m")).await;
        assert_eq!(st, StatusCode::OK);
    }
    let share = m1.request_count() as f64 / 200.0;
    assert!((0.6..0.9).contains(&share), "weight 3 of 4 got {share}");

    // A failing deployment: the retry moves to the other one.
    for _ in 0..3 {
        m1.push_fault(fault(500));
    }
    let mut retried = 0;
    // Each request whose first pick is the failing deployment is retried.
    for _ in 0..200 {
        if retried == 3 {
            break;
        }
        let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("m")).await;
        assert_eq!(st, StatusCode::OK);
        let d = deployments(&usage_of(&s, &h).await);
        if d.len() == 2 {
            assert_eq!(
                d,
                vec!["p0/a:500", "p1/b:200"],
                "retried on the other deployment"
            );
            retried += 1;
        }
    }
    assert_eq!(retried, 3);
}

#[tokio::test]
async fn routing_rules_pick_the_tier() {
    let mock = MockProvider::start().await.expect("mock");
    let models = r#"
[[models]]
name = "fast"
provider = "p0"
upstream_model = "small-model"
[[models]]
name = "smart"
provider = "p0"
upstream_model = "large-model"
[[models]]
name = "long"
provider = "p0"
upstream_model = "long-model"
[[routing]]
model = "auto"
default = "fast"
rules = [
  { header = "x-sluice-tier=strong", use = "smart" },
  { feature = "planner", use = "smart" },
  { tools = true, use = "smart" },
  { min_input_tokens = 2000, use = "long" },
  { last_message_matches = "(?i)\\b(prove|refactor)\\b", use = "smart" },
]
"#;
    let s = Sluice::start(&cfg(&[&mock], models, "")).await;
    let upstream_model =
        || mock.last_request().expect("req").json().expect("json")["model"].clone();
    type Case<'a> = (Value, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (chat("auto"), vec![], "small-model"),
        (
            chat("auto"),
            vec![("x-sluice-tier", "strong")],
            "large-model",
        ),
        (
            chat("auto"),
            vec![("x-sluice-feature", "planner")],
            "large-model",
        ),
        (
            json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}),
            vec![],
            "large-model",
        ),
        (
            json!({"model": "auto", "messages": [{"role": "user", "content": "word ".repeat(3000)}]}),
            vec![],
            "long-model",
        ),
        (
            json!({"model": "auto", "messages": [{"role": "user", "content": "please refactor this module"}]}),
            vec![],
            "large-model",
        ),
    ];
    for (body, headers, want) in cases {
        let (st, h, b) = post(&s, "/v1/chat/completions", &headers, &body).await;
        assert_eq!(st, StatusCode::OK, "{b:?}");
        assert_eq!(upstream_model(), want, "{headers:?}");
        assert_eq!(h["x-sluice-model"], want);
        let rec = usage_of(&s, &h).await;
        assert_eq!(rec["model"], "auto");
    }
}

#[tokio::test]
async fn moving_to_another_deployment_does_not_back_off() {
    let (m1, m2) = (
        MockProvider::start().await.expect("m1"),
        MockProvider::start().await.expect("m2"),
    );
    let models = "[[models]]\nname = \"main\"\nprovider = \"p0\"\nupstream_model = \"x\"\nfallbacks = [\"backup\"]\n\
                  [[models]]\nname = \"backup\"\nprovider = \"p1\"\nupstream_model = \"y\"\n";
    // A backoff before the fallback would be up to an hour, past the
    // request's deadline: only an immediate fallback can answer 200.
    let extra = "[retry]\nmax_retries = 1\nbase_backoff = \"1h\"\nmax_backoff = \"1h\"\n[timeouts]\ntotal = \"30s\"\n";
    let s = Sluice::start(&cfg(&[&m1, &m2], models, extra)).await;
    // The retry's backoff is full jitter over the hour: about once in 120
    // runs it is short enough to fit the deadline, and p0 is rightly tried
    // again. It fails again then, so the request still ends on the fallback.
    m1.push_fault(fault(500));
    m1.push_fault(fault(500));
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("main")).await;
    assert_eq!(st, StatusCode::OK);
    let rec = usage_of(&s, &h).await;
    let tried = deployments(&rec);
    assert!(
        tried == ["p0/x:500", "p1/y:200"] || tried == ["p0/x:500", "p0/x:500", "p1/y:200"],
        "the request went to the fallback at once when a retry did not fit: {tried:?}"
    );
}

async fn circuit_of(s: &Sluice, deployment: &str) -> String {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (_, b) = get(
        &s.admin_url("/admin/deployments"),
        &[("authorization", &auth)],
    )
    .await
    .expect("admin");
    json(&b)["deployments"]
        .as_array()
        .expect("list")
        .iter()
        .find(|d| d["deployment"] == deployment)
        .map(|d| d["circuit"].as_str().unwrap_or("").to_owned())
        .unwrap_or_else(|| panic!("no deployment {deployment}: {}", json(&b)))
}

#[tokio::test]
async fn the_breaker_counts_one_failure_per_client_request() {
    let mock = MockProvider::start().await.expect("mock");
    // Three attempts per request; the circuit opens on 3 failures.
    let extra = "[retry]\nmax_retries = 2\nbase_backoff = \"1ms\"\nmax_backoff = \"2ms\"\n\
                 [circuit_breaker]\nconsecutive_failures = 3\nopen_for = \"1h\"\n";
    let s = Sluice::start(&cfg(
        &[&mock],
        "[[models]]\nname = \"*\"\nprovider = \"p0\"\n",
        extra,
    ))
    .await;
    let fail = [("x-mock-status", "500")];
    for _ in 0..2 {
        let (st, h, _) = post(&s, "/v1/chat/completions", &fail, &chat("m")).await;
        assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(h["x-sluice-attempts"], "3");
    }
    // Six failed attempts, two failed requests: still closed, so another
    // tenant is served.
    assert_eq!(circuit_of(&s, "p0/*").await, "closed");
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("other")).await;
    assert_eq!(st, StatusCode::OK);
    for _ in 0..3 {
        post(&s, "/v1/chat/completions", &fail, &chat("m")).await;
    }
    assert_eq!(
        circuit_of(&s, "p0/*").await,
        "open",
        "three failed requests"
    );
}

#[tokio::test]
async fn when_every_deployment_is_open_one_probe_per_interval_still_goes_out() {
    let mock = MockProvider::start().await.expect("mock");
    let extra = "[retry]\nmax_retries = 0\n\
                 [circuit_breaker]\nconsecutive_failures = 2\nopen_for = \"1h\"\nprobe_interval = \"1h\"\n";
    let s = Sluice::start(&cfg(
        &[&mock],
        "[[models]]\nname = \"solo\"\nprovider = \"p0\"\nupstream_model = \"x\"\n",
        extra,
    ))
    .await;
    let fail = [("x-mock-status", "500")];
    for _ in 0..2 {
        post(&s, "/v1/chat/completions", &fail, &chat("solo")).await;
    }
    assert_eq!(circuit_of(&s, "p0/x").await, "open");
    let before = mock.request_count();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (st, _, b) = post(&s, "/v1/chat/completions", &fail, &chat("solo")).await;
        if st == StatusCode::SERVICE_UNAVAILABLE {
            assert!(String::from_utf8_lossy(&b).contains("no healthy deployment"));
        }
        statuses.push(st.as_u16());
    }
    assert_eq!(
        statuses,
        vec![500, 503, 503, 503, 503],
        "one probe went to the provider (its error passes through), the rest were held back"
    );
    assert_eq!(mock.request_count(), before + 1);
}

#[tokio::test]
async fn a_provider_blip_does_not_become_an_outage() {
    let mock = MockProvider::start().await.expect("mock");
    // The circuit would stay open for an hour; the provider is back at once.
    let extra = "[retry]\nmax_retries = 2\nbase_backoff = \"1ms\"\nmax_backoff = \"2ms\"\n\
                 [circuit_breaker]\nconsecutive_failures = 2\nopen_for = \"1h\"\nprobe_interval = \"100ms\"\n";
    let s = Sluice::start(&cfg(
        &[&mock],
        "[[models]]\nname = \"solo\"\nprovider = \"p0\"\nupstream_model = \"x\"\n",
        extra,
    ))
    .await;
    // Two requests fail (three attempts each), then the provider recovers.
    for _ in 0..6 {
        mock.push_fault(fault(503));
    }
    for _ in 0..2 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("solo")).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(circuit_of(&s, "p0/x").await, "open");
    // A probe soon goes out, succeeds and closes the circuit: no hour-long
    // outage for every tenant.
    let mut served = None;
    for i in 0..200 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("solo")).await;
        if st == StatusCode::OK {
            served = Some(i);
            break;
        }
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        served.is_some(),
        "never served again while the circuit was open"
    );
    assert_eq!(circuit_of(&s, "p0/x").await, "closed");
    for _ in 0..3 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("solo")).await;
        assert_eq!(st, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_fallback_that_is_open_too_is_probed_under_the_panic_rule() {
    let (m1, m2) = (
        MockProvider::start().await.expect("m1"),
        MockProvider::start().await.expect("m2"),
    );
    let models = "[[models]]\nname = \"main\"\nprovider = \"p0\"\nupstream_model = \"x\"\nfallbacks = [\"backup\"]\n\
                  [[models]]\nname = \"backup\"\nprovider = \"p1\"\nupstream_model = \"y\"\n";
    let extra = "[retry]\nmax_retries = 0\n\
                 [circuit_breaker]\nconsecutive_failures = 1\nopen_for = \"1h\"\nprobe_interval = \"1h\"\n";
    let s = Sluice::start(&cfg(&[&m1, &m2], models, extra)).await;
    // Both deployments fail once: both circuits open.
    m1.push_fault(fault(500));
    m2.push_fault(fault(500));
    post(&s, "/v1/chat/completions", &[], &chat("main")).await;
    assert_eq!(circuit_of(&s, "p0/x").await, "open");
    assert_eq!(circuit_of(&s, "p1/y").await, "open");
    // The primary is still down; the fallback is back. The next request
    // probes the primary, then the fallback, which answers and closes.
    m1.push_fault(fault(500));
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("main")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        deployments(&usage_of(&s, &h).await),
        vec!["p0/x:500", "p1/y:200"]
    );
    assert_eq!(circuit_of(&s, "p1/y").await, "closed");
    // Not every deployment is open any more: the open primary is skipped.
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("main")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(deployments(&usage_of(&s, &h).await), vec!["p1/y:200"]);
}
