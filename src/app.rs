//! The running application: one immutable snapshot of everything derived
//! from config behind an `ArcSwap`. Reload prepares a new snapshot fallibly,
//! then swaps it in infallibly; a request loads the snapshot once and sees
//! the old or the new config, never a mix.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::auth::Keys;
use crate::budget::ledger::Ledger;
use crate::cache::model_lists::ModelLists;
use crate::cache::shared::SharedCache;
use crate::cache::{Flights, ResponseCache};
use crate::config::{Config, ConfigError, OnUnavailable};
use crate::experiment::Experiments;
use crate::fleet::{Fleet, LocalLimits};
use crate::key_store::KeyStore;
use crate::kill::KillSwitches;
use crate::limits::loops::LoopDetector;
use crate::limits::rate::RateLimiter;
use crate::ownership::Owners;
use crate::resilience::Deployments;
use crate::route::Router;
use crate::telemetry::Tracing;
use crate::upstream::Upstream;
use crate::usage_log::UsageLog;

/// Everything derived from one config.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub upstreams: Vec<Upstream>,
    pub router: Router,
    pub keys: Keys,
    /// Fleet mode with `on_unavailable = "fail_open"`: the limits this
    /// replica enforces alone while Redis is away.
    pub local_limits: Option<LocalLimits>,
}

impl Snapshot {
    /// The experiment splitting this public model name, if any.
    pub fn experiment(&self, model: &str) -> Option<&crate::config::Experiment> {
        let all = &self.config.experiments;
        if all.is_empty() {
            return None;
        }
        all.iter().find(|e| e.model == model)
    }

    /// Builds clients, key table and routes; fails on anything a request
    /// could otherwise trip over later.
    pub fn build(config: Config) -> Result<Snapshot, ConfigError> {
        let mut errors = Vec::new();
        let mut upstreams = Vec::with_capacity(config.providers.len());
        for (i, p) in config.providers.iter().enumerate() {
            match Upstream::new(p) {
                Ok(u) => upstreams.push(u),
                Err(e) => errors.push(format!("providers[{i}] ({}): {e}", p.name)),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigError { errors });
        }
        let s = &config.server;
        let jwt = match &config.jwt {
            Some(j) => match crate::jwt::JwtVerifier::new(j) {
                Ok(v) => Some(v),
                Err(e) => {
                    return Err(ConfigError {
                        errors: vec![format!("jwt: {e}")],
                    })
                }
            },
            None => None,
        };
        let keys = Keys::new(
            &config.keys,
            s.passthrough_keys,
            s.trust_identity_headers,
            &s.passthrough,
        )
        .with_jwt(jwt);
        let router = Router::new(config.models.clone(), config.routing.clone());
        let local_limits = config
            .redis
            .as_ref()
            .filter(|r| r.on_unavailable == OnUnavailable::FailOpen)
            .map(|r| LocalLimits::scaled(&config.rate_limits, &config.budgets, r.fail_open_share));
        Ok(Snapshot {
            config,
            upstreams,
            router,
            keys,
            local_limits,
        })
    }
}

/// What `run` opened at start for state that outlives config snapshots.
pub struct Stores {
    pub issued_keys: Arc<KeyStore>,
    pub faults: Arc<crate::fault::Faults>,
    pub kills: Arc<KillSwitches>,
    pub ledger: Arc<Ledger>,
    pub fleet: Option<Arc<Fleet>>,
    pub shared_cache: Option<SharedCache>,
    pub owners: Arc<Owners>,
    pub experiments: Arc<Experiments>,
    /// `[telemetry]`: the tracer and its exporter, when traces are on.
    pub tracing: Option<Arc<Tracing>>,
    /// `[capture]`: the writer (started at start) and the admin triggers.
    pub capture: Arc<crate::capture::Capturer>,
}

/// Shared state of the running proxy.
pub struct App {
    live: ArcSwap<Snapshot>,
    config_path: Option<PathBuf>,
    pub usage: UsageLog,
    pub metrics: Option<crate::metrics::Exporter>,
    /// Rate-limit counters; they outlive config snapshots.
    pub rate: Arc<RateLimiter>,
    /// Breakers, retry budgets and load stats per deployment; they outlive
    /// config snapshots too.
    pub deployments: Deployments,
    /// Budget spend (embedded state; in fleet mode, what this replica
    /// charges on its own while Redis is away).
    pub ledger: Arc<Ledger>,
    /// Budgets and rate limits shared with the fleet (`[state] backend =
    /// "redis"`); fixed at start.
    pub fleet: Option<Arc<Fleet>>,
    /// The response cache (sized at start) and its in-flight misses.
    pub cache: Arc<ResponseCache>,
    /// The semantic cache's entries and observe table (bounds from config).
    pub semantic: Arc<crate::cache::semantic::SemanticCache>,
    pub flights: Flights,
    /// Providers' own model lists for `GET /v1/models` with a glob rule
    /// (cached briefly, one fetch in flight per list; they outlive config
    /// snapshots: a list's key names the provider's URL and credential).
    pub model_lists: ModelLists,
    /// Which virtual key created which provider object (persisted).
    pub owners: Arc<Owners>,
    /// Recent requests per sender, for `[loop_detection]`.
    pub loops: LoopDetector,
    /// Requests and tokens per agent run, for `[runs]`.
    pub runs: Arc<crate::limits::runs::RunTotals>,
    /// Kill switches set at runtime (persisted: the file, or Redis in
    /// fleet mode).
    pub kills: Arc<KillSwitches>,
    /// Virtual keys issued at runtime (persisted like the kill switches).
    pub issued_keys: Arc<KeyStore>,
    /// Experiments' per-arm statistics and rollout state, by name.
    pub experiments: Arc<Experiments>,
    /// Shadows' copies in flight, spend and comparisons, by name.
    pub shadows: crate::shadow::Shadows,
    /// Chaos faults set at runtime (persisted, always expiring).
    pub faults: Arc<crate::fault::Faults>,
    /// OpenTelemetry traces (`[telemetry]`, fixed at start); `None` when off.
    pub tracing: Option<Arc<Tracing>>,
    /// Request/response capture (`[capture]`; its file is fixed at start).
    pub capture: Arc<crate::capture::Capturer>,
    shutting_down: AtomicBool,
    id_seed: u64,
    id_counter: AtomicU64,
}

impl App {
    pub fn new(
        snapshot: Snapshot,
        config_path: Option<PathBuf>,
        usage: UsageLog,
        metrics: Option<crate::metrics::Exporter>,
        stores: Stores,
    ) -> Arc<App> {
        let Stores {
            issued_keys,
            faults,
            kills,
            ledger,
            fleet,
            shared_cache,
            owners,
            experiments,
            tracing,
            capture,
        } = stores;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (u64::from(std::process::id()) << 32);
        let shadows = crate::shadow::Shadows::default();
        shadows.sync(&snapshot.config.shadows);
        let cache = Arc::new(
            ResponseCache::new(snapshot.config.cache.max_bytes, snapshot.config.cache.ttl)
                .with_shared(shared_cache),
        );
        Arc::new(App {
            live: ArcSwap::from_pointee(snapshot),
            config_path,
            usage,
            metrics,
            rate: Arc::new(RateLimiter::default()),
            deployments: Deployments::default(),
            cache,
            semantic: Arc::default(),
            flights: Flights::new(),
            model_lists: ModelLists::new(),
            ledger,
            fleet,
            owners,
            loops: LoopDetector::default(),
            runs: Arc::default(),
            kills,
            issued_keys,
            experiments,
            faults,
            shadows,
            tracing,
            capture,
            shutting_down: AtomicBool::new(false),
            id_seed: seed,
            id_counter: AtomicU64::new(0),
        })
    }

    /// The current snapshot; hold it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// Re-reads the config file and swaps it in; on error the old config
    /// keeps serving.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let Some(path) = &self.config_path else {
            return Err(ConfigError {
                errors: vec!["no config file to reload".into()],
            });
        };
        let result = Config::load(path).and_then(Snapshot::build);
        crate::metrics::config_reload(result.is_ok());
        let snap = result?;
        let old = self.live.load();
        if snap.config.server.listen != old.config.server.listen
            || snap.config.admin.listen != old.config.admin.listen
        {
            tracing::warn!("listen addresses changed; they take effect on restart");
        }
        if snap.config.server.workers != old.config.server.workers {
            tracing::warn!("[server] workers changed; it takes effect on restart");
        }
        if snap.config.redis.as_ref().map(|r| (&r.url, &r.key_prefix))
            != old.config.redis.as_ref().map(|r| (&r.url, &r.key_prefix))
        {
            tracing::warn!(
                "[state] backend, url or key_prefix changed; they take effect on restart"
            );
        }
        self.experiments.sync(&snap.config.experiments);
        self.shadows.sync(&snap.config.shadows);
        if snap.config.telemetry != old.config.telemetry {
            tracing::warn!("[telemetry] changed; it takes effect on restart");
        }
        let capture_file = |c: &Config| c.capture.as_ref().map(|c| (c.path.clone(), c.queue));
        if capture_file(&snap.config) != capture_file(&old.config) {
            tracing::warn!("[capture] path, queue or on/off changed; they take effect on restart (rules, bounds and redaction apply now)");
        }
        self.live.store(Arc::new(snap));
        tracing::info!(path = %path.display(), "config reloaded");
        Ok(())
    }

    /// A new request id: unique in this process, unguessable across restarts.
    pub fn next_id(&self) -> Arc<str> {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        let mut z = self
            .id_seed
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        crate::text::prefixed_hex("req_", &z.to_be_bytes())
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Prometheus text for `/metrics`.
    pub fn render_metrics(&self) -> Bytes {
        self.metrics
            .as_ref()
            .map(|h| Bytes::from(h.render()))
            .unwrap_or_default()
    }
}
