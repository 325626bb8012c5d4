//! The floor under Sluice's CPU per request: the same HTTP stacks with none of the gateway.
//!
//! `cargo bench --bench floor -- --listen 127.0.0.1:18780 --upstream http://127.0.0.1:18081/v1
//! [--workers 2]` serves until killed. It is a reverse proxy built from exactly the parts Sluice's
//! data plane uses for bytes: hyper's HTTP/1 server on single-threaded runtimes (one per worker,
//! each accepting from the same listener), the request body read whole, and the upstream request
//! sent through Sluice's own per-worker pool (`sluice::upstream::Pool`), the answer streamed back.
//! No parsing of the body, no routing, limits, accounting, metrics or logging.
//!
//! Drive it like Sluice and nginx (`wrk`, or the load harness's scenarios pointed at it) and read
//! its CPU from /proc: what Sluice costs above this figure is the gateway; what this costs above
//! nginx is hyper and tokio. bench/RESULTS.md has the numbers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sluice::config::Config;
use sluice::upstream::{pool::Body, Upstream};

#[expect(
    clippy::print_stderr,
    reason = "a bench tool's usage and start-up errors"
)]
fn main() {
    let mut listen: Option<SocketAddr> = None;
    let mut upstream: Option<String> = None;
    let mut workers = 2usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().and_then(|v| v.parse().ok()),
            "--upstream" => upstream = args.next(),
            "--workers" => workers = args.next().and_then(|v| v.parse().ok()).unwrap_or(2),
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    let (Some(listen), Some(upstream)) = (listen, upstream) else {
        eprintln!("usage: floor --listen ADDR --upstream URL [--workers N]");
        return;
    };
    let text = format!(
        "[[providers]]\nname = \"up\"\nkind = \"openai-compatible\"\nbase_url = \"{upstream}\"\nclient_keys = true\n"
    );
    let cfg = match Config::parse(&text, "floor", &|_| None) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("floor: {e}");
            return;
        }
    };
    let std_listener = match std::net::TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("floor: bind {listen}: {e}");
            return;
        }
    };
    let _ = std_listener.set_nonblocking(true);
    let threads: Vec<_> = (0..workers.max(1))
        .filter_map(|_| {
            let listener = std_listener.try_clone().ok()?;
            let provider = cfg.providers.first()?.clone();
            std::thread::Builder::new()
                .name("floor-worker".into())
                .spawn(move || serve(listener, provider))
                .ok()
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// One worker: its own runtime, its own pool, accepting from the shared listener.
fn serve(listener: std::net::TcpListener, provider: sluice::config::ProviderConfig) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        let Ok(upstream) = Upstream::new(&provider) else {
            return;
        };
        let upstream = Arc::new(upstream);
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| proxy(upstream.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
}

/// Forwards one request: body read whole, headers as they came (the pool sets `host`).
async fn proxy(
    upstream: Arc<Upstream>,
    req: Request<Incoming>,
) -> Result<Response<Either>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(Response::new(Either::Full(Full::new(Bytes::new())))),
    };
    parts.headers.remove(http::header::HOST);
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let Ok(uri) = upstream.uri(pq) else {
        return Ok(Response::new(Either::Full(Full::new(Bytes::new()))));
    };
    parts.uri = uri;
    let out = Request::from_parts(parts, Full::new(body));
    Ok(match upstream.pool().send(out).await {
        Ok(resp) => resp.map(Either::Upstream),
        Err(_) => {
            let mut r = Response::new(Either::Full(Full::new(Bytes::from_static(b"bad gateway"))));
            *r.status_mut() = http::StatusCode::BAD_GATEWAY;
            r
        }
    })
}

/// An upstream answer streamed through, or a local one.
enum Either {
    Upstream(Body),
    Full(Full<Bytes>),
}

impl http_body::Body for Either {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Either::Upstream(b) => std::pin::Pin::new(b).poll_frame(cx),
            Either::Full(f) => std::pin::Pin::new(f)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Either::Upstream(b) => b.is_end_stream(),
            Either::Full(f) => f.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Either::Upstream(b) => b.size_hint(),
            Either::Full(f) => f.size_hint(),
        }
    }
}
