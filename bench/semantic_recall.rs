//! The semantic cache's approximate index at scale: insert cost, lookup time and recall@1
//! against the exact scan, on one partition (issue 16). Not criterion: one timed pass.
//!
//! `cargo bench --bench semantic_recall -- DIMS DATA [ENTRIES [M EF_ADD EF_SEARCH K]]` (the
//! last four override [`AnnParams`]' defaults: connectivity, expansions, candidates), DATA `random` (uniform unit
//! vectors: no structure, the worst case for any graph) or `clustered` (1,000 random centres,
//! each entry a centre plus noise, cosine ~0.8 to it: topics, as real embeddings have).
//! Queries: `paraphrase` (an entry plus gaussian noise, cosine ~0.95 to it: what a cache hit
//! looks like) and `random` (a fresh random unit vector: the nearest is usually a poor match).
//! Recall@1: the lookup through the graph returns the same entry as the exact scan. Bounded:
//! 100k x 384 random takes ~2 minutes on the 2-core VM, most of it the inserts.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::cache::semantic::ann::AnnParams;
use sluice::cache::semantic::index::{normalise, Bounds, Index, Nearest};
use sluice::cache::CachedResponse;
use sluice::sniff::Endpoint;

const QUERIES: usize = 300;

fn gauss(rng: &mut fastrand::Rng) -> f32 {
    let u1 = rng.f32().max(1e-9);
    let u2 = rng.f32();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

fn random_unit(rng: &mut fastrand::Rng, dims: usize) -> Vec<f32> {
    normalise((0..dims).map(|_| gauss(rng)).collect()).unwrap()
}

/// `v` plus gaussian noise, renormalised, with a cosine of about `cos` to `v`.
fn around(rng: &mut fastrand::Rng, v: &[f32], cos: f32) -> Vec<f32> {
    let s = ((1.0 / (cos * cos) - 1.0) / v.len() as f32).sqrt();
    normalise(v.iter().map(|x| x + s * gauss(rng)).collect()).unwrap()
}

fn id(n: &Option<Nearest>) -> Option<Bytes> {
    n.as_ref().map(|n| n.answer.body.clone())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let dims: usize = args.first().map_or(384, |s| s.parse().unwrap());
    let data = args.get(1).map_or("clustered", String::as_str).to_string();
    let n: usize = args.get(2).map_or(100_000, |s| s.parse().unwrap());
    let d = AnnParams::default();
    let arg = |i: usize, default: usize| args.get(i).map_or(default, |s| s.parse().unwrap());
    let params = AnnParams {
        connectivity: arg(3, d.connectivity),
        expansion_add: arg(4, d.expansion_add),
        expansion_search: arg(5, d.expansion_search),
        candidates: arg(6, d.candidates),
        ..d
    };
    let mut rng = fastrand::Rng::with_seed(16);
    let centres: Vec<Vec<f32>> = (0..1000).map(|_| random_unit(&mut rng, dims)).collect();
    let vectors: Vec<Vec<f32>> = (0..n)
        .map(|_| match data.as_str() {
            "random" => random_unit(&mut rng, dims),
            _ => {
                let c = rng.usize(..centres.len());
                around(&mut rng, &centres[c], 0.8)
            }
        })
        .collect();
    let bounds = Bounds {
        max_entries: n,
        max_entries_per_tenant: n,
        max_bytes: usize::MAX,
    };
    let part = [0u8; 32];
    let now = Instant::now();
    let ttl = Duration::from_secs(3600);
    let answers: Vec<Arc<CachedResponse>> = (0..n)
        .map(|i| {
            Arc::new(CachedResponse::json(
                Endpoint::ChatCompletions,
                "t",
                "m",
                Bytes::from(format!("{{\"choices\":[],\"i\":{i}}}")),
            ))
        })
        .collect();
    // Each insert's time is how long it would hold the cache's write lock (lookups wait).
    let fill = |ann: AnnParams| {
        let mut ix = Index::with_ann(ann);
        let mut each = Vec::with_capacity(n);
        let t = Instant::now();
        for (v, a) in vectors.iter().zip(&answers) {
            let t = Instant::now();
            ix.insert(part, 0, v.clone(), a.clone(), ttl, now, bounds);
            each.push(t.elapsed());
        }
        let total = t.elapsed();
        each.sort();
        (ix, total, each)
    };
    let (exact, exact_build, _) = fill(AnnParams::exact());
    let (ann, ann_build, each) = fill(params);
    let s = ann.stats();
    println!(
        "{n} x {dims} {data}, M {} ef_add {} ef_search {} k {}: insert exact {:.1} us/entry, with graph {:.1} us/entry; \
         graphs {}, graph bytes {:.0}/entry (usearch counts {:.0}/entry)",
        params.connectivity,
        params.expansion_add,
        params.expansion_search,
        params.candidates,
        exact_build.as_secs_f64() * 1e6 / n as f64,
        ann_build.as_secs_f64() * 1e6 / n as f64,
        s.graphs,
        s.graph_bytes as f64 / n as f64,
        ann.measured_graph_bytes() as f64 / n as f64,
    );
    let ms = |i: usize| each[i.min(n - 1)].as_secs_f64() * 1e3;
    println!(
        "  one insert with graph (the write lock's hold): median {:.3} ms, p99 {:.3} ms, \
         p99.9 {:.3} ms, max {:.3} ms",
        ms(n / 2),
        ms(n * 99 / 100),
        ms(n * 999 / 1000),
        ms(n - 1),
    );
    for queries in ["paraphrase", "random"] {
        let (mut te, mut ta, mut same) = (Vec::new(), Vec::new(), 0);
        for _ in 0..QUERIES {
            let q = match queries {
                "paraphrase" => {
                    let e = rng.usize(..n);
                    around(&mut rng, &vectors[e], 0.95)
                }
                _ => random_unit(&mut rng, dims),
            };
            let t = Instant::now();
            let e = exact.nearest(&part, &q, now);
            te.push(t.elapsed());
            let t = Instant::now();
            let a = ann.nearest(&part, &q, now);
            ta.push(t.elapsed());
            same += usize::from(id(&e) == id(&a));
        }
        te.sort();
        ta.sort();
        println!(
            "  {queries} queries: lookup median exact {:.2} ms, graph {:.3} ms; recall@1 {:.3}",
            te[QUERIES / 2].as_secs_f64() * 1e3,
            ta[QUERIES / 2].as_secs_f64() * 1e3,
            same as f64 / QUERIES as f64,
        );
    }
}
