//! OpenAI message content (a string or a list of parts) as Anthropic
//! content blocks.

use serde_json::Value;

use super::split_data_url;
use crate::translate::json::{object, str_at, to_text, Refused};

/// Message content (a string or a list of parts) as Anthropic blocks. Empty
/// text is left out: Anthropic refuses empty text blocks.
pub(super) fn content_blocks(content: &Value, user: bool) -> Result<Vec<Value>, Refused> {
    let text = |t: &str| object([("type", "text".into()), ("text", t.into())]);
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![text(s)]),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for part in parts {
                match str_at(part, "type") {
                    "text" | "refusal" => {
                        let key = if str_at(part, "type") == "text" {
                            "text"
                        } else {
                            "refusal"
                        };
                        let t = str_at(part, key);
                        if !t.is_empty() {
                            out.push(text(t));
                        }
                    }
                    "image_url" if user => {
                        let url = part
                            .get("image_url")
                            .map_or_else(|| str_at(part, "url"), |i| str_at(i, "url"));
                        out.push(image_block(url)?);
                    }
                    "file" if user => out.push(file_block(part.get("file").unwrap_or(part))?),
                    other => {
                        return Err(Refused(format!(
                            "content parts of type {other:?} have no equivalent on Anthropic \
                             messages{}",
                            if user { "" } else { " in this role" }
                        )))
                    }
                }
            }
            Ok(out)
        }
        other => Err(Refused(format!(
            "message content must be a string or a list of parts, not {}",
            to_text(other).chars().take(40).collect::<String>()
        ))),
    }
}

/// An `image_url` part: a base64 `data:` URL becomes a base64 source, an
/// http(s) URL a url source.
fn image_block(url: &str) -> Result<Value, Refused> {
    let source = if let Some((media, data)) = split_data_url(url) {
        object([
            ("type", "base64".into()),
            ("media_type", media.into()),
            ("data", data.into()),
        ])
    } else if url.starts_with("https://") || url.starts_with("http://") {
        object([("type", "url".into()), ("url", url.into())])
    } else {
        return Err(Refused(
            "`image_url.url` must be an http(s) URL or a base64 data: URL".into(),
        ));
    };
    Ok(object([("type", "image".into()), ("source", source)]))
}

/// A `file` part with inline PDF data as a document block; file ids live in
/// OpenAI's storage and cannot cross.
fn file_block(file: &Value) -> Result<Value, Refused> {
    match split_data_url(str_at(file, "file_data")) {
        Some((media @ "application/pdf", data)) => Ok(object([
            ("type", "document".into()),
            (
                "source",
                object([
                    ("type", "base64".into()),
                    ("media_type", media.into()),
                    ("data", data.into()),
                ]),
            ),
        ])),
        _ => Err(Refused(
            "only `file` parts with inline PDF data (`file_data`) cross to Anthropic messages; \
             file ids do not"
                .into(),
        )),
    }
}
