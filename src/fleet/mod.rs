//! Fleet mode: budgets and rate limits shared by every replica through one
//! Redis (`[state] backend = "redis"`).
//!
//! A request makes one round trip before it is forwarded: the take script
//! admits it under every rate rule and reserves its worst case at every
//! budget, all or nothing, atomically in Redis. Its settlement leaves the
//! response path: the hold is handed to a tracked task that runs the settle
//! script (retrying until Redis answers) and only then writes the usage
//! record. Reservations carry a TTL (the request's deadline plus
//! `RESERVATION_GRACE`), so a replica killed mid-request holds nothing for
//! longer than that.
//!
//! While Redis cannot be reached (a call failed or took longer than
//! `[state] timeout`), `health` says so for `PROBE_INTERVAL` and the
//! `on_unavailable` policy decides: refuse (`fail_closed`) or serve under
//! local counters scaled to `fail_open_share` (`fail_open`). A probe task
//! pings Redis every `PROBE_INTERVAL`; the client reconnects by itself.

mod experiments;
mod health;
mod hold;
mod keys;
mod kills;
mod owed;
pub mod report;
mod script;
mod seen;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{
    BudgetAction, BudgetRule, OnUnavailable, Permille, RateLimits, RateRule, RedisState,
};
use crate::glob::in_filter;
use crate::limits::rate::Subject;
use crate::pricing::Nanos;
use crate::vocab::{bucket_key, Exhausted, LimitKind, RateLimited};

pub use health::Health;
pub use hold::{FleetHold, Settled};
use script::{Actual, BudgetPart, Keys, RatePart};

/// How long a reservation outlives its request's deadline before Redis
/// lets it go (a replica died before settling it).
pub const RESERVATION_GRACE: Duration = Duration::from_secs(60);
/// How often Redis is probed, and how long a failure marks it unavailable.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Settlements in flight at most (each holds a permit from admission to
/// the end of its settle script); past it requests meet the
/// `on_unavailable` policy.
pub const MAX_PENDING_SETTLEMENTS: usize = 65_536;
/// The most one settle call may take (it is off the response path).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a settlement is retried while Redis is away; past it the
/// charge is logged as lost (`sluice_state_settle_lost_total`).
pub const SETTLE_GIVE_UP: Duration = Duration::from_secs(300);

/// The shared state of a fleet, in Redis.
pub struct Fleet {
    conn: ConnectionManager,
    keys: Keys,
    timeout: Duration,
    pub policy: OnUnavailable,
    pub health: Health,
    /// Budget use as last seen by this replica (for downgrades).
    pub seen: seen::Seen,
    /// Spend this replica charged under local limits while Redis was
    /// away: added to Redis when it answers again.
    owed: owed::Owed,
    pending: Arc<Semaphore>,
    tasks: TaskTracker,
    /// Cancelled when shutdown stops waiting for settlements.
    stop: CancellationToken,
    /// This replica's kill switches, whose fleet part the probe refreshes.
    kills: Arc<crate::kill::KillSwitches>,
    /// This replica's experiments, whose rollout states the probe refreshes.
    experiments: Arc<crate::experiment::Experiments>,
    /// This replica's copy of the runtime keys (the probe refreshes it).
    issued_keys: Arc<crate::key_store::KeyStore>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("prefix", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

/// Why a take did not admit a request.
#[derive(Debug)]
pub enum Refusal {
    Rate(RateLimited),
    Budget(Exhausted),
    /// Redis could not be asked (down, slow, or too many settlements
    /// pending): the `on_unavailable` policy applies.
    Unavailable,
}

/// What a request asks of the fleet.
pub struct Ask<'a> {
    pub id: &'a str,
    pub subject: &'a Subject<'a>,
    pub rules: &'a [RateRule],
    pub budgets: &'a [BudgetRule],
    /// Tokens reserved under tokens-per-minute limits.
    pub tokens: u64,
    /// Worst-case cost reserved at each budget (`None`: no budget applies
    /// or the request is not priced).
    pub cost: Option<Nanos>,
    /// How long the reservations may be held.
    pub ttl: Duration,
}

impl Fleet {
    /// Connects lazily (Sluice starts while Redis is down) and starts the
    /// probe task.
    pub fn start(
        cfg: &RedisState,
        kills: Arc<crate::kill::KillSwitches>,
        issued_keys: Arc<crate::key_store::KeyStore>,
        experiments: Arc<crate::experiment::Experiments>,
    ) -> Result<Arc<Fleet>, redis::RedisError> {
        let client = match &cfg.ca_file {
            None => redis::Client::open(cfg.url.as_str())?,
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| {
                    redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "cannot read [state] ca_file",
                        format!("{}: {e}", ca.display()),
                    ))
                })?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(cfg.url.as_str(), certs)?
            }
        };
        // Each call has its own deadline (a take's is `timeout`, a
        // settlement's longer); the connection's only catches a reply that
        // never comes.
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(SETTLE_TIMEOUT.max(cfg.timeout)))
            .set_max_delay(PROBE_INTERVAL);
        let conn = ConnectionManager::new_lazy_with_config(client, manager)?;
        let fleet = Arc::new(Fleet {
            conn,
            keys: Keys::new(&cfg.key_prefix),
            timeout: cfg.timeout,
            policy: cfg.on_unavailable,
            health: Health::new(),
            seen: seen::Seen::default(),
            owed: owed::Owed::default(),
            pending: Arc::new(Semaphore::new(MAX_PENDING_SETTLEMENTS)),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            kills,
            experiments,
            issued_keys,
            runtime: tokio::runtime::Handle::current(),
        });
        tokio::spawn(probe(Arc::downgrade(&fleet)));
        Ok(fleet)
    }

    /// Runs one Redis call under `[state] timeout`, noting the outcome.
    async fn call<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        timeout: Duration,
        inv: redis::ScriptInvocation<'_>,
    ) -> Option<T> {
        let mut conn = self.conn.clone();
        let r = tokio::time::timeout(timeout, inv.invoke_async::<T>(&mut conn)).await;
        match r {
            Ok(Ok(v)) => {
                self.health.up();
                Some(v)
            }
            Ok(Err(e)) if is_outage(&e) => {
                self.health.down(op, &e.to_string());
                None
            }
            Ok(Err(e)) => {
                // Redis answered, with an error: a bug, not an outage.
                // This call fails; nothing else is refused for it.
                crate::metrics::state_error(op);
                tracing::error!(op, error = %e, "redis state store refused a call");
                None
            }
            Err(_) => {
                self.health.down(op, "timed out");
                None
            }
        }
    }

    /// Admits and reserves a request, all or nothing, in one round trip.
    pub async fn take(self: &Arc<Self>, ask: &Ask<'_>) -> Result<Option<FleetHold>, Refusal> {
        let rates = rate_parts(ask.rules, ask.subject);
        let budgets = ask
            .cost
            .map(|c| budget_parts(ask.budgets, ask.subject, c))
            .unwrap_or_default();
        if rates.is_empty() && budgets.is_empty() {
            return Ok(None);
        }
        if !self.health.available() {
            return Err(Refusal::Unavailable);
        }
        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
            return Err(Refusal::Unavailable);
        };
        let now = unix_now();
        let inv = script::take(
            &self.keys, ask.id, ask.ttl, ask.tokens, &rates, &budgets, now,
        );
        let Some(reply) = self.call::<Vec<i64>>("take", self.timeout, inv).await else {
            // The script may have run before the reply was lost: release
            // whatever it took (a no-op when it did not run).
            self.release_unknown(ask.id, ask.tokens, rates, budgets, permit);
            return Err(Refusal::Unavailable);
        };
        match reply.first() {
            Some(1) => Ok(Some(FleetHold::new(
                self.clone(),
                ask,
                rates,
                budgets,
                &reply,
                permit,
            ))),
            _ => Err(refusal(&reply, &rates, &budgets, ask.tokens, ask.cost)),
        }
    }

    /// The model a downgrade budget sends this request to, if any.
    pub fn downgrade(&self, budgets: &[BudgetRule], subject: &Subject<'_>) -> Option<String> {
        self.seen.downgrade(budgets, subject, unix_now())
    }

    /// Releases a take whose reply never came.
    fn release_unknown(
        self: &Arc<Self>,
        id: &str,
        tokens: u64,
        rates: Vec<RatePart>,
        budgets: Vec<BudgetPart>,
        permit: OwnedSemaphorePermit,
    ) {
        let actual = Actual {
            reserved_tokens: tokens,
            tokens,
            cost: 0,
            booked: 0,
            expires_ms: u64::MAX,
        };
        let job = hold::Settlement {
            id: id.into(),
            rates,
            budgets,
            actual,
            attribution: Vec::new(),
        };
        hold::spawn_settle(self.clone(), job, permit, None);
    }

    /// Waits up to `limit` for the settlements in flight (shutdown); those
    /// still retrying then give up (their usage records are written, their
    /// reservations expire in Redis).
    pub async fn drain(&self, limit: Duration) {
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                pending = self.tasks.len(),
                "settlements still pending at shutdown"
            );
            self.stop.cancel();
            self.tasks.wait().await;
        }
    }
}

/// Whether an error means Redis cannot be used right now (unreachable,
/// loading, read-only, busy, failing over), as opposed to refusing this
/// one call (a script error).
fn is_outage(e: &redis::RedisError) -> bool {
    !matches!(
        e.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
            | redis::ErrorKind::UnexpectedReturnType
            | redis::ErrorKind::Parse
    )
}

/// Seconds since the Unix epoch (budget windows are named by this clock).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The rate buckets a request is counted in.
fn rate_parts(rules: &[RateRule], subject: &Subject<'_>) -> Vec<RatePart> {
    rules
        .iter()
        .filter(|r| in_filter(r.models.as_ref(), subject.model))
        .filter_map(|r| {
            let limits = r.limits_for(subject)?;
            Some(RatePart {
                rule: r.name.clone(),
                bucket: bucket_key(&r.name, &r.scope, subject),
                rpm: limits.requests_per_minute,
                tpm: limits.tokens_per_minute,
                max_concurrent: limits.max_concurrent,
            })
        })
        .collect()
}

/// The budget buckets a request reserves `cost` at.
fn budget_parts(budgets: &[BudgetRule], subject: &Subject<'_>, cost: Nanos) -> Vec<BudgetPart> {
    budgets
        .iter()
        .filter(|b| crate::config::applies(b, subject.model))
        .filter_map(|b| {
            Some(BudgetPart {
                budget: b.name.clone(),
                bucket: bucket_key(&b.name, &b.scope, subject),
                window: b.window,
                limit: b.limit_for(subject)?,
                amount: cost,
                enforce: b.action != BudgetAction::Alert,
                per_run: b.scope.contains(&crate::config::Dim::Run),
            })
        })
        .collect()
}

/// The refusal a take script replied with.
fn refusal(
    reply: &[i64],
    rates: &[RatePart],
    budgets: &[BudgetPart],
    tokens: u64,
    cost: Option<Nanos>,
) -> Refusal {
    let at = |i: usize| reply.get(i).copied().unwrap_or(0);
    let n = |i: usize| u64::try_from(at(i)).unwrap_or(0);
    let index = usize::try_from(at(2)).unwrap_or(0).saturating_sub(1);
    let kind = match at(1) {
        1 => LimitKind::Requests,
        2 => LimitKind::Tokens,
        3 => LimitKind::Concurrent,
        _ => {
            let Some(b) = budgets.get(index) else {
                return Refusal::Unavailable;
            };
            return Refusal::Budget(Exhausted {
                budget: b.budget.clone(),
                bucket: b.bucket.clone(),
                limit: b.limit,
                spent: n(4),
                requested: cost.unwrap_or(0),
                per_run: b.per_run,
            });
        }
    };
    let Some(r) = rates.get(index) else {
        return Refusal::Unavailable;
    };
    Refusal::Rate(RateLimited {
        rule: r.rule.clone(),
        kind,
        limit: n(3),
        requested: match kind {
            LimitKind::Tokens => tokens,
            _ => 1,
        },
        retry_after: Duration::from_millis(n(5)),
        never_fits: at(6) == 1,
    })
}

/// Pings Redis every `PROBE_INTERVAL` while the fleet lives.
async fn probe(fleet: std::sync::Weak<Fleet>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(f) = fleet.upgrade() else { return };
        let mut conn = f.conn.clone();
        let ping = redis::cmd("PING");
        let r = tokio::time::timeout(f.timeout, ping.query_async::<String>(&mut conn)).await;
        match r {
            Ok(Ok(_)) => {
                f.health.up();
                if !f.owed.is_empty() {
                    f.repay().await;
                }
                f.refresh_kills().await;
                f.refresh_experiments().await;
                f.refresh_issued_keys().await;
            }
            Ok(Err(e)) => f.health.down("ping", &e.to_string()),
            Err(_) => f.health.down("ping", "timed out"),
        }
    }
}

/// The limits one replica enforces on its own while Redis is unavailable
/// (`on_unavailable = "fail_open"`): every rate limit and budget scaled to
/// `fail_open_share` (rounded up, at least 1 request). With N replicas the
/// fleet can exceed a limit by at most N × share of it per outage window.
#[derive(Debug, Clone, Default)]
pub struct LocalLimits {
    pub rate_limits: Vec<RateRule>,
    pub budgets: Vec<BudgetRule>,
}

impl LocalLimits {
    pub fn scaled(rules: &[RateRule], budgets: &[BudgetRule], share: Permille) -> Self {
        let scale = |n: u64| -> u64 {
            let v = u128::from(n) * u128::from(share);
            u64::try_from(v.div_ceil(1000)).unwrap_or(u64::MAX).max(1)
        };
        let share_of = |n: Nanos| -> Nanos {
            u64::try_from(u128::from(n) * u128::from(share) / 1000).unwrap_or(u64::MAX)
        };
        LocalLimits {
            rate_limits: rules
                .iter()
                .map(|r| RateRule {
                    requests_per_minute: r.requests_per_minute.map(scale),
                    tokens_per_minute: r.tokens_per_minute.map(scale),
                    max_concurrent: r.max_concurrent.map(scale),
                    overrides: r.overrides.map(|o| {
                        o.map(|l| RateLimits {
                            requests_per_minute: l.requests_per_minute.map(scale),
                            tokens_per_minute: l.tokens_per_minute.map(scale),
                            max_concurrent: l.max_concurrent.map(scale),
                        })
                    }),
                    ..r.clone()
                })
                .collect(),
            budgets: budgets
                .iter()
                .map(|b| BudgetRule {
                    limit: share_of(b.limit),
                    overrides: b.overrides.map(|o| o.map(share_of)),
                    ..b.clone()
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
