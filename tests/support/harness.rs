//! Runs the real `sluice` binary against a mock provider and talks to it
//! over real sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The virtual key every test config accepts.
pub const KEY: &str = "sk-sluice-test";
/// What Sluice sends upstream for that key.
pub const UPSTREAM_OPENAI_KEY: &str = "sk-upstream-openai";
pub const UPSTREAM_ANTHROPIC_KEY: &str = "sk-upstream-anthropic";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory for one test.
pub fn temp_dir() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("sluice-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// SHA-256 hex of a key (what `sluice hash-key` prints).
/// A 127.0.0.1 address nothing listens on, kept so while the socket lives:
/// bound but not listening, so connections to it are refused and no other
/// test's listener can take the port meanwhile (a dropped listener's port
/// can be handed out again at once).
pub fn refused_addr() -> (tokio::net::TcpSocket, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    (socket, addr)
}

pub fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// The standard test config: an OpenAI-compatible and an Anthropic provider,
/// both the mock at `mock_url`; `extra` is appended (more sections).
pub fn config(mock_url: &str, server_extra: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
trust_identity_headers = true
{server_extra}

[admin]
listen = "127.0.0.1:0"
token_env = "SLUICE_TEST_ADMIN_TOKEN"

[log]
level = "info,sluice=debug"
usage = "USAGE_PATH"

[state]
path = "STATE_PATH"

[[providers]]
name = "mock-openai"
kind = "openai-compatible"
client_keys = true
base_url = "{mock_url}/v1"
api_key_env = "SLUICE_TEST_OPENAI_KEY"

[[providers]]
name = "mock-anthropic"
kind = "anthropic"
base_url = "{mock_url}"
api_key_env = "SLUICE_TEST_ANTHROPIC_KEY"
anthropic_beta = ["tools-2024"]

[[models]]
name = "claude-*"
provider = "mock-anthropic"

[[models]]
name = "gpt-4o-mini"
provider = "mock-openai"
upstream_model = "mock-model"

[[models]]
name = "*"
provider = "mock-openai"

[[keys]]
name = "test"
sha256 = "{}"
user = "alice"
team = "research"

{extra}
"#,
        sha256_hex(KEY)
    )
}

/// A config with no providers or models of its own: listeners, usage log,
/// state, no retries and the test key (user `alice`), then `rest`.
pub fn bare_config(rest: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
token_env = "SLUICE_TEST_ADMIN_TOKEN"
[log]
usage = "USAGE_PATH"
[state]
path = "STATE_PATH"
[retry]
max_retries = 0
[[keys]]
sha256 = "{}"
user = "alice"
{rest}"#,
        sha256_hex(KEY)
    )
}

/// Puts a test directory's usage log and state file into a config.
fn fill(config: &str, dir: &Path) -> String {
    config
        .replace("USAGE_PATH", &dir.join("usage.jsonl").display().to_string())
        .replace("STATE_PATH", &dir.join("state.jsonl").display().to_string())
}

/// A running `sluice` process.
pub struct Sluice {
    child: Option<Child>,
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub usage_path: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    keep_dir: bool,
}

pub const ADMIN_TOKEN: &str = "admin-secret";

impl Sluice {
    /// Starts sluice on `config` (the text `USAGE_PATH` is replaced by the
    /// usage log path) and waits until it is ready.
    pub async fn start(config: &str) -> Sluice {
        Self::start_in(temp_dir(), config).await
    }

    /// Starts sluice with its files in `dir` (a restart reuses the dir).
    pub async fn start_in(dir: PathBuf, config: &str) -> Sluice {
        Self::launch(dir, config, None).await
    }

    /// Starts sluice under an open-files limit of `nofile` (soft and hard),
    /// set by the shell that then execs it.
    pub async fn start_with_nofile(config: &str, nofile: u64) -> Sluice {
        Self::launch(temp_dir(), config, Some(nofile)).await
    }

    async fn launch(dir: PathBuf, config: &str, nofile: Option<u64>) -> Sluice {
        let usage_path = dir.join("usage.jsonl");
        let config_path = dir.join("proxy.toml");
        std::fs::write(&config_path, fill(config, &dir)).expect("write config");
        let bin = env!("CARGO_BIN_EXE_sluice");
        let mut cmd = match nofile {
            None => Command::new(bin),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin);
                c
            }
        };
        let mut child = cmd
            .arg("--config")
            .arg(&config_path)
            .env("SLUICE_TEST_OPENAI_KEY", UPSTREAM_OPENAI_KEY)
            .env("SLUICE_TEST_ANTHROPIC_KEY", UPSTREAM_ANTHROPIC_KEY)
            .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("sluice listening") {
                        let _ = tx.send(line.clone());
                    }
                    log.lock().expect("log").push(line);
                }
            });
        }
        let line = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
            .await
            .expect("join")
            .unwrap_or_else(|_| {
                panic!(
                    "sluice did not start; log:\n{}",
                    log.lock().expect("log").join("\n")
                )
            });
        let field = |name: &str| -> SocketAddr {
            let start = line.find(&format!("{name}=")).expect("field") + name.len() + 1;
            let rest = &line[start..];
            let end = rest.find(' ').unwrap_or(rest.len());
            rest[..end].parse().expect("addr")
        };
        let s = Sluice {
            data: field("data"),
            admin: field("admin"),
            child: Some(child),
            dir,
            config_path,
            usage_path,
            log,
            keep_dir: false,
        };
        for _ in 0..100 {
            if let Ok(r) = get(&s.admin_url("/readyz"), &[]).await {
                if r.0 == StatusCode::OK {
                    return s;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sluice never became ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.data)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// The process log so far (stderr).
    pub fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Waits until the log contains `needle` (up to 10 s).
    pub async fn wait_log(&self, needle: &str) {
        for _ in 0..200 {
            if self.log().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("log never contained {needle:?}:\n{}", self.log());
    }

    /// Usage records written so far (whole lines only: the writer's buffer
    /// may have flushed part of the newest one, as a log tailer also sees).
    pub fn usage(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.usage_path).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .map(|l| serde_json::from_str(l).expect("usage line is JSON"))
            .collect()
    }

    /// Waits until at least `n` usage records exist (up to 10 s).
    pub async fn wait_usage(&self, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            let u = self.usage();
            if u.len() >= n {
                return u;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} usage records, have {:?}", self.usage());
    }

    /// The usage record of a request id.
    /// The usage record of the response whose headers are `h`.
    pub async fn usage_of_response(&self, h: &http::HeaderMap) -> Value {
        self.usage_for(h["x-sluice-request-id"].to_str().expect("id"))
            .await
    }

    pub async fn usage_for(&self, request_id: &str) -> Value {
        for _ in 0..200 {
            if let Some(r) = self
                .usage()
                .into_iter()
                .find(|r| r["request_id"] == request_id)
            {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no usage record for {request_id}: {:?}", self.usage());
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config_path, fill(text, &self.dir)).expect("write config");
    }

    /// `kill -9`, then wait; the directory (state, usage log) is kept for a
    /// restart with `start_in`.
    pub async fn kill9(mut self) -> PathBuf {
        self.signal("KILL");
        if let Some(mut c) = self.child.take() {
            let _ = tokio::task::spawn_blocking(move || c.wait()).await;
        }
        self.keep_dir = true;
        self.dir.clone()
    }

    /// SIGTERM, then wait for exit; the directory (state, usage log) is kept
    /// for a restart with `start_in`.
    pub async fn stop_keeping_dir(mut self) -> PathBuf {
        self.keep_dir = true;
        let dir = self.dir.clone();
        let (status, _) = self.stop().await;
        assert!(status.success(), "sluice exited with {status}");
        dir
    }

    /// SIGTERM, then wait for exit (up to 30 s); returns the exit status and
    /// the usage log as it was left.
    pub async fn stop(mut self) -> (ExitStatus, String) {
        self.signal("TERM");
        let mut child = self.child.take().expect("running");
        let status = tokio::task::spawn_blocking(move || {
            for _ in 0..300 {
                if let Some(st) = child.try_wait().expect("wait") {
                    return st;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            panic!("sluice did not exit after SIGTERM");
        })
        .await
        .expect("join");
        (
            status,
            std::fs::read_to_string(&self.usage_path).unwrap_or_default(),
        )
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn build(method: Method, url: &str, headers: &[(&str, &str)], body: Bytes) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body)).expect("request")
}

/// Sends a request and returns the streaming response.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<Incoming> {
    client()
        .request(build(method, url, headers, body.into()))
        .await
        .expect("request")
}

/// Sends a request and reads the whole response.
pub async fn call(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, Bytes) {
    let resp = send(method, url, headers, body).await;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, bytes)
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Result<(StatusCode, Bytes), String> {
    let resp = client()
        .request(build(Method::GET, url, headers, Bytes::new()))
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// POST JSON with the test key, reading the whole answer.
pub async fn post(
    s: &Sluice,
    path: &str,
    extra: &[(&str, &str)],
    body: &Value,
) -> (StatusCode, HeaderMap, Bytes) {
    let auth = format!("Bearer {KEY}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    call(Method::POST, &s.url(path), &headers, body.to_string()).await
}

pub fn json(b: &Bytes) -> Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

/// A client that goes away mid-stream: POSTs `body` to chat completions with
/// the test key, reads `frames` body frames, then drops the response.
/// Returns the request id.
pub async fn abandon_stream(
    s: &Sluice,
    body: &Value,
    mock_headers: &[(&str, &str)],
    frames: usize,
) -> String {
    use http_body_util::BodyExt;
    let auth = format!("Bearer {KEY}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(mock_headers);
    let resp = send(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &headers,
        body.to_string(),
    )
    .await;
    let id = resp.headers()["x-sluice-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let mut b = resp.into_body();
    for _ in 0..frames {
        b.frame().await.expect("frame").expect("ok");
    }
    id
}

/// Reads every data frame of a body, in order, as separate byte strings.
pub async fn frames(mut body: Incoming) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::new();
    while let Some(f) = body.frame().await {
        match f {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    out.push(d);
                }
            }
            Err(e) => return Err(format!("body error after {} frames: {e}", out.len())),
        }
    }
    Ok(out)
}

/// The `data:` payloads of an SSE body as JSON, `[DONE]` left out.
pub fn sse_events(body: &[u8]) -> Vec<Value> {
    sse_data(body)
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect()
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .map(str::to_owned)
        })
        .collect()
}

/// Concatenated assistant text of an OpenAI chat stream.
pub fn chat_stream_text(body: &[u8]) -> String {
    sse_data(body)
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

/// An admin call with the admin token, made by operator `platform-bob`.
pub async fn admin_as(s: &Sluice, method: Method, path_and_query: &str) -> (StatusCode, Value) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (st, _, b) = call(
        method,
        &s.admin_url(path_and_query),
        &[
            ("authorization", &auth),
            ("x-sluice-operator", "platform-bob"),
        ],
        "",
    )
    .await;
    (st, json(&b))
}

/// A short chat request to `gpt-4o-mini` with `key` as the bearer credential.
pub async fn chat_with_key(s: &Sluice, key: &str) -> (StatusCode, HeaderMap) {
    let auth = format!("Bearer {key}");
    let body = serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 5,
                                  "messages": [{"role": "user", "content": "hi"}]});
    let (st, h, _) = call(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await;
    (st, h)
}
