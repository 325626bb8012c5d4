//! OpenAI endpoints: chat completions, completions, embeddings, models.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::content::{
    bool_at, count_words, generate, last_user_text, messages_prompt_tokens, model_of,
    tool_trigger_text, tools_to_call, u64_field, CREATED, DEFAULT_MODEL, TOOL_ARGS,
    TOOL_ARG_FRAGMENTS,
};
use crate::error::error_reply;
use crate::reply::{sse_data, Ctx, Reply};

fn openai_usage(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0}
    })
}

fn with_trailing_usage(mut chunk: Value, include_usage: bool) -> Value {
    if include_usage {
        if let Some(obj) = chunk.as_object_mut() {
            // Inserted last: the text ends with `,"usage":null}` as OpenAI's chunks do.
            obj.insert("usage".to_owned(), Value::Null);
        }
    }
    chunk
}

pub(crate) fn chat_completions(ctx: &Ctx, request: &Value) -> Reply {
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return error_reply(ctx, 400, "Missing required parameter: 'messages'.");
    };
    let model = model_of(request);
    let id = format!("chatcmpl-mock-{}", ctx.seq);
    let stream = bool_at(request, "/stream");
    let include_usage = bool_at(request, "/stream_options/include_usage");
    let prompt_tokens = messages_prompt_tokens(messages);
    let user_text = last_user_text(messages);
    let max_tokens = u64_field(request, &["max_completion_tokens", "max_tokens"]);

    let chunk = |delta: Value, finish: Value| {
        with_trailing_usage(
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
            }),
            include_usage,
        )
    };
    let usage_chunk = |completion_tokens: u64| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "choices": [],
            "usage": openai_usage(prompt_tokens, completion_tokens)
        })
    };

    let tool_names = tools_to_call(request, &tool_trigger_text(messages), ctx.opts.tool_calls);
    if !tool_names.is_empty() {
        let completion_tokens = (TOOL_ARG_FRAGMENTS.len() * tool_names.len()) as u64;
        let call_id = |i: usize| format!("call_mock_{}", i + 1);
        if !stream {
            let calls: Vec<Value> = tool_names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    json!({
                        "id": call_id(i),
                        "type": "function",
                        "function": {"name": name, "arguments": TOOL_ARGS}
                    })
                })
                .collect();
            return Reply::json(json!({
                "id": id,
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": null,
                        "tool_calls": calls,
                        "refusal": null
                    },
                    "logprobs": null,
                    "finish_reason": "tool_calls"
                }],
                "usage": openai_usage(prompt_tokens, completion_tokens)
            }));
        }
        let mut events = Vec::new();
        for (i, name) in tool_names.iter().enumerate() {
            // Each call opens with its id and name, then streams its arguments.
            let opening = json!([{
                "index": i,
                "id": call_id(i),
                "type": "function",
                "function": {"name": name, "arguments": ""}
            }]);
            let delta = if i == 0 {
                json!({"role": "assistant", "content": null, "tool_calls": opening})
            } else {
                json!({"tool_calls": opening})
            };
            events.push(sse_data(&chunk(delta, Value::Null)));
            for fragment in TOOL_ARG_FRAGMENTS {
                events.push(sse_data(&chunk(
                    json!({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]}),
                    Value::Null,
                )));
            }
        }
        events.push(sse_data(&chunk(json!({}), json!("tool_calls"))));
        if include_usage {
            events.push(sse_data(&usage_chunk(completion_tokens)));
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        return Reply::sse(events);
    }

    let generated = generate(ctx, &user_text, max_tokens);
    let finish = if generated.truncated {
        "length"
    } else {
        "stop"
    };
    if !stream {
        return Reply::json(json!({
            "id": id,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": generated.text, "refusal": null},
                "logprobs": null,
                "finish_reason": finish
            }],
            "usage": openai_usage(prompt_tokens, generated.completion_tokens())
        }));
    }
    let mut events = vec![sse_data(&chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ))];
    for piece in &generated.pieces {
        events.push(sse_data(&chunk(json!({"content": piece}), Value::Null)));
    }
    events.push(sse_data(&chunk(json!({}), json!(finish))));
    if include_usage {
        events.push(sse_data(&usage_chunk(generated.completion_tokens())));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Reply::sse(events)
}

pub(crate) fn completions(ctx: &Ctx, request: &Value) -> Reply {
    let prompts: Vec<String> = match request.get("prompt") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let prompt_tokens: u64 = prompts.iter().map(|p| 3 + count_words(p)).sum();
    let model = model_of(request);
    let id = format!("cmpl-mock-{}", ctx.seq);
    let include_usage = bool_at(request, "/stream_options/include_usage");
    let generated = generate(ctx, &prompts.join(" "), u64_field(request, &["max_tokens"]));
    let finish = if generated.truncated {
        "length"
    } else {
        "stop"
    };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": generated.completion_tokens(),
        "total_tokens": prompt_tokens + generated.completion_tokens()
    });
    if !bool_at(request, "/stream") {
        return Reply::json(json!({
            "id": id,
            "object": "text_completion",
            "created": CREATED,
            "model": model,
            "choices": [{"text": generated.text, "index": 0, "logprobs": null, "finish_reason": finish}],
            "usage": usage
        }));
    }
    let chunk = |text: &str, finish: Value| {
        with_trailing_usage(
            json!({
                "id": id,
                "object": "text_completion",
                "created": CREATED,
                "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]
            }),
            include_usage,
        )
    };
    let mut events: Vec<Bytes> = generated
        .pieces
        .iter()
        .map(|piece| sse_data(&chunk(piece, Value::Null)))
        .collect();
    events.push(sse_data(&chunk("", json!(finish))));
    if include_usage {
        events.push(sse_data(&json!({
            "id": id,
            "object": "text_completion",
            "created": CREATED,
            "model": model,
            "choices": [],
            "usage": usage
        })));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Reply::sse(events)
}

pub(crate) fn embeddings(ctx: &Ctx, request: &Value) -> Reply {
    let inputs: Vec<String> = match request.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => return error_reply(ctx, 400, "Missing required parameter: 'input'."),
    };
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = embedding_vector(text);
            let embedding = if base64 {
                let raw: Vec<u8> = vector
                    .iter()
                    .flat_map(|f| (*f as f32).to_le_bytes())
                    .collect();
                Value::String(base64_encode(&raw))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let prompt_tokens: u64 = inputs.iter().map(|t| count_words(t)).sum();
    Reply::json(json!({
        "object": "list",
        "data": data,
        "model": model_of(request),
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    }))
}

/// The vector a test chose, when the text starts with `vec:` and comma-separated numbers
/// (`vec:0.1,0.9 rest of the text` yields `[0.1, 0.9]`); otherwise 8 deterministic floats in
/// [-1, 1] derived from the text (FNV-1a seed, splitmix64 steps).
fn embedding_vector(text: &str) -> Vec<f64> {
    if let Some(chosen) = chosen_vector(text) {
        return chosen;
    }
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (0..8)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
            ((unit * 2.0 - 1.0) * 1e6).round() / 1e6
        })
        .collect()
}

/// `vec:a,b,c` at the start of `text` (up to the first whitespace), when every part parses.
fn chosen_vector(text: &str) -> Option<Vec<f64>> {
    let spec = text.trim_start().strip_prefix("vec:")?;
    let spec = spec.split_whitespace().next()?;
    spec.split(',')
        .map(|n| n.trim().parse::<f64>().ok())
        .collect()
}

fn base64_encode(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The ids `GET /v1/models` lists (OpenAI flavour), `mock-model` first.
const OPENAI_MODELS: [&str; 4] = [
    DEFAULT_MODEL,
    "mock-model-large",
    "mock-embedding",
    "other-model",
];

/// `GET /v1/models` (OpenAI flavour).
pub(crate) fn models() -> Reply {
    let data: Vec<Value> = OPENAI_MODELS
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": CREATED, "owned_by": "mock"}))
        .collect();
    Reply::json(json!({"object": "list", "data": data}))
}
