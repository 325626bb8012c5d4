//! Gathering a burst of streamed frames into one write.
//!
//! A provider often writes several SSE events at once. Forwarding each as
//! it comes costs a `writev` (and the client a wake-up) per event, where
//! nginx, reading what the socket holds, writes once.
//!
//! The first chunk goes out at once: time to first token is what a client
//! of a stream waits on. After that, each poll takes chunks for as long as
//! the body has one ready and sends them as one frame when it has no more
//! for now. An HTTP/1 upstream connection is read in this same poll (see
//! [`crate::upstream::pool`]), so "ready" means decoded from what the
//! socket already held. Bytes are never held while the provider is silent;
//! a burst costs one write, and a frame holds at most [`MAX_BYTES`].

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

/// The most bytes gathered into one frame.
pub const MAX_BYTES: usize = 64 * 1024;

type Polled<E> = Option<Result<Frame<Bytes>, E>>;

/// Wraps a body; with `on` false it passes frames through as they come.
pub struct Gather<B: Body> {
    pub inner: B,
    on: bool,
    stash: BytesMut,
    /// The first chunk of a gather, kept as is (most bursts are one chunk).
    first: Option<Bytes>,
    /// The first chunk went out (it is never held).
    started: bool,
    /// What came after the gathered bytes (a non-data frame, an error, the
    /// end), for the next poll.
    held: Option<Polled<B::Error>>,
}

impl<B: Body<Data = Bytes> + Unpin> Gather<B> {
    pub fn new(inner: B, on: bool) -> Self {
        Self {
            inner,
            on,
            stash: BytesMut::new(),
            first: None,
            started: false,
            held: None,
        }
    }

    fn gathered(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.stash.len()
    }

    fn push(&mut self, data: Bytes) {
        match self.first.take() {
            None if self.stash.is_empty() => self.first = Some(data),
            None => self.stash.extend_from_slice(&data),
            Some(first) => {
                self.stash.reserve(first.len() + data.len());
                self.stash.extend_from_slice(&first);
                self.stash.extend_from_slice(&data);
            }
        }
    }

    /// What was gathered, as one frame (`None` when nothing was).
    fn take(&mut self) -> Option<Bytes> {
        match self.first.take() {
            Some(b) => Some(b),
            None if self.stash.is_empty() => None,
            None => Some(self.stash.split().freeze()),
        }
    }
}

impl<B> Body for Gather<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if !this.on {
            return Pin::new(&mut this.inner).poll_frame(cx);
        }
        if let Some(held) = this.held.take() {
            return Poll::Ready(held);
        }
        let polled = loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !this.started => {
                        this.started = true;
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(data) => {
                        this.push(data);
                        if this.gathered() >= MAX_BYTES || this.inner.is_end_stream() {
                            return Poll::Ready(this.take().map(|b| Ok(Frame::data(b))));
                        }
                    }
                    Err(frame) => break Some(Ok(frame)),
                },
                Poll::Ready(other) => break other,
                // Nothing more for now: what was gathered goes out.
                Poll::Pending => {
                    return match this.take() {
                        None => Poll::Pending,
                        Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                    }
                }
            }
        };
        match this.take() {
            None => Poll::Ready(polled),
            Some(b) => {
                this.held = Some(polled);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.gathered() == 0 && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let hint = self.inner.size_hint();
        let gathered = self.gathered() as u64;
        if gathered == 0 {
            return hint;
        }
        let mut out = SizeHint::new();
        out.set_lower(hint.lower() + gathered);
        if let Some(upper) = hint.upper() {
            out.set_upper(upper + gathered);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::task::Wake;

    /// A body that yields scripted polls.
    struct Script(VecDeque<Poll<Polled<&'static str>>>);

    impl Body for Script {
        type Data = Bytes;
        type Error = &'static str;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            self.0.pop_front().unwrap_or(Poll::Ready(None))
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn data(s: &'static str) -> Poll<Polled<&'static str>> {
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(s.as_bytes())))))
    }

    /// Polls until the body ends: what each Ready gave, `.` for a Pending.
    fn drain(body: &mut Gather<Script>, polls: usize) -> (Vec<String>, usize) {
        let count = Arc::new(Count(Default::default()));
        let waker = std::task::Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        for _ in 0..polls {
            match Pin::new(&mut *body).poll_frame(&mut cx) {
                Poll::Pending => out.push(".".to_owned()),
                Poll::Ready(None) => break,
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => out.push(String::from_utf8_lossy(&d).into_owned()),
                    Err(_) => out.push("<trailers>".to_owned()),
                },
                Poll::Ready(Some(Err(e))) => out.push(format!("<{e}>")),
            }
        }
        (out, count.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    #[test]
    fn a_burst_goes_out_as_one_frame_and_nothing_waits_for_silence() {
        let script = Script(VecDeque::from([
            data("h"),
            data("a"),
            data("b"),
            Poll::Pending,
            data("c"),
            Poll::Pending,
            Poll::Pending,
            data("d"),
        ]));
        let mut body = Gather::new(script, true);
        let (out, wakes) = drain(&mut body, 20);
        // The first chunk at once; a and b gathered and sent when the body
        // has nothing more; c alone; a quiet poll is just pending; d is the
        // last chunk and goes at once.
        assert_eq!(out, ["h", "ab", "c", ".", "d"]);
        assert_eq!(wakes, 0, "nothing waits for a turn of its own");
    }

    #[test]
    fn the_end_an_error_or_trailers_come_after_what_was_gathered() {
        let script = Script(VecDeque::from([
            data("h"),
            data("a"),
            data("b"),
            Poll::Ready(Some(Err("cut"))),
        ]));
        let (out, _) = drain(&mut Gather::new(script, true), 10);
        assert_eq!(out, ["h", "ab", "<cut>"]);

        let trailers = Poll::Ready(Some(Ok(Frame::trailers(http::HeaderMap::new()))));
        let script = Script(VecDeque::from([data("h"), data("a"), trailers, data("z")]));
        let (out, _) = drain(&mut Gather::new(script, true), 10);
        assert_eq!(out, ["h", "a", "<trailers>", "z"]);
    }

    #[test]
    fn gathering_stops_at_its_bound() {
        const CHUNK: usize = 16 * 1024;
        let many: VecDeque<_> = (0..10)
            .map(|_| Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; CHUNK]))))))
            .collect();
        let (out, _) = drain(&mut Gather::new(Script(many), true), 100);
        let sizes: Vec<usize> = out.iter().map(String::len).collect();
        assert_eq!(sizes, [CHUNK, MAX_BYTES, MAX_BYTES, CHUNK]);
    }

    #[test]
    fn off_it_passes_frames_through() {
        let script = Script(VecDeque::from([data("a"), data("b")]));
        let (out, wakes) = drain(&mut Gather::new(script, false), 10);
        assert_eq!(out, ["a", "b"]);
        assert_eq!(wakes, 0);
    }
}
