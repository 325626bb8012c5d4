//! `[[kill_switches]]`: models, keys or features turned off by the config
//! (the runtime ones, set by the admin API, live in `crate::kill`).

use serde::{Deserialize, Serialize};

use super::raw::RawConfig;
use super::Validator;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKillSwitch {
    pub target: String,
    pub reason: Option<String>,
    pub replacement: Option<String>,
}

/// What a switch turns off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Target {
    /// Requests for this model (the name clients send, or a routed model).
    Model(String),
    /// Requests with this virtual key (by name).
    Key(String),
    /// Requests attributed to this feature.
    Feature(String),
    /// An experiment's arm (`experiment/arm`): its share goes to the
    /// control.
    Arm(String),
    /// A provider's deployments (`provider`), or one of them
    /// (`provider/model`, the model name sent to it): skipped by routing, so
    /// its share goes to the rule's other deployments and fallbacks.
    Deployment(String),
}

/// The forms a target is written in, for error messages.
pub const TARGET_FORMS: &str =
    "model=NAME, key=NAME, feature=NAME, deployment=PROVIDER[/MODEL] or arm=EXPERIMENT/ARM";

impl Target {
    /// `model=gpt-4o`, `key=ci`, `feature=search`, `arm=exp/b`,
    /// `deployment=azure-east` or `deployment=azure-east/gpt-4o`.
    pub fn parse(text: &str) -> Option<Target> {
        let (kind, value) = text.split_once('=')?;
        if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
            return None;
        }
        let value = value.to_owned();
        Some(match kind {
            "model" => Target::Model(value),
            "key" => Target::Key(value),
            "feature" => Target::Feature(value),
            "arm"
                if value
                    .split_once('/')
                    .is_some_and(|(e, a)| !e.is_empty() && !a.is_empty()) =>
            {
                Target::Arm(value)
            }
            "deployment" if !value.starts_with('/') && !value.ends_with('/') => {
                Target::Deployment(value)
            }
            _ => return None,
        })
    }

    pub fn label(&self) -> &'static str {
        match self {
            Target::Model(_) => "model",
            Target::Key(_) => "key",
            Target::Feature(_) => "feature",
            Target::Arm(_) => "arm",
            Target::Deployment(_) => "deployment",
        }
    }

    /// The provider a deployment target names.
    pub fn provider(&self) -> Option<&str> {
        match self {
            Target::Deployment(v) => Some(v.split_once('/').map_or(v.as_str(), |(p, _)| p)),
            _ => None,
        }
    }

    /// True if this is a deployment target covering `model` at `provider`.
    pub fn covers_deployment(&self, provider: &str, model: &str) -> bool {
        match self {
            Target::Deployment(v) => match v.split_once('/') {
                Some((p, m)) => p == provider && m == model,
                None => v == provider,
            },
            _ => false,
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Target::Model(v)
            | Target::Key(v)
            | Target::Feature(v)
            | Target::Arm(v)
            | Target::Deployment(v) => v,
        }
    }
}

/// One active switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    pub target: Target,
    pub reason: String,
    /// Who set it (the admin call's `x-sluice-operator`, or `config`).
    pub by: String,
    /// Unix seconds.
    pub at: u64,
    /// A model's requests go here instead of being refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

impl Validator<'_> {
    pub(super) fn kill_switches(&mut self, raw: &RawConfig) -> Vec<Switch> {
        let mut out = Vec::new();
        for (i, k) in raw.kill_switches.iter().enumerate() {
            let field = format!("kill_switches[{i}]");
            let Some(target) = Target::parse(&k.target) else {
                self.err(
                    &format!("{field}.target"),
                    format!("{:?} is not {TARGET_FORMS}", k.target),
                );
                continue;
            };
            if let Some(provider) = target.provider() {
                if !raw.providers.iter().any(|p| p.name == provider) {
                    self.err(
                        &format!("{field}.target"),
                        format!("no provider named {provider:?}"),
                    );
                }
            }
            if k.replacement.is_some() && !matches!(target, Target::Model(_)) {
                self.err(
                    &format!("{field}.replacement"),
                    "only a model can have a replacement",
                );
            }
            out.push(Switch {
                target,
                reason: k
                    .reason
                    .clone()
                    .unwrap_or_else(|| "disabled in the config".into()),
                by: "config".into(),
                at: 0,
                replacement: k.replacement.clone(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_target_names_a_provider_and_maybe_its_model() {
        let all = Target::parse("deployment=azure-east").expect("provider");
        assert_eq!(all.provider(), Some("azure-east"));
        assert!(all.covers_deployment("azure-east", "gpt-4o"));
        assert!(!all.covers_deployment("azure-west", "gpt-4o"));
        let one = Target::parse("deployment=openai/org/model-x").expect("one");
        assert_eq!(one.provider(), Some("openai"));
        assert!(one.covers_deployment("openai", "org/model-x"));
        assert!(!one.covers_deployment("openai", "model-x"));
        assert!(Target::parse("deployment=east/").is_none());
        assert_eq!(Target::parse("model=x").expect("model").provider(), None);
    }
}
