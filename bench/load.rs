//! Load harness: the mock provider direct vs through Sluice vs through nginx, in one run.
//!
//! `cargo bench --bench load -- [--quick]` (or `bash bench/run.sh [--quick]`), after
//! `cargo build --release --bins`. It starts `target/release/sluice-mock`, `target/release/sluice`
//! in front of it and, when `nginx` is on PATH, nginx (`proxy_pass`, `proxy_buffering off`, one
//! worker, upstream keepalive) as a third arm. Every scenario runs each arm back to back
//! (direct, sluice, nginx) so machine noise hits them alike, and stops after N requests or 10 s,
//! whichever comes first. `--quick` cuts the counts about 10x.
//!
//! Reported per scenario and arm: latency p50/p90/p99 (whole response), time to the first body
//! frame, the gap between frames of paced streams, throughput, proxy CPU per request
//! (utime+stime from /proc/PID/stat), and Sluice's RSS (idle, peak under load, after, and with
//! 1,000 slow streams open). The Markdown report goes to stdout and `bench/out/latest.md`.
//!
//! The load generator shares the machine's cores with the mock and the proxy: it runs on one
//! two-worker tokio runtime, with one pooled client and pre-built request bodies.

// The report is this program's output.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "procfs.rs"]
mod procfs;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;

use procfs::{clk_tck, cpu_ticks, fd_count, stat_fields, status_kb};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Every scenario run stops after this long even if it has not sent all its requests.
const TIME_CAP: Duration = Duration::from_secs(10);
/// Key sent by the client; Sluice passes it through (the mock ignores it).
const CLIENT_KEY: &str = "Bearer sk-bench-passthrough-0123456789abcdef";

// ------------------------------------------------------------------------------------------
// Child processes
// ------------------------------------------------------------------------------------------

/// Pids of everything we started, for the Ctrl-C path (which cannot run destructors).
static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn register_pid(pid: u32) {
    PIDS.lock().expect("pids").push(pid);
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; treat it as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| stat_fields(&s).first().is_some_and(|st| *st != "Z"))
        .unwrap_or(false)
}

/// Owns the child processes and the temp dir; kills and removes them on drop, panics included.
struct Procs {
    children: Vec<(&'static str, Child)>,
    /// Processes we did not spawn ourselves but must not leave behind (nginx workers).
    extra_pids: Vec<u32>,
    dir: PathBuf,
}

impl Procs {
    fn add(&mut self, name: &'static str, child: Child) -> u32 {
        let pid = child.id();
        register_pid(pid);
        self.children.push((name, child));
        pid
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &self.children {
            signal(c.id(), "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (_, c) in &mut self.children {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in &self.extra_pids {
            if alive(*pid) {
                signal(*pid, "KILL");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Keeps reading a child's output so it never blocks on a full pipe; lines containing `needle`
/// are also sent to `tx`, and the last lines are kept in `log`.
fn drain(
    out: impl Read + Send + 'static,
    needle: &'static str,
    tx: mpsc::Sender<String>,
    log: Arc<Mutex<LogTail>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains(needle) {
                let _ = tx.send(line.clone());
            }
            log.lock().expect("log").push(line);
        }
    });
}

/// The first lines and a count of everything a child wrote.
#[derive(Default)]
struct LogTail {
    total: usize,
    first: Vec<String>,
}

impl LogTail {
    fn push(&mut self, line: String) {
        self.total += 1;
        if self.first.len() < 20 {
            self.first.push(line);
        }
    }
}

fn bin_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target.join("release").join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --release --bins` first (bench/run.sh does)",
        path.display()
    );
    path
}

fn wait_line(rx: &mpsc::Receiver<String>, what: &str, log: &Arc<Mutex<LogTail>>) -> String {
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            panic!(
                "{what} did not start; output:\n{}",
                log.lock().expect("log").first.join("\n")
            )
        })
}

fn start_mock(procs: &mut Procs) -> (u32, SocketAddr, Arc<Mutex<LogTail>>) {
    let mut child = Command::new(bin_path("sluice-mock"))
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice-mock");
    let log = Arc::new(Mutex::new(LogTail::default()));
    let (tx, rx) = mpsc::channel();
    drain(
        child.stdout.take().expect("stdout"),
        "listening on",
        tx.clone(),
        log.clone(),
    );
    drain(
        child.stderr.take().expect("stderr"),
        "\u{0}",
        tx,
        log.clone(),
    );
    let pid = procs.add("sluice-mock", child);
    let line = wait_line(&rx, "sluice-mock", &log);
    let addr = line
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected mock banner {line:?}"));
    (pid, addr, log)
}

/// The main Sluice config: passthrough keys, one `*` rule to the mock.
fn sluice_config(mock: SocketAddr) -> String {
    format!(
        r#"# Generated by bench/load.rs
[server]
listen = "127.0.0.1:0"
passthrough_keys = true

[admin]
listen = "127.0.0.1:0"

[log]
# warn, plus the readiness line the harness waits for
level = "warn,sluice::run=info"
usage = "off"

[[providers]]
name = "mock"
kind = "openai-compatible"
client_keys = true
base_url = "http://{mock}/v1"

[[models]]
name = "*"
provider = "mock"
"#
    )
}

/// Name of the env var holding the second instance's admin token.
const ADMIN_TOKEN_ENV: &str = "SLUICE_BENCH_ADMIN_TOKEN";
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

/// The second Sluice instance ("features"): the response cache on (`deterministic`), an admin
/// token, and a `failover` model whose only deployment is a provider answering every request
/// with 500, falling back to `clean` (the mock). No retries on the failing model, and a breaker
/// that never opens, so every `failover` request takes exactly the failed attempt + fallback.
fn sluice_features_config(mock: SocketAddr, failing: SocketAddr) -> String {
    format!(
        r#"# Generated by bench/load.rs (cache + failover instance)
[server]
listen = "127.0.0.1:0"
passthrough_keys = true

[admin]
listen = "127.0.0.1:0"
token_env = "{ADMIN_TOKEN_ENV}"

[log]
level = "warn,sluice::run=info"
usage = "off"

[cache]
mode = "deterministic"

# No retry on the failing model, and no backoff or budget in the way of the fallback: the
# scenario measures the cost of the failover path itself. (With the defaults, a fallback after
# a 500 waits a full-jitter backoff of up to base_backoff = 100 ms and draws on the fallback
# deployment's retry budget, 20% of its recent first attempts + 1/s.)
[retry]
max_retries = 0
base_backoff = "0ms"
budget_ratio = 10
budget_min_per_second = 1000000

[circuit_breaker]
consecutive_failures = 1000000
min_requests = 1000000000

[[providers]]
name = "mock"
kind = "openai-compatible"
client_keys = true
base_url = "http://{mock}/v1"

[[providers]]
name = "failing"
kind = "openai-compatible"
client_keys = true
base_url = "http://{failing}/v1"

[[models]]
name = "failover"
provider = "failing"
upstream_model = "gpt-4o-mini"
fallbacks = ["clean"]

[[models]]
name = "clean"
provider = "mock"
upstream_model = "gpt-4o-mini"

[[models]]
name = "*"
provider = "mock"
"#
    )
}

/// Starts Sluice with `config`; returns its pid, data and admin addresses and its log.
fn start_sluice(
    procs: &mut Procs,
    file: &str,
    config: &str,
) -> (u32, SocketAddr, SocketAddr, Arc<Mutex<LogTail>>) {
    let path = procs.dir.join(file);
    std::fs::write(&path, config).expect("write sluice config");
    let mut child = Command::new(bin_path("sluice"))
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .env(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let log = Arc::new(Mutex::new(LogTail::default()));
    let (tx, rx) = mpsc::channel();
    drain(
        child.stderr.take().expect("stderr"),
        "sluice listening",
        tx,
        log.clone(),
    );
    let pid = procs.add("sluice", child);
    let line = wait_line(&rx, "sluice", &log);
    let field = |name: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {name} address in {line:?}"))
    };
    let (data, admin) = (field("data="), field("admin="));
    // Wait for the listener to actually accept (the line is logged right after bind).
    wait_connect(data, "sluice");
    (pid, data, admin, log)
}

fn wait_connect(addr: SocketAddr, what: &str) {
    for _ in 0..200 {
        if StdStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} never accepted connections on {addr}");
}

fn have_nginx() -> bool {
    Command::new("nginx")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts nginx as a plain `proxy_pass` to the mock; returns the pids to charge (master and
/// worker) and its address.
fn start_nginx(procs: &mut Procs, mock: SocketAddr) -> (Vec<u32>, SocketAddr, Arc<Mutex<LogTail>>) {
    let port = StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = procs.dir.join("nginx");
    std::fs::create_dir_all(&dir).expect("nginx dir");
    let d = dir.display();
    // `user root` keeps the worker able to write its temp dirs when we run as root (nginx
    // ignores the directive, with a warning, otherwise).
    let config = format!(
        r#"# Generated by bench/load.rs
user root;
worker_processes 1;
daemon off;
error_log stderr warn;
pid {d}/nginx.pid;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 64m;
    # Keep request bodies (up to the 400 KB prompts) in memory, as Sluice does.
    client_body_buffer_size 1m;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream mock {{
        server {mock};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"#
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config).expect("write nginx config");
    let mut child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg("stderr")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nginx");
    let log = Arc::new(Mutex::new(LogTail::default()));
    let (tx, _rx) = mpsc::channel();
    drain(
        child.stderr.take().expect("stderr"),
        "\u{0}",
        tx,
        log.clone(),
    );
    let master = procs.add("nginx", child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_connect(addr, "nginx");
    let mut workers = Vec::new();
    for _ in 0..100 {
        workers = children_of(master);
        if !workers.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for w in &workers {
        register_pid(*w);
    }
    procs.extra_pids.extend(&workers);
    let mut pids = vec![master];
    pids.extend(workers);
    (pids, addr, log)
}

// ------------------------------------------------------------------------------------------
// /proc
// ------------------------------------------------------------------------------------------

fn self_cpu_ticks() -> u64 {
    cpu_ticks(std::process::id())
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .is_some_and(|s| stat_fields(&s).get(1) == Some(&parent.to_string().as_str()))
        })
        .collect()
}

fn rss_kb(pids: &[u32]) -> u64 {
    pids.iter().map(|p| status_kb(*p, "VmRSS:")).sum()
}

/// Samples RSS of Sluice and nginx every 100 ms, keeping the peaks since the last reset.
struct RssSampler {
    sluice: u32,
    nginx: Vec<u32>,
    sluice_peak: AtomicU64,
    nginx_peak: AtomicU64,
    /// Never reset: Sluice's peak over the whole run (warm-ups included).
    sluice_max: AtomicU64,
}

impl RssSampler {
    fn spawn(sluice: u32, nginx: Vec<u32>) -> Arc<RssSampler> {
        let s = Arc::new(RssSampler {
            sluice,
            nginx,
            sluice_peak: AtomicU64::new(0),
            nginx_peak: AtomicU64::new(0),
            sluice_max: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&s);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { return };
                s.sample();
            }
        });
        s
    }

    fn sample(&self) {
        let kb = rss_kb(&[self.sluice]);
        self.sluice_peak.fetch_max(kb, Ordering::Relaxed);
        self.sluice_max.fetch_max(kb, Ordering::Relaxed);
        if !self.nginx.is_empty() {
            self.nginx_peak
                .fetch_max(rss_kb(&self.nginx), Ordering::Relaxed);
        }
    }

    /// (sluice, nginx) peaks in KiB since the last call (which also samples now).
    fn take(&self) -> (u64, u64) {
        self.sample();
        (
            self.sluice_peak.swap(0, Ordering::Relaxed),
            self.nginx_peak.swap(0, Ordering::Relaxed),
        )
    }
}

// ------------------------------------------------------------------------------------------
// Scenarios and the load generator
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    NonStream,
    Stream,
    Paced,
    Prompt,
}

struct Scenario {
    name: String,
    kind: Kind,
    concurrency: usize,
    requests: usize,
    body: Bytes,
    headers: HeaderMap,
    /// A response header every measured response must carry (name, value); a response without
    /// it counts as an error (e.g. `x-sluice-cache: hit` for the cache-hit scenarios).
    expect: Option<(&'static str, &'static str)>,
    /// Distinct bodies, used in turn (shared counter across arms and warm-ups, so no body is
    /// sent twice while there are unused ones); `body` when None.
    bodies: Option<(Arc<Vec<Bytes>>, Arc<AtomicUsize>)>,
}

fn chat_body(prompt_chars: usize, stream: bool) -> Bytes {
    chat_body_with(prompt_chars, stream, false)
}

/// `include_usage`: the client asks for `stream_options.include_usage` itself (so Sluice has
/// nothing to inject and strip, and only observes the stream).
fn chat_body_with(prompt_chars: usize, stream: bool, include_usage: bool) -> Bytes {
    const WORDS: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod \
        tempor incididunt ut labore et dolore magna aliqua ";
    // Paragraphs of ~600 characters, as in a pasted document or transcript.
    let mut text = String::with_capacity(prompt_chars + WORDS.len());
    while text.len() < prompt_chars {
        for _ in 0..5 {
            text.push_str(WORDS);
        }
        text.push_str("\n\n");
    }
    text.truncate(prompt_chars);
    let mut body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": text}
        ],
        "max_tokens": 256,
        "temperature": 0.2
    });
    if stream {
        body["stream"] = serde_json::Value::Bool(true);
    }
    if include_usage {
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    Bytes::from(serde_json::to_vec(&body).expect("json"))
}

fn headers(words: u32, delay_ms: Option<u32>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_static(CLIENT_KEY),
    );
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        HeaderName::from_static("x-mock-words"),
        HeaderValue::from(words),
    );
    if let Some(d) = delay_ms {
        h.insert(
            HeaderName::from_static("x-mock-delay-ms"),
            HeaderValue::from(d),
        );
    }
    h
}

fn scenarios(quick: bool) -> Vec<Scenario> {
    let n = |full: usize| if quick { (full / 10).max(20) } else { full };
    let mut v = Vec::new();
    for (c, count) in [(1, 5_000), (16, 20_000), (64, 30_000)] {
        v.push(Scenario {
            name: format!("chat c={c}"),
            kind: Kind::NonStream,
            concurrency: c,
            requests: n(count),
            body: chat_body(200, false),
            headers: headers(20, None),
            expect: None,
            bodies: None,
        });
    }
    for (c, count) in [(1, 1_000), (16, 8_000), (64, 12_000)] {
        v.push(Scenario {
            name: format!("stream c={c}"),
            kind: Kind::Stream,
            concurrency: c,
            requests: n(count),
            body: chat_body(200, true),
            headers: headers(50, Some(0)),
            expect: None,
            bodies: None,
        });
    }
    v.push(Scenario {
        name: "stream c=16 client usage".into(),
        kind: Kind::Stream,
        concurrency: 16,
        requests: n(8_000),
        body: chat_body_with(200, true, true),
        headers: headers(50, Some(0)),
        expect: None,
        bodies: None,
    });
    v.push(Scenario {
        name: "paced stream c=16".into(),
        kind: Kind::Paced,
        concurrency: 16,
        requests: if quick { 32 } else { 160 },
        body: chat_body(200, true),
        headers: headers(20, Some(20)),
        expect: None,
        bodies: None,
    });
    // The mock paces every event, including the usage chunk Sluice asks for on the client's
    // behalf (and strips): with the client asking for usage itself, all arms get the same events.
    v.push(Scenario {
        name: "paced stream c=16 client usage".into(),
        kind: Kind::Paced,
        concurrency: 16,
        requests: if quick { 32 } else { 160 },
        body: chat_body_with(200, true, true),
        headers: headers(20, Some(20)),
        expect: None,
        bodies: None,
    });
    for (label, tokens) in [("1k", 1_000), ("10k", 10_000), ("100k", 100_000)] {
        v.push(Scenario {
            name: format!("prompt {label} tok c=4"),
            kind: Kind::Prompt,
            concurrency: 4,
            requests: n(200),
            body: chat_body(tokens * 4, false),
            headers: headers(20, None),
            expect: None,
            bodies: None,
        });
    }
    // Every request a different 100k-token conversation: Sluice remembers the count of a long
    // message it has seen (by content hash), so the scenarios above, which resend one body,
    // measure the repeat; this one pays for counting every time.
    let distinct = n(60);
    let bodies: Vec<Bytes> = (0..3 * (distinct + 2) + 8)
        .map(|i| {
            let mut v: serde_json::Value =
                serde_json::from_slice(&chat_body(400_000, false)).expect("json");
            let text = v["messages"][1]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            v["messages"][1]["content"] =
                serde_json::Value::String(format!("Document {i}.\n\n{text}"));
            Bytes::from(serde_json::to_vec(&v).expect("json"))
        })
        .collect();
    v.push(Scenario {
        name: "prompt 100k tok distinct c=1".into(),
        kind: Kind::Prompt,
        concurrency: 1,
        requests: distinct,
        body: chat_body(400_000, false),
        headers: headers(20, None),
        expect: None,
        bodies: Some((Arc::new(bodies), Arc::new(AtomicUsize::new(0)))),
    });
    // One at a time: what a single 100k-token prompt adds, without queueing behind others.
    v.push(Scenario {
        name: "prompt 100k tok c=1".into(),
        kind: Kind::Prompt,
        concurrency: 1,
        requests: n(100),
        body: chat_body(400_000, false),
        headers: headers(20, None),
        expect: None,
        bodies: None,
    });
    v
}

/// A chat body with `temperature: 0` (cacheable under `[cache] mode = "deterministic"`).
fn cache_body(prompt: &str, stream: bool) -> Bytes {
    let mut body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": prompt}
        ],
        "max_tokens": 256,
        "temperature": 0
    });
    if stream {
        body["stream"] = serde_json::Value::Bool(true);
    }
    Bytes::from(serde_json::to_vec(&body).expect("json"))
}

/// The usual 200-character chat body (temperature 0.2: never cached) for `model`.
fn model_body(model: &str) -> Bytes {
    let mut v: serde_json::Value = serde_json::from_slice(&chat_body(200, false)).expect("json");
    v["model"] = serde_json::Value::String(model.to_owned());
    Bytes::from(serde_json::to_vec(&v).expect("json"))
}

/// Scenarios run against the second ("features") Sluice instance, with the direct arm as
/// reference: cache hits (non-streaming and replayed as SSE) and the failover path.
fn feature_scenarios(quick: bool) -> Vec<Scenario> {
    let n = |full: usize| if quick { (full / 10).max(20) } else { full };
    let mut v = Vec::new();
    let prompt = "What is the capital of France? Answer in fifty words.";
    for (stream, label, counts) in [
        (false, "cache hit", [(1, 5_000), (16, 20_000)]),
        (true, "cache hit stream", [(1, 2_000), (16, 8_000)]),
    ] {
        for (c, count) in counts {
            v.push(Scenario {
                name: format!("{label} c={c}"),
                kind: if stream {
                    Kind::Stream
                } else {
                    Kind::NonStream
                },
                concurrency: c,
                requests: n(count),
                body: cache_body(prompt, stream),
                headers: headers(50, stream.then_some(0)),
                expect: Some(("x-sluice-cache", "hit")),
                bodies: None,
            });
        }
    }
    for (c, count) in [(1, 3_000), (16, 10_000)] {
        for (label, model) in [("clean model", "clean"), ("failover model", "failover")] {
            v.push(Scenario {
                name: format!("{label} c={c}"),
                kind: Kind::NonStream,
                concurrency: c,
                requests: n(count),
                body: model_body(model),
                headers: headers(20, None),
                expect: None,
                bodies: None,
            });
        }
    }
    v
}

/// Connections accepted and requests answered by the failing provider.
static FAILING_CONNS: AtomicUsize = AtomicUsize::new(0);
static FAILING_REQS: AtomicUsize = AtomicUsize::new(0);

/// A provider that answers every request with HTTP 500 and an OpenAI-shaped error body; runs
/// on the harness's runtime (its CPU counts as client CPU).
async fn start_failing() -> SocketAddr {
    const BODY: &[u8] = br#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind failing provider");
    let addr = listener.local_addr().expect("failing addr");
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let _ = sock.set_nodelay(true);
            FAILING_CONNS.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        FAILING_REQS.fetch_add(1, Ordering::Relaxed);
                        let _ = req.into_body().collect().await;
                        let mut resp = hyper::Response::new(Full::new(Bytes::from_static(BODY)));
                        *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    addr
}

/// `GET path` on the admin port with the admin token; the body as text.
async fn admin_get(client: &HttpClient, admin: SocketAddr, path: &str) -> String {
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = format!("http://{admin}{path}").parse().expect("uri");
    req.headers_mut().insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {ADMIN_TOKEN}")).expect("token"),
    );
    match client.request(req).await {
        Ok(r) => {
            let status = r.status();
            let body = r.into_body().collect().await.map(|b| b.to_bytes());
            match body {
                Ok(b) if status == StatusCode::OK => String::from_utf8_lossy(&b).into_owned(),
                Ok(b) => format!("status {status}: {}", String::from_utf8_lossy(&b)),
                Err(e) => format!("body: {e:?}"),
            }
        }
        Err(e) => format!("request: {e:?}"),
    }
}

/// What filling the cache with many distinct entries costs in memory.
struct CacheFill {
    entries: usize,
    kb: u32,
    fill: Samples,
    fill_elapsed: Duration,
    reread: Samples,
    reread_elapsed: Duration,
    rss_before_kb: u64,
    rss_after_kb: u64,
    rss_after_reread_kb: u64,
    stats_before: String,
    stats_after: String,
    cache_bytes_delta: Option<u64>,
    cpu_fill_us: f64,
    cpu_reread_us: f64,
}

fn json_u64(text: &str, field: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()?
        .get(field)?
        .as_u64()
}

/// Sends `entries` distinct `temperature: 0` requests whose answers are `kb` KiB each (all
/// misses, so all stored), then the same requests again (all hits).
async fn cache_fill(env: &Env, arm: &Arm, admin: SocketAddr, entries: usize, kb: u32) -> CacheFill {
    let pid = arm.pids[0];
    let mut hdrs = headers(20, None);
    hdrs.insert(
        HeaderName::from_static("x-mock-large-response-kb"),
        HeaderValue::from(kb),
    );
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..entries)
            .map(|i| {
                cache_body(
                    &format!("Distinct prompt number {i}: tell me about item {i}."),
                    false,
                )
            })
            .collect(),
    );
    let pass = |want: &'static str| {
        let (client, uri, hdrs, bodies) = (
            env.client.clone(),
            arm.uri.clone(),
            hdrs.clone(),
            bodies.clone(),
        );
        async move {
            let next = Arc::new(AtomicUsize::new(0));
            let start = Instant::now();
            let mut set = JoinSet::new();
            for _ in 0..16 {
                let (client, uri, hdrs, bodies, next) = (
                    client.clone(),
                    uri.clone(),
                    hdrs.clone(),
                    bodies.clone(),
                    next.clone(),
                );
                set.spawn(async move {
                    let mut s = Samples::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= bodies.len() || start.elapsed() > Duration::from_secs(30) {
                            break;
                        }
                        one_request(
                            &client,
                            &uri,
                            &hdrs,
                            &bodies[i],
                            false,
                            false,
                            Some(("x-sluice-cache", want)),
                            &mut s,
                        )
                        .await;
                    }
                    s
                });
            }
            let mut all = Samples::default();
            while let Some(r) = set.join_next().await {
                all.merge(r.expect("cache fill worker panicked"));
            }
            all.lat.sort_unstable();
            (all, start.elapsed())
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats_before = admin_get(&env.client, admin, "/admin/cache").await;
    let rss_before_kb = rss_kb(&[pid]);
    let t0 = cpu_ticks(pid);
    let (fill, fill_elapsed) = pass("miss").await;
    let t1 = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_kb = rss_kb(&[pid]);
    let stats_after = admin_get(&env.client, admin, "/admin/cache").await;
    let t2 = cpu_ticks(pid);
    let (reread, reread_elapsed) = pass("hit").await;
    let t3 = cpu_ticks(pid);
    let rss_after_reread_kb = rss_kb(&[pid]);
    let cache_bytes_delta = json_u64(&stats_after, "bytes")
        .zip(json_u64(&stats_before, "bytes"))
        .map(|(a, b)| a.saturating_sub(b));
    CacheFill {
        entries,
        kb,
        cpu_fill_us: (t1 - t0) as f64 * env.tick_us / fill.ok.max(1) as f64,
        cpu_reread_us: (t3 - t2) as f64 * env.tick_us / reread.ok.max(1) as f64,
        fill,
        fill_elapsed,
        reread,
        reread_elapsed,
        rss_before_kb,
        rss_after_kb,
        rss_after_reread_kb,
        stats_before,
        stats_after,
        cache_bytes_delta,
    }
}

/// The report section for the features instance: cache hit vs direct, memory per cached MB,
/// failover overhead.
fn features_report(
    results: &[(Scenario, Vec<Run>)],
    fill: Option<&CacheFill>,
    idle_kb: u64,
) -> String {
    let mut o = String::new();
    let w = &mut o;
    let get = |name: &str| results.iter().find(|(sc, _)| sc.name == name);
    let _ = writeln!(w, "\n## Features instance (cache, failover)\n");
    let _ = writeln!(
        w,
        "A second Sluice process with `[cache] mode = \"deterministic\"`, an admin token, \
         `[retry] max_retries = 0`, a breaker that never opens, and a model `failover` whose only \
         deployment is a provider answering 500 (inside the harness), `fallbacks = [\"clean\"]` \
         (the mock). Idle RSS of this instance: {} MB.\n",
        mb(idle_kb)
    );
    let _ = writeln!(
        w,
        "### Cache hit vs direct to the mock (x-mock-words: 50)\n"
    );
    let _ = writeln!(
        w,
        "Every measured Sluice response had to carry `x-sluice-cache: hit` (else counted as an error). \
         The warm-up request fills the entry.\n"
    );
    let _ = writeln!(
        w,
        "| scenario | direct p50 / p99 | sluice hit p50 / p99 | hit − direct p50 / p99 | sluice CPU µs/req (ticks) | mock CPU µs/req, direct arm | hits ok / errors (non-hit) | headers |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for name in [
        "cache hit c=1",
        "cache hit c=16",
        "cache hit stream c=1",
        "cache hit stream c=16",
    ] {
        let Some((_, runs)) = get(name) else { continue };
        let (Some(d), Some(s)) = (find(runs, "direct"), find(runs, "sluice")) else {
            continue;
        };
        let _ = writeln!(
            w,
            "| {name} | {} / {} | {} / {} | {} / {} | {:.1} ({}) | {:.1} | {} / {} | {} |",
            pct(&d.s.lat, 0.5),
            pct(&d.s.lat, 0.99),
            pct(&s.s.lat, 0.5),
            pct(&s.s.lat, 0.99),
            signed(pct(&s.s.lat, 0.5) as i64 - pct(&d.s.lat, 0.5) as i64),
            signed(pct(&s.s.lat, 0.99) as i64 - pct(&d.s.lat, 0.99) as i64),
            s.proxy_cpu.unwrap_or(0.0),
            s.proxy_ticks,
            d.mock_cpu,
            s.s.ok,
            s.s.errors + s.s.non200 + s.s.incomplete,
            s.s.first_headers.as_deref().unwrap_or("–"),
        );
    }
    if let Some(f) = fill {
        let rss_delta = f.rss_after_kb.saturating_sub(f.rss_before_kb) * 1024;
        let resp_bytes = f.fill.bytes;
        let _ = writeln!(w, "\n### Memory per cached MB\n");
        let _ = writeln!(
            w,
            "{} distinct `temperature: 0` requests at c=16, answers of `x-mock-large-response-kb: {}` \
             (all misses, so all stored), then the same {} again (all must be hits).\n",
            f.entries, f.kb, f.entries
        );
        let _ = writeln!(w, "| measure | value |");
        let _ = writeln!(w, "|---|---|");
        let _ = writeln!(w, "| fill: ok / errors (non-miss) / non-200 | {} / {} / {} in {:.2} s, p50 {} µs, p99 {} µs, Sluice CPU {:.0} µs/req |",
            f.fill.ok, f.fill.errors, f.fill.non200, f.fill_elapsed.as_secs_f64(), pct(&f.fill.lat, 0.5), pct(&f.fill.lat, 0.99), f.cpu_fill_us);
        let _ = writeln!(w, "| re-read: hits ok / errors (non-hit) | {} / {} in {:.2} s, p50 {} µs, p99 {} µs, Sluice CPU {:.0} µs/req |",
            f.reread.ok, f.reread.errors, f.reread_elapsed.as_secs_f64(), pct(&f.reread.lat, 0.5), pct(&f.reread.lat, 0.99), f.cpu_reread_us);
        let _ = writeln!(
            w,
            "| response bytes received during the fill | {:.1} MB ({} B/resp) |",
            resp_bytes as f64 / 1048576.0,
            resp_bytes / f.fill.ok.max(1) as u64
        );
        let _ = writeln!(
            w,
            "| `GET /admin/cache` before → after the fill | `{}` → `{}` |",
            f.stats_before.trim(),
            f.stats_after.trim()
        );
        let _ = writeln!(
            w,
            "| RSS before → after fill → after re-read | {} → {} → {} MB |",
            mb(f.rss_before_kb),
            mb(f.rss_after_kb),
            mb(f.rss_after_reread_kb)
        );
        if let Some(cb) = f.cache_bytes_delta {
            let _ = writeln!(
                w,
                "| RSS growth / cached bytes (admin `bytes`) | {:.1} MB / {:.1} MB = **{:.2}×** |",
                rss_delta as f64 / 1048576.0,
                cb as f64 / 1048576.0,
                rss_delta as f64 / (cb as f64).max(1.0)
            );
        }
        let _ = writeln!(
            w,
            "| RSS growth / response bytes | {:.1} MB / {:.1} MB = {:.2}× |",
            rss_delta as f64 / 1048576.0,
            resp_bytes as f64 / 1048576.0,
            rss_delta as f64 / (resp_bytes as f64).max(1.0)
        );
    }
    let _ = writeln!(
        w,
        "\n### Failover path vs clean model (same instance, same run)\n"
    );
    let _ = writeln!(
        w,
        "The failing provider accepted {} TCP connections for {} requests (warm-ups included).\n",
        FAILING_CONNS.load(Ordering::Relaxed),
        FAILING_REQS.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        w,
        "`failover`: attempt 1 → 500 from the failing provider, then the fallback `clean` → mock. \
         The failing provider runs in the harness, so its CPU is in the client column, not Sluice's.\n"
    );
    let _ = writeln!(
        w,
        "| c | clean p50 / p99 | failover p50 / p99 | failover − clean p50 / p99 | Sluice CPU µs/req clean / failover (ticks) | extra CPU µs/req | ok / errors+non-200 (failover) | failover headers |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for c in [1, 16] {
        let (Some((_, cr)), Some((_, fr))) = (
            get(&format!("clean model c={c}")),
            get(&format!("failover model c={c}")),
        ) else {
            continue;
        };
        let (Some(cl), Some(fo)) = (find(cr, "sluice"), find(fr, "sluice")) else {
            continue;
        };
        let (cc, fc) = (cl.proxy_cpu.unwrap_or(0.0), fo.proxy_cpu.unwrap_or(0.0));
        let _ = writeln!(
            w,
            "| {c} | {} / {} | {} / {} | {} / {} | {:.1} / {:.1} ({} / {}) | {:+.1} | {} / {} | {} |",
            pct(&cl.s.lat, 0.5),
            pct(&cl.s.lat, 0.99),
            pct(&fo.s.lat, 0.5),
            pct(&fo.s.lat, 0.99),
            signed(pct(&fo.s.lat, 0.5) as i64 - pct(&cl.s.lat, 0.5) as i64),
            signed(pct(&fo.s.lat, 0.99) as i64 - pct(&cl.s.lat, 0.99) as i64),
            cc,
            fc,
            cl.proxy_ticks,
            fo.proxy_ticks,
            fc - cc,
            fo.s.ok,
            fo.s.errors + fo.s.non200,
            fo.s.first_headers.as_deref().unwrap_or("–"),
        );
    }
    o
}

/// Raw measurements of one worker, merged per run.
#[derive(Default)]
struct Samples {
    ok: usize,
    errors: usize,
    non200: usize,
    incomplete: usize,
    lat: Vec<u64>,
    ttfb: Vec<u64>,
    gaps: Vec<u64>,
    frames: u64,
    bytes: u64,
    first_errors: Vec<String>,
    /// `x-sluice-*` headers of the first successful response, for the report.
    first_headers: Option<String>,
}

impl Samples {
    fn note(&mut self, e: String) {
        if self.first_errors.len() < 3 {
            self.first_errors.push(e);
        }
    }

    fn merge(&mut self, o: Samples) {
        self.ok += o.ok;
        self.errors += o.errors;
        self.non200 += o.non200;
        self.incomplete += o.incomplete;
        self.lat.extend(o.lat);
        self.ttfb.extend(o.ttfb);
        self.gaps.extend(o.gaps);
        self.frames += o.frames;
        self.bytes += o.bytes;
        for e in o.first_errors {
            self.note(e);
        }
        if self.first_headers.is_none() {
            self.first_headers = o.first_headers;
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One request: whole-response latency, time to the first body frame, frame gaps.
#[allow(clippy::too_many_arguments)]
async fn one_request(
    client: &HttpClient,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    stream: bool,
    gaps: bool,
    expect: Option<(&str, &str)>,
    s: &mut Samples,
) {
    let mut req = Request::new(Full::new(body.clone()));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri.clone();
    *req.headers_mut() = headers.clone();
    let t0 = Instant::now();
    let resp = match client.request(req).await {
        Ok(r) => r,
        Err(e) => {
            s.errors += 1;
            s.note(format!("request: {e:?}"));
            return;
        }
    };
    let status = resp.status();
    let sluice_headers = |h: &HeaderMap| -> String {
        let mut v: Vec<String> = h
            .iter()
            .filter(|(k, _)| {
                k.as_str().starts_with("x-sluice-") && k.as_str() != "x-sluice-request-id"
            })
            .map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap_or("?")))
            .collect();
        v.sort();
        v.join(", ")
    };
    let expect_failed = expect.and_then(|(name, want)| {
        let got = resp.headers().get(name).and_then(|v| v.to_str().ok());
        (got != Some(want)).then(|| format!("{name}: {got:?}, want {want:?}"))
    });
    if s.first_headers.is_none() && status == StatusCode::OK {
        s.first_headers = Some(sluice_headers(resp.headers()));
    }
    let mut body = resp.into_body();
    let mut first: Option<Instant> = None;
    let mut last = t0;
    let mut tail: Vec<u8> = Vec::new();
    let mut bytes = 0u64;
    let mut frames = 0u64;
    let mut gap_buf: Vec<u64> = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                let Ok(data) = f.into_data() else { continue };
                let now = Instant::now();
                match first {
                    None => first = Some(now),
                    Some(_) if gaps => gap_buf.push(micros(now - last)),
                    Some(_) => {}
                }
                last = now;
                bytes += data.len() as u64;
                frames += 1;
                if stream {
                    tail.extend_from_slice(&data[data.len().saturating_sub(16)..]);
                    let cut = tail.len().saturating_sub(16);
                    tail.drain(..cut);
                }
            }
            Err(e) => {
                s.errors += 1;
                s.note(format!("body ({status}, after {bytes} bytes): {e:?}"));
                return;
            }
        }
    }
    let done = Instant::now();
    if status != StatusCode::OK {
        s.non200 += 1;
        s.note(format!("status {status}"));
        return;
    }
    if let Some(e) = expect_failed {
        s.errors += 1;
        s.note(e);
        return;
    }
    if stream && !tail.ends_with(b"data: [DONE]\n\n") {
        s.incomplete += 1;
        s.note(format!(
            "stream without [DONE]; tail {:?}",
            String::from_utf8_lossy(&tail)
        ));
    }
    s.ok += 1;
    s.lat.push(micros(done - t0));
    s.ttfb.push(micros(first.unwrap_or(done) - t0));
    s.gaps.extend(gap_buf);
    s.frames += frames;
    s.bytes += bytes;
}

/// Runs `requests` requests at `concurrency` (or until `cap` elapses).
async fn drive(
    client: &HttpClient,
    uri: &Uri,
    sc: &Scenario,
    requests: usize,
    cap: Duration,
    check_expect: bool,
) -> (Samples, Duration) {
    let issued = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + cap;
    let stream = sc.kind == Kind::Stream || sc.kind == Kind::Paced;
    let gaps = sc.kind == Kind::Paced;
    let expect = sc.expect.filter(|_| check_expect);
    let mut set = JoinSet::new();
    for _ in 0..sc.concurrency {
        let (client, uri, headers, mut body) = (
            client.clone(),
            uri.clone(),
            sc.headers.clone(),
            sc.body.clone(),
        );
        let bodies = sc.bodies.clone();
        let issued = issued.clone();
        set.spawn(async move {
            let mut s = Samples::default();
            while issued.fetch_add(1, Ordering::Relaxed) < requests && Instant::now() < deadline {
                if let Some((v, next)) = &bodies {
                    body = v[next.fetch_add(1, Ordering::Relaxed) % v.len()].clone();
                }
                one_request(&client, &uri, &headers, &body, stream, gaps, expect, &mut s).await;
            }
            s
        });
    }
    let mut all = Samples::default();
    while let Some(r) = set.join_next().await {
        all.merge(r.expect("load worker panicked"));
    }
    (all, start.elapsed())
}

/// The processes whose cost an arm adds (none for direct).
#[derive(Clone)]
struct Arm {
    name: &'static str,
    uri: Uri,
    pids: Vec<u32>,
}

struct Run {
    arm: &'static str,
    s: Samples,
    elapsed: Duration,
    /// Proxy CPU per request, µs (None for direct).
    proxy_cpu: Option<f64>,
    /// Clock ticks behind `proxy_cpu` (its resolution).
    proxy_ticks: u64,
    mock_cpu: f64,
    client_cpu: f64,
    /// Peak RSS of this arm's proxy during the run, KiB.
    proxy_rss_peak: Option<u64>,
}

impl Run {
    fn rps(&self) -> f64 {
        self.s.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Env {
    client: HttpClient,
    mock_pid: u32,
    tick_us: f64,
    rss: Arc<RssSampler>,
}

async fn run_arm(env: &Env, arm: &Arm, sc: &Scenario, cap: Duration) -> Run {
    // Warm-up: open the connections and touch the code paths; not measured.
    let warm = (sc.concurrency * 2).min(sc.requests);
    // The direct arm has no Sluice headers to check.
    let check = arm.name != "direct";
    let _ = drive(
        &env.client,
        &arm.uri,
        sc,
        warm,
        Duration::from_secs(3),
        check,
    )
    .await;
    let ticks = |pids: &[u32]| pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>();
    let _ = env.rss.take();
    let (p0, m0, c0) = (ticks(&arm.pids), cpu_ticks(env.mock_pid), self_cpu_ticks());
    let (s, elapsed) = drive(&env.client, &arm.uri, sc, sc.requests, cap, check).await;
    let (p1, m1, c1) = (ticks(&arm.pids), cpu_ticks(env.mock_pid), self_cpu_ticks());
    let (sluice_peak, nginx_peak) = env.rss.take();
    let n = s.ok.max(1) as f64;
    let per_req = |a: u64, b: u64| (b.saturating_sub(a)) as f64 * env.tick_us / n;
    let mut s = s;
    s.lat.sort_unstable();
    s.ttfb.sort_unstable();
    s.gaps.sort_unstable();
    Run {
        arm: arm.name,
        proxy_cpu: (!arm.pids.is_empty()).then(|| per_req(p0, p1)),
        proxy_ticks: p1.saturating_sub(p0),
        mock_cpu: per_req(m0, m1),
        client_cpu: per_req(c0, c1),
        proxy_rss_peak: if arm.pids.first() == Some(&env.rss.sluice) {
            Some(sluice_peak)
        } else if arm.name == "nginx" {
            Some(nginx_peak)
        } else {
            arm.pids.first().map(|p| rss_kb(&[*p]))
        },
        s,
        elapsed,
    }
}

/// Result of holding many slow streams open at once through one proxy.
struct ManyStreams {
    arm: &'static str,
    target: usize,
    opened: usize,
    ok: usize,
    failed: usize,
    rss_open_kb: u64,
    rss_peak_kb: u64,
    fds_open: usize,
    elapsed: Duration,
    first_errors: Vec<String>,
}

async fn many_streams(env: &Env, arm: &Arm, count: usize) -> ManyStreams {
    let body = chat_body(200, true);
    let hdrs = headers(30, Some(100));
    let opened = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let _ = env.rss.take();
    let mut set = JoinSet::new();
    for _ in 0..count {
        let (client, uri, hdrs, body, opened) = (
            env.client.clone(),
            arm.uri.clone(),
            hdrs.clone(),
            body.clone(),
            opened.clone(),
        );
        set.spawn(async move {
            let mut req = Request::new(Full::new(body));
            *req.method_mut() = Method::POST;
            *req.uri_mut() = uri;
            *req.headers_mut() = hdrs;
            let resp = client
                .request(req)
                .await
                .map_err(|e| format!("request: {e:?}"))?;
            let status = resp.status();
            let mut body = resp.into_body();
            let mut counted = false;
            let mut tail = Vec::new();
            while let Some(f) = body.frame().await {
                let f = f.map_err(|e| format!("body: {e:?}"))?;
                if let Ok(d) = f.into_data() {
                    if !counted {
                        counted = true;
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                    tail = d.to_vec();
                }
            }
            if status != StatusCode::OK {
                return Err(format!("status {status}"));
            }
            if !tail.ends_with(b"data: [DONE]\n\n") {
                return Err("stream without [DONE]".into());
            }
            Ok(())
        });
    }
    // Wait until every stream has its first byte (or 10 s), then sample while they are open.
    let proxy_pid = arm.pids.last().copied().unwrap_or(env.mock_pid);
    let wait_until = Instant::now() + Duration::from_secs(10);
    while opened.load(Ordering::Relaxed) < count && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let n_open = opened.load(Ordering::Relaxed);
    let mut rss_open = 0;
    let mut fds_open = 0;
    for _ in 0..5 {
        rss_open = rss_open.max(rss_kb(&arm.pids));
        fds_open = fds_open.max(fd_count(proxy_pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut ok, mut failed, mut first_errors) = (0, 0, Vec::new());
    while let Some(r) = set.join_next().await {
        match r.expect("stream task panicked") {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                if first_errors.len() < 3 {
                    first_errors.push(e);
                }
            }
        }
    }
    let elapsed = start.elapsed();
    let (sluice_peak, nginx_peak) = env.rss.take();
    ManyStreams {
        arm: arm.name,
        target: count,
        opened: n_open,
        ok,
        failed,
        rss_open_kb: rss_open,
        rss_peak_kb: if arm.name == "sluice" {
            sluice_peak
        } else {
            nginx_peak
        },
        fds_open,
        elapsed,
        first_errors,
    }
}

// ------------------------------------------------------------------------------------------
// Report
// ------------------------------------------------------------------------------------------

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

fn signed(v: i64) -> String {
    if v >= 0 {
        format!("+{v}")
    } else {
        v.to_string()
    }
}

fn cmd_out(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if s.is_empty() {
                s = String::from_utf8_lossy(&o.stderr).trim().to_owned();
            }
            s
        })
        .unwrap_or_else(|| "?".into())
}

fn machine_info() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let mem = status_line("/proc/meminfo", "MemTotal:");
    format!(
        "- date: {}\n- machine: {nproc} CPUs, {cpu}, {mem} RAM, Linux {kernel}\n- {}; {}\n",
        cmd_out("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        cmd_out("rustc", &["--version"]),
        if have_nginx() {
            cmd_out("nginx", &["-v"])
        } else {
            "nginx: not installed".into()
        },
    )
}

fn status_line(path: &str, field: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

struct Memory {
    idle_kb: u64,
    peak_kb: u64,
    after_kb: u64,
    after_all_kb: u64,
    fds_idle: usize,
    fds_after: usize,
    fds_disconnected: usize,
    rss_disconnected_kb: u64,
    threads_idle: u64,
    threads_after: u64,
    nginx_idle_kb: u64,
}

fn find<'a>(runs: &'a [Run], arm: &str) -> Option<&'a Run> {
    runs.iter().find(|r| r.arm == arm)
}

fn report(
    quick: bool,
    results: &[(Scenario, Vec<Run>)],
    mem: &Memory,
    many: &[ManyStreams],
    logs: &[(&str, &Arc<Mutex<LogTail>>)],
    total: Duration,
) -> String {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(
        w,
        "# Sluice load benchmark{}\n",
        if quick { " (--quick)" } else { "" }
    );
    let _ = writeln!(w, "{}", machine_info());
    let _ = writeln!(
        w,
        "Arms: `direct` = client → mock; `sluice` = client → Sluice → mock; `nginx` = client → \
         nginx (1 worker, proxy_buffering off, upstream keepalive 256) → mock. Every scenario \
         runs the arms back to back after a short unmeasured warm-up; each run stops after its \
         request count or {} s. All on loopback; the load generator (2 tokio workers), the mock \
         and the proxy share the machine. Latency = whole response (last byte), in µs. Total \
         harness time {:.0} s.\n",
        TIME_CAP.as_secs(),
        total.as_secs_f64()
    );

    let _ = writeln!(w, "## Added latency vs direct (µs)\n");
    let _ = writeln!(
        w,
        "| scenario | direct p50 / p99 | sluice p50 / p99 | nginx p50 / p99 | sluice added p50 / p99 | nginx added p50 / p99 |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    for (sc, runs) in results {
        let Some(d) = find(runs, "direct") else {
            continue;
        };
        let pair = |r: Option<&Run>| {
            r.map_or("–".to_string(), |r| {
                format!("{} / {}", pct(&r.s.lat, 0.5), pct(&r.s.lat, 0.99))
            })
        };
        let added = |r: Option<&Run>| {
            r.map_or("–".to_string(), |r| {
                let a50 = pct(&r.s.lat, 0.5) as i64 - pct(&d.s.lat, 0.5) as i64;
                let a99 = pct(&r.s.lat, 0.99) as i64 - pct(&d.s.lat, 0.99) as i64;
                format!("{} / {}", signed(a50), signed(a99))
            })
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            sc.name,
            pair(Some(d)),
            pair(find(runs, "sluice")),
            pair(find(runs, "nginx")),
            added(find(runs, "sluice")),
            added(find(runs, "nginx")),
        );
    }

    let _ = writeln!(w, "\n## Throughput and CPU per request\n");
    let _ = writeln!(
        w,
        "CPU µs/req = (utime+stime delta of the proxy process(es) from /proc/PID/stat) / \
         requests; one clock tick is {:.0} µs, so short runs are coarse. mock/client = the same \
         for the mock provider and for this load generator.\n",
        1e6 / clk_tck() as f64
    );
    let _ = writeln!(
        w,
        "| scenario | arm | ok | req/s | p50 | p90 | p99 | proxy CPU µs/req (ticks) | mock CPU µs/req | client CPU µs/req | proxy RSS peak MB | bytes/resp | errors / non-200 / incomplete |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (sc, runs) in results {
        for r in runs {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {} / {} / {} |",
                sc.name,
                r.arm,
                r.s.ok,
                r.rps(),
                pct(&r.s.lat, 0.5),
                pct(&r.s.lat, 0.9),
                pct(&r.s.lat, 0.99),
                r.proxy_cpu
                    .map_or("–".into(), |c| format!("{c:.1} ({})", r.proxy_ticks)),
                r.mock_cpu,
                r.client_cpu,
                r.proxy_rss_peak.map_or("–".into(), mb),
                r.s.bytes / r.s.ok.max(1) as u64,
                r.s.errors,
                r.s.non200,
                r.s.incomplete,
            );
        }
    }

    let _ = writeln!(w, "\n## Streams: time to first byte and frame gaps (µs)\n");
    let _ = writeln!(
        w,
        "TTFB = request sent → first body frame. chunks/resp = body frames the client decoded per \
         response (HTTP/1.1 chunks: how finely the last hop wrote the stream; the mock writes one \
         per event). Gaps (paced scenarios only, 20 ms between events at the mock) = time between \
         consecutive body frames.\n"
    );
    let _ = writeln!(
        w,
        "| scenario | arm | TTFB p50 | TTFB p99 | TTFB p50 vs direct | chunks/resp | gap p50 | gap p90 | gap p99 | gap max |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
    for (sc, runs) in results {
        if sc.kind != Kind::Stream && sc.kind != Kind::Paced {
            continue;
        }
        let Some(d) = find(runs, "direct") else {
            continue;
        };
        for r in runs {
            let gap = |p: f64| {
                if r.s.gaps.is_empty() {
                    "–".to_string()
                } else {
                    pct(&r.s.gaps, p).to_string()
                }
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
                sc.name,
                r.arm,
                pct(&r.s.ttfb, 0.5),
                pct(&r.s.ttfb, 0.99),
                signed(pct(&r.s.ttfb, 0.5) as i64 - pct(&d.s.ttfb, 0.5) as i64),
                r.s.frames as f64 / r.s.ok.max(1) as f64,
                gap(0.5),
                gap(0.9),
                gap(0.99),
                gap(1.0),
            );
        }
    }

    let _ = writeln!(w, "\n## Sluice memory\n");
    let _ = writeln!(w, "| measure | value |");
    let _ = writeln!(w, "|---|---|");
    let _ = writeln!(w, "| RSS idle (before load) | {} MB |", mb(mem.idle_kb));
    let _ = writeln!(
        w,
        "| RSS peak during the scenarios above (100 ms samples, warm-ups included) | {} MB |",
        mb(mem.peak_kb)
    );
    let _ = writeln!(
        w,
        "| RSS 2 s after those scenarios | {} MB |",
        mb(mem.after_kb)
    );
    for m in many {
        let _ = writeln!(
            w,
            "| {}: {} concurrent slow streams (30 words × 100 ms): RSS with all open / peak | {} / {} MB (opened {}, ok {}, failed {}, fds {} , {:.1} s) |",
            m.arm,
            m.target,
            mb(m.rss_open_kb),
            mb(m.rss_peak_kb),
            m.opened,
            m.ok,
            m.failed,
            m.fds_open,
            m.elapsed.as_secs_f64()
        );
    }
    let _ = writeln!(
        w,
        "| RSS 2 s after everything | {} MB |",
        mb(mem.after_all_kb)
    );
    let _ = writeln!(
        w,
        "| open fds idle → after everything → 2 s after the load generator closed its connections | {} → {} → {} |",
        mem.fds_idle, mem.fds_after, mem.fds_disconnected
    );
    let _ = writeln!(
        w,
        "| RSS 2 s after the load generator closed its connections | {} MB |",
        mb(mem.rss_disconnected_kb)
    );
    let _ = writeln!(
        w,
        "| threads idle → after everything | {} → {} |",
        mem.threads_idle, mem.threads_after
    );
    if mem.nginx_idle_kb > 0 {
        let _ = writeln!(
            w,
            "| nginx RSS idle (master + worker) | {} MB |",
            mb(mem.nginx_idle_kb)
        );
    }

    // Goal check against DESIGN.md §5.
    let _ = writeln!(w, "\n## DESIGN.md §5 goals (computed)\n");
    let _ = writeln!(w, "| goal | measured | verdict |");
    let _ = writeln!(w, "|---|---|---|");
    let get = |name: &str| results.iter().find(|(sc, _)| sc.name == name);
    let tick_us = 1e6 / clk_tck() as f64;
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    for (sc, runs) in results {
        if let (Some(s), Some(n)) = (find(runs, "sluice"), find(runs, "nginx")) {
            if let (Some(sc_cpu), Some(n_cpu)) = (s.proxy_cpu, n.proxy_cpu) {
                let ratio = sc_cpu / n_cpu.max(1e-9);
                // A tick count is only exact to ±1 tick: judge when the whole range agrees.
                let per_tick = |r: &Run| tick_us / r.s.ok.max(1) as f64;
                let (s_lo, s_hi) = (sc_cpu - per_tick(s), sc_cpu + per_tick(s));
                let (n_lo, n_hi) = ((n_cpu - per_tick(n)).max(0.0), n_cpu + per_tick(n));
                let judged = if s_hi <= 2.0 * n_lo {
                    "met"
                } else if s_lo > 2.0 * n_hi {
                    "NOT met"
                } else {
                    "too few ticks to judge"
                };
                let _ = writeln!(
                    w,
                    "| CPU/req ≤ 2× nginx ({}) | {:.1} vs {:.1} µs = {:.2}× ({} vs {} ticks) | {} |",
                    sc.name, sc_cpu, n_cpu, ratio, s.proxy_ticks, n.proxy_ticks, judged
                );
            }
        }
    }
    if let Some((_, runs)) = get("chat c=64") {
        if let (Some(s), Some(n)) = (find(runs, "sluice"), find(runs, "nginx")) {
            let ratio = s.rps() / n.rps().max(1e-9);
            let _ = writeln!(
                w,
                "| non-stream throughput at c=64 ≥ 0.8× nginx | {:.0} vs {:.0} req/s = {:.2}× | {} |",
                s.rps(),
                n.rps(),
                ratio,
                verdict(ratio >= 0.8)
            );
        }
    }
    if let Some((_, runs)) = get("chat c=16") {
        if let (Some(d), Some(s)) = (find(runs, "direct"), find(runs, "sluice")) {
            let a50 = pct(&s.s.lat, 0.5) as i64 - pct(&d.s.lat, 0.5) as i64;
            let a99 = pct(&s.s.lat, 0.99) as i64 - pct(&d.s.lat, 0.99) as i64;
            let _ = writeln!(
                w,
                "| added p50 ≤ 50 µs at c=16 | {a50} µs | {} |",
                verdict(a50 <= 50)
            );
            let _ = writeln!(
                w,
                "| added p99 ≤ 250 µs at c=16 | {a99} µs | {} |",
                verdict(a99 <= 250)
            );
        }
    }
    for name in [
        "stream c=1",
        "stream c=16",
        "paced stream c=16",
        "paced stream c=16 client usage",
    ] {
        if let Some((_, runs)) = get(name) {
            if let (Some(s), Some(n)) = (find(runs, "sluice"), find(runs, "nginx")) {
                let diff = pct(&s.s.ttfb, 0.5) as i64 - pct(&n.s.ttfb, 0.5) as i64;
                let _ = writeln!(
                    w,
                    "| TTFB p50 within 100 µs of nginx ({name}) | {} vs {} µs = {} µs | {} |",
                    pct(&s.s.ttfb, 0.5),
                    pct(&n.s.ttfb, 0.5),
                    signed(diff),
                    verdict(diff <= 100)
                );
            }
        }
    }
    let _ = writeln!(
        w,
        "| idle RSS ≤ 20 MB | {} MB | {} |",
        mb(mem.idle_kb),
        verdict(mem.idle_kb <= 20 * 1024)
    );
    let _ = writeln!(
        w,
        "| RSS under load ≤ 50 MB | peak {} MB | {} |",
        mb(mem.peak_kb),
        verdict(mem.peak_kb <= 50 * 1024)
    );
    for m in many.iter().filter(|m| m.arm == "sluice") {
        let peak = m.rss_open_kb.max(m.rss_peak_kb);
        let _ = writeln!(
            w,
            "| {} concurrent streams ≤ 100 MB | peak {} MB ({} of {} open at once) | {} |",
            m.target,
            mb(peak),
            m.opened,
            m.target,
            verdict(peak <= 100 * 1024 && m.opened == m.target)
        );
    }
    for name in [
        "prompt 100k tok distinct c=1",
        "prompt 100k tok c=1",
        "prompt 100k tok c=4",
    ] {
        let Some((_, runs)) = get(name) else { continue };
        if let (Some(d), Some(s)) = (find(runs, "direct"), find(runs, "sluice")) {
            let a50 = pct(&s.s.lat, 0.5) as i64 - pct(&d.s.lat, 0.5) as i64;
            let _ = writeln!(
                w,
                "| 100k-token prompt adds ≤ 5 ms ({name}) | p50 {:+.2} ms (CPU {:.0} µs/req) | {} |",
                a50 as f64 / 1000.0,
                s.proxy_cpu.unwrap_or(0.0),
                verdict(a50 <= 5_000)
            );
        }
    }

    let errs: Vec<String> = results
        .iter()
        .flat_map(|(sc, runs)| {
            runs.iter()
                .filter(|r| !r.s.first_errors.is_empty())
                .map(move |r| {
                    format!(
                        "- {} / {}: {} errors, {} non-200, {} incomplete; first: {:?}",
                        sc.name, r.arm, r.s.errors, r.s.non200, r.s.incomplete, r.s.first_errors
                    )
                })
        })
        .chain(many.iter().filter(|m| !m.first_errors.is_empty()).map(|m| {
            format!(
                "- {} concurrent streams / {}: {} failed; first: {:?}",
                m.target, m.arm, m.failed, m.first_errors
            )
        }))
        .collect();
    let _ = writeln!(w, "\n## Errors\n");
    if errs.is_empty() {
        let _ = writeln!(w, "None: every response was a complete 200.");
    } else {
        for e in errs {
            let _ = writeln!(w, "{e}");
        }
    }
    let _ = writeln!(w, "\n## Process output (warnings and errors)\n");
    for (name, log) in logs {
        let log = log.lock().expect("log");
        let lines: Vec<&String> = log
            .first
            .iter()
            .filter(|l| !l.contains("sluice listening") && !l.contains("listening on"))
            .collect();
        let _ = writeln!(
            w,
            "- {name}: {} line(s){}",
            log.total,
            if lines.is_empty() {
                String::new()
            } else {
                ", first:".into()
            }
        );
        for l in lines.iter().take(5) {
            let _ = writeln!(w, "  - `{l}`");
        }
    }
    o
}

// ------------------------------------------------------------------------------------------
// Main
// ------------------------------------------------------------------------------------------

/// Sustained non-streaming load through each proxy, reported per 5 s interval.
async fn soak(env: &Env, arms: &[Arm], secs: u64) -> String {
    let sc = Scenario {
        name: "soak chat c=64".into(),
        kind: Kind::NonStream,
        concurrency: 64,
        requests: usize::MAX,
        body: chat_body(200, false),
        headers: headers(20, None),
        expect: None,
        bodies: None,
    };
    let mut o = String::new();
    let _ = writeln!(o, "# Soak: non-streaming chat, c=64, {secs} s per proxy\n");
    let _ = writeln!(o, "{}", machine_info());
    let _ = writeln!(
        o,
        "| proxy | t (s) | req/s | p50 µs | p99 µs | proxy CPU µs/req (ticks) | proxy RSS MB | errors / non-200 |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    for arm in arms.iter().filter(|a| !a.pids.is_empty()) {
        let start = Instant::now();
        while start.elapsed().as_secs() < secs {
            let ticks = |pids: &[u32]| pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>();
            let p0 = ticks(&arm.pids);
            let (mut s, elapsed) = drive(
                &env.client,
                &arm.uri,
                &sc,
                usize::MAX,
                Duration::from_secs(5),
                false,
            )
            .await;
            let dt = ticks(&arm.pids).saturating_sub(p0);
            s.lat.sort_unstable();
            let line = format!(
                "| {} | {} | {:.0} | {} | {} | {:.1} ({dt}) | {} | {} / {} |",
                arm.name,
                start.elapsed().as_secs(),
                s.ok as f64 / elapsed.as_secs_f64(),
                pct(&s.lat, 0.5),
                pct(&s.lat, 0.99),
                dt as f64 * env.tick_us / s.ok.max(1) as f64,
                mb(rss_kb(&arm.pids)),
                s.errors,
                s.non200,
            );
            eprintln!("soak: {line}");
            let _ = writeln!(o, "{line}");
        }
    }
    o
}

/// Command line: `--quick` shrinks the counts ~10x; `--only TEXT` (repeatable) runs only the
/// scenarios whose name contains TEXT, or is exactly TEXT when it starts with `=` (`streams`
/// selects the many-streams scenario);
/// `--soak SECS` instead drives non-streaming chat at c=64 through each proxy for SECS seconds
/// and reports every 5 s (does the cost per request stay flat?). Anything else (cargo bench
/// passes `--bench`) is ignored.
struct Args {
    quick: bool,
    only: Vec<String>,
    soak: Option<u64>,
}

impl Args {
    fn parse() -> Args {
        let mut args = std::env::args().skip(1);
        let mut out = Args {
            quick: false,
            only: Vec::new(),
            soak: None,
        };
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => out.quick = true,
                "--only" => out.only.extend(args.next()),
                "--soak" => out.soak = args.next().and_then(|v| v.parse().ok()),
                _ => {}
            }
        }
        out
    }

    fn wants(&self, name: &str) -> bool {
        self.only.is_empty()
            || self.only.iter().any(|o| match o.strip_prefix('=') {
                Some(exact) => name == exact,
                None => name.contains(o.as_str()),
            })
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let quick = args.quick;
    let started = Instant::now();
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            for pid in PIDS.lock().expect("pids").iter() {
                signal(*pid, "KILL");
            }
            std::process::exit(130);
        }
    });
    let dir = std::env::temp_dir().join(format!("sluice-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut procs = Procs {
        children: Vec::new(),
        extra_pids: Vec::new(),
        dir,
    };

    let (mock_pid, mock_addr, mock_log) = start_mock(&mut procs);
    let (sluice_pid, sluice_addr, sluice_admin, sluice_log) =
        start_sluice(&mut procs, "sluice.toml", &sluice_config(mock_addr));
    let failing_addr = start_failing().await;
    let (feat_pid, feat_addr, feat_admin, feat_log) = start_sluice(
        &mut procs,
        "sluice-features.toml",
        &sluice_features_config(mock_addr, failing_addr),
    );
    let nginx = have_nginx().then(|| start_nginx(&mut procs, mock_addr));
    eprintln!(
        "load: mock {mock_addr} (pid {mock_pid}), sluice {sluice_addr} (pid {sluice_pid}, admin {sluice_admin}), nginx {}",
        nginx
            .as_ref()
            .map_or("not installed: skipped".to_string(), |(p, a, _)| format!("{a} (pids {p:?})"))
    );

    let uri = |addr: SocketAddr| -> Uri {
        format!("http://{addr}/v1/chat/completions")
            .parse()
            .expect("uri")
    };
    let mut arms = vec![
        Arm {
            name: "direct",
            uri: uri(mock_addr),
            pids: Vec::new(),
        },
        Arm {
            name: "sluice",
            uri: uri(sluice_addr),
            pids: vec![sluice_pid],
        },
    ];
    if let Some((pids, addr, _)) = &nginx {
        arms.push(Arm {
            name: "nginx",
            uri: uri(*addr),
            pids: pids.clone(),
        });
    }

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build(connector);
    let nginx_pids = nginx.as_ref().map(|n| n.0.clone()).unwrap_or_default();
    let env = Env {
        client,
        mock_pid,
        tick_us: 1e6 / clk_tck() as f64,
        rss: RssSampler::spawn(sluice_pid, nginx_pids.clone()),
    };

    // Idle: let Sluice settle first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kb = rss_kb(&[sluice_pid]);
    let fds_idle = fd_count(sluice_pid);
    let threads_idle = status_kb(sluice_pid, "Threads:");
    let nginx_idle_kb = rss_kb(&nginx_pids);
    let feat_idle_kb = rss_kb(&[feat_pid]);

    if let Some(secs) = args.soak {
        let text = soak(&env, &arms, secs).await;
        println!("{text}");
        drop(procs);
        return;
    }

    let mut results = Vec::new();
    for sc in scenarios(quick).into_iter().filter(|s| args.wants(&s.name)) {
        let mut runs = Vec::new();
        for arm in &arms {
            let r = run_arm(&env, arm, &sc, TIME_CAP).await;
            eprintln!(
                "load: {:<26} {:<7} {:>6} ok in {:>5.2} s = {:>7.0} req/s, p50 {:>6} µs, p99 {:>6} µs, proxy CPU {:>6} µs/req, errors {} / {} / {}",
                sc.name,
                r.arm,
                r.s.ok,
                r.elapsed.as_secs_f64(),
                r.rps(),
                pct(&r.s.lat, 0.5),
                pct(&r.s.lat, 0.99),
                r.proxy_cpu.map_or("–".into(), |c| format!("{c:.1}")),
                r.s.errors,
                r.s.non200,
                r.s.incomplete
            );
            runs.push(r);
        }
        results.push((sc, runs));
    }
    let peak_kb = env.rss.sluice_max.load(Ordering::Relaxed);

    // The features instance: cache hits, memory per cached MB, failover.
    let feat_arms = [
        arms[0].clone(),
        Arm {
            name: "sluice",
            uri: uri(feat_addr),
            pids: vec![feat_pid],
        },
    ];
    let mut feat_results = Vec::new();
    for sc in feature_scenarios(quick)
        .into_iter()
        .filter(|s| args.wants(&s.name))
    {
        let mut runs = Vec::new();
        for arm in &feat_arms {
            let r = run_arm(&env, arm, &sc, TIME_CAP).await;
            eprintln!(
                "load: {:<26} {:<7} {:>6} ok in {:>5.2} s = {:>7.0} req/s, p50 {:>6} µs, p99 {:>6} µs, proxy CPU {:>6} µs/req, errors {} / {} / {} {:?}",
                sc.name,
                r.arm,
                r.s.ok,
                r.elapsed.as_secs_f64(),
                r.rps(),
                pct(&r.s.lat, 0.5),
                pct(&r.s.lat, 0.99),
                r.proxy_cpu.map_or("–".into(), |c| format!("{c:.1}")),
                r.s.errors,
                r.s.non200,
                r.s.incomplete,
                r.s.first_errors,
            );
            runs.push(r);
        }
        feat_results.push((sc, runs));
    }
    let fill = if args.wants("cache fill") {
        let entries = if quick { 200 } else { 2_000 };
        let f = cache_fill(&env, &feat_arms[1], feat_admin, entries, 16).await;
        eprintln!(
            "load: cache fill {} x 16 KiB: fill ok {} err {} ({:?}), re-read ok {} err {} ({:?}); RSS {} -> {} MB; admin {} -> {}",
            f.entries,
            f.fill.ok,
            f.fill.errors + f.fill.non200,
            f.fill.first_errors,
            f.reread.ok,
            f.reread.errors + f.reread.non200,
            f.reread.first_errors,
            mb(f.rss_before_kb),
            mb(f.rss_after_kb),
            f.stats_before.trim(),
            f.stats_after.trim()
        );
        Some(f)
    } else {
        None
    };
    let feat_text = features_report(&feat_results, fill.as_ref(), feat_idle_kb);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_kb = rss_kb(&[sluice_pid]);

    let count = if quick { 100 } else { 1_000 };
    let mut many = Vec::new();
    if args.wants(&format!("{count} streams")) {
        for arm in arms.iter().filter(|a| a.name != "direct") {
            let m = many_streams(&env, arm, count).await;
            eprintln!(
                "load: {count} streams via {}: opened {}, ok {}, failed {}, RSS open {} MB, peak {} MB",
                m.arm,
                m.opened,
                m.ok,
                m.failed,
                mb(m.rss_open_kb),
                mb(m.rss_peak_kb)
            );
            many.push(m);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_all_kb = rss_kb(&[sluice_pid]);
    let fds_after = fd_count(sluice_pid);
    // Close every client connection: what Sluice still holds then is its upstream pool.
    drop(env);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mem = Memory {
        idle_kb,
        peak_kb,
        after_kb,
        after_all_kb,
        fds_idle,
        fds_after,
        fds_disconnected: fd_count(sluice_pid),
        rss_disconnected_kb: rss_kb(&[sluice_pid]),
        threads_idle,
        threads_after: status_kb(sluice_pid, "Threads:"),
        nginx_idle_kb,
    };
    assert!(alive(sluice_pid), "sluice died during the run");

    let mut logs: Vec<(&str, &Arc<Mutex<LogTail>>)> = vec![
        ("sluice stderr", &sluice_log),
        ("sluice (features instance) stderr", &feat_log),
        ("mock output", &mock_log),
    ];
    if let Some((_, _, log)) = &nginx {
        logs.push(("nginx stderr", log));
    }
    let all_results: Vec<(Scenario, Vec<Run>)> = results.into_iter().chain(feat_results).collect();
    let mut text = report(quick, &all_results, &mem, &many, &logs, started.elapsed());
    text.push_str(&feat_text);
    println!("{text}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/out");
    std::fs::create_dir_all(&out).expect("bench/out");
    std::fs::write(out.join("latest.md"), &text).expect("write bench/out/latest.md");
    eprintln!(
        "load: report written to {}",
        out.join("latest.md").display()
    );
    drop(procs);
}
