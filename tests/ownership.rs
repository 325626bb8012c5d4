//! Objects created through a virtual key (files, batches, stored responses,
//! ...) are reachable only through that key: another key gets 404 as if
//! they did not exist, nobody lists a family, and bodies cannot reference
//! another key's objects. Ownership survives a restart.

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::MockProvider;

const A: &str = "sk-sluice-tenant-a";
const B: &str = "sk-sluice-tenant-b";
/// A client's own provider key (passthrough mode).
const OWN: &str = "sk-own-provider-key";

fn cfg(mock: &MockProvider) -> String {
    let extra = format!(
        r#"
[[keys]]
name = "tenant-a"
sha256 = "{}"
user = "ann"
passthrough = ["files", "batches", "stored_responses", "stored_completions"]

[[keys]]
name = "tenant-b"
sha256 = "{}"
user = "bob"
passthrough = ["files", "batches", "stored_responses", "stored_completions"]
"#,
        sha256_hex(A),
        sha256_hex(B)
    );
    config(&mock.url(), "passthrough_keys = true", &extra).replace(
        "trust_identity_headers = true",
        "trust_identity_headers = false",
    )
}

async fn req(
    s: &Sluice,
    method: Method,
    path: &str,
    key: &str,
    body: Value,
) -> (StatusCode, Value, String) {
    let auth = format!("Bearer {key}");
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (st, _, b) = call(
        method,
        &s.url(path),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await;
    let text = String::from_utf8_lossy(&b).into_owned();
    (st, serde_json::from_slice(&b).unwrap_or(Value::Null), text)
}

async fn create_file(s: &Sluice, key: &str) -> String {
    // Asked for gzip (as SDKs do): Sluice still reads the answer's id.
    let auth = format!("Bearer {key}");
    let (st, h, b) = call(
        Method::POST,
        &s.url("/v1/files"),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("accept-encoding", "gzip"),
            ("x-mock-gzip", "1"),
        ],
        json!({"purpose": "batch"}).to_string(),
    )
    .await;
    assert!(h.get("content-encoding").is_none(), "{h:?}");
    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    assert_eq!(st, StatusCode::OK, "{v}");
    v["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn files_and_batches_belong_to_the_key_that_created_them() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&cfg(&mock)).await;
    let file = create_file(&s, A).await;
    let before = mock.request_count();

    // Another key: not found, whatever the method or sub-path; nothing sent.
    for (method, path) in [
        (Method::GET, format!("/v1/files/{file}")),
        (Method::DELETE, format!("/v1/files/{file}")),
        (Method::GET, format!("/v1/files/{file}/content")),
    ] {
        let (st, v, _) = req(&s, method.clone(), &path, B, Value::Null).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(v["error"]["message"].as_str().expect("msg").contains(&file));
    }
    // Nobody lists a family: the provider's list holds every key's objects.
    for key in [A, B] {
        let (st, v, _) = req(&s, Method::GET, "/v1/files", key, Value::Null).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(v["error"]["code"], "listing_not_allowed");
    }
    // A body naming another key's file: not found either.
    let batch = |input: &str| json!({"input_file_id": input, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let (st, v, _) = req(&s, Method::POST, "/v1/batches", B, batch(&file)).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    // A body Sluice cannot read the way every provider would (`NaN` is
    // Python's JSON; a duplicate key) is refused rather than passed on.
    let auth = format!("Bearer {B}");
    for body in [
        format!(r#"{{"input_file_id":"{file}","completion_window":NaN}}"#),
        format!(r#"{{"input_file_id":"file-b","input_file_id":"{file}"}}"#),
    ] {
        let (st, _, b) = call(
            Method::POST,
            &s.url("/v1/batches"),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await;
        assert_eq!(
            st,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&b)
        );
    }
    assert_eq!(
        mock.request_count(),
        before,
        "refusals never reach the provider"
    );

    // The owner reaches it.
    let (st, v, _) = req(
        &s,
        Method::GET,
        &format!("/v1/files/{file}"),
        A,
        Value::Null,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["path"], format!("/v1/files/{file}"));
    let (st, v, _) = req(&s, Method::POST, "/v1/batches", A, batch(&file)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let batch_id = v["id"].as_str().expect("batch id").to_owned();
    // Reading its batch gives the owner the batch's output file.
    let (st, v, _) = req(
        &s,
        Method::GET,
        &format!("/v1/batches/{batch_id}"),
        A,
        Value::Null,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let out = v["output_file_id"].as_str().expect("output").to_owned();
    let (st, _, _) = req(
        &s,
        Method::GET,
        &format!("/v1/files/{out}/content"),
        A,
        Value::Null,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    for path in [
        format!("/v1/batches/{batch_id}"),
        format!("/v1/files/{out}/content"),
    ] {
        let (st, v, _) = req(&s, Method::GET, &path, B, Value::Null).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}: {v}");
    }
    let (st, _, _) = req(
        &s,
        Method::DELETE,
        &format!("/v1/files/{file}"),
        A,
        Value::Null,
    )
    .await;
    assert_eq!(st, StatusCode::OK);

    // A client's own provider key is not a tenant of Sluice's: untouched.
    let (st, v, _) = req(
        &s,
        Method::GET,
        &format!("/v1/files/{file}"),
        OWN,
        Value::Null,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _, _) = req(&s, Method::GET, "/v1/files", OWN, Value::Null).await;
    assert_eq!(st, StatusCode::OK);

    // Anthropic message batches, refused in Anthropic's shape.
    let sref = &s;
    let anthropic = |key: &'static str, method: Method, path: String| async move {
        let (st, _, b) = call(
            method,
            &sref.url(&path),
            &[
                ("x-api-key", key),
                ("anthropic-version", "2023-06-01"),
                ("content-type", "application/json"),
            ],
            json!({"requests": []}).to_string(),
        )
        .await;
        (
            st,
            serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
        )
    };
    let (st, v) = anthropic(A, Method::POST, "/v1/messages/batches".into()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let mb = v["id"].as_str().expect("id").to_owned();
    let (st, v) = anthropic(B, Method::GET, format!("/v1/messages/batches/{mb}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "not_found_error");
    let (st, _) = anthropic(A, Method::GET, format!("/v1/messages/batches/{mb}")).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn stored_responses_and_completions_belong_to_their_key() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&cfg(&mock)).await;
    let ask = |extra: Value| {
        let mut b = json!({"model": "gpt-4o-mini", "input": "hello there"});
        if let (Value::Object(b), Value::Object(e)) = (&mut b, extra) {
            b.extend(e);
        }
        b
    };

    // A JSON answer.
    let (st, v, _) = req(&s, Method::POST, "/v1/responses", A, ask(json!({}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let resp = v["id"].as_str().expect("id").to_owned();
    // A streamed answer: the id is recorded before the client sees it.
    let (st, _, text) = req(
        &s,
        Method::POST,
        "/v1/responses",
        A,
        ask(json!({"stream": true})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let streamed = sse_data(text.as_bytes())
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|e| e["response"]["id"].as_str().map(str::to_owned))
        .expect("streamed response id");

    for id in [&resp, &streamed] {
        let path = format!("/v1/responses/{id}");
        let (st, v, _) = req(&s, Method::GET, &path, B, Value::Null).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
        let (st, v, _) = req(&s, Method::GET, &path, A, Value::Null).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        // Continuing the conversation: only its owner.
        let next = ask(json!({"previous_response_id": id}));
        let (st, v, _) = req(&s, Method::POST, "/v1/responses", B, next.clone()).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
        let (st, v, _) = req(&s, Method::POST, "/v1/responses", A, next).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }

    // Chat completions are stored (and owned) only with `store: true`.
    let chat = |store: bool| json!({"model": "gpt-4o-mini", "store": store, "messages": [{"role": "user", "content": "hi"}]});
    let (st, v, _) = req(&s, Method::POST, "/v1/chat/completions", A, chat(true)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let stored = v["id"].as_str().expect("id").to_owned();
    let (st, v, _) = req(&s, Method::POST, "/v1/chat/completions", A, chat(false)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let unstored = v["id"].as_str().expect("id").to_owned();
    let path = |id: &str| format!("/v1/chat/completions/{id}/messages");
    let (st, _, _) = req(&s, Method::GET, &path(&stored), A, Value::Null).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = req(&s, Method::GET, &path(&stored), B, Value::Null).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, _) = req(&s, Method::GET, &path(&unstored), A, Value::Null).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ownership_survives_a_restart() {
    let mock = MockProvider::start().await.expect("mock");
    let config = cfg(&mock);
    let s = Sluice::start(&config).await;
    let file = create_file(&s, A).await;
    let dir = s.stop_keeping_dir().await;
    assert!(path_exists(&dir.join("state.owners.jsonl")));

    let s = Sluice::start_in(dir, &config).await;
    let path = format!("/v1/files/{file}");
    let (st, v, _) = req(&s, Method::GET, &path, B, Value::Null).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v, _) = req(&s, Method::GET, &path, A, Value::Null).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}
