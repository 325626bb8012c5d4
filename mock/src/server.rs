//! The listener, the per-request flow (read, record, faults, route, respond) and the state
//! shared by the connections of one [`MockProvider`].

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::error_reply;
use crate::faults::{self, Fault, Opts};
use crate::reply::{Ctx, MockBody, Reply};
use crate::{anthropic, batch_results, bedrock, objects, openai, responses};

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

    /// Checks every Bedrock request's SigV4 signature in full with this
    /// secret access key (by default only its shape is checked); a request
    /// whose signature differs gets Bedrock's 403.
    pub fn verify_aws_signatures(&self, secret_access_key: &str) {
        *lock(&self.shared.aws_secret) = Some(secret_access_key.to_owned());
    }

    /// Queues a fault; each request consumes at most one, in FIFO order.
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push_back(fault);
    }

    /// Currently open TCP connections.
    pub fn active_connections(&self) -> usize {
        self.shared.active_connections.load(Ordering::SeqCst)
    }

    /// TCP connections accepted since the start.
    pub fn accepted_connections(&self) -> usize {
        self.shared.accepted_connections.load(Ordering::SeqCst)
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

pub(crate) struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    faults: Mutex<VecDeque<Fault>>,
    /// Anthropic prompt-cache prefixes seen so far (hashes), for cache read/write accounting.
    pub(crate) cache_prefixes: Mutex<HashSet<u64>>,
    /// The secret Bedrock signatures are verified with, when set.
    pub(crate) aws_secret: Mutex<Option<String>>,
    recording: AtomicBool,
    seq: AtomicUsize,
    active_connections: AtomicUsize,
    accepted_connections: AtomicUsize,
    pub(crate) cancelled_streams: AtomicUsize,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            cache_prefixes: Mutex::new(HashSet::new()),
            aws_secret: Mutex::new(None),
            recording: AtomicBool::new(true),
            seq: AtomicUsize::new(0),
            active_connections: AtomicUsize::new(0),
            accepted_connections: AtomicUsize::new(0),
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

    pub(crate) fn pop_fault(&self) -> Option<Fault> {
        lock(&self.faults).pop_front()
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not wedge the mock).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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
        shared.accepted_connections.fetch_add(1, Ordering::SeqCst);
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
        // `x-mock-close`: answer, then close the connection.
        let close = request.headers().contains_key("x-mock-close");
        async move {
            let mut response = handle(shared, request).await;
            if close {
                response.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(response)
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    // Connection errors (client resets, aborted streams) are expected in fault tests.
    let _ = builder
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// One request: read and record it, apply faults, route it to its API module, respond.
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
    // Azure OpenAI: `/openai/deployments/{d}/…?api-version=V` (or `/openai/…`)
    // is served as the OpenAI path; without an api-version Azure answers 404.
    let azure = path.starts_with("/openai/");
    let path = if azure { azure_path(&path) } else { path };
    let azure_versionless = azure
        && !parts
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("api-version=")));
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
    let invocation = bedrock::invocation(&path);
    let mut ctx = Ctx {
        bedrock: invocation.is_some(),
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

    if azure_versionless {
        let mut reply = Reply::json(
            serde_json::json!({"error": {"code": "404", "message": "Resource not found"}}),
        );
        reply.status = StatusCode::NOT_FOUND;
        return ctx.respond(reply);
    }

    // AWS checks the signature before anything else.
    if let Some(reply) = invocation
        .as_ref()
        .and_then(|_| bedrock::refused_signature(&ctx))
    {
        return ctx.respond(reply);
    }

    // Queued faults, `x-mock-*` faults and the bad-key check, in that order.
    if let Some(reply) = faults::injected(&mut ctx).await {
        return ctx.respond(reply);
    }
    if let Some(call) = &invocation {
        if ctx.method != "POST" {
            return ctx.respond(error_reply(&ctx, 404, "Not Found"));
        }
        let reply = bedrock::answer(&ctx, call);
        return ctx.respond(reply);
    }

    let reply = route(&ctx);
    ctx.respond(reply)
}

/// The OpenAI path an Azure OpenAI path stands for.
fn azure_path(path: &str) -> String {
    let rest = path.strip_prefix("/openai").unwrap_or(path);
    let rest = match rest.strip_prefix("/deployments/") {
        Some(r) => r.find('/').map_or("", |i| &r[i..]),
        None => rest,
    };
    format!("/v1{rest}")
}

fn route(ctx: &Ctx) -> Reply {
    match (ctx.method.as_str(), ctx.path.as_str()) {
        ("POST", "/v1/chat/completions") => with_json(ctx, openai::chat_completions),
        ("POST", "/v1/completions") => with_json(ctx, openai::completions),
        ("POST", "/v1/embeddings") => with_json(ctx, openai::embeddings),
        ("POST", "/v1/responses") => with_json(ctx, responses::responses),
        ("POST", "/v1/messages") => with_anthropic_json(ctx, anthropic::messages),
        ("POST", "/v1/messages/count_tokens") => with_anthropic_json(ctx, anthropic::count_tokens),
        ("GET", "/v1/models") if ctx.headers.contains_key("anthropic-version") => {
            anthropic::models()
        }
        ("GET", "/v1/models") => openai::models(),
        ("POST", "/v1/files" | "/v1/uploads" | "/v1/batches" | "/v1/vector_stores")
        | ("POST", "/v1/messages/batches") => objects::created(ctx),
        ("GET", p) if batch_results::output_file(p).is_some() => {
            batch_results::openai_results(batch_results::output_file(p).unwrap_or_default())
        }
        ("GET", p) if batch_results::results_of(p).is_some() => {
            batch_results::anthropic_results(batch_results::results_of(p).unwrap_or_default())
        }
        ("GET", p) if p.starts_with("/v1/messages/batches/") && objects::batch_id(p).is_some() => {
            batch_results::message_batch(ctx, objects::batch_id(p).unwrap_or_default())
        }
        ("GET", p) if objects::batch_id(p).is_some() => objects::batch(ctx),
        _ => objects::echo(ctx),
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
