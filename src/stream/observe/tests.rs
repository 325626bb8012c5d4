use super::*;

fn run(obs: &mut Observer, chunks: &[&str]) -> String {
    let mut out = String::new();
    for c in chunks {
        let b = Bytes::copy_from_slice(c.as_bytes());
        if obs.rewrites() {
            if let Some(f) = obs.rewrite(b) {
                out.push_str(std::str::from_utf8(&f).expect("utf8"));
            }
        } else {
            obs.observe(&b);
            out.push_str(c);
        }
    }
    out
}

const CHUNK_A: &str = "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n";
const CHUNK_B: &str = "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n";
const USAGE: &str = "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n";
const DONE: &str = "data: [DONE]\n\n";

#[test]
fn injected_usage_is_read_then_removed() {
    let mut obs = Observer::sse(false, true);
    let out = run(&mut obs, &[CHUNK_A, CHUNK_B, USAGE, DONE]);
    assert_eq!(obs.streamed_text(), "Hello");
    assert_eq!(
        out,
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n\
         data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n\
         data: [DONE]\n\n"
    );
    let o = obs.finish();
    assert_eq!(o.usage.map(|u| (u.input, u.output)), Some((9, 2)));
    assert!(o.complete);
    assert_eq!(o.text, "", "not needed: usage arrived");
}

#[test]
fn rewrite_is_independent_of_fragmentation() {
    let whole = format!("{CHUNK_A}{CHUNK_B}{USAGE}{DONE}");
    let mut reference = Observer::sse(false, true);
    let expected = run(&mut reference, &[&whole]);
    for step in [1, 2, 3, 7, 50] {
        let bytes = whole.as_bytes();
        let pieces: Vec<&str> = bytes
            .chunks(step)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect();
        let mut obs = Observer::sse(false, true);
        assert_eq!(run(&mut obs, &pieces), expected, "step {step}");
    }
}

#[test]
fn client_requested_usage_passes_through() {
    let mut obs = Observer::sse(false, false);
    let out = run(&mut obs, &[CHUNK_A, USAGE, DONE]);
    assert_eq!(out, format!("{CHUNK_A}{USAGE}{DONE}"));
    assert_eq!(obs.finish().usage.map(|u| u.output), Some(2));
}

#[test]
fn anthropic_stream() {
    let mut obs = Observer::sse(true, false);
    run(
        &mut obs,
        &[
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi \\u00e9\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ],
    );
    assert_eq!(obs.streamed_text(), "Hi é");
    let o = obs.finish();
    assert_eq!(o.usage.map(|u| (u.input, u.output)), Some((12, 5)));
    assert!(o.complete);
}

#[test]
fn responses_stream() {
    let mut obs = Observer::sse(false, false);
    run(
        &mut obs,
        &[
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"abc\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":4,\"output_tokens\":1}}}\n\n",
        ],
    );
    assert_eq!(obs.streamed_text(), "abc");
    let o = obs.finish();
    assert_eq!(o.usage.map(|u| (u.input, u.output)), Some((4, 1)));
    assert!(o.complete);
}

#[test]
fn cut_stream_has_text_but_no_usage() {
    let mut obs = Observer::sse(false, true);
    run(&mut obs, &[CHUNK_A, &CHUNK_B[..20]]);
    assert_eq!(obs.take_pending().map(|b| b.len()), Some(20));
    let o = obs.finish();
    assert!(o.usage.is_none());
    assert!(!o.complete);
    assert_eq!(o.text, "Hel");
}

#[test]
fn json_body_usage() {
    let mut obs = Observer::json(false);
    let body = r#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
    obs.observe(&Bytes::copy_from_slice(&body.as_bytes()[..10]));
    obs.observe(&Bytes::copy_from_slice(&body.as_bytes()[10..]));
    assert_eq!(
        obs.finish().usage.map(|u| (u.input, u.output)),
        Some((3, 1))
    );
}

#[test]
fn in_stream_error_is_noticed() {
    let mut obs = Observer::sse(true, false);
    run(&mut obs, &["event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n"]);
    assert!(obs.finish().stream_error);
}

#[test]
fn json_body_with_implausible_usage_keeps_the_answer_text_for_counting() {
    let mut obs = Observer::json(false);
    let body = r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello world"},"finish_reason":"stop"}],"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":1}}"#;
    obs.observe(&Bytes::copy_from_slice(body.as_bytes()));
    let o = obs.finish();
    assert!(o.usage.is_none());
    assert_eq!(o.text.trim(), "hello world");
    let anthropic = r#"{"id":"msg","type":"message","role":"assistant","content":[{"type":"text","text":"hi there"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":18446744073709551615}}"#;
    let mut obs = Observer::json(true);
    obs.observe(&Bytes::copy_from_slice(anthropic.as_bytes()));
    assert_eq!(obs.finish().text.trim(), "hi there");
}

#[test]
fn an_oversized_event_is_reported_and_never_forwarded_when_rewriting() {
    let mut obs = Observer::sse(false, true).with_max_event(CHUNK_A.len());
    let huge = format!("data: {}", "x".repeat(CHUNK_A.len()));
    let out = run(&mut obs, &[CHUNK_A, &huge[..20], &huge[20..]]);
    assert_eq!(obs.oversized(), Some(CHUNK_A.len()));
    assert!(
        !out.contains("xxx"),
        "no byte of the oversized event went out"
    );
    assert!(obs.at_event_boundary());
    assert_eq!(obs.finish().text, "Hel");
    // Events up to the bound pass; other observers have no bound.
    let mut obs = Observer::sse(false, false).with_max_event(CHUNK_A.len());
    run(&mut obs, &[CHUNK_A, CHUNK_B]);
    assert_eq!(obs.oversized(), None);
    assert_eq!(Observer::json(false).with_max_event(1).oversized(), None);
}

#[test]
fn a_usage_object_is_found_however_it_is_spaced() {
    let found = |data: &[u8]| super::usage_key(data).object;
    assert!(found(br#"{"usage":{"prompt_tokens":1}}"#));
    assert!(found(br#"{"usage": {"prompt_tokens":1}}"#));
    assert!(found(b"{\"usage\":\n\t {\"prompt_tokens\":1}}"));
    assert!(!found(br#"{"usage":null,"choices":[]}"#));
    assert!(found(br#"{"usage":null,"x":{"usage":{"a":1}}}"#));
    assert!(!found(br#"{"usage":"#));
    assert!(!found(br#"{"text":"no usage here"}"#));
}

#[test]
fn the_usage_null_to_cut_is_found_with_the_key() {
    let null_at = |data: &[u8]| super::usage_key(data).null_at;
    let chunk = br#"{"id":"c1","choices":[],"usage":null}"#;
    assert_eq!(
        null_at(chunk),
        memchr::memmem::find(chunk, super::USAGE_NULL)
    );
    assert_eq!(
        null_at(br#"{"usage":null}"#),
        None,
        "no comma: not the member cut"
    );
    assert_eq!(
        null_at(br#"{"a":1,"usage": null}"#),
        None,
        "spaced: not Sluice's"
    );
    assert_eq!(null_at(br#"{"a":1,"usage":{"x":1}}"#), None);
    let two = br#"{"a":1,"usage":null,"b":{"c":2,"usage":null}}"#;
    assert_eq!(null_at(two), Some(6), "the first");
    let after = br#"{"usage":{"x":1},"b":{"c":2,"usage":null}}"#;
    assert!(super::usage_key(after).object);
    assert_eq!(
        null_at(after),
        memchr::memmem::find(after, super::USAGE_NULL)
    );
}

/// Data split over several `data:` lines is a copy, not a slice of the
/// block: the cut is searched in the block itself.
#[test]
fn usage_null_is_cut_from_multi_line_data_too() {
    let mut obs = Observer::sse(false, true);
    let multi = "data: {\"id\":\"c1\",\n\
                 data: \"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n";
    let out = run(&mut obs, &[multi, DONE]);
    assert!(!out.contains("usage"), "{out}");
    assert!(out.contains("\"content\":\"Hi\""), "{out}");
}
