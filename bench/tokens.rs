//! Cost of counting input tokens: Sluice's counter (src/limits/tokens/) against
//! tiktoken-rs, on prompts of about 1k, 10k and 100k tokens, plus the whole
//! request path Sluice runs (JSON parse + per-message counting) and the cheap
//! upper bound that lets small prompts skip counting.
//!
//!     cargo bench --bench tokens

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use serde_json::json;
use sluice::limits::tokens::{count_request, upper_bound, Family};
use sluice::sniff::Endpoint;

/// Agent-like text: prose, code and JSON mixed, about 4.3 bytes per token.
fn text(tokens: usize) -> String {
    let unit = "The agent called `search(query=\"rust async\", limit=10)` and got 3 results. \
                fn main() { let v: Vec<u32> = (0..10).collect(); println!(\"{:?}\", v); }\n\
                {\"status\": \"ok\", \"items\": [1, 2, 3], \"next\": null}\n";
    let unit_tokens = Family::O200k.count(unit) as usize;
    unit.repeat(tokens.div_ceil(unit_tokens))
}

fn counting(c: &mut Criterion) {
    let o200k = tiktoken_rs::o200k_base().expect("tiktoken o200k");
    let mut g = c.benchmark_group("count");
    for tokens in [1_000usize, 10_000, 100_000] {
        let t = text(tokens);
        g.throughput(Throughput::Bytes(t.len() as u64));
        g.bench_with_input(BenchmarkId::new("sluice", tokens), &t, |b, t| {
            b.iter(|| black_box(Family::O200k.count(black_box(t))))
        });
        g.bench_with_input(BenchmarkId::new("tiktoken-rs", tokens), &t, |b, t| {
            b.iter(|| black_box(o200k.encode_ordinary(black_box(t)).len()))
        });
        let body = json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": "You are a coding agent."},
            {"role": "user", "content": t},
        ]})
        .to_string();
        // A conversation never seen before: every iteration counts a body
        // whose long message differs (a fresh prefix), so no remembered
        // count applies.
        let mut n = 0u64;
        g.bench_function(BenchmarkId::new("request_new", tokens), |b| {
            b.iter_batched(
                || {
                    n += 1;
                    json!({"model": "gpt-4o", "messages": [
                        {"role": "system", "content": "You are a coding agent."},
                        {"role": "user", "content": format!("{n} {t}")},
                    ]})
                    .to_string()
                },
                |body| {
                    black_box(count_request(
                        Endpoint::ChatCompletions,
                        body.as_bytes(),
                        Family::O200k,
                    ))
                },
                BatchSize::LargeInput,
            )
        });
        // The same conversation again (agents resend it every turn): the long
        // message's count is remembered, only hashing is paid.
        let _ = count_request(Endpoint::ChatCompletions, body.as_bytes(), Family::O200k)
            .expect("parses");
        g.bench_with_input(
            BenchmarkId::new("request_repeat", tokens),
            &body,
            |b, body| {
                b.iter(|| {
                    black_box(count_request(
                        Endpoint::ChatCompletions,
                        body.as_bytes(),
                        Family::O200k,
                    ))
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("upper_bound", tokens), &body, |b, body| {
            b.iter(|| black_box(upper_bound(body.as_bytes(), Family::O200k)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = counting
}
criterion_main!(benches);
