//! The approximate-nearest-neighbour graph of one large partition: HNSW
//! (Malkov & Yashunin) from the `usearch` crate.
//!
//! Why `usearch`: it adds entries one at a time (no rebuild: a previous
//! attempt with `instant-distance` had to rebuild its whole graph, 613 s for
//! 100k entries), removes them as soft deletes whose slots the next adds
//! reuse (so a FIFO cache's graph does not grow), reports its own memory
//! and is safe to search from several threads at once. Its core is C++
//! (built by `cc` through `cxx`: two small Rust crates and one C++ file);
//! `hnsw_rs`, the pure-Rust candidate, pulled ~30 crates (rayon, env_logger,
//! mmap-rs, nix) and measured 2.4x slower per lookup and 1.7x per insert on
//! the same data (bench/RESULTS.md, issue 16).
//!
//! The graph keeps a bf16 copy of each vector (half the bytes of the f32
//! ones the partition keeps): it only proposes candidates, which the caller
//! scores again exactly with the f32 vectors, so the copy's precision shows
//! only as a rare candidate missed, never as a wrong score. bf16, not f16:
//! without usearch's `numkong` kernels (left out: ~2 minutes more to build)
//! f16 is converted in software, and inserts measured 6x slower (1.4 ms
//! against 0.21 ms per entry at 20k x 384); bf16 converts with a shift.

use usearch::{Index as Hnsw, IndexOptions, MetricKind, ScalarKind};

/// When a partition gets a graph and how the graph is built and searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnParams {
    /// A partition with fewer live entries is searched exactly (a scan of
    /// 4,096 x 1536 dims takes ~3 ms, of 384 dims under 1 ms). One that
    /// grows to this gets a graph; one whose graph falls under half of it
    /// goes back to exact.
    pub min_entries: usize,
    /// HNSW `M`: links per node (twice that on the bottom layer).
    pub connectivity: usize,
    /// HNSW `ef_construction`.
    pub expansion_add: usize,
    /// HNSW `ef`: the search's candidate list. 128 rather than 64: on 100k
    /// random vectors (the worst case) recall@1 of paraphrases rose from 0.80
    /// to 0.96 for 1 ms more per lookup; clustered data was at 1.00 already.
    pub expansion_search: usize,
    /// Nearest candidates taken from the graph and scored exactly.
    pub candidates: usize,
    /// Entries moved into the graph per insert while it catches up (a new
    /// graph, or one started over): bounds the graph work an insert does
    /// under the index's write lock to `1 + backfill` adds (an add measured
    /// 0.33 ms at 100k x 384 clustered, 0.8 ms at 1536, 2.1 ms on random
    /// 1536-dim vectors), while the tail is scanned exactly until it is in.
    pub backfill: usize,
}

impl Default for AnnParams {
    fn default() -> Self {
        AnnParams {
            min_entries: 4096,
            connectivity: 16,
            expansion_add: 64,
            expansion_search: 128,
            candidates: 16,
            backfill: 4,
        }
    }
}

impl AnnParams {
    /// Never a graph: every partition searched exactly.
    pub fn exact() -> Self {
        AnnParams {
            min_entries: usize::MAX,
            ..AnnParams::default()
        }
    }
}

/// Bytes a graph slot is counted for: the bf16 vector, the node (key, level,
/// bottom-layer links: 4 + 8M bytes; upper layers, 1/M of the nodes each
/// level up: (4 + 4M)/(M - 1) on average, rounded up), and 64 for the node's
/// rounding to 64-byte alignment (usearch counts the same 64 per node).
pub fn slot_bytes(dims: usize, connectivity: usize) -> usize {
    let m = connectivity.max(2);
    let upper = (4 + 4 * m).div_ceil(m - 1);
    2 * dims + 16 + 4 + 8 * m + upper + 64
}

/// Bytes per reserved slot whether used or not: usearch's node table (16)
/// and vector table (8), the key-to-slot table (~24 at its load factor),
/// rounded up.
const CAPACITY_BYTES: usize = 64;

/// The graph's fixed part: per-thread search contexts and tables.
const FIXED_BYTES: usize = 64 * 1024;

/// Capacity is grown by a quarter (at least this many slots) when full.
const GROW_MIN: usize = 1024;

/// One partition's graph. Keys are entry ids (never reused), so a key the
/// caller no longer knows is a removed entry.
pub struct Graph {
    hnsw: Hnsw,
    dims: usize,
    connectivity: usize,
    /// Slots holding a vector, live or removed.
    slots: usize,
    /// Removed slots (tombstones): still walked through by searches, never
    /// returned, reused by the next adds.
    dead: usize,
    capacity: usize,
    threads: usize,
}

impl Graph {
    /// An empty graph for `dims`-dimension unit vectors; `None` (logged) if
    /// usearch refuses the options.
    pub fn new(dims: usize, p: &AnnParams) -> Option<Graph> {
        let options = IndexOptions {
            dimensions: dims,
            // Inner product: the vectors are unit length, so this is the cosine.
            metric: MetricKind::IP,
            quantization: ScalarKind::BF16,
            connectivity: p.connectivity,
            expansion_add: p.expansion_add,
            expansion_search: p.expansion_search,
            multi: false,
        };
        // Each concurrent search holds one context; lookups run on the
        // runtime's workers, so a few per core, and a search that finds none
        // free falls back to the exact scan.
        let threads = std::thread::available_parallelism()
            .map_or(4, |n| n.get() * 2)
            .clamp(4, 64);
        match Hnsw::new(&options) {
            Ok(hnsw) => Some(Graph {
                hnsw,
                dims,
                connectivity: p.connectivity,
                slots: 0,
                dead: 0,
                capacity: 0,
                threads,
            }),
            Err(e) => {
                tracing::warn!(error = %e, dims, "semantic cache: no graph for a partition");
                None
            }
        }
    }

    /// Adds a unit vector under `id`; false (logged) if usearch failed.
    pub fn add(&mut self, id: u64, vector: &[f32]) -> bool {
        if self.dead == 0 && self.slots >= self.capacity {
            let want = self.capacity + (self.capacity / 4).max(GROW_MIN);
            if let Err(e) = self.hnsw.reserve_capacity_and_threads(want, self.threads) {
                tracing::warn!(error = %e, want, "semantic cache: graph reserve failed");
                return false;
            }
            self.capacity = want;
        }
        match self.hnsw.add(id, vector) {
            Ok(()) => {
                // A removed slot is reused first.
                if self.dead > 0 {
                    self.dead -= 1;
                } else {
                    self.slots += 1;
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "semantic cache: graph add failed");
                false
            }
        }
    }

    /// Removes `id` (a tombstone until an add reuses its slot).
    pub fn remove(&mut self, id: u64) {
        if let Ok(n) = self.hnsw.remove(id) {
            self.dead += n.min(self.slots - self.dead);
        }
    }

    /// The ids of up to `k` nearest vectors (approximate); `None` if the
    /// search failed (the caller scans exactly instead).
    pub fn search(&self, query: &[f32], k: usize) -> Option<Vec<u64>> {
        match self.hnsw.search(query, k) {
            Ok(m) => Some(m.keys),
            Err(e) => {
                tracing::debug!(error = %e, "semantic cache: graph search failed");
                None
            }
        }
    }

    /// Live entries in the graph.
    pub fn live(&self) -> usize {
        self.slots - self.dead
    }

    /// Removed entries still taking a slot.
    pub fn dead(&self) -> usize {
        self.dead
    }

    /// Whether the next add needs a new slot (none removed to reuse).
    pub fn needs_slot(&self) -> bool {
        self.dead == 0
    }

    /// What the graph is counted for in the byte bound: every slot (live or
    /// removed), every reserved one, and the fixed part. An estimate from the
    /// parameters (usearch's own count walks every node); the tests check it
    /// is not below [`Graph::measured_bytes`].
    pub fn bytes(&self) -> usize {
        self.slots * slot_bytes(self.dims, self.connectivity)
            + self.capacity * CAPACITY_BYTES
            + FIXED_BYTES
    }

    /// usearch's own count of the memory it has written (walks every node:
    /// tests and benches). Its allocators reserve address space in doubling
    /// arenas (8 MiB, 16 MiB, ...) of mapped pages that are touched only as
    /// nodes are written, so the unused rest of the last arena is left out,
    /// as it is from the bound.
    pub fn measured_bytes(&self) -> usize {
        let m = self.hnsw.memory_stats();
        self.hnsw
            .memory_usage()
            .saturating_sub(m.graph_reserved + m.vectors_reserved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let v: Vec<f32> = (0..dims).map(|_| rng.f32() * 2.0 - 1.0).collect();
        crate::cache::semantic::index::normalise(v).expect("unit")
    }

    #[test]
    fn adds_removes_reuse_slots_and_the_estimate_covers_the_memory() {
        let p = AnnParams::default();
        let mut g = Graph::new(64, &p).expect("graph");
        for id in 0..600 {
            assert!(g.add(id, &unit(id, 64)));
        }
        assert_eq!((g.live(), g.dead()), (600, 0));
        let hit = g.search(&unit(7, 64), 4).expect("search");
        assert_eq!(hit.first(), Some(&7));
        g.remove(7);
        g.remove(7);
        assert_eq!((g.live(), g.dead()), (599, 1));
        let hit = g.search(&unit(7, 64), 4).expect("search");
        assert!(!hit.contains(&7));
        // The tombstone's slot is taken by the next add.
        assert!(!g.needs_slot());
        assert!(g.add(1000, &unit(1000, 64)));
        assert_eq!((g.live(), g.dead()), (600, 0));
        assert!(
            g.bytes() >= g.measured_bytes(),
            "estimate {} < measured {}",
            g.bytes(),
            g.measured_bytes()
        );
    }
}
