//! Keeping requests alive through provider failures: per-deployment state
//! (circuit breaker, retry budget, load stats), load balancing, backoff and
//! the classification of attempt outcomes. Times are on tokio's clock
//! (`tokio::time::Instant`: the system's, unless a test pauses it), so the
//! attempt loop's tests can step through breaker cool-downs and budgets.

pub mod balance;
pub mod breaker;
pub mod counts;
pub mod retry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use breaker::Breaker;
use retry::RetryBudget;

/// Live state of one configured deployment (provider + upstream model, or
/// provider + rule pattern for a glob rule that sends the requested name).
/// It outlives config snapshots: a reload keeps breakers, budgets and
/// latency stats.
#[derive(Debug)]
pub struct DeploymentState {
    pub name: String,
    pub breaker: Breaker,
    pub budget: RetryBudget,
    pub inflight: AtomicU64,
    /// Latency to response headers, EWMA, in microseconds (0 = no sample).
    pub ewma_us: AtomicU64,
    /// What `sluice_circuit_open` last showed for it: 0 nothing yet, 1
    /// closed, 2 open (or half open); the gauge is set only on a change.
    pub circuit_shown: std::sync::atomic::AtomicU8,
}

impl DeploymentState {
    fn new(name: String) -> Self {
        Self {
            name,
            breaker: Breaker::default(),
            budget: RetryBudget::default(),
            inflight: AtomicU64::new(0),
            ewma_us: AtomicU64::new(0),
            circuit_shown: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// Folds a latency sample into the EWMA (weight 0.2).
    pub fn observe_latency(&self, us: u64) {
        let old = self.ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 4 + us) / 5 };
        self.ewma_us.store(new.max(1), Ordering::Relaxed);
    }
}

/// Counts a request in flight on a deployment until dropped.
#[derive(Debug)]
pub struct InflightGuard(Arc<DeploymentState>);

impl InflightGuard {
    pub fn new(d: Arc<DeploymentState>) -> Self {
        d.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(d)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The name of a deployment's state: `provider/model`.
pub fn deployment_name(provider: &str, model: &str) -> String {
    crate::text::concat(&[provider, "/", model])
}

/// Every deployment's state, by `provider/upstream_model` (or
/// `provider/pattern`).
#[derive(Debug, Default)]
pub struct Deployments {
    /// Keyed by configured deployments only, so foldhash (every request
    /// looks one up; SipHash cost ~150 instructions of it).
    map: Mutex<HashMap<String, Arc<DeploymentState>, foldhash::fast::RandomState>>,
}

impl Deployments {
    pub fn get(&self, provider: &str, model: &str) -> Arc<DeploymentState> {
        let name = deployment_name(provider, model);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = map.get(&name) {
            return state.clone();
        }
        map.entry(name.clone())
            .or_insert_with(|| Arc::new(DeploymentState::new(name)))
            .clone()
    }

    /// Number of deployments with state (bounded by the configured
    /// deployments: see `Route::candidates`).
    pub fn entries(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Drops the state of deployments no longer configured (after a reload)
    /// unless requests are in flight on them; returns how many are left.
    pub fn retain(&self, configured: &std::collections::HashSet<String>) -> usize {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|name, d| configured.contains(name) || d.inflight.load(Ordering::Relaxed) > 0);
        map.len()
    }

    pub fn find(&self, name: &str) -> Option<Arc<DeploymentState>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(name).cloned()
    }

    /// State of every deployment seen so far, for the admin API.
    pub fn report(&self, cfg: &crate::config::BreakerConfig) -> Vec<DeploymentReport> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = map
            .values()
            .map(|d| DeploymentReport {
                deployment: d.name.clone(),
                circuit: d.breaker.state(cfg),
                inflight: d.inflight.load(Ordering::Relaxed),
                latency_ewma_ms: d.ewma_us.load(Ordering::Relaxed) as f64 / 1000.0,
            })
            .collect();
        out.sort_by(|a, b| a.deployment.cmp(&b.deployment));
        out
    }
}

/// One deployment's state, for the admin API.
#[derive(Debug, Serialize)]
pub struct DeploymentReport {
    pub deployment: String,
    pub circuit: &'static str,
    pub inflight: u64,
    pub latency_ewma_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_state_per_name() {
        let d = Deployments::default();
        let long = "m".repeat(300);
        for (provider, model) in [("p", "gpt-4o"), ("p", long.as_str()), ("é", "ü*")] {
            let a = d.get(provider, model);
            let b = d.get(provider, model);
            assert!(Arc::ptr_eq(&a, &b));
            assert_eq!(a.name, format!("{provider}/{model}"));
        }
        assert_eq!(d.entries(), 3);
    }

    #[test]
    fn retain_drops_unconfigured_idle_deployments() {
        let reg = Deployments::default();
        let _kept = reg.get("p", "*");
        let busy = InflightGuard::new(reg.get("p", "old-busy"));
        let _ = reg.get("p", "old-idle");
        let configured = ["p/*".to_owned()].into_iter().collect();
        assert_eq!(reg.retain(&configured), 2, "the busy one stays for now");
        assert!(reg.find("p/old-idle").is_none());
        drop(busy);
        assert_eq!(reg.retain(&configured), 1);
        assert!(reg.find("p/*").is_some());
    }
}
