//! Public model name → model rule → deployments, plus routing models whose
//! tier rules pick the model to use (see `tier`).

pub mod tier;

use std::collections::HashSet;

use crate::config::{ModelRule, TierRoute, TokenLimits};
use crate::error::ApiShape;
pub use crate::glob::{glob_match, in_filter};
use crate::resilience::balance::Candidate;
use crate::resilience::{deployment_name, Deployments};
use crate::upstream::Upstream;

/// Where a request for one public model goes.
#[derive(Debug, Clone)]
pub struct Route<'a> {
    pub rule: &'a ModelRule,
    /// The public model name this route serves.
    pub public: String,
    /// The first deployment's provider and upstream model (for limits and
    /// the tokenizer; every deployment of a model speaks the same API).
    pub provider: usize,
    pub upstream_model: String,
    pub limits: TokenLimits,
    pub context_window: Option<u64>,
}

/// Ordered model rules of one config snapshot.
#[derive(Debug, Default)]
pub struct Router {
    rules: Vec<ModelRule>,
    tiers: Vec<TierRoute>,
    /// Model names written in the config (exact rule names, upstream
    /// models, routing models): the only ones used as metric labels.
    configured: HashSet<String>,
    /// Indices of the glob rules, in order.
    globs: Vec<usize>,
}

/// The metric label of a model name that no rule names.
pub const OTHER_MODEL: &str = "other";

impl Router {
    pub fn new(rules: Vec<ModelRule>, tiers: Vec<TierRoute>) -> Self {
        let configured = rules
            .iter()
            .flat_map(|r| {
                r.deployments
                    .iter()
                    .filter_map(|d| d.upstream_model.clone())
                    .chain((!r.pattern.contains('*')).then(|| r.pattern.clone()))
            })
            .chain(tiers.iter().map(|t| t.model.clone()))
            .collect();
        let globs = (0..rules.len())
            .filter(|&i| rules[i].pattern.contains('*'))
            .collect();
        Self {
            rules,
            tiers,
            configured,
            globs,
        }
    }

    /// The metric label for a model name: the name itself when the config
    /// names it, else the pattern of the first glob rule it matches, else
    /// `other` — so client-invented names never become label values.
    pub fn model_label<'a>(&'a self, model: &'a str) -> &'a str {
        if self.configured.contains(model) {
            return model;
        }
        self.globs
            .iter()
            .map(|&i| self.rules[i].pattern.as_str())
            .find(|p| glob_match(p, model))
            .unwrap_or(OTHER_MODEL)
    }

    /// The first rule matching `model` whose providers speak `shape`.
    pub fn resolve(
        &self,
        model: &str,
        shape: ApiShape,
        upstreams: &[Upstream],
    ) -> Option<Route<'_>> {
        let rule = self.rule_for(model, shape, upstreams)?;
        let first = rule.deployments.first()?;
        Some(Route {
            rule,
            public: model.to_owned(),
            provider: first.provider,
            upstream_model: first
                .upstream_model
                .clone()
                .unwrap_or_else(|| model.to_owned()),
            limits: rule.limits,
            context_window: rule.context_window,
        })
    }

    /// The first rule matching `model` whose providers speak `shape`.
    fn rule_for(&self, model: &str, shape: ApiShape, upstreams: &[Upstream]) -> Option<&ModelRule> {
        self.rules.iter().find(|r| {
            glob_match(&r.pattern, model)
                && r.deployments
                    .first()
                    .and_then(|d| upstreams.get(d.provider))
                    .is_some_and(|u| u.speaks(shape))
        })
    }

    /// The providers whose own model lists name models served here under a
    /// glob rule, for `shape` (`GET /v1/models`): the first deployment of
    /// every glob rule that sends the requested name on unchanged (a rule
    /// with an `upstream_model` maps any matching name to one model, so a
    /// provider's list says nothing about it), in rule order, each once.
    pub fn glob_providers(&self, shape: ApiShape, upstreams: &[Upstream]) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for &i in &self.globs {
            let Some(d) = self.rules[i].deployments.first() else {
                continue;
            };
            let speaks = upstreams.get(d.provider).is_some_and(|u| u.speaks(shape));
            if speaks && d.upstream_model.is_none() && !out.contains(&d.provider) {
                out.push(d.provider);
            }
        }
        out
    }

    /// Whether a request for `model` (through `shape`) is routed by a glob
    /// rule that sends the name on unchanged to `provider` first: then the
    /// provider's own model `model` is what the client gets.
    pub fn passes_on(
        &self,
        model: &str,
        shape: ApiShape,
        upstreams: &[Upstream],
        provider: usize,
    ) -> bool {
        self.rule_for(model, shape, upstreams).is_some_and(|r| {
            r.pattern.contains('*')
                && r.deployments
                    .first()
                    .is_some_and(|d| d.provider == provider && d.upstream_model.is_none())
        })
    }

    /// The name of every deployment state this config can create (see
    /// `Route::candidates`; plus `provider/*` for passthrough paths).
    pub fn deployment_names(&self, upstreams: &[Upstream]) -> HashSet<String> {
        let rules = self.rules.iter().flat_map(|r| {
            r.deployments.iter().filter_map(|d| {
                let u = upstreams.get(d.provider)?;
                let model = d.upstream_model.as_deref().unwrap_or(&r.pattern);
                Some(deployment_name(&u.name, model))
            })
        });
        let passthrough = upstreams.iter().map(|u| deployment_name(&u.name, "*"));
        rules.chain(passthrough).collect()
    }

    /// The routing model named `model`, if it is one.
    pub fn tier(&self, model: &str) -> Option<&TierRoute> {
        self.tiers.iter().find(|t| t.model == model)
    }

    /// The routes to try in order: the model itself, then its fallbacks.
    pub fn chain<'a>(
        &'a self,
        first: Route<'a>,
        shape: ApiShape,
        upstreams: &[Upstream],
    ) -> Vec<Route<'a>> {
        let fallbacks = first.rule.fallbacks.clone();
        let mut out = vec![first];
        out.extend(
            fallbacks
                .iter()
                .filter_map(|f| self.resolve(f, shape, upstreams)),
        );
        out
    }

    /// Exact (non-glob) public model names, for `GET /v1/models`.
    pub fn listed_models(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .map(|r| r.pattern.as_str())
            .chain(self.tiers.iter().map(|t| t.model.as_str()))
            .filter(|p| !p.contains('*'))
    }
}

impl Route<'_> {
    /// The deployments of this route, with their live state. State is kept
    /// per configured deployment (provider + upstream model, or provider +
    /// rule pattern when the rule sends the requested name on), never per
    /// name a client invents under a glob.
    pub fn candidates(&self, upstreams: &[Upstream], registry: &Deployments) -> Vec<Candidate> {
        self.rule
            .deployments
            .iter()
            .filter_map(|d| {
                let u = upstreams.get(d.provider)?;
                let configured = d.upstream_model.as_deref().unwrap_or(&self.rule.pattern);
                let model = d
                    .upstream_model
                    .clone()
                    .unwrap_or_else(|| self.public.clone());
                Some(Candidate {
                    provider: d.provider,
                    state: registry.get(&u.name, configured),
                    upstream_model: model,
                    weight: d.weight,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, upstream: Option<&str>) -> ModelRule {
        ModelRule {
            pattern: pattern.into(),
            deployments: vec![crate::config::Deployment {
                provider: 0,
                upstream_model: upstream.map(str::to_owned),
                weight: 1,
            }],
            balance: crate::config::Balance::Weighted,
            fallbacks: Vec::new(),
            context_fallback: None,
            context_window: None,
            limits: TokenLimits::default(),
        }
    }

    #[test]
    fn model_labels_come_from_the_config() {
        let r = Router::new(
            vec![
                rule("gpt-4o-mini", Some("mock-model")),
                rule("claude-*", None),
                rule("fast", None),
                rule("*", None),
            ],
            Vec::new(),
        );
        assert_eq!(r.model_label("mock-model"), "mock-model");
        assert_eq!(r.model_label("gpt-4o-mini"), "gpt-4o-mini");
        assert_eq!(r.model_label("fast"), "fast");
        assert_eq!(r.model_label("claude-invented-1"), "claude-*");
        assert_eq!(r.model_label("made-up\r\n\0"), "*");
        let narrow = Router::new(vec![rule("claude-*", None)], Vec::new());
        assert_eq!(narrow.model_label("gpt-x"), OTHER_MODEL);
    }
}
