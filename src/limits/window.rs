//! A sliding window in one-second buckets: "at most N per minute" for any
//! minute, not just aligned ones (a fixed window lets 2N through across a
//! boundary), in at most `SPAN` buckets however busy it is. A use booked in
//! second `s` counts until second `s + SPAN` begins — at least 60 s after it
//! happened — so no 60-second window ever holds more than the limit; a
//! refusal can come up to a second early. Fleet mode keeps the same shape in
//! Redis (src/fleet/state.lua). Uses can be settled after the fact (reserve
//! an estimate, settle the actual), which is how token limits stay exact.

use std::collections::VecDeque;
use std::time::Duration;

/// Seconds a use stays counted (see the module doc).
pub const SPAN: u64 = 61;

/// Amounts taken in the last minute, per second (ascending, one entry per
/// second that has any).
#[derive(Debug, Default)]
pub struct SlidingWindow {
    seconds: VecDeque<(u64, u64)>,
    used: u64,
}

/// Why a take was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// When enough will have left the window for the take to fit (the whole
    /// window if it can never fit).
    pub retry_after: Duration,
    /// The request alone exceeds the limit.
    pub never_fits: bool,
}

/// Milliseconds until second `s + SPAN` begins.
fn expiry_after(second: u64, now_ms: u64) -> Duration {
    Duration::from_millis(((second + SPAN) * 1000).saturating_sub(now_ms))
}

impl SlidingWindow {
    fn evict(&mut self, now_ms: u64) {
        let second = now_ms / 1000;
        while let Some(&(s, n)) = self.seconds.front() {
            if s + SPAN > second {
                break;
            }
            self.used -= n;
            self.seconds.pop_front();
        }
    }

    fn add(&mut self, second: u64, amount: u64) {
        self.used += amount;
        match self.seconds.back_mut() {
            Some((s, n)) if *s == second => *n += amount,
            _ => self.seconds.push_back((second, amount)),
        }
    }

    /// Takes `amount` at `now_ms` (milliseconds on a monotonic clock) if it
    /// fits under `limit`; returns the second it was booked in, for
    /// `settle`.
    pub fn try_take(&mut self, now_ms: u64, limit: u64, amount: u64) -> Result<u64, Refused> {
        self.evict(now_ms);
        if amount > limit {
            return Err(Refused {
                retry_after: Duration::from_secs(SPAN),
                never_fits: true,
            });
        }
        if self.used + amount <= limit {
            let second = now_ms / 1000;
            self.add(second, amount);
            return Ok(second);
        }
        // Walk the oldest seconds until enough of them would have left.
        let mut freed = 0;
        for &(s, n) in &self.seconds {
            freed += n;
            if self.used - freed + amount <= limit {
                return Err(Refused {
                    retry_after: expiry_after(s, now_ms),
                    never_fits: false,
                });
            }
        }
        Err(Refused {
            retry_after: Duration::from_secs(SPAN),
            never_fits: false,
        })
    }

    /// Replaces `reserved`, booked in second `booked`, with `actual`. A
    /// reservation that has already left the window is charged again now
    /// for what was used, so long requests are never free.
    pub fn settle(&mut self, now_ms: u64, booked: u64, reserved: u64, actual: u64) {
        self.evict(now_ms);
        if let Some((_, n)) = self.seconds.iter_mut().find(|(s, _)| *s == booked) {
            let kept = (*n).saturating_sub(reserved);
            self.used = self.used - *n + kept + actual;
            *n = kept + actual;
        } else if actual > 0 {
            self.add(now_ms / 1000, actual);
        }
    }

    /// Amount taken in the window ending `now_ms`.
    pub fn used(&mut self, now_ms: u64) -> u64 {
        self.evict(now_ms);
        self.used
    }

    /// Time until the whole current use has left the window.
    pub fn reset_after(&self, now_ms: u64) -> Duration {
        self.seconds
            .back()
            .map_or(Duration::ZERO, |&(s, _)| expiry_after(s, now_ms))
    }

    pub fn is_empty(&self) -> bool {
        self.seconds.is_empty()
    }

    /// Seconds held (at most `SPAN`).
    pub fn len(&self) -> usize {
        self.seconds.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_the_limit_in_any_minute() {
        let mut w = SlidingWindow::default();
        let mut taken = Vec::new();
        // One attempt every 100 ms for 3 minutes, limit 10 per minute.
        for step in 0..1800u64 {
            let now = 5_000 + step * 100;
            if w.try_take(now, 10, 1).is_ok() {
                taken.push(now);
            }
        }
        for (i, &start) in taken.iter().enumerate() {
            let in_window = taken[i..]
                .iter()
                .take_while(|&&t| t < start + 60_000)
                .count();
            assert!(in_window <= 10, "{in_window} in the minute from {i}");
        }
        assert!((27..=30).contains(&taken.len()), "{} taken", taken.len());
        assert!(w.len() <= SPAN as usize);
    }

    #[test]
    fn a_busy_window_holds_at_most_span_seconds() {
        let mut w = SlidingWindow::default();
        for ms in (0..600_000u64).step_by(7) {
            let _ = w.try_take(ms, u64::MAX, 1);
            assert!(w.len() <= SPAN as usize);
        }
    }

    #[test]
    fn retry_after_points_at_the_second_that_frees_enough() {
        let mut w = SlidingWindow::default();
        w.try_take(0, 10, 6).expect("fits");
        w.try_take(10_500, 10, 4).expect("fits");
        let r = w.try_take(20_000, 10, 5).expect_err("full");
        // Second 0 leaves when second 61 begins.
        assert_eq!(r.retry_after, Duration::from_millis(41_000));
        assert!(!r.never_fits);
        let r = w.try_take(0, 10, 11).expect_err("too big");
        assert!(r.never_fits);
        assert!(w.try_take(61_000, 10, 5).is_ok());
    }

    #[test]
    fn settle_adjusts_or_charges_again() {
        let mut w = SlidingWindow::default();
        let booked = w.try_take(0, 100, 50).expect("fits");
        w.try_take(200, 100, 10).expect("fits");
        w.settle(1_000, booked, 50, 20);
        assert_eq!(w.used(1_000), 30, "the other use in that second stays");
        // Settled after it left the window: charged now.
        w.settle(70_000, booked, 20, 30);
        assert_eq!(w.used(70_000), 30);
    }
}
