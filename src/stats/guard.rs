//! Guards for automatic rollback: a candidate is rolled back when it is
//! worse than a threshold *by the sequential test* (the always-valid
//! interval clears the threshold), never on a point estimate, and never
//! before both arms have `min_samples` requests.

use serde::Serialize;

use super::arm::ArmStats;
use super::sequential::{Evidence, Metric, TestConfig};

/// Thresholds past which a candidate is rolled back; `None` turns a guard off.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GuardConfig {
    /// The candidate's error rate must stay below this (0.05: 5 %).
    pub max_error_rate: Option<f64>,
    /// The candidate's error rate may exceed the control's by at most this
    /// many (absolute: 0.02 is 2 points; 0.0: not at all).
    pub max_error_rate_increase: Option<f64>,
    /// The candidate's p95 latency may be at most this multiple of the
    /// control's (1.5: 50 % slower).
    pub max_p95_latency_ratio: Option<f64>,
    /// The candidate's mean cost per request may be at most this multiple
    /// of the control's (1.2: 20 % dearer).
    pub max_cost_ratio: Option<f64>,
    /// α, τ² and the minimum sample (`min_samples` per arm).
    pub test: TestConfig,
}

/// Which guard fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    ErrorRate,
    ErrorRateIncrease,
    LatencyP95,
    Cost,
}

/// A breached guard and the sentence the admin view shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breach {
    pub guard: Guard,
    pub reason: String,
}

/// Every guard the candidate breaches (empty: none). Each guard asks its
/// own always-valid question at the configured α:
///
/// - error rate: is the candidate's rate above the cap? (one arm against a
///   number);
/// - error-rate increase: is candidate − control above the allowed increase?
/// - cost: is the candidate's mean above `ratio` × the control's? (tests
///   μ_candidate − ratio · μ_control > 0, so no ratio of estimates is needed);
/// - p95 latency: the sketch's p95 ratio is above the limit *and* the
///   candidate is slower by the test on mean log latency. A p95 has no
///   sequential test here, so the test supplies "worse" and the p95 "by how
///   much"; a shift of the whole distribution and a fattened tail both move
///   the mean log latency, and the test keeps noise in two p95 estimates from
///   firing the guard on its own.
pub fn check_guards(control: &ArmStats, candidate: &ArmStats, cfg: &GuardConfig) -> Vec<Breach> {
    if control.requests().min(candidate.requests()) < cfg.test.min_samples.max(2) {
        return Vec::new();
    }
    let arms = Arms {
        control,
        candidate,
        test: &cfg.test,
    };
    [
        cfg.max_error_rate.and_then(|cap| arms.error_rate(cap)),
        cfg.max_error_rate_increase
            .and_then(|allowed| arms.error_rate_increase(allowed)),
        cfg.max_p95_latency_ratio
            .and_then(|limit| arms.latency(limit)),
        cfg.max_cost_ratio.and_then(|limit| arms.cost(limit)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The two arms and the test settings, for the guards' questions.
struct Arms<'a> {
    control: &'a ArmStats,
    candidate: &'a ArmStats,
    test: &'a TestConfig,
}

impl Arms<'_> {
    /// The interval's lower end for `e`, if it clears `threshold`.
    fn clears(&self, e: Option<Evidence>, threshold: f64) -> Option<f64> {
        e.map(|e| e.lower(self.test.alpha))
            .filter(|low| *low > threshold)
    }

    /// "95 % always-valid", and the arms' sizes, for the reasons.
    fn level(&self) -> String {
        format!("{:.0} % always-valid", 100.0 * (1.0 - self.test.alpha))
    }

    fn sizes(&self) -> String {
        format!(
            "n = {} vs {}",
            self.candidate.requests(),
            self.control.requests()
        )
    }

    fn error_rate(&self, cap: f64) -> Option<Breach> {
        let errors = self.candidate.sample(Metric::ErrorRate);
        let low = self.clears(Evidence::against(errors, cap, self.test.tau2), 0.0)?;
        Some(Breach {
            guard: Guard::ErrorRate,
            reason: format!(
                "error rate {} % is above the {} % cap ({} lower bound {} %; {})",
                points(errors.mean),
                points(cap),
                self.level(),
                points(cap + low),
                self.sizes(),
            ),
        })
    }

    fn error_rate_increase(&self, allowed: f64) -> Option<Breach> {
        let control = self.control.sample(Metric::ErrorRate);
        let errors = self.candidate.sample(Metric::ErrorRate);
        let e = Evidence::contrast(control, errors, 1.0, self.test.tau2);
        let low = self.clears(e, allowed)?;
        Some(Breach {
            guard: Guard::ErrorRateIncrease,
            reason: format!(
                "error rate {} % against the control's {} %: more than {} points higher \
                 ({} lower bound +{} points; {})",
                points(errors.mean),
                points(control.mean),
                points(allowed),
                self.level(),
                points(low),
                self.sizes(),
            ),
        })
    }

    fn latency(&self, limit: f64) -> Option<Breach> {
        let base = self.control.latency_quantile(0.95).filter(|ms| *ms > 0.0)?;
        let p95 = self.candidate.latency_quantile(0.95)?;
        if p95 / base <= limit {
            return None;
        }
        let e = Evidence::contrast(
            self.control.sample(Metric::LogLatency),
            self.candidate.sample(Metric::LogLatency),
            1.0,
            self.test.tau2,
        );
        let low = self.clears(e, 0.0)?;
        Some(Breach {
            guard: Guard::LatencyP95,
            reason: format!(
                "p95 latency {p95:.0} ms is ×{:.2} the control's {base:.0} ms, above ×{limit}, \
                 and the candidate is slower ({}: typical latency at least ×{:.3}; {})",
                p95 / base,
                self.level(),
                low.exp(),
                self.sizes(),
            ),
        })
    }

    /// Skipped while the control costs nothing: no ratio of zero means anything.
    fn cost(&self, limit: f64) -> Option<Breach> {
        let control = self.control.sample(Metric::CostUsd);
        let cost = self.candidate.sample(Metric::CostUsd);
        if control.mean <= 0.0 {
            return None;
        }
        self.clears(
            Evidence::contrast(control, cost, limit, self.test.tau2),
            0.0,
        )?;
        Some(Breach {
            guard: Guard::Cost,
            reason: format!(
                "cost per request ${:.6} is ×{:.2} the control's ${:.6}, above ×{limit} \
                 ({}; {})",
                cost.mean,
                cost.mean / control.mean,
                control.mean,
                self.level(),
                self.sizes(),
            ),
        })
    }
}

/// A rate in percent (or percentage points), two decimals.
fn points(rate: f64) -> String {
    format!("{:.2}", 100.0 * rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Observation;

    /// An arm of `n` requests: every `error_every`-th fails (0: none),
    /// latencies cycle through `latencies`, each costs `cost` nano-dollars
    /// plus a deterministic spread of ±50 %.
    fn arm(n: u64, error_every: u64, latencies: &[f64], cost: u64) -> ArmStats {
        let mut a = ArmStats::new();
        for i in 0..n {
            a.record(&Observation {
                error: error_every > 0 && i % error_every == 0,
                latency_ms: latencies[i as usize % latencies.len()],
                cost_nanodollars: cost / 2 + (i * 7919 % 101) * cost / 100,
                ..Observation::default()
            });
        }
        a
    }

    const LATENCIES: [f64; 10] = [
        80.0, 90.0, 100.0, 110.0, 120.0, 130.0, 150.0, 180.0, 250.0, 400.0,
    ];

    fn all_guards() -> GuardConfig {
        GuardConfig {
            max_error_rate: Some(0.05),
            max_error_rate_increase: Some(0.02),
            max_p95_latency_ratio: Some(1.5),
            max_cost_ratio: Some(1.2),
            test: TestConfig::default(),
        }
    }

    #[test]
    fn a_healthy_candidate_breaches_nothing() {
        let control = arm(5000, 50, &LATENCIES, 1_000_000);
        let candidate = arm(5000, 50, &LATENCIES, 1_000_000);
        assert_eq!(
            check_guards(&control, &candidate, &all_guards()),
            Vec::new()
        );
    }

    #[test]
    fn each_guard_fires_when_breached() {
        let cfg = all_guards();
        let control = arm(3000, 50, &LATENCIES, 1_000_000);

        // 20 % errors against a 5 % cap and a 2 % control.
        let breaches = check_guards(&control, &arm(3000, 5, &LATENCIES, 1_000_000), &cfg);
        let kinds: Vec<Guard> = breaches.iter().map(|b| b.guard).collect();
        assert_eq!(
            kinds,
            [Guard::ErrorRate, Guard::ErrorRateIncrease],
            "{breaches:?}"
        );
        assert!(breaches[0]
            .reason
            .contains("error rate 20.00 % is above the 5.00 % cap"));

        // Twice as slow everywhere.
        let slow: Vec<f64> = LATENCIES.iter().map(|ms| ms * 2.0).collect();
        let breaches = check_guards(&control, &arm(3000, 50, &slow, 1_000_000), &cfg);
        assert_eq!(breaches.len(), 1, "{breaches:?}");
        assert_eq!(breaches[0].guard, Guard::LatencyP95);
        assert!(
            breaches[0].reason.contains("×2.0"),
            "{}",
            breaches[0].reason
        );

        // 50 % dearer.
        let breaches = check_guards(&control, &arm(3000, 50, &LATENCIES, 1_500_000), &cfg);
        assert_eq!(breaches.len(), 1, "{breaches:?}");
        assert_eq!(breaches[0].guard, Guard::Cost);
        assert!(
            breaches[0].reason.contains("×1.50"),
            "{}",
            breaches[0].reason
        );
    }

    #[test]
    fn never_below_the_minimum_sample() {
        let cfg = all_guards();
        let slow: Vec<f64> = LATENCIES.iter().map(|ms| ms * 10.0).collect();
        let control = arm(5000, 0, &LATENCIES, 1_000_000);
        // Every request fails, ten times slower, ten times dearer: 199 < 200.
        let awful = arm(199, 1, &slow, 10_000_000);
        assert_eq!(check_guards(&control, &awful, &cfg), Vec::new());
        assert_eq!(check_guards(&awful, &control, &cfg), Vec::new());
        // At 200 it fires.
        let awful = arm(200, 1, &slow, 10_000_000);
        assert_eq!(check_guards(&control, &awful, &cfg).len(), 4);
    }

    #[test]
    fn a_point_estimate_over_the_threshold_is_not_enough() {
        // 6 % errors in 300 requests against a 5 % cap: above it, but well
        // inside the noise.
        let cfg = GuardConfig {
            max_error_rate: Some(0.05),
            ..GuardConfig::default()
        };
        let control = arm(300, 0, &LATENCIES, 1_000_000);
        let mut candidate = ArmStats::new();
        for i in 0..300 {
            candidate.record(&Observation {
                error: i % 50 < 3,
                ..Observation::default()
            });
        }
        assert!(candidate.sample(Metric::ErrorRate).mean > 0.05);
        assert_eq!(check_guards(&control, &candidate, &cfg), Vec::new());
    }
}
