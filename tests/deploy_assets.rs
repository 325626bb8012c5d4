//! The Grafana dashboard and the Prometheus alert rules in deploy/ name only
//! metrics Sluice really exports (checked against the /metrics of a running
//! sluice after some traffic), and the rules (and the dashboard's queries)
//! pass `promtool check rules` when promtool is installed.

#[path = "support/harness.rs"]
mod harness;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use harness::*;
use http::StatusCode;
use serde_json::{json, Value};
use sluice_mock::MockProvider;

const DASHBOARD: &str = "deploy/grafana/sluice.json";
const RULES: &str = "deploy/prometheus/sluice-alerts.yml";

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Every PromQL query of the dashboard (panels, nested rows too).
fn dashboard_queries() -> Vec<String> {
    fn walk(panels: &[Value], out: &mut Vec<String>) {
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(t["expr"].as_str().expect("a target has an expr").to_owned());
            }
            walk(p["panels"].as_array().map_or(&[][..], Vec::as_slice), out);
        }
    }
    let d: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard is JSON");
    let mut out = Vec::new();
    walk(d["panels"].as_array().expect("panels"), &mut out);
    out
}

/// Every `expr:` of the rules file: inline, or a `|` block (the lines
/// indented deeper than the key).
fn rule_queries() -> Vec<String> {
    let text = read(RULES);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some(at) = line.find("expr:") else {
            continue;
        };
        if line[..at].trim_start().starts_with('#') {
            continue;
        }
        let value = line[at + "expr:".len()..].trim();
        if value != "|" && value != "|-" {
            out.push(value.to_owned());
            continue;
        }
        let mut block = String::new();
        while i < lines.len() {
            let next = lines[i];
            let indent = next.len() - next.trim_start().len();
            if !next.trim().is_empty() && indent <= at {
                break;
            }
            block.push_str(next.trim());
            block.push(' ');
            i += 1;
        }
        out.push(block);
    }
    out
}

/// The `sluice_*` metric names a query refers to (outside its string
/// literals: a label value is no metric).
fn metric_names(query: &str) -> BTreeSet<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut code = String::with_capacity(query.len());
    let (mut quote, mut escaped) = (None, false);
    for c in query.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                code.push(' ');
            }
            None if c == '"' || c == '\'' || c == '`' => {
                quote = Some(c);
                code.push(' ');
            }
            None => code.push(c),
        }
    }
    let mut names = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("sluice_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
        // Not the inside of a longer identifier (a label or another name).
        if !before.is_some_and(is_ident) {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// What /metrics exports: each name and its type (`# TYPE`), plus names
/// seen only in samples (no `# TYPE` line: untyped).
fn exported(text: &str) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                names.insert(name.to_owned(), kind.to_owned());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            names
                .entry(name.to_owned())
                .or_insert_with(|| "untyped".into());
        }
    }
    names
}

/// Whether `name` is exported: itself, or the series of a histogram.
fn is_exported(name: &str, exported: &HashMap<String, String>) -> bool {
    if exported.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|base| exported.get(base).is_some_and(|k| k == "histogram"))
    })
}

async fn scrape_after_traffic() -> String {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(
        &mock.url(),
        "",
        "[cache]\nmode = \"deterministic\"\n",
    ))
    .await;
    let chat = |stream: bool, text: &str| {
        json!({"model": "gpt-4o-mini", "stream": stream, "temperature": 0,
               "messages": [{"role": "user", "content": text}]})
    };
    // A miss, a hit, a stream.
    for body in [chat(false, "hi"), chat(false, "hi"), chat(true, "hi")] {
        let (st, _, _) = post(&s, "/v1/chat/completions", &[], &body).await;
        assert_eq!(st, StatusCode::OK);
    }
    let failing = chat(true, "fail");
    let (st, _, _) = post(
        &s,
        "/v1/chat/completions",
        &[("x-mock-status", "500")],
        &failing,
    )
    .await;
    assert!(st.is_server_error(), "{st}");
    s.wait_usage(4).await;
    let (st, m) = get(&s.admin_url("/metrics"), &[]).await.expect("metrics");
    assert_eq!(st, StatusCode::OK);
    String::from_utf8_lossy(&m).into_owned()
}

#[tokio::test]
async fn dashboard_and_alert_rules_name_only_exported_metrics() {
    let dashboard = dashboard_queries();
    let rules = rule_queries();
    assert!(dashboard.len() >= 15, "dashboard queries: {dashboard:?}");
    assert!(rules.len() >= 15, "rule queries: {rules:?}");

    let text = scrape_after_traffic().await;
    let exported = exported(&text);
    // The traffic made samples; the rest are there from their description.
    for with_samples in [
        "sluice_requests_total",
        "sluice_ttft_seconds",
        "sluice_upstream_attempts_total",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(with_samples) && !l.starts_with('#')),
            "{with_samples} has no sample:\n{text}"
        );
    }

    let mut referenced = BTreeSet::new();
    let mut missing = Vec::new();
    for (file, queries) in [(DASHBOARD, &dashboard), (RULES, &rules)] {
        for q in queries {
            let names = metric_names(q);
            assert!(!names.is_empty(), "{file}: a query naming no metric: {q}");
            for n in names {
                if !is_exported(&n, &exported) {
                    missing.push(format!("{file}: {n} (in {q})"));
                }
                referenced.insert(n);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics Sluice does not export:\n{}\n\nexported: {:?}",
        missing.join("\n"),
        exported.keys().collect::<BTreeSet<_>>()
    );
    // What the on-call engineer needs is covered.
    for needed in [
        "sluice_requests_total",
        "sluice_ttft_seconds_bucket",
        "sluice_request_duration_seconds_bucket",
        "sluice_circuit_open",
        "sluice_budget_alerts_total",
        "sluice_cost_nanodollars_total",
        "sluice_cost_anomalies_total",
        "sluice_retries_total",
        "sluice_retry_budget_exhausted_total",
        "sluice_rate_limited_total",
        "sluice_state_up",
    ] {
        assert!(referenced.contains(needed), "nothing uses {needed}");
    }
}

#[test]
fn the_checker_is_strict() {
    let exported = exported(
        "# HELP a_seconds x\n# TYPE a_seconds histogram\n\
         # TYPE b_total counter\nb_total{x=\"1\"} 2\nc_untyped 1\n",
    );
    assert!(is_exported("a_seconds_bucket", &exported));
    assert!(is_exported("b_total", &exported) && is_exported("c_untyped", &exported));
    assert!(
        !is_exported("b_total_bucket", &exported),
        "only histograms have buckets"
    );
    assert!(!is_exported("a_second_bucket", &exported));
    assert_eq!(
        metric_names("rate(sluice_a_total{x=\"sluice_b\"}[5m]) / my_sluice_c"),
        ["sluice_a_total".to_owned()].into_iter().collect()
    );
}

/// A rules file of the dashboard's queries as recording rules, so promtool
/// parses them too.
fn dashboard_as_rules() -> String {
    let mut out = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in dashboard_queries().iter().enumerate() {
        out.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(q).expect("json string")
        ));
    }
    out
}

#[test]
fn promtool_accepts_the_rules_and_the_dashboard_queries() {
    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!("skipped: promtool is not on PATH (Debian package `prometheus`; scripts/test.sh installs it)");
        return;
    }
    let dir = temp_dir();
    let dash_rules = dir.join("dashboard-rules.yml");
    std::fs::write(&dash_rules, dashboard_as_rules()).expect("write");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join(RULES);
    for file in [rules.as_path(), dash_rules.as_path()] {
        let out = Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(file)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool check rules {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
