//! The shared vocabulary of a request: which API it speaks, which endpoint
//! it targets, who it is attributed to, the scope dimensions limits and
//! budgets are keyed on, and the descriptions of a refusal. A leaf module:
//! it depends on no other module of the crate, and every other module may
//! depend on it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;

/// Which provider API a request speaks; errors are rendered in its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiShape {
    OpenAi,
    Anthropic,
}

impl ApiShape {
    /// The API's name, as people write it.
    pub fn name(self) -> &'static str {
        match self {
            ApiShape::OpenAi => "OpenAI",
            ApiShape::Anthropic => "Anthropic",
        }
    }

    /// The other API (what a translated request is sent as).
    pub fn other(self) -> ApiShape {
        match self {
            ApiShape::OpenAi => ApiShape::Anthropic,
            ApiShape::Anthropic => ApiShape::OpenAi,
        }
    }
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

    /// Endpoints Sluice translates to the other API (OpenAI chat
    /// completions ↔ Anthropic messages), so their routes may cross APIs.
    pub fn crosses(self) -> bool {
        matches!(self, Endpoint::ChatCompletions | Endpoint::Messages)
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
    /// The agent run (one task or conversation) the request belongs to:
    /// `x-sluice-run`, or the trace id of `traceparent` when configured.
    pub run: Option<Arc<str>>,
}

impl Identity {
    /// The value of an identity dimension (`Dim::Model` is not one).
    pub fn value(&self, d: Dim) -> Option<&str> {
        match d {
            Dim::Key => self.key.as_deref(),
            Dim::User => self.user.as_deref(),
            Dim::Team => self.team.as_deref(),
            Dim::Feature => self.feature.as_deref(),
            Dim::Run => self.run.as_deref(),
            Dim::Model => None,
        }
    }
}

/// What a rate limit is counted per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    Key,
    User,
    Team,
    Model,
    Feature,
    Run,
}

impl Dim {
    pub fn as_str(self) -> &'static str {
        match self {
            Dim::Key => "key",
            Dim::User => "user",
            Dim::Team => "team",
            Dim::Model => "model",
            Dim::Feature => "feature",
            Dim::Run => "run",
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
            Dim::Run => id.run.as_deref(),
        }
        .unwrap_or("")
    }
}

/// The bucket name of a rule for a subject: `rule|dim=value|…` (rate
/// limits and budgets name their buckets alike). Allocates: for the admin
/// view, the journal and tests; the request path uses `BucketProbe`.
pub fn bucket_key(name: &str, scope: &[Dim], s: &Subject<'_>) -> String {
    let probe = BucketProbe::new(name, scope, s);
    let mut k = String::with_capacity(probe.len());
    probe.for_each_part(|p| {
        k.push_str(p);
        true
    });
    k
}

/// A bucket's name (`rule|dim=value|…`) with a hash of its bytes computed
/// once; cloning it is a reference count. The key of the rate and budget
/// maps, which a request looks up with a `BucketProbe` — no string built.
#[derive(Debug, Clone)]
pub struct BucketName {
    hash: u64,
    text: Arc<str>,
}

impl BucketName {
    /// The name of a bucket read back from text (journal, admin calls).
    pub fn new(text: &str) -> Self {
        let mut h = BytesHasher::new();
        h.write(text.as_bytes());
        BucketName {
            hash: h.finish(),
            text: text.into(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The hash every map keyed by bucket names uses (and shards by).
    pub fn hash_value(&self) -> u64 {
        self.hash
    }
}

impl PartialEq for BucketName {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.text == other.text
    }
}

impl Eq for BucketName {}

impl Hash for BucketName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl std::fmt::Display for BucketName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A bucket name as the pieces it would be built from, borrowed from the
/// rule and the request: it hashes and compares exactly as the joined
/// string would, so a map of `BucketName`s is searched without building it.
pub struct BucketProbe<'a> {
    rule: &'a str,
    scope: &'a [Dim],
    subject: Option<&'a Subject<'a>>,
    suffix: &'a str,
    hash: u64,
}

impl<'a> BucketProbe<'a> {
    /// The bucket of rule `rule` (with scope `scope`) for `subject`.
    pub fn new(rule: &'a str, scope: &'a [Dim], subject: &'a Subject<'a>) -> Self {
        Self::with(rule, scope, Some(subject), "")
    }

    /// The bucket `rule` + `suffix` (e.g. a rule's overflow bucket).
    pub fn suffixed(rule: &'a str, suffix: &'a str) -> Self {
        Self::with(rule, &[], None, suffix)
    }

    fn with(
        rule: &'a str,
        scope: &'a [Dim],
        subject: Option<&'a Subject<'a>>,
        suffix: &'a str,
    ) -> Self {
        let mut probe = BucketProbe {
            rule,
            scope,
            subject,
            suffix,
            hash: 0,
        };
        let mut h = BytesHasher::new();
        probe.for_each_part(|p| {
            h.write(p.as_bytes());
            true
        });
        probe.hash = h.finish();
        probe
    }

    /// Calls `f` with each piece of the name in order until it returns false.
    fn for_each_part(&self, mut f: impl FnMut(&str) -> bool) -> bool {
        if !f(self.rule) {
            return false;
        }
        if let Some(s) = self.subject {
            for d in self.scope {
                if !(f("|") && f(d.as_str()) && f("=") && f(s.value(*d))) {
                    return false;
                }
            }
        }
        f(self.suffix)
    }

    fn len(&self) -> usize {
        let mut n = 0;
        self.for_each_part(|p| {
            n += p.len();
            true
        });
        n
    }

    /// Whether `text` is exactly this name.
    pub fn is(&self, text: &str) -> bool {
        let mut rest = text;
        self.for_each_part(|p| match rest.strip_prefix(p) {
            Some(r) => {
                rest = r;
                true
            }
            None => false,
        }) && rest.is_empty()
    }

    /// The name itself: allocates, so only when a bucket is created.
    pub fn to_name(&self) -> BucketName {
        let mut text = String::with_capacity(self.len());
        self.for_each_part(|p| {
            text.push_str(p);
            true
        });
        BucketName {
            hash: self.hash,
            text: text.into(),
        }
    }

    /// See `BucketName::hash_value`.
    pub fn hash_value(&self) -> u64 {
        self.hash
    }
}

impl From<&BucketName> for BucketName {
    fn from(n: &BucketName) -> Self {
        n.clone()
    }
}

impl From<&BucketProbe<'_>> for BucketName {
    fn from(p: &BucketProbe<'_>) -> Self {
        p.to_name()
    }
}

impl Hash for BucketProbe<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl hashbrown::Equivalent<BucketName> for BucketProbe<'_> {
    fn equivalent(&self, key: &BucketName) -> bool {
        self.hash == key.hash && self.is(&key.text)
    }
}

/// A keyed hash of a byte stream that does not depend on how the stream is
/// cut into `write` calls: bytes are regrouped into whole 8-byte words
/// before they reach the underlying SipHash (whose own output is only
/// defined per call sequence). Keyed once per process, so client-chosen
/// identities cannot be picked to collide.
struct BytesHasher {
    inner: std::collections::hash_map::DefaultHasher,
    buf: [u8; 8],
    filled: usize,
    total: u64,
}

impl BytesHasher {
    fn new() -> Self {
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        BytesHasher {
            inner: KEYS.get_or_init(RandomState::new).build_hasher(),
            buf: [0; 8],
            filled: 0,
            total: 0,
        }
    }

    fn write(&mut self, mut bytes: &[u8]) {
        self.total = self.total.wrapping_add(bytes.len() as u64);
        if self.filled > 0 {
            let take = (8 - self.filled).min(bytes.len());
            self.buf[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled < 8 {
                return;
            }
            self.inner.write_u64(u64::from_le_bytes(self.buf));
            self.filled = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            self.inner.write_u64(u64::from_le_bytes(word));
        }
        let tail = words.remainder();
        self.buf[..tail.len()].copy_from_slice(tail);
        self.filled = tail.len();
    }

    fn finish(mut self) -> u64 {
        let mut last = [0u8; 8];
        last[..self.filled].copy_from_slice(&self.buf[..self.filled]);
        self.inner.write_u64(u64::from_le_bytes(last));
        self.inner.write_u64(self.total);
        self.inner.finish()
    }
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
    /// The budget is per agent run (its scope has `run`).
    pub per_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            key: Some("k1".into()),
            user: Some("alice|team=x".into()),
            team: None,
            feature: Some("f".into()),
            end_user: None,
            run: None,
        }
    }

    #[test]
    fn probes_hash_and_compare_as_the_joined_name() {
        let id = identity();
        let subject = Subject {
            identity: &id,
            model: "gpt-4o",
        };
        let scopes: &[&[Dim]] = &[
            &[],
            &[Dim::User],
            &[Dim::User, Dim::Team],
            &[Dim::Key, Dim::User, Dim::Team, Dim::Model, Dim::Feature],
        ];
        for scope in scopes {
            let probe = BucketProbe::new("per-user", scope, &subject);
            let text = bucket_key("per-user", scope, &subject);
            let name = BucketName::new(&text);
            assert_eq!(probe.hash_value(), name.hash_value(), "{text}");
            assert!(probe.is(&text));
            assert!(hashbrown::Equivalent::equivalent(&probe, &name));
            assert_eq!(probe.to_name(), name);
            assert!(!probe.is(&format!("{text}x")));
            assert!(!probe.is(&text[..text.len() - 1]));
        }
        assert_eq!(
            bucket_key("r", &[Dim::User, Dim::Team], &subject),
            "r|user=alice|team=x|team="
        );
        let overflow = BucketProbe::suffixed("r", "|~overflow");
        assert_eq!(overflow.to_name().as_str(), "r|~overflow");
        assert_eq!(
            overflow.hash_value(),
            BucketName::new("r|~overflow").hash_value()
        );
    }

    #[test]
    fn the_hash_does_not_depend_on_how_the_bytes_are_cut() {
        let text = "a-rather-long-budget-name|user=someone@example.com|team=platform";
        let whole = BucketName::new(text).hash_value();
        for cut in 0..=text.len() {
            for cut2 in cut..=text.len() {
                let mut h = BytesHasher::new();
                h.write(&text.as_bytes()[..cut]);
                h.write(&text.as_bytes()[cut..cut2]);
                h.write(&text.as_bytes()[cut2..]);
                assert_eq!(h.finish(), whole, "{cut} {cut2}");
            }
        }
        assert_ne!(whole, BucketName::new("something else").hash_value());
    }
}
