//! `GET /admin/usage`: the usage log, filtered by time and streamed.
//!
//! The file is read line by line on a blocking thread (never on the
//! data-plane workers, never whole into memory) and sent in chunks of about
//! 64 KiB through a channel of [`DEPTH`] chunks, so an export holds a few
//! hundred KiB whatever the log's size, and a slow client slows the reader
//! instead of growing a buffer. At most [`MAX_CONCURRENT`] exports run at
//! once; each returns at most `limit` records ([`DEFAULT_LIMIT`], at most
//! [`MAX_LIMIT`]).

use std::io::{BufRead, Read};

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore, SemaphorePermit};

use crate::body::{BoxError, ProxyBody};

/// Records per call when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 10_000;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 100_000;
/// Exports running at once; more get 503.
pub const MAX_CONCURRENT: usize = 2;
/// A usage line longer than this is skipped (records are ~1 KiB).
pub const MAX_RECORD: usize = 1024 * 1024;
/// An export whose client takes longer than this to accept the next chunk
/// is stopped (so a stalled client cannot hold a slot forever).
pub const CLIENT_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
const CHUNK: usize = 64 * 1024;
const DEPTH: usize = 4;

static RUNNING: Semaphore = Semaphore::const_new(MAX_CONCURRENT);

/// The CSV columns, in order.
pub const COLUMNS: [&str; 17] = [
    "ts",
    "request_id",
    "key",
    "user",
    "team",
    "feature",
    "endpoint",
    "model",
    "upstream_model",
    "provider",
    "status",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "end",
];

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Records with `ts >= from` (RFC 3339, UTC).
    pub from: String,
    /// Records with `ts <= to`.
    pub to: String,
    pub limit: usize,
    pub csv: bool,
}

impl Query {
    /// From the query parameters `from`/`since`, `to`/`until`, `limit`,
    /// `format`; an error names the bad parameter.
    pub fn parse(param: impl Fn(&str) -> Option<String>) -> Result<Query, String> {
        let limit = match param("limit") {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err(format!("limit must be 1..={MAX_LIMIT}, got {l:?}")),
            },
        };
        let csv = match param("format").as_deref() {
            None | Some("json") => false,
            Some("csv") => true,
            Some(f) => return Err(format!("format must be json or csv, got {f:?}")),
        };
        Ok(Query {
            from: param("from").or_else(|| param("since")).unwrap_or_default(),
            to: param("to")
                .or_else(|| param("until"))
                .unwrap_or_else(|| "9999".into()),
            limit,
            csv,
        })
    }
}

/// A slot to run one export, or `None` when [`MAX_CONCURRENT`] are running.
pub fn permit() -> Option<SemaphorePermit<'static>> {
    RUNNING.try_acquire().ok()
}

/// Streams the records of `file` that match `q`, produced on a blocking
/// thread that holds `permit` until it is done.
pub fn stream(file: std::fs::File, q: Query, permit: SemaphorePermit<'static>) -> ProxyBody {
    let (tx, rx) = mpsc::channel(DEPTH);
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let send = |chunk: Result<Bytes, BoxError>| {
            rt.block_on(tokio::time::timeout(CLIENT_IDLE, tx.send(chunk)))
                .map_err(|_| std::io::Error::other("client stopped reading"))?
                .map_err(|_| std::io::Error::other("client gone"))
        };
        if let Err(e) = produce(file, &q, &send) {
            tracing::warn!(error = %e, "usage export stopped");
            let _ = send(Err(BoxError::from(e)));
        }
    });
    ProxyBody::Channel(rx)
}

fn produce(
    file: std::fs::File,
    q: &Query,
    send: &impl Fn(Result<Bytes, BoxError>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(CHUNK + 4096);
    if q.csv {
        out.extend_from_slice(COLUMNS.join(",").as_bytes());
        out.push(b'\n');
    } else {
        out.extend_from_slice(b"{\"records\":[");
    }
    let mut r = std::io::BufReader::with_capacity(CHUNK, file);
    let mut line = Vec::with_capacity(2048);
    let mut rows = 0usize;
    let mut truncated = false;
    loop {
        line.clear();
        let n = (&mut r)
            .take(MAX_RECORD as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') && line.len() > MAX_RECORD {
            skip_line(&mut r)?;
            continue;
        }
        let Ok(rec) = serde_json::from_slice::<serde_json::Value>(&line) else {
            continue;
        };
        // RFC 3339 UTC timestamps of one format compare as strings.
        let ts = rec["ts"].as_str().unwrap_or("");
        if ts < q.from.as_str() || ts > q.to.as_str() {
            continue;
        }
        if rows == q.limit {
            truncated = true;
            break;
        }
        if q.csv {
            csv_row(&rec, &mut out);
        } else {
            if rows > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &rec).map_err(std::io::Error::other)?;
        }
        rows += 1;
        if out.len() >= CHUNK {
            let chunk = Bytes::from(std::mem::replace(
                &mut out,
                Vec::with_capacity(CHUNK + 4096),
            ));
            send(Ok(chunk))?;
        }
    }
    if !q.csv {
        out.extend_from_slice(
            format!("],\"limit\":{},\"truncated\":{truncated}}}", q.limit).as_bytes(),
        );
    }
    send(Ok(Bytes::from(out)))?;
    Ok(())
}

/// Reads to the end of an overlong line.
fn skip_line(r: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
}

fn csv_row(rec: &serde_json::Value, out: &mut Vec<u8>) {
    for (i, c) in COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match &rec[*c] {
            serde_json::Value::Null => {}
            serde_json::Value::String(s) => out.extend_from_slice(csv_field(s).as_bytes()),
            other => out.extend_from_slice(other.to_string().as_bytes()),
        }
    }
    out.push(b'\n');
}

/// One CSV cell. A cell a spreadsheet would read as a formula (starting
/// with `=`, `+`, `-`, `@`, tab or CR) gets a leading `'`, so client-chosen
/// strings (user, feature, model) cannot run formulas when the export is
/// opened; then it is quoted if it holds `,`, `"`, CR or LF.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised() {
        assert_eq!(
            csv_field("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-2+3"), "'-2+3");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tx"), "'\tx");
        assert_eq!(csv_field("\rx"), "\"'\rx\"");
        assert_eq!(csv_field("alice"), "alice");
        assert_eq!(csv_field("a=b"), "a=b");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field(""), "");
    }

    #[test]
    fn numbers_are_not_strings() {
        let mut out = Vec::new();
        csv_row(
            &serde_json::json!({"ts": "t", "user": "=1+1", "status": 200, "cost_usd": -0.5}),
            &mut out,
        );
        let row = String::from_utf8(out).expect("utf8");
        assert!(row.starts_with("t,,,'=1+1,"), "{row}");
        assert!(row.contains(",200,"), "{row}");
    }

    #[test]
    fn query_bounds() {
        let q = |pairs: &'static [(&'static str, &'static str)]| {
            Query::parse(move |k| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        assert_eq!(q(&[]).expect("ok").limit, DEFAULT_LIMIT);
        assert_eq!(q(&[("limit", "5")]).expect("ok").limit, 5);
        assert!(q(&[("limit", "0")]).is_err());
        assert!(q(&[("limit", "100001")]).is_err());
        assert!(q(&[("format", "xml")]).is_err());
        let s = q(&[("since", "2026-01-01"), ("until", "2026-02-01")]).expect("ok");
        assert_eq!(
            (s.from.as_str(), s.to.as_str()),
            ("2026-01-01", "2026-02-01")
        );
    }

    #[tokio::test]
    async fn streams_matching_records_up_to_the_limit() {
        use http_body_util::BodyExt;
        let dir = std::env::temp_dir().join(format!("sluice-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("usage.jsonl");
        let mut text = String::new();
        for i in 0..5 {
            text.push_str(&format!(
                "{{\"ts\":\"2026-11-2{i}T00:00:00Z\",\"user\":\"u{i}\"}}\n"
            ));
            text.push_str("not json\n");
        }
        std::fs::write(&path, text).expect("write");
        let body = |q: Query| {
            let file = std::fs::File::open(&path).expect("open");
            stream(file, q, permit().expect("permit"))
        };
        let q = Query {
            from: "2026-11-21".into(),
            to: "9999".into(),
            limit: 2,
            csv: false,
        };
        let b = body(q.clone()).collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(v["records"].as_array().expect("records").len(), 2);
        assert_eq!(v["records"][0]["user"], "u1");
        assert_eq!(v["truncated"], true);
        let b = body(Query {
            limit: 10,
            csv: true,
            ..q
        })
        .collect()
        .await
        .expect("body")
        .to_bytes();
        assert_eq!(String::from_utf8_lossy(&b).lines().count(), 5);
        let _ = std::fs::remove_dir_all(dir);
    }
}
