//! `GET /v1/models` (and `/v1/models/{id}`) with glob rules: the configured
//! exact names merged with the provider's own list, filtered by the globs
//! and the key's allow-list, fetched once for many callers, and never an
//! error when the provider's list fails. The real `sluice` binary in front of
//! the mock provider.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use harness::*;
use http::{Method, StatusCode};
use serde_json::Value;
use sluice_mock::{Fault, MockProvider};

/// A key that may use only `gpt-4o-mini` and the `mock-model-*` family.
const LIMITED: &str = "sk-sluice-limited";

/// Exact `gpt-4o-mini`; glob `mock-*` sends names on to the OpenAI-shaped
/// provider (its list is merged); glob `other-*` maps every name to one
/// model (its provider's list says nothing about it); `claude-*` sends
/// names on to the Anthropic provider.
fn models_config(mock_url: &str, server_extra: &str, provider_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server_extra}

[admin]
listen = "127.0.0.1:0"
token_env = "SLUICE_TEST_ADMIN_TOKEN"

[log]
level = "info,sluice=debug"
usage = "USAGE_PATH"

[state]
path = "STATE_PATH"

[[providers]]
name = "mock-openai"
kind = "openai-compatible"
client_keys = true
base_url = "{mock_url}/v1"
api_key_env = "SLUICE_TEST_OPENAI_KEY"
{provider_extra}

[[providers]]
name = "mock-anthropic"
kind = "anthropic"
base_url = "{mock_url}"
api_key_env = "SLUICE_TEST_ANTHROPIC_KEY"

[[models]]
name = "gpt-4o-mini"
provider = "mock-openai"
upstream_model = "mock-model"

[[models]]
name = "other-*"
provider = "mock-openai"
upstream_model = "mock-model"

[[models]]
name = "mock-*"
provider = "mock-openai"

[[models]]
name = "claude-*"
provider = "mock-anthropic"

[[keys]]
name = "test"
sha256 = "{}"

[[keys]]
name = "limited"
sha256 = "{}"
models = ["gpt-4o-mini", "mock-model-*"]
"#,
        sha256_hex(KEY),
        sha256_hex(LIMITED)
    )
}

async fn list(s: &Sluice, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let (st, _, b) = call(Method::GET, &s.url(path), headers, "").await;
    (st, json(&b))
}

fn ids(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data: {v}"))
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The list requests the mock received.
fn list_fetches(mock: &MockProvider) -> Vec<sluice_mock::RecordedRequest> {
    mock.requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1/models"))
        .collect()
}

#[tokio::test]
async fn exact_names_and_the_glob_routed_providers_ids_are_merged() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&models_config(&mock.url(), "", "")).await;
    let auth = format!("Bearer {KEY}");

    let (st, v) = list(&s, "/v1/models", &[("authorization", &auth)]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "list");
    // `other-model` is not listed: `other-*` maps it to another model.
    assert_eq!(
        ids(&v),
        [
            "gpt-4o-mini",
            "mock-model",
            "mock-model-large",
            "mock-embedding"
        ]
    );
    assert_eq!(v["data"][0]["owned_by"], "sluice");
    assert_eq!(v["data"][1]["owned_by"], "mock-openai");
    assert_eq!(v["data"][1]["object"], "model");
    let fetched = list_fetches(&mock);
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].path, "/v1/models");
    assert_eq!(
        fetched[0].header("authorization"),
        Some(format!("Bearer {UPSTREAM_OPENAI_KEY}").as_str()),
        "fetched with the provider's configured key"
    );

    // One model: found when listed, else 404 in the caller's shape.
    let (st, v) = list(
        &s,
        "/v1/models/mock-model-large",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["id"], "mock-model-large");
    assert_eq!(v["object"], "model");
    let (st, v) = list(&s, "/v1/models/gpt-4o-mini", &[("authorization", &auth)]).await;
    assert_eq!(
        (st, v["id"].clone()),
        (StatusCode::OK, "gpt-4o-mini".into())
    );
    let (st, v) = list(&s, "/v1/models/other-model", &[("authorization", &auth)]).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(list_fetches(&mock).len(), 1, "the cached list answered");
}

#[tokio::test]
async fn anthropic_shape_lists_what_anthropic_clients_can_use() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&models_config(&mock.url(), "", "")).await;
    for (path, headers) in [
        (
            "/v1/models",
            vec![("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
        ),
        ("/anthropic/v1/models", vec![("x-api-key", KEY)]),
    ] {
        let (st, v) = list(&s, path, &headers).await;
        assert_eq!(st, StatusCode::OK, "{path}: {v}");
        // `mock-model` is in the provider's list but `claude-*` does not
        // match it; the configured OpenAI name is usable (translated), the
        // OpenAI provider's own list is not merged in.
        assert_eq!(
            ids(&v),
            ["gpt-4o-mini", "claude-mock-sonnet", "claude-mock-haiku"],
            "{path}"
        );
        assert_eq!(v["data"][1]["type"], "model");
        assert_eq!(v["data"][1]["display_name"], "claude-mock-sonnet");
        assert_eq!(v["has_more"], false);
        assert_eq!(v["first_id"], "gpt-4o-mini");
        assert_eq!(v["last_id"], "claude-mock-haiku");
        assert!(v.get("object").is_none());
    }
    let fetched = list_fetches(&mock);
    assert_eq!(fetched.len(), 1, "one fetch for both");
    assert_eq!(fetched[0].path, "/v1/models?limit=1000");
    assert_eq!(fetched[0].header("x-api-key"), Some(UPSTREAM_ANTHROPIC_KEY));
    assert!(fetched[0].header("anthropic-version").is_some());

    let (st, v) = list(
        &s,
        "/anthropic/v1/models/claude-mock-haiku",
        &[("x-api-key", KEY)],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["type"], "model");
    let (st, v) = list(
        &s,
        "/anthropic/v1/models/gpt-4o-mini",
        &[("x-api-key", KEY)],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "usable through translation: {v}");
    let (st, v) = list(&s, "/anthropic/v1/models/mock-model", &[("x-api-key", KEY)]).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn the_keys_allow_list_filters_the_list_and_lookups() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&models_config(&mock.url(), "", "")).await;
    let limited = format!("Bearer {LIMITED}");
    let (st, v) = list(&s, "/v1/models", &[("authorization", &limited)]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(ids(&v), ["gpt-4o-mini", "mock-model-large"]);
    let (st, _) = list(
        &s,
        "/v1/models/mock-embedding",
        &[("authorization", &limited)],
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = list(
        &s,
        "/v1/models/mock-model-large",
        &[("authorization", &limited)],
    )
    .await;
    assert_eq!(st, StatusCode::OK);

    // The unrestricted key sees more, from the same cached list.
    let auth = format!("Bearer {KEY}");
    let (_, v) = list(&s, "/v1/models", &[("authorization", &auth)]).await;
    assert!(ids(&v).contains(&"mock-embedding".to_owned()));
    let (st, _) = list(&s, "/v1/models/mock-embedding", &[("authorization", &auth)]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list_fetches(&mock).len(), 1);
}

#[tokio::test]
async fn a_stampede_of_listings_causes_one_upstream_fetch() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&models_config(&mock.url(), "", "")).await;
    // The fetch is slow, so every listing below arrives while it is in flight.
    mock.push_fault(Fault::Delay(Duration::from_millis(500)));
    let url = s.url("/v1/models");
    let auth = format!("Bearer {KEY}");
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let (url, auth) = (url.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let (st, _, b) = call(Method::GET, &url, &[("authorization", &auth)], "").await;
            (st, json(&b))
        }));
    }
    for t in tasks {
        let (st, v) = t.await.expect("join");
        assert_eq!(st, StatusCode::OK);
        assert_eq!(ids(&v).len(), 4, "{v}");
    }
    assert_eq!(list_fetches(&mock).len(), 1, "one upstream call for all");
}

#[tokio::test]
async fn a_failing_provider_list_still_answers_the_configured_names() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&models_config(
        &mock.url(),
        "",
        "[providers.timeouts]\nfirst_byte = \"1s\"",
    ))
    .await;
    let auth = format!("Bearer {KEY}");
    mock.push_fault(Fault::Status {
        status: 500,
        body: String::new(),
        retry_after: None,
    });
    let (st, v) = list(&s, "/v1/models", &[("authorization", &auth)]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(ids(&v), ["gpt-4o-mini"]);
    // Not retried at once: the next listing answers without a fetch.
    let (st, v) = list(&s, "/v1/models", &[("authorization", &auth)]).await;
    assert_eq!(
        (st, ids(&v)),
        (StatusCode::OK, vec!["gpt-4o-mini".to_owned()])
    );
    assert_eq!(list_fetches(&mock).len(), 1);
    s.wait_log("provider model list unavailable").await;
    let (_, m) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.contains("sluice_model_list_failures_total{provider=\"mock-openai\"} 1"),
        "{m}"
    );

    // A provider that never answers: bounded by its first-byte timeout.
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&models_config(
        &mock.url(),
        "",
        "[providers.timeouts]\nfirst_byte = \"1s\"",
    ))
    .await;
    mock.push_fault(Fault::Hang);
    let (st, v) = list(&s, "/v1/models", &[("authorization", &auth)]).await;
    assert_eq!(
        (st, ids(&v)),
        (StatusCode::OK, vec!["gpt-4o-mini".to_owned()])
    );
    let (st, v) = list(&s, "/v1/models/mock-model", &[("authorization", &auth)]).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn a_client_key_lists_with_its_own_key_and_its_own_cache_entry() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&models_config(&mock.url(), "passthrough_keys = true", "")).await;
    let (st, v) = list(&s, "/v1/models", &[("authorization", "Bearer sk-client-a")]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(ids(&v).len(), 4, "{v}");
    let fetched = list_fetches(&mock);
    assert_eq!(fetched.len(), 1);
    assert_eq!(
        fetched[0].header("authorization"),
        Some("Bearer sk-client-a")
    );

    // Another client key: its own fetch, with its own key.
    list(&s, "/v1/models", &[("authorization", "Bearer sk-client-b")]).await;
    // The first again: cached.
    list(&s, "/v1/models", &[("authorization", "Bearer sk-client-a")]).await;
    let fetched = list_fetches(&mock);
    assert_eq!(fetched.len(), 2);
    assert_eq!(
        fetched[1].header("authorization"),
        Some("Bearer sk-client-b")
    );

    // A key the provider refuses: the configured names only, never an error.
    let (st, v) = list(&s, "/v1/models", &[("authorization", "Bearer bad-key")]).await;
    assert_eq!(
        (st, ids(&v)),
        (StatusCode::OK, vec!["gpt-4o-mini".to_owned()])
    );

    // A virtual key: the provider's configured key, never a client's.
    let auth = format!("Bearer {KEY}");
    list(&s, "/v1/models", &[("authorization", &auth)]).await;
    let fetched = list_fetches(&mock);
    assert_eq!(fetched.len(), 4);
    assert_eq!(
        fetched[3].header("authorization"),
        Some(format!("Bearer {UPSTREAM_OPENAI_KEY}").as_str())
    );
}
