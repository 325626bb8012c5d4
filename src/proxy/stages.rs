//! The plain steps the pipeline wires: reading the body, counting tokens,
//! admission under rate limits, tier routing, prompt-cache breakpoints,
//! object ownership.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::app::{App, Snapshot};
use crate::attempt;
use crate::auth::{Credential, VirtualKey};
use crate::cache;
use crate::config::{ProviderKind, ServerConfig, TokenLimits};
use crate::error::{ApiShape, ProxyError};
use crate::limits::context;
use crate::limits::request::{self, Plan};
use crate::limits::tokens::{self, Family};
use crate::ownership::{self, IdSink};
use crate::path::Family as PathFamily;
use crate::pricing::Price;
use crate::protocol::Protocol;
use crate::record::RequestRecord;
use crate::resilience::balance::Candidate;
use crate::resilience::Deployments;
use crate::route::tier::{self, TierInput};
use crate::route::Route;
use crate::sniff::{self, Endpoint, Rewrite, Sniffed};

use super::cost::{self, Ask};
use super::count::Input;

/// The client's request as the stages after routing see it: its head, the
/// path it asked for, who sent it and what was sniffed from it. (The body
/// goes on its own: stages rewrite it.)
pub(super) struct Asked<'a> {
    pub parts: &'a http::request::Parts,
    /// The normalised path and the query.
    pub path_and_query: &'a str,
    pub cred: &'a Credential,
    pub s: &'a Sniffed,
}

/// The model's route, named in the record as the provider and model it
/// goes to (until an attempt says otherwise).
pub(super) fn route<'s>(
    snap: &'s Snapshot,
    model: &str,
    rec: &mut RequestRecord,
) -> Result<Route<'s>, ProxyError> {
    let cross = rec.facts.endpoint.crosses();
    let route = snap
        .router
        .resolve_across(model, rec.facts.shape, cross, &snap.upstreams)
        .ok_or_else(|| ProxyError::UnknownModel {
            model: model.to_owned(),
        })?;
    rec.outcome.upstream.provider = snap.upstreams[route.provider].name.clone();
    rec.outcome.upstream.model = route.upstream_model.clone();
    Ok(route)
}

/// Arms capture, with the client's body as it came, when a rule or an admin
/// trigger may want this request.
pub(super) fn arm_capture(
    app: &App,
    snap: &Snapshot,
    parts: &http::request::Parts,
    path_and_query: &str,
    model: &str,
    body: &Bytes,
    rec: &mut RequestRecord,
) {
    if snap.config.capture.is_some() {
        rec.facts.capture = app.capture.arm(
            snap.config.capture.as_ref(),
            &rec.facts.identity,
            model,
            &parts.method,
            path_and_query,
            &parts.headers,
            body,
        );
    }
}

/// The whole request's deadline: the first deployment's total timeout.
pub(super) fn deadline(
    rec: &mut RequestRecord,
    snap: &Snapshot,
    group: &attempt::Group,
) -> tokio::time::Instant {
    let total = group
        .candidates
        .first()
        .and_then(|c| snap.upstreams.get(c.provider))
        .map_or(Duration::from_secs(900), |u| u.timeouts.total);
    rec.facts.deadline = tokio::time::Instant::from_std(rec.started()) + total;
    rec.facts.deadline
}

/// Adds Anthropic prompt-cache breakpoints; the body is re-encoded only when
/// one was added.
pub(super) fn add_breakpoints(
    body: Bytes,
    min_tokens: u64,
    rec: &mut RequestRecord,
) -> Result<Bytes, ProxyError> {
    if crate::find::find!(&body, b"cache_control").is_some() {
        return Ok(body);
    }
    let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_slice(&body) else {
        return Ok(body);
    };
    let added = cache::prompt::add_breakpoints(&mut obj, min_tokens);
    if added == 0 {
        return Ok(body);
    }
    rec.facts.breakpoints = added as u32;
    serde_json::to_vec(&obj)
        .map(Bytes::from)
        .map_err(|e| ProxyError::Internal(format!("re-encoding request body: {e}")))
}

/// Runs a routing model's tier rules.
#[expect(
    clippy::too_many_arguments,
    reason = "the tier inputs come from several pipeline stages"
)]
pub(super) fn choose_tier(
    snap: &Snapshot,
    tier: &crate::config::TierRoute,
    cred: &Credential,
    headers: &http::HeaderMap,
    rec: &RequestRecord,
    body: &Bytes,
    s: &Sniffed,
    counted: &mut Option<(Family, u64)>,
) -> String {
    // Input size for tier rules is counted with the default model's tokenizer.
    let family = snap
        .router
        .resolve_across(
            &tier.default,
            rec.facts.shape,
            rec.facts.endpoint.crosses(),
            &snap.upstreams,
        )
        .map_or(Family::O200k, |r| {
            let anthropic = snap
                .upstreams
                .get(r.provider)
                .is_some_and(|u| u.kind.is_anthropic_shaped());
            Family::for_upstream(&r.upstream_model, anthropic)
        });
    let endpoint = rec.facts.endpoint;
    let mut count = || {
        let n = tokens::count_or_bound(endpoint, body, family);
        *counted = Some((family, n));
        n
    };
    let key_tier = match cred {
        Credential::Virtual(vk) => vk.tier.as_deref(),
        Credential::Passthrough { .. } => None,
    };
    let mut input = TierInput {
        headers,
        feature: rec.facts.identity.feature.as_deref(),
        key_tier,
        has_tools: s.has_tools,
        has_images: s.has_images,
        input_tokens: &mut count,
        body,
    };
    tier::choose(tier, &mut input).to_owned()
}

/// Whether a virtual key may use a passthrough path: only a family it is
/// allowed, a model named in the body only if its allow-list has it, and
/// never under a budget or cost cap (Sluice cannot price these requests).
/// Passthrough-mode clients (their own provider key) are not limited here.
pub(super) fn passthrough_allowed(
    snap: &Snapshot,
    cred: &Credential,
    family: PathFamily,
    body: &[u8],
) -> Result<(), ProxyError> {
    let Credential::Virtual(vk) = cred else {
        return Ok(());
    };
    if !vk.allows_family(family) {
        return Err(ProxyError::FamilyNotAllowed {
            family: family.name(),
        });
    }
    if let Some(model) = sniff::model_in(body) {
        if !vk.allows(&model) {
            return Err(ProxyError::ModelNotAllowed { model });
        }
    }
    let budgets = &snap.config.budgets;
    // A budget not limited to named models covers everything a key does.
    let under_budget = crate::budget::applies_any(budgets, "");
    if under_budget || snap.config.max_request_cost.is_some() {
        return Err(ProxyError::Forbidden(format!(
            "the {} endpoints cannot be priced, and a budget applies to this key",
            family.name()
        )));
    }
    Ok(())
}

/// Ownership on a passthrough path: a virtual key's request may name only
/// objects the key created (path and body) and never lists a family root.
/// Returns the key name when it is a virtual key (its answer may give it
/// objects), `None` for a client's own key.
pub(super) fn owned_passthrough(
    app: &App,
    cred: &Credential,
    path: &str,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<Option<Arc<str>>, ProxyError> {
    let Credential::Virtual(vk) = cred else {
        return Ok(None);
    };
    let multipart = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    app.owners
        .admit(&vk.name, path, &parts.method, multipart, body)?;
    Ok(Some(vk.name.clone()))
}

/// Ownership on an LLM endpoint: the objects a virtual key's body references
/// must be its own; a stored answer (a response unless `store: false`, a
/// chat completion with `store: true`) is recorded as the key's through the
/// returned sink.
pub(super) fn stored_ids(
    app: &App,
    vk: &VirtualKey,
    endpoint: Endpoint,
    body: &[u8],
) -> Result<Option<IdSink>, ProxyError> {
    app.owners.admit_body(&vk.name, body)?;
    let stored = Protocol::of(endpoint)
        .stores_by_default()
        .is_some_and(|default| ownership::stores(body, default));
    Ok(stored.then(|| IdSink {
        owners: app.owners.clone(),
        key: vk.name.clone(),
    }))
}

/// Passthrough paths go to the first provider speaking the client's API
/// (and, for a client's own key, taking client keys), once (no retries: the
/// request may not be idempotent). Bedrock serves no passthrough path.
pub(super) fn passthrough_group(
    snap: &Snapshot,
    registry: &Deployments,
    shape: ApiShape,
    cred: &Credential,
) -> Option<attempt::Group> {
    let passthrough = matches!(cred, Credential::Passthrough { .. });
    let (i, u) = snap.upstreams.iter().enumerate().find(|(_, u)| {
        u.speaks(shape) && u.kind != ProviderKind::Bedrock && (u.client_keys || !passthrough)
    })?;
    Some(attempt::Group {
        candidates: vec![Candidate {
            provider: i,
            upstream_model: String::new(),
            weight: 1,
            state: registry.get(&u.name, "*"),
        }],
        balance: crate::config::Balance::Weighted,
        tries: 1,
        context_fallback: None,
        crossing: None,
    })
}

/// Reads the request body up to `limit` bytes.
pub(super) async fn read_body(
    body: Incoming,
    headers: &http::HeaderMap,
    server: &ServerConfig,
) -> Result<Bytes, ProxyError> {
    let limit = server.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    // The whole body within `body_timeout`: a client trickling it holds a
    // connection and a task, so it is cut off.
    let after = server.bounds.body_timeout;
    match tokio::time::timeout(after, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ProxyError::BodyTimeout { after }),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::BodyTooLarge { limit })
        }
        Ok(Err(e)) => Err(ProxyError::InvalidRequest(format!(
            "could not read request body: {e}"
        ))),
    }
}

/// OpenAI streams carry usage only when asked; Sluice asks on the client's
/// behalf and removes what the client did not ask for.
pub(super) fn needs_usage_injection(endpoint: Endpoint, s: &Sniffed) -> bool {
    s.stream && !s.include_usage && Protocol::of(endpoint).usage_on_request()
}

/// Classifies the path and sets the request's endpoint and API shape;
/// `/anthropic/v1/...` forces Anthropic, and Anthropic clients identify
/// themselves with `anthropic-version`.
pub(super) fn classify(
    parts: &http::request::Parts,
    rec: &mut RequestRecord,
) -> Result<crate::path::Route, ProxyError> {
    let anthropic_client = parts.headers.contains_key("anthropic-version")
        || parts.uri.path().starts_with("/anthropic/");
    rec.facts.shape = Endpoint::Other.shape(anthropic_client);
    let target = crate::path::classify(parts.uri.path(), &parts.method)?;
    rec.facts.endpoint = target.endpoint;
    rec.facts.shape = target
        .endpoint
        .shape(anthropic_client || target.anthropic_prefix);
    Ok(target)
}

/// What the sniffed body tells the record.
pub(super) fn note_sniffed(rec: &mut RequestRecord, snap: &Snapshot, s: &Sniffed) {
    rec.facts.stream = s.stream;
    rec.facts.model = s.model.clone();
    if snap.config.server.end_user_from_body {
        rec.facts.identity.end_user = s.end_user.clone();
    }
}

/// The token limits of one request: the output cap to send and the input
/// bound, from the global, route and key limits and the context window.
pub(super) struct TokenPlan {
    pub plan: Plan,
    /// The configured input limit (as opposed to the context window).
    pub configured_max_input: Option<u64>,
    /// The endpoint's output-cap field.
    pub field: Option<&'static str>,
}

pub(super) fn token_plan(
    snap: &Snapshot,
    vk: Option<&VirtualKey>,
    route: &Route<'_>,
    kind: ProviderKind,
    endpoint: Endpoint,
    s: &Sniffed,
) -> Result<TokenPlan, ProxyError> {
    let key_limits = vk.map_or(TokenLimits::default(), |k| k.limits);
    let limits = snap.config.limits.min(route.limits).min(key_limits);
    let context_window = route
        .context_window
        .or_else(|| context::context_window(&route.upstream_model));
    let field = request::output_field(endpoint, s.max_output_field, kind);
    let plan = request::plan(limits, context_window, s.max_output, field);
    plan.check_output(context_window)?;
    Ok(TokenPlan {
        plan,
        configured_max_input: limits.max_input,
        field,
    })
}

/// A priced request: what [`cost::price`] decided and what it was asked.
pub(super) struct PricedRequest {
    pub priced: cost::Priced,
    pub price: Price,
    pub ask: Ask,
}

/// Prices the request when a budget or the per-request cost cap applies
/// (an unpriced model is then refused).
pub(super) async fn price(
    snap: &Snapshot,
    upstream_model: &str,
    s: &Sniffed,
    tokens: &TokenPlan,
    rec: &RequestRecord,
    input: &mut Input,
) -> Result<Option<PricedRequest>, ProxyError> {
    let cfg = &snap.config;
    if cfg.max_request_cost.is_none() && !crate::budget::applies_any(&cfg.budgets, &s.model) {
        return Ok(None);
    }
    let price = cfg
        .prices
        .get(upstream_model)
        .ok_or_else(|| ProxyError::ModelNotPriced {
            model: upstream_model.to_owned(),
        })?;
    let ask = Ask {
        input: 0,
        choices: s.choices,
        field: tokens.field,
        generates: rec.facts.endpoint.generates(),
        output_reserve: cfg.output_reserve,
        cost_cap: cfg.max_request_cost,
    };
    let priced = cost::price_input(&tokens.plan, &price, ask, input).await?;
    Ok(Some(PricedRequest { priced, price, ask }))
}

/// Output tokens a rate limit reserves: every choice's cap.
pub(super) fn tokens_out(
    snap: &Snapshot,
    tokens: &TokenPlan,
    priced: Option<&PricedRequest>,
    s: &Sniffed,
) -> u64 {
    priced
        .and_then(|p| p.priced.max_output)
        .or(tokens.plan.max_output)
        .unwrap_or(snap.config.output_reserve)
        .saturating_mul(s.choices)
}

/// The body as sent: the output cap, stream usage asked for, Anthropic
/// prompt-cache breakpoints; re-encoded only if something changes.
pub(super) fn rewrite(
    snap: &Snapshot,
    body: Bytes,
    tokens: &TokenPlan,
    priced: Option<&PricedRequest>,
    include_usage: bool,
    rec: &mut RequestRecord,
) -> Result<Bytes, ProxyError> {
    let output_cap = priced.map_or(tokens.plan.output_cap, |p| p.priced.output_cap);
    // Sluice set or lowered the output cap (a limit, a budget's reserve, the
    // cost cap): the usage record says so, and whether the answer hit it.
    rec.facts.output_capped = output_cap.is_some();
    let body = sniff::rewrite(
        body,
        &Rewrite {
            model: None,
            include_usage,
            max_output: output_cap,
        },
    )?;
    let cache = &snap.config.cache;
    if cache.anthropic_breakpoints && Protocol::of(rec.facts.endpoint).has_cache_breakpoints() {
        return add_breakpoints(body, cache.breakpoint_min_tokens, rec);
    }
    Ok(body)
}

/// The attempt groups: the route's deployments, then its fallbacks; a
/// client's own key only goes to providers that take client keys.
pub(super) fn attempt_groups(
    app: &App,
    snap: &Snapshot,
    route: Route<'_>,
    cred: &Credential,
    rec: &RequestRecord,
    (body, include_usage): (&[u8], bool),
) -> Result<VecDeque<attempt::Group>, ProxyError> {
    let model = route.upstream_model.clone();
    let shape = rec.facts.shape;
    let input = attempt::GroupInput {
        upstreams: &snap.upstreams,
        registry: &app.deployments,
        cred,
        shape,
        body,
        include_usage,
        max_retries: snap.config.retry.max_retries,
        breakpoints: attempt::breakpoints(&snap.config.cache),
    };
    let cross = rec.facts.endpoint.crosses();
    let chain = snap.router.chain(route, shape, cross, &snap.upstreams);
    // The model asked for must be translatable when it crosses APIs (a
    // clear 400); a fallback that cannot be is skipped. (Built in the
    // deque the attempts take, with no list in between.)
    let mut groups = VecDeque::with_capacity(chain.len());
    for (i, r) in chain.iter().enumerate() {
        match attempt::group_for(r, &input) {
            Ok(g) => groups.push_back(g),
            Err(e) if i == 0 => return Err(e),
            Err(e) => tracing::debug!(to = %r.public, error = %e, "fallback not translatable"),
        }
    }
    // A deployment turned off by a kill switch is skipped: its share goes to
    // the rule's other deployments, then to the fallbacks.
    let mut killed = None;
    groups.retain_mut(|g| {
        g.candidates.retain(|c| {
            let Some(u) = snap.upstreams.get(c.provider) else {
                return true;
            };
            let switch =
                app.kills
                    .for_deployment(&snap.config.kill_switches, &u.name, &c.upstream_model);
            let live = switch.is_none();
            killed = killed.take().or(switch);
            live
        });
        !g.candidates.is_empty()
    });
    if groups.is_empty() {
        if let Some(switch) = killed {
            crate::metrics::killed("deployment");
            return Err(ProxyError::Disabled {
                kind: "deployment",
                value: switch.target.value().to_owned(),
                reason: switch.reason,
            });
        }
        return Err(ProxyError::Forbidden(format!(
            "model {model:?} is served only by providers that do not accept client keys; use a \
             virtual key"
        )));
    }
    Ok(groups)
}
