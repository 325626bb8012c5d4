//! Small helpers shared by the translators: the refusal type and JSON
//! builders.

use serde_json::{Map, Value};

/// A request (or response) that cannot be translated without changing its
/// meaning. The message names the field and why; the proxy renders it as a
/// 400 `invalid_request_error` in the client's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Refused {
    /// A field that the other API has no equivalent for.
    pub(crate) fn no_equivalent(field: &str, other: &str) -> Refused {
        Refused(format!(
            "`{field}` has no equivalent on {other}; remove it to route this request there"
        ))
    }
}

/// An object from `(key, value)` pairs, in order.
pub(crate) fn object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    let mut map = Map::with_capacity(N);
    for (k, v) in pairs {
        map.insert(k.to_owned(), v);
    }
    Value::Object(map)
}

/// The string at `key`, or `""`.
pub(crate) fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The unsigned number at `key`, or 0.
pub(crate) fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Whether a field is absent or holds its "off" value (`null`, `false`, 0,
/// an empty string, array or object), so accepting it changes nothing.
pub(crate) fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// A JSON value as compact text (cannot fail for a `Value`).
pub(crate) fn to_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
