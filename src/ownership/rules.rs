//! Which paths, body fields and answer fields name an owned object: plain
//! functions over the normalised path and the JSON bytes.

use serde_json::Value;

use crate::error::ProxyError;

/// What a normalised path (`/v1/...`) names, for ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// Not an owned family (or not below one).
    Untracked,
    /// A family root: `POST` creates, anything else lists.
    Root(&'static str),
    /// An object (or something below it), by id.
    Object(&'a str),
}

/// Family roots whose objects are owned, and the family name for messages.
const ROOTS: [(&[&str], &str); 6] = [
    (&["files"], "files"),
    (&["conversations"], "conversations"),
    (&["uploads"], "uploads"),
    (&["batches"], "batches"),
    (&["messages", "batches"], "batches"),
    (&["vector_stores"], "vector_stores"),
];

/// Objects whose root is an LLM endpoint (its `POST` creates them; listing
/// them is not a passthrough path).
const STORED: [&[&str]; 2] = [&["chat", "completions"], &["responses"]];

/// What `path` names.
pub fn target(path: &str) -> Target<'_> {
    let Some(below) = path.strip_prefix("/v1/") else {
        return Target::Untracked;
    };
    let segments: Vec<&str> = below.split('/').collect();
    for (root, family) in ROOTS {
        if segments.starts_with(root) {
            return match segments.get(root.len()) {
                None => Target::Root(family),
                Some(id) => Target::Object(id),
            };
        }
    }
    for root in STORED {
        if segments.starts_with(root) {
            match segments.get(root.len()) {
                // Endpoints below `/v1/responses` that are not objects (their
                // bodies are still checked for references).
                Some(&("input_tokens" | "compact")) if root == ["responses"] => {}
                Some(id) => return Target::Object(id),
                None => {}
            }
        }
    }
    Target::Untracked
}

/// Whether a successful answer to this request carries ids its caller now
/// owns: a creation (`POST` to a root), a completed upload (its `file`),
/// and a batch read by its owner (its output and error files).
pub fn records_answer(path: &str, method: &http::Method) -> bool {
    let below = path.strip_prefix("/v1/").unwrap_or("");
    let segments: Vec<&str> = below.split('/').collect();
    let post = method == http::Method::POST;
    let get = method == http::Method::GET;
    match segments.as_slice() {
        ["uploads", _, "complete"] => post,
        ["batches", _] | ["messages", "batches", _] => get || post,
        _ => post && matches!(target(path), Target::Root(_)),
    }
}

/// Body fields holding one object id.
const ID_FIELDS: [&str; 3] = ["input_file_id", "file_id", "previous_response_id"];
/// Body fields holding a list of object ids.
const ID_LIST_FIELDS: [&str; 2] = ["file_ids", "vector_store_ids"];
/// Most object ids one body may reference.
pub const MAX_REFERENCES: usize = 1024;

/// The object ids a request body references, at any depth. `checked`: the
/// body is known to be one UTF-8 JSON object without duplicate keys (an LLM
/// request Sluice has sniffed); then a body that cannot mention an id field
/// (no `file_id`, `previous_response_id`, `vector_store_ids`, `"conversation"`, nor a key
/// spelled with a `\u` escape) is not parsed at all. Any other non-empty
/// body must be such JSON, else it is refused: a body Sluice cannot read
/// might be one the provider reads differently (another encoding, `NaN`, a
/// duplicate key) and name another key's object.
pub fn referenced_ids(body: &[u8], checked: bool) -> Result<Vec<String>, ProxyError> {
    use crate::find::contains;
    if checked
        && !(contains!(body, b"file_id")
            || contains!(body, b"previous_response_id")
            || contains!(body, b"vector_store_ids")
            || contains!(body, b"\"conversation\"")
            || escaped_key(body))
    {
        return Ok(Vec::new());
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let unreadable = |why: String| {
        ProxyError::InvalidRequest(format!(
            "a request body here must be JSON (or multipart/form-data): {why}"
        ))
    };
    let v = serde_json::from_slice::<Value>(body).map_err(|e| unreadable(e.to_string()))?;
    if !checked {
        crate::sniff::unique::check(body).map_err(unreadable)?;
    }
    let mut out = Vec::new();
    walk(&v, &mut out);
    if out.len() > MAX_REFERENCES {
        return Err(ProxyError::InvalidRequest(format!(
            "a request body may reference at most {MAX_REFERENCES} objects"
        )));
    }
    Ok(out)
}

fn walk(v: &Value, out: &mut Vec<String>) {
    if out.len() > MAX_REFERENCES {
        return;
    }
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                match v {
                    Value::String(s) if ID_FIELDS.contains(&k.as_str()) => out.push(s.clone()),
                    // The Responses API's `conversation`: an id, or `{"id": ...}`.
                    Value::String(s) if k == "conversation" => out.push(s.clone()),
                    Value::Object(c) if k == "conversation" => {
                        if let Some(id) = c.get("id").and_then(Value::as_str) {
                            out.push(id.to_owned());
                        }
                        walk(v, out);
                    }
                    Value::Array(a) if ID_LIST_FIELDS.contains(&k.as_str()) => {
                        for s in a.iter().filter_map(Value::as_str) {
                            out.push(s.to_owned());
                        }
                        // Non-string entries are the provider's to refuse.
                    }
                    _ => walk(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
        _ => {}
    }
}

/// The ids a successful JSON answer gives its caller: the object's own `id`
/// (or, in a stream event, `response.id`), a batch's `output_file_id` and
/// `error_file_id`, a completed upload's `file.id`.
pub fn answer_ids(body: &[u8]) -> Vec<String> {
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |v: Option<&Value>| {
        if let Some(s) = v.and_then(Value::as_str) {
            out.push(s.to_owned());
        }
    };
    push(top.get("id"));
    push(top.get("output_file_id"));
    push(top.get("error_file_id"));
    push(top.get("file").and_then(|f| f.get("id")));
    push(top.get("response").and_then(|r| r.get("id")));
    out
}

/// The output file of a batch answer (`"object": "batch"`): the file its
/// results are read back from.
pub fn batch_output(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Batch {
        object: Option<String>,
        output_file_id: Option<String>,
    }
    let b = serde_json::from_slice::<Batch>(body).ok()?;
    b.output_file_id
        .filter(|_| b.object.as_deref() == Some("batch"))
}

/// Whether a request body asks the provider to store its answer: `store`
/// as a JSON boolean at the top level, else `default` (the Responses API
/// stores by default, chat completions do not).
pub fn stores(body: &[u8], default: bool) -> bool {
    #[derive(serde::Deserialize)]
    struct Store {
        store: Option<Value>,
    }
    // `store` cannot be spelled without those bytes or a `\u` escape.
    if crate::find::find!(body, b"store").is_none() && !escaped_key(body) {
        return default;
    }
    match serde_json::from_slice::<Store>(body) {
        Ok(Store {
            store: Some(Value::Bool(b)),
        }) => b,
        _ => default,
    }
}

/// Whether a JSON text (known to be valid) has an object key written with a
/// `\u` escape, which could spell any field name. Linear: each string is
/// scanned once, from its first `\u` to its end.
pub(super) fn escaped_key(body: &[u8]) -> bool {
    let mut at = 0;
    while let Some(i) = crate::find::find!(&body[at..], b"\\u") {
        // `\u` only occurs inside a string: find that string's end.
        let mut j = at + i;
        loop {
            match body.get(j) {
                None => return true,
                Some(b'\\') => j += 2,
                Some(b'"') => break,
                Some(_) => j += 1,
            }
        }
        let mut k = j + 1;
        while body.get(k).is_some_and(u8::is_ascii_whitespace) {
            k += 1;
        }
        if body.get(k) == Some(&b':') {
            return true;
        }
        at = j + 1;
    }
    false
}
