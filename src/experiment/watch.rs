//! The rollout's clock: every second, each experiment with guards or a
//! ramp is looked at once. A breached guard rolls the candidate back at
//! once; a step that lasted long enough with enough samples (and no guard
//! breached) moves to the next.

use crate::config::{Experiment, Guards};

use super::{ArmStats, Experiments, Phase};

/// What one look changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    RolledBack { experiment: String, reason: String },
    Advanced { experiment: String, share: f64 },
}

/// Looks at every experiment once (at unix second `now`).
pub fn tick(config: &[Experiment], live: &Experiments, now: u64) -> Vec<Event> {
    let mut events = Vec::new();
    for e in config {
        let Some(cand) = e.candidate() else { continue };
        if e.guards.is_none() && e.ramp.is_none() {
            continue;
        }
        let Some(l) = live.get(&e.name) else { continue };
        let (Some(control), Some(candidate)) = (l.arms.get(e.control), l.arms.get(cand)) else {
            continue;
        };
        let (control, candidate) = (control.stats(), candidate.stats());
        let counts: Vec<u64> = l.arms.iter().map(|a| a.stats().requests()).collect();
        let mut state = l.state();
        if matches!(state.phase, Phase::RolledBack | Phase::Promoted) {
            continue;
        }
        if let Some(reason) = e
            .guards
            .as_ref()
            .and_then(|g| breached(g, &control, &candidate))
        {
            state.roll_back("guard", reason.clone(), &counts);
            events.push(Event::RolledBack {
                experiment: e.name.clone(),
                reason,
            });
            continue;
        }
        if let Some(ramp) = &e.ramp {
            if state.base.len() != counts.len() {
                // First look since start: the step's samples count from now.
                state.base = counts.clone();
            }
            if let Some(share) = state.advance(ramp, &counts, now) {
                events.push(Event::Advanced {
                    experiment: e.name.clone(),
                    share,
                });
            }
        }
    }
    events
}

/// Why the candidate must be rolled back, if it must: every breached
/// guard's reason ("worse" is decided by the sequential test, never by a
/// point estimate, and nothing fires below the guards' minimum sample).
pub fn breached(g: &Guards, control: &ArmStats, candidate: &ArmStats) -> Option<String> {
    let reasons: Vec<String> = crate::stats::check_guards(control, candidate, &g.stats)
        .into_iter()
        .map(|b| b.reason)
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}
