//! Cost attribution and budgets through the real binary.

#[path = "support/harness.rs"]
mod harness;

use std::sync::Arc;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::MockProvider;

/// mock-model costs $1 per 1M input tokens and $2 per 1M output tokens:
/// 1,000 and 2,000 nano-dollars per token.
const PRICING: &str = "[[pricing]]\nmodel = \"mock-model\"\ninput = 1.0\noutput = 2.0\n\
                       [[pricing]]\nmodel = \"cheap-model\"\ninput = 0.1\noutput = 0.2\n";

fn chat(content: &str) -> Value {
    json!({"model": "mock-model", "max_tokens": 10, "messages": [{"role": "user", "content": content}]})
}

async fn start(budgets: &str) -> (MockProvider, Sluice) {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", &format!("{PRICING}{budgets}"))).await;
    (mock, s)
}

fn cost(rec: &Value) -> f64 {
    rec["cost_usd"].as_f64().expect("cost_usd")
}

#[tokio::test]
async fn cost_is_attributed_and_reported() {
    let (_mock, s) = start("").await;
    let (st, h, b) = post(
        &s,
        "/v1/chat/completions",
        &[("x-sluice-feature", "search")],
        &chat("one two three"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let u = &json(&b)["usage"];
    let expected = u["prompt_tokens"].as_f64().expect("p") * 1e-6
        + u["completion_tokens"].as_f64().expect("c") * 2e-6;
    let header: f64 = h["x-sluice-cost-usd"]
        .to_str()
        .expect("s")
        .parse()
        .expect("f");
    assert!((header - expected).abs() < 1e-12, "{header} vs {expected}");
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert!((cost(&rec) - expected).abs() < 1e-12);
    assert_eq!(rec["feature"], "search");
    assert_eq!(rec["user"], "alice");

    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (_, b) = get(
        &s.admin_url("/admin/spend?by=feature"),
        &[("authorization", &auth)],
    )
    .await
    .expect("spend");
    assert_eq!(json(&b)["top"][0]["value"], "search");
    let (_, b) = get(
        &s.admin_url("/admin/usage?format=csv"),
        &[("authorization", &auth)],
    )
    .await
    .expect("csv");
    let csv = String::from_utf8_lossy(&b).to_string();
    assert!(csv.starts_with("ts,request_id,key,user"), "{csv}");
    assert_eq!(csv.lines().count(), 2);
    let (_, b) = get(
        &s.admin_url("/admin/usage?from=2999-01-01T00:00:00Z"),
        &[("authorization", &auth)],
    )
    .await
    .expect("json");
    assert_eq!(json(&b)["records"], json!([]));
}

#[tokio::test]
async fn per_user_budget_rejects_with_insufficient_quota() {
    // Each request: worst case ≤ 40 input + 10 output tokens = $0.00006.
    let (mock, s) = start(
        "[[budgets]]\nname = \"daily\"\nscope = [\"user\"]\nwindow = \"day\"\nlimit_usd = 0.0002\n",
    )
    .await;
    let mut spent = 0.0;
    let mut refused = None;
    for i in 0..20 {
        let (st, h, b) = post(
            &s,
            "/v1/chat/completions",
            &[],
            &chat(&format!("request {i}")),
        )
        .await;
        if st == StatusCode::OK {
            spent += cost(
                &s.usage_for(h["x-sluice-request-id"].to_str().expect("id"))
                    .await,
            );
            assert!(h.contains_key("x-sluice-budget-remaining-usd"));
        } else {
            refused = Some((st, h, b));
            break;
        }
    }
    let (st, h, b) = refused.expect("the budget ran out");
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["x-should-retry"], "false");
    let v = json(&b);
    assert_eq!(v["error"]["type"], "insufficient_quota");
    assert_eq!(v["error"]["code"], "insufficient_quota");
    assert!(spent <= 0.0002 + 1e-12, "spent {spent}");
    let before = mock.request_count();
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("again")).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(mock.request_count(), before, "refused before the provider");

    // Admin: the bucket, then a reset lets requests through again.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (_, b) = get(&s.admin_url("/admin/budgets"), &[("authorization", &auth)])
        .await
        .expect("budgets");
    let bucket = &json(&b)["budgets"][0];
    assert_eq!(bucket["bucket"], "daily|user=alice");
    assert!((bucket["spent_usd"].as_f64().expect("spent") - spent).abs() < 1e-12);
    let (st, _, _) = call(
        Method::POST,
        &s.admin_url("/admin/budgets/reset?bucket=daily%7Cuser%3Dalice"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("after reset")).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn a_hundred_parallel_requests_cannot_overspend() {
    // Worst case per request is about $0.00003; the budget fits about 10.
    let (mock, s) = start("[[budgets]]\nname = \"team\"\nscope = [\"team\"]\nwindow = \"month\"\nlimit_usd = 0.0003\n").await;
    let s = Arc::new(s);
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                post(
                    &s,
                    "/v1/chat/completions",
                    &[("x-mock-delay-ms", "20")],
                    &chat(&format!("n{i}")),
                )
                .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (st, _, _) = t.await.expect("task");
        if st == StatusCode::OK {
            ok += 1;
        } else {
            assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
        }
    }
    // Settled requests free their unused worst case, so more than 10 may pass;
    // what must hold is the spend.
    assert!(ok >= 5, "{ok} admitted");
    assert_eq!(mock.request_count(), ok);
    let records = s.wait_usage(100).await;
    let spent: f64 = records.iter().filter_map(|r| r["cost_usd"].as_f64()).sum();
    assert!(spent <= 0.0003 + 1e-12, "spent {spent} of 0.0003");
}

#[tokio::test]
async fn scopes_feature_and_global() {
    let budgets = "[[budgets]]\nname = \"feat\"\nscope = [\"feature\"]\nwindow = \"hour\"\nlimit_usd = 0.00007\n\
                   [[budgets]]\nname = \"all\"\nwindow = \"lifetime\"\nlimit_usd = 1.0\n";
    let (_mock, s) = start(budgets).await;
    let planner = [("x-sluice-feature", "planner")];
    let coder = [("x-sluice-feature", "coder")];
    let mut planner_ok = 0;
    while post(&s, "/v1/chat/completions", &planner, &chat("plan"))
        .await
        .0
        == StatusCode::OK
    {
        planner_ok += 1;
        assert!(planner_ok < 10);
    }
    assert!(planner_ok >= 1);
    let (st, _, _) = post(&s, "/v1/chat/completions", &coder, &chat("code")).await;
    assert_eq!(st, StatusCode::OK, "another feature has its own budget");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (_, b) = get(&s.admin_url("/admin/budgets"), &[("authorization", &auth)])
        .await
        .expect("budgets");
    let buckets: Vec<String> = json(&b)["budgets"]
        .as_array()
        .expect("list")
        .iter()
        .map(|b| b["bucket"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        buckets,
        vec!["all", "feat|feature=coder", "feat|feature=planner"]
    );
}

#[tokio::test]
async fn downgrade_past_the_threshold_then_alert() {
    let models_extra = "[[models]]\nname = \"cheap\"\nprovider = \"mock-openai\"\nupstream_model = \"cheap-model\"\n";
    let budgets = "[[budgets]]\nname = \"soft\"\nscope = [\"user\"]\nwindow = \"day\"\nlimit_usd = 0.001\naction = \"downgrade\"\ndowngrade_to = \"cheap\"\ndowngrade_at = 0.02\n\
                   [[budgets]]\nname = \"watch\"\nwindow = \"day\"\nlimit_usd = 0.00002\naction = \"alert\"\nalert_at = [0.5, 1.0]\nwebhook = \"MOCK/hooks/budget\"\n";
    let mock = MockProvider::start().await.expect("mock");
    let budgets = budgets.replace("MOCK", &mock.url());
    let cfg = config(&mock.url(), "", &format!("{PRICING}{budgets}")).replace(
        "[[models]]\nname = \"*\"",
        &format!("{models_extra}[[models]]\nname = \"*\""),
    );
    let s = Sluice::start(&cfg).await;
    let mut models = Vec::new();
    for i in 0..4 {
        let (st, h, _) = post(
            &s,
            "/v1/chat/completions",
            &[],
            &chat(&format!("hello number {i}")),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "the alert budget never refuses");
        models.push(h["x-sluice-model"].to_str().expect("m").to_owned());
    }
    assert_eq!(models[0], "mock-model");
    assert_eq!(
        models.last().map(String::as_str),
        Some("cheap-model"),
        "{models:?}"
    );
    // The last settlement may land just after its response: poll.
    let want = "sluice_budget_alerts_total{budget=\"watch\",threshold=\"1\"} 1";
    let mut m = String::new();
    for _ in 0..100 {
        let (_, body) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
        m = String::from_utf8_lossy(&body).into_owned();
        if m.contains(want) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(m.contains(want), "{m}");
    // The webhook got a JSON POST for each threshold crossed.
    let mut hooks = Vec::new();
    for _ in 0..100 {
        hooks = mock
            .requests()
            .into_iter()
            .filter(|r| r.path == "/hooks/budget")
            .collect();
        if hooks.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(hooks.len(), 2, "one POST per threshold (0.5 and 1.0)");
    // Each alert is posted by a task of its own: they may arrive in either order.
    let mut alerts: Vec<Value> = hooks.iter().map(|h| h.json().expect("json")).collect();
    alerts.sort_by(|a, b| {
        a["threshold"]
            .as_f64()
            .partial_cmp(&b["threshold"].as_f64())
            .expect("numbers")
    });
    assert!(alerts.iter().all(|a| a["budget"] == "watch"), "{alerts:?}");
    assert_eq!(alerts[0]["threshold"], 0.5);
    assert_eq!(alerts[1]["threshold"], 1.0);
}

#[tokio::test]
async fn disconnect_is_charged_and_kill_9_loses_no_settled_spend() {
    let budgets =
        "[[budgets]]\nname = \"u\"\nscope = [\"user\"]\nwindow = \"month\"\nlimit_usd = 10.0\n";
    let (mock, s) = start(budgets).await;
    for i in 0..5 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat(&format!("paid {i}"))).await;
        assert_eq!(st, StatusCode::OK);
    }
    // A stream the client abandons is charged for what was generated.
    let body = json!({"model": "mock-model", "stream": true, "max_tokens": 100, "messages": [{"role": "user", "content": "go"}]});
    let id = abandon_stream(
        &s,
        &body,
        &[("x-mock-words", "80"), ("x-mock-delay-ms", "30")],
        5,
    )
    .await;
    let rec = s.usage_for(&id).await;
    assert_eq!(rec["end"], "client_gone");
    assert!(cost(&rec) > 0.0);

    let records = s.wait_usage(6).await;
    let spent: f64 = records.iter().filter_map(|r| r["cost_usd"].as_f64()).sum();
    let config_text = std::fs::read_to_string(&s.config_path).expect("config");
    let dir = s.kill9().await;
    let s = Sluice::start_in(dir, &config_text).await;
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let (_, b) = get(&s.admin_url("/admin/budgets"), &[("authorization", &admin)])
        .await
        .expect("budgets");
    let after = json(&b)["budgets"][0]["spent_usd"].as_f64().expect("spent");
    assert!(
        (after - spent).abs() < 1e-12,
        "restored {after}, usage log says {spent}"
    );
    drop(mock);
}

#[tokio::test]
async fn unpriced_models_are_refused_under_a_budget() {
    let (mock, s) = start("[[budgets]]\nwindow = \"day\"\nlimit_usd = 1.0\n").await;
    let mut body = chat("x");
    body["model"] = json!("some-unknown-model");
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &body).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(json(&b)["error"]["code"], "model_not_priced");
    assert_eq!(mock.request_count(), 0);
}
