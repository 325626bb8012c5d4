//! The attempt loop: deployments in balancer order, breakers consulted,
//! retries with backoff inside a retry budget, then the fallback chain — all
//! before any response byte goes to the client, so a stream that has started
//! is never retried.
//!
//! The loop reaches the network only through a [`Transport`] (the provider
//! clients in production) and keeps time on tokio's clock, so its sequencing
//! — waits, timeouts, breakers, fallbacks — is unit-tested with a scripted
//! transport on a paused clock (`tests.rs`).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use tokio::time::Instant;

use crate::app::Snapshot;
use crate::auth::Credential;
use crate::config::{Balance, FaultKind, ProviderKind};
use crate::error::{ApiShape, ProxyError};
use crate::headers::upstream_request_headers;
use crate::metrics;
use crate::protocol;
use crate::resilience::balance::{self, Candidate};
use crate::resilience::breaker::Permit;
use crate::resilience::retry::{self, breaker_failure, retryable_status};
use crate::resilience::{Deployments, InflightGuard};
use crate::sniff::{self, Endpoint, Rewrite};
use crate::telemetry::{self, AttemptEnd, AttemptStart, RequestTrace};
use crate::upstream::pool::Body as UpstreamBody;
use crate::upstream::{SendError, Upstream};

mod bedrock;
pub mod cross;
pub use cross::Crossing;

/// Error bodies read to look for a context-length error.
const MAX_ERROR_BODY: usize = 1 << 20;

/// The deployments of one model in the chain, and how to try them.
pub struct Group {
    pub candidates: Vec<Candidate>,
    pub balance: Balance,
    /// Attempts this group may take (1 + retries).
    pub tries: u32,
    /// Public model to switch to on a context-length error.
    pub context_fallback: Option<String>,
    /// The group's deployments speak the other API: the request as they
    /// get it.
    pub crossing: Option<Arc<Crossing>>,
}

/// The group without the deployments a client's own key may not go to: a
/// passthrough key reaches only providers with `client_keys`, never another
/// provider by routing or fallback, and never one of the other API (a key
/// for one API is no credential for the other).
pub fn keep_for_credential(mut group: Group, cred: &Credential, upstreams: &[Upstream]) -> Group {
    if matches!(cred, Credential::Passthrough { .. }) {
        let crossing = group.crossing.is_some();
        group
            .candidates
            .retain(|c| !crossing && upstreams.get(c.provider).is_some_and(|u| u.client_keys));
    }
    group
}

/// The group of one route: its deployments, and the request translated
/// when they speak the other API. `Err` when it cannot be translated.
pub fn group_for(
    route: &crate::route::Route<'_>,
    call_like: &GroupInput<'_>,
) -> Result<Group, ProxyError> {
    let crossing = if route.api == call_like.shape {
        None
    } else {
        let c = cross::translate(
            call_like.shape,
            call_like.body,
            call_like.include_usage,
            call_like.breakpoints,
        )
        .map_err(|r| cross::refused(&route.public, r))?;
        Some(Arc::new(c))
    };
    let group = Group {
        candidates: route.candidates(call_like.upstreams, call_like.registry),
        balance: route.rule.balance,
        tries: 1 + call_like.max_retries,
        context_fallback: route.rule.context_fallback.clone(),
        crossing,
    };
    Ok(keep_for_credential(
        group,
        call_like.cred,
        call_like.upstreams,
    ))
}

/// The smallest prefix worth a prompt-cache breakpoint, when Sluice adds them.
pub fn breakpoints(cache: &crate::config::CacheConfig) -> Option<u64> {
    cache
        .anthropic_breakpoints
        .then_some(cache.breakpoint_min_tokens)
}

/// What building a route's group needs from the request.
pub struct GroupInput<'a> {
    pub upstreams: &'a [Upstream],
    pub registry: &'a Deployments,
    pub cred: &'a Credential,
    /// The client's API.
    pub shape: ApiShape,
    /// The body in the client's API, after every rewrite.
    pub body: &'a [u8],
    /// The client asked for a usage chunk at the end of its OpenAI stream.
    pub include_usage: bool,
    pub max_retries: u32,
    /// `[cache] anthropic_breakpoints`: the smallest prefix worth a
    /// prompt-cache breakpoint in a request translated to Anthropic.
    pub breakpoints: Option<u64>,
}

/// One attempt, for the usage record.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptInfo {
    pub deployment: String,
    /// HTTP status, or 0 when no response came.
    pub status: u16,
    /// `ok`, `retryable`, `client_error`, `timeout`, `connect_error`.
    pub outcome: &'static str,
    pub ms: f64,
}

/// What the attempt loop leaves behind about the upstream side of a request
/// (the request record holds one, for headers, metrics and the usage line).
#[derive(Debug, Default)]
pub struct Progress {
    /// The provider the request is routed to; then the one that answered.
    pub provider: Arc<str>,
    /// The upstream model the request is routed to; then the one that
    /// answered.
    pub model: String,
    /// Requests sent upstream.
    pub attempts: u32,
    /// Every upstream attempt.
    pub log: Vec<AttemptInfo>,
    /// Time spent waiting on the upstream for response headers.
    pub wait: Duration,
    /// An upstream request is out and its response has not come yet (a
    /// client gone now leaves a request the provider bills).
    pub awaiting: bool,
    /// Counts the request in flight on the deployment that answered.
    pub inflight: Option<InflightGuard>,
    /// An upstream chaos fault replaced an attempt's answer (its name).
    pub fault: Option<Arc<str>>,
    /// The answer comes from a deployment of the other API: how the request
    /// was translated (the answer is translated back).
    pub crossing: Option<Arc<Crossing>>,
}

/// Where attempts go: the providers' pooled clients in production (the
/// snapshot's upstreams), a script in the unit tests.
pub trait Transport: Sync {
    /// The body of a provider's response.
    type Body: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;

    /// Sends `req` to provider number `provider` (an index into the
    /// snapshot's upstreams); resolves with the response headers.
    fn send(
        &self,
        provider: usize,
        req: Request<Full<Bytes>>,
    ) -> impl Future<Output = Result<Response<Self::Body>, SendError>> + Send;

    /// A random number in [0, 1): the jitter of a backoff.
    fn jitter(&self) -> f64 {
        fastrand::f64()
    }
}

/// The providers' own clients (generic, not boxed: the loop is compiled for
/// this transport, with no allocation of its own per request).
impl Transport for [Upstream] {
    type Body = UpstreamBody;

    fn send(
        &self,
        provider: usize,
        req: Request<Full<Bytes>>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, SendError>> + Send {
        let pool = self.get(provider).map(Upstream::pool);
        async move {
            match pool {
                Some(pool) => pool.send(req).await,
                None => Err(SendError::Connect(format!("no provider #{provider}"))),
            }
        }
    }
}

/// Everything an attempt needs from the request.
pub struct Call<'a> {
    pub snap: &'a Snapshot,
    pub registry: &'a Deployments,
    pub method: &'a Method,
    pub path_and_query: &'a str,
    pub client_headers: &'a HeaderMap,
    pub cred: &'a Credential,
    /// The body after every rewrite except the model name.
    pub body: Bytes,
    /// The model the body names (rewritten per deployment when it differs).
    pub client_model: Option<&'a str>,
    pub endpoint: Endpoint,
    pub shape: ApiShape,
    pub deadline: tokio::time::Instant,
    /// Sluice reads a passthrough answer (to record who owns the objects it
    /// names): ask for it uncompressed.
    pub reads_answer: bool,
    /// A chaos fault (`at = "upstream"`) rolled for every attempt: when it
    /// fires it replaces that attempt's answer, so retries, breakers and
    /// fallbacks treat it as the provider's.
    pub fault: Option<crate::fault::Hit>,
    /// The request's span: each attempt gets a child span, whose context
    /// goes upstream in `traceparent`.
    pub trace: &'a RequestTrace,
    /// The client asked for a usage chunk at the end of its OpenAI stream
    /// (a context fallback to the other API translates the request again).
    pub include_usage: bool,
}

/// The upstream answer that goes to the client.
pub enum Answered<B = UpstreamBody> {
    /// Headers received; the body streams through the tap.
    Stream(Response<B>),
    /// An error body Sluice had to read (to look for a context-length error).
    Buffered(http::response::Parts, Bytes),
}

/// Why an attempt produced no usable response.
enum Failed<B> {
    /// A response that may be retried (kept to pass through if nothing better comes).
    Status(Response<B>),
    /// An injected failure's answer (read already).
    Injected(http::response::Parts, Bytes),
    Transport(ProxyError),
}

/// Runs attempts over `groups` with the providers' clients until one
/// answers, or everything is spent.
pub async fn run(
    call: &Call<'_>,
    groups: VecDeque<Group>,
    progress: &mut Progress,
) -> Result<Answered, ProxyError> {
    run_with(&call.snap.upstreams[..], call, groups, progress).await
}

/// Runs attempts over `groups`, sent through `transport`, until one
/// answers, or everything is spent.
pub async fn run_with<T: Transport + ?Sized>(
    transport: &T,
    call: &Call<'_>,
    mut groups: VecDeque<Group>,
    progress: &mut Progress,
) -> Result<Answered<T::Body>, ProxyError> {
    let cfg = call.snap.config.retry;
    let breaker_cfg = call.snap.config.breaker;
    let mut last: Option<Failed<T::Body>> = None;
    let mut asked_wait = None;
    // Deployments that failed this request (a retry on one of them backs off).
    let mut failed: Vec<String> = Vec::new();
    // Every deployment this request could use is open: the breakers' panic
    // rule lets a bounded trickle through instead of failing everything here.
    let panic = all_open(&groups, &breaker_cfg, Instant::now());
    'chain: while let Some(group) = groups.pop_front() {
        let mut tried: Vec<usize> = Vec::new();
        for _ in 0..group.tries {
            if progress.attempts >= cfg.max_attempts {
                break 'chain;
            }
            let now = Instant::now();
            let Some((i, permit)) = pick(&group, &tried, &breaker_cfg, now, panic) else {
                last.get_or_insert(Failed::Transport(ProxyError::NoHealthyDeployment));
                continue 'chain;
            };
            let cand = &group.candidates[i];
            if progress.attempts > 0 {
                metrics::retry();
            }
            // The breaker counts one failure per client request and
            // deployment: a request's retries on it do not count again
            // (a probe's outcome always counts: it decides the circuit).
            let failed_before = failed.iter().any(|f| f == &cand.state.name);
            let counts = |ok: bool| ok || !failed_before || permit == Permit::Probe;
            if failed_before {
                // Going back to a deployment that already failed this request:
                // only within its retry budget (so an outage does not multiply
                // its load), after a backoff (or its Retry-After) that fits the
                // deadline; otherwise on to the next model in the chain.
                // Moving to another deployment or a fallback goes at once.
                // (The budget is taken last: a retry that does not happen
                // does not spend it.)
                let jitter = transport.jitter();
                let Some(wait) = retry::delay(&cfg, progress.attempts, asked_wait, jitter) else {
                    continue 'chain;
                };
                if now + wait >= call.deadline {
                    continue 'chain;
                }
                if !cand.state.budget.try_retry(&cfg, now) {
                    tracing::debug!(deployment = %cand.state.name, "retry budget exhausted");
                    metrics::retry_budget_exhausted(&cand.state.name);
                    continue 'chain;
                }
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            } else {
                cand.state.budget.record_request(now);
            }
            tried.push(i);
            let upstream = &call.snap.upstreams[cand.provider];
            let started = Instant::now();
            let guard = InflightGuard::new(cand.state.clone());
            let span = call.trace.attempt(|| AttemptStart {
                deployment: deployment_name(upstream, cand),
                provider: &upstream.name,
                system: telemetry::system(upstream.kind),
                model: &cand.upstream_model,
                number: progress.attempts + 1,
                retry_reason: progress.log.last().map(|p| match p.status {
                    0 => p.outcome.to_owned(),
                    s => format!("status {s}"),
                }),
            });
            let fault = fire_fault(call, progress);
            let result = match fault {
                Some(FaultKind::Status {
                    status,
                    retry_after,
                }) => Err(injected_status(
                    upstream,
                    cand,
                    status,
                    retry_after,
                    progress,
                )),
                _ => Ok(attempt(
                    transport,
                    call,
                    (upstream, cand, group.crossing.as_deref()),
                    progress,
                    fault,
                    span.traceparent(),
                )
                .await),
            };
            let ms = started.elapsed().as_secs_f64() * 1e3;
            let mut span = Some(span);
            let mut log = |status: u16, outcome: &'static str| {
                if let Some(s) = span.take() {
                    s.end(&AttemptEnd { status, outcome });
                }
                AttemptInfo {
                    deployment: deployment_name(upstream, cand),
                    status,
                    outcome,
                    ms: (ms * 1e3).round() / 1e3,
                }
            };
            let result = match result {
                Ok(result) => result,
                // The injected status goes where the provider's would.
                Err((parts, body)) => {
                    let status = parts.status;
                    let ok = !breaker_failure(status);
                    if counts(ok) {
                        record_breaker(cand, &breaker_cfg, ok, permit);
                    }
                    answered_by(progress, upstream, cand, guard, &group);
                    if retryable_status(status) {
                        progress.log.push(log(status.as_u16(), "retryable"));
                        asked_wait = retry::retry_after(&parts.headers);
                        failed.push(cand.state.name.clone());
                        last = Some(Failed::Injected(parts, body));
                        continue;
                    }
                    progress.log.push(log(status.as_u16(), "client_error"));
                    if let Some(g) = group
                        .context_fallback
                        .as_deref()
                        .filter(|_| protocol::errors::is_context_length(&body))
                        .and_then(|f| fallback_group(call, f))
                    {
                        groups.push_front(g);
                        continue 'chain;
                    }
                    return Ok(Answered::Buffered(parts, body));
                }
            };
            match result {
                Ok(resp) if !retryable_status(resp.status()) => {
                    let status = resp.status();
                    let ok = !breaker_failure(status);
                    if counts(ok) {
                        record_breaker(cand, &breaker_cfg, ok, permit);
                    }
                    cand.state
                        .observe_latency(started.elapsed().as_micros() as u64);
                    let outcome = if status.is_success() {
                        "ok"
                    } else {
                        "client_error"
                    };
                    progress.log.push(log(status.as_u16(), outcome));
                    answered_by(progress, upstream, cand, guard, &group);
                    if status == StatusCode::BAD_REQUEST {
                        if let Some(fallback) = &group.context_fallback {
                            let (parts, body) = read_error(resp, upstream.timeouts.idle).await;
                            if protocol::errors::is_context_length(&body) {
                                if let Some(g) = fallback_group(call, fallback) {
                                    tracing::debug!(to = %fallback, "context length exceeded: falling back");
                                    groups.push_front(g);
                                    continue 'chain;
                                }
                            }
                            return Ok(Answered::Buffered(parts, body));
                        }
                    }
                    return Ok(Answered::Stream(resp));
                }
                Ok(resp) => {
                    let status = resp.status();
                    let ok = !breaker_failure(status);
                    if counts(ok) {
                        record_breaker(cand, &breaker_cfg, ok, permit);
                    }
                    progress.log.push(log(status.as_u16(), "retryable"));
                    asked_wait = retry::retry_after(resp.headers());
                    failed.push(cand.state.name.clone());
                    answered_by(progress, upstream, cand, guard, &group);
                    last = Some(Failed::Status(resp));
                }
                Err(e) if !e.retryable() => {
                    // Ends the attempt's span (not an attempt to log).
                    let _ = log(0, e.kind());
                    return Err(e);
                }
                Err(e) => {
                    if counts(false) {
                        record_breaker(cand, &breaker_cfg, false, permit);
                    }
                    let outcome = match e {
                        ProxyError::UpstreamTimeout { .. } => "timeout",
                        _ => "connect_error",
                    };
                    progress.log.push(log(0, outcome));
                    asked_wait = None;
                    failed.push(cand.state.name.clone());
                    last = Some(Failed::Transport(e));
                }
            }
        }
    }
    match last {
        // The provider's own last error passes through unchanged.
        Some(Failed::Status(resp)) => Ok(Answered::Stream(resp)),
        Some(Failed::Injected(parts, body)) => Ok(Answered::Buffered(parts, body)),
        Some(Failed::Transport(e)) => Err(e),
        None => Err(ProxyError::NoHealthyDeployment),
    }
}

/// The model actually sent, as `provider/model` (the breaker's name for a
/// glob rule is its pattern).
fn deployment_name(upstream: &Upstream, cand: &Candidate) -> String {
    if cand.upstream_model.is_empty() {
        cand.state.name.clone()
    } else {
        crate::resilience::deployment_name(&upstream.name, &cand.upstream_model)
    }
}

/// Whether every deployment of every group (the model and its fallbacks)
/// is open or ejected right now.
fn all_open(groups: &VecDeque<Group>, cfg: &crate::config::BreakerConfig, now: Instant) -> bool {
    groups
        .iter()
        .flat_map(|g| &g.candidates)
        .all(|c| c.state.breaker.is_open(cfg, now))
}

/// The first deployment in balancer order that has not been tried in this
/// group (all of them again once each was) and whose breaker lets it through
/// (under the panic rule when `panic`: see `Breaker::panic_allow`).
fn pick(
    group: &Group,
    tried: &[usize],
    cfg: &crate::config::BreakerConfig,
    now: Instant,
    panic: bool,
) -> Option<(usize, Permit)> {
    let order = balance::order(group.balance, &group.candidates);
    let fresh: Vec<usize> = order
        .iter()
        .copied()
        .filter(|i| !tried.contains(i))
        .collect();
    let pool = if fresh.is_empty() { order } else { fresh };
    pool.into_iter().find_map(|i| {
        let breaker = &group.candidates[i].state.breaker;
        let permit = if panic {
            breaker.panic_allow(cfg, now)
        } else {
            breaker.allow(cfg, now)
        };
        (permit != Permit::Denied).then_some((i, permit))
    })
}

fn record_breaker(cand: &Candidate, cfg: &crate::config::BreakerConfig, ok: bool, permit: Permit) {
    let opened = cand.state.breaker.record(cfg, Instant::now(), ok, permit);
    if opened {
        tracing::warn!(deployment = %cand.state.name, "circuit opened");
    }
    // The gauge is 0 or 1: set it when that changes, not on every answer
    // (a label lookup and a registry lookup each time).
    let state = cand.state.breaker.state(cfg);
    let shown = if state == "closed" { 1 } else { 2 };
    if cand
        .state
        .circuit_shown
        .swap(shown, std::sync::atomic::Ordering::Relaxed)
        != shown
    {
        metrics::circuit(&cand.state.name, state);
    }
}

/// Notes which deployment answered (the last one tried, so far).
fn answered_by(
    progress: &mut Progress,
    upstream: &Upstream,
    cand: &Candidate,
    guard: InflightGuard,
    group: &Group,
) {
    progress.provider = upstream.name.clone();
    progress.model = cand.upstream_model.clone();
    progress.inflight = Some(guard);
    progress.crossing = group.crossing.clone();
}

/// The group for a fallback model, if it resolves (and has a deployment the
/// request's credential may go to).
fn fallback_group(call: &Call<'_>, model: &str) -> Option<Group> {
    let upstreams = &call.snap.upstreams;
    let route =
        call.snap
            .router
            .resolve_across(model, call.shape, call.endpoint.crosses(), upstreams)?;
    let input = GroupInput {
        upstreams,
        registry: call.registry,
        cred: call.cred,
        shape: call.shape,
        body: &call.body,
        include_usage: call.include_usage,
        max_retries: call.snap.config.retry.max_retries,
        breakpoints: breakpoints(&call.snap.config.cache),
    };
    let mut group = match group_for(&route, &input) {
        Ok(g) => g,
        Err(e) => {
            tracing::debug!(to = %model, error = %e, "context fallback cannot be translated");
            return None;
        }
    };
    group.context_fallback = None;
    (!group.candidates.is_empty()).then_some(group)
}

/// Whether this attempt gets the call's upstream fault (rolled per
/// attempt); counted and noted when it does.
fn fire_fault(call: &Call<'_>, progress: &mut Progress) -> Option<FaultKind> {
    let hit = call.fault.as_ref().filter(|h| h.fires(fastrand::f64()))?;
    hit.counted();
    progress.fault = Some(hit.name.clone());
    Some(hit.kind)
}

/// An injected status, as the deployment's provider would have sent it.
fn injected_status(
    upstream: &Upstream,
    cand: &Candidate,
    status: u16,
    retry_after: Option<u64>,
    progress: &mut Progress,
) -> (http::response::Parts, Bytes) {
    progress.attempts += 1;
    metrics::upstream_attempt(&upstream.name, outcome_label(status));
    let shape = match upstream.kind {
        ProviderKind::Anthropic | ProviderKind::Bedrock => ApiShape::Anthropic,
        _ => ApiShape::OpenAi,
    };
    let id = format!("fault{:016x}", fastrand::u64(..));
    crate::fault::status_response(status, retry_after, shape, &cand.upstream_model, &id)
        .into_parts()
}

fn outcome_label(status: u16) -> &'static str {
    match status {
        200..=399 => "ok",
        429 => "rate_limited",
        400..=499 => "client_error",
        _ => "server_error",
    }
}

/// One request to one deployment, bounded by the first-byte timeout and the
/// request deadline (an injected delay waits inside those bounds; an
/// injected reset fails it before anything is sent).
async fn attempt<T: Transport + ?Sized>(
    transport: &T,
    call: &Call<'_>,
    (upstream, cand, crossing): (&Upstream, &Candidate, Option<&Crossing>),
    progress: &mut Progress,
    fault: Option<FaultKind>,
    traceparent: Option<HeaderValue>,
) -> Result<Response<T::Body>, ProxyError> {
    let mut req = build_request(call, upstream, cand, crossing)?;
    if let Some(tp) = traceparent {
        // The attempt span is the upstream's parent (the client's own
        // `traceparent` names the request span's parent instead).
        req.headers_mut().insert("traceparent", tp);
    }
    progress.attempts += 1;
    if let Some(FaultKind::Reset { .. }) = fault {
        metrics::upstream_attempt(&upstream.name, "connect_error");
        return Err(ProxyError::UpstreamConnect {
            provider: upstream.name.to_string(),
            detail: "connection reset before the response head (injected fault)".into(),
        });
    }
    let sent = Instant::now();
    let first_byte = sent + upstream.timeouts.first_byte;
    let (limit, phase) = if first_byte < call.deadline {
        (first_byte, "first byte")
    } else {
        (call.deadline, "total")
    };
    progress.awaiting = true;
    let send = async {
        if let Some(FaultKind::Delay(d)) = fault {
            tokio::time::sleep(d).await;
        }
        transport.send(cand.provider, req).await
    };
    let result = tokio::time::timeout_at(limit, send).await;
    progress.awaiting = false;
    progress.wait += sent.elapsed();
    // (Named only for an error: `to_string` formats, and allocates.)
    let provider = || upstream.name.to_string();
    match result {
        Err(_) => {
            metrics::upstream_attempt(&upstream.name, "timeout");
            Err(ProxyError::UpstreamTimeout {
                provider: provider(),
                phase,
            })
        }
        Ok(Err(SendError::ConnectTimeout)) => {
            metrics::upstream_attempt(&upstream.name, "timeout");
            Err(ProxyError::UpstreamTimeout {
                provider: provider(),
                phase: "connect",
            })
        }
        Ok(Err(SendError::Connect(detail))) => {
            metrics::upstream_attempt(&upstream.name, "connect_error");
            Err(ProxyError::UpstreamConnect {
                provider: provider(),
                detail,
            })
        }
        Ok(Ok(resp)) => {
            metrics::upstream_attempt(&upstream.name, outcome_label(resp.status().as_u16()));
            Ok(resp)
        }
    }
}

/// The upstream request for one deployment.
fn build_request(
    call: &Call<'_>,
    upstream: &Upstream,
    cand: &Candidate,
    crossing: Option<&Crossing>,
) -> Result<Request<Full<Bytes>>, ProxyError> {
    if upstream.kind == ProviderKind::Bedrock {
        return bedrock::request(call, upstream, cand, crossing);
    }
    let model = call
        .client_model
        .map_or("", |_| cand.upstream_model.as_str());
    let (path, body) = match crossing {
        Some(c) => (c.path, &c.body),
        None => (call.path_and_query, &call.body),
    };
    // (Origin form: the pool makes it absolute where HTTP/2 needs it.)
    let uri = upstream
        .origin_form(path, model)
        .map_err(|e| ProxyError::Internal(format!("building upstream URL: {e}")))?;
    let body = match call.client_model {
        Some(m) if m != cand.upstream_model => sniff::rewrite(
            body.clone(),
            &Rewrite {
                model: Some(cand.upstream_model.clone()),
                ..Rewrite::default()
            },
        )?,
        _ => body.clone(),
    };
    // (The pool adds `host` on HTTP/1.)
    let mut headers = upstream_request_headers(call.client_headers);
    protocol::headers::fit(
        &mut headers,
        call.shape,
        crossing.map_or(call.shape, |c| c.to),
    );
    match call.cred {
        Credential::Virtual(_) => {
            let (name, v) =
                upstream
                    .auth_header()
                    .ok_or_else(|| ProxyError::ProviderKeyMissing {
                        provider: upstream.name.to_string(),
                        env: upstream
                            .api_key_env
                            .clone()
                            .unwrap_or_else(|| "api_key_env".into()),
                    })?;
            headers.insert(name.clone(), v.clone());
            upstream.set_billing_headers(&mut headers);
        }
        Credential::Passthrough { header, value } => {
            // A client's own key goes only where it was meant to go (the
            // chain is filtered already; this is the last line).
            if !upstream.client_keys {
                return Err(ProxyError::Forbidden(format!(
                    "provider {:?} does not accept client keys; use a virtual key",
                    upstream.name
                )));
            }
            match (upstream.kind, value.to_str().ok()) {
                // Azure takes the key itself in `api-key`, not a bearer token.
                (ProviderKind::Azure, Some(v)) if *header == header::AUTHORIZATION => {
                    let key = v.strip_prefix("Bearer ").unwrap_or(v);
                    let mut key = HeaderValue::from_str(key).map_err(|_| {
                        ProxyError::Internal("client key is not a header value".into())
                    })?;
                    key.set_sensitive(true);
                    headers.insert("api-key", key);
                }
                _ => {
                    headers.insert(header.clone(), value.clone());
                }
            }
        }
    }
    if call.endpoint != Endpoint::Other || call.reads_answer {
        // Sluice reads these bodies (usage, errors): ask for them uncompressed.
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = call.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Reads an error body, bounded in size and by the idle timeout (a provider
/// that stalls here gives an empty body, which is not a context-length
/// error, instead of holding the request).
async fn read_error<B>(resp: Response<B>, idle: Duration) -> (http::response::Parts, Bytes)
where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>,
{
    let (parts, body) = resp.into_parts();
    let read = tokio::time::timeout(idle, Limited::new(body, MAX_ERROR_BODY).collect()).await;
    let bytes = match read {
        Ok(Ok(c)) => c.to_bytes(),
        _ => Bytes::new(),
    };
    (parts, bytes)
}

#[cfg(test)]
mod tests;
