//! The bounded vector index: entries grouped in partitions (one tenant's
//! requests of one shape). A lookup only ever reads its own partition, so a
//! tenant never sees another tenant's entries.
//!
//! A small partition (under [`AnnParams::min_entries`]) is searched exactly:
//! every vector is scored. A larger one also has an HNSW graph
//! ([`super::ann`]): the graph proposes the nearest candidates, which are
//! scored again exactly, and entries not in the graph yet (its *tail*) are
//! scanned. A new graph starts empty and takes its partition's entries a
//! few per insert ([`AnnParams::backfill`]), so no insert rebuilds a whole
//! graph; until it has caught up, its tail is scanned as before.
//!
//! Removed entries (evicted, expired, purged) are tombstones in the graph,
//! never returned and reused by the next adds. A graph with more tombstones
//! than live entries is dropped and started over (as above), and one whose
//! partition shrank under half of `min_entries` is dropped for good.
//!
//! Bounds: entries overall, entries per tenant and bytes (answer + vector +
//! bookkeeping + each graph's estimated memory, tombstones included); past
//! any of them the oldest entry goes first. Entries past their TTL are never
//! returned and are dropped from the front as new ones arrive.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ann::{slot_bytes, AnnParams, Graph};
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
    /// In the partition's graph (else in its tail, or it has no graph).
    graphed: bool,
}

/// One partition's vectors, row-major and unit length, beside their entries.
struct Partition {
    dims: usize,
    vectors: Vec<f32>,
    entries: Vec<Entry>,
    graph: Option<Graph>,
    /// With a graph: ids not in it yet, oldest first (removed ones are
    /// skipped when met). Empty without a graph.
    tail: VecDeque<u64>,
}

impl Partition {
    fn graph_bytes(&self) -> usize {
        self.graph.as_ref().map_or(0, Graph::bytes)
    }
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
    /// Entries' bytes plus the graphs'.
    pub bytes: usize,
    pub partitions: usize,
    pub evicted: u64,
    /// Partitions with a graph.
    pub graphs: usize,
    /// The graphs' estimated bytes (in `bytes`).
    pub graph_bytes: usize,
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
    /// The entries' bytes.
    bytes: usize,
    /// The graphs' bytes ([`Graph::bytes`], kept up to date).
    graph_bytes: usize,
    next_id: u64,
    evicted: u64,
    ann: AnnParams,
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
    /// An empty index whose large partitions get graphs as `ann` says
    /// ([`Index::default`] uses [`AnnParams::default`]).
    pub fn with_ann(ann: AnnParams) -> Self {
        Index {
            ann,
            ..Index::default()
        }
    }

    /// The best live entry of `part` for a unit-length `query`.
    pub fn nearest(&self, part: &PartKey, query: &[f32], now: Instant) -> Option<Nearest> {
        let p = self.parts.get(part)?;
        if p.dims != query.len() {
            return None;
        }
        let candidates = p
            .graph
            .as_ref()
            .and_then(|g| g.search(query, self.ann.candidates));
        let (score, row) = match candidates {
            Some(ids) => {
                // The graph's candidates and the tail, scored exactly. An id
                // no longer in `rows` is a removed entry (ids are never reused).
                let rows = ids
                    .iter()
                    .chain(p.tail.iter())
                    .filter_map(|id| self.rows.get(id).copied());
                best_of(p, rows, query, now)?
            }
            None => best_of(p, 0..p.entries.len(), query, now)?,
        };
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
            && (self.order.len() >= bounds.max_entries
                || self.total_bytes() + bytes + self.new_slot_bytes(&part, vector.len())
                    > bounds.max_bytes)
        {
            self.remove_at(0);
        }
        let id = self.next_id;
        self.next_id += 1;
        let p = self.parts.entry(part).or_insert_with(|| Partition {
            dims: vector.len(),
            vectors: Vec::new(),
            entries: Vec::new(),
            graph: None,
            tail: VecDeque::new(),
        });
        self.rows.insert(id, p.entries.len());
        p.vectors.extend_from_slice(&vector);
        p.entries.push(Entry {
            id,
            answer,
            expires: now + ttl,
            graphed: false,
        });
        if p.graph.is_some() {
            p.tail.push_back(id);
        }
        self.order.push_back(Slot {
            id,
            part,
            tenant,
            bytes,
        });
        *self.per_tenant.entry(tenant).or_insert(0) += 1;
        self.bytes += bytes;
        self.grow_graph(&part);
        // The backfill may have taken new graph slots.
        while self.order.len() > 1 && self.total_bytes() > bounds.max_bytes {
            self.remove_at(0);
        }
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
            ann: self.ann,
            ..Index::default()
        };
        n
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats {
            entries: self.order.len(),
            bytes: self.total_bytes(),
            partitions: self.parts.len(),
            evicted: self.evicted,
            graphs: self.parts.values().filter(|p| p.graph.is_some()).count(),
            graph_bytes: self.graph_bytes,
        }
    }

    /// usearch's own count of the graphs' memory (walks every node).
    pub fn measured_graph_bytes(&self) -> usize {
        self.parts
            .values()
            .filter_map(|p| p.graph.as_ref())
            .map(Graph::measured_bytes)
            .sum()
    }

    fn total_bytes(&self) -> usize {
        self.bytes + self.graph_bytes
    }

    /// The graph bytes storing one more entry in `part` would add now.
    fn new_slot_bytes(&self, part: &PartKey, dims: usize) -> usize {
        match self.parts.get(part) {
            Some(p) => match &p.graph {
                Some(g) if !g.needs_slot() => 0,
                Some(_) => slot_bytes(dims, self.ann.connectivity),
                None if p.entries.len() + 1 >= self.ann.min_entries => {
                    slot_bytes(dims, self.ann.connectivity)
                }
                None => 0,
            },
            None if self.ann.min_entries <= 1 => slot_bytes(dims, self.ann.connectivity),
            None => 0,
        }
    }

    /// Gives a partition that reached `min_entries` a graph, and moves up to
    /// `1 + backfill` entries of its tail into it.
    fn grow_graph(&mut self, part: &PartKey) {
        let ann = self.ann;
        let Some(p) = self.parts.get_mut(part) else {
            return;
        };
        let before = p.graph_bytes();
        if p.graph.is_none() && p.entries.len() >= ann.min_entries {
            if let Some(g) = Graph::new(p.dims, &ann) {
                p.graph = Some(g);
                p.tail = p.entries.iter().map(|e| e.id).collect();
            }
        }
        let mut added = 0;
        let mut met = 0;
        // Removed ids are skipped but counted (4 per add allowed), so a tail
        // of removed entries cannot make one insert slow either.
        while added <= ann.backfill && met <= 4 * (ann.backfill + 1) {
            let Some(g) = p.graph.as_mut() else {
                break;
            };
            let Some(id) = p.tail.pop_front() else {
                break;
            };
            met += 1;
            let Some(&row) = self.rows.get(&id) else {
                continue;
            };
            let v = &p.vectors[row * p.dims..(row + 1) * p.dims];
            if g.add(id, v) {
                p.entries[row].graphed = true;
                added += 1;
            } else {
                // usearch refused (logged): back to exact for this partition.
                p.graph = None;
                p.tail.clear();
                p.entries.iter_mut().for_each(|e| e.graphed = false);
            }
        }
        let after = p.graph_bytes();
        self.graph_bytes = self.graph_bytes + after - before;
    }

    fn drop_partition(&mut self, part: &PartKey) {
        while let Some(i) = self.order.iter().position(|s| &s.part == part) {
            self.remove_at(i);
        }
    }

    /// Removes the `i`th oldest entry: its row is swapped with the
    /// partition's last, and it becomes a tombstone in the graph.
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
        let before = p.graph_bytes();
        if let Some(g) = p.graph.as_mut() {
            if p.entries[row].graphed {
                g.remove(slot.id);
            }
        }
        let last = p.entries.len() - 1;
        p.entries.swap_remove(row);
        let d = p.dims;
        if row != last {
            p.vectors.copy_within(last * d..(last + 1) * d, row * d);
            self.rows.insert(p.entries[row].id, row);
        }
        p.vectors.truncate(last * d);
        let live = p.entries.len();
        if let Some(g) = &p.graph {
            // More tombstones than live entries: start the graph over (it
            // catches up a few entries per insert); a partition that shrank
            // well under the threshold goes back to exact.
            if live == 0 || g.dead() > g.live() || live < self.ann.min_entries / 2 {
                p.graph = None;
                p.tail.clear();
                p.entries.iter_mut().for_each(|e| e.graphed = false);
            }
        }
        self.graph_bytes = self.graph_bytes + p.graph_bytes() - before;
        if p.entries.is_empty() {
            self.parts.remove(&slot.part);
        }
    }
}

/// The best live row of `rows` for `query`, scored exactly.
fn best_of(
    p: &Partition,
    rows: impl Iterator<Item = usize>,
    query: &[f32],
    now: Instant,
) -> Option<(f32, usize)> {
    let d = p.dims;
    let mut best: Option<(f32, usize)> = None;
    for row in rows {
        let Some(v) = p.vectors.get(row * d..(row + 1) * d) else {
            continue;
        };
        let score = dot(v, query);
        if best.is_none_or(|(b, _)| score > b) && p.entries[row].expires > now {
            best = Some((score, row));
        }
    }
    best
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

    /// Small graphs for fast tests: a partition of 64 entries gets one.
    fn small() -> AnnParams {
        AnnParams {
            min_entries: 64,
            ..AnnParams::default()
        }
    }

    fn random_unit(rng: &mut fastrand::Rng, dims: usize) -> Vec<f32> {
        unit(&(0..dims).map(|_| rng.f32() * 2.0 - 1.0).collect::<Vec<_>>())
    }

    /// `n` random unit vectors.
    fn random_units(rng: &mut fastrand::Rng, n: usize, dims: usize) -> Vec<Vec<f32>> {
        (0..n).map(|_| random_unit(rng, dims)).collect()
    }

    /// `v` plus a little noise: a paraphrase (cosine ~0.98).
    fn paraphrase(rng: &mut fastrand::Rng, v: &[f32]) -> Vec<f32> {
        unit(
            &v.iter()
                .map(|x| x + (rng.f32() - 0.5) * 0.06)
                .collect::<Vec<_>>(),
        )
    }

    fn part(n: u8) -> PartKey {
        [n; 32]
    }

    #[test]
    fn a_paraphrase_is_found_through_the_graph() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut ix = Index::with_ann(small());
        let mut exact = Index::with_ann(AnnParams::exact());
        let now = Instant::now();
        let vs = random_units(&mut rng, 600, 48);
        for (i, v) in vs.iter().enumerate() {
            let a = answer(&format!("e{i}"));
            ix.insert(part(1), 1, v.clone(), a.clone(), HOUR, now, BIG_ANN);
            exact.insert(part(1), 1, v.clone(), a, HOUR, now, BIG_ANN);
        }
        let s = ix.stats();
        assert_eq!((s.entries, s.graphs), (600, 1));
        assert_eq!(exact.stats().graphs, 0);
        // The graph has caught up: its tail is empty.
        assert!(ix.parts[&part(1)].tail.is_empty());
        assert!(ix.parts[&part(1)].entries.iter().all(|e| e.graphed));
        for i in (0..600).step_by(7) {
            let q = paraphrase(&mut rng, &vs[i]);
            let n = ix.nearest(&part(1), &q, now).expect("hit");
            let e = exact.nearest(&part(1), &q, now).expect("hit");
            assert!(body(&n).contains(&format!("\"e{i}\"")), "{i}: {}", body(&n));
            assert_eq!(n.score, e.score);
        }
    }

    #[test]
    fn tombstoned_and_expired_entries_are_never_returned() {
        let mut rng = fastrand::Rng::with_seed(2);
        let mut ix = Index::with_ann(small());
        let now = Instant::now();
        let short = Duration::from_secs(60);
        let b = Bounds {
            max_entries_per_tenant: 300,
            ..BIG_ANN
        };
        let vs = random_units(&mut rng, 400, 32);
        for (i, v) in vs.iter().enumerate() {
            // Odd entries expire after a minute.
            let ttl = if i % 2 == 1 { short } else { HOUR };
            ix.insert(part(1), 1, v.clone(), answer(&format!("e{i}")), ttl, now, b);
        }
        // The first 100 were evicted by the tenant bound: tombstones.
        assert_eq!(ix.stats().entries, 300);
        assert_eq!(ix.stats().graphs, 1);
        for (i, v) in vs.iter().enumerate().take(100) {
            let n = ix.nearest(&part(1), v, now).expect("hit");
            assert!(
                !body(&n).contains(&format!("\"e{i}\"")),
                "evicted {i} returned"
            );
        }
        // Past a minute, no odd (expired) entry is returned, even for its own vector.
        let later = now + short;
        for (i, v) in vs.iter().enumerate().skip(100) {
            let n = ix.nearest(&part(1), v, later).expect("hit");
            let got = body(&n);
            if i % 2 == 0 {
                assert!(got.contains(&format!("\"e{i}\"")), "{i}: {got}");
            } else {
                assert!(!got.contains(&format!("\"e{i}\"")), "expired {i} returned");
            }
        }
        // A new entry takes a removed one's slot and is found.
        ix.insert(part(1), 1, vs[0].clone(), answer("new"), HOUR, later, b);
        let n = ix.nearest(&part(1), &vs[0], later).expect("hit");
        assert!(body(&n).contains("new"));
        // A purge drops the graphs and their bytes.
        ix.clear();
        assert_eq!((ix.stats().graphs, ix.stats().graph_bytes), (0, 0));
    }

    #[test]
    fn a_graph_with_more_tombstones_than_entries_starts_over() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut ix = Index::with_ann(small());
        let now = Instant::now();
        let vs = random_units(&mut rng, 300, 32);
        for (i, v) in vs.iter().enumerate() {
            let ttl = if i < 200 {
                Duration::from_secs(60)
            } else {
                HOUR
            };
            ix.insert(
                part(1),
                1,
                v.clone(),
                answer(&format!("e{i}")),
                ttl,
                now,
                BIG_ANN,
            );
        }
        let later = now + Duration::from_secs(61);
        // 200 expire: 200 tombstones for 100 live entries: a new graph, fed
        // a few entries per insert; the rest are scanned exactly meanwhile.
        ix.insert(
            part(1),
            1,
            vs[0].clone(),
            answer("new"),
            HOUR,
            later,
            BIG_ANN,
        );
        let p = &ix.parts[&part(1)];
        let g = p.graph.as_ref().expect("a new graph");
        assert_eq!(g.dead(), 0);
        assert_eq!(g.live(), small().backfill + 1);
        assert_eq!(p.tail.len(), 101 - g.live());
        for (i, v) in vs.iter().enumerate().skip(200) {
            let n = ix.nearest(&part(1), v, later).expect("hit");
            assert!(body(&n).contains(&format!("\"e{i}\"")), "{i}: {}", body(&n));
        }
        // Under half the threshold: back to exact.
        let b = Bounds {
            max_entries_per_tenant: 20,
            ..BIG_ANN
        };
        ix.insert(part(1), 1, vs[1].clone(), answer("x"), HOUR, later, b);
        assert_eq!(ix.stats().graphs, 0);
        assert_eq!(ix.stats().graph_bytes, 0);
    }

    #[test]
    fn graphs_keep_tenants_apart() {
        let mut rng = fastrand::Rng::with_seed(4);
        let mut ix = Index::with_ann(small());
        let now = Instant::now();
        let mut a = Vec::new();
        for i in 0..200 {
            let v = random_unit(&mut rng, 32);
            ix.insert(
                part(1),
                1,
                v.clone(),
                answer(&format!("a{i}")),
                HOUR,
                now,
                BIG_ANN,
            );
            a.push(v);
            let w = random_unit(&mut rng, 32);
            ix.insert(part(2), 2, w, answer(&format!("b{i}")), HOUR, now, BIG_ANN);
        }
        assert_eq!(ix.stats().graphs, 2);
        for v in &a {
            // Tenant 2's lookup with tenant 1's exact vector: only tenant 2's answers.
            let n = ix.nearest(&part(2), v, now).expect("hit");
            assert!(body(&n).contains("\"b"), "{}", body(&n));
            assert!(n.score < 0.99);
            let n = ix.nearest(&part(1), v, now).expect("hit");
            assert!(body(&n).contains("\"a"));
            assert!(n.score > 0.999);
        }
    }

    #[test]
    fn lookups_from_many_threads_at_once_are_answered() {
        // More threads than the graph has search contexts (2 per core, at least 4): a
        // search that finds none free scans exactly instead; every answer is right.
        let mut rng = fastrand::Rng::with_seed(6);
        let mut ix = Index::with_ann(small());
        let now = Instant::now();
        let vs = random_units(&mut rng, 400, 32);
        for (i, v) in vs.iter().enumerate() {
            ix.insert(
                part(1),
                1,
                v.clone(),
                answer(&format!("e{i}")),
                HOUR,
                now,
                BIG_ANN,
            );
        }
        assert_eq!(ix.stats().graphs, 1);
        let ix = &ix;
        let vs = &vs;
        std::thread::scope(|s| {
            for t in 0..16 {
                s.spawn(move || {
                    for i in (t..400).step_by(16) {
                        let n = ix.nearest(&part(1), &vs[i], now).expect("hit");
                        assert!(body(&n).contains(&format!("\"e{i}\"")), "{i}");
                    }
                });
            }
        });
    }

    #[test]
    fn the_byte_bound_counts_the_graphs() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut ix = Index::with_ann(small());
        let now = Instant::now();
        let b = Bounds {
            max_bytes: 400_000,
            ..BIG_ANN
        };
        for i in 0..1500 {
            let v = random_unit(&mut rng, 64);
            assert!(ix.insert(part(1), 1, v, answer(&format!("e{i}")), HOUR, now, b));
            let s = ix.stats();
            assert!(s.bytes <= b.max_bytes, "{i}: {s:?}");
        }
        let s = ix.stats();
        assert_eq!(s.graphs, 1);
        assert!(s.graph_bytes > 0 && s.entries > 64, "{s:?}");
        // The estimate is not below usearch's own count.
        assert!(
            s.graph_bytes >= ix.measured_graph_bytes(),
            "{} < {}",
            s.graph_bytes,
            ix.measured_graph_bytes()
        );
        // Without the graph the same bound would hold more entries.
        let mut exact = Index::with_ann(AnnParams::exact());
        for _ in 0..1500 {
            let v = random_unit(&mut rng, 64);
            exact.insert(part(1), 1, v, answer("e"), HOUR, now, b);
        }
        assert!(exact.stats().entries > s.entries);
    }

    const BIG_ANN: Bounds = Bounds {
        max_entries: 10_000,
        max_entries_per_tenant: 10_000,
        max_bytes: 1 << 30,
    };

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
