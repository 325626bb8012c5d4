//! Putting a [`Reply`] on the wire: the response body type, headers, gzip, SSE framing.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::faults::{self, Opts, StreamPlan};
use crate::server::Shared;

/// One request as the API modules see it.
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) seq: usize,
    pub(crate) method: String,
    /// Path without query string and without trailing slash.
    pub(crate) path: String,
    pub(crate) path_and_query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) opts: Opts,
    /// Errors and request ids in Anthropic's shape.
    pub(crate) anthropic: bool,
    /// Errors and request ids in AWS Bedrock's shape (over `anthropic`).
    pub(crate) bedrock: bool,
}

/// What an endpoint answers, before it is put on the wire.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) kind: ReplyKind,
    pub(crate) headers: Vec<(&'static str, String)>,
}

pub(crate) enum ReplyKind {
    Json(Value),
    Raw(Bytes),
    Sse(Vec<Bytes>),
    /// Binary frames of an AWS event stream (Bedrock), sent like SSE events.
    EventStream(Vec<Bytes>),
}

impl Reply {
    pub(crate) fn json(body: Value) -> Self {
        Reply {
            status: StatusCode::OK,
            kind: ReplyKind::Json(body),
            headers: Vec::new(),
        }
    }

    pub(crate) fn sse(events: Vec<Bytes>) -> Self {
        Reply {
            status: StatusCode::OK,
            kind: ReplyKind::Sse(events),
            headers: Vec::new(),
        }
    }
}

impl Ctx {
    fn request_id(&self) -> String {
        format!("req_mock_{}", self.seq)
    }

    pub(crate) fn respond(&self, reply: Reply) -> Response<MockBody> {
        let Reply {
            status,
            kind,
            headers,
        } = reply;
        let mut response = match kind {
            ReplyKind::Json(value) => self.bytes_response(status, Bytes::from(value.to_string())),
            ReplyKind::Raw(bytes) => self.bytes_response(status, bytes),
            ReplyKind::Sse(events) => self.sse_response(events, "text/event-stream"),
            ReplyKind::EventStream(frames) => {
                self.sse_response(frames, "application/vnd.amazon.eventstream")
            }
        };
        *response.status_mut() = status;
        let id_header = if self.bedrock {
            "x-amzn-requestid"
        } else if self.anthropic {
            "request-id"
        } else {
            "x-request-id"
        };
        set_header(&mut response, id_header, &self.request_id());
        for (name, value) in headers {
            set_header(&mut response, name, &value);
        }
        response
    }

    fn bytes_response(&self, status: StatusCode, bytes: Bytes) -> Response<MockBody> {
        let (bytes, gzipped) = if self.opts.gzip {
            match gzip(&bytes) {
                Ok(compressed) => (Bytes::from(compressed), true),
                Err(_) => (bytes, false),
            }
        } else {
            (bytes, false)
        };
        let body = match (self.opts.abort_after, self.opts.stall_after_bytes) {
            (None, Some(n)) if status.is_success() => {
                faults::stalled_body(Arc::clone(&self.shared), &bytes, n)
            }
            (Some(_), _) if status.is_success() => {
                faults::aborted_body(Arc::clone(&self.shared), &bytes)
            }
            _ => MockBody::full(bytes),
        };
        let mut response = Response::new(body);
        set_header(&mut response, "content-type", "application/json");
        if gzipped {
            set_header(&mut response, "content-encoding", "gzip");
        }
        response
    }

    fn sse_response(&self, events: Vec<Bytes>, content_type: &str) -> Response<MockBody> {
        let (tx, body) = MockBody::channel(Arc::clone(&self.shared));
        let plan = StreamPlan {
            delay: self.opts.delay,
            abort_after: self.opts.abort_after,
            fragment: self.opts.fragment,
            endless_event_kb: self.opts.endless_event_kb,
        };
        tokio::spawn(faults::produce_stream(tx, events, plan));
        let mut response = Response::new(body);
        set_header(&mut response, "content-type", content_type);
        set_header(&mut response, "cache-control", "no-cache");
        response
    }
}

fn set_header(response: &mut Response<MockBody>, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data)?;
    encoder.finish()
}

/// Response body: either a complete buffer or a channel fed by a producer task, one frame per
/// message so that every SSE event (or fragment) is written and flushed on its own.
pub(crate) struct MockBody {
    inner: BodyInner,
}

enum BodyInner {
    Full(Option<Bytes>),
    Channel {
        rx: mpsc::Receiver<Result<Bytes, io::Error>>,
        finished: bool,
        shared: Arc<Shared>,
    },
}

impl MockBody {
    pub(crate) fn full(bytes: Bytes) -> Self {
        MockBody {
            inner: BodyInner::Full(Some(bytes)),
        }
    }

    pub(crate) fn channel(shared: Arc<Shared>) -> (mpsc::Sender<Result<Bytes, io::Error>>, Self) {
        let (tx, rx) = mpsc::channel(1);
        let body = MockBody {
            inner: BodyInner::Channel {
                rx,
                finished: false,
                shared,
            },
        };
        (tx, body)
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.get_mut().inner {
            BodyInner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            BodyInner::Channel { rx, finished, .. } => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Poll::Ready(Some(Err(err))) => {
                    // Deliberate abort: not a client cancellation.
                    *finished = true;
                    Poll::Ready(Some(Err(err)))
                }
                Poll::Ready(None) => {
                    *finished = true;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.inner, BodyInner::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            BodyInner::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            BodyInner::Full(None) => SizeHint::with_exact(0),
            BodyInner::Channel { .. } => SizeHint::default(),
        }
    }
}

impl Drop for MockBody {
    fn drop(&mut self) {
        if let BodyInner::Channel {
            finished: false,
            shared,
            ..
        } = &self.inner
        {
            shared.cancelled_streams.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// One OpenAI-style SSE event (`data:` only).
pub(crate) fn sse_data(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// One Anthropic/Responses-style SSE event, named by its `type`.
pub(crate) fn sse_event(value: &Value) -> Bytes {
    let name = value
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}
