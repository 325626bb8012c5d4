//! An OpenAI chat completions request as an Anthropic messages request.

use serde_json::{Map, Value};

use super::content::content_blocks;
use crate::translate::json::{is_unset, object, str_at, Refused};
use crate::translate::{Plan, DEFAULT_MAX_TOKENS, JSON_TOOL};

const ANTHROPIC: &str = "Anthropic messages";

/// Fields that may be present with their "off" value (`false`, 0, `null`,
/// empty) and are refused otherwise, because they change the answer and
/// Anthropic has nothing like them.
const REFUSED_UNLESS_UNSET: &[&str] = &[
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "frequency_penalty",
    "presence_penalty",
    "audio",
    "prediction",
    "reasoning_effort",
    "web_search_options",
    "verbosity",
];

/// Fields dropped on purpose: hints and bookkeeping that cannot change the
/// answer (see `LOST_ON_CHAT_TO_MESSAGES`).
const DROPPED: &[&str] = &[
    "metadata",
    "seed",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

/// Translates an OpenAI chat completions request body into an Anthropic
/// messages one, with what the response side needs to know.
pub fn chat_to_messages(req: &Value) -> Result<(Value, Plan), Refused> {
    let req = req
        .as_object()
        .ok_or_else(|| Refused("the request body must be a JSON object".into()))?;
    let mut out = Map::new();
    let mut plan = Plan::default();
    let mut max_tokens = None;
    let mut tool_choice = None;
    let mut parallel = true;
    let mut tools: Vec<Value> = Vec::new();
    let mut json_schema = None;

    for (key, value) in req {
        match key.as_str() {
            "model" => {
                out.insert("model".into(), value.clone());
            }
            "messages" => {}
            "max_tokens" | "max_completion_tokens" if !value.is_null() => {
                let n = value
                    .as_u64()
                    .ok_or_else(|| Refused(format!("`{key}` must be a positive integer")))?;
                max_tokens = Some(max_tokens.map_or(n, |m: u64| m.min(n)));
            }
            "temperature" if !value.is_null() => {
                let t = value
                    .as_f64()
                    .ok_or_else(|| Refused("`temperature` must be a number".into()))?;
                // OpenAI's range is 0–2, Anthropic's 0–1: above 1 is clamped
                // (documented), so a fallback keeps answering.
                out.insert("temperature".into(), Value::from(t.clamp(0.0, 1.0)));
            }
            "top_p" if !value.is_null() => {
                out.insert("top_p".into(), value.clone());
            }
            "n" if !(value.is_null() || value.as_u64() == Some(1)) => {
                return Err(Refused(
                    "`n` other than 1 has no equivalent on Anthropic messages (one answer per \
                     request); send n separate requests"
                        .into(),
                ));
            }
            "n" => {}
            "stop" => match value {
                Value::Null => {}
                Value::String(s) => {
                    blank_stop(s)?;
                    out.insert(
                        "stop_sequences".into(),
                        Value::Array(vec![s.as_str().into()]),
                    );
                }
                Value::Array(list) if list.iter().all(Value::is_string) => {
                    for s in list.iter().filter_map(Value::as_str) {
                        blank_stop(s)?;
                    }
                    if !list.is_empty() {
                        out.insert("stop_sequences".into(), value.clone());
                    }
                }
                _ => {
                    return Err(Refused(
                        "`stop` must be a string or a list of strings".into(),
                    ))
                }
            },
            "stream" => {
                plan.stream = value.as_bool().unwrap_or(false);
                if plan.stream {
                    out.insert("stream".into(), Value::Bool(true));
                }
            }
            "stream_options" => {
                plan.include_usage = value
                    .get("include_usage")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
            }
            "tools" | "functions" => {
                for tool in value.as_array().into_iter().flatten() {
                    tools.push(tool_to_anthropic(tool, key == "functions")?);
                }
            }
            "tool_choice" | "function_call" if !value.is_null() => {
                tool_choice = Some(choice_to_anthropic(value)?);
            }
            "parallel_tool_calls" => parallel = value.as_bool().unwrap_or(true),
            "response_format" => json_schema = json_response_schema(value)?,
            "user" if !value.is_null() => {
                out.insert("metadata".into(), object([("user_id", value.clone())]));
            }
            "store" if value.as_bool() == Some(true) => {
                return Err(Refused::no_equivalent("store: true", ANTHROPIC));
            }
            "modalities" => {
                let text_only = value.is_null()
                    || value
                        .as_array()
                        .is_some_and(|m| m.iter().all(|x| x.as_str() == Some("text")));
                if !text_only {
                    return Err(Refused::no_equivalent("modalities (audio)", ANTHROPIC));
                }
            }
            k if REFUSED_UNLESS_UNSET.contains(&k) => {
                if !is_unset(value) {
                    return Err(Refused::no_equivalent(k, ANTHROPIC));
                }
            }
            k if DROPPED.contains(&k) || matches!(k, "store" | "user") => {}
            "max_tokens" | "max_completion_tokens" | "temperature" | "top_p" => {}
            "tool_choice" | "function_call" => {}
            other => return Err(Refused::no_equivalent(other, ANTHROPIC)),
        }
    }

    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Refused("`messages` must be a list".into()))?;
    let (system, turns) = messages_to_anthropic(messages)?;
    // Keep the usual order: model, system, messages, max_tokens, then the rest.
    let mut body = Map::new();
    if let Some(model) = out.remove("model") {
        body.insert("model".into(), model);
    }
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    body.insert("messages".into(), Value::Array(turns));
    body.insert(
        "max_tokens".into(),
        Value::from(max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    body.extend(out);
    if let Some(schema) = json_schema {
        // JSON mode as a forced tool whose input is the answer.
        if !tools.is_empty() || tool_choice.is_some() {
            return Err(Refused(
                "`response_format` together with tools has no equivalent on Anthropic messages"
                    .into(),
            ));
        }
        tools.push(object([
            ("name", JSON_TOOL.into()),
            (
                "description",
                "Respond with the answer as this tool's input.".into(),
            ),
            ("input_schema", schema),
        ]));
        tool_choice = Some(object([
            ("type", "tool".into()),
            ("name", JSON_TOOL.into()),
        ]));
        plan.json_tool = true;
    }
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    let no_tools = !body.contains_key("tools");
    let mut choice = match tool_choice {
        Some(c) => Some(c),
        None if !parallel && !no_tools => Some(object([("type", "auto".into())])),
        None => None,
    };
    if let Some(Value::Object(c)) = choice.as_mut() {
        if !parallel && c.get("type").and_then(Value::as_str) != Some("none") {
            c.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    if let Some(c) = choice {
        body.insert("tool_choice".into(), c);
    }
    Ok((Value::Object(body), plan))
}

/// Anthropic refuses stop sequences made only of whitespace (`"\n"`), and
/// dropping one would change where the answer stops.
fn blank_stop(stop: &str) -> Result<(), Refused> {
    if stop.trim().is_empty() {
        return Err(Refused(format!(
            "`stop` {stop:?} has no equivalent on Anthropic messages, which refuses stop \
             sequences made only of whitespace"
        )));
    }
    Ok(())
}

/// The input schema of the JSON tool for a `response_format`, or `None` for
/// plain text. Anthropic tool inputs are objects, so a schema whose root is
/// not an object is refused.
fn json_response_schema(format: &Value) -> Result<Option<Value>, Refused> {
    let schema = match str_at(format, "type") {
        "" | "text" => return Ok(None),
        "json_object" => object([("type", "object".into())]),
        "json_schema" => format
            .get("json_schema")
            .and_then(|s| s.get("schema"))
            .cloned()
            .unwrap_or_else(|| object([("type", "object".into())])),
        other => {
            return Err(Refused(format!(
                "`response_format` {other:?} has no equivalent on Anthropic messages"
            )))
        }
    };
    if str_at(&schema, "type") != "object" {
        return Err(Refused(
            "`response_format.json_schema.schema` must describe an object to cross to Anthropic \
             messages"
                .into(),
        ));
    }
    Ok(Some(schema))
}

/// One OpenAI tool (or legacy function) as an Anthropic tool.
fn tool_to_anthropic(tool: &Value, legacy: bool) -> Result<Value, Refused> {
    let function = if legacy {
        tool
    } else {
        match str_at(tool, "type") {
            "function" => tool
                .get("function")
                .ok_or_else(|| Refused("a tool of type function needs `function`".into()))?,
            other => {
                return Err(Refused(format!(
                    "tools of type {other:?} have no equivalent on Anthropic messages (only \
                     function tools cross)"
                )))
            }
        }
    };
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Refused("every tool needs a `name`".into()))?;
    let mut out = Map::new();
    out.insert("name".into(), name.into());
    if let Some(d) = function.get("description").filter(|d| d.is_string()) {
        out.insert("description".into(), d.clone());
    }
    let schema = match function.get("parameters") {
        Some(p @ Value::Object(_)) => p.clone(),
        // A function without parameters takes none; Anthropic wants a schema.
        _ => object([
            ("type", "object".into()),
            ("properties", Value::Object(Map::new())),
        ]),
    };
    out.insert("input_schema".into(), schema);
    Ok(Value::Object(out))
}

/// `tool_choice` (or legacy `function_call`) as Anthropic's `tool_choice`.
fn choice_to_anthropic(choice: &Value) -> Result<Value, Refused> {
    let ty = |t: &str| object([("type", t.into())]);
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ty("auto")),
            "none" => Ok(ty("none")),
            "required" => Ok(ty("any")),
            other => Err(Refused(format!("unknown `tool_choice` {other:?}"))),
        },
        Value::Object(_) => {
            // `{"type":"function","function":{"name"}}`, or legacy `{"name"}`.
            let name = choice
                .get("function")
                .map_or_else(|| str_at(choice, "name"), |f| str_at(f, "name"));
            let kind = str_at(choice, "type");
            if (kind == "function" || kind.is_empty()) && !name.is_empty() {
                Ok(object([("type", "tool".into()), ("name", name.into())]))
            } else {
                Err(Refused(format!(
                    "`tool_choice` of type {kind:?} has no equivalent on Anthropic messages"
                )))
            }
        }
        _ => Err(Refused(
            "`tool_choice` must be a string or an object".into(),
        )),
    }
}

/// Builds Anthropic's `system` blocks and its turns (consecutive turns of one
/// role merged, as Anthropic combines them anyway; tool results thus share
/// one user turn).
fn messages_to_anthropic(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>), Refused> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Legacy `function_call`s waiting for their `function` result: (name, id).
    let mut pending_functions: Vec<(String, String)> = Vec::new();
    let mut push = |role: &'static str, blocks: Vec<Value>| {
        if blocks.is_empty() {
            return;
        }
        match turns.last_mut() {
            Some((last, have)) if *last == role => have.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    };
    for (i, message) in messages.iter().enumerate() {
        let content = message.get("content").unwrap_or(&Value::Null);
        match str_at(message, "role") {
            // System prompts anywhere in the list join `system`, in order.
            "system" | "developer" => system.extend(content_blocks(content, false)?),
            "user" => push("user", content_blocks(content, true)?),
            "assistant" => {
                let mut blocks = content_blocks(content, false)?;
                for call in message
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if str_at(call, "type") != "function" {
                        return Err(Refused(
                            "only function tool calls cross to Anthropic messages".into(),
                        ));
                    }
                    let function = call.get("function").unwrap_or(&Value::Null);
                    blocks.push(tool_use(str_at(call, "id"), function)?);
                }
                if let Some(call) = message.get("function_call").filter(|c| !c.is_null()) {
                    let id = format!("call_fn_{i}");
                    pending_functions.push((str_at(call, "name").to_owned(), id.clone()));
                    blocks.push(tool_use(&id, call)?);
                }
                push("assistant", blocks);
            }
            "tool" => {
                let id = str_at(message, "tool_call_id");
                push("user", vec![tool_result(id, content)?]);
            }
            "function" => {
                let name = str_at(message, "name");
                let at = pending_functions
                    .iter()
                    .rposition(|(n, _)| n == name)
                    .ok_or_else(|| {
                        Refused(format!(
                            "messages[{i}]: a function result for {name:?} without an earlier \
                             function_call"
                        ))
                    })?;
                let (_, id) = pending_functions.remove(at);
                push("user", vec![tool_result(&id, content)?]);
            }
            other => {
                return Err(Refused(format!(
                    "messages[{i}]: role {other:?} has no equivalent on Anthropic messages"
                )))
            }
        }
    }
    let turns = turns
        .into_iter()
        .map(|(role, blocks)| object([("role", role.into()), ("content", Value::Array(blocks))]))
        .collect();
    Ok((system, turns))
}

/// An assistant's tool call as a `tool_use` block; the arguments must be a
/// JSON object.
fn tool_use(id: &str, function: &Value) -> Result<Value, Refused> {
    let arguments = str_at(function, "arguments");
    let input = if arguments.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str::<Value>(arguments)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| {
                Refused(format!(
                    "tool call {id:?}: `arguments` is not a JSON object, which Anthropic requires"
                ))
            })?
    };
    Ok(object([
        ("type", "tool_use".into()),
        ("id", id.into()),
        ("name", str_at(function, "name").into()),
        ("input", input),
    ]))
}

/// A tool message as a `tool_result` block (text only, as OpenAI's are).
fn tool_result(id: &str, content: &Value) -> Result<Value, Refused> {
    let mut block = object([("type", "tool_result".into()), ("tool_use_id", id.into())]);
    let blocks = content_blocks(content, false)?;
    if !blocks.is_empty() {
        if let Value::Object(b) = &mut block {
            b.insert("content".into(), Value::Array(blocks));
        }
    }
    Ok(block)
}
