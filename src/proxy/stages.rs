//! The plain steps the pipeline wires: reading the body, counting tokens,
//! admission under rate limits, tier routing, prompt-cache breakpoints,
//! object ownership.

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
use crate::config::ServerConfig;
use crate::error::{ApiShape, ProxyError};
use crate::limits::rate;
use crate::limits::tokens::{self, Family};
use crate::metrics;
use crate::ownership::{self, IdSink};
use crate::path::Family as PathFamily;
use crate::record::RequestRecord;
use crate::resilience::balance::Candidate;
use crate::resilience::Deployments;
use crate::route::tier::{self, TierInput};
use crate::sniff::{self, Endpoint, Sniffed};

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
    rec.deadline = tokio::time::Instant::from_std(rec.started()) + total;
    rec.deadline
}

/// Adds Anthropic prompt-cache breakpoints; the body is re-encoded only when
/// one was added.
pub(super) fn add_breakpoints(
    body: Bytes,
    min_tokens: u64,
    rec: &mut RequestRecord,
) -> Result<Bytes, ProxyError> {
    if memchr::memmem::find(&body, b"cache_control").is_some() {
        return Ok(body);
    }
    let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_slice(&body) else {
        return Ok(body);
    };
    let added = cache::prompt::add_breakpoints(&mut obj, min_tokens);
    if added == 0 {
        return Ok(body);
    }
    rec.breakpoints = added as u32;
    serde_json::to_vec(&obj)
        .map(Bytes::from)
        .map_err(|e| ProxyError::Internal(format!("re-encoding request body: {e}")))
}

/// Admits the request under the rate limits, or refuses it.
pub(super) fn admit(
    app: &App,
    snap: &Snapshot,
    rec: &mut RequestRecord,
    model: &str,
    reserve: u64,
) -> Result<(), ProxyError> {
    let rules = &snap.config.rate_limits;
    if rules.is_empty() {
        return Ok(());
    }
    let subject = rate::Subject {
        identity: &rec.identity,
        model,
    };
    let admission = app.rate.admit(rules, &subject, reserve).map_err(|r| {
        metrics::rate_limited(&r.rule);
        ProxyError::RateLimited(r)
    })?;
    rec.admission = Some(admission);
    Ok(())
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
        .resolve(&tier.default, rec.shape, &snap.upstreams)
        .map_or(Family::O200k, |r| Family::for_model(&r.upstream_model));
    let endpoint = rec.endpoint;
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
        feature: rec.identity.feature.as_deref(),
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
    let stored = match endpoint {
        Endpoint::Responses => ownership::stores(body, true),
        Endpoint::ChatCompletions => ownership::stores(body, false),
        _ => false,
    };
    Ok(stored.then(|| IdSink {
        owners: app.owners.clone(),
        key: vk.name.clone(),
    }))
}

/// Passthrough paths go to the first provider speaking the client's API
/// (and, for a client's own key, taking client keys), once (no retries: the
/// request may not be idempotent).
pub(super) fn passthrough_group(
    snap: &Snapshot,
    registry: &Deployments,
    shape: ApiShape,
    cred: &Credential,
) -> Option<attempt::Group> {
    let passthrough = matches!(cred, Credential::Passthrough { .. });
    let (i, u) = snap
        .upstreams
        .iter()
        .enumerate()
        .find(|(_, u)| u.speaks(shape) && (u.client_keys || !passthrough))?;
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
    })
}

/// Counts input tokens; large bodies are counted off the async workers. A
/// count that fails (unreadable input, a panicked task) fails the request.
pub(super) async fn count_input(
    endpoint: Endpoint,
    body: Bytes,
    family: Family,
) -> Result<u64, ProxyError> {
    if body.len() < 64 * 1024 {
        return tokens::count_request(endpoint, &body, family);
    }
    tokio::task::spawn_blocking(move || tokens::count_request(endpoint, &body, family))
        .await
        .map_err(|e| ProxyError::Internal(format!("token counting failed: {e}")))?
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
    s.stream
        && !s.include_usage
        && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
}
