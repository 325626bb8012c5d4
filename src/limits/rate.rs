//! Rate limits: requests and tokens per minute, and concurrent requests, per
//! any combination of key, user, team, model and feature.
//!
//! Tokens are reserved at an estimate (input tokens + the output cap) when a
//! request is admitted and settled with the real usage when it finishes. The
//! counters live outside the config snapshot, so a reload keeps them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use serde::Serialize;

use super::window::{Refused, SlidingWindow};
use crate::config::RateRule;
use crate::glob::in_filter;
pub use crate::vocab::{bucket_key, Allowance, LimitKind, RateLimited, Subject};
use crate::vocab::{BucketName, BucketProbe};

const SHARDS: usize = 16;
/// The bucket a rule's identities share once the map is full.
const OVERFLOW: &str = "|~overflow";

#[derive(Debug, Default)]
struct Bucket {
    requests: SlidingWindow,
    tokens: SlidingWindow,
    inflight: u64,
}

impl Bucket {
    fn idle(&self) -> bool {
        self.inflight == 0 && self.requests.is_empty() && self.tokens.is_empty()
    }
}

/// The counters of every rate limit bucket, shared by all config snapshots.
///
/// Bounded: a bucket is swept once idle (`sweep`, run by a background task),
/// and at most `max_buckets` exist. Past that, a new identity is counted in
/// its rule's shared overflow bucket (`rule|~overflow`) under the same limit,
/// so the cap can make limits tighter for newcomers, never looser. A new
/// identity also goes to the overflow bucket while that bucket still holds
/// recent use, so nobody's use is ever split across two buckets.
#[derive(Debug)]
pub struct RateLimiter {
    shards: Vec<Mutex<HashMap<BucketName, Bucket>>>,
    max_buckets: AtomicUsize,
}

/// The windows' clock: milliseconds since the first use, monotonic.
fn clock_ms(now: Instant) -> u64 {
    static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(now.saturating_duration_since(*ORIGIN).as_millis()).unwrap_or(u64::MAX)
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            max_buckets: AtomicUsize::new(crate::config::DEFAULT_MAX_BUCKETS),
        }
    }
}

/// Whether a tokens-per-minute rule applies to requests for `model`.
pub fn needs_tokens(rules: &[RateRule], model: &str) -> bool {
    rules
        .iter()
        .any(|r| r.tokens_per_minute.is_some() && applies(r, model))
}

fn applies(rule: &RateRule, model: &str) -> bool {
    in_filter(rule.models.as_ref(), model)
}

/// What an admitted request holds until it finishes.
#[derive(Debug)]
struct Hold {
    bucket: BucketName,
    /// The second the tokens were booked in and how many.
    tokens: Option<(u64, u64)>,
    concurrent: bool,
}

/// An admitted request's reservations; settle it with the actual tokens.
/// Dropped unsettled, it releases its concurrency slots and keeps its
/// reserved tokens (the safe side).
#[derive(Debug)]
pub struct Admission {
    limiter: Arc<RateLimiter>,
    holds: Vec<Hold>,
    pub allowance: Allowance,
}

impl RateLimiter {
    /// The shard of a bucket, by its name's hash (`BucketName::hash_value`).
    fn shard(&self, hash: u64) -> MutexGuard<'_, HashMap<BucketName, Bucket>> {
        // The high bits: the maps inside use the low ones.
        let i = ((hash >> 48) as usize) % SHARDS;
        // A poisoned shard only means a panic elsewhere mid-update; the
        // counters are still usable.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the most buckets kept (`[state] max_buckets`).
    pub fn set_max_buckets(&self, n: usize) {
        self.max_buckets.store(n.max(1), Ordering::Relaxed);
    }

    /// The most buckets one shard may hold.
    fn shard_cap(&self) -> usize {
        (self.max_buckets.load(Ordering::Relaxed) / SHARDS).max(1)
    }

    /// Whether a rule's overflow bucket holds use in the window.
    fn overflow_in_use(&self, key: &BucketProbe<'_>) -> bool {
        self.shard(key.hash_value())
            .get(key)
            .is_some_and(|b| !b.idle())
    }

    /// Number of buckets held.
    pub fn entries(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Drops every bucket with nothing in its window and nothing in flight;
    /// returns how many are left.
    pub fn sweep(&self, now: Instant) -> usize {
        let now = clock_ms(now);
        let mut left = 0;
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, b| {
                let _ = b.requests.used(now);
                let _ = b.tokens.used(now);
                !b.idle()
            });
            left += map.len();
        }
        left
    }

    /// Admits a request under every rule that applies, or refuses it;
    /// `tokens` is the reservation. All-or-nothing: a refusal releases what
    /// earlier rules took.
    pub fn admit(
        self: &Arc<Self>,
        rules: &[RateRule],
        subject: &Subject<'_>,
        tokens: u64,
    ) -> Result<Admission, RateLimited> {
        let mut adm = Admission {
            limiter: self.clone(),
            holds: Vec::new(),
            allowance: Allowance::default(),
        };
        for rule in rules.iter().filter(|r| applies(r, subject.model)) {
            // An exempt subject (an `"unlimited"` override) is not counted.
            let Some(limits) = rule.limits_for(subject) else {
                continue;
            };
            // The bucket is found by its name's pieces; the name is only
            // built when the bucket is created.
            let own = BucketProbe::new(&rule.name, &rule.scope, subject);
            let overflow = BucketProbe::suffixed(&rule.name, OVERFLOW);
            let mut probe = &own;
            let mut shard = self.shard(own.hash_value());
            if !rule.scope.is_empty() && !shard.contains_key(&own) {
                // A new identity: its own bucket if there is room and the
                // overflow bucket is not in use, else the overflow bucket.
                let full = shard.len() >= self.shard_cap();
                drop(shard);
                if full || self.overflow_in_use(&overflow) {
                    probe = &overflow;
                }
                shard = self.shard(probe.hash_value());
            }
            // Times are read under the bucket's lock, so each window's
            // seconds stay in order.
            let now = clock_ms(Instant::now());
            let entry = shard.entry_ref(probe).or_default_entry();
            let key = entry.key().clone();
            let b = entry.into_mut();
            let refuse = |kind, limit, requested, r: Refused| RateLimited {
                rule: rule.name.clone(),
                kind,
                limit,
                requested,
                retry_after: r.retry_after,
                never_fits: r.never_fits,
            };
            if let Some(max) = limits.max_concurrent {
                if b.inflight >= max {
                    drop(shard);
                    adm.release();
                    return Err(RateLimited {
                        rule: rule.name.clone(),
                        kind: LimitKind::Concurrent,
                        limit: max,
                        requested: 1,
                        retry_after: Duration::from_secs(1),
                        never_fits: false,
                    });
                }
            }
            let mut request = None;
            if let Some(rpm) = limits.requests_per_minute {
                match b.requests.try_take(now, rpm, 1) {
                    Ok(second) => request = Some(second),
                    Err(r) => {
                        drop(shard);
                        adm.release();
                        return Err(refuse(LimitKind::Requests, rpm, 1, r));
                    }
                }
            }
            let mut booked = None;
            if let Some(tpm) = limits.tokens_per_minute {
                match b.tokens.try_take(now, tpm, tokens) {
                    Ok(second) => booked = Some((second, tokens)),
                    Err(r) => {
                        // Give back the request slot taken just above.
                        if let Some(second) = request {
                            b.requests.settle(now, second, 1, 0);
                        }
                        drop(shard);
                        adm.release();
                        return Err(refuse(LimitKind::Tokens, tpm, tokens, r));
                    }
                }
            }
            if limits.max_concurrent.is_some() {
                b.inflight += 1;
            }
            let a = &mut adm.allowance;
            if let Some(rpm) = limits.requests_per_minute {
                let left = rpm.saturating_sub(b.requests.used(now));
                if a.requests.is_none_or(|(_, l, _)| left < l) {
                    a.requests = Some((rpm, left, b.requests.reset_after(now)));
                }
            }
            if let Some(tpm) = limits.tokens_per_minute {
                let left = tpm.saturating_sub(b.tokens.used(now));
                if a.tokens.is_none_or(|(_, l, _)| left < l) {
                    a.tokens = Some((tpm, left, b.tokens.reset_after(now)));
                }
            }
            adm.holds.push(Hold {
                bucket: key,
                tokens: booked,
                concurrent: limits.max_concurrent.is_some(),
            });
        }
        Ok(adm)
    }

    /// Current use of every bucket whose name contains `filter`
    /// (e.g. `user=alice`), for the admin API.
    pub fn snapshot(&self, filter: &str) -> Vec<BucketState> {
        self.sweep(Instant::now());
        let now = clock_ms(Instant::now());
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (k, b) in map.iter_mut() {
                if k.as_str().contains(filter) {
                    out.push(BucketState {
                        bucket: k.as_str().to_owned(),
                        requests_last_minute: b.requests.used(now),
                        tokens_last_minute: b.tokens.used(now),
                        inflight: b.inflight,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.bucket.cmp(&b.bucket));
        out
    }
}

/// One bucket's state, for the admin API.
#[derive(Debug, Serialize)]
pub struct BucketState {
    pub bucket: String,
    pub requests_last_minute: u64,
    pub tokens_last_minute: u64,
    pub inflight: u64,
}

impl Admission {
    /// Settles the token reservations with the tokens actually used and
    /// releases concurrency slots.
    pub fn settle(mut self, actual_tokens: u64) {
        let now = clock_ms(Instant::now());
        for h in std::mem::take(&mut self.holds) {
            let mut shard = self.limiter.shard(h.bucket.hash_value());
            if let Some(b) = shard.get_mut(&h.bucket) {
                if let Some((second, reserved)) = h.tokens {
                    b.tokens.settle(now, second, reserved, actual_tokens);
                }
                if h.concurrent {
                    b.inflight = b.inflight.saturating_sub(1);
                }
            }
        }
    }

    /// Releases everything taken so far (a later rule refused the request).
    fn release(&mut self) {
        let now = clock_ms(Instant::now());
        for h in std::mem::take(&mut self.holds) {
            let mut shard = self.limiter.shard(h.bucket.hash_value());
            if let Some(b) = shard.get_mut(&h.bucket) {
                if let Some((second, reserved)) = h.tokens {
                    b.tokens.settle(now, second, reserved, 0);
                }
                if h.concurrent {
                    b.inflight = b.inflight.saturating_sub(1);
                }
            }
        }
    }

    /// Whether any rule applied.
    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        for h in std::mem::take(&mut self.holds) {
            if h.concurrent {
                let mut shard = self.limiter.shard(h.bucket.hash_value());
                if let Some(b) = shard.get_mut(&h.bucket) {
                    b.inflight = b.inflight.saturating_sub(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
