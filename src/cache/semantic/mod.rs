//! Semantic cache: an earlier answer to a *similar* question (not an
//! identical one, which is the exact cache's job) served or, in observe
//! mode, only compared with the real answer.
//!
//! A request opted in (`[cache.semantic]`: by model, feature or key) is
//! reduced to a question ([`request::question`]): the text that is embedded
//! (the last user message, or the whole conversation) and a partition, a
//! hash of everything else that must be equal for two requests to match:
//! the tenant (the exact cache's scope), the endpoint, the upstream model,
//! the embedding model, the answer-changing headers and every body field
//! but the conversation (system prompt, sampling settings, output caps,
//! tools when allowed). The embedding comes from the configured embeddings
//! model; the nearest entry of the partition is found by cosine similarity
//! ([`index::Index`]: exactly in small partitions, through an HNSW graph
//! ([`ann`]) and an exact re-score in large ones). The answer a miss gets is stored through the exact
//! cache's capture (so streamed answers are assembled and replayed the
//! same way), under the request's vector.
//!
//! Observe mode serves every request upstream and, once the real answer is
//! complete, records how alike the would-be hit was to it ([`observe`]).

pub mod ann;
pub mod index;
pub mod observe;
pub mod request;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

use self::index::{Bounds, Index, Nearest};
use self::request::Question;
use super::CachedResponse;
use crate::config::{SemanticConfig, SemanticMode};
use crate::protocol::Protocol;
use crate::sniff::Endpoint;

/// The semantic cache's entries and its observe-mode table; they outlive
/// config snapshots (bounds are read from the config at each insert).
#[derive(Default)]
pub struct SemanticCache {
    index: RwLock<Index>,
    table: Mutex<observe::Table>,
    lookups: AtomicU64,
    served: AtomicU64,
    stored: AtomicU64,
    embed_errors: AtomicU64,
}

/// Counters the admin view shows.
#[derive(Debug, Clone, Copy)]
pub enum Count {
    Lookup,
    Served,
    EmbedError,
}

impl SemanticCache {
    /// The nearest live entry of the question's partition.
    pub fn nearest(&self, q: &Question, vector: &[f32]) -> Option<Nearest> {
        let found = self
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .nearest(&q.part, vector, Instant::now());
        if let Some(n) = &found {
            self.table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .nearest(n.score);
        }
        found
    }

    pub fn count(&self, c: Count) {
        let n = match c {
            Count::Lookup => &self.lookups,
            Count::Served => &self.served,
            Count::EmbedError => &self.embed_errors,
        };
        n.fetch_add(1, Ordering::Relaxed);
    }

    fn insert(&self, p: Pending, answer: Arc<CachedResponse>) {
        let stored = self
            .index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                p.question.part,
                p.question.tenant,
                p.vector,
                answer,
                p.ttl,
                Instant::now(),
                p.bounds,
            );
        if stored {
            self.stored.fetch_add(1, Ordering::Relaxed);
        }
        let s = self.index.read().unwrap_or_else(|e| e.into_inner()).stats();
        crate::metrics::semantic_cache_size(s.entries, s.bytes);
    }

    /// Removes every entry (the observe table stays).
    pub fn purge(&self) -> usize {
        let n = self
            .index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        crate::metrics::semantic_cache_size(0, 0);
        n
    }

    /// `GET /admin/cache/semantic`.
    pub fn view(&self, cfg: Option<&SemanticConfig>) -> Value {
        let s = self.index.read().unwrap_or_else(|e| e.into_inner()).stats();
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "mode": cfg.map_or("off", |c| c.mode.label()),
            "threshold": cfg.map(|c| (f64::from(c.threshold) * 1e4).round() / 1e4),
            "false_hit_below": cfg.map(|c| c.false_hit_below),
            "entries": s.entries,
            "bytes": s.bytes,
            "partitions": s.partitions,
            "graphs": s.graphs,
            "graph_bytes": s.graph_bytes,
            "evicted": s.evicted,
            "lookups": n(&self.lookups),
            "served": n(&self.served),
            "stored": n(&self.stored),
            "embedding_errors": n(&self.embed_errors),
            "max_entries": cfg.map(|c| c.max_entries),
            "max_entries_per_tenant": cfg.map(|c| c.max_entries_per_tenant),
            "max_bytes": cfg.map(|c| c.max_bytes),
            "table": table.rows(cfg.map_or(0.95, |c| c.threshold)),
        })
    }
}

/// What a miss needs to store its answer in the semantic cache (and, in
/// observe mode, compare it with the would-be hit), carried by the exact
/// cache's [`super::Capture`].
pub struct Pending {
    pub cache: Arc<SemanticCache>,
    pub question: Question,
    pub vector: Vec<f32>,
    pub ttl: Duration,
    pub bounds: Bounds,
    pub mode: SemanticMode,
    /// The nearest entry found at lookup (any score).
    pub nearest: Option<Nearest>,
    pub false_hit_below: f64,
    pub endpoint: Endpoint,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// The complete answer came back: store it, and compare it with the
    /// would-be hit.
    pub fn finish(self, answer: Arc<CachedResponse>) {
        if let Some(n) = &self.nearest {
            let similarity = answer_similarity(self.endpoint, &n.answer.body, &answer.body);
            self.cache
                .table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .compared(n.score, similarity, self.false_hit_below);
        }
        let cache = self.cache.clone();
        cache.insert(self, answer);
    }
}

/// How alike two answers are: the word-set Jaccard shadows use.
pub fn answer_similarity(endpoint: Endpoint, a: &Bytes, b: &Bytes) -> f64 {
    let text = |body: &Bytes| {
        let mut o =
            crate::stream::observe::Observer::json(Protocol::of(endpoint).anthropic()).with_text();
        o.observe(body);
        o.finish().text
    };
    let primary = crate::shadow::Primary {
        text: text(a),
        ..Default::default()
    };
    let other = crate::shadow::Answer {
        text: text(b),
        ..Default::default()
    };
    crate::shadow::compare(&primary, &other).similarity
}
