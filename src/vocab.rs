//! The shared vocabulary of a request: which API it speaks, which endpoint
//! it targets, who it is attributed to, the scope dimensions limits and
//! budgets are keyed on, and the descriptions of a refusal. A leaf module:
//! it depends on no other module of the crate, and every other module may
//! depend on it.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// Which provider API a request speaks; errors are rendered in its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiShape {
    OpenAi,
    Anthropic,
}

/// The API endpoint a request targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Models,
    Messages,
    CountTokens,
    /// Any other `/v1/*` path, passed through to the default provider.
    Other,
}

impl Endpoint {
    /// The API shape of this endpoint; `/v1/models` and other paths follow
    /// the client (Anthropic clients send `anthropic-version`).
    pub fn shape(self, anthropic_client: bool) -> ApiShape {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => ApiShape::Anthropic,
            Endpoint::Models | Endpoint::Other if anthropic_client => ApiShape::Anthropic,
            _ => ApiShape::OpenAi,
        }
    }

    /// Endpoints whose POST body is JSON naming a model.
    pub fn has_model(self) -> bool {
        !matches!(self, Endpoint::Models | Endpoint::Other)
    }

    /// Endpoints that generate tokens (and so are accounted and may stream).
    pub fn generates(self) -> bool {
        matches!(
            self,
            Endpoint::ChatCompletions
                | Endpoint::Completions
                | Endpoint::Responses
                | Endpoint::Messages
        )
    }

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Models => "models",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
            Endpoint::Other => "other",
        }
    }
}

/// Attribution of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Virtual key name, or `passthrough:<fingerprint>` for a client key.
    pub key: Option<Arc<str>>,
    pub user: Option<Arc<str>>,
    pub team: Option<Arc<str>>,
    pub feature: Option<Arc<str>>,
    /// The end user named in the body (`user`, `metadata.user_id`), when trusted.
    pub end_user: Option<String>,
}

/// What a rate limit is counted per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    Key,
    User,
    Team,
    Model,
    Feature,
}

impl Dim {
    pub fn as_str(self) -> &'static str {
        match self {
            Dim::Key => "key",
            Dim::User => "user",
            Dim::Team => "team",
            Dim::Model => "model",
            Dim::Feature => "feature",
        }
    }
}

/// The request attributes rate limits are keyed on.
pub struct Subject<'a> {
    pub identity: &'a Identity,
    pub model: &'a str,
}

impl Subject<'_> {
    fn value(&self, d: Dim) -> &str {
        let id = self.identity;
        match d {
            Dim::Key => id.key.as_deref(),
            Dim::User => id.user.as_deref(),
            Dim::Team => id.team.as_deref(),
            Dim::Model => Some(self.model),
            Dim::Feature => id.feature.as_deref(),
        }
        .unwrap_or("")
    }
}

/// The bucket name of a rule for a subject: `rule|dim=value|…` (rate
/// limits and budgets name their buckets alike).
pub fn bucket_key(name: &str, scope: &[Dim], s: &Subject<'_>) -> String {
    let mut k = name.to_owned();
    for d in scope {
        k.push('|');
        k.push_str(d.as_str());
        k.push('=');
        k.push_str(s.value(*d));
    }
    k
}

/// What a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Requests,
    Tokens,
    Concurrent,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    pub rule: String,
    pub kind: LimitKind,
    pub limit: u64,
    pub requested: u64,
    pub retry_after: Duration,
    pub never_fits: bool,
}

/// Remaining allowance of the tightest limit, for `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allowance {
    pub requests: Option<(u64, u64, Duration)>,
    pub tokens: Option<(u64, u64, Duration)>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    pub budget: String,
    pub bucket: String,
    /// Nano-dollars, as every amount below.
    pub limit: u64,
    pub spent: u64,
    pub requested: u64,
}
