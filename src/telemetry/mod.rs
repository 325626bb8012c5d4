//! OpenTelemetry traces: one span per request (a child of the client's W3C
//! `traceparent` when it sent one) and one per upstream attempt (whose
//! context goes upstream in `traceparent`), exported over OTLP/HTTP.
//!
//! Spans are made with the OpenTelemetry API directly, not through
//! `tracing` and a bridge layer: the request path then pays for exactly two
//! spans per request when tracing is on (no per-event layer, no span
//! registry), and for nothing but one optional header parse when it is off
//! (`App::tracing` is `None`, so no span is ever built).

mod attrs;
mod export;

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, TraceId, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

pub use attrs::{system, AttemptEnd, AttemptStart, RequestEnd};

use crate::config::TelemetryConfig;
use export::Exporter;

/// The process's tracer and its exporter (fixed at start).
pub struct Tracing {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    exporter: Exporter,
}

impl Tracing {
    /// Starts the exporter task (inside the runtime).
    pub fn start(cfg: &TelemetryConfig) -> Result<Tracing, String> {
        let resource = Resource::builder()
            .with_service_name(cfg.service_name.clone())
            .with_attributes(
                cfg.resource_attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        let (processor, exporter) = Exporter::start(cfg, &resource)?;
        // A sampled client parent is always recorded, an unsampled one never;
        // new traces at `sampling_ratio`.
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sampling_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("sluice");
        Ok(Tracing {
            tracer,
            provider,
            exporter,
        })
    }

    /// Exports what is queued and stops (at shutdown, after the data plane
    /// drained, so the last requests' spans are in the queue).
    pub async fn shutdown(&self) {
        self.exporter.stop().await;
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(1)) {
            tracing::debug!(error = %e, "tracer provider shutdown");
        }
    }
}

/// A request's trace: its span when tracing is on, and the trace id for the
/// usage record (the span's, or with tracing off the client's `traceparent`).
#[derive(Default)]
pub struct RequestTrace {
    /// The request span, as a context its attempts are children of.
    span: Option<Box<(Context, SdkTracer)>>,
    trace_id: Option<TraceId>,
}

impl RequestTrace {
    /// Starts the request span (continuing the client's `traceparent`), or
    /// with tracing off only notes the client's trace id.
    pub fn start(
        tracing: Option<&Tracing>,
        method: &http::Method,
        headers: &HeaderMap,
        request_id: &str,
    ) -> Self {
        let Some(t) = tracing else {
            return RequestTrace {
                span: None,
                trace_id: client_trace_id(headers),
            };
        };
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let span = t
            .tracer
            .span_builder("request")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("sluice.request_id", request_id.to_owned()),
                KeyValue::new("http.request.method", method.to_string()),
            ])
            .start_with_context(&t.tracer, &parent);
        let trace_id = Some(span.span_context().trace_id());
        RequestTrace {
            span: Some(Box::new((parent.with_span(span), t.tracer.clone()))),
            trace_id,
        }
    }

    /// The trace id, as 32 lowercase hex digits.
    pub fn trace_id(&self) -> Option<String> {
        self.trace_id.map(|t| t.to_string())
    }

    /// Starts an attempt span (a child of the request span); nothing when
    /// tracing is off.
    /// (`start` is called only then).
    pub fn attempt<'a>(&self, start: impl FnOnce() -> AttemptStart<'a>) -> AttemptSpan {
        let Some(b) = &self.span else {
            return AttemptSpan(None);
        };
        let a = start();
        let (cx, tracer) = &**b;
        let span = tracer
            .span_builder("attempt")
            .with_kind(SpanKind::Client)
            .with_attributes(a.attributes())
            .start_with_context(tracer, cx);
        AttemptSpan(Some(span))
    }

    /// Whether there is a request span to end.
    pub fn is_open(&self) -> bool {
        self.span.is_some()
    }

    /// Ends the request span with what the request came to (once: a span
    /// ends only once).
    pub fn finish(&self, end: &RequestEnd<'_>) {
        let Some(b) = &self.span else {
            return;
        };
        let span = b.0.span();
        if span.is_recording() {
            span.set_attributes(end.attributes());
            if let Some(e) = end.failure() {
                span.set_status(Status::error(e));
            }
        }
        span.end();
    }
}

/// An upstream attempt's span (none when tracing is off).
pub struct AttemptSpan(Option<opentelemetry_sdk::trace::Span>);

impl AttemptSpan {
    /// The W3C `traceparent` naming this attempt, for the upstream request
    /// (sent even when the trace is not sampled, with its flags saying so).
    pub fn traceparent(&self) -> Option<HeaderValue> {
        let sc = self.0.as_ref()?.span_context();
        let v = format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        );
        HeaderValue::from_str(&v).ok()
    }

    /// Ends the span with how the attempt went.
    pub fn end(self, end: &AttemptEnd) {
        let Some(mut span) = self.0 else {
            return;
        };
        if span.is_recording() {
            span.set_attributes(end.attributes());
            if end.failed() {
                span.set_status(Status::error(end.outcome));
            }
        }
        span.end();
    }
}

/// The trace id of a well-formed W3C `traceparent` (tracing off: only the
/// usage record wants it). version-traceid-parentid-flags; all-zero ids are
/// invalid.
fn client_trace_id(headers: &HeaderMap) -> Option<TraceId> {
    let v = headers.get("traceparent")?.to_str().ok()?.trim();
    let mut parts = v.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(version, 2) || version == "ff" || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    if !hex(trace, 32) || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    TraceId::from_hex(trace)
        .ok()
        .filter(|t| *t != TraceId::INVALID)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(tp: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_str(tp).expect("value"));
        h
    }

    #[test]
    fn client_trace_ids() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            client_trace_id(&headers(ok)).map(|t| t.to_string()),
            Some("4bf92f3577b34da6a3ce929d0e0e4736".into())
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert_eq!(client_trace_id(&headers(bad)), None, "{bad}");
        }
        assert_eq!(client_trace_id(&HeaderMap::new()), None);
    }

    #[test]
    fn off_means_no_span() {
        let t = RequestTrace::start(None, &http::Method::POST, &HeaderMap::new(), "id");
        assert!(t.trace_id().is_none());
        let a = t.attempt(|| unreachable!("tracing is off"));
        assert!(a.traceparent().is_none());
    }
}
