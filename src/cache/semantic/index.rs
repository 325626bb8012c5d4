//! The bounded vector index: entries grouped in partitions (one tenant's
//! requests of one shape), searched exactly (every vector of the partition
//! is scored; no approximation, so no recall loss). A lookup only ever reads
//! its own partition, so a tenant never sees another tenant's entries.
//!
//! Bounds: entries overall, entries per tenant and bytes (answer + vector +
//! bookkeeping); past any of them the oldest entry goes first. Entries past
//! their TTL are never returned and are dropped from the front as new ones
//! arrive.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::CachedResponse;

/// A partition: the tenant and every request field that must be equal for
/// two requests to match (a SHA-256, see `request::partition`).
pub type PartKey = [u8; 32];

/// How much the index may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_entries: usize,
    pub max_entries_per_tenant: usize,
    pub max_bytes: usize,
}

/// Fixed bookkeeping counted per entry besides its answer and vector.
const ENTRY_OVERHEAD: usize = 160;

struct Entry {
    id: u64,
    answer: Arc<CachedResponse>,
    expires: Instant,
}

/// One partition's vectors, row-major and unit length, beside their entries.
struct Partition {
    dims: usize,
    vectors: Vec<f32>,
    entries: Vec<Entry>,
}

/// Where an entry is and what it weighs, in insertion order.
struct Slot {
    id: u64,
    part: PartKey,
    tenant: u64,
    bytes: usize,
}

/// The nearest earlier answer found for a request.
#[derive(Debug, Clone)]
pub struct Nearest {
    /// Cosine similarity, -1 to 1.
    pub score: f32,
    pub answer: Arc<CachedResponse>,
}

/// What the index holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub entries: usize,
    pub bytes: usize,
    pub partitions: usize,
    pub evicted: u64,
}

/// The semantic cache's entries.
#[derive(Default)]
pub struct Index {
    parts: HashMap<PartKey, Partition>,
    /// Entry id to its row in its partition.
    rows: HashMap<u64, usize>,
    /// Insertion order (oldest first): eviction and expiry.
    order: VecDeque<Slot>,
    per_tenant: HashMap<u64, usize>,
    bytes: usize,
    next_id: u64,
    evicted: u64,
}

/// Scales `v` to unit length; `None` for an empty, zero or non-finite vector.
pub fn normalise(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let norm = dot(&v, &v).sqrt();
    if v.is_empty() || !norm.is_finite() || norm == 0.0 {
        return None;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Some(v)
}

/// The dot product, in eight lanes so the compiler vectorises it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

impl Index {
    /// The best live entry of `part` for a unit-length `query`.
    pub fn nearest(&self, part: &PartKey, query: &[f32], now: Instant) -> Option<Nearest> {
        let p = self.parts.get(part)?;
        if p.dims != query.len() {
            return None;
        }
        let mut best: Option<(f32, usize)> = None;
        for (row, v) in p.vectors.chunks_exact(p.dims).enumerate() {
            let score = dot(v, query);
            if best.is_none_or(|(b, _)| score > b) && p.entries[row].expires > now {
                best = Some((score, row));
            }
        }
        let (score, row) = best?;
        Some(Nearest {
            score,
            answer: p.entries[row].answer.clone(),
        })
    }

    /// Stores an answer under a unit-length vector, evicting the oldest
    /// entries (of the tenant, then overall) past the bounds. Returns
    /// whether it was stored (an entry larger than the byte bound is not).
    #[expect(
        clippy::too_many_arguments,
        reason = "an entry's parts come from the request and the answer"
    )]
    pub fn insert(
        &mut self,
        part: PartKey,
        tenant: u64,
        vector: Vec<f32>,
        answer: Arc<CachedResponse>,
        ttl: Duration,
        now: Instant,
        bounds: Bounds,
    ) -> bool {
        let bytes = ENTRY_OVERHEAD + vector.len() * 4 + answer.weight() as usize;
        if bytes > bounds.max_bytes || bounds.max_entries == 0 || vector.is_empty() {
            return false;
        }
        if self
            .parts
            .get(&part)
            .is_some_and(|p| p.dims != vector.len())
        {
            // A partition holds one embedding size; a changed embedding
            // model starts it over.
            self.drop_partition(&part);
        }
        self.expire(now);
        while self.per_tenant.get(&tenant).copied().unwrap_or(0) >= bounds.max_entries_per_tenant {
            let Some(i) = self.order.iter().position(|s| s.tenant == tenant) else {
                break;
            };
            self.remove_at(i);
        }
        while !self.order.is_empty()
            && (self.order.len() >= bounds.max_entries || self.bytes + bytes > bounds.max_bytes)
        {
            self.remove_at(0);
        }
        let id = self.next_id;
        self.next_id += 1;
        let p = self.parts.entry(part).or_insert_with(|| Partition {
            dims: vector.len(),
            vectors: Vec::new(),
            entries: Vec::new(),
        });
        self.rows.insert(id, p.entries.len());
        p.vectors.extend_from_slice(&vector);
        p.entries.push(Entry {
            id,
            answer,
            expires: now + ttl,
        });
        self.order.push_back(Slot {
            id,
            part,
            tenant,
            bytes,
        });
        *self.per_tenant.entry(tenant).or_insert(0) += 1;
        self.bytes += bytes;
        true
    }

    /// Drops expired entries from the front of the insertion order.
    pub fn expire(&mut self, now: Instant) {
        while let Some(s) = self.order.front() {
            let expired = self
                .parts
                .get(&s.part)
                .and_then(|p| Some(p.entries.get(*self.rows.get(&s.id)?)?.expires <= now))
                .unwrap_or(true);
            if !expired {
                break;
            }
            self.remove_at(0);
        }
    }

    /// Removes every entry.
    pub fn clear(&mut self) -> usize {
        let n = self.order.len();
        *self = Index {
            next_id: self.next_id,
            evicted: self.evicted,
            ..Index::default()
        };
        n
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats {
            entries: self.order.len(),
            bytes: self.bytes,
            partitions: self.parts.len(),
            evicted: self.evicted,
        }
    }

    fn drop_partition(&mut self, part: &PartKey) {
        while let Some(i) = self.order.iter().position(|s| &s.part == part) {
            self.remove_at(i);
        }
    }

    /// Removes the `i`th oldest entry: its row is swapped with the
    /// partition's last.
    fn remove_at(&mut self, i: usize) {
        let Some(slot) = self.order.remove(i) else {
            return;
        };
        self.evicted += 1;
        self.bytes = self.bytes.saturating_sub(slot.bytes);
        if let Some(n) = self.per_tenant.get_mut(&slot.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_tenant.remove(&slot.tenant);
            }
        }
        let Some(row) = self.rows.remove(&slot.id) else {
            return;
        };
        let Some(p) = self.parts.get_mut(&slot.part) else {
            return;
        };
        let last = p.entries.len() - 1;
        p.entries.swap_remove(row);
        let d = p.dims;
        if row != last {
            p.vectors.copy_within(last * d..(last + 1) * d, row * d);
            self.rows.insert(p.entries[row].id, row);
        }
        p.vectors.truncate(last * d);
        if p.entries.is_empty() {
            self.parts.remove(&slot.part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sniff::Endpoint;

    fn answer(text: &str) -> Arc<CachedResponse> {
        Arc::new(CachedResponse::json(
            Endpoint::ChatCompletions,
            "t",
            "m",
            bytes::Bytes::from(format!("{{\"choices\":[],\"x\":\"{text}\"}}")),
        ))
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        normalise(v.to_vec()).expect("unit")
    }

    const BIG: Bounds = Bounds {
        max_entries: 100,
        max_entries_per_tenant: 100,
        max_bytes: 1 << 20,
    };
    const HOUR: Duration = Duration::from_secs(3600);

    fn body(n: &Nearest) -> String {
        String::from_utf8_lossy(&n.answer.body).into_owned()
    }

    #[test]
    fn the_nearest_live_entry_of_the_partition_wins() {
        let mut ix = Index::default();
        let now = Instant::now();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        ix.insert(a, 1, unit(&[1.0, 0.0]), answer("x"), HOUR, now, BIG);
        ix.insert(a, 1, unit(&[0.0, 1.0]), answer("y"), HOUR, now, BIG);
        ix.insert(b, 2, unit(&[0.9, 0.1]), answer("other"), HOUR, now, BIG);
        let n = ix.nearest(&a, &unit(&[0.8, 0.2]), now).expect("hit");
        assert!(body(&n).contains("\"x\""), "{}", body(&n));
        assert!(n.score > 0.9 && n.score < 1.0);
        // Another partition (another tenant) is never searched.
        let n = ix.nearest(&b, &unit(&[0.0, 1.0]), now).expect("hit");
        assert!(body(&n).contains("other"));
        assert!(ix.nearest(&[3u8; 32], &unit(&[1.0, 0.0]), now).is_none());
        // A different size of vector never matches.
        assert!(ix.nearest(&a, &unit(&[1.0, 0.0, 0.0]), now).is_none());
        // Past the TTL: gone.
        assert!(ix.nearest(&a, &unit(&[1.0, 0.0]), now + HOUR).is_none());
    }

    #[test]
    fn bounds_evict_the_oldest_and_rows_stay_consistent() {
        let mut ix = Index::default();
        let now = Instant::now();
        let b = Bounds {
            max_entries: 3,
            max_entries_per_tenant: 2,
            max_bytes: 1 << 20,
        };
        let p = [1u8; 32];
        ix.insert(p, 1, unit(&[1.0, 0.0]), answer("a1"), HOUR, now, b);
        ix.insert(p, 1, unit(&[0.0, 1.0]), answer("a2"), HOUR, now, b);
        // Tenant 1 is full: its oldest goes.
        ix.insert(p, 1, unit(&[-1.0, 0.0]), answer("a3"), HOUR, now, b);
        assert_eq!(ix.stats().entries, 2);
        let n = ix.nearest(&p, &unit(&[1.0, 0.0]), now).expect("hit");
        assert!(!body(&n).contains("a1"), "a1 was evicted");
        assert!(body(&n).contains("a2"));
        let q = [2u8; 32];
        ix.insert(q, 2, unit(&[1.0, 0.0]), answer("b1"), HOUR, now, b);
        ix.insert(q, 2, unit(&[0.0, 1.0]), answer("b2"), HOUR, now, b);
        // Three overall: a2 (the oldest) went.
        assert_eq!(ix.stats().entries, 3);
        let n = ix.nearest(&p, &unit(&[0.0, 1.0]), now).expect("hit");
        assert!(body(&n).contains("a3"), "{}", body(&n));
        // Bytes: an entry larger than the bound is refused; the bound holds.
        let small = Bounds {
            max_bytes: 700,
            ..BIG
        };
        let mut ix = Index::default();
        for i in 0..10 {
            ix.insert(p, 1, unit(&[1.0, i as f32]), answer("z"), HOUR, now, small);
            assert!(ix.stats().bytes <= 700);
        }
        assert!(ix.stats().entries >= 1);
        let tiny = Bounds {
            max_bytes: 10,
            ..BIG
        };
        assert!(!ix.insert(p, 1, unit(&[1.0, 0.0]), answer("z"), HOUR, now, tiny));
    }

    #[test]
    fn expired_entries_leave_as_new_ones_come() {
        let mut ix = Index::default();
        let now = Instant::now();
        let p = [1u8; 32];
        ix.insert(p, 1, unit(&[1.0, 0.0]), answer("old"), HOUR, now, BIG);
        ix.insert(
            p,
            1,
            unit(&[0.0, 1.0]),
            answer("new"),
            HOUR,
            now + HOUR,
            BIG,
        );
        assert_eq!(ix.stats().entries, 1);
        assert_eq!(ix.stats().partitions, 1);
        assert_eq!(ix.clear(), 1);
        assert_eq!(
            ix.stats(),
            IndexStats {
                evicted: 1,
                ..IndexStats::default()
            }
        );
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.1).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
        assert!(normalise(vec![0.0, 0.0]).is_none());
        assert!(normalise(vec![]).is_none());
    }
}
