//! Capture triggers set at runtime (`POST /admin/capture`): every request
//! of one key, user or feature for the next N minutes. Bounded in number
//! and always expiring; this replica's own, in memory only (a restart ends
//! them, which is what a short investigation wants).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::vocab::Identity;

/// The most triggers at a time.
pub const MAX_TRIGGERS: usize = 32;
/// The longest a trigger may last, in minutes (a day).
pub const MAX_MINUTES: u64 = 24 * 60;
/// The longest subject value (it is compared, never a metric label).
pub const MAX_VALUE: usize = 256;

/// What a trigger captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dim {
    Key,
    User,
    Feature,
}

/// One trigger, as set and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trigger {
    pub dim: Dim,
    pub value: String,
    /// Who set it (the admin call's `x-sluice-operator`).
    pub by: String,
    /// Unix seconds.
    pub set_at: u64,
    /// Unix seconds; off from then on.
    pub expires_at: u64,
}

impl Trigger {
    fn matches(&self, id: &Identity) -> bool {
        let v = match self.dim {
            Dim::Key => id.key.as_deref(),
            Dim::User => id.user.as_deref(),
            Dim::Feature => id.feature.as_deref(),
        };
        v == Some(self.value.as_str())
    }
}

/// The active triggers.
#[derive(Default)]
pub struct Triggers {
    active: RwLock<Vec<Trigger>>,
    /// Entries in `active`, read without the lock on every request.
    len: AtomicUsize,
}

impl Triggers {
    /// Whether a trigger in force covers this identity.
    pub fn covers(&self, id: &Identity, now: u64) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        active.iter().any(|t| t.expires_at > now && t.matches(id))
    }

    /// Sets a trigger (one for the same subject is replaced); refused when
    /// [`MAX_TRIGGERS`] others are in force.
    pub fn set(&self, t: Trigger, now: u64) -> Result<(), String> {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        active.retain(|a| a.expires_at > now && !(a.dim == t.dim && a.value == t.value));
        if active.len() >= MAX_TRIGGERS {
            return Err(format!(
                "{MAX_TRIGGERS} capture triggers are in force; delete one or wait for one to expire"
            ));
        }
        active.push(t);
        self.len.store(active.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Ends a subject's trigger early; whether there was one.
    pub fn clear(&self, dim: Dim, value: &str, now: u64) -> bool {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        let before = active.len();
        active.retain(|a| a.expires_at > now && !(a.dim == dim && a.value == value));
        let found = active.len() < before;
        self.len.store(active.len(), Ordering::Relaxed);
        found
    }

    /// The triggers in force (expired ones are dropped here).
    pub fn list(&self, now: u64) -> Vec<Trigger> {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        active.retain(|a| a.expires_at > now);
        self.len.store(active.len(), Ordering::Relaxed);
        active.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(dim: Dim, value: &str, expires_at: u64) -> Trigger {
        Trigger {
            dim,
            value: value.into(),
            by: "ops".into(),
            set_at: 0,
            expires_at,
        }
    }

    #[test]
    fn triggers_match_expire_and_are_bounded() {
        let tr = Triggers::default();
        let alice = Identity {
            user: Some("alice".into()),
            ..Identity::default()
        };
        assert!(!tr.covers(&alice, 10));
        tr.set(t(Dim::User, "alice", 100), 10).expect("set");
        assert!(tr.covers(&alice, 99));
        assert!(!tr.covers(&alice, 100), "expired");
        assert!(!tr.covers(&Identity::default(), 50));
        for i in 0..MAX_TRIGGERS - 1 {
            tr.set(t(Dim::Key, &format!("k{i}"), 100), 10).expect("set");
        }
        assert!(tr.set(t(Dim::Feature, "one-too-many", 100), 10).is_err());
        // Replacing a subject's own trigger is always allowed.
        tr.set(t(Dim::User, "alice", 200), 10).expect("replace");
        assert!(tr.clear(Dim::User, "alice", 10));
        assert!(!tr.covers(&alice, 50));
        // Past expiry they all go.
        assert!(tr.list(100).is_empty());
    }
}
