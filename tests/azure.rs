//! Azure OpenAI through the real binary: deployment URLs with the
//! configured `api-version`, the key in `api-key`, streaming and not, and a
//! client's own key carried in `api-key` when the provider allows client
//! keys.

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use serde_json::json;
use sluice_mock::MockProvider;

fn azure_config(mock_url: &str, client_keys: bool) -> String {
    let rule = r#"[[models]]
name = "gpt-4o-az"
provider = "mock-azure"
upstream_model = "prod-gpt4o"

[[models]]
name = "text-embedding-az"
provider = "mock-azure"
upstream_model = "embed-prod"

[[models]]
name = "*""#;
    config(
        mock_url,
        if client_keys {
            "passthrough_keys = true"
        } else {
            ""
        },
        &format!(
            "[[providers]]\nname = \"mock-azure\"\nkind = \"azure\"\nbase_url = \"{mock_url}\"\n\
             api_key_env = \"SLUICE_TEST_OPENAI_KEY\"\napi_version = \"2024-10-21\"\nclient_keys = {client_keys}\n"
        ),
    )
    .replacen("[[models]]\nname = \"*\"", rule, 1)
}

fn header<'a>(r: &'a sluice_mock::RecordedRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn chat_and_embeddings_go_to_deployment_urls_with_the_api_key_header() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&azure_config(&mock.url(), false)).await;
    let chat = json!({"model": "gpt-4o-az", "max_tokens": 5,
                      "messages": [{"role": "user", "content": "hi"}]});
    let (st, h, b) = post(
        &s,
        "/v1/chat/completions?api-version=1999-01-01",
        &[],
        &chat,
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let sent = mock.requests();
    let r = sent.last().expect("sent");
    assert_eq!(
        r.path, "/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21",
        "the deployment in the path, the configured version in the query"
    );
    assert_eq!(header(r, "api-key"), Some(UPSTREAM_OPENAI_KEY));
    assert_eq!(header(r, "authorization"), None, "no bearer token to Azure");
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["provider"], "mock-azure");
    assert!(rec["input_tokens"].as_u64().is_some(), "{rec}");

    // Streamed: the usage is read from the stream as for OpenAI.
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let (st, h, b) = post(&s, "/v1/chat/completions", &[], &streamed).await;
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&b).contains("[DONE]"));
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert!(
        rec["output_tokens"].as_u64().is_some_and(|n| n > 0),
        "{rec}"
    );

    let embed = json!({"model": "text-embedding-az", "input": "hello"});
    let (st, _, _) = post(&s, "/v1/embeddings", &[], &embed).await;
    assert_eq!(st, 200);
    assert_eq!(
        mock.requests().last().expect("sent").path,
        "/openai/deployments/embed-prod/embeddings?api-version=2024-10-21"
    );
}

#[tokio::test]
async fn a_clients_own_key_reaches_azure_in_api_key() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&azure_config(&mock.url(), true)).await;
    let chat = json!({"model": "gpt-4o-az", "max_tokens": 5,
                      "messages": [{"role": "user", "content": "hi"}]});
    let body = chat.to_string();
    let (st, _, _) = call(
        http::Method::POST,
        &s.url("/v1/chat/completions"),
        &[
            ("authorization", "Bearer azure-client-key"),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await;
    assert_eq!(st, 200);
    let sent = mock.requests();
    let r = sent.last().expect("sent");
    assert_eq!(header(r, "api-key"), Some("azure-client-key"));
    assert_eq!(header(r, "authorization"), None);
}
