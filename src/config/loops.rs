//! `[loop_detection]`: the same request sent again and again by one run,
//! key or user is a loop (off unless the section is present).

use std::time::Duration;

use serde::Deserialize;

use super::{Dim, Validator};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoopDetection {
    pub scope: Option<Vec<String>>,
    pub max_repeats: Option<u32>,
    pub within: Option<String>,
    pub action: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuns {
    pub max_requests: Option<u64>,
    pub max_tokens: Option<u64>,
    pub idle_expiry: Option<String>,
}

/// `[runs]`: totals over one agent run's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLimits {
    pub max_requests: Option<u64>,
    /// Input plus output tokens.
    pub max_tokens: Option<u64>,
    /// A run idle this long is forgotten (its totals start again).
    pub idle_expiry: Duration,
}

/// What a detected loop gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopAction {
    /// 429 `loop_detected`.
    Reject,
    /// Served; logged, counted and flagged in the usage record.
    Alert,
}

impl LoopAction {
    pub fn label(self) -> &'static str {
        match self {
            LoopAction::Reject => "reject",
            LoopAction::Alert => "alert",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopDetection {
    /// Whose repeats are counted (one dimension: `run`, `key`, `user`, …).
    pub scope: Dim,
    /// A request sent more than this many times within `within` is a loop.
    pub max_repeats: u32,
    pub within: Duration,
    pub action: LoopAction,
}

impl Validator<'_> {
    pub(super) fn runs(&mut self, raw: Option<&RawRuns>) -> Option<RunLimits> {
        let raw = raw?;
        if raw.max_requests == Some(0) || raw.max_tokens == Some(0) {
            self.err("runs", "max_requests and max_tokens must be at least 1");
        }
        if raw.max_requests.is_none() && raw.max_tokens.is_none() {
            self.err("runs", "set max_requests, max_tokens or both");
        }
        let idle_expiry = self.duration(
            "runs.idle_expiry",
            raw.idle_expiry.as_deref(),
            Duration::from_secs(3600),
        );
        if idle_expiry.is_zero() {
            self.err("runs.idle_expiry", "must be greater than zero");
        }
        Some(RunLimits {
            max_requests: raw.max_requests,
            max_tokens: raw.max_tokens,
            idle_expiry,
        })
    }

    pub(super) fn loop_detection(
        &mut self,
        raw: Option<&RawLoopDetection>,
    ) -> Option<LoopDetection> {
        let raw = raw?;
        let field = "loop_detection";
        let names = raw.scope.clone().unwrap_or_else(|| vec!["run".into()]);
        let dims = self.dims(field, &names);
        let scope = match dims.as_slice() {
            [d] if *d != Dim::Model => *d,
            _ => {
                self.err(
                    &format!("{field}.scope"),
                    "expected one of [\"run\"], [\"key\"], [\"user\"], [\"team\"], [\"feature\"]",
                );
                Dim::Run
            }
        };
        let max_repeats = raw.max_repeats.unwrap_or(5);
        if max_repeats == 0 {
            self.err(&format!("{field}.max_repeats"), "must be at least 1");
        }
        let within = self.duration(
            &format!("{field}.within"),
            raw.within.as_deref(),
            Duration::from_secs(600),
        );
        if within.is_zero() {
            self.err(&format!("{field}.within"), "must be greater than zero");
        }
        let action = match raw.action.as_deref() {
            None | Some("reject") => LoopAction::Reject,
            Some("alert") => LoopAction::Alert,
            Some(other) => {
                self.err(
                    &format!("{field}.action"),
                    format!("unknown action {other:?} (expected reject|alert)"),
                );
                LoopAction::Reject
            }
        };
        Some(LoopDetection {
            scope,
            max_repeats,
            within,
            action,
        })
    }
}
