//! Loop detection: the same canonical request (the response cache's
//! definition of "same": endpoint, model and body in canonical form) sent
//! more than `max_repeats` times within `within` by one run, key or user.
//! Exact repeats only; a request whose last tool result differs is another
//! request.
//!
//! Bounded: at most `max_entries` (request, sender) pairs are remembered;
//! when full, pairs whose repeats all left the window are swept, and if it
//! is still full a new pair is not tracked (counted in
//! `sluice_loops_untracked_total`): the detector fails open, never refuses
//! a request it could not remember.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hashbrown::HashMap;

/// What the detector says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fewer than `max_repeats` earlier sends in the window: recorded.
    Fresh,
    /// A loop: `max_repeats` earlier sends in the window.
    Loop,
    /// Not remembered (the map was full).
    Untracked,
}

#[derive(Debug)]
pub struct LoopDetector {
    seen: Mutex<HashMap<[u8; 32], VecDeque<Instant>>>,
    max_entries: AtomicUsize,
}

impl Default for LoopDetector {
    fn default() -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            max_entries: AtomicUsize::new(crate::config::DEFAULT_MAX_BUCKETS),
        }
    }
}

impl LoopDetector {
    /// Sets the most pairs remembered (`[state] max_buckets`).
    pub fn set_max_entries(&self, n: usize) {
        self.max_entries.store(n.max(1), Ordering::Relaxed);
    }

    /// Checks and records one send of request `key` at `now`. A loop is not
    /// recorded (when it is refused it was never sent; when only alerted,
    /// the window still holds the `max_repeats` sends that made it one).
    pub fn check(
        &self,
        key: [u8; 32],
        now: Instant,
        max_repeats: u32,
        within: Duration,
    ) -> Verdict {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains_key(&key) && seen.len() >= self.max_entries.load(Ordering::Relaxed) {
            sweep_locked(&mut seen, now, within);
            if seen.len() >= self.max_entries.load(Ordering::Relaxed) {
                return Verdict::Untracked;
            }
        }
        let times = seen.entry(key).or_default();
        while times
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= within)
        {
            times.pop_front();
        }
        if times.len() >= max_repeats as usize {
            return Verdict::Loop;
        }
        times.push_back(now);
        Verdict::Fresh
    }

    /// Drops pairs whose sends all left the window; returns how many are left.
    pub fn sweep(&self, now: Instant, within: Duration) -> usize {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        sweep_locked(&mut seen, now, within);
        seen.len()
    }
}

fn sweep_locked(seen: &mut HashMap<[u8; 32], VecDeque<Instant>>, now: Instant, within: Duration) {
    seen.retain(|_, times| {
        times
            .back()
            .is_some_and(|&t| now.saturating_duration_since(t) < within)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(60);

    #[test]
    fn the_repeat_past_the_limit_within_the_window_is_a_loop() {
        let d = LoopDetector::default();
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(
                d.check([1; 32], t0 + Duration::from_secs(i), 3, T),
                Verdict::Fresh
            );
        }
        assert_eq!(
            d.check([1; 32], t0 + Duration::from_secs(5), 3, T),
            Verdict::Loop
        );
        assert_eq!(
            d.check([2; 32], t0 + Duration::from_secs(5), 3, T),
            Verdict::Fresh,
            "another request"
        );
        // Once the first two sends leave the window, two more fit.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(d.check([1; 32], later, 3, T), Verdict::Fresh);
        assert_eq!(d.check([1; 32], later, 3, T), Verdict::Fresh);
        assert_eq!(d.check([1; 32], later, 3, T), Verdict::Loop);
    }

    #[test]
    fn a_full_detector_sweeps_then_fails_open() {
        let d = LoopDetector::default();
        d.set_max_entries(2);
        let t0 = Instant::now();
        assert_eq!(d.check([1; 32], t0, 1, T), Verdict::Fresh);
        assert_eq!(d.check([2; 32], t0, 1, T), Verdict::Fresh);
        assert_eq!(d.check([3; 32], t0, 1, T), Verdict::Untracked);
        // After the window, the old pairs are swept to make room.
        assert_eq!(d.check([3; 32], t0 + T, 1, T), Verdict::Fresh);
        assert_eq!(d.sweep(t0 + T, T), 1);
    }
}
