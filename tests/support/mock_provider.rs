//! A deterministic mock LLM provider speaking the OpenAI and Anthropic wire formats.
//!
//! Used by the integration tests (`#[path = "support/mock_provider.rs"] mod mock_provider;`),
//! by the `sluice-mock` binary and by the load harness. It serves HTTP/1.1 and h2c (prior
//! knowledge) with keep-alive on a plain TCP listener.
//!
//! # Endpoints
//! * `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/embeddings`,
//!   `POST /v1/responses` (OpenAI), `POST /v1/messages`, `POST /v1/messages/count_tokens`
//!   (Anthropic; `anthropic-version` header required), `GET /v1/models` (Anthropic flavour when
//!   `anthropic-version` is present; ids `mock-model`, `mock-model-large`, `mock-embedding`,
//!   `other-model`, Anthropic: `mock-model`, `claude-mock-sonnet`, `claude-mock-haiku`).
//! * `POST /v1/files`, `/v1/uploads`, `/v1/batches`, `/v1/vector_stores`,
//!   `/v1/messages/batches` answer a new object `{"id","object","path"}` with a fresh id
//!   (`file-mock-N`, `batch_mock_N`, ...); `GET /v1/batches/{id}` answers a completed batch
//!   with `output_file_id: "file-out-{id}"`.
//! * Anything else (e.g. `GET /v1/echo-headers`, `GET /v1/files/x`) answers 200 with
//!   `{"path","method","headers":{..},"body_len"}`.
//!
//! # Generated content
//! The assistant text is `"echo: " + <last user text>` so parallel requests are distinguishable.
//! Text parts of a message are joined with a single space. Streams carry one piece per word
//! (the word plus the whitespace that follows it).
//!
//! Token accounting is deliberately simple: prompt tokens = whitespace-separated words of every
//! message's text + 3 per message (an Anthropic `system` prompt, a Responses `instructions`
//! string and every completion prompt count as one message each; embeddings count words only);
//! completion tokens = number of streamed pieces (for tool calls: number of argument fragments).
//! `max_tokens` / `max_completion_tokens` / `max_output_tokens` smaller than the word count
//! truncates the text to that many words (finish_reason `length`, Anthropic `max_tokens`,
//! Responses status `incomplete`, final event `response.incomplete`); the size modes
//! (`x-mock-echo-body`, `x-mock-large-response-kb`) ignore the limit.
//!
//! Tool calls: when the request has `tools` and its last message is a user turn (without tool
//! results) mentioning "weather", the mock calls the first tool with `{"city":"Paris"}`; after a
//! tool result it answers with text again.
//!
//! Response ids embed the 1-based sequence number N of the request (`chatcmpl-mock-N`,
//! `msg_mock_N`, ...), which is also its index + 1 in [`MockProvider::requests`] when recording
//! is on. `created` is a fixed timestamp so that bodies are byte-for-byte reproducible.
//!
//! # Request headers understood (the proxy forwards unknown headers)
//! | header | effect |
//! | --- | --- |
//! | `x-mock-words: N` | text is `w0 w1 ... w{N-1}` instead of the echo |
//! | `x-mock-chunk-chars: N` | stream pieces of N characters instead of one per word |
//! | `x-mock-delay-ms: D` | delay between streamed events |
//! | `x-mock-first-byte-delay-ms: D` | delay before the response headers |
//! | `x-mock-status: CODE` | answer CODE with a provider-shaped error body |
//! | `x-mock-retry-after: S` | `retry-after` value for `x-mock-status` (429 defaults to `1`) |
//! | `x-mock-abort-after: N` | stream: abort the connection after N events (no terminator); non-stream 2xx: abort after half the body |
//! | `x-mock-fragment: 1` | stream: split every event into several frames at awkward byte offsets |
//! | `x-mock-gzip: 1` | gzip non-stream bodies when `accept-encoding` allows gzip |
//! | `x-mock-echo-body: 1` | text is `len:<request body byte length>` |
//! | `x-mock-large-response-kb: N` | text is N KiB of ASCII words |
//! | `x-mock-endless-event-kb: N` | stream: after the first event, one `data:` line of N KiB that never ends (no newline), then silence until the client goes away |
//! | `x-mock-stall-after-bytes: N` | non-stream 2xx: send the first N bytes of the body, then nothing until the client goes away |
//!
//! `authorization: Bearer bad-key` or `x-api-key: bad-key` gets a 401.
//!
//! Order of precedence for one request: queued [`Fault`] (one per request, FIFO), then
//! `x-mock-first-byte-delay-ms`, then `x-mock-status`, then the bad-key check, then routing.

#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

/// Fixed `created` timestamp (2023-11-14T22:13:20Z) so responses are reproducible.
const CREATED: u64 = 1_700_000_000;
const CREATED_RFC3339: &str = "2023-11-14T22:13:20Z";
const DEFAULT_MODEL: &str = "mock-model";
/// Tool-call arguments and the fragments they are streamed in (OpenAI-like splitting).
const TOOL_ARGS: &str = "{\"city\":\"Paris\"}";
const TOOL_ARG_FRAGMENTS: [&str; 5] = ["{\"", "city", "\":\"", "Paris", "\"}"];
/// Pause between the frames of one fragmented event, so each frame is its own write.
const FRAGMENT_PAUSE: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// A running mock provider. Dropping it stops the server as well (without waiting).
pub struct MockProvider {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// One request as received by the mock (recorded once its body has been read completely).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path plus query string, e.g. `/v1/chat/completions?x=1`.
    pub path: String,
    /// Header names are lowercase; repeated headers appear once per value, in order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub http_version: String,
}

/// A queued misbehaviour, consumed by exactly one request (FIFO) before header-driven behaviour.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status. `body` empty: provider-shaped error with a default message;
    /// `body` starting with `{`: sent verbatim as JSON; otherwise: used as the error message.
    /// `retry_after`: value of the `retry-after` header (none when `None`).
    Status {
        status: u16,
        body: String,
        retry_after: Option<u64>,
    },
    /// Wait this long before sending the response headers, then behave normally.
    Delay(Duration),
    /// Stream: abort the connection after N SSE events (non-stream: after half the body).
    AbortAfterChunks(usize),
    /// Never answer (the connection stays open until the client or the mock goes away).
    Hang,
}

impl MockProvider {
    /// Starts a mock on `127.0.0.1:0` (a free port).
    pub async fn start() -> io::Result<MockProvider> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a mock on `addr`.
    pub async fn start_on(addr: SocketAddr) -> io::Result<MockProvider> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx));
        Ok(MockProvider {
            addr,
            shared,
            shutdown_tx: Some(shutdown_tx),
            task: Some(task),
        })
    }

    /// `http://ADDR`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order (empty when recording is off).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Number of requests received (counted even when recording is off).
    pub fn request_count(&self) -> usize {
        self.shared.seq.load(Ordering::SeqCst)
    }

    /// The most recent request, if any was recorded.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.requests).last().cloned()
    }

    /// Forgets the recorded requests (the sequence number keeps counting).
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Turns request recording on or off (on by default; long-running load tests turn it off
    /// so request bodies are not kept in memory).
    pub fn set_recording(&self, enabled: bool) {
        self.shared.recording.store(enabled, Ordering::SeqCst);
    }

    /// Queues a fault; each request consumes at most one, in FIFO order.
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push_back(fault);
    }

    /// Currently open TCP connections.
    pub fn active_connections(&self) -> usize {
        self.shared.active_connections.load(Ordering::SeqCst)
    }

    /// Streamed response bodies that were dropped (client gone) before they were finished.
    pub fn cancelled_streams(&self) -> usize {
        self.shared.cancelled_streams.load(Ordering::SeqCst)
    }

    /// Stops accepting, closes every open connection and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl fmt::Debug for MockProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockProvider")
            .field("addr", &self.addr)
            .field("request_count", &self.request_count())
            .finish_non_exhaustive()
    }
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Server plumbing
// ---------------------------------------------------------------------------------------------

struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    faults: Mutex<VecDeque<Fault>>,
    cache_prefixes: Mutex<HashSet<u64>>,
    recording: AtomicBool,
    seq: AtomicUsize,
    active_connections: AtomicUsize,
    cancelled_streams: AtomicUsize,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            cache_prefixes: Mutex::new(HashSet::new()),
            recording: AtomicBool::new(true),
            seq: AtomicUsize::new(0),
            active_connections: AtomicUsize::new(0),
            cancelled_streams: AtomicUsize::new(0),
        }
    }
}

impl Shared {
    /// Records the request (when recording is on) and returns its 1-based sequence number.
    fn record(&self, request: RecordedRequest) -> usize {
        if self.recording.load(Ordering::SeqCst) {
            let mut requests = lock(&self.requests);
            requests.push(request);
            // Taken under the lock so that N matches the position in `requests`.
            self.seq.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.seq.fetch_add(1, Ordering::SeqCst) + 1
        }
    }

    fn pop_fault(&self) -> Option<Fault> {
        lock(&self.faults).pop_front()
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not wedge the mock).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown_rx: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Fires on an explicit shutdown and when the MockProvider is dropped.
            _ = &mut shutdown_rx => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // E.g. EMFILE under load: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Keeps `active_connections` accurate however the connection task ends (even when aborted).
struct ConnectionGuard(Arc<Shared>);

impl ConnectionGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.active_connections.fetch_add(1, Ordering::SeqCst);
        ConnectionGuard(shared)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _guard = ConnectionGuard::new(Arc::clone(&shared));
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(shared, request).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    // Connection errors (client resets, aborted streams) are expected in fault tests.
    let _ = builder
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Response body: either a complete buffer or a channel fed by a producer task, one frame per
/// message so that every SSE event (or fragment) is written and flushed on its own.
pub struct MockBody {
    inner: BodyInner,
}

enum BodyInner {
    Full(Option<Bytes>),
    Channel {
        rx: mpsc::Receiver<Result<Bytes, io::Error>>,
        finished: bool,
        shared: Arc<Shared>,
    },
}

impl MockBody {
    fn full(bytes: Bytes) -> Self {
        MockBody {
            inner: BodyInner::Full(Some(bytes)),
        }
    }

    fn channel(shared: Arc<Shared>) -> (mpsc::Sender<Result<Bytes, io::Error>>, Self) {
        let (tx, rx) = mpsc::channel(1);
        let body = MockBody {
            inner: BodyInner::Channel {
                rx,
                finished: false,
                shared,
            },
        };
        (tx, body)
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.get_mut().inner {
            BodyInner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            BodyInner::Channel { rx, finished, .. } => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Poll::Ready(Some(Err(err))) => {
                    // Deliberate abort: not a client cancellation.
                    *finished = true;
                    Poll::Ready(Some(Err(err)))
                }
                Poll::Ready(None) => {
                    *finished = true;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.inner, BodyInner::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            BodyInner::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            BodyInner::Full(None) => SizeHint::with_exact(0),
            BodyInner::Channel { .. } => SizeHint::default(),
        }
    }
}

impl Drop for MockBody {
    fn drop(&mut self) {
        if let BodyInner::Channel {
            finished: false,
            shared,
            ..
        } = &self.inner
        {
            shared.cancelled_streams.fetch_add(1, Ordering::SeqCst);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Per-request handling
// ---------------------------------------------------------------------------------------------

/// Behaviour switches read from the `x-mock-*` request headers.
#[derive(Debug, Default)]
struct Opts {
    words: Option<usize>,
    chunk_chars: Option<usize>,
    delay: Duration,
    first_byte_delay: Option<Duration>,
    status: Option<u16>,
    retry_after: Option<String>,
    abort_after: Option<usize>,
    fragment: bool,
    gzip: bool,
    echo_body: bool,
    large_kb: Option<usize>,
    endless_event_kb: Option<usize>,
    stall_after_bytes: Option<usize>,
}

impl Opts {
    fn from_headers(headers: &HeaderMap) -> Self {
        let ms = |name| header_num::<u64>(headers, name).map(Duration::from_millis);
        Opts {
            words: header_num(headers, "x-mock-words"),
            chunk_chars: header_num(headers, "x-mock-chunk-chars").filter(|n| *n > 0),
            delay: ms("x-mock-delay-ms").unwrap_or(Duration::ZERO),
            first_byte_delay: ms("x-mock-first-byte-delay-ms"),
            status: header_num(headers, "x-mock-status"),
            retry_after: header_str(headers, "x-mock-retry-after").map(str::to_owned),
            abort_after: header_num(headers, "x-mock-abort-after"),
            fragment: header_flag(headers, "x-mock-fragment"),
            gzip: header_flag(headers, "x-mock-gzip") && accepts_gzip(headers),
            echo_body: header_flag(headers, "x-mock-echo-body"),
            large_kb: header_num(headers, "x-mock-large-response-kb"),
            endless_event_kb: header_num(headers, "x-mock-endless-event-kb"),
            stall_after_bytes: header_num(headers, "x-mock-stall-after-bytes"),
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn header_num<T: FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    header_str(headers, name)?.parse().ok()
}

fn header_flag(headers: &HeaderMap, name: &str) -> bool {
    matches!(header_str(headers, name), Some(v)
        if v == "1" || v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("yes"))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all("accept-encoding")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

struct Ctx {
    shared: Arc<Shared>,
    seq: usize,
    method: String,
    /// Path without query string and without trailing slash.
    path: String,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
    opts: Opts,
    /// Errors and request ids in Anthropic's shape.
    anthropic: bool,
}

struct Reply {
    status: StatusCode,
    kind: ReplyKind,
    headers: Vec<(&'static str, String)>,
}

enum ReplyKind {
    Json(Value),
    Raw(Bytes),
    Sse(Vec<Bytes>),
}

impl Reply {
    fn json(body: Value) -> Self {
        Reply {
            status: StatusCode::OK,
            kind: ReplyKind::Json(body),
            headers: Vec::new(),
        }
    }

    fn sse(events: Vec<Bytes>) -> Self {
        Reply {
            status: StatusCode::OK,
            kind: ReplyKind::Sse(events),
            headers: Vec::new(),
        }
    }
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Response<MockBody> {
    let (parts, incoming) = request.into_parts();
    let body = match incoming.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            let mut response = Response::new(MockBody::full(Bytes::from(format!(
                "mock: could not read the request body: {err}"
            ))));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let path = match parts.uri.path().trim_end_matches('/') {
        "" => "/".to_owned(),
        p => p.to_owned(),
    };
    let recorded = RecordedRequest {
        method: parts.method.as_str().to_owned(),
        path: path_and_query.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
        http_version: format!("{:?}", parts.version),
    };
    let seq = shared.record(recorded);
    let mut ctx = Ctx {
        seq,
        method: parts.method.as_str().to_owned(),
        anthropic: path.starts_with("/v1/messages")
            || parts.headers.contains_key("anthropic-version"),
        path,
        path_and_query,
        opts: Opts::from_headers(&parts.headers),
        headers: parts.headers,
        body,
        shared,
    };

    match ctx.shared.pop_fault() {
        Some(Fault::Status {
            status,
            body,
            retry_after,
        }) => {
            let mut reply = if body.trim_start().starts_with('{') {
                Reply {
                    status: status_code(status),
                    kind: ReplyKind::Raw(Bytes::from(body)),
                    headers: Vec::new(),
                }
            } else if body.is_empty() {
                error_reply(&ctx, status, &default_error_message(status))
            } else {
                error_reply(&ctx, status, &body)
            };
            if let Some(secs) = retry_after {
                reply.headers.push(("retry-after", secs.to_string()));
            }
            return ctx.respond(reply);
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::AbortAfterChunks(n)) => ctx.opts.abort_after = Some(n),
        Some(Fault::Hang) => std::future::pending::<()>().await,
        None => {}
    }

    if let Some(delay) = ctx.opts.first_byte_delay {
        tokio::time::sleep(delay).await;
    }

    if let Some(status) = ctx.opts.status {
        let mut reply = error_reply(&ctx, status, &default_error_message(status));
        match &ctx.opts.retry_after {
            Some(value) => reply.headers.push(("retry-after", value.clone())),
            None if status == 429 => reply.headers.push(("retry-after", "1".to_owned())),
            None => {}
        }
        return ctx.respond(reply);
    }

    let bad_bearer = header_str(&ctx.headers, "authorization") == Some("Bearer bad-key");
    let bad_api_key = header_str(&ctx.headers, "x-api-key") == Some("bad-key");
    if bad_bearer || bad_api_key {
        let message = if ctx.anthropic {
            "invalid x-api-key".to_owned()
        } else {
            "Incorrect API key provided: bad-key.".to_owned()
        };
        let reply = error_reply(&ctx, 401, &message);
        return ctx.respond(reply);
    }

    let reply = route(&ctx);
    ctx.respond(reply)
}

fn route(ctx: &Ctx) -> Reply {
    match (ctx.method.as_str(), ctx.path.as_str()) {
        ("POST", "/v1/chat/completions") => with_json(ctx, chat_completions),
        ("POST", "/v1/completions") => with_json(ctx, completions),
        ("POST", "/v1/embeddings") => with_json(ctx, embeddings),
        ("POST", "/v1/responses") => with_json(ctx, responses),
        ("POST", "/v1/messages") => with_anthropic_json(ctx, messages),
        ("POST", "/v1/messages/count_tokens") => with_anthropic_json(ctx, count_tokens),
        ("GET", "/v1/models") => models(ctx),
        ("POST", "/v1/files" | "/v1/uploads" | "/v1/batches" | "/v1/vector_stores")
        | ("POST", "/v1/messages/batches") => created(ctx),
        ("GET", p) if batch_id(p).is_some() => batch(ctx),
        _ => echo(ctx),
    }
}

fn with_json(ctx: &Ctx, endpoint: fn(&Ctx, &Value) -> Reply) -> Reply {
    match serde_json::from_slice::<Value>(&ctx.body) {
        Ok(value) if value.is_object() => endpoint(ctx, &value),
        Ok(_) => error_reply(ctx, 400, "The request body must be a JSON object."),
        Err(err) => error_reply(
            ctx,
            400,
            &format!("We could not parse the JSON body of your request: {err}"),
        ),
    }
}

fn with_anthropic_json(ctx: &Ctx, endpoint: fn(&Ctx, &Value) -> Reply) -> Reply {
    if !ctx.headers.contains_key("anthropic-version") {
        return error_reply(ctx, 400, "anthropic-version: header is required");
    }
    with_json(ctx, endpoint)
}

impl Ctx {
    fn request_id(&self) -> String {
        format!("req_mock_{}", self.seq)
    }

    fn respond(&self, reply: Reply) -> Response<MockBody> {
        let Reply {
            status,
            kind,
            headers,
        } = reply;
        let mut response = match kind {
            ReplyKind::Json(value) => self.bytes_response(status, Bytes::from(value.to_string())),
            ReplyKind::Raw(bytes) => self.bytes_response(status, bytes),
            ReplyKind::Sse(events) => self.sse_response(events),
        };
        *response.status_mut() = status;
        let id_header = if self.anthropic {
            "request-id"
        } else {
            "x-request-id"
        };
        set_header(&mut response, id_header, &self.request_id());
        for (name, value) in headers {
            set_header(&mut response, name, &value);
        }
        response
    }

    fn bytes_response(&self, status: StatusCode, bytes: Bytes) -> Response<MockBody> {
        let (bytes, gzipped) = if self.opts.gzip {
            match gzip(&bytes) {
                Ok(compressed) => (Bytes::from(compressed), true),
                Err(_) => (bytes, false),
            }
        } else {
            (bytes, false)
        };
        let body = match self.opts.abort_after {
            None if status.is_success() && self.opts.stall_after_bytes.is_some() => {
                let (tx, body) = MockBody::channel(Arc::clone(&self.shared));
                let n = self.opts.stall_after_bytes.unwrap_or(0).min(bytes.len());
                let head = bytes.slice(..n);
                tokio::spawn(async move {
                    if tx.send(Ok(head)).await.is_ok() {
                        tx.closed().await;
                    }
                });
                body
            }
            Some(_) if status.is_success() => {
                let (tx, body) = MockBody::channel(Arc::clone(&self.shared));
                let head = bytes.slice(..bytes.len() / 2);
                tokio::spawn(async move {
                    if tx.send(Ok(head)).await.is_ok() {
                        let _ = tx.send(Err(abort_error())).await;
                    }
                });
                body
            }
            _ => MockBody::full(bytes),
        };
        let mut response = Response::new(body);
        set_header(&mut response, "content-type", "application/json");
        if gzipped {
            set_header(&mut response, "content-encoding", "gzip");
        }
        response
    }

    fn sse_response(&self, events: Vec<Bytes>) -> Response<MockBody> {
        let (tx, body) = MockBody::channel(Arc::clone(&self.shared));
        let plan = StreamPlan {
            delay: self.opts.delay,
            abort_after: self.opts.abort_after,
            fragment: self.opts.fragment,
            endless_event_kb: self.opts.endless_event_kb,
        };
        tokio::spawn(produce_stream(tx, events, plan));
        let mut response = Response::new(body);
        set_header(&mut response, "content-type", "text/event-stream");
        set_header(&mut response, "cache-control", "no-cache");
        response
    }
}

fn set_header(response: &mut Response<MockBody>, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data)?;
    encoder.finish()
}

fn abort_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "mock provider: deliberate abort",
    )
}

// ---------------------------------------------------------------------------------------------
// SSE production
// ---------------------------------------------------------------------------------------------

struct StreamPlan {
    delay: Duration,
    abort_after: Option<usize>,
    fragment: bool,
    endless_event_kb: Option<usize>,
}

type FrameSender = mpsc::Sender<Result<Bytes, io::Error>>;

/// Feeds the events into the body channel. Stops quietly when the client goes away (the body
/// counts that as a cancelled stream when it is dropped unfinished).
async fn produce_stream(tx: FrameSender, events: Vec<Bytes>, plan: StreamPlan) {
    // In fragment mode the final `\n` of each event is held back and sent at the start of the
    // next frame, so one frame ends between the two newlines of the event terminator.
    let mut carry: Option<Bytes> = None;
    for (index, event) in events.into_iter().enumerate() {
        if let (1, Some(kb)) = (index, plan.endless_event_kb) {
            endless_event(&tx, kb).await;
            return;
        }
        if plan.abort_after == Some(index) {
            let _ = tx.send(Err(abort_error())).await;
            return;
        }
        if index > 0 && !plan.delay.is_zero() && !pause(&tx, plan.delay).await {
            return;
        }
        if plan.fragment {
            let mut buf = Vec::with_capacity(event.len() + 1);
            if let Some(carried) = carry.take() {
                buf.extend_from_slice(&carried);
            }
            buf.extend_from_slice(&event);
            if buf.ends_with(b"\n\n") {
                buf.pop();
                carry = Some(Bytes::from_static(b"\n"));
            }
            let buf = Bytes::from(buf);
            let mut start = 0;
            for cut in fragment_cuts(&buf).into_iter().chain([buf.len()]) {
                if cut <= start {
                    continue;
                }
                if start > 0 && !pause(&tx, FRAGMENT_PAUSE).await {
                    return;
                }
                if tx.send(Ok(buf.slice(start..cut))).await.is_err() {
                    return;
                }
                start = cut;
            }
        } else if tx.send(Ok(event)).await.is_err() {
            return;
        }
    }
    if plan.abort_after.is_some() {
        // Asked to abort after at least as many events as there are: abort before the end.
        let _ = tx.send(Err(abort_error())).await;
        return;
    }
    if let Some(carried) = carry {
        if !pause(&tx, FRAGMENT_PAUSE).await {
            return;
        }
        let _ = tx.send(Ok(carried)).await;
    }
}

/// One `data:` line of `kb` KiB that never ends, in 16 KiB frames; then
/// silence until the client goes away.
async fn endless_event(tx: &FrameSender, kb: usize) {
    if tx.send(Ok(Bytes::from_static(b"data: "))).await.is_err() {
        return;
    }
    let piece = Bytes::from(vec![b'x'; 16 * 1024]);
    let mut left = kb * 1024;
    while left > 0 {
        let n = left.min(piece.len());
        if tx.send(Ok(piece.slice(..n))).await.is_err() {
            return;
        }
        left -= n;
    }
    tx.closed().await;
}

/// Sleeps, returning false early if the body was dropped meanwhile.
async fn pause(tx: &FrameSender, duration: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => true,
        _ = tx.closed() => false,
    }
}

/// Awkward split points of one event: inside the `data:`/`event:` prefix, inside the first
/// and the last multi-byte UTF-8 character, in the middle and near the end.
fn fragment_cuts(buf: &[u8]) -> Vec<usize> {
    let len = buf.len();
    let mut cuts = vec![1, 3, len / 2, len.saturating_sub(2)];
    if let Some(lead) = buf.iter().position(|b| *b >= 0xC0) {
        cuts.push(lead + 1);
    }
    if let Some(lead) = buf.iter().rposition(|b| *b >= 0xC0) {
        cuts.push(lead + 1);
    }
    cuts.retain(|cut| *cut > 0 && *cut < len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

fn sse_data(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn sse_event(value: &Value) -> Bytes {
    let name = value
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

// ---------------------------------------------------------------------------------------------
// Content generation and token accounting
// ---------------------------------------------------------------------------------------------

struct Generated {
    text: String,
    pieces: Vec<String>,
    truncated: bool,
}

impl Generated {
    fn completion_tokens(&self) -> u64 {
        self.pieces.len() as u64
    }
}

fn generate(ctx: &Ctx, user_text: &str, max_tokens: Option<u64>) -> Generated {
    let full = if ctx.opts.echo_body {
        format!("len:{}", ctx.body.len())
    } else if let Some(kb) = ctx.opts.large_kb {
        large_text(kb.saturating_mul(1024))
    } else if let Some(n) = ctx.opts.words {
        (0..n)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        format!("echo: {user_text}")
    };
    // The size-oriented modes ignore the token limit: their point is an exact body size.
    let sized = ctx.opts.echo_body || ctx.opts.large_kb.is_some();
    let words = split_words(&full);
    let (text, truncated) = match max_tokens {
        Some(max) if !sized && (max as usize) < words.len() => {
            let kept = words
                .iter()
                .take(max as usize)
                .map(String::as_str)
                .collect::<String>();
            (kept.trim_end().to_owned(), true)
        }
        _ => (full, false),
    };
    let pieces = match ctx.opts.chunk_chars {
        Some(n) => chunk_chars(&text, n),
        None => split_words(&text),
    };
    Generated {
        text,
        pieces,
        truncated,
    }
}

/// Exactly `len` bytes of ASCII words.
fn large_text(len: usize) -> String {
    const WORDS: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do ";
    let mut text = String::with_capacity(len);
    while text.len() < len {
        let take = (len - text.len()).min(WORDS.len());
        text.push_str(&WORDS[..take]);
    }
    text
}

/// Splits into pieces of one word plus the whitespace after it; leading whitespace stays with
/// the first word. Concatenating the pieces gives back `text`.
fn split_words(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut previous_ws = false;
    let mut seen_word = false;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if !ws && previous_ws && seen_word {
            pieces.push(text[start..i].to_owned());
            start = i;
        }
        seen_word |= !ws;
        previous_ws = ws;
    }
    if start < text.len() {
        pieces.push(text[start..].to_owned());
    }
    pieces
}

fn chunk_chars(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Text of a message `content`: a string, or the text parts of an array joined by one space.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(part_text)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Text of one content part (`text`, `input_text`, `output_text`, Anthropic `tool_result`...).
fn part_text(part: &Value) -> Option<String> {
    match part {
        Value::String(s) => Some(s.clone()),
        Value::Object(obj) => {
            if let Some(text) = obj.get("text").and_then(Value::as_str) {
                Some(text.to_owned())
            } else if let Some(content) = obj.get("content") {
                Some(content_text(content)).filter(|t| !t.is_empty())
            } else {
                obj.get("output").and_then(Value::as_str).map(str::to_owned)
            }
        }
        _ => None,
    }
}

fn messages_of(request: &Value) -> &[Value] {
    request
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Words of every message + 3 per message.
fn messages_prompt_tokens(messages: &[Value]) -> u64 {
    messages
        .iter()
        .map(|m| {
            3 + m
                .get("content")
                .map_or(0, |c| count_words(&content_text(c)))
        })
        .sum()
}

fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default()
}

/// Text that may trigger a tool call: that of the last message when it is a user turn without
/// tool results (after a tool result the mock answers with text, as a model would).
fn tool_trigger_text(messages: &[Value]) -> String {
    let Some(last) = messages.last() else {
        return String::new();
    };
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return String::new();
    }
    let content = last.get("content");
    let has_tool_result = content.and_then(Value::as_array).is_some_and(|blocks| {
        blocks
            .iter()
            .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
    });
    if has_tool_result {
        String::new()
    } else {
        content.map(content_text).unwrap_or_default()
    }
}

fn model_of(request: &Value) -> String {
    request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_MODEL)
        .to_owned()
}

fn u64_field(request: &Value, names: &[&str]) -> Option<u64> {
    names
        .iter()
        .find_map(|name| request.get(*name).and_then(Value::as_u64))
}

fn bool_at(request: &Value, pointer: &str) -> bool {
    request
        .pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The name of the tool to call: the first tool, when the request has tools and `trigger_text`
/// (see [`tool_trigger_text`]) mentions the weather.
fn tool_to_call(request: &Value, trigger_text: &str) -> Option<String> {
    let tool = request.get("tools")?.as_array()?.first()?;
    if !trigger_text.to_lowercase().contains("weather") {
        return None;
    }
    let name = tool
        .pointer("/function/name")
        .or_else(|| tool.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("get_weather");
    Some(name.to_owned())
}

fn openai_usage(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0}
    })
}

fn with_trailing_usage(mut chunk: Value, include_usage: bool) -> Value {
    if include_usage {
        if let Some(obj) = chunk.as_object_mut() {
            // Inserted last: the text ends with `,"usage":null}` as OpenAI's chunks do.
            obj.insert("usage".to_owned(), Value::Null);
        }
    }
    chunk
}

// ---------------------------------------------------------------------------------------------
// OpenAI endpoints
// ---------------------------------------------------------------------------------------------

fn chat_completions(ctx: &Ctx, request: &Value) -> Reply {
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return error_reply(ctx, 400, "Missing required parameter: 'messages'.");
    };
    let model = model_of(request);
    let id = format!("chatcmpl-mock-{}", ctx.seq);
    let stream = bool_at(request, "/stream");
    let include_usage = bool_at(request, "/stream_options/include_usage");
    let prompt_tokens = messages_prompt_tokens(messages);
    let user_text = last_user_text(messages);
    let max_tokens = u64_field(request, &["max_completion_tokens", "max_tokens"]);

    let chunk = |delta: Value, finish: Value| {
        with_trailing_usage(
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
            }),
            include_usage,
        )
    };
    let usage_chunk = |completion_tokens: u64| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "choices": [],
            "usage": openai_usage(prompt_tokens, completion_tokens)
        })
    };

    if let Some(tool_name) = tool_to_call(request, &tool_trigger_text(messages)) {
        let completion_tokens = TOOL_ARG_FRAGMENTS.len() as u64;
        if !stream {
            return Reply::json(json!({
                "id": id,
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": null,
                        "tool_calls": [{
                            "id": "call_mock_1",
                            "type": "function",
                            "function": {"name": tool_name, "arguments": TOOL_ARGS}
                        }],
                        "refusal": null
                    },
                    "logprobs": null,
                    "finish_reason": "tool_calls"
                }],
                "usage": openai_usage(prompt_tokens, completion_tokens)
            }));
        }
        let mut events = vec![sse_data(&chunk(
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "index": 0,
                    "id": "call_mock_1",
                    "type": "function",
                    "function": {"name": tool_name, "arguments": ""}
                }]
            }),
            Value::Null,
        ))];
        for fragment in TOOL_ARG_FRAGMENTS {
            events.push(sse_data(&chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}),
                Value::Null,
            )));
        }
        events.push(sse_data(&chunk(json!({}), json!("tool_calls"))));
        if include_usage {
            events.push(sse_data(&usage_chunk(completion_tokens)));
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        return Reply::sse(events);
    }

    let generated = generate(ctx, &user_text, max_tokens);
    let finish = if generated.truncated {
        "length"
    } else {
        "stop"
    };
    if !stream {
        return Reply::json(json!({
            "id": id,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": generated.text, "refusal": null},
                "logprobs": null,
                "finish_reason": finish
            }],
            "usage": openai_usage(prompt_tokens, generated.completion_tokens())
        }));
    }
    let mut events = vec![sse_data(&chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ))];
    for piece in &generated.pieces {
        events.push(sse_data(&chunk(json!({"content": piece}), Value::Null)));
    }
    events.push(sse_data(&chunk(json!({}), json!(finish))));
    if include_usage {
        events.push(sse_data(&usage_chunk(generated.completion_tokens())));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Reply::sse(events)
}

fn completions(ctx: &Ctx, request: &Value) -> Reply {
    let prompts: Vec<String> = match request.get("prompt") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let prompt_tokens: u64 = prompts.iter().map(|p| 3 + count_words(p)).sum();
    let model = model_of(request);
    let id = format!("cmpl-mock-{}", ctx.seq);
    let include_usage = bool_at(request, "/stream_options/include_usage");
    let generated = generate(ctx, &prompts.join(" "), u64_field(request, &["max_tokens"]));
    let finish = if generated.truncated {
        "length"
    } else {
        "stop"
    };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": generated.completion_tokens(),
        "total_tokens": prompt_tokens + generated.completion_tokens()
    });
    if !bool_at(request, "/stream") {
        return Reply::json(json!({
            "id": id,
            "object": "text_completion",
            "created": CREATED,
            "model": model,
            "choices": [{"text": generated.text, "index": 0, "logprobs": null, "finish_reason": finish}],
            "usage": usage
        }));
    }
    let chunk = |text: &str, finish: Value| {
        with_trailing_usage(
            json!({
                "id": id,
                "object": "text_completion",
                "created": CREATED,
                "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]
            }),
            include_usage,
        )
    };
    let mut events: Vec<Bytes> = generated
        .pieces
        .iter()
        .map(|piece| sse_data(&chunk(piece, Value::Null)))
        .collect();
    events.push(sse_data(&chunk("", json!(finish))));
    if include_usage {
        events.push(sse_data(&json!({
            "id": id,
            "object": "text_completion",
            "created": CREATED,
            "model": model,
            "choices": [],
            "usage": usage
        })));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Reply::sse(events)
}

fn embeddings(ctx: &Ctx, request: &Value) -> Reply {
    let inputs: Vec<String> = match request.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => return error_reply(ctx, 400, "Missing required parameter: 'input'."),
    };
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = embedding_vector(text);
            let embedding = if base64 {
                let raw: Vec<u8> = vector
                    .iter()
                    .flat_map(|f| (*f as f32).to_le_bytes())
                    .collect();
                Value::String(base64_encode(&raw))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let prompt_tokens: u64 = inputs.iter().map(|t| count_words(t)).sum();
    Reply::json(json!({
        "object": "list",
        "data": data,
        "model": model_of(request),
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    }))
}

/// 8 deterministic floats in [-1, 1] derived from the text (FNV-1a seed, splitmix64 steps).
fn embedding_vector(text: &str) -> Vec<f64> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (0..8)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
            ((unit * 2.0 - 1.0) * 1e6).round() / 1e6
        })
        .collect()
}

fn base64_encode(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Prompt tokens, last user text and tool-trigger text (that of the last input item when it
/// is a user message) of a Responses API request.
fn responses_input(request: &Value) -> (u64, String, String) {
    let mut tokens = 0;
    let mut user_text = String::new();
    let mut trigger_text = String::new();
    if let Some(instructions) = request.get("instructions").and_then(Value::as_str) {
        tokens += 3 + count_words(instructions);
    }
    match request.get("input") {
        Some(Value::String(s)) => {
            tokens += 3 + count_words(s);
            user_text = s.clone();
            trigger_text = s.clone();
        }
        Some(Value::Array(items)) => {
            for item in items {
                let text = match item {
                    Value::String(s) => s.clone(),
                    _ => item
                        .get("content")
                        .map(content_text)
                        .or_else(|| {
                            item.get("output")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        })
                        .unwrap_or_default(),
                };
                tokens += 3 + count_words(&text);
                if item.get("role").and_then(Value::as_str) == Some("user") {
                    trigger_text = text.clone();
                    user_text = text;
                } else {
                    trigger_text.clear();
                }
            }
        }
        _ => {}
    }
    (tokens, user_text, trigger_text)
}

fn responses_usage(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + output
    })
}

/// A Responses API `response` object (built field by field to keep macro depth small).
fn response_object(
    id: &str,
    request: &Value,
    status: &str,
    incomplete_reason: Option<&str>,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    let copy = |name: &str| request.get(name).cloned().unwrap_or(Value::Null);
    let mut obj = Map::new();
    obj.insert("id".into(), json!(id));
    obj.insert("object".into(), json!("response"));
    obj.insert("created_at".into(), json!(CREATED));
    obj.insert("status".into(), json!(status));
    obj.insert("background".into(), json!(false));
    obj.insert("error".into(), Value::Null);
    obj.insert(
        "incomplete_details".into(),
        incomplete_reason.map_or(Value::Null, |reason| json!({"reason": reason})),
    );
    obj.insert("instructions".into(), copy("instructions"));
    obj.insert("max_output_tokens".into(), copy("max_output_tokens"));
    obj.insert("model".into(), json!(model_of(request)));
    obj.insert("output".into(), Value::Array(output));
    obj.insert("parallel_tool_calls".into(), json!(true));
    obj.insert("previous_response_id".into(), copy("previous_response_id"));
    obj.insert("reasoning".into(), json!({"effort": null, "summary": null}));
    obj.insert("store".into(), json!(true));
    obj.insert("temperature".into(), json!(1.0));
    obj.insert("text".into(), json!({"format": {"type": "text"}}));
    obj.insert("tool_choice".into(), json!("auto"));
    obj.insert(
        "tools".into(),
        request.get("tools").cloned().unwrap_or_else(|| json!([])),
    );
    obj.insert("top_p".into(), json!(1.0));
    obj.insert("truncation".into(), json!("disabled"));
    obj.insert("usage".into(), usage);
    obj.insert("user".into(), Value::Null);
    obj.insert(
        "metadata".into(),
        request
            .get("metadata")
            .cloned()
            .unwrap_or_else(|| json!({})),
    );
    Value::Object(obj)
}

fn responses(ctx: &Ctx, request: &Value) -> Reply {
    let id = format!("resp_mock_{}", ctx.seq);
    let (prompt_tokens, user_text, trigger_text) = responses_input(request);
    let stream = bool_at(request, "/stream");
    let mut sequence = 0u64;
    let mut event = |mut value: Value| {
        if let Some(obj) = value.as_object_mut() {
            // `type` first, `sequence_number` second, as the API does.
            let mut ordered = Map::new();
            if let Some(ty) = obj.remove("type") {
                ordered.insert("type".into(), ty);
            }
            ordered.insert("sequence_number".into(), json!(sequence));
            ordered.append(obj);
            value = Value::Object(ordered);
        }
        sequence += 1;
        sse_event(&value)
    };

    if let Some(tool_name) = tool_to_call(request, &trigger_text) {
        let item_id = format!("fc_mock_{}", ctx.seq);
        let item = |status: &str, arguments: &str| {
            json!({
                "id": item_id,
                "type": "function_call",
                "status": status,
                "arguments": arguments,
                "call_id": "call_mock_1",
                "name": tool_name
            })
        };
        let completion_tokens = TOOL_ARG_FRAGMENTS.len() as u64;
        let usage = responses_usage(prompt_tokens, completion_tokens);
        let done = item("completed", TOOL_ARGS);
        if !stream {
            return Reply::json(response_object(
                &id,
                request,
                "completed",
                None,
                vec![done],
                usage,
            ));
        }
        let pending = response_object(&id, request, "in_progress", None, vec![], Value::Null);
        let mut events = vec![
            event(json!({"type": "response.created", "response": pending})),
            event(json!({"type": "response.in_progress", "response": pending})),
            event(json!({
                "type": "response.output_item.added",
                "output_index": 0,
                "item": item("in_progress", "")
            })),
        ];
        for fragment in TOOL_ARG_FRAGMENTS {
            events.push(event(json!({
                "type": "response.function_call_arguments.delta",
                "item_id": item_id,
                "output_index": 0,
                "delta": fragment
            })));
        }
        events.push(event(json!({
            "type": "response.function_call_arguments.done",
            "item_id": item_id,
            "output_index": 0,
            "name": tool_name,
            "arguments": TOOL_ARGS
        })));
        events.push(event(json!({
            "type": "response.output_item.done",
            "output_index": 0,
            "item": done
        })));
        let final_response = response_object(&id, request, "completed", None, vec![done], usage);
        events.push(event(
            json!({"type": "response.completed", "response": final_response}),
        ));
        return Reply::sse(events);
    }

    let generated = generate(ctx, &user_text, u64_field(request, &["max_output_tokens"]));
    let (status, reason) = if generated.truncated {
        ("incomplete", Some("max_output_tokens"))
    } else {
        ("completed", None)
    };
    let item_id = format!("msg_mock_{}", ctx.seq);
    let part = |text: &str| json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text});
    let message = |item_status: &str, content: Vec<Value>| {
        json!({
            "id": item_id,
            "type": "message",
            "status": item_status,
            "content": content,
            "role": "assistant"
        })
    };
    let usage = responses_usage(prompt_tokens, generated.completion_tokens());
    let done_message = message(status, vec![part(&generated.text)]);
    if !stream {
        return Reply::json(response_object(
            &id,
            request,
            status,
            reason,
            vec![done_message],
            usage,
        ));
    }
    let pending = response_object(&id, request, "in_progress", None, vec![], Value::Null);
    let mut events = vec![
        event(json!({"type": "response.created", "response": pending})),
        event(json!({"type": "response.in_progress", "response": pending})),
        event(json!({
            "type": "response.output_item.added",
            "output_index": 0,
            "item": message("in_progress", vec![])
        })),
        event(json!({
            "type": "response.content_part.added",
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "part": part("")
        })),
    ];
    for piece in &generated.pieces {
        events.push(event(json!({
            "type": "response.output_text.delta",
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "delta": piece,
            "logprobs": []
        })));
    }
    events.push(event(json!({
        "type": "response.output_text.done",
        "item_id": item_id,
        "output_index": 0,
        "content_index": 0,
        "text": generated.text,
        "logprobs": []
    })));
    events.push(event(json!({
        "type": "response.content_part.done",
        "item_id": item_id,
        "output_index": 0,
        "content_index": 0,
        "part": part(&generated.text)
    })));
    events.push(event(json!({
        "type": "response.output_item.done",
        "output_index": 0,
        "item": done_message
    })));
    let final_response = response_object(&id, request, status, reason, vec![done_message], usage);
    let final_type = if generated.truncated {
        "response.incomplete"
    } else {
        "response.completed"
    };
    events.push(event(
        json!({"type": final_type, "response": final_response}),
    ));
    Reply::sse(events)
}

/// The ids `GET /v1/models` lists (OpenAI flavour), `mock-model` first.
const OPENAI_MODELS: [&str; 4] = [
    DEFAULT_MODEL,
    "mock-model-large",
    "mock-embedding",
    "other-model",
];
/// The ids `GET /v1/models` lists (Anthropic flavour), `mock-model` first.
const ANTHROPIC_MODELS: [&str; 3] = [DEFAULT_MODEL, "claude-mock-sonnet", "claude-mock-haiku"];

fn models(ctx: &Ctx) -> Reply {
    if ctx.headers.contains_key("anthropic-version") {
        let data: Vec<Value> = ANTHROPIC_MODELS
            .iter()
            .map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": CREATED_RFC3339}))
            .collect();
        return Reply::json(json!({
            "data": data,
            "has_more": false,
            "first_id": ANTHROPIC_MODELS[0],
            "last_id": ANTHROPIC_MODELS[ANTHROPIC_MODELS.len() - 1]
        }));
    }
    let data: Vec<Value> = OPENAI_MODELS
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": CREATED, "owned_by": "mock"}))
        .collect();
    Reply::json(json!({"object": "list", "data": data}))
}

/// `POST /v1/files` (uploads, batches, vector stores, message batches): a
/// new object with a fresh id (`file-mock-N`, `batch_mock_N`, ...), its
/// `path`, and a batch's `input_file_id` copied from a JSON body.
fn created(ctx: &Ctx) -> Reply {
    let (object, prefix) = match ctx.path.as_str() {
        "/v1/files" => ("file", "file-mock-"),
        "/v1/uploads" => ("upload", "upload_mock_"),
        "/v1/batches" => ("batch", "batch_mock_"),
        "/v1/vector_stores" => ("vector_store", "vs_mock_"),
        _ => ("message_batch", "msgbatch_mock_"),
    };
    let mut body = json!({
        "id": format!("{prefix}{}", ctx.seq),
        "object": object,
        "path": ctx.path_and_query,
    });
    if let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&ctx.body) {
        if let Some(input) = req.get("input_file_id") {
            body["input_file_id"] = input.clone();
        }
    }
    Reply::json(body)
}

/// The id in `/v1/batches/{id}` or `/v1/messages/batches/{id}`.
fn batch_id(path: &str) -> Option<&str> {
    let id = path
        .strip_prefix("/v1/batches/")
        .or_else(|| path.strip_prefix("/v1/messages/batches/"))?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// `GET /v1/batches/{id}`: a completed batch with an output file
/// `file-out-{id}`.
fn batch(ctx: &Ctx) -> Reply {
    let id = batch_id(&ctx.path).unwrap_or_default();
    Reply::json(json!({
        "id": id,
        "object": "batch",
        "status": "completed",
        "output_file_id": format!("file-out-{id}"),
        "path": ctx.path_and_query,
    }))
}

fn echo(ctx: &Ctx) -> Reply {
    let mut headers = Map::new();
    for (name, value) in &ctx.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    Reply::json(json!({
        "path": ctx.path_and_query,
        "method": ctx.method,
        "headers": headers,
        "body_len": ctx.body.len()
    }))
}

// ---------------------------------------------------------------------------------------------
// Anthropic endpoints
// ---------------------------------------------------------------------------------------------

/// One cacheable unit of an Anthropic prompt (a tool, a system block, a message block).
struct PromptUnit {
    tokens: u64,
    marked: bool,
    key: String,
}

fn has_cache_control(value: &Value) -> bool {
    value.get("cache_control").is_some_and(|c| !c.is_null())
}

fn push_content_units(units: &mut Vec<PromptUnit>, role: &str, content: &Value) {
    match content {
        Value::Array(blocks) if !blocks.is_empty() => {
            for (i, block) in blocks.iter().enumerate() {
                let words = part_text(block).map_or(0, |t| count_words(&t));
                units.push(PromptUnit {
                    // The +3 per message is attributed to its first block.
                    tokens: words + if i == 0 { 3 } else { 0 },
                    marked: has_cache_control(block),
                    key: format!("{role}:{block}"),
                });
            }
        }
        other => units.push(PromptUnit {
            tokens: 3 + count_words(&content_text(other)),
            marked: false,
            key: format!("{role}:{other}"),
        }),
    }
}

/// Tools (0 tokens each), the system prompt (one message) and the messages, in prompt order.
fn anthropic_units(request: &Value) -> Vec<PromptUnit> {
    let mut units = Vec::new();
    if let Some(tools) = request.get("tools").and_then(Value::as_array) {
        for tool in tools {
            units.push(PromptUnit {
                tokens: 0,
                marked: has_cache_control(tool),
                key: format!("tool:{tool}"),
            });
        }
    }
    if let Some(system) = request.get("system") {
        push_content_units(&mut units, "system", system);
    }
    for message in messages_of(request) {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("user");
        let content = message.get("content").cloned().unwrap_or(Value::Null);
        push_content_units(&mut units, role, &content);
    }
    units
}

struct AnthropicUsage {
    input: u64,
    cache_creation: u64,
    cache_read: u64,
}

/// Prompt accounting with prompt caching: the units up to the last `cache_control` marker are
/// written to the cache the first time that exact prefix (and model) is seen, and read from it
/// afterwards. `input` is what is left after the cached prefix, as the API reports it.
fn anthropic_usage(ctx: &Ctx, request: &Value) -> AnthropicUsage {
    let units = anthropic_units(request);
    let total: u64 = units.iter().map(|u| u.tokens).sum();
    let Some(last_marker) = units.iter().rposition(|u| u.marked) else {
        return AnthropicUsage {
            input: total,
            cache_creation: 0,
            cache_read: 0,
        };
    };
    let prefix = &units[..=last_marker];
    let prefix_tokens: u64 = prefix.iter().map(|u| u.tokens).sum();
    let mut hasher = DefaultHasher::new();
    model_of(request).hash(&mut hasher);
    for unit in prefix {
        unit.key.hash(&mut hasher);
    }
    let first_sight = lock(&ctx.shared.cache_prefixes).insert(hasher.finish());
    AnthropicUsage {
        input: total - prefix_tokens,
        cache_creation: if first_sight { prefix_tokens } else { 0 },
        cache_read: if first_sight { 0 } else { prefix_tokens },
    }
}

fn messages(ctx: &Ctx, request: &Value) -> Reply {
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return error_reply(ctx, 400, "messages: Field required");
    };
    let id = format!("msg_mock_{}", ctx.seq);
    let model = model_of(request);
    let user_text = last_user_text(messages);
    let usage = anthropic_usage(ctx, request);
    let stream = bool_at(request, "/stream");

    let (content_block, start_block, deltas, stop_reason, output_tokens) = if let Some(tool_name) =
        tool_to_call(request, &tool_trigger_text(messages))
    {
        let deltas: Vec<Value> = TOOL_ARG_FRAGMENTS
            .iter()
            .map(|f| json!({"type": "input_json_delta", "partial_json": f}))
            .collect();
        (
            json!({"type": "tool_use", "id": "toolu_mock_1", "name": tool_name, "input": {"city": "Paris"}}),
            json!({"type": "tool_use", "id": "toolu_mock_1", "name": tool_name, "input": {}}),
            deltas,
            "tool_use",
            TOOL_ARG_FRAGMENTS.len() as u64,
        )
    } else {
        let generated = generate(ctx, &user_text, u64_field(request, &["max_tokens"]));
        let deltas = generated
            .pieces
            .iter()
            .map(|p| json!({"type": "text_delta", "text": p}))
            .collect();
        (
            json!({"type": "text", "text": generated.text}),
            json!({"type": "text", "text": ""}),
            deltas,
            if generated.truncated {
                "max_tokens"
            } else {
                "end_turn"
            },
            generated.completion_tokens(),
        )
    };

    let usage_json = |output: u64| {
        json!({
            "input_tokens": usage.input,
            "output_tokens": output,
            "cache_creation_input_tokens": usage.cache_creation,
            "cache_read_input_tokens": usage.cache_read
        })
    };

    if !stream {
        return Reply::json(json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [content_block],
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": usage_json(output_tokens)
        }));
    }
    let mut events = vec![
        sse_event(&json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage_json(1)
            }
        })),
        sse_event(
            &json!({"type": "content_block_start", "index": 0, "content_block": start_block}),
        ),
        sse_event(&json!({"type": "ping"})),
    ];
    for delta in deltas {
        events.push(sse_event(
            &json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ));
    }
    events.push(sse_event(
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(sse_event(&json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": output_tokens}
    })));
    events.push(sse_event(&json!({"type": "message_stop"})));
    Reply::sse(events)
}

fn count_tokens(_ctx: &Ctx, request: &Value) -> Reply {
    let total: u64 = anthropic_units(request).iter().map(|u| u.tokens).sum();
    Reply::json(json!({"input_tokens": total}))
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn default_error_message(status: u16) -> String {
    match status {
        400 => "Invalid request (mock).".to_owned(),
        401 => "Invalid authentication (mock).".to_owned(),
        403 => "Permission denied (mock).".to_owned(),
        404 => "Not found (mock).".to_owned(),
        408 => "Request timed out (mock).".to_owned(),
        413 => "Request too large (mock).".to_owned(),
        429 => "Rate limit reached for requests (mock).".to_owned(),
        500 => "The server had an error while processing your request (mock).".to_owned(),
        502 => "Bad gateway (mock).".to_owned(),
        503 => "The engine is currently overloaded, please try again later (mock).".to_owned(),
        529 => "Overloaded (mock).".to_owned(),
        other => format!("Mock error with status {other}."),
    }
}

/// OpenAI `(type, code)` for a status.
fn openai_error_kind(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        400 | 404 | 413 | 422 => ("invalid_request_error", None),
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("permission_error", None),
        408 => ("timeout", None),
        429 => ("requests", Some("rate_limit_exceeded")),
        500..=599 => ("server_error", None),
        _ => ("api_error", None),
    }
}

fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    }
}

fn error_reply(ctx: &Ctx, status: u16, message: &str) -> Reply {
    let body = if ctx.anthropic {
        json!({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}})
    } else {
        let (kind, code) = openai_error_kind(status);
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
    };
    Reply {
        status: status_code(status),
        kind: ReplyKind::Json(body),
        headers: Vec::new(),
    }
}
