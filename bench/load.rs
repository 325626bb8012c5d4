//! Load harness: the mock provider direct vs through Sluice vs through nginx, in one run.
//!
//! `cargo bench --bench load -- [--quick]` (or `bash bench/run.sh [--quick]`), after
//! `cargo build --release --bins`. It starts `target/release/sluice-mock`, `target/release/sluice`
//! in front of it and, when `nginx` is on PATH, nginx (`proxy_pass`, `proxy_buffering off`, one
//! worker, upstream keepalive) as a third arm. Every scenario runs each arm back to back
//! (direct, sluice, nginx) so machine noise hits them alike, and stops after N requests or 10 s,
//! whichever comes first. `--quick` cuts the counts about 10x.
//!
//! Reported per scenario and arm: latency p50/p90/p99 (whole response), time to the first body
//! frame, the gap between frames of paced streams, throughput, proxy CPU per request
//! (utime+stime from /proc/PID/stat), and Sluice's RSS (idle, peak under load, after, and with
//! 1,000 slow streams open). The Markdown report goes to stdout and `bench/out/latest.md`.
//!
//! The load generator shares the machine's cores with the mock and the proxy: it runs on one
//! two-worker tokio runtime, with one pooled client and pre-built request bodies.
//!
//! Besides the main instance, a second Sluice ("features": cache, failover) and the scenario
//! matrix of issue #17 (one fresh Sluice per configuration: plain, limits+budget, the same in
//! fleet mode against a private redis-server (issue 11), 10k keys + 2k rules, cache on) run in
//! the same process tree; see bench/README.md.
//!
//! This file is the main (arguments, run order); `load/` holds the parts: `processes`
//! (children), `configs` (Sluice configs), `scenarios` (what is sent), `drive` (the load
//! generator, /proc sampling), `report` and `report_instances` (the Markdown report).

// The report is this program's output.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "load/configs.rs"]
mod configs;
#[path = "load/drive.rs"]
mod drive;
#[path = "load/processes.rs"]
mod processes;
#[path = "procfs.rs"]
mod procfs;
#[path = "load/report.rs"]
mod report;
#[path = "load/report_instances.rs"]
mod report_instances;
#[path = "load/scenarios.rs"]
mod scenarios;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use configs::{matrix_config, sluice_config, sluice_features_config, RedisTarget};
use drive::{many_streams, rss_kb, run_scenario, soak, Arm, Env, HttpClient, RssSampler, Run};
use processes::{
    alive, have_nginx, signal, start_failing, start_mock, start_nginx, start_redis, start_sluice,
    LogTail, Procs, PIDS,
};
use procfs::{clk_tck, fd_count, status_kb};
use report::{mb, report, rounds, Memory};
use report_instances::{features_report, matrix_report, MatrixRun};
use scenarios::{cache_fill, feature_scenarios, matrix_scenarios, scenarios, Scenario};

/// Every scenario run stops after this long even if it has not sent all its requests.
const TIME_CAP: Duration = Duration::from_secs(10);

/// Command line: `--quick` shrinks the counts ~10x; `--only TEXT` (repeatable) runs only the
/// scenarios whose name contains TEXT, or is exactly TEXT when it starts with `=` (`streams`
/// selects the many-streams scenario);
/// `--soak SECS` instead drives non-streaming chat at c=64 through each proxy for SECS seconds
/// and reports every 5 s (does the cost per request stay flat?); `--repeat N` runs the main
/// scenarios N rounds over (at most [`MAX_ROUNDS`]) and adds each goal's ratio in every round
/// and its median (one run of a shared VM is ±10 %). Anything else (cargo bench passes
/// `--bench`) is ignored.
struct Args {
    quick: bool,
    only: Vec<String>,
    soak: Option<u64>,
    repeat: usize,
}

/// The most rounds `--repeat` runs.
const MAX_ROUNDS: usize = 15;

impl Args {
    fn parse() -> Args {
        let mut args = std::env::args().skip(1);
        let mut out = Args {
            quick: false,
            only: Vec::new(),
            soak: None,
            repeat: 1,
        };
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => out.quick = true,
                "--only" => out.only.extend(args.next()),
                "--soak" => out.soak = args.next().and_then(|v| v.parse().ok()),
                "--repeat" => {
                    out.repeat = args
                        .next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1)
                        .clamp(1, MAX_ROUNDS)
                }
                _ => {}
            }
        }
        out
    }

    fn wants(&self, name: &str) -> bool {
        self.only.is_empty()
            || self.only.iter().any(|o| match o.strip_prefix('=') {
                Some(exact) => name == exact,
                None => name.contains(o.as_str()),
            })
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let quick = args.quick;
    let started = Instant::now();
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            for pid in PIDS.lock().expect("pids").iter() {
                signal(*pid, "KILL");
            }
            std::process::exit(130);
        }
    });
    let mut procs = Procs::new();

    let (mock_pid, mock_addr, mock_log) = start_mock(&mut procs);
    let (sluice_pid, sluice_addr, sluice_admin, sluice_log) =
        start_sluice(&mut procs, "sluice.toml", &sluice_config(mock_addr));
    let failing_addr = start_failing().await;
    let (feat_pid, feat_addr, feat_admin, feat_log) = start_sluice(
        &mut procs,
        "sluice-features.toml",
        &sluice_features_config(mock_addr, failing_addr),
    );
    let nginx = have_nginx().then(|| start_nginx(&mut procs, mock_addr));
    eprintln!(
        "load: mock {mock_addr} (pid {mock_pid}), sluice {sluice_addr} (pid {sluice_pid}, admin {sluice_admin}), nginx {}",
        nginx
            .as_ref()
            .map_or("not installed: skipped".to_string(), |(p, a, _)| format!("{a} (pids {p:?})"))
    );

    let direct = Arm {
        name: "direct",
        uri: chat_uri(mock_addr),
        pids: Vec::new(),
        side: Vec::new(),
    };
    let nginx_arm = nginx.as_ref().map(|(pids, addr, _)| Arm {
        name: "nginx",
        uri: chat_uri(*addr),
        pids: pids.clone(),
        side: Vec::new(),
    });
    // direct, this Sluice instance (with the processes it relies on), nginx (when installed).
    let arms_with = |name: &'static str, addr: SocketAddr, pid: u32, side: Vec<u32>| -> Vec<Arm> {
        let sluice = Arm {
            name,
            uri: chat_uri(addr),
            pids: vec![pid],
            side,
        };
        [Some(direct.clone()), Some(sluice), nginx_arm.clone()]
            .into_iter()
            .flatten()
            .collect()
    };
    let arms = arms_with("sluice", sluice_addr, sluice_pid, Vec::new());

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build(connector);
    let nginx_pids = nginx.as_ref().map(|n| n.0.clone()).unwrap_or_default();
    let env = Env {
        client,
        mock_pid,
        tick_us: 1e6 / clk_tck() as f64,
        rss: RssSampler::spawn(sluice_pid, nginx_pids.clone()),
    };

    // Idle: let Sluice settle first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kb = rss_kb(&[sluice_pid]);
    let fds_idle = fd_count(sluice_pid);
    let threads_idle = status_kb(sluice_pid, "Threads:");
    let nginx_idle_kb = rss_kb(&nginx_pids);
    let feat_idle_kb = rss_kb(&[feat_pid]);

    if let Some(secs) = args.soak {
        let text = soak(&env, &arms, secs).await;
        println!("{text}");
        drop(procs);
        return;
    }

    // Round 0 is the report's; with `--repeat`, the later rounds feed only the rounds table.
    let mut results = Vec::new();
    let mut later_rounds = Vec::new();
    for round in 0..args.repeat {
        let mut this_round = Vec::new();
        for sc in scenarios(quick).into_iter().filter(|s| args.wants(&s.name)) {
            let runs = run_scenario(&env, &arms, &sc).await;
            this_round.push((sc, runs));
        }
        if round == 0 {
            results = this_round;
        } else {
            later_rounds.push(this_round);
        }
    }
    let rounds_text = (args.repeat > 1).then(|| rounds(&results, &later_rounds));
    let peak_kb = env.rss.sluice_max.load(Ordering::Relaxed);

    // The features instance: cache hits, memory per cached MB, failover (no nginx arm).
    let feat_arms = [
        direct.clone(),
        Arm {
            name: "sluice",
            uri: chat_uri(feat_addr),
            pids: vec![feat_pid],
            side: Vec::new(),
        },
    ];
    let mut feat_results = Vec::new();
    for sc in feature_scenarios(quick)
        .into_iter()
        .filter(|s| args.wants(&s.name))
    {
        let runs = run_scenario(&env, &feat_arms, &sc).await;
        feat_results.push((sc, runs));
    }
    let fill = if args.wants("cache fill") {
        let entries = if quick { 200 } else { 2_000 };
        let f = cache_fill(&env, &feat_arms[1], feat_admin, entries, 16).await;
        eprintln!(
            "load: cache fill {} x 16 KiB: fill ok {} err {} ({:?}), re-read ok {} err {} ({:?}); RSS {} -> {} MB; admin {} -> {}",
            f.entries,
            f.fill.ok,
            f.fill.errors + f.fill.non200,
            f.fill.first_errors,
            f.reread.ok,
            f.reread.errors + f.reread.non200,
            f.reread.first_errors,
            mb(f.rss_before_kb),
            mb(f.rss_after_kb),
            f.stats_before.trim(),
            f.stats_after.trim()
        );
        Some(f)
    } else {
        None
    };
    let feat_text = features_report(&feat_results, fill.as_ref(), feat_idle_kb);

    // The scenario matrix (issue #17): one fresh Sluice per configuration, started just before
    // its scenario and stopped after it, so its CPU and RSS are its configuration's alone. The
    // fleet-mode configuration (issue 11) shares one private redis-server, started only when
    // wanted; each of its instances gets a fresh key prefix.
    let wanted: Vec<_> = matrix_scenarios(quick)
        .into_iter()
        .filter(|(_, s)| args.wants(&s.name))
        .collect();
    let redis = if wanted.iter().any(|(c, _)| c.redis()) {
        start_redis(&mut procs)
    } else {
        None
    };
    if let Some((pid, addr, _)) = &redis {
        eprintln!("load: redis-server {addr} (pid {pid})");
    }
    let mut matrix = Vec::new();
    let mut matrix_logs = Vec::new();
    let mut matrix_skipped = Vec::new();
    for (config, sc) in wanted {
        let target = match (&redis, config.redis()) {
            (None, true) => {
                matrix_skipped.push(sc.name);
                continue;
            }
            (Some((_, addr, _)), true) => Some(RedisTarget {
                addr: *addr,
                key_prefix: format!("bench:{}:{}:", std::process::id(), matrix.len()),
            }),
            (_, false) => None,
        };
        let side: Vec<u32> = redis
            .iter()
            .filter(|_| config.redis())
            .map(|r| r.0)
            .collect();
        let text = matrix_config(config, mock_addr, &procs.dir, target.as_ref());
        let (pid, addr, _, log) = start_sluice(&mut procs, &config.file(), &text);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle_kb = rss_kb(&[pid]);
        let runs = run_scenario(&env, &arms_with("sluice", addr, pid, side.clone()), &sc).await;
        assert!(
            alive(pid),
            "sluice ({}) died during the run",
            config.label()
        );
        procs.stop(pid);
        matrix_logs.push((format!("sluice (matrix: {}) stderr", sc.name), log));
        matrix.push(MatrixRun {
            config,
            idle_kb,
            side_rss_kb: (!side.is_empty()).then(|| rss_kb(&side)),
            scenario: sc,
            runs,
        });
    }
    if let Some((_, _, log)) = redis {
        matrix_logs.push(("redis-server output".to_string(), log));
    }
    let matrix_text = matrix_report(&matrix, &matrix_skipped);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_kb = rss_kb(&[sluice_pid]);

    let count = if quick { 100 } else { 1_000 };
    let mut many = Vec::new();
    if args.wants(&format!("{count} streams")) {
        for arm in arms.iter().filter(|a| a.name != "direct") {
            let m = many_streams(&env, arm, count).await;
            eprintln!(
                "load: {count} streams via {}: opened {}, ok {}, failed {}, RSS open {} MB, peak {} MB",
                m.arm,
                m.opened,
                m.ok,
                m.failed,
                mb(m.rss_open_kb),
                mb(m.rss_peak_kb)
            );
            many.push(m);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_all_kb = rss_kb(&[sluice_pid]);
    let fds_after = fd_count(sluice_pid);
    // Close every client connection: what Sluice still holds then is its upstream pool.
    drop(env);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mem = Memory {
        idle_kb,
        peak_kb,
        after_kb,
        after_all_kb,
        fds_idle,
        fds_after,
        fds_disconnected: fd_count(sluice_pid),
        rss_disconnected_kb: rss_kb(&[sluice_pid]),
        threads_idle,
        threads_after: status_kb(sluice_pid, "Threads:"),
        nginx_idle_kb,
    };
    assert!(alive(sluice_pid), "sluice died during the run");

    let mut logs: Vec<(&str, &Arc<Mutex<LogTail>>)> = vec![
        ("sluice stderr", &sluice_log),
        ("sluice (features instance) stderr", &feat_log),
    ];
    logs.extend(matrix_logs.iter().map(|(name, log)| (name.as_str(), log)));
    logs.push(("mock output", &mock_log));
    if let Some((_, _, log)) = &nginx {
        logs.push(("nginx stderr", log));
    }
    let all_results: Vec<(Scenario, Vec<Run>)> = results
        .into_iter()
        .chain(feat_results)
        .chain(matrix.into_iter().map(|m| (m.scenario, m.runs)))
        .collect();
    let mut text = report(quick, &all_results, &mem, &many, &logs, started.elapsed());
    text.push_str(rounds_text.as_deref().unwrap_or_default());
    text.push_str(&feat_text);
    text.push_str(&matrix_text);
    println!("{text}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/out");
    std::fs::create_dir_all(&out).expect("bench/out");
    std::fs::write(out.join("latest.md"), &text).expect("write bench/out/latest.md");
    eprintln!(
        "load: report written to {}",
        out.join("latest.md").display()
    );
    drop(procs);
}

/// The chat completions URL at `addr`.
fn chat_uri(addr: SocketAddr) -> Uri {
    format!("http://{addr}/v1/chat/completions")
        .parse()
        .expect("uri")
}
