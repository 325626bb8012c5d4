//! Request paths as a hostile client may write them: normalised once, then
//! classified into an endpoint (and, for the provider paths Sluice does not
//! account, a passthrough family). The normalised path is the only one that
//! is ever matched against policy or sent upstream.
//!
//! Normalisation (RFC 3986 §6.2.2 plus what a gateway must refuse):
//! - percent-encoded *unreserved* characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded, other escapes are kept with upper-case hex (escapes are read
//!   and written with `percent-encoding`);
//! - empty segments (`//`) and a trailing `/` are dropped, `.` segments
//!   removed, `..` segments resolved;
//! - refused with 400: an encoded `/` or `\`, a raw `\`, a malformed escape,
//!   a control byte, and any `..` that would climb to or above the API root
//!   (`/v1`, or `/anthropic/v1`).

use http::Method;

use crate::error::ProxyError;
use crate::sniff::Endpoint;

/// Longest request path accepted (bytes, before normalisation).
pub const MAX_PATH: usize = 4096;

/// A normalised, classified request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The API endpoint.
    pub endpoint: Endpoint,
    /// The passthrough family of an `Endpoint::Other` path.
    pub family: Option<Family>,
    /// The normalised path below the API root, starting `/v1/`; this is what
    /// goes upstream.
    pub path: String,
    /// The client used the `/anthropic/v1/...` prefix.
    pub anthropic_prefix: bool,
}

/// Provider paths Sluice forwards without accounting them: a virtual key
/// reaches one only when it is allowed that family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Files,
    Uploads,
    Batches,
    Images,
    Audio,
    Moderations,
    VectorStores,
    FineTuning,
    Assistants,
    /// Stored chat completions (`/v1/chat/completions/{id}`).
    StoredCompletions,
    /// Stored responses (`/v1/responses/{id}`).
    StoredResponses,
    /// Model details (`/v1/models/{id}`).
    Models,
    /// Any other path below `/v1`.
    Other,
}

impl Family {
    /// Every family, with the name config uses for it.
    pub const ALL: [(&'static str, Family); 13] = [
        ("files", Family::Files),
        ("uploads", Family::Uploads),
        ("batches", Family::Batches),
        ("images", Family::Images),
        ("audio", Family::Audio),
        ("moderations", Family::Moderations),
        ("vector_stores", Family::VectorStores),
        ("fine_tuning", Family::FineTuning),
        ("assistants", Family::Assistants),
        ("stored_completions", Family::StoredCompletions),
        ("stored_responses", Family::StoredResponses),
        ("models", Family::Models),
        ("other", Family::Other),
    ];

    /// The family named `name` in config.
    pub fn parse(name: &str) -> Option<Family> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("other", |(n, _)| n)
    }

    /// The family of the segments after `v1`.
    fn of(segments: &[&str]) -> Family {
        match segments {
            ["files", ..] => Family::Files,
            ["uploads", ..] => Family::Uploads,
            ["batches", ..] | ["messages", "batches", ..] => Family::Batches,
            ["images", ..] => Family::Images,
            ["audio", ..] => Family::Audio,
            ["moderations", ..] => Family::Moderations,
            ["vector_stores", ..] => Family::VectorStores,
            ["fine_tuning", ..] | ["fine-tunes", ..] => Family::FineTuning,
            ["assistants", ..] | ["threads", ..] => Family::Assistants,
            ["chat", "completions", _, ..] => Family::StoredCompletions,
            ["responses", _, ..] => Family::StoredResponses,
            ["models", _, ..] => Family::Models,
            _ => Family::Other,
        }
    }
}

impl Route {
    /// What goes upstream: the normalised path and the client's query.
    pub fn path_and_query(&self, query: Option<&str>) -> String {
        match query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Normalises `raw` (the request target's path, without the query) and
/// classifies it. `method` decides 405s: the LLM endpoints take POST only,
/// `/v1/models` GET only.
pub fn classify(raw: &str, method: &Method) -> Result<Route, ProxyError> {
    let path = normalise(raw)?;
    let (rest, anthropic_prefix) = match path.strip_prefix("/anthropic") {
        Some(rest) if rest == "/v1" || rest.starts_with("/v1/") => (rest, true),
        _ => (path.as_str(), false),
    };
    let Some(below) = rest.strip_prefix("/v1/") else {
        return Err(ProxyError::NotFound(raw.to_owned()));
    };
    let segments: Vec<&str> = crate::text::split_slash(below).collect();
    // The API paths are lower case; a differently cased spelling of one is
    // not a passthrough path, it is nothing.
    if below.bytes().any(|b| b.is_ascii_uppercase()) {
        let lower = below.to_ascii_lowercase();
        let lowered: Vec<&str> = lower.split('/').collect();
        let first_upper = segments
            .first()
            .is_some_and(|s| s.bytes().any(|b| b.is_ascii_uppercase()));
        if first_upper || endpoint_of(&lowered) != Endpoint::Other {
            return Err(ProxyError::NotFound(raw.to_owned()));
        }
    }
    let endpoint = endpoint_of(&segments);
    let allowed = match endpoint {
        Endpoint::Other => true,
        Endpoint::Models => *method == Method::GET,
        _ => *method == Method::POST,
    };
    if !allowed {
        return Err(ProxyError::MethodNotAllowed {
            method: method.as_str().chars().take(16).collect(),
            allowed: if endpoint == Endpoint::Models {
                "GET"
            } else {
                "POST"
            },
        });
    }
    let family = (endpoint == Endpoint::Other).then(|| Family::of(&segments));
    let path = rest.to_owned();
    Ok(Route {
        endpoint,
        family,
        path,
        anthropic_prefix,
    })
}

fn endpoint_of(segments: &[&str]) -> Endpoint {
    match segments {
        ["chat", "completions"] => Endpoint::ChatCompletions,
        ["completions"] => Endpoint::Completions,
        ["embeddings"] => Endpoint::Embeddings,
        ["responses"] => Endpoint::Responses,
        ["models"] => Endpoint::Models,
        ["messages"] => Endpoint::Messages,
        ["messages", "count_tokens"] => Endpoint::CountTokens,
        _ => Endpoint::Other,
    }
}

fn bad(why: &str) -> ProxyError {
    ProxyError::InvalidRequest(format!("invalid request path: {why}"))
}

/// The normalised form of `raw` (see the module docs).
pub fn normalise(raw: &str) -> Result<String, ProxyError> {
    if raw.len() > MAX_PATH {
        return Err(bad("longer than 4096 bytes"));
    }
    if !raw.starts_with('/') {
        return Err(bad("must start with /"));
    }
    if is_normal(raw) {
        // What every SDK sends: nothing to decode, drop or refuse.
        return Ok(raw.to_owned());
    }
    rebuild(raw)
}

/// Whether `raw` is its own normal form: no escape, backslash or control
/// byte, and no empty, `.` or `..` segment (a trailing `/` is an empty one).
fn is_normal(raw: &str) -> bool {
    if raw == "/" {
        return true;
    }
    let clean = !raw
        .bytes()
        .any(|c| c == b'%' || c == b'\\' || c < 0x20 || c == 0x7f);
    clean && crate::text::split_slash(&raw[1..]).all(|s| !s.is_empty() && s != "." && s != "..")
}

/// The normal form, segment by segment.
fn rebuild(raw: &str) -> Result<String, ProxyError> {
    let mut stack: Vec<String> = Vec::new();
    for seg in raw.split('/') {
        let seg = decode_segment(seg)?;
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                // Never climb to or above the API root.
                let root = api_root_len(&stack);
                if root == 0 || stack.len() <= root {
                    return Err(bad("a `..` segment climbs above the API root"));
                }
                stack.pop();
            }
            _ => stack.push(seg),
        }
    }
    let mut out = String::with_capacity(raw.len());
    for seg in &stack {
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// How many leading segments form the API root (`v1`, or `anthropic/v1`);
/// 0 when the path is outside it.
fn api_root_len(stack: &[String]) -> usize {
    match stack {
        [a, b, ..] if a == "anthropic" && b == "v1" => 2,
        [a, ..] if a == "v1" => 1,
        _ => 0,
    }
}

/// Decodes the unreserved escapes of one segment; refuses what a path must
/// not carry.
fn decode_segment(seg: &str) -> Result<String, ProxyError> {
    let bytes = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                match escaped(bytes.get(i..i + 3)).ok_or_else(|| bad("malformed percent escape"))? {
                    b'/' | b'\\' => return Err(bad("an encoded `/` or `\\`")),
                    c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => {
                        out.push(c as char);
                    }
                    c if c < 0x20 || c == 0x7f => return Err(bad("an encoded control byte")),
                    c => out.push_str(percent_encoding::percent_encode_byte(c)),
                }
                i += 3;
            }
            b'\\' => return Err(bad("a `\\`")),
            c if c < 0x20 || c == 0x7f => return Err(bad("a control byte")),
            _ => {
                // Multi-byte UTF-8 passes through whole (the input is a str).
                let ch_len = utf8_len(b);
                out.push_str(&seg[i..i + ch_len]);
                i += ch_len;
                continue;
            }
        }
    }
    Ok(out)
}

/// The byte a three-byte `%XX` escape stands for; `None` when it is
/// truncated or not hex (`percent-encoding` leaves those as they are).
fn escaped(escape: Option<&[u8]>) -> Option<u8> {
    let mut decoded = percent_encoding::percent_decode(escape.filter(|e| e.len() == 3)?);
    match (decoded.next(), decoded.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(p: &str) -> Result<Route, ProxyError> {
        classify(p, &Method::POST)
    }

    #[test]
    fn encoded_and_odd_spellings_classify_as_the_endpoint() {
        for p in [
            "/v1/chat/completions",
            "/v1/chat/%63ompletions",
            "/v1//chat/completions",
            "/v1/./chat/completions",
            "/v1/chat/completions/",
            "/v1/chat/x/../completions",
        ] {
            let r = post(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert_eq!(r.endpoint, Endpoint::ChatCompletions, "{p}");
            assert_eq!(r.path, "/v1/chat/completions", "{p}");
        }
        let r = post("/anthropic/v1/messages").expect("ok");
        assert!(r.anthropic_prefix);
        assert_eq!(r.endpoint, Endpoint::Messages);
    }

    #[test]
    fn the_fast_path_takes_only_paths_that_are_their_own_normal_form() {
        for p in [
            "/",
            "/v1",
            "/v1/chat/completions",
            "/anthropic/v1/messages",
            "/v1/files/file-abc/content",
            "/v1/models/gpt-4o-2024-08-06",
            "/v1/caf\u{e9}/x",
            "/v1/.hidden/..x/...",
            "/v1/chat/completions/",
            "/v1//chat",
            "/v1/./chat",
            "/v1/x/../chat",
            "/v1/%63hat",
            "/v1/chat/.",
            "/v1/chat/..",
            "//",
            "/v1/a\\b",
            "/v1/a\u{1}b",
        ] {
            let slow = rebuild(p);
            if is_normal(p) {
                assert_eq!(slow.as_deref().ok(), Some(p), "{p}");
            }
            assert_eq!(
                normalise(p).map_err(|e| e.to_string()),
                slow.map_err(|e| e.to_string()),
                "{p}"
            );
        }
        assert!(is_normal("/v1/chat/completions"));
        assert!(!is_normal("/v1/chat/completions/"));
    }

    #[test]
    fn refused_spellings() {
        for (p, status) in [
            ("/v1/chat%2Fcompletions", 400),
            ("/v1/chat%2fcompletions", 400),
            ("/v1/chat%5Ccompletions", 400),
            ("/v1/chat\\completions", 400),
            ("/v1/../v1/chat/completions", 400),
            ("/anthropic/v1/../v1/chat/completions", 400),
            ("/v1/..", 400),
            ("/tenant-a/v1/../../tenant-b/v1/x", 400),
            ("/v1/%2e%2e/x", 400),
            ("/v1/chat/%zz", 400),
            ("/v1/chat/%0a", 400),
            ("/v1/Chat/completions", 404),
            ("/V1/chat/completions", 404),
            ("/v1/chat/COMPLETIONS", 404),
            ("/v1/chat/%43ompletions", 404),
            ("/v1/Files", 404),
            ("/v2/chat/completions", 404),
            ("/", 404),
        ] {
            let e = post(p).expect_err(p);
            assert_eq!(e.status().as_u16(), status, "{p}: {e}");
        }
    }

    #[test]
    fn methods() {
        for m in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH] {
            let e = classify("/v1/chat/completions", &m).expect_err("405");
            assert_eq!(e.status().as_u16(), 405);
        }
        assert!(classify("/v1/models", &Method::GET).is_ok());
        assert_eq!(
            classify("/v1/models", &Method::POST)
                .expect_err("405")
                .status()
                .as_u16(),
            405
        );
        let r = classify("/v1/responses/resp_123", &Method::GET).expect("family");
        assert_eq!(r.family, Some(Family::StoredResponses));
        let r = classify("/v1/chat/completions/chatcmpl-1", &Method::GET).expect("family");
        assert_eq!(r.family, Some(Family::StoredCompletions));
    }

    #[test]
    fn families() {
        for (p, f) in [
            ("/v1/files", Family::Files),
            ("/v1/files/file-ABC/content", Family::Files),
            ("/v1/batches", Family::Batches),
            ("/v1/messages/batches/msgbatch_1", Family::Batches),
            ("/v1/images/generations", Family::Images),
            ("/v1/audio/speech", Family::Audio),
            ("/v1/vector_stores", Family::VectorStores),
            ("/v1/models/gpt-4o", Family::Models),
            ("/v1/whatever", Family::Other),
        ] {
            assert_eq!(post(p).expect(p).family, Some(f), "{p}");
        }
        for (name, f) in Family::ALL {
            assert_eq!(Family::parse(name), Some(f));
            assert_eq!(f.name(), name);
        }
    }

    #[test]
    fn other_escapes_are_kept_upper_case() {
        assert_eq!(
            normalise("/v1/files/a%2ab%20c%C3%A9").expect("ok"),
            "/v1/files/a%2Ab%20c%C3%A9"
        );
        assert_eq!(normalise("/v1/files/é").expect("ok"), "/v1/files/é");
    }

    #[test]
    fn normalise_never_panics_and_is_idempotent() {
        // A cheap exhaustive sweep over short paths from a hostile alphabet.
        let alphabet = [
            "/", ".", "..", "%", "%2", "%2e", "%2F", "v1", "a", "é", "\\", "%41",
        ];
        let mut stack = vec![(String::from("/"), 0)];
        while let Some((p, depth)) = stack.pop() {
            if let Ok(n) = normalise(&p) {
                assert_eq!(normalise(&n).ok().as_deref(), Some(n.as_str()), "{p}");
                assert!(!n.contains("/../") && !n.ends_with("/.."), "{p} -> {n}");
                assert!(!n.contains("//"), "{p} -> {n}");
            }
            if depth < 4 {
                for a in alphabet {
                    stack.push((format!("{p}{a}"), depth + 1));
                }
            }
        }
    }
}
