//! Tier routing: a routing model (say `auto`) picks the model that serves a
//! request by ordered rules on headers, feature, key tier, input size, tools,
//! images and the last user message. The first rule whose every condition
//! holds wins; otherwise the route's default.

use http::HeaderMap;
use serde_json::Value;

use crate::config::{TierRoute, TierRule};

/// What tier rules can look at.
pub struct TierInput<'a> {
    pub headers: &'a HeaderMap,
    pub feature: Option<&'a str>,
    pub key_tier: Option<&'a str>,
    pub has_tools: bool,
    pub has_images: bool,
    /// Input tokens, computed on demand (only rules on size need them).
    pub input_tokens: &'a mut dyn FnMut() -> u64,
    pub body: &'a [u8],
}

/// The model this request should use.
pub fn choose<'r>(route: &'r TierRoute, input: &mut TierInput<'_>) -> &'r str {
    let mut last_message: Option<String> = None;
    for rule in &route.rules {
        if matches(rule, input, &mut last_message) {
            return &rule.use_model;
        }
    }
    &route.default
}

fn matches(rule: &TierRule, input: &mut TierInput<'_>, last: &mut Option<String>) -> bool {
    if let Some(h) = &rule.header {
        let got = input.headers.get(&h.name).and_then(|v| v.to_str().ok());
        let ok = match (&h.value, got) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(want), Some(v)) => v.eq_ignore_ascii_case(want),
        };
        if !ok {
            return false;
        }
    }
    if rule.feature.is_some() && rule.feature.as_deref() != input.feature {
        return false;
    }
    if rule.tier.is_some() && rule.tier.as_deref() != input.key_tier {
        return false;
    }
    if rule.tools.is_some_and(|t| t != input.has_tools) {
        return false;
    }
    if rule.images.is_some_and(|i| i != input.has_images) {
        return false;
    }
    if rule.min_input_tokens.is_some() || rule.max_input_tokens.is_some() {
        let n = (input.input_tokens)();
        if rule.min_input_tokens.is_some_and(|min| n < min)
            || rule.max_input_tokens.is_some_and(|max| n > max)
        {
            return false;
        }
    }
    if let Some(re) = &rule.last_message_matches {
        let text = last.get_or_insert_with(|| last_user_text(input.body));
        if !re.is_match(text) {
            return false;
        }
    }
    true
}

/// The text of the last user message (chat, Anthropic messages, Responses).
pub fn last_user_text(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let items = v
        .get("messages")
        .and_then(Value::as_array)
        .or_else(|| v.get("input").and_then(Value::as_array));
    if let Some(items) = items {
        let last = items
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
        return last
            .and_then(|m| m.get("content"))
            .map(text_of)
            .unwrap_or_default();
    }
    v.get("input")
        .or_else(|| v.get("prompt"))
        .map(text_of)
        .unwrap_or_default()
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str).or_else(|| p.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HeaderMatch, TierRule};

    fn rule(use_model: &str) -> TierRule {
        TierRule {
            use_model: use_model.into(),
            header: None,
            feature: None,
            tier: None,
            min_input_tokens: None,
            max_input_tokens: None,
            tools: None,
            images: None,
            last_message_matches: None,
        }
    }

    fn route() -> TierRoute {
        TierRoute {
            model: "auto".into(),
            default: "fast".into(),
            rules: vec![
                TierRule {
                    header: Some(HeaderMatch {
                        name: http::HeaderName::from_static("x-tier"),
                        value: Some("strong".into()),
                    }),
                    ..rule("smart-header")
                },
                TierRule {
                    feature: Some("planner".into()),
                    ..rule("smart-feature")
                },
                TierRule {
                    tier: Some("premium".into()),
                    ..rule("smart-tier")
                },
                TierRule {
                    min_input_tokens: Some(1000),
                    ..rule("long-context")
                },
                TierRule {
                    tools: Some(true),
                    ..rule("smart-tools")
                },
                TierRule {
                    images: Some(true),
                    ..rule("vision")
                },
                TierRule {
                    last_message_matches: Some(
                        regex::Regex::new("(?i)prove|refactor").expect("re"),
                    ),
                    ..rule("smart-regex")
                },
            ],
        }
    }

    struct Case<'a> {
        headers: &'a [(&'static str, &'a str)],
        feature: Option<&'a str>,
        tier: Option<&'a str>,
        tokens: u64,
        tools: bool,
        images: bool,
        body: &'a str,
    }

    const HI: &str = r#"{"messages":[{"role":"user","content":"hi"}]}"#;

    fn base() -> Case<'static> {
        Case {
            headers: &[],
            feature: None,
            tier: None,
            tokens: 10,
            tools: false,
            images: false,
            body: HI,
        }
    }

    fn pick(c: Case<'_>) -> String {
        let mut h = HeaderMap::new();
        for (k, v) in c.headers {
            h.insert(*k, http::HeaderValue::from_str(v).expect("v"));
        }
        let tokens = c.tokens;
        let mut count = || tokens;
        let mut input = TierInput {
            headers: &h,
            feature: c.feature,
            key_tier: c.tier,
            has_tools: c.tools,
            has_images: c.images,
            input_tokens: &mut count,
            body: c.body.as_bytes(),
        };
        choose(&route(), &mut input).to_owned()
    }

    #[test]
    fn each_rule_picks_its_tier() {
        assert_eq!(pick(base()), "fast");
        let strong = [("x-tier", "Strong")];
        assert_eq!(
            pick(Case {
                headers: &strong,
                ..base()
            }),
            "smart-header"
        );
        let weak = [("x-tier", "weak")];
        assert_eq!(
            pick(Case {
                headers: &weak,
                ..base()
            }),
            "fast"
        );
        assert_eq!(
            pick(Case {
                feature: Some("planner"),
                ..base()
            }),
            "smart-feature"
        );
        assert_eq!(
            pick(Case {
                tier: Some("premium"),
                ..base()
            }),
            "smart-tier"
        );
        assert_eq!(
            pick(Case {
                tokens: 5000,
                ..base()
            }),
            "long-context"
        );
        assert_eq!(
            pick(Case {
                tools: true,
                ..base()
            }),
            "smart-tools"
        );
        assert_eq!(
            pick(Case {
                images: true,
                ..base()
            }),
            "vision"
        );
        let refactor = r#"{"messages":[{"role":"user","content":"old"},{"role":"assistant","content":"ok"},{"role":"user","content":[{"type":"text","text":"Please REFACTOR this"}]}]}"#;
        assert_eq!(
            pick(Case {
                body: refactor,
                ..base()
            }),
            "smart-regex"
        );
    }

    #[test]
    fn last_user_text_by_shape() {
        assert_eq!(last_user_text(br#"{"input":"hello"}"#), "hello");
        assert_eq!(
            last_user_text(br#"{"input":[{"role":"user","content":"a"}]}"#),
            "a"
        );
        assert_eq!(
            last_user_text(br#"{"messages":[{"role":"assistant","content":"x"}]}"#),
            ""
        );
    }
}
