//! One arm's running sample: what each finished request adds, and the
//! snapshot the admin view shows.

use serde::Serialize;
use sketches_ddsketch::{Config as SketchConfig, DDSketch};

use super::moments::Moments;
use super::sequential::{Metric, Sample};

/// What one finished request contributes to its arm.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observation {
    /// A 5xx, a timeout or a broken stream.
    pub error: bool,
    /// Whole-request latency in milliseconds (a timeout counts its full time).
    pub latency_ms: f64,
    /// Time to first token in milliseconds, for streams that produced one.
    pub ttft_ms: Option<f64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// What the request cost, in nano-dollars (1e-9 USD), as the ledger has it.
    pub cost_nanodollars: u64,
    pub cache_hit: bool,
}

/// Latencies below this many milliseconds are counted as this many (ln 0
/// is −∞ in the log-latency mean).
const MIN_LATENCY_MS: f64 = 0.01;

/// The sketch's own zero threshold, below the floor above so that no
/// latency lands in its "zero" bucket.
const SKETCH_MIN_VALUE_MS: f64 = 0.001;

/// Relative accuracy of the latency quantiles: a reported p95 is within
/// 1 % of a latency actually observed at that rank.
const SKETCH_RELATIVE_ACCURACY: f64 = 0.01;

/// The sketch's bin bound: bins are allocated only between the smallest and
/// largest latency seen, and 2048 bins at 1 % span 41 e-folds (γ = 1.0202,
/// 2048 · ln γ ≈ 41: 0.01 ms to ~6e15 ms), so no real latency collapses a
/// bin and memory stays under 16 KiB however long the experiment runs.
const SKETCH_MAX_BINS: u32 = 2048;

/// One arm's running sample, in constant memory. Plain fields: the caller
/// keeps one behind a lock per arm; `record` is a handful of additions, two
/// logarithms and one sketch-bin increment.
#[derive(Clone)]
pub struct ArmStats {
    requests: u64,
    errors: u64,
    cache_hits: u64,
    latency_ms: Moments,
    /// Mean of ln(latency): its difference between arms is the log of the
    /// ratio of geometric means, the comparable summary of a skewed latency.
    log_latency: Moments,
    latency_sketch: DDSketch,
    ttft_ms: Moments,
    input_tokens: Moments,
    output_tokens: Moments,
    cost_usd: Moments,
    cost_nanodollars_total: u64,
}

impl std::fmt::Debug for ArmStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // DDSketch has no Debug; the snapshot says everything worth seeing.
        f.debug_tuple("ArmStats").field(&self.snapshot()).finish()
    }
}

impl Default for ArmStats {
    fn default() -> Self {
        ArmStats {
            requests: 0,
            errors: 0,
            cache_hits: 0,
            latency_ms: Moments::default(),
            log_latency: Moments::default(),
            latency_sketch: DDSketch::new(SketchConfig::new(
                SKETCH_RELATIVE_ACCURACY,
                SKETCH_MAX_BINS,
                SKETCH_MIN_VALUE_MS,
            )),
            ttft_ms: Moments::default(),
            input_tokens: Moments::default(),
            output_tokens: Moments::default(),
            cost_usd: Moments::default(),
            cost_nanodollars_total: 0,
        }
    }
}

impl ArmStats {
    /// An empty arm.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one finished request. Every request counts in every metric,
    /// errors included: an error's latency and (usually zero) cost are part
    /// of what the arm does.
    pub fn record(&mut self, o: &Observation) {
        self.requests += 1;
        self.errors += u64::from(o.error);
        self.cache_hits += u64::from(o.cache_hit);
        if o.latency_ms.is_finite() {
            let ms = o.latency_ms.max(MIN_LATENCY_MS);
            self.latency_ms.push(ms);
            self.log_latency.push(ms.ln());
            self.latency_sketch.add(ms);
        }
        if let Some(t) = o.ttft_ms {
            self.ttft_ms.push(t);
        }
        self.input_tokens.push(o.input_tokens as f64);
        self.output_tokens.push(o.output_tokens as f64);
        self.cost_usd.push(o.cost_nanodollars as f64 / 1e9);
        self.cost_nanodollars_total = self
            .cost_nanodollars_total
            .saturating_add(o.cost_nanodollars);
    }

    /// Requests recorded.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Of which errors.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// A latency quantile in ms (`q` in [0, 1]) from the sketch, once there
    /// is a latency.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        self.latency_sketch.quantile(q).ok().flatten()
    }

    /// What the sequential test needs about `metric` in this arm.
    pub fn sample(&self, metric: Metric) -> Sample {
        match metric {
            Metric::ErrorRate => Sample::rate(self.errors, self.requests),
            Metric::LatencyMs => Sample::from_moments(&self.latency_ms),
            Metric::LogLatency => Sample::from_moments(&self.log_latency),
            Metric::TtftMs => Sample::from_moments(&self.ttft_ms),
            Metric::CostUsd => Sample::from_moments(&self.cost_usd),
        }
    }

    /// The arm's numbers for the admin view.
    pub fn snapshot(&self) -> ArmSnapshot {
        let share = |k: u64| (self.requests > 0).then(|| k as f64 / self.requests as f64);
        ArmSnapshot {
            requests: self.requests,
            errors: self.errors,
            error_rate: share(self.errors),
            cache_hit_rate: share(self.cache_hits),
            latency_ms: LatencySummary {
                mean: self.latency_ms.mean(),
                sd: self.latency_ms.sd(),
                p50: self.latency_quantile(0.5),
                p95: self.latency_quantile(0.95),
            },
            ttft_ms: Summary::of(&self.ttft_ms),
            input_tokens: Summary::of(&self.input_tokens),
            output_tokens: Summary::of(&self.output_tokens),
            cost_usd: Summary::of(&self.cost_usd),
            cost_usd_total: self.cost_nanodollars_total as f64 / 1e9,
        }
    }
}

/// An arm as the admin endpoint shows it (absent numbers are `null`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmSnapshot {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: Option<f64>,
    pub cache_hit_rate: Option<f64>,
    pub latency_ms: LatencySummary,
    pub ttft_ms: Summary,
    pub input_tokens: Summary,
    /// Per request.
    pub output_tokens: Summary,
    /// Per request.
    pub cost_usd: Summary,
    pub cost_usd_total: f64,
}

/// Count, mean and standard deviation of one per-request number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub mean: Option<f64>,
    pub sd: Option<f64>,
}

impl Summary {
    fn of(m: &Moments) -> Summary {
        Summary {
            count: m.count(),
            mean: m.mean(),
            sd: m.sd(),
        }
    }
}

/// Latency mean, spread and quantiles (quantiles within 1 %, from the sketch).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub mean: Option<f64>,
    pub sd: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(latency_ms: f64) -> Observation {
        Observation {
            latency_ms,
            ..Observation::default()
        }
    }

    #[test]
    fn quantiles_within_one_percent() {
        // Latencies 1..=1000 ms: the exact p50 and p95 by rank are 500 and
        // 950 (DDSketch takes rank ⌊q·(n−1)⌋: 499 and 949, zero-based).
        let mut arm = ArmStats::new();
        for ms in 1..=1000 {
            arm.record(&request(ms as f64));
        }
        let p50 = arm.latency_quantile(0.5).expect("p50");
        let p95 = arm.latency_quantile(0.95).expect("p95");
        assert!((p50 / 500.0 - 1.0).abs() <= 0.01, "p50 {p50}");
        assert!((p95 / 950.0 - 1.0).abs() <= 0.01, "p95 {p95}");
    }

    #[test]
    fn snapshot_json() {
        let mut arm = ArmStats::new();
        arm.record(&Observation {
            error: true,
            latency_ms: 100.0,
            ttft_ms: None,
            input_tokens: 10,
            output_tokens: 0,
            cost_nanodollars: 0,
            cache_hit: false,
        });
        arm.record(&Observation {
            error: false,
            latency_ms: 300.0,
            ttft_ms: Some(40.0),
            input_tokens: 30,
            output_tokens: 20,
            cost_nanodollars: 2_500_000,
            cache_hit: true,
        });
        let json = serde_json::to_value(arm.snapshot()).expect("serialises");
        assert_eq!(json["requests"], 2);
        assert_eq!(json["errors"], 1);
        assert_eq!(json["error_rate"], 0.5);
        assert_eq!(json["cache_hit_rate"], 0.5);
        assert_eq!(json["latency_ms"]["mean"], 200.0);
        assert_eq!(json["ttft_ms"]["count"], 1);
        assert_eq!(json["ttft_ms"]["sd"], serde_json::Value::Null);
        assert_eq!(json["input_tokens"]["mean"], 20.0);
        assert_eq!(json["cost_usd"]["mean"], 0.00125);
        assert_eq!(json["cost_usd_total"], 0.0025);
        // DDSketch's quantile is the value at rank ⌊q·(n−1)⌋: of two
        // requests, p95 is the faster one and the slower is only the max.
        let p95 = json["latency_ms"]["p95"].as_f64().expect("p95");
        assert!((p95 / 100.0 - 1.0).abs() <= 0.01, "{p95}");
    }

    #[test]
    fn empty_arm_shows_nulls() {
        let json = serde_json::to_value(ArmStats::new().snapshot()).expect("serialises");
        assert_eq!(json["error_rate"], serde_json::Value::Null);
        assert_eq!(json["latency_ms"]["p95"], serde_json::Value::Null);
    }

    #[test]
    fn zero_and_nan_latency_do_not_poison() {
        let mut arm = ArmStats::new();
        arm.record(&request(0.0));
        arm.record(&request(f64::NAN));
        assert_eq!(arm.requests(), 2);
        assert!(arm.sample(Metric::LogLatency).mean.is_finite());
    }
}
