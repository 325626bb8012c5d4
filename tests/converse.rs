//! AWS Bedrock's Converse API through the real binary against the mock's
//! Converse runtime (SigV4 verified in full): Anthropic clients served from
//! Converse JSON and event streams (text, tool use, usage with cache reads
//! and writes, cost), OpenAI chat clients through the crossing, a
//! non-Anthropic model, exception frames mid-stream (Converse's and
//! InvokeModel's) as Anthropic error events, Converse errors in the
//! client's shape, a fallback on 5xx, and requests Converse cannot take
//! refused before anything goes to AWS.

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use http::StatusCode;
use serde_json::{json, Value};
use sluice_mock::{Fault, MockProvider};

const CLAUDE: &str = "anthropic.claude-3-5-sonnet-20241022-v2:0";
const CLAUDE_PATH: &str = "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0";
const LLAMA: &str = "meta.llama3-1-70b-instruct-v1:0";
const WORDS: (&str, &str) = ("x-mock-words", "3");
const ANTHROPIC: (&str, &str) = ("anthropic-version", "2023-06-01");

/// `cv` (Bedrock through Converse, eu-west-3) and `iv` (Bedrock through
/// InvokeModel) on `bedrock`; `an` (Anthropic) on `anthropic`.
/// `claude-cv` and `llama-cv` are on Converse, falling back to
/// `claude-an`; `claude-iv` is on InvokeModel.
fn cfg(bedrock: &MockProvider, anthropic: &MockProvider) -> String {
    let aws = r#"region = "eu-west-3"
aws_access_key_id_env = "SLUICE_TEST_OPENAI_KEY"
aws_secret_access_key_env = "SLUICE_TEST_ANTHROPIC_KEY"
aws_session_token_env = "SLUICE_TEST_ADMIN_TOKEN""#;
    let b = bedrock.url();
    bare_config(&format!(
        r#"

[[providers]]
name = "cv"
kind = "bedrock"
bedrock_api = "converse"
base_url = "{b}"
{aws}

[[providers]]
name = "iv"
kind = "bedrock"
base_url = "{b}"
{aws}

[[providers]]
name = "an"
kind = "anthropic"
base_url = "{}"
api_key_env = "SLUICE_TEST_ANTHROPIC_KEY"

[[models]]
name = "claude-cv"
provider = "cv"
upstream_model = "{CLAUDE}"
fallbacks = ["claude-an"]

[[models]]
name = "llama-cv"
provider = "cv"
upstream_model = "{LLAMA}"

[[models]]
name = "claude-iv"
provider = "iv"
upstream_model = "{CLAUDE}"

[[models]]
name = "claude-an"
provider = "an"
upstream_model = "claude-3-5-haiku"

[[pricing]]
model = "{LLAMA}"
input = 0.72
output = 0.72
"#,
        anthropic.url()
    ))
}

async fn start() -> (Sluice, MockProvider, MockProvider) {
    let bedrock = MockProvider::start().await.expect("bedrock mock");
    bedrock.verify_aws_signatures(UPSTREAM_ANTHROPIC_KEY);
    let anthropic = MockProvider::start().await.expect("anthropic mock");
    let s = Sluice::start(&cfg(&bedrock, &anthropic)).await;
    (s, bedrock, anthropic)
}

fn messages(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 50, "stream": stream,
           "system": [{"type": "text", "text": "you are terse and precise",
                       "cache_control": {"type": "ephemeral"}}],
           "messages": [{"role": "user", "content": "hello"}]})
}

fn with_tools(mut body: Value) -> Value {
    body["tools"] = json!([{"name": "get_weather", "description": "the weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    body["messages"] = json!([{"role": "user", "content": "what is the weather?"}]);
    body
}

#[tokio::test]
async fn an_anthropic_client_is_served_through_converse_with_cache_usage_and_cost() {
    let (s, bedrock, _) = start().await;
    let (st, h, b) = post(
        &s,
        "/v1/messages",
        &[WORDS, ANTHROPIC],
        &messages("claude-cv", false),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let v = json(&b);
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], CLAUDE);
    assert_eq!(v["content"], json!([{"type": "text", "text": "w0 w1 w2"}]));
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("msg_bdrk_")));
    assert_eq!(h["x-sluice-provider"], "cv");

    // On the wire: Converse's path and body, signed, no Anthropic fields.
    let sent = bedrock.last_request().expect("sent");
    assert_eq!(sent.path, format!("{CLAUDE_PATH}/converse"));
    assert!(sent
        .header("authorization")
        .is_some_and(|a| a.contains("/eu-west-3/bedrock/aws4_request")));
    let body = sent.json().expect("json");
    assert_eq!(body["inferenceConfig"], json!({"maxTokens": 50}), "{body}");
    assert_eq!(
        body["system"],
        json!([{"text": "you are terse and precise"}, {"cachePoint": {"type": "default"}}])
    );
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"text": "hello"}]}])
    );
    for key in ["model", "stream", "max_tokens", "anthropic_version"] {
        assert_eq!(body.get(key), None, "{key} is no Converse field");
    }

    let (st, config) = admin_as(&s, http::Method::GET, "/admin/config").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        config["providers"][0]["bedrock_api"], "converse",
        "{config}"
    );
    assert_eq!(config["providers"][1]["bedrock_api"], "invoke");

    // The first call wrote the system prompt to the cache; the record says so.
    let first = s.usage_of_response(&h).await;
    assert_eq!(first["output_tokens"], 3, "{first}");
    assert!(
        first["cache_write_tokens"].as_u64().unwrap_or(0) > 0,
        "{first}"
    );
    assert!(first["cost_usd"].as_f64().expect("cost") > 0.0, "{first}");
    // The second reads it.
    let (st, h, b) = post(
        &s,
        "/v1/messages",
        &[WORDS, ANTHROPIC],
        &messages("claude-cv", false),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert!(
        json(&b)["usage"]["cache_read_input_tokens"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
    let second = s.usage_of_response(&h).await;
    assert!(
        second["cached_input_tokens"].as_u64().unwrap_or(0) > 0,
        "{second}"
    );
    assert!(
        second["cost_usd"].as_f64() < first["cost_usd"].as_f64(),
        "cache reads cost less: {first} {second}"
    );
}

#[tokio::test]
async fn a_converse_stream_reaches_an_anthropic_client_as_sse_frame_by_frame() {
    let (s, bedrock, _) = start().await;
    let extra = [WORDS, ANTHROPIC, ("x-mock-fragment", "1")];
    let (st, h, b) = post(&s, "/v1/messages", &extra, &messages("claude-cv", true)).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert!(h["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/event-stream"));
    let text = String::from_utf8_lossy(&b);
    assert!(text.starts_with("event: message_start\ndata: {"), "{text}");
    let evs = sse_events(&b);
    let kinds: Vec<&str> = evs.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds[..2],
        ["message_start", "content_block_start"],
        "{kinds:?}"
    );
    assert_eq!(
        kinds[kinds.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let said: String = evs
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(said, "w0 w1 w2");
    let delta = evs
        .iter()
        .find(|e| e["type"] == "message_delta")
        .expect("delta");
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 3, "{delta}");
    assert_eq!(
        bedrock.last_request().expect("sent").path,
        format!("{CLAUDE_PATH}/converse-stream")
    );
    let rec = s.usage_of_response(&h).await;
    assert_eq!(rec["output_tokens"], 3, "{rec}");
    assert!(rec["input_tokens"].as_u64().is_some_and(|n| n > 0), "{rec}");
    assert!(rec["cache_write_tokens"].as_u64().unwrap_or(0) > 0, "{rec}");
    assert_eq!(rec["end"], "complete", "{rec}");
    assert!(rec["cost_usd"].as_f64().expect("cost") > 0.0, "{rec}");
}

#[tokio::test]
async fn tool_use_goes_both_ways_through_converse() {
    let (s, bedrock, _) = start().await;
    let (st, _, b) = post(
        &s,
        "/v1/messages",
        &[ANTHROPIC],
        &with_tools(messages("claude-cv", false)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let v = json(&b);
    assert_eq!(v["stop_reason"], "tool_use", "{v}");
    let call = &v["content"][0];
    assert_eq!(call["type"], "tool_use");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["input"], json!({"city": "Paris"}));
    let sent = bedrock.last_request().expect("sent").json().expect("json");
    assert_eq!(
        sent["toolConfig"]["tools"][0]["toolSpec"]["name"],
        "get_weather"
    );

    // The result goes back as a toolResult; the model answers in text.
    let mut next = with_tools(messages("claude-cv", false));
    next["messages"] = json!([
        {"role": "user", "content": "what is the weather?"},
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "sunny"}]},
    ]);
    let (st, _, b) = post(&s, "/v1/messages", &[ANTHROPIC], &next).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["content"][0]["type"], "text");
    let sent = bedrock.last_request().expect("sent").json().expect("json");
    assert_eq!(
        sent["messages"][1]["content"][0]["toolUse"]["input"],
        json!({"city": "Paris"})
    );
    assert_eq!(
        sent["messages"][2]["content"][0]["toolResult"]["content"],
        json!([{"text": "sunny"}])
    );

    // Streamed: the input comes as input_json_delta pieces.
    let (st, _, b) = post(
        &s,
        "/v1/messages",
        &[ANTHROPIC],
        &with_tools(messages("claude-cv", true)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let evs = sse_events(&b);
    let start = evs
        .iter()
        .find(|e| e["type"] == "content_block_start")
        .expect("start");
    assert_eq!(start["content_block"]["type"], "tool_use", "{start}");
    assert_eq!(start["content_block"]["name"], "get_weather");
    let input: String = evs
        .iter()
        .filter_map(|e| e["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).expect("input"),
        json!({"city": "Paris"})
    );
    let delta = evs
        .iter()
        .find(|e| e["type"] == "message_delta")
        .expect("delta");
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn an_openai_client_reaches_a_converse_model_through_the_crossing() {
    let (s, bedrock, _) = start().await;
    let image = "data:image/png;base64,iVBORw0KGgo=";
    let chat = json!({"model": "llama-cv", "max_tokens": 50,
                      "messages": [{"role": "system", "content": "be brief"},
                                   {"role": "user", "content": [
                                       {"type": "text", "text": "hello"},
                                       {"type": "image_url", "image_url": {"url": image}}]}]});
    let (st, h, b) = post(&s, "/v1/chat/completions", &[WORDS], &chat).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let v = json(&b);
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "w0 w1 w2");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    let sent = bedrock.last_request().expect("sent");
    assert_eq!(
        sent.path,
        "/model/meta.llama3-1-70b-instruct-v1%3A0/converse"
    );
    let body = sent.json().expect("json");
    assert_eq!(body["system"], json!([{"text": "be brief"}]));
    // The data URL's base64 is the image's bytes, as Converse carries them.
    assert_eq!(
        body["messages"][0]["content"][1],
        json!({"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}})
    );
    let rec = s.usage_of_response(&h).await;
    assert_eq!(rec["upstream_model"], LLAMA, "{rec}");
    assert_eq!(rec["output_tokens"], 3, "{rec}");
    // Priced by a `[[pricing]]` entry for the Bedrock id.
    assert!(rec["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "{rec}");

    // Streamed, with a tool call: Converse frames → Anthropic events → chunks.
    let streamed = json!({"model": "claude-cv", "stream": true,
        "stream_options": {"include_usage": true},
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "messages": [{"role": "user", "content": "what is the weather?"}]});
    let (st, h, b) = post(&s, "/v1/chat/completions", &[], &streamed).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(sse_data(&b).last().map(String::as_str), Some("[DONE]"));
    let chunks = sse_events(&b);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).expect("args"),
        json!({"city": "Paris"})
    );
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
    let usage = chunks
        .iter()
        .find(|c| c["usage"].is_object())
        .expect("usage");
    assert!(
        usage["usage"]["prompt_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{usage}"
    );
    let rec = s.usage_of_response(&h).await;
    assert_eq!(rec["end"], "complete", "{rec}");
    assert!(bedrock
        .last_request()
        .expect("sent")
        .path
        .ends_with("/converse-stream"));
}

#[tokio::test]
async fn an_exception_frame_mid_stream_ends_it_with_an_anthropic_error_event() {
    let (s, _bedrock, _) = start().await;
    for (model, after) in [("claude-cv", "3"), ("claude-iv", "4")] {
        let extra = [
            WORDS,
            ANTHROPIC,
            ("x-mock-exception-after", after),
            ("x-mock-exception-type", "throttlingException"),
        ];
        let (st, h, b) = post(&s, "/v1/messages", &extra, &messages(model, true)).await;
        assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        let evs = sse_events(&b);
        assert_eq!(evs[0]["type"], "message_start", "{model}: {evs:?}");
        let last = evs.last().expect("events");
        assert_eq!(last["type"], "error", "{model}: {last}");
        assert_eq!(last["error"]["type"], "rate_limit_error", "{model}: {last}");
        assert_eq!(last["error"]["message"], "The model stream failed (mock).");
        assert!(!evs.iter().any(|e| e["type"] == "message_stop"), "{model}");
        let rec = s.usage_of_response(&h).await;
        assert_eq!(rec["error"], "upstream_stream_error", "{model}: {rec}");
    }
}

#[tokio::test]
async fn converse_errors_keep_their_status_and_a_5xx_falls_back() {
    let (s, bedrock, anthropic) = start().await;
    bedrock.push_fault(Fault::Status {
        status: 400,
        body: r#"{"message":"The model returned the following errors: bad"}"#.into(),
        retry_after: None,
    });
    let mut body = messages("claude-cv", false);
    let (st, _, b) = post(&s, "/v1/messages", &[ANTHROPIC], &body).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let v = json(&b);
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(
        v["error"]["message"],
        "The model returned the following errors: bad"
    );
    assert_eq!(anthropic.request_count(), 0, "a 400 does not fall back");

    // A 429 from a stream asked for: JSON, before any event; OpenAI's shape for OpenAI.
    bedrock.push_fault(Fault::Status {
        status: 429,
        body: r#"{"message":"Too many requests, please wait before trying again."}"#.into(),
        retry_after: None,
    });
    let chat = json!({"model": "llama-cv", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &chat).await;
    assert_eq!(
        st,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        String::from_utf8_lossy(&b)
    );
    let v = json(&b);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Too many requests")),
        "{v}"
    );

    // A 5xx walks to the fallback.
    bedrock.push_fault(Fault::Status {
        status: 500,
        body: String::new(),
        retry_after: None,
    });
    body["messages"] = json!([{"role": "user", "content": "again"}]);
    let before = anthropic.request_count();
    let (st, h, b) = post(&s, "/v1/messages", &[ANTHROPIC, WORDS], &body).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h["x-sluice-provider"], "an");
    assert_eq!(json(&b)["content"][0]["text"], "w0 w1 w2");
    assert_eq!(anthropic.request_count(), before + 1);
}

#[tokio::test]
async fn what_converse_cannot_take_is_a_400_naming_it_and_nothing_goes_to_aws() {
    let (s, bedrock, _) = start().await;
    for (field, value, needle) in [
        (
            "service_tier",
            json!("auto"),
            "`service_tier` has no equivalent on AWS Bedrock's Converse API",
        ),
        (
            "messages",
            json!([{"role": "user", "content": [{"type": "image",
                "source": {"type": "url", "url": "https://example.com/a.png"}}]}]),
            "`messages[0].content[0].source.type` \"url\"",
        ),
    ] {
        let mut body = messages("claude-cv", false);
        body[field] = value;
        let (st, _, b) = post(&s, "/v1/messages", &[ANTHROPIC], &body).await;
        assert_eq!(
            st,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&b)
        );
        let v = json(&b);
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle)),
            "{v}"
        );
    }
    assert_eq!(bedrock.request_count(), 0);
}
