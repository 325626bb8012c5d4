//! The data-plane request pipeline. Every stage is a plain function in its
//! own module; this file only wires them, in order, in `pipeline`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::json;

use crate::app::{App, Snapshot};
use crate::auth::Credential;
use crate::body::{ProxyBody, TapBody, TapConfig};
use crate::config::TokenLimits;
use crate::error::{ApiShape, ProxyError};
use crate::headers::{client_response_headers, upstream_request_headers, value};
use crate::limits::tokens::{self, Family};
use crate::limits::{self, context, rate, request};
use crate::metrics;
use crate::record::{RequestRecord, StreamEnd};
use crate::sniff::{self, Endpoint, Rewrite, Sniffed};
use crate::stream::observe::{Observed, Observer};
use crate::upstream::Upstream;

/// Anthropic API version sent when a client names none.
const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// What the pipeline produced.
enum Answer {
    /// Answered by Sluice itself.
    Local(Response<ProxyBody>),
    /// An upstream response to stream back through a tap.
    Upstream(Box<UpstreamAnswer>),
}

struct UpstreamAnswer {
    head: http::response::Parts,
    body: Incoming,
    tap: TapConfig,
}

/// Serves one data-plane request. Never fails: errors become responses in
/// the client's API shape, and every request finishes its record.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let snap = app.snapshot();
    let mut rec = RequestRecord::new(app.next_id(), started, app.usage.clone());
    let result = if app.is_shutting_down() {
        Err(ProxyError::ShuttingDown)
    } else {
        pipeline(&app, &snap, req, &mut rec).await
    };

    let id = value(&rec.id);
    let model = (!rec.upstream_model.is_empty()).then(|| value(&rec.upstream_model));
    let provider = (!rec.provider.is_empty()).then(|| value(&rec.provider));
    let attempts = rec.attempts;
    let allowance = rec.admission.as_ref().map(|a| a.allowance);
    let shape = rec.shape;
    let mut resp = match result {
        Ok(Answer::Local(resp)) => {
            rec.status = resp.status().as_u16();
            let len = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
            rec.finish(StreamEnd::Complete, Observed::default(), len);
            resp
        }
        Ok(Answer::Upstream(answer)) => {
            let UpstreamAnswer { head, body, tap } = *answer;
            rec.status = head.status.as_u16();
            let keep_length = !tap.observer.rewrites();
            let mut resp = Response::new(ProxyBody::Tap(Box::new(TapBody::new(body, tap, rec))));
            *resp.status_mut() = head.status;
            *resp.headers_mut() = client_response_headers(&head.headers, keep_length);
            resp
        }
        Err(e) => {
            rec.status = e.status().as_u16();
            rec.error = Some(e.kind());
            if e.origin() != crate::error::Origin::Client {
                tracing::warn!(request_id = %rec.id, error = %e, "request failed");
            }
            let resp = e.into_response(rec.shape);
            let len = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
            rec.finish(StreamEnd::Complete, Observed::default(), len);
            resp
        }
    };
    let h = resp.headers_mut();
    h.insert("x-sluice-request-id", id);
    if let Some(m) = model {
        h.insert("x-sluice-model", m);
    }
    if let Some(p) = provider {
        h.insert("x-sluice-provider", p);
    }
    if attempts > 0 {
        h.insert("x-sluice-attempts", HeaderValue::from(attempts));
    }
    if let Some(a) = allowance {
        limits::headers::allowed(h, &a, shape);
    }
    resp
}

/// The request path, one stage per step.
async fn pipeline(
    app: &App,
    snap: &Snapshot,
    req: Request<Incoming>,
    rec: &mut RequestRecord,
) -> Result<Answer, ProxyError> {
    let (parts, body) = req.into_parts();

    // Which API: the path decides; `/anthropic/v1/...` forces Anthropic, and
    // Anthropic clients identify themselves with `anthropic-version`.
    let full_path = parts.uri.path();
    let (path, forced_anthropic) = match full_path.strip_prefix("/anthropic") {
        Some(rest) if rest.starts_with("/v1/") => (rest, true),
        _ => (full_path, false),
    };
    let anthropic_client = forced_anthropic || parts.headers.contains_key("anthropic-version");
    rec.endpoint = Endpoint::from_path(path);
    rec.shape = rec.endpoint.shape(anthropic_client);
    if !path.starts_with("/v1/") {
        return Err(ProxyError::NotFound(full_path.to_owned()));
    }

    // Who is calling, before any body is read.
    let (cred, identity) = snap.keys.authenticate(&parts.headers)?;
    rec.identity = identity;

    // The body, bounded; sniffed once for what routing and accounting need.
    let body = read_body(body, &parts.headers, snap.config.server.max_body).await?;
    rec.request_bytes = body.len() as u64;
    let sniffed = if rec.endpoint.has_model() && parts.method == Method::POST {
        Some(sniff::sniff(&body)?)
    } else {
        None
    };
    if let Some(s) = &sniffed {
        rec.stream = s.stream;
        rec.model = s.model.clone();
        if snap.config.server.end_user_from_body {
            rec.identity.end_user = s.end_user.clone();
        }
    }

    // Where it goes: the model's route, or the default provider for the API.
    let (upstream, route) = match &sniffed {
        Some(s) => {
            if let Credential::Virtual(vk) = &cred {
                if !vk.allows(&s.model) {
                    return Err(ProxyError::ModelNotAllowed {
                        model: s.model.clone(),
                    });
                }
            }
            let route = snap
                .router
                .resolve(&s.model, rec.shape, &snap.upstreams)
                .ok_or_else(|| ProxyError::UnknownModel {
                    model: s.model.clone(),
                })?;
            (&snap.upstreams[route.provider], Some(route))
        }
        None => {
            if rec.endpoint == Endpoint::Models && parts.method == Method::GET {
                if let Some(list) = model_list(snap, rec.shape, &cred) {
                    return Ok(Answer::Local(list));
                }
            }
            let u = snap
                .upstreams
                .iter()
                .find(|u| u.speaks(rec.shape))
                .ok_or_else(|| ProxyError::NotFound(full_path.to_owned()))?;
            (u, None)
        }
    };
    rec.provider = upstream.name.clone();
    rec.upstream_model = route
        .as_ref()
        .map(|r| r.upstream_model.clone())
        .unwrap_or_default();

    // Token limits: cap the output, bound the input. The input is counted
    // exactly only when the cheap upper bound cannot settle a limit, or a
    // tokens-per-minute limit needs the number.
    let rules = &snap.config.rate_limits;
    let public_model = sniffed.as_ref().map_or("", |s| s.model.as_str());
    let mut plan = None;
    if let (Some(s), Some(r)) = (&sniffed, &route) {
        let family = Family::for_model(&r.upstream_model);
        let key_limits = match &cred {
            Credential::Virtual(vk) => vk.limits,
            Credential::Passthrough { .. } => TokenLimits::default(),
        };
        let p = request::plan(
            snap.config.limits.min(r.limits).min(key_limits),
            r.context_window
                .or_else(|| context::context_window(&r.upstream_model)),
            s.max_output,
            request::output_field(rec.endpoint, s.max_output_field, upstream.kind),
        );
        let must_count = rate::needs_tokens(rules, public_model)
            || p.max_input
                .is_some_and(|(limit, _)| tokens::upper_bound(&body, family) > limit);
        if must_count {
            let n = count_input(rec.endpoint, body.clone(), family).await;
            p.check_input(n)?;
            rec.input_counted = Some(n);
        }
        rec.family = Some(family);
        plan = Some(p);
    }

    // Rate limits: admit under every rule that applies, reserving the input
    // and the output cap; settled with the real usage when the request ends.
    if !rules.is_empty() {
        let reserve = rec.input_counted.unwrap_or(0)
            + plan
                .and_then(|p| p.max_output)
                .unwrap_or(snap.config.output_reserve);
        let subject = rate::Subject {
            identity: &rec.identity,
            model: public_model,
        };
        let admission = app.rate.admit(rules, &subject, reserve).map_err(|r| {
            metrics::rate_limited(&r.rule);
            ProxyError::RateLimited(r)
        })?;
        rec.admission = Some(admission);
    }

    // The body as the upstream must see it: rewritten only if something changes.
    let inject_usage = sniffed
        .as_ref()
        .is_some_and(|s| needs_usage_injection(rec.endpoint, s));
    let rw = Rewrite {
        model: route
            .as_ref()
            .map(|r| r.upstream_model.clone())
            .filter(|m| sniffed.as_ref().is_some_and(|s| &s.model != m)),
        include_usage: inject_usage,
        max_output: plan.and_then(|p| p.output_cap),
    };
    let body = sniff::rewrite(body, &rw)?;
    if rec.endpoint.generates() {
        rec.request_body = Some(body.clone());
    }

    // The upstream request.
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let uri = upstream
        .uri(&path_and_query)
        .map_err(|e| ProxyError::Internal(format!("building upstream URL: {e}")))?;
    let mut headers = upstream_request_headers(&parts.headers);
    match &cred {
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
        }
        Credential::Passthrough { header, value } => {
            headers.insert(header.clone(), value.clone());
        }
    }
    if rec.endpoint != Endpoint::Other {
        // Sluice reads these bodies (usage, errors): ask for them uncompressed.
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    if rec.shape == ApiShape::Anthropic && !headers.contains_key("anthropic-version") {
        headers.insert(
            "anthropic-version",
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
        );
    }
    let mut up_req = Request::new(Full::new(body));
    *up_req.method_mut() = parts.method.clone();
    *up_req.uri_mut() = uri;
    *up_req.headers_mut() = headers;

    // One attempt (retries and fallbacks build on this).
    let deadline = tokio::time::Instant::from_std(rec.started()) + upstream.timeouts.total;
    let resp = send(upstream, up_req, rec, deadline).await?;
    let (head, body) = resp.into_parts();
    let observer = observer_for(rec.endpoint, &head, inject_usage);
    Ok(Answer::Upstream(Box::new(UpstreamAnswer {
        head,
        body,
        tap: TapConfig {
            observer,
            idle: upstream.timeouts.idle,
            deadline,
        },
    })))
}

/// Counts input tokens; large bodies are counted off the async workers.
async fn count_input(endpoint: Endpoint, body: Bytes, family: Family) -> u64 {
    if body.len() < 64 * 1024 {
        return tokens::count_request(endpoint, &body, family);
    }
    tokio::task::spawn_blocking(move || tokens::count_request(endpoint, &body, family))
        .await
        .unwrap_or(0)
}

/// Reads the request body up to `limit` bytes.
async fn read_body(
    body: Incoming,
    headers: &http::HeaderMap,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::BodyTooLarge { limit })
        }
        Err(e) => Err(ProxyError::InvalidRequest(format!(
            "could not read request body: {e}"
        ))),
    }
}

/// OpenAI streams carry usage only when asked; Sluice asks on the client's
/// behalf and removes what the client did not ask for.
fn needs_usage_injection(endpoint: Endpoint, s: &Sniffed) -> bool {
    s.stream
        && !s.include_usage
        && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
}

fn observer_for(endpoint: Endpoint, head: &http::response::Parts, injected: bool) -> Observer {
    let anthropic = endpoint == Endpoint::Messages;
    let content_type = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("text/event-stream") {
        Observer::sse(anthropic, injected)
    } else if endpoint != Endpoint::Other && endpoint != Endpoint::Models {
        Observer::json(anthropic)
    } else {
        Observer::None
    }
}

/// One upstream attempt, bounded by the first-byte timeout and the request
/// deadline.
async fn send(
    upstream: &Upstream,
    req: Request<Full<Bytes>>,
    rec: &mut RequestRecord,
    deadline: tokio::time::Instant,
) -> Result<Response<Incoming>, ProxyError> {
    rec.attempts += 1;
    let sent = Instant::now();
    let first_byte = tokio::time::Instant::now() + upstream.timeouts.first_byte;
    let (limit, phase) = if first_byte < deadline {
        (first_byte, "first byte")
    } else {
        (deadline, "total")
    };
    let result = tokio::time::timeout_at(limit, upstream.client.request(req)).await;
    rec.upstream_wait += sent.elapsed();
    match result {
        Err(_) => {
            metrics::upstream_attempt(&upstream.name, "timeout");
            Err(ProxyError::UpstreamTimeout {
                provider: upstream.name.to_string(),
                phase,
            })
        }
        Ok(Err(e)) => {
            let timed_out = is_timeout(&e);
            metrics::upstream_attempt(
                &upstream.name,
                if timed_out {
                    "timeout"
                } else {
                    "connect_error"
                },
            );
            if timed_out {
                Err(ProxyError::UpstreamTimeout {
                    provider: upstream.name.to_string(),
                    phase: "connect",
                })
            } else {
                Err(ProxyError::UpstreamConnect {
                    provider: upstream.name.to_string(),
                    detail: error_chain(&e),
                })
            }
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

/// `GET /v1/models` answered from the configured public models, when any are
/// listed by exact name; `None` passes the request to the provider.
fn model_list(snap: &Snapshot, shape: ApiShape, cred: &Credential) -> Option<Response<ProxyBody>> {
    let names: Vec<&str> = snap
        .router
        .listed_models()
        .filter(|m| match cred {
            Credential::Virtual(vk) => vk.allows(m),
            Credential::Passthrough { .. } => true,
        })
        .filter(|m| snap.router.resolve(m, shape, &snap.upstreams).is_some())
        .collect();
    if names.is_empty() {
        return None;
    }
    let body = match shape {
        ApiShape::OpenAi => json!({
            "object": "list",
            "data": names.iter().map(|n| json!({"id": n, "object": "model", "created": 0, "owned_by": "sluice"})).collect::<Vec<_>>(),
        }),
        ApiShape::Anthropic => json!({
            "data": names.iter().map(|n| json!({"type": "model", "id": n, "display_name": n, "created_at": "1970-01-01T00:00:00Z"})).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": names.first(),
            "last_id": names.last(),
        }),
    };
    let mut resp = Response::new(ProxyBody::full(body.to_string()));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Some(resp)
}
