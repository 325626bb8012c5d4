use std::sync::atomic::AtomicUsize;

use super::*;
use crate::budget::journal::Line;

/// A file stand-in that fails on demand, after writing half its buffer
/// (what a disk filling up mid-write does).
#[derive(Clone, Default)]
struct Flaky {
    data: Arc<Mutex<Vec<u8>>>,
    failing: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
}

impl Store for Flaky {
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let mut d = self.data.lock().expect("lock");
        if self.failing.load(Ordering::SeqCst) {
            d.extend_from_slice(&buf[..buf.len() / 2]);
            return Err(std::io::Error::other("No space left on device"));
        }
        d.extend_from_slice(buf);
        Ok(())
    }
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.data.lock().expect("lock").truncate(len as usize);
        Ok(())
    }
}

fn line(n: u64) -> Line {
    Line {
        b: "b".into(),
        s: "user=alice".into(),
        w: "2026-11-26".into(),
        n: Some(n),
        reset: false,
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("never: {what}");
}

#[test]
fn a_failed_append_holds_the_record_then_rewrites_cleanly() {
    let store = Flaky::default();
    store
        .data
        .lock()
        .expect("lock")
        .extend_from_slice(b"{\"old\":1}\n");
    let released = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let health = Arc::new(Health::default());
    let w = {
        let released = released.clone();
        Writer::new(store.clone(), 10, health.clone(), move |u| {
            released.lock().expect("lock").push(u)
        })
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let t = std::thread::spawn(move || w.run(rx));

    store.failing.store(true, Ordering::SeqCst);
    tx.send(Msg::Append {
        line: line(1).into(),
        then: Some(b"record-1\n".to_vec()),
    })
    .map_err(|_| "send")
    .expect("send");
    wait_for("two failed attempts", || {
        store.attempts.load(Ordering::SeqCst) >= 2
    });
    assert!(
        released.lock().expect("lock").is_empty(),
        "record released before its charge was durable"
    );
    assert!(health
        .degraded()
        .expect("degraded")
        .contains("No space left"));
    // More charges queue behind the failing one.
    tx.send(Msg::Append {
        line: line(2).into(),
        then: Some(b"record-2\n".to_vec()),
    })
    .map_err(|_| "send")
    .expect("send");

    store.failing.store(false, Ordering::SeqCst);
    wait_for("records released", || {
        released.lock().expect("lock").len() == 2
    });
    assert_eq!(health.degraded(), None);
    let data = String::from_utf8(store.data.lock().expect("lock").clone()).expect("utf8");
    let lines: Vec<&str> = data.lines().collect();
    assert_eq!(lines.len(), 3, "no torn fragment glued to a line: {data:?}");
    assert_eq!(lines[0], "{\"old\":1}");
    for l in &lines[1..] {
        serde_json::from_str::<Line>(l).expect("a whole line");
    }
    assert_eq!(
        *released.lock().expect("lock"),
        vec![b"record-1\n".to_vec(), b"record-2\n".to_vec()]
    );

    let (done, wait) = oneshot::channel();
    tx.send(Msg::Close(done)).map_err(|_| "send").expect("send");
    t.join().expect("join");
    wait.blocking_recv().expect("closed");
}

#[test]
fn close_while_failing_gives_up_and_leaves_whole_lines() {
    let store = Flaky::default();
    store.failing.store(true, Ordering::SeqCst);
    let released = Arc::new(AtomicUsize::new(0));
    let health = Arc::new(Health::default());
    let w = {
        let released = released.clone();
        Writer::new(store.clone(), 0, health, move |_| {
            released.fetch_add(1, Ordering::SeqCst);
        })
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let t = std::thread::spawn(move || w.run(rx));
    tx.send(Msg::Append {
        line: line(1).into(),
        then: Some(b"r\n".to_vec()),
    })
    .map_err(|_| "send")
    .expect("send");
    let (done, wait) = oneshot::channel();
    tx.send(Msg::Close(done)).map_err(|_| "send").expect("send");
    t.join().expect("join");
    wait.blocking_recv().expect("closed");
    assert_eq!(released.load(Ordering::SeqCst), 0);
    assert!(store.data.lock().expect("lock").is_empty());
}

#[test]
fn past_the_bound_a_charge_and_its_record_are_dropped_not_written_undurable() {
    let store = Flaky::default();
    store.failing.store(true, Ordering::SeqCst);
    let released = Arc::new(AtomicUsize::new(0));
    let w = {
        let released = released.clone();
        Writer::new(store.clone(), 0, Arc::default(), move |_| {
            released.fetch_add(1, Ordering::SeqCst);
        })
    };
    let (tx, rx) = mpsc::unbounded_channel();
    // Everything is queued before the writer runs, so its first batch meets the bound.
    for i in 0..=MAX_PENDING as u64 {
        tx.send(Msg::Append {
            line: line(i + 1).into(),
            then: Some(b"r\n".to_vec()),
        })
        .map_err(|_| "send")
        .expect("send");
    }
    let t = std::thread::spawn(move || w.run(rx));
    wait_for("a failed attempt", || {
        store.attempts.load(Ordering::SeqCst) >= 1
    });
    store.failing.store(false, Ordering::SeqCst);
    wait_for("records released", || {
        released.load(Ordering::SeqCst) == MAX_PENDING
    });
    let (done, wait) = oneshot::channel();
    tx.send(Msg::Close(done)).map_err(|_| "send").expect("send");
    t.join().expect("join");
    wait.blocking_recv().expect("closed");
    assert_eq!(released.load(Ordering::SeqCst), MAX_PENDING);
    let data = store.data.lock().expect("lock");
    assert_eq!(data.iter().filter(|&&b| b == b'\n').count(), MAX_PENDING);
}
