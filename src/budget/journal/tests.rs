use super::*;

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-journal-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn l(n: Option<u64>, reset: bool) -> Line {
    Line {
        b: "b".into(),
        s: "user=a".into(),
        w: "2026-11-26".into(),
        n,
        reset,
    }
}

fn key() -> (String, String, String) {
    ("b".into(), "user=a".into(), "2026-11-26".into())
}

fn append(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open")
        .write_all(bytes)
        .expect("w");
}

#[test]
fn replay_sums_and_resets() {
    let dir = dir("sums");
    let path = dir.join("j.jsonl");
    compact(
        &path,
        &[
            l(Some(5), false),
            l(Some(7), false),
            l(None, true),
            l(Some(3), false),
        ],
    )
    .expect("write");
    append(&path, b"{\"b\":\"torn");
    let t = replay(&path).expect("replay");
    assert_eq!(t[&key()], 3);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_torn_last_line_inside_a_utf8_character_is_skipped() {
    let dir = dir("utf8");
    let path = dir.join("j.jsonl");
    compact(&path, &[l(Some(5), false)]).expect("write");
    // "é" is C3 A9: the write stopped after C3.
    append(&path, b"{\"b\":\"b\",\"s\":\"user=caf\xC3");
    assert_eq!(replay(&path).expect("replay")[&key()], 5);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_line_before_the_end_is_an_error_naming_file_and_line() {
    let dir = dir("bad");
    let path = dir.join("j.jsonl");
    compact(&path, &[l(Some(5), false)]).expect("write");
    append(&path, b"garbage\xff\n");
    append(
        &path,
        b"{\"b\":\"b\",\"s\":\"user=a\",\"w\":\"2026-11-26\",\"n\":7}\n",
    );
    let e = replay(&path).expect_err("corrupt");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    let msg = e.to_string();
    assert!(msg.contains("j.jsonl: line 2"), "{msg}");
    assert!(msg.contains("sluice state repair"), "{msg}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_overflowing_sum_is_an_error_not_a_wrap() {
    let dir = dir("overflow");
    let path = dir.join("j.jsonl");
    compact(&path, &[l(Some(5), false), l(Some(u64::MAX), false)]).expect("write");
    let msg = replay(&path).expect_err("overflow").to_string();
    assert!(msg.contains("line 2") && msg.contains("overflows"), "{msg}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_overlong_line_is_bad() {
    let dir = dir("long");
    let path = dir.join("j.jsonl");
    let mut big = vec![b'x'; MAX_LINE + 10];
    big.push(b'\n');
    std::fs::write(&path, &big).expect("w");
    append(
        &path,
        b"{\"b\":\"b\",\"s\":\"user=a\",\"w\":\"2026-11-26\",\"n\":7}\n",
    );
    let msg = replay(&path).expect_err("long").to_string();
    assert!(msg.contains("line 1"), "{msg}");
    let r = repair(&path, 42).expect("repair");
    assert_eq!(r.dropped, vec![1]);
    assert_eq!(replay(&path).expect("replay")[&key()], 7);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn repair_keeps_a_backup_and_drops_only_bad_lines() {
    let dir = dir("repair");
    let path = dir.join("j.jsonl");
    compact(&path, &[l(Some(5), false)]).expect("write");
    append(&path, b"not json\n");
    append(
        &path,
        b"{\"b\":\"b\",\"s\":\"user=a\",\"w\":\"2026-11-26\",\"n\":18446744073709551615}\n",
    );
    append(
        &path,
        b"{\"b\":\"b\",\"s\":\"user=a\",\"w\":\"2026-11-26\",\"n\":7}\n",
    );
    append(&path, b"{\"b\":\"to");
    let before = std::fs::read(&path).expect("read");
    let r = repair(&path, 1234).expect("repair");
    assert_eq!(r.dropped, vec![2, 3, 5]);
    assert_eq!(r.kept, 2);
    let backup = r.backup.expect("backup");
    assert!(backup.to_string_lossy().ends_with("j.jsonl.bak.1234"));
    assert_eq!(std::fs::read(&backup).expect("backup"), before);
    assert_eq!(replay(&path).expect("replay")[&key()], 12);
    // A clean journal is left alone, without a backup.
    let again = repair(&path, 1235).expect("repair");
    assert_eq!((again.dropped.len(), again.backup), (0, None));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_journal_is_empty() {
    let dir = dir("missing");
    assert!(replay(&dir.join("nope")).expect("replay").is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_charge_is_written_as_its_line() {
    let window = crate::window::Window::Day.key(1_795_665_132);
    for (bucket, b, s) in [
        ("user-daily|user=alice", "user-daily", "user=alice"),
        ("global", "global", ""),
    ] {
        let charge = Entry::Charge(Charge {
            bucket: BucketName::new(bucket),
            name_len: b.len(),
            window,
            n: 42,
        });
        let line = Entry::Line(Line {
            b: b.into(),
            s: s.into(),
            w: window.to_string(),
            n: Some(42),
            reset: false,
        });
        assert_eq!(
            charge.to_json().expect("json"),
            line.to_json().expect("json")
        );
    }
}
