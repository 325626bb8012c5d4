//! Edge cases of the stream translators (the corpus in `tests/translate/`
//! covers whole streams).

use serde_json::json;

use super::{ChatToMessages, MessagesToChat};
use crate::translate::Plan;

fn text(out: &[u8]) -> &str {
    std::str::from_utf8(out).expect("utf-8")
}

#[test]
fn interleaved_tool_deltas_end_with_an_error_event() {
    let mut t = ChatToMessages::new();
    let mut out = Vec::new();
    for chunk in [
        json!({"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[
            {"index":0,"id":"a","function":{"name":"f","arguments":""}}]}}]}),
        json!({"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[
            {"index":1,"id":"b","function":{"name":"g","arguments":"{}"}}]}}]}),
        json!({"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[
            {"index":0,"function":{"arguments":"{}"}}]}}]}),
    ] {
        t.event(chunk.to_string().as_bytes(), &mut out);
    }
    assert!(t.done());
    assert!(text(&out).ends_with(
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"the provider interleaved tool call deltas, which Anthropic streams cannot carry\"}}\n\n"
    ));
    let before = out.len();
    t.event(b"[DONE]", &mut out);
    assert!(t.finish(&mut out));
    assert_eq!(out.len(), before, "nothing after the end");
}

#[test]
fn malformed_events_end_the_stream_with_an_error() {
    let mut out = Vec::new();
    let mut t = MessagesToChat::new(Plan::default(), 1);
    t.event(b"{not json", &mut out);
    assert!(t.done());
    assert!(
        text(&out).starts_with("data: {\"error\":{"),
        "{}",
        text(&out)
    );
    let mut out = Vec::new();
    let mut t = ChatToMessages::new();
    t.event(b"{not json", &mut out);
    assert!(t.done());
    assert!(text(&out).starts_with("event: error\n"));
}

#[test]
fn an_empty_openai_stream_still_forms_a_message() {
    let mut out = Vec::new();
    let mut t = ChatToMessages::new();
    t.event(b"[DONE]", &mut out);
    let s = text(&out);
    assert!(s.starts_with("event: message_start\n"), "{s}");
    assert!(s.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
}

#[test]
fn a_cut_anthropic_stream_sends_no_done() {
    let mut out = Vec::new();
    let mut t = MessagesToChat::new(Plan::default(), 1);
    let start = json!({"type":"message_start","message":{"id":"x","model":"m","usage":{}}});
    t.event(start.to_string().as_bytes(), &mut out);
    assert!(!t.done());
    assert!(!text(&out).contains("[DONE]"));
}
