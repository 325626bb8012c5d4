//! The tee between an upstream answer and the cache: fed the upstream bytes
//! as they pass (never delaying them), it stores the answer only when it
//! ended complete and successful, then releases the requests waiting on the
//! same key. Dropped unfinished, it stores nothing and releases the waiters
//! to go upstream themselves.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{CacheKey, CachedResponse, LeaderGuard, ResponseCache, StreamAssembler};
use crate::sniff::Endpoint;

/// Captures one upstream answer for the cache.
pub struct Capture {
    cache: Arc<ResponseCache>,
    key: CacheKey,
    leader: Option<LeaderGuard>,
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
            .field("key", &self.key)
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
            cache,
            key,
            leader: Some(leader),
            assembler: StreamAssembler::with_limit(endpoint, max_entry),
            endpoint,
            tenant,
            model,
            ttl,
            max_entry,
        }
    }

    /// Feeds streamed bytes (as they came from upstream).
    pub fn feed(&mut self, chunk: &[u8]) {
        if let Some(l) = &self.leader {
            l.progress();
        }
        if self.assembler.is_viable() {
            self.assembler.feed(chunk);
        }
    }

    /// The stream ended cleanly: store it if it was complete.
    pub fn finish_stream(mut self) {
        let assembler = std::mem::replace(&mut self.assembler, StreamAssembler::new(self.endpoint));
        if let Some(body) = assembler.finish() {
            self.store(body);
        }
    }

    /// A complete JSON answer: stored only when it is a well-formed answer
    /// of the endpoint's API.
    pub fn finish_json(mut self, body: Bytes) {
        if body.len() <= self.max_entry && super::entry::is_answer(self.endpoint, &body) {
            self.store(body);
        }
    }

    fn store(&mut self, body: Bytes) {
        let entry = CachedResponse::json(self.endpoint, &self.tenant, &self.model, body);
        let stored = self.cache.insert(self.key, entry, self.ttl);
        if let Some(leader) = self.leader.take() {
            leader.done(Some(stored));
        }
    }
}
