//! A circuit breaker per deployment: opens on consecutive failures or a
//! failure rate over a window, lets probes through after a cool-down
//! (half-open), closes on a successful probe. Operators can eject a
//! deployment by hand and restore it.
//!
//! A breaker must never turn a blip into an outage: when every deployment a
//! request could use is open (Envoy's "panic" case), `panic_allow` still
//! admits one request per deployment per `probe_interval`, and a success
//! closes the circuit at once. A half-open probe that never reports (its
//! client went away) stops holding the slot after `open_for`.

use std::sync::Mutex;
use tokio::time::Instant;

use super::counts::WindowCounts;
use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed,
    Open {
        until: Instant,
    },
    /// `since`: when the first probe of this half-open spell went out.
    HalfOpen {
        probes: u32,
        since: Instant,
    },
}

#[derive(Debug)]
struct State {
    mode: Mode,
    consecutive: u32,
    outcomes: WindowCounts,
    ejected: bool,
    /// When the last probe admitted by `panic_allow` went out.
    last_panic: Option<Instant>,
}

/// What the breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Normal,
    /// A half-open probe: its outcome decides open or closed.
    Probe,
    Denied,
}

/// One deployment's breaker.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                mode: Mode::Closed,
                consecutive: 0,
                outcomes: WindowCounts::default(),
                ejected: false,
                last_panic: None,
            }),
        }
    }
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May a request go to this deployment now?
    pub fn allow(&self, cfg: &BreakerConfig, now: Instant) -> Permit {
        let mut s = self.lock();
        if s.ejected {
            return Permit::Denied;
        }
        match s.mode {
            Mode::Closed => Permit::Normal,
            Mode::Open { until } if now >= until => {
                s.mode = Mode::HalfOpen {
                    probes: 1,
                    since: now,
                };
                Permit::Probe
            }
            Mode::Open { .. } => Permit::Denied,
            Mode::HalfOpen { probes, since } if probes < cfg.half_open_probes => {
                s.mode = Mode::HalfOpen {
                    probes: probes + 1,
                    since,
                };
                Permit::Probe
            }
            Mode::HalfOpen { since, .. } if now >= since + cfg.open_for => {
                // The probes never reported (cancelled): start a new spell.
                s.mode = Mode::HalfOpen {
                    probes: 1,
                    since: now,
                };
                Permit::Probe
            }
            Mode::HalfOpen { .. } => Permit::Denied,
        }
    }

    /// Whether `allow` would refuse now (open, probes all out, or ejected),
    /// without changing anything.
    pub fn is_open(&self, cfg: &BreakerConfig, now: Instant) -> bool {
        let s = self.lock();
        if s.ejected {
            return true;
        }
        match s.mode {
            Mode::Closed => false,
            Mode::Open { until } => now < until,
            Mode::HalfOpen { probes, since } => {
                probes >= cfg.half_open_probes && now < since + cfg.open_for
            }
        }
    }

    /// The panic rule, for a request whose every candidate deployment is
    /// open: one probe per `probe_interval` per deployment, whatever the
    /// circuit says (an ejected deployment stays out: that was an operator's
    /// decision).
    pub fn panic_allow(&self, cfg: &BreakerConfig, now: Instant) -> Permit {
        let mut s = self.lock();
        if s.ejected {
            return Permit::Denied;
        }
        if s.mode == Mode::Closed {
            return Permit::Normal;
        }
        let due = s
            .last_panic
            .is_none_or(|t| now.saturating_duration_since(t) >= cfg.probe_interval);
        if !due {
            return Permit::Denied;
        }
        s.last_panic = Some(now);
        Permit::Probe
    }

    /// Records an attempt's outcome; returns true when this opened the circuit.
    pub fn record(&self, cfg: &BreakerConfig, now: Instant, ok: bool, permit: Permit) -> bool {
        let mut s = self.lock();
        if permit == Permit::Probe {
            match s.mode {
                Mode::Closed => {}
                _ if ok => {
                    s.mode = Mode::Closed;
                    s.consecutive = 0;
                    s.outcomes.clear();
                    return false;
                }
                Mode::HalfOpen { .. } => {
                    s.mode = Mode::Open {
                        until: now + cfg.open_for,
                    };
                    return true;
                }
                // A failed panic probe: the cool-down runs on unchanged.
                Mode::Open { .. } => return false,
            }
        }
        if s.mode != Mode::Closed {
            return false;
        }
        s.outcomes.add(now, cfg.window, !ok);
        s.consecutive = if ok { 0 } else { s.consecutive + 1 };
        let (total, failed) = s.outcomes.get(now, cfg.window);
        let by_rate = total >= u64::from(cfg.min_requests)
            && failed as f64 / total as f64 >= cfg.failure_rate;
        if !ok && (s.consecutive >= cfg.consecutive_failures || by_rate) {
            s.mode = Mode::Open {
                until: now + cfg.open_for,
            };
            s.consecutive = 0;
            s.outcomes.clear();
            return true;
        }
        false
    }

    /// Takes the deployment out of rotation until `restore`.
    pub fn eject(&self) {
        self.lock().ejected = true;
    }

    /// Puts an ejected deployment back, with a closed circuit.
    pub fn restore(&self) {
        let mut s = self.lock();
        s.ejected = false;
        s.mode = Mode::Closed;
        s.consecutive = 0;
        s.outcomes.clear();
    }

    /// `closed`, `open`, `half_open` or `ejected`.
    pub fn state(&self, _cfg: &BreakerConfig) -> &'static str {
        let s = self.lock();
        if s.ejected {
            return "ejected";
        }
        match s.mode {
            Mode::Closed => "closed",
            Mode::Open { until } if Instant::now() >= until => "half_open",
            Mode::Open { .. } => "open",
            Mode::HalfOpen { .. } => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_rate: 0.5,
            window: Duration::from_secs(10),
            min_requests: 10,
            open_for: Duration::from_secs(5),
            half_open_probes: 1,
            probe_interval: Duration::from_secs(1),
        }
    }

    fn open(b: &Breaker, c: &BreakerConfig, t: Instant) {
        for _ in 0..c.consecutive_failures {
            b.record(c, t, false, Permit::Normal);
        }
        assert!(b.is_open(c, t));
    }

    #[test]
    fn all_open_still_admits_one_probe_per_interval() {
        let (b, c, t0) = (Breaker::default(), cfg(), Instant::now());
        assert_eq!(b.panic_allow(&c, t0), Permit::Normal, "closed: no panic");
        open(&b, &c, t0);
        assert_eq!(b.allow(&c, t0), Permit::Denied);
        assert_eq!(b.panic_allow(&c, t0), Permit::Probe);
        assert_eq!(b.panic_allow(&c, t0), Permit::Denied, "one per interval");
        let t1 = t0 + Duration::from_millis(999);
        assert_eq!(b.panic_allow(&c, t1), Permit::Denied);
        // A failed panic probe keeps the circuit open (and its cool-down).
        assert!(!b.record(&c, t1, false, Permit::Probe));
        assert!(b.is_open(&c, t1));
        let t2 = t0 + Duration::from_secs(1);
        assert_eq!(b.panic_allow(&c, t2), Permit::Probe);
        // The provider is back: the probe's success closes the circuit
        // long before `open_for` is over.
        assert!(!b.record(&c, t2, true, Permit::Probe));
        assert!(!b.is_open(&c, t2));
        assert_eq!(b.allow(&c, t2), Permit::Normal);
    }

    #[test]
    fn an_ejected_deployment_is_never_probed() {
        let (b, c, t0) = (Breaker::default(), cfg(), Instant::now());
        b.eject();
        assert!(b.is_open(&c, t0));
        assert_eq!(b.panic_allow(&c, t0), Permit::Denied);
    }

    #[test]
    fn a_probe_that_never_reports_does_not_hold_the_circuit_forever() {
        let (b, c, t0) = (Breaker::default(), cfg(), Instant::now());
        open(&b, &c, t0);
        let t1 = t0 + c.open_for;
        assert_eq!(b.allow(&c, t1), Permit::Probe);
        // Its client went away: no record. Others are refused for a while…
        assert_eq!(b.allow(&c, t1), Permit::Denied);
        assert!(b.is_open(&c, t1));
        // …then a new probe goes out.
        let t2 = t1 + c.open_for;
        assert!(!b.is_open(&c, t2));
        assert_eq!(b.allow(&c, t2), Permit::Probe);
        b.record(&c, t2, true, Permit::Probe);
        assert_eq!(b.allow(&c, t2), Permit::Normal);
    }

    #[test]
    fn opens_probes_and_closes() {
        let (b, c, t0) = (Breaker::default(), cfg(), Instant::now());
        assert!(!b.record(&c, t0, false, Permit::Normal));
        assert!(!b.record(&c, t0, false, Permit::Normal));
        assert!(
            b.record(&c, t0, false, Permit::Normal),
            "third consecutive failure opens"
        );
        assert_eq!(b.allow(&c, t0 + Duration::from_secs(1)), Permit::Denied);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(b.allow(&c, later), Permit::Probe);
        assert_eq!(b.allow(&c, later), Permit::Denied, "one probe at a time");
        assert!(
            b.record(&c, later, false, Permit::Probe),
            "failed probe reopens"
        );
        let later = later + Duration::from_secs(5);
        assert_eq!(b.allow(&c, later), Permit::Probe);
        b.record(&c, later, true, Permit::Probe);
        assert_eq!(
            b.allow(&c, later),
            Permit::Normal,
            "successful probe closes"
        );
    }

    #[test]
    fn opens_on_failure_rate() {
        let (b, c, t0) = (Breaker::default(), cfg(), Instant::now());
        let mut opened = false;
        for i in 0..11 {
            // Alternate: never 3 consecutive failures, but 6 of 11 failed.
            opened |= b.record(&c, t0, i % 2 == 1, Permit::Normal);
        }
        assert!(opened);
        assert_eq!(b.allow(&c, t0), Permit::Denied);
    }

    #[test]
    fn eject_and_restore() {
        let (b, c, t0) = (Breaker::default(), cfg(), Instant::now());
        b.eject();
        assert_eq!(b.allow(&c, t0), Permit::Denied);
        assert_eq!(b.state(&c), "ejected");
        b.restore();
        assert_eq!(b.allow(&c, t0), Permit::Normal);
    }
}
