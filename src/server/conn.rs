//! One accepted connection: served by hyper (HTTP/1.1 or h2), and closed
//! when it has had no request in flight for too long — before its first
//! request (`header_timeout`) or between requests (`idle_timeout`) — or when
//! the server shuts down.
//!
//! hyper's own HTTP/1 header timer does not cover the wait before the
//! protocol is even known (the auto builder reads the first bytes to tell h1
//! from h2), nor an idle h2 connection, and it would cut HTTP/1 keep-alive at
//! the header timeout; so the tracking lives here, counted per request: a
//! request is in flight from the moment hyper hands it over until its
//! response body is dropped. Headers still arriving are time without a
//! request in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ConnLimits;
use crate::body::{BoxError, ProxyBody, ResetConnection};

/// Requests in flight on one connection, and since when it has had none.
struct Activity {
    opened: Instant,
    inflight: AtomicUsize,
    /// A request has finished on this connection.
    served: AtomicBool,
    /// When the last request finished, in nanoseconds after `opened`.
    idle_since: AtomicU64,
    /// Woken when a request finishes.
    finished: Notify,
    /// For each response body in flight: since when it has handed hyper a
    /// frame without being asked for the next (hyper is writing it, or
    /// cannot: the client is not reading), in nanoseconds after `opened`
    /// plus one; 0 while it is not.
    bodies: Mutex<Vec<Weak<AtomicU64>>>,
}

/// Why the watcher wants a connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// No complete request within the first limit.
    NoRequest,
    /// No request in flight for too long.
    Idle,
    /// A response has waited for the client to take a frame for too long.
    Stalled,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            inflight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            finished: Notify::new(),
            bodies: Mutex::new(Vec::new()),
        }
    }

    /// Registers a response body's hand-off clock.
    fn track(&self, handed: &Arc<AtomicU64>) {
        let mut bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        bodies.retain(|b| b.strong_count() > 0);
        bodies.push(Arc::downgrade(handed));
    }

    /// Since when the longest-waiting response body has waited for hyper.
    fn oldest_handed(&self) -> Option<Instant> {
        let bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        bodies
            .iter()
            .filter_map(Weak::upgrade)
            .map(|b| b.load(Ordering::Acquire))
            .filter(|&n| n > 0)
            .min()
            .map(|n| self.opened + Duration::from_nanos(n - 1))
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn at(&self, nanos: &AtomicU64) -> Instant {
        self.opened + Duration::from_nanos(nanos.load(Ordering::Acquire))
    }

    /// Resolves when the connection should close: no request in flight for
    /// its limit (`first` before any request finished, `keep_alive` after),
    /// or a response in flight that hyper has not been able to write for
    /// `keep_alive` (the client stopped reading it: a full socket, or an
    /// HTTP/2 stream window it keeps shut).
    async fn watch(&self, first: Duration, keep_alive: Duration) -> Watch {
        loop {
            if self.inflight.load(Ordering::Acquire) > 0 {
                let now = Instant::now();
                let next = match self.oldest_handed() {
                    Some(since) if now >= since + keep_alive => return Watch::Stalled,
                    Some(since) => since + keep_alive,
                    None => now + keep_alive,
                };
                // Look again when a request finishes, or when the oldest
                // hand-off would become a stall (or a limit from now).
                tokio::select! {
                    _ = self.finished.notified() => {}
                    _ = tokio::time::sleep_until(next) => {}
                }
                continue;
            }
            let limit = if self.served.load(Ordering::Acquire) {
                keep_alive
            } else {
                first
            };
            let due = self.at(&self.idle_since) + limit;
            if Instant::now() >= due {
                // Re-checked: a request may have started since the load above.
                if self.inflight.load(Ordering::Acquire) == 0 {
                    return if self.served.load(Ordering::Acquire) {
                        Watch::Idle
                    } else {
                        Watch::NoRequest
                    };
                }
                continue;
            }
            // Requests that start meanwhile do not wake this: when it wakes
            // it looks again, and waits for them to finish.
            tokio::time::sleep_until(due).await;
        }
    }
}

/// Why serving a connection must change course, set once by its watcher:
/// `None` for shutdown, else the watch's verdict.
#[derive(Default)]
struct Interrupt {
    verdict: std::sync::OnceLock<Option<Watch>>,
    waker: futures_util::task::AtomicWaker,
}

impl Interrupt {
    fn fire(&self, verdict: Option<Watch>) {
        let _ = self.verdict.set(verdict);
        self.waker.wake();
    }

    /// The verdict, once there is one.
    fn wait(&self) -> impl Future<Output = Option<Watch>> + '_ {
        std::future::poll_fn(move |cx| {
            if let Some(v) = self.verdict.get() {
                return Poll::Ready(*v);
            }
            self.waker.register(cx.waker());
            self.verdict
                .get()
                .map_or(Poll::Pending, |v| Poll::Ready(*v))
        })
    }
}

/// Aborts a task when dropped (the connection's watcher, with it).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Holds a request in flight until dropped (with its response body).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.inflight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now_nanos(), Ordering::Release);
        a.served.store(true, Ordering::Release);
        a.inflight.fetch_sub(1, Ordering::AcqRel);
        a.finished.notify_one();
    }
}

/// A response body that keeps its request counted in flight until hyper has
/// sent it (or dropped it), and tells the watcher when hyper stops asking
/// for frames.
pub struct ConnBody {
    inner: ProxyBody,
    inflight: InFlight,
    /// Since when the last frame was handed over without the next being
    /// asked for (see `Activity::bodies`).
    handed: Arc<AtomicU64>,
}

impl ConnBody {
    fn new(inner: ProxyBody, inflight: InFlight) -> Self {
        let handed = Arc::new(AtomicU64::new(0));
        inflight.0.track(&handed);
        Self {
            inner,
            inflight,
            handed,
        }
    }
}

impl Body for ConnBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let handed = match polled {
            Poll::Ready(Some(Ok(_))) => this.inflight.0.now_nanos().saturating_add(1),
            _ => 0,
        };
        this.handed.store(handed, Ordering::Release);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one connection until the client closes it, it idles past its
/// limit, its client stops reading, or `stop` fires (then open requests
/// finish; the caller bounds how long that may take).
pub(super) async fn serve<I, H, F>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    handler: H,
    limits: &ConnLimits,
    stop: &CancellationToken,
) -> Result<(), BoxError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        service_fn(move |req| {
            let inflight = InFlight::new(&activity);
            let answer = handler(req);
            async move {
                let resp = answer.await;
                // A service error makes hyper drop the connection without
                // an answer (HTTP/1) or reset the stream (h2).
                if resp.extensions().get::<ResetConnection>().is_some() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "connection reset (injected fault)",
                    ));
                }
                Ok::<_, std::io::Error>(resp.map(|inner| ConnBody::new(inner, inflight)))
            }
        })
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    // Shutdown and the idle/stall watch run in a task of their own, which
    // wakes this one only when it has a verdict: this task is woken for
    // every chunk of a stream, and polling the watch's timers and the
    // shared shutdown signal each time would cost more than the chunk.
    let interrupt = Arc::new(Interrupt::default());
    let _watcher = AbortOnDrop(
        tokio::spawn({
            let (interrupt, activity, stop) = (interrupt.clone(), activity.clone(), stop.clone());
            let (first, keep) = (limits.header_timeout, limits.idle_timeout);
            async move {
                let verdict = tokio::select! {
                    _ = stop.cancelled() => None,
                    why = activity.watch(first, keep) => Some(why),
                };
                interrupt.fire(verdict);
            }
        })
        .abort_handle(),
    );
    let watch = tokio::select! {
        biased;
        done = conn.as_mut() => return done,
        verdict = interrupt.wait() => match verdict {
            Some(why) => why,
            None => {
                conn.as_mut().graceful_shutdown();
                return conn.await;
            }
        },
    };
    let reason = match watch {
        Watch::NoRequest => "no_request",
        Watch::Idle => "idle",
        Watch::Stalled => "stalled",
    };
    crate::metrics::connection_closed(limits.plane, reason);
    match watch {
        // No request ever arrived whole: nothing to finish, so the
        // connection is dropped at once (a graceful close would let hyper
        // wait for a half-sent head for another `header_timeout`).
        Watch::NoRequest => Ok(()),
        // An idle connection closes at once (h2: after GOAWAY); one whose
        // client does not play along is dropped.
        Watch::Idle => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(limits.header_timeout, conn).await {
                Ok(done) => done,
                Err(_) => Ok(()),
            }
        }
        // Nothing can be said to a client that reads nothing: dropping the
        // connection ends its streams (and their upstream requests).
        Watch::Stalled => {
            tracing::debug!("client stopped reading: connection closed");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    const FIRST: Duration = Duration::from_secs(5);
    const KEEP: Duration = Duration::from_secs(60);

    /// Whether the watcher fires within `wait` (paused time: no real waiting).
    async fn idles_within(a: &Activity, wait: Duration) -> bool {
        tokio::time::timeout(wait, a.watch(FIRST, KEEP))
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_the_client_does_not_read_is_a_stall() {
        let a = Arc::new(Activity::new());
        let frames = [&b"a"[..], &b"b"[..]].map(Bytes::from_static).into();
        let mut body = ConnBody::new(ProxyBody::Frames(frames), InFlight::new(&a));
        body.frame().await.expect("frame").expect("ok");
        // hyper took a frame and has not come back for the next one.
        tokio::time::sleep(KEEP - Duration::from_millis(1)).await;
        body.frame().await.expect("frame").expect("ok");
        assert!(!idles_within(&a, KEEP - Duration::from_millis(1)).await);
        assert_eq!(a.watch(FIRST, KEEP).await, Watch::Stalled);
        // Asked again and finished: no longer handed out.
        assert!(body.frame().await.is_none());
        assert_eq!(a.oldest_handed(), None);
        drop(body);
        assert_eq!(a.watch(FIRST, KEEP).await, Watch::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn one_unread_stream_among_busy_ones_is_a_stall() {
        let a = Arc::new(Activity::new());
        let frames = |n: usize| ProxyBody::Frames(vec![Bytes::from_static(b"x"); n].into());
        let mut unread = ConnBody::new(frames(2), InFlight::new(&a));
        let mut busy = ConnBody::new(frames(1000), InFlight::new(&a));
        unread.frame().await.expect("frame").expect("ok");
        let watcher = {
            let a = a.clone();
            tokio::spawn(async move { a.watch(FIRST, KEEP).await })
        };
        // The other stream keeps flowing; the first is never asked again.
        for _ in 0..200 {
            busy.frame().await.expect("frame").expect("ok");
            tokio::time::sleep(KEEP / 100).await;
        }
        assert!(watcher.is_finished());
        assert_eq!(watcher.await.expect("join"), Watch::Stalled);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_idles_after_the_first_limit() {
        let a = Activity::new();
        assert!(!idles_within(&a, FIRST - Duration::from_millis(1)).await);
        assert!(idles_within(&a, Duration::from_millis(2)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_idle() {
        let a = Arc::new(Activity::new());
        let req = InFlight::new(&a);
        assert!(!idles_within(&a, Duration::from_secs(3600)).await);
        drop(req);
        // Finished: the keep-alive limit counts from now.
        assert!(!idles_within(&a, KEEP - Duration::from_millis(1)).await);
        assert!(idles_within(&a, Duration::from_millis(2)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_starting_while_the_timer_runs_is_waited_for() {
        let a = Arc::new(Activity::new());
        let idle = {
            let a = a.clone();
            tokio::spawn(async move { a.watch(FIRST, KEEP).await })
        };
        tokio::time::sleep(FIRST / 2).await;
        let req = InFlight::new(&a);
        tokio::time::sleep(FIRST * 10).await;
        assert!(!idle.is_finished());
        drop(req);
        tokio::time::sleep(KEEP + Duration::from_millis(1)).await;
        assert!(idle.is_finished());
    }
}
