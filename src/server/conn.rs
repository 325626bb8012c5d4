//! One accepted connection: served by hyper (HTTP/1.1 or h2), and closed
//! when it has had no request in flight for too long — before its first
//! request (`header_timeout`) or between requests (`idle_timeout`) — or when
//! the server shuts down.
//!
//! hyper bounds the headers of each HTTP/1 request, but not the wait before
//! the protocol is even known (the auto builder reads the first bytes to
//! tell h1 from h2) nor an idle h2 connection; so the idle tracking lives
//! here, counted per request: a request is in flight from the moment hyper
//! hands it over until its response body is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

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
use crate::body::{BoxError, ProxyBody};

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
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            inflight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            finished: Notify::new(),
        }
    }

    /// Resolves once the connection has had no request in flight for its
    /// limit: `first` before any request finished, `keep_alive` after.
    async fn idle(&self, first: std::time::Duration, keep_alive: std::time::Duration) {
        loop {
            if self.inflight.load(Ordering::Acquire) > 0 {
                self.finished.notified().await;
                continue;
            }
            let limit = if self.served.load(Ordering::Acquire) {
                keep_alive
            } else {
                first
            };
            let since = std::time::Duration::from_nanos(self.idle_since.load(Ordering::Acquire));
            let due = self.opened + since + limit;
            if Instant::now() >= due {
                // Re-checked: a request may have started since the load above.
                if self.inflight.load(Ordering::Acquire) == 0 {
                    return;
                }
                continue;
            }
            // Requests that start meanwhile do not wake this: when it wakes
            // it looks again, and waits for them to finish.
            tokio::time::sleep_until(due).await;
        }
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
        let since = u64::try_from(a.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        a.idle_since.store(since, Ordering::Release);
        a.served.store(true, Ordering::Release);
        a.inflight.fetch_sub(1, Ordering::AcqRel);
        a.finished.notify_one();
    }
}

/// A response body that keeps its request counted in flight until hyper has
/// sent it (or dropped it).
pub struct ConnBody {
    inner: ProxyBody,
    _inflight: InFlight,
}

impl Body for ConnBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a connection was asked to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    Idle,
    Shutdown,
}

/// Serves one connection until the client closes it, it idles past its
/// limit, or `stop` fires (then open requests finish; the caller bounds
/// how long that may take).
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
                Ok::<_, Infallible>(resp.map(|inner| ConnBody {
                    inner,
                    _inflight: inflight,
                }))
            }
        })
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let close = tokio::select! {
        done = conn.as_mut() => return done,
        _ = stop.cancelled() => Close::Shutdown,
        _ = activity.idle(limits.header_timeout, limits.idle_timeout) => Close::Idle,
    };
    conn.as_mut().graceful_shutdown();
    match close {
        Close::Shutdown => conn.await,
        // An idle connection closes at once (h2: after GOAWAY); one whose
        // client does not play along is dropped.
        Close::Idle => match tokio::time::timeout(limits.header_timeout, conn).await {
            Ok(done) => done,
            Err(_) => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const FIRST: Duration = Duration::from_secs(5);
    const KEEP: Duration = Duration::from_secs(60);

    /// Whether `idle` resolves within `wait` (paused time: no real waiting).
    async fn idles_within(a: &Activity, wait: Duration) -> bool {
        tokio::time::timeout(wait, a.idle(FIRST, KEEP))
            .await
            .is_ok()
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
            tokio::spawn(async move { a.idle(FIRST, KEEP).await })
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
