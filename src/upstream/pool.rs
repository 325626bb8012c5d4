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
//! An HTTP/1 connection has no task of its own either: whoever holds it
//! drives it (`H1::drive`), the request until its answer's head is in,
//! then the answer's body, which reads the socket in the task that writes
//! to the client. A streamed event is read, decoded and written in one
//! turn of one task, as nginx does it in one pass of its loop; with a
//! task per connection every event was handed from one task to the other
//! and back (bench/RESULTS.md). An idle pooled connection is driven by
//! nobody: one the provider closed meanwhile is found out when a checkout
//! drives it, and another is tried.
//!
//! Bounds: each worker keeps at most [`MAX_IDLE`] idle HTTP/1 connections
//! to a provider (one more is closed when its answer ends) and closes one
//! idle for [`IDLE_TIMEOUT`] when the pool is next used. Over TLS, ALPN
//! may choose HTTP/2: then one connection per worker carries every
//! request, as hyper-util's pool did; when it has no stream free (the
//! provider's concurrent-stream limit), a request opens another, which is
//! shared from then on while the first finishes its streams and closes.

use std::future::{poll_fn, Future as _};
use std::pin::{pin, Pin};
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
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
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

/// A dialled connection to a provider, plain or TLS.
type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// An HTTP/1 connection and the handle requests are sent through; it
/// makes progress only while its holder polls [`H1::drive`].
struct H1 {
    tx: http1::SendRequest<Body1>,
    /// `None` once the connection has ended (closed or failed): dropping
    /// it fails whatever was still waiting on it, so nothing waits forever.
    conn: Option<Pin<Box<http1::Connection<Io, Body1>>>>,
}

impl H1 {
    /// Lets the connection write what is queued, read what has arrived
    /// and hand it on; registers `cx` for what it waits for.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = &mut self.conn {
            if let Poll::Ready(ended) = conn.as_mut().poll(cx) {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "upstream HTTP/1 connection ended");
                }
                self.conn = None;
            }
        }
    }
}

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
    h1: Vec<(H1, Instant)>,
    /// The HTTP/2 connection every request shares, once ALPN chose it.
    h2: Option<http2::SendRequest<Body1>>,
}

/// A connection a request holds.
enum Conn {
    H1(H1),
    H2(http2::SendRequest<Body1>),
}

/// Why sending on a connection failed. The request comes back unboxed
/// when it may be sent again: boxing it would allocate on every failure.
enum Failed {
    /// The connection had closed before the request was handed to it (a
    /// pooled one the provider closed while it was idle).
    Closed(Request<Body1>, hyper::Error),
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
                // Found out without a word sent: the next idle one is
                // tried (at most the pool's size), then a new one.
                Err(Failed::Closed(back, why)) if reused => {
                    tracing::debug!(error = %why, "pooled connection had closed while idle; trying another");
                    req = back;
                }
                Err(Failed::Unsent(back, why)) if reused && stale < STALE_TRIES => {
                    tracing::debug!(error = %why, "pooled connection closed before the request went out; trying another");
                    stale += 1;
                    req = back;
                }
                Err(Failed::Closed(_, e) | Failed::Unsent(_, e) | Failed::Sent(e)) => {
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
        let (h1, at) = idle.h1.pop()?;
        if at.elapsed() > IDLE_TIMEOUT {
            // The rest were freed earlier still.
            idle.h1.clear();
            return None;
        }
        // Whether the provider closed it while it was idle is found out
        // when it is driven, before the request goes out.
        Some(Conn::H1(h1))
    }

    /// Takes back an HTTP/1 connection whose answer has ended.
    fn checkin(&self, h1: H1) {
        if h1.conn.is_none() {
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
            idle.h1.push((h1, now));
        }
    }

    /// Dials the provider (TCP, then TLS with ALPN where it is https); an
    /// HTTP/2 connection gets a task on this worker (its streams are
    /// shared), an HTTP/1 one goes to the request that asked for it.
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
            Ok(Conn::H1(H1 {
                tx,
                conn: Some(Box::pin(conn)),
            }))
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
            Conn::H1(mut h1) => {
                // The connection asks for the next request once it has
                // finished the last answer, which it does when driven.
                let ready = poll_fn(|cx| {
                    h1.drive(cx);
                    h1.tx.poll_ready(cx)
                })
                .await;
                if let Err(e) = ready {
                    return Err(Failed::Closed(req, e));
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
                let mut sent = pin!(h1.tx.try_send_request(req));
                let answered = poll_fn(|cx| {
                    h1.drive(cx);
                    sent.as_mut().poll(cx)
                })
                .await;
                match answered {
                    Ok(resp) => Ok(resp.map(|inner| Body::new(inner, Some((self.clone(), h1))))),
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

/// A provider's answer body. Over HTTP/1 it drives its connection, and
/// gives it back to its pool when the body ends (dropped before that, the
/// connection closes).
pub struct Body {
    inner: Incoming,
    back: Option<(Arc<Pool>, H1)>,
    /// A failure, held for one turn: when a body fails, hyper closes the
    /// client's connection without writing what it has buffered, and the
    /// head and data the provider sent before it broke off should reach
    /// the client (the connection is read in the client's task, so they
    /// and the failure often come in one turn).
    held: Option<hyper::Error>,
}

impl Body {
    fn new(inner: Incoming, back: Option<(Arc<Pool>, H1)>) -> Self {
        let mut body = Self {
            inner,
            back,
            held: None,
        };
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
        if let Some(e) = this.held.take() {
            return Poll::Ready(Some(Err(e)));
        }
        // The connection reads and decodes first, then the chunk it handed
        // over is taken: one poll of hyper's body channel a chunk. (Taking
        // first found the channel empty about once a chunk, and each of its
        // polls is a handful of atomic operations: bench/RESULTS.md.)
        if let Some((_, h1)) = &mut this.back {
            h1.drive(cx);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(e))) => {
                // A broken answer's connection is not reused.
                this.back = None;
                // The client's connection writes out what it has while
                // this is pending; the failure comes next turn.
                this.held = Some(e);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
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

    #[tokio::test]
    async fn idle_connections_the_provider_closed_are_passed_over_however_many() {
        use hyper::service::service_fn;
        use tokio_util::sync::CancellationToken;

        // A provider that keeps its connections open until told to close
        // them all (as one does at its idle timeout or on a restart).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let close = CancellationToken::new();
        let closing = close.clone();
        let server = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let (tcp, _) = accepted.expect("accept");
                        let close = closing.clone();
                        conns.spawn(async move {
                            let answer = service_fn(|_| async {
                                Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                    Bytes::from_static(b"{}"),
                                )))
                            });
                            let conn = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(tcp), answer);
                            let mut conn = std::pin::pin!(conn);
                            tokio::select! {
                                _ = conn.as_mut() => {}
                                () = close.cancelled() => {}
                            }
                        });
                    }
                    () = closing.cancelled() => break,
                }
            }
            while conns.join_next().await.is_some() {}
            listener
        });
        let text = format!(
            "[[providers]]\nname = \"p\"\nkind = \"openai-compatible\"\nbase_url = \"http://{addr}/v1\"\napi_key_env = \"K\"\n"
        );
        let cfg = Config::parse(&text, "t", &|_| Some("sk-1".into())).expect("config");
        let upstream = Upstream::new(&cfg.providers[0]).expect("upstream");
        let pool = upstream.pool().clone();
        let req = move || {
            Request::post(format!("http://{addr}/v1/chat/completions"))
                .body(Full::new(Bytes::from_static(b"{}")))
                .expect("request")
        };
        // Six answers at once, each on a connection of its own: more idle
        // connections than the tries a request gets when a connection
        // fails after it took the request.
        let sends = (0..6).map(|_| pool.send(req()));
        for resp in futures_util::future::join_all(sends).await {
            read(resp.expect("send")).await;
        }
        assert_eq!(idle_h1(&pool), 6);
        close.cancel();
        let listener = server.await.expect("server");
        // Let the runtime take in the closes.
        tokio::task::yield_now().await;
        // The closed ones are passed over and a new connection is opened.
        let next = tokio::spawn({
            let pool = pool.clone();
            async move { read(pool.send(req()).await.expect("send")).await }
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let answer = service_fn(|_| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), answer),
        );
        assert_eq!(next.await.expect("join"), Bytes::from_static(b"{}"));
        assert_eq!(idle_h1(&pool), 1);
    }

    #[tokio::test]
    async fn a_streamed_answer_is_read_as_it_is_consumed() {
        let mock = MockProvider::start().await.expect("mock");
        let pool = pool(&mock);
        let mut req = chat(&mock, None);
        req.headers_mut().insert(
            http::HeaderName::from_static("x-mock-words"),
            HeaderValue::from_static("5"),
        );
        *req.body_mut() = Full::new(Bytes::from_static(
            br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        ));
        let body = read(pool.send(req).await.expect("send")).await;
        let text = std::str::from_utf8(&body).expect("utf-8");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert!(text.matches("data: ").count() > 5, "{text}");
        // The connection was driven to the end of the answer and is free.
        assert_eq!(idle_h1(&pool), 1);
        read(pool.send(chat(&mock, None)).await.expect("send")).await;
        assert_eq!(mock.accepted_connections(), 1);
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
