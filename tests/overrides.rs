//! Per-entity overrides of budgets and rate limits, through the real binary
//! (embedded state; tests/fleet.rs runs one on the redis backend).

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::MockProvider;

const BOB: &str = "sk-sluice-bob";
const CI: &str = "sk-sluice-ci";

/// mock-model: $1 / 1M input tokens, $2 / 1M output tokens.
fn extra(rules: &str) -> String {
    format!(
        "[[pricing]]\nmodel = \"mock-model\"\ninput = 1.0\noutput = 2.0\n\
         [[keys]]\nname = \"bob\"\nsha256 = \"{}\"\nuser = \"bob\"\nteam = \"research\"\n\
         [[keys]]\nname = \"ci\"\nsha256 = \"{}\"\nuser = \"ci-bot\"\nteam = \"research\"\n{rules}",
        sha256_hex(BOB),
        sha256_hex(CI)
    )
}

fn chat(i: usize) -> Value {
    json!({"model": "mock-model", "max_tokens": 10,
           "messages": [{"role": "user", "content": format!("question {i}")}]})
}

async fn ask(s: &Sluice, key: &str, i: usize) -> (StatusCode, Value) {
    let auth = format!("Bearer {key}");
    let (st, _, b) = call(
        Method::POST,
        &s.url("/v1/chat/completions"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        chat(i).to_string(),
    )
    .await;
    (st, json(&b))
}

/// Requests until the first refusal (at most `max`): how many succeeded.
async fn until_refused(s: &Sluice, key: &str, max: usize) -> usize {
    for i in 0..max {
        let (st, v) = ask(s, key, i).await;
        if st != StatusCode::OK {
            assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
            return i;
        }
    }
    max
}

#[tokio::test]
async fn an_override_gives_one_user_twenty_times_the_default_budget() {
    let mock = MockProvider::start().await.expect("mock");
    let rules =
        "[[budgets]]\nname = \"daily\"\nscope = [\"user\"]\nwindow = \"day\"\nlimit_usd = 0.0001\n\
                 overrides = { \"user=bob\" = 0.002, \"user=ci-bot\" = 0 }\n";
    let s = Sluice::start(&config(&mock.url(), "", &extra(rules))).await;
    // alice (the test key) is on the default.
    let alice = until_refused(&s, KEY, 50).await;
    assert!((3..10).contains(&alice), "{alice}");
    let (st, v) = ask(&s, KEY, 99).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(v["error"]["code"], "insufficient_quota");
    // bob has 20× the default: at least 20× as many requests of the same size.
    let bob = until_refused(&s, BOB, 20 * alice + 40).await;
    assert!(bob >= 19 * alice, "bob {bob} vs alice {alice}");
    // ci-bot is blocked outright.
    let (st, v) = ask(&s, CI, 0).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");

    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (_, b) = get(&s.admin_url("/admin/budgets"), &[("authorization", &auth)])
        .await
        .expect("budgets");
    let v = json(&b);
    let row = |bucket: &str| {
        v["budgets"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["bucket"] == bucket).cloned())
            .unwrap_or_else(|| panic!("{bucket} in {v}"))
    };
    assert_eq!(row("daily|user=bob")["overridden"], true);
    assert_eq!(row("daily|user=bob")["limit_usd"], 0.002);
    assert_eq!(row("daily|user=alice")["overridden"], false);
    assert_eq!(row("daily|user=alice")["limit_usd"], 0.0001);
}

#[tokio::test]
async fn a_key_level_rpm_holds_while_other_keys_are_unaffected() {
    let mock = MockProvider::start().await.expect("mock");
    let rules = "[[rate_limits]]\nname = \"per-key\"\nscope = [\"key\"]\nrequests_per_minute = 100\n\
                 overrides = { \"key=ci\" = { requests_per_minute = 2 }, \"key=bob\" = \"unlimited\" }\n";
    let s = Sluice::start(&config(&mock.url(), "", &extra(rules))).await;
    assert_eq!(until_refused(&s, CI, 10).await, 2, "ci's own limit");
    let (st, v) = ask(&s, CI, 5).await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (StatusCode::TOO_MANY_REQUESTS, json!("rate_limit_exceeded"))
    );
    // The test key is on the rule's 100/min; bob is exempt.
    assert_eq!(until_refused(&s, KEY, 10).await, 10);
    assert_eq!(until_refused(&s, BOB, 10).await, 10);
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &chat(11)).await;
    assert_eq!(h["x-ratelimit-limit-requests"], "100");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (_, b) = get(&s.admin_url("/admin/limits"), &[("authorization", &auth)])
        .await
        .expect("limits");
    let v = json(&b);
    assert_eq!(
        v["overrides"],
        json!([
            {"rule": "per-key", "scope": "key=bob", "unlimited": true},
            {"rule": "per-key", "scope": "key=ci", "requests_per_minute": 2,
             "tokens_per_minute": null, "max_concurrent": null}
        ]),
        "{v}"
    );
}
