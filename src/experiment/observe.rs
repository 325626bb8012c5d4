//! What one finished request of an arm tells its statistics.

/// One finished request, as an arm's statistics count it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observation {
    /// A 5xx answer, a timeout or a broken stream (a client's own 4xx is not).
    pub error: bool,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// What the request cost, in nano-dollars (0 for a cache hit).
    pub cost_nanos: u64,
    pub cache_hit: bool,
}

/// The running sample of one arm (until the statistics module lands:
/// counts only).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ArmStats {
    pub requests: u64,
    pub errors: u64,
}

impl ArmStats {
    pub fn record(&mut self, o: &Observation) {
        self.requests += 1;
        self.errors += u64::from(o.error);
    }
}
