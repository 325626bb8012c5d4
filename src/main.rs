//! The `sluice` command: run the proxy, check a config, hash a key.

use std::path::PathBuf;
use std::process::ExitCode;

use sluice::config::{Config, LogConfig};

/// mimalloc: a proxy allocates and frees many small buffers per request
/// (asked for an alignment only when a block needs one: alloc/src/lib.rs).
/// The `system-alloc` feature leaves the system allocator in place, so heap
/// profilers that hook malloc (valgrind's DHAT, heaptrack) see every
/// allocation (bench/README.md: counting allocations per request).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: sluice_alloc::MiMalloc = sluice_alloc::MiMalloc;

const USAGE_HEAD: &str = "\
usage:
  sluice [--config FILE]          run the proxy (default FILE: proxy.toml)
  sluice check [--config FILE]    validate FILE, list every error, exit non-zero if any
  sluice hash-key KEY             print the sha256 to put in [[keys]] for KEY (\"-\" reads stdin)
  sluice state repair [--config FILE]
                                  drop the bad lines of the budget journal (state.path),
                                  keeping a backup copy; run it while sluice is stopped
  sluice replay FILE [--config FILE] [--json] [--concurrency N] [--limit N]
                                  re-send the requests of a capture file through the
                                  config FILE (a candidate) and compare the answers
{KEYS}
  sluice --version";

fn usage() -> String {
    USAGE_HEAD.replace("{KEYS}", sluice::cli::keys::USAGE)
}

enum Command {
    Keys(sluice::cli::keys::KeysCommand),
    Run(PathBuf),
    Check(PathBuf),
    HashKey(String),
    StateRepair(PathBuf),
    Replay(sluice::replay::Options, bool),
    Help,
    Version,
}

fn parse_args() -> Result<Command, String> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    if all.first().map(String::as_str) == Some("keys") {
        return sluice::cli::keys::parse(&all[1..]).map(Command::Keys);
    }
    let mut args = all.into_iter();
    let mut sub: Option<String> = None;
    let mut config = PathBuf::from("proxy.toml");
    let mut positional = Vec::new();
    let (mut json, mut concurrency, mut limit) = (false, 4, None);
    let number = |name: &str, v: Option<String>| -> Result<usize, String> {
        v.and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{name} needs a number above zero"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json = true,
            "--concurrency" => concurrency = number("--concurrency", args.next())?.min(64),
            "--limit" => limit = Some(number("--limit", args.next())?),
            "-c" | "--config" => {
                config = PathBuf::from(args.next().ok_or("--config needs a file")?);
            }
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            s if s.starts_with("--config=") => config = PathBuf::from(&s["--config=".len()..]),
            s if sub.is_none() && positional.is_empty() && !s.starts_with('-') => {
                sub = Some(s.to_owned())
            }
            s if !s.starts_with('-') || s == "-" => positional.push(s.to_owned()),
            s => return Err(format!("unknown option {s}")),
        }
    }
    match sub.as_deref() {
        None | Some("run") => Ok(Command::Run(config)),
        Some("check") => Ok(Command::Check(config)),
        Some("hash-key") => match positional.as_slice() {
            [k] => Ok(Command::HashKey(k.clone())),
            _ => Err("hash-key takes one KEY".into()),
        },
        Some("state") => match positional.as_slice() {
            [a] if a == "repair" => Ok(Command::StateRepair(config)),
            _ => Err("state takes one action: repair".into()),
        },
        Some("replay") => match positional.as_slice() {
            [file] => Ok(Command::Replay(
                sluice::replay::Options {
                    file: PathBuf::from(file),
                    config,
                    concurrency,
                    limit,
                },
                json,
            )),
            _ => Err("replay takes one capture FILE".into()),
        },
        Some(other) => Err(format!("unknown command {other}")),
    }
}

fn init_tracing(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log.json {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_ansi(false).init();
    }
}

/// Transparent huge pages off for this process (feature `small-heap-pages`, on by
/// default). mimalloc asks for huge pages on its arenas unless built with `no_thp`, which
/// the feature turns on, and a kernel set to THP `always` gives them anyway: every 2 MiB
/// region the heap touches then becomes resident whole. An idle proxy held 8 MiB of
/// anonymous memory for ~1.7 MiB of heap (RSS 23 MB instead of 16.6). The price, measured
/// in three alternating pairs when this was chosen, was ~6-9 % more CPU per request under
/// load (TLB misses: the instruction count does not change); with the smaller heap of later
/// commits it is within the noise (bench/RESULTS.md). A sidecar is mostly idle and runs
/// on every pod, so footprint comes first; a busy shared gateway can build without the
/// feature. Linux only; if the call fails, nothing changes.
fn keep_heap_pages_small() {
    #[cfg(all(target_os = "linux", feature = "small-heap-pages"))]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

#[expect(clippy::print_stdout, reason = "command output, not logs")]
fn main() -> ExitCode {
    keep_heap_pages_small();
    let cmd = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Help => {
            println!("{}", usage());
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::HashKey(key) => {
            let key = if key == "-" {
                let mut s = String::new();
                if std::io::stdin().read_line(&mut s).is_err() {
                    eprintln!("sluice: cannot read stdin");
                    return ExitCode::from(2);
                }
                s.trim().to_owned()
            } else {
                key
            };
            println!("{}", sluice::auth::hash_key(&key));
            ExitCode::SUCCESS
        }
        Command::Check(path) => match Config::load(&path).and_then(sluice::app::Snapshot::build) {
            Ok(snap) => {
                for (from, to, api) in snap.router.cross_api_targets(&snap.upstreams) {
                    let across = sluice::protocol::Across::from(api);
                    let (lost, other) = (across.lost(), across.to().name());
                    eprintln!(
                        "{}: warning: model {from:?} routes to {to:?}, which only a provider of \
                         the other API serves: chat completions and messages requests are \
                         translated to {other} there (these fields are dropped: {}; requests \
                         that cannot be translated skip it), other endpoints never use it \
                         (README: Crossing providers)",
                        path.display(),
                        lost.join(", ")
                    );
                }
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                for line in &e.errors {
                    eprintln!("{line}");
                }
                eprintln!("{}: {} error(s)", path.display(), e.errors.len());
                ExitCode::FAILURE
            }
        },
        Command::StateRepair(path) => state_repair(&path),
        Command::Keys(cmd) => keys(cmd),
        Command::Replay(opts, json) => replay(&opts, json),
        Command::Run(path) => {
            let log = match Config::load(&path) {
                Ok(c) => c.log,
                Err(e) => {
                    for line in &e.errors {
                        eprintln!("{line}");
                    }
                    return ExitCode::FAILURE;
                }
            };
            init_tracing(&log);
            // The main thread is the first worker; `run` starts the others,
            // each on its own single-threaded runtime (see `worker`).
            let Some(rt) = runtime(false) else {
                return ExitCode::FAILURE;
            };
            match rt.block_on(sluice::run::run(path)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `sluice keys …`: one admin call; its answer on stdout, exit 1 unless 2xx.
#[expect(clippy::print_stdout, reason = "command output, not logs")]
fn keys(cmd: sluice::cli::keys::KeysCommand) -> ExitCode {
    let Some(rt) = runtime(false) else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(sluice::cli::keys::run(cmd)) {
        Ok((status, body)) => {
            println!("{body}");
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                eprintln!("sluice: admin answered {status}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A tokio runtime (all cores, or the calling thread for a one-shot
/// command); `None`, with the reason on stderr, when it cannot start.
fn runtime(multi_thread: bool) -> Option<tokio::runtime::Runtime> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    match builder.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("sluice: cannot start runtime: {e}");
            None
        }
    }
}

/// `sluice state repair`: drops the journal's bad lines, keeping a backup.
#[expect(clippy::print_stdout, reason = "command output, not logs")]
fn state_repair(config: &std::path::Path) -> ExitCode {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            for line in &e.errors {
                eprintln!("{line}");
            }
            return ExitCode::FAILURE;
        }
    };
    let path = &cfg.state_path;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match sluice::budget::journal::repair(path, now) {
        Ok(r) if r.dropped.is_empty() => {
            println!(
                "{}: ok, {} line(s), nothing to repair",
                path.display(),
                r.kept
            );
            ExitCode::SUCCESS
        }
        Ok(r) => {
            let lines: Vec<String> = r.dropped.iter().map(ToString::to_string).collect();
            println!(
                "{}: dropped {} bad line(s) (line {}), kept {}; the journal as it was is in {}",
                path.display(),
                r.dropped.len(),
                lines.join(", "),
                r.kept,
                r.backup
                    .map(|b| b.display().to_string())
                    .unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// `sluice replay`: the comparison table (or JSON) on stdout.
#[expect(clippy::print_stdout, reason = "command output, not logs")]
fn replay(opts: &sluice::replay::Options, json: bool) -> ExitCode {
    init_tracing(&LogConfig {
        level: "warn".into(),
        json: false,
        usage: sluice::config::UsageSink::Off,
    });
    let Some(rt) = runtime(true) else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(sluice::replay::replay(opts)) {
        Ok(report) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!(
                "{}",
                sluice::replay::render(&report.requests, &report.totals)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice: replay: {e:#}");
            ExitCode::FAILURE
        }
    }
}
