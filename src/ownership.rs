//! Who created which provider object. Every virtual key shares the gateway's
//! provider key, so the provider cannot tell tenants apart: Sluice remembers
//! which key created each file, upload, batch, vector store, stored response
//! and stored chat completion, and lets only that key reach it.
//!
//! The table is bounded ([`MAX_IDS`]; past it the oldest ids are forgotten,
//! and a forgotten id is unreachable for every virtual key: fail closed) and
//! persisted in an append-only file beside the budget state, one JSON line
//! per id, written by one background task (never on a data-plane worker) and
//! replayed at start (a torn last line, or any line that does not parse, is
//! skipped: its object becomes unreachable, never reachable by the wrong
//! key). The file is compacted at start and whenever it holds more than
//! twice the table's cap in lines.
//!
//! Beside each batch-results object (an OpenAI batch's output file, an
//! Anthropic message batch) the table keeps how many of its results lines
//! are charged (see `results` and [`crate::batch`]); that mark lives and is
//! forgotten with the id, and is persisted in the same file.

mod results;
mod rules;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::error::ProxyError;
pub use rules::{answer_ids, records_answer, referenced_ids, stores, target, Target};

/// Most ids remembered; past it the oldest are forgotten.
pub const MAX_IDS: usize = 1_000_000;
/// Longest id recorded or looked up (bytes); provider ids are ~30.
pub const MAX_ID_LEN: usize = 256;
/// A line of the owners file longer than this is skipped.
const MAX_LINE: usize = 4096;

/// One line of the owners file: an id's owner, or a batch-results
/// object's mark.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    /// The key name.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    k: Option<Cow<'a, str>>,
    /// Results lines charged (the object is a batch's results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<u64>,
}

impl Line<'_> {
    /// The line as file bytes, with its newline.
    fn bytes(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(self.id.len() + 32);
        serde_json::to_writer(&mut out, self).ok()?;
        out.push(b'\n');
        Some(out)
    }
}

/// The owner table; cheap to share.
pub struct Owners {
    table: Arc<Mutex<Table>>,
    tx: Option<mpsc::UnboundedSender<Msg>>,
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Owners")
    }
}

/// Ids in insertion order, each with its owner.
#[derive(Default)]
struct Table {
    cap: usize,
    owner: HashMap<Arc<str>, Arc<str>>,
    order: VecDeque<Arc<str>>,
    /// Batch-results objects (owned ids only): lines charged.
    results: HashMap<Arc<str>, u64>,
    /// Key names, interned: they come from config, not from clients.
    names: HashSet<Arc<str>>,
}

impl Table {
    fn new(cap: usize) -> Self {
        Table {
            cap: cap.max(1),
            ..Table::default()
        }
    }

    /// Records `id` for `key` unless the id already has an owner; true when
    /// it was new.
    fn insert(&mut self, id: &str, key: &str) -> bool {
        if id.is_empty() || id.len() > MAX_ID_LEN || self.owner.contains_key(id) {
            return false;
        }
        while self.owner.len() >= self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.owner.remove(&old);
                    self.results.remove(&old);
                }
                None => break,
            }
        }
        let name = match self.names.get(key) {
            Some(n) => n.clone(),
            None => {
                let n: Arc<str> = key.into();
                self.names.insert(n.clone());
                n
            }
        };
        let id: Arc<str> = id.into();
        self.order.push_back(id.clone());
        self.owner.insert(id, name);
        true
    }

    /// Lines in a compacted file.
    fn file_lines(&self) -> usize {
        self.owner.len() + self.results.len()
    }

    /// Every live entry, oldest first, as file lines.
    fn lines(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.order.len() * 48 + self.results.len() * 32);
        for id in &self.order {
            if let Some(k) = self.owner.get(id) {
                let owner = Line {
                    id: Cow::Borrowed(id),
                    k: Some(Cow::Borrowed(k)),
                    b: None,
                };
                out.extend(owner.bytes().unwrap_or_default());
            }
            if let Some(&n) = self.results.get(id) {
                let mark = Line {
                    id: Cow::Borrowed(id),
                    k: None,
                    b: Some(n),
                };
                out.extend(mark.bytes().unwrap_or_default());
            }
        }
        out
    }
}

fn lock(m: &Mutex<Table>) -> MutexGuard<'_, Table> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

enum Msg {
    Line(Vec<u8>),
    /// Flush, sync and stop (shutdown).
    Close(oneshot::Sender<()>),
}

/// Records the first id a stream gives its caller (see
/// [`crate::stream::observe::Observer::with_ids`]).
#[derive(Debug, Clone)]
pub struct IdSink {
    pub owners: Arc<Owners>,
    pub key: Arc<str>,
}

/// The owners file beside the budget state file: `<stem>.owners.jsonl`.
pub fn file_beside(state_path: &Path) -> PathBuf {
    crate::config::beside_state(state_path, "owners.jsonl")
}

impl Owners {
    /// A table that is not persisted (tests).
    pub fn in_memory(cap: usize) -> Owners {
        Owners {
            table: Arc::new(Mutex::new(Table::new(cap))),
            tx: None,
        }
    }

    /// Replays `path` (a missing file is an empty table), compacts it, and
    /// starts the writer task. Needs a tokio runtime.
    pub fn open(path: &Path, cap: usize) -> std::io::Result<Owners> {
        let mut table = Table::new(cap);
        let lines = replay(path, &mut table)?;
        if lines > table.file_lines() {
            compact(path, &table.lines())?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let table = Arc::new(Mutex::new(table));
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            path: path.to_owned(),
            out: std::io::BufWriter::new(file),
            lines: lock(&table).file_lines(),
            table: table.clone(),
        };
        tokio::task::spawn_blocking(move || writer.run(rx));
        Ok(Owners {
            table,
            tx: Some(tx),
        })
    }

    /// Number of ids remembered.
    pub fn len(&self) -> usize {
        lock(&self.table).owner.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` was created through the key named `key`.
    pub fn owned_by(&self, id: &str, key: &str) -> bool {
        lock(&self.table).owner.get(id).is_some_and(|k| &**k == key)
    }

    /// Records that `key` created `id` (an id that already has an owner
    /// keeps it); queues the line for the file.
    pub fn record(&self, id: &str, key: &str) {
        if !lock(&self.table).insert(id, key) {
            return;
        }
        self.write(&Line {
            id: Cow::Borrowed(id),
            k: Some(Cow::Borrowed(key)),
            b: None,
        });
    }

    /// Queues a line for the file (a table in memory only: nothing).
    fn write(&self, line: &Line<'_>) {
        if let (Some(tx), Some(bytes)) = (&self.tx, line.bytes()) {
            // The writer only stops at shutdown, after the data plane.
            let _ = tx.send(Msg::Line(bytes));
        }
    }

    /// Refuses a virtual key's passthrough request that names an object it
    /// did not create: in its path (`404`) or in its body (`404`; a body
    /// that is neither JSON nor `multipart` is `400`), or a family root it
    /// would list (`403`).
    pub fn admit(
        &self,
        key: &str,
        path: &str,
        method: &http::Method,
        multipart: bool,
        body: &[u8],
    ) -> Result<(), ProxyError> {
        match target(path) {
            Target::Root(family) if method != http::Method::POST => {
                return Err(ProxyError::ListingNotAllowed { family });
            }
            Target::Object(id) if !self.owned_by(id, key) => {
                return Err(ProxyError::ObjectNotFound { id: id.to_owned() });
            }
            _ => {}
        }
        if multipart {
            // Form fields carry uploads, not references to objects.
            return Ok(());
        }
        self.check_refs(key, referenced_ids(body, false)?)
    }

    /// Refuses a sniffed LLM request body that references an object the key
    /// did not create (`previous_response_id`, a `file_id` part, ...).
    pub fn admit_body(&self, key: &str, body: &[u8]) -> Result<(), ProxyError> {
        self.check_refs(key, referenced_ids(body, true)?)
    }

    fn check_refs(&self, key: &str, ids: Vec<String>) -> Result<(), ProxyError> {
        match ids.into_iter().find(|id| !self.owned_by(id, key)) {
            Some(id) => Err(ProxyError::ObjectNotFound { id }),
            None => Ok(()),
        }
    }

    /// Writes out what is queued and stops the writer.
    pub async fn close(&self) {
        if let Some(tx) = &self.tx {
            let (done, wait) = oneshot::channel();
            if tx.send(Msg::Close(done)).is_ok() {
                let _ = wait.await;
            }
        }
    }
}

/// Reads `path` into `table`; returns the number of lines read. A torn last
/// line and unreadable lines are skipped (with a warning).
fn replay(path: &Path, table: &mut Table) -> std::io::Result<usize> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut r = std::io::BufReader::new(file);
    let mut buf = Vec::with_capacity(128);
    let (mut lines, mut skipped) = (0usize, 0usize);
    loop {
        buf.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        lines += 1;
        if buf.last() != Some(&b'\n') {
            if buf.len() <= MAX_LINE {
                // The end of the file, without a newline: a torn write.
                tracing::warn!(path = %path.display(), line = lines, "owners file: torn last line skipped");
                break;
            }
            // Too long: skip to the end of the line.
            skipped += 1;
            loop {
                buf.clear();
                let n = (&mut r).take(MAX_LINE as u64).read_until(b'\n', &mut buf)?;
                if n == 0 || buf.last() == Some(&b'\n') {
                    break;
                }
            }
            continue;
        }
        match serde_json::from_slice::<Line<'_>>(&buf[..buf.len() - 1]) {
            Ok(Line { id, k: Some(k), .. }) => {
                table.insert(&id, &k);
            }
            Ok(Line { id, b: Some(n), .. }) => table.raise_mark(&id, n),
            _ => skipped += 1,
        }
    }
    if skipped > 0 {
        tracing::warn!(path = %path.display(), skipped, "owners file: unreadable lines skipped (their objects are unreachable through virtual keys)");
    }
    Ok(lines)
}

/// Replaces the file with `contents` (a temporary file renamed over it).
fn compact(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

struct Writer {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    /// Lines in the file (approximately: duplicates after a compaction).
    lines: usize,
    table: Arc<Mutex<Table>>,
}

impl Writer {
    /// Appends queued lines, flushing whenever the queue runs empty; compacts
    /// the file when it holds more than twice the cap in lines.
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        while let Some(msg) = rx.blocking_recv() {
            let mut next = Some(msg);
            let mut close = None;
            while let Some(m) = next.take() {
                match m {
                    Msg::Line(l) => {
                        if let Err(e) = self.out.write_all(&l) {
                            tracing::error!(error = %e, "owners file write failed");
                        }
                        self.lines = self.lines.saturating_add(1);
                    }
                    Msg::Close(ack) => close = Some(ack),
                }
                next = rx.try_recv().ok();
            }
            if let Err(e) = self.out.flush() {
                tracing::error!(error = %e, "owners file flush failed");
            }
            let cap = lock(&self.table).cap;
            if self.lines > cap.saturating_mul(2) {
                self.compact();
            }
            if let Some(ack) = close {
                let _ = self.out.get_ref().sync_all();
                let _ = ack.send(());
                return;
            }
        }
    }

    fn compact(&mut self) {
        let (contents, n) = {
            let t = lock(&self.table);
            (t.lines(), t.file_lines())
        };
        let reopened = compact(&self.path, &contents).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
        });
        match reopened {
            Ok(f) => {
                self.out = std::io::BufWriter::new(f);
                self.lines = n;
            }
            Err(e) => tracing::error!(error = %e, "owners file compaction failed"),
        }
    }
}

#[cfg(test)]
mod tests;
