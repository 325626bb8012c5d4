//! The OpenAI Responses API (`POST /v1/responses`), streamed and not.

use serde_json::{json, Map, Value};

use crate::content::{
    bool_at, content_text, count_words, generate, model_of, tools_to_call, u64_field, CREATED,
    TOOL_ARGS, TOOL_ARG_FRAGMENTS,
};
use crate::reply::{sse_event, Ctx, Reply};

/// Prompt tokens, last user text and tool-trigger text (that of the last input item when it
/// is a user message) of a Responses API request.
fn responses_input(request: &Value) -> (u64, String, String) {
    let mut tokens = 0;
    let mut user_text = String::new();
    let mut trigger_text = String::new();
    if let Some(instructions) = request.get("instructions").and_then(Value::as_str) {
        tokens += 3 + count_words(instructions);
    }
    match request.get("input") {
        Some(Value::String(s)) => {
            tokens += 3 + count_words(s);
            user_text = s.clone();
            trigger_text = s.clone();
        }
        Some(Value::Array(items)) => {
            for item in items {
                let text = match item {
                    Value::String(s) => s.clone(),
                    _ => item
                        .get("content")
                        .map(content_text)
                        .or_else(|| {
                            item.get("output")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        })
                        .unwrap_or_default(),
                };
                tokens += 3 + count_words(&text);
                if item.get("role").and_then(Value::as_str) == Some("user") {
                    trigger_text = text.clone();
                    user_text = text;
                } else {
                    trigger_text.clear();
                }
            }
        }
        _ => {}
    }
    (tokens, user_text, trigger_text)
}

fn responses_usage(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + output
    })
}

/// A Responses API `response` object (built field by field to keep macro depth small).
fn response_object(
    id: &str,
    request: &Value,
    status: &str,
    incomplete_reason: Option<&str>,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    let copy = |name: &str| request.get(name).cloned().unwrap_or(Value::Null);
    let mut obj = Map::new();
    obj.insert("id".into(), json!(id));
    obj.insert("object".into(), json!("response"));
    obj.insert("created_at".into(), json!(CREATED));
    obj.insert("status".into(), json!(status));
    obj.insert("background".into(), json!(false));
    obj.insert("error".into(), Value::Null);
    obj.insert(
        "incomplete_details".into(),
        incomplete_reason.map_or(Value::Null, |reason| json!({"reason": reason})),
    );
    obj.insert("instructions".into(), copy("instructions"));
    obj.insert("max_output_tokens".into(), copy("max_output_tokens"));
    obj.insert("model".into(), json!(model_of(request)));
    obj.insert("output".into(), Value::Array(output));
    obj.insert("parallel_tool_calls".into(), json!(true));
    obj.insert("previous_response_id".into(), copy("previous_response_id"));
    obj.insert("reasoning".into(), json!({"effort": null, "summary": null}));
    obj.insert("store".into(), json!(true));
    obj.insert("temperature".into(), json!(1.0));
    obj.insert("text".into(), json!({"format": {"type": "text"}}));
    obj.insert("tool_choice".into(), json!("auto"));
    obj.insert(
        "tools".into(),
        request.get("tools").cloned().unwrap_or_else(|| json!([])),
    );
    obj.insert("top_p".into(), json!(1.0));
    obj.insert("truncation".into(), json!("disabled"));
    obj.insert("usage".into(), usage);
    obj.insert("user".into(), Value::Null);
    obj.insert(
        "metadata".into(),
        request
            .get("metadata")
            .cloned()
            .unwrap_or_else(|| json!({})),
    );
    Value::Object(obj)
}

pub(crate) fn responses(ctx: &Ctx, request: &Value) -> Reply {
    let id = format!("resp_mock_{}", ctx.seq);
    let (prompt_tokens, user_text, trigger_text) = responses_input(request);
    let stream = bool_at(request, "/stream");
    let mut sequence = 0u64;
    let mut event = |mut value: Value| {
        if let Some(obj) = value.as_object_mut() {
            // `type` first, `sequence_number` second, as the API does.
            let mut ordered = Map::new();
            if let Some(ty) = obj.remove("type") {
                ordered.insert("type".into(), ty);
            }
            ordered.insert("sequence_number".into(), json!(sequence));
            ordered.append(obj);
            value = Value::Object(ordered);
        }
        sequence += 1;
        sse_event(&value)
    };

    let tool_names = tools_to_call(request, &trigger_text, ctx.opts.tool_calls);
    if !tool_names.is_empty() {
        let item_id = |i: usize| match i {
            0 => format!("fc_mock_{}", ctx.seq),
            _ => format!("fc_mock_{}_{}", ctx.seq, i + 1),
        };
        let item = |i: usize, status: &str, arguments: &str| {
            json!({
                "id": item_id(i),
                "type": "function_call",
                "status": status,
                "arguments": arguments,
                "call_id": format!("call_mock_{}", i + 1),
                "name": tool_names[i]
            })
        };
        let completion_tokens = (TOOL_ARG_FRAGMENTS.len() * tool_names.len()) as u64;
        let usage = responses_usage(prompt_tokens, completion_tokens);
        let done: Vec<Value> = (0..tool_names.len())
            .map(|i| item(i, "completed", TOOL_ARGS))
            .collect();
        if !stream {
            return Reply::json(response_object(
                &id,
                request,
                "completed",
                None,
                done,
                usage,
            ));
        }
        let pending = response_object(&id, request, "in_progress", None, vec![], Value::Null);
        let mut events = vec![
            event(json!({"type": "response.created", "response": pending})),
            event(json!({"type": "response.in_progress", "response": pending})),
        ];
        for (i, name) in tool_names.iter().enumerate() {
            events.push(event(json!({
                "type": "response.output_item.added",
                "output_index": i,
                "item": item(i, "in_progress", "")
            })));
            for fragment in TOOL_ARG_FRAGMENTS {
                events.push(event(json!({
                    "type": "response.function_call_arguments.delta",
                    "item_id": item_id(i),
                    "output_index": i,
                    "delta": fragment
                })));
            }
            events.push(event(json!({
                "type": "response.function_call_arguments.done",
                "item_id": item_id(i),
                "output_index": i,
                "name": name,
                "arguments": TOOL_ARGS
            })));
            events.push(event(json!({
                "type": "response.output_item.done",
                "output_index": i,
                "item": done[i]
            })));
        }
        let final_response = response_object(&id, request, "completed", None, done, usage);
        events.push(event(
            json!({"type": "response.completed", "response": final_response}),
        ));
        return Reply::sse(events);
    }

    let generated = generate(ctx, &user_text, u64_field(request, &["max_output_tokens"]));
    let (status, reason) = if generated.truncated {
        ("incomplete", Some("max_output_tokens"))
    } else {
        ("completed", None)
    };
    let item_id = format!("msg_mock_{}", ctx.seq);
    let part = |text: &str| json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text});
    let message = |item_status: &str, content: Vec<Value>| {
        json!({
            "id": item_id,
            "type": "message",
            "status": item_status,
            "content": content,
            "role": "assistant"
        })
    };
    let usage = responses_usage(prompt_tokens, generated.completion_tokens());
    let done_message = message(status, vec![part(&generated.text)]);
    if !stream {
        return Reply::json(response_object(
            &id,
            request,
            status,
            reason,
            vec![done_message],
            usage,
        ));
    }
    let pending = response_object(&id, request, "in_progress", None, vec![], Value::Null);
    let mut events = vec![
        event(json!({"type": "response.created", "response": pending})),
        event(json!({"type": "response.in_progress", "response": pending})),
        event(json!({
            "type": "response.output_item.added",
            "output_index": 0,
            "item": message("in_progress", vec![])
        })),
        event(json!({
            "type": "response.content_part.added",
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "part": part("")
        })),
    ];
    for piece in &generated.pieces {
        events.push(event(json!({
            "type": "response.output_text.delta",
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "delta": piece,
            "logprobs": []
        })));
    }
    events.push(event(json!({
        "type": "response.output_text.done",
        "item_id": item_id,
        "output_index": 0,
        "content_index": 0,
        "text": generated.text,
        "logprobs": []
    })));
    events.push(event(json!({
        "type": "response.content_part.done",
        "item_id": item_id,
        "output_index": 0,
        "content_index": 0,
        "part": part(&generated.text)
    })));
    events.push(event(json!({
        "type": "response.output_item.done",
        "output_index": 0,
        "item": done_message
    })));
    let final_response = response_object(&id, request, status, reason, vec![done_message], usage);
    let final_type = if generated.truncated {
        "response.incomplete"
    } else {
        "response.completed"
    };
    events.push(event(
        json!({"type": final_type, "response": final_response}),
    ));
    Reply::sse(events)
}
