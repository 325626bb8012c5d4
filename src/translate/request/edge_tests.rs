//! Edge cases of request translation (the corpus in `tests/translate/`
//! covers the common shapes).

use serde_json::{json, Value};

use super::{chat_to_messages, messages_to_chat};
use crate::translate::{Plan, DEFAULT_MAX_TOKENS};

fn to_messages(req: Value) -> Value {
    chat_to_messages(&req).expect("translates").0
}

fn refused(req: Value) -> String {
    chat_to_messages(&req).expect_err("refused").0
}

#[test]
fn refuses_what_anthropic_cannot_do() {
    let base = json!({"model":"m","messages":[{"role":"user","content":"hi"}]});
    for (field, value, says) in [
        ("n", json!(2), "`n`"),
        ("logprobs", json!(true), "logprobs"),
        ("top_logprobs", json!(3), "top_logprobs"),
        ("frequency_penalty", json!(0.5), "frequency_penalty"),
        ("logit_bias", json!({"1": 5}), "logit_bias"),
        (
            "response_format",
            json!({"type":"json_schema","json_schema":{"schema":{"type":"array"}}}),
            "must describe an object",
        ),
        ("response_format", json!({"type":"grammar"}), "grammar"),
        ("modalities", json!(["text", "audio"]), "modalities"),
        ("reasoning_effort", json!("high"), "reasoning_effort"),
        ("store", json!(true), "store"),
        ("some_new_field", json!(1), "some_new_field"),
        ("stop", json!("\n"), "whitespace"),
        ("stop", json!(["END", " \t"]), "whitespace"),
    ] {
        let mut req = base.clone();
        req[field] = value;
        let message = refused(req);
        assert!(message.contains(says), "{field}: {message}");
    }
    // Their "off" values are accepted.
    let mut req = base.clone();
    for (field, value) in [
        ("n", json!(1)),
        ("logprobs", json!(false)),
        ("frequency_penalty", json!(0)),
        ("presence_penalty", json!(0.0)),
        ("logit_bias", json!({})),
        ("response_format", json!({"type":"text"})),
        ("modalities", json!(["text"])),
        ("store", json!(false)),
        ("seed", json!(7)),
    ] {
        req[field] = value;
    }
    assert!(chat_to_messages(&req).is_ok());
}

#[test]
fn defaults_and_clamps() {
    let out = to_messages(json!({"model":"m","temperature":1.7,
        "messages":[{"role":"user","content":"hi"}]}));
    assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
    assert_eq!(out["temperature"], 1.0);
    let out = to_messages(
        json!({"model":"m","max_tokens":50,"max_completion_tokens":20,
        "messages":[{"role":"user","content":"hi"}]}),
    );
    assert_eq!(out["max_tokens"], 20);
}

#[test]
fn plan_follows_stream_options() {
    let (_, plan) = chat_to_messages(&json!({"model":"m","stream":true,
        "stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}))
    .expect("ok");
    assert_eq!(
        plan,
        Plan {
            stream: true,
            include_usage: true,
            json_tool: false
        }
    );
    let (body, plan) = messages_to_chat(&json!({"model":"m","max_tokens":5,"stream":true,
        "messages":[{"role":"user","content":"hi"}]}))
    .expect("ok");
    assert_eq!(
        plan,
        Plan {
            stream: true,
            include_usage: true,
            json_tool: false
        }
    );
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[test]
fn parallel_tool_calls_false_disables_parallel_use() {
    let tools = json!([{"type":"function","function":{"name":"f"}}]);
    let out = to_messages(
        json!({"model":"m","tools":tools,"parallel_tool_calls":false,
        "messages":[{"role":"user","content":"hi"}]}),
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type":"auto","disable_parallel_tool_use":true})
    );
    assert_eq!(
        out["tools"][0]["input_schema"],
        json!({"type":"object","properties":{}})
    );
    let out = to_messages(
        json!({"model":"m","tools":tools,"parallel_tool_calls":false,
        "tool_choice":"required","messages":[{"role":"user","content":"hi"}]}),
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type":"any","disable_parallel_tool_use":true})
    );
    let back = messages_to_chat(&json!({"model":"m","max_tokens":5,
        "tools":[{"name":"f","input_schema":{"type":"object"}}],
        "tool_choice":{"type":"tool","name":"f","disable_parallel_tool_use":true},
        "messages":[{"role":"user","content":"hi"}]}))
    .expect("ok")
    .0;
    assert_eq!(back["parallel_tool_calls"], false);
    assert_eq!(
        back["tool_choice"],
        json!({"type":"function","function":{"name":"f"}})
    );
}

#[test]
fn legacy_functions_pair_calls_and_results() {
    let out = to_messages(json!({"model":"m",
        "functions":[{"name":"f","parameters":{"type":"object"}}],
        "function_call":{"name":"f"},
        "messages":[
            {"role":"user","content":"hi"},
            {"role":"assistant","content":null,"function_call":{"name":"f","arguments":"{}"}},
            {"role":"function","name":"f","content":"42"}]}));
    assert_eq!(out["tool_choice"], json!({"type":"tool","name":"f"}));
    let id = &out["messages"][1]["content"][0]["id"];
    assert_eq!(out["messages"][2]["content"][0]["tool_use_id"], *id);
    assert!(refused(
        json!({"model":"m","messages":[{"role":"function","name":"f","content":"1"}]})
    )
    .contains("without an earlier function_call"));
}

#[test]
fn bad_shapes_are_refused_not_guessed() {
    assert!(refused(
        json!({"model":"m","messages":[{"role":"assistant","tool_calls":[
        {"id":"c","type":"function","function":{"name":"f","arguments":"not json"}}]}]})
    )
    .contains("not a JSON object"));
    assert!(
        refused(json!({"model":"m","messages":[{"role":"user","content":[
        {"type":"input_audio","input_audio":{}}]}]}))
        .contains("input_audio")
    );
    assert!(
        refused(json!({"model":"m","messages":[{"role":"user","content":[
        {"type":"image_url","image_url":{"url":"ftp://x"}}]}]}))
        .contains("image_url")
    );
    assert!(
        refused(json!({"model":"m","tools":[{"type":"custom","custom":{}}],
        "messages":[{"role":"user","content":"x"}]}))
        .contains("custom")
    );
    let to_chat = |v: Value| messages_to_chat(&v).expect_err("refused").0;
    assert!(to_chat(json!({"model":"m","max_tokens":1,"top_k":5,"messages":[]})).contains("top_k"));
    assert!(to_chat(json!({"model":"m","max_tokens":1,
        "thinking":{"type":"enabled","budget_tokens":1024},"messages":[]}))
    .contains("thinking"));
    assert!(to_chat(json!({"model":"m","max_tokens":1,
        "tools":[{"type":"web_search_20250305","name":"web_search"}],"messages":[]}))
    .contains("web_search_20250305"));
    assert!(to_chat(json!({"model":"m","max_tokens":1,
        "stop_sequences":["a","b","c","d","e"],"messages":[]}))
    .contains("at most 4"));
}

#[test]
fn anthropic_tool_results_come_before_the_users_text() {
    let out = messages_to_chat(&json!({"model":"m","max_tokens":5,"messages":[
        {"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"s"},
            {"type":"tool_use","id":"t1","name":"f","input":{"a":1}}]},
        {"role":"user","content":[
            {"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"r"}],"is_error":true},
            {"type":"text","text":"and now?"}]}]}))
    .expect("ok")
    .0;
    assert_eq!(
        out["messages"],
        json!([
            {"role":"assistant","content":null,"tool_calls":[{"id":"t1","type":"function",
                "function":{"name":"f","arguments":"{\"a\":1}"}}]},
            {"role":"tool","tool_call_id":"t1","content":"r"},
            {"role":"user","content":"and now?"}
        ])
    );
}

#[test]
fn json_mode_is_a_forced_tool_and_refused_beside_tools() {
    let (out, plan) = chat_to_messages(
        &json!({"model":"m","messages":[{"role":"user","content":"hi"}],
        "response_format":{"type":"json_object"}}),
    )
    .expect("ok");
    assert!(plan.json_tool);
    assert_eq!(
        out["tool_choice"],
        json!({"type":"tool","name":"json_response"})
    );
    assert_eq!(out["tools"][0]["input_schema"], json!({"type":"object"}));
    let message = refused(
        json!({"model":"m","messages":[{"role":"user","content":"hi"}],
        "response_format":{"type":"json_object"},
        "tools":[{"type":"function","function":{"name":"f"}}]}),
    );
    assert!(message.contains("together with tools"), "{message}");
}
