//! Hostile soak: mixed valid and hostile traffic through the release `sluice` binary in front of
//! the mock provider, for a bounded time, watching for growth.
//!
//! `cargo bench --bench soak -- [--secs 600] [--rps 100] [--concurrency 16] [--idle 200]`, after
//! `cargo build --release --bins`. It starts `target/release/sluice-mock` and
//! `target/release/sluice` (loopback only) with a shared-gateway config: four virtual keys,
//! `trust_identity_headers = false`, a per-user daily budget, a `[[pricing]]` entry, a per-user
//! rate limit, `[limits] max_input_tokens`/`max_output_tokens`, the response cache
//! (`deterministic`), `max_body = 256KiB` and the usage log in a file.
//!
//! Traffic, paced to `--rps` requests per second over `--concurrency` workers and stopped after
//! `--secs` (or `rps × secs` requests, whichever first):
//!
//! * ~70% valid chat (non-streamed, streamed, cache hits with `temperature: 0`, a priced custom
//!   model with an oversized `max_tokens` that Sluice clamps), sent with a pooled hyper client;
//! * ~30% hostile, each written as raw HTTP/1.1 on its own connection: encoded and odd paths,
//!   wrong methods, duplicate-key JSON, a 300-byte model name, invented model names, invented
//!   `x-sluice-user`/`x-sluice-team` (ignored: identity headers are untrusted), bad and missing
//!   keys, bodies over `max_body`, prompts over `max_input_tokens`, clients that drop a stream
//!   after its first bytes, a malformed request line and 120 header fields (both refused by
//!   the HTTP parser before any handler runs);
//! * in the background for the whole run: `--idle` sockets that connect and never send
//!   (re-opened whenever Sluice closes them at `header_timeout`), 4 slowloris clients that
//!   trickle a body one byte every 2 s (Sluice answers 408 at `body_timeout`) and 2 that trickle
//!   their headers (closed by Sluice; in the run of bench/RESULTS.md at 2 × `header_timeout`).
//!
//! Every 10 s it samples Sluice's RSS, open fds, threads, CPU, and the size and series count of
//! `/metrics`. At the end it stops the traffic, closes the idle sockets, stops Sluice with
//! SIGTERM (so the usage log is written out), and checks:
//!
//! * **Flat**: the mean of the last third of the samples against the mean of the first third.
//!   RSS may grow by at most max(15%, 4 MiB) (allocator pages and the bounded cache settle in
//!   the first minutes); fds may differ by at most max(10%, 16) (the idle sockets and workers
//!   come and go); threads may grow by at most max(25%, 4) (tokio's blocking pool grows and
//!   shrinks with token counting and file writes); `/metrics` may grow by at most 10% in bytes
//!   (counter values get longer) and 5% + 5 in series (a rare status seen late adds its
//!   series once; client-chosen names never do).
//! * **One usage record per request that reached the handler**: a request counts when its
//!   complete request head was written and the HTTP parser accepts it, whatever came back (a
//!   status, a reset, or our own disconnect mid-stream). Not counted, and with no record:
//!   idle sockets, trickled headers, the malformed request line and the oversized header
//!   block (hyper answers or closes before any handler runs). A pooled-client error leaves it
//!   unknown whether the request arrived; those are reported separately (expected: none).
//! * **Identity headers ignored**: no usage record names an invented user.
//!
//! The Markdown report goes to stdout and `bench/out/soak.md`; the exit code is 1 when a check
//! fails.

// The report is this program's output.
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "procfs.rs"]
mod procfs;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use procfs::{clk_tck, cpu_ticks, fd_count, status_kb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// How often the process is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Env var holding the provider key Sluice sends for virtual-key requests (the mock ignores it).
const UPSTREAM_KEY_ENV: &str = "SLUICE_SOAK_UPSTREAM_KEY";
/// Virtual keys: (key name, client key, user, team).
const KEYS: [(&str, &str, &str, Option<&str>); 4] = [
    (
        "alice-laptop",
        "sk-soak-alice-0123456789",
        "alice",
        Some("research"),
    ),
    ("bob-ci", "sk-soak-bob-0123456789", "bob", Some("research")),
    (
        "carol-agent",
        "sk-soak-carol-0123456789",
        "carol",
        Some("ops"),
    ),
    ("dave", "sk-soak-dave-0123456789", "dave", None),
];
/// Prefix of every invented `x-sluice-user` value; no usage record may carry one.
const INVENTED_USER: &str = "intruder-";
/// Per-user requests per minute (alice gets 40% of the valid traffic, so at the default rate
/// she is refused now and then: the 429 path is part of the mix).
const RPM_PER_USER: u32 = 1500;

// ------------------------------------------------------------------------------------------
// Child processes (as in load.rs)
// ------------------------------------------------------------------------------------------

static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Owns the children and the temp dir; kills and removes them on drop, panics included.
struct Procs {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Procs {
    fn add(&mut self, child: Child) -> u32 {
        let pid = child.id();
        PIDS.lock().expect("pids").push(pid);
        self.children.push(child);
        pid
    }

    /// SIGTERM to `pid` and wait (up to `within`) for it to exit; true if it exited 0.
    fn stop(&mut self, pid: u32, within: Duration) -> Option<bool> {
        let child = self.children.iter_mut().find(|c| c.id() == pid)?;
        signal(pid, "TERM");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.children {
            if matches!(c.try_wait(), Ok(None)) {
                signal(c.id(), "TERM");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for c in &mut self.children {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Keeps reading a child's output; lines containing `needle` go to `tx`, the first 40 lines and
/// a count are kept.
fn drain(
    out: impl Read + Send + 'static,
    needle: &'static str,
    tx: mpsc::Sender<String>,
    log: Arc<Mutex<(usize, Vec<String>)>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains(needle) {
                let _ = tx.send(line.clone());
            }
            let mut l = log.lock().expect("log");
            l.0 += 1;
            if l.1.len() < 40 {
                l.1.push(line);
            }
        }
    });
}

type Log = Arc<Mutex<(usize, Vec<String>)>>;

fn bin_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target.join("release").join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --release --bins` first",
        path.display()
    );
    path
}

fn wait_line(rx: &mpsc::Receiver<String>, what: &str, log: &Log) -> String {
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            panic!(
                "{what} did not start; output:\n{}",
                log.lock().expect("log").1.join("\n")
            )
        })
}

fn start_mock(procs: &mut Procs) -> (u32, SocketAddr) {
    let mut child = Command::new(bin_path("sluice-mock"))
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice-mock");
    let log = Log::default();
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
    let pid = procs.add(child);
    let line = wait_line(&rx, "sluice-mock", &log);
    let addr = line
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected mock banner {line:?}"));
    (pid, addr)
}

fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// The shared-gateway config under test.
fn sluice_config(mock: SocketAddr, dir: &Path) -> String {
    let usage = dir.join("usage.jsonl");
    let state = dir.join("state.jsonl");
    let mut keys = String::new();
    for (name, key, user, team) in KEYS {
        let _ = write!(
            keys,
            "\n[[keys]]\nname = \"{name}\"\nsha256 = \"{}\"\nuser = \"{user}\"\n",
            sha256_hex(key)
        );
        if let Some(t) = team {
            let _ = writeln!(keys, "team = \"{t}\"");
        }
    }
    format!(
        r#"# Generated by bench/soak.rs: a shared gateway (virtual keys only, identity headers untrusted)
[server]
listen = "127.0.0.1:0"
passthrough_keys = false
trust_identity_headers = false
max_body = "256KiB"

[admin]
listen = "127.0.0.1:0"

[log]
level = "warn,sluice::run=info"
usage = "{usage}"

[state]
path = "{state}"

[limits]
max_input_tokens = 2000
max_output_tokens = 256

[cache]
mode = "deterministic"
max_bytes = "8MiB"

[[pricing]]
model = "soak-model"
input = 1.0
output = 2.0

[[budgets]]
name = "user-daily"
scope = ["user"]
window = "day"
limit_usd = 50.0

[[rate_limits]]
name = "per-user"
scope = ["user"]
requests_per_minute = {RPM_PER_USER}

[[providers]]
name = "mock"
kind = "openai-compatible"
base_url = "http://{mock}/v1"
api_key_env = "{UPSTREAM_KEY_ENV}"

[[models]]
name = "gpt-4o-mini"
provider = "mock"

[[models]]
name = "soak-model"
provider = "mock"

[[models]]
name = "*"
provider = "mock"
{keys}"#,
        usage = usage.display(),
        state = state.display(),
    )
}

/// Starts Sluice; returns its pid, data and admin addresses.
fn start_sluice(procs: &mut Procs, config: &str) -> (u32, SocketAddr, SocketAddr, Log) {
    let path = procs.dir.join("sluice.toml");
    std::fs::write(&path, config).expect("write sluice config");
    let mut child = Command::new(bin_path("sluice"))
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .env(UPSTREAM_KEY_ENV, "sk-soak-upstream")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let log = Log::default();
    let (tx, rx) = mpsc::channel();
    drain(
        child.stderr.take().expect("stderr"),
        "sluice listening",
        tx,
        log.clone(),
    );
    let pid = procs.add(child);
    let line = wait_line(&rx, "sluice", &log);
    let field = |name: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {name} address in {line:?}"))
    };
    let (data, admin) = (field("data="), field("admin="));
    for _ in 0..200 {
        if StdStream::connect(data).is_ok() {
            return (pid, data, admin, log);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("sluice never accepted connections on {data}");
}

// ------------------------------------------------------------------------------------------
// Traffic
// ------------------------------------------------------------------------------------------

/// A tiny deterministic PRNG (xorshift64*): the mix is reproducible for a given seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A client key: alice 40%, the others 20% each.
    fn key(&mut self) -> &'static str {
        match self.below(10) {
            0..=3 => KEYS[0].1,
            4..=5 => KEYS[1].1,
            6..=7 => KEYS[2].1,
            _ => KEYS[3].1,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Chat,
    Stream,
    CacheHit,
    PricedClamped,
    InventedUser,
    EncodedUnreserved,
    EncodedSlash,
    UpperCase,
    DotDot,
    WrongMethodGet,
    WrongMethodDelete,
    DuplicateKey,
    LongModel,
    InventedModel,
    BadKey,
    NoKey,
    OverMaxBody,
    OverInputTokens,
    DropMidStream,
    MalformedLine,
    TooManyHeaders,
}

/// (class, weight per 1000, what it is)
const MIX: &[(Class, u64, &str)] = &[
    (Class::Chat, 250, "valid chat, not streamed"),
    (Class::Stream, 200, "valid chat, streamed"),
    (
        Class::CacheHit,
        150,
        "valid, `temperature: 0`, 8 bodies (cache hits)",
    ),
    (
        Class::PricedClamped,
        75,
        "valid, priced `soak-model`, `max_tokens: 100000` (clamped)",
    ),
    (
        Class::InventedUser,
        25,
        "valid, invented `x-sluice-user`/`x-sluice-team`",
    ),
    (
        Class::EncodedUnreserved,
        20,
        "`POST /v1/chat/%63ompletions`",
    ),
    (Class::EncodedSlash, 20, "`POST /v1/chat%2Fcompletions`"),
    (Class::UpperCase, 20, "`POST /v1/Chat/completions`"),
    (Class::DotDot, 20, "`POST /v1/../v1/x`"),
    (Class::WrongMethodGet, 15, "`GET /v1/chat/completions`"),
    (Class::WrongMethodDelete, 10, "`DELETE /v1/embeddings`"),
    (Class::DuplicateKey, 20, "duplicate `model` key in the JSON"),
    (Class::LongModel, 20, "300-byte model name"),
    (
        Class::InventedModel,
        20,
        "invented model name (unpriced under the budget)",
    ),
    (Class::BadKey, 20, "unknown key"),
    (Class::NoKey, 15, "no key"),
    (Class::OverMaxBody, 10, "300 KiB body (`max_body` 256 KiB)"),
    (Class::OverInputTokens, 15, "prompt over `max_input_tokens`"),
    (
        Class::DropMidStream,
        25,
        "stream dropped by the client after its first bytes",
    ),
    (
        Class::MalformedLine,
        10,
        "malformed request line (no handler)",
    ),
    (Class::TooManyHeaders, 10, "120 header fields (no handler)"),
];

fn pick(rng: &mut Rng) -> Class {
    let total: u64 = MIX.iter().map(|m| m.1).sum();
    let mut r = rng.below(total);
    for (c, w, _) in MIX {
        if r < *w {
            return *c;
        }
        r -= w;
    }
    Class::Chat
}

fn class_name(c: Class) -> String {
    format!("{c:?}")
}

/// Whether a request reached Sluice's data-plane handler (so must have one usage record).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reach {
    Yes,
    No,
    Unknown,
}

#[derive(Default)]
struct ClassStats {
    sent: u64,
    reached: u64,
    unknown: u64,
    outcomes: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Stats {
    classes: Mutex<BTreeMap<String, ClassStats>>,
    sent: AtomicU64,
}

impl Stats {
    fn note(&self, class: &str, reach: Reach, outcome: String) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let mut m = self.classes.lock().expect("stats");
        let s = m.entry(class.to_owned()).or_default();
        s.sent += 1;
        match reach {
            Reach::Yes => s.reached += 1,
            Reach::Unknown => s.unknown += 1,
            Reach::No => {}
        }
        *s.outcomes.entry(outcome).or_default() += 1;
    }
}

/// Hands out send times: `rps` per second from `start`, at most `max` of them, none after `end`.
struct Pacer {
    start: Instant,
    end: Instant,
    rps: f64,
    max: u64,
    next: AtomicU64,
}

impl Pacer {
    fn slot(&self) -> Option<Instant> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if n >= self.max {
            return None;
        }
        let at = self.start + Duration::from_secs_f64(n as f64 / self.rps);
        (at < self.end).then_some(at)
    }
}

struct Ctx {
    client: HttpClient,
    data: SocketAddr,
    chat_uri: Uri,
    pacer: Pacer,
    stats: Stats,
    prompt_long: String,
}

fn chat_json(model: &str, prompt: &str, stream: bool, extra: &str) -> String {
    let prompt = serde_json::Value::String(prompt.to_owned());
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":{prompt}}}],"max_tokens":64,"stream":{stream}{extra}}}"#
    )
}

async fn worker(ctx: Arc<Ctx>, seed: u64) {
    let mut rng = Rng::new(seed);
    while let Some(at) = ctx.pacer.slot() {
        tokio::time::sleep_until(at.into()).await;
        let class = pick(&mut rng);
        let (reach, outcome) = run_class(&ctx, class, &mut rng).await;
        ctx.stats.note(&class_name(class), reach, outcome);
    }
}

async fn run_class(ctx: &Ctx, class: Class, rng: &mut Rng) -> (Reach, String) {
    let n = rng.next();
    let key = rng.key();
    let chat = |stream: bool| chat_json("gpt-4o-mini", &format!("hello {n}"), stream, "");
    let post_chat = |path: &str, key: Option<&str>, body: String| {
        raw(
            ctx.data,
            "POST",
            path.to_owned(),
            key.map(str::to_owned),
            Vec::new(),
            body.into_bytes(),
        )
    };
    match class {
        Class::Chat => valid(ctx, key, chat(false), false, &[]).await,
        Class::Stream => valid(ctx, key, chat(true), true, &[]).await,
        Class::CacheHit => {
            let stream = n % 2 == 0;
            let body = chat_json(
                "gpt-4o-mini",
                &format!("cached question {}", n % 8),
                stream,
                r#","temperature":0"#,
            );
            valid(ctx, key, body, stream, &[]).await
        }
        Class::PricedClamped => {
            let stream = n % 2 == 0;
            let body = format!(
                r#"{{"model":"soak-model","messages":[{{"role":"user","content":"priced {n}"}}],"max_tokens":100000,"stream":{stream}}}"#
            );
            valid(ctx, key, body, stream, &[]).await
        }
        Class::InventedUser => {
            let hdrs = [
                ("x-sluice-user", format!("{INVENTED_USER}{n:x}")),
                ("x-sluice-team", format!("team-{n:x}")),
                ("x-sluice-feature", format!("f-{n:x}")),
            ];
            valid(ctx, key, chat(false), false, &hdrs).await
        }
        Class::EncodedUnreserved => {
            post_chat("/v1/chat/%63ompletions", Some(key), chat(false)).await
        }
        Class::EncodedSlash => post_chat("/v1/chat%2Fcompletions", Some(key), chat(false)).await,
        Class::UpperCase => post_chat("/v1/Chat/completions", Some(key), chat(false)).await,
        Class::DotDot => post_chat("/v1/../v1/x", Some(key), chat(false)).await,
        Class::WrongMethodGet => {
            raw(
                ctx.data,
                "GET",
                "/v1/chat/completions".into(),
                Some(key.into()),
                Vec::new(),
                Vec::new(),
            )
            .await
        }
        Class::WrongMethodDelete => {
            raw(
                ctx.data,
                "DELETE",
                "/v1/embeddings".into(),
                Some(key.into()),
                Vec::new(),
                Vec::new(),
            )
            .await
        }
        Class::DuplicateKey => {
            let body = format!(
                r#"{{"model":"gpt-4o-mini","model":"o1-pro","messages":[{{"role":"user","content":"dup {n}"}}]}}"#
            );
            post_chat("/v1/chat/completions", Some(key), body).await
        }
        Class::LongModel => {
            let model = "m".repeat(300);
            post_chat(
                "/v1/chat/completions",
                Some(key),
                chat_json(&model, "hi", false, ""),
            )
            .await
        }
        Class::InventedModel => {
            let model = format!("invented-{n:x}");
            post_chat(
                "/v1/chat/completions",
                Some(key),
                chat_json(&model, "hi", false, ""),
            )
            .await
        }
        Class::BadKey => {
            let bad = format!("sk-bad-{n:x}");
            post_chat("/v1/chat/completions", Some(bad.as_str()), chat(false)).await
        }
        Class::NoKey => post_chat("/v1/chat/completions", None, chat(false)).await,
        Class::OverMaxBody => {
            let pad = "x".repeat(300 * 1024);
            post_chat(
                "/v1/chat/completions",
                Some(key),
                chat_json("gpt-4o-mini", &pad, false, ""),
            )
            .await
        }
        Class::OverInputTokens => {
            let body = chat_json("gpt-4o-mini", &ctx.prompt_long, false, "");
            post_chat("/v1/chat/completions", Some(key), body).await
        }
        Class::DropMidStream => drop_mid_stream(ctx, key, n).await,
        Class::MalformedLine => {
            let head =
                "POST /v1/chat completions HTTP/1.1\r\nhost: sluice\r\nconnection: close\r\n\r\n";
            let (_, outcome) = raw_bytes(ctx.data, head.as_bytes().to_vec(), Vec::new()).await;
            (Reach::No, outcome)
        }
        Class::TooManyHeaders => {
            let extra = (0..120)
                .map(|i| (format!("x-junk-{i}"), "y".repeat(20)))
                .collect();
            let (head, body) = request_bytes(
                "POST",
                "/v1/chat/completions",
                Some(key),
                extra,
                chat(false).into_bytes(),
            );
            let (_, outcome) = raw_bytes(ctx.data, head, body).await;
            (Reach::No, outcome)
        }
    }
}

/// A valid request through the pooled client, the whole response read.
async fn valid(
    ctx: &Ctx,
    key: &str,
    body: String,
    stream: bool,
    extra: &[(&'static str, String)],
) -> (Reach, String) {
    let mut b = Request::post(ctx.chat_uri.clone())
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("x-mock-words", "20");
    for (name, v) in extra {
        b = b.header(*name, v.as_str());
    }
    let req = b.body(Full::new(Bytes::from(body))).expect("request");
    let resp = match tokio::time::timeout(Duration::from_secs(60), ctx.client.request(req)).await {
        Err(_) => return (Reach::Unknown, "client timeout".into()),
        Ok(Err(_)) => return (Reach::Unknown, "client error".into()),
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    let outcome =
        match tokio::time::timeout(Duration::from_secs(60), resp.into_body().collect()).await {
            Ok(Ok(c)) => {
                let bytes = c.to_bytes();
                let done = bytes.windows(12).any(|w| w == b"data: [DONE]");
                if stream && status == 200 && !done {
                    "200 stream without [DONE]".into()
                } else {
                    status.to_string()
                }
            }
            Ok(Err(_)) => format!("{status} body error"),
            Err(_) => format!("{status} body timeout"),
        };
    (Reach::Yes, outcome)
}

fn request_bytes(
    method: &str,
    path: &str,
    key: Option<&str>,
    extra: Vec<(String, String)>,
    body: Vec<u8>,
) -> (Vec<u8>, Vec<u8>) {
    let mut h = format!(
        "{method} {path} HTTP/1.1\r\nhost: sluice\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !extra.iter().any(|(n, _)| n == "x-mock-words") {
        h.push_str("x-mock-words: 10\r\n");
    }
    if let Some(k) = key {
        let _ = write!(h, "authorization: Bearer {k}\r\n");
    }
    for (n, v) in extra {
        let _ = write!(h, "{n}: {v}\r\n");
    }
    h.push_str("\r\n");
    (h.into_bytes(), body)
}

/// One raw HTTP/1.1 request on its own connection (`connection: close`).
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: String,
    key: Option<String>,
    extra: Vec<(String, String)>,
    body: Vec<u8>,
) -> (Reach, String) {
    let (head, body) = request_bytes(method, &path, key.as_deref(), extra, body);
    raw_bytes(addr, head, body).await
}

/// Writes `head` then `body`, reads the answer to EOF (bounded) and returns the status (or what
/// happened instead). Reached = the head was written in full.
async fn raw_bytes(addr: SocketAddr, head: Vec<u8>, body: Vec<u8>) -> (Reach, String) {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
    else {
        return (Reach::No, "connect failed".into());
    };
    let _ = s.set_nodelay(true);
    if !matches!(
        tokio::time::timeout(Duration::from_secs(10), s.write_all(&head)).await,
        Ok(Ok(()))
    ) {
        return (Reach::No, "head not written".into());
    }
    if !body.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(10), s.write_all(&body)).await;
    }
    let (got, err) = read_bounded(&mut s, 256 * 1024, Duration::from_secs(30), None).await;
    (Reach::Yes, describe(&got, err))
}

fn status_of(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

fn describe(buf: &[u8], err: Option<&'static str>) -> String {
    match (status_of(buf), err) {
        (Some(code), _) => code.to_string(),
        (None, Some(e)) => e.into(),
        (None, None) => "closed without answer".into(),
    }
}

/// Reads until EOF, `max` bytes, `within`, or (if given) `stop_after_body` bytes past the head.
async fn read_bounded(
    s: &mut TcpStream,
    max: usize,
    within: Duration,
    stop_after_body: Option<usize>,
) -> (Vec<u8>, Option<&'static str>) {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return (buf, Some("timeout")),
            Ok(Err(_)) => return (buf, Some("reset")),
            Ok(Ok(0)) => return (buf, None),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() >= max {
            return (buf, None);
        }
        if let Some(want) = stop_after_body {
            let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
            if head_end.is_some_and(|e| buf.len() >= e + 4 + want) {
                return (buf, None);
            }
        }
    }
}

/// A streamed request (2 s of paced events) the client drops after ~300 body bytes.
async fn drop_mid_stream(ctx: &Ctx, key: &str, n: u64) -> (Reach, String) {
    let body = chat_json("gpt-4o-mini", &format!("cut {n}"), true, "");
    let extra = vec![
        ("x-mock-words".to_owned(), "200".to_owned()),
        ("x-mock-delay-ms".to_owned(), "10".to_owned()),
    ];
    let (head, body) = request_bytes(
        "POST",
        "/v1/chat/completions",
        Some(key),
        extra,
        body.into_bytes(),
    );
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(ctx.data)).await
    else {
        return (Reach::No, "connect failed".into());
    };
    let mut all = head;
    all.extend_from_slice(&body);
    if !matches!(
        tokio::time::timeout(Duration::from_secs(10), s.write_all(&all)).await,
        Ok(Ok(()))
    ) {
        return (Reach::No, "head not written".into());
    }
    let (got, err) = read_bounded(&mut s, 1 << 20, Duration::from_secs(30), Some(300)).await;
    drop(s);
    let outcome = match status_of(&got) {
        Some(200) if err.is_none() => "200, dropped by client".to_owned(),
        _ => describe(&got, err),
    };
    (Reach::Yes, outcome)
}

/// Background: `count` sockets that connect and never send, re-opened when Sluice closes them.
fn idle_sockets(
    set: &mut JoinSet<()>,
    addr: SocketAddr,
    count: usize,
    stop: CancellationToken,
    open: Arc<AtomicI64>,
    closed: Arc<Mutex<Vec<Duration>>>,
) {
    for i in 0..count {
        let (stop, open, closed) = (stop.clone(), open.clone(), closed.clone());
        set.spawn(async move {
            // Spread the first connects over a second.
            tokio::time::sleep(Duration::from_millis((i as u64 * 5) % 1000)).await;
            while !stop.is_cancelled() {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                open.fetch_add(1, Ordering::Relaxed);
                let since = Instant::now();
                let mut b = [0u8; 64];
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = s.read(&mut b) => closed.lock().expect("closed").push(since.elapsed()),
                }
                open.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }
}

/// Background slowloris: a body trickled one byte every 2 s (Sluice answers 408 at
/// `body_timeout`), counted as reaching the handler; or headers trickled (closed at
/// `header_timeout`), not counted.
fn slowloris(
    set: &mut JoinSet<()>,
    ctx: Arc<Ctx>,
    stop: CancellationToken,
    headers: bool,
    seed: u64,
) {
    set.spawn(async move {
        let mut rng = Rng::new(seed);
        while !stop.is_cancelled() {
            let key = rng.key();
            let body = chat_json("gpt-4o-mini", "slow", false, "").into_bytes();
            let (head, body) =
                request_bytes("POST", "/v1/chat/completions", Some(key), Vec::new(), body);
            let Ok(s) = TcpStream::connect(ctx.data).await else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let (mut rd, mut wr) = s.into_split();
            let (prefix, trickle) = if headers {
                (head[..20].to_vec(), head[20..].to_vec())
            } else {
                if wr.write_all(&head).await.is_err() {
                    continue;
                }
                (Vec::new(), body)
            };
            let _ = wr.write_all(&prefix).await;
            let started = Instant::now();
            let reader = async {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match rd.read(&mut chunk).await {
                        Ok(0) => return (buf, None),
                        Err(_) => return (buf, Some("reset")),
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            };
            let writer = async {
                for b in trickle {
                    tokio::select! {
                        _ = stop.cancelled() => {
                            // Leave at least a second between the head and our close, so the
                            // request was surely dispatched before we go.
                            let wait = Duration::from_secs(1).saturating_sub(started.elapsed());
                            tokio::time::sleep(wait).await;
                            return "stopped by client";
                        }
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                    if wr.write_all(&[b]).await.is_err() {
                        return "write failed";
                    }
                }
                "sent in full"
            };
            let (buf, err, how) = tokio::select! {
                (buf, err) = reader => (buf, err, ""),
                how = writer => {
                    // The writer finished or stopped first: collect what came back, briefly.
                    (Vec::new(), None, how)
                }
            };
            let class = if headers {
                "SlowlorisHeaders"
            } else {
                "SlowlorisBody"
            };
            let reach = if headers { Reach::No } else { Reach::Yes };
            let outcome = match status_of(&buf) {
                Some(code) => code.to_string(),
                None if !how.is_empty() => how.to_owned(),
                None => format!(
                    "{} after {}s",
                    err.unwrap_or("closed by server"),
                    started.elapsed().as_secs()
                ),
            };
            ctx.stats.note(class, reach, outcome);
        }
    });
}

// ------------------------------------------------------------------------------------------
// Sampling and the report
// ------------------------------------------------------------------------------------------

struct Sample {
    t: f64,
    sent: u64,
    rss_kb: u64,
    fds: usize,
    threads: u64,
    metrics_bytes: usize,
    series: usize,
    cpu_ticks: u64,
    idle_open: i64,
}

async fn metrics(client: &HttpClient, admin: SocketAddr) -> (usize, usize) {
    let Ok(uri) = format!("http://{admin}/metrics").parse::<Uri>() else {
        return (0, 0);
    };
    let req = Request::get(uri)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await
    else {
        return (0, 0);
    };
    let Ok(Ok(body)) =
        tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect()).await
    else {
        return (0, 0);
    };
    let body = body.to_bytes();
    let text = String::from_utf8_lossy(&body);
    let series = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    (body.len(), series)
}

async fn sample(
    client: &HttpClient,
    pid: u32,
    admin: SocketAddr,
    t: f64,
    sent: u64,
    idle_open: i64,
) -> Sample {
    let (metrics_bytes, series) = metrics(client, admin).await;
    Sample {
        t,
        sent,
        rss_kb: status_kb(pid, "VmRSS:"),
        fds: fd_count(pid),
        threads: status_kb(pid, "Threads:"),
        metrics_bytes,
        series,
        cpu_ticks: cpu_ticks(pid),
        idle_open,
    }
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

struct Check {
    what: &'static str,
    first: f64,
    last: f64,
    allowed: String,
    ok: bool,
}

/// First-third and last-third means of the samples taken under load.
fn thirds(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> (f64, f64) {
    let n = samples.len();
    let k = (n / 3).max(1);
    let first = mean(samples.iter().take(k).map(&f));
    let last = mean(samples.iter().skip(n.saturating_sub(k)).map(&f));
    (first, last)
}

fn flat_checks(samples: &[Sample]) -> Vec<Check> {
    let mut out = Vec::new();
    let (f, l) = thirds(samples, |s| s.rss_kb as f64 / 1024.0);
    let allow = (f * 0.15).max(4.0);
    out.push(Check {
        what: "RSS (MiB)",
        first: f,
        last: l,
        allowed: format!("+{allow:.1} (max(15%, 4 MiB))"),
        ok: l <= f + allow,
    });
    let (f, l) = thirds(samples, |s| s.fds as f64);
    let allow = (f * 0.10).max(16.0);
    out.push(Check {
        what: "open fds",
        first: f,
        last: l,
        allowed: format!("±{allow:.0} (max(10%, 16))"),
        ok: (l - f).abs() <= allow,
    });
    let (f, l) = thirds(samples, |s| s.threads as f64);
    let allow = (f * 0.25).max(4.0);
    out.push(Check {
        what: "threads",
        first: f,
        last: l,
        allowed: format!("+{allow:.0} (max(25%, 4))"),
        ok: l <= f + allow,
    });
    let (f, l) = thirds(samples, |s| s.metrics_bytes as f64);
    out.push(Check {
        what: "/metrics bytes",
        first: f,
        last: l,
        allowed: "+10%".into(),
        ok: l <= f * 1.10 && f > 0.0,
    });
    let (f, l) = thirds(samples, |s| s.series as f64);
    out.push(Check {
        what: "/metrics series",
        first: f,
        last: l,
        allowed: "+5% + 5".into(),
        ok: l <= f * 1.05 + 5.0 && f > 0.0,
    });
    out
}

struct UsageSummary {
    lines: usize,
    unparsable: usize,
    distinct_ids: usize,
    invented_users: usize,
    users: BTreeMap<String, u64>,
    statuses: BTreeMap<String, u64>,
    ends: BTreeMap<String, u64>,
}

fn read_usage(path: &Path) -> UsageSummary {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut s = UsageSummary {
        lines: 0,
        unparsable: 0,
        distinct_ids: 0,
        invented_users: 0,
        users: BTreeMap::new(),
        statuses: BTreeMap::new(),
        ends: BTreeMap::new(),
    };
    let mut ids = HashSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        s.lines += 1;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            s.unparsable += 1;
            continue;
        };
        if let Some(id) = v["request_id"].as_str() {
            ids.insert(id.to_owned());
        }
        let user = v["user"].as_str().unwrap_or("(none)").to_owned();
        if user.starts_with(INVENTED_USER) {
            s.invented_users += 1;
        }
        *s.users.entry(user).or_default() += 1;
        *s.statuses.entry(v["status"].to_string()).or_default() += 1;
        *s.ends
            .entry(v["end"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    s.distinct_ids = ids.len();
    s
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ------------------------------------------------------------------------------------------
// main
// ------------------------------------------------------------------------------------------

struct Args {
    secs: u64,
    rps: f64,
    concurrency: usize,
    idle: usize,
}

impl Args {
    /// Anything unknown (cargo bench passes `--bench`) is ignored.
    fn parse() -> Args {
        let mut out = Args {
            secs: 600,
            rps: 100.0,
            concurrency: 16,
            idle: 200,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut num = || args.next().and_then(|v| v.parse::<f64>().ok());
            match a.as_str() {
                "--secs" => out.secs = num().map_or(out.secs, |v| v.max(10.0) as u64),
                "--rps" => out.rps = num().map_or(out.rps, |v| v.clamp(1.0, 2000.0)),
                "--concurrency" => {
                    out.concurrency =
                        num().map_or(out.concurrency, |v| v.clamp(1.0, 256.0) as usize)
                }
                "--idle" => out.idle = num().map_or(out.idle, |v| v.clamp(0.0, 2000.0) as usize),
                _ => {}
            }
        }
        out
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ok = runtime.block_on(run(args));
    if !ok {
        std::process::exit(1);
    }
}

async fn run(args: Args) -> bool {
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            for pid in PIDS.lock().expect("pids").iter() {
                signal(*pid, "KILL");
            }
            std::process::exit(130);
        }
    });
    let dir = std::env::temp_dir().join(format!("sluice-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut procs = Procs {
        children: Vec::new(),
        dir: dir.clone(),
    };
    let (mock_pid, mock) = start_mock(&mut procs);
    let (pid, data, admin, sluice_log) = start_sluice(&mut procs, &sluice_config(mock, &dir));
    eprintln!(
        "soak: mock {mock} (pid {mock_pid}), sluice {data} (pid {pid}, admin {admin}); {} s at {} req/s, c={}, {} idle sockets",
        args.secs, args.rps, args.concurrency, args.idle
    );

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        // Below Sluice's idle_timeout (60 s), so the pool never reuses a connection Sluice is
        // closing.
        .pool_idle_timeout(Duration::from_secs(20))
        .build(connector);
    let tick_pct = 100.0 / clk_tck() as f64;

    // ~2,600 words: well over max_input_tokens = 2000, well under max_body.
    let prompt_long = "lorem ipsum dolor sit amet consectetur adipiscing elit ".repeat(330);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = sample(&client, pid, admin, 0.0, 0, 0).await;

    let start = Instant::now();
    let duration = Duration::from_secs(args.secs);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        data,
        chat_uri: format!("http://{data}/v1/chat/completions")
            .parse()
            .expect("uri"),
        pacer: Pacer {
            start,
            end: start + duration,
            rps: args.rps,
            max: (args.rps * args.secs as f64) as u64,
            next: AtomicU64::new(0),
        },
        stats: Stats::default(),
        prompt_long,
    });

    let stop = CancellationToken::new();
    let idle_open = Arc::new(AtomicI64::new(0));
    let idle_closed = Arc::new(Mutex::new(Vec::new()));
    let mut background = JoinSet::new();
    idle_sockets(
        &mut background,
        data,
        args.idle,
        stop.clone(),
        idle_open.clone(),
        idle_closed.clone(),
    );
    for i in 0..6 {
        slowloris(&mut background, ctx.clone(), stop.clone(), i >= 4, 1000 + i);
    }
    let mut workers = JoinSet::new();
    for i in 0..args.concurrency {
        workers.spawn(worker(ctx.clone(), i as u64 + 1));
    }

    let mut samples = Vec::new();
    let mut next = start + SAMPLE_EVERY;
    while next <= start + duration {
        tokio::time::sleep_until(next.into()).await;
        let s = sample(
            &client,
            pid,
            admin,
            start.elapsed().as_secs_f64(),
            ctx.stats.sent.load(Ordering::Relaxed),
            idle_open.load(Ordering::Relaxed),
        )
        .await;
        eprintln!(
            "soak: t={:.0}s sent={} rss={} KiB fds={} threads={} metrics={} B/{} series idle={}",
            s.t, s.sent, s.rss_kb, s.fds, s.threads, s.metrics_bytes, s.series, s.idle_open
        );
        samples.push(s);
        next += SAMPLE_EVERY;
    }

    // Stop: workers take no slot past the end; in-flight requests finish (bounded by their
    // timeouts); then the background clients go.
    let wait_workers = tokio::time::timeout(Duration::from_secs(90), async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    stop.cancel();
    let wait_bg = tokio::time::timeout(Duration::from_secs(60), async {
        while background.join_next().await.is_some() {}
    })
    .await;
    let traffic_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = sample(
        &client,
        pid,
        admin,
        start.elapsed().as_secs_f64(),
        ctx.stats.sent.load(Ordering::Relaxed),
        0,
    )
    .await;
    drop(client);

    // SIGTERM: Sluice drains and writes out the usage log before it exits.
    let exit = procs.stop(pid, Duration::from_secs(45));
    let usage = read_usage(&dir.join("usage.jsonl"));

    // ---- report ----
    let classes = std::mem::take(&mut *ctx.stats.classes.lock().expect("stats"));
    let reached: u64 = classes.values().map(|c| c.reached).sum();
    let unknown: u64 = classes.values().map(|c| c.unknown).sum();
    let sent: u64 = classes.values().map(|c| c.sent).sum();
    let checks = flat_checks(&samples);
    let records_ok = usage.lines as u64 >= reached
        && usage.lines as u64 <= reached + unknown
        && usage.unparsable == 0
        && usage.distinct_ids == usage.lines;
    let identity_ok = usage.invented_users == 0;
    let clean_stop = exit == Some(true) && wait_workers.is_ok() && wait_bg.is_ok();
    let all_ok = checks.iter().all(|c| c.ok) && records_ok && identity_ok && clean_stop;

    let mut r = String::new();
    let _ = writeln!(r, "### Run\n");
    let _ = writeln!(
        r,
        "{:.0} s of traffic at {} req/s paced over {} workers, {} idle sockets held, 4 slowloris bodies, 2 slowloris heads; {} requests sent ({} reached the handler, {} unknown), {} usage records. Sluice CPU over the run: {:.1}% of one core; sluice log lines: {}.\n",
        traffic_secs,
        args.rps,
        args.concurrency,
        args.idle,
        sent,
        reached,
        unknown,
        usage.lines,
        (after.cpu_ticks.saturating_sub(baseline.cpu_ticks)) as f64 * tick_pct / after.t.max(1.0),
        sluice_log.lock().expect("log").0,
    );
    let _ = writeln!(r, "### Over time\n");
    let _ = writeln!(
        r,
        "| t (s) | requests sent | req/s | RSS (MiB) | fds | threads | /metrics (KiB) | series | CPU (% of a core) | idle sockets open |"
    );
    let _ = writeln!(
        r,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut prev = &baseline;
    let row = |r: &mut String, label: &str, s: &Sample, prev: &Sample| {
        let dt = (s.t - prev.t).max(0.001);
        let _ = writeln!(
            r,
            "| {label} | {} | {:.0} | {:.1} | {} | {} | {:.1} | {} | {:.0} | {} |",
            s.sent,
            s.sent.saturating_sub(prev.sent) as f64 / dt,
            s.rss_kb as f64 / 1024.0,
            s.fds,
            s.threads,
            s.metrics_bytes as f64 / 1024.0,
            s.series,
            s.cpu_ticks.saturating_sub(prev.cpu_ticks) as f64 * tick_pct / dt,
            s.idle_open,
        );
    };
    row(&mut r, "0 (idle)", &baseline, &baseline);
    for s in &samples {
        row(&mut r, &format!("{:.0}", s.t), s, prev);
        prev = s;
    }
    // Over the stop: the last in-flight requests, the background clients closing, 2 s quiet.
    row(&mut r, "after (traffic stopped, 2 s later)", &after, prev);

    let _ = writeln!(
        r,
        "\n### Flatness (mean of the last third of samples vs the first third)\n"
    );
    let _ = writeln!(
        r,
        "| measure | first third | last third | allowed | verdict |"
    );
    let _ = writeln!(r, "| --- | ---: | ---: | --- | --- |");
    for c in &checks {
        let _ = writeln!(
            r,
            "| {} | {:.1} | {:.1} | {} | {} |",
            c.what,
            c.first,
            c.last,
            c.allowed,
            if c.ok { "flat" } else { "**GROWS**" }
        );
    }

    let _ = writeln!(r, "\n### Requests by class\n");
    let _ = writeln!(
        r,
        "| class | what | sent | reached handler | outcomes (client side) |"
    );
    let _ = writeln!(r, "| --- | --- | ---: | ---: | --- |");
    for (name, c) in &classes {
        let what = MIX
            .iter()
            .find(|m| class_name(m.0) == *name)
            .map(|m| m.2)
            .unwrap_or(match name.as_str() {
                "SlowlorisBody" => "body trickled 1 byte / 2 s (background)",
                "SlowlorisHeaders" => "head trickled 1 byte / 2 s (background, no handler)",
                _ => "",
            });
        let _ = writeln!(
            r,
            "| {name} | {what} | {} | {}{} | {} |",
            c.sent,
            c.reached,
            if c.unknown > 0 {
                format!(" (+{} unknown)", c.unknown)
            } else {
                String::new()
            },
            counts(&c.outcomes)
        );
    }
    let closed = idle_closed.lock().expect("closed");
    let (min_c, max_c) = closed.iter().fold((f64::MAX, 0.0f64), |(lo, hi), d| {
        (lo.min(d.as_secs_f64()), hi.max(d.as_secs_f64()))
    });
    let _ = writeln!(
        r,
        "\nIdle sockets: {} closed by Sluice (after {:.1}–{:.1} s; `header_timeout` is 30 s) and re-opened; none reaches a handler.",
        closed.len(),
        if closed.is_empty() { 0.0 } else { min_c },
        max_c
    );

    let _ = writeln!(r, "\n### Usage log\n");
    let _ = writeln!(
        r,
        "- records: {} (distinct request ids: {}, unparsable: {}); requests that reached the handler: {reached}{} → {}",
        usage.lines,
        usage.distinct_ids,
        usage.unparsable,
        if unknown > 0 { format!(" (+{unknown} unknown)") } else { String::new() },
        if records_ok { "**one record per request**" } else { "**MISMATCH**" }
    );
    let _ = writeln!(r, "- by status: {}", counts(&usage.statuses));
    let _ = writeln!(r, "- by end: {}", counts(&usage.ends));
    let _ = writeln!(
        r,
        "- by user: {} → records naming an invented `x-sluice-user`: {} ({})",
        counts(&usage.users),
        usage.invented_users,
        if identity_ok {
            "ignored, as configured"
        } else {
            "**TRUSTED**"
        }
    );
    let _ = writeln!(
        r,
        "- Sluice stopped on SIGTERM: {}",
        match exit {
            Some(true) => "exit 0",
            Some(false) => "**non-zero exit**",
            None => "**did not exit within 45 s**",
        }
    );
    let _ = writeln!(
        r,
        "\n**Verdict: {}**",
        if all_ok {
            "flat and accounted for"
        } else {
            "FAILED (see the rows marked above)"
        }
    );

    println!("{r}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/out");
    if std::fs::create_dir_all(&out).is_ok() {
        let _ = std::fs::write(out.join("soak.md"), &r);
    }
    drop(procs);
    all_ok
}
