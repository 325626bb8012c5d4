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
}

impl Target {
    /// `model=gpt-4o`, `key=ci`, `feature=search`.
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
            _ => return None,
        })
    }

    pub fn label(&self) -> &'static str {
        match self {
            Target::Model(_) => "model",
            Target::Key(_) => "key",
            Target::Feature(_) => "feature",
            Target::Arm(_) => "arm",
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Target::Model(v) | Target::Key(v) | Target::Feature(v) | Target::Arm(v) => v,
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
                    format!(
                        "{:?} is not model=NAME, key=NAME, feature=NAME or arm=EXPERIMENT/ARM",
                        k.target
                    ),
                );
                continue;
            };
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
