//! The cache key: a SHA-256 over the request's canonical form, so requests
//! that mean the same (keys reordered, `0.50` for `0.5`, a different `stream`
//! flag) share one entry and requests that differ in anything that changes
//! the answer, or come from another tenant, never do.

use std::fmt::{self, Write as _};

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use crate::sniff::Endpoint;

/// Bumped whenever the canonical form changes, so old and new keys never mix.
const VERSION: &[u8] = b"sluice-cache-key-v1";

/// Request fields that do not change the answer: how it is delivered
/// (`stream`, `stream_options`), who asked (`user`, `metadata`), and `model`,
/// replaced by the resolved upstream model.
const IGNORED_FIELDS: [&str; 5] = ["stream", "stream_options", "user", "metadata", "model"];

/// Integer-valued floats with a magnitude below this print as `i64`s (and
/// positive ones below twice this as `u64`s); each converts exactly.
const INTEGER_FLOAT_LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63

/// A response-cache key: SHA-256 of the canonical request (see [`cache_key`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The cache key of a request body, or `None` when the body is not a JSON
/// object. `upstream_model` is the model the request is routed to (not the
/// public name the client sent); `tenant` is the scope the answer may be
/// shared within (a key, a team, or one shared scope); `vary` holds the
/// request headers that change the provider's answer ([`vary`]). `body` is
/// the body as sent upstream, after every rewrite (output caps included).
pub fn cache_key(
    endpoint: Endpoint,
    upstream_model: &str,
    tenant: &str,
    vary: &str,
    body: &[u8],
) -> Option<CacheKey> {
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    for field in IGNORED_FIELDS {
        request.remove(field);
    }
    let canonical = canonical_json(&Value::Object(request));
    let mut hasher = Sha256::new();
    // Every part is length-prefixed, so no two different tuples hash the same
    // bytes (tenant "a", model "bc" vs tenant "ab", model "c").
    for part in [
        VERSION,
        endpoint.label().as_bytes(),
        upstream_model.as_bytes(),
        tenant.as_bytes(),
        vary.as_bytes(),
        canonical.as_bytes(),
    ] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    Some(CacheKey(hasher.finalize().into()))
}

/// Request headers that change what the provider answers.
pub const VARY_HEADERS: [&str; 3] = ["anthropic-version", "anthropic-beta", "openai-beta"];

/// The `vary` part of a key: the answer-changing headers, in a fixed order.
pub fn vary(headers: &http::HeaderMap) -> String {
    let mut out = String::new();
    for name in VARY_HEADERS {
        for v in headers.get_all(name) {
            out.push_str(name);
            out.push(':');
            out.push_str(&String::from_utf8_lossy(v.as_bytes()));
            out.push('\n');
        }
    }
    out
}

/// The canonical JSON text of a value: no whitespace, object keys sorted
/// (by their UTF-8 bytes) at every depth, array order kept, strings escaped
/// as serde_json does, and numbers normalised: an integer-valued number
/// within 64-bit integer range prints as an integer (`1.0` → `1`, `-0.0` →
/// `0`), any other as the shortest text that reads back as the same `f64`
/// (`0.50` → `0.5`, `1e300` → `1e+300`).
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

fn write_object(map: &Map<String, Value>, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(k, out);
        out.push(':');
        write_canonical(v, out);
    }
    out.push('}');
}

fn write_string(s: &str, out: &mut String) {
    // Serialising a str cannot fail; the fallback keeps the key total anyway.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str(s),
    }
}

fn write_number(n: &Number, out: &mut String) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        if f.fract() == 0.0 && f.abs() < INTEGER_FLOAT_LIMIT {
            // Exact: the float is an integer within i64's range.
            let _ = write!(out, "{}", f as i64);
        } else if f.fract() == 0.0 && f > 0.0 && f < 2.0 * INTEGER_FLOAT_LIMIT {
            // Exact too, and how the same value reads as a u64 prints.
            let _ = write!(out, "{}", f as u64);
        } else {
            // serde_json prints floats with ryu: the shortest round-trip text.
            match Number::from_f64(f) {
                Some(n) => {
                    let _ = write!(out, "{n}");
                }
                None => out.push_str("null"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &str) -> CacheKey {
        cache_key(
            Endpoint::ChatCompletions,
            "gpt-4o-mini",
            "team:a",
            "",
            body.as_bytes(),
        )
        .expect("object body")
    }

    #[test]
    fn answer_changing_headers_vary_the_key() {
        let mut h = http::HeaderMap::new();
        let plain = vary(&h);
        h.insert("anthropic-beta", http::HeaderValue::from_static("x-1"));
        let beta = vary(&h);
        assert_ne!(plain, beta);
        let k = |v: &str| cache_key(Endpoint::Messages, "m", "t", v, BASE.as_bytes());
        assert_ne!(k(&plain), k(&beta));
    }

    fn canon(text: &str) -> String {
        canonical_json(&serde_json::from_str(text).expect("json"))
    }

    const BASE: &str =
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#;

    #[test]
    fn canonical_form_sorts_keys_and_normalises_numbers() {
        assert_eq!(
            canon(r#"{"b": 1.0, "a": {"z": [3, 0.50, -0.0, 1e2], "y": "x\"y"}}"#),
            r#"{"a":{"y":"x\"y","z":[3,0.5,0,100]},"b":1}"#
        );
        assert_eq!(canon("1.5e-7"), "1.5e-7");
        assert_eq!(canon("18446744073709551615"), "18446744073709551615");
        assert_eq!(canon("1e19"), "10000000000000000000");
        assert_eq!(canon("1e19"), canon("10000000000000000000"));
        assert_eq!(canon("-12"), "-12");
        assert_eq!(canon("1e300"), "1e+300");
        assert_eq!(canon("1.0e300"), canon("1e300"));
    }

    #[test]
    fn key_order_whitespace_and_number_format_do_not_matter() {
        let a = key(BASE);
        let b = key(
            r#"{ "temperature": 0.50, "messages": [ {"content": "hi", "role": "user"} ], "model": "m" }"#,
        );
        assert_eq!(a, b);
        let c = key(r#"{"model":"m","messages":[],"max_tokens":16}"#);
        let d = key(r#"{"model":"m","messages":[],"max_tokens":16.0}"#);
        assert_eq!(c, d);
    }

    #[test]
    fn delivery_and_caller_fields_do_not_matter() {
        let plain = key(BASE);
        let dressed = key(
            r#"{"model":"public-alias","messages":[{"role":"user","content":"hi"}],"temperature":0.5,
                "stream":true,"stream_options":{"include_usage":true},"user":"u-42",
                "metadata":{"trace":"abc"}}"#,
        );
        assert_eq!(plain, dressed);
    }

    #[test]
    fn output_changing_fields_matter() {
        let base = key(BASE);
        let variants = [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.7}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi!"}],"temperature":0.5}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"hi"}],"temperature":0.5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5,
                "tools":[{"type":"function","function":{"name":"f","parameters":{}}}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5,"seed":1}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":"0.5"}"#,
        ];
        for v in variants {
            assert_ne!(base, key(v), "{v}");
        }
    }

    #[test]
    fn tenant_model_and_endpoint_separate_entries() {
        let body = BASE.as_bytes();
        let k = |endpoint, model, tenant| cache_key(endpoint, model, tenant, "", body);
        let base = k(Endpoint::ChatCompletions, "gpt-4o-mini", "team:a");
        assert_eq!(base, Some(key(BASE)));
        assert_ne!(base, k(Endpoint::ChatCompletions, "gpt-4o-mini", "team:b"));
        assert_ne!(base, k(Endpoint::ChatCompletions, "gpt-4o", "team:a"));
        assert_ne!(base, k(Endpoint::Responses, "gpt-4o-mini", "team:a"));
        // Length prefixes keep the parts apart.
        assert_ne!(
            k(Endpoint::ChatCompletions, "ab", "c"),
            k(Endpoint::ChatCompletions, "a", "bc")
        );
    }

    #[test]
    fn non_object_bodies_have_no_key() {
        for body in ["", "[]", "\"x\"", "{", "null"] {
            assert_eq!(
                cache_key(Endpoint::ChatCompletions, "m", "t", "", body.as_bytes()),
                None,
                "{body}"
            );
        }
    }

    #[test]
    fn debug_and_display_show_hex() {
        let k = CacheKey([0xab; 32]);
        assert_eq!(k.to_string(), "ab".repeat(32));
        assert_eq!(format!("{k:?}"), format!("CacheKey({})", "ab".repeat(32)));
    }
}
