//! Kill switches: a model, a key or a feature disabled at once — from the
//! config (`[[kill_switches]]`) or at runtime by the admin API — answered in
//! the provider's error shape, or (a model) sent to a named replacement.
//! Runtime switches are audited (who, when, why), persisted in a file beside
//! the state file (written whole, then renamed), and reversible.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

pub use crate::config::{Switch, Target, TARGET_FORMS};
use crate::vocab::Identity;

/// The most runtime switches kept (each names a configured or sent value).
pub const MAX_SWITCHES: usize = 1024;

/// The runtime switches (config ones live in the snapshot). In fleet mode
/// they live in Redis instead of the file, and `fleet` is this replica's
/// copy, refreshed every second by the fleet's probe.
#[derive(Debug, Default)]
pub struct KillSwitches {
    active: RwLock<Vec<Switch>>,
    fleet: RwLock<Vec<Switch>>,
    path: Option<PathBuf>,
}

/// The file runtime switches are kept in, beside the state file.
pub fn file_beside(state_path: &Path) -> PathBuf {
    crate::config::beside_state(state_path, "kills.json")
}

impl KillSwitches {
    /// Loads the switches persisted at `path` (none if it does not exist).
    pub fn open(path: &Path) -> std::io::Result<KillSwitches> {
        let active = crate::json_file::load_list(path)?;
        Ok(KillSwitches {
            active: RwLock::new(active),
            fleet: RwLock::default(),
            path: Some(path.to_owned()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Switch>> {
        self.active.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn list(&self) -> Vec<Switch> {
        let fleet = self.fleet.read().unwrap_or_else(|e| e.into_inner());
        self.read().iter().chain(fleet.iter()).cloned().collect()
    }

    /// Replaces the fleet's switches (as read from Redis).
    pub fn set_fleet(&self, switches: Vec<Switch>) {
        *self.fleet.write().unwrap_or_else(|e| e.into_inner()) = switches;
    }

    /// Adds or removes one fleet switch in this replica's copy at once (the
    /// next refresh reads the same from Redis).
    pub fn note_fleet(&self, switch: Option<Switch>, target: &Target) {
        let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
        fleet.retain(|s| &s.target != target);
        fleet.extend(switch);
    }

    /// Turns `target` off (replacing an earlier switch on it) and persists.
    pub fn set(&self, switch: Switch) -> Result<(), String> {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        active.retain(|s| s.target != switch.target);
        if active.len() >= MAX_SWITCHES {
            return Err(format!("at most {MAX_SWITCHES} kill switches"));
        }
        active.push(switch);
        self.persist(&active)
    }

    /// Turns `target` back on; `false` when it was not off.
    pub fn clear(&self, target: &Target) -> Result<bool, String> {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        let before = active.len();
        active.retain(|s| &s.target != target);
        if active.len() == before {
            return Ok(false);
        }
        self.persist(&active).map(|()| true)
    }

    fn persist(&self, active: &[Switch]) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        crate::json_file::save(path, &active)
    }

    /// The switch that stops a request from this identity, before its model
    /// is known.
    pub fn for_identity(&self, config: &[Switch], id: &Identity) -> Option<Switch> {
        self.find(config, |t| match t {
            Target::Key(k) => id.key.as_deref() == Some(k.as_str()),
            Target::Feature(f) => id.feature.as_deref() == Some(f.as_str()),
            Target::Model(_) | Target::Arm(_) | Target::Deployment(_) => false,
        })
    }

    /// The switch on `model`, if any.
    pub fn for_model(&self, config: &[Switch], model: &str) -> Option<Switch> {
        self.find(config, |t| matches!(t, Target::Model(m) if m == model))
    }

    /// The switch on arm `arm` of experiment `experiment`, if any.
    pub fn for_arm(&self, config: &[Switch], experiment: &str, arm: &str) -> Option<Switch> {
        self.find(
            config,
            |t| matches!(t, Target::Arm(v) if v.split_once('/') == Some((experiment, arm))),
        )
    }

    /// The switch on `provider`'s deployment of `model` (the name sent to
    /// it), if any.
    pub fn for_deployment(&self, config: &[Switch], provider: &str, model: &str) -> Option<Switch> {
        self.find(config, |t| t.covers_deployment(provider, model))
    }

    fn find(&self, config: &[Switch], hit: impl Fn(&Target) -> bool) -> Option<Switch> {
        let runtime = self.read();
        let fleet = self.fleet.read().unwrap_or_else(|e| e.into_inner());
        if config.is_empty() && runtime.is_empty() && fleet.is_empty() {
            return None;
        }
        config
            .iter()
            .chain(runtime.iter())
            .chain(fleet.iter())
            .find(|s| hit(&s.target))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(target: &str) -> Switch {
        Switch {
            target: Target::parse(target).expect("target"),
            reason: "incident 42".into(),
            by: "oncall".into(),
            at: 1,
            replacement: None,
        }
    }

    #[test]
    fn switches_persist_and_reverse() {
        let dir = std::env::temp_dir().join(format!("sluice-kill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("s.kills.json");
        let _ = std::fs::remove_file(&path);
        let k = KillSwitches::open(&path).expect("open");
        k.set(switch("model=gpt-4o")).expect("set");
        k.set(switch("key=ci")).expect("set");
        let again = KillSwitches::open(&path).expect("reopen");
        assert_eq!(again.list().len(), 2);
        assert!(again.for_model(&[], "gpt-4o").is_some());
        assert!(again.for_model(&[], "gpt-4o-mini").is_none());
        let ci = Identity {
            key: Some("ci".into()),
            ..Identity::default()
        };
        assert!(again.for_identity(&[], &ci).is_some());
        assert_eq!(again.clear(&Target::Key("ci".into())), Ok(true));
        assert_eq!(again.clear(&Target::Key("ci".into())), Ok(false));
        assert_eq!(KillSwitches::open(&path).expect("reopen").list().len(), 1);
        assert!(Target::parse("team=x").is_none());
        assert!(Target::parse("model=").is_none());
        k.set(switch("deployment=azure-east")).expect("set");
        k.set(switch("deployment=openai/gpt-4o")).expect("set");
        assert!(k.for_deployment(&[], "azure-east", "anything").is_some());
        assert!(k.for_deployment(&[], "openai", "gpt-4o").is_some());
        assert!(k.for_deployment(&[], "openai", "gpt-4o-mini").is_none());
        assert!(k.for_model(&[], "azure-east").is_none());
        assert!(Target::parse("deployment=/gpt-4o").is_none());
    }
}
