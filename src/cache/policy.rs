//! Whether a request may be answered from, and stored in, the cache.

use std::time::Duration;

use http::HeaderMap;

use crate::config::{CacheConfig, CacheMode};
use crate::protocol::Protocol;
use crate::sniff::Endpoint;

/// What the cache may do for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub lookup: bool,
    pub store: bool,
    /// `x-sluice-cache-ttl`: a client may shorten the configured TTL, never
    /// lengthen it.
    pub ttl: Option<Duration>,
}

impl Policy {
    pub const BYPASS: Policy = Policy {
        lookup: false,
        store: false,
        ttl: None,
    };
}

/// Decides from config, the endpoint, the request's temperature and its
/// `Cache-Control` / `x-sluice-cache*` headers.
pub fn decide(
    cfg: &CacheConfig,
    endpoint: Endpoint,
    temperature: Option<f64>,
    headers: &HeaderMap,
) -> Policy {
    let cacheable = matches!(
        endpoint,
        Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Responses
            | Endpoint::Messages
            | Endpoint::Embeddings
    );
    if !cacheable || cfg.mode == CacheMode::Off {
        return Policy::BYPASS;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let ttl = header("x-sluice-cache-ttl")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs).min(cfg.ttl));
    let asked =
        ttl.is_some() || header("x-sluice-cache").is_some_and(|v| v.eq_ignore_ascii_case("on"));
    let allowed = match cfg.mode {
        CacheMode::Off => false,
        CacheMode::Always => true,
        CacheMode::OptIn => asked,
        // Embeddings are deterministic; generations only at temperature 0.
        CacheMode::Deterministic => {
            asked || Protocol::of(endpoint).deterministic() || temperature == Some(0.0)
        }
    };
    if !allowed {
        return Policy::BYPASS;
    }
    let d = directives(headers);
    if !d.store {
        return Policy::BYPASS;
    }
    Policy {
        lookup: d.lookup,
        store: ttl != Some(Duration::ZERO),
        ttl,
    }
}

/// What the client's `Cache-Control` allows any cache: `no-store` neither
/// lookup nor store, `no-cache` a fresh answer that may be stored.
pub fn directives(headers: &HeaderMap) -> Policy {
    let cc = headers
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let directive = |d: &str| cc.split(',').any(|p| p.trim() == d);
    if directive("no-store") {
        return Policy::BYPASS;
    }
    Policy {
        lookup: !directive("no-cache"),
        store: true,
        ttl: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheScope;

    fn cfg(mode: CacheMode) -> CacheConfig {
        CacheConfig {
            mode,
            scope: CacheScope::Key,
            max_bytes: 1 << 20,
            max_entry_bytes: 1 << 16,
            ttl: Duration::from_secs(60),
            anthropic_breakpoints: false,
            breakpoint_min_tokens: 1024,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_str(v).expect("v"));
        }
        h
    }

    #[test]
    fn deterministic_mode() {
        let c = cfg(CacheMode::Deterministic);
        let none = HeaderMap::new();
        assert!(decide(&c, Endpoint::ChatCompletions, Some(0.0), &none).lookup);
        assert_eq!(
            decide(&c, Endpoint::ChatCompletions, None, &none),
            Policy::BYPASS
        );
        assert_eq!(
            decide(&c, Endpoint::ChatCompletions, Some(0.7), &none),
            Policy::BYPASS
        );
        assert!(decide(&c, Endpoint::Embeddings, None, &none).store);
        assert_eq!(
            decide(&c, Endpoint::Models, Some(0.0), &none),
            Policy::BYPASS
        );
        let ttl = headers(&[("x-sluice-cache-ttl", "30")]);
        let p = decide(&c, Endpoint::Messages, Some(1.0), &ttl);
        assert_eq!(p.ttl, Some(Duration::from_secs(30)));
        assert!(p.lookup && p.store);
        // A client can shorten the operator's TTL, not lengthen it.
        let long = headers(&[("x-sluice-cache-ttl", "315360000")]);
        let p = decide(&c, Endpoint::Messages, Some(1.0), &long);
        assert_eq!(p.ttl, Some(Duration::from_secs(60)));
    }

    #[test]
    fn cache_control() {
        let c = cfg(CacheMode::Always);
        let p = decide(
            &c,
            Endpoint::ChatCompletions,
            None,
            &headers(&[("cache-control", "no-cache")]),
        );
        assert!(!p.lookup && p.store, "no-cache: fetch fresh, store it");
        let p = decide(
            &c,
            Endpoint::ChatCompletions,
            None,
            &headers(&[("cache-control", "max-age=0, no-store")]),
        );
        assert_eq!(p, Policy::BYPASS);
        assert_eq!(
            decide(
                &cfg(CacheMode::Off),
                Endpoint::ChatCompletions,
                Some(0.0),
                &HeaderMap::new()
            ),
            Policy::BYPASS
        );
        assert_eq!(
            decide(
                &cfg(CacheMode::OptIn),
                Endpoint::ChatCompletions,
                Some(0.0),
                &HeaderMap::new()
            ),
            Policy::BYPASS
        );
        assert!(
            decide(
                &cfg(CacheMode::OptIn),
                Endpoint::ChatCompletions,
                None,
                &headers(&[("x-sluice-cache", "on")])
            )
            .lookup
        );
    }
}
