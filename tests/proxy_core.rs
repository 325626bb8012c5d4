//! The streaming proxy core, end to end: the real `sluice` binary in front of
//! the mock provider, over real sockets.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::MockProvider;

async fn setup() -> (MockProvider, Sluice) {
    let mock = MockProvider::start().await.expect("mock");
    // The test key may use the files endpoints (a passthrough family).
    let s = Sluice::start(&config(
        &mock.url(),
        "passthrough = [\"files\", \"other\"]",
        "",
    ))
    .await;
    (mock, s)
}

#[tokio::test]
async fn chat_body_reaches_provider_byte_for_byte_with_provider_key() {
    let (mock, s) = setup().await;
    let body = json!({"model": "mock-model", "messages": [{"role": "user", "content": "héllo wörld"}], "temperature": 0});
    let (status, headers, resp) = post(&s, "/v1/chat/completions", &[], &body).await;
    assert_eq!(status, StatusCode::OK, "{resp:?}");
    let v = json(&resp);
    assert_eq!(v["choices"][0]["message"]["content"], "echo: héllo wörld");

    let seen = mock.last_request().expect("upstream request");
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.body,
        body.to_string().as_bytes(),
        "body must pass unchanged"
    );
    // The provider's own host (with its non-default port), once, never the client's.
    let hosts: Vec<_> = seen.headers.iter().filter(|(n, _)| n == "host").collect();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    let mock_host = mock
        .url()
        .trim_start_matches("http://")
        .split('/')
        .next()
        .map(str::to_owned);
    assert_eq!(Some(hosts[0].1.clone()), mock_host);
    assert_eq!(
        seen.header("authorization"),
        Some(&*format!("Bearer {UPSTREAM_OPENAI_KEY}"))
    );
    assert!(
        seen.headers.iter().all(|(_, v)| !v.contains(KEY)),
        "virtual key leaked upstream"
    );
    assert!(seen.header("x-sluice-user").is_none());

    assert!(headers.contains_key("x-sluice-request-id"));
    assert_eq!(headers["x-sluice-model"], "mock-model");
    assert_eq!(headers["x-sluice-provider"], "mock-openai");
    assert_eq!(headers["x-sluice-attempts"], "1");
    let rendered = format!("{headers:?}{}", String::from_utf8_lossy(&resp));
    assert!(
        !rendered.contains(UPSTREAM_OPENAI_KEY),
        "provider key leaked to the client"
    );

    let id = headers["x-sluice-request-id"].to_str().expect("id");
    let rec = s.usage_for(id).await;
    assert_eq!(rec["endpoint"], "chat_completions");
    assert_eq!(rec["model"], "mock-model");
    assert_eq!(rec["provider"], "mock-openai");
    assert_eq!(rec["user"], "alice");
    assert_eq!(rec["team"], "research");
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["input_tokens"], v["usage"]["prompt_tokens"]);
    assert_eq!(rec["output_tokens"], v["usage"]["completion_tokens"]);
    assert_eq!(rec["usage_source"], "provider");
    assert_eq!(
        rec["end"], "complete",
        "a sized body that was fully sent is complete"
    );
}

#[tokio::test]
async fn public_model_is_rewritten_to_upstream_model() {
    let (mock, s) = setup().await;
    let body =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "n": 1});
    let (status, headers, _) = post(&s, "/v1/chat/completions", &[], &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-sluice-model"], "mock-model");
    let seen = mock.last_request().expect("req").json().expect("json");
    assert_eq!(seen["model"], "mock-model");
    // Key order and every other field preserved.
    let keys: Vec<&String> = seen.as_object().expect("obj").keys().collect();
    assert_eq!(keys, vec!["model", "messages", "n"]);
    let id = headers["x-sluice-request-id"].to_str().expect("id");
    let rec = s.usage_for(id).await;
    assert_eq!(rec["model"], "gpt-4o-mini");
    assert_eq!(rec["upstream_model"], "mock-model");
}

#[tokio::test]
async fn stream_is_forwarded_event_by_event_not_buffered() {
    let (_mock, s) = setup().await;
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let auth = format!("Bearer {KEY}");
    let resp = send(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &[
            ("authorization", &auth),
            ("x-mock-words", "6"),
            ("x-mock-delay-ms", "150"),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    use http_body_util::BodyExt;
    // The first frame arrives while the provider still has ~1 s of events to send.
    let first = body
        .frame()
        .await
        .expect("frame")
        .expect("ok")
        .into_data()
        .expect("data");
    let first = String::from_utf8_lossy(&first).to_string();
    assert!(first.starts_with("data: "), "{first}");
    assert!(!first.contains("[DONE]"), "stream was buffered: {first}");
    let rest = frames(body).await.expect("rest");
    assert!(
        rest.len() >= 6,
        "events were coalesced: {} frames",
        rest.len()
    );
    let all: String = std::iter::once(first)
        .chain(rest.iter().map(|b| String::from_utf8_lossy(b).to_string()))
        .collect();
    assert_eq!(chat_stream_text(all.as_bytes()), "w0 w1 w2 w3 w4 w5");
}

#[tokio::test]
async fn injected_usage_is_invisible_to_the_client_but_recorded() {
    let (mock, s) = setup().await;
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "one two three"}]});
    let (status, headers, resp) = post(&s, "/v1/chat/completions", &[], &body).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&resp);
    assert!(
        !text.contains("usage"),
        "client saw usage it did not ask for:\n{text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(chat_stream_text(&resp), "echo: one two three");
    let upstream = mock.last_request().expect("req").json().expect("json");
    assert_eq!(upstream["stream_options"]["include_usage"], true);

    // Byte-for-byte what the provider sends without include_usage (ids aside).
    let (_, _, direct) = harness::call(
        Method::POST,
        &format!("{}/v1/chat/completions", mock.url()),
        &[("authorization", "Bearer x")],
        body.to_string(),
    )
    .await;
    let strip_ids = |b: &[u8]| -> Vec<Value> {
        sse_data(b)
            .iter()
            .filter(|d| d.as_str() != "[DONE]")
            .map(|d| {
                let mut v: Value = serde_json::from_str(d).expect("json");
                v["id"] = json!("");
                v["created"] = json!(0);
                v
            })
            .collect()
    };
    assert_eq!(strip_ids(&resp), strip_ids(&direct));

    let rec = s
        .usage_for(headers["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["usage_source"], "provider");
    assert_eq!(rec["output_tokens"], 4);
    assert_eq!(rec["end"], "complete");
    assert_eq!(rec["stream"], true);
}

#[tokio::test]
async fn client_requested_usage_is_kept() {
    let (_mock, s) = setup().await;
    let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "a b"}]});
    let (_, _, resp) = post(&s, "/v1/chat/completions", &[], &body).await;
    let data = sse_data(&resp);
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn fragmented_unicode_stream_reassembles_exactly() {
    let (_mock, s) = setup().await;
    let prompt = "naïve café 🚀 日本語 e\u{301} ok";
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": prompt}]});
    for extra in [
        vec![("x-mock-fragment", "1")],
        vec![("x-mock-fragment", "1"), ("x-mock-chunk-chars", "1")],
    ] {
        let (status, _, resp) = post(&s, "/v1/chat/completions", &extra, &body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(chat_stream_text(&resp), format!("echo: {prompt}"));
        assert!(!String::from_utf8_lossy(&resp).contains("usage"));
    }
}

#[tokio::test]
async fn two_megabyte_prompt_arrives_intact() {
    let (mock, s) = setup().await;
    let big: String = (0..2_000_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": big}]});
    let (status, _, resp) = post(
        &s,
        "/v1/chat/completions",
        &[("x-mock-echo-body", "1")],
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let sent = body.to_string();
    assert_eq!(
        json(&resp)["choices"][0]["message"]["content"],
        format!("len:{}", sent.len())
    );
    assert_eq!(mock.last_request().expect("req").body, sent.as_bytes());
}

#[tokio::test]
async fn parallel_streams_each_get_their_own_content() {
    let (_mock, s) = setup().await;
    let s = std::sync::Arc::new(s);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let prompt = format!("stream number {i}");
            let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": prompt}]});
            let (status, _, resp) = post(&s, "/v1/chat/completions", &[("x-mock-delay-ms", "5")], &body).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(chat_stream_text(&resp), format!("echo: {prompt}"));
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let records = s.wait_usage(100).await;
    assert!(records
        .iter()
        .all(|r| r["end"] == "complete" && r["output_tokens"] == 4));
}

#[tokio::test]
async fn anthropic_messages_stream_and_not() {
    let (mock, s) = setup().await;
    let body = json!({"model": "claude-sonnet-4", "max_tokens": 100, "messages": [{"role": "user", "content": "bonjour"}]});
    let headers = [
        ("x-api-key", KEY),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "tools-2024, premium-x"),
    ];
    let (status, h, resp) = call(
        Method::POST,
        &s.url("/v1/messages"),
        &headers,
        body.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{resp:?}");
    assert_eq!(json(&resp)["content"][0]["text"], "echo: bonjour");
    assert_eq!(h["x-sluice-provider"], "mock-anthropic");
    let seen = mock.last_request().expect("req");
    assert_eq!(seen.header("x-api-key"), Some(UPSTREAM_ANTHROPIC_KEY));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    // Only the betas the provider's config allows reach it with a virtual key.
    assert_eq!(seen.header("anthropic-beta"), Some("tools-2024"));
    assert!(seen.header("authorization").is_none());

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (status, h, resp) = call(
        Method::POST,
        &s.url("/v1/messages"),
        &headers,
        streamed.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&resp);
    assert!(text.contains("event: message_start") && text.contains("event: message_stop"));
    // Nothing is injected or removed for Anthropic streams.
    assert_eq!(
        mock.last_request().expect("req").body,
        streamed.to_string().as_bytes()
    );
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["endpoint"], "messages");
    assert_eq!(rec["output_tokens"], 2);
    assert_eq!(rec["end"], "complete");
}

#[tokio::test]
async fn anthropic_prefix_and_bearer_key_work() {
    let (mock, s) = setup().await;
    let body = json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let auth = format!("Bearer {KEY}");
    let (status, _, resp) = call(
        Method::POST,
        &s.url("/anthropic/v1/messages"),
        &[("authorization", &auth)],
        body.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{resp:?}");
    let seen = mock.last_request().expect("req");
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(
        seen.header("anthropic-version"),
        Some("2023-06-01"),
        "default version added"
    );
}

#[tokio::test]
async fn embeddings_responses_count_tokens_and_passthrough_paths() {
    let (mock, s) = setup().await;
    let (st, _, b) = post(
        &s,
        "/v1/embeddings",
        &[],
        &json!({"model": "m", "input": ["a", "b"]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(json(&b)["data"].as_array().map(Vec::len), Some(2));

    let (st, h, b) = post(
        &s,
        "/v1/responses",
        &[],
        &json!({"model": "m", "input": "hey"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(json(&b)["output"][0]["content"][0]["text"], "echo: hey");
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["endpoint"], "responses");
    assert!(rec["output_tokens"].as_u64().is_some());

    let (st, h, b) = post(
        &s,
        "/v1/responses",
        &[],
        &json!({"model": "m", "input": "hey", "stream": true}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(String::from_utf8_lossy(&b).contains("response.completed"));
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["usage_source"], "provider");

    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/messages/count_tokens"),
        &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
        json!({"model": "claude-x", "messages": [{"role": "user", "content": "a b c"}]})
            .to_string(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(json(&b)["input_tokens"].as_u64().is_some());

    // An unknown path passes through unchanged, query string included.
    // (Not `/v1/files`: a virtual key may not list a family.)
    let auth = format!("Bearer {KEY}");
    let (st, _, b) = call(
        Method::GET,
        &s.url("/v1/echo?purpose=batch"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(json(&b)["path"], "/v1/echo?purpose=batch");
    assert_eq!(
        mock.last_request().expect("req").path,
        "/v1/echo?purpose=batch"
    );
}

#[tokio::test]
async fn gzip_passes_through_on_passthrough_paths() {
    let (_mock, s) = setup().await;
    let auth = format!("Bearer {KEY}");
    let (st, h, b) = call(
        Method::GET,
        &s.url("/v1/echo"),
        &[
            ("authorization", &auth),
            ("accept-encoding", "gzip"),
            ("x-mock-gzip", "1"),
        ],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["content-encoding"], "gzip");
    let mut out = String::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&b[..])
        .read_to_string(&mut out)
        .expect("gzip");
    assert!(serde_json::from_str::<Value>(&out).is_ok(), "{out}");
}

#[tokio::test]
async fn models_are_listed_from_config_when_named() {
    let mock = MockProvider::start().await.expect("mock");
    // Exact names first, then the provider's own ids under the `*` glob
    // (see tests/models_list.rs).
    let s = Sluice::start(&config(&mock.url(), "", "")).await;
    let auth = format!("Bearer {KEY}");
    let (st, _, b) = call(
        Method::GET,
        &s.url("/v1/models"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        json(&b)["data"][0]["id"],
        "gpt-4o-mini",
        "exact names are listed"
    );
    drop(s);

    let cfg =
        config(&mock.url(), "", "").replace("name = \"gpt-4o-mini\"", "name = \"gpt-*-mini\"");
    let s = Sluice::start(&cfg).await;
    let before = mock.request_count();
    let (st, _, b) = call(
        Method::GET,
        &s.url("/v1/models"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        json(&b)["data"][0]["id"],
        "mock-model",
        "only globs: the provider's own list"
    );
    assert_eq!(mock.request_count(), before + 1);
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_and_is_accounted() {
    let (mock, s) = setup().await;
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let id = abandon_stream(
        &s,
        &body,
        &[("x-mock-words", "50"), ("x-mock-delay-ms", "100")],
        2,
    )
    .await;
    for _ in 0..100 {
        if mock.cancelled_streams() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        mock.cancelled_streams(),
        1,
        "upstream stream was not cancelled"
    );
    let rec = s.usage_for(&id).await;
    assert_eq!(rec["end"], "client_gone");
    assert_eq!(rec["usage_source"], "estimated");
    assert!(rec["output_tokens"].as_u64().unwrap_or(0) >= 1, "{rec}");
}

#[tokio::test]
async fn h2_clients_are_served() {
    let (_mock, s) = setup().await;
    let client: TestClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "h2 test"}]});
    let req = http::Request::post(s.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .expect("req");
    let resp = client.request(req).await.expect("h2 request");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let bytes = frames(resp.into_body()).await.expect("frames").concat();
    assert_eq!(chat_stream_text(&bytes), "echo: h2 test");
}

#[tokio::test]
async fn a_client_that_stops_at_the_final_event_got_everything() {
    use http_body_util::BodyExt;
    let (_mock, s) = setup().await;
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "a b"}]});
    let auth = format!("Bearer {KEY}");
    let resp = send(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &[("authorization", &auth), ("x-mock-delay-ms", "5")],
        body.to_string(),
    )
    .await;
    let id = resp.headers()["x-sluice-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let mut b = resp.into_body();
    let mut seen = String::new();
    // Like the SDKs: stop reading at `[DONE]`, before the body's own end.
    while !seen.contains("[DONE]") {
        let frame = b.frame().await.expect("frame").expect("ok");
        if let Ok(d) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&d));
        }
    }
    drop(b);
    let rec = s.usage_for(&id).await;
    assert_eq!(rec["end"], "complete", "{rec}");
}
