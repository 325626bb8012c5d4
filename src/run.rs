//! Process lifecycle: start both planes, reload on SIGHUP, drain on
//! SIGTERM/SIGINT, flush the usage log, exit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::app::{App, Snapshot, Stores};
use crate::budget::ledger::{system_clock, Ledger};
use crate::cache::shared::SharedCache;
use crate::config::Config;
use crate::fleet::Fleet;
use crate::usage_log::UsageLog;
use crate::{admin, metrics, ownership, proxy, server};

/// Runs Sluice on a config file until SIGTERM/SIGINT.
pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&config_path)?;
    // Before the snapshot: each provider keeps a connection pool per worker.
    let workers = crate::worker::Workers::start(config.server.workers)
        .map_err(|e| anyhow::anyhow!("worker threads: {e}"))?;
    let snapshot = Snapshot::build(config)?;
    let metrics = metrics::install().map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
    {
        // Histograms buffer samples until drained: drain them periodically,
        // not only when /metrics is scraped, so memory stays flat.
        let handle = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let usage = UsageLog::start(&snapshot.config.log.usage).await?;
    let server_cfg = snapshot.config.server.clone();
    let admin_addr = snapshot.config.admin.listen;
    let tls = match &server_cfg.tls {
        Some(files) => Some(server::tls_acceptor(files).map_err(|e| anyhow::anyhow!("tls: {e}"))?),
        None => None,
    };
    let keys_path = crate::config::beside_state(&snapshot.config.state_path, "keys.json");
    let issued_keys = Arc::new(
        crate::key_store::KeyStore::open(&keys_path)
            .map_err(|e| anyhow::anyhow!("issued keys {}: {e}", keys_path.display()))?,
    );
    let kills_path = crate::kill::file_beside(&snapshot.config.state_path);
    let kills = Arc::new(
        crate::kill::KillSwitches::open(&kills_path)
            .map_err(|e| anyhow::anyhow!("kill switches {}: {e}", kills_path.display()))?,
    );
    let experiments_path = crate::experiment::file_beside(&snapshot.config.state_path);
    let experiments = Arc::new(
        crate::experiment::Experiments::open(&experiments_path)
            .map_err(|e| anyhow::anyhow!("experiments {}: {e}", experiments_path.display()))?,
    );
    experiments.sync(&snapshot.config.experiments);
    let faults_path = crate::fault::file_beside(&snapshot.config.state_path);
    let faults = Arc::new(
        crate::fault::Faults::open(&faults_path)
            .map_err(|e| anyhow::anyhow!("faults {}: {e}", faults_path.display()))?,
    );
    let (ledger, fleet) = match &snapshot.config.redis {
        // Fleet mode: budgets and rate windows live in Redis; the local
        // ledger only counts what this replica serves while Redis is away.
        Some(redis) => {
            let fleet = Fleet::start(
                redis,
                kills.clone(),
                issued_keys.clone(),
                experiments.clone(),
            )
            .map_err(|e| anyhow::anyhow!("[state] redis: {e}"))?;
            tracing::info!(url = %crate::config::redact(&redis.url), prefix = %redis.key_prefix, "fleet state in redis");
            (
                Ledger::unjournaled(usage.clone(), system_clock()),
                Some(fleet),
            )
        }
        None => (open_ledger(&snapshot, &usage)?, None),
    };
    let shared_cache = match &snapshot.config.shared_cache {
        Some(c) => {
            let shared =
                SharedCache::start(c).map_err(|e| anyhow::anyhow!("[cache] shared_url: {e}"))?;
            tracing::info!(url = %crate::config::redact(&c.url), "shared response cache in redis");
            Some(shared)
        }
        None => None,
    };
    let tracing = match &snapshot.config.telemetry {
        Some(t) => {
            let tracing = crate::telemetry::Tracing::start(t)
                .map_err(|e| anyhow::anyhow!("[telemetry]: {e}"))?;
            tracing::info!(endpoint = %t.otlp_endpoint, sampling_ratio = t.sampling_ratio, "traces exported over OTLP");
            Some(Arc::new(tracing))
        }
        None => None,
    };
    let capture = crate::capture::Capturer::start(snapshot.config.capture.as_deref())
        .map_err(|e| anyhow::anyhow!("[capture]: {e}"))?;
    let owners_path = ownership::file_beside(&snapshot.config.state_path);
    let owners = ownership::Owners::open(&owners_path, ownership::MAX_IDS)
        .map_err(|e| anyhow::anyhow!("owners file {}: {e}", owners_path.display()))?;
    let app = App::new(
        snapshot,
        Some(config_path),
        usage,
        Some(metrics),
        Stores {
            issued_keys,
            faults,
            kills,
            ledger,
            fleet,
            shared_cache,
            owners: Arc::new(owners),
            experiments,
            tracing,
            capture,
        },
    );
    let stop_sweeper = CancellationToken::new();
    let sweeper = spawn_sweeper(app.clone(), stop_sweeper.clone());
    let watcher = spawn_experiment_watch(app.clone(), stop_sweeper.clone());
    // Handlers go in before the listeners open, so an early SIGHUP reloads
    // instead of killing the process.
    let signals = Signals::install()?;

    // The connection cap comes from the open-files limit (raised to the hard
    // limit first), so a flood of connections waits instead of failing
    // `accept` and upstream connects with EMFILE.
    let nofile = server::fds::raise_nofile_limit();
    let data_limits = server::ConnLimits::data(&server_cfg.bounds, nofile);
    let admin_limits = server::ConnLimits::admin(&server_cfg.bounds);

    let data_listener = server::bind(server_cfg.listen).await?;
    let admin_listener = server::bind(admin_addr).await?;
    tracing::info!(
        data = %data_listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        tls = tls.is_some(),
        max_connections = data_limits.max_connections,
        open_files_limit = nofile.map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        "sluice listening"
    );
    let runtime_faults = app.faults.list(crate::fault::now_secs()).len();
    let config_faults = app.snapshot().config.faults.len();
    if config_faults + runtime_faults > 0 {
        // Chaos on purpose should never be a surprise in the logs.
        tracing::warn!(
            config = config_faults,
            runtime = runtime_faults,
            "chaos faults are on: matching requests will fail on purpose"
        );
    }

    let stop_data = CancellationToken::new();
    let stop_admin = CancellationToken::new();
    let data = {
        let app = app.clone();
        tokio::spawn(server::serve(
            data_listener,
            tls,
            move |req| proxy::handle(app.clone(), req),
            stop_data.clone(),
            server_cfg.drain_timeout,
            data_limits,
            workers.handles().to_vec(),
        ))
    };
    let admin_task = {
        let app = app.clone();
        tokio::spawn(server::serve(
            admin_listener,
            None,
            move |req| admin::handle(app.clone(), req),
            stop_admin.clone(),
            Duration::from_secs(1),
            admin_limits,
            Vec::new(),
        ))
    };

    signals.wait_for_stop(&app).await;
    tracing::info!(drain = ?server_cfg.drain_timeout, "shutting down: draining in-flight requests");
    app.begin_shutdown();
    stop_data.cancel();
    let _ = data.await;
    workers.stop().await;
    stop_admin.cancel();
    let _ = admin_task.await;
    stop_sweeper.cancel();
    let _ = sweeper.await;
    let _ = watcher.await;
    if let Some(fleet) = &app.fleet {
        // Settlements finish (and write their usage records) before exit.
        fleet.drain(SETTLE_DRAIN).await;
    }
    app.ledger.close().await;
    app.owners.close().await;
    app.usage.flush().await;
    app.capture.flush().await;
    if let Some(t) = &app.tracing {
        // The drained requests' spans are queued: they go out before exit.
        t.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long shutdown waits for fleet settlements still in flight.
const SETTLE_DRAIN: Duration = Duration::from_secs(10);

/// Opens the embedded budget journal.
fn open_ledger(snapshot: &Snapshot, usage: &UsageLog) -> anyhow::Result<Arc<Ledger>> {
    Ledger::open(
        &snapshot.config.state_path,
        &snapshot.config.budgets,
        usage.clone(),
        system_clock(),
    )
    .map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidData {
            // Already names the file and the line.
            anyhow::anyhow!("budget state: {e}")
        } else {
            anyhow::anyhow!("state file {}: {e}", snapshot.config.state_path.display())
        }
    })
}

/// How often idle per-identity state is swept.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Applies `[state] max_buckets` and sweeps idle per-identity state (rate
/// buckets, budget buckets, spend attribution) and the state of deployments
/// a reload removed, every `SWEEP_EVERY`, until `stop`. The caps are re-read
/// each time, so a reload changes them.
fn spawn_sweeper(app: Arc<App>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    sweep(&app);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => sweep(&app),
            }
        }
    })
}

/// Every second: experiments' guards and ramps (see `experiment::watch`).
fn spawn_experiment_watch(app: Arc<App>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => watch_experiments(&app),
            }
        }
    })
}

fn watch_experiments(app: &App) {
    use crate::experiment::watch::{tick, Event};
    let snap = app.snapshot();
    let experiments = &snap.config.experiments;
    if experiments.is_empty() {
        return;
    }
    let now = crate::experiment::ramp_now();
    let events = tick(experiments, &app.experiments, now);
    for ev in &events {
        match ev {
            Event::RolledBack { experiment, reason } => {
                tracing::warn!(%experiment, %reason, "experiment rolled back by a guard");
                metrics::experiment_rollback(experiment);
                let hook = experiments
                    .iter()
                    .find(|e| &e.name == experiment)
                    .and_then(|e| e.guards.as_ref()?.webhook.clone());
                if let Some(url) = hook {
                    let body = serde_json::json!({
                        "experiment": experiment,
                        "event": "rolled_back",
                        "reason": reason,
                        "at": now,
                    });
                    crate::webhook::post(url, body.to_string().into_bytes(), "experiment rollback");
                }
            }
            Event::Advanced { experiment, share } => {
                tracing::info!(%experiment, share, "experiment ramp moved to the next step");
            }
        }
    }
    for e in experiments {
        if let Some(l) = app.experiments.get(&e.name) {
            if let Some(c) = e.candidate() {
                let killed = |arm: &str| {
                    app.kills
                        .for_arm(&snap.config.kill_switches, &e.name, arm)
                        .is_some()
                };
                let w = l.weights(e, &killed);
                let total: f64 = w.iter().sum();
                if total > 0.0 {
                    metrics::experiment_share(&e.name, w[c] / total * 100.0);
                }
            }
        }
    }
    if !events.is_empty() {
        save_experiments(app);
    }
}

/// Saves every rollout state: to the file, and in fleet mode to Redis for
/// every replica (in a task: the watcher never waits on Redis).
pub fn save_experiments(app: &App) {
    if let Err(e) = app.experiments.persist() {
        tracing::error!(error = %e, "could not save experiment state");
    }
    if let Some(fleet) = app.fleet.clone() {
        let states = app.experiments.states();
        tokio::spawn(async move {
            if let Err(e) = fleet.save_experiments(&states).await {
                tracing::warn!(error = %e, "could not share experiment state with the fleet");
            }
        });
    }
}

fn sweep(app: &App) {
    let snap = app.snapshot();
    let cap = snap.config.max_buckets;
    app.rate.set_max_buckets(cap);
    app.ledger.set_max_slots(cap);
    app.ledger.spend.set_max_entries(cap);
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    metrics::state_entries("rate_buckets", app.rate.sweep(std::time::Instant::now()));
    metrics::state_entries("budget_buckets", app.ledger.sweep(&snap.config.budgets));
    metrics::state_entries("spend_identities", app.ledger.spend.sweep(unix_now));
    app.loops.set_max_entries(cap);
    metrics::kill_switches(snap.config.kill_switches.len() + app.kills.list().len());
    if let Some(r) = &snap.config.runs {
        app.runs.set_max_entries(cap);
        metrics::state_entries(
            "runs",
            app.runs.sweep(std::time::Instant::now(), r.idle_expiry),
        );
    }
    if let Some(l) = &snap.config.loop_detection {
        metrics::state_entries(
            "loop_requests",
            app.loops.sweep(std::time::Instant::now(), l.within),
        );
    }
    let configured = snap.router.deployment_names(&snap.upstreams);
    metrics::state_entries("deployments", app.deployments.retain(&configured));
    metrics::state_entries("owned_ids", app.owners.len());
}

/// The signals Sluice acts on.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for SIGTERM or SIGINT, reloading config on every SIGHUP meanwhile.
    async fn wait_for_stop(mut self, app: &Arc<App>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => {
                    // Log rotation: the usage file was renamed; start a new one.
                    app.usage.reopen();
                    if let Err(e) = app.reload() {
                        tracing::error!(errors = %e, "config reload refused; old config keeps serving");
                    }
                }
            }
        }
    }
}
