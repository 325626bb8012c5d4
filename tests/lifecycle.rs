//! Running Sluice: config checking, reload, admin plane, graceful shutdown, TLS.

#[path = "support/harness.rs"]
mod harness;

use std::process::Command;
use std::sync::Arc;

use harness::*;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use sluice_mock::MockProvider;

fn chat(model: &str, content: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

#[test]
fn check_lists_every_error_and_hash_key_matches() {
    let dir = temp_dir();
    let good = dir.join("good.toml");
    std::fs::write(&good, include_str!("../proxy.toml")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"nowhere\"\n[[providers]]\nname = \"x\"\nkind = \"smoke-signals\"\n[[models]]\nname = \"m\"\nprovider = \"nope\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml: server.listen"), "{err}");
    assert!(err.contains("providers[0].kind"), "{err}");
    assert!(err.contains("models[0].provider"), "{err}");
    assert!(err.contains("3 error(s)"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["hash-key", "sk-abc"])
        .output()
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        sha256_hex("sk-abc")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sighup_reload_is_atomic_and_refuses_bad_config() {
    let mock = MockProvider::start().await.expect("mock");
    let base = config(&mock.url(), "", "");
    let s = Sluice::start(&base).await;
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("gpt-4o-mini", "a")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-sluice-model"], "mock-model");

    s.write_config("[server\nthis is not toml");
    s.signal("HUP");
    s.wait_log("config reload refused").await;
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("gpt-4o-mini", "a")).await;
    assert_eq!(st, StatusCode::OK, "old config keeps serving");
    assert_eq!(h["x-sluice-model"], "mock-model");

    s.write_config(&base.replace(
        "upstream_model = \"mock-model\"",
        "upstream_model = \"mock-model-v2\"",
    ));
    s.signal("HUP");
    s.wait_log("config reloaded").await;
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("gpt-4o-mini", "a")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-sluice-model"], "mock-model-v2");
    assert_eq!(
        mock.last_request().expect("req").json().expect("json")["model"],
        "mock-model-v2"
    );
}

/// Sluice runs with transparent huge pages off (README, Bounds: heap pages),
/// so its idle heap is not held resident 2 MiB at a time. Kernels before
/// 6.x do not report the flag; there the test checks nothing.
#[tokio::test]
async fn transparent_huge_pages_are_off_for_the_proxy() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", "")).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).expect("status");
    let line = status.lines().find(|l| l.starts_with("THP_enabled:"));
    if let Some(line) = line.filter(|_| cfg!(feature = "small-heap-pages")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
}

/// The threads of a running Sluice, by name, with what each has written.
fn threads(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let dir = task.expect("task").path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        // `wchar` counts what the thread passed to write(2) and writev(2),
        // which is how responses reach their clients.
        let io = std::fs::read_to_string(dir.join("io")).unwrap_or_default();
        let written = io
            .lines()
            .find_map(|l| l.strip_prefix("wchar: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        out.push((name.trim().to_owned(), written));
    }
    out
}

/// `[server] workers`: that many threads serve the data plane (the main
/// thread and `sluice-worker-1..`), connections are spread over them, and
/// what they serve lands in the one shared usage log.
#[tokio::test]
async fn workers_serve_connections_on_their_own_threads() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "workers = 3", "")).await;
    let names: Vec<String> = threads(s.pid()).into_iter().map(|(n, _)| n).collect();
    for w in ["sluice-worker-1", "sluice-worker-2"] {
        assert!(names.iter().any(|n| n == w), "{w} missing in {names:?}");
    }
    assert!(!names.iter().any(|n| n == "sluice-worker-3"), "{names:?}");

    // Each call is a new connection: round robin gives each worker some.
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "spread"}]});
    let calls = (0..9).map(|_| post(&s, "/v1/chat/completions", &[], &body));
    for (st, _, b) in futures_util::future::join_all(calls).await {
        assert_eq!(st, StatusCode::OK);
        assert!(String::from_utf8_lossy(&b).contains("[DONE]"));
    }
    s.wait_usage(9).await;
    for (name, written) in threads(s.pid()) {
        if name.starts_with("sluice-worker-") {
            assert!(written > 0, "{name} served nothing");
        }
    }

    let one = Sluice::start(&config(&mock.url(), "workers = 1", "")).await;
    let names: Vec<String> = threads(one.pid()).into_iter().map(|(n, _)| n).collect();
    assert!(
        !names.iter().any(|n| n.starts_with("sluice-worker")),
        "{names:?}"
    );
    let (st, _, _) = post(&one, "/v1/chat/completions", &[], &body).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn admin_plane_metrics_and_token() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", "")).await;
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "count me"}]});
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &body).await;
    assert_eq!(st, StatusCode::OK);
    s.wait_usage(1).await;

    let (st, metrics) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
    assert_eq!(st, StatusCode::OK);
    let m = String::from_utf8_lossy(&metrics);
    for name in [
        "sluice_requests_total",
        "sluice_request_duration_seconds",
        "sluice_overhead_seconds",
        "sluice_ttft_seconds",
        "sluice_tokens_total",
        "sluice_upstream_attempts_total",
        "sluice_inflight_requests",
    ] {
        // A sample line (every described metric has HELP and TYPE lines).
        assert!(
            m.lines().any(|l| l.starts_with(name)),
            "missing {name} in\n{m}"
        );
    }
    assert!(m.contains("kind=\"output\""), "{m}");
    assert!(!m.contains("alice"), "user ids must not be labels");

    let (st, _) = get(&s.admin_url("/admin/config"), &[])
        .await
        .expect("admin");
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = get(
        &s.admin_url("/admin/config"),
        &[("authorization", "Bearer wrong")],
    )
    .await
    .expect("admin");
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (st, cfg) = get(&s.admin_url("/admin/config"), &[("authorization", &auth)])
        .await
        .expect("admin");
    assert_eq!(st, StatusCode::OK);
    let text = String::from_utf8_lossy(&cfg);
    assert!(text.contains("\"api_key_set\":true"), "{text}");
    assert!(
        !text.contains(UPSTREAM_OPENAI_KEY) && !text.contains(&sha256_hex(KEY)),
        "{text}"
    );

    let (st, _, b) = call(
        Method::POST,
        &s.admin_url("/admin/reload"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    let (st, ready) = get(&s.admin_url("/readyz"), &[]).await.expect("ready");
    assert_eq!((st, &ready[..]), (StatusCode::OK, &b"ready\n"[..]));
}

#[tokio::test]
async fn sigterm_drains_in_flight_streams_then_exits_zero() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", "")).await;
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let auth = format!("Bearer {KEY}");
    let resp = send(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &[
            ("authorization", &auth),
            ("x-mock-words", "10"),
            ("x-mock-delay-ms", "100"),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.expect("frame").expect("ok");
    assert!(first.is_data());
    let stopping = tokio::spawn(s.stop());
    let rest = frames(body).await.expect("stream completes during drain");
    let all = String::from_utf8_lossy(&rest.concat()).to_string();
    assert!(all.ends_with("data: [DONE]\n\n"), "{all}");
    let (status, usage) = stopping.await.expect("join");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        usage.contains("\"end\":\"complete\""),
        "usage flushed at exit: {usage}"
    );
}

fn ca_and_leaf(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).expect("write");
    std::fs::write(&cert_path, leaf.pem()).expect("write");
    std::fs::write(&key_path, leaf_key.serialize_pem()).expect("write");
    (ca_path, cert_path, key_path)
}

fn tls_client_config(ca_path: &std::path::Path) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca_path).expect("pem") {
        roots.add(c.expect("cert")).expect("add");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Terminates TLS on a local port and forwards the plaintext to `target`.
async fn tls_front(
    cert: &std::path::Path,
    key: &std::path::Path,
    target: std::net::SocketAddr,
) -> std::net::SocketAddr {
    let acceptor = sluice::server::tls_acceptor(&sluice::config::TlsFiles {
        cert: cert.to_owned(),
        key: key.to_owned(),
    })
    .expect("acceptor");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tls_on_both_sides_with_generated_certificates() {
    let dir = temp_dir();
    let (ca, cert, key) = ca_and_leaf(&dir);
    let mock = MockProvider::start().await.expect("mock");
    // Upstream over TLS, trusted through the provider's extra CA; the front
    // offers h2 by ALPN and forwards the bytes to the mock.
    let front = tls_front(&cert, &key, mock.addr).await;
    let upstream_url = format!("https://localhost:{}", front.port());
    let cfg = config(
        &mock.url(),
        &format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}",
            cert.display(),
            key.display()
        ),
        "",
    )
    .replacen(
        &format!("base_url = \"{}/v1\"", mock.url()),
        &format!(
            "base_url = \"{upstream_url}/v1\"\nca_file = \"{}\"",
            ca.display()
        ),
        1,
    );
    let s = Sluice::start(&cfg).await;

    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_client_config(&ca))
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let req = http::Request::post(format!(
        "https://localhost:{}/v1/chat/completions",
        s.data.port()
    ))
    .header("authorization", format!("Bearer {KEY}"))
    .body(http_body_util::Full::new(bytes::Bytes::from(
        chat("m", "over tls").to_string(),
    )))
    .expect("req");
    let resp = client.request(req).await.expect("tls request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2, "ALPN negotiates h2");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(
        json(&body)["choices"][0]["message"]["content"],
        "echo: over tls"
    );
    assert_eq!(mock.request_count(), 1);
    // The TLS front offers h2 by ALPN and the mock behind it speaks h2c, so
    // Sluice's upstream connection is HTTP/2.
    assert_eq!(mock.last_request().expect("req").http_version, "HTTP/2.0");
    // Later requests, one after another and then four at once, share that
    // one upstream connection (the front opens one to the mock per TLS
    // connection it accepts).
    let send = |text: &'static str| {
        let req = http::Request::post(format!(
            "https://localhost:{}/v1/chat/completions",
            s.data.port()
        ))
        .header("authorization", format!("Bearer {KEY}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            chat("m", text).to_string(),
        )))
        .expect("req");
        let client = client.clone();
        async move {
            let resp = client.request(req).await.expect("tls request");
            assert_eq!(resp.status(), StatusCode::OK);
            resp.into_body().collect().await.expect("body").to_bytes()
        }
    };
    for _ in 0..3 {
        send("again").await;
    }
    futures_util::future::join_all((0..4).map(|_| send("together"))).await;
    assert_eq!(mock.request_count(), 8);
    assert_eq!(mock.accepted_connections(), 1);

    // Without the extra CA the upstream certificate is refused: 502, not a hang.
    let cfg2 = cfg.replace(&format!("\nca_file = \"{}\"", ca.display()), "");
    let s2 = Sluice::start(&cfg2).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls_client_config(&ca))
                .https_only()
                .enable_http1()
                .build(),
        );
    let req = http::Request::post(format!(
        "https://localhost:{}/v1/chat/completions",
        s2.data.port()
    ))
    .header("authorization", format!("Bearer {KEY}"))
    .body(http_body_util::Full::new(bytes::Bytes::from(
        chat("m", "x").to_string(),
    )))
    .expect("req");
    let resp = client.request(req).await.expect("tls request");
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let _ = std::fs::remove_dir_all(dir);
}
