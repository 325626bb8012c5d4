//! Injected misbehaviour: queued [`Fault`]s, the `x-mock-*` request headers, and the ways a
//! body goes wrong on the wire (aborted, stalled, fragmented, endless, paced).

use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderMap;
use tokio::sync::mpsc;

use crate::error::{default_error_message, error_reply, status_code};
use crate::reply::{Ctx, MockBody, Reply, ReplyKind};
use crate::server::Shared;

/// Pause between the frames of one fragmented event, so each frame is its own write.
const FRAGMENT_PAUSE: Duration = Duration::from_millis(1);

/// A queued misbehaviour, consumed by exactly one request (FIFO) before header-driven behaviour.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status. `body` empty: provider-shaped error with a default message;
    /// `body` starting with `{`: sent verbatim as JSON; otherwise: used as the error message.
    /// `retry_after`: value of the `retry-after` header (none when `None`).
    Status {
        status: u16,
        body: String,
        retry_after: Option<u64>,
    },
    /// Wait this long before sending the response headers, then behave normally.
    Delay(Duration),
    /// Stream: abort the connection after N SSE events (non-stream: after half the body).
    AbortAfterChunks(usize),
    /// Never answer (the connection stays open until the client or the mock goes away).
    Hang,
}

/// Behaviour switches read from the `x-mock-*` request headers.
#[derive(Debug, Default)]
pub(crate) struct Opts {
    pub(crate) words: Option<usize>,
    pub(crate) chunk_chars: Option<usize>,
    pub(crate) delay: Duration,
    pub(crate) first_byte_delay: Option<Duration>,
    pub(crate) status: Option<u16>,
    pub(crate) retry_after: Option<String>,
    pub(crate) abort_after: Option<usize>,
    pub(crate) fragment: bool,
    pub(crate) gzip: bool,
    pub(crate) echo_body: bool,
    pub(crate) large_kb: Option<usize>,
    pub(crate) endless_event_kb: Option<usize>,
    pub(crate) stall_after_bytes: Option<usize>,
    /// Tool calls in one answer that calls tools (at least 1).
    pub(crate) tool_calls: usize,
}

impl Opts {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let ms = |name| header_num::<u64>(headers, name).map(Duration::from_millis);
        Opts {
            words: header_num(headers, "x-mock-words"),
            chunk_chars: header_num(headers, "x-mock-chunk-chars").filter(|n| *n > 0),
            delay: ms("x-mock-delay-ms").unwrap_or(Duration::ZERO),
            first_byte_delay: ms("x-mock-first-byte-delay-ms"),
            status: header_num(headers, "x-mock-status"),
            retry_after: header_str(headers, "x-mock-retry-after").map(str::to_owned),
            abort_after: header_num(headers, "x-mock-abort-after"),
            fragment: header_flag(headers, "x-mock-fragment"),
            gzip: header_flag(headers, "x-mock-gzip") && accepts_gzip(headers),
            echo_body: header_flag(headers, "x-mock-echo-body"),
            large_kb: header_num(headers, "x-mock-large-response-kb"),
            endless_event_kb: header_num(headers, "x-mock-endless-event-kb"),
            stall_after_bytes: header_num(headers, "x-mock-stall-after-bytes"),
            tool_calls: header_num(headers, "x-mock-tool-calls")
                .unwrap_or(1)
                .clamp(1, 64),
        }
    }
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn header_num<T: FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    header_str(headers, name)?.parse().ok()
}

fn header_flag(headers: &HeaderMap, name: &str) -> bool {
    matches!(header_str(headers, name), Some(v)
        if v == "1" || v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("yes"))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all("accept-encoding")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// What happens before routing, in order: a queued [`Fault`], `x-mock-first-byte-delay-ms`,
/// `x-mock-status`, the bad-key check. `Some` is the whole answer; `None` lets the request
/// be routed (possibly with `opts.abort_after` set by a queued fault).
pub(crate) async fn injected(ctx: &mut Ctx) -> Option<Reply> {
    match ctx.shared.pop_fault() {
        Some(Fault::Status {
            status,
            body,
            retry_after,
        }) => {
            let mut reply = if body.trim_start().starts_with('{') {
                Reply {
                    status: status_code(status),
                    kind: ReplyKind::Raw(Bytes::from(body)),
                    headers: Vec::new(),
                }
            } else if body.is_empty() {
                error_reply(ctx, status, &default_error_message(status))
            } else {
                error_reply(ctx, status, &body)
            };
            if let Some(secs) = retry_after {
                reply.headers.push(("retry-after", secs.to_string()));
            }
            return Some(reply);
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::AbortAfterChunks(n)) => ctx.opts.abort_after = Some(n),
        Some(Fault::Hang) => std::future::pending::<()>().await,
        None => {}
    }

    if let Some(delay) = ctx.opts.first_byte_delay {
        tokio::time::sleep(delay).await;
    }

    if let Some(status) = ctx.opts.status {
        let mut reply = error_reply(ctx, status, &default_error_message(status));
        match &ctx.opts.retry_after {
            Some(value) => reply.headers.push(("retry-after", value.clone())),
            None if status == 429 => reply.headers.push(("retry-after", "1".to_owned())),
            None => {}
        }
        return Some(reply);
    }

    let bad_bearer = header_str(&ctx.headers, "authorization") == Some("Bearer bad-key");
    let bad_api_key = header_str(&ctx.headers, "x-api-key") == Some("bad-key");
    if bad_bearer || bad_api_key {
        let message = if ctx.anthropic {
            "invalid x-api-key".to_owned()
        } else {
            "Incorrect API key provided: bad-key.".to_owned()
        };
        return Some(error_reply(ctx, 401, &message));
    }

    None
}

/// A non-stream 2xx body that sends its first `n` bytes, then nothing until the client goes
/// away (`x-mock-stall-after-bytes`).
pub(crate) fn stalled_body(shared: Arc<Shared>, bytes: &Bytes, n: usize) -> MockBody {
    let (tx, body) = MockBody::channel(shared);
    let head = bytes.slice(..n.min(bytes.len()));
    tokio::spawn(async move {
        if tx.send(Ok(head)).await.is_ok() {
            tx.closed().await;
        }
    });
    body
}

/// A non-stream 2xx body cut off after half its bytes (`x-mock-abort-after`,
/// [`Fault::AbortAfterChunks`]).
pub(crate) fn aborted_body(shared: Arc<Shared>, bytes: &Bytes) -> MockBody {
    let (tx, body) = MockBody::channel(shared);
    let head = bytes.slice(..bytes.len() / 2);
    tokio::spawn(async move {
        if tx.send(Ok(head)).await.is_ok() {
            let _ = tx.send(Err(abort_error())).await;
        }
    });
    body
}

fn abort_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "mock provider: deliberate abort",
    )
}

/// How a stream misbehaves (from the `x-mock-*` headers and queued faults).
pub(crate) struct StreamPlan {
    pub(crate) delay: Duration,
    pub(crate) abort_after: Option<usize>,
    pub(crate) fragment: bool,
    pub(crate) endless_event_kb: Option<usize>,
}

type FrameSender = mpsc::Sender<Result<Bytes, io::Error>>;

/// Feeds the events into the body channel. Stops quietly when the client goes away (the body
/// counts that as a cancelled stream when it is dropped unfinished).
pub(crate) async fn produce_stream(tx: FrameSender, events: Vec<Bytes>, plan: StreamPlan) {
    // In fragment mode the final `\n` of each event is held back and sent at the start of the
    // next frame, so one frame ends between the two newlines of the event terminator.
    let mut carry: Option<Bytes> = None;
    for (index, event) in events.into_iter().enumerate() {
        if let (1, Some(kb)) = (index, plan.endless_event_kb) {
            endless_event(&tx, kb).await;
            return;
        }
        if plan.abort_after == Some(index) {
            let _ = tx.send(Err(abort_error())).await;
            return;
        }
        if index > 0 && !plan.delay.is_zero() && !pause(&tx, plan.delay).await {
            return;
        }
        if plan.fragment {
            let mut buf = Vec::with_capacity(event.len() + 1);
            if let Some(carried) = carry.take() {
                buf.extend_from_slice(&carried);
            }
            buf.extend_from_slice(&event);
            if buf.ends_with(b"\n\n") {
                buf.pop();
                carry = Some(Bytes::from_static(b"\n"));
            }
            let buf = Bytes::from(buf);
            let mut start = 0;
            for cut in fragment_cuts(&buf).into_iter().chain([buf.len()]) {
                if cut <= start {
                    continue;
                }
                if start > 0 && !pause(&tx, FRAGMENT_PAUSE).await {
                    return;
                }
                if tx.send(Ok(buf.slice(start..cut))).await.is_err() {
                    return;
                }
                start = cut;
            }
        } else if tx.send(Ok(event)).await.is_err() {
            return;
        }
    }
    if plan.abort_after.is_some() {
        // Asked to abort after at least as many events as there are: abort before the end.
        let _ = tx.send(Err(abort_error())).await;
        return;
    }
    if let Some(carried) = carry {
        if !pause(&tx, FRAGMENT_PAUSE).await {
            return;
        }
        let _ = tx.send(Ok(carried)).await;
    }
}

/// One `data:` line of `kb` KiB that never ends, in 16 KiB frames; then
/// silence until the client goes away.
async fn endless_event(tx: &FrameSender, kb: usize) {
    if tx.send(Ok(Bytes::from_static(b"data: "))).await.is_err() {
        return;
    }
    let piece = Bytes::from(vec![b'x'; 16 * 1024]);
    let mut left = kb * 1024;
    while left > 0 {
        let n = left.min(piece.len());
        if tx.send(Ok(piece.slice(..n))).await.is_err() {
            return;
        }
        left -= n;
    }
    tx.closed().await;
}

/// Sleeps, returning false early if the body was dropped meanwhile.
async fn pause(tx: &FrameSender, duration: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => true,
        _ = tx.closed() => false,
    }
}

/// Awkward split points of one event: inside the `data:`/`event:` prefix, inside the first
/// and the last multi-byte UTF-8 character, in the middle and near the end.
fn fragment_cuts(buf: &[u8]) -> Vec<usize> {
    let len = buf.len();
    let mut cuts = vec![1, 3, len / 2, len.saturating_sub(2)];
    if let Some(lead) = buf.iter().position(|b| *b >= 0xC0) {
        cuts.push(lead + 1);
    }
    if let Some(lead) = buf.iter().rposition(|b| *b >= 0xC0) {
        cuts.push(lead + 1);
    }
    cuts.retain(|cut| *cut > 0 && *cut < len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}
