//! Chaos injection: which fault (if any) a request gets, from the config's
//! `[[faults]]` and the runtime ones set by `POST /admin/faults`.
//!
//! Runtime faults always expire (at most [`MAX_EXPIRES_IN`] after they are
//! set), are audited (who, when) and persisted in a file beside the state
//! file like the kill switches; at most [`MAX_RUNTIME_FAULTS`] at a time.
//! They are this replica's own (not shared through Redis in fleet mode).
//! The decisions are plain functions of the rules, the request and a random
//! roll; the stages that inject them live in `proxy`, `attempt` and `body`.

mod render;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use crate::config::{FaultAt, FaultKind, FaultRule, RawFault};
use crate::vocab::Identity;
pub use render::{status_response, MALFORMED_EVENT};

/// The most runtime faults at a time.
pub const MAX_RUNTIME_FAULTS: usize = 64;
/// The longest a runtime fault may stay on (24 h), in seconds.
pub const MAX_EXPIRES_IN: u64 = 24 * 3600;
/// The metric label of every runtime fault (their names are not bounded
/// over time).
pub const RUNTIME_LABEL: &str = "runtime";

/// The file runtime faults are kept in, beside the state file.
pub fn file_beside(state_path: &Path) -> PathBuf {
    crate::config::beside_state(state_path, "faults.json")
}

/// A runtime fault as persisted and listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub fault: RawFault,
    /// Who set it (the admin call's `x-sluice-operator`).
    pub by: String,
    /// Unix seconds.
    pub set_at: u64,
    /// Unix seconds; the fault is off from then on.
    pub expires_at: u64,
}

struct Active {
    stored: Stored,
    rule: FaultRule,
}

/// The runtime faults (config ones live in the snapshot).
#[derive(Default)]
pub struct Faults {
    active: RwLock<Vec<Active>>,
    /// Entries in `active` (read without the lock on every request).
    len: AtomicUsize,
    path: Option<PathBuf>,
}

/// What a fault is matched on.
pub struct Subject<'a> {
    pub identity: &'a Identity,
    /// The model the client asked for.
    pub model: &'a str,
    /// The upstream model it is routed to.
    pub upstream_model: &'a str,
    pub headers: &'a http::HeaderMap,
    pub stream: bool,
}

/// A fault chosen for a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub name: Arc<str>,
    pub kind: FaultKind,
    /// Of the requests (or, upstream, the attempts) it matches.
    pub percent: f64,
    /// Set at runtime (its metric label is [`RUNTIME_LABEL`]).
    pub runtime: bool,
}

impl Hit {
    /// Counts one injection in `sluice_faults_injected_total`.
    pub fn counted(&self) {
        let fault = if self.runtime {
            RUNTIME_LABEL
        } else {
            &self.name
        };
        crate::metrics::fault_injected(fault, self.kind.label());
    }

    /// Whether this attempt (or request) gets it: a roll in [0, 1).
    pub fn fires(&self, roll: f64) -> bool {
        roll * 100.0 < self.percent
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Faults {
    /// Loads the faults persisted at `path` (none if it does not exist); an
    /// entry that no longer validates or has expired is dropped.
    pub fn open(path: &Path) -> std::io::Result<Faults> {
        let stored: Vec<Stored> = crate::json_file::load_list(path)?;
        let now = now_secs();
        let active: Vec<Active> = stored
            .into_iter()
            .filter(|s| s.expires_at > now)
            .filter_map(|stored| {
                let rule = FaultRule::from_raw(&stored.fault).ok()?;
                Some(Active { stored, rule })
            })
            .take(MAX_RUNTIME_FAULTS)
            .collect();
        Ok(Faults {
            len: AtomicUsize::new(active.len()),
            active: RwLock::new(active),
            path: Some(path.to_owned()),
        })
    }

    /// No runtime fault is set (expired ones may still count until the
    /// next change): the request path's quick way out.
    pub fn is_idle(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }

    /// The runtime faults still in force.
    pub fn list(&self, now: u64) -> Vec<Stored> {
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        active
            .iter()
            .filter(|a| a.stored.expires_at > now)
            .map(|a| a.stored.clone())
            .collect()
    }

    /// Sets (or replaces, by name) a runtime fault and persists.
    pub fn set(&self, stored: Stored, rule: FaultRule, now: u64) -> Result<(), String> {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        active.retain(|a| a.stored.expires_at > now && a.rule.name != rule.name);
        if active.len() >= MAX_RUNTIME_FAULTS {
            return Err(format!("at most {MAX_RUNTIME_FAULTS} runtime faults"));
        }
        active.push(Active { stored, rule });
        self.len.store(active.len(), Ordering::Relaxed);
        self.persist(&active)
    }

    /// Removes a runtime fault; `false` when none had that name.
    pub fn clear(&self, name: &str, now: u64) -> Result<bool, String> {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        let had = active
            .iter()
            .any(|a| a.rule.name == name && a.stored.expires_at > now);
        active.retain(|a| a.stored.expires_at > now && a.rule.name != name);
        self.len.store(active.len(), Ordering::Relaxed);
        self.persist(&active).map(|()| had)
    }

    fn persist(&self, active: &[Active]) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let stored: Vec<&Stored> = active.iter().map(|a| &a.stored).collect();
        crate::json_file::save(path, &stored)
    }

    /// The fault this request gets at `at`: config rules first, then runtime
    /// ones, in order; the first that matches and whose roll comes up wins.
    /// Upstream faults are rolled per attempt instead (`roll` is not called
    /// for them: the first matching one is returned).
    pub fn choose(
        &self,
        config: &[FaultRule],
        subject: &Subject<'_>,
        at: FaultAt,
        now: u64,
        mut roll: impl FnMut() -> f64,
    ) -> Option<Hit> {
        let runtime = self.len.load(Ordering::Relaxed) > 0;
        if config.is_empty() && !runtime {
            return None;
        }
        let mut pick = |rule: &FaultRule, is_runtime: bool| {
            if rule.at != at || !matches(rule, subject) {
                return None;
            }
            let hit = Hit {
                name: Arc::from(rule.name.as_str()),
                kind: rule.kind,
                percent: rule.percent,
                runtime: is_runtime,
            };
            (at == FaultAt::Upstream || hit.fires(roll())).then_some(hit)
        };
        if let Some(hit) = config.iter().find_map(|r| pick(r, false)) {
            return Some(hit);
        }
        if !runtime {
            return None;
        }
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        active
            .iter()
            .filter(|a| a.stored.expires_at > now)
            .find_map(|a| pick(&a.rule, true))
    }
}

/// Whether every condition the rule gives holds for the request.
pub fn matches(rule: &FaultRule, s: &Subject<'_>) -> bool {
    let m = &rule.matcher;
    let same = |want: &Option<String>, have: &Option<Arc<str>>| match want {
        None => true,
        Some(w) => have.as_deref() == Some(w.as_str()),
    };
    // A stream fault needs a stream to change.
    (!rule.kind.on_stream() || s.stream)
        && m.model.as_deref().is_none_or(|g| {
            crate::glob::glob_match(g, s.model) || crate::glob::glob_match(g, s.upstream_model)
        })
        && same(&m.key, &s.identity.key)
        && same(&m.feature, &s.identity.feature)
        && same(&m.user, &s.identity.user)
        && m.header
            .as_ref()
            .is_none_or(|(name, value)| s.headers.get(name).is_some_and(|v| v == value.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> FaultRule {
        let raw: RawFault = toml::from_str(text).expect("raw");
        FaultRule::from_raw(&raw).expect("valid")
    }

    fn subject<'a>(id: &'a Identity, headers: &'a http::HeaderMap, stream: bool) -> Subject<'a> {
        Subject {
            identity: id,
            model: "gpt-4o-mini",
            upstream_model: "mock-model",
            headers,
            stream,
        }
    }

    #[test]
    fn every_condition_given_must_hold() {
        let id = Identity {
            key: Some("ci".into()),
            user: Some("alice".into()),
            feature: Some("search".into()),
            ..Identity::default()
        };
        let mut headers = http::HeaderMap::new();
        headers.insert("x-chaos", http::HeaderValue::from_static("on"));
        let s = subject(&id, &headers, false);
        assert!(matches(&rule("name = \"a\"\nstatus = 500"), &s));
        assert!(matches(
            &rule("name = \"a\"\nstatus = 500\nmodel = \"gpt-4o*\""),
            &s
        ));
        assert!(matches(
            &rule("name = \"a\"\nstatus = 500\nmodel = \"mock-*\""),
            &s
        ));
        assert!(!matches(
            &rule("name = \"a\"\nstatus = 500\nmodel = \"claude-*\""),
            &s
        ));
        let all = "name = \"a\"\nstatus = 500\nkey = \"ci\"\nuser = \"alice\"\nfeature = \"search\"\nheader = \"x-chaos=on\"";
        assert!(matches(&rule(all), &s));
        assert!(!matches(&rule(&all.replace("alice", "bob")), &s));
        assert!(!matches(&rule(&all.replace("=on", "=off")), &s));
        assert!(!matches(&rule(&all.replace("\"ci\"", "\"prod\"")), &s));
        let bare = Identity::default();
        assert!(!matches(&rule(all), &subject(&bare, &headers, false)));
        // Stream faults only for streams; a reset before the head for anything.
        assert!(!matches(&rule("name = \"a\"\ntruncate_after = 2"), &s));
        assert!(matches(
            &rule("name = \"a\"\ntruncate_after = 2"),
            &subject(&id, &headers, true)
        ));
        assert!(matches(&rule("name = \"a\"\nreset_after = 0"), &s));
    }

    #[test]
    fn percent_and_order_decide_which_fault_fires() {
        let faults = Faults::default();
        let id = Identity::default();
        let headers = http::HeaderMap::new();
        let s = subject(&id, &headers, false);
        let config = vec![
            rule("name = \"never\"\nstatus = 500\npercent = 0.0"),
            rule("name = \"half\"\nstatus = 503\npercent = 50.0"),
            rule("name = \"always\"\nstatus = 429"),
        ];
        let pick = |roll: f64| {
            faults
                .choose(&config, &s, FaultAt::Client, 0, || roll)
                .map(|h| h.name.to_string())
        };
        assert_eq!(pick(0.0).as_deref(), Some("half"), "0% never fires");
        assert_eq!(pick(0.49).as_deref(), Some("half"));
        assert_eq!(pick(0.5).as_deref(), Some("always"));
        assert_eq!(
            pick(0.999_999).as_deref(),
            Some("always"),
            "100% always fires"
        );
        // Upstream faults are picked by match alone (rolled per attempt).
        let up = vec![rule(
            "name = \"up\"\nstatus = 500\npercent = 0.0\nat = \"upstream\"",
        )];
        let hit = faults.choose(&up, &s, FaultAt::Upstream, 0, || 0.0);
        assert!(hit.as_ref().is_some_and(|h| !h.fires(0.0)));
        assert!(faults.choose(&up, &s, FaultAt::Client, 0, || 0.0).is_none());
    }

    #[test]
    fn runtime_faults_expire_are_bounded_and_persist() {
        let dir = std::env::temp_dir().join(format!("sluice-faults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("s.faults.json");
        let _ = std::fs::remove_file(&path);
        let faults = Faults::open(&path).expect("open");
        let id = Identity::default();
        let headers = http::HeaderMap::new();
        let s = subject(&id, &headers, false);
        // Reopening drops what has expired by the clock: times from now.
        let t0 = now_secs();
        let set = |name: &str, expires_at: u64| {
            let r = rule(&format!("name = \"{name}\"\nstatus = 500"));
            let stored = Stored {
                fault: r.raw.clone(),
                by: "oncall".into(),
                set_at: t0,
                expires_at,
            };
            faults.set(stored, r, t0)
        };
        set("soon", t0 + 10).expect("set");
        let at = |now| faults.choose(&[], &s, FaultAt::Client, now, || 0.0);
        assert_eq!(
            at(t0 + 5).map(|h| (h.name.to_string(), h.runtime)),
            Some(("soon".into(), true))
        );
        assert!(at(t0 + 10).is_none(), "expired");
        assert_eq!(Faults::open(&path).expect("reopen").list(t0 + 5).len(), 1);
        for i in 1..MAX_RUNTIME_FAULTS {
            set(&format!("f{i}"), u64::MAX).expect("set");
        }
        assert!(set("one-too-many", u64::MAX).is_err());
        assert!(
            set("f1", u64::MAX).is_ok(),
            "replacing by name is not adding"
        );
        assert_eq!(faults.clear("f1", t0 + 5), Ok(true));
        assert_eq!(faults.clear("f1", t0 + 5), Ok(false));
        assert_eq!(faults.list(t0 + 5).len(), MAX_RUNTIME_FAULTS - 1);
    }
}
