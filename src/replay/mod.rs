//! `sluice replay FILE --config candidate.toml`: re-sends the requests of a
//! capture file through a candidate config and compares the answers.
//!
//! The candidate runs in this process: the real pipeline (`proxy::handle`)
//! behind a listener on 127.0.0.1, its provider keys read from this
//! process's environment as `sluice` would. Its state is its own and in
//! memory (budgets, keys issued at runtime, kill switches, the cache): a
//! replay never touches a running proxy's files. Every `[[keys]]` entry
//! gets a fresh secret known only to this process, so a captured request
//! is sent as the key it was captured under (its limits, allow-list and
//! routing hold); a request whose key the candidate does not have goes as
//! a key named `replay`. Captures are not written and usage is not logged.

mod table;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::app::{App, Snapshot, Stores};
use crate::config::{Config, KeyConfig, TokenLimits};
pub use table::{render, totals, Pair, Row, Side, Totals};

/// Largest candidate answer read (a larger one counts as failed).
const MAX_ANSWER: usize = 64 << 20;
/// The most records one replay reads.
pub const MAX_RECORDS: usize = 100_000;

/// What `sluice replay` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub file: PathBuf,
    pub config: PathBuf,
    pub concurrency: usize,
    pub limit: Option<usize>,
}

/// The rows and their totals.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub requests: Vec<Row>,
    pub totals: Totals,
}

/// The name of the key a request goes as when the candidate lacks its own.
const FALLBACK_KEY: &str = "replay";

/// Replays the file through the candidate config.
pub async fn replay(opts: &Options) -> anyhow::Result<Report> {
    let records = read_records(
        &opts.file,
        opts.limit.unwrap_or(MAX_RECORDS).min(MAX_RECORDS),
    )?;
    let mut config = Config::load(&opts.config)?;
    let secrets = fresh_keys(&mut config);
    // The candidate's own state only: no shared store, no capture, no traces.
    config.redis = None;
    config.shared_cache = None;
    config.capture = None;
    config.telemetry = None;
    let snapshot = Snapshot::build(config)?;
    let app = start_app(snapshot);
    let listener = crate::server::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let limits = crate::server::ConnLimits::data(&app.snapshot().config.server.bounds, None);
    let server = {
        let app = app.clone();
        tokio::spawn(crate::server::serve(
            listener,
            None,
            move |req| crate::proxy::handle(app.clone(), req),
            stop.clone(),
            Duration::from_secs(5),
            limits,
            Vec::new(),
        ))
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let snap = app.snapshot();
    let prices = &snap.config.prices;
    let rows: Vec<Row> = stream::iter(records.iter())
        .map(|r| send(&client, addr, &secrets, prices, r))
        .buffered(opts.concurrency.max(1))
        .collect()
        .await;
    // Its idle connections go first, so the server stops at once.
    drop(client);
    stop.cancel();
    let _ = server.await;
    let totals = totals(&rows);
    Ok(Report {
        requests: rows,
        totals,
    })
}

/// Reads up to `limit` records, line by line (a line that is not a JSON
/// object is an error naming its line number).
fn read_records(path: &Path, limit: usize) -> anyhow::Result<Vec<Value>> {
    let f = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        if out.len() >= limit {
            break;
        }
        let line = line.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(v @ Value::Object(_)) => out.push(v),
            _ => anyhow::bail!("{}:{}: not a capture record", path.display(), i + 1),
        }
    }
    Ok(out)
}

/// Gives every configured key (and a `replay` key) a fresh secret; returns
/// the secrets by key name.
fn fresh_keys(config: &mut Config) -> Vec<(String, String)> {
    use sha2::Digest;
    if !config.keys.iter().any(|k| k.name == FALLBACK_KEY) {
        config.keys.push(KeyConfig {
            name: FALLBACK_KEY.into(),
            sha256: [0; 32],
            user: None,
            team: None,
            models: None,
            limits: TokenLimits::default(),
            tier: None,
            passthrough: Vec::new(),
            tier_headers: false,
        });
    }
    config
        .keys
        .iter_mut()
        .map(|k| {
            let secret = format!(
                "sk-replay-{:016x}{:016x}",
                fastrand::u64(..),
                fastrand::u64(..)
            );
            k.sha256 = sha2::Sha256::digest(secret.as_bytes()).into();
            (k.name.clone(), secret)
        })
        .collect()
}

fn start_app(snapshot: Snapshot) -> Arc<App> {
    let experiments = Arc::new(crate::experiment::Experiments::default());
    experiments.sync(&snapshot.config.experiments);
    App::new(
        snapshot,
        None,
        crate::usage_log::UsageLog::off(),
        None,
        Stores {
            issued_keys: Arc::default(),
            faults: Arc::default(),
            kills: Arc::default(),
            ledger: crate::budget::ledger::Ledger::in_memory(crate::budget::ledger::system_clock()),
            fleet: None,
            shared_cache: None,
            owners: Arc::new(crate::ownership::Owners::in_memory(
                crate::ownership::MAX_IDS,
            )),
            experiments,
            tracing: None,
            capture: crate::capture::Capturer::off(),
        },
    )
}

/// Sends one captured request to the candidate and compares the answers.
async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    addr: std::net::SocketAddr,
    secrets: &[(String, String)],
    prices: &crate::pricing::PriceTable,
    r: &Value,
) -> Row {
    let s = |k: &str| {
        r.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (id, endpoint) = (s("request_id"), s("endpoint"));
    let old = Side::captured(r);
    let skip = |why: &str| Row {
        request_id: id.clone(),
        endpoint: endpoint.clone(),
        skipped: Some(why.to_owned()),
        captured: old.clone(),
        candidate: None,
        similarity: None,
        status_match: false,
        finish_match: false,
    };
    if r.get("request_truncated").and_then(Value::as_bool) == Some(true) {
        return skip("request body cut at capture (raise capture.max_body_bytes)");
    }
    let Some(body) = r.get("request").filter(|b| b.is_object()) else {
        return skip("no JSON request body");
    };
    let method = Method::from_bytes(s("method").as_bytes()).unwrap_or(Method::POST);
    let path = s("path");
    if !path.starts_with('/') {
        return skip("no request path");
    }
    let key = r.get("key").and_then(Value::as_str).unwrap_or(FALLBACK_KEY);
    let secret = secrets
        .iter()
        .find(|(n, _)| n == key)
        .or_else(|| secrets.iter().find(|(n, _)| n == FALLBACK_KEY))
        .map_or("", |(_, s)| s.as_str());
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {secret}"))
        .header("content-type", "application/json");
    if let Some(Value::Object(h)) = r.get("request_headers") {
        for (k, v) in h {
            let skip = crate::config::SECRET_HEADERS.contains(&k.as_str())
                || k == "content-type"
                || k == "content-length";
            if let (false, Some(v)) = (skip, v.as_str()) {
                req = req.header(k.as_str(), v);
            }
        }
    }
    let Ok(req) = req.body(Full::new(Bytes::from(body.to_string()))) else {
        return skip("captured headers do not make a request");
    };
    let started = Instant::now();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let new = match client.request(req).await {
        Err(e) => Side {
            status: 0,
            latency_ms: ms(started.elapsed()),
            text: e.to_string(),
            ..Side::default()
        },
        Ok(resp) => {
            let head_at = started.elapsed();
            let (head, body) = resp.into_parts();
            let h = |n: &str| {
                head.headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let sse = h("content-type").is_some_and(|c| c.starts_with("text/event-stream"));
            let bytes = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes);
            let latency_ms = ms(started.elapsed());
            let bytes = bytes.unwrap_or_default();
            let observed = crate::capture::observe(&bytes, endpoint == "messages");
            let model = h("x-sluice-model");
            let cost_usd = observed.usage.as_ref().and_then(|u| {
                let price = prices.get(model.as_deref()?)?;
                Some(crate::pricing::nanos_to_usd(price.cost(u)))
            });
            Side {
                status: head.status.as_u16(),
                model,
                provider: h("x-sluice-provider"),
                latency_ms,
                ttft_ms: sse.then(|| ms(head_at)),
                input_tokens: observed.usage.map(|u| u.input),
                output_tokens: observed.usage.map(|u| u.output),
                cost_usd,
                finish_reason: observed.answer.finish_reason,
                text: observed.text,
            }
        }
    };
    Row::compared(id, endpoint, old, new)
}
