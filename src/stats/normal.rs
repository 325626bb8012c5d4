//! The standard normal quantile function, for sample-size estimates.

/// The standard normal quantile (inverse CDF) at probability `p`, by Peter
/// Acklam's rational approximation (relative error below 1.15e-9 over
/// (0, 1); the coefficients are Acklam's published ones). Returns −∞/+∞ at
/// 0 and 1, NaN outside [0, 1].
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.38357751867269e+02,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    const P_LOW: f64 = 0.02425;

    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    // The tails use q = sqrt(−2 ln p); the centre a ratio in (p − ½)².
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python_normal_dist() {
        // scripts/stats_reference.py, "normal quantiles":
        // statistics.NormalDist().inv_cdf(p), which is exact to ~1e-16.
        let cases = [
            (1e-6, -4.753424308822899),
            (0.001, -3.090232306167813),
            (0.02425, -1.9729610513118845),
            (0.05, -1.6448536269514726),
            (0.2, -0.8416212335729142),
            (0.5, 0.0),
            (0.8, 0.8416212335729144),
            (0.975, 1.9599639845400536),
            (0.999, 3.090232306167813),
        ];
        for (p, want) in cases {
            let got = inverse_normal_cdf(p);
            // Acklam's bound is 1.15e-9 relative; a little slack for rounding.
            assert!(
                (got - want).abs() <= 2e-9 * want.abs().max(1e-9),
                "p={p}: got {got}, want {want}"
            );
        }
    }

    #[test]
    fn edges() {
        assert_eq!(inverse_normal_cdf(0.0), f64::NEG_INFINITY);
        assert_eq!(inverse_normal_cdf(1.0), f64::INFINITY);
        assert!(inverse_normal_cdf(1.5).is_nan());
        assert!(inverse_normal_cdf(f64::NAN).is_nan());
    }
}
