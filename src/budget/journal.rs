//! The embedded state file: an append-only journal of settled spend, one
//! JSON line per charge, written by one task with group commit (all lines
//! queued since the last write go out together, then one fsync). Lines
//! queued with a follow-up (the request's usage record) release it only
//! after the fsync, so what the usage log shows is durable.
//!
//! Reading is strict: a torn last line (no trailing newline: power loss or
//! a full disk mid-write) is skipped whatever its bytes, but any other line
//! that does not parse, or whose spend would overflow its bucket, stops the
//! start with the file and line number. `sluice state repair` drops such
//! lines explicitly after keeping a backup (see [`repair`]).

mod writer;

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::pricing::Nanos;
use crate::usage_log::UsageLog;
use crate::vocab::BucketName;
use crate::window::WindowKey;
pub use writer::Health;

/// A journal line longer than this is bad (the writer's lines are ~100 bytes).
pub const MAX_LINE: usize = 64 * 1024;

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

/// A charge on its way to the writer, which writes it as a [`Line`]: the
/// bucket's name is shared, not copied, on the request's path.
#[derive(Debug, Clone)]
pub struct Charge {
    /// `budget|scope`, the budget's name its first `name_len` bytes.
    pub bucket: BucketName,
    pub name_len: usize,
    pub window: WindowKey,
    pub n: Nanos,
}

/// What the writer appends: a line as it is, or a charge.
#[derive(Debug, Clone)]
pub enum Entry {
    Line(Line),
    Charge(Charge),
}

impl From<Line> for Entry {
    fn from(l: Line) -> Entry {
        Entry::Line(l)
    }
}

impl From<Charge> for Entry {
    fn from(c: Charge) -> Entry {
        Entry::Charge(c)
    }
}

/// A charge's line, borrowed (the same JSON as its [`Line`]).
#[derive(Serialize)]
struct ChargeLine<'a> {
    b: &'a str,
    s: &'a str,
    w: &'a str,
    n: Nanos,
}

impl Entry {
    /// The journal line, without its newline.
    fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            Entry::Line(l) => serde_json::to_vec(l),
            Entry::Charge(c) => {
                let bucket = c.bucket.as_str();
                serde_json::to_vec(&ChargeLine {
                    b: bucket.get(..c.name_len).unwrap_or(bucket),
                    s: bucket
                        .get(c.name_len..)
                        .map_or("", |s| s.strip_prefix('|').unwrap_or(s)),
                    w: c.window.as_str(),
                    n: c.n,
                })
            }
        }
    }
}

/// Spend per (budget, scope, window).
pub type Totals = HashMap<(String, String, String), Nanos>;

enum Msg {
    Append {
        line: Entry,
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
    health: Arc<Health>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Journal")
    }
}

/// One raw line of a journal file, as read.
enum Raw<'a> {
    /// A complete line (newline stripped), 1-based line number.
    Complete(usize, &'a [u8]),
    /// A complete line longer than [`MAX_LINE`].
    TooLong(usize),
    /// The last line, without its newline: a torn write.
    Torn(usize),
}

/// Reads `path` line by line as bytes (never as text: a torn line may end
/// inside a multi-byte character) without holding the file in memory.
/// `NotFound` reads as an empty journal.
fn for_each_line(
    path: &Path,
    mut f: impl FnMut(Raw<'_>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut r = std::io::BufReader::new(file);
    let mut buf = Vec::with_capacity(256);
    let mut no = 0;
    loop {
        buf.clear();
        no += 1;
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
            f(Raw::Complete(no, &buf))?;
            continue;
        }
        if buf.len() <= MAX_LINE {
            // No newline and under the cap: this was the end of the file.
            return f(Raw::Torn(no));
        }
        // Over the cap: skip to the end of this line.
        let mut complete = false;
        loop {
            buf.clear();
            let n = (&mut r).take(MAX_LINE as u64).read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            if buf.last() == Some(&b'\n') {
                complete = true;
                break;
            }
        }
        if complete {
            f(Raw::TooLong(no))?;
        } else {
            return f(Raw::Torn(no));
        }
    }
}

/// Parses one complete line and adds it to `totals` (checked).
fn apply(totals: &mut Totals, bytes: &[u8]) -> Result<(), String> {
    let l: Line = serde_json::from_slice(bytes).map_err(|e| format!("not a journal line ({e})"))?;
    if l.reset && l.n.is_some() {
        return Err("a reset line carries spend".into());
    }
    let slot = totals.entry((l.b, l.s, l.w)).or_insert(0);
    if l.reset {
        *slot = 0;
    }
    *slot = slot
        .checked_add(l.n.unwrap_or(0))
        .ok_or_else(|| "spend overflows its bucket (more than u64 nano-dollars)".to_owned())?;
    Ok(())
}

fn corrupt(path: &Path, no: usize, why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "{}: line {no}: {why}; Sluice will not guess what was spent: \
             run `sluice state repair --config <your config>` to drop the bad lines (a backup is kept)",
            path.display()
        ),
    )
}

/// Reads a journal: the spend per (budget, scope, window), resets applied.
/// A torn last line is skipped; any other bad line is an `InvalidData`
/// error naming the file and line.
pub fn replay(path: &Path) -> std::io::Result<Totals> {
    let mut totals = Totals::new();
    for_each_line(path, |raw| match raw {
        Raw::Complete(no, bytes) => {
            apply(&mut totals, bytes).map_err(|why| corrupt(path, no, &why))
        }
        Raw::TooLong(no) => Err(corrupt(
            path,
            no,
            &format!("line longer than {MAX_LINE} bytes"),
        )),
        Raw::Torn(no) => {
            tracing::warn!(path = %path.display(), line = no, "budget journal: torn last line skipped");
            Ok(())
        }
    })?;
    Ok(totals)
}

/// What [`repair`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Line numbers dropped (bad lines, the torn last line included).
    pub dropped: Vec<usize>,
    /// Lines kept.
    pub kept: usize,
    /// The copy of the journal as it was (none when nothing was dropped).
    pub backup: Option<PathBuf>,
}

/// Drops every bad line of the journal at `path` (lines that do not parse,
/// are too long, would overflow their bucket, or a torn last line), after
/// copying the file to `<path>.bak.<unix seconds>`. Run it while Sluice is
/// stopped.
pub fn repair(path: &Path, now: u64) -> std::io::Result<Repaired> {
    let mut out = Repaired::default();
    let mut totals = Totals::new();
    let mut good: Vec<u8> = Vec::new();
    // A first pass only finds the bad lines, so a clean journal is left alone.
    for_each_line(path, |raw| {
        match raw {
            Raw::Complete(no, bytes) => {
                if apply(&mut totals, bytes).is_ok() {
                    out.kept += 1;
                } else {
                    out.dropped.push(no);
                }
            }
            Raw::TooLong(no) | Raw::Torn(no) => out.dropped.push(no),
        }
        Ok(())
    })?;
    if out.dropped.is_empty() {
        return Ok(out);
    }
    let mut backup = path.as_os_str().to_owned();
    backup.push(format!(".bak.{now}"));
    let backup = PathBuf::from(backup);
    std::fs::copy(path, &backup)?;
    let tmp = tmp_path(path);
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let mut totals = Totals::new();
        for_each_line(path, |raw| {
            if let Raw::Complete(_, bytes) = raw {
                if apply(&mut totals, bytes).is_ok() {
                    good.clear();
                    good.extend_from_slice(bytes);
                    good.push(b'\n');
                    f.write_all(&good)?;
                }
            }
            Ok(())
        })?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    out.backup = Some(backup);
    Ok(out)
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
        Self {
            tx: None,
            health: Arc::default(),
        }
    }

    /// Opens `path` for appending and starts the writer task.
    pub fn start(path: &Path, usage: UsageLog) -> std::io::Result<Journal> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let good_len = file.metadata()?.len();
        let (tx, rx) = mpsc::unbounded_channel();
        let health = Arc::new(Health::default());
        crate::metrics::journal_degraded(false);
        let w = writer::Writer::new(file, good_len, health.clone(), move |u| usage.write_raw(u));
        tokio::task::spawn_blocking(move || w.run(rx));
        Ok(Journal {
            tx: Some(tx),
            health,
        })
    }

    /// Why the journal cannot persist charges right now (`None`: healthy).
    pub fn degraded(&self) -> Option<String> {
        self.health.degraded()
    }

    /// Queues a line; `then` (a usage record) is written after it is durable.
    /// Without a journal, `then` goes straight to the usage log.
    pub fn append(&self, line: impl Into<Entry>, then: Option<Vec<u8>>, usage: &UsageLog) {
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::error::SendError(Msg::Append { then: Some(_), .. })) =
                    tx.send(Msg::Append {
                        line: line.into(),
                        then,
                    })
                {
                    // The writer has stopped (shutdown): the charge cannot be
                    // made durable, so its record is not written either.
                    tracing::error!(
                        "budget journal closed: a charge and its usage record were dropped"
                    );
                }
            }
            None => {
                if let Some(u) = then {
                    usage.write_raw(u);
                }
            }
        }
    }

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

#[cfg(test)]
mod tests;
