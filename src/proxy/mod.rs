//! The data-plane request pipeline. Every stage is a plain function in its
//! own module; this file only wires them, in order, in `pipeline`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::app::{App, Snapshot};
use crate::attempt;
use crate::auth::Credential;
use crate::body::{ProxyBody, TapBody, TapConfig};
use crate::budget;
use crate::cache;
use crate::config::TokenLimits;
use crate::error::ProxyError;
use crate::headers::{client_response_headers, value};
use crate::limits::tokens::{self, Family};
use crate::limits::{self, context, rate, request};
use crate::metrics;
use crate::ownership;
use crate::path;
use crate::record::{RequestRecord, StreamEnd};
use crate::sniff::{self, Endpoint, Rewrite};
use crate::stream::observe::Observed;

mod answer;
mod cache_stage;
mod cost;
mod stages;

use answer::{cache_hit, model_list, owned_answer, upstream_answer};
use stages::{
    add_breakpoints, admit, choose_tier, count_input, deadline, needs_usage_injection,
    owned_passthrough, passthrough_allowed, passthrough_group, read_body, stored_ids,
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
    body: Incoming,
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
    let result = if app.is_shutting_down() {
        Err(ProxyError::ShuttingDown)
    } else {
        pipeline(&app, &snap, req, &mut rec).await
    };

    let id = value(&rec.id);
    let model = (!rec.upstream.model.is_empty()).then(|| value(&rec.upstream.model));
    let provider = (!rec.upstream.provider.is_empty()).then(|| value(&rec.upstream.provider));
    let attempts = rec.upstream.attempts;
    let allowance = rec.admission.as_ref().map(|a| a.allowance);
    let budget_left = rec.budget.as_ref().and_then(|b| b.remaining);
    let cache_state = rec.cache;
    let has_model = rec.endpoint.has_model();
    if !rec.upstream.model.is_empty() {
        rec.price = snap.config.prices.get(&rec.upstream.model);
    }
    let shape = rec.shape;
    let mut resp = match result {
        Ok(Answer::Local(mut resp, observed)) => {
            rec.status = resp.status().as_u16();
            if let Some(cost) = rec.cost_of(&observed) {
                let usd = format!("{:.9}", crate::pricing::nanos_to_usd(cost));
                resp.headers_mut().insert("x-sluice-cost-usd", value(&usd));
            }
            let len = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
            rec.finish(StreamEnd::Complete, *observed, len);
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
            let resp = e.into_response(rec.shape).map(ProxyBody::full);
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
    if has_model {
        h.insert("x-sluice-cache", HeaderValue::from_static(cache_state));
    }
    if let Some(left) = budget_left {
        let usd = format!("{:.6}", crate::pricing::nanos_to_usd(left));
        h.insert("x-sluice-budget-remaining-usd", value(&usd));
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

    // Which API: the normalised path decides (an odd spelling of an API path
    // is refused, never passed through); `/anthropic/v1/...` forces
    // Anthropic, and Anthropic clients identify themselves with
    // `anthropic-version`.
    let anthropic_client = parts.headers.contains_key("anthropic-version")
        || parts.uri.path().starts_with("/anthropic/");
    rec.shape = Endpoint::Other.shape(anthropic_client);
    let target = path::classify(parts.uri.path(), &parts.method)?;
    rec.endpoint = target.endpoint;
    rec.shape = rec
        .endpoint
        .shape(anthropic_client || target.anthropic_prefix);
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{}?{q}", target.path),
        None => target.path.clone(),
    };

    // Who is calling, before any body is read.
    let (cred, identity) = snap.keys.authenticate(&parts.headers)?;
    rec.identity = identity;

    // The body, bounded; sniffed once for what routing and accounting need.
    let body = read_body(body, &parts.headers, &snap.config.server).await?;
    rec.request_bytes = body.len() as u64;
    let sniffed = if rec.endpoint.has_model() {
        Some(sniff::sniff(&body, rec.endpoint)?)
    } else {
        None
    };
    let mut call = attempt::Call {
        snap,
        registry: &app.deployments,
        method: &parts.method,
        path_and_query: &path_and_query,
        client_headers: &parts.headers,
        cred: &cred,
        body: Bytes::new(),
        client_model: None,
        endpoint: rec.endpoint,
        shape: rec.shape,
        deadline: tokio::time::Instant::now(),
        reads_answer: false,
    };
    let Some(s) = sniffed else {
        // No model: `GET /v1/models` from config, or a passthrough path.
        if rec.endpoint == Endpoint::Models {
            if let Some(list) = model_list(snap, rec.shape, &cred) {
                return Ok(Answer::Local(list, Box::default()));
            }
        }
        if let Some(family) = target.family {
            passthrough_allowed(snap, &cred, family, &body)?;
        }
        // Ownership: a virtual key reaches only the objects it created, and
        // never lists a family (the provider's list holds every key's).
        let owner = owned_passthrough(app, &cred, &target.path, &parts, &body)?;
        let group = passthrough_group(snap, &app.deployments, rec.shape, &cred)
            .ok_or_else(|| ProxyError::NotFound(target.path.clone()))?;
        admit(app, snap, rec, "", 0)?;
        call.body = body;
        call.deadline = deadline(rec, snap, &group);
        let owner = owner.filter(|_| ownership::records_answer(&target.path, &parts.method));
        call.reads_answer = owner.is_some();
        let mut answer = attempt::run(&call, VecDeque::from([group]), &mut rec.upstream).await?;
        if let Some(key) = owner {
            answer = owned_answer(answer, rec, &app.owners, &key).await?;
        }
        return upstream_answer(answer, rec, snap, false, None).await;
    };
    rec.stream = s.stream;
    rec.model = s.model.clone();
    if snap.config.server.end_user_from_body {
        rec.identity.end_user = s.end_user.clone();
    }
    let vk = match &cred {
        Credential::Virtual(vk) => Some(vk.as_ref()),
        Credential::Passthrough { .. } => None,
    };
    // The allow-list holds for the model asked for; for a routing model
    // (e.g. `auto`), for the model it routes to.
    let routing_model = snap.router.tier(&s.model);
    if routing_model.is_none() && vk.is_some_and(|k| !k.allows(&s.model)) {
        return Err(ProxyError::ModelNotAllowed {
            model: s.model.clone(),
        });
    }
    // Objects the body references (`previous_response_id`, a `file_id`
    // part) must be the key's own; a stored answer becomes the key's.
    let ids = match vk {
        Some(k) => stored_ids(app, k, rec.endpoint, &body)?,
        None => None,
    };

    // Tier routing: a routing model (e.g. `auto`) picks the model to use.
    // Header rules count only where identity headers are trusted, or the key
    // is allowed to choose its tier.
    let mut counted: Option<(Family, u64)> = None;
    let no_headers = http::HeaderMap::new();
    let tier_headers = if snap.keys.trusts_headers() || vk.is_some_and(|k| k.tier_headers) {
        &parts.headers
    } else {
        &no_headers
    };
    let target_model = match routing_model {
        None => s.model.clone(),
        Some(tier) => {
            let chosen = choose_tier(
                snap,
                tier,
                &cred,
                tier_headers,
                rec,
                &body,
                &s,
                &mut counted,
            );
            rec.routed_to = Some(chosen.clone());
            chosen
        }
    };

    // Budgets past a downgrade threshold send the request to a cheaper
    // model, when the key may use it.
    let budgets = &snap.config.budgets;
    let target_model = {
        let subject = rate::Subject {
            identity: &rec.identity,
            model: &s.model,
        };
        match app.ledger.downgrade(budgets, &subject) {
            Some(cheaper) if cheaper != target_model && vk.is_none_or(|k| k.allows(&cheaper)) => {
                tracing::debug!(from = %target_model, to = %cheaper, "budget downgrade");
                rec.routed_to = Some(cheaper.clone());
                cheaper
            }
            _ => target_model,
        }
    };
    // The allow-list holds for the model the request is routed to.
    if vk.is_some_and(|k| !k.allows(&target_model)) {
        return Err(ProxyError::ModelNotAllowed {
            model: target_model,
        });
    }

    // Where it goes: the model's route; its deployments and fallbacks.
    let route = snap
        .router
        .resolve(&target_model, rec.shape, &snap.upstreams)
        .ok_or_else(|| ProxyError::UnknownModel {
            model: target_model.clone(),
        })?;
    let upstream = &snap.upstreams[route.provider];
    rec.upstream.provider = upstream.name.clone();
    rec.upstream.model = route.upstream_model.clone();

    // Token limits: cap the output, bound the input. The input is counted
    // exactly only when the cheap upper bound cannot settle a limit, or a
    // tokens-per-minute limit or a price needs the number.
    let family = Family::for_model(&route.upstream_model);
    let key_limits = vk.map_or(TokenLimits::default(), |k| k.limits);
    let token_limits = snap.config.limits.min(route.limits).min(key_limits);
    let context_window = route
        .context_window
        .or_else(|| context::context_window(&route.upstream_model));
    let field = request::output_field(rec.endpoint, s.max_output_field, upstream.kind);
    let plan = request::plan(token_limits, context_window, s.max_output, field);
    plan.check_output(context_window)?;
    let priced = snap.config.max_request_cost.is_some() || budget::applies_any(budgets, &s.model);
    // Only the context window asks, for a long prompt: count beside the
    // upstream request instead of before it (see `with_context_check`).
    let bound = tokens::upper_bound(&body, family);
    let must_count = priced
        || rate::needs_tokens(&snap.config.rate_limits, &s.model)
        || token_limits.max_input.is_some_and(|limit| bound > limit);
    let window_check = plan.max_input.is_some_and(|(limit, _)| bound > limit);
    let mut deferred_count = None;
    if must_count || (window_check && body.len() < CONCURRENT_COUNT_MIN) {
        let n = match counted {
            Some((f, n)) if f == family => n,
            _ => count_input(rec.endpoint, body.clone(), family).await?,
        };
        plan.check_input(n)?;
        rec.input_counted = Some(n);
    } else if window_check {
        let (b, endpoint) = (body.clone(), rec.endpoint);
        deferred_count = Some(tokio::task::spawn_blocking(move || {
            tokens::count_request(endpoint, &b, family)
        }));
    }
    rec.family = Some(family);

    // The output cap the request is sent with and its worst-case cost
    // (every choice at its whole cap).
    let input = rec.input_counted.unwrap_or(0);
    let priced = if priced {
        let price = snap
            .config
            .prices
            .get(&route.upstream_model)
            .ok_or_else(|| ProxyError::ModelNotPriced {
                model: route.upstream_model.clone(),
            })?;
        Some(cost::price(
            &plan,
            &price,
            cost::Ask {
                input,
                choices: s.choices,
                field,
                generates: rec.endpoint.generates(),
                output_reserve: snap.config.output_reserve,
                cost_cap: snap.config.max_request_cost,
            },
        )?)
    } else {
        None
    };
    let output_cap = priced.map_or(plan.output_cap, |p| p.output_cap);
    let max_output = priced.and_then(|p| p.max_output).or(plan.max_output);

    // The body as every deployment must see it (the model name is set per
    // deployment); rewritten only if something changes. Built before the
    // cache step: the cache key is the body as sent.
    let inject_usage = needs_usage_injection(rec.endpoint, &s);
    let body = sniff::rewrite(
        body,
        &Rewrite {
            model: None,
            include_usage: inject_usage,
            max_output: output_cap,
        },
    )?;
    // Provider prompt caching: breakpoints on long stable Anthropic prefixes.
    let cache_cfg = &snap.config.cache;
    let body = if cache_cfg.anthropic_breakpoints && rec.endpoint == Endpoint::Messages {
        add_breakpoints(body, cache_cfg.breakpoint_min_tokens, rec)?
    } else {
        body
    };

    // Attempts: deployments, retries and fallbacks. A client's own key only
    // goes to providers that take client keys.
    let upstream_model = route.upstream_model.clone();
    let groups: VecDeque<attempt::Group> = snap
        .router
        .chain(route, rec.shape, &snap.upstreams)
        .into_iter()
        .map(|r| attempt::Group {
            candidates: r.candidates(&snap.upstreams, &app.deployments),
            balance: r.rule.balance,
            tries: 1 + snap.config.retry.max_retries,
            context_fallback: r.rule.context_fallback.clone(),
        })
        .map(|g| attempt::keep_for_credential(g, &cred, &snap.upstreams))
        .filter(|g| !g.candidates.is_empty())
        .collect();
    let Some(first) = groups.front() else {
        return Err(ProxyError::Forbidden(format!(
            "model {upstream_model:?} is served only by providers that do not accept client \
             keys; use a virtual key"
        )));
    };
    call.deadline = deadline(rec, snap, first);

    // Cache: identical requests are answered from memory (a hit costs
    // nothing against rate limits and budgets); identical concurrent misses
    // go upstream once while the others wait for that answer.
    let timeouts = upstream.timeouts;
    let step = cache_stage::lookup(
        app,
        cache_stage::Lookup {
            cfg: cache_cfg,
            endpoint: rec.endpoint,
            sniffed: &s,
            headers: &parts.headers,
            tenant: cache::tenant::tenant(
                cache_cfg.scope,
                &rec.identity,
                matches!(cred, Credential::Passthrough { .. }),
            ),
            upstream_model: &upstream_model,
            body: &body,
            patience: cache::Patience {
                first: timeouts.first_byte,
                idle: timeouts.idle,
                deadline: rec.deadline,
            },
        },
    )
    .await;
    match step {
        cache_stage::Step::Bypass => {}
        cache_stage::Step::Hit(hit) => {
            rec.cache = "miss";
            if let Some(answer) = cache_hit(&hit, &s, rec) {
                return Ok(answer);
            }
        }
        cache_stage::Step::Miss { lead } => {
            rec.cache = "miss";
            if let Some(l) = lead {
                rec.capture = Some(cache::Capture::new(
                    app.cache.clone(),
                    l.key,
                    l.leader,
                    rec.endpoint,
                    l.tenant,
                    upstream_model.clone(),
                    l.ttl,
                    cache_cfg.max_entry_bytes,
                ));
            }
        }
    }

    // Rate limits: admit under every rule that applies, reserving the input
    // and every choice's output cap; settled with the real usage at the end.
    let reserve = input.saturating_add(
        max_output
            .unwrap_or(snap.config.output_reserve)
            .saturating_mul(s.choices),
    );
    admit(app, snap, rec, &s.model, reserve)?;

    // Budgets: the worst case is reserved at every budget that applies, all
    // or nothing.
    if let Some(p) = priced {
        let subject = rate::Subject {
            identity: &rec.identity,
            model: &s.model,
        };
        let hold = app
            .ledger
            .reserve(budgets, &subject, p.worst)
            .map_err(|e| {
                metrics::budget_rejected(&e.budget);
                ProxyError::BudgetExhausted(e)
            })?;
        rec.budget = Some(hold);
    }

    if rec.endpoint.generates() {
        rec.request_body = Some(body.clone());
    }
    call.body = body;
    call.client_model = Some(&s.model);
    let run = attempt::run(&call, groups, &mut rec.upstream);
    let answer = match deferred_count {
        None => run.await?,
        Some(count) => with_context_check(run, count, &plan).await?,
    };
    upstream_answer(answer, rec, snap, inject_usage, ids).await
}

/// Bodies below this size are counted before sending (well under a
/// millisecond); larger ones, when only the context window needs the count,
/// are counted beside the upstream request.
const CONCURRENT_COUNT_MIN: usize = 64 * 1024;

/// Runs the attempts while the input is counted. If the count finishes first
/// and is over the context window, the request is refused with the usual 400
/// and the upstream request is dropped (cancelled); if the provider answers
/// first, its answer stands — it enforces its own window. Real providers
/// take far longer than the count to answer a long prompt, so the check still
/// fails fast, without adding the count's milliseconds to every long request.
async fn with_context_check(
    run: impl std::future::Future<Output = Result<attempt::Answered, ProxyError>>,
    count: tokio::task::JoinHandle<Result<u64, ProxyError>>,
    plan: &request::Plan,
) -> Result<attempt::Answered, ProxyError> {
    tokio::pin!(run);
    tokio::select! {
        biased;
        answered = &mut run => answered,
        counted = count => {
            // A count that fails (unreadable input, a panicked task) fails
            // the request closed.
            let n = counted
                .map_err(|e| ProxyError::Internal(format!("token counting failed: {e}")))??;
            plan.check_input(n)?;
            run.await
        }
    }
}
