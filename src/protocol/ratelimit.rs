//! Rate-limit response headers in each API's style: OpenAI's
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset as a
//! duration such as `1m2s`), Anthropic's
//! `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` (reset as
//! an RFC 3339 time).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::vocab::{Allowance, ApiShape, LimitKind, RateLimited};

/// Headers describing the tightest Sluice limits of an admitted request.
pub fn allowed(h: &mut HeaderMap, a: &Allowance, shape: ApiShape) {
    if let Some((limit, left, reset)) = a.requests {
        set(h, shape, &REQUESTS, limit, left, reset);
    }
    if let Some((limit, left, reset)) = a.tokens {
        set(h, shape, &TOKENS, limit, left, reset);
    }
}

/// Headers on a Sluice 429.
pub fn refused(h: &mut HeaderMap, r: &RateLimited, shape: ApiShape) {
    let what = match r.kind {
        LimitKind::Requests => &REQUESTS,
        LimitKind::Tokens => &TOKENS,
        LimitKind::Concurrent => return,
    };
    set(h, shape, what, r.limit, 0, r.retry_after);
}

/// The header names of one counted quantity, in both styles (static: no
/// name is built per response).
struct Names {
    openai: [HeaderName; 3],
    anthropic: [HeaderName; 3],
}

const REQUESTS: Names = Names {
    openai: [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    anthropic: [
        HeaderName::from_static("anthropic-ratelimit-requests-limit"),
        HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
        HeaderName::from_static("anthropic-ratelimit-requests-reset"),
    ],
};

const TOKENS: Names = Names {
    openai: [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
    anthropic: [
        HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
        HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
        HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
    ],
};

fn set(h: &mut HeaderMap, shape: ApiShape, what: &Names, limit: u64, left: u64, reset: Duration) {
    let reset = match shape {
        ApiShape::OpenAi => value(&openai_duration(reset)),
        ApiShape::Anthropic => {
            value(&humantime::format_rfc3339_seconds(SystemTime::now() + reset).to_string())
        }
    };
    let [l, r, t] = match shape {
        ApiShape::OpenAi => &what.openai,
        ApiShape::Anthropic => &what.anthropic,
    };
    h.insert(l.clone(), HeaderValue::from(limit));
    h.insert(r.clone(), HeaderValue::from(left));
    h.insert(t.clone(), reset);
}

/// A header value from text (a placeholder if the text cannot be one).
fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// `1m2.5s`, `6s`, `120ms` — the format OpenAI uses.
fn openai_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (m, rest_ms) = (ms / 60_000, ms % 60_000);
    let secs = rest_ms as f64 / 1000.0;
    let s = if rest_ms % 1000 == 0 {
        format!("{}s", rest_ms / 1000)
    } else {
        format!("{secs:.1}s")
    };
    if m > 0 {
        format!("{m}m{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_openai() {
        assert_eq!(openai_duration(Duration::from_millis(120)), "120ms");
        assert_eq!(openai_duration(Duration::from_secs(6)), "6s");
        assert_eq!(openai_duration(Duration::from_millis(62_500)), "1m2.5s");
        assert_eq!(openai_duration(Duration::from_secs(60)), "1m0s");
    }

    #[test]
    fn header_names_in_each_style() {
        let a = Allowance {
            requests: Some((10, 7, Duration::from_secs(6))),
            tokens: Some((1000, 900, Duration::from_millis(120))),
        };
        let mut h = HeaderMap::new();
        allowed(&mut h, &a, ApiShape::OpenAi);
        assert_eq!(h["x-ratelimit-limit-requests"], "10");
        assert_eq!(h["x-ratelimit-remaining-requests"], "7");
        assert_eq!(h["x-ratelimit-reset-requests"], "6s");
        assert_eq!(h["x-ratelimit-limit-tokens"], "1000");
        assert_eq!(h["x-ratelimit-remaining-tokens"], "900");
        assert_eq!(h["x-ratelimit-reset-tokens"], "120ms");
        let mut h = HeaderMap::new();
        allowed(&mut h, &a, ApiShape::Anthropic);
        assert_eq!(h["anthropic-ratelimit-requests-limit"], "10");
        assert_eq!(h["anthropic-ratelimit-tokens-remaining"], "900");
        assert!(h.contains_key("anthropic-ratelimit-tokens-reset"));
        assert_eq!(h.len(), 6);
    }
}
