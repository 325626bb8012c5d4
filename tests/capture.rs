//! Capture and replay through the real binary: redaction before anything
//! is written, the error, sample and match rules, rotation under a bounded
//! total, admin triggers, and `sluice replay` against a candidate config.

#[path = "support/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_mock::{Fault, MockProvider};

/// The harness config with a `[capture]` section (`body` goes inside it,
/// `rules` after it) writing to `capture.jsonl` in the test's directory.
fn cfg(mock_url: &str, body: &str, rules: &str) -> String {
    let extra = format!(
        "[retry]\nmax_retries = 0\n\n[capture]\npath = \"CAPTURE_PATH\"\n{body}\n\n{rules}\n"
    );
    config(mock_url, "", &extra)
}

async fn start(mock_url: &str, body: &str, rules: &str) -> Sluice {
    let dir = temp_dir();
    let text = cfg(mock_url, body, rules).replace(
        "CAPTURE_PATH",
        &dir.join("capture.jsonl").display().to_string(),
    );
    Sluice::start_in(dir, &text).await
}

fn capture_path(s: &Sluice) -> PathBuf {
    s.dir.join("capture.jsonl")
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

async fn admin_status(s: &Sluice) -> Value {
    let (st, v) = admin_as(s, Method::GET, "/admin/capture").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

/// Waits (bounded) until the writer has written `n` records.
async fn wait_written(s: &Sluice, n: u64) -> Vec<Value> {
    for _ in 0..200 {
        if admin_status(s).await["written"].as_u64() >= Some(n) {
            return records(&capture_path(s));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "capture never wrote {n} record(s): {}",
        admin_status(s).await
    );
}

fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o", "max_tokens": 20, "messages": [{"role": "user", "content": text}]})
}

const SECRET_TEXT: &str = "mail carol@example.com, my key is sk-proj-SECRETSECRET123456";

#[tokio::test]
async fn only_errors_are_captured_and_secrets_never_reach_the_file() {
    let mock = MockProvider::start().await.expect("mock");
    let s = start(
        &mock.url(),
        "redact = [\"email\"]",
        "[[capture.rules]]\non = \"error\"",
    )
    .await;
    // A success: not captured under an error-only rule.
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat(SECRET_TEXT)).await;
    assert_eq!(st, StatusCode::OK);
    mock.push_fault(Fault::Status {
        status: 400,
        body: format!("bad request from carol@example.com using {UPSTREAM_OPENAI_KEY}"),
        retry_after: None,
    });
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat(SECRET_TEXT)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let lines = wait_written(&s, 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let r = &lines[0];
    assert_eq!(r["reason"], "error");
    assert_eq!(r["status"], 400);
    assert_eq!(r["user"], "alice");
    assert_eq!(r["key"], "test");
    assert_eq!(r["path"], "/v1/chat/completions");
    let content = r["request"]["messages"][0]["content"]
        .as_str()
        .expect("content");
    assert!(
        content.contains("[email]") && content.contains("[key]"),
        "{content}"
    );
    assert_eq!(r["request_headers"]["content-type"], "application/json");
    let text = std::fs::read_to_string(capture_path(&s)).expect("file");
    for secret in [
        "carol@example.com",
        "sk-proj-SECRET",
        KEY,
        UPSTREAM_OPENAI_KEY,
        "authorization",
        "Bearer",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} reached the capture file: {text}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_sample_of_zero_captures_nothing_and_one_captures_everything() {
    let mock = MockProvider::start().await.expect("mock");
    let s = start(
        &mock.url(),
        "",
        "[[capture.rules]]\non = \"sample\"\nratio = 0.0\n\n\
         [[capture.rules]]\non = \"match\"\nfeature = \"audit\"",
    )
    .await;
    for _ in 0..3 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("hi")).await;
        assert_eq!(st, StatusCode::OK);
    }
    let stream = json!({"model": "gpt-4o", "stream": true, "max_tokens": 20,
                        "messages": [{"role": "user", "content": "audited"}]});
    let (st, _, _) = post(
        &s,
        "/v1/chat/completions",
        &[("x-sluice-feature", "audit")],
        &stream,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    // The writer is first in, first out: the three before would be first.
    let lines = wait_written(&s, 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["reason"], "match");
    assert_eq!(lines[0]["feature"], "audit");
    assert_eq!(lines[0]["stream"], true);
    assert_eq!(lines[0]["finish_reason"], "stop");
    assert_eq!(lines[0]["response_text"], "echo: audited");
    assert!(lines[0]["output_tokens"].as_u64().is_some());
    s.stop().await;

    let s = start(
        &mock.url(),
        "",
        "[[capture.rules]]\non = \"sample\"\nratio = 1.0",
    )
    .await;
    for i in 0..4 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat(&format!("n{i}"))).await;
        assert_eq!(st, StatusCode::OK);
    }
    let lines = wait_written(&s, 4).await;
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|l| l["reason"] == "sample"));
    assert_eq!(lines[0]["response"]["choices"][0]["finish_reason"], "stop");
    s.stop().await;
}

#[tokio::test]
async fn rotation_keeps_the_total_bounded_and_long_bodies_are_cut() {
    let mock = MockProvider::start().await.expect("mock");
    let s = start(
        &mock.url(),
        "max_file_bytes = \"8KiB\"\nmax_total_bytes = \"20KiB\"\nmax_body_bytes = \"1KiB\"",
        "[[capture.rules]]\non = \"sample\"\nratio = 1.0",
    )
    .await;
    let long = format!("{} {}", "x".repeat(3000), SECRET_TEXT);
    for _ in 0..40 {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat(&long)).await;
        assert_eq!(st, StatusCode::OK);
    }
    let lines = wait_written(&s, 40).await;
    assert!(!lines.is_empty());
    let r = &lines[lines.len() - 1];
    assert_eq!(r["request_truncated"], true);
    assert!(r["request"].as_str().expect("cut text").len() <= 1024);
    let mut total = 0;
    let mut files = 0;
    for e in std::fs::read_dir(&s.dir).expect("dir") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("capture.jsonl") {
            files += 1;
            total += e.metadata().expect("meta").len();
            let text = std::fs::read_to_string(e.path()).expect("read");
            assert!(!text.contains("sk-proj-SECRET"));
        }
    }
    assert!(files >= 2, "rotated files: {files}");
    assert!(total <= 20 * 1024, "total {total}");
    s.stop().await;
}

async fn admin_post(s: &Sluice, body: &Value) -> (StatusCode, Value) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (st, _, b) = call(
        Method::POST,
        &s.admin_url("/admin/capture"),
        &[("authorization", &auth), ("x-sluice-operator", "oncall")],
        body.to_string(),
    )
    .await;
    (st, json(&b))
}

#[tokio::test]
async fn an_admin_trigger_captures_its_subject_only_until_it_ends() {
    let mock = MockProvider::start().await.expect("mock");
    let s = start(&mock.url(), "", "").await;
    let (st, v) = admin_post(&s, &json!({"feature": "checkout", "minutes": 1})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = admin_post(&s, &json!({"feature": "checkout"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let status = admin_status(&s).await;
    let t = &status["triggers"][0];
    assert_eq!(t["value"], "checkout");
    assert_eq!(t["by"], "oncall");
    assert!(t["expires_in"].as_u64().is_some_and(|n| n <= 60));
    for feature in ["search", "checkout", "search"] {
        let (st, _, _) = post(
            &s,
            "/v1/chat/completions",
            &[("x-sluice-feature", feature)],
            &chat(feature),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
    }
    let lines = wait_written(&s, 1).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["reason"], "trigger");
    assert_eq!(lines[0]["feature"], "checkout");
    // Ended early: the subject's next requests are not captured.
    let (st, v) = admin_as(&s, Method::DELETE, "/admin/capture?feature=checkout").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(admin_status(&s).await["triggers"]
        .as_array()
        .expect("list")
        .is_empty());
    let (st, _, _) = post(
        &s,
        "/v1/chat/completions",
        &[("x-sluice-feature", "checkout")],
        &chat("after"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = post(
        &s,
        "/v1/chat/completions",
        &[("x-sluice-feature", "marker")],
        &chat("marker"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    // A marker the config captures proves the writer got past "after".
    let (st, v) = admin_post(&s, &json!({"feature": "marker2", "minutes": 1})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _, _) = post(
        &s,
        "/v1/chat/completions",
        &[("x-sluice-feature", "marker2")],
        &chat("marker2"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let lines = wait_written(&s, 2).await;
    let features: Vec<&str> = lines.iter().filter_map(|l| l["feature"].as_str()).collect();
    assert_eq!(features, ["checkout", "marker2"]);
    s.stop().await;
}

#[tokio::test]
async fn replay_compares_a_capture_with_a_candidate_config() {
    let mock = MockProvider::start().await.expect("mock");
    let s = start(
        &mock.url(),
        "",
        "[[capture.rules]]\non = \"sample\"\nratio = 1.0",
    )
    .await;
    for text in ["one", "two", "three"] {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat(text)).await;
        assert_eq!(st, StatusCode::OK);
    }
    let stream = json!({"model": "claude-3-5-haiku-latest", "stream": true, "max_tokens": 20,
                        "messages": [{"role": "user", "content": "four"}]});
    let (st, _, _) = post(
        &s,
        "/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        &stream,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    wait_written(&s, 4).await;
    let file = capture_path(&s);
    // The candidate sends gpt-4o to another upstream model.
    let dir = temp_dir();
    let candidate = config(&mock.url(), "", "")
        .replace(
            "[[models]]\nname = \"*\"",
            "[[models]]\nname = \"gpt-4o\"\nprovider = \"mock-openai\"\nupstream_model = \"candidate-model\"\n\n[[models]]\nname = \"*\"",
        )
        .replace("USAGE_PATH", &dir.join("usage.jsonl").display().to_string())
        .replace("STATE_PATH", &dir.join("state.jsonl").display().to_string());
    let cand_path = dir.join("candidate.toml");
    std::fs::write(&cand_path, candidate).expect("write");
    mock.clear_requests();
    let report: Value =
        serde_json::from_str(&replay(&file, &cand_path, true).await).expect("JSON report");
    let rows = report["requests"].as_array().expect("requests");
    assert_eq!(rows.len(), 4, "{report}");
    for r in &rows[..3] {
        assert_eq!(r["captured"]["status"], 200, "{r}");
        assert_eq!(r["candidate"]["status"], 200, "{r}");
        assert_eq!(r["captured"]["model"], "gpt-4o");
        assert_eq!(r["candidate"]["model"], "candidate-model");
        assert_eq!(r["candidate"]["finish_reason"], "stop");
        assert!(r["candidate"]["output_tokens"].as_u64().is_some(), "{r}");
        assert!(r["candidate"]["latency_ms"].as_f64().is_some());
        // The mock echoes the prompt: the same answer from either model.
        assert_eq!(r["similarity"], 1.0, "{r}");
        assert!(r["request_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("req_")));
    }
    let anthropic = &rows[3];
    assert_eq!(anthropic["endpoint"], "messages");
    assert_eq!(anthropic["candidate"]["status"], 200, "{anthropic}");
    assert_eq!(anthropic["candidate"]["finish_reason"], "end_turn");
    assert_eq!(anthropic["similarity"], 1.0, "{anthropic}");
    assert_eq!(report["totals"]["replayed"], 4);
    assert_eq!(report["totals"]["status_match"], 4);
    // The candidate really sent its model upstream, with the provider key.
    let sent = mock.requests();
    assert!(sent
        .iter()
        .any(|r| r.json().is_some_and(|b| b["model"] == "candidate-model")));
    let table = replay(&file, &cand_path, false).await;
    assert!(table.contains("200→200"), "{table}");
    assert!(table.contains("TOTAL 4 request(s), 4 replayed"), "{table}");
    s.stop().await;
}

/// Runs `sluice replay FILE --config CANDIDATE` and returns its stdout.
async fn replay(file: &Path, candidate: &Path, json: bool) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("replay")
        .arg(file)
        .arg("--config")
        .arg(candidate)
        .arg("--concurrency")
        .arg("2")
        .env("SLUICE_TEST_OPENAI_KEY", UPSTREAM_OPENAI_KEY)
        .env("SLUICE_TEST_ANTHROPIC_KEY", UPSTREAM_ANTHROPIC_KEY)
        .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("RUST_LOG");
    if json {
        cmd.arg("--json");
    }
    // Off the test's runtime: the mock serves the replay from it.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run sluice replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}
