//! The attempt loop: deployments in balancer order, breakers consulted,
//! retries with backoff inside a retry budget, then the fallback chain — all
//! before any response byte goes to the client, so a stream that has started
//! is never retried.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::app::Snapshot;
use crate::auth::Credential;
use crate::config::Balance;
use crate::error::{ApiShape, ProxyError};
use crate::headers::upstream_request_headers;
use crate::metrics;
pub use crate::record::AttemptInfo;
use crate::record::RequestRecord;
use crate::resilience::balance::{self, Candidate};
use crate::resilience::breaker::Permit;
use crate::resilience::retry::{self, breaker_failure, retryable_status};
use crate::resilience::{random_unit, Deployments, InflightGuard};
use crate::sniff::{self, Endpoint, Rewrite};
use crate::upstream::Upstream;

/// Anthropic API version sent when a client names none.
const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
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
}

/// The group without the deployments a client's own key may not go to: a
/// passthrough key reaches only providers with `client_keys`, never another
/// provider by routing or fallback.
pub fn keep_for_credential(mut group: Group, cred: &Credential, upstreams: &[Upstream]) -> Group {
    if matches!(cred, Credential::Passthrough { .. }) {
        group
            .candidates
            .retain(|c| upstreams.get(c.provider).is_some_and(|u| u.client_keys));
    }
    group
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
}

/// The upstream answer that goes to the client.
pub enum Answered {
    /// Headers received; the body streams through the tap.
    Stream(Response<Incoming>),
    /// An error body Sluice had to read (to look for a context-length error).
    Buffered(http::response::Parts, Bytes),
}

/// Why an attempt produced no usable response.
enum Failed {
    /// A response that may be retried (kept to pass through if nothing better comes).
    Status(Response<Incoming>),
    Transport(ProxyError),
}

/// Runs attempts over `groups` until one answers, or everything is spent.
pub async fn run(
    call: &Call<'_>,
    mut groups: VecDeque<Group>,
    rec: &mut RequestRecord,
) -> Result<Answered, ProxyError> {
    let cfg = call.snap.config.retry;
    let breaker_cfg = call.snap.config.breaker;
    let mut last: Option<Failed> = None;
    let mut asked_wait = None;
    // Deployments that failed this request (a retry on one of them backs off).
    let mut failed: Vec<String> = Vec::new();
    // Every deployment this request could use is open: the breakers' panic
    // rule lets a bounded trickle through instead of failing everything here.
    let panic = all_open(&groups, &breaker_cfg, Instant::now());
    'chain: while let Some(group) = groups.pop_front() {
        let mut tried: Vec<usize> = Vec::new();
        for _ in 0..group.tries {
            if rec.outcome.attempts >= cfg.max_attempts {
                break 'chain;
            }
            let now = Instant::now();
            let Some((i, permit)) = pick(&group, &tried, &breaker_cfg, now, panic) else {
                last.get_or_insert(Failed::Transport(ProxyError::NoHealthyDeployment));
                continue 'chain;
            };
            let cand = &group.candidates[i];
            if rec.outcome.attempts > 0 {
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
                if !cand.state.budget.try_retry(&cfg, now) {
                    tracing::debug!(deployment = %cand.state.name, "retry budget exhausted");
                    continue 'chain;
                }
                let Some(wait) =
                    retry::delay(&cfg, rec.outcome.attempts, asked_wait, random_unit())
                else {
                    continue 'chain;
                };
                if tokio::time::Instant::now() + wait >= call.deadline {
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
            let result = attempt(call, upstream, cand, rec).await;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            let log = |status: u16, outcome: &'static str| AttemptInfo {
                // The model actually sent (the breaker's name for a glob
                // rule is its pattern).
                deployment: if cand.upstream_model.is_empty() {
                    cand.state.name.clone()
                } else {
                    format!("{}/{}", upstream.name, cand.upstream_model)
                },
                status,
                outcome,
                ms: (ms * 1e3).round() / 1e3,
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
                    rec.outcome.attempt_log.push(log(status.as_u16(), outcome));
                    answered_by(rec, upstream, cand, guard);
                    if status == StatusCode::BAD_REQUEST {
                        if let Some(fallback) = &group.context_fallback {
                            let (parts, body) = read_error(resp, upstream.timeouts.idle).await;
                            if is_context_length_error(&body) {
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
                    rec.outcome
                        .attempt_log
                        .push(log(status.as_u16(), "retryable"));
                    asked_wait = retry::retry_after(resp.headers());
                    failed.push(cand.state.name.clone());
                    answered_by(rec, upstream, cand, guard);
                    last = Some(Failed::Status(resp));
                }
                Err(e) if !e.retryable() => return Err(e),
                Err(e) => {
                    if counts(false) {
                        record_breaker(cand, &breaker_cfg, false, permit);
                    }
                    let outcome = match e {
                        ProxyError::UpstreamTimeout { .. } => "timeout",
                        _ => "connect_error",
                    };
                    rec.outcome.attempt_log.push(log(0, outcome));
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
        Some(Failed::Transport(e)) => Err(e),
        None => Err(ProxyError::NoHealthyDeployment),
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
    metrics::circuit(&cand.state.name, cand.state.breaker.state(cfg));
}

/// Notes which deployment answered (the last one tried, so far).
fn answered_by(
    rec: &mut RequestRecord,
    upstream: &Upstream,
    cand: &Candidate,
    guard: InflightGuard,
) {
    rec.outcome.provider = upstream.name.clone();
    rec.outcome.upstream_model = cand.upstream_model.clone();
    rec.holds.inflight = Some(guard);
}

/// The group for a fallback model, if it resolves (and has a deployment the
/// request's credential may go to).
fn fallback_group(call: &Call<'_>, model: &str) -> Option<Group> {
    let route = call
        .snap
        .router
        .resolve(model, call.shape, &call.snap.upstreams)?;
    let group = Group {
        candidates: route.candidates(&call.snap.upstreams, call.registry),
        balance: route.rule.balance,
        tries: 1 + call.snap.config.retry.max_retries,
        context_fallback: None,
    };
    let group = keep_for_credential(group, call.cred, &call.snap.upstreams);
    (!group.candidates.is_empty()).then_some(group)
}

/// One request to one deployment, bounded by the first-byte timeout and the
/// request deadline.
async fn attempt(
    call: &Call<'_>,
    upstream: &Upstream,
    cand: &Candidate,
    rec: &mut RequestRecord,
) -> Result<Response<Incoming>, ProxyError> {
    let req = build_request(call, upstream, cand)?;
    rec.outcome.attempts += 1;
    let sent = Instant::now();
    let first_byte = tokio::time::Instant::now() + upstream.timeouts.first_byte;
    let (limit, phase) = if first_byte < call.deadline {
        (first_byte, "first byte")
    } else {
        (call.deadline, "total")
    };
    rec.outcome.awaiting_upstream = true;
    let result = tokio::time::timeout_at(limit, upstream.client.request(req)).await;
    rec.outcome.awaiting_upstream = false;
    rec.outcome.upstream_wait += sent.elapsed();
    let provider = upstream.name.to_string();
    match result {
        Err(_) => {
            metrics::upstream_attempt(&upstream.name, "timeout");
            Err(ProxyError::UpstreamTimeout { provider, phase })
        }
        Ok(Err(e)) if is_timeout(&e) => {
            metrics::upstream_attempt(&upstream.name, "timeout");
            Err(ProxyError::UpstreamTimeout {
                provider,
                phase: "connect",
            })
        }
        Ok(Err(e)) => {
            metrics::upstream_attempt(&upstream.name, "connect_error");
            Err(ProxyError::UpstreamConnect {
                provider,
                detail: error_chain(&e),
            })
        }
        Ok(Ok(resp)) => {
            let outcome = match resp.status().as_u16() {
                200..=399 => "ok",
                429 => "rate_limited",
                400..=499 => "client_error",
                _ => "server_error",
            };
            metrics::upstream_attempt(&upstream.name, outcome);
            Ok(resp)
        }
    }
}

/// The upstream request for one deployment.
fn build_request(
    call: &Call<'_>,
    upstream: &Upstream,
    cand: &Candidate,
) -> Result<Request<Full<Bytes>>, ProxyError> {
    let uri = upstream
        .uri(call.path_and_query)
        .map_err(|e| ProxyError::Internal(format!("building upstream URL: {e}")))?;
    let body = match call.client_model {
        Some(m) if m != cand.upstream_model => sniff::rewrite(
            call.body.clone(),
            &Rewrite {
                model: Some(cand.upstream_model.clone()),
                ..Rewrite::default()
            },
        )?,
        _ => call.body.clone(),
    };
    let mut headers = upstream_request_headers(call.client_headers);
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
            headers.insert(header.clone(), value.clone());
        }
    }
    if call.endpoint != Endpoint::Other || call.reads_answer {
        // Sluice reads these bodies (usage, errors): ask for them uncompressed.
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    if call.shape == ApiShape::Anthropic && !headers.contains_key("anthropic-version") {
        headers.insert(
            "anthropic-version",
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
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
async fn read_error(
    resp: Response<Incoming>,
    idle: std::time::Duration,
) -> (http::response::Parts, Bytes) {
    let (parts, body) = resp.into_parts();
    let read = tokio::time::timeout(idle, Limited::new(body, MAX_ERROR_BODY).collect()).await;
    let bytes = match read {
        Ok(Ok(c)) => c.to_bytes(),
        _ => Bytes::new(),
    };
    (parts, bytes)
}

/// OpenAI's `context_length_exceeded`, Anthropic's "prompt is too long".
fn is_context_length_error(body: &[u8]) -> bool {
    let find = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    find(b"context_length_exceeded")
        || find(b"prompt is too long")
        || find(b"maximum context length")
}

fn is_timeout(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// The error and its causes, one line (no secrets: these are transport errors).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_length_errors() {
        assert!(is_context_length_error(
            br#"{"error":{"code":"context_length_exceeded","message":"..."}}"#
        ));
        assert!(is_context_length_error(
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 250000 tokens > 200000 maximum"}}"#
        ));
        assert!(!is_context_length_error(
            br#"{"error":{"code":"invalid_value"}}"#
        ));
    }
}
