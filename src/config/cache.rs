//! Config for the response cache and provider prompt caching.

use std::time::Duration;

use super::raw::{RawCache, RawSize};
use super::values::parse_size;
use super::Validator;

/// Which requests the response cache serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    Off,
    /// Only requests with `temperature` 0.
    Deterministic,
    /// Every request of a cacheable endpoint.
    Always,
    /// Only requests that ask (`x-sluice-cache-ttl` or `x-sluice-cache: on`).
    OptIn,
}

/// Whose answers a cached entry may serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    Key,
    Team,
    Shared,
}

/// Response cache and provider prompt-caching settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    pub mode: CacheMode,
    pub scope: CacheScope,
    pub max_bytes: u64,
    pub max_entry_bytes: usize,
    pub ttl: Duration,
    /// Add Anthropic `cache_control` breakpoints to long stable prefixes.
    pub anthropic_breakpoints: bool,
    /// Smallest prefix (estimated tokens) worth a breakpoint.
    pub breakpoint_min_tokens: u64,
}

/// `[cache] shared_url`: the second-level cache in Redis.
#[derive(Clone)]
pub struct SharedCacheConfig {
    /// `redis://` or `rediss://` (may hold a password: never logged).
    pub url: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for SharedCacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCacheConfig")
            .field("url", &super::redact(&self.url))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Validator<'_> {
    pub(super) fn cache(
        &mut self,
        c: &RawCache,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (CacheConfig, Option<SharedCacheConfig>) {
        let mode = match c.mode.as_deref() {
            None | Some("off") => CacheMode::Off,
            Some("deterministic") => CacheMode::Deterministic,
            Some("always") => CacheMode::Always,
            Some("opt_in") | Some("opt-in") => CacheMode::OptIn,
            Some(other) => {
                self.err(
                    "cache.mode",
                    format!("unknown mode {other:?} (expected off|deterministic|always|opt_in)"),
                );
                CacheMode::Off
            }
        };
        let scope = match c.scope.as_deref() {
            None | Some("key") => CacheScope::Key,
            Some("team") => CacheScope::Team,
            Some("shared") => CacheScope::Shared,
            Some(other) => {
                self.err(
                    "cache.scope",
                    format!("unknown scope {other:?} (expected key|team|shared)"),
                );
                CacheScope::Key
            }
        };
        let mut size = |field: &str, v: &Option<RawSize>, default: usize| match v {
            None => default,
            Some(v) => parse_size(v).unwrap_or_else(|e| {
                self.err(field, e);
                default
            }),
        };
        let max_bytes = size("cache.max_bytes", &c.max_bytes, 256 << 20) as u64;
        let max_entry_bytes = size("cache.max_entry_bytes", &c.max_entry_bytes, 4 << 20);
        let shared = self.shared_cache(c, env, mode);
        let config = CacheConfig {
            mode,
            scope,
            max_bytes,
            max_entry_bytes,
            ttl: self.duration("cache.ttl", c.ttl.as_deref(), Duration::from_secs(3600)),
            anthropic_breakpoints: c.anthropic_breakpoints.unwrap_or(false),
            breakpoint_min_tokens: c.breakpoint_min_tokens.unwrap_or(1024),
        };
        (config, shared)
    }

    fn shared_cache(
        &mut self,
        c: &RawCache,
        env: &dyn Fn(&str) -> Option<String>,
        mode: CacheMode,
    ) -> Option<SharedCacheConfig> {
        if c.shared_url.is_none() && c.shared_url_env.is_none() {
            if c.shared_timeout.is_some() {
                self.err(
                    "cache.shared_timeout",
                    "only applies with shared_url or shared_url_env",
                );
            }
            return None;
        }
        let url = self.redis_url(
            "cache.shared_url",
            "cache.shared_url_env",
            &c.shared_url,
            &c.shared_url_env,
            env,
        )?;
        if mode == CacheMode::Off {
            self.err(
                "cache.shared_url",
                "only applies when the cache is on (cache.mode)",
            );
        }
        let timeout = self.duration(
            "cache.shared_timeout",
            c.shared_timeout.as_deref(),
            Duration::from_millis(50),
        );
        Some(SharedCacheConfig { url, timeout })
    }
}
