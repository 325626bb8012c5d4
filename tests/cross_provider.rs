//! Routing across APIs through the real binary: an OpenAI chat client served
//! by an Anthropic deployment and an Anthropic messages client served by an
//! OpenAI one (JSON, streams, errors), and a fallback to the other API when
//! the primary fails. Each provider is its own mock, so what went where is
//! seen on the wire.

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use http::StatusCode;
use serde_json::{json, Value};
use sluice_mock::{Fault, MockProvider};

/// `oa` (OpenAI) on `openai`, `an` (Anthropic) on `anthropic`; `gpt-4o-mini`
/// only on OpenAI, `claude-3-5-haiku` only on Anthropic, and `primary`
/// (OpenAI) falling back to the Claude model.
fn cfg(openai: &MockProvider, anthropic: &MockProvider) -> String {
    bare_config(&format!(
        r#"

[[providers]]
name = "oa"
kind = "openai-compatible"
base_url = "{}/v1"
api_key_env = "SLUICE_TEST_OPENAI_KEY"

[[providers]]
name = "an"
kind = "anthropic"
base_url = "{}"
api_key_env = "SLUICE_TEST_ANTHROPIC_KEY"

[[models]]
name = "gpt-4o-mini"
provider = "oa"

[[models]]
name = "claude-3-5-haiku"
provider = "an"

[[models]]
name = "primary"
provider = "oa"
upstream_model = "gpt-4o-mini"
fallbacks = ["claude-3-5-haiku"]
"#,
        openai.url(),
        anthropic.url()
    ))
}

async fn start() -> (Sluice, MockProvider, MockProvider) {
    let openai = MockProvider::start().await.expect("openai mock");
    let anthropic = MockProvider::start().await.expect("anthropic mock");
    let s = Sluice::start(&cfg(&openai, &anthropic)).await;
    (s, openai, anthropic)
}

const WORDS: &[(&str, &str)] = &[("x-mock-words", "3")];

#[tokio::test]
async fn an_openai_client_is_served_by_an_anthropic_deployment() {
    let (s, openai, anthropic) = start().await;
    let body = json!({
        "model": "claude-3-5-haiku",
        "max_tokens": 50,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"}
        ]
    });
    let (st, h, b) = post(&s, "/v1/chat/completions", WORDS, &body).await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    let v = json(&b);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "w0 w1 w2");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(h["x-sluice-provider"], "an");
    // On the wire: Anthropic's path, body and headers.
    assert_eq!(openai.request_count(), 0);
    let sent = anthropic.last_request().expect("sent");
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    let sent = sent.json().expect("json");
    assert_eq!(sent["system"][0]["text"], "be brief", "{sent}");
    assert_eq!(sent["max_tokens"], 50);
    assert_eq!(sent["messages"][0]["role"], "user");
    assert_eq!(sent["messages"][0]["content"][0]["text"], "hello", "{sent}");
    // Usage and cost are the answering provider's.
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["provider"], "an");
    assert_eq!(rec["output_tokens"], 3);
    assert_eq!(
        v["usage"]["completion_tokens"], rec["output_tokens"],
        "the client's usage is the provider's"
    );
    assert!(rec["cost_usd"].as_f64().expect("cost") > 0.0, "{rec}");
}

#[tokio::test]
async fn an_openai_stream_from_an_anthropic_deployment_is_translated_chunk_by_chunk() {
    let (s, _openai, anthropic) = start().await;
    for include_usage in [false, true] {
        let mut body = json!({
            "model": "claude-3-5-haiku",
            "stream": true,
            "messages": [{"role": "user", "content": "hello"}]
        });
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let (st, h, b) = post(&s, "/v1/chat/completions", WORDS, &body).await;
        assert_eq!(st, StatusCode::OK, "{b:?}");
        assert!(h["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/event-stream"));
        let text = String::from_utf8_lossy(&b);
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let evs = sse_events(&b);
        assert!(evs.iter().all(|e| e["object"] == "chat.completion.chunk"));
        let content: String = evs
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "w0 w1 w2");
        let usage: Vec<&Value> = evs.iter().filter(|e| !e["usage"].is_null()).collect();
        assert_eq!(usage.len(), usize::from(include_usage), "{text}");
        assert_eq!(
            anthropic
                .last_request()
                .expect("sent")
                .json()
                .expect("json")["stream"],
            true
        );
        let rec = s
            .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
            .await;
        assert_eq!(rec["output_tokens"], 3, "{rec}");
        assert_eq!(rec["end"], "complete", "{rec}");
    }
}

#[tokio::test]
async fn an_anthropic_client_is_served_by_an_openai_deployment() {
    let (s, openai, anthropic) = start().await;
    let headers = [("x-mock-words", "3"), ("anthropic-version", "2023-06-01")];
    let body = json!({
        "model": "gpt-4o-mini",
        "max_tokens": 40,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello"}]
    });
    let (st, h, b) = post(&s, "/v1/messages", &headers, &body).await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    let v = json(&b);
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "w0 w1 w2");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(h["x-sluice-provider"], "oa");
    assert_eq!(anthropic.request_count(), 0);
    let sent = openai.last_request().expect("sent");
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("anthropic-version"), None);
    let sent = sent.json().expect("json");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );

    // Streamed: Anthropic's events, usage observed from OpenAI's usage chunk.
    let mut body = body;
    body["stream"] = json!(true);
    let (st, h, b) = post(&s, "/v1/messages", &headers, &body).await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    let text = String::from_utf8_lossy(&b);
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(text.contains("event: message_stop\n"), "{text}");
    let content: String = sse_events(&b)
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(content, "w0 w1 w2");
    let sent = openai.last_request().expect("sent").json().expect("json");
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["output_tokens"], 3, "{rec}");
    assert_eq!(rec["provider"], "oa");
}

#[tokio::test]
async fn errors_come_back_in_the_clients_shape_with_the_status_its_sdk_retries_on() {
    let (s, _openai, _anthropic) = start().await;
    let body =
        json!({"model": "claude-3-5-haiku", "messages": [{"role": "user", "content": "hi"}]});
    // Anthropic's 529 overloaded is OpenAI's 503.
    let (st, h, b) = post(
        &s,
        "/v1/chat/completions",
        &[("x-mock-status", "529")],
        &body,
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{b:?}");
    let v = json(&b);
    assert!(v["error"]["message"].is_string(), "{v}");
    assert!(v["error"]["type"].is_string(), "{v}");
    assert_eq!(h["content-type"], "application/json");
    // A 429 keeps its retry-after.
    let (st, h, b) = post(
        &s,
        "/v1/chat/completions",
        &[("x-mock-status", "429")],
        &body,
    )
    .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{b:?}");
    assert!(h.contains_key("retry-after"), "{h:?}");
    assert!(json(&b)["error"].is_object());
    // What cannot be translated is refused before anything is sent.
    let mut two = body.clone();
    two["n"] = json!(2);
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &two).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b:?}");
    assert_eq!(json(&b)["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn a_fallback_crosses_to_the_other_api_when_the_primary_fails() {
    let (s, openai, anthropic) = start().await;
    openai.push_fault(Fault::Status {
        status: 500,
        body: String::new(),
        retry_after: None,
    });
    let body = json!({"model": "primary", "messages": [{"role": "user", "content": "hello"}]});
    let (st, h, b) = post(&s, "/v1/chat/completions", WORDS, &body).await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    assert_eq!(h["x-sluice-provider"], "an");
    assert_eq!(h["x-sluice-model"], "claude-3-5-haiku");
    let v = json(&b);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "w0 w1 w2");
    assert_eq!(openai.request_count(), 1);
    let sent = anthropic.last_request().expect("fallback sent");
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.json().expect("json")["model"], "claude-3-5-haiku");
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    let log: Vec<String> = rec["attempt_log"]
        .as_array()
        .expect("log")
        .iter()
        .map(|a| format!("{}:{}", a["deployment"].as_str().expect("d"), a["status"]))
        .collect();
    assert_eq!(log, vec!["oa/gpt-4o-mini:500", "an/claude-3-5-haiku:200"]);
    assert_eq!(rec["provider"], "an");
    // Without a failure the primary answers, untranslated.
    let (st, h, b) = post(&s, "/v1/chat/completions", WORDS, &body).await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    assert_eq!(h["x-sluice-provider"], "oa");
}

#[tokio::test]
async fn check_says_which_fields_a_cross_api_route_drops() {
    let (openai, anthropic) = (
        MockProvider::start().await.expect("mock"),
        MockProvider::start().await.expect("mock"),
    );
    let dir = std::env::temp_dir().join(format!("sluice-cross-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("proxy.toml");
    let config = cfg(&openai, &anthropic)
        .replace("USAGE_PATH", &dir.join("usage.jsonl").display().to_string())
        .replace("STATE_PATH", &dir.join("state").display().to_string());
    std::fs::write(&path, config).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(r#"model "primary" routes to "claude-3-5-haiku""#),
        "{err}"
    );
    assert!(err.contains("translated to Anthropic"), "{err}");
    assert!(err.contains("seed"), "the dropped fields are named: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_request_translated_to_anthropic_gets_prompt_cache_breakpoints() {
    let openai = MockProvider::start().await.expect("mock");
    let anthropic = MockProvider::start().await.expect("mock");
    let config = cfg(&openai, &anthropic)
        + "\n[cache]\nanthropic_breakpoints = true\nbreakpoint_min_tokens = 100\n";
    let s = Sluice::start(&config).await;
    let body = json!({
        "model": "claude-3-5-haiku",
        "messages": [
            {"role": "system", "content": "policy ".repeat(400)},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"}
        ]
    });
    let (st, h, b) = post(&s, "/v1/chat/completions", WORDS, &body).await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    let sent = anthropic
        .last_request()
        .expect("sent")
        .json()
        .expect("json");
    assert_eq!(
        sent["system"][0]["cache_control"]["type"], "ephemeral",
        "{sent}"
    );
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert!(
        rec["prompt_cache_breakpoints"].as_u64().expect("n") >= 1,
        "{rec}"
    );
}

#[tokio::test]
async fn a_translated_answer_is_cached_in_the_clients_api() {
    let openai = MockProvider::start().await.expect("mock");
    let anthropic = MockProvider::start().await.expect("mock");
    let config = cfg(&openai, &anthropic) + "\n[cache]\nmode = \"deterministic\"\n";
    let s = Sluice::start(&config).await;
    for stream in [false, true] {
        let body = json!({
            "model": "claude-3-5-haiku",
            "temperature": 0,
            "stream": stream,
            "messages": [{"role": "user", "content": format!("cache me {stream}")}]
        });
        let (st, h, first) = post(&s, "/v1/chat/completions", WORDS, &body).await;
        assert_eq!(st, StatusCode::OK, "{first:?}");
        assert_eq!(h["x-sluice-cache"], "miss");
        let sent = anthropic.request_count();
        let (st, h, again) = post(&s, "/v1/chat/completions", WORDS, &body).await;
        assert_eq!(st, StatusCode::OK, "{again:?}");
        assert_eq!(h["x-sluice-cache"], "hit", "stream: {stream}");
        assert_eq!(anthropic.request_count(), sent, "answered from the cache");
        if stream {
            let text = |b: &[u8]| -> String {
                sse_events(b)
                    .iter()
                    .filter_map(|e| {
                        e["choices"][0]["delta"]["content"]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .collect()
            };
            assert_eq!(text(&again), "w0 w1 w2");
            assert_eq!(text(&again), text(&first));
        } else {
            let v = json(&again);
            assert_eq!(v["object"], "chat.completion");
            assert_eq!(v["choices"][0]["message"]["content"], "w0 w1 w2");
        }
    }
}

#[tokio::test]
async fn a_shadow_of_the_other_api_is_translated_and_compared_in_the_clients_words() {
    let openai = MockProvider::start().await.expect("mock");
    let anthropic = MockProvider::start().await.expect("mock");
    let config = cfg(&openai, &anthropic)
        + r#"
[[shadows]]
name = "try-claude"
model = "gpt-4o-mini"
shadow_model = "claude-3-5-haiku"
"#;
    let s = Sluice::start(&config).await;
    let tools = json!({"model": "gpt-4o-mini", "max_tokens": 50,
        "messages": [{"role": "user", "content": "what is the weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]});
    let (st, h, b) = post(&s, "/v1/chat/completions", &[], &tools).await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    assert_eq!(h["x-sluice-provider"], "oa");
    let id = h["x-sluice-request-id"].to_str().expect("id").to_owned();
    let copy = s.usage_for(&format!("{id}-shadow")).await;
    assert_eq!(copy["provider"], "an", "{copy}");
    assert_eq!(anthropic.last_request().expect("copy").path, "/v1/messages");
    assert_eq!(copy["tool_names"], json!(["get_weather"]), "{copy}");
    assert_eq!(
        copy["finish_reason"], "tool_calls",
        "in the client's words: {copy}"
    );
    assert_eq!(copy["comparison"]["finish_match"], true, "{copy}");
    assert_eq!(copy["comparison"]["tool_names_match"], true, "{copy}");
}
