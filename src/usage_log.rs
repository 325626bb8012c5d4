//! The usage log writer: one JSON line per request, written by a background
//! task (off the request path) to stdout or a file, flushed whenever the
//! queue runs empty. A file sink is reopened on [`UsageLog::reopen`] (SIGHUP),
//! so logrotate can rename it and signal.

use std::path::{Path, PathBuf};

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

/// A handle to the usage log; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct UsageLog {
    tx: Option<mpsc::UnboundedSender<Msg>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl UsageLog {
    /// A log that discards everything.
    pub fn off() -> Self {
        Self { tx: None }
    }

    /// Opens the sink and starts the writer task.
    pub async fn start(sink: &UsageSink) -> std::io::Result<Self> {
        let (out, path): (Box<dyn AsyncWrite + Send + Unpin>, _) = match sink {
            UsageSink::Off => return Ok(Self::off()),
            UsageSink::Stdout => (Box::new(tokio::io::stdout()), None),
            UsageSink::File(p) => (Box::new(open_append(p).await?), Some(p.clone())),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(rx, BufWriter::with_capacity(64 * 1024, out), path));
        Ok(Self { tx: Some(tx) })
    }

    /// Queues one record.
    pub fn write(&self, record: &impl Serialize) {
        let Some(tx) = &self.tx else { return };
        match serde_json::to_vec(record) {
            Ok(mut line) => {
                line.push(b'\n');
                // The writer only stops at process exit.
                let _ = tx.send(Msg::Line(line));
            }
            Err(e) => tracing::warn!(error = %e, "usage record not serializable"),
        }
    }

    /// Queues an already serialized record (one line, newline included).
    pub fn write_raw(&self, line: Vec<u8>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Line(line));
        }
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
) {
    while let Some(msg) = rx.recv().await {
        let mut acks = Vec::new();
        let mut next = Some(msg);
        while let Some(m) = next.take() {
            match m {
                Msg::Line(l) => {
                    if let Err(e) = out.write_all(&l).await {
                        tracing::error!(error = %e, "usage log write failed");
                    }
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
