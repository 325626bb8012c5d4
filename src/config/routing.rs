//! Config for where requests go and how they survive failures: model
//! deployments and fallbacks, load balancing, retries, circuit breakers and
//! tier routing rules.

use std::time::Duration;

use super::raw::{RawBreaker, RawConfig, RawRetry};
use super::{ProviderConfig, TokenLimits, Validator};

/// A public model name (or glob) mapped to one or more deployments.
#[derive(Debug, Clone)]
pub struct ModelRule {
    pub pattern: String,
    pub deployments: Vec<Deployment>,
    pub balance: Balance,
    /// Other public models to try, in order, once this one's attempts fail.
    pub fallbacks: Vec<String>,
    /// A larger-context model to switch to at once on a context-length error.
    pub context_fallback: Option<String>,
    /// Overrides the built-in context window for this model.
    pub context_window: Option<u64>,
    pub limits: TokenLimits,
}

/// One place a model is served: a provider and the model name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub provider: usize,
    /// `None`: the requested name.
    pub upstream_model: Option<String>,
    pub weight: u32,
}

/// How a model's deployments share its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Random, in proportion to weight.
    Weighted,
    /// The deployment with the fewest requests in flight.
    LeastInflight,
    /// Power of two choices on latency EWMA × (in flight + 1).
    P2cEwma,
}

/// Retry policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Retries per model (each model in a fallback chain gets 1 + this).
    pub max_retries: u32,
    /// Attempts per request across the whole chain.
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// `Retry-After` is honoured up to this long; longer means move on.
    pub max_retry_after: Duration,
    /// Retries may be at most this share of a deployment's recent requests…
    pub budget_ratio: f64,
    /// …plus this many per second.
    pub budget_min_per_second: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            max_attempts: 5,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(10),
            budget_ratio: 0.2,
            budget_min_per_second: 1.0,
        }
    }
}

/// Circuit breaker policy, per deployment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    pub consecutive_failures: u32,
    pub failure_rate: f64,
    pub window: Duration,
    pub min_requests: u32,
    pub open_for: Duration,
    pub half_open_probes: u32,
    /// When every deployment a request could use is open, each still admits
    /// one request per this interval (so a blip never becomes an outage).
    pub probe_interval: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(30),
            min_requests: 20,
            open_for: Duration::from_secs(30),
            half_open_probes: 1,
            probe_interval: Duration::from_secs(1),
        }
    }
}

/// A routing model (e.g. `auto`): ordered rules pick the model to use.
#[derive(Debug, Clone)]
pub struct TierRoute {
    pub model: String,
    pub default: String,
    pub rules: Vec<TierRule>,
}

/// One routing rule: every condition set must hold.
#[derive(Debug, Clone)]
pub struct TierRule {
    pub use_model: String,
    pub header: Option<HeaderMatch>,
    pub feature: Option<String>,
    pub tier: Option<String>,
    pub min_input_tokens: Option<u64>,
    pub max_input_tokens: Option<u64>,
    pub tools: Option<bool>,
    pub images: Option<bool>,
    pub last_message_matches: Option<regex::Regex>,
}

/// `name` (present) or `name=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: http::HeaderName,
    pub value: Option<String>,
}

impl Validator<'_> {
    pub(super) fn models(
        &mut self,
        raw: &RawConfig,
        providers: &[ProviderConfig],
    ) -> Vec<ModelRule> {
        let mut out = Vec::new();
        let provider_index = |name: &str| providers.iter().position(|p| p.name == name);
        for (i, m) in raw.models.iter().enumerate() {
            let field = format!("models[{i}]");
            if m.name.is_empty() {
                self.err(&format!("{field}.name"), "must not be empty");
            }
            let mut deployments = Vec::new();
            match (&m.provider, m.deployments.is_empty()) {
                (Some(_), false) => {
                    self.err(
                        &field,
                        "set either provider (one deployment) or [[models.deployments]], not both",
                    );
                }
                (None, true) => self.err(&field, "needs a provider or [[models.deployments]]"),
                _ => {}
            }
            if let Some(p) = &m.provider {
                match provider_index(p) {
                    Some(provider) => deployments.push(Deployment {
                        provider,
                        upstream_model: m.upstream_model.clone(),
                        weight: 1,
                    }),
                    None => self.err(
                        &format!("{field}.provider"),
                        format!("unknown provider {p:?}"),
                    ),
                }
                if m.upstream_model.as_deref() == Some("") {
                    self.err(&format!("{field}.upstream_model"), "must not be empty");
                }
            } else if m.upstream_model.is_some() {
                self.err(
                    &format!("{field}.upstream_model"),
                    "goes in each [[models.deployments]]",
                );
            }
            for (j, d) in m.deployments.iter().enumerate() {
                let df = format!("{field}.deployments[{j}]");
                let Some(provider) = provider_index(&d.provider) else {
                    self.err(
                        &format!("{df}.provider"),
                        format!("unknown provider {:?}", d.provider),
                    );
                    continue;
                };
                if d.weight == Some(0) {
                    self.err(&format!("{df}.weight"), "must be greater than zero");
                }
                deployments.push(Deployment {
                    provider,
                    upstream_model: d.upstream_model.clone(),
                    weight: d.weight.unwrap_or(1).max(1),
                });
            }
            if let Some(first) = deployments.first() {
                let kind = providers[first.provider].kind.is_openai_shaped();
                if deployments
                    .iter()
                    .any(|d| providers[d.provider].kind.is_openai_shaped() != kind)
                {
                    self.err(
                        &format!("{field}.deployments"),
                        "mixes OpenAI-shaped and Anthropic providers",
                    );
                }
            }
            let balance = match m.balance.as_deref() {
                None | Some("weighted") => Balance::Weighted,
                Some("least_inflight") => Balance::LeastInflight,
                Some("p2c") | Some("p2c_ewma") => Balance::P2cEwma,
                Some(other) => {
                    self.err(
                        &format!("{field}.balance"),
                        format!(
                            "unknown balance {other:?} (expected weighted|least_inflight|p2c_ewma)"
                        ),
                    );
                    Balance::Weighted
                }
            };
            if m.context_window == Some(0) {
                self.err(
                    &format!("{field}.context_window"),
                    "must be greater than zero",
                );
            }
            let limits = self.token_limits(&field, m.max_input_tokens, m.max_output_tokens);
            if deployments.is_empty() {
                continue;
            }
            out.push(ModelRule {
                pattern: m.name.clone(),
                deployments,
                balance,
                fallbacks: m.fallbacks.clone(),
                context_fallback: m.context_fallback.clone(),
                context_window: m.context_window,
                limits,
            });
        }
        // Fallbacks name other models by their exact name.
        for (i, m) in raw.models.iter().enumerate() {
            for (j, f) in m
                .fallbacks
                .iter()
                .chain(m.context_fallback.iter())
                .enumerate()
            {
                if !raw
                    .models
                    .iter()
                    .any(|o| &o.name == f && !o.name.contains('*'))
                {
                    self.err(
                        &format!("models[{i}].fallbacks[{j}]"),
                        format!("{f:?} is not the exact name of a [[models]] entry"),
                    );
                }
                if f == &m.name {
                    self.err(
                        &format!("models[{i}].fallbacks[{j}]"),
                        "a model cannot fall back to itself",
                    );
                }
            }
        }
        out
    }

    pub(super) fn retry(&mut self, r: &RawRetry) -> RetryConfig {
        let d = RetryConfig::default();
        let ratio = r.budget_ratio.unwrap_or(d.budget_ratio);
        if !(0.0..=10.0).contains(&ratio) {
            self.err("retry.budget_ratio", "must be between 0 and 10");
        }
        let attempts = r.max_attempts.unwrap_or(d.max_attempts);
        if attempts == 0 {
            self.err("retry.max_attempts", "must be at least 1");
        }
        RetryConfig {
            max_retries: r.max_retries.unwrap_or(d.max_retries),
            max_attempts: attempts.max(1),
            base_backoff: self.duration(
                "retry.base_backoff",
                r.base_backoff.as_deref(),
                d.base_backoff,
            ),
            max_backoff: self.duration(
                "retry.max_backoff",
                r.max_backoff.as_deref(),
                d.max_backoff,
            ),
            max_retry_after: self.duration(
                "retry.max_retry_after",
                r.max_retry_after.as_deref(),
                d.max_retry_after,
            ),
            budget_ratio: ratio,
            budget_min_per_second: r
                .budget_min_per_second
                .unwrap_or(d.budget_min_per_second)
                .max(0.0),
        }
    }

    pub(super) fn breaker(&mut self, b: &RawBreaker) -> BreakerConfig {
        let d = BreakerConfig::default();
        let rate = b.failure_rate.unwrap_or(d.failure_rate);
        if !(0.0..=1.0).contains(&rate) || rate == 0.0 {
            self.err("circuit_breaker.failure_rate", "must be in (0, 1]");
        }
        BreakerConfig {
            consecutive_failures: b
                .consecutive_failures
                .unwrap_or(d.consecutive_failures)
                .max(1),
            failure_rate: rate,
            window: self.duration("circuit_breaker.window", b.window.as_deref(), d.window),
            min_requests: b.min_requests.unwrap_or(d.min_requests).max(1),
            open_for: self.duration(
                "circuit_breaker.open_for",
                b.open_for.as_deref(),
                d.open_for,
            ),
            half_open_probes: b.half_open_probes.unwrap_or(d.half_open_probes).max(1),
            probe_interval: self.duration(
                "circuit_breaker.probe_interval",
                b.probe_interval.as_deref(),
                d.probe_interval,
            ),
        }
    }

    pub(super) fn routing(&mut self, raw: &RawConfig, models: &[ModelRule]) -> Vec<TierRoute> {
        let index = crate::glob::GlobIndex::new(models.iter().map(|m| m.pattern.as_str()));
        let known = |name: &str| index.matches_any(name);
        let mut out = Vec::new();
        for (i, r) in raw.routing.iter().enumerate() {
            let field = format!("routing[{i}]");
            if !known(&r.default) {
                self.err(
                    &format!("{field}.default"),
                    format!("no [[models]] entry serves {:?}", r.default),
                );
            }
            let mut rules = Vec::new();
            for (j, rule) in r.rules.iter().enumerate() {
                let rf = format!("{field}.rules[{j}]");
                if !known(&rule.use_model) {
                    self.err(
                        &format!("{rf}.use"),
                        format!("no [[models]] entry serves {:?}", rule.use_model),
                    );
                }
                let header = rule.header.as_deref().and_then(|h| {
                    let (name, value) = match h.split_once('=') {
                        Some((n, v)) => (n.trim(), Some(v.trim().to_owned())),
                        None => (h.trim(), None),
                    };
                    match http::HeaderName::try_from(name.to_ascii_lowercase()) {
                        Ok(name) => Some(HeaderMatch { name, value }),
                        Err(_) => {
                            self.err(
                                &format!("{rf}.header"),
                                format!("invalid header name {name:?}"),
                            );
                            None
                        }
                    }
                });
                let last_message_matches = rule.last_message_matches.as_deref().and_then(|re| {
                    match regex::Regex::new(re) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            self.err(&format!("{rf}.last_message_matches"), e);
                            None
                        }
                    }
                });
                rules.push(TierRule {
                    use_model: rule.use_model.clone(),
                    header,
                    feature: rule.feature.clone(),
                    tier: rule.tier.clone(),
                    min_input_tokens: rule.min_input_tokens,
                    max_input_tokens: rule.max_input_tokens,
                    tools: rule.tools,
                    images: rule.images,
                    last_message_matches,
                });
            }
            out.push(TierRoute {
                model: r.model.clone(),
                default: r.default.clone(),
                rules,
            });
        }
        out
    }
}
