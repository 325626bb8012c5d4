//! Header hygiene for a proxy hop: hop-by-hop headers never cross, and
//! credentials are replaced, never copied.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Sluice's own response headers. Named by constants: a name given as
/// text is parsed, and copied to the heap, on every insert.
pub mod names {
    use http::HeaderName;

    pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-sluice-request-id");
    pub const MODEL: HeaderName = HeaderName::from_static("x-sluice-model");
    pub const PROVIDER: HeaderName = HeaderName::from_static("x-sluice-provider");
    pub const EXPERIMENT: HeaderName = HeaderName::from_static("x-sluice-experiment");
    pub const ARM: HeaderName = HeaderName::from_static("x-sluice-arm");
    pub const ATTEMPTS: HeaderName = HeaderName::from_static("x-sluice-attempts");
    pub const CACHE: HeaderName = HeaderName::from_static("x-sluice-cache");
    pub const COST_USD: HeaderName = HeaderName::from_static("x-sluice-cost-usd");
    pub const BUDGET_REMAINING_USD: HeaderName =
        HeaderName::from_static("x-sluice-budget-remaining-usd");
}

/// Sluice's own headers a response may carry beyond the upstream's (the
/// room reserved for them up front, so adding them never grows the map).
const OWN_HEADERS: usize = 12;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Which of a message's headers are hop-by-hop: the fixed list, and those
/// its `Connection` header names (read once per message, not per header).
struct HopByHop<'a> {
    named: Vec<&'a str>,
}

impl<'a> HopByHop<'a> {
    fn of(headers: &'a HeaderMap) -> Self {
        let named = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        Self { named }
    }

    fn contains(&self, name: &HeaderName) -> bool {
        HOP_BY_HOP.contains(name)
            || *name == header::UPGRADE
            || self
                .named
                .iter()
                .any(|t| t.eq_ignore_ascii_case(name.as_str()))
    }
}

/// Headers for the upstream request: the client's, less hop-by-hop, host,
/// length, credentials and Sluice's own `x-sluice-*` controls.
pub fn upstream_request_headers(client: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(client.len());
    let hop = HopByHop::of(client);
    for (name, value) in client {
        if hop.contains(name)
            || *name == header::HOST
            || *name == header::CONTENT_LENGTH
            || *name == header::AUTHORIZATION
            || name.as_str() == "x-api-key"
            || name.as_str().starts_with("x-sluice-")
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Headers for the client response: the upstream's, less hop-by-hop, in
/// the map they came in (one allocation fewer than copying them; the room
/// for Sluice's own headers grows it once, so the two cost about the same).
/// `keep_length` is false when the body is rewritten.
pub fn client_response_headers(mut headers: HeaderMap, keep_length: bool) -> HeaderMap {
    let hop = HopByHop::of(&headers);
    // Found in one pass over the names; usually there are none to drop.
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|n| hop.contains(n) || (!keep_length && *n == header::CONTENT_LENGTH))
        .cloned()
        .collect();
    for name in dropped {
        headers.remove(name);
    }
    headers.reserve(OWN_HEADERS);
    headers
}

/// A count as a header value: the usual small ones without an allocation
/// (`HeaderValue::from(n)` writes every number to the heap).
pub fn count(n: u32) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(n as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

/// A header value from text Sluice made; invalid bytes become `-`.
pub fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_credentials_and_controls() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-drop-me"),
        );
        h.insert("x-drop-me", HeaderValue::from_static("1"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret"),
        );
        h.insert("x-api-key", HeaderValue::from_static("secret"));
        h.insert("x-sluice-user", HeaderValue::from_static("bob"));
        h.insert(header::HOST, HeaderValue::from_static("localhost"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        let out = upstream_request_headers(&h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["anthropic-version", "x-multi"]);
        assert_eq!(out.get_all("x-multi").iter().count(), 2);
    }

    #[test]
    fn response_length_dropped_only_on_rewrite() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(client_response_headers(h.clone(), true).contains_key(header::CONTENT_LENGTH));
        assert!(!client_response_headers(h.clone(), false).contains_key(header::CONTENT_LENGTH));
        assert!(!client_response_headers(h, true).contains_key(header::TRANSFER_ENCODING));
    }

    #[test]
    fn counts_as_values() {
        for n in [0, 1, 9, 10, 4_000_000_000] {
            assert_eq!(count(n), HeaderValue::from(n));
        }
    }

    #[test]
    fn response_hop_by_hop_dropped_in_place() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, X-Hop"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        let out = client_response_headers(h, true);
        // (Removing moves the last header into the gap: the order of
        // different names is not kept, and means nothing in HTTP.)
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["content-type", "x-multi"]);
        assert_eq!(out.get_all("x-multi").iter().count(), 2);
        // Room for Sluice's own headers without growing.
        assert!(out.capacity() >= out.len() + OWN_HEADERS);
    }
}
