//! "Can we decide yet?": how many more requests per arm before an effect of
//! a given size would be detected by the sequential test.
//!
//! The estimate: the smallest candidate count `n` (the control growing in
//! the arms' current ratio) at which the boundary `Λ ≥ 1/α` is crossed when
//! the observed difference is `|effect| − z_power · s(n)`, where `s(n)` is
//! the standard error at `n` and `z_power` the normal quantile at `power`.
//! The observed difference is at least that large with probability about
//! `power`, so by then the test has decided with probability at least about
//! `power` (it may have crossed at an earlier look). `power` 0.5 gives the
//! sample at which the boundary is crossed when the observed difference
//! equals the effect. Variances are the arms' current estimates; for a rate,
//! the candidate's is `p(1−p)` at the control's rate plus the effect.

use serde::Serialize;

use super::normal::inverse_normal_cdf;
use super::sequential::{Evidence, Metric, Sample, TestConfig};

/// The size of effect to plan for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    /// In the metric's units: 0.02 is +2 percentage points of error rate.
    Absolute(f64),
    /// A fraction of the control's mean: 0.1 is +10 % cost per request.
    Relative(f64),
}

/// How far an experiment is from being able to detect an effect.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Plan {
    pub metric: Metric,
    /// The effect planned for, in the metric's units.
    pub effect: f64,
    pub power: f64,
    /// Requests each arm needs in all (never below `min_samples`).
    pub control_total: u64,
    pub candidate_total: u64,
    /// Requests still to come in each arm (0 once there).
    pub further_control: u64,
    pub further_candidate: u64,
}

/// Past this many requests per arm the effect is called undetectable.
const MAX_N: u64 = 1 << 40;

/// The requests each arm needs to detect `effect` on `metric` with
/// probability about `power` (0.8 is usual), at the current variance
/// estimates and traffic split (even if an arm is empty). `None` when the
/// effect is 0, there is no variance estimate yet, `power` is outside
/// (0, 1), or it would take more than 2⁴⁰ requests.
pub fn plan(
    metric: Metric,
    control: Sample,
    candidate: Sample,
    effect: Effect,
    power: f64,
    cfg: &TestConfig,
) -> Option<Plan> {
    let delta = match effect {
        Effect::Absolute(d) => d,
        Effect::Relative(r) if control.n > 0 => r * control.mean,
        Effect::Relative(_) => return None,
    };
    if !(delta.is_finite() && delta != 0.0 && power > 0.0 && power < 1.0) {
        return None;
    }
    let (v_control, v_candidate) = if metric == Metric::ErrorRate {
        let p = (control.mean + delta).clamp(0.0, 1.0);
        (control.variance, p * (1.0 - p))
    } else {
        let known = |s: Sample| (s.n >= 2 && s.variance > 0.0).then_some(s.variance);
        let vc = known(control).or(known(candidate))?;
        (vc, known(candidate).unwrap_or(vc))
    };
    // Control requests per candidate request, as the traffic is split now.
    let ratio = if control.n > 0 && candidate.n > 0 {
        control.n as f64 / candidate.n as f64
    } else {
        1.0
    };
    let z = inverse_normal_cdf(power);
    let bound = (1.0 / cfg.alpha).ln();
    let tau2 = cfg.tau2 * (v_control + v_candidate) / 2.0;
    let control_at = |n: u64| ((ratio * n as f64).round() as u64).max(1);
    let crossed = |n: u64| {
        let s2 = v_control / control_at(n) as f64 + v_candidate / n as f64;
        let d = delta.abs() - z * s2.sqrt();
        d > 0.0
            && Evidence {
                estimate: d,
                variance: s2,
                tau2,
            }
            .log_likelihood_ratio(0.0)
                >= bound
    };
    // ln Λ falls, then rises for good once the difference dominates, so the
    // first crossing is found by doubling, then bisection.
    let mut high = 1;
    while !crossed(high) {
        high *= 2;
        if high > MAX_N {
            return None;
        }
    }
    let mut low = high / 2; // not crossed (or 0)
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if crossed(mid) {
            high = mid;
        } else {
            low = mid;
        }
    }
    let min_n = cfg.min_samples;
    let candidate_total = high.max(min_n);
    let control_total = control_at(high).max(min_n);
    Some(Plan {
        metric,
        effect: delta,
        power,
        control_total,
        candidate_total,
        further_control: control_total.saturating_sub(control.n),
        further_candidate: candidate_total.saturating_sub(candidate.n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_scan_one_n_at_a_time() {
        // scripts/stats_reference.py, "further samples": the smallest n per
        // arm found by trying every n from 1 with JPW's equal-n Λ, for a
        // control at exactly 5 % (variance 0.0475) and an effect of +2 points.
        let control = Sample {
            n: 1000,
            mean: 0.05,
            variance: 0.05 * 0.95,
        };
        let candidate = Sample {
            n: 1000,
            mean: 0.05,
            variance: 0.05 * 0.95,
        };
        let cfg = TestConfig::default();
        let p = plan(
            Metric::ErrorRate,
            control,
            candidate,
            Effect::Absolute(0.02),
            0.8,
            &cfg,
        )
        .expect("plan");
        assert_eq!((p.control_total, p.candidate_total), (4347, 4347));
        assert_eq!((p.further_control, p.further_candidate), (3347, 3347));
        let p = plan(
            Metric::ErrorRate,
            control,
            candidate,
            Effect::Absolute(0.02),
            0.5,
            &cfg,
        )
        .expect("plan");
        assert_eq!(p.candidate_total, 2617);
    }

    #[test]
    fn relative_effects_and_uneven_splits() {
        let cfg = TestConfig::default();
        let control = Sample {
            n: 900,
            mean: 0.002,
            variance: 0.002 * 0.002,
        };
        let candidate = Sample {
            n: 100,
            mean: 0.002,
            variance: 0.002 * 0.002,
        };
        let even = plan(
            Metric::CostUsd,
            control,
            Sample {
                n: 900,
                ..candidate
            },
            Effect::Relative(0.1),
            0.8,
            &cfg,
        )
        .expect("plan");
        assert!((even.effect - 0.0002).abs() < 1e-15);
        let canary = plan(
            Metric::CostUsd,
            control,
            candidate,
            Effect::Relative(0.1),
            0.8,
            &cfg,
        )
        .expect("plan");
        // A 10 % canary needs fewer candidate requests than an even split
        // (the control is known better) but more in all.
        assert!(canary.candidate_total < even.candidate_total);
        assert!(
            canary.control_total + canary.candidate_total
                > even.control_total + even.candidate_total
        );
        assert_eq!(canary.control_total, canary.candidate_total * 9);
        // Bigger effects need fewer requests.
        let big = plan(
            Metric::CostUsd,
            control,
            candidate,
            Effect::Relative(0.5),
            0.8,
            &cfg,
        )
        .expect("plan");
        assert!(big.candidate_total < canary.candidate_total);
    }

    #[test]
    fn nothing_to_plan() {
        let cfg = TestConfig::default();
        let s = Sample {
            n: 500,
            mean: 1.0,
            variance: 1.0,
        };
        let empty = Sample {
            n: 0,
            mean: 0.0,
            variance: 0.0,
        };
        assert!(plan(Metric::CostUsd, s, s, Effect::Absolute(0.0), 0.8, &cfg).is_none());
        assert!(plan(Metric::CostUsd, s, s, Effect::Absolute(0.1), 1.0, &cfg).is_none());
        assert!(plan(
            Metric::CostUsd,
            empty,
            empty,
            Effect::Absolute(0.1),
            0.8,
            &cfg
        )
        .is_none());
        assert!(plan(Metric::CostUsd, empty, s, Effect::Relative(0.1), 0.8, &cfg).is_none());
        assert!(plan(Metric::CostUsd, s, s, Effect::Absolute(1e-12), 0.8, &cfg).is_none());
    }
}
