//! What the usage record says about the answer, through the real binary and
//! the mock provider: the finish reason, whether Sluice's own output cap was
//! applied and reached, the tools called — streamed and not, in the OpenAI
//! chat, Responses and Anthropic shapes — and latency by model on /metrics.

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::MockProvider;

/// The three API shapes: path, model, body fields for `text`, output-cap field.
#[derive(Clone, Copy, Debug)]
enum Api {
    Chat,
    Responses,
    Messages,
}

impl Api {
    const ALL: [Api; 3] = [Api::Chat, Api::Responses, Api::Messages];

    fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Responses => "/v1/responses",
            Api::Messages => "/v1/messages",
        }
    }

    fn body(self, text: &str, stream: bool) -> Value {
        match self {
            Api::Chat => json!({"model": "gpt-4o-mini", "stream": stream,
                "messages": [{"role": "user", "content": text}]}),
            Api::Responses => json!({"model": "gpt-4o-mini", "stream": stream, "input": text}),
            Api::Messages => json!({"model": "claude-mock-sonnet", "stream": stream,
                "messages": [{"role": "user", "content": text}]}),
        }
    }

    fn cap_field(self) -> &'static str {
        match self {
            Api::Chat | Api::Messages => "max_tokens",
            Api::Responses => "max_output_tokens",
        }
    }

    /// The finish reason of an answer cut at its output cap.
    fn at_cap(self) -> &'static str {
        match self {
            Api::Chat => "length",
            Api::Responses => "max_output_tokens",
            Api::Messages => "max_tokens",
        }
    }

    /// The finish reason of an answer that ended by itself.
    fn natural(self) -> &'static str {
        match self {
            Api::Chat => "stop",
            Api::Responses => "completed",
            Api::Messages => "end_turn",
        }
    }

    fn tool_finish(self) -> &'static str {
        match self {
            Api::Chat => "tool_calls",
            Api::Responses => "completed",
            Api::Messages => "tool_use",
        }
    }

    fn tools(self) -> Value {
        let params = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        let names = ["get_weather", "get_time"];
        let tool = |name: &str| match self {
            Api::Chat => {
                json!({"type": "function", "function": {"name": name, "parameters": params}})
            }
            Api::Responses => json!({"type": "function", "name": name, "parameters": params}),
            Api::Messages => json!({"name": name, "input_schema": params}),
        };
        Value::Array(names.iter().map(|n| tool(n)).collect())
    }
}

/// Sends `body` in `api`'s shape (with `x-mock-*` headers) and returns the
/// request's usage record.
async fn record(s: &Sluice, api: Api, body: &Value, mock_headers: &[(&str, &str)]) -> Value {
    let mut headers = vec![("content-type", "application/json")];
    let bearer = format!("Bearer {KEY}");
    match api {
        Api::Messages => {
            headers.push(("x-api-key", KEY));
            headers.push(("anthropic-version", "2023-06-01"));
        }
        _ => headers.push(("authorization", &bearer)),
    }
    headers.extend_from_slice(mock_headers);
    let (st, h, b) = call(Method::POST, &s.url(api.path()), &headers, body.to_string()).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "{api:?}: {}",
        String::from_utf8_lossy(&b)
    );
    let id = h["x-sluice-request-id"].to_str().expect("id");
    s.usage_for(id).await
}

async fn start(extra: &str) -> (MockProvider, Sluice) {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", extra)).await;
    (mock, s)
}

#[tokio::test]
async fn finish_reason_and_sluices_own_cap() {
    let (_mock, s) = start("[limits]\nmax_output_tokens = 3\n").await;
    let ten_words = [("x-mock-words", "10")];
    for api in Api::ALL {
        for stream in [false, true] {
            let what = format!("{api:?} stream={stream}");
            // No cap asked: Sluice adds its own (3), the answer stops at it.
            let r = record(&s, api, &api.body("hi", stream), &ten_words).await;
            assert_eq!(r["finish_reason"], api.at_cap(), "{what}: {r}");
            assert_eq!(r["output_capped"], true, "{what}: {r}");
            assert_eq!(r["stopped_at_cap"], true, "{what}: {r}");
            assert_eq!(r["output_tokens"], 3, "{what}: {r}");
            assert_eq!(
                (r["tool_calls"].as_u64(), &r["tool_names"]),
                (Some(0), &json!([]))
            );

            // The client's own, lower cap: the answer stops at it, not at Sluice's.
            let mut body = api.body("hi", stream);
            body[api.cap_field()] = json!(2);
            let r = record(&s, api, &body, &ten_words).await;
            assert_eq!(r["finish_reason"], api.at_cap(), "{what}: {r}");
            assert_eq!(r["output_capped"], false, "{what}: {r}");
            assert_eq!(r["stopped_at_cap"], false, "{what}: {r}");

            // Capped by Sluice, but the answer ends before the cap.
            let r = record(&s, api, &api.body("hi", stream), &[("x-mock-words", "2")]).await;
            assert_eq!(r["finish_reason"], api.natural(), "{what}: {r}");
            assert_eq!(r["output_capped"], true, "{what}: {r}");
            assert_eq!(r["stopped_at_cap"], false, "{what}: {r}");
        }
    }
}

#[tokio::test]
async fn tool_calls_are_counted_with_their_names() {
    let (_mock, s) = start("").await;
    for api in Api::ALL {
        for stream in [false, true] {
            let what = format!("{api:?} stream={stream}");
            let mut body = api.body("what is the weather in Paris?", stream);
            body["tools"] = api.tools();
            let r = record(&s, api, &body, &[]).await;
            assert_eq!(r["finish_reason"], api.tool_finish(), "{what}: {r}");
            assert_eq!(r["tool_calls"], 1, "{what}: {r}");
            assert_eq!(r["tool_names"], json!(["get_weather"]), "{what}: {r}");
            assert_eq!(r["output_capped"], false, "{what}: {r}");
            // Three parallel calls of two tools: every call counted, each name once.
            let r = record(&s, api, &body, &[("x-mock-tool-calls", "3")]).await;
            assert_eq!(r["tool_calls"], 3, "{what}: {r}");
            assert_eq!(
                r["tool_names"],
                json!(["get_weather", "get_time"]),
                "{what}: {r}"
            );
            // No tools asked for: none counted.
            let r = record(&s, api, &api.body("hello", stream), &[]).await;
            assert_eq!(
                (r["tool_calls"].as_u64(), &r["tool_names"]),
                (Some(0), &json!([])),
                "{what}"
            );
            assert_eq!(r["finish_reason"], api.natural(), "{what}: {r}");
        }
    }
}

#[tokio::test]
async fn a_cache_hit_reports_the_cached_answers_finish_reason() {
    let (_mock, s) = start("[cache]\nmode = \"deterministic\"\n").await;
    let mut body = Api::Chat.body("what is the weather today?", false);
    body["tools"] = Api::Chat.tools();
    body["temperature"] = json!(0);
    let first = record(&s, Api::Chat, &body, &[]).await;
    let hit = record(&s, Api::Chat, &body, &[]).await;
    assert_eq!(hit["cache"], "hit", "{hit}");
    for field in ["finish_reason", "tool_calls", "tool_names"] {
        assert_eq!(hit[field], first[field], "{field}: {hit}");
    }
}

/// The metric lines of `name` (its samples, not its HELP/TYPE lines).
fn samples<'a>(metrics: &'a str, name: &str) -> Vec<&'a str> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .collect()
}

#[tokio::test]
async fn latency_by_model_on_metrics_with_unknown_models_collapsed() {
    let (_mock, s) = start("").await;
    for api in Api::ALL {
        record(&s, api, &api.body("hi", true), &[]).await;
    }
    // Models no rule names: the `*` and `claude-*` rules' patterns, never the name.
    let mut invented = Api::Chat.body("hi", false);
    invented["model"] = json!("invented-model-7f3a");
    record(&s, Api::Chat, &invented, &[]).await;
    let mut invented = Api::Messages.body("hi", true);
    invented["model"] = json!("claude-invented-9c1b");
    record(&s, Api::Messages, &invented, &[]).await;

    let (st, m) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
    assert_eq!(st, StatusCode::OK);
    let m = String::from_utf8_lossy(&m);
    for name in [
        "sluice_request_duration_seconds_count",
        "sluice_ttft_seconds_count",
    ] {
        let lines = samples(&m, name);
        let has = |endpoint: &str, model: &str| {
            lines.iter().any(|l| {
                l.contains(&format!("endpoint=\"{endpoint}\""))
                    && l.contains(&format!("model=\"{model}\""))
            })
        };
        assert!(has("chat_completions", "mock-model"), "{name}: {lines:?}");
        assert!(has("responses", "mock-model"), "{name}: {lines:?}");
        assert!(has("messages", "claude-*"), "{name}: {lines:?}");
        assert!(has("chat_completions", "*"), "{name}: {lines:?}");
        let buckets = samples(&m, &name.replace("_count", "_bucket"));
        assert!(
            buckets.iter().any(|l| l.contains("model=\"mock-model\"")),
            "{buckets:?}"
        );
    }
    assert!(
        !m.contains("invented"),
        "client-chosen names are never labels:\n{m}"
    );
}
