//! An Anthropic messages request as an OpenAI chat completions request.

use serde_json::{Map, Value};

use crate::translate::json::{is_unset, object, str_at, to_text, Refused};
use crate::translate::Plan;

const OPENAI: &str = "OpenAI chat completions";

/// OpenAI accepts at most this many stop sequences.
const MAX_STOP: usize = 4;

/// Translates an Anthropic messages request body into an OpenAI chat
/// completions one, with what the response side needs to know.
pub fn messages_to_chat(req: &Value) -> Result<(Value, Plan), Refused> {
    let req = req
        .as_object()
        .ok_or_else(|| Refused("the request body must be a JSON object".into()))?;
    let mut out = Map::new();
    let mut plan = Plan::default();
    let mut parallel = true;
    for (key, value) in req {
        match key.as_str() {
            "model" => {
                out.insert("model".into(), value.clone());
            }
            "messages" | "system" => {}
            "max_tokens" => {
                out.insert("max_completion_tokens".into(), value.clone());
            }
            "temperature" | "top_p" if !value.is_null() => {
                out.insert(key.clone(), value.clone());
            }
            "stop_sequences" => match value.as_array() {
                Some(list) if list.len() > MAX_STOP => {
                    return Err(Refused(format!(
                        "OpenAI chat completions takes at most {MAX_STOP} stop sequences, not {}",
                        list.len()
                    )))
                }
                Some(list) if !list.is_empty() => {
                    out.insert("stop".into(), value.clone());
                }
                _ => {}
            },
            "stream" => {
                plan.stream = value.as_bool().unwrap_or(false);
                // Anthropic streams always carry usage: ask OpenAI for it.
                plan.include_usage = plan.stream;
                if plan.stream {
                    out.insert("stream".into(), Value::Bool(true));
                    out.insert(
                        "stream_options".into(),
                        object([("include_usage", Value::Bool(true))]),
                    );
                }
            }
            "metadata" => {
                if let Some(user) = value.get("user_id").filter(|u| !u.is_null()) {
                    out.insert("user".into(), user.clone());
                }
            }
            "tools" => {
                let tools = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(tool_to_openai)
                    .collect::<Result<Vec<_>, _>>()?;
                if !tools.is_empty() {
                    out.insert("tools".into(), Value::Array(tools));
                }
            }
            "tool_choice" if !value.is_null() => {
                if value
                    .get("disable_parallel_tool_use")
                    .and_then(Value::as_bool)
                    == Some(true)
                {
                    parallel = false;
                }
                let choice: Value = match str_at(value, "type") {
                    "auto" => "auto".into(),
                    "any" => "required".into(),
                    "none" => "none".into(),
                    "tool" => object([
                        ("type", "function".into()),
                        ("function", object([("name", str_at(value, "name").into())])),
                    ]),
                    other => return Err(Refused(format!("unknown `tool_choice` type {other:?}"))),
                };
                out.insert("tool_choice".into(), choice);
            }
            "thinking" => {
                if !(value.is_null() || str_at(value, "type") == "disabled") {
                    return Err(Refused(
                        "`thinking` has no equivalent on OpenAI chat completions; remove it to \
                         route this request there"
                            .into(),
                    ));
                }
            }
            "top_k" if !is_unset(value) => return Err(Refused::no_equivalent("top_k", OPENAI)),
            "top_k" | "temperature" | "top_p" | "tool_choice" | "service_tier" => {}
            other => return Err(Refused::no_equivalent(other, OPENAI)),
        }
    }
    if !parallel && out.contains_key("tools") {
        out.insert("parallel_tool_calls".into(), Value::Bool(false));
    }

    let mut messages = Vec::new();
    if let Some(system) = req.get("system").filter(|s| !s.is_null()) {
        let text = text_of(system, "system")?;
        if !text.is_empty() {
            messages.push(object([
                ("role", "system".into()),
                ("content", text.into()),
            ]));
        }
    }
    let list = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Refused("`messages` must be a list".into()))?;
    for (i, message) in list.iter().enumerate() {
        let content = message.get("content").unwrap_or(&Value::Null);
        match str_at(message, "role") {
            "user" => user_to_openai(i, content, &mut messages)?,
            "assistant" => messages.push(assistant_to_openai(i, content)?),
            other => {
                return Err(Refused(format!(
                    "messages[{i}]: role {other:?} is not an Anthropic role"
                )))
            }
        }
    }
    let mut body = Map::new();
    if let Some(model) = out.remove("model") {
        body.insert("model".into(), model);
    }
    body.insert("messages".into(), Value::Array(messages));
    body.extend(out);
    Ok((Value::Object(body), plan))
}

/// An Anthropic tool as an OpenAI function tool. Anthropic's server tools
/// (web search, code execution, computer use…) run at Anthropic: refused.
fn tool_to_openai(tool: &Value) -> Result<Value, Refused> {
    match str_at(tool, "type") {
        "" | "custom" => {}
        other => {
            return Err(Refused(format!(
                "the Anthropic server tool {other:?} has no equivalent on OpenAI chat completions"
            )))
        }
    }
    let mut function = Map::new();
    function.insert("name".into(), str_at(tool, "name").into());
    if let Some(d) = tool.get("description").filter(|d| d.is_string()) {
        function.insert("description".into(), d.clone());
    }
    function.insert(
        "parameters".into(),
        tool.get("input_schema").cloned().unwrap_or_default(),
    );
    Ok(object([
        ("type", "function".into()),
        ("function", Value::Object(function)),
    ]))
}

/// A user turn: its tool results become `tool` messages first (OpenAI wants
/// them right after the assistant's calls), then the rest a user message.
fn user_to_openai(i: usize, content: &Value, out: &mut Vec<Value>) -> Result<(), Refused> {
    let blocks = match content {
        Value::String(s) => {
            out.push(object([
                ("role", "user".into()),
                ("content", s.as_str().into()),
            ]));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => {
            return Err(Refused(format!(
                "messages[{i}].content must be a string or a list"
            )))
        }
    };
    let mut parts = Vec::new();
    for block in blocks {
        match str_at(block, "type") {
            "tool_result" => {
                let text = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(c) => text_of(c, "tool_result content")?,
                };
                out.push(object([
                    ("role", "tool".into()),
                    ("tool_call_id", str_at(block, "tool_use_id").into()),
                    ("content", text.into()),
                ]));
            }
            "text" => parts.push(object([
                ("type", "text".into()),
                ("text", str_at(block, "text").into()),
            ])),
            "image" => parts.push(image_part(block)?),
            "document" => parts.push(document_part(block)?),
            other => {
                return Err(Refused(format!(
                    "messages[{i}]: content blocks of type {other:?} have no equivalent on OpenAI \
                     chat completions"
                )))
            }
        }
    }
    let content = match parts.as_slice() {
        [] => return Ok(()),
        [only] if str_at(only, "type") == "text" => Value::from(str_at(only, "text")),
        _ => Value::Array(parts),
    };
    out.push(object([("role", "user".into()), ("content", content)]));
    Ok(())
}

/// An assistant turn: text joins `content`, `tool_use` blocks become
/// `tool_calls`, earlier thinking is dropped (documented).
fn assistant_to_openai(i: usize, content: &Value) -> Result<Value, Refused> {
    let mut text = String::new();
    let mut calls = Vec::new();
    match content {
        Value::String(s) => text.push_str(s),
        Value::Array(blocks) => {
            for block in blocks {
                match str_at(block, "type") {
                    "text" => text.push_str(str_at(block, "text")),
                    "tool_use" => calls.push(object([
                        ("id", str_at(block, "id").into()),
                        ("type", "function".into()),
                        (
                            "function",
                            object([
                                ("name", str_at(block, "name").into()),
                                (
                                    "arguments",
                                    to_text(block.get("input").unwrap_or(&Value::Null)).into(),
                                ),
                            ]),
                        ),
                    ])),
                    "thinking" | "redacted_thinking" => {}
                    other => {
                        return Err(Refused(format!(
                            "messages[{i}]: content blocks of type {other:?} have no equivalent \
                             on OpenAI chat completions"
                        )))
                    }
                }
            }
        }
        _ => {
            return Err(Refused(format!(
                "messages[{i}].content must be a string or a list"
            )))
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert(
        "content".into(),
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            text.into()
        },
    );
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(Value::Object(message))
}

/// The text of a string or a list of text blocks (`system`, tool results).
fn text_of(value: &Value, what: &str) -> Result<String, Refused> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for block in blocks {
                if str_at(block, "type") != "text" {
                    return Err(Refused(format!(
                        "{what}: only text crosses to OpenAI chat completions, not {:?} blocks",
                        str_at(block, "type")
                    )));
                }
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(str_at(block, "text"));
            }
            Ok(text)
        }
        _ => Err(Refused(format!(
            "{what} must be a string or a list of text blocks"
        ))),
    }
}

/// An image block as an `image_url` part (base64 sources as data: URLs).
fn image_part(block: &Value) -> Result<Value, Refused> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let url = match str_at(source, "type") {
        "base64" => format!(
            "data:{};base64,{}",
            str_at(source, "media_type"),
            str_at(source, "data")
        ),
        "url" => str_at(source, "url").to_owned(),
        other => {
            return Err(Refused(format!(
                "image sources of type {other:?} have no equivalent on OpenAI chat completions"
            )))
        }
    };
    Ok(object([
        ("type", "image_url".into()),
        ("image_url", object([("url", url.into())])),
    ]))
}

/// A base64 PDF document as a `file` part with inline data.
fn document_part(block: &Value) -> Result<Value, Refused> {
    let source = block.get("source").unwrap_or(&Value::Null);
    if str_at(source, "type") != "base64" || str_at(source, "media_type") != "application/pdf" {
        return Err(Refused(
            "only base64 PDF documents cross to OpenAI chat completions".into(),
        ));
    }
    Ok(object([
        ("type", "file".into()),
        (
            "file",
            object([
                ("filename", "document.pdf".into()),
                (
                    "file_data",
                    format!("data:application/pdf;base64,{}", str_at(source, "data")).into(),
                ),
            ]),
        ),
    ]))
}
