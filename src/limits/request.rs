//! Per-request token limits: the tightest of the global, model and key
//! limits and the model's context window decide the output cap to enforce
//! and the most input tokens allowed.

use crate::config::{ProviderKind, TokenLimits};
use crate::error::ProxyError;
use crate::protocol::Protocol;
use crate::sniff::Endpoint;

/// What the pipeline must enforce on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Set this output-cap field to this value (clamped or injected).
    pub output_cap: Option<(&'static str, u64)>,
    /// The output cap in force after the rewrite, if any.
    pub max_output: Option<u64>,
    /// The most input tokens allowed, and which limit says so.
    pub max_input: Option<(u64, InputLimit)>,
}

/// Which limit bounds the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputLimit {
    Configured,
    ContextWindow(u64),
}

/// The output-cap field of an endpoint: the one the client used, or the one
/// the provider expects.
pub fn output_field(
    endpoint: Endpoint,
    client_field: Option<&'static str>,
    kind: ProviderKind,
) -> Option<&'static str> {
    Protocol::of(endpoint).output_field(client_field, kind == ProviderKind::OpenAi)
}

/// Plans the limits of one request.
pub fn plan(
    limits: TokenLimits,
    context_window: Option<u64>,
    requested_output: Option<u64>,
    field: Option<&'static str>,
) -> Plan {
    let output_cap = match (limits.max_output, requested_output, field) {
        (Some(cap), Some(asked), Some(f)) if asked > cap => Some((f, cap)),
        (Some(cap), None, Some(f)) => Some((f, cap)),
        _ => None,
    };
    let max_output = output_cap.map(|(_, v)| v).or(requested_output);
    let from_context = context_window.map(|w| {
        (
            w.saturating_sub(max_output.unwrap_or(0)),
            InputLimit::ContextWindow(w),
        )
    });
    let configured = limits.max_input.map(|n| (n, InputLimit::Configured));
    let max_input = match (configured, from_context) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    };
    Plan {
        output_cap,
        max_output,
        max_input,
    }
}

impl Plan {
    /// An output cap at or over the context window leaves no room for any
    /// input: said as such, before anything is counted.
    pub fn check_output(&self, context_window: Option<u64>) -> Result<(), ProxyError> {
        match (self.max_output, context_window) {
            (Some(out), Some(w)) if out >= w => Err(ProxyError::InvalidRequest(format!(
                "max_tokens is too large: {out}. This model's maximum context length is {w} \
                 tokens, and the output cap must leave room for the input."
            ))),
            _ => Ok(()),
        }
    }

    /// Checks a counted input against the plan.
    pub fn check_input(&self, tokens: u64) -> Result<(), ProxyError> {
        match self.max_input {
            Some((limit, why)) if tokens > limit => Err(ProxyError::InputTooLong {
                tokens,
                limit,
                context_window: match why {
                    InputLimit::ContextWindow(w) => Some(w),
                    InputLimit::Configured => None,
                },
                max_output: self.max_output,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(i: Option<u64>, o: Option<u64>) -> TokenLimits {
        TokenLimits {
            max_input: i,
            max_output: o,
        }
    }

    #[test]
    fn an_output_cap_over_the_window_is_named() {
        let p = plan(
            limits(None, None),
            Some(1000),
            Some(1000),
            Some("max_tokens"),
        );
        let e = p.check_output(Some(1000)).expect_err("too large");
        assert!(
            e.to_string().contains("maximum context length is 1000"),
            "{e}"
        );
        let p = plan(
            limits(None, None),
            Some(1000),
            Some(999),
            Some("max_tokens"),
        );
        assert!(p.check_output(Some(1000)).is_ok());
    }

    #[test]
    fn output_is_clamped_or_injected() {
        let p = plan(limits(None, Some(100)), None, Some(500), Some("max_tokens"));
        assert_eq!(p.output_cap, Some(("max_tokens", 100)));
        let p = plan(
            limits(None, Some(100)),
            None,
            None,
            Some("max_completion_tokens"),
        );
        assert_eq!(p.output_cap, Some(("max_completion_tokens", 100)));
        let p = plan(limits(None, Some(100)), None, Some(50), Some("max_tokens"));
        assert_eq!(p.output_cap, None);
        assert_eq!(p.max_output, Some(50));
    }

    #[test]
    fn input_limit_is_the_tightest() {
        let p = plan(
            limits(Some(1000), None),
            Some(8192),
            Some(500),
            Some("max_tokens"),
        );
        assert_eq!(p.max_input, Some((1000, InputLimit::Configured)));
        let p = plan(
            limits(Some(100_000), None),
            Some(8192),
            Some(192),
            Some("max_tokens"),
        );
        assert_eq!(p.max_input, Some((8000, InputLimit::ContextWindow(8192))));
        assert!(p.check_input(8000).is_ok());
        let e = p.check_input(8001).expect_err("too long");
        assert!(e.to_string().contains("8192"), "{e}");
    }

    #[test]
    fn fields_by_endpoint() {
        assert_eq!(
            output_field(Endpoint::ChatCompletions, None, ProviderKind::OpenAi),
            Some("max_completion_tokens")
        );
        assert_eq!(
            output_field(
                Endpoint::ChatCompletions,
                None,
                ProviderKind::OpenAiCompatible
            ),
            Some("max_tokens")
        );
        assert_eq!(
            output_field(
                Endpoint::ChatCompletions,
                Some("max_tokens"),
                ProviderKind::OpenAi
            ),
            Some("max_tokens")
        );
        assert_eq!(
            output_field(Endpoint::Responses, None, ProviderKind::OpenAi),
            Some("max_output_tokens")
        );
        assert_eq!(
            output_field(Endpoint::Messages, None, ProviderKind::Anthropic),
            Some("max_tokens")
        );
        assert_eq!(
            output_field(Endpoint::Embeddings, None, ProviderKind::OpenAi),
            None
        );
    }
}
