//! Which requests are captured: a plain function of the rules, the
//! identity, the model and a random roll.

use crate::config::CaptureRule;
use crate::glob::glob_match;
use crate::vocab::Identity;

/// Why a request was armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// An admin trigger covers its key, user or feature.
    Trigger,
    /// An `on = "match"` rule.
    Match,
    /// An `on = "sample"` rule's roll.
    Sample,
    /// Only if it ends in an error (`on = "error"`).
    IfError,
}

impl Reason {
    /// The record's `reason`, or `None` when it is not written after all
    /// (an error-only capture of a request that succeeded).
    pub fn label(self, failed: bool) -> Option<&'static str> {
        match self {
            Reason::Trigger => Some("trigger"),
            Reason::Match => Some("match"),
            Reason::Sample => Some("sample"),
            Reason::IfError => failed.then_some("error"),
        }
    }
}

/// Whether (and why) to arm capture; `roll` is uniform in [0, 1).
pub fn decide(
    rules: &[CaptureRule],
    triggered: bool,
    id: &Identity,
    model: &str,
    roll: f64,
) -> Option<Reason> {
    if triggered {
        return Some(Reason::Trigger);
    }
    let is =
        |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
    let mut reason = None;
    for r in rules {
        match r {
            CaptureRule::Match {
                key,
                user,
                feature,
                model: m,
            } => {
                if is(key, id.key.as_deref())
                    && is(user, id.user.as_deref())
                    && is(feature, id.feature.as_deref())
                    && m.as_deref().is_none_or(|m| glob_match(m, model))
                {
                    return Some(Reason::Match);
                }
            }
            CaptureRule::Sample(ratio) if roll < *ratio => reason = Some(Reason::Sample),
            CaptureRule::Sample(_) => {}
            CaptureRule::Error => {
                reason = reason.or(Some(Reason::IfError));
            }
        }
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: &str, user: &str) -> Identity {
        Identity {
            key: Some(key.into()),
            user: Some(user.into()),
            ..Identity::default()
        }
    }

    #[test]
    fn rules_decide() {
        let a = id("k1", "alice");
        assert_eq!(decide(&[], false, &a, "m", 0.5), None);
        assert_eq!(decide(&[], true, &a, "m", 0.5), Some(Reason::Trigger));
        let error = [CaptureRule::Error];
        assert_eq!(decide(&error, false, &a, "m", 0.5), Some(Reason::IfError));
        let sample = [CaptureRule::Error, CaptureRule::Sample(0.25)];
        assert_eq!(decide(&sample, false, &a, "m", 0.1), Some(Reason::Sample));
        assert_eq!(decide(&sample, false, &a, "m", 0.3), Some(Reason::IfError));
        assert_eq!(
            decide(&[CaptureRule::Sample(0.0)], false, &a, "m", 0.0),
            None
        );
        assert_eq!(
            decide(&[CaptureRule::Sample(1.0)], false, &a, "m", 0.999),
            Some(Reason::Sample)
        );
        let m = [CaptureRule::Match {
            key: None,
            user: Some("alice".into()),
            feature: None,
            model: Some("gpt-*".into()),
        }];
        assert_eq!(decide(&m, false, &a, "gpt-4o", 0.9), Some(Reason::Match));
        assert_eq!(decide(&m, false, &a, "claude", 0.9), None);
        assert_eq!(decide(&m, false, &id("k1", "bob"), "gpt-4o", 0.9), None);
        assert_eq!(Reason::IfError.label(false), None);
        assert_eq!(Reason::IfError.label(true), Some("error"));
    }
}
