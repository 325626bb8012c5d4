//! The semantic cache through the real binary, with the mock's embeddings
//! under the test's control: a text starting `vec:a,b,c` is embedded as
//! exactly that vector, so the test decides which questions are similar.

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::MockProvider;

/// The exact cache is off, so only the semantic cache can answer.
fn semantic(mode: &str) -> String {
    format!(
        r#"
[cache]
mode = "off"

[cache.semantic]
mode = "{mode}"
embedding_model = "mock-embedding"
models = ["gpt-4o-mini"]
threshold = 0.95
false_hit_below = 0.99

[[pricing]]
model = "mock-model"
input = 1.0
output = 2.0

[[pricing]]
model = "mock-embedding"
input = 0.5
output = 0.0

[[keys]]
name = "other"
sha256 = "{}"
user = "bob"
"#,
        sha256_hex("sk-other")
    )
}

async fn start(mode: &str) -> (MockProvider, Sluice) {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", &semantic(mode))).await;
    (mock, s)
}

fn chat(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [
        {"role": "system", "content": "answer briefly"},
        {"role": "user", "content": content}
    ]})
}

/// Paths the mock was asked for, in order.
fn paths(mock: &MockProvider) -> Vec<String> {
    mock.requests().into_iter().map(|r| r.path).collect()
}

async fn admin_view(s: &Sluice) -> Value {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (st, b) = get(
        &s.admin_url("/admin/cache/semantic"),
        &[("authorization", &auth)],
    )
    .await
    .expect("view");
    assert_eq!(st, StatusCode::OK);
    json(&b)
}

fn row(view: &Value, threshold: f64) -> Value {
    view["table"]
        .as_array()
        .expect("table")
        .iter()
        .find(|r| (r["threshold"].as_f64().unwrap_or(0.0) - threshold).abs() < 1e-6)
        .cloned()
        .unwrap_or_else(|| panic!("no row {threshold}: {view}"))
}

const ASK: &str = "vec:1,0,0 What is the capital of France?";
const PARAPHRASE: &str = "vec:0.99,0.1,0 Tell me the capital city of France";
const OTHER: &str = "vec:0,1,0 How tall is Mount Everest?";

#[tokio::test]
async fn a_paraphrase_hits_at_the_threshold_and_another_question_does_not() {
    let (mock, s) = start("serve").await;
    let (st, h1, b1) = post(&s, "/v1/chat/completions", &[], &chat(ASK)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h1["x-sluice-cache"], "bypass");
    assert_eq!(paths(&mock), ["/v1/embeddings", "/v1/chat/completions"]);

    let (st, h2, b2) = post(&s, "/v1/chat/completions", &[], &chat(PARAPHRASE)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h2["x-sluice-cache"], "semantic");
    assert_eq!(b1, b2, "the earlier answer is served");
    assert_eq!(h2["x-sluice-cost-usd"], "0.000000000");
    assert_eq!(
        mock.request_count(),
        3,
        "only the embedding call went upstream"
    );
    let rec = s
        .usage_for(h2["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["cache"], "semantic");
    assert_eq!(rec["cost_usd"], 0.0);
    // cos([1,0,0], [0.99,0.1,0]) = 0.99 / sqrt(0.99² + 0.1²) ≈ 0.9949.
    let score = rec["semantic_similarity"].as_f64().expect("score");
    assert!((score - 0.9949).abs() < 1e-3, "{score}");

    // The same paraphrase streamed: the earlier answer replayed as SSE.
    let mut streamed = chat(PARAPHRASE);
    streamed["stream"] = json!(true);
    let (st, h, b) = post(&s, "/v1/chat/completions", &[], &streamed).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-sluice-cache"], "semantic");
    assert_eq!(h["content-type"], "text/event-stream");
    let text = String::from_utf8_lossy(&b);
    assert!(
        text.contains("capital") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    assert_eq!(mock.request_count(), 4);

    // A different question (cosine 0): upstream.
    let (_, h, b3) = post(&s, "/v1/chat/completions", &[], &chat(OTHER)).await;
    assert_eq!(h["x-sluice-cache"], "bypass");
    assert!(String::from_utf8_lossy(&b3).contains("Everest"));
    assert_eq!(mock.request_count(), 6);
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    let score = rec["semantic_similarity"].as_f64().expect("nearest scored");
    assert!(score.abs() < 1e-6, "{score}");

    // Another system prompt is another partition: no match, even for the
    // same question.
    let mut other_system = chat(ASK);
    other_system["messages"][0]["content"] = json!("answer at length");
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &other_system).await;
    assert_eq!(h["x-sluice-cache"], "bypass");
    assert_eq!(mock.request_count(), 8);

    // Not at temperature 0, or told not to store: no embedding call at all.
    let mut warm = chat(PARAPHRASE);
    warm["temperature"] = json!(0.7);
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &warm).await;
    assert_eq!(h["x-sluice-cache"], "bypass");
    let (_, h, _) = post(
        &s,
        "/v1/chat/completions",
        &[("cache-control", "no-store")],
        &chat(PARAPHRASE),
    )
    .await;
    assert_eq!(h["x-sluice-cache"], "bypass");
    assert_eq!(mock.request_count(), 10);
    assert_eq!(
        paths(&mock)[8..],
        ["/v1/chat/completions", "/v1/chat/completions"]
    );

    let view = admin_view(&s).await;
    assert_eq!(view["mode"], "serve");
    assert_eq!(view["served"], 2);
    assert_eq!(view["entries"], 3);
}

#[tokio::test]
async fn tenants_never_share_semantic_entries() {
    let (mock, s) = start("serve").await;
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &chat(ASK)).await;
    assert_eq!(h["x-sluice-cache"], "bypass");
    // Another key, the very same question: not served the first key's answer.
    let url = s.url("/v1/chat/completions");
    let other = |q: &str| {
        call(
            Method::POST,
            &url,
            &[
                ("authorization", "Bearer sk-other"),
                ("content-type", "application/json"),
            ],
            chat(q).to_string(),
        )
    };
    let (st, h, _) = other(ASK).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-sluice-cache"], "bypass");
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert!(
        rec.get("semantic_similarity").is_none(),
        "nothing of the other tenant's was even scored: {rec}"
    );
    // Each tenant is served its own entries.
    let (_, h, _) = other(PARAPHRASE).await;
    assert_eq!(h["x-sluice-cache"], "semantic");
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &chat(PARAPHRASE)).await;
    assert_eq!(h["x-sluice-cache"], "semantic");
    assert_eq!(
        mock.requests()
            .iter()
            .filter(|r| r.path == "/v1/chat/completions")
            .count(),
        2
    );
}

#[tokio::test]
async fn observe_mode_serves_nothing_and_reports_the_would_be_hit() {
    let (mock, s) = start("observe").await;
    let (_, h1, b1) = post(&s, "/v1/chat/completions", &[], &chat(ASK)).await;
    assert_eq!(h1["x-sluice-cache"], "bypass");
    let (st, h2, b2) = post(&s, "/v1/chat/completions", &[], &chat(PARAPHRASE)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h2["x-sluice-cache"], "bypass", "observe never serves");
    assert_ne!(b1, b2, "the real answer was served");
    assert!(String::from_utf8_lossy(&b2).contains("Tell me"));
    assert_eq!(
        mock.requests()
            .iter()
            .filter(|r| r.path == "/v1/chat/completions")
            .count(),
        2
    );
    let rec = s
        .usage_for(h2["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["cache"], "bypass");
    let score = rec["semantic_similarity"].as_f64().expect("would-be score");
    assert!((score - 0.9949).abs() < 1e-3, "{score}");
    assert!(rec["cost_usd"].as_f64().unwrap_or(0.0) > 0.0);

    let view = admin_view(&s).await;
    assert_eq!(view["mode"], "observe");
    assert_eq!(view["served"], 0);
    assert_eq!(view["lookups"], 2);
    // At 0.95 and 0.99 the paraphrase would have been served; the two
    // answers ("echo: ..." of different questions) share some words only.
    for t in [0.95, 0.99] {
        let r = row(&view, t);
        assert_eq!(r["would_hit"], 1, "{r}");
        assert_eq!(r["compared"], 1, "{r}");
        let sim = r["answer_similarity_mean"].as_f64().expect("similarity");
        assert!(sim > 0.0 && sim < 1.0, "{r}");
        assert_eq!(r["false_hits"], 1, "under false_hit_below = 0.99: {r}");
    }
    assert_eq!(row(&view, 0.80)["would_hit"], 1);
    assert_eq!(view["threshold"], 0.95);
}

#[tokio::test]
async fn the_embedding_call_is_priced_and_lands_on_the_semantic_cache_feature() {
    let (_mock, s) = start("serve").await;
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &chat(ASK)).await;
    let id = h["x-sluice-request-id"].to_str().expect("id").to_owned();
    let rec = s.usage_for(&format!("{id}-semantic")).await;
    assert_eq!(rec["feature"], "semantic_cache");
    assert_eq!(rec["endpoint"], "embeddings");
    assert_eq!(rec["model"], "mock-embedding");
    assert_eq!(rec["key"], "test");
    assert_eq!(rec["user"], "alice");
    assert_eq!(rec["status"], 200);
    // The mock counts the embedded text's words: 7 at $0.50 per million.
    assert_eq!(rec["input_tokens"], 7);
    let cost = rec["cost_usd"].as_f64().expect("priced");
    assert!((cost - 7.0 * 0.5e-6).abs() < 1e-12, "{cost}");
    let asked = s.usage_for(&id).await;
    assert!(
        asked["feature"].is_null(),
        "the asking request keeps its own"
    );

    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (_, b) = get(
        &s.admin_url("/admin/spend?by=feature"),
        &[("authorization", &auth)],
    )
    .await
    .expect("spend");
    let top = json(&b)["top"].clone();
    assert!(
        top.as_array()
            .expect("top")
            .iter()
            .any(|e| e["value"] == "semantic_cache"),
        "{top}"
    );
}

#[tokio::test]
async fn beside_the_exact_cache_an_exact_hit_comes_first_and_a_streamed_miss_is_stored_for_both() {
    let mock = MockProvider::start().await.expect("mock");
    let extra = semantic("serve").replace("mode = \"off\"", "mode = \"deterministic\"");
    let s = Sluice::start(&config(&mock.url(), "", &extra)).await;
    // A streamed miss: assembled once, stored in the exact and the semantic cache.
    let mut streamed = chat(ASK);
    streamed["stream"] = json!(true);
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &streamed).await;
    assert_eq!(h["x-sluice-cache"], "miss");
    assert_eq!(paths(&mock), ["/v1/embeddings", "/v1/chat/completions"]);
    // The same request: the exact cache answers, with no embedding call.
    let (_, h, exact) = post(&s, "/v1/chat/completions", &[], &chat(ASK)).await;
    assert_eq!(h["x-sluice-cache"], "hit");
    assert_eq!(mock.request_count(), 2);
    // A paraphrase: the semantic cache answers, as JSON, the same answer.
    let (_, h, similar) = post(&s, "/v1/chat/completions", &[], &chat(PARAPHRASE)).await;
    assert_eq!(h["x-sluice-cache"], "semantic");
    assert_eq!(exact, similar);
    assert_eq!(paths(&mock)[2..], ["/v1/embeddings"]);
}

#[tokio::test]
async fn an_anthropic_messages_paraphrase_hits_too() {
    let mock = MockProvider::start().await.expect("mock");
    let extra =
        semantic("serve").replace(r#"models = ["gpt-4o-mini"]"#, r#"models = ["claude-sem"]"#);
    let s = Sluice::start(&config(&mock.url(), "", &extra)).await;
    let headers = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    let ask = |content: &str| {
        json!({"model": "claude-sem", "max_tokens": 50, "temperature": 0,
            "system": "answer briefly",
            "messages": [{"role": "user", "content": content}]})
        .to_string()
    };
    let url = s.url("/v1/messages");
    let send = |content: &str| call(Method::POST, &url, &headers, ask(content));
    let (st, h1, b1) = send(ASK).await;
    assert_eq!(st, StatusCode::OK, "{b1:?}");
    assert_eq!(h1["x-sluice-cache"], "bypass");
    assert_eq!(json(&b1)["type"], "message");
    let (st, h2, b2) = send(PARAPHRASE).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h2["x-sluice-cache"], "semantic");
    assert_eq!(b1, b2, "the earlier answer is served in Anthropic's shape");
    let (st, h3, _) = send(OTHER).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        h3["x-sluice-cache"], "bypass",
        "another question is not a hit"
    );
    let messages = mock
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .count();
    assert_eq!(messages, 2, "the paraphrase never reached the provider");
}
