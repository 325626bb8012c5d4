//! The journal writer: group commit, and what happens when a write fails.
//!
//! Policy on a failed append (disk full, I/O error): the batch is kept and
//! retried with backoff (50 ms doubling to 2 s) until it is durable; the
//! usage records of its requests wait with it, so the usage log never shows
//! a charge that is not on disk. Before every retry the file is truncated
//! back to its last known good length, so a half-written line never has
//! the next one glued onto it. While failing, the journal reports itself
//! degraded (`/readyz` answers 503, `sluice_journal_degraded` is 1). At
//! most [`MAX_PENDING`] charges wait; past that a charge is kept in memory
//! only (budgets still count it until a restart) and it and its usage record
//! are dropped, counted in `sluice_journal_dropped_total`.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Msg;

/// The shortest time between two fsyncs of the journal under load. Each
/// commit costs the process far more than its write: a timer wake, the
/// fsync's I/O and its completion, each a context switch (and, on a VM, an
/// exit to the hypervisor). At 2 ms, ~500 commits a second cost a
/// limits+budget request ~5 µs of its ~45 (bench/RESULTS.md); at 10 ms, ~1.
/// What a longer interval risks: a `kill -9` or power loss forgets the
/// charges of at most its last interval, which is small beside what a crash
/// forgets anyway (the requests in flight, running for seconds, whose
/// charges settle only at their end). A usage record waits for its charge's
/// fsync, so this is also the most a busy gateway delays a record (never a
/// response).
const COMMIT_INTERVAL: Duration = Duration::from_millis(10);

/// Charges waiting for the disk, at most.
pub const MAX_PENDING: usize = 16_384;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Whether the journal can persist charges.
#[derive(Debug, Default)]
pub struct Health {
    degraded: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Health {
    /// `Some(reason)` while writes are failing.
    pub fn degraded(&self) -> Option<String> {
        if !self.degraded.load(Ordering::Acquire) {
            return None;
        }
        let r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        Some(
            r.clone()
                .unwrap_or_else(|| "budget journal writes failing".into()),
        )
    }

    fn set(&self, reason: Option<String>) {
        let was = self.degraded.swap(reason.is_some(), Ordering::AcqRel);
        let now = reason.is_some();
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
        if was != now {
            crate::metrics::journal_degraded(now);
        }
    }
}

/// Where the journal's bytes go: the file, or a test's failing stand-in.
pub trait Store {
    /// Appends `buf` at the end.
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()>;
    /// Makes what was appended durable.
    fn sync(&mut self) -> std::io::Result<()>;
    /// Cuts the file back to `len` bytes.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

impl Store for std::fs::File {
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        // Opened with O_APPEND: after a truncate, writes go to the new end.
        self.write_all(buf)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)
    }
}

struct Pending {
    line: Vec<u8>,
    then: Option<Vec<u8>>,
}

/// The writer task's state.
pub struct Writer<S, R> {
    store: S,
    /// The length of the file up to its last durable, complete line.
    good_len: u64,
    /// A write or sync failed since `good_len`: truncate before writing.
    dirty: bool,
    pending: VecDeque<Pending>,
    dropped_since_healthy: u64,
    health: Arc<Health>,
    release: R,
}

impl<S: Store, R: FnMut(Vec<u8>)> Writer<S, R> {
    /// A writer appending to `store` (currently `good_len` bytes long);
    /// `release` receives each usage record once its charge is durable.
    pub fn new(store: S, good_len: u64, health: Arc<Health>, release: R) -> Self {
        Self {
            store,
            good_len,
            dirty: false,
            pending: VecDeque::new(),
            dropped_since_healthy: 0,
            health,
            release,
        }
    }

    fn push(&mut self, line: &super::Entry, then: Option<Vec<u8>>) {
        if self.pending.len() >= MAX_PENDING {
            crate::metrics::journal_dropped();
            if self.dropped_since_healthy == 0 {
                tracing::error!(
                    max_pending = MAX_PENDING,
                    "budget journal: too many charges waiting for the disk; further charges are \
                     kept in memory only and their usage records dropped"
                );
            }
            self.dropped_since_healthy += 1;
            return;
        }
        match line.to_json() {
            Ok(mut bytes) => {
                bytes.push(b'\n');
                self.pending.push_back(Pending { line: bytes, then });
            }
            Err(e) => tracing::error!(error = %e, "budget journal line not serializable"),
        }
    }

    /// Takes a message; returns the closer's ack on `Close`.
    fn take(&mut self, m: Msg) -> Option<oneshot::Sender<()>> {
        match m {
            Msg::Append { line, then } => {
                self.push(&line, then);
                None
            }
            Msg::Close(done) => Some(done),
        }
    }

    /// Writes every pending line, fsyncs once, releases their records.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.dirty {
            self.store.truncate(self.good_len)?;
            self.dirty = false;
        }
        let len: usize = self.pending.iter().map(|p| p.line.len()).sum();
        let mut buf = Vec::with_capacity(len);
        for p in &self.pending {
            buf.extend_from_slice(&p.line);
        }
        if let Err(e) = self.store.append(&buf).and_then(|()| self.store.sync()) {
            self.dirty = true;
            return Err(e);
        }
        self.good_len = self.good_len.saturating_add(buf.len() as u64);
        for p in self.pending.drain(..) {
            if let Some(u) = p.then {
                (self.release)(u);
            }
        }
        Ok(())
    }

    /// Runs until `Close` or until every handle is gone.
    pub fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut backoff = FIRST_BACKOFF;
        let mut closing: Option<oneshot::Sender<()>> = None;
        // Every handle is gone (the process is exiting without `close`).
        let mut orphaned = false;
        let mut last_sync = std::time::Instant::now();
        loop {
            if self.pending.is_empty() && closing.is_none() {
                match rx.blocking_recv() {
                    Some(m) => closing = self.take(m),
                    None => return,
                }
            }
            // Under load, gather at least COMMIT_INTERVAL of charges per
            // fsync (a charge after an idle spell is written at once).
            if closing.is_none() {
                if let Some(wait) = COMMIT_INTERVAL.checked_sub(last_sync.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            while closing.is_none() {
                match rx.try_recv() {
                    Ok(m) => closing = self.take(m),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        orphaned = true;
                        break;
                    }
                }
            }
            let flushed = self.flush();
            last_sync = std::time::Instant::now();
            match flushed {
                Ok(()) => {
                    if self.health.degraded().is_some() {
                        tracing::warn!(
                            dropped = self.dropped_since_healthy,
                            "budget journal writable again"
                        );
                    }
                    self.health.set(None);
                    self.dropped_since_healthy = 0;
                    backoff = FIRST_BACKOFF;
                }
                Err(e) => {
                    crate::metrics::journal_write_error();
                    tracing::error!(
                        error = %e,
                        waiting = self.pending.len(),
                        retry_in = ?backoff,
                        "budget journal write failed; charges and their usage records wait for the disk"
                    );
                    self.health
                        .set(Some(format!("budget journal write failed: {e}")));
                    if closing.is_none() && !orphaned {
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                    if self.dirty {
                        let _ = self.store.truncate(self.good_len);
                    }
                    tracing::error!(
                        lost = self.pending.len(),
                        "budget journal: shutting down with charges not on disk; \
                         they and their usage records are lost"
                    );
                }
            }
            if let Some(done) = closing.take() {
                let _ = done.send(());
                return;
            }
            if orphaned {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
