//! What the harness sends: the scenarios (main instance, features instance, scenario matrix),
//! their request bodies and headers, and the cache-fill procedure.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::task::JoinSet;

use crate::configs::{MatrixConfig, ADMIN_TOKEN, PASSTHROUGH_KEY};
use crate::drive::{one_request, rss_kb, Arm, Env, HttpClient, Samples};
use crate::procfs::cpu_ticks;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    NonStream,
    Stream,
    Paced,
    Prompt,
}

pub(crate) struct Scenario {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) concurrency: usize,
    pub(crate) requests: usize,
    pub(crate) body: Bytes,
    pub(crate) headers: HeaderMap,
    /// A response header every measured response must carry (name, value); a response without
    /// it counts as an error (e.g. `x-sluice-cache: hit` for the cache-hit scenarios).
    pub(crate) expect: Option<(&'static str, &'static str)>,
    /// Distinct bodies, used in turn (shared counter across arms and warm-ups, so no body is
    /// sent twice while there are unused ones); `body` when None.
    pub(crate) bodies: Option<(Arc<Vec<Bytes>>, Arc<AtomicUsize>)>,
    /// Each client waits this long between its requests (an agent thinking between calls);
    /// zero keeps the connection busy back to back.
    pub(crate) think: Duration,
}

pub(crate) fn chat_body(prompt_chars: usize, stream: bool) -> Bytes {
    chat_body_with(prompt_chars, stream, false)
}

/// `include_usage`: the client asks for `stream_options.include_usage` itself (so Sluice has
/// nothing to inject and strip, and only observes the stream).
pub(crate) fn chat_body_with(prompt_chars: usize, stream: bool, include_usage: bool) -> Bytes {
    const WORDS: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod \
        tempor incididunt ut labore et dolore magna aliqua ";
    // Paragraphs of ~600 characters, as in a pasted document or transcript.
    let mut text = String::with_capacity(prompt_chars + WORDS.len());
    while text.len() < prompt_chars {
        for _ in 0..5 {
            text.push_str(WORDS);
        }
        text.push_str("\n\n");
    }
    text.truncate(prompt_chars);
    let mut body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": text}
        ],
        "max_tokens": 256,
        "temperature": 0.2
    });
    if stream {
        body["stream"] = serde_json::Value::Bool(true);
    }
    if include_usage {
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    Bytes::from(serde_json::to_vec(&body).expect("json"))
}

/// The client's headers with the passthrough key: `x-mock-words` sets the answer's length,
/// `x-mock-delay-ms` the pace of a stream.
pub(crate) fn headers(words: u32, delay_ms: Option<u32>) -> HeaderMap {
    headers_with_key(PASSTHROUGH_KEY, words, delay_ms)
}

fn headers_with_key(authorization: &str, words: u32, delay_ms: Option<u32>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(authorization).expect("authorization"),
    );
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        HeaderName::from_static("x-mock-words"),
        HeaderValue::from(words),
    );
    if let Some(d) = delay_ms {
        h.insert(
            HeaderName::from_static("x-mock-delay-ms"),
            HeaderValue::from(d),
        );
    }
    h
}

pub(crate) fn scenarios(quick: bool) -> Vec<Scenario> {
    let n = |full: usize| if quick { (full / 10).max(20) } else { full };
    let mut v = Vec::new();
    // Long enough that /proc's 10 ms CPU ticks resolve ~1 % per arm (a
    // run of 30,000 at c=64 gave ~70 ticks: a 5 % change did not show).
    for (c, count) in [(1, 20_000), (16, 60_000), (64, 120_000)] {
        v.push(Scenario {
            name: format!("chat c={c}"),
            kind: Kind::NonStream,
            concurrency: c,
            requests: n(count),
            body: chat_body(200, false),
            headers: headers(20, None),
            expect: None,
            bodies: None,
            think: Duration::ZERO,
        });
    }
    for (c, count) in [(1, 3_000), (16, 16_000), (64, 24_000)] {
        v.push(Scenario {
            name: format!("stream c={c}"),
            kind: Kind::Stream,
            concurrency: c,
            requests: n(count),
            body: chat_body(200, true),
            headers: headers(50, Some(0)),
            expect: None,
            bodies: None,
            think: Duration::ZERO,
        });
    }
    v.push(Scenario {
        name: "stream c=16 client usage".into(),
        kind: Kind::Stream,
        concurrency: 16,
        requests: n(8_000),
        body: chat_body_with(200, true, true),
        headers: headers(50, Some(0)),
        expect: None,
        bodies: None,
        think: Duration::ZERO,
    });
    v.push(Scenario {
        name: "paced stream c=16".into(),
        kind: Kind::Paced,
        concurrency: 16,
        requests: if quick { 32 } else { 160 },
        body: chat_body(200, true),
        headers: headers(20, Some(20)),
        expect: None,
        bodies: None,
        think: Duration::ZERO,
    });
    // The mock paces every event, including the usage chunk Sluice asks for on the client's
    // behalf (and strips): with the client asking for usage itself, all arms get the same events.
    v.push(Scenario {
        name: "paced stream c=16 client usage".into(),
        kind: Kind::Paced,
        concurrency: 16,
        requests: if quick { 32 } else { 160 },
        body: chat_body_with(200, true, true),
        headers: headers(20, Some(20)),
        expect: None,
        bodies: None,
        think: Duration::ZERO,
    });
    for (label, tokens) in [("1k", 1_000), ("10k", 10_000), ("100k", 100_000)] {
        v.push(Scenario {
            name: format!("prompt {label} tok c=4"),
            kind: Kind::Prompt,
            concurrency: 4,
            requests: n(200),
            body: chat_body(tokens * 4, false),
            headers: headers(20, None),
            expect: None,
            bodies: None,
            think: Duration::ZERO,
        });
    }
    // Every request a different 100k-token conversation: Sluice remembers the count of a long
    // message it has seen (by content hash), so the scenarios above, which resend one body,
    // measure the repeat; this one pays for counting every time.
    let distinct = n(60);
    let bodies: Vec<Bytes> = (0..3 * (distinct + 2) + 8)
        .map(|i| {
            let mut v: serde_json::Value =
                serde_json::from_slice(&chat_body(400_000, false)).expect("json");
            let text = v["messages"][1]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            v["messages"][1]["content"] =
                serde_json::Value::String(format!("Document {i}.\n\n{text}"));
            Bytes::from(serde_json::to_vec(&v).expect("json"))
        })
        .collect();
    v.push(Scenario {
        name: "prompt 100k tok distinct c=1".into(),
        kind: Kind::Prompt,
        concurrency: 1,
        requests: distinct,
        body: chat_body(400_000, false),
        headers: headers(20, None),
        expect: None,
        bodies: Some((Arc::new(bodies), Arc::new(AtomicUsize::new(0)))),
        think: Duration::ZERO,
    });
    // One at a time: what a single 100k-token prompt adds, without queueing behind others.
    v.push(Scenario {
        name: "prompt 100k tok c=1".into(),
        kind: Kind::Prompt,
        concurrency: 1,
        requests: n(100),
        body: chat_body(400_000, false),
        headers: headers(20, None),
        expect: None,
        bodies: None,
        think: Duration::ZERO,
    });
    v
}

/// A chat body with `temperature: 0` (cacheable under `[cache] mode = "deterministic"`).
pub(crate) fn cache_body(prompt: &str, stream: bool) -> Bytes {
    let mut body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": prompt}
        ],
        "max_tokens": 256,
        "temperature": 0
    });
    if stream {
        body["stream"] = serde_json::Value::Bool(true);
    }
    Bytes::from(serde_json::to_vec(&body).expect("json"))
}

/// The usual 200-character chat body (temperature 0.2: never cached) for `model`.
pub(crate) fn model_body(model: &str) -> Bytes {
    let mut v: serde_json::Value = serde_json::from_slice(&chat_body(200, false)).expect("json");
    v["model"] = serde_json::Value::String(model.to_owned());
    Bytes::from(serde_json::to_vec(&v).expect("json"))
}

/// Scenarios run against the second ("features") Sluice instance, with the direct arm as
/// reference: cache hits (non-streaming and replayed as SSE) and the failover path.
pub(crate) fn feature_scenarios(quick: bool) -> Vec<Scenario> {
    let n = |full: usize| if quick { (full / 10).max(20) } else { full };
    let mut v = Vec::new();
    let prompt = "What is the capital of France? Answer in fifty words.";
    for (stream, label, counts) in [
        (false, "cache hit", [(1, 5_000), (16, 20_000)]),
        (true, "cache hit stream", [(1, 2_000), (16, 8_000)]),
    ] {
        for (c, count) in counts {
            v.push(Scenario {
                name: format!("{label} c={c}"),
                kind: if stream {
                    Kind::Stream
                } else {
                    Kind::NonStream
                },
                concurrency: c,
                requests: n(count),
                body: cache_body(prompt, stream),
                headers: headers(50, stream.then_some(0)),
                expect: Some(("x-sluice-cache", "hit")),
                bodies: None,
                think: Duration::ZERO,
            });
        }
    }
    for (c, count) in [(1, 3_000), (16, 10_000)] {
        for (label, model) in [("clean model", "clean"), ("failover model", "failover")] {
            v.push(Scenario {
                name: format!("{label} c={c}"),
                kind: Kind::NonStream,
                concurrency: c,
                requests: n(count),
                body: model_body(model),
                headers: headers(20, None),
                expect: None,
                bodies: None,
                think: Duration::ZERO,
            });
        }
    }
    v
}

/// The scenario matrix (issue #17): the same short non-streaming request (a few words,
/// `temperature: 0`, 20-word answer) at c=16 through one fresh Sluice per configuration, with
/// the direct and nginx arms as reference. Named `matrix <config> c=16`, so `--only matrix`
/// selects all of them and `--only limits` the limits ones. The embedded and redis
/// limits+budget configurations also run serially (`c=1`): the added latency of the fleet's
/// round trip without queueing for CPU (issue 11).
pub(crate) fn matrix_scenarios(quick: bool) -> Vec<(MatrixConfig, Scenario)> {
    let requests = if quick { 2_000 } else { 20_000 };
    let serial = if quick { 1_000 } else { 10_000 };
    let scenario = |config: MatrixConfig, concurrency: usize, requests: usize| {
        let stream = matches!(config, MatrixConfig::Stream | MatrixConfig::Translated);
        Scenario {
            name: format!("matrix {} c={concurrency}", config.label()),
            kind: if stream {
                Kind::Stream
            } else {
                Kind::NonStream
            },
            concurrency,
            requests,
            body: cache_body(MATRIX_PROMPT, stream),
            headers: headers_with_key(&config.client_key(), 20, stream.then_some(0)),
            expect: (config == MatrixConfig::Cache).then_some(("x-sluice-cache", "hit")),
            bodies: None,
            think: Duration::ZERO,
        }
    };
    let mut v: Vec<_> = MatrixConfig::ALL
        .into_iter()
        .map(|config| (config, scenario(config, 16, requests)))
        .collect();
    for config in [
        MatrixConfig::LimitsBudget,
        MatrixConfig::LimitsBudgetRedis,
        MatrixConfig::Shadow,
        MatrixConfig::Stream,
        MatrixConfig::Translated,
    ] {
        v.push((config, scenario(config, 1, serial)));
    }
    // An agent between calls (issue 12): serial requests THINK apart, so a shadow's copy has
    // the machine to itself between primaries, as it would beside a real agent.
    for config in [MatrixConfig::LimitsBudget, MatrixConfig::Shadow] {
        let mut sc = scenario(config, 1, serial / 10);
        sc.think = THINK;
        sc.name = format!("{} think={}ms", sc.name, THINK.as_millis());
        v.push((config, sc));
    }
    v
}

/// The pause between an agent's calls in the `think` scenarios.
pub(crate) const THINK: Duration = Duration::from_millis(20);

/// The matrix's prompt: short, so the cost measured is the configuration's, not counting's.
const MATRIX_PROMPT: &str = "Say hello in five words.";

/// `GET path` on the admin port with the admin token; the body as text.
pub(crate) async fn admin_get(client: &HttpClient, admin: SocketAddr, path: &str) -> String {
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = format!("http://{admin}{path}").parse().expect("uri");
    req.headers_mut().insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {ADMIN_TOKEN}")).expect("token"),
    );
    match client.request(req).await {
        Ok(r) => {
            let status = r.status();
            let body = r.into_body().collect().await.map(|b| b.to_bytes());
            match body {
                Ok(b) if status == StatusCode::OK => String::from_utf8_lossy(&b).into_owned(),
                Ok(b) => format!("status {status}: {}", String::from_utf8_lossy(&b)),
                Err(e) => format!("body: {e:?}"),
            }
        }
        Err(e) => format!("request: {e:?}"),
    }
}

/// What filling the cache with many distinct entries costs in memory.
pub(crate) struct CacheFill {
    pub(crate) entries: usize,
    pub(crate) kb: u32,
    pub(crate) fill: Samples,
    pub(crate) fill_elapsed: Duration,
    pub(crate) reread: Samples,
    pub(crate) reread_elapsed: Duration,
    pub(crate) rss_before_kb: u64,
    pub(crate) rss_after_kb: u64,
    pub(crate) rss_after_reread_kb: u64,
    pub(crate) stats_before: String,
    pub(crate) stats_after: String,
    pub(crate) cache_bytes_delta: Option<u64>,
    pub(crate) cpu_fill_us: f64,
    pub(crate) cpu_reread_us: f64,
}

pub(crate) fn json_u64(text: &str, field: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()?
        .get(field)?
        .as_u64()
}

/// Sends `entries` distinct `temperature: 0` requests whose answers are `kb` KiB each (all
/// misses, so all stored), then the same requests again (all hits).
pub(crate) async fn cache_fill(
    env: &Env,
    arm: &Arm,
    admin: SocketAddr,
    entries: usize,
    kb: u32,
) -> CacheFill {
    let pid = arm.pids[0];
    let mut hdrs = headers(20, None);
    hdrs.insert(
        HeaderName::from_static("x-mock-large-response-kb"),
        HeaderValue::from(kb),
    );
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..entries)
            .map(|i| {
                cache_body(
                    &format!("Distinct prompt number {i}: tell me about item {i}."),
                    false,
                )
            })
            .collect(),
    );
    let pass = |want: &'static str| {
        let (client, uri, hdrs, bodies) = (
            env.client.clone(),
            arm.uri.clone(),
            hdrs.clone(),
            bodies.clone(),
        );
        async move {
            let next = Arc::new(AtomicUsize::new(0));
            let start = Instant::now();
            let mut set = JoinSet::new();
            for _ in 0..16 {
                let (client, uri, hdrs, bodies, next) = (
                    client.clone(),
                    uri.clone(),
                    hdrs.clone(),
                    bodies.clone(),
                    next.clone(),
                );
                set.spawn(async move {
                    let mut s = Samples::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= bodies.len() || start.elapsed() > Duration::from_secs(30) {
                            break;
                        }
                        one_request(
                            &client,
                            &uri,
                            &hdrs,
                            &bodies[i],
                            false,
                            false,
                            Some(("x-sluice-cache", want)),
                            &mut s,
                        )
                        .await;
                    }
                    s
                });
            }
            let mut all = Samples::default();
            while let Some(r) = set.join_next().await {
                all.merge(r.expect("cache fill worker panicked"));
            }
            all.lat.sort_unstable();
            (all, start.elapsed())
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats_before = admin_get(&env.client, admin, "/admin/cache").await;
    let rss_before_kb = rss_kb(&[pid]);
    let t0 = cpu_ticks(pid);
    let (fill, fill_elapsed) = pass("miss").await;
    let t1 = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_kb = rss_kb(&[pid]);
    let stats_after = admin_get(&env.client, admin, "/admin/cache").await;
    let t2 = cpu_ticks(pid);
    let (reread, reread_elapsed) = pass("hit").await;
    let t3 = cpu_ticks(pid);
    let rss_after_reread_kb = rss_kb(&[pid]);
    let cache_bytes_delta = json_u64(&stats_after, "bytes")
        .zip(json_u64(&stats_before, "bytes"))
        .map(|(a, b)| a.saturating_sub(b));
    CacheFill {
        entries,
        kb,
        cpu_fill_us: (t1 - t0) as f64 * env.tick_us / fill.ok.max(1) as f64,
        cpu_reread_us: (t3 - t2) as f64 * env.tick_us / reread.ok.max(1) as f64,
        fill,
        fill_elapsed,
        reread,
        reread_elapsed,
        rss_before_kb,
        rss_after_kb,
        rss_after_reread_kb,
        stats_before,
        stats_after,
        cache_bytes_delta,
    }
}
