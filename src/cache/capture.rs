//! The tee between an upstream answer and the cache: fed the upstream bytes
//! as they pass (never delaying them), it stores the answer only when it
//! ended complete and successful, then releases the requests waiting on the
//! same key. Dropped unfinished, it stores nothing and releases the waiters
//! to go upstream themselves. The same answer may also go to the semantic
//! cache (under the request's embedding), or only there.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::semantic;
use super::{CacheKey, CachedResponse, LeaderGuard, ResponseCache};
use crate::protocol::{Protocol, StreamAssembler};
use crate::sniff::Endpoint;

/// The exact cache's part: where the answer goes and who waits for it.
struct Exact {
    cache: Arc<ResponseCache>,
    key: CacheKey,
    leader: Option<LeaderGuard>,
}

/// Captures one upstream answer for the cache.
pub struct Capture {
    exact: Option<Exact>,
    semantic: Option<semantic::Pending>,
    assembler: StreamAssembler,
    endpoint: Endpoint,
    tenant: String,
    model: String,
    ttl: Option<Duration>,
    max_entry: usize,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("key", &self.exact.as_ref().map(|e| e.key))
            .field("semantic", &self.semantic)
            .finish_non_exhaustive()
    }
}

impl Capture {
    #[expect(
        clippy::too_many_arguments,
        reason = "one place builds it, from the pipeline"
    )]
    pub fn new(
        cache: Arc<ResponseCache>,
        key: CacheKey,
        leader: LeaderGuard,
        endpoint: Endpoint,
        tenant: String,
        model: String,
        ttl: Option<Duration>,
        max_entry: usize,
    ) -> Capture {
        Capture {
            exact: Some(Exact {
                cache,
                key,
                leader: Some(leader),
            }),
            ttl,
            ..Capture::semantic_only(endpoint, tenant, model, max_entry)
        }
    }

    /// A capture for the semantic cache alone (the exact cache passed).
    pub fn semantic_only(
        endpoint: Endpoint,
        tenant: String,
        model: String,
        max_entry: usize,
    ) -> Capture {
        Capture {
            exact: None,
            semantic: None,
            assembler: Protocol::of(endpoint).assembler(max_entry),
            endpoint,
            tenant,
            model,
            ttl: None,
            max_entry,
        }
    }

    /// The answer also goes to the semantic cache.
    pub fn with_semantic(mut self, pending: semantic::Pending) -> Capture {
        self.semantic = Some(pending);
        self
    }

    /// Feeds streamed bytes (as they came from upstream).
    pub fn feed(&mut self, chunk: &[u8]) {
        if let Some(l) = self.exact.as_ref().and_then(|e| e.leader.as_ref()) {
            l.progress();
        }
        if self.assembler.is_viable() {
            self.assembler.feed(chunk);
        }
    }

    /// The stream ended cleanly: store it if it was complete.
    pub fn finish_stream(mut self) {
        let assembler = std::mem::replace(
            &mut self.assembler,
            Protocol::of(self.endpoint).assembler(0),
        );
        if let Some(body) = assembler.finish() {
            self.store(body);
        }
    }

    /// A complete JSON answer: stored only when it is a well-formed answer
    /// of the endpoint's API.
    pub fn finish_json(mut self, body: Bytes) {
        if body.len() <= self.max_entry && Protocol::of(self.endpoint).is_answer(&body) {
            self.store(body);
        }
    }

    fn store(&mut self, body: Bytes) {
        let entry = CachedResponse::json(self.endpoint, &self.tenant, &self.model, body);
        let stored = match self.exact.as_mut() {
            Some(e) => {
                let stored = e.cache.insert(e.key, entry, self.ttl);
                if let Some(leader) = e.leader.take() {
                    leader.done(Some(stored.clone()));
                }
                stored
            }
            None => Arc::new(entry),
        };
        if let Some(s) = self.semantic.take() {
            s.finish(stored);
        }
    }
}
