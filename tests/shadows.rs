//! Shadow traffic through the real binary: copies go to the shadow model
//! off the client's path, are compared with the primary's answers and
//! recorded beside them, never charge the client's budget, and are dropped
//! (counted) when the shadow's slots are full.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::{Fault, MockProvider};

fn chat(model: &str) -> Value {
    json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
}

/// The harness config plus a provider `shadowp` at `shadow_url` serving
/// `shadow-model`, a shadow of `gpt-4o` and a budget on the user.
fn cfg(primary_url: &str, shadow_url: &str, max_in_flight: usize) -> String {
    let extra = format!(
        r#"
[[providers]]
name = "shadowp"
kind = "openai-compatible"
base_url = "{shadow_url}/v1"
api_key_env = "SLUICE_TEST_OPENAI_KEY"

[[shadows]]
name = "try-mini"
model = "gpt-4o"
shadow_model = "shadow-model"
max_in_flight = {max_in_flight}

[[budgets]]
name = "per-user"
scope = ["user"]
window = "day"
models = ["gpt-4o"]
limit_usd = 1.0

[[pricing]]
model = "shadow-model"
input = 1000000.0
output = 1000000.0
"#
    );
    config(primary_url, "", &extra).replace(
        "[[models]]\nname = \"*\"",
        "[[models]]\nname = \"shadow-model\"\nprovider = \"shadowp\"\n\n[[models]]\nname = \"*\"",
    )
}

async fn shadows(s: &Sluice) -> Value {
    let (st, v) = admin_as(s, Method::GET, "/admin/shadows/try-mini").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn copies_are_compared_recorded_and_never_charged_to_the_client() {
    let primary = MockProvider::start().await.expect("mock");
    let shadow = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&cfg(&primary.url(), &shadow.url(), 16)).await;
    for _ in 0..5 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("gpt-4o")).await;
        assert_eq!(st, StatusCode::OK);
    }
    let stream = json!({"model": "gpt-4o", "max_tokens": 5, "stream": true,
                        "messages": [{"role": "user", "content": "hi"}]});
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &stream).await;
    assert_eq!(st, StatusCode::OK);
    // 6 primary lines and 6 shadow lines.
    let lines = s.wait_usage(12).await;
    let (copies, originals): (Vec<&Value>, Vec<&Value>) =
        lines.iter().partition(|l| l.get("shadow").is_some());
    assert_eq!(copies.len(), 6);
    assert_eq!(shadow.request_count(), 6);
    for c in &copies {
        assert_eq!(c["shadow"], "try-mini");
        assert_eq!(c["status"], 200);
        assert!(
            originals.iter().any(|o| o["request_id"] == c["shadow_of"]),
            "joined by request id: {c}"
        );
        assert_eq!(c["comparison"]["status_match"], true, "{c}");
        assert!(c["comparison"]["similarity"].as_f64().is_some(), "{c}");
        assert!(c["cost_usd"].as_f64().unwrap_or(0.0) > 0.0, "{c}");
        assert_eq!(c["primary"]["status"], 200, "{c}");
    }
    // The streamed copy has a time to first token on both sides.
    assert!(copies
        .iter()
        .any(|c| c["comparison"]["ttft_delta_ms"].is_number()));
    // The user's $1 budget holds exactly the primary requests' cost, though
    // each copy cost several dollars.
    let primary_cost: f64 = originals
        .iter()
        .map(|o| o["cost_usd"].as_f64().unwrap_or(0.0))
        .sum();
    let shadow_cost: f64 = copies
        .iter()
        .map(|c| c["cost_usd"].as_f64().unwrap_or(0.0))
        .sum();
    assert!(
        shadow_cost > 1.0,
        "the shadow is priced dearer on purpose: {shadow_cost}"
    );
    let (_, budgets) = admin_as(&s, Method::GET, "/admin/budgets").await;
    let bucket = &budgets["budgets"][0];
    assert_eq!(bucket["bucket"], "per-user|user=alice", "{budgets}");
    let spent = bucket["spent_usd"].as_f64().expect("spent");
    assert!(
        (spent - primary_cost).abs() < 1e-9,
        "{spent} vs {primary_cost}"
    );
    let v = shadows(&s).await;
    assert_eq!(v["totals"]["mirrored"], 6, "{v}");
    assert_eq!(v["totals"]["compared"], 6, "{v}");
    assert!(
        v["totals"]["shadow_cost_usd"].as_f64().unwrap_or(0.0) > 0.0,
        "{v}"
    );
    // Other models are not mirrored.
    post(&s, "/v1/chat/completions", &[], &chat("gpt-4o-mini")).await;
    assert_eq!(shadows(&s).await["totals"]["mirrored"], 6);

    // An agent's step: both sides call the same tool, and the comparison
    // says so with the finish reasons.
    let tools = json!({"model": "gpt-4o", "max_tokens": 50,
        "messages": [{"role": "user", "content": "what is the weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]});
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &tools).await;
    assert_eq!(st, StatusCode::OK);
    let id = h["x-sluice-request-id"].to_str().expect("id").to_owned();
    let copy = s.usage_for(&format!("{id}-shadow")).await;
    assert_eq!(copy["tool_names"], json!(["get_weather"]), "{copy}");
    assert_eq!(
        copy["primary"]["tool_names"],
        json!(["get_weather"]),
        "{copy}"
    );
    assert_eq!(copy["finish_reason"], "tool_calls", "{copy}");
    assert_eq!(copy["comparison"]["tool_names_match"], true, "{copy}");
    assert_eq!(copy["comparison"]["finish_match"], true, "{copy}");
    let totals = &shadows(&s).await["totals"];
    assert_eq!(totals["compared_with_tools"], 1, "{totals}");
    assert_eq!(totals["tool_names_agreement"], 1.0, "{totals}");
}

#[tokio::test]
async fn a_stalled_shadow_stays_off_the_client_path_and_full_slots_drop_copies() {
    let primary = MockProvider::start().await.expect("mock");
    let shadow = MockProvider::start().await.expect("mock");
    for _ in 0..3 {
        shadow.push_fault(Fault::Hang);
    }
    let s = Sluice::start(&cfg(&primary.url(), &shadow.url(), 1)).await;
    // The primary answers while its copy hangs upstream.
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("gpt-4o")).await;
    assert_eq!(st, StatusCode::OK);
    let id = h["x-sluice-request-id"].to_str().expect("id").to_owned();
    let record = s.usage_for(&id).await;
    assert_eq!(record["status"], 200);
    let mut in_flight = false;
    for _ in 0..100 {
        let v = shadows(&s).await;
        if v["in_flight"] == 1 {
            in_flight = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(in_flight, "the copy is still out");
    assert!(s.usage().iter().all(|l| l.get("shadow").is_none()));
    // One slot: the next copies are dropped and counted, the primaries served.
    for _ in 0..3 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("gpt-4o")).await;
        assert_eq!(st, StatusCode::OK);
    }
    let v = shadows(&s).await;
    assert_eq!(v["totals"]["mirrored"], 1, "{v}");
    assert_eq!(v["totals"]["dropped_queue_full"], 3, "{v}");
    let metrics =
        String::from_utf8_lossy(&get(&s.admin_url("/metrics"), &[]).await.expect("metrics").1)
            .into_owned();
    assert!(
        metrics.contains(
            "sluice_shadow_requests_total{shadow=\"try-mini\",outcome=\"dropped_full\"} 3"
        ),
        "{metrics}"
    );
}
