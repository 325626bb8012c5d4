//! The response body type, and the tap that streams an upstream body to the
//! client frame by frame while observing it.
//!
//! The tap never buffers: each upstream frame is handed on as soon as it is
//! polled (in rewrite mode, as soon as the SSE event it completes is whole).
//! It finishes the request's record exactly once: at end of stream, on an
//! upstream error or timeout, or in `Drop` when the client goes away.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::cache::Capture;
use crate::record::{RequestRecord, StreamEnd};
use crate::stream::observe::Observer;
use crate::stream::translate::SseTranslator;
use crate::upstream::bedrock::EventStreamToSse;
use crate::upstream::pool::Body as UpstreamBody;

mod fault;
mod gather;

pub use fault::FaultyBody;
pub use gather::Gather;

/// Marks a response the server must not send: it drops the connection
/// instead (a chaos fault's reset before the response head).
#[derive(Debug, Clone, Copy)]
pub struct ResetConnection;

/// Errors a response body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response Sluice sends.
pub enum ProxyBody {
    /// A complete body (errors, admin answers, cache hits).
    Full(Option<Bytes>),
    /// An upstream body streamed through a tap (a stream's bursts
    /// gathered into one write each).
    Tap(Box<Gather<TapBody>>),
    /// Frames sent one by one (a cached answer replayed as SSE).
    Frames(std::collections::VecDeque<Bytes>),
    /// Chunks produced off the async workers (the admin usage export),
    /// through a bounded channel: the producer waits while the client is slow.
    Channel(tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>),
    /// A streamed answer with a chaos fault applied.
    Faulty(Box<FaultyBody>),
}

impl ProxyBody {
    /// An upstream body through its tap; a stream's bursts are gathered.
    pub fn tap(inner: UpstreamBody, cfg: TapConfig, record: RequestRecord) -> Self {
        let stream = cfg.observer.is_stream();
        ProxyBody::Tap(Box::new(Gather::new(
            TapBody::new(inner, cfg, record),
            stream,
        )))
    }

    pub fn full(b: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(b.into()))
    }

    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Tap(t) => Pin::new(t.as_mut()).poll_frame(cx),
            ProxyBody::Frames(f) => Poll::Ready(f.pop_front().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Channel(rx) => rx.poll_recv(cx).map(|b| b.map(|b| b.map(Frame::data))),
            ProxyBody::Faulty(f) => Pin::new(f.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            // Not just `done`: a last frame may still be held in `tail`.
            ProxyBody::Tap(t) => t.is_end_stream(),
            ProxyBody::Frames(f) => f.is_empty(),
            ProxyBody::Channel(_) => false,
            ProxyBody::Faulty(f) => f.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Tap(t) => t.size_hint(),
            ProxyBody::Frames(f) => SizeHint::with_exact(f.iter().map(|b| b.len() as u64).sum()),
            ProxyBody::Channel(_) | ProxyBody::Faulty(_) => SizeHint::default(),
        }
    }
}

/// Streams an upstream body while observing it.
pub struct TapBody {
    inner: UpstreamBody,
    observer: Observer,
    record: Option<RequestRecord>,
    /// The size of the upstream body is the size of this body (no rewrite).
    passthrough_size: bool,
    idle: Duration,
    last_frame: Instant,
    idle_timer: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    /// The waker both timers hold, once polled: a stream goes pending a few
    /// times an event, and polling a timer again with the waker it already
    /// has only re-registers it (~120 instructions each).
    armed: Option<Waker>,
    bytes: u64,
    /// The upstream body has ended (or failed) and the record is finished.
    done: bool,
    /// A last frame to send before ending (bytes held back by a rewrite).
    tail: Option<Bytes>,
    capture: Option<Capture>,
    /// The provider speaks the other API: its events, observed as they
    /// come, go to the client translated (an incomplete event is held).
    translator: Option<SseTranslator>,
    /// AWS Bedrock's binary event stream, decoded into the Anthropic SSE it
    /// carries before anything else (observer, capture, translator) sees it.
    decoder: Option<EventStreamToSse>,
}

/// How the tap should treat an upstream body.
pub struct TapConfig {
    pub observer: Observer,
    pub idle: Duration,
    /// When the whole request must be over.
    pub deadline: tokio::time::Instant,
    /// Tees the stream into the response cache.
    pub capture: Option<Capture>,
    /// Translates a stream from the other API's events into the client's.
    pub translator: Option<SseTranslator>,
    /// Decodes a Bedrock event stream into Anthropic SSE (first, so a
    /// translator chained after it sees Anthropic events).
    pub decoder: Option<EventStreamToSse>,
}

impl TapBody {
    pub fn new(inner: UpstreamBody, cfg: TapConfig, record: RequestRecord) -> Self {
        let now = Instant::now();
        Self {
            inner,
            passthrough_size: !cfg.observer.rewrites()
                && cfg.translator.is_none()
                && cfg.decoder.is_none(),
            observer: cfg.observer,
            record: Some(record),
            idle: cfg.idle,
            last_frame: now,
            idle_timer: Box::pin(tokio::time::sleep(cfg.idle)),
            deadline: Box::pin(tokio::time::sleep_until(cfg.deadline)),
            armed: None,
            bytes: 0,
            done: false,
            tail: None,
            capture: cfg.capture,
            translator: cfg.translator,
            decoder: cfg.decoder,
        }
    }

    /// What ends the client's stream once the provider's has ended: held
    /// bytes of a rewrite, or what closes a translated stream.
    fn closing(&mut self) -> Option<Bytes> {
        let held = self.observer.take_pending();
        let Some(t) = self.translator.as_mut() else {
            return held;
        };
        let tail = t.finish().0;
        if let Some(c) = self.capture.as_mut() {
            c.feed(&tail);
        }
        Some(tail).filter(|b| !b.is_empty())
    }

    fn finish(&mut self, end: StreamEnd) {
        if self.record.is_none() && self.capture.is_none() {
            return;
        }
        let observed = self.observer.finish();
        // A client that stops reading once it has the stream's final event
        // (`[DONE]`, `message_stop`, `response.completed`) got everything: the
        // SDKs close the connection there, before the chunked terminator.
        let end = if end == StreamEnd::ClientGone && observed.complete {
            StreamEnd::Complete
        } else {
            end
        };
        // Only a complete, successful stream is cached; otherwise the capture
        // is dropped and requests waiting on it go upstream themselves.
        if let Some(c) = self.capture.take() {
            let ok = self
                .record
                .as_ref()
                .is_some_and(|r| (200..300).contains(&r.outcome.status));
            if end == StreamEnd::Complete && ok {
                c.finish_stream();
            }
        }
        if let Some(record) = self.record.take() {
            record.finish(end, observed, self.bytes);
        }
    }

    /// Ends the stream because of `end`: SSE clients get a terminal error
    /// event in their API's shape (when the stream is at an event boundary);
    /// others see the body fail, never a clean end.
    fn fail(&mut self, end: StreamEnd) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let message = end.message();
        // A translated stream only ever sent whole events.
        let boundary = self.translator.is_some() || self.observer.at_event_boundary();
        let event = self
            .record
            .as_ref()
            .and_then(|r| boundary.then(|| r.error_event(&message)));
        self.finish(end);
        match event {
            Some(ev) => {
                self.done = true;
                Poll::Ready(Some(Ok(Frame::data(ev))))
            }
            None => {
                self.done = true;
                Poll::Ready(Some(Err(message.into())))
            }
        }
    }

    /// Ends the stream because an SSE event grew past `limit` (an upstream
    /// that never ends its event): `out` (what this chunk forwards) goes
    /// first, then a terminal error event. When the oversized event was
    /// being forwarded as it came, a blank line first closes it, so the
    /// client's SSE framing stays whole; when rewriting, none of it was sent.
    fn fail_oversized(
        &mut self,
        out: Option<Bytes>,
        limit: usize,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let end = StreamEnd::UpstreamError(format!(
            "an event was larger than {limit} bytes (server.max_sse_event)"
        ));
        let sized = self.inner.size_hint().exact().is_some();
        let event = match self.record.as_ref() {
            Some(r) if !sized => r.error_event(&end.message()),
            // A body of declared length cannot take extra bytes: it fails.
            _ => {
                let message = end.message();
                self.finish(end);
                self.done = true;
                return Poll::Ready(Some(Err(message.into())));
            }
        };
        let mut tail = Vec::with_capacity(event.len() + 2);
        if self.passthrough_size {
            tail.extend_from_slice(b"\n\n");
        }
        tail.extend_from_slice(&event);
        self.finish(end);
        self.done = true;
        let tail = Bytes::from(tail);
        match out {
            Some(b) => {
                self.tail = Some(tail);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            None => Poll::Ready(Some(Ok(Frame::data(tail)))),
        }
    }

    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Option<StreamEnd> {
        // Registered with this task and neither has fired: nothing to do (a
        // timer that fires wakes the task and is elapsed when it looks).
        let same = self.armed.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if same && !self.deadline.is_elapsed() && !self.idle_timer.is_elapsed() {
            return None;
        }
        if !same {
            self.armed = Some(cx.waker().clone());
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Some(StreamEnd::TotalTimeout);
        }
        while self.idle_timer.as_mut().poll(cx).is_ready() {
            let due = self.last_frame + self.idle;
            if Instant::now() >= due {
                return Some(StreamEnd::IdleTimeout);
            }
            // Frames arrived since the timer was set: push it out instead of
            // resetting it on every frame.
            self.idle_timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(due));
        }
        None
    }
}

impl Body for TapBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(tail) = this.tail.take() {
            return Poll::Ready(Some(Ok(Frame::data(tail))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let data = match frame.into_data() {
                        Ok(d) => d,
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    this.last_frame = Instant::now();
                    if this.bytes == 0 {
                        if let Some(r) = this.record.as_mut() {
                            r.first_byte(this.last_frame);
                        }
                    }
                    this.bytes += data.len() as u64;
                    // Whole frames only: what follows sees the Anthropic
                    // events a Bedrock stream carries.
                    let data = match this.decoder.as_mut().map(|d| d.push(&data)) {
                        None => data,
                        Some(Ok(sse)) => sse,
                        Some(Err(e)) => return this.fail(StreamEnd::UpstreamError(e)),
                    };
                    if let Some(r) = this.record.as_mut() {
                        r.tee(&data);
                    }
                    if let Some(c) = this.capture.as_mut().filter(|_| this.translator.is_none()) {
                        c.feed(&data);
                    }
                    let out = if let Some(t) = this.translator.as_mut() {
                        this.observer.observe(&data);
                        let out = t.feed(&data);
                        // The cache holds what the client gets (its API's events).
                        if let Some(c) = this.capture.as_mut() {
                            c.feed(&out);
                        }
                        Some(out).filter(|b| !b.is_empty())
                    } else if this.passthrough_size {
                        this.observer.observe(&data);
                        Some(data)
                    } else {
                        // (A decoded chunk that completed no frame is empty.)
                        this.observer.rewrite(data).filter(|b| !b.is_empty())
                    };
                    if let Some(limit) = this.observer.oversized() {
                        return this.fail_oversized(out, limit);
                    }
                    // hyper stops polling a body that says it has ended (a
                    // known length fully sent), so finish here, not on `None`.
                    if this.inner.is_end_stream() {
                        this.done = true;
                        this.tail = this.closing();
                        this.finish(StreamEnd::Complete);
                    }
                    match out.or_else(|| this.tail.take()) {
                        Some(b) => return Poll::Ready(Some(Ok(Frame::data(b)))),
                        None if this.done => return Poll::Ready(None),
                        None => {}
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return this.fail(StreamEnd::UpstreamError(e.to_string()));
                }
                Poll::Ready(None) if this.decoder.as_ref().is_some_and(|d| d.pending()) => {
                    let cut = "the Bedrock event stream ended inside a frame";
                    return this.fail(StreamEnd::UpstreamError(cut.into()));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let pending = this.closing();
                    this.finish(StreamEnd::Complete);
                    return Poll::Ready(pending.map(|b| Ok(Frame::data(b))));
                }
                Poll::Pending => {
                    return match this.poll_timers(cx) {
                        Some(end) => this.fail(end),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.tail.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.passthrough_size {
            self.inner.size_hint()
        } else {
            SizeHint::default()
        }
    }
}

impl Drop for TapBody {
    fn drop(&mut self) {
        // Still unfinished: the client went away (or the server is dropping the
        // connection). Either way, account for what passed.
        self.finish(StreamEnd::ClientGone);
    }
}
