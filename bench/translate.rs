//! Criterion benches of OpenAI ↔ Anthropic translation (`src/translate/`): what a request
//! routed to a provider of the other API pays on top of the plain path.
//!
//! `cargo bench --bench translate` (under a minute). Inputs look like an agent's traffic: a
//! 12-turn chat request with two tools and tool results (~4 KB), a JSON answer with a tool
//! call, and a 200-event Anthropic stream of text deltas translated event by event (the
//! first event alone is what a translated stream adds to time to first byte).

// Bench set-up code: a failure here is a bug in the bench.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};

use sluice::protocol::sse::{parse_block, SseSplitter};
use sluice::translate::{request, response, stream, Plan};

fn agent_request() -> Value {
    let mut messages =
        vec![json!({"role":"system","content":"You are a careful coding agent. ".repeat(8)})];
    for i in 0..5 {
        messages.push(json!({"role":"user","content":format!("Step {i}: look at the file and fix the failing test, then report. {}", "context ".repeat(40))}));
        messages.push(json!({"role":"assistant","content":null,"tool_calls":[
            {"id":format!("call_{i}"),"type":"function","function":{"name":"read_file","arguments":format!("{{\"path\":\"src/lib{i}.rs\"}}")}}]}));
        messages.push(json!({"role":"tool","tool_call_id":format!("call_{i}"),"content":"fn main() {}\n".repeat(10)}));
    }
    json!({"model":"gpt-4o","messages":messages,"temperature":0.2,"max_tokens":1024,
        "stream":true,"stream_options":{"include_usage":true},
        "tools":[
            {"type":"function","function":{"name":"read_file","description":"Read a file",
                "parameters":{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}}},
            {"type":"function","function":{"name":"run_tests","description":"Run the tests",
                "parameters":{"type":"object","properties":{"filter":{"type":"string"}}}}}],
        "tool_choice":"auto"})
}

fn anthropic_stream() -> Vec<u8> {
    let mut events = vec![
        json!({"type":"message_start","message":{"id":"msg_1","type":"message",
        "role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,
        "stop_sequence":null,"usage":{"input_tokens":1200,"output_tokens":1}}}),
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    ];
    for i in 0..200 {
        events.push(json!({"type":"content_block_delta","index":0,
            "delta":{"type":"text_delta","text":format!("token{i} and some more words ")}}));
    }
    events.push(json!({"type":"content_block_stop","index":0}));
    events.push(json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":800}}));
    events.push(json!({"type":"message_stop"}));
    let mut out = Vec::new();
    for e in events {
        out.extend_from_slice(
            format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()).as_bytes(),
        );
    }
    out
}

fn bench_translate(c: &mut Criterion) {
    let mut g = c.benchmark_group("translate");
    let req = agent_request();
    let bytes = serde_json::to_vec(&req).unwrap();
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    // Parse, translate, serialise: the whole cost a request body pays.
    g.bench_function("request_chat_to_messages", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(&bytes)).unwrap();
            let (out, _) = request::chat_to_messages(&v).unwrap();
            serde_json::to_vec(&out).unwrap()
        })
    });
    let answer = json!({"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5",
        "content":[{"type":"text","text":"I will run the tests now."},
            {"type":"tool_use","id":"toolu_1","name":"run_tests","input":{"filter":"lib"}}],
        "stop_reason":"tool_use","stop_sequence":null,
        "usage":{"input_tokens":1200,"cache_read_input_tokens":3000,"output_tokens":40}});
    let answer = serde_json::to_vec(&answer).unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("response_message_to_chat", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(&answer)).unwrap();
            serde_json::to_vec(&response::message_to_chat(&v, Plan::default(), 1).unwrap()).unwrap()
        })
    });
    let sse = anthropic_stream();
    let plan = Plan {
        stream: true,
        include_usage: true,
        json_tool: false,
    };
    // The first two events (message_start, the first text delta): what a translated stream
    // adds before its first byte reaches the client.
    let first: Vec<u8> = {
        let mut n = 0;
        let mut end = 0;
        for (i, w) in sse.windows(2).enumerate() {
            if w == b"\n\n" {
                n += 1;
                if n == 3 {
                    end = i + 2;
                    break;
                }
            }
        }
        sse[..end].to_vec()
    };
    g.bench_function("stream_first_events", |b| {
        b.iter(|| {
            let mut splitter = SseSplitter::default();
            let mut t = stream::MessagesToChat::new(plan, 1);
            let mut out = Vec::new();
            splitter.feed(black_box(&first), |block| {
                t.event(&parse_block(block).data, &mut out)
            });
            out
        })
    });
    g.throughput(Throughput::Elements(205));
    g.bench_function("stream_205_events", |b| {
        b.iter(|| {
            let mut splitter = SseSplitter::default();
            let mut t = stream::MessagesToChat::new(plan, 1);
            let mut out = Vec::with_capacity(64 * 1024);
            for chunk in black_box(&sse).chunks(512) {
                splitter.feed(chunk, |block| t.event(&parse_block(block).data, &mut out));
            }
            out
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = translate;
    config = config();
    targets = bench_translate
}
criterion_main!(translate);
