//! JSON read leniently, in one pass: a field whose value has another shape
//! than the one wanted reads as absent (and is skipped), instead of failing
//! the parse around it. An answer's usage and its facts (finish reason, tool
//! calls) come from one walk over the body, and an odd `choices` entry
//! costs only what it would have said.
//!
//! Only malformed JSON is an error. Within an object the last of repeated
//! keys wins.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A value of shape `T`, or `None` when the JSON held something else.
pub(super) struct Lenient<T>(pub Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Lenient(None)
    }
}

/// A shape a lenient value can take. Each method reads one kind of JSON
/// value; the defaults say "not this shape" and skip what they are given.
pub(super) trait Shape<'de>: Sized {
    /// Whether this shape is read from a string (an escaped string is then
    /// copied; other shapes never pay for it).
    const STR: bool = false;

    fn from_str(_: Cow<'de, str>) -> Option<Self> {
        None
    }

    fn from_u64(_: u64) -> Option<Self> {
        None
    }

    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl<'de, T: Shape<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Any(PhantomData)).map(Lenient)
    }
}

struct Any<T>(PhantomData<T>);

impl<'de, T: Shape<'de>> Visitor<'de> for Any<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(T::from_str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(if T::STR {
            T::from_str(Cow::Owned(v.to_owned()))
        } else {
            None
        })
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(T::from_str(Cow::Owned(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(T::from_u64(v))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        T::from_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::from_map(map)
    }
}

impl<'de: 'a, 'a> Shape<'de> for Cow<'a, str> {
    const STR: bool = true;

    fn from_str(s: Cow<'de, str>) -> Option<Self> {
        Some(s)
    }
}

impl Shape<'_> for u64 {
    fn from_u64(v: u64) -> Option<Self> {
        Some(v)
    }
}

/// An array: its elements of shape `T`, the others left out.
impl<'de, T: Shape<'de>> Shape<'de> for Vec<T> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut out = Vec::new();
        while let Some(Lenient(item)) = seq.next_element::<Lenient<T>>()? {
            out.extend(item);
        }
        Ok(Some(out))
    }
}

/// Reads an object's fields: `field` is given each key with the map
/// positioned at its value, and either reads the value (returning `true`)
/// or leaves it to be skipped (`false`), as `sniff::unique::members` does.
pub(super) fn fields<'de, A, F>(mut map: A, mut field: F) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    F: FnMut(&str, &mut A) -> Result<bool, A::Error>,
{
    while let Some(Lenient(key)) = map.next_key::<Lenient<Cow<'de, str>>>()? {
        let read = match key {
            Some(key) => field(&key, &mut map)?,
            None => false,
        };
        if !read {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(())
}

/// The value at the map's current key, of shape `T` or `None`.
pub(super) fn value<'de, T: Shape<'de>, A: MapAccess<'de>>(
    map: &mut A,
) -> Result<Option<T>, A::Error> {
    Ok(map.next_value::<Lenient<T>>()?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<'a, T: Shape<'a>>(json: &'a str) -> Option<T> {
        serde_json::from_str::<Lenient<T>>(json)
            .expect("well-formed")
            .0
    }

    #[test]
    fn the_wanted_shape_or_nothing() {
        assert_eq!(read::<u64>("7"), Some(7));
        assert_eq!(read::<u64>("\"7\""), None);
        assert_eq!(read::<u64>("-1"), None);
        assert_eq!(read::<Cow<'_, str>>("\"a\"").as_deref(), Some("a"));
        assert_eq!(read::<Cow<'_, str>>("\"a\\nb\"").as_deref(), Some("a\nb"));
        assert_eq!(read::<Cow<'_, str>>("{\"a\": [1, {}]}"), None);
        assert_eq!(
            read::<Vec<u64>>("[1, \"x\", 2, null, [3]]"),
            Some(vec![1, 2])
        );
        assert_eq!(read::<Vec<u64>>("{}"), None);
    }

    #[test]
    fn a_borrowed_string_is_not_copied() {
        let json = String::from("\"plain\"");
        assert!(matches!(
            read::<Cow<'_, str>>(&json),
            Some(Cow::Borrowed("plain"))
        ));
    }

    #[test]
    fn malformed_json_is_still_an_error() {
        assert!(serde_json::from_str::<Lenient<u64>>("[1,").is_err());
        assert!(serde_json::from_str::<Lenient<Vec<u64>>>("[1 2]").is_err());
    }
}
