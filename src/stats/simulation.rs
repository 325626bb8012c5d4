//! Simulated experiments (seeded, so every run is the same): the sequential
//! test's false-positive rate under continuous peeking, a naive fixed-horizon
//! z-test peeking the same way, and the test's power.
//!
//! A/A: both arms draw from the same distribution; each experiment looks
//! every `PEEK_EVERY` requests per arm up to `MAX_PER_ARM` (from
//! `min_samples` on) and counts as a false positive if any look decides.
//! The sequential test must stay at or below α = 0.05 plus 2.33 binomial
//! standard errors of α (a one-sided 99 % allowance for simulation noise:
//! with E experiments, sqrt(0.05 · 0.95 / E)); the naive test must be
//! clearly above α (it looks 49 times; its known rate is around 25 %).
//!
//! With these seeds (1,000 experiments each): error rate 5 % in both arms,
//! sequential 1.3 % against naive 27.3 %; exponential costs, sequential
//! 2.0 % against naive 28.9 %. The sequential rate sits below α because the
//! looks are discrete (Ville's bound is for looking after every request).
//! A/B, 5 % against 10 % errors: every experiment decides `CandidateWorse`
//! (median 530 requests per arm, at most 1,460), 84 % of them by the 844
//! that `plan` asks for at power 0.8. Each test takes under a second in a
//! debug build.

use super::moments::Moments;
use super::plan::{plan, Effect};
use super::sequential::{compare_samples, Decision, Metric, Sample, TestConfig};

const PEEK_EVERY: u64 = 100;
const MAX_PER_ARM: u64 = 5000;
/// Two-sided 5 % critical value of the normal distribution (NormalDist().inv_cdf(0.975)).
const Z_975: f64 = 1.959963984540054;

/// The highest false-positive share that is consistent with a true rate of
/// α after `experiments` trials (α + 2.33 standard errors).
fn allowance(alpha: f64, experiments: usize) -> f64 {
    alpha + 2.33 * (alpha * (1.0 - alpha) / experiments as f64).sqrt()
}

fn decided(d: Decision) -> bool {
    matches!(d, Decision::CandidateWorse | Decision::CandidateBetter)
}

/// (sequential, naive) false positives over `experiments` A/A experiments
/// on an error rate of `rate` in both arms.
fn aa_rates(experiments: usize, rate: f64, seed: u64) -> (usize, usize) {
    let cfg = TestConfig::default();
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut sequential, mut naive) = (0, 0);
    for _ in 0..experiments {
        let (mut xa, mut xb, mut n) = (0u64, 0u64, 0u64);
        let (mut seq_hit, mut naive_hit) = (false, false);
        while n < MAX_PER_ARM {
            for _ in 0..PEEK_EVERY {
                xa += u64::from(rng.f64() < rate);
                xb += u64::from(rng.f64() < rate);
            }
            n += PEEK_EVERY;
            if n < cfg.min_samples {
                continue;
            }
            let c = compare_samples(
                Metric::ErrorRate,
                Sample::rate(xa, n),
                Sample::rate(xb, n),
                &cfg,
            );
            seq_hit |= decided(c.decision);
            // The textbook pooled two-proportion z-test, as if each look
            // were the only one.
            let pooled = (xa + xb) as f64 / (2 * n) as f64;
            let se = (pooled * (1.0 - pooled) * 2.0 / n as f64).sqrt();
            naive_hit |= se > 0.0 && (c.difference / se).abs() > Z_975;
        }
        sequential += usize::from(seq_hit);
        naive += usize::from(naive_hit);
    }
    (sequential, naive)
}

/// The same for a skewed mean: exponential per-request costs (mean 1,
/// standard deviation 1) in both arms.
fn aa_means(experiments: usize, seed: u64) -> (usize, usize) {
    let cfg = TestConfig::default();
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut sequential, mut naive) = (0, 0);
    for _ in 0..experiments {
        let (mut a, mut b) = (Moments::default(), Moments::default());
        let (mut seq_hit, mut naive_hit) = (false, false);
        while a.count() < MAX_PER_ARM {
            for _ in 0..PEEK_EVERY {
                a.push(-(1.0 - rng.f64()).ln());
                b.push(-(1.0 - rng.f64()).ln());
            }
            if a.count() < cfg.min_samples {
                continue;
            }
            let (sa, sb) = (Sample::from_moments(&a), Sample::from_moments(&b));
            let c = compare_samples(Metric::CostUsd, sa, sb, &cfg);
            seq_hit |= decided(c.decision);
            let se = (sa.variance / sa.n as f64 + sb.variance / sb.n as f64).sqrt();
            naive_hit |= (c.difference / se).abs() > Z_975;
        }
        sequential += usize::from(seq_hit);
        naive += usize::from(naive_hit);
    }
    (sequential, naive)
}

#[test]
fn aa_error_rate_peeking_keeps_alpha_and_naive_does_not() {
    let experiments = 1000;
    let (sequential, naive) = aa_rates(experiments, 0.05, 0x5eed_0001);
    let alpha = TestConfig::default().alpha;
    let (seq_rate, naive_rate) = (
        sequential as f64 / experiments as f64,
        naive as f64 / experiments as f64,
    );
    assert!(
        seq_rate <= allowance(alpha, experiments),
        "sequential false positives {seq_rate} (naive {naive_rate})"
    );
    assert!(
        naive_rate > 2.0 * allowance(alpha, experiments),
        "naive false positives {naive_rate} (sequential {seq_rate})"
    );
}

#[test]
fn aa_mean_peeking_keeps_alpha_and_naive_does_not() {
    let experiments = 1000;
    let (sequential, naive) = aa_means(experiments, 0x5eed_0002);
    let alpha = TestConfig::default().alpha;
    let (seq_rate, naive_rate) = (
        sequential as f64 / experiments as f64,
        naive as f64 / experiments as f64,
    );
    assert!(
        seq_rate <= allowance(alpha, experiments),
        "sequential false positives {seq_rate} (naive {naive_rate})"
    );
    assert!(
        naive_rate > 2.0 * allowance(alpha, experiments),
        "naive false positives {naive_rate} (sequential {seq_rate})"
    );
}

#[test]
fn ab_error_rate_5_vs_10_percent_is_caught_about_when_planned() {
    // The sample plan() promises for +5 points at power 0.8, from a control
    // at exactly 5 %.
    let cfg = TestConfig::default();
    let control = Sample {
        n: 1,
        mean: 0.05,
        variance: 0.05 * 0.95,
    };
    let planned = plan(
        Metric::ErrorRate,
        control,
        control,
        Effect::Absolute(0.05),
        0.8,
        &cfg,
    )
    .expect("plan")
    .candidate_total;
    // scripts/stats_reference.py, "effect +0.05": the same, scanning n.
    assert_eq!(planned, 844);

    let experiments = 300;
    let step = 10; // finer looks, to time the decision
    let mut rng = fastrand::Rng::with_seed(0x5eed_0003);
    let (mut by_plan, mut never, mut wrong_way) = (0, 0, 0);
    let mut when = Vec::with_capacity(experiments);
    for _ in 0..experiments {
        let (mut xa, mut xb, mut n) = (0u64, 0u64, 0u64);
        let mut decided_at = None;
        while n < MAX_PER_ARM && decided_at.is_none() {
            for _ in 0..step {
                xa += u64::from(rng.f64() < 0.05);
                xb += u64::from(rng.f64() < 0.10);
            }
            n += step;
            let c = compare_samples(
                Metric::ErrorRate,
                Sample::rate(xa, n),
                Sample::rate(xb, n),
                &cfg,
            );
            match c.decision {
                Decision::CandidateWorse => decided_at = Some(n),
                Decision::CandidateBetter => {
                    wrong_way += 1;
                    decided_at = Some(n);
                }
                _ => {}
            }
        }
        match decided_at {
            Some(at) => {
                by_plan += usize::from(at <= planned);
                when.push(at);
            }
            None => never += 1,
        }
    }
    when.sort_unstable();
    let median = when.get(when.len() / 2).copied().unwrap_or(u64::MAX);
    let power = by_plan as f64 / experiments as f64;
    assert_eq!(wrong_way, 0);
    assert_eq!(never, 0, "undecided after {MAX_PER_ARM} per arm");
    // plan() says ~80 % by `planned`; allow 2.33 binomial standard errors.
    assert!(
        power >= 0.8 - 2.33 * (0.8f64 * 0.2 / experiments as f64).sqrt(),
        "decided by {planned}: {power}; median {median}"
    );
    assert!(median <= planned, "median {median}, planned {planned}");
}
