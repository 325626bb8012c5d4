//! The semantic cache's step (after an exact-cache miss): the embedding
//! call, the nearest earlier answer, and what to do with it. The decisions
//! are `cache::semantic`'s; this file wires the embedding call through the
//! attempt loop and records it as its own request.
//!
//! The embedding call is a request of its own: routed like any
//! `embedding_model` request (its first deployment group, one try, within
//! `embedding_timeout`), priced from the price table, and written as a
//! usage record `<id>-semantic` with the asking request's key, user and
//! team and the feature `semantic_cache`, so spend reports attribute it.
//! It does not take the asking key's rate-limit or budget reservations.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use serde::Deserialize;

use crate::app::{App, Snapshot};
use crate::attempt::{self, Answered};
use crate::auth::Credential;
use crate::cache::semantic::index::{normalise, Bounds, Nearest};
use crate::cache::semantic::request::{question, Scope};
use crate::cache::semantic::{Count, Pending};
use crate::config::{SemanticConfig, SemanticMode, MAX_SEMANTIC_DIMS};
use crate::error::ApiShape;
use crate::metrics;
use crate::record::{RequestRecord, StreamEnd};
use crate::sniff::{Endpoint, Sniffed};
use crate::stream::observe::Observed;

use super::answer::{read_bounded, ReadLimits};

/// The feature embedding calls are attributed to.
pub const FEATURE: &str = "semantic_cache";

/// The largest embeddings answer read.
const MAX_EMBEDDING_ANSWER: usize = 4 << 20;

/// What the semantic cache decided.
pub(super) enum Found {
    /// Serve this earlier answer.
    Serve(Nearest),
    /// Go upstream; the answer is stored (and, observing, compared).
    Store(Pending),
}

/// Looks the request up when it opted in; `None` when it did not take
/// part (or the embedding failed: the request goes on as a miss).
#[expect(
    clippy::too_many_arguments,
    reason = "the question, tenant and credential come from several pipeline stages"
)]
pub(super) async fn lookup(
    app: &App,
    snap: &Arc<Snapshot>,
    headers: &HeaderMap,
    cred: &Credential,
    s: &Sniffed,
    body: &Bytes,
    tenant: &str,
    rec: &mut RequestRecord,
) -> Option<Found> {
    let cfg = snap.config.semantic_cache.as_ref()?;
    // A client's own provider key: Sluice would embed on the operator's
    // key on its behalf; such requests stay out.
    if matches!(cred, Credential::Passthrough { .. }) {
        return None;
    }
    let id = &rec.facts.identity;
    if !cfg.applies(&s.model, id.feature.as_deref(), id.key.as_deref()) {
        return None;
    }
    let started = Instant::now();
    let policy = crate::cache::policy::directives(headers);
    if !policy.store {
        metrics::semantic_cache_lookup("skip_no_store", started.elapsed());
        return None;
    }
    let vary = crate::cache::key::vary(headers);
    let upstream_model = rec.outcome.upstream.model.clone();
    let scope = Scope {
        tenant,
        upstream_model: &upstream_model,
        embedding_model: &cfg.embedding_model,
        vary: &vary,
    };
    let q = match question(cfg, rec.facts.endpoint, s, body, &scope) {
        Ok(q) => q,
        Err(skip) => {
            metrics::semantic_cache_lookup(skip.label(), started.elapsed());
            return None;
        }
    };
    app.semantic.count(Count::Lookup);
    let Some(vector) = embed(app, snap, cred, cfg, &q.text, rec).await else {
        app.semantic.count(Count::EmbedError);
        metrics::semantic_cache_lookup("embed_error", started.elapsed());
        return None;
    };
    let nearest = policy
        .lookup
        .then(|| app.semantic.nearest(&q, &vector))
        .flatten();
    rec.outcome.semantic_score = nearest.as_ref().map(|n| n.score);
    let close = nearest.as_ref().is_some_and(|n| n.score >= cfg.threshold);
    let result = match (cfg.mode, close) {
        (SemanticMode::Serve, true) => "hit",
        (SemanticMode::Observe, true) => "would_hit",
        _ => "miss",
    };
    metrics::semantic_cache_lookup(result, started.elapsed());
    if let (SemanticMode::Serve, true, Some(n)) = (cfg.mode, close, &nearest) {
        app.semantic.count(Count::Served);
        return Some(Found::Serve(n.clone()));
    }
    Some(Found::Store(Pending {
        cache: app.semantic.clone(),
        question: q,
        vector,
        ttl: cfg.ttl,
        bounds: Bounds {
            max_entries: cfg.max_entries,
            max_entries_per_tenant: cfg.max_entries_per_tenant,
            max_bytes: cfg.max_bytes,
        },
        mode: cfg.mode,
        // Serving, only a would-be hit is worth comparing; observing, the
        // nearest at any score fills the table's lower rows.
        nearest,
        false_hit_below: cfg.false_hit_below,
        endpoint: rec.facts.endpoint,
    }))
}

#[derive(Deserialize)]
struct Embeddings {
    data: Vec<Embedding>,
}

#[derive(Deserialize)]
struct Embedding {
    embedding: Vec<f32>,
}

/// The unit-length embedding of `text`, from the configured model; the call
/// is recorded as a request of its own.
async fn embed(
    app: &App,
    snap: &Arc<Snapshot>,
    cred: &Credential,
    cfg: &SemanticConfig,
    text: &str,
    asking: &RequestRecord,
) -> Option<Vec<f32>> {
    let shape = ApiShape::OpenAi;
    let route = snap
        .router
        .resolve(&cfg.embedding_model, shape, &snap.upstreams)?;
    let groups: VecDeque<attempt::Group> = snap
        .router
        .chain(route, shape, false, &snap.upstreams)
        .into_iter()
        .take(1)
        .map(|r| attempt::Group {
            candidates: r.candidates(&snap.upstreams, &app.deployments),
            balance: r.rule.balance,
            tries: 1,
            context_fallback: None,
            crossing: None,
        })
        .filter(|g| !g.candidates.is_empty())
        .collect();
    let body = Bytes::from(
        serde_json::to_vec(&serde_json::json!({"model": cfg.embedding_model, "input": text}))
            .ok()?,
    );
    let mut rec = RequestRecord::new(
        format!("{}-semantic", asking.facts.id).into(),
        Instant::now(),
        app.usage.clone(),
    );
    rec.snap = Some(snap.clone());
    rec.ledger = Some(app.ledger.clone());
    rec.facts.identity = asking.facts.identity.clone();
    rec.facts.identity.feature = Some(FEATURE.into());
    rec.facts.endpoint = Endpoint::Embeddings;
    rec.facts.shape = shape;
    rec.facts.model = cfg.embedding_model.clone();
    rec.facts.request_bytes = body.len() as u64;
    let deadline = (tokio::time::Instant::now() + cfg.embedding_timeout).min(asking.facts.deadline);
    rec.facts.deadline = deadline;
    let call = attempt::Call {
        snap,
        registry: &app.deployments,
        method: &http::Method::POST,
        path_and_query: "/v1/embeddings",
        client_headers: &HeaderMap::new(),
        cred,
        body,
        client_model: Some(&cfg.embedding_model),
        endpoint: Endpoint::Embeddings,
        shape,
        deadline,
        reads_answer: true,
        fault: None,
        trace: &asking.trace,
        include_usage: false,
    };
    let answered = tokio::time::timeout_at(
        deadline,
        attempt::run(&call, groups, &mut rec.outcome.upstream),
    )
    .await;
    let resp = match answered {
        Ok(Ok(Answered::Stream(resp))) => resp,
        Ok(Ok(Answered::Buffered(head, _))) => {
            rec.outcome.status = head.status.as_u16();
            rec.finish(StreamEnd::Complete, Observed::default(), 0);
            return None;
        }
        Ok(Err(e)) => {
            rec.outcome.status = e.status().as_u16();
            rec.outcome.error = Some(e.kind());
            tracing::warn!(request_id = %rec.facts.id, error = %e, "semantic cache: embedding call failed");
            rec.finish(StreamEnd::Complete, Observed::default(), 0);
            return None;
        }
        Err(_) => {
            rec.outcome.status = 504;
            rec.outcome.error = Some("upstream_timeout");
            tracing::warn!(request_id = %rec.facts.id, "semantic cache: embedding call timed out");
            rec.finish(StreamEnd::TotalTimeout, Observed::default(), 0);
            return None;
        }
    };
    let (head, incoming) = resp.into_parts();
    rec.outcome.status = head.status.as_u16();
    let limits = ReadLimits {
        max: MAX_EMBEDDING_ANSWER,
        idle: cfg.embedding_timeout,
        deadline,
    };
    let Ok(bytes) = read_bounded(incoming, &head.headers, limits).await else {
        rec.outcome.status = 502;
        rec.outcome.error = Some("upstream_body");
        rec.finish(
            StreamEnd::UpstreamError("embeddings answer unreadable".into()),
            Observed::default(),
            0,
        );
        return None;
    };
    let mut observer = crate::stream::observe::Observer::json(false);
    observer.observe(&bytes);
    let len = bytes.len() as u64;
    rec.finish(StreamEnd::Complete, observer.finish(), len);
    if !head.status.is_success() {
        return None;
    }
    let parsed: Embeddings = serde_json::from_slice(&bytes).ok()?;
    let v = parsed.data.into_iter().next()?.embedding;
    if v.len() > MAX_SEMANTIC_DIMS {
        return None;
    }
    normalise(v)
}
