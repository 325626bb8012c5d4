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

struct Walk {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.nested::<A::Error>()?;
        while seq.next_element_seed(Walk { depth })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = self.nested::<A::Error>()?;
        // The first keys on the stack (no allocation for the usual small
        // object), the rest of a large one in a set.
        let mut few: [Option<Key<'de>>; LINEAR_MAX] = Default::default();
        let mut n = 0;
        let mut many: Option<HashSet<Key<'de>>> = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let dup = match &mut many {
                Some(set) => !set.insert(key.clone()),
                None if few[..n].iter().flatten().any(|k| *k == key) => true,
                None if n < LINEAR_MAX => {
                    few[n] = Some(key.clone());
                    n += 1;
                    false
                }
                None => {
                    let mut set: HashSet<Key<'de>> =
                        few.iter_mut().filter_map(Option::take).collect();
                    set.insert(key.clone());
                    many = Some(set);
                    false
                }
            };
            if dup {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {:?} in a JSON object",
                    key.short()
                )));
            }
            map.next_value_seed(Walk { depth })?;
        }
        Ok(())
    }
}

impl Walk {
    fn nested<E: de::Error>(&self) -> Result<usize, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom("JSON nested too deeply"));
        }
        Ok(self.depth + 1)
    }
}

/// An object key, borrowed from the body unless it had escapes; compared
/// by content (`"a"` and `"\u0061"` are the same key).
#[derive(Clone)]
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
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
                f.write_str("a string key")
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
