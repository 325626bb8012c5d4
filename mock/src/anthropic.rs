//! Anthropic endpoints: messages (with prompt-caching accounting), count_tokens, models.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::{json, Value};

use crate::content::{
    bool_at, content_text, count_words, generate, last_user_text, messages_of, model_of, part_text,
    tool_trigger_text, tools_to_call, u64_field, CREATED_RFC3339, DEFAULT_MODEL,
    TOOL_ARG_FRAGMENTS,
};
use crate::error::error_reply;
use crate::reply::{sse_event, Ctx, Reply};
use crate::server::lock;

// Anthropic endpoints
// ---------------------------------------------------------------------------------------------

/// One cacheable unit of an Anthropic prompt (a tool, a system block, a message block).
struct PromptUnit {
    tokens: u64,
    marked: bool,
    /// The marker asks for the hour-long lifetime (`"ttl": "1h"`).
    hour: bool,
    key: String,
}

fn has_cache_control(value: &Value) -> bool {
    value.get("cache_control").is_some_and(|c| !c.is_null())
}

fn hour_long(value: &Value) -> bool {
    value.pointer("/cache_control/ttl").and_then(Value::as_str) == Some("1h")
}

fn push_content_units(units: &mut Vec<PromptUnit>, role: &str, content: &Value) {
    match content {
        Value::Array(blocks) if !blocks.is_empty() => {
            for (i, block) in blocks.iter().enumerate() {
                let words = part_text(block).map_or(0, |t| count_words(&t));
                units.push(PromptUnit {
                    // The +3 per message is attributed to its first block.
                    tokens: words + if i == 0 { 3 } else { 0 },
                    marked: has_cache_control(block),
                    hour: hour_long(block),
                    key: format!("{role}:{block}"),
                });
            }
        }
        other => units.push(PromptUnit {
            tokens: 3 + count_words(&content_text(other)),
            marked: false,
            hour: false,
            key: format!("{role}:{other}"),
        }),
    }
}

/// Tools (0 tokens each), the system prompt (one message) and the messages, in prompt order.
fn anthropic_units(request: &Value) -> Vec<PromptUnit> {
    let mut units = Vec::new();
    if let Some(tools) = request.get("tools").and_then(Value::as_array) {
        for tool in tools {
            units.push(PromptUnit {
                tokens: 0,
                marked: has_cache_control(tool),
                hour: hour_long(tool),
                key: format!("tool:{tool}"),
            });
        }
    }
    if let Some(system) = request.get("system") {
        push_content_units(&mut units, "system", system);
    }
    for message in messages_of(request) {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("user");
        let content = message.get("content").cloned().unwrap_or(Value::Null);
        push_content_units(&mut units, role, &content);
    }
    units
}

struct AnthropicUsage {
    input: u64,
    cache_creation: u64,
    /// The part of `cache_creation` written with the hour-long lifetime.
    cache_creation_1h: u64,
    cache_read: u64,
}

/// Prompt accounting with prompt caching: the units up to the last `cache_control` marker are
/// written to the cache the first time that exact prefix (and model) is seen, and read from it
/// afterwards. `input` is what is left after the cached prefix, as the API reports it.
fn anthropic_usage(ctx: &Ctx, request: &Value) -> AnthropicUsage {
    let units = anthropic_units(request);
    let total: u64 = units.iter().map(|u| u.tokens).sum();
    let Some(last_marker) = units.iter().rposition(|u| u.marked) else {
        return AnthropicUsage {
            input: total,
            cache_creation: 0,
            cache_creation_1h: 0,
            cache_read: 0,
        };
    };
    let prefix = &units[..=last_marker];
    let prefix_tokens: u64 = prefix.iter().map(|u| u.tokens).sum();
    let mut hasher = DefaultHasher::new();
    model_of(request).hash(&mut hasher);
    for unit in prefix {
        unit.key.hash(&mut hasher);
    }
    let first_sight = lock(&ctx.shared.cache_prefixes).insert(hasher.finish());
    AnthropicUsage {
        input: total - prefix_tokens,
        cache_creation: if first_sight { prefix_tokens } else { 0 },
        cache_creation_1h: if first_sight && units[last_marker].hour {
            prefix_tokens
        } else {
            0
        },
        cache_read: if first_sight { 0 } else { prefix_tokens },
    }
}

pub(crate) fn messages(ctx: &Ctx, request: &Value) -> Reply {
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return error_reply(ctx, 400, "messages: Field required");
    };
    let id = format!("msg_mock_{}", ctx.seq);
    let model = model_of(request);
    let user_text = last_user_text(messages);
    let usage = anthropic_usage(ctx, request);
    let stream = bool_at(request, "/stream");

    // Each block: as it ends up in the message, as its stream opens it, its deltas.
    let tool_names = tools_to_call(request, &tool_trigger_text(messages), ctx.opts.tool_calls);
    let (blocks, stop_reason, output_tokens): (Vec<(Value, Value, Vec<Value>)>, _, _) =
        if !tool_names.is_empty() {
            let blocks = tool_names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let id = format!("toolu_mock_{}", i + 1);
                    let deltas = TOOL_ARG_FRAGMENTS
                        .iter()
                        .map(|f| json!({"type": "input_json_delta", "partial_json": f}))
                        .collect();
                    (
                        json!({"type": "tool_use", "id": id, "name": name, "input": {"city": "Paris"}}),
                        json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                        deltas,
                    )
                })
                .collect();
            (
                blocks,
                "tool_use",
                (TOOL_ARG_FRAGMENTS.len() * tool_names.len()) as u64,
            )
        } else {
            let generated = generate(ctx, &user_text, u64_field(request, &["max_tokens"]));
            let deltas = generated
                .pieces
                .iter()
                .map(|p| json!({"type": "text_delta", "text": p}))
                .collect();
            (
                vec![(
                    json!({"type": "text", "text": generated.text}),
                    json!({"type": "text", "text": ""}),
                    deltas,
                )],
                if generated.truncated {
                    "max_tokens"
                } else {
                    "end_turn"
                },
                generated.completion_tokens(),
            )
        };

    let usage_json = |output: u64| {
        json!({
            "input_tokens": usage.input,
            "output_tokens": output,
            "cache_creation_input_tokens": usage.cache_creation,
            "cache_read_input_tokens": usage.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": usage.cache_creation - usage.cache_creation_1h,
                "ephemeral_1h_input_tokens": usage.cache_creation_1h
            }
        })
    };

    if !stream {
        return Reply::json(json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": blocks.iter().map(|(whole, _, _)| whole.clone()).collect::<Vec<_>>(),
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": usage_json(output_tokens)
        }));
    }
    let mut events = vec![sse_event(&json!({
        "type": "message_start",
        "message": {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage_json(1)
        }
    }))];
    for (index, (_, start, deltas)) in blocks.into_iter().enumerate() {
        events.push(sse_event(
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        if index == 0 {
            // As the API does: a ping after the first block opens.
            events.push(sse_event(&json!({"type": "ping"})));
        }
        for delta in deltas {
            events.push(sse_event(
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        events.push(sse_event(
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push(sse_event(&json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": output_tokens}
    })));
    events.push(sse_event(&json!({"type": "message_stop"})));
    Reply::sse(events)
}

pub(crate) fn count_tokens(_ctx: &Ctx, request: &Value) -> Reply {
    let total: u64 = anthropic_units(request).iter().map(|u| u.tokens).sum();
    Reply::json(json!({"input_tokens": total}))
}

// ---------------------------------------------------------------------------------------------

/// The ids `GET /v1/models` lists (Anthropic flavour), `mock-model` first.
const ANTHROPIC_MODELS: [&str; 3] = [DEFAULT_MODEL, "claude-mock-sonnet", "claude-mock-haiku"];

/// `GET /v1/models` with an `anthropic-version` header.
pub(crate) fn models() -> Reply {
    let data: Vec<Value> = ANTHROPIC_MODELS
        .iter()
        .map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": CREATED_RFC3339}))
        .collect();
    Reply::json(json!({
        "data": data,
        "has_more": false,
        "first_id": ANTHROPIC_MODELS[0],
        "last_id": ANTHROPIC_MODELS[ANTHROPIC_MODELS.len() - 1]
    }))
}
