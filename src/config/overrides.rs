//! Per-entity overrides of budgets and rate limits: one scope value (a user,
//! a key, a team, `team=x|user=y` for a two-dimension scope) gets its own
//! allowance instead of the rule's, is exempt (`"unlimited"`), or is
//! blocked (`0`).
//!
//! ```toml
//! [[budgets]]
//! name = "user-daily"
//! scope = ["user"]
//! window = "day"
//! limit_usd = 5.0
//! overrides = { "user=u-1024" = 100.0, "user=ops" = "unlimited", "user=ex-intern" = 0 }
//! ```

use std::collections::HashMap;

use serde::Deserialize;

use super::{Dim, Validator};
use crate::vocab::{bucket_key, Subject};

/// A scope value (`user=alice`) → what it gets instead of the rule's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overrides<T> {
    by_scope: HashMap<String, T>,
}

impl<T> Default for Overrides<T> {
    fn default() -> Self {
        Self {
            by_scope: HashMap::new(),
        }
    }
}

impl<T> Overrides<T> {
    pub fn is_empty(&self) -> bool {
        self.by_scope.is_empty()
    }

    /// The override of a subject's scope value (only builds the value's
    /// name when there are overrides).
    pub fn for_subject(&self, scope: &[Dim], subject: &Subject<'_>) -> Option<&T> {
        if self.by_scope.is_empty() {
            return None;
        }
        let key = bucket_key("", scope, subject);
        self.by_scope.get(key.trim_start_matches('|'))
    }

    /// The override of a bucket (`rule|user=alice`).
    pub fn for_bucket(&self, bucket: &str) -> Option<&T> {
        self.by_scope.get(bucket.split_once('|')?.1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.by_scope.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn map<U>(&self, f: impl Fn(&T) -> U) -> Overrides<U> {
        Overrides {
            by_scope: self
                .by_scope
                .iter()
                .map(|(k, v)| (k.clone(), f(v)))
                .collect(),
        }
    }
}

/// A budget override as written: dollars (0 blocks) or `"unlimited"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawBudgetOverride {
    Usd(f64),
    Word(String),
}

/// A rate-limit override as written: its own limits or `"unlimited"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRateOverride {
    Limits(RawRateLimits),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub max_concurrent: Option<u64>,
}

/// The limits a rate rule applies to one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub max_concurrent: Option<u64>,
}

impl Validator<'_> {
    /// Checks an override's scope value against the rule's scope: the same
    /// dimensions in the same order, each with a value.
    fn override_scope(&mut self, field: &str, key: &str, scope: &[Dim]) -> bool {
        let parts: Vec<&str> = key.split('|').collect();
        let ok = parts.len() == scope.len()
            && parts.iter().zip(scope).all(|(p, d)| {
                p.split_once('=')
                    .is_some_and(|(dim, v)| dim == d.as_str() && !v.is_empty())
            });
        if !ok {
            let want: Vec<String> = scope.iter().map(|d| format!("{}=…", d.as_str())).collect();
            self.err(
                &format!("{field}.overrides"),
                format!(
                    "{key:?} does not name one value of this rule's scope (expected {:?})",
                    want.join("|")
                ),
            );
        }
        ok
    }

    /// A budget's overrides: nano-dollars, or `None` for exempt.
    pub(super) fn budget_overrides(
        &mut self,
        field: &str,
        raw: Option<&std::collections::BTreeMap<String, RawBudgetOverride>>,
        scope: &[Dim],
    ) -> Overrides<Option<u64>> {
        let mut out = Overrides::default();
        for (key, v) in raw.into_iter().flatten() {
            if !self.override_scope(field, key, scope) {
                continue;
            }
            let limit = match v {
                RawBudgetOverride::Usd(usd) if *usd >= 0.0 && usd.is_finite() => {
                    Some(crate::pricing::usd_to_nanos(*usd))
                }
                RawBudgetOverride::Word(w) if w == "unlimited" => None,
                _ => {
                    self.err(
                        &format!("{field}.overrides.{key:?}"),
                        "expected dollars (0 blocks) or \"unlimited\"",
                    );
                    continue;
                }
            };
            out.by_scope.insert(key.clone(), limit);
        }
        out
    }

    /// A rate rule's overrides: limits, or `None` for exempt. An override
    /// sets only limits the rule has (so whether a request's input is
    /// counted never depends on who sends it); unset ones keep the rule's.
    pub(super) fn rate_overrides(
        &mut self,
        field: &str,
        raw: Option<&std::collections::BTreeMap<String, RawRateOverride>>,
        scope: &[Dim],
        rule: RateLimits,
    ) -> Overrides<Option<RateLimits>> {
        let mut out = Overrides::default();
        for (key, v) in raw.into_iter().flatten() {
            if !self.override_scope(field, key, scope) {
                continue;
            }
            let limits = match v {
                RawRateOverride::Word(w) if w == "unlimited" => None,
                RawRateOverride::Word(_) => {
                    self.err(
                        &format!("{field}.overrides.{key:?}"),
                        "expected a table of limits or \"unlimited\"",
                    );
                    continue;
                }
                RawRateOverride::Limits(l) => {
                    for (name, set, has) in [
                        (
                            "requests_per_minute",
                            l.requests_per_minute,
                            rule.requests_per_minute,
                        ),
                        (
                            "tokens_per_minute",
                            l.tokens_per_minute,
                            rule.tokens_per_minute,
                        ),
                        ("max_concurrent", l.max_concurrent, rule.max_concurrent),
                    ] {
                        if set.is_some() && has.is_none() {
                            self.err(
                                &format!("{field}.overrides.{key:?}.{name}"),
                                "the rule sets no such limit",
                            );
                        }
                    }
                    Some(RateLimits {
                        requests_per_minute: l.requests_per_minute.or(rule.requests_per_minute),
                        tokens_per_minute: l.tokens_per_minute.or(rule.tokens_per_minute),
                        max_concurrent: l.max_concurrent.or(rule.max_concurrent),
                    })
                }
            };
            out.by_scope.insert(key.clone(), limits);
        }
        out
    }
}
