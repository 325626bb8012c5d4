//! Batch results read back: an OpenAI batch's output file
//! (`GET /v1/files/file-out-{batch}/content`) and an Anthropic message
//! batch (`GET /v1/messages/batches/{id}` ended, `.../results`), as JSONL
//! with fixed usage so a test can price them.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::reply::{Ctx, Reply, ReplyKind};

/// The output file id in `/v1/files/file-out-{batch}/content`.
pub(crate) fn output_file(path: &str) -> Option<&str> {
    let id = path.strip_prefix("/v1/files/")?.strip_suffix("/content")?;
    id.starts_with("file-out-").then_some(id)
}

/// The batch id in `/v1/messages/batches/{id}/results`.
pub(crate) fn results_of(path: &str) -> Option<&str> {
    let id = path
        .strip_prefix("/v1/messages/batches/")?
        .strip_suffix("/results")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// `GET /v1/messages/batches/{id}`: an ended message batch.
pub(crate) fn message_batch(ctx: &Ctx, id: &str) -> Reply {
    Reply::json(json!({
        "id": id,
        "type": "message_batch",
        "processing_status": "ended",
        "request_counts": {"processing": 0, "succeeded": 3, "errored": 1, "canceled": 1, "expired": 1},
        "results_url": format!("{}/results", ctx.path),
    }))
}

/// Five lines: `mock-model` 1000/500 and 2000/1000 tokens (in/out), an
/// expired request, a 400, and `mock-unpriced` 100/50.
pub(crate) fn openai_results(id: &str) -> Reply {
    let ok = |n: u32, model: &str, input: u64, output: u64| {
        json!({
            "id": format!("batch_req_{n}"),
            "custom_id": format!("req-{n}"),
            "response": {"status_code": 200, "request_id": format!("req_{id}_{n}"), "body": {
                "id": format!("chatcmpl-{id}-{n}"), "object": "chat.completion", "created": 1_700_000_000,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
            }},
            "error": null,
        })
    };
    jsonl(
        &[
            ok(1, "mock-model", 1000, 500),
            json!({"id": "batch_req_2", "custom_id": "req-2", "response": null,
                   "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}}),
            ok(3, "mock-model", 2000, 1000),
            json!({"id": "batch_req_4", "custom_id": "req-4",
                   "response": {"status_code": 400, "request_id": "req_4", "body": {"error": {"message": "bad", "type": "invalid_request_error"}}},
                   "error": null}),
            ok(5, "mock-unpriced", 100, 50),
        ],
        "application/octet-stream",
    )
}

/// Six lines: `claude-mock-sonnet` 1000/500 and 2000/1000 tokens, an
/// errored, an expired and a canceled request, and `claude-mock-unpriced`
/// 100/50.
pub(crate) fn anthropic_results(id: &str) -> Reply {
    let ok = |n: u32, model: &str, input: u64, output: u64| {
        json!({"custom_id": format!("req-{n}"), "result": {"type": "succeeded", "message": {
            "id": format!("msg_{id}_{n}"), "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": output,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }}})
    };
    let failed =
        |n: u32, kind: &str| json!({"custom_id": format!("req-{n}"), "result": {"type": kind}});
    jsonl(
        &[
            ok(1, "claude-mock-sonnet", 1000, 500),
            json!({"custom_id": "req-2", "result": {"type": "errored", "error": {"type": "error",
                   "error": {"type": "invalid_request_error", "message": "bad"}}}}),
            ok(3, "claude-mock-sonnet", 2000, 1000),
            failed(4, "expired"),
            failed(5, "canceled"),
            ok(6, "claude-mock-unpriced", 100, 50),
        ],
        "application/binary",
    )
}

fn jsonl(lines: &[Value], content_type: &str) -> Reply {
    let mut body = String::new();
    for l in lines {
        body.push_str(&l.to_string());
        body.push('\n');
    }
    Reply {
        status: hyper::StatusCode::OK,
        kind: ReplyKind::Raw(Bytes::from(body)),
        headers: vec![("content-type", content_type.to_owned())],
    }
}
