//! Request/response capture (`[capture]`): a request a rule picks is armed
//! when its body has been read; its answer is teed (bounded) as it passes;
//! when its record finishes, the whole is handed to a bounded queue (full:
//! dropped and counted, never waited for). A writer thread redacts it and
//! appends one JSON line to a size-rotated file with a bounded total. Never
//! on the client's path beyond a bounded copy and a `try_send`.

mod line;
pub mod redact;
pub mod rules;
pub mod sink;
pub mod triggers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::config::CaptureConfig;
use crate::usage::Usage;
use crate::vocab::Identity;

pub use line::{observe, response_text};
pub use rules::Reason;
pub use triggers::{Dim, Trigger, Triggers};

/// Bytes kept past `max_body_bytes` until redaction is done, so a secret
/// cut by the bound is still recognised and blanked before the cut.
const MARGIN: usize = 1024;

enum Msg {
    Record(Box<Finished>),
    Flush(oneshot::Sender<()>),
}

/// Running totals, for `GET /admin/capture`.
#[derive(Debug, Default)]
pub struct Counts {
    pub written: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_write_error: AtomicU64,
}

/// Capture's live side: the writer's queue, the admin triggers, counters.
#[derive(Default)]
pub struct Capturer {
    tx: Option<mpsc::Sender<Msg>>,
    pub triggers: Triggers,
    pub counts: Counts,
}

impl std::fmt::Debug for Capturer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capturer")
            .field("on", &self.tx.is_some())
            .finish_non_exhaustive()
    }
}

impl Capturer {
    /// Capture off (no `[capture]` at start).
    pub fn off() -> Arc<Capturer> {
        Arc::new(Capturer::default())
    }

    /// Starts the writer thread for `cfg` (its path and queue are fixed
    /// from here on; rules, bounds and redaction follow reloads).
    pub fn start(cfg: Option<&CaptureConfig>) -> std::io::Result<Arc<Capturer>> {
        let Some(cfg) = cfg else {
            return Ok(Capturer::off());
        };
        // A path that cannot be written is a start-up error, not a stream of
        // dropped records.
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", cfg.path.display())))?;
        let (tx, rx) = mpsc::channel(cfg.queue);
        let c = Arc::new(Capturer {
            tx: Some(tx),
            ..Capturer::default()
        });
        let sink = sink::Sink::new(cfg.path.clone());
        let counts = c.clone();
        std::thread::Builder::new()
            .name("sluice-capture".into())
            .spawn(move || writer(rx, sink, &counts))?;
        Ok(c)
    }

    /// Whether a writer runs.
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Arms capture for a request when a rule (or trigger) may want it:
    /// keeps the client's body (a reference; a copy of its first bytes when
    /// it is over the bound) and the allow-listed headers.
    #[expect(
        clippy::too_many_arguments,
        reason = "what the pipeline knows when the body is read"
    )]
    pub fn arm(
        self: &Arc<Self>,
        cfg: Option<&Arc<CaptureConfig>>,
        id: &Identity,
        model: &str,
        method: &http::Method,
        path: &str,
        headers: &http::HeaderMap,
        body: &Bytes,
    ) -> Option<Box<Pending>> {
        let cfg = cfg?;
        self.tx.as_ref()?;
        let triggered = self.triggers.covers(id, now_secs());
        let reason = rules::decide(&cfg.rules, triggered, id, model, fastrand::f64())?;
        let keep = cfg.max_body_bytes + MARGIN;
        let request = if body.len() > keep {
            Bytes::copy_from_slice(&body[..keep])
        } else {
            body.clone()
        };
        let headers = cfg
            .headers
            .iter()
            .filter_map(|h| {
                let v = headers.get(h.as_str())?.to_str().ok()?;
                Some((h.clone(), v.to_owned()))
            })
            .collect();
        Some(Box::new(Pending {
            capturer: self.clone(),
            cfg: cfg.clone(),
            reason,
            method: method.as_str().to_owned(),
            path: path.to_owned(),
            headers,
            request,
            request_len: body.len(),
            response: Vec::new(),
            response_len: 0,
        }))
    }

    /// Waits until the queued records are written (at shutdown).
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// A request capture is armed for, until its record finishes.
pub struct Pending {
    capturer: Arc<Capturer>,
    cfg: Arc<CaptureConfig>,
    reason: Reason,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    request: Bytes,
    request_len: usize,
    /// The answer's first bytes (to the bound plus the margin).
    response: Vec<u8>,
    response_len: u64,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// What the record knows when the request ends.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ts: String,
    pub request_id: Arc<str>,
    pub identity: Identity,
    pub endpoint: &'static str,
    pub stream: bool,
    pub model: String,
    pub routed_to: Option<String>,
    pub upstream_model: String,
    pub provider: String,
    pub status: u16,
    pub error: Option<&'static str>,
    pub end: &'static str,
    /// The request failed (status, an error in the stream, a cut stream).
    pub failed: bool,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub usage: Option<Usage>,
    pub cost_nanos: Option<u64>,
    /// The answer's finish (stop) reason, as the proxy's observer read it.
    pub finish_reason: Option<String>,
    pub fault: Option<String>,
    pub trace_id: Option<String>,
}

/// A finished capture, on its way to the writer.
struct Finished {
    pending: Pending,
    reason: &'static str,
    outcome: Outcome,
}

impl Pending {
    /// Tees answer bytes as they pass (a bounded copy).
    pub fn tee(&mut self, chunk: &[u8]) {
        self.response_len += chunk.len() as u64;
        let room = (self.cfg.max_body_bytes + MARGIN).saturating_sub(self.response.len());
        if room > 0 {
            self.response
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
    }

    /// The request ended: queued for the writer when a rule wants it.
    pub fn finish(self, outcome: Outcome) {
        let Some(reason) = self.reason.label(outcome.failed) else {
            return;
        };
        let capturer = self.capturer.clone();
        let Some(tx) = &capturer.tx else { return };
        let msg = Msg::Record(Box::new(Finished {
            pending: self,
            reason,
            outcome,
        }));
        if tx.try_send(msg).is_err() {
            capturer
                .counts
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            crate::metrics::capture_dropped("queue_full");
        }
    }
}

/// The writer thread: redacts and writes each record, flushing whenever the
/// queue runs empty. A record counts as written once it is flushed, so
/// `written` in the admin status never runs ahead of the file.
fn writer(mut rx: mpsc::Receiver<Msg>, mut sink: sink::Sink, capturer: &Capturer) {
    // Records in the sink's buffer, not yet flushed to the file.
    let mut unflushed = 0u64;
    let flush = |sink: &mut sink::Sink, unflushed: &mut u64| {
        let counts = &capturer.counts;
        match sink.flush() {
            Ok(()) => counts.written.fetch_add(*unflushed, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(error = %e, "capture file flush failed");
                counts
                    .dropped_write_error
                    .fetch_add(*unflushed, Ordering::Relaxed)
            }
        };
        *unflushed = 0;
    };
    while let Some(msg) = rx.blocking_recv() {
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Record(f) => {
                    let bounds = sink::Bounds {
                        max_file_bytes: f.pending.cfg.max_file_bytes,
                        max_total_bytes: f.pending.cfg.max_total_bytes,
                    };
                    let reason = f.reason;
                    let mut bytes = serde_json::to_vec(&line::build(&f)).unwrap_or_default();
                    bytes.push(b'\n');
                    match sink.write(&bytes, bounds) {
                        Ok(()) => {
                            unflushed += 1;
                            crate::metrics::captured(reason);
                        }
                        Err(e) => {
                            capturer
                                .counts
                                .dropped_write_error
                                .fetch_add(1, Ordering::Relaxed);
                            crate::metrics::capture_dropped("write_error");
                            tracing::warn!(error = %e, "capture record not written");
                        }
                    }
                }
                Msg::Flush(done) => {
                    flush(&mut sink, &mut unflushed);
                    let _ = done.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        flush(&mut sink, &mut unflushed);
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
