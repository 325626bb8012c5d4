//! Experiments through the real binary: a public model split between arms,
//! sticky per user across restarts and processes, arm overrides on the
//! wire, per-arm records, a ramp that advances, a guard that rolls a
//! failing candidate back (and the rollback surviving a restart), and an
//! arm switched off.

#[path = "support/harness.rs"]
mod harness;
#[path = "support/redis.rs"]
mod redis;

use std::collections::HashMap;
use std::time::Duration;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::{Fault, MockProvider};

fn chat(model: &str) -> Value {
    json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
}

/// The harness config with `experiments` appended and, when `bad` is set,
/// a provider `bad` at that URL serving model `cand-bad` (ahead of `*`).
fn cfg(mock: &str, bad: Option<&str>, experiments: &str) -> String {
    let mut extra = format!(
        "[retry]\nmax_retries = 0\n\n[[keys]]\nname = \"anon\"\nsha256 = \"{}\"\n\n",
        sha256_hex(ANON)
    );
    if let Some(url) = bad {
        extra.push_str(&format!(
            "[[providers]]\nname = \"bad\"\nkind = \"openai-compatible\"\nbase_url = \"{url}/v1\"\napi_key_env = \"SLUICE_TEST_OPENAI_KEY\"\n\n"
        ));
    }
    extra.push_str(experiments);
    let text = config(mock, "", &extra);
    if bad.is_some() {
        text.replace(
            "[[models]]\nname = \"*\"",
            "[[models]]\nname = \"cand-bad\"\nprovider = \"bad\"\n\n[[models]]\nname = \"*\"",
        )
    } else {
        text
    }
}

const SPLIT: &str = r#"
[[experiments]]
name = "mini-vs-big"
model = "agent"
sticky = "user"

[[experiments.arms]]
name = "control"
model = "arm-control"
weight = 80

[[experiments.arms]]
name = "candidate"
model = "arm-candidate"
weight = 20
params = { temperature = 0.25 }
system_prefix = "[v2] "

[[experiments]]
name = "by-feature"
model = "agent-by-feature"
sticky = "feature"
pinned = { "feature=search" = "candidate" }
[[experiments.arms]]
name = "control"
model = "arm-control"
[[experiments.arms]]
name = "candidate"
model = "arm-candidate"
"#;

/// A key naming no user: the user comes from `x-sluice-user`.
const ANON: &str = "sk-anon-test";

/// The arm a user's request landed in, from the response header.
async fn arm_of(s: &Sluice, user: &str) -> String {
    let auth = format!("Bearer {ANON}");
    let (st, h, b) = call(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("x-sluice-user", user),
        ],
        chat("agent").to_string(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h["x-sluice-experiment"], "mini-vs-big");
    h["x-sluice-arm"].to_str().expect("arm").to_owned()
}

#[tokio::test]
async fn users_split_by_weight_stay_in_their_arm_and_arms_change_the_request() {
    let mock = MockProvider::start().await.expect("mock");
    let config = cfg(&mock.url(), None, SPLIT);
    let s = Sluice::start(&config).await;

    // 1,000 users: the candidate's share within 4 standard deviations of 20 %
    // (σ = √(1000·0.2·0.8) ≈ 12.6).
    let mut arms = HashMap::new();
    for i in 0..1000 {
        let user = format!("user-{i}");
        let arm = arm_of(&s, &user).await;
        arms.insert(user, arm);
    }
    let candidates = arms.values().filter(|a| *a == "candidate").count();
    assert!(
        (150..=250).contains(&candidates),
        "candidate users: {candidates}"
    );

    // What each arm sent upstream: its model, its parameters, its prefix.
    let sent: Vec<Value> = mock.requests().iter().filter_map(|r| r.json()).collect();
    let cand: Vec<&Value> = sent
        .iter()
        .filter(|b| b["model"] == "arm-candidate")
        .collect();
    let ctrl: Vec<&Value> = sent
        .iter()
        .filter(|b| b["model"] == "arm-control")
        .collect();
    assert_eq!(cand.len(), candidates);
    assert_eq!(cand.len() + ctrl.len(), 1000);
    assert!(cand
        .iter()
        .all(|b| b["temperature"] == 0.25 && b["messages"][0]["content"] == "[v2] "));
    assert!(ctrl
        .iter()
        .all(|b| b.get("temperature").is_none() && b["messages"][0]["role"] == "user"));

    // Usage records name the experiment, the arm and the config version.
    let records = s.wait_usage(1000).await;
    let r = &records[0];
    assert_eq!(r["experiment"], "mini-vs-big");
    assert!(r["arm"] == "control" || r["arm"] == "candidate", "{r}");
    assert_eq!(r["config_version"].as_str().map(str::len), Some(12), "{r}");

    // Sticky: the same users again, after a restart and in a second process.
    let sample: Vec<(String, String)> = arms
        .iter()
        .take(50)
        .map(|(u, a)| (u.clone(), a.clone()))
        .collect();
    for (user, arm) in &sample {
        assert_eq!(&arm_of(&s, user).await, arm, "{user} flipped");
    }
    let dir = s.stop_keeping_dir().await;
    let s = Sluice::start_in(dir, &config).await;
    let other = Sluice::start(&config).await;
    for (user, arm) in &sample {
        assert_eq!(
            &arm_of(&s, user).await,
            arm,
            "{user} flipped after a restart"
        );
        assert_eq!(
            &arm_of(&other, user).await,
            arm,
            "{user} differs in another process"
        );
    }

    // The admin view counts each arm.
    let (st, v) = admin_as(&other, Method::GET, "/admin/experiments/mini-vs-big").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let total: u64 = v["arms"]
        .as_array()
        .expect("arms")
        .iter()
        .map(|a| a["stats"]["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 50);
    assert_eq!(v["arms"][1]["share_percent"], 20.0);

    // A weight change by reload moves only the users the change needs:
    // 20 % → 40 % keeps every candidate user a candidate.
    s.write_config(
        &config
            .replace("weight = 80", "weight = 60")
            .replace("weight = 20", "weight = 40"),
    );
    let (st, _) = admin_as(&s, Method::POST, "/admin/reload").await;
    assert_eq!(st, StatusCode::OK);
    let mut moved = 0;
    for (user, arm) in arms.iter().take(300) {
        let now = arm_of(&s, user).await;
        if arm == "candidate" {
            assert_eq!(now, "candidate", "{user} left the candidate");
        } else if now == "candidate" {
            moved += 1;
        }
    }
    // About a quarter of the control's users move (20 of 80 points).
    assert!((30..=100).contains(&moved), "moved {moved}");

    // A request without a sticky id is served by the control, outside the
    // experiment.
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("agent-by-feature")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(h.get("x-sluice-arm").is_none());
    assert_eq!(h["x-sluice-model"], "arm-control");
    let (st, h, _) = post(
        &s,
        "/v1/chat/completions",
        &[("x-sluice-feature", "search")],
        &chat("agent-by-feature"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-sluice-arm"], "candidate", "pinned by task");
}

#[tokio::test]
async fn a_failing_candidate_is_rolled_back_and_stays_rolled_back_after_a_restart() {
    let good = MockProvider::start().await.expect("mock");
    let bad = MockProvider::start().await.expect("mock");
    // One candidate request in five fails (a 500 every fifth request).
    for i in 0..2000 {
        bad.push_fault(if i % 5 == 0 {
            Fault::Status {
                status: 500,
                body: String::new(),
                retry_after: None,
            }
        } else {
            Fault::Delay(Duration::ZERO)
        });
    }
    let experiments = r#"
[[experiments]]
name = "canary"
model = "agent"
sticky = "random"
[[experiments.arms]]
name = "control"
model = "arm-control"
weight = 50
[[experiments.arms]]
name = "candidate"
model = "cand-bad"
weight = 50
[experiments.guards]
max_error_rate = 0.05
min_samples = 100
"#;
    let config = cfg(&good.url(), Some(&bad.url()), experiments);
    let s = Sluice::start(&config).await;
    let mut rolled_back = false;
    for _ in 0..600 {
        let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("agent")).await;
        assert!(st == StatusCode::OK || st.is_server_error(), "{st}");
        if h.get("x-sluice-arm").is_some_and(|a| a == "candidate") {
            continue;
        }
        let (_, v) = admin_as(&s, Method::GET, "/admin/experiments/canary").await;
        if v["rollout"]["phase"] == "rolled_back" {
            rolled_back = true;
            break;
        }
    }
    // The guards are looked at once a second: 600 requests can all fit
    // before the look that has enough samples.
    for _ in 0..30 {
        if rolled_back {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, v) = admin_as(&s, Method::GET, "/admin/experiments/canary").await;
        rolled_back = v["rollout"]["phase"] == "rolled_back";
    }
    assert!(rolled_back, "the guard never fired");
    let (_, v) = admin_as(&s, Method::GET, "/admin/experiments/canary").await;
    assert_eq!(v["rollout"]["by"], "guard", "{v}");
    assert!(
        v["rollout"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("error rate"),
        "{v}"
    );
    for _ in 0..50 {
        let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("agent")).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            h["x-sluice-arm"], "control",
            "rolled back: everything to the control"
        );
    }
    let metrics =
        String::from_utf8_lossy(&get(&s.admin_url("/metrics"), &[]).await.expect("metrics").1)
            .into_owned();
    assert!(
        metrics.contains("sluice_experiment_rollbacks_total{experiment=\"canary\"} 1"),
        "{metrics}"
    );

    // Still rolled back after a restart, until a person resumes it.
    let dir = s.stop_keeping_dir().await;
    let s = Sluice::start_in(dir, &config).await;
    for _ in 0..20 {
        let (_, h, _) = post(&s, "/v1/chat/completions", &[], &chat("agent")).await;
        assert_eq!(h["x-sluice-arm"], "control");
    }
    let (st, v) = admin_as(
        &s,
        Method::POST,
        "/admin/experiments/canary/resume?reason=fixed",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["rollout"]["phase"], "running");
    assert_eq!(v["rollout"]["by"], "platform-bob");
    let mut saw_candidate = false;
    for _ in 0..40 {
        let (_, h, _) = post(&s, "/v1/chat/completions", &[], &chat("agent")).await;
        saw_candidate |= h["x-sluice-arm"] == "candidate";
    }
    assert!(saw_candidate, "resumed: the candidate gets traffic again");
}

#[tokio::test]
async fn a_ramp_advances_step_by_step_and_can_be_promoted_or_paused() {
    let mock = MockProvider::start().await.expect("mock");
    let experiments = r#"
[[experiments]]
name = "ramp"
model = "agent"
sticky = "random"
[[experiments.arms]]
name = "control"
model = "arm-control"
[[experiments.arms]]
name = "candidate"
model = "arm-candidate"
[experiments.ramp]
steps = [10, 50]
min_duration = "1s"
min_samples = 5
"#;
    let s = Sluice::start(&cfg(&mock.url(), None, experiments)).await;
    let (_, v) = admin_as(&s, Method::GET, "/admin/experiments/ramp").await;
    assert_eq!(v["arms"][1]["share_percent"], 10.0, "{v}");
    let mut advanced = false;
    for _ in 0..400 {
        post(&s, "/v1/chat/completions", &[], &chat("agent")).await;
        let (_, v) = admin_as(&s, Method::GET, "/admin/experiments/ramp").await;
        if v["rollout"]["step"] == 1 {
            assert_eq!(v["arms"][1]["share_percent"], 50.0, "{v}");
            advanced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(advanced, "the ramp never moved");
    let (st, v) = admin_as(&s, Method::POST, "/admin/experiments/ramp/promote").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["arms"][1]["share_percent"], 100.0, "{v}");
    for _ in 0..10 {
        let (_, h, _) = post(&s, "/v1/chat/completions", &[], &chat("agent")).await;
        assert_eq!(h["x-sluice-arm"], "candidate");
    }
    let (st, _) = admin_as(&s, Method::POST, "/admin/experiments/ramp/explode").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = admin_as(&s, Method::GET, "/admin/experiments/nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_arm_switched_off_sends_its_users_to_the_control() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&cfg(&mock.url(), None, SPLIT)).await;
    let (st, v) = admin_as(
        &s,
        Method::POST,
        "/admin/kills?target=arm%3Dmini-vs-big%2Fcandidate&reason=bad+answers",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    for i in 0..100 {
        assert_eq!(arm_of(&s, &format!("u{i}")).await, "control");
    }
    let (_, v) = admin_as(&s, Method::GET, "/admin/experiments/mini-vs-big").await;
    assert_eq!(v["arms"][1]["killed"], true, "{v}");
    // The public name is listed for clients.
    let (st, b) = get(
        &s.url("/v1/models"),
        &[("authorization", &format!("Bearer {KEY}"))],
    )
    .await
    .expect("models");
    assert_eq!(st, StatusCode::OK);
    assert!(json(&b)["data"]
        .as_array()
        .expect("data")
        .iter()
        .any(|m| m["id"] == "agent"));
}

#[tokio::test]
async fn in_fleet_mode_a_rollback_on_one_replica_holds_on_every_replica() {
    let mock = MockProvider::start().await.expect("mock");
    let redis = redis::RedisServer::start();
    let experiments = r#"
[[experiments]]
name = "canary"
model = "agent"
sticky = "random"
[[experiments.arms]]
name = "control"
model = "arm-control"
[[experiments.arms]]
name = "candidate"
model = "arm-candidate"
"#;
    let config = cfg(&mock.url(), None, experiments).replacen(
        "[state]\n",
        &format!(
            "[state]\nbackend = \"redis\"\nurl = \"{}\"\ntimeout = \"2s\"\n",
            redis.url()
        ),
        1,
    );
    let a = Sluice::start(&config).await;
    let b = Sluice::start(&config).await;
    let (st, v) = admin_as(
        &a,
        Method::POST,
        "/admin/experiments/canary/rollback?reason=bad",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let v = wait_rolled_back(&b).await;
    assert_eq!(v["rollout"]["reason"], "bad", "{v}");
    for _ in 0..20 {
        let (_, h, _) = post(&b, "/v1/chat/completions", &[], &chat("agent")).await;
        assert_eq!(h["x-sluice-arm"], "control");
    }
    // A new replica starts rolled back too.
    let c = Sluice::start(&config).await;
    wait_rolled_back(&c).await;
}

/// Polls replica `s` (bounded: 5 s) until experiment `canary` is rolled back.
async fn wait_rolled_back(s: &Sluice) -> Value {
    for _ in 0..100 {
        let (_, v) = admin_as(s, Method::GET, "/admin/experiments/canary").await;
        if v["rollout"]["phase"] == "rolled_back" {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the replica never saw the rollback");
}
