//! The in-memory response store: moka, bounded by bytes, each entry living
//! for its own TTL; counts hits, misses and evictions for metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::sync::Cache;
use moka::Expiry;

use super::entry::CachedResponse;
use super::key::CacheKey;
use super::shared::SharedCache;

/// TTLs are capped here: moka rejects expiry times too far in the future.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What moka holds: the response and how long it may live.
#[derive(Clone)]
struct Stored {
    response: Arc<CachedResponse>,
    ttl: Duration,
}

/// Expires each entry its own TTL after it was (re)inserted.
struct PerEntryTtl;

impl Expiry<CacheKey, Stored> for PerEntryTtl {
    fn expire_after_create(&self, _: &CacheKey, v: &Stored, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        v: &Stored,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

/// A point-in-time view of the cache for metrics and the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries held (approximate: moka applies writes in batches).
    pub entries: u64,
    /// Bytes held, as [`CachedResponse::weight`] counts them.
    pub bytes: u64,
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Entries dropped for space or because their TTL ran out.
    pub evictions: u64,
}

/// The exact-match response cache.
pub struct ResponseCache {
    cache: Cache<CacheKey, Stored>,
    counters: Arc<Counters>,
    default_ttl: Duration,
    /// The second level every replica shares (`[cache] shared_url`).
    shared: Option<Arc<SharedCache>>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("stats", &self.stats_now())
            .field("default_ttl", &self.default_ttl)
            .finish()
    }
}

impl ResponseCache {
    /// A cache holding at most `max_bytes` (by [`CachedResponse::weight`])
    /// whose entries live `default_ttl` unless inserted with their own.
    pub fn new(max_bytes: u64, default_ttl: Duration) -> ResponseCache {
        let counters = Arc::new(Counters::default());
        let evictions = Arc::clone(&counters);
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &CacheKey, v: &Stored| v.response.weight())
            .expire_after(PerEntryTtl)
            .eviction_listener(move |_, _, cause| {
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    evictions.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        ResponseCache {
            cache,
            counters,
            default_ttl: default_ttl.min(MAX_TTL),
            shared: None,
        }
    }

    /// Adds the shared second level.
    pub fn with_shared(mut self, shared: Option<SharedCache>) -> ResponseCache {
        self.shared = shared.map(Arc::new);
        self
    }

    /// After a miss here: the shared level's entry, kept here too for what
    /// is left of its TTL.
    pub async fn get_shared(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        let (entry, ttl) = self.shared.as_ref()?.get(key).await?;
        Some(self.insert_here(*key, entry, ttl))
    }

    /// The live entry for `key`, counting a hit or a miss.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        match self.cache.get(key) {
            Some(stored) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Some(stored.response)
            }
            None => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Stores `response` under `key` for `ttl` (the default when `None`),
    /// replacing any entry there; returns the stored entry for waiters.
    pub fn insert(
        &self,
        key: CacheKey,
        response: CachedResponse,
        ttl: Option<Duration>,
    ) -> Arc<CachedResponse> {
        let ttl = ttl.map_or(self.default_ttl, |t| t.min(MAX_TTL));
        if let Some(shared) = &self.shared {
            shared.put(&key, &response, ttl);
        }
        self.insert_here(key, response, ttl)
    }

    /// Stores in this process only.
    fn insert_here(
        &self,
        key: CacheKey,
        response: CachedResponse,
        ttl: Duration,
    ) -> Arc<CachedResponse> {
        let response = Arc::new(response);
        self.cache.insert(
            key,
            Stored {
                response: Arc::clone(&response),
                ttl: ttl.min(MAX_TTL),
            },
        );
        response
    }

    /// Removes the entry for `key`, if any.
    pub fn remove(&self, key: &CacheKey) {
        self.cache.invalidate(key);
    }

    /// Removes every entry (the shared level's too, in the background).
    pub fn purge_all(&self) {
        if let Some(shared) = &self.shared {
            shared.purge_all();
        }
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
    }

    /// Removes the entries `matches` selects (e.g. one model's, one
    /// tenant's) and returns how many it removed. Walks the whole cache, so
    /// it is meant for the admin API, not the request path.
    pub fn purge_where(&self, matches: impl Fn(&CachedResponse) -> bool) -> u64 {
        let mut removed = 0;
        for (key, stored) in self.cache.iter() {
            if matches(&stored.response) {
                self.cache.invalidate(&*key);
                removed += 1;
            }
        }
        self.cache.run_pending_tasks();
        removed
    }

    /// Current figures, after applying pending writes and expirations.
    pub fn stats(&self) -> CacheStats {
        self.cache.run_pending_tasks();
        self.stats_now()
    }

    fn stats_now(&self) -> CacheStats {
        CacheStats {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            evictions: self.counters.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sniff::Endpoint;
    use bytes::Bytes;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    fn response(tenant: &str, model: &str, len: usize) -> CachedResponse {
        CachedResponse::json(
            Endpoint::ChatCompletions,
            tenant,
            model,
            Bytes::from(vec![b'x'; len]),
        )
    }

    #[test]
    fn get_insert_and_counts() {
        let cache = ResponseCache::new(1 << 20, Duration::from_secs(60));
        assert!(cache.get(&key(1)).is_none());
        let stored = cache.insert(key(1), response("t", "m", 100), None);
        let got = cache.get(&key(1)).expect("hit");
        assert!(Arc::ptr_eq(&stored, &got));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
        assert_eq!(stats.bytes, u64::from(got.weight()));
    }

    #[test]
    fn per_entry_ttl_expires() {
        let cache = ResponseCache::new(1 << 20, Duration::from_secs(60));
        cache.insert(
            key(1),
            response("t", "m", 10),
            Some(Duration::from_millis(200)),
        );
        cache.insert(key(2), response("t", "m", 10), None);
        assert!(cache.get(&key(1)).is_some());
        std::thread::sleep(Duration::from_millis(400));
        assert!(cache.get(&key(1)).is_none(), "own ttl passed");
        assert!(cache.get(&key(2)).is_some(), "default ttl still running");
        // moka's timer wheel removes expired entries on ~1 s ticks.
        let mut stats = cache.stats();
        for _ in 0..50 {
            if stats.evictions > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            stats = cache.stats();
        }
        assert_eq!((stats.entries, stats.evictions), (1, 1), "{stats:?}");
    }

    #[test]
    fn bounded_by_bytes() {
        let one = u64::from(response("t", "m", 10_000).weight());
        let cache = ResponseCache::new(one * 5, Duration::from_secs(60));
        for n in 0..20 {
            cache.insert(key(n), response("t", "m", 10_000), None);
            // Reads give the admission policy a frequency for each entry.
            cache.get(&key(n));
        }
        let stats = cache.stats();
        assert!(stats.bytes <= one * 5, "{stats:?}");
        assert!(stats.entries <= 5, "{stats:?}");
        assert!(stats.evictions >= 1, "{stats:?}");
    }

    #[test]
    fn purge_by_model_tenant_and_all() {
        let cache = ResponseCache::new(1 << 20, Duration::from_secs(60));
        cache.insert(key(1), response("a", "gpt-4o", 10), None);
        cache.insert(key(2), response("a", "gpt-4o-mini", 10), None);
        cache.insert(key(3), response("b", "gpt-4o", 10), None);
        cache.insert(key(4), response("b", "claude", 10), None);
        assert_eq!(cache.purge_where(|e| e.model == "gpt-4o"), 2);
        assert!(cache.get(&key(1)).is_none());
        assert!(cache.get(&key(2)).is_some());
        assert_eq!(cache.purge_where(|e| e.tenant == "b"), 1);
        assert_eq!(cache.stats().entries, 1);
        cache.purge_all();
        assert!(cache.get(&key(2)).is_none());
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes, stats.evictions), (0, 0, 0));
    }

    #[test]
    fn reinsert_replaces_and_resets_ttl() {
        let cache = ResponseCache::new(1 << 20, Duration::from_secs(60));
        cache.insert(
            key(1),
            response("t", "old", 10),
            Some(Duration::from_millis(20)),
        );
        cache.insert(
            key(1),
            response("t", "new", 10),
            Some(Duration::from_secs(60)),
        );
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            cache.get(&key(1)).map(|e| e.model.clone()).as_deref(),
            Some("new")
        );
    }
}
