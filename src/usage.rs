//! Token usage as providers report it, normalised across API shapes.

use serde::{Deserialize, Serialize};

/// The most tokens of any kind one request is believed to use: a provider
/// reporting more (a hostile or broken upstream) is ignored with a warning,
/// and the request is charged from Sluice's own count instead (as if no
/// usage had arrived).
pub const MAX_TOKENS_PER_REQUEST: u64 = 100_000_000;

/// Token counts for one request, normalised so every shape means the same:
/// `input` counts all prompt tokens, including those read from or written to
/// the provider's prompt cache (`cached_input`, `cache_write`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    /// The part of `cache_write` kept an hour (Anthropic's `ttl: "1h"`),
    /// billed at its own rate.
    #[serde(skip_serializing_if = "is_zero")]
    pub cache_write_1h: u64,
    pub output: u64,
    pub reasoning: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The `usage` object of any supported API (OpenAI chat/completions/embeddings,
/// Responses, Anthropic messages); unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct UsageFields {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    prompt_tokens_details: Option<Details>,
    input_tokens_details: Option<Details>,
    completion_tokens_details: Option<Details>,
    output_tokens_details: Option<Details>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    /// Anthropic's split of the cache writes by lifetime.
    cache_creation: Option<CacheCreation>,
}

#[derive(Debug, Default, Deserialize)]
struct CacheCreation {
    ephemeral_1h_input_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct Details {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

/// Accumulates usage from one or more reports; a later value for a field wins
/// (Anthropic streams report input in `message_start` and the running output
/// total in `message_delta`).
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageAcc {
    seen: bool,
    /// Anthropic counts `input_tokens` without cache reads and writes.
    input_excludes_cache: bool,
    input: Option<u64>,
    output: Option<u64>,
    cached: Option<u64>,
    cache_write: Option<u64>,
    cache_write_1h: Option<u64>,
    reasoning: Option<u64>,
}

impl UsageAcc {
    /// A fresh accumulator; `anthropic` selects Anthropic's input accounting.
    pub fn new(anthropic: bool) -> Self {
        Self {
            input_excludes_cache: anthropic,
            ..Self::default()
        }
    }

    pub fn add(&mut self, f: &UsageFields) {
        self.seen = true;
        let later = |slot: &mut Option<u64>, v: Option<u64>| {
            if v.is_some() {
                *slot = v;
            }
        };
        later(&mut self.input, f.prompt_tokens.or(f.input_tokens));
        later(&mut self.output, f.completion_tokens.or(f.output_tokens));
        let details_in = f
            .prompt_tokens_details
            .as_ref()
            .or(f.input_tokens_details.as_ref());
        later(
            &mut self.cached,
            details_in
                .and_then(|d| d.cached_tokens)
                .or(f.cache_read_input_tokens),
        );
        later(&mut self.cache_write, f.cache_creation_input_tokens);
        later(
            &mut self.cache_write_1h,
            f.cache_creation
                .as_ref()
                .and_then(|c| c.ephemeral_1h_input_tokens),
        );
        let details_out = f
            .completion_tokens_details
            .as_ref()
            .or(f.output_tokens_details.as_ref());
        later(
            &mut self.reasoning,
            details_out.and_then(|d| d.reasoning_tokens),
        );
    }

    /// The normalised usage, if any report was seen.
    pub fn get(&self) -> Option<Usage> {
        if !self.seen {
            return None;
        }
        let cached = self.cached.unwrap_or(0);
        let cache_write = self.cache_write.unwrap_or(0);
        let mut input = self.input.unwrap_or(0);
        if self.input_excludes_cache {
            input = input.saturating_add(cached).saturating_add(cache_write);
        }
        let u = Usage {
            input,
            cached_input: cached,
            cache_write,
            cache_write_1h: self.cache_write_1h.unwrap_or(0).min(cache_write),
            output: self.output.unwrap_or(0),
            reasoning: self.reasoning.unwrap_or(0),
        };
        if u.plausible() {
            Some(u)
        } else {
            tracing::warn!(
                input = u.input,
                cached_input = u.cached_input,
                cache_write = u.cache_write,
                output = u.output,
                reasoning = u.reasoning,
                max = MAX_TOKENS_PER_REQUEST,
                "provider reported an implausible token count; ignoring it and counting instead"
            );
            None
        }
    }
}

impl Usage {
    /// Every count within [`MAX_TOKENS_PER_REQUEST`].
    pub fn plausible(&self) -> bool {
        [
            self.input,
            self.cached_input,
            self.cache_write,
            self.output,
            self.reasoning,
        ]
        .iter()
        .all(|&n| n <= MAX_TOKENS_PER_REQUEST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> UsageFields {
        serde_json::from_str(json).expect("usage json")
    }

    #[test]
    fn openai_chat_usage() {
        let mut acc = UsageAcc::new(false);
        acc.add(&fields(
            r#"{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120,
                "prompt_tokens_details":{"cached_tokens":64},
                "completion_tokens_details":{"reasoning_tokens":5}}"#,
        ));
        let u = acc.get().expect("seen");
        assert_eq!(
            u,
            Usage {
                input: 100,
                cached_input: 64,
                cache_write: 0,
                cache_write_1h: 0,
                output: 20,
                reasoning: 5
            }
        );
    }

    #[test]
    fn anthropic_cache_writes_are_split_by_lifetime() {
        let mut acc = UsageAcc::new(true);
        acc.add(&fields(
            r#"{"input_tokens":10,"output_tokens":1,"cache_creation_input_tokens":50,
                "cache_creation":{"ephemeral_5m_input_tokens":20,"ephemeral_1h_input_tokens":30}}"#,
        ));
        let u = acc.get().expect("seen");
        assert_eq!((u.input, u.cache_write, u.cache_write_1h), (60, 50, 30));
        // A provider claiming more hour-long writes than writes is held to the writes.
        let mut acc = UsageAcc::new(true);
        acc.add(&fields(
            r#"{"input_tokens":1,"cache_creation_input_tokens":5,"cache_creation":{"ephemeral_1h_input_tokens":9}}"#,
        ));
        assert_eq!(acc.get().expect("seen").cache_write_1h, 5);
    }

    #[test]
    fn anthropic_stream_usage_merges_and_counts_cache_as_input() {
        let mut acc = UsageAcc::new(true);
        acc.add(&fields(
            r#"{"input_tokens":10,"output_tokens":1,"cache_read_input_tokens":200,"cache_creation_input_tokens":50}"#,
        ));
        acc.add(&fields(r#"{"output_tokens":42}"#));
        let u = acc.get().expect("seen");
        assert_eq!(u.input, 260);
        assert_eq!(u.cached_input, 200);
        assert_eq!(u.cache_write, 50);
        assert_eq!(u.output, 42);
    }

    #[test]
    fn responses_usage() {
        let mut acc = UsageAcc::new(false);
        acc.add(&fields(
            r#"{"input_tokens":7,"output_tokens":3,"input_tokens_details":{"cached_tokens":0},"output_tokens_details":{"reasoning_tokens":1}}"#,
        ));
        assert_eq!(
            acc.get().map(|u| (u.input, u.output, u.reasoning)),
            Some((7, 3, 1))
        );
    }

    #[test]
    fn implausible_counts_are_ignored() {
        let mut acc = UsageAcc::new(false);
        acc.add(&fields(
            r#"{"prompt_tokens":18446744073709551615,"completion_tokens":5}"#,
        ));
        assert_eq!(acc.get(), None);
        let mut acc = UsageAcc::new(true);
        acc.add(&fields(
            r#"{"input_tokens":10,"cache_read_input_tokens":18446744073709551615}"#,
        ));
        assert_eq!(acc.get(), None, "saturates, then is refused");
        let mut acc = UsageAcc::new(false);
        acc.add(&fields(
            r#"{"prompt_tokens":100000000,"completion_tokens":5}"#,
        ));
        assert!(acc.get().is_some(), "the bound itself is allowed");
    }

    #[test]
    fn nothing_seen() {
        assert_eq!(UsageAcc::new(false).get(), None);
    }
}
