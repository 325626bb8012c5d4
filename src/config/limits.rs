//! Config for token limits and rate limits.

use std::collections::HashSet;

use super::raw::RawConfig;
use super::{Overrides, RateLimits, Validator};
pub use crate::vocab::Dim;
use crate::vocab::Subject;

/// Per-request token limits; `None` = no limit at this level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenLimits {
    pub max_input: Option<u64>,
    pub max_output: Option<u64>,
}

impl TokenLimits {
    /// The tighter of two sets of limits.
    pub fn min(self, other: TokenLimits) -> TokenLimits {
        let m = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        TokenLimits {
            max_input: m(self.max_input, other.max_input),
            max_output: m(self.max_output, other.max_output),
        }
    }
}

/// One rate limit rule: limits per minute for each combination of `scope`
/// values (an empty scope is one global bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRule {
    pub name: String,
    pub scope: Vec<Dim>,
    /// Only requests for these public models (globs); `None` = all.
    pub models: Option<Vec<String>>,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub max_concurrent: Option<u64>,
    /// Scope values with their own limits (`None`: exempt).
    pub overrides: Overrides<Option<RateLimits>>,
}

impl RateRule {
    /// The rule's own limits.
    pub fn own(&self) -> RateLimits {
        RateLimits {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            max_concurrent: self.max_concurrent,
        }
    }

    /// The limits for a subject's bucket (`None`: exempt).
    pub fn limits_for(&self, subject: &Subject<'_>) -> Option<RateLimits> {
        match self.overrides.for_subject(&self.scope, subject) {
            Some(o) => *o,
            None => Some(self.own()),
        }
    }
}

impl Validator<'_> {
    pub(super) fn token_limits(
        &mut self,
        field: &str,
        input: Option<u64>,
        output: Option<u64>,
    ) -> TokenLimits {
        if input == Some(0) {
            self.err(
                &format!("{field}.max_input_tokens"),
                "must be greater than zero",
            );
        }
        if output == Some(0) {
            self.err(
                &format!("{field}.max_output_tokens"),
                "must be greater than zero",
            );
        }
        TokenLimits {
            max_input: input,
            max_output: output,
        }
    }

    /// A `scope = [...]` list of attribution dimensions.
    pub(super) fn dims(&mut self, field: &str, names: &[String]) -> Vec<Dim> {
        let mut scope = Vec::new();
        for (j, d) in names.iter().enumerate() {
            let dim = match d.as_str() {
                "key" => Dim::Key,
                "user" => Dim::User,
                "team" => Dim::Team,
                "model" => Dim::Model,
                "feature" => Dim::Feature,
                "run" => Dim::Run,
                other => {
                    self.err(
                        &format!("{field}.scope[{j}]"),
                        format!(
                            "unknown dimension {other:?} (expected key|user|team|model|feature|run)"
                        ),
                    );
                    continue;
                }
            };
            if scope.contains(&dim) {
                self.err(
                    &format!("{field}.scope[{j}]"),
                    format!("{d:?} listed twice"),
                );
            }
            scope.push(dim);
        }
        scope
    }

    pub(super) fn rate_limits(&mut self, raw: &RawConfig) -> Vec<RateRule> {
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for (i, r) in raw.rate_limits.iter().enumerate() {
            let field = format!("rate_limits[{i}]");
            let scope = self.dims(&field, &r.scope);
            if r.requests_per_minute.is_none()
                && r.tokens_per_minute.is_none()
                && r.max_concurrent.is_none()
            {
                self.err(
                    &field,
                    "sets no limit (expected requests_per_minute, tokens_per_minute or max_concurrent)",
                );
            }
            for (name, v) in [
                ("requests_per_minute", r.requests_per_minute),
                ("tokens_per_minute", r.tokens_per_minute),
                ("max_concurrent", r.max_concurrent),
            ] {
                if v == Some(0) {
                    self.err(&format!("{field}.{name}"), "must be greater than zero");
                }
            }
            let name = r.name.clone().unwrap_or_else(|| {
                let dims: Vec<&str> = scope.iter().map(|d| d.as_str()).collect();
                if dims.is_empty() {
                    format!("global-{i}")
                } else {
                    format!("{}-{i}", dims.join("+"))
                }
            });
            if !names.insert(name.clone()) {
                self.err(
                    &format!("{field}.name"),
                    format!("duplicate rate limit name {name:?}"),
                );
            }
            let own = RateLimits {
                requests_per_minute: r.requests_per_minute,
                tokens_per_minute: r.tokens_per_minute,
                max_concurrent: r.max_concurrent,
            };
            let overrides = self.rate_overrides(&field, r.overrides.as_ref(), &scope, own);
            out.push(RateRule {
                name,
                scope,
                models: r.models.clone(),
                requests_per_minute: r.requests_per_minute,
                tokens_per_minute: r.tokens_per_minute,
                max_concurrent: r.max_concurrent,
                overrides,
            });
        }
        out
    }
}
