//! The second cache level: a Redis every replica shares (`[cache]
//! shared_url`), behind each process's own cache, with the same canonical
//! tenant-scoped keys. An answer is written there only once it is complete
//! (when the first level stores it), with the same TTL; a first-level miss
//! asks it once before going upstream. Its size is bounded by the TTLs and
//! that Redis's `maxmemory` (run it with an `allkeys-lru` policy, apart from
//! the budget state's `noeviction` Redis).
//!
//! A failed or slow call (`shared_timeout`) skips the shared level for a
//! second: a miss then goes upstream as if it were not configured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::{CacheKey, CachedResponse};
use crate::config::SharedCacheConfig;
use crate::metrics;
use crate::sniff::Endpoint;

/// Key prefix of entries in the shared Redis.
const PREFIX: &str = "sluice:cache:";
/// Writes in flight at most; past it an answer is kept in this process only.
const MAX_PENDING_WRITES: usize = 1024;
/// How long a failure skips the shared level.
const BACKOFF: Duration = Duration::from_secs(1);
/// Version of the stored format (first byte).
const FORMAT: u8 = 1;

/// The shared level's client.
pub struct SharedCache {
    conn: ConnectionManager,
    timeout: Duration,
    writes: Arc<Semaphore>,
    origin: Instant,
    /// Milliseconds since `origin` until which the level is skipped.
    skip_until: Arc<AtomicU64>,
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache").finish_non_exhaustive()
    }
}

/// What is stored besides the body.
#[derive(Serialize, Deserialize)]
struct Meta {
    endpoint: String,
    status: u16,
    content_type: String,
    tenant: String,
    model: String,
}

const ENDPOINTS: [Endpoint; 5] = [
    Endpoint::ChatCompletions,
    Endpoint::Completions,
    Endpoint::Embeddings,
    Endpoint::Responses,
    Endpoint::Messages,
];

/// `FORMAT`, the metadata's length (u32, big-endian), the metadata (JSON),
/// the body.
fn encode(e: &CachedResponse) -> Option<Vec<u8>> {
    let meta = serde_json::to_vec(&Meta {
        endpoint: e.endpoint.label().to_owned(),
        status: e.status,
        content_type: e.content_type.clone(),
        tenant: e.tenant.clone(),
        model: e.model.clone(),
    })
    .ok()?;
    let len = u32::try_from(meta.len()).ok()?;
    let mut out = Vec::with_capacity(5 + meta.len() + e.body.len());
    out.push(FORMAT);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&e.body);
    Some(out)
}

/// The entry `encode` wrote; `None` for anything else (another version, a
/// foreign value under our prefix).
fn decode(bytes: &[u8]) -> Option<CachedResponse> {
    let (&format, rest) = bytes.split_first()?;
    if format != FORMAT || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    let meta = rest.get(4..4 + len)?;
    let body = rest.get(4 + len..)?;
    let meta: Meta = serde_json::from_slice(meta).ok()?;
    let endpoint = *ENDPOINTS.iter().find(|e| e.label() == meta.endpoint)?;
    if !crate::protocol::Protocol::of(endpoint).is_answer(body) {
        return None;
    }
    let mut entry = CachedResponse::json(
        endpoint,
        &meta.tenant,
        &meta.model,
        Bytes::copy_from_slice(body),
    );
    entry.status = meta.status;
    entry.content_type = meta.content_type;
    Some(entry)
}

fn redis_key(key: &CacheKey) -> String {
    format!("{PREFIX}{}", key.to_hex())
}

impl SharedCache {
    /// A lazily connecting client (Sluice starts while that Redis is down).
    pub fn start(cfg: &SharedCacheConfig) -> Result<SharedCache, redis::RedisError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(cfg.timeout))
            .set_max_delay(BACKOFF);
        Ok(SharedCache {
            conn: ConnectionManager::new_lazy_with_config(client, manager)?,
            timeout: cfg.timeout,
            writes: Arc::new(Semaphore::new(MAX_PENDING_WRITES)),
            origin: Instant::now(),
            skip_until: Arc::new(AtomicU64::new(0)),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn usable(&self) -> bool {
        self.now_ms() >= self.skip_until.load(Ordering::Relaxed)
    }

    fn failed(&self, op: &'static str, why: &str) {
        let until = self.now_ms() + BACKOFF.as_millis() as u64;
        if self.skip_until.swap(until, Ordering::Relaxed) <= self.now_ms() {
            tracing::warn!(op, error = %why, "shared cache unavailable; skipping it for a second");
        }
        metrics::shared_cache("error");
    }

    /// The entry under `key` and how long it has left, if any.
    pub async fn get(&self, key: &CacheKey) -> Option<(CachedResponse, Duration)> {
        if !self.usable() {
            return None;
        }
        let mut conn = self.conn.clone();
        let k = redis_key(key);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&k).cmd("PTTL").arg(&k);
        let call = pipe.query_async::<(Option<Vec<u8>>, i64)>(&mut conn);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((Some(bytes), ttl_ms))) if ttl_ms > 0 => match decode(&bytes) {
                Some(entry) => {
                    metrics::shared_cache("hit");
                    Some((entry, Duration::from_millis(ttl_ms.unsigned_abs())))
                }
                None => {
                    metrics::shared_cache("miss");
                    None
                }
            },
            Ok(Ok(_)) => {
                metrics::shared_cache("miss");
                None
            }
            Ok(Err(e)) => {
                self.failed("get", &e.to_string());
                None
            }
            Err(_) => {
                self.failed("get", "timed out");
                None
            }
        }
    }

    /// Writes a complete answer for `ttl`, in the background; skipped when
    /// the level is unavailable or too many writes are in flight.
    pub fn put(self: &Arc<Self>, key: &CacheKey, entry: &CachedResponse, ttl: Duration) {
        if !self.usable() || ttl.is_zero() {
            return;
        }
        let Ok(permit) = self.writes.clone().try_acquire_owned() else {
            return;
        };
        let Some(bytes) = encode(entry) else {
            return;
        };
        let this = Arc::clone(self);
        let k = redis_key(key);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        crate::worker::spawn_main(async move {
            let _permit = permit;
            let mut conn = this.conn.clone();
            let mut set = redis::cmd("SET");
            set.arg(&k).arg(bytes).arg("PX").arg(ms);
            let call = set.query_async::<()>(&mut conn);
            match tokio::time::timeout(this.timeout.max(Duration::from_millis(500)), call).await {
                Ok(Ok(())) => metrics::shared_cache("stored"),
                Ok(Err(e)) => this.failed("put", &e.to_string()),
                Err(_) => this.failed("put", "timed out"),
            }
        });
    }

    /// Deletes every shared entry (an admin purge with no filter), in the
    /// background.
    pub fn purge_all(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut conn = this.conn.clone();
            let mut cursor = 0u64;
            let mut deleted = 0usize;
            loop {
                let scan = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{PREFIX}*"))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async::<(u64, Vec<String>)>(&mut conn)
                    .await;
                let Ok((next, keys)) = scan else {
                    tracing::warn!("shared cache purge stopped: redis unavailable");
                    return;
                };
                if !keys.is_empty() {
                    deleted += keys.len();
                    let _ = redis::cmd("UNLINK")
                        .arg(&keys)
                        .query_async::<i64>(&mut conn)
                        .await;
                }
                if next == 0 {
                    tracing::info!(deleted, "shared cache purged");
                    return;
                }
                cursor = next;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_foreign_values_are_ignored() {
        let body = Bytes::from_static(
            br#"{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
        );
        let e = CachedResponse::json(
            Endpoint::ChatCompletions,
            "team:a",
            "gpt-4o-mini",
            body.clone(),
        );
        let bytes = encode(&e).expect("encodes");
        let d = decode(&bytes).expect("decodes");
        assert_eq!(
            (d.endpoint, d.status, d.body.clone()),
            (e.endpoint, 200, body)
        );
        assert_eq!(
            (d.tenant.as_str(), d.model.as_str()),
            ("team:a", "gpt-4o-mini")
        );
        assert_eq!(d.usage.map(|u| u.input), Some(3));
        assert!(decode(b"").is_none());
        assert!(decode(b"\x02rest").is_none());
        assert!(
            decode(&bytes[..bytes.len() - 3]).is_none(),
            "a cut body is no answer"
        );
        assert!(decode(b"\x01\xff\xff\xff\xff{}").is_none());
    }
}
