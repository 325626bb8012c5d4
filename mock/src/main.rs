//! `sluice-mock`: the deterministic mock LLM provider as a standalone server, so Sluice can be
//! tried (and load-tested) without a provider key.
//!
//! Usage: `sluice-mock [--listen 127.0.0.1:8081]`. Prints `listening on http://ADDR` once the
//! socket is bound and serves until SIGINT or SIGTERM. See the crate docs (`src/lib.rs`) for the
//! endpoints and the `x-mock-*` request headers that drive faults and pacing.

// The readiness line `listening on http://ADDR` is the only thing written to stdout: scripts
// wait for it before sending traffic.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use sluice_mock::MockProvider;

const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
const USAGE: &str = "usage: sluice-mock [--listen ADDR]   (default ADDR: 127.0.0.1:8081)";

enum Command {
    Serve(SocketAddr),
    Help,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut listen = DEFAULT_LISTEN.to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--listen" | "-l" => {
                listen = args
                    .next()
                    .ok_or_else(|| format!("{arg} needs an address, e.g. {DEFAULT_LISTEN}"))?;
            }
            other => match other.strip_prefix("--listen=") {
                Some(value) => listen = value.to_owned(),
                None => return Err(format!("unexpected argument `{other}`")),
            },
        }
    }
    listen
        .parse()
        .map(Command::Serve)
        .map_err(|err| format!("invalid listen address `{listen}`: {err}"))
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let addr = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Serve(addr)) => addr,
        Ok(Command::Help) => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("sluice-mock: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let provider = match MockProvider::start_on(addr).await {
        Ok(provider) => provider,
        Err(err) => {
            eprintln!("sluice-mock: cannot listen on {addr}: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Nobody can read the recorded requests of a standalone server: don't keep them.
    provider.set_recording(false);
    println!("listening on {}", provider.url());
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    provider.shutdown().await;
    ExitCode::SUCCESS
}
