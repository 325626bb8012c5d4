use super::rules::MAX_REFERENCES;
use super::*;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sluice-owners-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&d).expect("dir");
    d
}

#[test]
fn the_oldest_ids_are_forgotten_past_the_cap() {
    let o = Owners::in_memory(3);
    for i in 0..5 {
        o.record(&format!("file-{i}"), "a");
    }
    assert_eq!(o.len(), 3);
    assert!(!o.owned_by("file-0", "a"));
    assert!(!o.owned_by("file-1", "a"));
    assert!(o.owned_by("file-4", "a"));
    assert!(!o.owned_by("file-4", "b"));
}

#[test]
fn an_owned_id_keeps_its_first_owner() {
    let o = Owners::in_memory(10);
    o.record("file-1", "a");
    o.record("file-1", "b");
    assert!(o.owned_by("file-1", "a"));
    assert!(!o.owned_by("file-1", "b"));
    // Ids out of bounds are never recorded.
    o.record("", "a");
    o.record(&"x".repeat(MAX_ID_LEN + 1), "a");
    assert_eq!(o.len(), 1);
}

#[tokio::test]
async fn ownership_is_replayed_and_a_torn_line_skipped() {
    let d = dir();
    let path = d.join("s.owners.jsonl");
    {
        let o = Owners::open(&path, 100).expect("open");
        o.record("file-a", "alice");
        o.record("batch_b", "bob");
        o.close().await;
    }
    // A torn write at the end, and a garbage line in the middle.
    let mut text = std::fs::read_to_string(&path).expect("read");
    text.insert_str(0, "not json\n");
    text.push_str("{\"id\":\"file-torn\",\"k\":\"al");
    std::fs::write(&path, text).expect("write");
    let o = Owners::open(&path, 100).expect("reopen");
    assert!(o.owned_by("file-a", "alice"));
    assert!(o.owned_by("batch_b", "bob"));
    assert!(!o.owned_by("file-torn", "alice"));
    assert_eq!(o.len(), 2);
    o.close().await;
    // Compacted at start: only the good lines are left.
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.ends_with('\n'));
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn the_file_stays_bounded() {
    let d = dir();
    let path = d.join("s.owners.jsonl");
    let o = Owners::open(&path, 4).expect("open");
    for i in 0..50 {
        o.record(&format!("file-{i}"), "a");
    }
    o.close().await;
    let lines = std::fs::read_to_string(&path)
        .expect("read")
        .lines()
        .count();
    assert!(lines <= 9, "{lines} lines");
    let o = Owners::open(&path, 4).expect("reopen");
    assert_eq!(o.len(), 4);
    assert!(o.owned_by("file-49", "a"));
    assert!(!o.owned_by("file-45", "a"));
    o.close().await;
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn paths_name_roots_and_objects() {
    for (p, t) in [
        ("/v1/files", Target::Root("files")),
        ("/v1/files/file-1/content", Target::Object("file-1")),
        ("/v1/messages/batches", Target::Root("batches")),
        ("/v1/messages/batches/mb_1/results", Target::Object("mb_1")),
        (
            "/v1/vector_stores/vs_1/files/file-2",
            Target::Object("vs_1"),
        ),
        ("/v1/uploads/up_1/parts", Target::Object("up_1")),
        ("/v1/responses/resp_1/input_items", Target::Object("resp_1")),
        ("/v1/chat/completions/cc_1/messages", Target::Object("cc_1")),
        ("/v1/chat/completions", Target::Untracked),
        ("/v1/responses", Target::Untracked),
        ("/v1/responses/input_tokens", Target::Untracked),
        ("/v1/images/generations", Target::Untracked),
        ("/v1/fine_tuning/jobs", Target::Untracked),
        ("/v1/conversations", Target::Root("conversations")),
        ("/v1/conversations/conv_1/items", Target::Object("conv_1")),
    ] {
        assert_eq!(target(p), t, "{p}");
    }
    use http::Method;
    assert!(records_answer("/v1/files", &Method::POST));
    assert!(!records_answer("/v1/files", &Method::GET));
    assert!(records_answer("/v1/uploads/up_1/complete", &Method::POST));
    assert!(records_answer("/v1/batches/b_1", &Method::GET));
    assert!(!records_answer("/v1/files/file-1/content", &Method::GET));
    assert!(!records_answer(
        "/v1/vector_stores/vs_1/search",
        &Method::POST
    ));
}

#[test]
fn body_references_at_any_depth() {
    let body = br#"{"input_file_id":"file-1","previous_response_id":"resp_1",
        "input":[{"content":[{"type":"input_file","file_id":"file-2"}]}],
        "tools":[{"type":"file_search","vector_store_ids":["vs_1","vs_2"]}],
        "file_ids":["file-3"],"conversation":{"id":"conv_1"}}"#;
    let mut ids = referenced_ids(body, false).expect("json");
    ids.sort();
    assert_eq!(
        ids,
        ["conv_1", "file-1", "file-2", "file-3", "resp_1", "vs_1", "vs_2"]
    );
    assert_eq!(
        referenced_ids(br#"{"model":"x","conversation":"conv_2"}"#, true).expect("json"),
        ["conv_2"]
    );
    assert!(referenced_ids(br#"{"model":"x","messages":[]}"#, true)
        .expect("json")
        .is_empty());
    // An escaped key still counts.
    assert_eq!(
        referenced_ids(br#"{"input_file\u005fid":"file-9"}"#, true).expect("json"),
        ["file-9"]
    );
    // What Sluice cannot read the way every provider would is refused.
    for bad in [
        &br#"{"input_file_id":"file-1","x":NaN}"#[..],
        br#"{"input_file_id":"file-1","input_file_id":"file-2"}"#,
        b"\xff\xfe{\x00}\x00",
        b"purpose=batch&input_file_id=file-1",
    ] {
        let e = referenced_ids(bad, false).expect_err("unreadable");
        assert_eq!(e.status().as_u16(), 400);
    }
    assert!(referenced_ids(b"  ", false).expect("empty").is_empty());
    let many = format!(
        "{{\"file_ids\":[{}]}}",
        vec!["\"f\""; MAX_REFERENCES + 1].join(",")
    );
    assert!(referenced_ids(many.as_bytes(), true).is_err());
}

#[test]
fn admit_refuses_others_objects_and_listing() {
    use http::Method;
    let o = Owners::in_memory(10);
    o.record("file-a", "a");
    assert!(o
        .admit("a", "/v1/files/file-a", &Method::GET, false, b"")
        .is_ok());
    let e = o
        .admit("b", "/v1/files/file-a", &Method::DELETE, false, b"")
        .expect_err("not b's");
    assert_eq!(e.status().as_u16(), 404);
    let e = o
        .admit("a", "/v1/files", &Method::GET, false, b"")
        .expect_err("listing");
    assert_eq!(e.status().as_u16(), 403);
    assert!(o
        .admit("b", "/v1/files", &Method::POST, true, b"--x\r\n")
        .is_ok());
    let batch = br#"{"input_file_id":"file-a","endpoint":"/v1/chat/completions"}"#;
    assert!(o
        .admit("a", "/v1/batches", &Method::POST, false, batch)
        .is_ok());
    let e = o
        .admit("b", "/v1/batches", &Method::POST, false, batch)
        .expect_err("not b's file");
    assert_eq!(e.status().as_u16(), 404);
}

#[test]
fn answers_give_their_ids() {
    assert_eq!(
        answer_ids(br#"{"id":"batch_1","output_file_id":"file-o","error_file_id":null}"#),
        ["batch_1", "file-o"]
    );
    assert_eq!(
        answer_ids(br#"{"id":"upload_1","file":{"id":"file-u"}}"#),
        ["upload_1", "file-u"]
    );
    assert_eq!(
        answer_ids(br#"{"type":"response.created","response":{"id":"resp_1"}}"#),
        ["resp_1"]
    );
    assert!(answer_ids(b"[1]").is_empty());
}

#[test]
fn store_flags() {
    assert!(stores(br#"{"model":"m"}"#, true));
    assert!(!stores(br#"{"model":"m"}"#, false));
    assert!(stores(br#"{"model":"m","store":true}"#, false));
    assert!(!stores(br#"{"model":"m","store":false}"#, true));
    assert!(!stores(br#"{"model":"m","st\u006fre":false}"#, true));
    assert!(stores(br#"{"model":"m","store":"no"}"#, true));
}

#[test]
fn only_escaped_keys_force_a_parse() {
    assert!(!rules::escaped_key(
        br#"{"model":"m","input":"caf\u00e9 \u00e9","x":"\\u"}"#
    ));
    assert!(rules::escaped_key(
        br#"{"model":"m","a":"\u00e9","fil\u0065_id" : "f"}"#
    ));
    assert!(rules::escaped_key(br#"{"in\\\u0070ut":1}"#));
    assert!(!rules::escaped_key(br#"{"a":"\u0022:"}"#));
    // An LLM body with escaped text but no id field is not parsed.
    assert!(
        referenced_ids(br#"{"model":"m","input":"caf\u00e9"}"#, true)
            .expect("ok")
            .is_empty()
    );
}

#[tokio::test]
async fn batch_results_marks_are_claimed_once_and_replayed() {
    let d = dir();
    let path = d.join("s.owners.jsonl");
    {
        let o = Owners::open(&path, 100).expect("open");
        o.record_answer(br#"{"id":"batch_1","object":"batch"}"#, "alice");
        // Alice reads her batch: its output file is hers and is results.
        o.record_answer(
            br#"{"id":"batch_1","object":"batch","output_file_id":"file-out-1","error_file_id":"file-err-1"}"#,
            "alice",
        );
        assert!(o.owned_by("file-out-1", "alice"));
        assert!(o.is_batch_output("file-out-1"));
        assert!(!o.is_batch_output("file-err-1"));
        assert!(!o.is_batch_output("batch_1"));
        assert_eq!(o.result_mark("file-out-1"), Some(0));
        // Lines in order: each claimed once; a line below the mark is taken.
        assert!(o.claim_result_line("file-out-1", 0));
        assert!(!o.claim_result_line("file-out-1", 0));
        assert!(o.claim_result_line("file-out-1", 2));
        assert!(!o.claim_result_line("file-out-1", 1));
        o.save_result_mark("file-out-1");
        // An Anthropic batch gets its mark on its first claim; an id nobody
        // owns never does.
        o.record("msgbatch_1", "bob");
        assert!(o.claim_result_line("msgbatch_1", 0));
        o.save_result_mark("msgbatch_1");
        assert!(!o.claim_result_line("nobody", 0));
        assert_eq!(o.result_mark("nobody"), None);
        o.close().await;
    }
    let o = Owners::open(&path, 100).expect("reopen");
    assert_eq!(o.result_mark("file-out-1"), Some(3));
    assert_eq!(o.result_mark("msgbatch_1"), Some(1));
    assert!(!o.claim_result_line("file-out-1", 2));
    assert!(o.claim_result_line("file-out-1", 3));
    o.save_result_mark("file-out-1");
    o.close().await;
    // Compacted at start: one owner line per id and one mark per results
    // object, the highest.
    let o = Owners::open(&path, 100).expect("reopen");
    o.close().await;
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 6, "{text}");
    assert_eq!(o.result_mark("file-out-1"), Some(4));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_mark_is_forgotten_with_its_id() {
    let o = Owners::in_memory(2);
    o.record("msgbatch_1", "a");
    assert!(o.claim_result_line("msgbatch_1", 0));
    o.record("x", "a");
    o.record("y", "a");
    assert_eq!(o.result_mark("msgbatch_1"), None);
    assert!(!o.claim_result_line("msgbatch_1", 1));
}
