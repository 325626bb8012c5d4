//! `[cache.semantic]`: the semantic cache (answers to similar questions),
//! off unless configured and opt-in per model (see `crate::cache::semantic`).

use std::time::Duration;

use serde::Deserialize;

use super::raw::RawSize;
use super::values::parse_size;
use super::{ModelRule, ProviderConfig, Validator};

/// The largest embedding Sluice keeps (dimensions); larger ones are not stored.
pub const MAX_SEMANTIC_DIMS: usize = 8192;
/// The most entries the semantic cache may be configured to hold.
pub const MAX_SEMANTIC_ENTRIES: usize = 1_000_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSemantic {
    pub mode: Option<String>,
    pub embedding_model: Option<String>,
    pub models: Option<Vec<String>>,
    pub features: Option<Vec<String>>,
    pub keys: Option<Vec<String>>,
    pub threshold: Option<f64>,
    pub embed: Option<String>,
    pub max_entries: Option<usize>,
    pub max_entries_per_tenant: Option<usize>,
    pub max_bytes: Option<RawSize>,
    pub ttl: Option<String>,
    pub embedding_timeout: Option<String>,
    pub max_input_chars: Option<usize>,
    pub allow_tools: Option<bool>,
    pub allow_images: Option<bool>,
    pub any_temperature: Option<bool>,
    pub ignore_system_prompt: Option<bool>,
    pub false_hit_below: Option<f64>,
}

/// What the semantic cache does with a close enough earlier answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SemanticMode {
    /// Computes the would-be hit, serves the real answer and compares them.
    Observe,
    /// Serves the earlier answer at or above the threshold.
    Serve,
}

impl SemanticMode {
    pub fn label(self) -> &'static str {
        match self {
            SemanticMode::Observe => "observe",
            SemanticMode::Serve => "serve",
        }
    }
}

/// What text of a request is embedded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedWhat {
    /// The last user message only (earlier turns are ignored).
    LastUser,
    /// Every message of the conversation, in order (system prompt apart).
    Conversation,
}

/// The validated `[cache.semantic]`.
#[derive(Debug, Clone)]
pub struct SemanticConfig {
    pub mode: SemanticMode,
    /// The model (a `[[models]]` name) asked for embeddings, OpenAI-style.
    pub embedding_model: String,
    /// Client model names (globs) whose requests may use the cache.
    pub models: Vec<String>,
    /// Only these features (`None`: all).
    pub features: Option<Vec<String>>,
    /// Only these keys (`None`: all).
    pub keys: Option<Vec<String>>,
    /// Cosine similarity at or above which `serve` answers from the cache.
    pub threshold: f32,
    pub embed: EmbedWhat,
    pub max_entries: usize,
    pub max_entries_per_tenant: usize,
    pub max_bytes: usize,
    pub ttl: Duration,
    /// The longest the embedding call may take; past it the request goes
    /// upstream as a miss.
    pub embedding_timeout: Duration,
    /// Text embedded is cut to this many characters (its start kept).
    pub max_input_chars: usize,
    pub allow_tools: bool,
    pub allow_images: bool,
    pub any_temperature: bool,
    pub ignore_system_prompt: bool,
    /// Observe table: a would-be hit whose answer's word-set similarity to
    /// the real answer is under this counts as a false hit.
    pub false_hit_below: f64,
}

impl SemanticConfig {
    /// Whether a request for `model` from `feature` / `key` opted in.
    pub fn applies(&self, model: &str, feature: Option<&str>, key: Option<&str>) -> bool {
        let among = |list: &Option<Vec<String>>, v: Option<&str>| {
            list.as_ref()
                .is_none_or(|l| v.is_some_and(|v| l.iter().any(|x| x == v)))
        };
        self.models
            .iter()
            .any(|m| crate::glob::glob_match(m, model))
            && among(&self.features, feature)
            && among(&self.keys, key)
    }
}

impl Validator<'_> {
    pub(super) fn semantic_cache(
        &mut self,
        raw: Option<&RawSemantic>,
        models: &[ModelRule],
        providers: &[ProviderConfig],
        cache_ttl: Duration,
    ) -> Option<SemanticConfig> {
        let r = raw?;
        let mode = match r.mode.as_deref() {
            None | Some("off") => None,
            Some("observe") => Some(SemanticMode::Observe),
            Some("serve") => Some(SemanticMode::Serve),
            Some(other) => {
                self.err(
                    "cache.semantic.mode",
                    format!("unknown mode {other:?} (expected off|observe|serve)"),
                );
                None
            }
        };
        let embedding_model = match &r.embedding_model {
            Some(m)
                if models
                    .iter()
                    .any(|rule| crate::glob::glob_match(&rule.pattern, m)) =>
            {
                // Embeddings are asked OpenAI-style: some deployment must speak it.
                let openai = models
                    .iter()
                    .filter(|rule| crate::glob::glob_match(&rule.pattern, m))
                    .flat_map(|rule| &rule.deployments)
                    .any(|d| {
                        providers
                            .get(d.provider)
                            .is_some_and(|p| p.kind.is_openai_shaped())
                    });
                if !openai {
                    self.err(
                        "cache.semantic.embedding_model",
                        format!("{m:?} is served by no OpenAI-compatible provider (embeddings are asked at /v1/embeddings)"),
                    );
                }
                m.clone()
            }
            Some(m) => {
                self.err(
                    "cache.semantic.embedding_model",
                    format!("{m:?} matches no [[models]] rule"),
                );
                String::new()
            }
            None => {
                if mode.is_some() {
                    self.err(
                        "cache.semantic.embedding_model",
                        "required: the model asked for embeddings",
                    );
                }
                String::new()
            }
        };
        let opted = r.models.clone().unwrap_or_default();
        if opted.is_empty() && mode.is_some() {
            self.err(
                "cache.semantic.models",
                "required: the semantic cache is opt-in per model (globs; [\"*\"] for all)",
            );
        }
        let threshold = r.threshold.unwrap_or(0.95);
        if !(threshold.is_finite() && threshold > 0.0 && threshold <= 1.0) {
            self.err("cache.semantic.threshold", "a cosine similarity in (0, 1]");
        }
        let false_hit_below = r.false_hit_below.unwrap_or(0.5);
        if !(false_hit_below.is_finite() && (0.0..=1.0).contains(&false_hit_below)) {
            self.err("cache.semantic.false_hit_below", "from 0 to 1");
        }
        let embed = match r.embed.as_deref() {
            None | Some("last_user") => EmbedWhat::LastUser,
            Some("conversation") => EmbedWhat::Conversation,
            Some(other) => {
                self.err(
                    "cache.semantic.embed",
                    format!("unknown value {other:?} (expected last_user|conversation)"),
                );
                EmbedWhat::LastUser
            }
        };
        let max_entries = r.max_entries.unwrap_or(10_000);
        if max_entries == 0 || max_entries > MAX_SEMANTIC_ENTRIES {
            self.err(
                "cache.semantic.max_entries",
                format!("from 1 to {MAX_SEMANTIC_ENTRIES}"),
            );
        }
        let max_entries_per_tenant = r.max_entries_per_tenant.unwrap_or(max_entries);
        if max_entries_per_tenant == 0 || max_entries_per_tenant > max_entries {
            self.err(
                "cache.semantic.max_entries_per_tenant",
                "from 1 to max_entries",
            );
        }
        let max_bytes = match &r.max_bytes {
            None => 64 << 20,
            Some(v) => parse_size(v).unwrap_or_else(|e| {
                self.err("cache.semantic.max_bytes", e);
                64 << 20
            }),
        };
        let max_input_chars = r.max_input_chars.unwrap_or(8192);
        if max_input_chars == 0 || max_input_chars > 1 << 20 {
            self.err("cache.semantic.max_input_chars", "from 1 to 1048576");
        }
        let config = SemanticConfig {
            mode: mode?,
            embedding_model,
            models: opted,
            features: r.features.clone(),
            keys: r.keys.clone(),
            threshold: threshold as f32,
            embed,
            max_entries,
            max_entries_per_tenant,
            max_bytes,
            ttl: self.duration("cache.semantic.ttl", r.ttl.as_deref(), cache_ttl),
            embedding_timeout: self.duration(
                "cache.semantic.embedding_timeout",
                r.embedding_timeout.as_deref(),
                Duration::from_secs(2),
            ),
            max_input_chars,
            allow_tools: r.allow_tools.unwrap_or(false),
            allow_images: r.allow_images.unwrap_or(false),
            any_temperature: r.any_temperature.unwrap_or(false),
            ignore_system_prompt: r.ignore_system_prompt.unwrap_or(false),
            false_hit_below,
        };
        Some(config)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const BASE: &str = r#"
[[providers]]
name = "p"
kind = "openai-compatible"
base_url = "http://127.0.0.1:1/v1"
[[models]]
name = "gpt-*"
provider = "p"
[[models]]
name = "text-embedding-*"
provider = "p"
"#;

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}{extra}"), "t.toml", &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn semantic_cache_is_validated() {
        let c = parse(
            r#"
[cache]
ttl = "10m"
[cache.semantic]
mode = "observe"
embedding_model = "text-embedding-3-small"
models = ["gpt-4o*"]
features = ["faq"]
"#,
        )
        .expect("valid");
        let s = c.semantic_cache.expect("on");
        assert_eq!(s.mode, SemanticMode::Observe);
        assert_eq!(s.ttl, Duration::from_secs(600), "[cache] ttl by default");
        assert_eq!(s.max_entries_per_tenant, s.max_entries);
        assert_eq!(s.embed, EmbedWhat::LastUser);
        assert!(s.applies("gpt-4o-mini", Some("faq"), Some("k")));
        assert!(!s.applies("gpt-4o-mini", None, Some("k")));
        assert!(!s.applies("o3", Some("faq"), None));
        // Off (or absent) is no semantic cache.
        let off = parse("[cache.semantic]\nmode = \"off\"\n").expect("valid");
        assert!(off.semantic_cache.is_none());

        let all = parse(
            r#"
[cache.semantic]
mode = "serve"
embedding_model = "ada"
threshold = 1.5
embed = "everything"
max_entries = 0
max_entries_per_tenant = 5
max_bytes = "1 parsec"
false_hit_below = 2
"#,
        )
        .expect_err("invalid");
        for needle in [
            "cache.semantic.embedding_model: \"ada\" matches no [[models]] rule",
            "cache.semantic.models: required",
            "cache.semantic.threshold: a cosine similarity in (0, 1]",
            "cache.semantic.embed: unknown value \"everything\"",
            "cache.semantic.max_entries: from 1 to 1000000",
            "cache.semantic.max_entries_per_tenant: from 1 to max_entries",
            "cache.semantic.max_bytes: unknown size unit",
            "cache.semantic.false_hit_below: from 0 to 1",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        let anthropic = Config::parse(
            r#"
[[providers]]
name = "a"
kind = "anthropic"
base_url = "http://127.0.0.1:1"
[[models]]
name = "claude-*"
provider = "a"
[cache.semantic]
mode = "observe"
embedding_model = "claude-embed"
models = ["*"]
"#,
            "t.toml",
            &|_| None,
        )
        .expect_err("not OpenAI-shaped")
        .to_string();
        assert!(
            anthropic.contains("is served by no OpenAI-compatible provider"),
            "{anthropic}"
        );
        let unknown = parse("[cache.semantic]\nmode = \"serve\"\nthreshhold = 0.9\n")
            .expect_err("unknown key");
        assert!(unknown.contains("threshhold"), "{unknown}");
    }
}
