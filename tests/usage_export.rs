//! `/admin/usage` and the usage log through the real binary: bounded,
//! streamed exports, CSV safe to open in a spreadsheet, rotation on SIGHUP.

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use http::StatusCode;
use serde_json::{json, Value};
use sluice_mock::MockProvider;

fn chat(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": content}]})
}

async fn start() -> (MockProvider, Sluice) {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", "")).await;
    (mock, s)
}

async fn export(s: &Sluice, query: &str) -> (StatusCode, String) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (st, b) = get(
        &s.admin_url(&format!("/admin/usage{query}")),
        &[("authorization", &auth)],
    )
    .await
    .expect("export");
    (st, String::from_utf8_lossy(&b).into_owned())
}

#[tokio::test]
async fn exports_are_bounded_by_limit_and_time() {
    let (_mock, s) = start().await;
    for i in 0..3 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat(&format!("n{i}"))).await;
        assert_eq!(st, StatusCode::OK);
    }
    let all = s.wait_usage(3).await;
    let (st, b) = export(&s, "?limit=2").await;
    assert_eq!(st, StatusCode::OK);
    let v: Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["records"].as_array().expect("records").len(), 2);
    assert_eq!(
        (v["limit"].as_u64(), v["truncated"].as_bool()),
        (Some(2), Some(true))
    );
    let (_, b) = export(&s, "").await;
    let v: Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["records"].as_array().expect("records").len(), 3);
    assert_eq!(v["truncated"], false);
    // `since` (alias of `from`) at the last record's time.
    let last = all[2]["ts"].as_str().expect("ts");
    let (_, b) = export(&s, &format!("?since={last}&format=csv")).await;
    assert!(b.lines().count() >= 2 && b.lines().count() <= 4, "{b}");
    for bad in ["?limit=0", "?limit=100001", "?limit=x", "?format=xml"] {
        let (st, b) = export(&s, bad).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert!(b.contains("error"), "{b}");
    }
}

#[tokio::test]
async fn csv_cells_cannot_be_formulas() {
    let (_mock, s) = start().await;
    let features = [
        "=HYPERLINK(\"http://evil.example\",\"x\")",
        "@SUM(A1)",
        "+cmd",
        "-2+3",
    ];
    for f in features {
        let (st, _, _) = post(
            &s,
            "/v1/chat/completions",
            &[("x-sluice-feature", f)],
            &chat("hi"),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
    }
    s.wait_usage(features.len()).await;
    let (st, csv) = export(&s, "?format=csv").await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        csv.contains(",\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\","),
        "{csv}"
    );
    for f in ["'@SUM(A1)", "'+cmd", "'-2+3"] {
        assert!(csv.contains(&format!(",{f},")), "{f} in {csv}");
    }
    for row in csv.lines() {
        for cell in row.split(',') {
            assert!(!cell.starts_with(['=', '+', '-', '@']), "{cell} in {row}");
        }
    }
}

#[tokio::test]
async fn sighup_reopens_the_usage_log_after_rotation() {
    let (_mock, s) = start().await;
    let (_, h1, _) = post(&s, "/v1/chat/completions", &[], &chat("before")).await;
    s.wait_usage(1).await;
    let rotated = s.dir.join("usage.jsonl.1");
    std::fs::rename(&s.usage_path, &rotated).expect("rotate");
    s.signal("HUP");
    s.wait_log("usage log reopened").await;
    let (_, h2, _) = post(&s, "/v1/chat/completions", &[], &chat("after")).await;
    let rec = s
        .usage_for(h2["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["status"], 200);
    assert_eq!(s.usage().len(), 1, "only the new record in the new file");
    let old = std::fs::read_to_string(&rotated).expect("rotated");
    assert_eq!(old.lines().count(), 1);
    assert!(old.contains(h1["x-sluice-request-id"].to_str().expect("id")));
    // Exports read the current file.
    let (_, b) = export(&s, "").await;
    let v: Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["records"].as_array().expect("records").len(), 1);
}

#[tokio::test]
async fn a_large_log_streams_in_many_chunks() {
    let mock = MockProvider::start().await.expect("mock");
    let dir = temp_dir();
    let mut log = String::new();
    for i in 0..20_000 {
        log.push_str(&format!(
            "{{\"ts\":\"2026-01-01T00:00:{:02}.{:03}Z\",\"request_id\":\"req_{i}\",\"user\":\"u{}\",\"status\":200,\"cost_usd\":0.001,\"padding\":\"{}\"}}\n",
            i / 1000,
            i % 1000,
            i % 7,
            "x".repeat(150)
        ));
    }
    log.push_str("not json\n");
    std::fs::write(dir.join("usage.jsonl"), &log).expect("log");
    let s = Sluice::start_in(dir, &config(&mock.url(), "", "")).await;
    let (st, b) = export(&s, "?limit=100000&to=2026-01-02").await;
    assert_eq!(st, StatusCode::OK);
    let v: Value = serde_json::from_str(&b).expect("one JSON document");
    let records = v["records"].as_array().expect("records");
    assert_eq!(records.len(), 20_000);
    assert_eq!(records[19_999]["request_id"], "req_19999");
    assert_eq!(v["truncated"], false);
    let (_, csv) = export(
        &s,
        "?format=csv&from=2026-01-01T00:00:10&to=2026-01-01T00:00:12",
    )
    .await;
    assert_eq!(csv.lines().count(), 1 + 2_000, "header + seconds 10 and 11");
}
