//! Rate-limit response headers in each API's style: OpenAI's
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset as a
//! duration such as `1m2s`), Anthropic's
//! `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` (reset as
//! an RFC 3339 time).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};

use crate::vocab::{Allowance, ApiShape, LimitKind, RateLimited};

/// Headers describing the tightest Sluice limits of an admitted request.
pub fn allowed(h: &mut HeaderMap, a: &Allowance, shape: ApiShape) {
    if let Some((limit, left, reset)) = a.requests {
        set(h, shape, "requests", limit, left, reset);
    }
    if let Some((limit, left, reset)) = a.tokens {
        set(h, shape, "tokens", limit, left, reset);
    }
}

/// Headers on a Sluice 429.
pub fn refused(h: &mut HeaderMap, r: &RateLimited, shape: ApiShape) {
    let what = match r.kind {
        LimitKind::Requests => "requests",
        LimitKind::Tokens => "tokens",
        LimitKind::Concurrent => return,
    };
    set(h, shape, what, r.limit, 0, r.retry_after);
}

fn set(h: &mut HeaderMap, shape: ApiShape, what: &str, limit: u64, left: u64, reset: Duration) {
    let mut put = |name: String, v: HeaderValue| {
        if let Ok(n) = http::HeaderName::try_from(name) {
            h.insert(n, v);
        }
    };
    match shape {
        ApiShape::OpenAi => {
            put(
                format!("x-ratelimit-limit-{what}"),
                HeaderValue::from(limit),
            );
            put(
                format!("x-ratelimit-remaining-{what}"),
                HeaderValue::from(left),
            );
            put(
                format!("x-ratelimit-reset-{what}"),
                crate::headers::value(&openai_duration(reset)),
            );
        }
        ApiShape::Anthropic => {
            put(
                format!("anthropic-ratelimit-{what}-limit"),
                HeaderValue::from(limit),
            );
            put(
                format!("anthropic-ratelimit-{what}-remaining"),
                HeaderValue::from(left),
            );
            let at = humantime::format_rfc3339_seconds(SystemTime::now() + reset).to_string();
            put(
                format!("anthropic-ratelimit-{what}-reset"),
                crate::headers::value(&at),
            );
        }
    }
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
}
