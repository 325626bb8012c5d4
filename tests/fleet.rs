//! Fleet mode (`[state] backend = "redis"`): several real `sluice` processes
//! share one real, private redis-server, in front of one mock provider.
//!
//! Every test starts its own Redis (tests/support/redis.rs), so they run in
//! parallel without sharing keys. Redis calls get a generous `[state] timeout`
//! where the test is not about timeouts: two debug builds under 100
//! concurrent requests on a small machine must not trip the 50 ms default and
//! turn an admission into a spurious 503.

#[path = "support/harness.rs"]
mod harness;
#[path = "support/redis.rs"]
mod redis;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::*;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use redis::RedisServer;
use serde_json::{json, Value};
use sluice_mock::MockProvider;

/// mock-model (and claude-x, for Anthropic clients) cost $1 per 1M input
/// tokens and $2 per 1M output tokens.
const PRICING: &str = "[[pricing]]\nmodel = \"mock-model\"\ninput = 1.0\noutput = 2.0\n\
                       [[pricing]]\nmodel = \"claude-x\"\ninput = 1.0\noutput = 2.0\n";

/// `[state]` keys for tests that are not about Redis being slow.
const PATIENT: &str = "timeout = \"2s\"\n";

/// The harness's test config on the redis backend; `state` adds `[state]` keys.
fn fleet_config(mock: &MockProvider, redis: &RedisServer, state: &str, extra: &str) -> String {
    config(&mock.url(), "", &format!("{PRICING}{extra}")).replacen(
        "[state]\n",
        &format!(
            "[state]\nbackend = \"redis\"\nurl = \"{}\"\n{state}",
            redis.url()
        ),
        1,
    )
}

fn user_budget(limit_usd: f64) -> String {
    format!(
        "[[budgets]]\nname = \"daily\"\nscope = [\"user\"]\nwindow = \"day\"\nlimit_usd = {limit_usd}\n"
    )
}

const BUCKET: &str = "daily|user=alice";

async fn start_fleet(n: usize, config: &str) -> Vec<Sluice> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Sluice::start(config).await);
    }
    out
}

fn chat(content: &str, max_tokens: u64) -> Value {
    json!({"model": "mock-model", "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": content}]})
}

async fn admin(s: &Sluice, path: &str) -> (StatusCode, Value) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (st, b) = get(&s.admin_url(path), &[("authorization", &auth)])
        .await
        .expect("admin");
    let v = serde_json::from_slice(&b).unwrap_or(Value::Null);
    (st, v)
}

/// The `daily|user=alice` row of `/admin/budgets` (null when it has none).
async fn budget_row(s: &Sluice) -> Value {
    let (st, v) = admin(s, "/admin/budgets").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["budgets"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["bucket"] == BUCKET).cloned())
        .unwrap_or(Value::Null)
}

fn usd(v: &Value, field: &str) -> f64 {
    v[field].as_f64().unwrap_or(0.0)
}

/// The usage records in a replica's directory (also a killed one's).
fn usage_in(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("usage.jsonl")).unwrap_or_default();
    // Whole lines only (a killed replica may have left half of its last one).
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .map(|l| serde_json::from_str(l).expect("usage line is JSON"))
        .collect()
}

fn cost_of(records: &[Value]) -> f64 {
    records.iter().filter_map(|r| r["cost_usd"].as_f64()).sum()
}

/// Waits until the fleet-wide spend `/admin/budgets` shows on `s` equals the
/// sum the usage logs in `dirs` show (a record is written once its charge is
/// in Redis, so the two agree once the last settlement has landed); returns
/// the budget row.
async fn spend_matches_usage(s: &Sluice, dirs: &[&Path]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    // The two also agree while charges are still on their way to both:
    // only an agreement that holds over two polls counts (`spend_after`
    // waits for a known number of records first, which is exact).
    let mut agreed: Option<f64> = None;
    loop {
        let charged: f64 = dirs.iter().map(|d| cost_of(&usage_in(d))).sum();
        let row = budget_row(s).await;
        if (usd(&row, "spent_usd") - charged).abs() < 1e-9 {
            if agreed.is_some_and(|a| (a - charged).abs() < 1e-12) {
                return row;
            }
            agreed = Some(charged);
        } else {
            agreed = None;
        }
        assert!(
            Instant::now() < deadline,
            "budget says {row}, usage logs say ${charged}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn dirs(fleet: &[Sluice]) -> Vec<&Path> {
    fleet.iter().map(|s| s.dir.as_path()).collect()
}

/// `spend_matches_usage` once the usage logs hold `records` records: two
/// requests whose charges are both still on their way agree as well as
/// two that landed, so without the count it can return early.
async fn spend_after(s: &Sluice, dirs: &[&Path], records: usize) -> Value {
    eventually(Duration::from_secs(10), "every usage record", || async {
        let n: usize = dirs.iter().map(|d| usage_in(d).len()).sum();
        (n >= records).then_some(())
    })
    .await;
    spend_matches_usage(s, dirs).await
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).map_or_else(
        |_| String::from_utf8_lossy(body).into_owned(),
        |v| v["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

/// Sends `n` requests at once, request i to replica i % replicas.
async fn burst(
    fleet: &Arc<Vec<Sluice>>,
    n: usize,
    mock_headers: &'static [(&'static str, &'static str)],
    max_tokens: u64,
) -> Vec<(StatusCode, HeaderMap, bytes::Bytes)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let fleet = fleet.clone();
            tokio::spawn(async move {
                let s = &fleet[i % fleet.len()];
                post(
                    s,
                    "/v1/chat/completions",
                    mock_headers,
                    &chat(&format!("n{i}"), max_tokens),
                )
                .await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn three_replicas_one_budget_admit_exactly_what_fits() {
    let redis = RedisServer::start();
    let mock = MockProvider::start().await.expect("mock");
    // Worst case of one request: 4,000 output tokens at $2/1M = $0.008, plus
    // its input at $1/1M (at most the body's ~150 bytes: < $0.0002). The
    // answer really is 4,000 tokens, so a settled request frees almost
    // nothing: $0.085 fits 10 requests, reserved or settled, never 11.
    let cfg = fleet_config(&mock, &redis, PATIENT, &user_budget(0.085));
    let fleet = Arc::new(start_fleet(3, &cfg).await);
    let answers = burst(&fleet, 100, &[("x-mock-words", "4000")], 4000).await;

    let ok = answers
        .iter()
        .filter(|(st, _, _)| *st == StatusCode::OK)
        .count();
    for (st, h, b) in answers.iter().filter(|(st, _, _)| *st != StatusCode::OK) {
        assert_eq!(*st, StatusCode::TOO_MANY_REQUESTS, "{}", error_code(b));
        assert_eq!(error_code(b), "insufficient_quota");
        assert_eq!(h["x-should-retry"], "false");
    }
    assert_eq!(ok, 10, "the budget fits exactly 10 worst cases");
    assert_eq!(mock.request_count(), 10, "refused before the provider");

    // Every replica reports the same fleet-wide spend: what the three usage
    // logs say was charged, within the limit, nothing left reserved.
    for s in fleet.iter() {
        let row = spend_matches_usage(s, &dirs(&fleet)).await;
        assert!(usd(&row, "spent_usd") <= 0.085 + 1e-12, "{row}");
        assert_eq!(usd(&row, "reserved_usd"), 0.0, "{row}");
    }
}

#[tokio::test]
async fn a_team_rpm_limit_holds_across_three_replicas_to_the_request() {
    let redis = RedisServer::start();
    let mock = MockProvider::start().await.expect("mock");
    let limits =
        "[[rate_limits]]\nname = \"team-rpm\"\nscope = [\"team\"]\nrequests_per_minute = 20\n";
    let cfg = fleet_config(&mock, &redis, PATIENT, limits);
    let fleet = Arc::new(start_fleet(3, &cfg).await);
    let answers = burst(&fleet, 29, &[], 5).await;

    let mut ok = 0;
    for (st, h, b) in &answers {
        match *st {
            StatusCode::OK => {
                ok += 1;
                assert_eq!(h["x-ratelimit-limit-requests"], "20");
            }
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(error_code(b), "rate_limit_exceeded");
                let retry: u64 = h["retry-after"].to_str().expect("s").parse().expect("n");
                assert!((1..=61).contains(&retry), "retry-after {retry}");
            }
            other => panic!("unexpected {other}: {}", error_code(b)),
        }
    }
    assert_eq!(ok, 20, "20 of 29 across three replicas");
    assert_eq!(mock.request_count(), 20);

    // One more, on each replica in turn: still refused everywhere.
    for s in fleet.iter() {
        let (st, _, _) = post(s, "/v1/chat/completions", &[], &chat("more", 5)).await;
        assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    }
    // /admin/limits is the fleet's count on every replica.
    for s in fleet.iter() {
        let (st, v) = admin(s, "/admin/limits").await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(team_rpm(&v)["requests_last_minute"], 20, "{v}");
    }
}

/// Opens a streamed chat on `s` (the mock paces it), reads the first frame
/// and returns the response so the stream stays open.
/// `user` is alice (the key's) unless given. A refusal comes back as is.
async fn open_stream(
    s: &Sluice,
    user: Option<&str>,
    max_tokens: u64,
) -> http::Response<hyper::body::Incoming> {
    let auth = format!("Bearer {KEY}");
    let body = json!({"model": "mock-model", "stream": true, "max_tokens": max_tokens,
                      "messages": [{"role": "user", "content": "stream"}]});
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("x-mock-words", "20"),
        ("x-mock-delay-ms", "100"),
    ];
    if let Some(u) = user {
        headers.push(("x-sluice-user", u));
    }
    let resp = send(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &headers,
        body.to_string(),
    )
    .await;
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let (parts, mut b) = resp.into_parts();
    b.frame().await.expect("a frame").expect("ok");
    http::Response::from_parts(parts, b)
}

#[tokio::test]
async fn a_replica_killed_mid_stream_leaks_nothing_once_its_reservations_expire() {
    let redis = RedisServer::start();
    let mock = MockProvider::start().await.expect("mock");
    // A short request deadline: a dead replica's reservations expire
    // `total` + 60 s after they were made.
    let timeouts =
        "[timeouts]\nconnect = \"1s\"\nfirst_byte = \"2s\"\nidle = \"2s\"\ntotal = \"2s\"\n";
    // Worst case of a request here: 1,000 output tokens ($0.002) + input.
    // The team's requests in flight are counted fleet-wide too.
    let cc = "[[rate_limits]]\nname = \"team-cc\"\nscope = [\"team\"]\nmax_concurrent = 6\n";
    let cfg = fleet_config(
        &mock,
        &redis,
        PATIENT,
        &format!("{timeouts}{cc}{}", user_budget(0.01)),
    );
    let mut fleet = start_fleet(3, &cfg).await;

    // Settled spend first: three cheap answers on the replica to be killed.
    for i in 0..3 {
        let (st, _, _) = post(
            &fleet[0],
            "/v1/chat/completions",
            &[],
            &chat(&format!("p{i}"), 1000),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
    }
    fleet[0].wait_usage(3).await;
    let settled_before = cost_of(&fleet[0].usage());
    assert!(settled_before > 0.0);

    // Four slow streams hold four worst cases, then their replica dies.
    let mut streams = Vec::new();
    for _ in 0..4 {
        let resp = open_stream(&fleet[0], None, 1000).await;
        assert_eq!(resp.status(), StatusCode::OK);
        streams.push(resp);
    }
    let held = budget_row(&fleet[1]).await;
    assert!(usd(&held, "reserved_usd") >= 4.0 * 0.002, "{held}");
    let killed_at = Instant::now();
    let dead_dir = fleet.remove(0).kill9().await;
    drop(streams);

    // The dead replica's reservations still hold the budget and its four
    // concurrency slots: the others refuse.
    let (_, v) = admin(&fleet[0], "/admin/limits").await;
    assert_eq!(team_bucket(&v, "team-cc")["inflight"], 4, "{v}");
    let (st, _, b) = post(
        &fleet[0],
        "/v1/chat/completions",
        &[],
        &chat("blocked", 1000),
    )
    .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&b), "insufficient_quota");

    // Until they expire (total + 60 s); then the rest of the budget is usable.
    let survivor = &fleet[1];
    eventually(
        Duration::from_secs(90),
        "the dead replica's reservations to expire",
        || async move {
            let (st, _, _) = post(
                survivor,
                "/v1/chat/completions",
                &[("x-mock-words", "1000")],
                &chat("after", 1000),
            )
            .await;
            if st == StatusCode::OK {
                return Some(());
            }
            assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
            tokio::time::sleep(Duration::from_millis(900)).await;
            None
        },
    )
    .await;
    assert!(
        killed_at.elapsed() >= Duration::from_secs(60),
        "reservations must outlive the request deadline plus the grace"
    );
    let mut admitted = 1;
    for i in 0..10 {
        let (st, _, _) = post(
            &fleet[i % 2],
            "/v1/chat/completions",
            &[("x-mock-words", "1000")],
            &chat(&format!("rest {i}"), 1000),
        )
        .await;
        if st != StatusCode::OK {
            assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
            break;
        }
        admitted += 1;
    }

    // Everything that was charged is in the budget, nothing else is held,
    // and what is left is less than one more worst case: the whole budget
    // minus the settled spend was usable.
    let mut all = dirs(&fleet);
    all.push(&dead_dir);
    let row = spend_matches_usage(&fleet[0], &all).await;
    assert!(usd(&row, "spent_usd") >= settled_before, "{row}");
    assert_eq!(usd(&row, "reserved_usd"), 0.0, "{row}");
    assert!(usd(&row, "spent_usd") <= 0.01 + 1e-12, "{row}");
    assert!(usd(&row, "remaining_usd") < 0.0021, "{row}");
    assert!(admitted >= 4, "{admitted} admitted after the expiry; {row}");
    // No concurrency slot leaked either: the team can hold six streams at
    // once again (bob, whose budget is his own, with a small output cap).
    let mut streams = Vec::new();
    for i in 0..6 {
        let resp = open_stream(&fleet[i % 2], Some("bob"), 10).await;
        assert_eq!(resp.status(), StatusCode::OK, "stream {i}: a slot leaked");
        streams.push(resp);
    }
    let resp = open_stream(&fleet[0], Some("bob"), 10).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "the seventh");
    drop(streams);
    let _ = std::fs::remove_dir_all(&dead_dir);
}

/// A request the limits and the budget apply to.
async fn limited_request(s: &Sluice, tag: &str) -> (StatusCode, HeaderMap, bytes::Bytes) {
    post(s, "/v1/chat/completions", &[], &chat(tag, 10)).await
}

async fn ready(s: &Sluice) -> (StatusCode, String) {
    let (st, b) = get(&s.admin_url("/readyz"), &[]).await.expect("readyz");
    (st, String::from_utf8_lossy(&b).into_owned())
}

#[tokio::test]
async fn redis_down_fail_closed_refuses_cleanly_then_recovers_by_itself() {
    let mut redis = RedisServer::start();
    let mock = MockProvider::start().await.expect("mock");
    let limits =
        "[[rate_limits]]\nname = \"team-rpm\"\nscope = [\"team\"]\nrequests_per_minute = 1000\n";
    let cfg = fleet_config(
        &mock,
        &redis,
        "timeout = \"1s\"\non_unavailable = \"fail_closed\"\n",
        &format!("{limits}{}", user_budget(1.0)),
    );
    let fleet = start_fleet(2, &cfg).await;
    for (i, s) in fleet.iter().enumerate() {
        for j in 0..3 {
            let (st, _, _) = limited_request(s, &format!("before {i} {j}")).await;
            assert_eq!(st, StatusCode::OK);
        }
    }
    let settled = usd(
        &spend_matches_usage(&fleet[1], &dirs(&fleet)).await,
        "spent_usd",
    );
    assert!(settled > 0.0);
    // A stream admitted before the outage goes on; its charge waits for Redis.
    let stream = open_stream(&fleet[0], None, 1000).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let stream_id = stream.headers()["x-sluice-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let provider_calls = mock.request_count();

    redis.stop();
    for s in &fleet {
        let (st, h, b) = limited_request(s, "while down").await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{}", error_code(&b));
        assert_eq!(h["x-should-retry"], "true");
        let v = json(&b);
        assert!(v["error"]["message"].is_string(), "OpenAI error shape: {v}");
        assert!(v["error"]["type"].is_string(), "{v}");
        // An Anthropic client gets Anthropic's shape.
        let (st, _, b) = call(
            Method::POST,
            &s.url("/v1/messages"),
            &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
            json!({"model": "claude-x", "max_tokens": 5,
                   "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
        )
        .await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        let v = json(&b);
        assert_eq!(v["type"], "error", "{v}");
        assert!(v["error"]["type"].is_string(), "{v}");
        let (st, why) = eventually(Duration::from_secs(10), "/readyz 503", || async move {
            let r = ready(s).await;
            (r.0 == StatusCode::SERVICE_UNAVAILABLE).then_some(r)
        })
        .await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{why}");
    }
    assert_eq!(
        mock.request_count(),
        provider_calls,
        "nothing reached the provider while the fleet could not count it"
    );
    let rest = frames(stream.into_body())
        .await
        .expect("the stream ends well");
    assert!(
        String::from_utf8_lossy(&rest.concat()).contains("[DONE]"),
        "the admitted stream was served to its end"
    );
    assert!(
        !fleet[0]
            .usage()
            .iter()
            .any(|r| r["request_id"] == stream_id.as_str()),
        "a usage record before its charge is in Redis"
    );

    redis.start_again();
    for s in &fleet {
        eventually(
            Duration::from_secs(20),
            "a request after Redis is back",
            || async move { (limited_request(s, "back").await.0 == StatusCode::OK).then_some(()) },
        )
        .await;
        eventually(Duration::from_secs(10), "/readyz 200", || async move {
            (ready(s).await.0 == StatusCode::OK).then_some(())
        })
        .await;
    }
    // The stream's charge landed once Redis was back; the spend settled
    // before the outage is intact, and everything since is on top of it.
    let rec = fleet[0].usage_for(&stream_id).await;
    assert!(rec["cost_usd"].as_f64().unwrap_or(0.0) > 0.0, "{rec}");
    let row = spend_matches_usage(&fleet[0], &dirs(&fleet)).await;
    assert!(usd(&row, "spent_usd") > settled, "{row} vs {settled}");
}

#[tokio::test]
async fn redis_down_fail_open_serves_each_replica_within_its_share() {
    let mut redis = RedisServer::start();
    let mock = MockProvider::start().await.expect("mock");
    // 50 a minute for the team; alone, a replica may use 10% of it: 5.
    let limits =
        "[[rate_limits]]\nname = \"team-rpm\"\nscope = [\"team\"]\nrequests_per_minute = 50\n";
    let cfg = fleet_config(
        &mock,
        &redis,
        "timeout = \"1s\"\non_unavailable = \"fail_open\"\nfail_open_share = 0.1\n",
        limits,
    );
    let fleet = start_fleet(2, &cfg).await;
    for s in &fleet {
        let (st, _, _) = limited_request(s, "before").await;
        assert_eq!(st, StatusCode::OK);
    }

    redis.stop();
    for s in &fleet {
        let mut ok = 0;
        for i in 0..8 {
            let (st, _, b) = limited_request(s, &format!("open {i}")).await;
            match st {
                StatusCode::OK => ok += 1,
                StatusCode::TOO_MANY_REQUESTS => {
                    assert_eq!(error_code(&b), "rate_limit_exceeded")
                }
                other => panic!("fail_open answered {other}: {}", error_code(&b)),
            }
        }
        // Within 10% of 50 a minute, alone (4 if the replica's local counter
        // also remembers the request it served before the outage).
        assert!((4..=5).contains(&ok), "{ok} served alone");
    }

    redis.start_again();
    for s in &fleet {
        eventually(
            Duration::from_secs(20),
            "Redis counted again",
            || async move {
                let (st, v) = admin(s, "/admin/limits").await;
                (st == StatusCode::OK && v["buckets"].is_array()).then_some(())
            },
        )
        .await;
    }
    // Back on the fleet's count, which kept the requests made before.
    let (st, _, _) = limited_request(&fleet[0], "shared again").await;
    assert_eq!(st, StatusCode::OK);
    let (_, v) = admin(&fleet[1], "/admin/limits").await;
    assert!(
        team_rpm(&v)["requests_last_minute"].as_u64().unwrap_or(0) >= 3,
        "{v}"
    );
}

#[tokio::test]
async fn redis_down_fail_open_spends_at_most_its_share_of_a_budget() {
    let mut redis = RedisServer::start();
    let mock = MockProvider::start().await.expect("mock");
    // $0.05 a day for alice; alone, a replica may spend 10% of it: $0.005,
    // two answers of ~$0.002 (each reserves ~$0.0021 first).
    let cfg = fleet_config(
        &mock,
        &redis,
        "timeout = \"1s\"\non_unavailable = \"fail_open\"\n",
        &user_budget(0.05),
    );
    let fleet = start_fleet(2, &cfg).await;
    let words = [("x-mock-words", "1000")];
    for s in &fleet {
        let (st, _, _) = post(s, "/v1/chat/completions", &words, &chat("before", 1000)).await;
        assert_eq!(st, StatusCode::OK);
    }
    let before = usd(
        &spend_matches_usage(&fleet[0], &dirs(&fleet)).await,
        "spent_usd",
    );

    redis.stop();
    for s in &fleet {
        let records_before = s.usage().len();
        let mut ok = 0;
        for i in 0..6 {
            let (st, _, b) = post(
                s,
                "/v1/chat/completions",
                &words,
                &chat(&format!("open {i}"), 1000),
            )
            .await;
            if st == StatusCode::OK {
                ok += 1;
                continue;
            }
            assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{}", error_code(&b));
            assert_eq!(error_code(&b), "insufficient_quota");
            break;
        }
        assert!((1..=2).contains(&ok), "{ok} served alone");
        let records = s.wait_usage(records_before + ok + 1).await;
        let alone = cost_of(&records[records_before..]);
        assert!(
            alone <= 0.005 + 1e-12,
            "spent ${alone} alone, share is $0.005"
        );
        let (_, m) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
        assert!(
            // A sample, not only the metric's description.
            String::from_utf8_lossy(&m)
                .lines()
                .any(|l| l.starts_with("sluice_state_fail_open_total ")),
            "fail-open service is counted"
        );
    }

    redis.start_again();
    let s = &fleet[0];
    let row = eventually(
        Duration::from_secs(20),
        "/admin/budgets again",
        || async move {
            let (st, v) = admin(s, "/admin/budgets").await;
            (st == StatusCode::OK).then_some(v)
        },
    )
    .await;
    let spent = row["budgets"]
        .as_array()
        .and_then(|r| r.iter().find(|b| b["bucket"] == BUCKET))
        .map_or(0.0, |b| usd(b, "spent_usd"));
    assert!(spent >= before - 1e-12, "settled spend intact: {row}");
    // What each replica served alone is added to the fleet's budget once
    // Redis answers: the shared number ends up whole.
    let row = spend_matches_usage(s, &dirs(&fleet)).await;
    assert!(usd(&row, "spent_usd") > before, "{row}");
    let (st, _, _) = post(s, "/v1/chat/completions", &[], &chat("shared again", 10)).await;
    assert_eq!(st, StatusCode::OK);
}

fn team_rpm(limits: &Value) -> Value {
    team_bucket(limits, "team-rpm")
}

/// The `RULE|team=research` row of an `/admin/limits` answer (null if none).
fn team_bucket(limits: &Value, rule: &str) -> Value {
    let name = format!("{rule}|team=research");
    limits["buckets"]
        .as_array()
        .and_then(|b| b.iter().find(|r| r["bucket"] == name.as_str()))
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_rollout_of_every_replica_carries_budgets_and_rate_windows_on() {
    let redis = RedisServer::start();
    let mock = MockProvider::start().await.expect("mock");
    let limits =
        "[[rate_limits]]\nname = \"team-rpm\"\nscope = [\"team\"]\nrequests_per_minute = 12\n";
    // Worst case $0.002 (1,000 output tokens); answers of 1,000 tokens cost it.
    let cfg = fleet_config(
        &mock,
        &redis,
        PATIENT,
        &format!("{limits}{}", user_budget(0.0205)),
    );
    let mut fleet = start_fleet(3, &cfg).await;
    for i in 0..5 {
        let (st, _, _) = post(
            &fleet[i % 3],
            "/v1/chat/completions",
            &[("x-mock-words", "1000")],
            &chat(&format!("old {i}"), 1000),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
    }
    let spent_old = usd(&spend_after(&fleet[0], &dirs(&fleet), 5).await, "spent_usd");

    // Rolling restart: each replica is replaced by a new one in a fresh
    // directory (nothing local carries over), one at a time. The first is
    // stopped with a stream in flight: SIGTERM drains it and settles its
    // charge in Redis before the process exits.
    let stream = open_stream(&fleet[0], None, 1000).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let stream_id = stream.headers()["x-sluice-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let reader = tokio::spawn(frames(stream.into_body()));
    let mut stream_cost = None;
    for i in 0..3 {
        let old = fleet.remove(0);
        let (status, usage) = old.stop().await;
        assert!(status.success(), "replica {i} exited with {status}");
        if i == 0 {
            let rec = usage
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|r| r["request_id"] == stream_id.as_str())
                .expect("the drained stream's usage record, written before exit");
            stream_cost = rec["cost_usd"].as_f64();
        }
        fleet.push(Sluice::start(&cfg).await);
    }
    let body = reader.await.expect("join").expect("the stream ends well");
    assert!(String::from_utf8_lossy(&body.concat()).contains("[DONE]"));
    let spent_old = spent_old + stream_cost.expect("the stream was charged");

    let row = budget_row(&fleet[2]).await;
    assert!(
        (usd(&row, "spent_usd") - spent_old).abs() < 1e-9,
        "{row} vs {spent_old}"
    );
    let mut ok = 0;
    let mut budget_refused = 0;
    for i in 0..10 {
        let (st, _, b) = post(
            &fleet[i % 3],
            "/v1/chat/completions",
            &[("x-mock-words", "1000")],
            &chat(&format!("new {i}"), 1000),
        )
        .await;
        match (st, error_code(&b).as_str()) {
            (StatusCode::OK, _) => ok += 1,
            (StatusCode::TOO_MANY_REQUESTS, "insufficient_quota") => budget_refused += 1,
            (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded") => {}
            (other, code) => panic!("unexpected {other} {code}"),
        }
    }
    // $0.0205 fits ten answers of ~$0.002: five before, five after the rollout.
    assert_eq!(
        (ok, budget_refused),
        (5, 5),
        "the budget went on where it was"
    );
    let row = budget_row(&fleet[0]).await;
    assert!(usd(&row, "spent_usd") <= 0.0205 + 1e-12, "{row}");

    // The rate window too: 11 of the team's 12 this minute are used (a
    // request the budget refused takes no rate), so another user of the
    // team, with a budget of their own, gets exactly 1.
    let (_, v) = admin(&fleet[1], "/admin/limits").await;
    assert_eq!(team_rpm(&v)["requests_last_minute"], 11, "{v}");
    let mut bob_ok = 0;
    for i in 0..4 {
        let (st, _, b) = post(
            &fleet[i % 3],
            "/v1/chat/completions",
            &[("x-sluice-user", "bob")],
            &chat(&format!("bob {i}"), 10),
        )
        .await;
        match st {
            StatusCode::OK => bob_ok += 1,
            StatusCode::TOO_MANY_REQUESTS => assert_eq!(error_code(&b), "rate_limit_exceeded"),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        bob_ok, 1,
        "the old replicas' requests still count this minute"
    );
}

#[tokio::test]
async fn admin_views_of_a_fleet_with_nothing_counted_yet_are_empty() {
    let redis = RedisServer::start();
    let mock = MockProvider::start().await.expect("mock");
    let limits =
        "[[rate_limits]]\nname = \"team-rpm\"\nscope = [\"team\"]\nrequests_per_minute = 5\n";
    let cfg = fleet_config(
        &mock,
        &redis,
        PATIENT,
        &format!("{limits}{}", user_budget(1.0)),
    );
    let s = Sluice::start(&cfg).await;
    let (st, v) = admin(&s, "/admin/limits").await;
    assert_eq!((st, &v["buckets"]), (StatusCode::OK, &json!([])), "{v}");
    let (st, v) = admin(&s, "/admin/budgets").await;
    assert_eq!((st, &v["budgets"]), (StatusCode::OK, &json!([])), "{v}");
}

#[tokio::test]
async fn behind_a_password_every_replica_shows_and_resets_the_fleets_budgets() {
    let redis = RedisServer::start_with_password("fleet-s3cret");
    let mock = MockProvider::start().await.expect("mock");
    assert!(redis.url().contains(":fleet-s3cret@"));
    let cfg = fleet_config(&mock, &redis, PATIENT, &user_budget(1.0));
    let fleet = start_fleet(2, &cfg).await;
    for i in 0..3 {
        let (st, _, _) = post(
            &fleet[0],
            "/v1/chat/completions",
            &[],
            &chat(&format!("a{i}"), 10),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
    }
    // Spent on one replica, seen on the other.
    let row = spend_matches_usage(&fleet[1], &dirs(&fleet)).await;
    assert!(usd(&row, "spent_usd") > 0.0, "{row}");
    let (_, v) = admin(&fleet[1], "/admin/budgets").await;
    assert_eq!(v["scope"], "fleet", "{v}");

    // A reset on one replica is a reset for the fleet.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (st, _, b) = call(
        Method::POST,
        &fleet[1].admin_url("/admin/budgets/reset?bucket=daily%7Cuser%3Dalice"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let row = budget_row(&fleet[0]).await;
    assert_eq!(usd(&row, "spent_usd"), 0.0, "{row}");
}

#[tokio::test]
async fn admin_spend_is_fleet_wide() {
    let redis = RedisServer::start();
    let mock = MockProvider::start().await.expect("mock");
    let cfg = fleet_config(&mock, &redis, PATIENT, &user_budget(1.0));
    let fleet = start_fleet(2, &cfg).await;
    let (st, _, _) = post(
        &fleet[0],
        "/v1/chat/completions",
        &[("x-sluice-feature", "search")],
        &chat("spend", 10),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    spend_matches_usage(&fleet[1], &dirs(&fleet)).await;
    let (st, v) = admin(&fleet[1], "/admin/spend?by=feature").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["top"][0]["value"], "search", "{v}");
}

#[tokio::test]
async fn a_free_model_under_a_budget_settles_cleanly() {
    // A zero-priced model reserves $0: the scripts must not stumble on it
    // (they once sent Redis "-0" and counted the error as an outage).
    let redis = RedisServer::start();
    let mock = MockProvider::start().await.expect("mock");
    let cfg = fleet_config(&mock, &redis, PATIENT, &user_budget(1.0)).replace(
        "[[pricing]]\nmodel = \"mock-model\"\ninput = 1.0\noutput = 2.0\n",
        "[[pricing]]\nmodel = \"mock-model\"\ninput = 0.0\noutput = 0.0\n",
    );
    let s = Sluice::start(&cfg).await;
    for i in 0..20 {
        let (st, _, b) = post(
            &s,
            "/v1/chat/completions",
            &[],
            &chat(&format!("free {i}"), 10),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    }
    let records = eventually(Duration::from_secs(10), "20 usage records", || async {
        let r = usage_in(&s.dir);
        (r.len() >= 20).then_some(r)
    })
    .await;
    assert!(records.iter().all(|r| r["status"] == 200));
    let (_, m) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
    let m = String::from_utf8_lossy(&m);
    // Described on /metrics from start-up, but never counted.
    assert!(
        !m.lines()
            .any(|l| l.starts_with("sluice_state_errors_total")),
        "{m}"
    );
    let row = budget_row(&s).await;
    assert_eq!(
        (usd(&row, "spent_usd"), usd(&row, "reserved_usd")),
        (0.0, 0.0),
        "{row}"
    );
}

#[tokio::test]
async fn overrides_hold_across_replicas() {
    let redis = RedisServer::start();
    let mock = MockProvider::start().await.expect("mock");
    // By default a user gets a few requests a day and a key 1 a minute;
    // alice (the test key "test") has 20× the budget and 6 a minute.
    let rules =
        "[[budgets]]\nname = \"daily\"\nscope = [\"user\"]\nwindow = \"day\"\nlimit_usd = 0.00004\n\
                 overrides = { \"user=alice\" = 0.002 }\n\
                 [[rate_limits]]\nname = \"per-key\"\nscope = [\"key\"]\nrequests_per_minute = 1\n\
                 overrides = { \"key=test\" = { requests_per_minute = 6 } }\n";
    let fleet = start_fleet(2, &fleet_config(&mock, &redis, PATIENT, rules)).await;
    let mut ok = 0;
    for i in 0..8 {
        let (st, _, _) = post(
            &fleet[i % 2],
            "/v1/chat/completions",
            &[],
            &chat(&format!("o{i}"), 10),
        )
        .await;
        if st == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 6, "alice's own rate limit, across both replicas");
    let row = spend_matches_usage(&fleet[1], &dirs(&fleet)).await;
    assert_eq!(
        (row["overridden"].clone(), row["limit_usd"].clone()),
        (json!(true), json!(0.002)),
        "{row}"
    );
    assert!(
        usd(&row, "spent_usd") > 0.00004,
        "past the default limit: {row}"
    );
}

#[tokio::test]
async fn a_kill_switch_set_on_one_replica_holds_on_all_and_survives_their_restart() {
    let redis = RedisServer::start();
    let mock = MockProvider::start().await.expect("mock");
    let cfg = fleet_config(&mock, &redis, PATIENT, "");
    let mut fleet = start_fleet(2, &cfg).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (st, _, b) = call(
        Method::POST,
        &fleet[0].admin_url("/admin/kills?target=model%3Dmock-model&reason=incident"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let refused = |s: &Sluice| {
        let url = s.url("/v1/chat/completions");
        async move {
            let auth = format!("Bearer {KEY}");
            let body = chat("anyone there", 5).to_string();
            let (st, _, _) = call(
                Method::POST,
                &url,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await;
            (st == StatusCode::SERVICE_UNAVAILABLE).then_some(())
        }
    };
    // At once where it was set, within the probe's second elsewhere.
    eventually(Duration::from_secs(1), "replica 0 refuses", || {
        refused(&fleet[0])
    })
    .await;
    eventually(Duration::from_secs(5), "replica 1 refuses", || {
        refused(&fleet[1])
    })
    .await;
    // A restarted replica reads it from Redis.
    let replaced = Sluice::start(&cfg).await;
    eventually(Duration::from_secs(5), "a new replica refuses", || {
        refused(&replaced)
    })
    .await;
    fleet.push(replaced);
    // Back on from another replica, for all.
    let (st, _, _) = call(
        Method::DELETE,
        &fleet[2].admin_url("/admin/kills?target=model%3Dmock-model"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    eventually(Duration::from_secs(5), "replica 0 serves again", || async {
        let (st, _, _) = post(&fleet[0], "/v1/chat/completions", &[], &chat("back", 5)).await;
        (st == StatusCode::OK).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_key_issued_on_one_replica_works_on_all_until_revoked() {
    let redis = RedisServer::start();
    let mock = MockProvider::start().await.expect("mock");
    let fleet = start_fleet(2, &fleet_config(&mock, &redis, PATIENT, "")).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (st, _, b) = call(
        Method::POST,
        &fleet[0].admin_url("/admin/keys?name=shared-bot&user=bot"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    let key = json(&b)["key"].as_str().expect("key").to_owned();
    let status_on = |s: &Sluice| {
        let (url, key) = (s.url("/v1/chat/completions"), key.clone());
        async move {
            let auth = format!("Bearer {key}");
            let body = chat("hello", 5).to_string();
            let (st, _, _) = call(
                Method::POST,
                &url,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await;
            st
        }
    };
    assert_eq!(
        status_on(&fleet[0]).await,
        StatusCode::OK,
        "at once where issued"
    );
    eventually(
        Duration::from_secs(5),
        "replica 1 knows the key",
        || async { (status_on(&fleet[1]).await == StatusCode::OK).then_some(()) },
    )
    .await;
    let (st, _, _) = call(
        Method::DELETE,
        &fleet[1].admin_url("/admin/keys?name=shared-bot"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    eventually(
        Duration::from_secs(5),
        "replica 0 forgets the key",
        || async { (status_on(&fleet[0]).await == StatusCode::UNAUTHORIZED).then_some(()) },
    )
    .await;
}
