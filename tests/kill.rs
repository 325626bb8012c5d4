//! Kill switches through the real binary: on at once, in the provider's
//! error shape, reversible, and still on after a restart.

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::MockProvider;

fn chat(model: &str) -> Value {
    json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn a_model_switched_off_is_refused_at_once_and_stays_off_across_a_restart() {
    let mock = MockProvider::start().await.expect("mock");
    let cfg = config(&mock.url(), "", "");
    let s = Sluice::start(&cfg).await;
    let (st, v) = admin_as(
        &s,
        Method::POST,
        "/admin/kills?target=model%3Dbad-model&reason=incident+7",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["disabled"]["by"], "platform-bob");

    let (st, h, b) = post(&s, "/v1/chat/completions", &[], &chat("bad-model")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    let e = json(&b);
    assert_eq!(e["error"]["code"], "disabled", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("incident 7"),
        "{e}"
    );
    assert_eq!(h["x-should-retry"], "false");
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("good-model")).await;
    assert_eq!(st, StatusCode::OK, "other models are untouched");
    assert!(mock
        .requests()
        .iter()
        .all(|r| !String::from_utf8_lossy(&r.body).contains("bad-model")));

    // Still off after a restart.
    let dir = s.stop_keeping_dir().await;
    let s = Sluice::start_in(dir, &cfg).await;
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("bad-model")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    let (_, v) = admin_as(&s, Method::GET, "/admin/kills").await;
    assert_eq!(v["switches"][0]["switch"]["reason"], "incident 7", "{v}");

    // And back on.
    let (st, _) = admin_as(&s, Method::DELETE, "/admin/kills?target=model%3Dbad-model").await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("bad-model")).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = admin_as(&s, Method::DELETE, "/admin/kills?target=model%3Dbad-model").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = admin_as(&s, Method::POST, "/admin/kills?target=team%3Dx").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_switched_off_model_can_send_its_traffic_to_a_replacement() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", "")).await;
    let (st, v) = admin_as(
        &s,
        Method::POST,
        "/admin/kills?target=model%3Dgpt-4o-mini&reason=regression&replacement=fallback-model",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("gpt-4o-mini")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-sluice-model"], "fallback-model");
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["routed_to"], "fallback-model");
    // A replacement no rule serves is refused up front.
    let (st, _) = admin_as(
        &s,
        Method::POST,
        "/admin/kills?target=key%3Dtest&replacement=x",
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn config_switches_turn_off_a_key_or_a_feature_in_each_apis_shape() {
    let mock = MockProvider::start().await.expect("mock");
    let extra = "[[kill_switches]]\ntarget = \"feature=scraper\"\nreason = \"runaway costs\"\n";
    let s = Sluice::start(&config(&mock.url(), "", extra)).await;
    let scraper = [("x-sluice-feature", "scraper")];
    let (st, _, b) = post(&s, "/v1/chat/completions", &scraper, &chat("gpt-4o-mini")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&b)["error"]["code"], "disabled");
    let body = json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let (st, _, b) = post(&s, "/v1/messages", &scraper, &body).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&b)["type"], "error");
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("gpt-4o-mini")).await;
    assert_eq!(st, StatusCode::OK, "other features are untouched");
    let (_, m) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.contains("sluice_killed_requests_total{kind=\"feature\"} 2"),
        "{m}"
    );
}

#[tokio::test]
async fn a_deployment_switched_off_shifts_its_share_to_the_others() {
    let mock = MockProvider::start().await.expect("mock");
    let rule = r#"[[models]]
name = "shifted"
[[models.deployments]]
provider = "mock-east"
upstream_model = "east-model"
[[models.deployments]]
provider = "mock-openai"
upstream_model = "west-model"

[[models]]
name = "*""#;
    let cfg = config(
        &mock.url(),
        "",
        &format!(
            "[[providers]]\nname = \"mock-east\"\nkind = \"openai-compatible\"\nbase_url = \"{}/v1\"\napi_key_env = \"SLUICE_TEST_OPENAI_KEY\"\n",
            mock.url()
        ),
    )
    .replacen("[[models]]\nname = \"*\"", rule, 1);
    let s = Sluice::start(&cfg).await;
    let sent_to = |mock: &MockProvider, model: &str| {
        mock.requests()
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains(model))
            .count()
    };
    let (st, v) = admin_as(
        &s,
        Method::POST,
        "/admin/kills?target=deployment%3Dmock-east&reason=region+down",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    for _ in 0..6 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("shifted")).await;
        assert_eq!(st, StatusCode::OK);
    }
    assert_eq!(
        sent_to(&mock, "east-model"),
        0,
        "the killed deployment sees nothing"
    );
    assert_eq!(sent_to(&mock, "west-model"), 6);

    // With every deployment off, the request is refused in the API's shape.
    let (st, _) = admin_as(
        &s,
        Method::POST,
        "/admin/kills?target=deployment%3Dmock-openai%2Fwest-model&reason=both+down",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &chat("shifted")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&b)["error"]["code"], "disabled", "{}", json(&b));
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("other")).await;
    assert_eq!(st, StatusCode::OK, "other models of that provider go on");

    // Back on: the share returns.
    let (st, _) = admin_as(
        &s,
        Method::DELETE,
        "/admin/kills?target=deployment%3Dmock-east",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("shifted")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(sent_to(&mock, "east-model"), 1);
    let (st, _) = admin_as(&s, Method::POST, "/admin/kills?target=deployment%3Dnowhere").await;
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "an unknown provider is refused"
    );
}
