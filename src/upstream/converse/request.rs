//! An Anthropic Messages request as a Converse request.

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// Where the answer goes to say a field has no place in Converse.
const API: &str = "AWS Bedrock's Converse API";

/// Anthropic fields that cannot change the answer and have no Converse
/// equivalent: accepted and left out (README.md lists them).
const DROPPED: &[&str] = &["metadata"];

/// The Converse body for an Anthropic Messages body, and whether the client
/// asked for a stream (`converse-stream`). `betas` (the client's allowed
/// `anthropic-beta` values) go to the model as `anthropic_beta`, as Claude
/// on Bedrock takes them. `Err` names the field that has no equivalent.
pub fn request_body(body: &[u8], betas: &[String]) -> Result<(Bytes, bool), String> {
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return Err("the request body is not a JSON object".into());
    };
    let stream = req.get("stream").and_then(Value::as_bool) == Some(true);
    let mut out = Map::new();
    let mut inference = Map::new();
    let mut extra = Map::new();
    let mut docs = 0;
    for (key, v) in &req {
        if v.is_null() {
            continue;
        }
        match key.as_str() {
            "model" | "stream" => {}
            "messages" => {
                out.insert("messages".into(), messages(v, &mut docs)?);
            }
            "system" => {
                let system = system(v)?;
                if !system.is_empty() {
                    out.insert("system".into(), Value::Array(system));
                }
            }
            "max_tokens" => {
                inference.insert("maxTokens".into(), v.clone());
            }
            "temperature" => {
                inference.insert("temperature".into(), v.clone());
            }
            "top_p" => {
                inference.insert("topP".into(), v.clone());
            }
            "stop_sequences" => {
                inference.insert("stopSequences".into(), v.clone());
            }
            // Model-specific: Bedrock hands these to the model as they are
            // (Claude takes both; a model without them answers a 400).
            "top_k" | "thinking" => {
                extra.insert(key.clone(), v.clone());
            }
            "tools" | "tool_choice" => {}
            k if DROPPED.contains(&k) => {}
            other => return Err(no_equivalent(other)),
        }
    }
    if let Some(config) = tool_config(req.get("tools"), req.get("tool_choice"))? {
        out.insert("toolConfig".into(), config);
    }
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if !betas.is_empty() {
        extra.insert("anthropic_beta".into(), json!(betas));
    }
    if !extra.is_empty() {
        out.insert("additionalModelRequestFields".into(), Value::Object(extra));
    }
    let bytes = serde_json::to_vec(&Value::Object(out)).map_err(|e| e.to_string())?;
    Ok((Bytes::from(bytes), stream))
}

fn no_equivalent(field: &str) -> String {
    format!("`{field}` has no equivalent on {API}; remove it to route this request there")
}

/// The messages, consecutive turns of one role merged (Anthropic merges
/// them; Converse wants the roles to alternate).
fn messages(v: &Value, docs: &mut usize) -> Result<Value, String> {
    let Value::Array(list) = v else {
        return Err("`messages` must be an array".into());
    };
    let mut out: Vec<Value> = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "assistant" {
            return Err(format!(
                "`messages[{i}].role` must be user or assistant, not {role:?}"
            ));
        }
        let at = format!("messages[{i}].content");
        let content = content(m.get("content").unwrap_or(&Value::Null), &at, docs)?;
        match out.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(Value::Array(blocks)) = last.get_mut("content") {
                    blocks.extend(content);
                }
            }
            _ => out.push(json!({"role": role, "content": content})),
        }
    }
    Ok(Value::Array(out))
}

/// A message's content: a string, or blocks (each followed by a cache point
/// when it carries `cache_control`).
fn content(v: &Value, at: &str, docs: &mut usize) -> Result<Vec<Value>, String> {
    let blocks = match v {
        Value::String(s) => return Ok(vec![json!({ "text": s })]),
        Value::Array(blocks) => blocks,
        _ => return Err(format!("`{at}` must be a string or an array of blocks")),
    };
    let mut out = Vec::with_capacity(blocks.len());
    for (j, b) in blocks.iter().enumerate() {
        out.push(block(b, &format!("{at}[{j}]"), docs)?);
        cache_point(b, &mut out);
    }
    Ok(out)
}

/// Converse's prompt-cache marker after a block marked `cache_control`.
fn cache_point(block: &Value, out: &mut Vec<Value>) {
    if block.get("cache_control").is_some_and(|c| !c.is_null()) {
        out.push(json!({"cachePoint": {"type": "default"}}));
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// One content block.
fn block(b: &Value, at: &str, docs: &mut usize) -> Result<Value, String> {
    let ty = str_of(b, "type");
    Ok(match ty {
        "text" => {
            if b.get("citations").is_some_and(|c| !c.is_null()) {
                return Err(no_equivalent(&format!("{at}.citations")));
            }
            json!({"text": str_of(b, "text")})
        }
        "image" => image(b, at)?,
        "document" => document(b, at, docs)?,
        "tool_use" => json!({"toolUse": {
            "toolUseId": str_of(b, "id"),
            "name": str_of(b, "name"),
            "input": b.get("input").cloned().unwrap_or_else(|| json!({})),
        }}),
        "tool_result" => tool_result(b, at)?,
        "thinking" => json!({"reasoningContent": {"reasoningText": {
            "text": str_of(b, "thinking"),
            "signature": str_of(b, "signature"),
        }}}),
        "redacted_thinking" => {
            json!({"reasoningContent": {"redactedContent": str_of(b, "data")}})
        }
        other => {
            return Err(format!(
                "`{at}.type` {other:?} has no equivalent on {API}; remove it to route this request there"
            ))
        }
    })
}

/// A base64 image (Converse carries the bytes, base64 in JSON; it cannot
/// fetch a URL).
fn image(b: &Value, at: &str) -> Result<Value, String> {
    let source = b.get("source").unwrap_or(&Value::Null);
    if str_of(source, "type") != "base64" {
        return Err(format!(
            "`{at}.source.type` {:?}: {API} takes images as base64 data only",
            str_of(source, "type")
        ));
    }
    let format = match str_of(source, "media_type") {
        "image/png" => "png",
        "image/jpeg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => {
            return Err(format!(
                "`{at}.source.media_type` {other:?} is not an image type {API} takes (png, jpeg, gif, webp)"
            ))
        }
    };
    Ok(json!({"image": {"format": format, "source": {"bytes": str_of(source, "data")}}}))
}

/// A PDF (base64) or plain-text document. Converse requires a name; the
/// documents are numbered in request order.
fn document(b: &Value, at: &str, docs: &mut usize) -> Result<Value, String> {
    if b.pointer("/citations/enabled") == Some(&Value::Bool(true)) {
        return Err(no_equivalent(&format!("{at}.citations")));
    }
    let source = b.get("source").unwrap_or(&Value::Null);
    let (format, bytes) = match (str_of(source, "type"), str_of(source, "media_type")) {
        ("base64", "application/pdf") => ("pdf", str_of(source, "data").to_owned()),
        ("text", _) => (
            "txt",
            aws_smithy_types::base64::encode(str_of(source, "data")),
        ),
        (ty, media) => {
            return Err(format!(
                "`{at}.source` ({ty:?}, {media:?}): {API} takes documents as base64 PDF or text"
            ))
        }
    };
    *docs += 1;
    Ok(json!({"document": {
        "format": format,
        "name": format!("document-{docs}"),
        "source": {"bytes": bytes},
    }}))
}

/// A tool's result: its text and images, and whether it is an error.
fn tool_result(b: &Value, at: &str) -> Result<Value, String> {
    let content = match b.get("content").unwrap_or(&Value::Null) {
        Value::Null => Vec::new(),
        Value::String(s) => vec![json!({ "text": s })],
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for (k, p) in parts.iter().enumerate() {
                let at = format!("{at}.content[{k}]");
                out.push(match str_of(p, "type") {
                    "text" => json!({"text": str_of(p, "text")}),
                    "image" => image(p, &at)?,
                    other => {
                        return Err(format!(
                            "`{at}.type` {other:?} has no equivalent in a tool result on {API}"
                        ))
                    }
                });
            }
            out
        }
        _ => return Err(format!("`{at}.content` must be a string or an array")),
    };
    let mut result = json!({"toolUseId": str_of(b, "tool_use_id"), "content": content});
    if b.get("is_error") == Some(&Value::Bool(true)) {
        result["status"] = json!("error");
    }
    Ok(json!({ "toolResult": result }))
}

/// The system prompt: a string, or text blocks (cache points kept).
fn system(v: &Value) -> Result<Vec<Value>, String> {
    match v {
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({ "text": s })]),
        Value::Array(blocks) => {
            let mut out = Vec::with_capacity(blocks.len());
            for (i, b) in blocks.iter().enumerate() {
                if str_of(b, "type") != "text" {
                    return Err(format!("`system[{i}].type` must be text on {API}"));
                }
                out.push(json!({"text": str_of(b, "text")}));
                cache_point(b, &mut out);
            }
            Ok(out)
        }
        _ => Err("`system` must be a string or an array of text blocks".into()),
    }
}

/// `tools` and `tool_choice` as Converse's `toolConfig` (`None`: no tools).
fn tool_config(tools: Option<&Value>, choice: Option<&Value>) -> Result<Option<Value>, String> {
    let tools = match tools {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(t)) => t,
        Some(_) => return Err("`tools` must be an array".into()),
    };
    let mut specs = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let ty = str_of(t, "type");
        if !ty.is_empty() && ty != "custom" {
            return Err(format!(
                "`tools[{i}].type` {ty:?} (a server tool) has no equivalent on {API}"
            ));
        }
        let mut spec = json!({
            "name": str_of(t, "name"),
            "inputSchema": {"json": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}))},
        });
        if let Some(d) = t.get("description").filter(|d| !d.is_null()) {
            spec["description"] = d.clone();
        }
        specs.push(json!({ "toolSpec": spec }));
        cache_point(t, &mut specs);
    }
    let choice = match choice.filter(|c| !c.is_null()) {
        None => None,
        Some(c) => {
            if c.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
                return Err(no_equivalent("tool_choice.disable_parallel_tool_use"));
            }
            Some(match str_of(c, "type") {
                "auto" => json!({"auto": {}}),
                "any" => json!({"any": {}}),
                "tool" => json!({"tool": {"name": str_of(c, "name")}}),
                other => {
                    return Err(format!(
                        "`tool_choice.type` {other:?} has no equivalent on {API} (auto, any and tool have)"
                    ))
                }
            })
        }
    };
    if specs.is_empty() {
        return match choice {
            None => Ok(None),
            Some(_) => Err("`tool_choice` needs `tools`".into()),
        };
    }
    let mut config = json!({ "tools": specs });
    if let Some(c) = choice {
        config["toolChoice"] = c;
    }
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn converse(req: Value) -> Result<Value, String> {
        let (body, _) = request_body(req.to_string().as_bytes(), &[])?;
        Ok(serde_json::from_slice(&body).expect("json"))
    }

    #[test]
    fn a_full_messages_request_becomes_its_converse_golden() {
        let req = json!({
            "model": "claude", "stream": true, "max_tokens": 100,
            "temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop_sequences": ["END"],
            "metadata": {"user_id": "u1"},
            "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
            "tools": [{"name": "weather", "description": "the weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "tool_use", "id": "tu1", "name": "weather", "input": {"city": "Paris"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "tu1", "content": "sunny", "is_error": true},
                ]},
                {"role": "user", "content": "and tomorrow?"},
            ]
        });
        let (body, stream) =
            request_body(req.to_string().as_bytes(), &["beta-1".into()]).expect("maps");
        assert!(stream);
        let got: Value = serde_json::from_slice(&body).expect("json");
        let want = json!({
            "messages": [
                {"role": "user", "content": [
                    {"text": "look"},
                    {"image": {"format": "png", "source": {"bytes": "iVBO"}}},
                ]},
                {"role": "assistant", "content": [
                    {"reasoningContent": {"reasoningText": {"text": "hm", "signature": "sig"}}},
                    {"toolUse": {"toolUseId": "tu1", "name": "weather", "input": {"city": "Paris"}}},
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "tu1", "content": [{"text": "sunny"}], "status": "error"}},
                    {"text": "and tomorrow?"},
                ]},
            ],
            "system": [{"text": "be brief"}, {"cachePoint": {"type": "default"}}],
            "inferenceConfig": {"maxTokens": 100, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]},
            "toolConfig": {
                "tools": [{"toolSpec": {"name": "weather", "description": "the weather",
                           "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}}],
                "toolChoice": {"any": {}},
            },
            "additionalModelRequestFields": {"top_k": 40, "anthropic_beta": ["beta-1"]},
        });
        assert_eq!(got, want);
    }

    #[test]
    fn strings_documents_and_cache_points_map() {
        let got = converse(json!({
            "max_tokens": 5, "system": "sys",
            "tools": [{"name": "t", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
            "tool_choice": {"type": "tool", "name": "t"},
            "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hi"}},
                {"type": "text", "text": "sum up", "cache_control": {"type": "ephemeral"}},
            ]}]
        }))
        .expect("maps");
        assert_eq!(got["system"], json!([{"text": "sys"}]));
        assert_eq!(
            got["messages"][0]["content"],
            json!([
                {"document": {"format": "txt", "name": "document-1", "source": {"bytes": "aGk="}}},
                {"text": "sum up"},
                {"cachePoint": {"type": "default"}},
            ])
        );
        assert_eq!(
            got["toolConfig"]["tools"][1],
            json!({"cachePoint": {"type": "default"}})
        );
        assert_eq!(
            got["toolConfig"]["toolChoice"],
            json!({"tool": {"name": "t"}})
        );
        assert_eq!(got.get("stream"), None);
        assert_eq!(got.get("model"), None);
    }

    #[test]
    fn what_converse_cannot_take_is_refused_by_name() {
        let base = || json!({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        let refused = |patch: &dyn Fn(&mut Value), needle: &str| {
            let mut req = base();
            patch(&mut req);
            let err = converse(req).expect_err(needle);
            assert!(err.contains(needle), "{needle}: {err}");
        };
        refused(
            &|r| r["service_tier"] = json!("auto"),
            "`service_tier` has no equivalent",
        );
        refused(&|r| r["mcp_servers"] = json!([{}]), "`mcp_servers`");
        refused(
            &|r| r["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]),
            "`tools[0].type` \"web_search_20250305\"",
        );
        refused(
            &|r| {
                r["tools"] = json!([{"name": "t", "input_schema": {}}]);
                r["tool_choice"] = json!({"type": "none"});
            },
            "`tool_choice.type` \"none\"",
        );
        refused(
            &|r| {
                r["tools"] = json!([{"name": "t", "input_schema": {}}]);
                r["tool_choice"] = json!({"type": "auto", "disable_parallel_tool_use": true});
            },
            "tool_choice.disable_parallel_tool_use",
        );
        refused(
            &|r| {
                r["messages"][0]["content"] = json!([{"type": "image",
                    "source": {"type": "url", "url": "https://x/y.png"}}]);
            },
            "`messages[0].content[0].source.type` \"url\"",
        );
        refused(
            &|r| r["messages"][0]["content"] = json!([{"type": "server_tool_use", "id": "x"}]),
            "`messages[0].content[0].type` \"server_tool_use\"",
        );
        refused(
            &|r| r["messages"][0]["role"] = json!("system"),
            "`messages[0].role`",
        );
        assert!(request_body(b"[]", &[]).is_err());
        // A null field is an absent one.
        let mut req = base();
        req["service_tier"] = Value::Null;
        assert!(converse(req).is_ok());
    }
}
