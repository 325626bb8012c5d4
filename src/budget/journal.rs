//! The embedded state file: an append-only journal of settled spend, one
//! JSON line per charge, written by one task with group commit (all lines
//! queued since the last write go out together, then one fsync). Lines
//! queued with a follow-up (the request's usage record) release it only
//! after the fsync, so what the usage log shows is durable.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::pricing::Nanos;
use crate::usage_log::UsageLog;

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Budget name.
    pub b: String,
    /// Scope bucket, e.g. `user=alice`.
    pub s: String,
    /// Window key, e.g. `2026-11-26`.
    pub w: String,
    /// Nano-dollars spent (absent on a reset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<Nanos>,
    /// The budget was reset: spend before this line no longer counts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

enum Msg {
    Append {
        line: Line,
        /// A usage record to write once the line is durable.
        then: Option<Vec<u8>>,
    },
    /// Flush and stop (shutdown).
    Close(tokio::sync::oneshot::Sender<()>),
}

/// A handle to the journal writer.
#[derive(Clone)]
pub struct Journal {
    tx: Option<mpsc::UnboundedSender<Msg>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Journal")
    }
}

/// Reads a journal: the spend per (budget, scope, window), resets applied.
pub fn replay(path: &Path) -> std::io::Result<HashMap<(String, String, String), Nanos>> {
    let mut totals = HashMap::new();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(totals),
        Err(e) => return Err(e),
    };
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        // A torn last line (power loss mid-write) is skipped, not fatal.
        let Ok(l) = serde_json::from_str::<Line>(&line) else {
            continue;
        };
        let slot = totals.entry((l.b, l.s, l.w)).or_insert(0);
        if l.reset {
            *slot = 0;
        }
        *slot += l.n.unwrap_or(0);
    }
    Ok(totals)
}

/// Rewrites the journal to one line per still-relevant total (atomically:
/// a temporary file renamed over the old one).
pub fn compact(path: &Path, keep: &[Line]) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    {
        let mut f = std::fs::File::create(&tmp)?;
        for l in keep {
            let mut s = serde_json::to_vec(l).map_err(std::io::Error::other)?;
            s.push(b'\n');
            f.write_all(&s)?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".tmp");
    PathBuf::from(p)
}

impl Journal {
    /// A journal that writes nothing (tests, no budgets).
    pub fn none() -> Self {
        Self { tx: None }
    }

    /// Opens `path` for appending and starts the writer task.
    pub fn start(path: &Path, usage: UsageLog) -> std::io::Result<Journal> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::task::spawn_blocking(move || writer(rx, file, usage));
        Ok(Journal { tx: Some(tx) })
    }

    /// Queues a line; `then` (a usage record) is written after it is durable.
    /// Without a journal, `then` goes straight to the usage log.
    pub fn append(&self, line: Line, then: Option<Vec<u8>>, usage: &UsageLog) {
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::error::SendError(Msg::Append { then: Some(u), .. })) =
                    tx.send(Msg::Append { line, then })
                {
                    usage.write_raw(u);
                }
            }
            None => {
                if let Some(u) = then {
                    usage.write_raw(u);
                }
            }
        }
    }
}

impl Journal {
    /// Writes out what is queued and stops the writer.
    pub async fn close(&self) {
        if let Some(tx) = &self.tx {
            let (done, wait) = tokio::sync::oneshot::channel();
            if tx.send(Msg::Close(done)).is_ok() {
                let _ = wait.await;
            }
        }
    }
}

/// The writer: blocks on the channel, writes everything queued, fsyncs once,
/// then releases the usage records.
fn writer(mut rx: mpsc::UnboundedReceiver<Msg>, mut file: std::fs::File, usage: UsageLog) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        let mut buf = Vec::with_capacity(batch.len() * 96);
        for m in &batch {
            if let Msg::Append { line, .. } = m {
                if let Ok(s) = serde_json::to_vec(line) {
                    buf.extend_from_slice(&s);
                    buf.push(b'\n');
                }
            }
        }
        if !buf.is_empty() {
            if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
                tracing::error!(error = %e, "budget journal write failed; spend is kept in memory");
            }
        }
        let mut closing = Vec::new();
        for m in batch {
            match m {
                Msg::Append { then: Some(u), .. } => usage.write_raw(u),
                Msg::Append { then: None, .. } => {}
                Msg::Close(done) => closing.push(done),
            }
        }
        if !closing.is_empty() {
            for done in closing {
                let _ = done.send(());
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_sums_and_resets() {
        let dir = std::env::temp_dir().join(format!("sluice-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("j.jsonl");
        let l = |n: Option<u64>, reset: bool| Line {
            b: "b".into(),
            s: "user=a".into(),
            w: "2026-11-26".into(),
            n,
            reset,
        };
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
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open")
            .write_all(b"{\"b\":\"torn")
            .expect("w");
        let t = replay(&path).expect("replay");
        assert_eq!(t[&("b".into(), "user=a".into(), "2026-11-26".into())], 3);
        let _ = std::fs::remove_dir_all(dir);
    }
}
