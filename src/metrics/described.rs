//! Every described metric on `/metrics` from start-up. The Prometheus
//! recorder only writes a metric once it has a sample, so a metric that
//! only moves under a condition (a breaker opening, Redis going away, a
//! budget alert) would be missing until then — and a dashboard or alert
//! rule naming it could not be checked against what Sluice exports. This
//! wraps the recorder, keeps what `describe_*` said, and appends `# HELP` /
//! `# TYPE` lines (no sample) for the described metrics not yet written.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::formatting::{write_help_line, write_type_line};
use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};

/// (name, Prometheus type, help) of every described metric.
type Described = Arc<Mutex<Vec<(String, &'static str, String)>>>;

/// The global recorder: Prometheus's, remembering descriptions.
pub(super) struct Describing {
    inner: PrometheusRecorder,
    described: Described,
}

impl Describing {
    pub(super) fn new(inner: PrometheusRecorder) -> (Self, Exporter) {
        let described = Described::default();
        let exporter = Exporter {
            handle: inner.handle(),
            described: described.clone(),
        };
        (Describing { inner, described }, exporter)
    }

    fn note(&self, key: &KeyName, kind: &'static str, help: &SharedString) {
        let mut d = self.described.lock().unwrap_or_else(|e| e.into_inner());
        if !d.iter().any(|(n, _, _)| n == key.as_str()) {
            d.push((key.as_str().to_owned(), kind, help.to_string()));
        }
    }
}

impl Recorder for Describing {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.note(&key, "counter", &description);
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.note(&key, "gauge", &description);
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.note(&key, "histogram", &description);
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.inner.register_histogram(key, metadata)
    }
}

/// Renders `/metrics` and runs the recorder's upkeep.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    described: Described,
}

impl Exporter {
    /// The Prometheus text: every metric with samples, then the described
    /// ones without any yet (their `# HELP` and `# TYPE` only).
    pub fn render(&self) -> String {
        let mut out = self.handle.render();
        // One pass over the output for the names it already has.
        let written: HashSet<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect();
        let described = self.described.lock().unwrap_or_else(|e| e.into_inner());
        for (name, kind, help) in described.iter() {
            if !written.contains(name) {
                write_help_line(&mut out, name, help);
                write_type_line(&mut out, name, kind);
                out.push('\n');
            }
        }
        out
    }

    /// Drains histogram samples into their buckets (see
    /// `PrometheusHandle::run_upkeep`).
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn described_metrics_show_before_their_first_sample() {
        let (rec, exporter) = Describing::new(PrometheusBuilder::new().build_recorder());
        metrics::with_local_recorder(&rec, || {
            metrics::describe_counter!("t_moved_total", "Moved.");
            metrics::describe_gauge!("t_idle", "Never set.");
            metrics::describe_histogram!("t_seconds", Unit::Seconds, "Never recorded.");
            metrics::counter!("t_moved_total").increment(2);
        });
        let text = exporter.render();
        assert!(text.contains("t_moved_total 2"), "{text}");
        assert_eq!(
            text.matches("# TYPE t_moved_total counter").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("# HELP t_idle Never set.\n# TYPE t_idle gauge\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE t_seconds histogram\n"), "{text}");
        assert!(!text.contains("t_idle 0"), "no invented sample: {text}");
    }
}
