//! Totals per agent run (`[runs]`): requests and tokens over a run's whole
//! life, with an idle expiry. A run past a total is refused before routing
//! (429 `run_budget_exceeded`); cost per run is a `[[budgets]]` scope.
//!
//! Bounded: at most `max_entries` runs are remembered; when full, runs idle
//! past the expiry are swept, and if it is still full a new run is not
//! tracked (`sluice_runs_untracked_total`): it fails open.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashbrown::HashMap;

/// One run's totals.
#[derive(Debug, Clone, Copy)]
struct Totals {
    requests: u64,
    tokens: u64,
    last: Instant,
}

/// Why a run is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Requests(u64),
    Tokens(u64),
}

#[derive(Debug)]
pub struct RunTotals {
    runs: Mutex<HashMap<Arc<str>, Totals>>,
    max_entries: AtomicUsize,
}

impl Default for RunTotals {
    fn default() -> Self {
        Self {
            runs: Mutex::new(HashMap::new()),
            max_entries: AtomicUsize::new(crate::config::DEFAULT_MAX_BUCKETS),
        }
    }
}

impl RunTotals {
    pub fn set_max_entries(&self, n: usize) {
        self.max_entries.store(n.max(1), Ordering::Relaxed);
    }

    /// Admits one request of `run` (counting it) unless a total is spent.
    /// `None` limits are unlimited; a run idle past `idle` starts anew.
    pub fn admit(
        &self,
        run: &Arc<str>,
        now: Instant,
        max_requests: Option<u64>,
        max_tokens: Option<u64>,
        idle: Duration,
    ) -> Result<bool, Over> {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if !runs.contains_key(run) && runs.len() >= self.max_entries.load(Ordering::Relaxed) {
            runs.retain(|_, t| now.saturating_duration_since(t.last) < idle);
            if runs.len() >= self.max_entries.load(Ordering::Relaxed) {
                crate::metrics::runs_untracked();
                return Ok(false);
            }
        }
        let t = runs.entry(run.clone()).or_insert(Totals {
            requests: 0,
            tokens: 0,
            last: now,
        });
        if now.saturating_duration_since(t.last) >= idle {
            *t = Totals {
                requests: 0,
                tokens: 0,
                last: now,
            };
        }
        if let Some(max) = max_requests.filter(|m| t.requests >= *m) {
            return Err(Over::Requests(max));
        }
        if let Some(max) = max_tokens.filter(|m| t.tokens >= *m) {
            return Err(Over::Tokens(max));
        }
        t.requests += 1;
        t.last = now;
        Ok(true)
    }

    /// Adds a finished request's tokens to its run.
    pub fn add_tokens(&self, run: &str, tokens: u64) {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = runs.get_mut(run) {
            t.tokens = t.tokens.saturating_add(tokens);
        }
    }

    /// Forgets runs idle past `idle`; returns how many are left.
    pub fn sweep(&self, now: Instant, idle: Duration) -> usize {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.retain(|_, t| now.saturating_duration_since(t.last) < idle);
        runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_hold_expire_and_stay_bounded() {
        let r = RunTotals::default();
        let run: Arc<str> = "r1".into();
        let t0 = Instant::now();
        let idle = Duration::from_secs(60);
        assert_eq!(r.admit(&run, t0, Some(2), Some(100), idle), Ok(true));
        r.add_tokens("r1", 60);
        assert_eq!(r.admit(&run, t0, Some(2), Some(100), idle), Ok(true));
        assert_eq!(
            r.admit(&run, t0, Some(2), Some(100), idle),
            Err(Over::Requests(2))
        );
        r.add_tokens("r1", 60);
        assert_eq!(
            r.admit(&run, t0, None, Some(100), idle),
            Err(Over::Tokens(100))
        );
        // Idle past the expiry: a fresh run.
        let later = t0 + idle;
        assert_eq!(r.admit(&run, later, Some(2), Some(100), idle), Ok(true));
        // Bounded: a full map sweeps, then fails open.
        r.set_max_entries(1);
        let other: Arc<str> = "r2".into();
        assert_eq!(r.admit(&other, later, Some(1), None, idle), Ok(false));
        assert_eq!(r.sweep(later + idle, idle), 0);
        assert_eq!(r.admit(&other, later + idle, Some(1), None, idle), Ok(true));
    }
}
