//! A sliding-window log: exact "at most N per window" for any window, not
//! just aligned ones (a fixed window lets 2N through across a boundary).
//! Entries can be settled after the fact (reserve an estimate, settle the
//! actual), which is how token limits stay exact.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Instant,
    id: u64,
    amount: u64,
}

/// Amounts taken in the last `window`.
#[derive(Debug, Default)]
pub struct SlidingWindow {
    entries: VecDeque<Entry>,
    used: u64,
}

/// Why a take was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// When enough will have expired for the take to fit (the whole window
    /// if it can never fit).
    pub retry_after: Duration,
    /// The request alone exceeds the limit.
    pub never_fits: bool,
}

impl SlidingWindow {
    fn evict(&mut self, now: Instant, window: Duration) {
        while let Some(e) = self.entries.front() {
            if now.duration_since(e.at) < window {
                break;
            }
            self.used -= e.amount;
            self.entries.pop_front();
        }
    }

    /// Takes `amount` if it fits under `limit`; `id` names the entry for
    /// `settle` and must grow from call to call.
    pub fn try_take(
        &mut self,
        now: Instant,
        window: Duration,
        limit: u64,
        amount: u64,
        id: u64,
    ) -> Result<(), Refused> {
        self.evict(now, window);
        if amount > limit {
            return Err(Refused {
                retry_after: window,
                never_fits: true,
            });
        }
        if self.used + amount <= limit {
            self.used += amount;
            self.entries.push_back(Entry {
                at: now,
                id,
                amount,
            });
            return Ok(());
        }
        // Walk the oldest entries until enough of them would have expired.
        let mut freed = 0;
        for e in &self.entries {
            freed += e.amount;
            if self.used - freed + amount <= limit {
                return Err(Refused {
                    retry_after: (e.at + window).saturating_duration_since(now),
                    never_fits: false,
                });
            }
        }
        Err(Refused {
            retry_after: window,
            never_fits: false,
        })
    }

    /// Replaces the amount of entry `id` with `actual`. An entry that has
    /// already left the window is charged again now for what it
    /// under-reserved, so long requests are never free.
    pub fn settle(&mut self, now: Instant, window: Duration, id: u64, actual: u64) {
        self.evict(now, window);
        match self.entries.binary_search_by_key(&id, |e| e.id) {
            Ok(i) => {
                let e = &mut self.entries[i];
                self.used = self.used - e.amount + actual;
                e.amount = actual;
            }
            Err(_) => {
                // Keep ids sorted: the extra entry takes the newest id seen.
                let extra_id = self.entries.back().map_or(id, |b| b.id.max(id));
                if actual > 0 {
                    self.used += actual;
                    self.entries.push_back(Entry {
                        at: now,
                        id: extra_id,
                        amount: actual,
                    });
                }
            }
        }
    }

    /// Amount taken in the window ending `now`.
    pub fn used(&mut self, now: Instant, window: Duration) -> u64 {
        self.evict(now, window);
        self.used
    }

    /// Time until the whole current use has left the window.
    pub fn reset_after(&self, now: Instant, window: Duration) -> Duration {
        self.entries.back().map_or(Duration::ZERO, |e| {
            (e.at + window).saturating_duration_since(now)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    #[test]
    fn never_more_than_the_limit_in_any_window() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::default();
        let mut id = 0;
        let mut taken = Vec::new();
        // One attempt every 100 ms for 3 minutes, limit 10 per minute.
        for step in 0..1800u64 {
            let now = t0 + Duration::from_millis(step * 100);
            id += 1;
            if w.try_take(now, W, 10, 1, id).is_ok() {
                taken.push(now);
            }
        }
        for (i, &start) in taken.iter().enumerate() {
            let in_window = taken[i..].iter().take_while(|&&t| t < start + W).count();
            assert!(in_window <= 10, "{in_window} in the window from {i}");
        }
        assert_eq!(taken.len(), 30, "one full window per minute");
    }

    #[test]
    fn retry_after_points_at_the_expiry_that_frees_enough() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::default();
        w.try_take(t0, W, 10, 6, 1).expect("fits");
        w.try_take(t0 + Duration::from_secs(10), W, 10, 4, 2)
            .expect("fits");
        let r = w
            .try_take(t0 + Duration::from_secs(20), W, 10, 5, 3)
            .expect_err("full");
        assert_eq!(r.retry_after, Duration::from_secs(40));
        assert!(!r.never_fits);
        let r = w.try_take(t0, W, 10, 11, 4).expect_err("too big");
        assert!(r.never_fits);
        assert!(w
            .try_take(t0 + Duration::from_secs(60), W, 10, 5, 5)
            .is_ok());
    }

    #[test]
    fn settle_adjusts_or_charges_again() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::default();
        w.try_take(t0, W, 100, 50, 1).expect("fits");
        w.settle(t0 + Duration::from_secs(1), W, 1, 20);
        assert_eq!(w.used(t0 + Duration::from_secs(1), W), 20);
        // Settled after it left the window: charged now.
        w.settle(t0 + Duration::from_secs(70), W, 1, 30);
        assert_eq!(w.used(t0 + Duration::from_secs(70), W), 30);
    }
}
