//! Getting finished spans to the collector: a bounded queue filled on the
//! request path (never waits; a full queue drops the span and counts it)
//! and one tokio task that sends batches over OTLP/HTTP.
//!
//! Our own processor instead of the SDK's batch processor: the SDK's runs a
//! thread with a blocking HTTP client (reqwest), does not count what it
//! drops, and would not share the runtime our hyper client lives on.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};
use opentelemetry_sdk::Resource;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::TelemetryConfig;
use crate::metrics;

/// Hands finished spans to the export task without waiting.
#[derive(Debug)]
pub struct QueueProcessor {
    tx: mpsc::Sender<SpanData>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            metrics::trace_span_dropped();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// The export task is stopped (and drained) by `Exporter::stop`, which
    /// can wait for it; the SDK's shutdown is synchronous.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export task and how to stop it.
pub struct Exporter {
    stop: CancellationToken,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    timeout: Duration,
}

impl Exporter {
    /// Builds the OTLP exporter and starts its task; returns the processor
    /// to register with the tracer provider.
    pub fn start(
        cfg: &TelemetryConfig,
        resource: &Resource,
    ) -> Result<(QueueProcessor, Exporter), String> {
        let mut otlp = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(http_client(cfg.timeout)?)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(cfg.otlp_endpoint.clone())
            .with_timeout(cfg.timeout)
            .build()
            .map_err(|e| format!("OTLP exporter: {e}"))?;
        otlp.set_resource(resource);
        let (tx, rx) = mpsc::channel(cfg.max_queue_spans);
        let stop = CancellationToken::new();
        let batch = Batch {
            max: cfg.max_export_batch,
            every: cfg.export_interval,
        };
        let task = tokio::spawn(run(otlp, rx, batch, stop.clone()));
        Ok((
            QueueProcessor { tx },
            Exporter {
                stop,
                task: tokio::sync::Mutex::new(Some(task)),
                timeout: cfg.timeout,
            },
        ))
    }

    /// Sends what is queued and stops the task (bounded by the export
    /// timeout, twice: one batch in flight, then the rest).
    pub async fn stop(&self) {
        self.stop.cancel();
        if let Some(task) = self.task.lock().await.take() {
            if tokio::time::timeout(self.timeout * 2, task).await.is_err() {
                tracing::warn!("trace export did not finish in time; spans still queued are lost");
            }
        }
    }
}

/// Batch bounds.
#[derive(Clone, Copy)]
struct Batch {
    max: usize,
    every: Duration,
}

async fn run(
    otlp: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanData>,
    batch: Batch,
    stop: CancellationToken,
) {
    let mut spans = Vec::with_capacity(batch.max);
    let mut tick = tokio::time::interval(batch.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            span = rx.recv() => match span {
                Some(s) => {
                    spans.push(s);
                    if spans.len() >= batch.max {
                        send(&otlp, &mut spans).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => send(&otlp, &mut spans).await,
        }
    }
    // Shutting down: what is queued now goes out, in batches.
    while let Ok(s) = rx.try_recv() {
        spans.push(s);
        if spans.len() >= batch.max {
            send(&otlp, &mut spans).await;
        }
    }
    send(&otlp, &mut spans).await;
}

async fn send(otlp: &opentelemetry_otlp::SpanExporter, spans: &mut Vec<SpanData>) {
    if spans.is_empty() {
        return;
    }
    let n = spans.len();
    let batch = std::mem::replace(spans, Vec::with_capacity(n));
    // The exporter bounds itself (`timeout`, retries included).
    match otlp.export(batch).await {
        Ok(()) => metrics::trace_spans_exported(n, true),
        Err(e) => {
            metrics::trace_spans_exported(n, false);
            tracing::warn!(spans = n, error = %e, "trace export failed");
        }
    }
}

/// An HTTP(S) client for the collector (webpki roots, rustls with ring: the
/// same stack as the provider clients).
fn http_client(
    timeout: Duration,
) -> Result<
    opentelemetry_http::hyper::HyperClient<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    >,
    String,
> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(opentelemetry_http::hyper::HyperClient::new(
        https, timeout, None,
    ))
}
