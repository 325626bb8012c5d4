//! Spend a replica charged under its local limits while Redis was away
//! (`fail_open`), kept per budget bucket and window and per attributed
//! identity and day, and added to Redis once it answers again, so the
//! fleet's numbers end up whole. Spend whose window ended meanwhile is
//! dropped: it no longer counts anywhere. Lost if the replica dies first.

use std::sync::Mutex;

use hashbrown::HashMap;

use super::script::{self, Actual, BudgetPart};
use super::{budget_parts, unix_now, Fleet};
use crate::config::BudgetRule;
use crate::limits::rate::Subject;
use crate::metrics;
use crate::pricing::Nanos;
use crate::window::Window;

/// Entries (budget buckets plus attributed identities) remembered at most;
/// spend past it is logged and counted as lost.
pub const MAX_OWED: usize = 100_000;

type BucketKey = (String, String);
type SpendKey = (&'static str, String, String);

#[derive(Debug, Default)]
pub struct Owed {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (bucket, window) → the budget and what is owed.
    budgets: HashMap<BucketKey, (BudgetPart, Nanos)>,
    /// (dimension, value, day) → what is owed.
    spend: HashMap<SpendKey, Nanos>,
}

impl Inner {
    fn full(&self) -> bool {
        self.budgets.len() + self.spend.len() >= MAX_OWED
    }
}

impl Owed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_empty(&self) -> bool {
        let i = self.lock();
        i.budgets.is_empty() && i.spend.is_empty()
    }

    /// (budget entries, identity entries, nano-dollars owed in all).
    #[cfg(test)]
    pub fn total(&self) -> (usize, usize, Nanos) {
        let i = self.lock();
        let n =
            i.budgets.values().map(|(_, n)| *n).sum::<Nanos>() + i.spend.values().sum::<Nanos>();
        (i.budgets.len(), i.spend.len(), n)
    }
}

impl Fleet {
    /// Remembers `cost`, charged under local limits while Redis was away,
    /// at every budget that applies and for every attributed identity.
    pub fn owe(
        &self,
        budgets: &[BudgetRule],
        subject: &Subject<'_>,
        attribution: &[(&'static str, String)],
        cost: Nanos,
    ) {
        if cost == 0 {
            return;
        }
        let now = unix_now();
        let mut i = self.owed.lock();
        let mut lost = 0;
        for part in budget_parts(budgets, subject, 0) {
            let key = (part.bucket.clone(), part.window.key(now).to_string());
            if i.full() && !i.budgets.contains_key(&key) {
                lost += 1;
                continue;
            }
            let e = i.budgets.entry(key).or_insert((part, 0));
            e.1 = e.1.saturating_add(cost);
        }
        let day = Window::Day.key(now).to_string();
        for (dim, value) in attribution {
            let key = (*dim, value.clone(), day.clone());
            if i.full() && !i.spend.contains_key(&key) {
                lost += 1;
                continue;
            }
            let e = i.spend.entry(key).or_insert(0);
            *e = e.saturating_add(cost);
        }
        if lost > 0 {
            metrics::state_settle_lost();
            tracing::error!(
                cost_nanos = cost,
                entries = lost,
                "fail-open spend not remembered for redis: too many buckets owed"
            );
        }
    }

    /// Adds what is owed to Redis; stops at the first failure (the next
    /// probe tries again).
    pub(super) async fn repay(&self) {
        let (budgets, spend): (Vec<_>, Vec<_>) = {
            let i = self.owed.lock();
            (
                i.budgets
                    .iter()
                    .map(|(k, (p, n))| (k.clone(), p.clone(), *n))
                    .collect(),
                i.spend.iter().map(|(k, n)| (k.clone(), *n)).collect(),
            )
        };
        let now = unix_now();
        for (key, part, n) in budgets {
            if part.window.key(now) == key.1
                && !self.pay(std::slice::from_ref(&part), &[], n, now).await
            {
                return;
            }
            let mut i = self.owed.lock();
            if let Some(e) = i.budgets.get_mut(&key) {
                e.1 = e.1.saturating_sub(n);
                if e.1 == 0 {
                    i.budgets.remove(&key);
                }
            }
        }
        let today = Window::Day.key(now);
        for (key, n) in spend {
            if key.2 == today && !self.pay(&[], &[(key.0, key.1.clone())], n, now).await {
                return;
            }
            let mut i = self.owed.lock();
            if let Some(e) = i.spend.get_mut(&key) {
                *e = e.saturating_sub(n);
                if *e == 0 {
                    i.spend.remove(&key);
                }
            }
        }
    }

    /// One settle script with no reservation: adds `cost` as spend.
    async fn pay(
        &self,
        budgets: &[BudgetPart],
        attribution: &[(&'static str, String)],
        cost: Nanos,
        now: u64,
    ) -> bool {
        let actual = Actual {
            reserved_tokens: 0,
            tokens: 0,
            cost,
            booked: 0,
            // Already expired: the script applies it as a late settlement.
            expires_ms: 0,
        };
        let id = format!("owed:{:016x}", fastrand::u64(..));
        let inv = script::settle(&self.keys, &id, &[], budgets, &actual, attribution, now);
        let timeout = self.timeout.max(super::SETTLE_TIMEOUT);
        let paid = self.call::<Vec<i64>>("repay", timeout, inv).await.is_some();
        if paid {
            tracing::info!(cost_nanos = cost, "fail-open spend added to redis");
        }
        paid
    }
}
