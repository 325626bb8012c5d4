//! A provider's keep-alive connections: one pool per worker, over hyper's
//! connection-level client.
//!
//! hyper-util's pooled client did the same job for ~10k instructions a
//! request here (bench/RESULTS.md): it hashes its pool key (scheme and
//! authority) with SipHash on every checkout and return, boxes a 3.3 KB
//! future, and spawns a task per HTTP/1 request that waits for the
//! connection to be free again. This pool knows its provider, so it has no
//! key: a checkout is a lock nobody else contends (the worker's own) and a
//! `pop`. An HTTP/1 connection comes back when its answer's body has ended
//! ([`Body`]), not through a task.
//!
//! Bounds: each worker keeps at most [`MAX_IDLE`] idle HTTP/1 connections
//! to a provider (one more is closed when its answer ends) and closes one
//! idle for [`IDLE_TIMEOUT`] when the pool is next used. Over TLS, ALPN
//! may choose HTTP/2: then one connection per worker carries every
//! request, as hyper-util's pool did; when it has no stream free (the
//! provider's concurrent-stream limit), a request opens another, which is
//! shared from then on while the first finishes its streams and closes.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower_service::Service as _;

use super::{error_chain, SendError};

/// Idle HTTP/1 connections one worker keeps to one provider.
pub const MAX_IDLE: usize = 256;

/// An idle connection unused this long is closed (checked when the pool is
/// next used; providers close their own side sooner).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How many pooled connections a request moves past when each turns out
/// to have closed before the request went out (the provider closed it
/// while idle) before it opens a new one.
const STALE_TRIES: usize = 4;

type Body1 = Full<Bytes>;

/// One worker's connections to one provider.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// The provider's origin (scheme and authority): what a new
    /// connection dials, and what an HTTP/2 request names.
    origin: Uri,
    /// The `host` an HTTP/1 request sends when it carries none.
    host: HeaderValue,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    /// Free HTTP/1 connections, the most recently used last.
    h1: Vec<(http1::SendRequest<Body1>, Instant)>,
    /// The HTTP/2 connection every request shares, once ALPN chose it.
    h2: Option<http2::SendRequest<Body1>>,
}

/// A connection a request holds.
enum Conn {
    H1(http1::SendRequest<Body1>),
    H2(http2::SendRequest<Body1>),
}

/// Why sending on a connection failed.
#[expect(
    clippy::large_enum_variant,
    reason = "the request comes back to be sent again; boxing it would allocate on every failure"
)]
enum Failed {
    /// The connection closed before the request went out: it may go on
    /// another connection.
    Unsent(Request<Body1>, hyper::Error),
    Sent(hyper::Error),
}

impl Pool {
    pub fn new(connector: HttpsConnector<HttpConnector>, origin: Uri, host: HeaderValue) -> Self {
        Self {
            connector,
            origin,
            host,
            idle: Mutex::new(Idle::default()),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `req` (an absolute URI on this provider) on a pooled
    /// connection, or a new one; resolves with the response headers.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Body1>,
    ) -> Result<Response<Body>, SendError> {
        let mut stale = 0;
        loop {
            let pooled = self.checkout();
            let reused = pooled.is_some();
            let conn = match pooled {
                Some(conn) => conn,
                // Boxed: a TLS handshake's state is kilobytes, and this
                // future is moved on every request that needs no new one.
                None => Box::pin(self.connect()).await?,
            };
            match self.send_on(conn, req).await {
                Ok(resp) => return Ok(resp),
                Err(Failed::Unsent(back, why)) if reused && stale < STALE_TRIES => {
                    tracing::debug!(error = %why, "pooled connection closed before the request went out; trying another");
                    stale += 1;
                    req = back;
                }
                Err(Failed::Unsent(_, e) | Failed::Sent(e)) => {
                    return Err(SendError::Connect(error_chain(&e)))
                }
            }
        }
    }

    /// A free connection: the shared HTTP/2 one if it takes a stream, else
    /// the most recently freed HTTP/1 one still open.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle();
        if let Some(h2) = &idle.h2 {
            if h2.is_ready() {
                return Some(Conn::H2(h2.clone()));
            }
            if h2.is_closed() {
                idle.h2 = None;
            }
        }
        while let Some((tx, at)) = idle.h1.pop() {
            if at.elapsed() > IDLE_TIMEOUT {
                // The rest were freed earlier still.
                idle.h1.clear();
                return None;
            }
            // One the provider closed while it was idle is dropped.
            if !tx.is_closed() {
                return Some(Conn::H1(tx));
            }
        }
        None
    }

    /// Takes back an HTTP/1 connection whose answer has ended.
    fn checkin(&self, tx: http1::SendRequest<Body1>) {
        if tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle();
        // Oldest first: close those idle past the timeout.
        let fresh = idle
            .h1
            .iter()
            .position(|(_, at)| now.duration_since(*at) <= IDLE_TIMEOUT)
            .unwrap_or(idle.h1.len());
        idle.h1.drain(..fresh);
        if idle.h1.len() < MAX_IDLE {
            idle.h1.push((tx, now));
        }
    }

    /// Dials the provider (TCP, then TLS with ALPN where it is https) and
    /// starts the connection's task on this worker.
    async fn connect(&self) -> Result<Conn, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| SendError::classify(&*e))?;
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(|e| SendError::classify(&*e))?;
        if io.connected().is_negotiated_h2() {
            let (tx, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| SendError::Connect(error_chain(&e)))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            self.idle().h2 = Some(tx.clone());
            Ok(Conn::H2(tx))
        } else {
            let (tx, conn) = http1::handshake(io)
                .await
                .map_err(|e| SendError::Connect(error_chain(&e)))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/1 connection ended");
                }
            });
            Ok(Conn::H1(tx))
        }
    }

    /// Sends on one connection: HTTP/1 takes the origin form and a `host`;
    /// HTTP/2 the absolute form (`:scheme`, `:authority`).
    async fn send_on(
        self: &Arc<Self>,
        conn: Conn,
        mut req: Request<Body1>,
    ) -> Result<Response<Body>, Failed> {
        match conn {
            Conn::H1(mut tx) => {
                if !tx.is_ready() {
                    // Freed before its connection asked for the next request.
                    if let Err(e) = tx.ready().await {
                        return Err(Failed::Unsent(req, e));
                    }
                }
                if req.uri().scheme().is_some() {
                    let pq = req
                        .uri()
                        .path_and_query()
                        .cloned()
                        .unwrap_or_else(|| PathAndQuery::from_static("/"));
                    *req.uri_mut() = Uri::from(pq);
                }
                if !req.headers().contains_key(http::header::HOST) {
                    req.headers_mut()
                        .insert(http::header::HOST, self.host.clone());
                }
                match tx.try_send_request(req).await {
                    Ok(resp) => Ok(resp.map(|inner| Body::new(inner, Some((self.clone(), tx))))),
                    Err(mut e) => match e.take_message() {
                        Some(req) => Err(Failed::Unsent(req, e.into_error())),
                        None => Err(Failed::Sent(e.into_error())),
                    },
                }
            }
            Conn::H2(mut tx) => {
                if req.uri().scheme().is_none() {
                    let mut parts = self.origin.clone().into_parts();
                    parts.path_and_query = req.uri().path_and_query().cloned();
                    if let Ok(uri) = Uri::from_parts(parts) {
                        *req.uri_mut() = uri;
                    }
                }
                match tx.try_send_request(req).await {
                    Ok(resp) => Ok(resp.map(|inner| Body::new(inner, None))),
                    Err(mut e) => match e.take_message() {
                        Some(req) => Err(Failed::Unsent(req, e.into_error())),
                        None => Err(Failed::Sent(e.into_error())),
                    },
                }
            }
        }
    }
}

/// A provider's answer body; an HTTP/1 connection goes back to its pool
/// when the body ends (dropped before that, the connection closes).
pub struct Body {
    inner: Incoming,
    back: Option<(Arc<Pool>, http1::SendRequest<Body1>)>,
}

impl Body {
    fn new(inner: Incoming, back: Option<(Arc<Pool>, http1::SendRequest<Body1>)>) -> Self {
        let mut body = Self { inner, back };
        if http_body::Body::is_end_stream(&body.inner) {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((pool, tx)) = self.back.take() {
            pool.checkin(tx);
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            // A broken answer's connection is not reused.
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use sluice_mock::MockProvider;

    use super::*;
    use crate::config::Config;
    use crate::upstream::Upstream;

    fn pool(mock: &MockProvider) -> Arc<Pool> {
        let text = format!(
            "[[providers]]\nname = \"p\"\nkind = \"openai-compatible\"\nbase_url = \"{}/v1\"\napi_key_env = \"K\"\n",
            mock.url()
        );
        let cfg = Config::parse(&text, "t", &|_| Some("sk-1".into())).expect("config");
        Upstream::new(&cfg.providers[0])
            .expect("upstream")
            .pool()
            .clone()
    }

    fn chat(mock: &MockProvider, extra: Option<&'static str>) -> Request<Body1> {
        let mut req = Request::post(format!("{}/v1/chat/completions", mock.url()))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            )))
            .expect("request");
        if let Some(name) = extra {
            req.headers_mut().insert(
                http::HeaderName::from_static(name),
                HeaderValue::from_static("1"),
            );
        }
        req
    }

    async fn read(resp: Response<Body>) -> Bytes {
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.expect("body").to_bytes()
    }

    fn idle_h1(pool: &Pool) -> usize {
        pool.idle().h1.len()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_answer_has_ended() {
        let mock = MockProvider::start().await.expect("mock");
        let pool = pool(&mock);
        for _ in 0..5 {
            let resp = pool.send(chat(&mock, None)).await.expect("send");
            // Held by the answer until its body ends.
            assert_eq!(idle_h1(&pool), 0);
            let body = read(resp).await;
            assert!(body.starts_with(b"{"), "{body:?}");
            assert_eq!(idle_h1(&pool), 1);
        }
        assert_eq!(mock.accepted_connections(), 1);
        // Sent in origin form, with the provider's host.
        let seen = mock.last_request().expect("request");
        assert_eq!(seen.path, "/v1/chat/completions");
        let host = seen
            .headers
            .iter()
            .find(|(n, _)| n == "host")
            .map(|(_, v)| v.clone());
        assert_eq!(host, Some(mock.addr.to_string()));
    }

    #[tokio::test]
    async fn an_answer_dropped_unread_does_not_return_its_connection() {
        let mock = MockProvider::start().await.expect("mock");
        let pool = pool(&mock);
        let resp = pool.send(chat(&mock, None)).await.expect("send");
        drop(resp);
        assert_eq!(idle_h1(&pool), 0);
        read(pool.send(chat(&mock, None)).await.expect("send")).await;
        assert_eq!(mock.accepted_connections(), 2);
    }

    #[tokio::test]
    async fn a_connection_the_provider_closed_is_not_used_again() {
        let mock = MockProvider::start().await.expect("mock");
        let pool = pool(&mock);
        read(
            pool.send(chat(&mock, Some("x-mock-close")))
                .await
                .expect("send"),
        )
        .await;
        // Whether or not the close was seen before the next checkout, the
        // next request is answered, on a new connection.
        for _ in 0..3 {
            read(pool.send(chat(&mock, None)).await.expect("send")).await;
        }
        assert_eq!(mock.accepted_connections(), 2);
        assert_eq!(mock.request_count(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_idle_past_the_timeout_is_closed() {
        let mock = MockProvider::start().await.expect("mock");
        let pool = pool(&mock);
        read(pool.send(chat(&mock, None)).await.expect("send")).await;
        tokio::time::advance(IDLE_TIMEOUT - Duration::from_secs(1)).await;
        read(pool.send(chat(&mock, None)).await.expect("send")).await;
        assert_eq!(mock.accepted_connections(), 1);
        tokio::time::advance(IDLE_TIMEOUT + Duration::from_secs(1)).await;
        read(pool.send(chat(&mock, None)).await.expect("send")).await;
        assert_eq!(mock.accepted_connections(), 2);
        assert_eq!(idle_h1(&pool), 1);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let mock = MockProvider::start().await.expect("mock");
        let pool = pool(&mock);
        let req = chat(&mock, None);
        mock.shutdown().await;
        match pool.send(req).await {
            Err(SendError::Connect(why)) => assert!(why.contains("refused"), "{why}"),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("answered"),
        }
    }
}
