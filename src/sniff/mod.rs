//! What a request is: its endpoint (from the path) and the few body fields
//! the pipeline needs (read in the one pass over the JSON that also refuses
//! a duplicate key anywhere), plus the body rewrite applied only when
//! something must change.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ProxyError;
use crate::protocol::{CapFields, Protocol};
pub use crate::vocab::Endpoint;

pub(crate) mod unique;

use unique::Key;

/// Longest model name accepted, in bytes.
pub const MAX_MODEL_LEN: usize = 256;
/// Most choices (`n`, `best_of`) a request may ask for.
pub const MAX_CHOICES: u64 = 128;

/// The request fields the pipeline reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sniffed {
    pub model: String,
    pub stream: bool,
    /// Whether the client asked for `stream_options.include_usage`.
    pub include_usage: bool,
    /// The output cap the client asked for in the field(s) this endpoint's
    /// API defines (the larger, when chat carries both), and the field used.
    pub max_output: Option<u64>,
    pub max_output_field: Option<&'static str>,
    /// Answers generated per request (`n`; `best_of` on completions): the
    /// output cap is per choice, so the worst case multiplies by this.
    pub choices: u64,
    /// OpenAI `user` or Anthropic `metadata.user_id`.
    pub end_user: Option<String>,
    /// The request defines tools.
    pub has_tools: bool,
    /// The request carries image parts.
    pub has_images: bool,
    pub temperature: Option<f64>,
}

/// The request fields read from the body, in the pass that checks it for
/// duplicate keys (`unique::members`).
#[derive(Default)]
struct Raw<'a> {
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
    temperature: Option<f64>,
    include_usage: Option<bool>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    n: Option<u64>,
    best_of: Option<u64>,
    user: Option<Cow<'a, str>>,
    /// Anthropic's `metadata.user_id`.
    user_id: Option<String>,
    tools: Option<unique::Kind>,
    messages: Option<unique::Kind>,
}

impl<'a> Raw<'a> {
    /// Reads a JSON object body (already known to start with `{`).
    fn read(text: &'a str) -> Result<Raw<'a>, serde_json::Error> {
        use serde::de::Deserializer as _;
        let mut de = serde_json::Deserializer::from_str(text);
        let raw = (&mut de).deserialize_map(Top)?;
        de.end()?;
        Ok(raw)
    }
}

/// The body's top-level object.
struct Top;

impl<'de> Visitor<'de> for Top {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Raw<'de>, A::Error> {
        let mut raw = Raw::default();
        unique::members(map, 0, |key, map| {
            match key {
                "model" => raw.model = map.next_value::<Option<Key<'de>>>()?.map(Key::into_cow),
                "user" => raw.user = map.next_value::<Option<Key<'de>>>()?.map(Key::into_cow),
                "stream" => raw.stream = map.next_value()?,
                "temperature" => raw.temperature = map.next_value()?,
                "max_tokens" => raw.max_tokens = map.next_value()?,
                "max_completion_tokens" => raw.max_completion_tokens = map.next_value()?,
                "max_output_tokens" => raw.max_output_tokens = map.next_value()?,
                "n" => raw.n = map.next_value()?,
                "best_of" => raw.best_of = map.next_value()?,
                "stream_options" => {
                    raw.include_usage = map.next_value_seed(Member::new("include_usage"))?
                }
                "metadata" => raw.user_id = map.next_value_seed(Member::new("user_id"))?,
                "tools" => raw.tools = Some(map.next_value_seed(unique::Walk { depth: 1 })?),
                "messages" => raw.messages = Some(map.next_value_seed(unique::Walk { depth: 1 })?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(raw)
    }
}

/// One member of a nested object (`stream_options.include_usage`,
/// `metadata.user_id`), read as `T`; the object's other members are walked.
/// The object may be `null`; anything else but an object is an error, as
/// the member's own wrong type is.
struct Member<T> {
    name: &'static str,
    wanted: PhantomData<T>,
}

impl<T> Member<T> {
    fn new(name: &'static str) -> Self {
        Member {
            name,
            wanted: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Member<T> {
    type Value = Option<T>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Member<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object with an optional `{}`", self.name)
    }

    fn visit_unit<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        let mut out = None;
        unique::members(map, 1, |key, map| {
            if key != self.name {
                return Ok(false);
            }
            out = map.next_value::<Option<T>>()?;
            Ok(true)
        })?;
        Ok(out)
    }
}

/// Reads the fields the pipeline needs from a request to `endpoint`. A body
/// that is not a JSON object, has a duplicate key anywhere, or has no model
/// (or an over-long one) is a 400.
pub fn sniff(body: &[u8], endpoint: Endpoint) -> Result<Sniffed, ProxyError> {
    let trimmed = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| &body[i..]);
    match trimmed.and_then(|b| b.first()) {
        Some(b'{') => {}
        None => {
            return Err(ProxyError::InvalidRequest(
                "request body is empty; expected a JSON object".into(),
            ))
        }
        Some(_) => {
            return Err(ProxyError::InvalidRequest(
                "request body must be a JSON object".into(),
            ))
        }
    }
    // One UTF-8 check of the whole body (JSON is UTF-8), so the two walks
    // below read it as text and skip validating each string again.
    let text = utf8(body)
        .map_err(|e| ProxyError::InvalidRequest(format!("invalid JSON in request body: {e}")))?;
    let raw = Raw::read(text).map_err(invalid_json)?;
    let model = match raw.model {
        Some(m) if !m.is_empty() => m,
        _ => {
            return Err(ProxyError::InvalidRequest(
                "you must provide a model parameter".into(),
            ))
        }
    };
    if model.len() > MAX_MODEL_LEN || model.chars().any(char::is_control) {
        return Err(ProxyError::InvalidRequest(format!(
            "invalid model name: at most {MAX_MODEL_LEN} bytes, no control characters"
        )));
    }
    let protocol = Protocol::of(endpoint);
    let (max_output, max_output_field) = protocol.output_cap(CapFields {
        max_tokens: raw.max_tokens,
        max_completion_tokens: raw.max_completion_tokens,
        max_output_tokens: raw.max_output_tokens,
    });
    // The input must have the shape the API defines: a body the gateway
    // cannot read for counting is refused, never sent on as zero tokens.
    let array = |k| matches!(k, unique::Kind::Array | unique::Kind::EmptyArray);
    if protocol.takes_messages() && raw.messages.is_some_and(|m| !array(m)) {
        return Err(ProxyError::InvalidRequest(
            "invalid type for 'messages': expected an array of objects".into(),
        ));
    }
    let choices = protocol.choices(raw.n, raw.best_of);
    if choices > MAX_CHOICES {
        return Err(ProxyError::InvalidRequest(format!(
            "n and best_of may be at most {MAX_CHOICES}"
        )));
    }
    Ok(Sniffed {
        model: model.into_owned(),
        stream: raw.stream.unwrap_or(false),
        include_usage: raw.include_usage.unwrap_or(false),
        max_output,
        max_output_field,
        choices,
        end_user: raw.user.map(Cow::into_owned).or(raw.user_id),
        temperature: raw.temperature,
        has_tools: raw
            .tools
            .is_some_and(|t| !matches!(t, unique::Kind::EmptyArray | unique::Kind::Null)),
        // (One search rules out the usual body with no image at all.)
        has_images: crate::find::contains!(body, b"image")
            && (crate::find::contains!(body, b"\"image_url\"")
                || crate::find::contains!(body, b"\"input_image\"")
                || crate::find::contains!(body, b"\"type\":\"image\"")),
    })
}

/// The `model` of a JSON object body, if it names one (passthrough paths:
/// images, audio and the like).
pub fn model_in(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct M {
        model: Option<String>,
    }
    serde_json::from_slice::<M>(body).ok()?.model
}

/// `body` as text, or where it stops being UTF-8 (which JSON must be).
pub(crate) fn utf8(body: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(body).map_err(|e| {
        format!(
            "invalid UTF-8 at byte {} (JSON text must be UTF-8)",
            e.valid_up_to()
        )
    })
}

fn invalid_json(e: serde_json::Error) -> ProxyError {
    ProxyError::InvalidRequest(format!("invalid JSON in request body: {e}"))
}

/// The common rewrites, done without re-encoding the body: an output cap
/// the client did not set (under a budget) and `stream_options` asking for
/// usage on a stream the client did not ask it for, appended as members
/// before the closing brace. Only when each is certainly the one key of its
/// name: the body is an object (sniffed already, so no key repeats), holds
/// no `\u` escape (the only escape that could spell a key's letters another
/// way) and does not hold the name (or a cap's alias) anywhere. `None`:
/// re-encode instead.
fn append_members(body: &[u8], rw: &Rewrite) -> Option<Bytes> {
    if rw.model.is_some() || crate::find::contains!(body, b"\\u") {
        return None;
    }
    if let Some((field, _)) = rw.max_output {
        let mut names = std::iter::once(field).chain(Protocol::cap_aliases(field).iter().copied());
        if names.any(|f| memchr::memmem::find(body, f.as_bytes()).is_some()) {
            return None;
        }
    }
    if rw.include_usage && crate::find::contains!(body, b"stream_options") {
        return None;
    }
    let end = body.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if body[end] != b'}' {
        return None;
    }
    // `{}` has no member to follow; any other object has one.
    let mut first = body[..end].iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    const USAGE: &[u8] = b"\"stream_options\":{\"include_usage\":true}";
    let mut digits = itoa::Buffer::new();
    let cap = rw.max_output.map(|(field, n)| (field, digits.format(n)));
    // Exactly the length: a `Vec` that is full becomes `Bytes` without a copy.
    let members = usize::from(cap.is_some()) + usize::from(rw.include_usage);
    let len = end + members - usize::from(first && members > 0)
        + cap.map_or(0, |(field, digits)| field.len() + 3 + digits.len())
        + if rw.include_usage { USAGE.len() } else { 0 }
        + 1;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&body[..end]);
    let mut comma = |out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
    };
    if let Some((field, digits)) = cap {
        comma(&mut out);
        out.push(b'"');
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(digits.as_bytes());
    }
    if rw.include_usage {
        comma(&mut out);
        out.extend_from_slice(USAGE);
    }
    out.push(b'}');
    debug_assert_eq!(out.len(), len);
    Some(Bytes::from(out))
}

/// Changes to make to a request body before it goes upstream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// Replace `model` with this upstream name.
    pub model: Option<String>,
    /// Set `stream_options.include_usage = true`.
    pub include_usage: bool,
    /// Set this output-cap field to this value.
    pub max_output: Option<(&'static str, u64)>,
}

impl Rewrite {
    pub fn is_empty(&self) -> bool {
        self.model.is_none() && !self.include_usage && self.max_output.is_none()
    }
}

/// Applies `rw` to a JSON object body; the original bytes are returned
/// untouched when there is nothing to change. Key order is preserved.
pub fn rewrite(body: Bytes, rw: &Rewrite) -> Result<Bytes, ProxyError> {
    if rw.is_empty() {
        return Ok(body);
    }
    if let Some(appended) = append_members(&body, rw) {
        return Ok(appended);
    }
    let mut obj: Map<String, Value> = serde_json::from_slice(&body).map_err(invalid_json)?;
    if let Some(m) = &rw.model {
        obj.insert("model".into(), Value::String(m.clone()));
    }
    if let Some((field, n)) = rw.max_output {
        obj.insert(field.into(), Value::from(n));
        for alias in Protocol::cap_aliases(field) {
            if let Some(v) = obj.get_mut(*alias) {
                if v.as_u64().is_none_or(|asked| asked > n) {
                    *v = Value::from(n);
                }
            }
        }
    }
    if rw.include_usage {
        let opts = obj
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if !opts.is_object() {
            *opts = Value::Object(Map::new());
        }
        if let Value::Object(o) = opts {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    serde_json::to_vec(&obj)
        .map(Bytes::from)
        .map_err(|e| ProxyError::Internal(format!("re-encoding request body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::ApiShape;

    #[test]
    fn endpoints() {
        assert_eq!(Endpoint::Models.shape(true), ApiShape::Anthropic);
        assert_eq!(Endpoint::Models.shape(false), ApiShape::OpenAi);
        assert_eq!(Endpoint::CountTokens.shape(false), ApiShape::Anthropic);
    }

    #[test]
    fn sniff_fields() {
        let s = sniff(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi \u00e9"}],"stream":true,
                "stream_options":{"include_usage":true},"max_completion_tokens":50,"user":"u1"}"#,
            Endpoint::ChatCompletions,
        )
        .expect("ok");
        assert_eq!(s.model, "gpt-4o");
        assert!(s.stream && s.include_usage);
        assert_eq!(s.max_output, Some(50));
        assert_eq!(s.end_user.as_deref(), Some("u1"));

        let a = sniff(
            br#"{"model":"claude","max_tokens":9,"metadata":{"user_id":"x"}}"#,
            Endpoint::Messages,
        )
        .expect("ok");
        assert_eq!(a.max_output, Some(9));
        assert_eq!(a.end_user.as_deref(), Some("x"));
        assert!(!a.stream);
    }

    #[test]
    fn bad_bodies_are_400() {
        for body in [
            &b""[..],
            b"[1,2]",
            b"{\"model\":",
            b"{}",
            b"{\"model\":\"\"}",
            b"nope",
        ] {
            let e = sniff(body, Endpoint::ChatCompletions).expect_err("bad");
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{body:?}");
        }
        // JSON is UTF-8: a stray byte in a string is named by its offset.
        let e = sniff(b"{\"model\":\"m\xff\"}", Endpoint::ChatCompletions).expect_err("bad");
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        assert!(e.to_string().contains("invalid UTF-8 at byte 11"), "{e}");
    }

    /// The fields are read in the pass that checks for duplicate keys: a
    /// repeat anywhere (the top level, the fields read, deep in messages)
    /// is refused, and the fields read keep serde's type errors.
    #[test]
    fn one_pass_reads_the_fields_and_refuses_repeats() {
        let refused = |body: &str, says: &str| {
            let e = sniff(body.as_bytes(), Endpoint::ChatCompletions).expect_err(body);
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{body}");
            assert!(e.to_string().contains(says), "{body}: {e}");
        };
        let dup = "duplicate key";
        refused(r#"{"model":"a","model":"b"}"#, dup);
        refused(r#"{"model":"a","\u006dodel":"b"}"#, dup);
        refused(r#"{"model":"a","max_tokens":1,"max_tokens":9}"#, dup);
        refused(
            r#"{"model":"a","messages":[{"role":"user","content":"x","content":"y"}]}"#,
            dup,
        );
        refused(
            r#"{"model":"a","stream_options":{"include_usage":true,"include_usage":false}}"#,
            dup,
        );
        refused(
            r#"{"model":"a","metadata":{"user_id":"u","x":{"k":1,"k":2}}}"#,
            dup,
        );
        refused(r#"{"model":"a","tools":[{"a":1,"a":1}]}"#, dup);
        refused(r#"{"model":"a","other":{"k":1,"k":2}}"#, dup);
        refused(r#"{"model":5}"#, "expected a string");
        refused(r#"{"model":"a","max_tokens":"9"}"#, "invalid type");
        refused(r#"{"model":"a","stream_options":"yes"}"#, "invalid type");
        refused(
            r#"{"model":"a","stream_options":{"include_usage":1}}"#,
            "invalid type",
        );
        refused(
            r#"{"model":"a","messages":{"role":"user"}}"#,
            "expected an array",
        );
        refused(r#"{"model":"a"} {}"#, "trailing characters");
        let deep = format!(
            r#"{{"model":"a","x":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        refused(&deep, "invalid JSON in request body");

        let s = sniff(
            br#"{"model":"a\u00e9","stream_options":null,"metadata":{"user_id":"x","other":[1]},
                "tools":[ ],"messages":[]}"#,
            Endpoint::Messages,
        )
        .expect("ok");
        assert_eq!(s.model, "a\u{e9}");
        assert!(!s.include_usage && !s.has_tools);
        assert_eq!(s.end_user.as_deref(), Some("x"));
        let t = sniff(br#"{"model":"a","tools":[{}]}"#, Endpoint::ChatCompletions).expect("ok");
        assert!(t.has_tools);
    }

    #[test]
    fn each_endpoint_reads_its_own_cap_field() {
        let decoy = br#"{"model":"m","max_tokens":5,"max_output_tokens":100000}"#;
        let r = sniff(decoy, Endpoint::Responses).expect("ok");
        assert_eq!(
            (r.max_output, r.max_output_field),
            (Some(100000), Some("max_output_tokens"))
        );
        let decoy = br#"{"model":"m","max_completion_tokens":5,"max_tokens":100000}"#;
        let m = sniff(decoy, Endpoint::Messages).expect("ok");
        assert_eq!(
            (m.max_output, m.max_output_field),
            (Some(100000), Some("max_tokens"))
        );
        let c = sniff(decoy, Endpoint::ChatCompletions).expect("ok");
        assert_eq!(c.max_output, Some(100000));
        let none = sniff(br#"{"model":"m","max_tokens":5}"#, Endpoint::Responses).expect("ok");
        assert_eq!((none.max_output, none.max_output_field), (None, None));
    }

    #[test]
    fn choices_and_hostile_fields() {
        let s = sniff(br#"{"model":"m","n":8}"#, Endpoint::ChatCompletions).expect("ok");
        assert_eq!(s.choices, 8);
        let s = sniff(br#"{"model":"m","n":2,"best_of":5}"#, Endpoint::Completions).expect("ok");
        assert_eq!(s.choices, 5);
        let s = sniff(br#"{"model":"m","n":0}"#, Endpoint::ChatCompletions).expect("ok");
        assert_eq!(s.choices, 1);
        for body in [
            r#"{"model":"m","n":129}"#,
            r#"{"model":"m","n":"8"}"#,
            r#"{"model":"m","model":"n"}"#,
            r#"{"model":"m","messages":[{"content":"a","content":"b"}]}"#,
        ] {
            assert!(
                sniff(body.as_bytes(), Endpoint::ChatCompletions).is_err(),
                "{body}"
            );
        }
        let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(257));
        assert!(sniff(long.as_bytes(), Endpoint::ChatCompletions).is_err());
        assert!(sniff(br#"{"model":"a\r\nb"}"#, Endpoint::ChatCompletions).is_err());
    }

    #[test]
    fn clamping_one_chat_field_clamps_the_other() {
        let body =
            Bytes::from_static(br#"{"model":"m","max_completion_tokens":50,"max_tokens":900}"#);
        let rw = Rewrite {
            max_output: Some(("max_completion_tokens", 100)),
            ..Rewrite::default()
        };
        let out: Value = serde_json::from_slice(&rewrite(body, &rw).expect("ok")).expect("json");
        assert_eq!(out["max_completion_tokens"], 100);
        assert_eq!(out["max_tokens"], 100);
    }

    #[test]
    fn image_parts_in_every_shape() {
        let has =
            |endpoint, body: &str| sniff(body.as_bytes(), endpoint).expect("sniffs").has_images;
        let chat = Endpoint::ChatCompletions;
        assert!(has(
            chat,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"u"}}]}]}"#
        ));
        assert!(has(
            Endpoint::Messages,
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{}}]}]}"#
        ));
        assert!(has(
            Endpoint::Responses,
            r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"u"}]}]}"#
        ));
        // The word alone is not an image; nor is no mention at all.
        assert!(!has(
            chat,
            r#"{"model":"m","messages":[{"role":"user","content":"describe an image"}]}"#
        ));
        assert!(!has(
            chat,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#
        ));
    }

    /// Bounded mutation fuzzing (stable toolchain, a fixed seed): sniffing
    /// never panics on any mangling of real bodies, and what it accepts is
    /// valid JSON without duplicate keys.
    #[test]
    fn mangled_bodies_never_panic() {
        let seeds: [&[u8]; 4] = [
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi \u00e9"}],"n":2,"max_tokens":9}"#,
            br#"{"model":"claude","max_tokens":9,"system":[{"type":"text","text":"s"}],"metadata":{"user_id":"x"}}"#,
            br#"{"model":"m","input":[{"type":"input_image","image_url":"x"}],"max_output_tokens":3}"#,
            br#"{"model":"m","prompt":["a","b"],"best_of":3,"stream":true,"stream_options":{"include_usage":true}}"#,
        ];
        let alphabet = b"{}[]\",:\\u0123456789eE+-.ntrufals \x00\xff\xc3";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        let endpoints = [
            Endpoint::ChatCompletions,
            Endpoint::Completions,
            Endpoint::Responses,
            Endpoint::Messages,
        ];
        for _ in 0..20_000 {
            let mut body = seeds[next(seeds.len())].to_vec();
            for _ in 0..1 + next(4) {
                let at = next(body.len() + 1);
                match next(3) {
                    0 if at < body.len() => {
                        body.remove(at);
                    }
                    1 => body.insert(at, alphabet[next(alphabet.len())]),
                    _ if at < body.len() => body[at] = alphabet[next(alphabet.len())],
                    _ => {}
                }
            }
            let endpoint = endpoints[next(endpoints.len())];
            if sniff(&body, endpoint).is_ok() {
                assert!(serde_json::from_slice::<Value>(&body).is_ok());
                assert!(unique::check(&body).is_ok());
            }
        }
    }

    #[test]
    fn usage_options_are_appended_without_reencoding() {
        let usage = Rewrite {
            include_usage: true,
            ..Rewrite::default()
        };
        let out = rewrite(
            Bytes::from_static(br#"{"model":"m","stream":true} "#),
            &usage,
        )
        .expect("ok");
        assert_eq!(
            &out[..],
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
        );
        let both = Rewrite {
            include_usage: true,
            max_output: Some(("max_tokens", 9)),
            ..Rewrite::default()
        };
        let out = rewrite(Bytes::from_static(b"{ }"), &both).expect("ok");
        assert_eq!(
            &out[..],
            br#"{ "max_tokens":9,"stream_options":{"include_usage":true}}"#
        );
        // `stream_options` named anywhere (even inside a message), or an
        // escape that could spell it: re-encoded, one key of each name, the
        // client's other options kept.
        for body in [
            br#"{"model":"m","stream_options":{"x":1}}"#.as_slice(),
            br#"{"model":"m","stream_options":null}"#,
            br#"{"model":"m","messages":[{"content":"stream_options"}]}"#,
            br#"{"model":"m","stream_options":{"x":1}}"#,
        ] {
            let out = rewrite(Bytes::copy_from_slice(body), &both).expect("ok");
            unique::check(&out).expect("no duplicate key");
            let v: Value = serde_json::from_slice(&out).expect("json");
            let text = String::from_utf8_lossy(body);
            assert_eq!(v["stream_options"]["include_usage"], true, "{text}");
            assert_eq!(v["max_tokens"], 9, "{text}");
            if text.contains("\"x\"") {
                assert_eq!(v["stream_options"]["x"], 1, "{text}");
            }
        }
    }

    #[test]
    fn a_new_cap_is_appended_without_reencoding() {
        let rw = Rewrite {
            max_output: Some(("max_completion_tokens", 4096)),
            ..Rewrite::default()
        };
        let body = Bytes::from_static(b"{\"model\": \"m\", \"messages\": []}\n");
        let out = rewrite(body, &rw).expect("ok");
        assert_eq!(
            &out[..],
            b"{\"model\": \"m\", \"messages\": [],\"max_completion_tokens\":4096}"
        );
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["max_completion_tokens"], 4096);
        for n in [0, 7, 10, 99, 100, u64::MAX] {
            let rw = Rewrite {
                max_output: Some(("max_tokens", n)),
                ..Rewrite::default()
            };
            let out = rewrite(Bytes::from_static(br#"{"model":"m"}"#), &rw).expect("ok");
            let v: Value = serde_json::from_slice(&out).expect("json");
            assert_eq!(v["max_tokens"], n);
        }
        // A field (or alias) already named, even as null, or any escape that
        // could spell it: re-encoded, one key of each name.
        for body in [
            br#"{"model":"m","max_tokens":null}"#.as_slice(),
            br#"{"model":"m","max_completion_tokens":null}"#,
            br#"{"model":"m","max\u005ftokens":null}"#,
        ] {
            let out = rewrite(Bytes::copy_from_slice(body), &rw).expect("ok");
            unique::check(&out).expect("no duplicate key");
            let v: Value = serde_json::from_slice(&out).expect("json");
            assert_eq!(
                v["max_completion_tokens"],
                4096,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn rewrite_only_when_needed() {
        let body = Bytes::from_static(br#"{"z":1,"model":"a","stream":true}"#);
        let same = rewrite(body.clone(), &Rewrite::default()).expect("ok");
        assert_eq!(same.as_ptr(), body.as_ptr());
        let rw = Rewrite {
            model: Some("b".into()),
            include_usage: true,
            max_output: None,
        };
        let out = rewrite(body, &rw).expect("ok");
        assert_eq!(
            std::str::from_utf8(&out).expect("utf8"),
            r#"{"z":1,"model":"b","stream":true,"stream_options":{"include_usage":true}}"#
        );
    }
}
