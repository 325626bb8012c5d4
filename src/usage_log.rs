//! The usage log writer: one JSON line per request, written by a background
//! task (off the request path) to stdout or a file, flushed whenever the
//! queue runs empty. A file sink is reopened on [`UsageLog::reopen`] (SIGHUP),
//! so logrotate can rename it and signal.
//!
//! Bounded: at most `MAX_QUEUED_BYTES` of records wait for a sink that does
//! not keep up (a stdout pipe nobody reads, a stalled disk); past that a
//! record is dropped, counted in `sluice_usage_dropped_total` and logged,
//! rather than growing memory or stalling requests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};

use crate::config::UsageSink;

enum Msg {
    Line(Vec<u8>),
    Flush(oneshot::Sender<()>),
    /// Flush, close and reopen the file (after a rotation).
    Reopen,
}

/// Bytes of records that may wait for the sink.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

/// A handle to the usage log; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct UsageLog {
    tx: Option<mpsc::UnboundedSender<Msg>>,
    queue: Arc<Queue>,
}

/// What waits for the writer, in bytes, and its bound.
#[derive(Debug, Default)]
struct Queue {
    bytes: AtomicUsize,
    max: AtomicUsize,
    /// A drop was logged and not yet followed by a write (one warning per
    /// episode).
    dropping: AtomicBool,
    dropped: AtomicUsize,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl UsageLog {
    /// A log that discards everything.
    pub fn off() -> Self {
        Self::default()
    }

    /// Opens the sink and starts the writer task.
    pub async fn start(sink: &UsageSink) -> std::io::Result<Self> {
        let (out, path): (Box<dyn AsyncWrite + Send + Unpin>, _) = match sink {
            UsageSink::Off => return Ok(Self::off()),
            UsageSink::Stdout => (Box::new(tokio::io::stdout()), None),
            UsageSink::File(p) => (Box::new(open_append(p).await?), Some(p.clone())),
        };
        Ok(Self::spawn(out, path, MAX_QUEUED_BYTES))
    }

    fn spawn(out: Box<dyn AsyncWrite + Send + Unpin>, path: Option<PathBuf>, max: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Arc::new(Queue::default());
        queue.max.store(max, Ordering::Relaxed);
        let out = BufWriter::with_capacity(64 * 1024, out);
        tokio::spawn(writer(rx, out, path, queue.clone()));
        Self {
            tx: Some(tx),
            queue,
        }
    }

    /// Queues a line unless the queue is full.
    fn enqueue(&self, line: Vec<u8>) {
        let Some(tx) = &self.tx else { return };
        let q = &self.queue;
        let len = line.len();
        if q.bytes.fetch_add(len, Ordering::Relaxed) + len > q.max.load(Ordering::Relaxed) {
            q.bytes.fetch_sub(len, Ordering::Relaxed);
            q.dropped.fetch_add(1, Ordering::Relaxed);
            crate::metrics::usage_dropped();
            if !q.dropping.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    max_bytes = q.max.load(Ordering::Relaxed),
                    "usage log sink is not keeping up: records dropped until it does"
                );
            }
            return;
        }
        // The writer only stops at process exit.
        let _ = tx.send(Msg::Line(line));
    }

    /// Queues one record.
    pub fn write(&self, record: &impl Serialize) {
        if self.tx.is_none() {
            return;
        }
        match serde_json::to_vec(record) {
            Ok(mut line) => {
                line.push(b'\n');
                self.enqueue(line);
            }
            Err(e) => tracing::warn!(error = %e, "usage record not serializable"),
        }
    }

    /// One record as its line (newline included), for a caller that writes
    /// it later with [`UsageLog::write_raw`]; `None` when the log is off, so
    /// nothing is serialized for nobody.
    pub fn line(&self, record: &impl Serialize) -> Option<Vec<u8>> {
        self.tx.as_ref()?;
        match serde_json::to_vec(record) {
            Ok(mut line) => {
                line.push(b'\n');
                Some(line)
            }
            Err(e) => {
                tracing::warn!(error = %e, "usage record not serializable");
                None
            }
        }
    }

    /// Queues an already serialized record (one line, newline included).
    pub fn write_raw(&self, line: Vec<u8>) {
        self.enqueue(line);
    }

    /// Reopens a file sink (at its configured path) once what is queued so
    /// far is written: records before this call go to the old file, records
    /// after it to the new one.
    pub fn reopen(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Reopen);
        }
    }

    /// Waits until everything queued so far is written out.
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn open_append(p: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .await
}

async fn writer(
    mut rx: mpsc::UnboundedReceiver<Msg>,
    mut out: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
    path: Option<PathBuf>,
    queue: Arc<Queue>,
) {
    while let Some(msg) = rx.recv().await {
        let mut acks = Vec::new();
        let mut next = Some(msg);
        while let Some(m) = next.take() {
            match m {
                Msg::Line(l) => {
                    if let Err(e) = out.write_all(&l).await {
                        crate::metrics::usage_write_error();
                        tracing::error!(error = %e, "usage log write failed");
                    }
                    queue.bytes.fetch_sub(l.len(), Ordering::Relaxed);
                    queue.dropping.store(false, Ordering::Relaxed);
                }
                Msg::Flush(ack) => acks.push(ack),
                Msg::Reopen => {
                    if let Some(p) = &path {
                        if let Err(e) = out.flush().await {
                            tracing::error!(error = %e, "usage log flush failed");
                        }
                        match open_append(p).await {
                            Ok(f) => {
                                out = BufWriter::with_capacity(64 * 1024, Box::new(f));
                                tracing::info!(path = %p.display(), "usage log reopened");
                            }
                            Err(e) => tracing::error!(
                                path = %p.display(),
                                error = %e,
                                "usage log reopen failed; still writing to the old file"
                            ),
                        }
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush().await {
            tracing::error!(error = %e, "usage log flush failed");
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sink_that_does_not_keep_up_costs_bounded_memory() {
        // A pipe nobody reads: the writer blocks after 1 KiB.
        let (stalled, _reader) = tokio::io::duplex(1024);
        let log = UsageLog::spawn(Box::new(stalled), None, 64 * 1024);
        let line = vec![b'x'; 1023];
        for _ in 0..1000 {
            let mut l = line.clone();
            l.push(b'\n');
            log.write_raw(l);
        }
        // 64 KiB wait; the rest is dropped and counted.
        let queued = log.queue.bytes.load(Ordering::Relaxed);
        assert!(queued <= 64 * 1024, "{queued} bytes queued");
        assert_eq!(log.queue.dropped.load(Ordering::Relaxed), 1000 - 64);
        // The writer drains into its buffer and the stalled pipe, then blocks:
        // nothing grows past the bound.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(log.queue.bytes.load(Ordering::Relaxed) <= 64 * 1024);
    }
}
