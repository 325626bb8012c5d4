//! The spend ledger: per budget and scope bucket, the settled spend of the
//! current window and what in-flight requests have reserved. Reservation is
//! all-or-nothing across every budget that applies, under one lock, so
//! concurrent requests cannot overspend.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::HashMap;
use serde::Serialize;

use super::applies;
use super::journal::{self, Charge, Journal, Line};
use super::spend::SpendIndex;
use crate::config::{BudgetAction, BudgetRule, Permille};
use crate::limits::rate::Subject;
use crate::pricing::{nanos_to_usd, Nanos};
use crate::usage_log::UsageLog;
pub use crate::vocab::Exhausted;
use crate::vocab::{BucketName, BucketProbe};
use crate::window::WindowKey;

/// Seconds since the Unix epoch; injectable so tests can move time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The real clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

/// What follows a budget's name in its overflow bucket's name.
const OVERFLOW: &str = "|~overflow";

#[derive(Debug, Default)]
struct Slot {
    window: WindowKey,
    spent: Nanos,
    reserved: Nanos,
}

/// What a request holds at each budget until it settles.
#[derive(Debug)]
pub struct BudgetHold {
    ledger: Arc<Ledger>,
    parts: Vec<Part>,
    /// The least remaining allowance among the budgets that apply, after
    /// this reservation (for `x-sluice-budget-remaining-usd`).
    pub remaining: Option<Nanos>,
}

/// One reservation of a hold: the bucket (whose name starts with the
/// budget's), the budget name's length, the amount.
#[derive(Debug)]
struct Part {
    bucket: BucketName,
    name_len: usize,
    amount: Nanos,
}

impl Part {
    fn budget(&self) -> &str {
        self.bucket.as_str().get(..self.name_len).unwrap_or("")
    }
}

/// Whether `used` has reached `permille` of `limit` (integer math).
pub fn reached(used: Nanos, permille: Permille, limit: Nanos) -> bool {
    u128::from(used) * 1000 >= u128::from(permille) * u128::from(limit)
}

/// The spend at which `permille` of `limit` is reached (integer math).
pub fn threshold(limit: Nanos, permille: Permille) -> Nanos {
    let at = u128::from(limit) * u128::from(permille) / 1000;
    Nanos::try_from(at).unwrap_or(Nanos::MAX)
}

/// The ledger of every budget bucket.
///
/// Bounded: at most `max_slots` buckets. Past that, a new identity is
/// charged to its budget's shared overflow bucket (`budget|~overflow`) under
/// the same limit, and so is every new identity while that bucket has spend
/// in the current window — so the cap can only make a budget tighter, and
/// nobody's spend is split across two buckets. `sweep` drops buckets with
/// nothing reserved and no spend in their current window.
pub struct Ledger {
    slots: Mutex<HashMap<BucketName, Slot>>,
    max_slots: AtomicUsize,
    /// Today's spend per identity, and spend-rate anomalies.
    pub spend: SpendIndex,
    journal: Journal,
    usage: UsageLog,
    clock: Clock,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

/// The scope part of a bucket key (`user=alice|team=x`), for the journal.
fn scope_of(bucket: &str) -> &str {
    bucket.split_once('|').map_or("", |(_, s)| s)
}

impl Ledger {
    /// A ledger with no persistence (tests).
    pub fn in_memory(clock: Clock) -> Arc<Ledger> {
        Arc::new(Ledger {
            slots: Mutex::new(HashMap::new()),
            max_slots: AtomicUsize::new(crate::config::DEFAULT_MAX_BUCKETS),
            spend: SpendIndex::default(),
            journal: Journal::none(),
            usage: UsageLog::off(),
            clock,
        })
    }

    /// A ledger that writes usage records but keeps spend in memory only
    /// (fleet mode: what a replica charges while Redis is away).
    pub fn unjournaled(usage: UsageLog, clock: Clock) -> Arc<Ledger> {
        Arc::new(Ledger {
            slots: Mutex::new(HashMap::new()),
            max_slots: AtomicUsize::new(crate::config::DEFAULT_MAX_BUCKETS),
            spend: SpendIndex::default(),
            journal: Journal::none(),
            usage,
            clock,
        })
    }

    /// Opens the journal at `path`: replays the spend of windows that are
    /// still current, compacts the file, and starts the writer.
    pub fn open(
        path: &Path,
        budgets: &[BudgetRule],
        usage: UsageLog,
        clock: Clock,
    ) -> std::io::Result<Arc<Ledger>> {
        let now = clock();
        let totals = journal::replay(path)?;
        let mut slots = HashMap::new();
        let mut keep = Vec::new();
        for ((b, s, w), n) in totals {
            let Some(rule) = budgets.iter().find(|r| r.name == b) else {
                continue;
            };
            if rule.window.key(now) != w || n == 0 {
                continue;
            }
            let bucket = if s.is_empty() {
                b.clone()
            } else {
                format!("{b}|{s}")
            };
            slots.insert(
                BucketName::new(&bucket),
                Slot {
                    window: rule.window.key(now),
                    spent: n,
                    reserved: 0,
                },
            );
            keep.push(Line {
                b,
                s,
                w,
                n: Some(n),
                reset: false,
            });
        }
        keep.sort_by(|a, b| (&a.b, &a.s).cmp(&(&b.b, &b.s)));
        journal::compact(path, &keep)?;
        let journal = Journal::start(path, usage.clone())?;
        tracing::info!(path = %path.display(), buckets = slots.len(), "budget state loaded");
        Ok(Arc::new(Ledger {
            slots: Mutex::new(slots),
            max_slots: AtomicUsize::new(crate::config::DEFAULT_MAX_BUCKETS),
            spend: SpendIndex::default(),
            journal,
            usage,
            clock,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<BucketName, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot of a bucket (created if new; the only time its name is
    /// built), rolled over to the current window, with its name.
    fn slot<'m, Q>(
        map: &'m mut HashMap<BucketName, Slot>,
        bucket: &Q,
        window: &WindowKey,
    ) -> (BucketName, &'m mut Slot)
    where
        Q: std::hash::Hash + hashbrown::Equivalent<BucketName>,
        for<'q> BucketName: From<&'q Q>,
    {
        let entry = map.entry_ref(bucket).or_default_entry();
        let name = entry.key().clone();
        let slot = entry.into_mut();
        if slot.window != *window {
            slot.window = *window;
            slot.spent = 0;
        }
        (name, slot)
    }

    /// Sets the most buckets kept (`[state] max_buckets`).
    pub fn set_max_slots(&self, n: usize) {
        self.max_slots.store(n.max(1), Ordering::Relaxed);
    }

    /// The bucket a subject is charged to at budget `b`: its own, or the
    /// budget's overflow bucket (see `Ledger`).
    fn bucket_for<'a>(
        &self,
        map: &HashMap<BucketName, Slot>,
        b: &'a BudgetRule,
        subject: &'a Subject<'a>,
        window: &str,
    ) -> BucketProbe<'a> {
        let key = BucketProbe::new(&b.name, &b.scope, subject);
        if b.scope.is_empty() || map.contains_key(&key) {
            return key;
        }
        let overflow = BucketProbe::suffixed(&b.name, OVERFLOW);
        let in_use = map
            .get(&overflow)
            .is_some_and(|s| s.reserved > 0 || (s.window == window && s.spent > 0));
        if in_use || map.len() >= self.max_slots.load(Ordering::Relaxed) {
            overflow
        } else {
            key
        }
    }

    /// Number of buckets held.
    pub fn entries(&self) -> usize {
        self.lock().len()
    }

    /// Drops buckets with nothing reserved and no spend in their budget's
    /// current window (or whose budget is gone); returns how many are left.
    pub fn sweep(&self, budgets: &[BudgetRule]) -> usize {
        let now = (self.clock)();
        let mut map = self.lock();
        map.retain(|key, slot| {
            let name = key.as_str().split('|').next().unwrap_or("");
            let current = budgets
                .iter()
                .find(|b| b.name == name)
                .is_some_and(|b| slot.window == b.window.key(now) && slot.spent > 0);
            slot.reserved > 0 || current
        });
        map.len()
    }

    /// The model to downgrade to, when a downgrade budget is past its threshold.
    pub fn downgrade(&self, budgets: &[BudgetRule], subject: &Subject<'_>) -> Option<String> {
        let now = (self.clock)();
        let map = self.lock();
        budgets
            .iter()
            .filter(|b| b.action == BudgetAction::Downgrade && applies(b, subject.model))
            .find(|b| {
                let Some(limit) = b.limit_for(subject) else {
                    return false;
                };
                // A lookup only: asking must not create a bucket.
                let window = b.window.key(now);
                let key = self.bucket_for(&map, b, subject, &window);
                map.get(&key)
                    .filter(|s| s.window == window)
                    .is_some_and(|s| {
                        reached(
                            s.spent.saturating_add(s.reserved),
                            b.downgrade_permille,
                            limit,
                        )
                    })
            })
            .and_then(|b| b.downgrade_to.clone())
    }

    /// Reserves `amount` at every enforcing budget that applies, or refuses.
    pub fn reserve(
        self: &Arc<Self>,
        budgets: &[BudgetRule],
        subject: &Subject<'_>,
        amount: Nanos,
    ) -> Result<BudgetHold, Exhausted> {
        let now = (self.clock)();
        let mut map = self.lock();
        // An exempt subject (an `"unlimited"` override) reserves nothing there.
        let applicable: Vec<(&BudgetRule, Nanos, BucketProbe<'_>, WindowKey)> = budgets
            .iter()
            .filter(|b| applies(b, subject.model))
            .filter_map(|b| {
                let limit = b.limit_for(subject)?;
                let window = b.window.key(now);
                Some((b, limit, self.bucket_for(&map, b, subject, &window), window))
            })
            .collect();
        for (b, limit, key, window) in &applicable {
            if b.action == BudgetAction::Alert {
                continue;
            }
            let (name, s) = Self::slot(&mut map, key, window);
            if s.spent.saturating_add(s.reserved).saturating_add(amount) > *limit {
                return Err(Exhausted {
                    budget: b.name.clone(),
                    bucket: name.as_str().to_owned(),
                    limit: *limit,
                    spent: s.spent.saturating_add(s.reserved),
                    requested: amount,
                    per_run: b.scope.contains(&crate::config::Dim::Run),
                });
            }
        }
        let mut parts = Vec::with_capacity(applicable.len());
        let mut remaining: Option<Nanos> = None;
        for (b, limit, key, window) in &applicable {
            let (bucket, s) = Self::slot(&mut map, key, window);
            s.reserved = s.reserved.saturating_add(amount);
            let left = limit.saturating_sub(s.spent.saturating_add(s.reserved));
            remaining = Some(remaining.map_or(left, |r| r.min(left)));
            parts.push(Part {
                bucket,
                name_len: b.name.len(),
                amount,
            });
        }
        drop(map);
        Ok(BudgetHold {
            ledger: self.clone(),
            parts,
            remaining,
        })
    }

    /// Spend and reservations of every bucket, for the admin API.
    pub fn report(&self, budgets: &[BudgetRule]) -> Vec<BucketReport> {
        let now = (self.clock)();
        let mut map = self.lock();
        let mut out = Vec::new();
        for (key, slot) in map.iter_mut() {
            let name = key.as_str().split('|').next().unwrap_or("");
            let Some(b) = budgets.iter().find(|b| b.name == name) else {
                continue;
            };
            let window = b.window.key(now);
            if slot.window != window {
                slot.window = window;
                slot.spent = 0;
            }
            let limit = b.limit_of_bucket(key.as_str()).unwrap_or(b.limit);
            out.push(BucketReport {
                overridden: b.overrides.for_bucket(key.as_str()).is_some(),
                budget: b.name.clone(),
                bucket: key.as_str().to_owned(),
                window: slot.window.to_string(),
                action: match b.action {
                    BudgetAction::Reject => "reject",
                    BudgetAction::Downgrade => "downgrade",
                    BudgetAction::Alert => "alert",
                },
                limit_usd: nanos_to_usd(limit),
                spent_usd: nanos_to_usd(slot.spent),
                reserved_usd: nanos_to_usd(slot.reserved),
                remaining_usd: nanos_to_usd(
                    limit.saturating_sub(slot.spent.saturating_add(slot.reserved)),
                ),
                resets_at: b.window.ends_at(now),
            });
        }
        out.sort_by(|a, b| a.bucket.cmp(&b.bucket));
        out
    }

    /// Resets the current window of a bucket (`budget` or `budget|user=x`).
    pub fn reset(&self, budgets: &[BudgetRule], bucket: &str) -> bool {
        let now = (self.clock)();
        let name = bucket.split('|').next().unwrap_or("");
        let Some(b) = budgets.iter().find(|b| b.name == name) else {
            return false;
        };
        let window = b.window.key(now);
        let mut map = self.lock();
        let (_, s) = Self::slot(&mut map, &BucketName::new(bucket), &window);
        s.spent = 0;
        drop(map);
        let line = Line {
            b: b.name.clone(),
            s: scope_of(bucket).to_owned(),
            w: window.to_string(),
            n: None,
            reset: true,
        };
        self.journal.append(line, None, &self.usage);
        true
    }

    /// Records a charge for attribution; logs and counts anomalies.
    pub fn attribute(&self, id: &crate::auth::Identity, nanos: Nanos) {
        for a in self.spend.record((self.clock)(), id, nanos) {
            crate::metrics::cost_anomaly(a.dimension);
            tracing::warn!(
                dimension = a.dimension,
                value = %a.value,
                usd_per_minute = a.usd_per_minute,
                baseline_usd_per_minute = a.baseline_usd_per_minute,
                "cost anomaly: spend rate far above its baseline"
            );
        }
    }

    /// Why settled spend cannot be persisted right now (`None`: healthy).
    pub fn journal_degraded(&self) -> Option<String> {
        self.journal.degraded()
    }

    /// Flushes and stops the journal writer.
    pub async fn close(&self) {
        self.journal.close().await;
    }
}

impl BudgetHold {
    /// Settles every reservation to `actual`; the usage record `then` is
    /// written once the charge is durable. Returns the budgets whose alert
    /// thresholds this charge crossed, as (budget, bucket, threshold in
    /// permille of the limit).
    pub fn settle(
        mut self,
        budgets: &[BudgetRule],
        actual: Nanos,
        then: Option<Vec<u8>>,
    ) -> Vec<(String, String, Permille)> {
        let parts = std::mem::take(&mut self.parts);
        let ledger = self.ledger.clone();
        let now = (ledger.clock)();
        let mut crossed = Vec::new();
        let mut lines = Vec::new();
        {
            let mut map = ledger.lock();
            for part in &parts {
                let name = part.budget();
                let window = budgets
                    .iter()
                    .find(|b| b.name == name)
                    .map(|b| (b.window.key(now), b));
                let Some((window, rule)) = window else {
                    continue;
                };
                let (_, s) = Ledger::slot(&mut map, &part.bucket, &window);
                s.reserved = s.reserved.saturating_sub(part.amount);
                let before = s.spent;
                s.spent = s.spent.saturating_add(actual);
                let limit = rule
                    .limit_of_bucket(part.bucket.as_str())
                    .unwrap_or(rule.limit);
                for &t in &rule.alert_permille {
                    let at = threshold(limit, t);
                    if before < at && s.spent >= at {
                        crossed.push((name.to_owned(), part.bucket.as_str().to_owned(), t));
                    }
                }
                if actual > 0 {
                    lines.push(Charge {
                        bucket: part.bucket.clone(),
                        name_len: part.name_len,
                        window,
                        n: actual,
                    });
                }
            }
        }
        let mut then = then;
        let last = lines.len();
        for (i, line) in lines.into_iter().enumerate() {
            let t = if i + 1 == last { then.take() } else { None };
            ledger.journal.append(line, t, &ledger.usage);
        }
        if let Some(u) = then {
            ledger.usage.write_raw(u);
        }
        crossed
    }
}

impl Drop for BudgetHold {
    /// Never settled (a panic path): release the reservations.
    fn drop(&mut self) {
        let mut map = self.ledger.lock();
        for part in &self.parts {
            if let Some(s) = map.get_mut(&part.bucket) {
                s.reserved = s.reserved.saturating_sub(part.amount);
            }
        }
    }
}

/// One bucket, for the admin API.
#[derive(Debug, Serialize)]
pub struct BucketReport {
    pub budget: String,
    pub bucket: String,
    /// The bucket has its own limit (an override).
    pub overridden: bool,
    pub window: String,
    pub action: &'static str,
    pub limit_usd: f64,
    pub spent_usd: f64,
    pub reserved_usd: f64,
    pub remaining_usd: f64,
    /// Unix seconds when the window rolls over (none for lifetime).
    pub resets_at: Option<u64>,
}

mod force;

#[cfg(test)]
mod tests;
