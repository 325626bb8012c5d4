//! Attribution: today's spend per user, team, feature and key (for "top
//! spenders"), and a cost-anomaly detector that flags a user or feature
//! whose spend rate jumps far above its own recent baseline — a runaway
//! agent loop is caught in minutes, not at the end of the month.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use hashbrown::{Equivalent, HashMap};
use serde::Serialize;

use crate::auth::Identity;
use crate::pricing::{nanos_to_usd, Nanos};
use crate::window::{Window, WindowKey};

/// Short and long decay constants of the spend-rate averages (seconds).
const SHORT: f64 = 300.0;
const LONG: f64 = 3600.0;
/// A rate this many times the baseline is an anomaly…
const FACTOR: f64 = 10.0;
/// …once the baseline has had this long to form…
const WARM_UP: u64 = 900;
/// …and if it is at least this much per minute (nano-dollars: $0.01/min).
const MIN_PER_MINUTE: f64 = 10_000_000.0;
/// A spend rate not fed for this long (seconds) is dropped by `sweep`
/// (its baseline has decayed away; it forms again on the next charge).
const RATE_IDLE: u64 = 2 * LONG as u64;
/// The value identities past the cap are counted under.
pub const OVERFLOW: &str = "~overflow";

#[derive(Debug, Default)]
struct Rate {
    short: f64,
    long: f64,
    last: u64,
    first: u64,
    flagged_until: u64,
}

impl Rate {
    /// Folds a charge in; true when the short-term rate is anomalous.
    fn add(&mut self, now: u64, nanos: Nanos) -> bool {
        if self.first == 0 {
            self.first = now;
            self.last = now;
        }
        let dt = now.saturating_sub(self.last) as f64;
        self.short *= (-dt / SHORT).exp();
        self.long *= (-dt / LONG).exp();
        self.last = now;
        // Exponentially weighted rates, in nano-dollars per second.
        self.short += nanos as f64 / SHORT;
        self.long += nanos as f64 / LONG;
        let warm = now.saturating_sub(self.first) >= WARM_UP;
        if warm
            && now >= self.flagged_until
            && self.short * 60.0 >= MIN_PER_MINUTE
            && self.short > FACTOR * self.long
        {
            self.flagged_until = now + 600;
            return true;
        }
        false
    }
}

/// An anomaly to report.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub dimension: &'static str,
    pub value: String,
    pub usd_per_minute: f64,
    pub baseline_usd_per_minute: f64,
}

/// An identity along one dimension (`("user", "alice")`).
#[derive(Debug, PartialEq, Eq)]
struct Who {
    dim: &'static str,
    value: Box<str>,
}

impl Hash for Who {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.dim.hash(state);
        (*self.value).hash(state);
    }
}

/// A `Who` borrowed from the request: looked up without copying the value.
struct WhoRef<'a> {
    dim: &'static str,
    value: &'a str,
}

impl Hash for WhoRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.dim.hash(state);
        self.value.hash(state);
    }
}

impl Equivalent<Who> for WhoRef<'_> {
    fn equivalent(&self, k: &Who) -> bool {
        self.dim == k.dim && self.value == &*k.value
    }
}

impl From<&WhoRef<'_>> for Who {
    fn from(w: &WhoRef<'_>) -> Self {
        Who {
            dim: w.dim,
            value: w.value.into(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    day: WindowKey,
    totals: HashMap<Who, Nanos>,
    rates: HashMap<Who, Rate>,
}

/// Per-identity spend of the current UTC day and spend-rate baselines.
///
/// Bounded: each map holds at most `max_entries` identities; past that, new
/// identities are counted together under the value `~overflow` (so a flood
/// of invented identities still shows up, as one spender and one spend
/// rate). Idle rates and yesterday's totals are dropped by `sweep`.
#[derive(Debug)]
pub struct SpendIndex {
    state: Mutex<State>,
    max_entries: AtomicUsize,
}

impl Default for SpendIndex {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_entries: AtomicUsize::new(crate::config::DEFAULT_MAX_BUCKETS),
        }
    }
}

/// The key an identity is counted under in `map`: its own, or the overflow
/// one when the map is full and does not know it yet.
fn key_in<'a, V>(map: &HashMap<Who, V>, cap: usize, dim: &'static str, v: &'a str) -> WhoRef<'a> {
    let own = WhoRef { dim, value: v };
    if map.len() < cap || map.contains_key(&own) {
        own
    } else {
        WhoRef {
            dim,
            value: OVERFLOW,
        }
    }
}

/// One row of "top spenders".
#[derive(Debug, Serialize)]
pub struct Spender {
    pub value: String,
    pub spent_usd: f64,
}

impl SpendIndex {
    /// Records a charge; returns anomalies it revealed.
    pub fn record(&self, now: u64, id: &Identity, nanos: Nanos) -> Vec<Anomaly> {
        if nanos == 0 {
            return Vec::new();
        }
        let cap = self.max_entries.load(Ordering::Relaxed);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let day = Window::Day.key(now);
        if s.day != day {
            s.day = day;
            s.totals.clear();
        }
        let mut out = Vec::new();
        let dims: [(&'static str, Option<&str>); 4] = [
            ("user", id.user.as_deref()),
            ("team", id.team.as_deref()),
            ("feature", id.feature.as_deref()),
            ("key", id.key.as_deref()),
        ];
        for (dim, value) in dims {
            let Some(v) = value else { continue };
            let total = key_in(&s.totals, cap, dim, v);
            let t = s.totals.entry_ref(&total).or_insert(0);
            *t = t.saturating_add(nanos);
            if dim == "user" || dim == "feature" {
                let key = key_in(&s.rates, cap, dim, v);
                let r = s.rates.entry_ref(&key).or_default();
                if r.add(now, nanos) {
                    out.push(Anomaly {
                        dimension: dim,
                        value: key.value.to_owned(),
                        usd_per_minute: nanos_to_usd((r.short * 60.0) as Nanos),
                        baseline_usd_per_minute: nanos_to_usd((r.long * 60.0) as Nanos),
                    });
                }
            }
        }
        out
    }

    /// Sets the most identities each map keeps (`[state] max_buckets`).
    pub fn set_max_entries(&self, n: usize) {
        self.max_entries.store(n.max(1), Ordering::Relaxed);
    }

    /// Drops yesterday's totals and spend rates idle for `RATE_IDLE`;
    /// returns the entries left.
    pub fn sweep(&self, now: u64) -> usize {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let day = Window::Day.key(now);
        if s.day != day {
            s.day = day;
            s.totals.clear();
        }
        s.rates
            .retain(|_, r| now.saturating_sub(r.last) < RATE_IDLE);
        s.totals.len() + s.rates.len()
    }

    /// Today's top spenders along one dimension.
    pub fn top(&self, dimension: &str, n: usize) -> Vec<Spender> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<Spender> = s
            .totals
            .iter()
            .filter(|(w, _)| w.dim == dimension)
            .map(|(w, n)| Spender {
                value: w.value.to_string(),
                spent_usd: nanos_to_usd(*n),
            })
            .collect();
        rows.sort_by(|a, b| {
            b.spent_usd
                .total_cmp(&a.spent_usd)
                .then(a.value.cmp(&b.value))
        });
        rows.truncate(n);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_795_665_132;

    fn user(u: &str) -> Identity {
        Identity {
            user: Some(u.into()),
            feature: Some("agent".into()),
            ..Identity::default()
        }
    }

    #[test]
    fn top_spenders_today() {
        let idx = SpendIndex::default();
        idx.record(T, &user("a"), 100);
        idx.record(T, &user("b"), 300);
        idx.record(T, &user("a"), 50);
        let top = idx.top("user", 10);
        assert_eq!(top[0].value, "b");
        assert_eq!(top[1].spent_usd, nanos_to_usd(150));
        idx.record(T + 86_400, &user("c"), 1);
        assert_eq!(idx.top("user", 10).len(), 1, "a new day starts empty");
    }

    #[test]
    fn identities_past_the_cap_are_counted_together_and_idle_ones_swept() {
        let idx = SpendIndex::default();
        idx.set_max_entries(10);
        for i in 0..1000 {
            idx.record(T, &user(&format!("u{i}")), 1);
        }
        let top = idx.top("user", 100);
        assert_eq!(top[0].value, OVERFLOW, "the flood is one spender");
        assert!(top.len() <= 10, "{} user totals", top.len());
        {
            let s = idx.state.lock().expect("lock");
            assert!(s.totals.len() <= 11 && s.rates.len() <= 11);
        }
        // A known identity keeps its own entry.
        idx.record(T, &user("u0"), 5);
        assert!(idx.top("user", 100).iter().any(|s| s.value == "u0"));
        assert!(idx.sweep(T + 60) > 0);
        assert_eq!(idx.sweep(T + RATE_IDLE + 86_400), 0, "a day later: empty");
    }

    #[test]
    fn a_runaway_loop_is_flagged_and_steady_spend_is_not() {
        let idx = SpendIndex::default();
        // An hour of steady spend: $0.01 a minute.
        for m in 0..60 {
            assert!(idx
                .record(T + m * 60, &user("steady"), 10_000_000)
                .is_empty());
            assert!(idx.record(T + m * 60, &user("loop"), 10_000_000).is_empty());
        }
        // Then one of them spends $1 every 10 seconds.
        let mut flagged = Vec::new();
        for k in 1..=30 {
            flagged.extend(idx.record(T + 3600 + k * 10, &user("loop"), 1_000_000_000));
            assert!(idx
                .record(T + 3600 + k * 10, &user("steady"), 1_500_000)
                .is_empty());
        }
        assert!(
            flagged
                .iter()
                .any(|a| a.dimension == "user" && a.value == "loop"),
            "{flagged:?}"
        );
        assert_eq!(
            flagged.iter().filter(|a| a.dimension == "user").count(),
            1,
            "flagged once, not every request"
        );
    }
}
