//! Experiments at run time: which arm a request lands in, what each arm
//! saw, and where a ramp stands (rolled back, paused, promoted).
//!
//! The config (`crate::config::Experiment`) says what the experiment is;
//! [`Experiments`] keeps what outlives a config snapshot, by experiment
//! name: per-arm statistics and the ramp's state, persisted in a file
//! beside the state file so a rollback holds across restarts.

pub mod assign;
pub mod overrides;
mod ramp;
pub mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use http::HeaderMap;

use crate::config::{Experiment, Pin, Sticky};
use crate::vocab::Identity;

pub use crate::stats::{ArmStats, Observation};
pub use ramp::{now as ramp_now, Phase, RampState};

/// The arm a request was given.
#[derive(Clone)]
pub struct Pick {
    pub experiment: Arc<str>,
    pub arm: Arc<str>,
    /// Index into the config's arms.
    pub index: usize,
    /// Where the request's outcome is counted.
    pub live: Arc<ArmLive>,
}

/// One arm's running statistics.
pub struct ArmLive {
    pub name: Arc<str>,
    stats: Mutex<ArmStats>,
}

impl ArmLive {
    fn new(name: &str) -> ArmLive {
        ArmLive {
            name: name.into(),
            stats: Mutex::new(ArmStats::default()),
        }
    }

    /// Counts one finished request.
    pub fn observe(&self, o: &Observation) {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(o);
    }

    pub fn stats(&self) -> ArmStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One experiment's live side.
pub struct Live {
    pub name: Arc<str>,
    pub arms: Vec<Arc<ArmLive>>,
    pub ramp: Mutex<RampState>,
}

impl Live {
    fn matches(&self, e: &Experiment) -> bool {
        self.arms.len() == e.arms.len()
            && self
                .arms
                .iter()
                .zip(&e.arms)
                .all(|(l, a)| *l.name == a.name)
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, RampState> {
        self.ramp.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The weights in force: the ramp's (or a rollback's, a promotion's)
    /// share for the candidate, else the config's; an arm switched off by
    /// a kill switch gets none.
    pub fn weights(&self, e: &Experiment, killed: &dyn Fn(&str) -> bool) -> Vec<f64> {
        let mut w: Vec<f64> = e.arms.iter().map(|a| a.weight).collect();
        if let Some(cand) = e.candidate() {
            if let Some(share) = self.state().candidate_share(e.ramp.as_ref()) {
                w[cand] = share;
                w[e.control] = 100.0 - share;
            }
        }
        for (i, a) in e.arms.iter().enumerate() {
            if i != e.control && killed(&a.name) {
                w[i] = 0.0;
            }
        }
        w
    }
}

/// Every experiment's live side, by name; bounded by the config (at most
/// `MAX_EXPERIMENTS`, and entries of experiments no longer configured are
/// dropped at reload).
#[derive(Default)]
pub struct Experiments {
    live: RwLock<HashMap<String, Arc<Live>>>,
    path: Option<PathBuf>,
    /// One writer at a time (the watcher and admin calls both save): each
    /// save reads the states under it, so the last write is the newest.
    saving: Mutex<()>,
}

/// The file ramp states are kept in, beside the state file.
pub fn file_beside(state_path: &Path) -> PathBuf {
    crate::config::beside_state(state_path, "experiments.json")
}

impl Experiments {
    /// Opens the persisted ramp states at `path` (none if it does not exist).
    pub fn open(path: &Path) -> std::io::Result<Experiments> {
        let saved: Vec<RampState> = crate::json_file::load_list(path)?;
        let exp = Experiments {
            live: RwLock::default(),
            path: Some(path.to_owned()),
            saving: Mutex::new(()),
        };
        let mut live = exp.write();
        for s in saved {
            live.insert(
                s.name.clone(),
                Arc::new(Live {
                    name: s.name.as_str().into(),
                    arms: Vec::new(),
                    ramp: Mutex::new(s),
                }),
            );
        }
        drop(live);
        Ok(exp)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Live>>> {
        self.live.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Live>>> {
        self.live.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the live side match a (new) config: experiments and arms are
    /// created, statistics of arms whose set changed start anew, ramp state
    /// is kept by experiment name, entries no longer configured are dropped.
    pub fn sync(&self, config: &[Experiment]) {
        let mut live = self.write();
        let mut next = HashMap::with_capacity(config.len());
        for e in config {
            let entry = match live.remove(&e.name) {
                Some(l) if l.matches(e) => l,
                old => {
                    let state = old
                        .map(|l| l.state().clone())
                        .unwrap_or_else(|| RampState::new(&e.name));
                    Arc::new(Live {
                        name: e.name.as_str().into(),
                        arms: e
                            .arms
                            .iter()
                            .map(|a| Arc::new(ArmLive::new(&a.name)))
                            .collect(),
                        ramp: Mutex::new(state),
                    })
                }
            };
            next.insert(e.name.clone(), entry);
        }
        *live = next;
    }

    pub fn get(&self, name: &str) -> Option<Arc<Live>> {
        self.read().get(name).cloned()
    }

    /// Every rollout state, by name.
    pub fn states(&self) -> Vec<RampState> {
        let mut states: Vec<RampState> = self.read().values().map(|l| l.state().clone()).collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        states
    }

    /// Takes the fleet's rollout states (read from Redis): a state newer
    /// than this replica's (a later `since`) replaces it; experiments this
    /// replica does not run are ignored.
    pub fn adopt(&self, states: Vec<RampState>) {
        let live = self.read();
        let mut changed = false;
        for s in states {
            let Some(l) = live.get(&s.name) else { continue };
            let mut mine = l.state();
            let differs = (mine.phase, mine.step) != (s.phase, s.step);
            // A state nobody changed yet (`by` unset) always yields.
            if differs && (mine.by.is_none() || s.since >= mine.since) {
                let base = std::mem::take(&mut mine.base);
                *mine = RampState { base, ..s };
                changed = true;
            }
        }
        drop(live);
        if changed {
            if let Err(e) = self.persist() {
                tracing::error!(error = %e, "could not save experiment state");
            }
        }
    }

    /// Writes every ramp state (called after each change).
    pub fn persist(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let _one = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let states = self.states();
        crate::json_file::save(path, &states)
    }

    /// The arm for a request to `e`'s public model: a pin by task first,
    /// then the caller's bucket. `None` when the experiment's live side is
    /// missing (never after `sync`) or the caller has no sticky id (served
    /// by the control, outside the experiment).
    pub fn pick(
        &self,
        e: &Experiment,
        identity: &Identity,
        headers: &HeaderMap,
        killed: &dyn Fn(&str) -> bool,
    ) -> Option<Pick> {
        let live = self.get(&e.name)?;
        let index = match pinned(e, identity, headers) {
            Some(i) => i,
            None => {
                let bucket = match &e.sticky {
                    Sticky::Random => assign::random_bucket(),
                    Sticky::Dim(d) => assign::bucket(&e.name, identity.value(*d)?),
                    Sticky::Header(h) => {
                        let v = headers.get(h)?.to_str().ok().filter(|v| !v.is_empty())?;
                        assign::bucket(&e.name, v)
                    }
                };
                let quotas = assign::quotas(&live.weights(e, killed), e.control);
                assign::arm_of(bucket, &quotas, e.control)
            }
        };
        let arm = live.arms.get(index)?.clone();
        Some(Pick {
            experiment: live.name.clone(),
            arm: arm.name.clone(),
            index,
            live: arm,
        })
    }
}

/// The arm a task pin sends this request to.
fn pinned(e: &Experiment, identity: &Identity, headers: &HeaderMap) -> Option<usize> {
    e.pinned.iter().find_map(|(pin, arm)| {
        let hit = match pin {
            Pin::Feature(f) => identity.feature.as_deref() == Some(f.as_str()),
            Pin::Header(h, v) => headers
                .get(h)
                .and_then(|got| got.to_str().ok())
                .is_some_and(|got| got == v),
        };
        hit.then_some(*arm)
    })
}
