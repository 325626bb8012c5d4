//! The budget journal through the real binary: recovery of a damaged file,
//! `sluice state repair`, absurd provider usage, and a full disk.

#[path = "support/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use harness::*;
use http::StatusCode;
use serde_json::{json, Value};
use sluice_mock::{Fault, MockProvider};

const PRICING: &str = "[[pricing]]\nmodel = \"mock-model\"\ninput = 1.0\noutput = 2.0\n";
const BUDGET: &str =
    "[[budgets]]\nname = \"life\"\nscope = [\"user\"]\nwindow = \"lifetime\"\nlimit_usd = 100.0\n";

fn line(n: u64) -> String {
    format!("{{\"b\":\"life\",\"s\":\"user=alice\",\"w\":\"lifetime\",\"n\":{n}}}\n")
}

fn chat(content: &str) -> Value {
    json!({"model": "mock-model", "max_tokens": 10, "messages": [{"role": "user", "content": content}]})
}

fn admin_auth() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

/// Spend of the `life|user=alice` bucket, in USD.
async fn spent(s: &Sluice) -> f64 {
    let (_, b) = get(
        &s.admin_url("/admin/budgets"),
        &[("authorization", &admin_auth())],
    )
    .await
    .expect("budgets");
    json(&b)["budgets"]
        .as_array()
        .expect("budgets")
        .iter()
        .find(|b| b["bucket"] == "life|user=alice")
        .map_or(0.0, |b| b["spent_usd"].as_f64().expect("spent"))
}

/// Runs `sluice ARGS --config CONFIG` to completion (start-up failures and
/// subcommands), killing it if it is still running after 20 s.
async fn run_to_exit(args: &[&str], config: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    tokio::task::spawn_blocking(move || {
        for _ in 0..200 {
            if child.try_wait().expect("wait").is_some() {
                return child.wait_with_output().expect("output");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        panic!("sluice kept running");
    })
    .await
    .expect("join")
}

/// A config in `dir` the way the harness writes it.
fn write_config(dir: &Path, mock: &MockProvider) -> PathBuf {
    let text = config(&mock.url(), "", &format!("{PRICING}{BUDGET}"))
        .replace("USAGE_PATH", &dir.join("usage.jsonl").display().to_string())
        .replace("STATE_PATH", &dir.join("state.jsonl").display().to_string());
    let p = dir.join("proxy.toml");
    std::fs::write(&p, text).expect("config");
    p
}

#[tokio::test]
async fn a_torn_last_line_ending_inside_a_utf8_character_is_skipped() {
    let mock = MockProvider::start().await.expect("mock");
    let dir = temp_dir();
    let mut bytes = line(1_500_000).into_bytes();
    // "café": the write stopped after the first byte of "é" (C3 A9).
    bytes.extend_from_slice(b"{\"b\":\"life\",\"s\":\"user=caf\xC3");
    std::fs::write(dir.join("state.jsonl"), bytes).expect("state");
    let s = Sluice::start_in(dir, &config(&mock.url(), "", &format!("{PRICING}{BUDGET}"))).await;
    assert!((spent(&s).await - 0.0015).abs() < 1e-12);
    assert!(s.log().contains("torn last line skipped"), "{}", s.log());
}

#[tokio::test]
async fn a_corrupt_line_stops_the_start_and_repair_drops_it_with_a_backup() {
    let mock = MockProvider::start().await.expect("mock");
    let dir = temp_dir();
    let state = dir.join("state.jsonl");
    let damaged = format!(
        "{}not json at all\n{}{}{}",
        line(1_000_000),
        line(u64::MAX),
        line(2_000_000),
        "{\"b\":\"li"
    );
    std::fs::write(&state, &damaged).expect("state");
    let config_path = write_config(&dir, &mock);

    let out = run_to_exit(&[], &config_path).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a corrupt journal: {err}");
    assert!(err.contains("state.jsonl: line 2"), "{err}");
    assert!(err.contains("sluice state repair"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&state).expect("state"),
        damaged,
        "the journal is left as it was"
    );

    let out = run_to_exit(&["state", "repair"], &config_path).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("dropped 3 bad line(s) (line 2, 3, 5)"),
        "{said}"
    );
    let backup = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.jsonl.bak.")
        })
        .expect("a backup");
    assert_eq!(
        std::fs::read_to_string(backup.path()).expect("backup"),
        damaged
    );

    let text = std::fs::read_to_string(&config_path).expect("config");
    let s = Sluice::start_in(dir, &text).await;
    assert!((spent(&s).await - 0.003).abs() < 1e-12);
}

#[tokio::test]
async fn absurd_provider_token_counts_are_counted_instead() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", &format!("{PRICING}{BUDGET}"))).await;
    let body = json!({
        "id": "chatcmpl-evil", "object": "chat.completion", "created": 1, "model": "mock-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": u64::MAX, "completion_tokens": u64::MAX, "total_tokens": u64::MAX}
    });
    mock.push_fault(Fault::Status {
        status: 200,
        body: body.to_string(),
        retry_after: None,
    });
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("one two three")).await;
    assert_eq!(st, StatusCode::OK);
    if let Some(c) = h.get("x-sluice-cost-usd") {
        let c: f64 = c.to_str().expect("s").parse().expect("f");
        assert!(c < 0.01, "cost header {c}");
    }
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["usage_source"], "estimated");
    assert!(rec["input_tokens"].as_u64().expect("input") < 100, "{rec}");
    assert!(
        rec["output_tokens"].as_u64().expect("output") >= 1,
        "counted from the answer: {rec}"
    );
    assert!(rec["cost_usd"].as_f64().expect("cost") < 0.01, "{rec}");
    assert!(spent(&s).await < 0.01);
    assert!(s.log().contains("implausible token count"), "{}", s.log());
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `path` with it, until the disk says no.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = [b'x'; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

async fn metric(s: &Sluice, name: &str) -> f64 {
    let (_, b) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
    String::from_utf8_lossy(&b)
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn wait_ready(s: &Sluice, want: StatusCode) -> String {
    for _ in 0..200 {
        let (st, b) = get(&s.admin_url("/readyz"), &[]).await.expect("readyz");
        if st == want {
            return String::from_utf8_lossy(&b).into_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz never answered {want}:\n{}", s.log());
}

#[tokio::test]
async fn a_full_disk_holds_usage_records_until_charges_are_durable() {
    let mock = MockProvider::start().await.expect("mock");
    let dir = temp_dir();
    let disk = dir.join("disk");
    let _mount = match Tmpfs::mount(&disk, "64k") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("skipped: cannot mount a tmpfs here ({e}); the writer's failure path is unit-tested in src/budget/journal/writer/tests.rs");
            return;
        }
    };
    let state = disk.join("state.jsonl");
    let text = config(&mock.url(), "", &format!("{PRICING}{BUDGET}"))
        .replace("STATE_PATH", &state.display().to_string());
    let s = Sluice::start_in(dir.clone(), &text).await;
    assert_eq!(metric(&s, "sluice_journal_degraded").await, 0.0);

    let filler = disk.join("filler");
    fill(&filler);
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat("one two three")).await;
    assert_eq!(st, StatusCode::OK);
    let id = h["x-sluice-request-id"].to_str().expect("id").to_owned();
    let why = wait_ready(&s, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(why.contains("journal"), "{why}");
    assert_eq!(metric(&s, "sluice_journal_degraded").await, 1.0);
    assert!(metric(&s, "sluice_journal_write_errors_total").await >= 1.0);
    // The first write failed before /readyz said so, and the record waits
    // for its charge.
    assert!(
        !s.usage().iter().any(|r| r["request_id"] == id.as_str()),
        "usage record written while its charge is not on disk"
    );
    // Spend still counts in memory meanwhile.
    assert!(spent(&s).await > 0.0);

    std::fs::remove_file(&filler).expect("free space");
    let rec = s.usage_for(&id).await;
    wait_ready(&s, StatusCode::OK).await;
    assert_eq!(metric(&s, "sluice_journal_degraded").await, 0.0);
    let journal = std::fs::read_to_string(&state).expect("journal");
    for l in journal.lines() {
        serde_json::from_str::<Value>(l)
            .unwrap_or_else(|e| panic!("torn line {l:?} ({e}) in {journal:?}"));
    }
    assert!(journal.ends_with('\n'));

    // The charge survives kill -9.
    let cost = rec["cost_usd"].as_f64().expect("cost");
    let dir = s.kill9().await;
    let s = Sluice::start_in(dir, &text).await;
    assert!((spent(&s).await - cost).abs() < 1e-12);
}
