//! Retry decisions: which outcomes are retried, how long to wait (full
//! jitter, `Retry-After` honoured up to a bound), and a retry budget per
//! deployment so an outage does not multiply the load on it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use http::{HeaderMap, StatusCode};

use super::counts::WindowCounts;
use crate::config::RetryConfig;

/// The window over which a retry budget is computed.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// Whether an upstream status may be retried: 408, 409, 429 and the
/// transient 5xx (500, 502, 503, 504, 529). Other 4xx never are.
pub fn retryable_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        408 | 409 | 429 | 500 | 502 | 503 | 504 | 529
    )
}

/// Whether an outcome counts against a deployment's health (429 means busy,
/// not broken).
pub fn breaker_failure(status: StatusCode) -> bool {
    status.is_server_error()
}

/// The provider's requested wait: `retry-after-ms`, or `retry-after` in
/// seconds (HTTP dates are ignored).
/// A value past what a `Duration` holds (`1e300`) is a wait longer than any
/// bound; a negative or non-finite one is ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return seconds(ms / 1000.0);
    }
    seconds(get("retry-after")?.trim().parse::<f64>().ok()?)
}

/// A wait of `secs` seconds, saturating (`Duration::from_secs_f64` panics
/// past its range, and a provider's header must never panic a request).
fn seconds(secs: f64) -> Option<Duration> {
    (secs >= 0.0 && secs.is_finite())
        .then(|| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}

/// How long to wait before retry number `n` (1-based): full jitter over an
/// exponential ceiling, or the provider's `Retry-After` if it is within
/// bounds. `None`: the provider asked for longer than we will wait.
pub fn delay(
    cfg: &RetryConfig,
    n: u32,
    asked: Option<Duration>,
    unit_random: f64,
) -> Option<Duration> {
    if let Some(wait) = asked {
        return (wait <= cfg.max_retry_after).then_some(wait);
    }
    let exp = 2u32.saturating_pow(n.saturating_sub(1).min(20));
    let ceiling = cfg.base_backoff.saturating_mul(exp).min(cfg.max_backoff);
    Some(ceiling.mul_f64(unit_random.clamp(0.0, 1.0)))
}

/// Retries allowed per deployment: `ratio` of recent requests plus a floor.
#[derive(Debug, Default)]
pub struct RetryBudget {
    state: Mutex<Budget>,
}

#[derive(Debug, Default)]
struct Budget {
    /// First attempts (counted as events) and retries (counted as failures).
    counts: WindowCounts,
}

impl RetryBudget {
    /// Counts a first attempt.
    pub fn record_request(&self, now: Instant) {
        let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
        b.counts.add(now, BUDGET_WINDOW, false);
    }

    /// Takes a retry from the budget, if there is one left.
    pub fn try_retry(&self, cfg: &RetryConfig, now: Instant) -> bool {
        let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (events, retries) = b.counts.get(now, BUDGET_WINDOW);
        let requests = (events - retries) as f64;
        let floor = cfg.budget_min_per_second * BUDGET_WINDOW.as_secs_f64();
        let limit = (requests * cfg.budget_ratio + floor).floor() as u64;
        if retries >= limit {
            return false;
        }
        b.counts.add(now, BUDGET_WINDOW, true);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn statuses() {
        for s in [408, 409, 429, 500, 502, 503, 504, 529] {
            assert!(
                retryable_status(StatusCode::from_u16(s).expect("status")),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 413, 422, 501] {
            assert!(
                !retryable_status(StatusCode::from_u16(s).expect("status")),
                "{s}"
            );
        }
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let cfg = RetryConfig::default();
        assert_eq!(delay(&cfg, 1, None, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(delay(&cfg, 3, None, 1.0), Some(Duration::from_millis(400)));
        assert_eq!(delay(&cfg, 3, None, 0.5), Some(Duration::from_millis(200)));
        assert_eq!(delay(&cfg, 30, None, 1.0), Some(Duration::from_secs(5)));
        assert_eq!(
            delay(&cfg, 1, Some(Duration::from_secs(2)), 0.3),
            Some(Duration::from_secs(2))
        );
        assert_eq!(delay(&cfg, 1, Some(Duration::from_secs(60)), 0.3), None);
    }

    #[test]
    fn retry_after_headers() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
        // Hostile or broken values never panic: huge is "too long", the
        // rest is ignored.
        for (v, want) in [
            ("1e300", Some(Duration::MAX)),
            ("-1", None),
            ("NaN", None),
            ("inf", None),
        ] {
            let mut h = HeaderMap::new();
            h.insert("retry-after-ms", HeaderValue::from_static(v));
            assert_eq!(retry_after(&h), want, "retry-after-ms: {v}");
            let mut h = HeaderMap::new();
            h.insert("retry-after", HeaderValue::from_static(v));
            assert_eq!(retry_after(&h), want, "retry-after: {v}");
        }
    }

    #[test]
    fn budget_limits_retries_to_a_share_of_requests() {
        let cfg = RetryConfig {
            budget_ratio: 0.2,
            budget_min_per_second: 0.5,
            ..RetryConfig::default()
        };
        let b = RetryBudget::default();
        let now = Instant::now();
        for _ in 0..100 {
            b.record_request(now);
        }
        let allowed = (0..100).filter(|_| b.try_retry(&cfg, now)).count();
        assert_eq!(allowed, 25, "20% of 100 plus 0.5/s over 10 s");
    }
}
