//! Criterion bench of the semantic cache's lookup at 100k entries, without and with the
//! embedding call, exact scan against the HNSW graph (issue 16).
//!
//! `cargo bench --bench semantic -- --measurement-time 2` (about two and a half minutes on the
//! 2-core VM, most of it inserting into the graphs). The exact scan scores every entry of the
//! request's partition, so its cost is the partition's size times the dimensions; the graph
//! proposes 16 candidates that are scored exactly.
//!
//! - `lookup/one_tenant_100k/{384,1536}`: the exact scan's worst case, 100k random unit
//!   vectors in one partition (one tenant, one system prompt and settings); 384 dimensions
//!   is a small local embedding model, 1536 OpenAI's `text-embedding-3-small`;
//! - `lookup/graph_one_tenant_100k/{384,1536}`: the same partition size through the graph,
//!   on clustered vectors (1,000 topics, each entry a topic's centre plus noise) and a query
//!   that paraphrases an entry (the entry plus noise, cosine ~0.95): what a hit looks like.
//!   `bench/semantic_recall.rs` measures the recall and the random-vector case;
//! - `lookup/1000_tenants_100k/1536`: 100k entries spread over 1000 partitions of 100 (exact:
//!   each partition is under the graph's threshold);
//! - `with_embedding/{exact,graph}_one_tenant_100k/1536`: an embeddings call over HTTP/1.1
//!   keep-alive to the mock provider on 127.0.0.1 (a local embedding server with no
//!   inference time; its 1536-float JSON answer is parsed), then the lookup.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use sluice::cache::semantic::ann::AnnParams;
use sluice::cache::semantic::index::{normalise, Bounds, Index};
use sluice::cache::CachedResponse;
use sluice::sniff::Endpoint;

const ENTRIES: usize = 100_000;

fn random_unit(dims: usize) -> Vec<f32> {
    normalise((0..dims).map(|_| fastrand::f32() * 2.0 - 1.0).collect()).unwrap()
}

/// `v` plus uniform noise, renormalised: cosine ~`cos` to `v`.
fn around(v: &[f32], cos: f32) -> Vec<f32> {
    // Uniform noise in [-a, a] has variance a^2/3.
    let a = (3.0 * (1.0 / (cos * cos) - 1.0) / v.len() as f32).sqrt();
    normalise(
        v.iter()
            .map(|x| x + (fastrand::f32() * 2.0 - 1.0) * a)
            .collect(),
    )
    .unwrap()
}

/// Vectors of 1,000 topics: a centre plus noise each.
fn clustered(dims: usize) -> impl FnMut() -> Vec<f32> {
    let centres: Vec<Vec<f32>> = (0..1000).map(|_| random_unit(dims)).collect();
    move || around(&centres[fastrand::usize(..centres.len())], 0.8)
}

/// An index of `ENTRIES` entries spread over `partitions` partitions; the vectors too.
fn build(
    partitions: usize,
    ann: AnnParams,
    mut vector: impl FnMut() -> Vec<f32>,
) -> (Index, Vec<Vec<f32>>) {
    let answer = Arc::new(CachedResponse::json(
        Endpoint::ChatCompletions,
        "t",
        "m",
        Bytes::from_static(br#"{"choices":[{"message":{"content":"an answer"}}]}"#),
    ));
    let bounds = Bounds {
        max_entries: ENTRIES,
        max_entries_per_tenant: ENTRIES,
        max_bytes: usize::MAX,
    };
    let mut ix = Index::with_ann(ann);
    let mut kept = Vec::new();
    let now = Instant::now();
    for i in 0..ENTRIES {
        let p = (i % partitions) as u64;
        let mut part = [0u8; 32];
        part[..8].copy_from_slice(&p.to_le_bytes());
        let v = vector();
        if i % 100 == 0 {
            kept.push(v.clone());
        }
        ix.insert(
            part,
            p,
            v,
            answer.clone(),
            Duration::from_secs(3600),
            now,
            bounds,
        );
    }
    assert_eq!(ix.stats().entries, ENTRIES);
    (ix, kept)
}

fn bench_lookup(c: &mut Criterion, graph_1536: &Index, kept_1536: &[Vec<f32>]) {
    let mut g = c.benchmark_group("lookup");
    let part = [0u8; 32];
    for dims in [384, 1536] {
        let (ix, _) = build(1, AnnParams::exact(), || random_unit(dims));
        let q = random_unit(dims);
        g.bench_function(format!("one_tenant_100k/{dims}"), |b| {
            b.iter(|| ix.nearest(black_box(&part), black_box(&q), Instant::now()))
        });
    }
    let graph = |g: &mut criterion::BenchmarkGroup<'_, _>, ix: &Index, kept: &[Vec<f32>], dims| {
        assert_eq!(ix.stats().graphs, 1);
        let queries: Vec<Vec<f32>> = kept.iter().map(|v| around(v, 0.95)).collect();
        let mut i = 0;
        g.bench_function(format!("graph_one_tenant_100k/{dims}"), |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                ix.nearest(black_box(&part), black_box(&queries[i]), Instant::now())
            })
        });
    };
    let (ix, kept) = build(1, AnnParams::default(), clustered(384));
    graph(&mut g, &ix, &kept, 384);
    drop(ix);
    graph(&mut g, graph_1536, kept_1536, 1536);
    let (ix, _) = build(1000, AnnParams::default(), || random_unit(1536));
    let q = random_unit(1536);
    g.bench_function("1000_tenants_100k/1536", |b| {
        b.iter(|| ix.nearest(black_box(&part), black_box(&q), Instant::now()))
    });
    g.finish();
}

fn bench_with_embedding(c: &mut Criterion, graph_1536: &Index, kept_1536: &[Vec<f32>]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(sluice_mock::MockProvider::start()).unwrap();
    mock.set_recording(false);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let url = format!("{}/v1/embeddings", mock.url());
    // The mock embeds `vec:a,b,...` as exactly that vector: a 1536-dimension answer (for the
    // graph, a paraphrase of one of its entries).
    let body_of = |v: &[f32]| {
        let numbers: Vec<String> = v.iter().map(|x| format!("{x:.6}")).collect();
        Bytes::from(
            serde_json::json!({"model": "mock-embedding", "input": format!("vec:{} a question", numbers.join(","))})
                .to_string(),
        )
    };
    let (exact, _) = build(1, AnnParams::exact(), || random_unit(1536));
    let part = [0u8; 32];
    #[derive(serde::Deserialize)]
    struct Embeddings {
        data: Vec<Embedding>,
    }
    #[derive(serde::Deserialize)]
    struct Embedding {
        embedding: Vec<f32>,
    }
    let mut g = c.benchmark_group("with_embedding");
    // The exact scan costs the same for any query; the graph's lookups rotate over 100
    // paraphrases, as in `lookup/graph_*` (one query repeated would find its part of the
    // graph in the CPU caches).
    let exact_bodies = vec![body_of(&random_unit(1536))];
    let graph_bodies: Vec<Bytes> = kept_1536
        .iter()
        .take(100)
        .map(|v| body_of(&around(v, 0.95)))
        .collect();
    for (name, ix, bodies) in [
        ("exact_one_tenant_100k/1536", &exact, &exact_bodies),
        ("graph_one_tenant_100k/1536", graph_1536, &graph_bodies),
    ] {
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % bodies.len();
                let req = http::Request::post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer sk-bench")
                    .body(Full::new(bodies[i].clone()))
                    .unwrap();
                let bytes = rt.block_on(async {
                    let resp = client.request(req).await.unwrap();
                    resp.into_body().collect().await.unwrap().to_bytes()
                });
                let parsed: Embeddings = serde_json::from_slice(&bytes).unwrap();
                let v = normalise(parsed.data.into_iter().next().unwrap().embedding).unwrap();
                ix.nearest(&part, &v, Instant::now())
            })
        });
    }
    g.finish();
}

fn bench_all(c: &mut Criterion) {
    // The 1536-dimension graph takes the longest to fill: built once for both groups.
    let (graph_1536, kept_1536) = build(1, AnnParams::default(), clustered(1536));
    bench_lookup(c, &graph_1536, &kept_1536);
    bench_with_embedding(c, &graph_1536, &kept_1536);
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = semantic;
    config = config();
    targets = bench_all
}
criterion_main!(semantic);
