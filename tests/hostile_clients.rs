//! A shared gateway against a hostile client: every spelling of a path, odd
//! methods, duplicate JSON keys, decoy fields and invented routes are
//! refused or held to the key's allow-list, limits and budgets.

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::MockProvider;

/// A key that may use `gpt-4o-mini` only.
const NARROW: &str = "sk-sluice-narrow";
/// A key allowed the images endpoints, for `gpt-4o-mini` only.
const IMAGES: &str = "sk-sluice-images";

fn keys() -> String {
    format!(
        r#"
[[keys]]
name = "narrow"
sha256 = "{}"
user = "nora"
models = ["gpt-4o-mini"]

[[keys]]
name = "images"
sha256 = "{}"
user = "ida"
models = ["gpt-4o-mini"]
passthrough = ["images"]

[[models]]
name = "big-model"
provider = "mock-openai"
upstream_model = "big-upstream"

[[pricing]]
model = "big-upstream"
input = 10.0
output = 30.0

[[routing]]
model = "auto"
default = "gpt-4o-mini"
rules = [{{ header = "x-sluice-tier=strong", use = "big-model" }}]
"#,
        sha256_hex(NARROW),
        sha256_hex(IMAGES)
    )
}

/// A shared-gateway config: identity headers not trusted.
async fn gateway(server_extra: &str, extra: &str) -> (MockProvider, Sluice) {
    let mock = MockProvider::start().await.expect("mock");
    let cfg = config(&mock.url(), server_extra, &format!("{}{extra}", keys())).replace(
        "trust_identity_headers = true",
        "trust_identity_headers = false",
    );
    let s = Sluice::start(&cfg).await;
    (mock, s)
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn raw(s: &Sluice, method: Method, path: &str, key: &str, body: &str) -> (StatusCode, Value) {
    let auth = bearer(key);
    let (st, _, b) = call(
        method,
        &s.url(path),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        body.to_owned(),
    )
    .await;
    let v = serde_json::from_slice(&b).unwrap_or(Value::Null);
    (st, v)
}

fn chat(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

#[tokio::test]
async fn encoded_and_odd_paths_never_escape_the_allow_list() {
    let (mock, s) = gateway("", "").await;
    for path in [
        "/v1/chat/%63ompletions",
        "/v1/chat%2Fcompletions",
        "/v1/Chat/completions",
        "/v1//chat/completions",
        "/v1/./chat/completions",
        "/v1/chat/completions/",
        "/v1/../v1/chat/completions",
        "/anthropic/v1/../../v1/chat/completions",
        "/v1/chat/completions%2F..%2F..%2Fx",
        "/v1/chat\\completions",
    ] {
        let (st, v) = raw(&s, Method::POST, path, NARROW, &chat("gpt-4o")).await;
        assert!(matches!(st.as_u16(), 400 | 403 | 404), "{path}: {st} {v}");
        assert!(v["error"]["message"].is_string(), "{path}: {v}");
    }
    assert_eq!(mock.request_count(), 0, "nothing reached the provider");

    // A spelling that normalises to the endpoint is the endpoint, and what
    // goes upstream is the normalised path.
    let (st, v) = raw(
        &s,
        Method::POST,
        "/v1//chat/./completions/",
        NARROW,
        &chat("gpt-4o-mini"),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        mock.last_request().expect("req").path,
        "/v1/chat/completions"
    );
}

#[tokio::test]
async fn llm_endpoints_take_post_only() {
    let (mock, s) = gateway("", "").await;
    for (method, path) in [
        (Method::GET, "/v1/chat/completions"),
        (Method::DELETE, "/v1/chat/completions"),
        (Method::PUT, "/v1/responses"),
        (Method::GET, "/v1/messages"),
        (Method::PATCH, "/v1/embeddings"),
    ] {
        let (st, v) = raw(&s, method.clone(), path, KEY, "").await;
        assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {v}");
    }
    // Stored completions and responses are a passthrough family a key must
    // be allowed: one tenant never reads another's through the gateway key.
    for (method, path) in [
        (Method::GET, "/v1/responses/resp_123"),
        (Method::DELETE, "/v1/chat/completions/chatcmpl-1"),
        (Method::GET, "/v1/chat/completions/chatcmpl-1/messages"),
    ] {
        let (st, v) = raw(&s, method.clone(), path, KEY, "").await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "endpoint_not_allowed");
    }
    assert_eq!(mock.request_count(), 0);
    let (st, _) = raw(&s, Method::GET, "/v1/models", KEY, "").await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn passthrough_families_need_an_allowance() {
    let (mock, s) = gateway("", "").await;
    for path in [
        "/v1/files",
        "/v1/batches",
        "/v1/audio/speech",
        "/v1/messages/batches",
    ] {
        let (st, v) = raw(&s, Method::POST, path, KEY, "{}").await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{path}: {v}");
    }
    assert_eq!(mock.request_count(), 0);
    // Allowed a family: the key's model allow-list still holds there.
    let img = |m: &str| json!({"model": m, "prompt": "a cat"}).to_string();
    let (st, v) = raw(
        &s,
        Method::POST,
        "/v1/images/generations",
        IMAGES,
        &img("dall-e-3"),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "model_not_allowed");
    let (st, _) = raw(
        &s,
        Method::POST,
        "/v1/images/generations",
        IMAGES,
        &img("gpt-4o-mini"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(mock.request_count(), 1);
    // The same key under a budget: an unpriceable request is refused.
    let (mock, s) = gateway(
        "",
        "[[budgets]]\nname = \"daily\"\nscope = [\"user\"]\nwindow = \"day\"\nlimit_usd = 1.0\n\
         [[pricing]]\nmodel = \"mock-model\"\ninput = 1.0\noutput = 2.0\n",
    )
    .await;
    let (st, v) = raw(
        &s,
        Method::POST,
        "/v1/images/generations",
        IMAGES,
        &img("gpt-4o-mini"),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn duplicate_keys_are_refused_not_counted_as_zero() {
    let (mock, s) = gateway(
        "",
        "[limits]\nmax_input_tokens = 1000\n[[pricing]]\nmodel = \"mock-model\"\ninput = 1.0\noutput = 2.0\n\
         [[budgets]]\nname = \"daily\"\nscope = [\"user\"]\nwindow = \"day\"\nlimit_usd = 0.05\n",
    )
    .await;
    let long = "word ".repeat(5_000);
    for body in [
        format!(
            r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hi"}}],"messages":[{{"role":"user","content":"{long}"}}]}}"#
        ),
        format!(
            r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hi","content":"{long}"}}]}}"#
        ),
        r#"{"model":"gpt-4o-mini","model":"big-model","messages":[]}"#.to_owned(),
        r#"{"model":"gpt-4o-mini","messages":"not a list"}"#.to_owned(),
    ] {
        let (st, v) = raw(&s, Method::POST, "/v1/chat/completions", NARROW, &body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    assert_eq!(mock.request_count(), 0);
    let long_model = json!({"model": "m".repeat(300), "messages": []}).to_string();
    let (st, v) = raw(&s, Method::POST, "/v1/chat/completions", KEY, &long_model).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap_or("").len() < 400,
        "{v}"
    );
}

#[tokio::test]
async fn each_endpoint_clamps_its_own_output_field() {
    let (mock, s) = gateway("", "[limits]\nmax_output_tokens = 100\n").await;
    let body = json!({"model": "gpt-4o-mini", "input": "hi", "max_tokens": 5, "max_output_tokens": 100000});
    let (st, _, b) = post(&s, "/v1/responses", &[], &body).await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    let sent = mock.last_request().expect("req").json().expect("json");
    assert_eq!(sent["max_output_tokens"], 100, "{sent}");

    let body = json!({"model": "claude-x", "max_completion_tokens": 5, "max_tokens": 100000,
        "messages": [{"role": "user", "content": "hi"}]});
    let (st, _, b) = post(
        &s,
        "/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        &body,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    let sent = mock.last_request().expect("req").json().expect("json");
    assert_eq!(sent["max_tokens"], 100, "{sent}");

    // Chat carries two names for one cap: both are clamped.
    let body = json!({"model": "gpt-4o-mini", "max_completion_tokens": 5, "max_tokens": 100000,
        "messages": [{"role": "user", "content": "hi"}]});
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &body).await;
    assert_eq!(st, StatusCode::OK);
    let sent = mock.last_request().expect("req").json().expect("json");
    assert!(
        sent["max_tokens"].as_u64().is_some_and(|n| n <= 100),
        "{sent}"
    );
    assert!(
        sent["max_completion_tokens"]
            .as_u64()
            .is_some_and(|n| n <= 100),
        "{sent}"
    );
}

#[tokio::test]
async fn many_choices_are_priced_as_many() {
    let (mock, s) = gateway(
        "",
        "[limits]\nmax_request_cost_usd = 0.005\n\
         [[pricing]]\nmodel = \"mock-model\"\ninput = 1.0\noutput = 2.0\n\
         [[budgets]]\nname = \"daily\"\nscope = [\"user\"]\nwindow = \"day\"\nlimit_usd = 0.01\n",
    )
    .await;
    // 128 × 1000 output tokens at $2/1M is $0.256: over the $0.005 cap, so
    // each choice is clamped to what the cap affords (or refused).
    let body = json!({"model": "gpt-4o-mini", "n": 128, "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hi"}]});
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &body).await;
    if st == StatusCode::OK {
        let sent = mock.last_request().expect("req").json().expect("json");
        let per_choice = sent["max_tokens"].as_u64().expect("capped");
        assert!(per_choice * 128 * 2_000 <= 5_000_000, "{sent}");
    } else {
        assert_eq!(st, StatusCode::BAD_REQUEST, "{b:?}");
        assert_eq!(mock.request_count(), 0);
    }
    let (st, _, b) = post(
        &s,
        "/v1/chat/completions",
        &[],
        &json!({"model": "gpt-4o-mini", "n": 129,
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b:?}");
}

#[tokio::test]
async fn routed_models_obey_the_allow_list_and_headers_need_trust() {
    let (mock, s) = gateway("", "").await;
    // The tier header is not trusted: `auto` stays on the default model.
    let auth = bearer(NARROW);
    let h = [
        ("authorization", auth.as_str()),
        ("x-sluice-tier", "strong"),
    ];
    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &h,
        chat("auto"),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    assert_eq!(
        mock.last_request().expect("req").json().expect("j")["model"],
        "mock-model"
    );

    // Trusted headers route to the strong tier, which this key may not use.
    let (mock, s) = gateway("", "").await;
    drop(s);
    let cfg = config(&mock.url(), "", &keys());
    let s = Sluice::start(&cfg).await;
    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &h,
        chat("auto"),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b:?}");
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn client_keys_go_only_where_they_were_meant_to() {
    let mock = MockProvider::start().await.expect("mock");
    let extra = format!(
        r#"
[[providers]]
name = "third-party"
kind = "openai-compatible"
base_url = "{}/v1"
api_key_env = "SLUICE_TEST_OPENAI_KEY"

[[models]]
name = "third-*"
provider = "third-party"

[[models]]
name = "fallback-test"
provider = "third-party"
fallbacks = ["gpt-4o-mini"]
"#,
        mock.url()
    );
    // No catch-all rule: `third-*` must be the rule that matches.
    let cfg = config(&mock.url(), "passthrough_keys = true", &extra)
        .replace("name = \"*\"", "name = \"unused-*\"");
    let s = Sluice::start(&cfg).await;
    let own = [("authorization", "Bearer sk-client-own")];
    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &own,
        chat("third-x"),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b:?}");
    assert_eq!(mock.request_count(), 0, "the client's key went nowhere");
    // A chain that starts at such a provider skips it.
    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &own,
        chat("fallback-test"),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    let seen = mock.last_request().expect("req");
    assert_eq!(seen.json().expect("j")["model"], "mock-model");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-client-own"));
    // A virtual key reaches it with the gateway's key.
    let (st, _, _) = post(
        &s,
        "/v1/chat/completions",
        &[],
        &serde_json::from_str(&chat("third-x")).expect("j"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        mock.last_request().expect("req").header("authorization"),
        Some(format!("Bearer {UPSTREAM_OPENAI_KEY}").as_str())
    );
}

#[tokio::test]
async fn billing_headers_come_from_config_for_virtual_keys() {
    let mock = MockProvider::start().await.expect("mock");
    let cfg = config(&mock.url(), "", "").replace(
        "client_keys = true",
        "client_keys = true\norganization = \"org-gateway\"",
    );
    let s = Sluice::start(&cfg).await;
    let (st, _, _) = post(
        &s,
        "/v1/chat/completions",
        &[
            ("openai-organization", "org-victim"),
            ("openai-project", "proj-x"),
        ],
        &serde_json::from_str(&chat("gpt-4o-mini")).expect("j"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let seen = mock.last_request().expect("req");
    assert_eq!(seen.header_all("openai-organization"), vec!["org-gateway"]);
    assert!(seen.header("openai-project").is_none());
}

#[tokio::test]
async fn authorization_scheme_is_case_insensitive() {
    let (_mock, s) = gateway("", "").await;
    for h in [
        vec![("authorization", "BEARER sk-sluice-test")],
        vec![("authorization", "bearer sk-sluice-test")],
        vec![("authorization", "Basic Zm9vOmJhcg=="), ("x-api-key", KEY)],
    ] {
        let (st, _, b) = call(
            Method::POST,
            &s.url("/v1/chat/completions"),
            &h,
            chat("gpt-4o-mini"),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{h:?}: {b:?}");
    }
}

#[tokio::test]
async fn an_output_cap_over_the_window_is_named() {
    let (_mock, s) = gateway("", "").await;
    let body = json!({"model": "gpt-4o", "max_tokens": 10_000_000,
        "messages": [{"role": "user", "content": "hi"}]});
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &body).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let msg = json(&b)["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        msg.contains("max_tokens") && msg.contains("context length"),
        "{msg}"
    );
}
