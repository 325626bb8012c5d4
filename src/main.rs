//! The `sluice` command: run the proxy, check a config, hash a key.

use std::path::PathBuf;
use std::process::ExitCode;

use sluice::config::{Config, LogConfig};

/// mimalloc: a proxy allocates and frees many small buffers per request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage:
  sluice [--config FILE]          run the proxy (default FILE: proxy.toml)
  sluice check [--config FILE]    validate FILE, list every error, exit non-zero if any
  sluice hash-key KEY             print the sha256 to put in [[keys]] for KEY (\"-\" reads stdin)
  sluice state repair [--config FILE]
                                  drop the bad lines of the budget journal (state.path),
                                  keeping a backup copy; run it while sluice is stopped
  sluice --version";

enum Command {
    Run(PathBuf),
    Check(PathBuf),
    HashKey(String),
    StateRepair(PathBuf),
    Help,
    Version,
}

fn parse_args() -> Result<Command, String> {
    let mut args = std::env::args().skip(1);
    let mut sub: Option<String> = None;
    let mut config = PathBuf::from("proxy.toml");
    let mut positional = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
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

#[expect(clippy::print_stdout, reason = "command output, not logs")]
fn main() -> ExitCode {
    let cmd = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Help => {
            println!("{USAGE}");
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
                for (from, to) in snap.router.cross_api_targets(&snap.upstreams) {
                    eprintln!(
                        "{}: warning: model {from:?} routes to {to:?}, which only a provider of \
                         the other API serves: requests are not translated between APIs on the \
                         request path yet, so it is never used (README: Crossing providers)",
                        path.display()
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
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("sluice: cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
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
