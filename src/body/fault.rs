//! A streamed answer spoiled on purpose (chaos faults at the client's edge):
//! events paced out, the stream cut short without its proper end, a
//! malformed event slipped in, or the connection dropped mid-stream.
//!
//! It re-frames the body at SSE event boundaries (`\n\n`) to count events;
//! only the part of an event not yet whole is held, as the tap holds it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use tokio::time::Sleep;

use super::{BoxError, ProxyBody};
use crate::config::FaultKind;
use crate::fault::MALFORMED_EVENT;

/// A response body with a stream fault applied.
pub struct FaultyBody {
    inner: ProxyBody,
    kind: FaultKind,
    /// The start of an event not yet whole.
    partial: BytesMut,
    /// Whole events waiting to go.
    ready: VecDeque<Bytes>,
    /// Events sent so far.
    sent: u32,
    /// The event number the last pause was for (slow chunks).
    paused_for: u32,
    pause: Option<Pin<Box<Sleep>>>,
    injected: bool,
    /// A reset has let the server flush what was sent before it.
    flushed: bool,
    inner_done: bool,
    finished: bool,
}

/// What to do before sending event number `sent`.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Send,
    Pause,
    /// End cleanly here (truncation).
    End,
    /// Fail the body (hyper drops the connection).
    Reset,
    /// Send the malformed event first.
    Malformed,
}

/// The plain decision, per event.
fn step(kind: FaultKind, sent: u32, paused_for: u32, injected: bool) -> Step {
    match kind {
        FaultKind::Truncate { after } if sent >= after => Step::End,
        FaultKind::Reset { after } if sent >= after => Step::Reset,
        FaultKind::Malformed { after } if sent >= after && !injected => Step::Malformed,
        FaultKind::SlowChunks(_) if sent > 0 && paused_for != sent => Step::Pause,
        _ => Step::Send,
    }
}

impl FaultyBody {
    pub fn new(inner: ProxyBody, kind: FaultKind) -> Self {
        Self {
            inner,
            kind,
            partial: BytesMut::new(),
            ready: VecDeque::new(),
            sent: 0,
            paused_for: 0,
            pause: None,
            injected: false,
            flushed: false,
            inner_done: false,
            finished: false,
        }
    }

    fn split_events(&mut self) {
        while let Some(i) = crate::find::find!(&self.partial, b"\n\n") {
            self.ready.push_back(self.partial.split_to(i + 2).freeze());
        }
    }

    fn reset(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Pending once first: the server writes out the events already
        // handed over (it flushes when a body has nothing ready), so the
        // client sees them before the connection drops.
        if self.sent > 0 && !std::mem::replace(&mut self.flushed, true) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.finished = true;
        Poll::Ready(Some(Err("connection reset (injected fault)".into())))
    }
}

impl Body for FaultyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            if !this.ready.is_empty() {
                match step(this.kind, this.sent, this.paused_for, this.injected) {
                    Step::End => {
                        this.finished = true;
                        return Poll::Ready(None);
                    }
                    Step::Reset => return this.reset(cx),
                    Step::Malformed => {
                        this.injected = true;
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                            MALFORMED_EVENT,
                        )))));
                    }
                    Step::Pause => {
                        let FaultKind::SlowChunks(d) = this.kind else {
                            this.paused_for = this.sent;
                            continue;
                        };
                        let pause = this
                            .pause
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(d)));
                        if pause.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        this.pause = None;
                        this.paused_for = this.sent;
                        continue;
                    }
                    Step::Send => {
                        if let Some(ev) = this.ready.pop_front() {
                            this.sent += 1;
                            return Poll::Ready(Some(Ok(Frame::data(ev))));
                        }
                    }
                }
            }
            if this.inner_done {
                if !this.partial.is_empty() {
                    let rest = this.partial.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                // A stream shorter than the fault's count still fails.
                if matches!(this.kind, FaultKind::Reset { .. }) {
                    return this.reset(cx);
                }
                this.finished = true;
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.inner_done = true,
                Poll::Ready(Some(Err(e))) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.partial.extend_from_slice(&data);
                        this.split_events();
                    }
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::*;

    const EVENTS: [&str; 4] = [
        "data: {\"a\":1}\n\n",
        "data: {\"a\":2}\n\n",
        "data: {\"a\":3}\n\n",
        "data: [DONE]\n\n",
    ];

    /// The events, cut into frames at awkward places.
    fn body() -> ProxyBody {
        let all: String = EVENTS.concat();
        let cuts = [0, 3, 20, 33, all.len()];
        ProxyBody::Frames(
            cuts.windows(2)
                .map(|w| Bytes::copy_from_slice(&all.as_bytes()[w[0]..w[1]]))
                .collect(),
        )
    }

    async fn run(kind: FaultKind) -> (String, bool) {
        let mut b = FaultyBody::new(body(), kind);
        let mut out = Vec::new();
        while let Some(f) = b.frame().await {
            match f {
                Ok(f) => out.extend_from_slice(&f.into_data().unwrap_or_default()),
                Err(_) => return (String::from_utf8_lossy(&out).into_owned(), true),
            }
        }
        (String::from_utf8_lossy(&out).into_owned(), false)
    }

    #[tokio::test(start_paused = true)]
    async fn each_stream_fault_changes_the_events_as_it_says() {
        let all = EVENTS.concat();
        assert_eq!(
            run(FaultKind::Truncate { after: 2 }).await,
            (EVENTS[..2].concat(), false)
        );
        assert_eq!(
            run(FaultKind::Truncate { after: 9 }).await,
            (all.clone(), false)
        );
        assert_eq!(
            run(FaultKind::Reset { after: 1 }).await,
            (EVENTS[0].to_string(), true)
        );
        assert_eq!(
            run(FaultKind::Reset { after: 9 }).await,
            (all.clone(), true),
            "short stream still fails"
        );
        let (text, failed) = run(FaultKind::Malformed { after: 1 }).await;
        let malformed = String::from_utf8_lossy(MALFORMED_EVENT);
        assert_eq!(
            text,
            format!("{}{malformed}{}", EVENTS[0], EVENTS[1..].concat())
        );
        assert!(!failed);
        let started = tokio::time::Instant::now();
        assert_eq!(
            run(FaultKind::SlowChunks(Duration::from_secs(2))).await,
            (all, false)
        );
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(6),
            "a pause before each event after the first"
        );
    }

    #[test]
    fn steps() {
        let slow = FaultKind::SlowChunks(Duration::from_millis(1));
        assert_eq!(step(slow, 0, 0, false), Step::Send);
        assert_eq!(step(slow, 1, 0, false), Step::Pause);
        assert_eq!(step(slow, 1, 1, false), Step::Send);
        assert_eq!(
            step(FaultKind::Malformed { after: 0 }, 0, 0, true),
            Step::Send
        );
    }
}
