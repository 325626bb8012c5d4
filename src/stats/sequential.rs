//! The mixture sequential probability ratio test (mSPRT) of Johari, Pekelis
//! & Walsh ("Always valid inference: continuous monitoring of A/B tests",
//! Operations Research 2022), normal mixture, for a difference of means.
//!
//! The test works on an estimate `d` of an effect θ (candidate minus
//! control) whose variance `s²` is known from the samples: `d ~ N(θ, s²)`
//! with `s² = σ²_control/n_control + σ²_candidate/n_candidate`. Mixing the
//! likelihood ratio of θ against θ₀ over a prior θ ~ N(θ₀, τ²) gives
//!
//! ```text
//! Λ(θ₀) = sqrt(s² / (s² + τ²)) · exp( τ² (d − θ₀)² / (2 s² (s² + τ²)) )
//! ```
//!
//! which, with n per arm and `s² = V/n`, is JPW's
//! `sqrt(V/(V+nτ²)) · exp(n²τ²(d−θ₀)² / (2V(V+nτ²)))`. Under θ = θ₀ it is a
//! nonnegative martingale in the information `1/s²`, so by Ville's
//! inequality it exceeds `1/α` at *any* time with probability at most α:
//! looking after every request and stopping at the first crossing keeps the
//! false-positive rate at α. From it:
//!
//! - the always-valid p-value `min(1, 1/Λ(0))`;
//! - the always-valid confidence interval, every θ₀ with `Λ(θ₀) < 1/α`:
//!   `d ± sqrt( 2 s²(s²+τ²)/τ² · (ln(1/α) + ½ ln((s²+τ²)/s²)) )`;
//! - the decision: the interval above 0 means the candidate is worse, below
//!   0 better (every metric here is lower-is-better).
//!
//! The variances are the arms' current sample variances (plug-in, as JPW and
//! Optimizely do), and rates use the normal approximation with the
//! Agresti–Caffo rate `(x+1)/(n+2)` for the variance, so a rate of 0 early
//! on does not claim zero spread. Both are approximations at small samples,
//! which is one reason for [`TestConfig::min_samples`].
//!
//! τ² is given in units of the per-observation variance (a squared
//! standardised effect, `(θ/σ)²`): `τ²_abs = tau2 · (σ²_control +
//! σ²_candidate)/2`. For an effect θ, the τ² that crosses the boundary
//! soonest is `θ² − 2σ²/n` at the crossing `n` — a little under θ². So set
//! `tau2` near `(minimum effect / σ)²`; the default 0.01 suits effects
//! around a tenth of a standard deviation (5 % → 7 % errors is 0.02/0.22 =
//! 0.09 σ; +10 % cost per request at a coefficient of variation of 1 is
//! 0.1 σ). A τ² far from the effect still gives a valid test, only a slower
//! one.
//!
//! The martingale argument needs the arms' traffic split to be fixed; when
//! an experiment ramps (changes the split), restart its comparisons with
//! fresh [`ArmStats`](super::ArmStats) or accept an approximation.

use serde::Serialize;

use super::arm::ArmStats;
use super::moments::Moments;

/// A per-request quantity compared between arms (all lower-is-better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Share of requests that failed (5xx, timeout, broken stream).
    ErrorRate,
    /// Mean latency in ms.
    LatencyMs,
    /// Mean of ln(latency in ms): the difference is the log of the ratio of
    /// geometric means (`exp(difference)` = 1.2: 20 % slower). It is how
    /// latency distributions are compared (a p95 has no always-valid test
    /// here; the guard pairs this test with the sketch's p95).
    LogLatency,
    /// Mean time to first token in ms (streams that produced one).
    TtftMs,
    /// Mean cost per request in USD.
    CostUsd,
}

/// What the test concludes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// An arm has fewer than `min_samples` observations of the metric.
    TooFewSamples,
    /// The confidence interval still contains 0: keep going.
    NoDecisionYet,
    /// The candidate's metric is higher than the control's (always-valid).
    CandidateWorse,
    /// The candidate's metric is lower than the control's (always-valid).
    CandidateBetter,
}

/// Settings of the sequential test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestConfig {
    /// False-positive rate over the whole experiment, however often it is
    /// looked at. Default 0.05.
    pub alpha: f64,
    /// Mixture variance τ² in units of the per-observation variance (a
    /// squared standardised effect); set it near `(minimum effect / σ)²`.
    /// Default 0.01 (effects around 0.1 σ).
    pub tau2: f64,
    /// Fewer observations than this in either arm: `TooFewSamples` (the
    /// normal approximation and plug-in variances need some data). Default
    /// 200 (10 expected errors per arm at a 5 % error rate).
    pub min_samples: u64,
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig {
            alpha: 0.05,
            tau2: 0.01,
            min_samples: 200,
        }
    }
}

impl TestConfig {
    /// `min_samples`, never below 2 (a variance needs two values).
    fn min_n(&self) -> u64 {
        self.min_samples.max(2)
    }
}

/// One arm's sample of one metric: size, mean and per-observation variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub n: u64,
    pub mean: f64,
    pub variance: f64,
}

impl Sample {
    /// `events` out of `n` (errors out of requests). The mean is the
    /// observed rate; the variance is `p̃(1−p̃)` with the Agresti–Caffo
    /// `p̃ = (events+1)/(n+2)`, never 0.
    pub fn rate(events: u64, n: u64) -> Sample {
        let mean = if n == 0 {
            0.0
        } else {
            events as f64 / n as f64
        };
        let adjusted = (events as f64 + 1.0) / (n as f64 + 2.0);
        Sample {
            n,
            mean,
            variance: adjusted * (1.0 - adjusted),
        }
    }

    /// A running mean and variance (0 until there are two values).
    pub fn from_moments(m: &Moments) -> Sample {
        Sample {
            n: m.count(),
            mean: m.mean().unwrap_or(0.0),
            variance: m.variance().unwrap_or(0.0),
        }
    }
}

/// An estimate `d ~ N(θ, s²)` of an effect, with the mixture's τ².
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Evidence {
    pub estimate: f64,
    /// s², the variance of the estimate.
    pub variance: f64,
    /// τ², in the estimate's own units.
    pub tau2: f64,
}

impl Evidence {
    /// θ = μ_candidate − scale · μ_control. `scale` 1 is the plain
    /// difference; `scale` r tests a ratio: θ > 0 ⇔ μ_candidate > r·μ_control.
    pub(crate) fn contrast(
        control: Sample,
        candidate: Sample,
        scale: f64,
        tau2_std: f64,
    ) -> Option<Evidence> {
        if control.n == 0 || candidate.n == 0 {
            return None;
        }
        let v_control = scale * scale * control.variance;
        let v_candidate = candidate.variance;
        Evidence::new(
            candidate.mean - scale * control.mean,
            v_control / control.n as f64 + v_candidate / candidate.n as f64,
            tau2_std * (v_control + v_candidate) / 2.0,
        )
    }

    /// θ = μ_candidate − reference: one arm against a fixed number.
    pub(crate) fn against(candidate: Sample, reference: f64, tau2_std: f64) -> Option<Evidence> {
        if candidate.n == 0 {
            return None;
        }
        Evidence::new(
            candidate.mean - reference,
            candidate.variance / candidate.n as f64,
            tau2_std * candidate.variance,
        )
    }

    fn new(estimate: f64, variance: f64, tau2: f64) -> Option<Evidence> {
        let usable = |x: f64| x.is_finite() && x > 0.0;
        (estimate.is_finite() && usable(variance) && usable(tau2)).then_some(Evidence {
            estimate,
            variance,
            tau2,
        })
    }

    /// ln Λ(θ₀), the log mixture likelihood ratio against θ = θ₀.
    pub(crate) fn log_likelihood_ratio(&self, theta0: f64) -> f64 {
        let (s2, t2) = (self.variance, self.tau2);
        let d = self.estimate - theta0;
        0.5 * (s2 / (s2 + t2)).ln() + t2 * d * d / (2.0 * s2 * (s2 + t2))
    }

    /// The always-valid p-value for θ = θ₀ at this look.
    pub(crate) fn p_value(&self, theta0: f64) -> f64 {
        (-self.log_likelihood_ratio(theta0)).exp().min(1.0)
    }

    /// Half the width of the always-valid (1 − α) confidence interval.
    pub(crate) fn half_width(&self, alpha: f64) -> f64 {
        let (s2, t2) = (self.variance, self.tau2);
        let log_bound = (1.0 / alpha).ln() + 0.5 * ((s2 + t2) / s2).ln();
        (2.0 * s2 * (s2 + t2) / t2 * log_bound).sqrt()
    }

    /// The interval's lower end: above θ₀ means θ > θ₀ with confidence 1 − α.
    pub(crate) fn lower(&self, alpha: f64) -> f64 {
        self.estimate - self.half_width(alpha)
    }
}

/// The candidate against the control on one metric, at one look.
///
/// Intervals are always-valid at level `confidence`; an unbounded end (too
/// few samples, no spread yet) serialises as `null`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Comparison {
    pub metric: Metric,
    pub control_n: u64,
    pub candidate_n: u64,
    pub control_mean: f64,
    pub candidate_mean: f64,
    /// Candidate minus control (for `log_latency`, ln of the ratio of
    /// geometric means).
    pub difference: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// 1 − α.
    pub confidence: f64,
    /// Always-valid p-value for "no difference".
    pub p_value: f64,
    pub decision: Decision,
}

impl Comparison {
    /// Combines this look with the previous one of the same metric: the
    /// running minimum p-value and the intersection of the intervals, which
    /// are what "always valid" licenses (JPW §3). A decision, once made,
    /// then stays made. If the intervals do not meet (a probability-α
    /// event, or a changed variance estimate), this look's interval is kept.
    pub fn carry(self, previous: &Comparison) -> Comparison {
        if previous.metric != self.metric
            || previous.decision == Decision::TooFewSamples
            || self.decision == Decision::TooFewSamples
        {
            return self;
        }
        let low = self.ci_low.max(previous.ci_low);
        let high = self.ci_high.min(previous.ci_high);
        let (ci_low, ci_high) = if low <= high {
            (low, high)
        } else {
            (self.ci_low, self.ci_high)
        };
        Comparison {
            ci_low,
            ci_high,
            p_value: self.p_value.min(previous.p_value),
            decision: decide(ci_low, ci_high),
            ..self
        }
    }
}

fn decide(ci_low: f64, ci_high: f64) -> Decision {
    if ci_low > 0.0 {
        Decision::CandidateWorse
    } else if ci_high < 0.0 {
        Decision::CandidateBetter
    } else {
        Decision::NoDecisionYet
    }
}

/// Compares two arms' recorded requests on `metric`.
pub fn compare(
    metric: Metric,
    control: &ArmStats,
    candidate: &ArmStats,
    cfg: &TestConfig,
) -> Comparison {
    compare_samples(
        metric,
        control.sample(metric),
        candidate.sample(metric),
        cfg,
    )
}

/// Compares two samples (`metric` only labels the result).
pub fn compare_samples(
    metric: Metric,
    control: Sample,
    candidate: Sample,
    cfg: &TestConfig,
) -> Comparison {
    let undecided = Comparison {
        metric,
        control_n: control.n,
        candidate_n: candidate.n,
        control_mean: control.mean,
        candidate_mean: candidate.mean,
        difference: candidate.mean - control.mean,
        ci_low: f64::NEG_INFINITY,
        ci_high: f64::INFINITY,
        confidence: 1.0 - cfg.alpha,
        p_value: 1.0,
        decision: Decision::TooFewSamples,
    };
    if control.n.min(candidate.n) < cfg.min_n() {
        return undecided;
    }
    let Some(e) = Evidence::contrast(control, candidate, 1.0, cfg.tau2) else {
        // No spread in either arm yet: nothing to scale a difference by.
        return Comparison {
            decision: Decision::NoDecisionYet,
            ..undecided
        };
    };
    let half = e.half_width(cfg.alpha);
    let (ci_low, ci_high) = (e.estimate - half, e.estimate + half);
    Comparison {
        ci_low,
        ci_high,
        p_value: e.p_value(0.0),
        decision: decide(ci_low, ci_high),
        ..undecided
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, tol: f64) -> bool {
        (got - want).abs() <= tol * want.abs().max(1.0)
    }

    #[test]
    fn rate_matches_reference() {
        // scripts/stats_reference.py, "error rate": JPW's equal-n formula
        // with V = Σ p̃(1−p̃), p̃ = (x+1)/(n+2); interval by bisection on Λ.
        let c = compare_samples(
            Metric::ErrorRate,
            Sample::rate(60, 1000),
            Sample::rate(90, 1000),
            &TestConfig::default(),
        );
        assert!(close(c.difference, 0.03, 1e-12));
        assert!(close(c.p_value, 0.16735667185463474, 1e-12), "{c:?}");
        assert!(close(c.ci_low, -0.006127224485510539, 1e-12), "{c:?}");
        assert!(close(c.ci_high, 0.06612722448551053, 1e-12), "{c:?}");
        // A fixed-horizon z-test would call this (z ≈ 2.5); the sequential
        // test pays for peeking with a wider interval.
        assert_eq!(c.decision, Decision::NoDecisionYet);
    }

    #[test]
    fn unequal_arms_match_numeric_mixture() {
        // scripts/stats_reference.py, "mean, unequal arms": Λ by integrating
        // the likelihood ratio over the N(0, τ²) mixture numerically
        // (trapezoid, 200,001 points), the interval by bisection on that
        // numeric Λ (20,001 points), not from the closed forms.
        let control = Sample {
            n: 400,
            mean: 1.0,
            variance: 0.25,
        };
        let candidate = Sample {
            n: 100,
            mean: 1.2,
            variance: 0.36,
        };
        let cfg = TestConfig {
            min_samples: 100,
            ..TestConfig::default()
        };
        let c = compare_samples(Metric::CostUsd, control, candidate, &cfg);
        assert!(close(c.p_value, 0.1803466149662849, 1e-9), "{c:?}");
        assert!(close(c.ci_low, -0.056625049814041345, 1e-7), "{c:?}");
        assert!(close(c.ci_high, 0.4566250498140415, 1e-7), "{c:?}");
    }

    #[test]
    fn decides_both_ways_and_agrees_with_the_p_value() {
        let cfg = TestConfig::default();
        let low = Sample::rate(50, 2000);
        let high = Sample::rate(150, 2000);
        let worse = compare_samples(Metric::ErrorRate, low, high, &cfg);
        assert_eq!(worse.decision, Decision::CandidateWorse);
        assert!(worse.p_value <= cfg.alpha);
        let better = compare_samples(Metric::ErrorRate, high, low, &cfg);
        assert_eq!(better.decision, Decision::CandidateBetter);
        assert!(close(better.ci_low, -worse.ci_high, 1e-12));

        // Over a grid: p ≤ α exactly when the interval excludes 0.
        for x in (0..200).step_by(7) {
            let c = compare_samples(
                Metric::ErrorRate,
                Sample::rate(100, 2000),
                Sample::rate(x, 2000),
                &cfg,
            );
            let decided = c.decision != Decision::NoDecisionYet;
            assert_eq!(decided, c.p_value <= cfg.alpha, "{c:?}");
        }
    }

    #[test]
    fn too_few_samples_and_no_spread() {
        let cfg = TestConfig::default();
        let c = compare_samples(
            Metric::ErrorRate,
            Sample::rate(0, 199),
            Sample::rate(199, 199),
            &cfg,
        );
        assert_eq!(c.decision, Decision::TooFewSamples);
        assert_eq!(c.p_value, 1.0);
        let flat = Sample {
            n: 500,
            mean: 1.0,
            variance: 0.0,
        };
        let c = compare_samples(Metric::CostUsd, flat, flat, &cfg);
        assert_eq!(c.decision, Decision::NoDecisionYet);
        let json = serde_json::to_value(c).expect("serialises");
        assert_eq!(json["ci_low"], serde_json::Value::Null);
        assert_eq!(json["decision"], "no_decision_yet");
        assert_eq!(json["metric"], "cost_usd");
    }

    #[test]
    fn carry_keeps_the_running_minimum_and_intersection() {
        let cfg = TestConfig::default();
        let first = compare_samples(
            Metric::ErrorRate,
            Sample::rate(10, 500),
            Sample::rate(40, 500),
            &cfg,
        );
        assert_eq!(first.decision, Decision::CandidateWorse);
        // The same experiment later: the difference has shrunk back to
        // where this look alone cannot tell.
        let later = compare_samples(
            Metric::ErrorRate,
            Sample::rate(25, 1000),
            Sample::rate(50, 1000),
            &cfg,
        );
        assert_eq!(later.decision, Decision::NoDecisionYet);
        let carried = later.carry(&first);
        assert_eq!(carried.p_value, first.p_value);
        assert_eq!(carried.ci_low, first.ci_low);
        assert_eq!(carried.ci_high, later.ci_high);
        assert_eq!(carried.decision, Decision::CandidateWorse);

        // Intervals that do not meet: this look's stands.
        let apart = compare_samples(
            Metric::ErrorRate,
            Sample::rate(160, 4000),
            Sample::rate(150, 4000),
            &cfg,
        );
        assert!(apart.ci_high < first.ci_low);
        let carried = apart.carry(&first);
        assert_eq!(
            (carried.ci_low, carried.ci_high),
            (apart.ci_low, apart.ci_high)
        );
        assert_eq!(carried.decision, Decision::NoDecisionYet);
    }
}
