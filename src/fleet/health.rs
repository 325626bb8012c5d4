//! Whether Redis answers: a failed or slow call marks it unavailable for
//! `PROBE_INTERVAL`, during which requests meet the `on_unavailable` policy
//! without waiting on Redis; the next success (a request's or the probe's)
//! marks it available again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::PROBE_INTERVAL;
use crate::metrics;

#[derive(Debug)]
pub struct Health {
    origin: Instant,
    /// Milliseconds since `origin` until which Redis counts as unavailable.
    down_until: AtomicU64,
    up: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Health {
    pub fn new() -> Self {
        metrics::state_up(true);
        Self {
            origin: Instant::now(),
            down_until: AtomicU64::new(0),
            up: AtomicBool::new(true),
            last_error: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether requests should ask Redis now.
    pub fn available(&self) -> bool {
        self.now_ms() >= self.down_until.load(Ordering::Relaxed)
    }

    /// A call succeeded.
    pub fn up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("redis state store reachable again");
            metrics::state_up(true);
        }
        self.down_until.store(0, Ordering::Relaxed);
    }

    /// A call failed (`op`: take, settle, ping, admin).
    pub fn down(&self, op: &'static str, why: &str) {
        let until = self.now_ms() + PROBE_INTERVAL.as_millis() as u64;
        self.down_until.store(until, Ordering::Relaxed);
        metrics::state_error(op);
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::error!(op, error = %why, "redis state store unavailable");
            metrics::state_up(false);
        }
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some(format!("{op}: {why}"));
    }

    /// Why Redis counts as unavailable (`None`: it answers).
    pub fn unavailable_because(&self) -> Option<String> {
        if self.up.load(Ordering::Relaxed) {
            return None;
        }
        let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        Some(last.clone().unwrap_or_else(|| "unreachable".into()))
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}
