//! Criterion benches of Sluice's per-request hot paths, through the library's public API:
//! request sniffing and rewriting, the SSE splitter and the response observer, key lookup and
//! model routing.
//!
//! `cargo bench --bench hot_paths` (about two minutes). Inputs are built once, up front, to
//! look like real traffic: OpenAI chat requests of ~1 KB / ~100 KB / ~2 MB and a 200-event
//! `chat.completion.chunk` stream of ~200-byte events ending with a usage chunk and `[DONE]`.

// Bench set-up code: a failure here is a bug in the bench, and `expect` everywhere would only
// repeat the same message.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

use sluice::app::Snapshot;
use sluice::auth::hash_key;
use sluice::config::Config;
use sluice::error::ApiShape;
use sluice::protocol::sse::SseSplitter;
use sluice::route::glob_match;
use sluice::sniff::{rewrite, sniff, Endpoint, Rewrite};
use sluice::stream::observe::Observer;

// ------------------------------------------------------------------------------------------
// Inputs
// ------------------------------------------------------------------------------------------

const PROSE: &str = "The quick brown fox jumps over the lazy dog while the proxy counts \
    tokens, routes models and streams every chunk as it arrives. Rust \u{00e9}t\u{00e9} \
    \"quoted\" text, tabs\tand newlines\nkeep the JSON escaper honest. ";

/// Text of about `len` bytes, made of `PROSE` repeated.
fn prose(len: usize) -> String {
    let mut s = String::with_capacity(len + PROSE.len());
    while s.len() < len {
        s.push_str(PROSE);
    }
    s
}

/// A realistic chat completion request of roughly `target` bytes: a system prompt, a few
/// turns of conversation, a tool definition and the usual sampling fields, with the bulk of
/// the size in the conversation (as with a long agent transcript).
fn chat_body(target: usize) -> Bytes {
    let turns = 6;
    let per_turn = target.saturating_sub(900) / turns;
    let mut messages = vec![json!({
        "role": "system",
        "content": "You are a helpful assistant. Answer concisely and cite sources."
    })];
    for i in 0..turns {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": prose(per_turn.max(40))}));
    }
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": messages,
        "temperature": 0.2,
        "top_p": 1,
        "max_completion_tokens": 1024,
        "stream": true,
        "user": "user-1234",
        "tools": [{
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                    "required": ["city"]
                }
            }
        }],
        "tool_choice": "auto"
    });
    Bytes::from(serde_json::to_vec(&body).unwrap())
}

/// One SSE event carrying `value`.
fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// A 200-event OpenAI chat stream as the provider sends it when `include_usage` is on: a role
/// chunk, 197 content chunks, a finish chunk (each ending with `"usage":null`, ~200 bytes),
/// then the usage chunk and `[DONE]` (202 events in all).
fn chat_stream() -> Vec<Bytes> {
    let chunk = |delta: Value, finish: Value| {
        sse(&json!({
            "id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012",
            "object": "chat.completion.chunk",
            "created": 1_732_000_000,
            "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_0ba0d124f1",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            "usage": null
        }))
    };
    let words = [
        " the", " proxy", " streams", " tokens", " quickly", ",", " and", " safely",
    ];
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    for i in 0..197 {
        events.push(chunk(
            json!({"content": words[i % words.len()]}),
            Value::Null,
        ));
    }
    events.push(chunk(json!({}), json!("stop")));
    events.push(sse(&json!({
        "id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012",
        "object": "chat.completion.chunk",
        "created": 1_732_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_0ba0d124f1",
        "choices": [],
        "usage": {
            "prompt_tokens": 1234, "completion_tokens": 197, "total_tokens": 1431,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        }
    })));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// The same stream as the network tends to deliver it under load: coalesced into 4 KiB reads
/// that cut events anywhere.
fn coalesced(events: &[Bytes], size: usize) -> Vec<Bytes> {
    let all = Bytes::from(events.concat());
    (0..all.len())
        .step_by(size)
        .map(|i| all.slice(i..(i + size).min(all.len())))
        .collect()
}

// ------------------------------------------------------------------------------------------
// Benches
// ------------------------------------------------------------------------------------------

fn bench_sniff(c: &mut Criterion) {
    let mut g = c.benchmark_group("sniff");
    for (name, size) in [("1KB", 1_000), ("100KB", 100_000), ("2MB", 2_000_000)] {
        let body = chat_body(size);
        sniff(&body, Endpoint::ChatCompletions).unwrap();
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| sniff(black_box(&body), Endpoint::ChatCompletions).unwrap())
        });
    }
    g.finish();
}

fn bench_rewrite(c: &mut Criterion) {
    let mut g = c.benchmark_group("rewrite");
    let rw = Rewrite {
        model: Some("gpt-4o-mini-2024-07-18".into()),
        include_usage: true,
        max_output: None,
    };
    for (name, size) in [("1KB", 1_000), ("100KB", 100_000)] {
        let body = chat_body(size);
        rewrite(body.clone(), &rw).unwrap();
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| rewrite(black_box(body.clone()), &rw).unwrap())
        });
    }
    g.finish();
}

fn bench_stream(c: &mut Criterion) {
    let events = chat_stream();
    let total: usize = events.iter().map(Bytes::len).sum();
    let content_event = events[1].clone();
    let coalesced_4k = coalesced(&events, 4096);
    // Sanity: the observer sees every event and the usage, and the rewrite strips the
    // injected usage.
    {
        let mut o = Observer::sse(false, false);
        events.iter().for_each(|e| o.observe(e));
        let seen = o.finish();
        assert_eq!(seen.events, events.len() as u64);
        assert!(seen.complete && seen.usage.is_some());
        let mut o = Observer::sse(false, true);
        let out: usize = events
            .iter()
            .filter_map(|e| o.rewrite(e.clone()))
            .map(|b| b.len())
            .sum();
        assert!(out < total, "rewrite should strip the injected usage");
    }

    let mut g = c.benchmark_group("stream_event");
    g.throughput(Throughput::Bytes(content_event.len() as u64));
    g.bench_function("splitter_feed", |b| {
        let mut s = SseSplitter::default();
        b.iter(|| {
            let mut n = 0usize;
            s.feed(black_box(&content_event), |blk| n += blk.len());
            n
        })
    });
    g.bench_function("observe", |b| {
        b.iter_batched_ref(
            || Observer::sse(false, false),
            |o| o.observe(black_box(&content_event)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("rewrite_strip_usage", |b| {
        b.iter_batched_ref(
            || Observer::sse(false, true),
            |o| o.rewrite(black_box(content_event.clone())),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("stream_202_events");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("splitter_feed", |b| {
        b.iter(|| {
            let mut s = SseSplitter::default();
            let mut n = 0usize;
            for e in &events {
                s.feed(black_box(e), |_| n += 1);
            }
            n
        })
    });
    g.bench_function("observe", |b| {
        b.iter(|| {
            let mut o = Observer::sse(false, false);
            for e in &events {
                o.observe(black_box(e));
            }
            o.finish()
        })
    });
    g.bench_function("rewrite_strip_usage", |b| {
        b.iter(|| {
            let mut o = Observer::sse(false, true);
            let mut out = 0usize;
            for e in &events {
                if let Some(f) = o.rewrite(black_box(e.clone())) {
                    out += f.len();
                }
            }
            (out, o.finish())
        })
    });
    g.bench_function("observe_4KiB_reads", |b| {
        b.iter(|| {
            let mut o = Observer::sse(false, false);
            for e in &coalesced_4k {
                o.observe(black_box(e));
            }
            o.finish()
        })
    });
    g.bench_function("rewrite_strip_usage_4KiB_reads", |b| {
        b.iter(|| {
            let mut o = Observer::sse(false, true);
            let mut out = 0usize;
            for e in &coalesced_4k {
                if let Some(f) = o.rewrite(black_box(e.clone())) {
                    out += f.len();
                }
            }
            (out, o.finish())
        })
    });
    g.finish();
}

/// A typical shared-gateway config: three providers, a few exact model names and globs with a
/// catch-all last, and 100 virtual keys. Built through `Config::parse` and `Snapshot::build`,
/// exactly as the proxy builds it.
fn snapshot() -> Snapshot {
    let mut text = String::from(
        r#"
[server]
listen = "127.0.0.1:0"
passthrough_keys = true
trust_identity_headers = true

[[providers]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"

[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "https://api.anthropic.com"

[[providers]]
name = "local"
kind = "openai-compatible"
base_url = "http://127.0.0.1:8000/v1"

[[models]]
name = "gpt-4o-mini"
provider = "openai"
upstream_model = "gpt-4o-mini-2024-07-18"

[[models]]
name = "fast"
provider = "local"
upstream_model = "llama-3.1-8b"

[[models]]
name = "claude-*"
provider = "anthropic"

[[models]]
name = "llama-*"
provider = "local"

[[models]]
name = "o*-mini"
provider = "openai"

[[models]]
name = "*"
provider = "openai"
"#,
    );
    for i in 0..100 {
        text.push_str(&format!(
            "\n[[keys]]\nname = \"key-{i}\"\nsha256 = \"{}\"\nuser = \"user-{i}\"\nteam = \"research\"\n",
            hash_key(&format!("sk-sluice-{i:04}"))
        ));
    }
    let config = Config::parse(&text, "bench", &|_| None).expect("bench config");
    Snapshot::build(config).expect("bench snapshot")
}

fn bench_auth(c: &mut Criterion) {
    let snap = snapshot();
    let table = &snap.keys;
    let headers = |auth: &str| {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(auth).unwrap());
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert(
            "user-agent",
            HeaderValue::from_static("OpenAI/Python 1.55.0"),
        );
        h.insert("x-sluice-feature", HeaderValue::from_static("summarize"));
        h
    };
    let virtual_key = headers("Bearer sk-sluice-0042");
    let passthrough = headers("Bearer sk-proj-aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789aBcDeFgHiJkLmNo");
    let issued = sluice::key_store::KeyStore::default();
    let (_, id) = table
        .authenticate(&virtual_key, &Default::default())
        .unwrap();
    assert_eq!(id.key.as_deref(), Some("key-42"));
    let (_, id) = table
        .authenticate(&passthrough, &Default::default())
        .unwrap();
    assert!(id.key.as_deref().unwrap().starts_with("passthrough:"));

    let mut g = c.benchmark_group("auth");
    g.bench_function("virtual_key", |b| {
        b.iter(|| {
            table
                .authenticate(black_box(&virtual_key), &issued)
                .unwrap()
        })
    });
    g.bench_function("passthrough_key", |b| {
        b.iter(|| {
            table
                .authenticate(black_box(&passthrough), &issued)
                .unwrap()
        })
    });
    g.finish();
}

fn bench_route(c: &mut Criterion) {
    let snap = snapshot();
    let (router, upstreams) = (&snap.router, &snap.upstreams[..]);
    assert_eq!(
        router
            .resolve("gpt-4o-mini", ApiShape::OpenAi, upstreams)
            .unwrap()
            .upstream_model,
        "gpt-4o-mini-2024-07-18"
    );
    assert_eq!(
        router
            .resolve("claude-sonnet-4-20250514", ApiShape::Anthropic, upstreams)
            .unwrap()
            .provider,
        1
    );

    let mut g = c.benchmark_group("route");
    g.bench_function("resolve_first_rule", |b| {
        b.iter(|| router.resolve(black_box("gpt-4o-mini"), ApiShape::OpenAi, upstreams))
    });
    g.bench_function("resolve_glob_anthropic", |b| {
        b.iter(|| {
            router.resolve(
                black_box("claude-sonnet-4-20250514"),
                ApiShape::Anthropic,
                upstreams,
            )
        })
    });
    g.bench_function("resolve_catch_all", |b| {
        b.iter(|| router.resolve(black_box("gpt-4.1-2025-04-14"), ApiShape::OpenAi, upstreams))
    });
    g.bench_function("glob_match_multi_star", |b| {
        b.iter(|| {
            glob_match(
                black_box("gpt-*-mini-*"),
                black_box("gpt-4o-mini-2024-07-18"),
            )
        })
    });
    g.finish();
}

/// Issue 14: admission with 100,000 issued keys and 100,000 run buckets costs
/// what it costs with one of each.
fn bench_tenants(c: &mut Criterion) {
    use sluice::budget::ledger::{system_clock, Ledger};
    use sluice::key_store::{IssuedKey, KeyStore};
    use sluice::vocab::{Identity, Subject};
    use std::sync::Arc;

    let snap = snapshot();
    let issued = |n: usize| {
        let store = KeyStore::default();
        store.replace(
            (0..n)
                .map(|i| IssuedKey {
                    name: format!("issued-{i}"),
                    sha256: hash_key(&format!("sk-sluice-issued-{i}")),
                    user: Some(format!("u{i}")),
                    team: None,
                    models: None,
                    expires_at: None,
                    created_at: 0,
                    created_by: "bench".into(),
                })
                .collect(),
        );
        store
    };
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer sk-sluice-issued-0"),
    );
    let mut g = c.benchmark_group("tenants");
    for n in [1, 100_000] {
        let store = issued(n);
        assert!(snap.keys.authenticate(&h, &store).is_ok());
        g.bench_function(format!("issued_key_among_{n}"), |b| {
            b.iter(|| snap.keys.authenticate(black_box(&h), &store).unwrap())
        });
    }
    let budgets = Config::parse(
        "[[budgets]]\nname = \"per-run\"\nscope = [\"run\"]\nwindow = \"day\"\nlimit_usd = 1000.0\n",
        "bench",
        &|_| None,
    )
    .expect("config")
    .budgets;
    let id = |run: usize| Identity {
        run: Some(format!("run-{run}").into()),
        ..Identity::default()
    };
    for n in [1usize, 100_000] {
        let ledger = Ledger::in_memory(system_clock());
        ledger.set_max_slots(200_000);
        for run in 0..n {
            let who = id(run);
            let s = Subject {
                identity: &who,
                model: "m",
            };
            let hold = ledger.reserve(&budgets, &s, 10).expect("fits");
            hold.settle(&budgets, 10, None);
        }
        let ledger: Arc<Ledger> = ledger;
        let who = id(n / 2);
        g.bench_function(format!("run_budget_reserve_settle_among_{n}"), |b| {
            b.iter(|| {
                let s = Subject {
                    identity: &who,
                    model: "m",
                };
                let hold = ledger.reserve(&budgets, &s, 10).expect("fits");
                hold.settle(&budgets, 1, None);
            })
        });
    }
    g.finish();
}

/// Issue 12: what an experiment adds to a request: the arm pick (a
/// SHA-256 bucket, the quotas, the range walk) and an arm's body changes.
fn bench_experiment(c: &mut Criterion) {
    use sluice::experiment::{overrides, Experiments};
    use sluice::vocab::{Endpoint, Identity};
    let text = r#"
[[providers]]
name = "p"
kind = "openai-compatible"
base_url = "http://127.0.0.1:1/v1"
[[models]]
name = "gpt-*"
provider = "p"
[[experiments]]
name = "canary"
model = "agent"
[[experiments.arms]]
name = "control"
model = "gpt-4o"
weight = 95
[[experiments.arms]]
name = "candidate"
model = "gpt-4o-mini"
weight = 5
params = { temperature = 0.2 }
system_prefix = "[v2] "
"#;
    let config = sluice::config::Config::parse(text, "bench", &|_| None).expect("config");
    let e = &config.experiments[0];
    let live = Experiments::default();
    live.sync(&config.experiments);
    let identity = Identity {
        user: Some("user-12345".into()),
        ..Identity::default()
    };
    let headers = http::HeaderMap::new();
    assert!(live.pick(e, &identity, &headers, &|_| false).is_some());
    let body = bytes::Bytes::from_static(
        br#"{"model":"agent","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hello"}]}"#,
    );
    let mut g = c.benchmark_group("experiment");
    g.bench_function("pick_sticky_user", |b| {
        b.iter(|| live.pick(e, black_box(&identity), &headers, &|_| false))
    });
    g.bench_function("arm_overrides_chat", |b| {
        b.iter(|| {
            overrides::apply(
                black_box(body.clone()),
                &e.arms[1],
                Endpoint::ChatCompletions,
            )
        })
    });
    g.finish();
}

/// The request path's tracing work for one request with one attempt (start the request span,
/// start and end an attempt span with its traceparent, end the request span): off (no
/// `[telemetry]`: only the client's traceparent is read), on with every request sampled, and
/// on with none sampled. With tracing on, finished spans go to the export queue (the exporter
/// points at a closed port, so the queue fills and later spans are dropped: the same
/// `try_send` either way).
fn bench_tracing(c: &mut Criterion) {
    use sluice::telemetry::{AttemptEnd, AttemptStart, RequestEnd, RequestTrace, Tracing};
    use sluice::usage::Usage;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _in_runtime = rt.enter();
    let tracing = |ratio: f64| {
        let text = format!(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:9/v1/traces\"\n\
             sampling_ratio = {ratio:?}\ntimeout = \"50ms\"\nexport_interval = \"1h\"\n"
        );
        let cfg = Config::parse(&text, "bench", &|_| None).unwrap();
        Tracing::start(cfg.telemetry.as_ref().unwrap()).unwrap()
    };
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    let one = |t: Option<&Tracing>, h: &HeaderMap| {
        let rt = RequestTrace::start(t, &http::Method::POST, h, "req_0123456789abcdef");
        let a = rt.attempt(|| AttemptStart {
            deployment: "mock/mock-model".to_owned(),
            provider: "mock",
            system: "openai",
            model: "mock-model",
            number: 1,
            retry_reason: None,
        });
        black_box(a.traceparent());
        a.end(&AttemptEnd {
            status: 200,
            outcome: "ok",
        });
        rt.finish(&RequestEnd {
            endpoint: Endpoint::ChatCompletions,
            status: 200,
            system: Some("openai"),
            request_model: Some("gpt-4o-mini"),
            response_model: Some("mock-model"),
            provider: Some("mock"),
            usage: Some(Usage {
                input: 12,
                output: 20,
                ..Usage::default()
            }),
            cost_usd: Some(0.0001),
            cache: "bypass",
            attempts: 1,
            budget_remaining_usd: None,
            error: None,
            stream: false,
            end: "complete",
            finish_reason: Some("stop"),
        });
        black_box(rt.trace_id())
    };
    let mut g = c.benchmark_group("tracing");
    g.bench_function("off", |b| b.iter(|| one(None, black_box(&h))));
    let sampled = tracing(1.0);
    g.bench_function("on_sampled", |b| {
        b.iter(|| one(Some(&sampled), black_box(&h)))
    });
    let unsampled = tracing(0.0);
    let none = HeaderMap::new();
    g.bench_function("on_unsampled", |b| {
        b.iter(|| one(Some(&unsampled), black_box(&none)))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = hot_paths;
    config = config();
    targets = bench_sniff, bench_rewrite, bench_stream, bench_auth, bench_route, bench_tenants,
        bench_experiment,
        bench_tracing
}
criterion_main!(hot_paths);
