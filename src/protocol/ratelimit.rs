//! Rate-limit response headers in each API's style: OpenAI's
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset as a
//! duration such as `1m2s`), Anthropic's
//! `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` (reset as
//! an RFC 3339 time).

use std::time::{Duration, SystemTime};

use std::fmt::Write;

use bytes::BytesMut;
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

/// Sets the three headers of one quantity. Their values are written into
/// one buffer and sliced from it: one allocation for the three, not one
/// per value (this runs on every admitted request under a rate limit).
fn set(h: &mut HeaderMap, shape: ApiShape, what: &Names, limit: u64, left: u64, reset: Duration) {
    let mut buf = BytesMut::with_capacity(48);
    let mut ends = [0usize; 3];
    let mut digits = itoa::Buffer::new();
    buf.extend_from_slice(digits.format(limit).as_bytes());
    ends[0] = buf.len();
    buf.extend_from_slice(digits.format(left).as_bytes());
    ends[1] = buf.len();
    // Writing into a `BytesMut` cannot fail.
    let _ = match shape {
        ApiShape::OpenAi => openai_duration(&mut buf, reset),
        ApiShape::Anthropic => write!(
            buf,
            "{}",
            humantime::format_rfc3339_seconds(SystemTime::now() + reset)
        ),
    };
    ends[2] = buf.len();
    let all = buf.freeze();
    let names = match shape {
        ApiShape::OpenAi => &what.openai,
        ApiShape::Anthropic => &what.anthropic,
    };
    let mut start = 0;
    for (name, end) in names.iter().zip(ends) {
        let v = HeaderValue::from_maybe_shared(all.slice(start..end))
            .unwrap_or_else(|_| HeaderValue::from_static("-"));
        h.insert(name.clone(), v);
        start = end;
    }
}

/// `1m2.5s`, `6s`, `120ms` — the format OpenAI uses (tenths of a second
/// rounded half up). Digits by `itoa`, not the formatting machinery: this
/// runs twice on every admitted request under a rate limit.
fn openai_duration(out: &mut impl Write, d: Duration) -> std::fmt::Result {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut digits = itoa::Buffer::new();
    if ms < 1000 {
        out.write_str(digits.format(ms))?;
        return out.write_str("ms");
    }
    let (m, rest_ms) = (ms / 60_000, ms % 60_000);
    if m > 0 {
        out.write_str(digits.format(m))?;
        out.write_char('m')?;
    }
    let tenths = (rest_ms + 50) / 100;
    out.write_str(digits.format(tenths / 10))?;
    if tenths % 10 != 0 {
        out.write_char('.')?;
        out.write_str(digits.format(tenths % 10))?;
    }
    out.write_char('s')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_openai() {
        let text = |d| {
            let mut s = String::new();
            openai_duration(&mut s, d).expect("write");
            s
        };
        assert_eq!(text(Duration::from_millis(120)), "120ms");
        assert_eq!(text(Duration::from_secs(6)), "6s");
        assert_eq!(text(Duration::from_millis(62_500)), "1m2.5s");
        assert_eq!(text(Duration::from_secs(60)), "1m0s");
        assert_eq!(text(Duration::from_millis(1_049)), "1s");
        assert_eq!(text(Duration::from_millis(1_050)), "1.1s");
        assert_eq!(text(Duration::from_millis(59_960)), "60s");
        assert_eq!(text(Duration::from_millis(999)), "999ms");
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
