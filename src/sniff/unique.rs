//! Duplicate object keys anywhere in a JSON document. Parsers disagree on
//! which of two equal keys wins (serde keeps the last, a tokenizer may read
//! the first), so a body with one is refused before anything reads it: the
//! value Sluice counts and prices is then the value the provider sees.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Deepest nesting accepted (serde_json's own recursion limit is 128).
const MAX_DEPTH: usize = 128;
/// Objects up to this many keys are checked by a linear scan, their keys
/// kept on the stack (16 × 32 bytes a nesting level, 64 KiB at the deepest).
const LINEAR_MAX: usize = 16;

/// Checks `body` (a JSON document) for a duplicate key in any object;
/// the error names the key.
pub fn check(body: &[u8]) -> Result<(), String> {
    check_str(super::utf8(body)?)
}

/// [`check`] on a body already known to be UTF-8 (its strings are then not
/// validated again, string by string).
pub fn check_str(body: &str) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_str(body);
    Walk { depth: 0 }
        .deserialize(&mut de)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

/// What a walked value was: what `sniff` needs to know of `messages` and
/// `tools` without keeping them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Null,
    EmptyArray,
    Array,
    Other,
}

/// Walks one JSON value, checking every object in it.
pub(super) struct Walk {
    pub(super) depth: usize,
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = Kind;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let depth = nested::<A::Error>(self.depth)?;
        let mut kind = Kind::EmptyArray;
        while seq.next_element_seed(Walk { depth })?.is_some() {
            kind = Kind::Array;
        }
        Ok(kind)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Kind, A::Error> {
        members(map, self.depth, |_, _| Ok(false))?;
        Ok(Kind::Other)
    }
}

/// Reads the members of an object at nesting `depth`, refusing a repeated
/// key: `member` is given each key with the map positioned at its value,
/// and either reads the value (returning `true`) or leaves it to be walked
/// (`false`). So a caller reads the fields it wants in the same pass that
/// checks the whole document.
pub(super) fn members<'de, A, F>(mut map: A, depth: usize, mut member: F) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    F: FnMut(&str, &mut A) -> Result<bool, A::Error>,
{
    let depth = nested::<A::Error>(depth)?;
    let mut seen = Seen::default();
    while let Some(key) = map.next_key::<Key<'de>>()? {
        if !seen.insert(&key) {
            return Err(de::Error::custom(format_args!(
                "duplicate key {:?} in a JSON object",
                key.short()
            )));
        }
        if !member(key.as_str(), &mut map)? {
            map.next_value_seed(Walk { depth })?;
        }
    }
    Ok(())
}

fn nested<E: de::Error>(depth: usize) -> Result<usize, E> {
    if depth >= MAX_DEPTH {
        return Err(E::custom("JSON nested too deeply"));
    }
    Ok(depth + 1)
}

/// The keys of one object seen so far: the first ones on the stack (no
/// allocation for the usual small object), the rest of a large one in a set.
#[derive(Default)]
struct Seen<'de> {
    few: [Option<Key<'de>>; LINEAR_MAX],
    n: usize,
    many: Option<HashSet<Key<'de>>>,
}

impl<'de> Seen<'de> {
    /// Adds `key`; `false` if it was there already.
    fn insert(&mut self, key: &Key<'de>) -> bool {
        if let Some(set) = &mut self.many {
            return set.insert(key.clone());
        }
        if self.few[..self.n].iter().flatten().any(|k| k == key) {
            return false;
        }
        if self.n < LINEAR_MAX {
            self.few[self.n] = Some(key.clone());
            self.n += 1;
        } else {
            let mut set: HashSet<Key<'de>> = self.few.iter_mut().filter_map(Option::take).collect();
            set.insert(key.clone());
            self.many = Some(set);
        }
        true
    }
}

/// An object key or a string value, borrowed from the body unless it had
/// escapes; compared by content (`"a"` and `"\u0061"` are the same key).
#[derive(Clone)]
pub(super) enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl<'de> Key<'de> {
    pub(super) fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }

    pub(super) fn into_cow(self) -> std::borrow::Cow<'de, str> {
        match self {
            Key::Borrowed(s) => std::borrow::Cow::Borrowed(s),
            Key::Owned(s) => std::borrow::Cow::Owned(s),
        }
    }

    /// The key for an error message, bounded.
    fn short(&self) -> String {
        self.as_str().chars().take(64).collect()
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(s))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(s.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

impl PartialEq for Key<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Key<'_> {}

impl std::hash::Hash for Key<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_anywhere_are_found() {
        for body in [
            r#"{"model":"a","model":"b"}"#,
            r#"{"model":"a","messages":[],"messages":[{"role":"user","content":"x"}]}"#,
            r#"{"messages":[{"role":"user","content":"a","content":"b"}]}"#,
            r#"{"a":{"b":{"c":1,"c":2}}}"#,
            r#"{"k":1,"\u006b":2}"#,
            r#"{"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"i":1,"j":1,"k":1,"l":1,"m":1,"n":1,"o":1,"p":1,"q":1,"r":1,"a":2}"#,
        ] {
            let e = check(body.as_bytes()).expect_err(body);
            assert!(e.contains("duplicate key"), "{body}: {e}");
        }
    }

    #[test]
    fn the_switch_from_the_stack_to_the_set_loses_no_key() {
        let keys = |n: usize| (0..n).map(|i| format!("\"k{i}\":{i}")).collect::<Vec<_>>();
        for n in [LINEAR_MAX - 1, LINEAR_MAX, LINEAR_MAX + 1, 3 * LINEAR_MAX] {
            let distinct = format!("{{{}}}", keys(n).join(","));
            check(distinct.as_bytes()).expect(&distinct);
            for dup in [0, n / 2, n - 1] {
                let body = format!("{{{},\"k{dup}\":0}}", keys(n).join(","));
                assert!(check(body.as_bytes()).is_err(), "{body}");
            }
        }
    }

    #[test]
    fn clean_documents_pass() {
        for body in [
            r#"{"model":"a","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}"#,
            r#"{"a":{"x":1},"b":{"x":1}}"#,
            r#"[1,2,{"a":null}]"#,
            r#""s""#,
        ] {
            check(body.as_bytes()).expect(body);
        }
    }

    #[test]
    fn malformed_or_deep_is_an_error() {
        assert!(check(b"{\"a\":").is_err());
        assert!(check(b"{} x").is_err());
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(check(deep.as_bytes()).is_err());
    }
}
