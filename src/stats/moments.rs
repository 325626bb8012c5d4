//! Running mean and variance in constant memory (Welford's update).

/// Count, mean and sum of squared deviations of a stream of numbers.
///
/// Welford's update keeps the variance accurate when the values are large
/// and close together (latencies in ms, costs), where the textbook
/// `Σx² − n·mean²` cancels catastrophically.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// Adds one value. Non-finite values are ignored: one NaN would poison
    /// the arm for the rest of the experiment.
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// How many values were added.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The mean, once there is a value.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }

    /// The sample variance (divided by n − 1), once there are two values.
    pub fn variance(&self) -> Option<f64> {
        (self.n > 1).then(|| self.m2 / (self.n - 1) as f64)
    }

    /// The sample standard deviation, once there are two values.
    pub fn sd(&self) -> Option<f64> {
        self.variance().map(f64::sqrt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python_statistics() {
        // scripts/stats_reference.py, "moments of a fixed sample":
        // statistics.fmean and statistics.variance of the same eight values.
        let mut m = Moments::default();
        for x in [12.5, 80.0, 33.25, 7.0, 150.5, 42.0, 42.0, 9.75] {
            m.push(x);
        }
        assert_eq!(m.count(), 8);
        assert!((m.mean().expect("mean") - 47.125).abs() < 1e-12);
        assert!((m.variance().expect("variance") - 2316.8571428571427).abs() < 1e-9);
    }

    #[test]
    fn empty_and_single_and_nan() {
        let mut m = Moments::default();
        assert_eq!(m.mean(), None);
        m.push(f64::NAN);
        m.push(3.0);
        assert_eq!(m.count(), 1);
        assert_eq!(m.mean(), Some(3.0));
        assert_eq!(m.variance(), None);
    }

    #[test]
    fn stable_with_a_large_offset() {
        // Values 1e9 + {4, 7, 13, 16}: the variance of {4, 7, 13, 16} is 30
        // (by hand: mean 10, squared deviations 36 + 9 + 9 + 36 = 90, / 3).
        let mut m = Moments::default();
        for x in [4.0, 7.0, 13.0, 16.0] {
            m.push(1e9 + x);
        }
        assert!((m.variance().expect("variance") - 30.0).abs() < 1e-6);
    }
}
