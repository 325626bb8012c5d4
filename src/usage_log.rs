//! The usage log writer: one JSON line per request, written by a background
//! task (off the request path) to stdout or a file, flushed whenever the
//! queue runs empty.

use std::path::Path;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};

use crate::config::UsageSink;

enum Msg {
    Line(Vec<u8>),
    Flush(oneshot::Sender<()>),
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
        let out: Box<dyn AsyncWrite + Send + Unpin> = match sink {
            UsageSink::Off => return Ok(Self::off()),
            UsageSink::Stdout => Box::new(tokio::io::stdout()),
            UsageSink::File(p) => Box::new(open_append(p).await?),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(rx, BufWriter::with_capacity(64 * 1024, out)));
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
