//! The cache step: policy, tenant, key, lookup and single flight; then,
//! on an exact miss, the semantic cache (`super::semantic`).

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use crate::app::{App, Snapshot};
use crate::auth::Credential;
use crate::cache::{self, Flight, Patience};
use crate::config::{CacheConfig, Timeouts};
use crate::record::{CacheState, RequestRecord};
use crate::sniff::{Endpoint, Sniffed};

use super::answer::cache_hit;
use super::semantic;
use super::stages::Asked;
use super::Answer;

/// What the cache step decided for one request.
pub(super) enum Step {
    /// Not cacheable (policy, or a body that is not a JSON object).
    Bypass,
    /// Answered from memory.
    Hit(std::sync::Arc<cache::CachedResponse>),
    /// A miss: go upstream; `lead` tees the answer into the cache.
    Miss { lead: Option<Lead> },
}

/// What a miss needs to store its answer.
pub(super) struct Lead {
    pub key: cache::CacheKey,
    pub leader: cache::LeaderGuard,
    pub tenant: String,
    pub ttl: Option<Duration>,
}

/// The request as the cache sees it.
pub(super) struct Lookup<'a> {
    pub cfg: &'a CacheConfig,
    pub endpoint: Endpoint,
    pub sniffed: &'a Sniffed,
    pub headers: &'a HeaderMap,
    /// The tenant scope ([`cache::tenant::tenant`]).
    pub tenant: String,
    pub upstream_model: &'a str,
    /// The body as it will be sent upstream.
    pub body: &'a Bytes,
    /// How long to wait on an identical request already upstream.
    pub patience: Patience,
}

/// Whether the cache step can do anything under this config: with the
/// exact cache off and no semantic cache it is skipped.
pub(super) fn configured(snap: &Snapshot) -> bool {
    snap.config.cache.mode != crate::config::CacheMode::Off || snap.config.semantic_cache.is_some()
}

/// Looks the request up; identical concurrent misses share one upstream
/// call (the followers wait on the leader while it makes progress).
pub(super) async fn lookup(app: &App, l: Lookup<'_>) -> Step {
    let policy = cache::policy::decide(l.cfg, l.endpoint, l.sniffed.temperature, l.headers);
    if !policy.lookup && !policy.store {
        return Step::Bypass;
    }
    let vary = cache::key::vary(l.headers);
    let Some(key) = cache::cache_key(l.endpoint, l.upstream_model, &l.tenant, &vary, l.body) else {
        return Step::Bypass;
    };
    if policy.lookup {
        if let Some(hit) = app.cache.get(&key) {
            return Step::Hit(hit);
        }
        // The fleet's shared level, when configured: one round trip.
        if let Some(hit) = app.cache.get_shared(&key).await {
            return Step::Hit(hit);
        }
    }
    if !policy.store {
        return Step::Miss { lead: None };
    }
    match app.flights.join(key) {
        Flight::Leader(leader) => Step::Miss {
            lead: Some(Lead {
                key,
                leader,
                tenant: l.tenant,
                ttl: policy.ttl,
            }),
        },
        Flight::Follower(waiter) => match waiter.wait(l.patience).await {
            Some(hit) => Step::Hit(hit),
            None => Step::Miss { lead: None },
        },
    }
}

/// The cache step of the pipeline: a hit is the answer; a miss that leads
/// its flight tees the upstream answer into the cache (`rec.holds.capture`).
pub(super) async fn serve(
    app: &App,
    snap: &std::sync::Arc<Snapshot>,
    asked: &Asked<'_>,
    body: &Bytes,
    timeouts: Timeouts,
    rec: &mut RequestRecord,
) -> Option<Answer> {
    let (headers, cred, s) = (&asked.parts.headers, asked.cred, asked.s);
    let cfg = &snap.config.cache;
    let upstream_model = rec.outcome.upstream.model.clone();
    let tenant = cache::tenant::tenant(
        cfg.scope,
        &rec.facts.identity,
        matches!(cred, Credential::Passthrough { .. }),
    );
    let lookup = Lookup {
        cfg,
        endpoint: rec.facts.endpoint,
        sniffed: s,
        headers,
        tenant: tenant.clone(),
        upstream_model: &upstream_model,
        body,
        patience: Patience {
            first: timeouts.first_byte,
            idle: timeouts.idle,
            deadline: rec.facts.deadline,
        },
    };
    let step = self::lookup(app, lookup).await;
    if let Step::Hit(hit) = &step {
        rec.outcome.cache = CacheState::Miss;
        return cache_hit(hit, s, rec);
    }
    // An exact miss (or bypass) may still have a similar earlier answer.
    let similar = semantic::lookup(app, snap, headers, cred, s, body, &tenant, rec).await;
    let pending = match similar {
        Some(semantic::Found::Serve(n)) => {
            // The exact flight's followers (if any) go upstream themselves.
            let answer = cache_hit(&n.answer, s, rec)?;
            rec.outcome.cache = CacheState::Semantic;
            return Some(answer);
        }
        Some(semantic::Found::Store(p)) => Some(p),
        None => None,
    };
    let missed = matches!(step, Step::Miss { .. });
    let capture = match step {
        Step::Miss { lead: Some(l) } => Some(cache::Capture::new(
            app.cache.clone(),
            l.key,
            l.leader,
            rec.facts.endpoint,
            l.tenant,
            upstream_model,
            l.ttl,
            cfg.max_entry_bytes,
        )),
        _ if pending.is_some() => Some(cache::Capture::semantic_only(
            rec.facts.endpoint,
            tenant,
            upstream_model,
            cfg.max_entry_bytes,
        )),
        _ => None,
    };
    if missed {
        rec.outcome.cache = CacheState::Miss;
    }
    rec.holds.capture = match (capture, pending) {
        (Some(c), Some(p)) => Some(c.with_semantic(p)),
        (c, _) => c,
    };
    None
}
