//! Hostile clients and upstreams: the bounds on connections, header and body
//! times, SSE event and upstream body sizes, through the real binary.
//!
//! Timeouts here are short so the tests are quick; the assertions are about
//! behaviour (what the client gets), never about how long it took. The
//! outer `guard` only turns a hang into a failure.

#[path = "support/harness.rs"]
mod harness;

use std::future::Future;
use std::time::Duration;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::MockProvider;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Fails the test instead of hanging when something never happens.
async fn guard<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: never happened"))
}

/// Short client-side bounds for these tests.
const QUICK: &str = r#"
header_timeout = "1s"
idle_timeout = "1s"
body_timeout = "1s"
"#;

/// Reads until the peer closes the connection (EOF or reset); returns what
/// arrived before.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Status and JSON body of a raw HTTP/1.1 response.
fn parse_response(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn silent_connections_cannot_lock_out_a_real_request_under_a_low_fd_limit() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start_with_nofile(&config(&mock.url(), QUICK, ""), 256).await;
    // The cap comes from the fd limit, with room for upstream sockets.
    s.wait_log("max_connections=").await;
    let log = s.log();
    let cap: usize = log
        .split("max_connections=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no max_connections in the start log:\n{log}"));
    assert!(
        cap > 0 && cap <= 128,
        "cap {cap} leaves no room under 256 fds"
    );

    // More silent connections than the process has descriptors.
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(
            guard("connect", TcpStream::connect(s.data))
                .await
                .expect("connect"),
        );
    }
    // The admin plane has its own connections.
    let (status, _) = guard("readyz", get(&s.admin_url("/readyz"), &[]))
        .await
        .expect("admin answers while the data plane is full");
    assert_eq!(status, StatusCode::OK);
    // A real request waits its turn and is served.
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "still here"}]});
    let (status, _, resp) = guard("request", post(&s, "/v1/chat/completions", &[], &body)).await;
    assert_eq!(status, StatusCode::OK, "{resp:?}");
    assert_eq!(
        json(&resp)["choices"][0]["message"]["content"],
        "echo: still here"
    );
    // The silent ones were cut, not kept forever.
    let first = &mut silent[0];
    assert!(guard("close", read_until_closed(first)).await.is_empty());
    s.wait_log("connection limit reached").await;
    let (_, metrics) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(&format!("sluice_connection_limit{{plane=\"data\"}} {cap}")),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_connections_closed_total{plane=\"data\",reason=\"no_request\"}"),
        "{metrics}"
    );
    assert!(!s.log().contains("Too many open files"), "{}", s.log());
}

#[tokio::test]
async fn a_trickled_request_body_gets_408_in_the_api_shape() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), QUICK, "")).await;
    let mut stream = TcpStream::connect(s.data).await.expect("connect");
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: sluice\r\nx-api-key: {KEY}\r\n\
         anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n\
         content-length: 1000\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let (mut rd, mut wr) = stream.into_split();
    // One byte every 200 ms, far slower than the body timeout allows.
    let trickle = tokio::spawn(async move {
        for _ in 0..999 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    guard("408", async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    trickle.abort();
    let (status, body) = parse_response(&raw);
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(body["type"], "error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("server.body_timeout"),
        "{body}"
    );
    assert_eq!(mock.request_count(), 0, "nothing went upstream");
    let rec = &s.wait_usage(1).await[0];
    assert_eq!(
        (rec["status"].as_u64(), rec["error"].as_str()),
        (Some(408), Some("body_timeout"))
    );
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_h1_and_h2() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), QUICK, "")).await;

    // Headers trickled a byte at a time never become a request.
    let mut slow = TcpStream::connect(s.data).await.expect("connect");
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\n")
        .await
        .expect("request line");
    let (mut rd, mut wr) = slow.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..999 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 1024];
    guard("slow headers cut", async {
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    trickle.abort();

    // HTTP/1.1 keep-alive: answered, then closed once idle.
    let mut ka = TcpStream::connect(s.data).await.expect("connect");
    let req =
        format!("GET /v1/models HTTP/1.1\r\nhost: sluice\r\nauthorization: Bearer {KEY}\r\n\r\n");
    ka.write_all(req.as_bytes()).await.expect("request");
    let raw = guard("idle keep-alive closed", read_until_closed(&mut ka)).await;
    assert_eq!(
        parse_response(&raw).0,
        200,
        "{}",
        String::from_utf8_lossy(&raw)
    );

    // h2: a connection that served a request and then idles gets closed.
    let tcp = TcpStream::connect(s.data).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let req = http::Request::get(s.url("/v1/models"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("req");
    let resp = sender.send_request(req).await.expect("h2 request");
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp);
    guard("idle h2 closed", conn).await.expect("join").ok();
}

/// A streamed chat request whose upstream sends one endless event.
async fn endless(s: &Sluice, body: &Value, path: &str, anthropic: bool) -> (String, String) {
    let auth = format!("Bearer {KEY}");
    let mut headers = vec![("x-mock-endless-event-kb", "1024")];
    if anthropic {
        headers.extend([("x-api-key", KEY), ("anthropic-version", "2023-06-01")]);
    } else {
        headers.push(("authorization", auth.as_str()));
    }
    let resp = send(Method::POST, &s.url(path), &headers, body.to_string()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.headers()["x-sluice-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let all = guard("stream end", frames(resp.into_body()))
        .await
        .expect("the stream ends cleanly, with an error event")
        .concat();
    (id, String::from_utf8_lossy(&all).into_owned())
}

#[tokio::test]
async fn an_sse_event_past_the_bound_ends_the_stream_with_an_error_event() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "max_sse_event = \"256KiB\"", "")).await;
    let chat = |usage: bool| {
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": usage},
               "messages": [{"role": "user", "content": "hi"}]})
    };
    let last_data = |text: &str| -> Value {
        let data = sse_data(text.as_bytes());
        let last = data.last().expect("an event");
        serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("{e}: {}", &last[last.len().saturating_sub(400)..]))
    };

    // Forwarded as it came (the client asked for usage itself): the partial
    // event is closed by a blank line, then the error event follows.
    let (id, text) = endless(&s, &chat(true), "/v1/chat/completions", false).await;
    assert!(text.contains("xxxx"), "the event was being forwarded");
    assert!(text.len() < 1024 * 1024, "the event was cut at the bound");
    let err = last_data(&text);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("server.max_sse_event"),
        "{err}"
    );
    let rec = s.usage_for(&id).await;
    assert_eq!(rec["end"], "upstream_error", "{rec}");

    // Rewritten (Sluice asked for usage): whole events only, so none of the
    // oversized one reaches the client.
    let (_, text) = endless(&s, &chat(false), "/v1/chat/completions", false).await;
    assert!(!text.contains("xxxx"), "{text}");
    assert_eq!(last_data(&text)["error"]["code"], "upstream_stream_error");

    // Anthropic clients get Anthropic's error event.
    let msg = json!({"model": "claude-sonnet-4", "max_tokens": 10, "stream": true,
                     "messages": [{"role": "user", "content": "hi"}]});
    let (_, text) = endless(&s, &msg, "/v1/messages", true).await;
    assert!(
        text.trim_end().ends_with('}'),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    let tail = &text[text.rfind("event: ").expect("named event")..];
    assert!(tail.starts_with("event: error\n"), "{tail}");
    assert_eq!(last_data(&text)["type"], "error");

    // The upstream stream was dropped each time, not left running.
    for _ in 0..200 {
        if mock.cancelled_streams() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        mock.cancelled_streams() >= 3,
        "{}",
        mock.cancelled_streams()
    );
}

#[tokio::test]
async fn an_upstream_json_body_past_the_bound_is_a_clean_502() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "max_response_body = \"1MiB\"", "")).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, resp) = post(
        &s,
        "/v1/chat/completions",
        &[("x-mock-large-response-kb", "2048")],
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{resp:?}");
    let v = json(&resp);
    assert_eq!(v["error"]["code"], "upstream_response_too_large", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("server.max_response_body"));

    let msg = json!({"model": "claude-sonnet-4", "max_tokens": 10,
                     "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, resp) = call(
        Method::POST,
        &s.url("/v1/messages"),
        &[
            ("x-api-key", KEY),
            ("anthropic-version", "2023-06-01"),
            ("x-mock-large-response-kb", "2048"),
        ],
        msg.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let v = json(&resp);
    assert_eq!(
        (v["type"].as_str(), v["error"]["type"].as_str()),
        (Some("error"), Some("api_error"))
    );

    // Under the bound, the same answer passes.
    let (status, _, resp) = post(
        &s,
        "/v1/chat/completions",
        &[("x-mock-large-response-kb", "512")],
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(resp.len() > 512 * 1024);
}

#[tokio::test]
async fn a_json_body_that_stalls_is_cut_at_the_idle_timeout() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", "[timeouts]\nidle = \"1s\"\n")).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let (status, headers, resp) = guard(
        "answer",
        post(
            &s,
            "/v1/chat/completions",
            &[("x-mock-stall-after-bytes", "6")],
            &body,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{resp:?}");
    let v = json(&resp);
    assert_eq!(v["error"]["code"], "upstream_timeout");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("idle"),
        "{v}"
    );
    let id = headers["x-sluice-request-id"].to_str().expect("id");
    let rec = s.usage_for(id).await;
    assert_eq!(rec["status"], 504, "{rec}");
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection_and_the_upstream_is_cancelled() {
    let mock = MockProvider::start().await.expect("mock");
    let server = format!("{QUICK}\nmax_sse_event = \"256MiB\"");
    let s = Sluice::start(&config(&mock.url(), &server, "")).await;
    // A small receive window, and a stream far larger than every buffer on
    // the way (64 MiB, sent by the mock only as fast as it is taken).
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stream = socket.connect(s.data).await.expect("connect");
    let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: sluice\r\nauthorization: Bearer {KEY}\r\n\
         x-mock-endless-event-kb: 65536\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.expect("request");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = guard("response head", stream.read(&mut buf))
            .await
            .expect("read");
        assert!(n > 0, "closed before the response head");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Now read nothing more, keeping the socket open.
    let rec = &s.wait_usage(1).await[0];
    assert_eq!(rec["end"], "client_gone", "{rec}");
    for _ in 0..200 {
        if mock.cancelled_streams() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        mock.cancelled_streams(),
        1,
        "the upstream stream was dropped"
    );
    drop(stream);
}

#[tokio::test]
async fn an_h2_stream_the_client_stops_reading_loses_its_connection() {
    let mock = MockProvider::start().await.expect("mock");
    let server = format!("{QUICK}\nmax_sse_event = \"256MiB\"");
    let s = Sluice::start(&config(&mock.url(), &server, "")).await;
    let tcp = TcpStream::connect(s.data).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    // The connection keeps running (the socket is read, pings answered);
    // only the stream's window stays shut once its buffer is full.
    let conn = tokio::spawn(conn);
    let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "hi"}]});
    let req = http::Request::post(s.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {KEY}"))
        .header("x-mock-endless-event-kb", "65536")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .expect("req");
    let resp = sender.send_request(req).await.expect("h2 request");
    assert_eq!(resp.status(), StatusCode::OK);
    let rec = &s.wait_usage(1).await[0];
    assert_eq!(rec["end"], "client_gone", "{rec}");
    let _ = guard("connection closed", conn).await;
    drop(resp);
}
