//! Public model name → model rule → deployments, plus routing models whose
//! tier rules pick the model to use (see `tier`).

pub mod tier;

use std::collections::{HashMap, HashSet};

use crate::config::{ModelRule, TierRoute, TokenLimits};
use crate::error::ApiShape;
pub use crate::glob::{glob_match, in_filter, GlobIndex};
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
    /// The API the route's providers speak: the client's, or the other one
    /// when the request is translated (see `resolve_across`).
    pub api: ApiShape,
}

/// Ordered model rules of one config snapshot, indexed once at load: the
/// first rule in config order that matches a name is found with a hash
/// lookup (exact names) plus one per distinct glob prefix length, never a
/// glob match per rule (see `GlobIndex`).
#[derive(Debug, Default)]
pub struct Router {
    rules: Vec<ModelRule>,
    index: GlobIndex,
    tiers: Vec<TierRoute>,
    /// Routing model name → its first entry in `tiers`.
    tier_index: HashMap<String, usize, Fast>,
    /// Model names written in the config (exact rule names, upstream
    /// models, routing models): the only ones used as metric labels.
    configured: HashSet<String, Fast>,
}

/// Keys from config only, looked up with client names on every request:
/// foldhash (see `crate::glob`).
type Fast = foldhash::fast::RandomState;

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
        let index = GlobIndex::new(rules.iter().map(|r| r.pattern.as_str()));
        let mut tier_index = HashMap::default();
        for (i, t) in tiers.iter().enumerate() {
            tier_index.entry(t.model.clone()).or_insert(i);
        }
        Self {
            rules,
            index,
            tiers,
            tier_index,
            configured,
        }
    }

    /// The metric label for a model name: the name itself when the config
    /// names it, else the pattern of the first glob rule it matches, else
    /// `other` — so client-invented names never become label values.
    pub fn model_label<'a>(&'a self, model: &'a str) -> &'a str {
        if self.configured.contains(model) {
            return model;
        }
        self.index
            .first_glob(model, |_| true)
            .and_then(|i| self.rules.get(i))
            .map_or(OTHER_MODEL, |r| r.pattern.as_str())
    }

    /// Where a request for `model` through `shape` goes. When it can be
    /// translated (`cross`: chat completions, messages), the first rule in
    /// config order that matches, whichever API its providers speak (the
    /// route's `api` says which); otherwise the first whose providers speak
    /// `shape`.
    pub fn resolve_across(
        &self,
        model: &str,
        shape: ApiShape,
        cross: bool,
        upstreams: &[Upstream],
    ) -> Option<Route<'_>> {
        if !cross {
            return self.resolve(model, shape, upstreams);
        }
        let api_of = |i: usize| {
            let provider = self.rules.get(i)?.deployments.first()?.provider;
            let u = upstreams.get(provider)?;
            [shape, shape.other()].into_iter().find(|&s| u.speaks(s))
        };
        let i = self.index.first(model, |i| api_of(i).is_some())?;
        // Rule `i` is also the first whose providers speak `api_of(i)`: an
        // earlier match speaks neither API. So no second lookup.
        Self::route(self.rules.get(i)?, model, api_of(i)?)
    }

    /// The first rule matching `model` whose providers speak `shape`.
    pub fn resolve(
        &self,
        model: &str,
        shape: ApiShape,
        upstreams: &[Upstream],
    ) -> Option<Route<'_>> {
        Self::route(self.rule_for(model, shape, upstreams)?, model, shape)
    }

    /// The route `rule` gives a request for `model` in `shape`.
    fn route<'r>(rule: &'r ModelRule, model: &str, shape: ApiShape) -> Option<Route<'r>> {
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
            api: shape,
        })
    }

    /// The first rule matching `model` whose providers speak `shape`.
    fn rule_for(&self, model: &str, shape: ApiShape, upstreams: &[Upstream]) -> Option<&ModelRule> {
        let speaks = |i: usize| {
            self.rules
                .get(i)
                .and_then(|r| r.deployments.first())
                .and_then(|d| upstreams.get(d.provider))
                .is_some_and(|u| u.speaks(shape))
        };
        self.rules.get(self.index.first(model, speaks)?)
    }

    /// The providers whose own model lists name models served here under a
    /// glob rule, for `shape` (`GET /v1/models`): the first deployment of
    /// every glob rule that sends the requested name on unchanged (a rule
    /// with an `upstream_model` maps any matching name to one model, so a
    /// provider's list says nothing about it), in rule order, each once.
    pub fn glob_providers(&self, shape: ApiShape, upstreams: &[Upstream]) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for rule in self.rules.iter().filter(|r| r.pattern.contains('*')) {
            let Some(d) = rule.deployments.first() else {
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
        self.tier_index.get(model).and_then(|&i| self.tiers.get(i))
    }

    /// The routes to try in order: the model itself, then its fallbacks
    /// (those of the other API too when `cross`).
    pub fn chain<'a>(
        &'a self,
        first: Route<'a>,
        shape: ApiShape,
        cross: bool,
        upstreams: &[Upstream],
    ) -> Vec<Route<'a>> {
        let fallbacks = first.rule.fallbacks.clone();
        let mut out = vec![first];
        out.extend(
            fallbacks
                .iter()
                .filter_map(|f| self.resolve_across(f, shape, cross, upstreams)),
        );
        out
    }

    /// Models a rule falls back to (`fallbacks`, `context_fallback`) or a
    /// routing model picks (`default`, `use`) that only a provider of the
    /// other API serves, as `(from, to)`: chat completions and messages
    /// requests are translated on such a route (losing the fields listed in
    /// `translate`), other endpoints skip it. `sluice check` prints them.
    /// Each as `(from, to, the API of from)`.
    pub fn cross_api_targets(&self, upstreams: &[Upstream]) -> Vec<(String, String, ApiShape)> {
        let shape_of = |rule: &ModelRule| {
            let u = upstreams.get(rule.deployments.first()?.provider)?;
            Some(if u.speaks(ApiShape::Anthropic) {
                ApiShape::Anthropic
            } else {
                ApiShape::OpenAi
            })
        };
        let crosses = |to: &str, shape: ApiShape| {
            self.rule_for(to, shape, upstreams).is_none()
                && self.rule_for(to, shape.other(), upstreams).is_some()
        };
        let mut out = Vec::new();
        for rule in &self.rules {
            let Some(shape) = shape_of(rule) else {
                continue;
            };
            for to in rule.fallbacks.iter().chain(rule.context_fallback.iter()) {
                if crosses(to, shape) {
                    out.push((rule.pattern.clone(), to.clone(), shape));
                }
            }
        }
        // A routing model serves either API: its picks must agree with its
        // default's.
        for tier in &self.tiers {
            let Some(shape) = [ApiShape::OpenAi, ApiShape::Anthropic]
                .into_iter()
                .find(|&s| self.rule_for(&tier.default, s, upstreams).is_some())
            else {
                continue;
            };
            for rule in &tier.rules {
                if crosses(&rule.use_model, shape) {
                    out.push((tier.model.clone(), rule.use_model.clone(), shape));
                }
            }
        }
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
        rule_on(pattern, upstream, 0)
    }

    fn rule_on(pattern: &str, upstream: Option<&str>, provider: usize) -> ModelRule {
        ModelRule {
            pattern: pattern.into(),
            deployments: vec![crate::config::Deployment {
                provider,
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

    /// A small deterministic generator, so the random rule sets are the
    /// same on every run.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) % n as u64) as usize
        }

        fn word(&mut self, alphabet: &[&str], max_len: usize) -> String {
            let len = self.below(max_len + 1);
            (0..len)
                .map(|_| alphabet[self.below(alphabet.len())])
                .collect()
        }
    }

    fn upstreams() -> Vec<Upstream> {
        let text = "[[providers]]\nname = \"o\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
                    [[providers]]\nname = \"a\"\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:9\"\n";
        let cfg = crate::config::Config::parse(text, "t", &|_| None).expect("config");
        cfg.providers
            .iter()
            .map(|p| Upstream::new(p).expect("upstream"))
            .collect()
    }

    /// Resolution and labels as they were computed before the index: a scan
    /// of every rule in config order.
    fn linear_resolve<'r>(
        rules: &'r [ModelRule],
        model: &str,
        shape: ApiShape,
        ups: &[Upstream],
    ) -> Option<&'r str> {
        rules
            .iter()
            .find(|r| {
                glob_match(&r.pattern, model)
                    && r.deployments
                        .first()
                        .and_then(|d| ups.get(d.provider))
                        .is_some_and(|u| u.speaks(shape))
            })
            .map(|r| r.pattern.as_str())
    }

    fn linear_label<'a>(r: &'a Router, rules: &'a [ModelRule], model: &'a str) -> &'a str {
        if r.configured.contains(model) {
            return model;
        }
        rules
            .iter()
            .map(|r| r.pattern.as_str())
            .filter(|p| p.contains('*'))
            .find(|p| glob_match(p, model))
            .unwrap_or(OTHER_MODEL)
    }

    #[tokio::test]
    async fn indexed_routing_equals_the_ordered_scan() {
        let ups = upstreams();
        let patterns = &["m", "-", "1", "2", "x", "*", "*"];
        let names = &["m", "-", "1", "2", "x"];
        let mut rng = Lcg(17);
        for round in 0..300 {
            let n = 1 + rng.below(30);
            let rules: Vec<ModelRule> = (0..n)
                .map(|_| {
                    let upstream = (rng.below(3) == 0).then(|| rng.word(names, 4));
                    rule_on(&rng.word(patterns, 5), upstream.as_deref(), rng.below(2))
                })
                .collect();
            let router = Router::new(rules.clone(), Vec::new());
            for _ in 0..50 {
                let model = if rng.below(4) == 0 {
                    rules[rng.below(n)].pattern.clone()
                } else {
                    rng.word(names, 6)
                };
                for shape in [ApiShape::OpenAi, ApiShape::Anthropic] {
                    assert_eq!(
                        router
                            .resolve(&model, shape, &ups)
                            .map(|r| r.rule.pattern.as_str()),
                        linear_resolve(&rules, &model, shape, &ups),
                        "round {round}: {model:?} {shape:?}"
                    );
                }
                assert_eq!(
                    router.model_label(&model),
                    linear_label(&router, &rules, &model),
                    "round {round}: {model:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn fallbacks_to_the_other_api_are_reported() {
        let ups = upstreams();
        let mut gpt = rule_on("gpt-4o", None, 0);
        gpt.fallbacks = vec!["claude-x".into(), "gpt-mini".into()];
        gpt.context_fallback = Some("claude-x".into());
        let mut claude = rule_on("claude-x", None, 1);
        claude.fallbacks = vec!["gpt-4o".into()];
        let r = Router::new(
            vec![gpt, claude, rule_on("gpt-mini", None, 0)],
            vec![TierRoute {
                model: "auto".into(),
                default: "gpt-mini".into(),
                rules: Vec::new(),
            }],
        );
        assert_eq!(
            r.cross_api_targets(&ups),
            vec![
                ("gpt-4o".to_owned(), "claude-x".to_owned(), ApiShape::OpenAi),
                ("gpt-4o".to_owned(), "claude-x".to_owned(), ApiShape::OpenAi),
                (
                    "claude-x".to_owned(),
                    "gpt-4o".to_owned(),
                    ApiShape::Anthropic
                ),
            ]
        );
    }

    #[tokio::test]
    async fn an_earlier_glob_wins_over_a_later_exact_rule() {
        let ups = upstreams();
        let r = Router::new(
            vec![
                rule_on("claude-*", None, 1),
                rule_on("gpt-*", None, 0),
                rule_on("gpt-4o", Some("exact-upstream"), 0),
                rule_on("claude-x", None, 0),
            ],
            vec![TierRoute {
                model: "auto".into(),
                default: "gpt-4o".into(),
                rules: Vec::new(),
            }],
        );
        let route = r.resolve("gpt-4o", ApiShape::OpenAi, &ups).expect("route");
        assert_eq!(route.rule.pattern, "gpt-*", "config order, as before");
        // A rule whose provider speaks another API is skipped, not final.
        let route = r
            .resolve("claude-x", ApiShape::OpenAi, &ups)
            .expect("route");
        assert_eq!(route.rule.pattern, "claude-x");
        assert!(r.resolve("claude-x", ApiShape::Anthropic, &ups).is_some());
        assert!(r.resolve("mistral", ApiShape::OpenAi, &ups).is_none());
        // A translatable request goes where config order says, whatever the
        // API; others keep to rules of their own API.
        let route = r
            .resolve_across("claude-x", ApiShape::OpenAi, true, &ups)
            .expect("route");
        assert_eq!(
            (route.rule.pattern.as_str(), route.api),
            ("claude-*", ApiShape::Anthropic)
        );
        let route = r
            .resolve_across("claude-x", ApiShape::OpenAi, false, &ups)
            .expect("route");
        assert_eq!(
            (route.rule.pattern.as_str(), route.api),
            ("claude-x", ApiShape::OpenAi)
        );
        let route = r
            .resolve_across("gpt-4o", ApiShape::Anthropic, true, &ups)
            .expect("route");
        assert_eq!(
            (route.rule.pattern.as_str(), route.api),
            ("gpt-*", ApiShape::OpenAi)
        );
        assert_eq!(r.tier("auto").map(|t| t.default.as_str()), Some("gpt-4o"));
        assert!(r.tier("gpt-4o").is_none());
    }
}
