//! Outcome counts over a sliding window, in one-second buckets: O(1) per
//! event and a few hundred bytes per deployment, whatever the request rate.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Events and failures in the last `window`, to one-second resolution.
#[derive(Debug)]
pub struct WindowCounts {
    origin: Instant,
    /// (second since origin, events, failures), oldest first.
    buckets: VecDeque<(u64, u64, u64)>,
    total: u64,
    failed: u64,
}

impl Default for WindowCounts {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            buckets: VecDeque::new(),
            total: 0,
            failed: 0,
        }
    }
}

impl WindowCounts {
    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    fn evict(&mut self, now: Instant, window: Duration) {
        let cutoff = self.second(now).saturating_sub(window.as_secs().max(1) - 1);
        while let Some(&(s, t, f)) = self.buckets.front() {
            if s >= cutoff {
                break;
            }
            self.total -= t;
            self.failed -= f;
            self.buckets.pop_front();
        }
    }

    /// Counts one event.
    pub fn add(&mut self, now: Instant, window: Duration, failed: bool) {
        self.evict(now, window);
        let s = self.second(now);
        match self.buckets.back_mut() {
            Some(b) if b.0 == s => {
                b.1 += 1;
                b.2 += u64::from(failed);
            }
            _ => self.buckets.push_back((s, 1, u64::from(failed))),
        }
        self.total += 1;
        self.failed += u64::from(failed);
    }

    /// (events, failures) in the window ending `now`.
    pub fn get(&mut self, now: Instant, window: Duration) -> (u64, u64) {
        self.evict(now, window);
        (self.total, self.failed)
    }

    pub fn clear(&mut self) {
        self.buckets.clear();
        self.total = 0;
        self.failed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_slide_by_the_second() {
        let mut c = WindowCounts::default();
        let t0 = c.origin;
        let w = Duration::from_secs(10);
        for i in 0..1000 {
            c.add(t0 + Duration::from_millis(i), w, i % 4 == 0);
        }
        assert_eq!(c.get(t0 + Duration::from_secs(1), w), (1000, 250));
        c.add(t0 + Duration::from_secs(5), w, true);
        assert_eq!(c.get(t0 + Duration::from_secs(9), w), (1001, 251));
        assert_eq!(
            c.get(t0 + Duration::from_secs(10), w),
            (1, 1),
            "the first second left"
        );
        assert_eq!(c.get(t0 + Duration::from_secs(15), w), (0, 0));
        assert!(c.buckets.len() <= 11);
    }
}
