//! Provider objects (files, uploads, batches, vector stores, message batches) and the echo
//! answer for every other path.

use serde_json::{json, Map, Value};

use crate::reply::{Ctx, Reply};

/// `POST /v1/files` (uploads, batches, vector stores, message batches): a
/// new object with a fresh id (`file-mock-N`, `batch_mock_N`, ...), its
/// `path`, and a batch's `input_file_id` copied from a JSON body.
pub(crate) fn created(ctx: &Ctx) -> Reply {
    let (object, prefix) = match ctx.path.as_str() {
        "/v1/files" => ("file", "file-mock-"),
        "/v1/uploads" => ("upload", "upload_mock_"),
        "/v1/batches" => ("batch", "batch_mock_"),
        "/v1/vector_stores" => ("vector_store", "vs_mock_"),
        _ => ("message_batch", "msgbatch_mock_"),
    };
    let mut body = json!({
        "id": format!("{prefix}{}", ctx.seq),
        "object": object,
        "path": ctx.path_and_query,
    });
    if let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&ctx.body) {
        if let Some(input) = req.get("input_file_id") {
            body["input_file_id"] = input.clone();
        }
    }
    Reply::json(body)
}

/// The id in `/v1/batches/{id}` or `/v1/messages/batches/{id}`.
pub(crate) fn batch_id(path: &str) -> Option<&str> {
    let id = path
        .strip_prefix("/v1/batches/")
        .or_else(|| path.strip_prefix("/v1/messages/batches/"))?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// `GET /v1/batches/{id}`: a completed batch with an output file
/// `file-out-{id}`.
pub(crate) fn batch(ctx: &Ctx) -> Reply {
    let id = batch_id(&ctx.path).unwrap_or_default();
    Reply::json(json!({
        "id": id,
        "object": "batch",
        "status": "completed",
        "output_file_id": format!("file-out-{id}"),
        "path": ctx.path_and_query,
    }))
}

/// Any other path: what the mock received (path, method, headers, body length).
pub(crate) fn echo(ctx: &Ctx) -> Reply {
    let mut headers = Map::new();
    for (name, value) in &ctx.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    Reply::json(json!({
        "path": ctx.path_and_query,
        "method": ctx.method,
        "headers": headers,
        "body_len": ctx.body.len()
    }))
}

// ---------------------------------------------------------------------------------------------
