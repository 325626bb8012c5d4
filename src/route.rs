//! Public model name → provider and upstream model.

use crate::config::{ModelRule, TokenLimits};
use crate::error::ApiShape;
use crate::upstream::Upstream;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Index into the snapshot's upstreams.
    pub provider: usize,
    /// The model name to send upstream.
    pub upstream_model: String,
    /// The rule's token limits and context window override.
    pub limits: TokenLimits,
    pub context_window: Option<u64>,
}

/// Ordered model rules of one config snapshot.
#[derive(Debug, Default)]
pub struct Router {
    rules: Vec<ModelRule>,
}

impl Router {
    pub fn new(rules: Vec<ModelRule>) -> Self {
        Self { rules }
    }

    /// The first rule matching `model` whose provider speaks `shape`.
    pub fn resolve(&self, model: &str, shape: ApiShape, upstreams: &[Upstream]) -> Option<Route> {
        self.rules
            .iter()
            .filter(|r| upstreams.get(r.provider).is_some_and(|u| u.speaks(shape)))
            .find(|r| glob_match(&r.pattern, model))
            .map(|r| Route {
                provider: r.provider,
                upstream_model: r.upstream_model.clone().unwrap_or_else(|| model.to_owned()),
                limits: r.limits,
                context_window: r.context_window,
            })
    }

    /// Exact (non-glob) public model names, for `GET /v1/models`.
    pub fn listed_models(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .map(|r| r.pattern.as_str())
            .filter(|p| !p.contains('*'))
    }
}

/// Matches `text` against a pattern where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or("");
    for part in parts {
        match remaining.find(part) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("claude-*", "claude-sonnet-4"));
        assert!(!glob_match("claude-*", "gpt-4o"));
        assert!(glob_match("gpt-*-mini", "gpt-4o-mini"));
        assert!(!glob_match("gpt-*-mini", "gpt-4o"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*bc", "abc-"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("ab*ab", "ab"));
    }
}
