//! Span attributes: the OpenTelemetry GenAI semantic conventions
//! (`gen_ai.*`), HTTP's, and Sluice's own (`sluice.*`). Plain values in,
//! key-value pairs out, so what a span says is tested without an exporter.

use opentelemetry::KeyValue;

use crate::config::ProviderKind;
use crate::usage::Usage;
use crate::vocab::Endpoint;

/// `gen_ai.system` for a provider's API.
pub fn system(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Azure => "az.ai.openai",
        ProviderKind::Bedrock => "aws.bedrock",
        // An OpenAI-compatible server speaks OpenAI's API; which one it is
        // shows in `sluice.provider`.
        _ => "openai",
    }
}

/// `gen_ai.operation.name` for an endpoint (none for paths that are not a
/// model call).
pub fn operation(endpoint: Endpoint) -> Option<&'static str> {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::Responses => Some("chat"),
        Endpoint::Completions => Some("text_completion"),
        Endpoint::Embeddings => Some("embeddings"),
        Endpoint::CountTokens | Endpoint::Models | Endpoint::Other => None,
    }
}

/// What a request came to, when its record finishes.
pub struct RequestEnd<'a> {
    pub endpoint: Endpoint,
    pub status: u16,
    pub system: Option<&'static str>,
    /// The model the client asked for.
    pub request_model: Option<&'a str>,
    /// The upstream model that answered (or would have).
    pub response_model: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
    pub cache: &'static str,
    pub attempts: u32,
    pub budget_remaining_usd: Option<f64>,
    /// The error kind (also the usage record's `error`).
    pub error: Option<&'static str>,
    pub stream: bool,
    /// How the response body ended (`complete`, `client_gone`, …).
    pub end: &'static str,
    /// The answer's finish reason (as in the usage record).
    pub finish_reason: Option<&'a str>,
}

impl RequestEnd<'_> {
    pub fn attributes(&self) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(20);
        a.push(KeyValue::new(
            "http.response.status_code",
            i64::from(self.status),
        ));
        a.push(KeyValue::new("sluice.endpoint", self.endpoint.label()));
        if let Some(op) = operation(self.endpoint) {
            a.push(KeyValue::new("gen_ai.operation.name", op));
        }
        if let Some(s) = self.system {
            a.push(KeyValue::new("gen_ai.system", s));
        }
        if let Some(m) = self.request_model {
            a.push(KeyValue::new("gen_ai.request.model", m.to_owned()));
        }
        if let Some(m) = self.response_model {
            a.push(KeyValue::new("gen_ai.response.model", m.to_owned()));
        }
        if let Some(u) = self.usage {
            a.push(KeyValue::new("gen_ai.usage.input_tokens", tokens(u.input)));
            a.push(KeyValue::new(
                "gen_ai.usage.output_tokens",
                tokens(u.output),
            ));
        }
        if let Some(r) = self.finish_reason {
            a.push(KeyValue::new(
                "gen_ai.response.finish_reasons",
                opentelemetry::Value::Array(
                    vec![opentelemetry::StringValue::from(r.to_owned())].into(),
                ),
            ));
        }
        if let Some(p) = self.provider {
            a.push(KeyValue::new("sluice.provider", p.to_owned()));
        }
        if let Some(c) = self.cost_usd {
            a.push(KeyValue::new("sluice.cost_usd", c));
        }
        a.push(KeyValue::new("sluice.cache", self.cache));
        a.push(KeyValue::new("sluice.attempts", i64::from(self.attempts)));
        if let Some(b) = self.budget_remaining_usd {
            a.push(KeyValue::new("sluice.budget.remaining_usd", b));
        }
        if let Some(e) = self.error {
            a.push(KeyValue::new("sluice.error", e));
        }
        a.push(KeyValue::new("sluice.stream", self.stream));
        a.push(KeyValue::new("sluice.end", self.end));
        a
    }

    /// Why the span's status is an error: a server-side failure (5xx, an
    /// upstream stream error, a cut stream), never the client's own 4xx.
    pub fn failure(&self) -> Option<&'static str> {
        match self.error {
            Some(e) if self.status >= 500 || e == "upstream_stream_error" => Some(e),
            None if self.status >= 500 => Some("server_error"),
            _ if self.end != "complete" && self.end != "client_gone" => Some(self.end),
            _ => None,
        }
    }
}

fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One upstream attempt as it starts.
pub struct AttemptStart<'a> {
    /// `provider/model` (or the breaker's name for a glob rule).
    pub deployment: String,
    pub provider: &'a str,
    pub system: &'static str,
    /// The upstream model sent.
    pub model: &'a str,
    /// 1 for the first attempt of the request.
    pub number: u32,
    /// Why there is this attempt: the previous one's outcome (`status 503`,
    /// `timeout`, `connect_error`, `context_length`).
    pub retry_reason: Option<String>,
}

impl AttemptStart<'_> {
    pub fn attributes(&self) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(7);
        a.push(KeyValue::new("sluice.deployment", self.deployment.clone()));
        a.push(KeyValue::new("sluice.provider", self.provider.to_owned()));
        a.push(KeyValue::new("gen_ai.system", self.system));
        if !self.model.is_empty() {
            a.push(KeyValue::new("gen_ai.request.model", self.model.to_owned()));
        }
        a.push(KeyValue::new("sluice.attempt", i64::from(self.number)));
        if let Some(r) = &self.retry_reason {
            a.push(KeyValue::new("sluice.retry.reason", r.clone()));
        }
        a
    }
}

/// How an attempt went.
pub struct AttemptEnd {
    /// HTTP status, 0 when no response came.
    pub status: u16,
    /// `ok`, `retryable`, `client_error`, `timeout`, `connect_error`.
    pub outcome: &'static str,
}

impl AttemptEnd {
    pub fn attributes(&self) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(2);
        if self.status != 0 {
            a.push(KeyValue::new(
                "http.response.status_code",
                i64::from(self.status),
            ));
        }
        a.push(KeyValue::new("sluice.attempt.outcome", self.outcome));
        a
    }

    pub fn failed(&self) -> bool {
        !matches!(self.outcome, "ok" | "client_error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(a: &'a [KeyValue], k: &str) -> Option<&'a opentelemetry::Value> {
        a.iter().find(|kv| kv.key.as_str() == k).map(|kv| &kv.value)
    }

    #[test]
    fn request_attributes_follow_genai_conventions() {
        let end = RequestEnd {
            endpoint: Endpoint::Messages,
            status: 200,
            system: Some("anthropic"),
            request_model: Some("claude"),
            response_model: Some("claude-3-5-haiku"),
            provider: Some("anthropic"),
            usage: Some(Usage {
                input: 12,
                output: 34,
                ..Usage::default()
            }),
            cost_usd: Some(0.5),
            cache: "miss",
            attempts: 2,
            budget_remaining_usd: None,
            error: None,
            stream: true,
            end: "complete",
            finish_reason: Some("max_tokens"),
        };
        let a = end.attributes();
        assert_eq!(get(&a, "gen_ai.operation.name"), Some(&"chat".into()));
        assert_eq!(get(&a, "gen_ai.system"), Some(&"anthropic".into()));
        assert_eq!(get(&a, "gen_ai.usage.input_tokens"), Some(&12i64.into()));
        assert_eq!(get(&a, "gen_ai.usage.output_tokens"), Some(&34i64.into()));
        assert_eq!(get(&a, "sluice.attempts"), Some(&2i64.into()));
        assert!(get(&a, "sluice.budget.remaining_usd").is_none());
        assert_eq!(
            get(&a, "gen_ai.response.finish_reasons"),
            Some(&opentelemetry::Value::Array(
                vec![opentelemetry::StringValue::from("max_tokens")].into()
            ))
        );
        assert_eq!(end.failure(), None);
    }

    #[test]
    fn failures_are_server_side_only() {
        let mut end = RequestEnd {
            endpoint: Endpoint::ChatCompletions,
            status: 429,
            system: None,
            request_model: None,
            response_model: None,
            provider: None,
            usage: None,
            cost_usd: None,
            cache: "bypass",
            attempts: 0,
            budget_remaining_usd: None,
            error: Some("rate_limited"),
            stream: false,
            end: "complete",
            finish_reason: None,
        };
        assert_eq!(end.failure(), None);
        end.status = 502;
        end.error = Some("upstream_connect");
        assert_eq!(end.failure(), Some("upstream_connect"));
        end.status = 200;
        end.error = None;
        end.end = "idle_timeout";
        assert_eq!(end.failure(), Some("idle_timeout"));
        assert_eq!(operation(Endpoint::Embeddings), Some("embeddings"));
        assert_eq!(operation(Endpoint::Models), None);
    }
}
