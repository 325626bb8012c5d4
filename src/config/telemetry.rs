//! `[telemetry]`: OpenTelemetry traces exported over OTLP/HTTP (protobuf).
//! Off unless `otlp_endpoint` is set.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::Validator;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    pub sampling_ratio: Option<f64>,
    pub service_name: Option<String>,
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    pub timeout: Option<String>,
    pub export_interval: Option<String>,
    pub max_queue_spans: Option<usize>,
    pub max_export_batch: Option<usize>,
}

/// Where and how traces are exported (present only when `otlp_endpoint` is set).
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP traces URL (`http://host:4318/v1/traces`;
    /// a bare `http://host:4318` gets `/v1/traces` added).
    pub otlp_endpoint: String,
    /// The share of new traces (no sampled client parent) that are recorded;
    /// a client's `traceparent` sampling decision is always honoured.
    pub sampling_ratio: f64,
    pub service_name: String,
    pub resource_attributes: Vec<(String, String)>,
    /// One export request's bound (connect, send and answer).
    pub timeout: Duration,
    /// How often queued spans are sent (also sent once a batch is full).
    pub export_interval: Duration,
    /// Finished spans waiting for export; past it new spans are dropped and
    /// counted in `sluice_trace_spans_dropped_total`.
    pub max_queue_spans: usize,
    /// The most spans in one export request.
    pub max_export_batch: usize,
}

/// Default of `max_queue_spans`: a few seconds of traffic at a few
/// thousand requests a second, at most a few MB of span data.
pub const DEFAULT_MAX_QUEUE_SPANS: usize = 8192;
/// Default of `max_export_batch`.
pub const DEFAULT_MAX_EXPORT_BATCH: usize = 512;

impl Validator<'_> {
    pub(super) fn telemetry(&mut self, raw: Option<&RawTelemetry>) -> Option<TelemetryConfig> {
        let raw = raw?;
        let field = "telemetry";
        let endpoint = raw.otlp_endpoint.as_deref()?.trim();
        let uri = endpoint.parse::<http::Uri>();
        match uri.as_ref().map(|u| (u.scheme_str(), u.host())) {
            Ok((Some("http" | "https"), Some(_))) => {}
            _ => self.err(
                &format!("{field}.otlp_endpoint"),
                format!("{endpoint:?} is not an http:// or https:// URL (e.g. \"http://127.0.0.1:4318/v1/traces\")"),
            ),
        }
        let sampling_ratio = raw.sampling_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sampling_ratio) {
            self.err(
                &format!("{field}.sampling_ratio"),
                "must be between 0 and 1",
            );
        }
        let service_name = raw.service_name.clone().unwrap_or_else(|| "sluice".into());
        if service_name.trim().is_empty() {
            self.err(&format!("{field}.service_name"), "must not be empty");
        }
        let mut positive = |name: &str, v: Option<usize>, default: usize| match v {
            Some(0) => {
                self.err(&format!("{field}.{name}"), "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        };
        let max_queue_spans = positive(
            "max_queue_spans",
            raw.max_queue_spans,
            DEFAULT_MAX_QUEUE_SPANS,
        );
        let max_export_batch = positive(
            "max_export_batch",
            raw.max_export_batch,
            DEFAULT_MAX_EXPORT_BATCH,
        );
        let timeout = self.duration(
            &format!("{field}.timeout"),
            raw.timeout.as_deref(),
            Duration::from_secs(10),
        );
        let export_interval = self.duration(
            &format!("{field}.export_interval"),
            raw.export_interval.as_deref(),
            Duration::from_secs(5),
        );
        for (name, d) in [("timeout", timeout), ("export_interval", export_interval)] {
            if d.is_zero() {
                self.err(&format!("{field}.{name}"), "must be greater than zero");
            }
        }
        // A bare collector address gets OTLP/HTTP's traces path, as the
        // `OTEL_EXPORTER_OTLP_ENDPOINT` convention does.
        let bare = uri.as_ref().is_ok_and(|u| matches!(u.path(), "" | "/"));
        let otlp_endpoint = if bare {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        } else {
            endpoint.to_owned()
        };
        Some(TelemetryConfig {
            otlp_endpoint,
            sampling_ratio,
            service_name,
            resource_attributes: raw
                .resource_attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            timeout,
            export_interval,
            max_queue_spans,
            max_export_batch,
        })
    }
}
