//! Criterion bench of the semantic cache's lookup at 100k entries, without and with the
//! embedding call.
//!
//! `cargo bench --bench semantic -- --measurement-time 2` (about a minute, most of it building
//! the indexes). Vectors are random unit vectors; the lookup scores every entry of the
//! request's partition, so its cost is the partition's size times the dimensions:
//!
//! - `lookup/one_tenant_100k/{384,1536}`: the worst case, 100k entries in one partition (one
//!   tenant, one system prompt and settings); 384 dimensions is a small local embedding
//!   model, 1536 OpenAI's `text-embedding-3-small`;
//! - `lookup/1000_tenants_100k/1536`: 100k entries spread over 1000 partitions of 100;
//! - `with_embedding/one_tenant_100k/1536`: an embeddings call over HTTP/1.1 keep-alive to
//!   the mock provider on 127.0.0.1 (a local embedding server with no inference time; its
//!   1536-float JSON answer is parsed), then the lookup.

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

use sluice::cache::semantic::index::{normalise, Bounds, Index};
use sluice::cache::CachedResponse;
use sluice::sniff::Endpoint;

const ENTRIES: usize = 100_000;

fn random_unit(dims: usize) -> Vec<f32> {
    normalise((0..dims).map(|_| fastrand::f32() * 2.0 - 1.0).collect()).unwrap()
}

/// An index of `ENTRIES` entries spread over `partitions` partitions.
fn build(dims: usize, partitions: usize) -> Index {
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
    let mut ix = Index::default();
    let now = Instant::now();
    for i in 0..ENTRIES {
        let p = (i % partitions) as u64;
        let mut part = [0u8; 32];
        part[..8].copy_from_slice(&p.to_le_bytes());
        ix.insert(
            part,
            p,
            random_unit(dims),
            answer.clone(),
            Duration::from_secs(3600),
            now,
            bounds,
        );
    }
    assert_eq!(ix.stats().entries, ENTRIES);
    ix
}

fn bench_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    let part = [0u8; 32];
    for dims in [384, 1536] {
        let ix = build(dims, 1);
        let q = random_unit(dims);
        g.bench_function(format!("one_tenant_100k/{dims}"), |b| {
            b.iter(|| ix.nearest(black_box(&part), black_box(&q), Instant::now()))
        });
    }
    let ix = build(1536, 1000);
    let q = random_unit(1536);
    g.bench_function("1000_tenants_100k/1536", |b| {
        b.iter(|| ix.nearest(black_box(&part), black_box(&q), Instant::now()))
    });
    g.finish();
}

fn bench_with_embedding(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(sluice_mock::MockProvider::start()).unwrap();
    mock.set_recording(false);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let url = format!("{}/v1/embeddings", mock.url());
    // The mock embeds `vec:a,b,...` as exactly that vector: a 1536-dimension answer.
    let numbers: Vec<String> = random_unit(1536)
        .iter()
        .map(|x| format!("{x:.6}"))
        .collect();
    let body = Bytes::from(
        serde_json::json!({"model": "mock-embedding", "input": format!("vec:{} a question", numbers.join(","))})
            .to_string(),
    );
    let ix = build(1536, 1);
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
    g.bench_function("one_tenant_100k/1536", |b| {
        b.iter(|| {
            let req = http::Request::post(&url)
                .header("content-type", "application/json")
                .header("authorization", "Bearer sk-bench")
                .body(Full::new(body.clone()))
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
    g.finish();
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
    targets = bench_lookup, bench_with_embedding
}
criterion_main!(semantic);
