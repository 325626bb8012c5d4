//! The data-plane request pipeline. Every stage is a plain function in its
//! own module; this file only wires them, in order, in `pipeline`.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::app::{App, Snapshot};
use crate::attempt;
use crate::body::{ProxyBody, TapConfig};
use crate::error::ProxyError;
use crate::headers::{client_response_headers, names, value};
use crate::limits;
use crate::limits::tokens::Family;
use crate::record::{RequestRecord, StreamEnd};
use crate::sniff;
use crate::stream::observe::Observed;

mod answer;
mod bedrock;
mod cache_stage;
mod cost;
mod count;
mod crossed;
mod faults;
mod holds;
mod loops;
mod model;
mod models;
mod passthrough;
mod semantic;
mod shadow;
mod stages;

use answer::upstream_answer;
use cache_stage::serve as cache_lookup;
use cost::Ask;
use stages::{
    arm_capture, attempt_groups, classify, needs_usage_injection, note_sniffed, price, read_body,
    rewrite, stored_ids, token_plan, tokens_out, Asked,
};

/// What the pipeline produced.
enum Answer {
    /// A complete response (Sluice's own, or an upstream body read in full),
    /// with what was learned from it.
    Local(Response<ProxyBody>, Box<Observed>),
    /// An upstream response to stream back through a tap.
    Upstream(Box<UpstreamAnswer>),
}

struct UpstreamAnswer {
    head: http::response::Parts,
    body: crate::upstream::pool::Body,
    tap: TapConfig,
}

/// Serves one data-plane request. Never fails: errors become responses in
/// the client's API shape, and every request finishes its record.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let snap = app.snapshot();
    let mut rec = RequestRecord::new(app.next_id(), started, app.usage.clone());
    rec.snap = Some(snap.clone());
    rec.ledger = Some(app.ledger.clone());
    // The request span (continuing the client's traceparent); nothing but
    // the client's trace id when tracing is off.
    rec.trace = crate::telemetry::RequestTrace::start(
        app.tracing.as_deref(),
        req.method(),
        req.headers(),
        &rec.facts.id,
    );
    let result = if app.is_shutting_down() {
        Err(ProxyError::ShuttingDown)
    } else {
        // Boxed: this future is moved a few times before it first runs
        // (see `future_sizes`), and the pipeline's is the bulk of it.
        Box::pin(pipeline(&app, &snap, req, &mut rec)).await
    };

    let id = value(&rec.facts.id);
    let model =
        (!rec.outcome.upstream.model.is_empty()).then(|| value(&rec.outcome.upstream.model));
    let provider =
        (!rec.outcome.upstream.provider.is_empty()).then(|| value(&rec.outcome.upstream.provider));
    let attempts = rec.outcome.upstream.attempts;
    let allowance = rec.holds.admission.as_ref().map(|a| a.allowance);
    let (allowance, budget_left) = match &rec.holds.fleet {
        Some(f) => (Some(f.allowance), f.remaining),
        None => (
            allowance,
            rec.holds.budget.as_ref().and_then(|b| b.remaining),
        ),
    };
    let cache_state = rec.outcome.cache;
    let arm = rec
        .facts
        .arm
        .as_ref()
        .map(|p| (value(&p.experiment), value(&p.arm)));
    let has_model = rec.facts.endpoint.has_model();
    let shape = rec.facts.shape;
    let stream_fault = rec.facts.stream_fault;
    let resp = match result {
        Ok(Answer::Local(mut resp, observed)) => {
            rec.outcome.status = resp.status().as_u16();
            if resp
                .extensions()
                .get::<crate::body::ResetConnection>()
                .is_some()
            {
                // The client gets no answer at all.
                rec.outcome.status = 0;
            }
            if let Some(cost) = rec.cost_of(&observed) {
                let usd = crate::pricing::usd_text(cost, 9);
                resp.headers_mut().insert(names::COST_USD, value(&usd));
            }
            let len = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
            tee_local(&mut rec, resp.body());
            rec.finish(StreamEnd::Complete, *observed, len);
            resp
        }
        Ok(Answer::Upstream(answer)) => {
            let UpstreamAnswer { head, body, tap } = *answer;
            rec.outcome.status = head.status.as_u16();
            let keep_length =
                !tap.observer.rewrites() && tap.translator.is_none() && tap.decoder.is_none();
            let mut resp = Response::new(ProxyBody::tap(body, tap, rec));
            *resp.status_mut() = head.status;
            *resp.headers_mut() = client_response_headers(head.headers, keep_length);
            resp
        }
        Err(e) => {
            rec.outcome.status = e.status().as_u16();
            rec.outcome.error = Some(e.kind());
            if e.origin() != crate::error::Origin::Client {
                let trace_id = rec.trace.trace_id();
                tracing::warn!(request_id = %rec.facts.id, trace_id, error = %e, "request failed");
            }
            let resp = e.into_response(rec.facts.shape).map(ProxyBody::full);
            let len = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
            tee_local(&mut rec, resp.body());
            rec.finish(StreamEnd::Complete, Observed::default(), len);
            resp
        }
    };
    let mut resp = faults::spoil(resp, stream_fault);
    let h = resp.headers_mut();
    h.insert(names::REQUEST_ID, id);
    if let Some(m) = model {
        h.insert(names::MODEL, m);
    }
    if let Some(p) = provider {
        h.insert(names::PROVIDER, p);
    }
    if let Some((experiment, arm)) = arm {
        h.insert(names::EXPERIMENT, experiment);
        h.insert(names::ARM, arm);
    }
    if attempts > 0 {
        h.insert(names::ATTEMPTS, crate::headers::count(attempts));
    }
    if let Some(a) = allowance {
        limits::headers::allowed(h, &a, shape);
    }
    if has_model {
        h.insert(names::CACHE, HeaderValue::from_static(cache_state.label()));
    }
    if let Some(left) = budget_left {
        let usd = crate::pricing::usd_text(left, 6);
        h.insert(names::BUDGET_REMAINING_USD, value(&usd));
    }
    resp
}

/// A complete answer's bytes, for `[capture]` (streamed ones are teed by
/// the tap as they pass).
fn tee_local(rec: &mut RequestRecord, body: &ProxyBody) {
    if rec.facts.capture.is_none() {
        return;
    }
    match body {
        ProxyBody::Full(Some(b)) => rec.tee(b),
        ProxyBody::Frames(frames) => frames.iter().for_each(|f| rec.tee(f)),
        _ => {}
    }
}

/// Refuses a request whose key or feature a kill switch turned off.
fn not_killed(app: &App, snap: &Snapshot, rec: &RequestRecord) -> Result<(), ProxyError> {
    let switches = &snap.config.kill_switches;
    let Some(k) = app.kills.for_identity(switches, &rec.facts.identity) else {
        return Ok(());
    };
    crate::metrics::killed(k.target.label());
    Err(ProxyError::Disabled {
        kind: k.target.label(),
        value: k.target.value().to_owned(),
        reason: k.reason,
    })
}

/// `[runs]`: counts this request in its run, or refuses a run past a total.
fn runs_admit(app: &App, snap: &Snapshot, rec: &mut RequestRecord) -> Result<(), ProxyError> {
    let (Some(cfg), Some(run)) = (&snap.config.runs, &rec.facts.identity.run) else {
        return Ok(());
    };
    let now = Instant::now();
    match app
        .runs
        .admit(run, now, cfg.max_requests, cfg.max_tokens, cfg.idle_expiry)
    {
        Ok(true) => {
            rec.holds.run = Some(app.runs.clone());
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(over) => {
            let (what, limit) = match over {
                limits::runs::Over::Requests(n) => ("requests", n),
                limits::runs::Over::Tokens(n) => ("tokens", n),
            };
            crate::metrics::run_limited(what);
            Err(ProxyError::RunLimit { what, limit })
        }
    }
}

/// The request path, one line per stage. Each stage is a plain function of
/// what the earlier ones produced; what it learns goes into `rec.facts`, what
/// it reserves into `rec.holds` (released when the record finishes).
async fn pipeline(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    req: Request<Incoming>,
    rec: &mut RequestRecord,
) -> Result<Answer, ProxyError> {
    let (parts, body) = req.into_parts();
    // Which API: the normalised path decides (an odd spelling of an API path
    // is refused, never passed through).
    let target = classify(&parts, rec)?;
    // Who is calling, before any body is read.
    let (cred, identity) = snap.keys.authenticate(&parts.headers, &app.issued_keys)?;
    rec.facts.identity = identity;
    rec.facts.identity.run =
        crate::auth::run_id(&parts.headers, snap.config.server.run_from_traceparent)?;
    // A key or feature turned off by a kill switch goes no further.
    not_killed(app, snap, rec)?;
    // An agent run past its totals goes no further.
    runs_admit(app, snap, rec)?;
    // The body, bounded in size and time.
    let body = read_body(body, &parts.headers, &snap.config.server).await?;
    rec.facts.request_bytes = body.len() as u64;
    // Paths naming no model: families, ownership, one provider, once.
    if !rec.facts.endpoint.has_model() {
        let p = passthrough::serve(app, snap, &parts, &target, &cred, body, rec);
        return Box::pin(p).await;
    }
    // Sniffed once (duplicate keys refused) for what routing and accounting need.
    let s = sniff::sniff(&body, rec.facts.endpoint)?;
    note_sniffed(rec, snap, &s);
    let path_and_query = target.path_and_query(parts.uri.query());
    // Capture sees the body as the client sent it.
    arm_capture(app, snap, &parts, &path_and_query, &s.model, &body, rec);
    let vk = cred.virtual_key();
    model::check_asked(snap, vk, &s)?;
    // The same request again and again from one run (or key, or user) is a loop.
    loops::check(app, snap, rec, &body)?;
    // Objects the body references must be the key's own; a stored answer becomes the key's.
    let ids = vk
        .map(|k| stored_ids(app, k, rec.facts.endpoint, &body))
        .transpose()?
        .flatten();
    // Tier routing and budget downgrades pick the model; the allow-list holds for it.
    let chosen = model::choose(app, snap, &cred, &parts.headers, &body, &s, rec)?;
    // An experiment arm's parameters and system prefix (sniffed again: limits see the body sent).
    let (body, s) = model::arm_overrides(snap, chosen.arm, body, s, rec.facts.endpoint)?;
    // The request as the cache, shadows and attempts see it (the body goes on its own).
    let asked = Asked {
        parts: &parts,
        path_and_query: &path_and_query,
        cred: &cred,
        s: &s,
    };
    // Where it goes: the model's route (first deployment: limits, tokenizer).
    // (A model only the other API serves is reached by translating the request.)
    let route = stages::route(snap, &chosen.model, rec)?;
    let upstream = &snap.upstreams[route.provider];
    // Chaos: an injected failure at the client's edge answers here (before
    // the cache, limits and budgets); an upstream one goes to the attempts.
    let chaos = faults::pick(app, snap, &parts.headers, rec, &route.upstream_model).await;
    if let Some(answer) = chaos.answer {
        return Ok(answer);
    }
    // Token limits: cap the output, bound the input (counted only when the bound cannot decide).
    let tokens = token_plan(snap, vk, &route, upstream.kind, rec.facts.endpoint, &s)?;
    let anthropic = upstream.kind.is_anthropic_shaped();
    let family = Family::for_upstream(&route.upstream_model, anthropic);
    rec.facts.family = Some(family);
    let mut input = count::Input::new(rec.facts.endpoint, family, body.clone(), chosen.counted);
    let deferred_count = input
        .check(&tokens.plan, tokens.configured_max_input)
        .await?;
    // The output cap sent and the worst-case cost (every choice at its whole cap).
    let priced = price(snap, &route.upstream_model, &s, &tokens, rec, &mut input).await?;
    // The body as every deployment sees it (the cache key is this body).
    let inject_usage = needs_usage_injection(rec.facts.endpoint, &s);
    let body = rewrite(snap, body, &tokens, priced.as_ref(), inject_usage, rec)?;
    // Attempt groups: deployments, retries, fallbacks; client keys only where taken.
    let groups = attempt_groups(app, snap, route, &cred, rec, (&body, s.include_usage))?;
    // The whole request's deadline, before anything waits on it.
    let deadline = stages::deadline(rec, snap, &groups[0]);
    // Cache: a hit is served now; identical concurrent misses go upstream once.
    // (Boxed, like the attempts below: a large future held inline would make
    // the request's own future larger, and it is moved several times.)
    if cache_stage::configured(snap) {
        let lookup = cache_lookup(app, snap, &asked, &body, upstream.timeouts, rec);
        if let Some(answer) = Box::pin(lookup).await {
            return Ok(answer);
        }
    }
    // Rate limits: a slot under every rule, reserving input plus every choice's output cap;
    let output = tokens_out(snap, &tokens, priced.as_ref(), &s);
    let reserve = |n: u64| n.saturating_add(output);
    // Budgets: the worst case at every budget that applies, all or nothing.
    let worst = priced.as_ref().map(|p| {
        let plan = &tokens.plan;
        move |n| cost::price(plan, &p.price, Ask { input: n, ..p.ask }).map(|p| p.worst)
    });
    holds::take(app, snap, rec, &s.model, Some(&mut input), reserve, worst).await?;
    rec.facts.input_counted = input.exact();
    if rec.facts.endpoint.generates() {
        rec.facts.request_body = Some(body.clone());
    }
    // A shadow copy, in a task of its own (bounded: dropped when its slots are full).
    shadow::mirror(app, snap, &asked, &body, rec);
    // The attempts, while a long prompt is counted against the context window beside them.
    let call = attempt::Call {
        snap,
        registry: &app.deployments,
        method: &parts.method,
        path_and_query: &path_and_query,
        client_headers: &parts.headers,
        cred: &cred,
        body,
        client_model: Some(&s.model),
        endpoint: rec.facts.endpoint,
        shape: rec.facts.shape,
        deadline,
        reads_answer: false,
        fault: chaos.upstream,
        trace: &rec.trace,
        include_usage: s.include_usage,
    };
    let run = attempt::run(&call, groups, &mut rec.outcome.upstream);
    let answer = match deferred_count {
        None => Box::pin(run).await?,
        // (The check holds `run` twice over: only where a count runs beside it.)
        Some(count) => Box::pin(count::with_context_check(run, count, &tokens.plan)).await?,
    };
    Box::pin(upstream_answer(answer, rec, snap, inject_usage, ids)).await
}

#[cfg(test)]
mod future_sizes {
    /// The size of what an async fn returns, without calling it.
    fn size<F, A, B, R>(_: &F) -> usize
    where
        F: Fn(A, B) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// A request's future is moved a few times before it runs (into the
    /// connection's service future, then into hyper's slot for it), and
    /// each move copies all of it: the pipeline and its large stages (the
    /// attempts, the cache step, the answer) are boxed so it stays small.
    /// It was 13 KB (debug build; 10.9 KB release) with them inline; what
    /// is left is mostly the request's record.
    #[test]
    fn a_request_future_stays_small() {
        let bytes = size(&super::handle);
        assert!(bytes <= 3 * 1024, "proxy::handle's future is {bytes} bytes");
    }
}
