//! The translation corpus: every JSON file under `tests/translate/` is one
//! case (a request, a response, a stream or an error in one API, and what
//! the other API must receive), run through `sluice::translate`.
//!
//! Streams are written as lists of event payloads; the runner frames them as
//! SSE, feeds the bytes in awkward pieces through Sluice's own SSE splitter
//! (as the proxy will) and compares the translated events.
//!
//! `SLUICE_BLESS=1 cargo nextest run --test translate` rewrites `expected`
//! (and `round_trip`) with what the code produces: review the diff.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use sluice::protocol::sse::{parse_block, SseSplitter};
use sluice::translate::{error, request, response, stream, Plan};

/// The fixed `created` stamp translated OpenAI responses carry in the corpus.
const CREATED: u64 = 1_700_000_000;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/translate");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/translate")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn plan(case: &Value) -> Plan {
    let p = case.get("plan").cloned().unwrap_or_default();
    Plan {
        stream: p["stream"].as_bool().unwrap_or(false),
        include_usage: p["include_usage"].as_bool().unwrap_or(false),
        json_tool: p["json_tool"].as_bool().unwrap_or(false),
    }
}

fn plan_json(p: Plan) -> Value {
    json!({"stream": p.stream, "include_usage": p.include_usage, "json_tool": p.json_tool})
}

/// A request translation: the body and plan, or `{"refused": message}`.
fn request_out(kind: &str, input: &Value) -> Value {
    let out = match kind {
        "chat_to_messages" => request::chat_to_messages(input),
        _ => request::messages_to_chat(input),
    };
    match out {
        Ok((body, plan)) => json!({"body": body, "plan": plan_json(plan)}),
        Err(refused) => json!({"refused": refused.0}),
    }
}

/// Frames `events` as SSE (Anthropic events named by their type).
fn frame(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        if let Some(t) = e.get("type").and_then(Value::as_str) {
            out.extend_from_slice(format!("event: {t}\n").as_bytes());
        }
        let data = match e {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.extend_from_slice(format!("data: {data}\n\n").as_bytes());
    }
    out
}

/// Splits SSE bytes back into event payloads, checking that a named event's
/// name matches its payload's `type`.
fn unframe(bytes: &[u8]) -> Vec<Value> {
    let mut splitter = SseSplitter::default();
    let mut events = Vec::new();
    splitter.feed(bytes, |block| {
        let e = parse_block(block);
        let data = std::str::from_utf8(&e.data).expect("utf-8");
        let value = serde_json::from_str::<Value>(data).unwrap_or_else(|_| Value::from(data));
        if !e.event.is_empty() {
            assert_eq!(
                Some(std::str::from_utf8(e.event).expect("utf-8")),
                value.get("type").and_then(Value::as_str),
                "event name and type differ"
            );
        }
        events.push(value);
    });
    assert!(splitter.pending().is_empty(), "a partial event was emitted");
    events
}

/// Runs a stream translator over `input` fed in `piece`-byte chunks.
fn stream_out(kind: &str, case: &Value, piece: usize) -> Value {
    let bytes = frame(case["input"].as_array().expect("input events"));
    let mut splitter = SseSplitter::default();
    let mut out = Vec::new();
    let ended = match kind {
        "stream_messages_to_chat" => {
            let mut t = stream::MessagesToChat::new(plan(case), CREATED);
            for chunk in bytes.chunks(piece) {
                splitter.feed(chunk, |block| t.event(&parse_block(block).data, &mut out));
            }
            t.done()
        }
        _ => {
            let mut t = stream::ChatToMessages::new();
            for chunk in bytes.chunks(piece) {
                splitter.feed(chunk, |block| t.event(&parse_block(block).data, &mut out));
            }
            t.finish(&mut out)
        }
    };
    json!({"events": unframe(&out), "ended": ended})
}

fn run(kind: &str, case: &Value) -> Value {
    let input = &case["input"];
    match kind {
        "chat_to_messages" | "messages_to_chat" => request_out(kind, input),
        "message_to_chat" => match response::message_to_chat(input, plan(case), CREATED) {
            Ok(v) => v,
            Err(r) => json!({"refused": r.0}),
        },
        "chat_to_message" => match response::chat_to_message(input) {
            Ok(v) => v,
            Err(r) => json!({"refused": r.0}),
        },
        "stream_messages_to_chat" | "stream_chat_to_messages" => {
            let whole = stream_out(kind, case, usize::MAX);
            for piece in [1, 7, 64] {
                assert_eq!(
                    stream_out(kind, case, piece),
                    whole,
                    "fed in {piece}-byte pieces"
                );
            }
            whole
        }
        "error_anthropic_to_openai" | "error_openai_to_anthropic" => {
            let status = case["status"].as_u64().expect("status") as u16;
            let body = match input {
                Value::String(s) => s.clone().into_bytes(),
                other => other.to_string().into_bytes(),
            };
            let reply = if kind == "error_anthropic_to_openai" {
                error::anthropic_to_openai(status, &body)
            } else {
                error::openai_to_anthropic(status, &body)
            };
            let body: Value = serde_json::from_slice(&reply.body).expect("json body");
            json!({"status": reply.status, "body": body})
        }
        other => panic!("unknown kind {other:?}"),
    }
}

/// The way back for a request case: the translated body through the other
/// direction.
fn round_trip(kind: &str, actual: &Value) -> Option<Value> {
    let body = actual.get("body")?;
    let back = if kind == "chat_to_messages" {
        "messages_to_chat"
    } else {
        "chat_to_messages"
    };
    Some(request_out(back, body))
}

#[test]
fn corpus() {
    let bless = std::env::var_os("SLUICE_BLESS").is_some();
    let files = cases();
    assert!(
        files.len() >= 20,
        "the corpus is missing ({} files)",
        files.len()
    );
    let mut failures = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        let mut case: Map<String, Value> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let kind = case["kind"].as_str().expect("kind").to_owned();
        let case_value = Value::Object(case.clone());
        let actual = run(&kind, &case_value);
        let back = round_trip(&kind, &actual);
        if bless {
            case.insert("expected".into(), actual);
            if let Some(back) = back {
                case.insert("round_trip".into(), back);
            }
            let text = serde_json::to_string_pretty(&Value::Object(case)).expect("json") + "\n";
            std::fs::write(&path, text).expect("write");
            continue;
        }
        if case.get("expected") != Some(&actual) {
            failures.push(format!(
                "{}: expected\n{}\ngot\n{}",
                path.display(),
                serde_json::to_string_pretty(&case["expected"]).unwrap_or_default(),
                serde_json::to_string_pretty(&actual).unwrap_or_default()
            ));
        }
        if let (Some(want), Some(got)) = (case.get("round_trip"), back.as_ref()) {
            if want != got {
                failures.push(format!(
                    "{}: round trip expected\n{}\ngot\n{}",
                    path.display(),
                    serde_json::to_string_pretty(want).unwrap_or_default(),
                    serde_json::to_string_pretty(got).unwrap_or_default()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
