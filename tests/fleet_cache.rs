//! The shared response cache (`[cache] shared_url`): two real `sluice`
//! processes behind one real redis-server — an answer one replica got from
//! the provider is served by the other without going upstream again.

#[path = "support/harness.rs"]
mod harness;
#[path = "support/redis.rs"]
mod redis;

use std::time::Duration;

use harness::*;
use http::StatusCode;
use redis::RedisServer;
use serde_json::{json, Value};
use sluice_mock::MockProvider;

fn shared_config(mock: &MockProvider, redis: &RedisServer) -> String {
    let extra = format!(
        "[cache]\nmode = \"deterministic\"\nshared_url = \"{}\"\nshared_timeout = \"2s\"\n",
        redis.url()
    );
    config(&mock.url(), "", &extra)
}

fn question(text: &str) -> Value {
    json!({"model": "mock-model", "temperature": 0, "max_tokens": 10,
           "messages": [{"role": "user", "content": text}]})
}

/// Waits until the shared Redis holds `n` cache entries.
async fn stored(redis: &RedisServer, n: usize) {
    for _ in 0..200 {
        if redis.keys("sluice:cache:*").len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{n} shared entries never appeared");
}

#[tokio::test]
async fn an_answer_cached_by_one_replica_is_served_by_another() {
    let redis = RedisServer::start();
    let mock = MockProvider::start().await.expect("mock");
    let cfg = shared_config(&mock, &redis);
    let (a, b) = (Sluice::start(&cfg).await, Sluice::start(&cfg).await);

    let (st, h, first) = post(&a, "/v1/chat/completions", &[], &question("what is 2+2")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-sluice-cache"], "miss");
    stored(&redis, 1).await;
    // Written with the entry's TTL (the default hour).
    let key = &redis.keys("sluice:cache:*")[0];
    let ttl: u64 = redis.command(&["PTTL", key]).parse().expect("ms");
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "{ttl}");

    let (st, h, second) = post(&b, "/v1/chat/completions", &[], &question("what is 2+2")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-sluice-cache"], "hit", "served from the shared level");
    assert_eq!(json(&first)["choices"], json(&second)["choices"]);
    let upstream = |m: &MockProvider| {
        m.requests()
            .iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .count()
    };
    assert_eq!(upstream(&mock), 1, "the provider answered once");
    // Streamed from the shared entry too.
    let mut q = question("what is 2+2");
    q["stream"] = json!(true);
    let (st, h, body) = post(&b, "/v1/chat/completions", &[], &q).await;
    assert_eq!(
        (st, &h["x-sluice-cache"]),
        (StatusCode::OK, &"hit".parse().expect("v"))
    );
    assert!(!chat_stream_text(&body).is_empty());
    assert_eq!(upstream(&mock), 1);

    // Another question is another entry.
    let (_, h, _) = post(&b, "/v1/chat/completions", &[], &question("what is 3+3")).await;
    assert_eq!(h["x-sluice-cache"], "miss");
    stored(&redis, 2).await;

    // A full admin purge empties the shared level as well.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (st, _, _) = call(
        http::Method::POST,
        &a.admin_url("/admin/cache/purge"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    for _ in 0..200 {
        if redis.keys("sluice:cache:*").is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the shared entries outlived the purge");
}

#[tokio::test]
async fn without_its_redis_the_cache_is_local_and_requests_still_succeed() {
    let mut redis = RedisServer::start();
    let mock = MockProvider::start().await.expect("mock");
    let cfg = shared_config(&mock, &redis);
    let s = Sluice::start(&cfg).await;
    redis.stop();
    for _ in 0..2 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &question("offline")).await;
        assert_eq!(
            st,
            StatusCode::OK,
            "the shared level is an optimisation, never a dependency"
        );
    }
    // The second was a local hit.
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &question("offline")).await;
    assert_eq!(h["x-sluice-cache"], "hit");
    let (_, m) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.contains("sluice_cache_shared_total{result=\"error\"}"),
        "{m}"
    );
}
