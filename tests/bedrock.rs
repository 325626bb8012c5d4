//! AWS Bedrock (Anthropic models) through the real binary against the
//! mock's Bedrock runtime: Anthropic clients served as by Anthropic (JSON
//! and the binary event stream turned back into SSE), an OpenAI chat client
//! served through translation, SigV4 on the wire with the configured
//! region and credentials, errors in Anthropic's shape, a fallback from
//! Anthropic to Bedrock, and `sluice check` on a provider without a region.

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use http::StatusCode;
use serde_json::{json, Value};
use sluice_mock::{Fault, MockProvider};

const MODEL_ID: &str = "anthropic.claude-3-5-sonnet-20241022-v2:0";
const MODEL_PATH: &str = "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0";
const WORDS: &[(&str, &str)] = &[("x-mock-words", "3")];
const ANTHROPIC: (&str, &str) = ("anthropic-version", "2023-06-01");

/// `br` (Bedrock, region eu-west-3) on `bedrock` with credentials from the
/// harness's variables (access key id `sk-upstream-openai`, session token
/// `admin-secret`); `an` (Anthropic) on `anthropic`. `claude-br` is on
/// Bedrock; `claude-an` is on Anthropic, falling back to `claude-br`.
fn cfg(bedrock: &MockProvider, anthropic: &MockProvider, provider_extra: &str) -> String {
    bare_config(&format!(
        r#"

[[providers]]
name = "br"
kind = "bedrock"
base_url = "{}"
aws_access_key_id_env = "SLUICE_TEST_OPENAI_KEY"
aws_secret_access_key_env = "SLUICE_TEST_ANTHROPIC_KEY"
aws_session_token_env = "SLUICE_TEST_ADMIN_TOKEN"
anthropic_beta = ["tools-2024"]
{provider_extra}

[[providers]]
name = "an"
kind = "anthropic"
base_url = "{}"
api_key_env = "SLUICE_TEST_ANTHROPIC_KEY"

[[models]]
name = "claude-br"
provider = "br"
upstream_model = "{MODEL_ID}"

[[models]]
name = "claude-an"
provider = "an"
upstream_model = "claude-3-5-haiku"
fallbacks = ["claude-br"]
"#,
        bedrock.url(),
        anthropic.url()
    ))
}

async fn start() -> (Sluice, MockProvider, MockProvider) {
    let bedrock = MockProvider::start().await.expect("bedrock mock");
    // Signatures are checked in full, with the secret Sluice signs with.
    bedrock.verify_aws_signatures(UPSTREAM_ANTHROPIC_KEY);
    let anthropic = MockProvider::start().await.expect("anthropic mock");
    let s = Sluice::start(&cfg(&bedrock, &anthropic, "region = \"eu-west-3\"")).await;
    (s, bedrock, anthropic)
}

fn messages(stream: bool) -> Value {
    json!({"model": "claude-br", "max_tokens": 50, "stream": stream,
           "messages": [{"role": "user", "content": "hello"}]})
}

#[tokio::test]
async fn an_anthropic_client_is_served_by_bedrock_signed_with_sigv4() {
    let (s, bedrock, _) = start().await;
    let mut extra = WORDS.to_vec();
    extra.extend([ANTHROPIC, ("anthropic-beta", "tools-2024,secret-beta")]);
    let (st, h, b) = post(&s, "/v1/messages", &extra, &messages(false)).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let v = json(&b);
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "w0 w1 w2");
    assert_eq!(h["x-sluice-provider"], "br");

    // On the wire: Bedrock's path and body, SigV4, no Anthropic credentials.
    let sent = bedrock.last_request().expect("sent");
    assert_eq!(sent.path, format!("{MODEL_PATH}/invoke"));
    let auth = sent.header("authorization").expect("signed");
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=sk-upstream-openai/"),
        "{auth}"
    );
    assert!(
        auth.contains("/eu-west-3/bedrock/aws4_request, SignedHeaders="),
        "{auth}"
    );
    assert!(sent.header("x-amz-date").is_some());
    assert_eq!(sent.header("x-amz-security-token"), Some("admin-secret"));
    for h in ["x-api-key", "anthropic-version", "anthropic-beta"] {
        assert_eq!(sent.header(h), None, "{h} does not go to Bedrock");
    }
    assert!(!auth.contains(KEY), "the client's key stays home");
    let body = sent.json().expect("json");
    assert_eq!(body["anthropic_version"], "bedrock-2023-05-31");
    assert_eq!(
        body["anthropic_beta"],
        json!(["tools-2024"]),
        "allowed betas only"
    );
    assert_eq!(body.get("model"), None);
    assert_eq!(body.get("stream"), None);
    assert_eq!(body["max_tokens"], 50);

    // Usage from the answer; cost from the price table by the Bedrock id.
    let rec = s.usage_of_response(&h).await;
    assert_eq!(rec["provider"], "br");
    assert_eq!(rec["upstream_model"], MODEL_ID, "{rec}");
    assert_eq!(rec["output_tokens"], 3);
    assert!(rec["cost_usd"].as_f64().expect("cost") > 0.0, "{rec}");
    assert_eq!(
        h["x-sluice-cost-usd"]
            .to_str()
            .expect("cost")
            .parse::<f64>()
            .ok(),
        rec["cost_usd"].as_f64()
    );

    // The admin view says where the credentials come from, never what they are.
    let (st, config) = admin_as(&s, http::Method::GET, "/admin/config").await;
    assert_eq!(st, StatusCode::OK);
    let br = &config["providers"][0];
    assert_eq!(br["region"], "eu-west-3", "{br}");
    assert_eq!(br["aws_access_key_id_env"], "SLUICE_TEST_OPENAI_KEY");
    assert_eq!(br["api_key_set"], true);
    assert!(!config.to_string().contains(UPSTREAM_ANTHROPIC_KEY));
}

#[tokio::test]
async fn a_bedrock_event_stream_reaches_an_anthropic_client_as_sse() {
    let (s, bedrock, _) = start().await;
    let extra = [WORDS[0], ANTHROPIC, ("x-mock-fragment", "1")];
    let (st, h, b) = post(&s, "/v1/messages", &extra, &messages(true)).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert!(h["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/event-stream"));
    let text = String::from_utf8_lossy(&b);
    assert!(text.starts_with("event: message_start\ndata: {"), "{text}");
    let evs = sse_events(&b);
    let said: String = evs
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(said, "w0 w1 w2");
    assert_eq!(evs.last().expect("events")["type"], "message_stop");
    let sent = bedrock.last_request().expect("sent");
    assert_eq!(
        sent.path,
        format!("{MODEL_PATH}/invoke-with-response-stream")
    );
    assert_eq!(sent.json().expect("json").get("stream"), None);

    let rec = s.usage_of_response(&h).await;
    assert_eq!(rec["output_tokens"], 3, "{rec}");
    assert!(rec["input_tokens"].as_u64().is_some_and(|n| n > 0), "{rec}");
    assert_eq!(rec["end"], "complete", "{rec}");
    assert!(rec["cost_usd"].as_f64().expect("cost") > 0.0, "{rec}");
}

#[tokio::test]
async fn an_openai_chat_client_is_served_by_bedrock_through_translation() {
    let (s, bedrock, _) = start().await;
    let chat = json!({"model": "claude-br", "max_tokens": 50,
                      "messages": [{"role": "system", "content": "be brief"},
                                   {"role": "user", "content": "hello"}]});
    let (st, _, b) = post(&s, "/v1/chat/completions", WORDS, &chat).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let v = json(&b);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "w0 w1 w2");
    let sent = bedrock.last_request().expect("sent").json().expect("json");
    assert_eq!(sent["system"][0]["text"], "be brief", "{sent}");

    // Streamed: Bedrock frames → Anthropic events → OpenAI chunks.
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (st, h, b) = post(&s, "/v1/chat/completions", WORDS, &streamed).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(chat_stream_text(&b), "w0 w1 w2");
    let data = sse_data(&b);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks = sse_events(&b);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let usage = chunks
        .iter()
        .find(|c| c["usage"].is_object())
        .expect("usage");
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    let rec = s.usage_of_response(&h).await;
    assert_eq!(rec["output_tokens"], 3, "{rec}");
    assert_eq!(rec["end"], "complete", "{rec}");
    assert!(bedrock
        .last_request()
        .expect("sent")
        .path
        .ends_with("/invoke-with-response-stream"));
}

#[tokio::test]
async fn bedrock_errors_reach_clients_in_their_apis_shape() {
    let (s, bedrock, _) = start().await;
    let bad = || Fault::Status {
        status: 400,
        body: String::new(),
        retry_after: None,
    };
    bedrock.push_fault(bad());
    let (st, _, b) = post(&s, "/v1/messages", &[ANTHROPIC], &messages(false)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let v = json(&b);
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["message"], "Invalid request (mock).");

    // A stream asked for: the error is still JSON, before any event.
    bedrock.push_fault(Fault::Status {
        status: 429,
        body: r#"{"message":"Too many requests, please wait before trying again."}"#.into(),
        retry_after: None,
    });
    let (st, _, b) = post(&s, "/v1/messages", &[ANTHROPIC], &messages(true)).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    let v = json(&b);
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("Too many requests")));

    // An OpenAI client gets OpenAI's shape.
    bedrock.push_fault(bad());
    let chat = json!({"model": "claude-br", "messages": [{"role": "user", "content": "hi"}]});
    let (st, _, b) = post(&s, "/v1/chat/completions", &[], &chat).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let v = json(&b);
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert_eq!(v["error"]["message"], "Invalid request (mock).");
}

#[tokio::test]
async fn an_anthropic_deployment_falls_back_to_bedrock() {
    let (s, bedrock, anthropic) = start().await;
    anthropic.push_fault(Fault::Status {
        status: 500,
        body: String::new(),
        retry_after: None,
    });
    let mut body = messages(false);
    body["model"] = json!("claude-an");
    let (st, h, b) = post(&s, "/v1/messages", &[WORDS[0], ANTHROPIC], &body).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["content"][0]["text"], "w0 w1 w2");
    assert_eq!(h["x-sluice-provider"], "br");
    assert_eq!((anthropic.request_count(), bedrock.request_count()), (1, 1));
}

#[tokio::test]
async fn missing_credentials_and_a_missing_region_are_named() {
    let bedrock = MockProvider::start().await.expect("mock");
    let anthropic = MockProvider::start().await.expect("mock");
    let unset = "region = \"us-east-1\"\n".to_owned()
        + "aws_access_key_id_env = \"SLUICE_TEST_NO_SUCH_VARIABLE\"";
    let config = cfg(&bedrock, &anthropic, &unset).replacen(
        "aws_access_key_id_env = \"SLUICE_TEST_OPENAI_KEY\"\n",
        "",
        1,
    );
    let s = Sluice::start(&config).await;
    let (st, _, b) = post(&s, "/v1/messages", &[ANTHROPIC], &messages(false)).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    let text = String::from_utf8_lossy(&b);
    assert!(text.contains("SLUICE_TEST_NO_SUCH_VARIABLE"), "{text}");
    assert_eq!(bedrock.request_count(), 0);

    // `sluice check` refuses a Bedrock provider without a region.
    let dir = temp_dir();
    let path = dir.join("proxy.toml");
    let config = cfg(&bedrock, &anthropic, "")
        .replace("USAGE_PATH", &dir.join("usage.jsonl").display().to_string())
        .replace("STATE_PATH", &dir.join("state").display().to_string());
    std::fs::write(&path, config).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("providers[0].region: required for kind bedrock"),
        "{err}"
    );
}

#[tokio::test]
async fn a_signature_aws_would_not_accept_is_bedrocks_403_in_anthropics_shape() {
    let bedrock = MockProvider::start().await.expect("mock");
    let anthropic = MockProvider::start().await.expect("mock");
    bedrock.verify_aws_signatures("not-the-secret-sluice-has");
    let s = Sluice::start(&cfg(&bedrock, &anthropic, "region = \"eu-west-3\"")).await;
    let (st, _, b) = post(&s, "/v1/messages", &[ANTHROPIC], &messages(false)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let v = json(&b);
    assert_eq!(v["error"]["type"], "permission_error", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("The request signature we calculated does not match")));
}

#[tokio::test]
async fn a_clients_own_key_never_reaches_bedrock() {
    let bedrock = MockProvider::start().await.expect("mock");
    let anthropic = MockProvider::start().await.expect("mock");
    let config = cfg(&bedrock, &anthropic, "region = \"eu-west-3\"").replacen(
        "[server]\n",
        "[server]\npassthrough_keys = true\n",
        1,
    );
    let s = Sluice::start(&config).await;
    let (st, _, b) = call(
        http::Method::POST,
        &s.url("/v1/messages"),
        &[
            ("x-api-key", "sk-ant-clients-own"),
            ANTHROPIC,
            ("content-type", "application/json"),
        ],
        messages(false).to_string(),
    )
    .await;
    assert!(st.is_client_error() || st.is_server_error(), "{st}");
    assert!(!String::from_utf8_lossy(&b).contains("sk-ant-clients-own"));
    assert_eq!(bedrock.request_count(), 0, "nothing went to AWS");
}

#[tokio::test]
async fn a_bedrock_stream_cut_mid_way_ends_with_an_anthropic_error_event() {
    let (s, _bedrock, _anthropic) = start().await;
    let extra = [WORDS[0], ANTHROPIC, ("x-mock-abort-after", "3")];
    let (st, h, b) = post(&s, "/v1/messages", &extra, &messages(true)).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let evs = sse_events(&b);
    assert_eq!(evs[0]["type"], "message_start", "whole events went through");
    let last = evs.last().expect("events");
    assert_eq!(last["type"], "error", "{last}");
    assert!(!evs.iter().any(|e| e["type"] == "message_stop"));
    let rec = s.usage_of_response(&h).await;
    assert_ne!(rec["end"], "complete", "{rec}");
}

#[tokio::test]
async fn only_messages_requests_go_to_bedrock() {
    let (s, bedrock, _anthropic) = start().await;
    let body = json!({"model": "claude-br", "messages": [{"role": "user", "content": "hi"}]});
    let (st, _, b) = post(&s, "/v1/messages/count_tokens", &[ANTHROPIC], &body).await;
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    let v = json(&b);
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("serves only messages requests")));
    assert_eq!(bedrock.request_count(), 0);
}
