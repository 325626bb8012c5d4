//! What a request holds in the fleet until it ends, and the settlement task
//! it hands that to: off the response path, retried until Redis answers,
//! tracked so shutdown can wait for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use super::script::{self, Actual, BudgetPart, RatePart};
use super::{unix_now, Ask, Fleet, SETTLE_GIVE_UP};
use crate::metrics;
use crate::pricing::Nanos;
use crate::vocab::Allowance;

/// One budget's spend before and after a settlement (for alerts).
#[derive(Debug, Clone)]
pub struct Settled {
    pub budget: String,
    pub bucket: String,
    pub before: Nanos,
    pub after: Nanos,
    /// What in-flight requests still hold there.
    pub reserved: Nanos,
}

/// Runs once the charge is in Redis (`Some`) or was given up on (`None`).
pub type Then = Box<dyn FnOnce(Option<Vec<Settled>>) + Send>;

/// An admitted request's reservations in the fleet. Settle it with what it
/// used; dropped unsettled, it releases its budget reservations and
/// concurrency slots and keeps its reserved tokens (the safe side).
pub struct FleetHold {
    fleet: Arc<Fleet>,
    id: Arc<str>,
    rates: Vec<RatePart>,
    budgets: Vec<BudgetPart>,
    reserved_tokens: u64,
    booked: i64,
    expires_ms: u64,
    permit: Option<OwnedSemaphorePermit>,
    /// The tightest rate allowance left, for `x-ratelimit-*` headers.
    pub allowance: Allowance,
    /// The least remaining allowance among the budgets, after this
    /// reservation (for `x-sluice-budget-remaining-usd`).
    pub remaining: Option<Nanos>,
}

impl std::fmt::Debug for FleetHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetHold").field("id", &self.id).finish()
    }
}

impl FleetHold {
    /// The hold a take script's reply describes (layout in state.lua).
    pub(super) fn new(
        fleet: Arc<Fleet>,
        ask: &Ask<'_>,
        rates: Vec<RatePart>,
        budgets: Vec<BudgetPart>,
        reply: &[i64],
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let at = |i: usize| reply.get(i).copied().unwrap_or(-1);
        let mut allowance = Allowance::default();
        for (i, r) in rates.iter().enumerate() {
            let base = 3 + 4 * i;
            let pick = |limit: Option<u64>, left: i64, reset: i64| {
                limit.map(|l| {
                    let left = u64::try_from(left).unwrap_or(0);
                    let reset = Duration::from_millis(u64::try_from(reset).unwrap_or(0));
                    (l, left, reset)
                })
            };
            if let Some(t) = pick(r.rpm, at(base), at(base + 1)) {
                if allowance.requests.is_none_or(|(_, l, _)| t.1 < l) {
                    allowance.requests = Some(t);
                }
            }
            if let Some(t) = pick(r.tpm, at(base + 2), at(base + 3)) {
                if allowance.tokens.is_none_or(|(_, l, _)| t.1 < l) {
                    allowance.tokens = Some(t);
                }
            }
        }
        let mut remaining: Option<Nanos> = None;
        let now = unix_now();
        for (j, b) in budgets.iter().enumerate() {
            let used = u64::try_from(at(3 + 4 * rates.len() + j)).unwrap_or(0);
            fleet.seen.note(&b.bucket, b.window.key(now), used);
            let left = b.limit.saturating_sub(used);
            remaining = Some(remaining.map_or(left, |r| r.min(left)));
        }
        let now_ms = u64::try_from(at(2)).unwrap_or(0);
        Self {
            fleet,
            id: ask.id.into(),
            rates,
            budgets,
            reserved_tokens: ask.tokens,
            booked: at(1),
            expires_ms: now_ms.saturating_add(u64::try_from(ask.ttl.as_millis()).unwrap_or(0)),
            permit: Some(permit),
            allowance,
            remaining,
        }
    }

    /// The fleet this hold is in (for charges that cannot be refused).
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// Hands the settlement to a tracked task: token reservations to
    /// `tokens`, budget reservations to `cost`; `then` runs once the charge
    /// is in Redis.
    pub fn settle(
        mut self,
        tokens: u64,
        cost: Nanos,
        attribution: Vec<(&'static str, String)>,
        then: Then,
    ) {
        self.hand_off(tokens, cost, attribution, Some(then));
    }

    /// Hands what the request holds to a settlement task, once.
    fn hand_off(
        &mut self,
        tokens: u64,
        cost: Nanos,
        attribution: Vec<(&'static str, String)>,
        then: Option<Then>,
    ) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let job = Settlement {
            id: self.id.clone(),
            rates: std::mem::take(&mut self.rates),
            budgets: std::mem::take(&mut self.budgets),
            actual: Actual {
                reserved_tokens: self.reserved_tokens,
                tokens,
                cost,
                booked: self.booked,
                expires_ms: self.expires_ms,
            },
            attribution,
        };
        spawn_settle(self.fleet.clone(), job, permit, then);
    }
}

impl Drop for FleetHold {
    /// Never settled (the request was refused later, or a panic path).
    fn drop(&mut self) {
        // Budget reservations released, reserved tokens kept.
        self.hand_off(self.reserved_tokens, 0, Vec::new(), None);
    }
}

/// Everything a settle script needs.
pub(super) struct Settlement {
    pub id: Arc<str>,
    pub rates: Vec<RatePart>,
    pub budgets: Vec<BudgetPart>,
    pub actual: Actual,
    pub attribution: Vec<(&'static str, String)>,
}

/// Runs the settle script until Redis takes it (or `SETTLE_GIVE_UP`, or
/// shutdown gives up waiting), then `then`.
pub(super) fn spawn_settle(
    fleet: Arc<Fleet>,
    job: Settlement,
    permit: OwnedSemaphorePermit,
    then: Option<Then>,
) {
    let Settlement {
        id,
        rates,
        budgets,
        actual,
        attribution,
    } = job;
    let runtime = fleet.runtime.clone();
    let tasks = fleet.tasks.clone();
    tasks.spawn_on(
        async move {
            let _permit = permit;
            let give_up = Instant::now() + SETTLE_GIVE_UP;
            // Off the response path: a slow reply is waited for longer than
            // a take's, and a lost one is retried (the script is idempotent).
            let timeout = fleet.timeout.max(super::SETTLE_TIMEOUT);
            let mut delay = Duration::from_millis(50);
            loop {
                let inv = script::settle(
                    &fleet.keys,
                    &id,
                    &rates,
                    &budgets,
                    &actual,
                    &attribution,
                    unix_now(),
                );
                if let Some(reply) = fleet.call::<Vec<i64>>("settle", timeout, inv).await {
                    let at =
                        |i: usize| u64::try_from(reply.get(i).copied().unwrap_or(0)).unwrap_or(0);
                    let now = unix_now();
                    let settled: Vec<Settled> = if reply.first() == Some(&1) {
                        budgets
                            .iter()
                            .enumerate()
                            .map(|(j, b)| Settled {
                                budget: b.budget.clone(),
                                bucket: b.bucket.clone(),
                                before: at(1 + 3 * j),
                                after: at(2 + 3 * j),
                                reserved: at(3 + 3 * j),
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    for (s, b) in settled.iter().zip(&budgets) {
                        // Spent plus reserved, as a take reports it.
                        let used = s.after.saturating_add(s.reserved);
                        fleet.seen.note(&s.bucket, b.window.key(now), used);
                    }
                    if let Some(t) = then {
                        t(Some(settled));
                    }
                    return;
                }
                let stopping = tokio::select! {
                    () = tokio::time::sleep(delay) => false,
                    () = fleet.stop.cancelled() => true,
                };
                if stopping || Instant::now() >= give_up {
                    metrics::state_settle_lost();
                    tracing::error!(
                        request_id = %id,
                        cost_nanos = actual.cost,
                        "settlement not recorded in redis; its reservations expire there"
                    );
                    if let Some(t) = then {
                        t(None);
                    }
                    return;
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        },
        &runtime,
    );
}
