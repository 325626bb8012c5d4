//! Listeners: accept loops for the data and admin planes (TLS optional,
//! HTTP/1.1 and h2), a cap on open connections, per-connection header and
//! idle bounds, graceful shutdown with a bounded drain.

mod conn;
pub mod fds;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::body::ProxyBody;
use crate::config::{Bounds, TlsFiles};
use crate::metrics;

/// An accepted socket, on the accepting runtime's reactor or leaving it.
enum Accepted {
    Here(tokio::net::TcpStream),
    Moving(std::net::TcpStream),
}

impl Accepted {
    /// The socket on the current runtime's reactor.
    fn register(self) -> std::io::Result<tokio::net::TcpStream> {
        match self {
            Accepted::Here(s) => Ok(s),
            Accepted::Moving(s) => tokio::net::TcpStream::from_std(s),
        }
    }
}

/// Binds a listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// A TLS acceptor from PEM files (ALPN: h2, http/1.1).
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificates", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{}: {e}", display(&files.key)))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// Bounds on one listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// `data` or `admin`, for metrics.
    pub plane: &'static str,
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_header_list_size: u32,
}

impl ConnLimits {
    /// The data plane's limits: the configured bounds, with the connection
    /// cap derived from the fd limit unless configured.
    pub fn data(bounds: &Bounds, nofile: Option<u64>) -> Self {
        let derived = fds::connection_cap(nofile);
        let max_connections = match bounds.max_connections {
            Some(n) if n > derived => {
                tracing::warn!(
                    configured = n,
                    derived,
                    ?nofile,
                    "server.max_connections is above what the open-files limit allows; \
                     connections past it may fail with \"Too many open files\""
                );
                n
            }
            Some(n) => n,
            None => derived,
        };
        Self {
            plane: "data",
            max_connections,
            header_timeout: bounds.header_timeout,
            idle_timeout: bounds.idle_timeout,
            h2_max_concurrent_streams: bounds.h2_max_concurrent_streams,
            h2_max_header_list_size: bounds.h2_max_header_list_size,
        }
    }

    /// The admin plane's limits: the same timeouts, a small fixed cap kept
    /// inside the fd reserve, so a data-plane flood cannot starve it.
    pub fn admin(bounds: &Bounds) -> Self {
        Self {
            plane: "admin",
            max_connections: fds::ADMIN_MAX_CONNECTIONS,
            header_timeout: bounds.header_timeout,
            idle_timeout: bounds.idle_timeout,
            h2_max_concurrent_streams: bounds.h2_max_concurrent_streams,
            h2_max_header_list_size: bounds.h2_max_header_list_size,
        }
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's own header timer is off: it would also run while an idle
        // HTTP/1.1 connection waits for its next request, cutting keep-alive
        // at `header_timeout`. The connection watcher (`conn`) bounds header
        // reads instead: `header_timeout` for the first request, then
        // `idle_timeout` from the end of the previous response.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.h2_max_concurrent_streams)
            .max_header_list_size(self.h2_max_header_list_size);
        builder
    }
}

/// Serves connections from `listener` with `handler` until `stop` fires,
/// then lets open connections finish for up to `drain`.
///
/// Each connection is served, whole, on one of the runtimes `on` (round
/// robin; see [`crate::worker`]), or on the current one when `on` is empty.
///
/// At most `limits.max_connections` are served at once: past that, the loop
/// stops accepting until one closes, so new connections wait in the kernel's
/// accept queue rather than fail, and connections already open (streams in
/// flight) are unaffected.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: H,
    stop: CancellationToken,
    drain: Duration,
    limits: ConnLimits,
    on: Vec<tokio::runtime::Handle>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let builder = Arc::new(limits.builder());
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    metrics::connection_limit(limits.plane, limits.max_connections);
    // Every connection's task: when the drain time is up, those still open
    // are aborted, and dropping a connection finishes its requests' records
    // (usage line, charge) while the journal and usage writers still run.
    // (Aborting, rather than a signal each connection polls, keeps the
    // connection's own polls, one per chunk of a stream, free of it.) Ended
    // tasks are reaped at each accept, so the set holds at most
    // `max_connections` + 1.
    let mut tasks = JoinSet::new();
    let mut saturated = false;
    let mut next = 0usize;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => {
                saturated = false;
                p
            }
            Err(_) => {
                if !saturated {
                    saturated = true;
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: new connections wait until one closes"
                    );
                }
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // To serve it on another runtime, its socket moves to that
        // runtime's reactor, so its readiness wakes the thread serving it.
        let (stream, runtime) = match on.get(next % on.len().max(1)) {
            Some(h) => match stream.into_std() {
                Ok(s) => (Accepted::Moving(s), Some(h)),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "cannot hand the connection over");
                    continue;
                }
            },
            None => (Accepted::Here(stream), None),
        };
        next = next.wrapping_add(1);
        let handler = handler.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        let connection = async move {
            let _permit = permit;
            let stream = match stream.register() {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "cannot register the connection");
                    return;
                }
            };
            let _open = metrics::OpenConnection::start(limits.plane);
            let serve = async {
                match tls {
                    None => {
                        conn::serve(TokioIo::new(stream), &builder, handler, &limits, &stop).await
                    }
                    Some(acceptor) => {
                        // The handshake counts against the time to the first request.
                        match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => {
                                conn::serve(TokioIo::new(s), &builder, handler, &limits, &stop)
                                    .await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                Ok(())
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                Ok(())
                            }
                        }
                    }
                }
            };
            if let Err(e) = serve.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        };
        while tasks.try_join_next().is_some() {}
        match runtime {
            Some(h) => drop(tasks.spawn_on(connection, h)),
            None => drop(tasks.spawn(connection)),
        }
    }
    drop(listener);
    let all_ended = async |tasks: &mut JoinSet<()>| while tasks.join_next().await.is_some() {};
    if tokio::time::timeout(drain, all_ended(&mut tasks))
        .await
        .is_err()
    {
        tracing::warn!(?drain, "drain timeout: closing remaining connections");
        tasks.abort_all();
        // Dropping a connection finishes its records at once; this only
        // waits for the tasks to observe the abort.
        if tokio::time::timeout(Duration::from_secs(5), all_ended(&mut tasks))
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the drain timeout");
        }
    }
}
