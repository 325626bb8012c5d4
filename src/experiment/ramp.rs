//! Where an experiment's rollout stands: the ramp step, and whether a
//! person or a guard stopped it. Persisted (JSON beside the state file), so
//! a rollback holds across restarts until someone resumes it.

use serde::{Deserialize, Serialize};

use crate::config::Ramp;

/// The rollout's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Steps advance when each is long enough and has enough samples.
    Running,
    /// The current share holds; no step advances (guards still watch).
    Paused,
    /// The candidate gets nothing until resumed.
    RolledBack,
    /// The candidate gets everything.
    Promoted,
}

/// One experiment's rollout state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RampState {
    pub name: String,
    pub phase: Phase,
    /// Index into the ramp's steps.
    pub step: usize,
    /// Unix seconds the current step (or phase) began.
    pub since: u64,
    /// Why the phase last changed (a breached guard, or an operator's word).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who changed it (`guard`, `ramp`, or the admin call's operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Requests each arm had seen when the step began (this process).
    #[serde(skip)]
    pub base: Vec<u64>,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl RampState {
    pub fn new(name: &str) -> RampState {
        RampState {
            name: name.to_owned(),
            phase: Phase::Running,
            step: 0,
            since: now(),
            reason: None,
            by: None,
            base: Vec::new(),
        }
    }

    /// The candidate's share in percent, when the rollout decides it
    /// (otherwise the config's weights do).
    pub fn candidate_share(&self, ramp: Option<&Ramp>) -> Option<f64> {
        match self.phase {
            Phase::RolledBack => Some(0.0),
            Phase::Promoted => Some(100.0),
            Phase::Running | Phase::Paused => {
                let steps = &ramp?.steps;
                steps
                    .get(self.step.min(steps.len().checked_sub(1)?))
                    .copied()
            }
        }
    }

    fn enter(&mut self, phase: Phase, by: &str, reason: Option<String>, counts: &[u64]) {
        self.phase = phase;
        self.since = now();
        self.by = Some(by.to_owned());
        self.reason = reason;
        self.base = counts.to_vec();
    }

    pub fn roll_back(&mut self, by: &str, reason: String, counts: &[u64]) {
        self.enter(Phase::RolledBack, by, Some(reason), counts);
    }

    pub fn pause(&mut self, by: &str, reason: Option<String>, counts: &[u64]) {
        self.enter(Phase::Paused, by, reason, counts);
    }

    pub fn promote(&mut self, by: &str, reason: Option<String>, counts: &[u64]) {
        self.enter(Phase::Promoted, by, reason, counts);
    }

    /// Running again; a rollback restarts the ramp from its first step.
    pub fn resume(&mut self, by: &str, reason: Option<String>, counts: &[u64]) {
        if self.phase == Phase::RolledBack {
            self.step = 0;
        }
        self.enter(Phase::Running, by, reason, counts);
    }

    /// Moves to the next step when the current one has lasted long enough
    /// and each arm saw enough requests in it; the last step stays. Returns
    /// the new share when it moved.
    pub fn advance(&mut self, ramp: &Ramp, counts: &[u64], at: u64) -> Option<f64> {
        if self.phase != Phase::Running || self.step + 1 >= ramp.steps.len() {
            return None;
        }
        if at.saturating_sub(self.since) < ramp.min_duration.as_secs() {
            return None;
        }
        let in_step = |i: usize| {
            counts
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(self.base.get(i).copied().unwrap_or(0))
        };
        if (0..counts.len()).any(|i| in_step(i) < ramp.min_samples) {
            return None;
        }
        self.step += 1;
        self.since = at;
        self.by = Some("ramp".into());
        self.reason = None;
        self.base = counts.to_vec();
        ramp.steps.get(self.step).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ramp() -> Ramp {
        Ramp {
            steps: vec![1.0, 5.0, 25.0, 100.0],
            min_duration: Duration::from_secs(60),
            min_samples: 10,
        }
    }

    #[test]
    fn steps_advance_only_when_long_and_full_enough() {
        let r = ramp();
        let mut s = RampState::new("e");
        s.since = 1000;
        assert_eq!(s.candidate_share(Some(&r)), Some(1.0));
        assert_eq!(s.advance(&r, &[100, 100], 1030), None, "too soon");
        assert_eq!(
            s.advance(&r, &[100, 9], 1060),
            None,
            "too few in the candidate"
        );
        assert_eq!(s.advance(&r, &[100, 10], 1060), Some(5.0));
        assert_eq!(
            s.advance(&r, &[200, 19], 1130),
            None,
            "the new step counts anew"
        );
        assert_eq!(s.advance(&r, &[200, 20], 1200), Some(25.0));
        assert_eq!(s.advance(&r, &[300, 30], 1300), Some(100.0));
        assert_eq!(s.advance(&r, &[400, 40], 1400), None, "the last step stays");
    }

    #[test]
    fn a_rollback_holds_until_resumed_and_restarts_the_ramp() {
        let r = ramp();
        let mut s = RampState::new("e");
        s.step = 2;
        s.roll_back("guard", "error rate".into(), &[5, 5]);
        assert_eq!(s.candidate_share(Some(&r)), Some(0.0));
        assert_eq!(s.advance(&r, &[1000, 1000], u64::MAX), None);
        s.resume("alice", None, &[5, 5]);
        assert_eq!(s.candidate_share(Some(&r)), Some(1.0));
        s.promote("alice", None, &[5, 5]);
        assert_eq!(s.candidate_share(None), Some(100.0));
        s.pause("alice", None, &[5, 5]);
        assert_eq!(
            s.candidate_share(None),
            None,
            "no ramp: the config's weights"
        );
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = RampState::new("e");
        s.roll_back("guard", "p95 latency".into(), &[1, 2]);
        let text = serde_json::to_string(&s).expect("json");
        let back: RampState = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.phase, Phase::RolledBack);
        assert_eq!(back.reason.as_deref(), Some("p95 latency"));
    }
}
