//! Self-test of the mock provider used by the integration tests and the load harness.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use sluice_mock::{Fault, MockProvider};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn request(
    mock: &MockProvider,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("{}{}", mock.url(), path));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    builder.body(Full::new(body)).unwrap()
}

async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
    let response = client.request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, bytes)
}

async fn post_json(
    client: &HttpClient,
    mock: &MockProvider,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (StatusCode, HeaderMap, Bytes) {
    send(client, request(mock, Method::POST, path, headers, &body)).await
}

fn as_json(bytes: &Bytes) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The `data:` payloads of a data-only SSE body (OpenAI chat/completions).
fn data_events(bytes: &Bytes) -> Vec<String> {
    let text = std::str::from_utf8(bytes).unwrap();
    assert!(text.ends_with("\n\n"), "stream must end with a blank line");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap().to_owned())
        .collect()
}

/// `(event name, data)` pairs of a named-event SSE body (Anthropic, Responses).
fn named_events(bytes: &Bytes) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(bytes).unwrap();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (event_line, data_line) = e.split_once('\n').unwrap();
            let name = event_line.strip_prefix("event: ").unwrap().to_owned();
            let data: Value =
                serde_json::from_str(data_line.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name, "event name matches data.type");
            (name, data)
        })
        .collect()
}

fn chat_body(text: &str, stream: bool) -> Value {
    json!({"model": "gpt-test", "stream": stream, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": text}
    ]})
}

#[tokio::test]
async fn chat_non_stream_shape_and_recording() {
    let mock = MockProvider::start().await.unwrap();
    let client = client();
    let (status, headers, body) = post_json(
        &client,
        &mock,
        "/v1/chat/completions?trace=1",
        &[
            ("authorization", "Bearer sk-test"),
            ("content-type", "application/json"),
        ],
        chat_body("hello world", false),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-request-id"], "req_mock_1");
    let v = as_json(&body);
    assert_eq!(v["id"], "chatcmpl-mock-1");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-test");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello world");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // 2 messages * 3 + "be brief" (2) + "hello world" (2)
    assert_eq!(v["usage"]["prompt_tokens"], 10);
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], 13);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        0
    );

    // max_tokens truncation
    let mut req = chat_body("one two three four", false);
    req["max_tokens"] = json!(2);
    let (_, _, body) = post_json(&client, &mock, "/v1/chat/completions", &[], req).await;
    let v = as_json(&body);
    assert_eq!(v["choices"][0]["message"]["content"], "echo: one");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 2);

    // x-mock-words and malformed JSON
    let (_, _, body) = post_json(
        &client,
        &mock,
        "/v1/chat/completions",
        &[("x-mock-words", "4")],
        chat_body("x", false),
    )
    .await;
    assert_eq!(
        as_json(&body)["choices"][0]["message"]["content"],
        "w0 w1 w2 w3"
    );
    let bad = Request::post(format!("{}/v1/chat/completions", mock.url()))
        .body(Full::new(Bytes::from_static(b"{not json")))
        .unwrap();
    let (status, _, body) = send(&client, bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(as_json(&body)["error"]["type"], "invalid_request_error");

    assert_eq!(mock.request_count(), 4);
    let recorded = mock.requests();
    assert_eq!(recorded.len(), 4);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].path, "/v1/chat/completions?trace=1");
    assert_eq!(recorded[0].header("Authorization"), Some("Bearer sk-test"));
    assert_eq!(recorded[0].http_version, "HTTP/1.1");
    assert_eq!(recorded[0].json().unwrap()["model"], "gpt-test");
    assert_eq!(recorded[3].body, Bytes::from_static(b"{not json"));
    assert!(recorded[3].json().is_none());
    mock.shutdown().await;
}

#[tokio::test]
async fn chat_stream_without_include_usage() {
    let mock = MockProvider::start().await.unwrap();
    let client = client();
    let (status, headers, body) = post_json(
        &client,
        &mock,
        "/v1/chat/completions",
        &[],
        chat_body("hi there", true),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(!String::from_utf8_lossy(&body).contains("usage"));
    let events = data_events(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    // role chunk + 3 pieces + final
    assert_eq!(chunks.len(), 5);
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let content: String = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(content, "echo: hi there");
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "echo: ");
    assert!(chunks[1]["choices"][0]["finish_reason"].is_null());
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert!(chunks.iter().all(|c| c["id"] == "chatcmpl-mock-1"));
    mock.shutdown().await;
}

#[tokio::test]
async fn chat_stream_with_include_usage() {
    let mock = MockProvider::start().await.unwrap();
    let client = client();
    let mut req = chat_body("hi there", true);
    req["stream_options"] = json!({"include_usage": true});
    let (_, _, body) = post_json(&client, &mock, "/v1/chat/completions", &[], req).await;
    let events = data_events(&body);
    assert_eq!(events.len(), 7); // role, 3 pieces, finish, usage, [DONE]
    assert_eq!(events[6], "[DONE]");
    for event in &events[..5] {
        assert!(event.ends_with(",\"usage\":null}"), "{event}");
    }
    let usage_chunk: Value = serde_json::from_str(&events[5]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 10);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 3);
    assert_eq!(usage_chunk["usage"]["total_tokens"], 13);
    mock.shutdown().await;
}

fn req_with_tool_result() -> Value {
    json!({"model": "gpt-test", "messages": [
        {"role": "user", "content": "What's the weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_mock_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_mock_1", "content": "sunny"}
    ]})
}

#[tokio::test]
async fn chat_tool_call_stream() {
    let mock = MockProvider::start().await.unwrap();
    let client = client();
    let mut req = chat_body("What's the weather in Paris?", true);
    req["tools"] =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
    let (_, _, body) = post_json(&client, &mock, "/v1/chat/completions", &[], req.clone()).await;
    let events = data_events(&body);
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let first = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(first["id"], "call_mock_1");
    assert_eq!(first["function"]["name"], "get_weather");
    assert_eq!(first["function"]["arguments"], "");
    let args: String = chunks[1..chunks.len() - 1]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    req["stream"] = json!(false);
    let (_, _, body) = post_json(&client, &mock, "/v1/chat/completions", &[], req).await;
    let v = as_json(&body);
    assert!(v["choices"][0]["message"]["content"].is_null());
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");

    // After the tool result the mock answers with text.
    let mut follow_up = req_with_tool_result();
    follow_up["tools"] = json!([{"type": "function", "function": {"name": "get_weather"}}]);
    let (_, _, body) = post_json(&client, &mock, "/v1/chat/completions", &[], follow_up).await;
    let v = as_json(&body);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "echo: What's the weather?"
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn anthropic_messages_and_stream_order() {
    let mock = MockProvider::start().await.unwrap();
    let client = client();
    let body = json!({"model": "claude-test", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]});
    let (status, headers, resp) = post_json(
        &client,
        &mock,
        "/v1/messages",
        &[("x-api-key", "sk-ant")],
        body.clone(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "anthropic-version is required"
    );
    assert_eq!(headers["request-id"], "req_mock_1");
    let err = as_json(&resp);
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "invalid_request_error");

    let anthropic = [("x-api-key", "sk-ant"), ("anthropic-version", "2023-06-01")];
    let (status, _, resp) =
        post_json(&client, &mock, "/v1/messages", &anthropic, body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let events = named_events(&resp);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let start = &events[0].1["message"];
    assert_eq!(start["id"], "msg_mock_2");
    assert_eq!(start["model"], "claude-test");
    assert_eq!(start["usage"]["input_tokens"], 5);
    assert_eq!(start["usage"]["output_tokens"], 1);
    let text: String = events[3..6]
        .iter()
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "echo: hello there");
    assert_eq!(events[7].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(events[7].1["usage"]["output_tokens"], 3);

    let mut non_stream = body;
    non_stream["stream"] = json!(false);
    let (_, _, resp) = post_json(&client, &mock, "/v1/messages", &anthropic, non_stream).await;
    let v = as_json(&resp);
    assert_eq!(v["type"], "message");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "echo: hello there"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 5, "output_tokens": 3,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
               "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}})
    );

    let (_, _, resp) = post_json(
        &client,
        &mock,
        "/v1/messages/count_tokens",
        &anthropic,
        json!({"model": "m", "messages": [{"role": "user", "content": "a b c"}]}),
    )
    .await;
    assert_eq!(as_json(&resp), json!({"input_tokens": 6}));
    mock.shutdown().await;
}

#[tokio::test]
async fn anthropic_tool_use_and_prompt_cache() {
    let mock = MockProvider::start().await.unwrap();
    let client = client();
    let anthropic = [("anthropic-version", "2023-06-01")];
    let body = json!({"model": "claude-test", "max_tokens": 100,
        "system": [{"type": "text", "text": "a long shared system prompt", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}]});
    let (_, _, first) = post_json(&client, &mock, "/v1/messages", &anthropic, body.clone()).await;
    let (_, _, second) = post_json(&client, &mock, "/v1/messages", &anthropic, body).await;
    let (first, second) = (as_json(&first), as_json(&second));
    assert_eq!(first["usage"]["cache_creation_input_tokens"], 8);
    assert_eq!(first["usage"]["cache_read_input_tokens"], 0);
    assert_eq!(first["usage"]["input_tokens"], 4);
    assert_eq!(second["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(second["usage"]["cache_read_input_tokens"], 8);
    assert_eq!(second["usage"]["input_tokens"], 4);

    let tool_req = json!({"model": "claude-test", "max_tokens": 100, "stream": true,
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "weather in Paris?"}]});
    let (_, _, resp) = post_json(&client, &mock, "/v1/messages", &anthropic, tool_req).await;
    let events = named_events(&resp);
    assert_eq!(events[1].1["content_block"]["type"], "tool_use");
    assert_eq!(events[1].1["content_block"]["name"], "get_weather");
    let json_text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(json_text, "{\"city\":\"Paris\"}");
    let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
    mock.shutdown().await;
}

#[tokio::test]
async fn responses_stream_sequence() {
    let mock = MockProvider::start().await.unwrap();
    let client = client();
    let (_, _, resp) = post_json(
        &client,
        &mock,
        "/v1/responses",
        &[],
        json!({"model": "gpt-test", "input": "tell me", "stream": true}),
    )
    .await;
    let events = named_events(&resp);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    for (i, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], i);
    }
    assert_eq!(events[7].1["text"], "echo: tell me");
    let done = &events[10].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "echo: tell me");
    assert_eq!(done["usage"]["input_tokens"], 5);
    assert_eq!(done["usage"]["output_tokens"], 3);

    let (_, _, resp) = post_json(
        &client,
        &mock,
        "/v1/responses",
        &[],
        json!({"model": "gpt-test", "input": [{"role": "user", "content": [{"type": "input_text", "text": "yo"}]}]}),
    )
    .await;
    let v = as_json(&resp);
    assert_eq!(v["object"], "response");
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(v["output"][0]["content"][0]["text"], "echo: yo");
    mock.shutdown().await;
}

#[tokio::test]
async fn abort_after_is_a_body_error() {
    let mock = MockProvider::start().await.unwrap();
    let client = client();
    for attempt in 0..2 {
        let headers: &[(&str, &str)] = if attempt == 0 {
            &[("x-mock-abort-after", "2")]
        } else {
            mock.push_fault(Fault::AbortAfterChunks(2));
            &[]
        };
        let req = request(
            &mock,
            Method::POST,
            "/v1/chat/completions",
            headers,
            &chat_body("a b c d", true),
        );
        let response = client.request(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut received = Vec::new();
        let error = loop {
            match body.frame().await {
                Some(Ok(frame)) => received.extend_from_slice(frame.data_ref().unwrap()),
                Some(Err(err)) => break Some(err),
                None => break None,
            }
        };
        assert!(error.is_some(), "the stream must end with an error");
        let text = String::from_utf8(received).unwrap();
        assert_eq!(text.matches("data: ").count(), 2, "{text}");
        assert!(!text.contains("[DONE]"));
    }
    assert_eq!(
        mock.cancelled_streams(),
        0,
        "deliberate aborts are not cancellations"
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn endless_event_and_stalled_body_send_then_wait() {
    let mock = MockProvider::start().await.unwrap();
    let client = client();
    // One event, then a line of 40 KiB that never ends, then silence.
    let req = request(
        &mock,
        Method::POST,
        "/v1/chat/completions",
        &[("x-mock-endless-event-kb", "40")],
        &chat_body("a b c", true),
    );
    let mut body = client.request(req).await.unwrap().into_body();
    let mut received = Vec::new();
    while received.len() < 40 * 1024 {
        let frame = body.frame().await.unwrap().unwrap();
        received.extend_from_slice(frame.data_ref().unwrap());
    }
    let text = String::from_utf8(received).unwrap();
    let (first, rest) = text.split_once("\n\n").unwrap();
    assert!(first.starts_with("data: {"), "{first}");
    assert_eq!(rest.len(), "data: ".len() + 40 * 1024);
    assert!(!rest.contains('\n'));
    let more = tokio::time::timeout(Duration::from_millis(200), body.frame()).await;
    assert!(more.is_err(), "nothing after the endless line");
    drop(body);

    // A JSON body cut after 6 bytes, then silence.
    let req = request(
        &mock,
        Method::POST,
        "/v1/chat/completions",
        &[("x-mock-stall-after-bytes", "6")],
        &chat_body("a b c", false),
    );
    let mut body = client.request(req).await.unwrap().into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.data_ref().unwrap().len(), 6);
    let more = tokio::time::timeout(Duration::from_millis(200), body.frame()).await;
    assert!(more.is_err(), "nothing after the first bytes");
    drop(body);
    mock.shutdown().await;
}

#[tokio::test]
async fn fragment_mode_reassembles_to_the_same_bytes() {
    let mock = MockProvider::start().await.unwrap();
    let client = client();
    let text = "héllo wörld 🚀 ünïcode";
    let mut plain_req = chat_body(text, true);
    plain_req["stream_options"] = json!({"include_usage": true});
    let (_, _, plain) = post_json(
        &client,
        &mock,
        "/v1/chat/completions",
        &[],
        plain_req.clone(),
    )
    .await;
    let req = request(
        &mock,
        Method::POST,
        "/v1/chat/completions",
        &[("x-mock-fragment", "1")],
        &plain_req,
    );
    let response = client.request(req).await.unwrap();
    let mut body = response.into_body();
    let mut fragmented = Vec::new();
    let mut frames = 0;
    while let Some(frame) = body.frame().await {
        fragmented.extend_from_slice(frame.unwrap().data_ref().unwrap());
        frames += 1;
    }
    let fragmented = String::from_utf8(fragmented).unwrap();
    let plain = String::from_utf8(plain.to_vec()).unwrap();
    assert_eq!(
        fragmented.replace("chatcmpl-mock-2", "chatcmpl-mock-1"),
        plain
    );
    assert!(plain.contains("🚀"));
    assert!(
        frames > data_events(&Bytes::from(plain)).len(),
        "frames: {frames}"
    );

    // Anthropic events too (multi-line events).
    let anthropic = [("anthropic-version", "2023-06-01")];
    let body = json!({"model": "c", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": text}]});
    let (_, _, a) = post_json(&client, &mock, "/v1/messages", &anthropic, body.clone()).await;
    let (_, _, b) = post_json(
        &client,
        &mock,
        "/v1/messages",
        &[
            ("anthropic-version", "2023-06-01"),
            ("x-mock-fragment", "1"),
        ],
        body,
    )
    .await;
    let b = String::from_utf8(b.to_vec())
        .unwrap()
        .replace("msg_mock_4", "msg_mock_3");
    assert_eq!(b.as_bytes(), &a[..]);
    mock.shutdown().await;
}

#[tokio::test]
async fn faults_errors_and_auth() {
    let mock = MockProvider::start().await.unwrap();
    let client = client();
    mock.push_fault(Fault::Status {
        status: 429,
        body: "slow down".to_owned(),
        retry_after: Some(7),
    });
    let (status, headers, body) = post_json(
        &client,
        &mock,
        "/v1/chat/completions",
        &[],
        chat_body("x", false),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "7");
    let v = as_json(&body);
    assert_eq!(v["error"]["message"], "slow down");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["param"].is_null());

    // The fault was consumed: next request is normal.
    let (status, _, _) = post_json(
        &client,
        &mock,
        "/v1/chat/completions",
        &[],
        chat_body("x", false),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Header-driven status, Anthropic shape, default retry-after for 429.
    let (status, headers, body) = post_json(
        &client,
        &mock,
        "/v1/messages",
        &[
            ("anthropic-version", "2023-06-01"),
            ("x-mock-status", "429"),
        ],
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(as_json(&body)["error"]["type"], "rate_limit_error");

    let (status, _, body) = post_json(
        &client,
        &mock,
        "/v1/chat/completions",
        &[("authorization", "Bearer bad-key")],
        chat_body("x", false),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(as_json(&body)["error"]["code"], "invalid_api_key");
    let (status, _, body) = post_json(
        &client,
        &mock,
        "/v1/messages",
        &[
            ("x-api-key", "bad-key"),
            ("anthropic-version", "2023-06-01"),
        ],
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(as_json(&body)["error"]["type"], "authentication_error");

    // Delay fault then first-byte delay header.
    mock.push_fault(Fault::Delay(Duration::from_millis(60)));
    let started = Instant::now();
    let (status, _, _) = post_json(
        &client,
        &mock,
        "/v1/chat/completions",
        &[],
        chat_body("x", false),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert_eq!(mock.request_count(), 6);
    mock.shutdown().await;
}

#[tokio::test]
async fn client_disconnect_is_counted_and_closes_the_connection() {
    let mock = MockProvider::start().await.unwrap();
    let client = client();
    let req = request(
        &mock,
        Method::POST,
        "/v1/chat/completions",
        &[("x-mock-words", "50"), ("x-mock-delay-ms", "20")],
        &chat_body("x", true),
    );
    let response = client.request(req).await.unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().unwrap().starts_with(b"data: "));
    assert_eq!(mock.active_connections(), 1);
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(2);
    while (mock.cancelled_streams() != 1 || mock.active_connections() != 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(mock.cancelled_streams(), 1);
    assert_eq!(mock.active_connections(), 0);

    // A hung request is released by shutdown.
    mock.push_fault(Fault::Hang);
    let req = request(
        &mock,
        Method::POST,
        "/v1/chat/completions",
        &[],
        &chat_body("x", false),
    );
    let pending = tokio::spawn(async move { client.request(req).await.is_err() });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!pending.is_finished());
    mock.shutdown().await;
    assert!(tokio::time::timeout(Duration::from_secs(1), pending)
        .await
        .unwrap()
        .unwrap());
}

#[tokio::test]
async fn h2c_and_gzip() {
    let mock = MockProvider::start().await.unwrap();
    let h2: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let (status, _, body) = post_json(
        &h2,
        &mock,
        "/v1/chat/completions",
        &[],
        chat_body("over h2", false),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        as_json(&body)["choices"][0]["message"]["content"],
        "echo: over h2"
    );
    let mut req = chat_body("streamed over h2", true);
    req["stream_options"] = json!({"include_usage": true});
    let (_, _, body) = post_json(
        &h2,
        &mock,
        "/v1/chat/completions",
        &[("x-mock-fragment", "1")],
        req,
    )
    .await;
    assert_eq!(data_events(&body).last().unwrap(), "[DONE]");
    assert_eq!(mock.requests()[0].http_version, "HTTP/2.0");

    let client = client();
    let (_, headers, body) = post_json(
        &client,
        &mock,
        "/v1/chat/completions",
        &[
            ("x-mock-gzip", "1"),
            ("accept-encoding", "gzip, br"),
            ("x-mock-large-response-kb", "4"),
        ],
        // The size modes ignore max_tokens.
        json!({"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(headers["content-encoding"], "gzip");
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut decoded)
        .unwrap();
    let v: Value = serde_json::from_str(&decoded).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len(),
        4096
    );
    // Without accept-encoding: plain.
    let (_, headers, body) = post_json(
        &client,
        &mock,
        "/v1/chat/completions",
        &[("x-mock-gzip", "1"), ("x-mock-echo-body", "1")],
        chat_body("x", false),
    )
    .await;
    assert!(headers.get("content-encoding").is_none());
    let body_len = mock.requests().last().unwrap().body.len();
    assert_eq!(
        as_json(&body)["choices"][0]["message"]["content"],
        format!("len:{body_len}")
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn embeddings_models_completions_and_echo() {
    let mock = MockProvider::start().await.unwrap();
    let client = client();
    let (_, _, body) = post_json(
        &client,
        &mock,
        "/v1/embeddings",
        &[],
        json!({"model": "emb", "input": ["a b", "c"]}),
    )
    .await;
    let v = as_json(&body);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_ne!(v["data"][0]["embedding"], v["data"][1]["embedding"]);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    // `vec:` chooses the vector; a malformed one falls back to the hash.
    let (_, _, body) = post_json(
        &client,
        &mock,
        "/v1/embeddings",
        &[],
        json!({"model": "emb", "input": ["vec:0.5,-1,2 words here", "vec:x,1 no"]}),
    )
    .await;
    let v = as_json(&body);
    assert_eq!(v["data"][0]["embedding"], json!([0.5, -1.0, 2.0]));
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["usage"]["prompt_tokens"], 5);

    let (_, _, body) = send(
        &client,
        request(&mock, Method::GET, "/v1/models", &[], &Value::Null),
    )
    .await;
    assert_eq!(as_json(&body)["data"][0]["id"], "mock-model");
    let (_, _, body) = send(
        &client,
        request(
            &mock,
            Method::GET,
            "/v1/models",
            &[("anthropic-version", "2023-06-01")],
            &Value::Null,
        ),
    )
    .await;
    assert_eq!(as_json(&body)["data"][0]["type"], "model");

    let (_, _, body) = post_json(
        &client,
        &mock,
        "/v1/completions",
        &[],
        json!({"model": "m", "prompt": "say this", "stream": true}),
    )
    .await;
    let events = data_events(&body);
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, "echo: say this");

    let (status, _, body) = send(
        &client,
        request(
            &mock,
            Method::GET,
            "/v1/echo-headers?q=1",
            &[("x-custom", "abc")],
            &Value::Null,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v = as_json(&body);
    assert_eq!(v["path"], "/v1/echo-headers?q=1");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["headers"]["x-custom"], "abc");
    mock.shutdown().await;
}
