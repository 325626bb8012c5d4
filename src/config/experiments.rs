//! `[[experiments]]`: a public model name split between arms (canaries, A/B
//! tests, progressive rollouts). The live side (assignment, per-arm
//! statistics, ramp state) is `crate::experiment`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::raw::RawConfig;
use super::{ModelRule, Validator};

/// The most experiments one config may hold, and arms per experiment:
/// arm names become metric labels, so both are bounded.
pub const MAX_EXPERIMENTS: usize = 64;
pub const MAX_ARMS: usize = 8;

/// Body fields an arm may not set: they change what the request is, how it
/// is priced or how it streams, not how the model answers.
const FIXED_FIELDS: &[&str] = &[
    "model",
    "messages",
    "input",
    "prompt",
    "system",
    "instructions",
    "stream",
    "stream_options",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "user",
    "metadata",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExperiment {
    pub name: String,
    pub model: String,
    pub sticky: Option<String>,
    pub control: Option<String>,
    #[serde(default)]
    pub pinned: BTreeMap<String, String>,
    #[serde(default)]
    pub arms: Vec<RawArm>,
    pub ramp: Option<RawRamp>,
    pub guards: Option<RawGuards>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArm {
    pub name: String,
    pub model: String,
    pub weight: Option<f64>,
    pub params: Option<toml::Table>,
    pub system_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRamp {
    pub steps: Vec<f64>,
    pub min_duration: Option<String>,
    pub min_samples: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuards {
    pub max_error_rate: Option<f64>,
    pub max_error_rate_increase: Option<f64>,
    pub latency_p95_ratio: Option<f64>,
    pub cost_ratio: Option<f64>,
    pub min_samples: Option<u64>,
    pub alpha: Option<f64>,
    pub webhook: Option<String>,
}

/// What keeps a caller in one arm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// An identity dimension: the same user (key, team, feature, run)
    /// always lands in the same arm, on every replica.
    Dim(super::Dim),
    /// The value of a request header.
    Header(http::HeaderName),
    /// Every request drawn anew.
    Random,
}

/// What pins a request to an arm whatever its bucket (by task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    Feature(String),
    Header(http::HeaderName, String),
}

/// One arm: a model and how requests to it are changed.
#[derive(Debug, Clone)]
pub struct Arm {
    pub name: String,
    pub model: String,
    /// Relative weight (a share of the experiment's traffic).
    pub weight: f64,
    /// Top-level body fields set on every request of this arm.
    pub params: Map<String, Value>,
    /// Prepended to the system prompt.
    pub system_prefix: Option<String>,
}

/// A progressive rollout of the one candidate arm.
#[derive(Debug, Clone, PartialEq)]
pub struct Ramp {
    /// The candidate's share at each step, in percent, increasing.
    pub steps: Vec<f64>,
    /// A step lasts at least this long…
    pub min_duration: Duration,
    /// …and sees at least this many requests in each arm.
    pub min_samples: u64,
}

/// When the candidate is rolled back at once: thresholds, and the
/// sequential test (α, minimum sample) that decides "worse".
#[derive(Debug, Clone)]
pub struct Guards {
    pub stats: crate::stats::GuardConfig,
    /// POSTed a JSON description of a rollback.
    pub webhook: Option<http::Uri>,
}

#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    /// The model name clients send.
    pub model: String,
    pub sticky: Sticky,
    /// Index of the control arm in `arms`.
    pub control: usize,
    pub pinned: Vec<(Pin, usize)>,
    pub arms: Vec<Arm>,
    pub ramp: Option<Ramp>,
    pub guards: Option<Guards>,
}

impl Experiment {
    /// The single candidate arm of a two-arm experiment.
    pub fn candidate(&self) -> Option<usize> {
        (self.arms.len() == 2).then_some(1 - self.control)
    }
}

pub(super) fn label_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Validator<'_> {
    pub(super) fn experiments(
        &mut self,
        raw: &RawConfig,
        models: &[ModelRule],
        tiers: &[super::TierRoute],
    ) -> Vec<Experiment> {
        if raw.experiments.len() > MAX_EXPERIMENTS {
            self.err(
                "experiments",
                format!("at most {MAX_EXPERIMENTS} experiments"),
            );
        }
        let mut out: Vec<Experiment> = Vec::new();
        for (i, e) in raw.experiments.iter().enumerate() {
            let field = format!("experiments[{i}]");
            if !label_ok(&e.name) {
                self.err(
                    &format!("{field}.name"),
                    "1–64 characters of letters, digits, '-', '_' or '.'",
                );
            }
            if out.iter().any(|o| o.name == e.name) {
                self.err(&format!("{field}.name"), format!("{:?} used twice", e.name));
            }
            if out.iter().any(|o| o.model == e.model) {
                self.err(
                    &format!("{field}.model"),
                    format!("{:?} is already split by another experiment", e.model),
                );
            }
            if tiers.iter().any(|t| t.model == e.model) {
                self.err(
                    &format!("{field}.model"),
                    format!(
                        "{:?} is a routing model; an experiment needs a name of its own",
                        e.model
                    ),
                );
            }
            let arms = self.arms(&field, &e.arms, models);
            let control = match &e.control {
                None => 0,
                Some(c) => arms.iter().position(|a| &a.name == c).unwrap_or_else(|| {
                    self.err(&format!("{field}.control"), format!("no arm named {c:?}"));
                    0
                }),
            };
            let sticky = self.sticky(&field, e.sticky.as_deref());
            let pinned = self.pins(&field, &e.pinned, &arms);
            let ramp = e.ramp.as_ref().map(|r| self.ramp(&field, r, arms.len()));
            let guards = e
                .guards
                .as_ref()
                .map(|g| self.guards(&field, g, arms.len()));
            out.push(Experiment {
                name: e.name.clone(),
                model: e.model.clone(),
                sticky,
                control,
                pinned,
                arms,
                ramp,
                guards,
            });
        }
        out
    }

    fn arms(&mut self, field: &str, raw: &[RawArm], models: &[ModelRule]) -> Vec<Arm> {
        if raw.len() < 2 || raw.len() > MAX_ARMS {
            self.err(
                &format!("{field}.arms"),
                format!("between 2 and {MAX_ARMS} arms"),
            );
        }
        let mut arms: Vec<Arm> = Vec::new();
        for (j, a) in raw.iter().enumerate() {
            let f = format!("{field}.arms[{j}]");
            if !label_ok(&a.name) {
                self.err(
                    &format!("{f}.name"),
                    "1–64 characters of letters, digits, '-', '_' or '.'",
                );
            }
            if arms.iter().any(|o| o.name == a.name) {
                self.err(&format!("{f}.name"), format!("{:?} used twice", a.name));
            }
            if !models
                .iter()
                .any(|m| crate::glob::glob_match(&m.pattern, &a.model))
            {
                self.err(
                    &format!("{f}.model"),
                    format!("{:?} matches no [[models]] rule", a.model),
                );
            }
            let weight = a.weight.unwrap_or(1.0);
            if !(weight.is_finite() && weight >= 0.0) {
                self.err(&format!("{f}.weight"), "must be zero or more");
            }
            let params = match &a.params {
                None => Map::new(),
                Some(t) => match serde_json::to_value(t) {
                    Ok(Value::Object(m)) => m,
                    _ => {
                        self.err(&format!("{f}.params"), "must be a table");
                        Map::new()
                    }
                },
            };
            for k in params.keys() {
                if FIXED_FIELDS.contains(&k.as_str()) {
                    self.err(
                        &format!("{f}.params.{k}"),
                        "an arm may not set this field (it changes the request, its price or its stream)",
                    );
                }
            }
            arms.push(Arm {
                name: a.name.clone(),
                model: a.model.clone(),
                weight,
                params,
                system_prefix: a.system_prefix.clone().filter(|p| !p.is_empty()),
            });
        }
        if arms.iter().map(|a| a.weight).sum::<f64>() <= 0.0 {
            self.err(&format!("{field}.arms"), "the weights add up to zero");
        }
        arms
    }

    fn sticky(&mut self, field: &str, raw: Option<&str>) -> Sticky {
        use super::Dim;
        match raw.unwrap_or("user") {
            "random" => Sticky::Random,
            "user" => Sticky::Dim(Dim::User),
            "key" => Sticky::Dim(Dim::Key),
            "team" => Sticky::Dim(Dim::Team),
            "feature" => Sticky::Dim(Dim::Feature),
            "run" => Sticky::Dim(Dim::Run),
            other => match other
                .strip_prefix("header:")
                .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
            {
                Some(h) => Sticky::Header(h),
                None => {
                    self.err(
                        &format!("{field}.sticky"),
                        format!(
                            "{other:?} is not user, key, team, feature, run, header:NAME or random"
                        ),
                    );
                    Sticky::Random
                }
            },
        }
    }

    fn pins(
        &mut self,
        field: &str,
        raw: &BTreeMap<String, String>,
        arms: &[Arm],
    ) -> Vec<(Pin, usize)> {
        let mut out = Vec::new();
        for (what, arm) in raw {
            let f = format!("{field}.pinned.{what:?}");
            let Some(idx) = arms.iter().position(|a| &a.name == arm) else {
                self.err(&f, format!("no arm named {arm:?}"));
                continue;
            };
            let pin = match what.split_once('=') {
                Some(("feature", v)) if !v.is_empty() => Pin::Feature(v.to_owned()),
                Some((h, v)) if h.starts_with("header:") => {
                    match http::HeaderName::from_bytes(&h.as_bytes()["header:".len()..]) {
                        Ok(name) => Pin::Header(name, v.to_owned()),
                        Err(_) => {
                            self.err(&f, "not a valid header name");
                            continue;
                        }
                    }
                }
                _ => {
                    self.err(&f, "expected \"feature=NAME\" or \"header:NAME=VALUE\"");
                    continue;
                }
            };
            out.push((pin, idx));
        }
        out
    }

    fn ramp(&mut self, field: &str, raw: &RawRamp, arms: usize) -> Ramp {
        let f = format!("{field}.ramp");
        if arms != 2 {
            self.err(
                &f,
                "a ramp needs exactly two arms (the control and one candidate)",
            );
        }
        if raw.steps.is_empty()
            || raw
                .steps
                .iter()
                .any(|s| !(s.is_finite() && *s > 0.0 && *s <= 100.0))
            || raw.steps.windows(2).any(|w| w[0] >= w[1])
        {
            self.err(
                &format!("{f}.steps"),
                "increasing percentages above 0 and at most 100",
            );
        }
        Ramp {
            steps: raw.steps.clone(),
            min_duration: self.duration(
                &format!("{f}.min_duration"),
                raw.min_duration.as_deref(),
                Duration::from_secs(600),
            ),
            min_samples: raw.min_samples.unwrap_or(500),
        }
    }

    fn guards(&mut self, field: &str, raw: &RawGuards, arms: usize) -> Guards {
        let f = format!("{field}.guards");
        if arms != 2 {
            self.err(
                &f,
                "guards need exactly two arms (the control and one candidate)",
            );
        }
        for (name, v) in [
            ("max_error_rate", raw.max_error_rate),
            ("max_error_rate_increase", raw.max_error_rate_increase),
        ] {
            if v.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                self.err(&format!("{f}.{name}"), "a fraction from 0 to 1");
            }
        }
        let alpha = raw.alpha.unwrap_or(0.05);
        if !(alpha > 0.0 && alpha < 0.5) {
            self.err(&format!("{f}.alpha"), "between 0 and 0.5");
        }
        if [
            raw.max_error_rate,
            raw.max_error_rate_increase,
            raw.latency_p95_ratio,
            raw.cost_ratio,
        ]
        .iter()
        .all(Option::is_none)
        {
            self.err(&f, "no guard set (max_error_rate, max_error_rate_increase, latency_p95_ratio or cost_ratio)");
        }
        for (name, v) in [
            ("latency_p95_ratio", raw.latency_p95_ratio),
            ("cost_ratio", raw.cost_ratio),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                self.err(&format!("{f}.{name}"), "must be greater than zero");
            }
        }
        let webhook = raw.webhook.as_deref().and_then(|w| {
            let uri = w.parse::<http::Uri>().ok().filter(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
            });
            if uri.is_none() {
                self.err(&format!("{f}.webhook"), "must be an http(s) URL");
            }
            uri
        });
        Guards {
            stats: crate::stats::GuardConfig {
                max_error_rate: raw.max_error_rate,
                max_error_rate_increase: raw.max_error_rate_increase,
                max_p95_latency_ratio: raw.latency_p95_ratio,
                max_cost_ratio: raw.cost_ratio,
                test: crate::stats::TestConfig {
                    alpha,
                    min_samples: raw.min_samples.unwrap_or(200),
                    ..crate::stats::TestConfig::default()
                },
            },
            webhook,
        }
    }
}
