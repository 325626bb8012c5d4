//! Prometheus metrics: every metric described once at start-up, recorded
//! through small functions so names and labels live in one place.
//! Labels stay low-cardinality: never a user id or key. Every string label
//! value comes from the config (model rules, provider, rule and budget
//! names) and still passes `label`: printable ASCII, at most
//! `MAX_LABEL_CHARS`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram, SharedString, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

mod described;
pub use described::Exporter;

/// Installs the global recorder and describes every metric.
pub fn install() -> Result<Exporter, String> {
    let latency = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ];
    let overhead = [
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005, 0.01,
        0.025, 0.05, 0.1,
    ];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("sluice_overhead_seconds".into()), &overhead)
        .and_then(|b| b.set_buckets(&latency))
        .map_err(|e| e.to_string())?
        .build_recorder();
    let (recorder, exporter) = described::Describing::new(recorder);
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    describe();
    let _ = INFLIGHT.set(gauge!("sluice_inflight_requests"));
    Ok(exporter)
}

fn describe() {
    describe_gauge!(
        "sluice_cache_bytes",
        Unit::Bytes,
        "Bytes held by the response cache."
    );
    describe_gauge!("sluice_cache_entries", "Entries in the response cache.");
    describe_counter!("sluice_cache_hits_total", "Response cache hits.");
    describe_gauge!(
        "sluice_semantic_cache_entries",
        "Entries in the semantic cache."
    );
    describe_gauge!(
        "sluice_semantic_cache_bytes",
        Unit::Bytes,
        "Bytes held by the semantic cache (answers, vectors, bookkeeping)."
    );
    describe_counter!(
        "sluice_semantic_cache_lookups_total",
        "Semantic cache lookups by result (hit, would_hit, miss, embed_error, skip_*)."
    );
    describe_histogram!(
        "sluice_semantic_cache_lookup_seconds",
        Unit::Seconds,
        "Semantic cache lookup time, the embedding call included."
    );
    describe_counter!(
        "sluice_batch_lines_total",
        "Batch results lines read back, by outcome (charged, already_charged, not_charged, skipped)."
    );
    describe_counter!(
        "sluice_cost_nanodollars_total",
        "Spend by model, in nano-dollars (1e-9 USD; a cache hit costs nothing)."
    );
    describe_counter!(
        "sluice_retries_total",
        "Upstream retries (a further attempt after a failed one)."
    );
    describe_counter!(
        "sluice_retry_budget_exhausted_total",
        "Retries not made because the deployment's retry budget was spent, by deployment."
    );
    describe_gauge!(
        "sluice_circuit_open",
        "1 while a deployment's circuit breaker is open, else 0."
    );
    describe_counter!(
        "sluice_rate_limited_total",
        "Requests refused by a rate limit, by rule."
    );
    describe_counter!(
        "sluice_experiment_requests_total",
        "Finished requests per experiment arm, by outcome (error: 5xx, timeout, broken stream)."
    );
    describe_gauge!(
        "sluice_experiment_candidate_percent",
        "The candidate arm's share of an experiment's traffic, in percent."
    );
    describe_counter!(
        "sluice_runs_untracked_total",
        "Agent runs not tracked by [runs] because its map was full (served)."
    );
    describe_counter!(
        "sluice_run_limited_total",
        "Requests refused by [runs] totals, by limit (requests, tokens)."
    );
    describe_counter!(
        "sluice_shadow_requests_total",
        "Shadow copies by outcome (sent, dropped_full, dropped_budget, error)."
    );
    describe_counter!(
        "sluice_shadow_cost_nanodollars_total",
        "What shadow copies cost, in nano-dollars (never charged to a client's budgets)."
    );
    describe_counter!(
        "sluice_experiment_rollbacks_total",
        "Experiments rolled back by a guard."
    );
    describe_counter!("sluice_cache_misses_total", "Response cache misses.");
    describe_counter!(
        "sluice_cache_evictions_total",
        "Response cache entries evicted (size or TTL)."
    );
    describe_counter!(
        "sluice_cost_anomalies_total",
        "Spend-rate anomalies flagged, by dimension (user, feature)."
    );
    describe_counter!(
        "sluice_killed_requests_total",
        "Requests a kill switch refused or sent to its replacement, by kind (key, feature, model, model_replaced)."
    );
    describe_counter!(
        "sluice_faults_injected_total",
        "Chaos faults injected, by fault (a [[faults]] name, or \"runtime\" for every fault set through /admin/faults) and kind (delay, slow_chunks, status_429, status_500, status_503, status_529, context_length, truncate, malformed, reset)."
    );
    describe_gauge!(
        "sluice_kill_switches",
        "Kill switches in force (from the config and the admin API)."
    );
    describe_counter!(
        "sluice_usage_dropped_total",
        "Usage records dropped because 64 MiB of records were already waiting for the sink."
    );
    describe_counter!(
        "sluice_trace_spans_dropped_total",
        "Finished spans dropped because [telemetry] max_queue_spans were already waiting for export."
    );
    describe_counter!(
        "sluice_trace_spans_exported_total",
        "Spans sent to the OTLP collector, by result (ok, error)."
    );
    describe_counter!(
        "sluice_usage_write_errors_total",
        "Failed usage-log writes (the record is lost; the error is logged)."
    );
    describe_counter!(
        "sluice_loops_detected_total",
        "Requests repeated past [loop_detection] max_repeats, by action (reject, alert)."
    );
    describe_counter!(
        "sluice_loops_untracked_total",
        "Requests loop detection could not remember because its map was full."
    );
    describe_counter!(
        "sluice_cache_shared_total",
        "Shared (Redis) cache level: lookups after a local miss (hit, miss), answers written (stored), failed calls (error)."
    );
    describe_gauge!(
        "sluice_state_up",
        "1 while the shared state store (Redis) answers, 0 while it is unavailable."
    );
    describe_counter!(
        "sluice_state_errors_total",
        "Failed or timed-out calls to the shared state store, by operation."
    );
    describe_counter!(
        "sluice_state_fail_open_total",
        "Requests served under local counters while the shared state store was unavailable."
    );
    describe_counter!(
        "sluice_state_settle_lost_total",
        "Settlements given up on after retrying for 5 minutes (their charge is not in Redis)."
    );
    describe_counter!(
        "sluice_budget_rejected_total",
        "Requests refused because a budget was exhausted, by budget."
    );
    describe_counter!(
        "sluice_budget_alerts_total",
        "Budget alert thresholds crossed, by budget and threshold."
    );
    describe_counter!(
        "sluice_requests_total",
        "Requests answered, by model, provider, endpoint, status class and cache result."
    );
    describe_histogram!(
        "sluice_request_duration_seconds",
        Unit::Seconds,
        "Time from request arrival to the end of the response body, by endpoint and model."
    );
    describe_histogram!(
        "sluice_overhead_seconds",
        Unit::Seconds,
        "Time Sluice spent on a request outside of waiting for the upstream."
    );
    describe_histogram!(
        "sluice_ttft_seconds",
        Unit::Seconds,
        "Time from request arrival to the first response body byte, by endpoint and model."
    );
    describe_counter!(
        "sluice_tokens_total",
        "Tokens by model and kind (input, cached_input, output, reasoning)."
    );
    describe_counter!(
        "sluice_upstream_attempts_total",
        "Upstream attempts by provider and outcome."
    );
    describe_gauge!(
        "sluice_inflight_requests",
        "Requests currently being served on the data plane."
    );
    describe_counter!(
        "sluice_response_bytes_total",
        "Response body bytes streamed to clients, by endpoint."
    );
    describe_counter!(
        "sluice_config_reloads_total",
        "Config reloads by result (ok, error)."
    );
    describe_gauge!(
        "sluice_journal_degraded",
        "1 while the budget journal cannot persist charges (disk full, I/O error), else 0."
    );
    describe_counter!(
        "sluice_journal_write_errors_total",
        "Failed budget journal writes (each retry counts)."
    );
    describe_counter!(
        "sluice_journal_dropped_total",
        "Charges kept in memory only because too many were waiting for the disk."
    );
    describe_gauge!(
        "sluice_state_entries",
        "Entries held in a bounded per-identity or per-deployment map (rate_buckets, budget_buckets, spend_identities, deployments, owned_ids), as of the last sweep."
    );
    describe_gauge!(
        "sluice_connections",
        "Open client connections, by plane (data, admin)."
    );
    describe_gauge!(
        "sluice_connection_limit",
        "Most client connections served at once, by plane; more wait to be accepted."
    );
    describe_counter!(
        "sluice_connections_closed_total",
        "Connections Sluice closed, by plane and reason (no_request, idle, stalled)."
    );
    describe_counter!(
        "sluice_model_list_failures_total",
        "Provider model list fetches (for GET /v1/models) that failed, by provider; the list is answered without them."
    );
    describe_counter!("sluice_stream_ends_total", "How response bodies ended (complete, client_gone, upstream_error, idle_timeout, total_timeout).");
    describe_counter!(
        "sluice_capture_records_total",
        "Requests captured to the [capture] file, by reason (error, sample, match, trigger)."
    );
    describe_counter!(
        "sluice_capture_dropped_total",
        "Capture records not written, by why (queue_full: the writer fell behind; write_error)."
    );
}

/// A capture record written.
pub fn captured(reason: &'static str) {
    counter!("sluice_capture_records_total", "reason" => reason).increment(1);
}

/// A capture record dropped.
pub fn capture_dropped(why: &'static str) {
    counter!("sluice_capture_dropped_total", "why" => why).increment(1);
}

/// The longest label value; longer ones are cut.
pub const MAX_LABEL_CHARS: usize = 128;

/// A label value: bytes outside printable ASCII become `_`, and it is cut
/// at `MAX_LABEL_CHARS` (so a stray control byte or a huge name can never
/// reach the exposition format).
pub fn label(value: &str) -> Cow<'_, str> {
    let clean = value.len() <= MAX_LABEL_CHARS && value.bytes().all(|b| (0x20..0x7f).contains(&b));
    if clean {
        return Cow::Borrowed(value);
    }
    Cow::Owned(
        value
            .chars()
            .take(MAX_LABEL_CHARS)
            .map(|c| if (' '..='~').contains(&c) { c } else { '_' })
            .collect(),
    )
}

/// The most distinct label values kept shared; label values come from the
/// config, so this is never reached in practice (past it, a value is copied
/// per use, as before).
const MAX_SHARED_VALUES: usize = 4096;

/// A label value (cleaned as `label` does) as a shared string: the first
/// use of a value stores it once, later uses clone a reference — no string
/// is copied per request.
pub fn label_value(value: &str) -> SharedString {
    static VALUES: OnceLock<RwLock<HashSet<Arc<str>>>> = OnceLock::new();
    let values = VALUES.get_or_init(Default::default);
    let clean = label(value);
    {
        let set = values.read().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = set.get(&*clean) {
            return SharedString::from(v.clone());
        }
    }
    let mut set = values.write().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = set.get(&*clean) {
        return SharedString::from(v.clone());
    }
    if set.len() >= MAX_SHARED_VALUES {
        return SharedString::from(clean.into_owned());
    }
    let v: Arc<str> = Arc::from(&*clean);
    set.insert(v.clone());
    SharedString::from(v)
}

/// `2xx`, `4xx`, …
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Labels of one finished request.
pub struct RequestLabels<'a> {
    pub model: &'a str,
    pub provider: &'a str,
    pub endpoint: &'static str,
    pub status: u16,
    pub cache: &'static str,
}

/// The metrics a finished request touches, registered for one label set.
#[derive(Clone)]
struct RequestHandles {
    requests: Counter,
    ttft: Histogram,
    duration: Histogram,
    /// `sluice_response_bytes_total` by endpoint.
    bytes: Counter,
    /// `sluice_overhead_seconds` (no labels: the same for every set).
    overhead: Histogram,
}

/// Label sets whose handles one thread keeps. Label values come from the
/// config, so a thread sees a few dozen at most; past this bound a request
/// goes through the registry as before.
const MAX_CACHED_LABEL_SETS: usize = 1024;

/// A thread's handles by label set, and the buffer their keys are written in.
type HandleCache<H> = (String, HashMap<Box<str>, H, foldhash::fast::RandomState>);

thread_local! {
    /// Handles by their label set (written as one string, each part after
    /// its length), per worker thread: a request increments atomics instead
    /// of building keys and looking each up in the registry.
    static REQUEST_HANDLES: std::cell::RefCell<HandleCache<RequestHandles>> = Default::default();
    static MODEL_HANDLES: std::cell::RefCell<HandleCache<ModelHandles>> = Default::default();
    static ATTEMPT_HANDLES: std::cell::RefCell<HandleCache<Counter>> = Default::default();
    static STREAM_END_HANDLES: std::cell::RefCell<HandleCache<Counter>> = Default::default();
}

/// The handles kept for `parts` in `cache`, registered by `register` the
/// first time (and every time past `MAX_CACHED_LABEL_SETS`).
fn kept<H: Clone + 'static>(
    cache: &'static std::thread::LocalKey<std::cell::RefCell<HandleCache<H>>>,
    parts: &[&str],
    register: impl FnOnce() -> H,
) -> H {
    cache.with(|cell| {
        let Ok(mut cell) = cell.try_borrow_mut() else {
            return register();
        };
        let (key, map) = &mut *cell;
        key.clear();
        // Each part after its length: no two label sets write one key.
        let mut len = itoa::Buffer::new();
        for part in parts {
            key.push_str(len.format(part.len()));
            key.push(':');
            key.push_str(part);
        }
        if let Some(h) = map.get(key.as_str()) {
            return h.clone();
        }
        let h = register();
        if map.len() < MAX_CACHED_LABEL_SETS {
            map.insert(key.as_str().into(), h.clone());
        }
        h
    })
}

fn request_handles(l: &RequestLabels<'_>) -> RequestHandles {
    let class = status_class(l.status);
    let parts = [l.model, l.provider, l.endpoint, class, l.cache];
    kept(&REQUEST_HANDLES, &parts, || {
        // One lookup of the shared model value for all three metrics.
        let model = label_value(l.model);
        RequestHandles {
            requests: counter!(
                "sluice_requests_total",
                "model" => model.clone(),
                "provider" => label_value(l.provider),
                "endpoint" => l.endpoint,
                "status_class" => class,
                "cache" => l.cache
            ),
            ttft: histogram!("sluice_ttft_seconds", "endpoint" => l.endpoint, "model" => model.clone()),
            duration: histogram!("sluice_request_duration_seconds", "endpoint" => l.endpoint, "model" => model),
            bytes: counter!("sluice_response_bytes_total", "endpoint" => l.endpoint),
            overhead: histogram!("sluice_overhead_seconds"),
        }
    })
}

/// The kinds of `sluice_tokens_total`, in `ModelHandles::tokens` order.
const TOKEN_KINDS: [&str; 4] = ["input", "cached_input", "output", "reasoning"];

/// The per-model counters of a request's usage and cost.
#[derive(Clone)]
struct ModelHandles {
    tokens: [Counter; 4],
    cost: Counter,
}

fn model_handles(model: &str) -> ModelHandles {
    kept(&MODEL_HANDLES, &[model], || {
        let m = label_value(model);
        ModelHandles {
            tokens: TOKEN_KINDS
                .map(|kind| counter!("sluice_tokens_total", "model" => m.clone(), "kind" => kind)),
            cost: counter!("sluice_cost_nanodollars_total", "model" => m),
        }
    })
}

/// What a finished request reports beside its labels.
pub struct Finished {
    pub duration: Duration,
    /// Time to first byte, when a byte came.
    pub ttft: Option<Duration>,
    /// Sluice's own share of the time (the upstream's wait taken out).
    pub overhead: Duration,
    /// Bytes of the response body sent.
    pub response_bytes: u64,
}

/// A finished request: its count, its duration and (when a byte came) its
/// time to first byte, the latencies by endpoint and model, Sluice's
/// overhead and the response bytes by endpoint — through the handles this
/// thread keeps for the label set.
pub fn request_done(l: &RequestLabels<'_>, f: &Finished) {
    let h = request_handles(l);
    h.requests.increment(1);
    if let Some(t) = f.ttft {
        h.ttft.record(t);
    }
    h.duration.record(f.duration);
    h.overhead.record(f.overhead);
    h.bytes.increment(f.response_bytes);
}

pub fn upstream_attempt(provider: &str, outcome: &'static str) {
    kept(&ATTEMPT_HANDLES, &[provider, outcome], || {
        counter!("sluice_upstream_attempts_total", "provider" => label_value(provider), "outcome" => outcome)
    })
    .increment(1);
}

/// A provider's model list could not be fetched.
pub fn model_list_failed(provider: &str) {
    counter!("sluice_model_list_failures_total", "provider" => label(provider).into_owned())
        .increment(1);
}

pub fn response_bytes(endpoint: &'static str, n: u64) {
    counter!("sluice_response_bytes_total", "endpoint" => endpoint).increment(n);
}

pub fn stream_end(kind: &'static str) {
    kept(
        &STREAM_END_HANDLES,
        &[kind],
        || counter!("sluice_stream_ends_total", "end" => kind),
    )
    .increment(1);
}

/// One open client connection in `sluice_connections`, until dropped.
pub struct OpenConnection(&'static str);

impl OpenConnection {
    pub fn start(plane: &'static str) -> Self {
        gauge!("sluice_connections", "plane" => plane).increment(1.0);
        OpenConnection(plane)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        gauge!("sluice_connections", "plane" => self.0).decrement(1.0);
    }
}

pub fn connection_limit(plane: &'static str, limit: usize) {
    gauge!("sluice_connection_limit", "plane" => plane).set(limit as f64);
}

pub fn connection_closed(plane: &'static str, reason: &'static str) {
    counter!("sluice_connections_closed_total", "plane" => plane, "reason" => reason).increment(1);
}

pub fn retry() {
    counter!("sluice_retries_total").increment(1);
}

/// A retry not made: the deployment's retry budget was spent.
pub fn retry_budget_exhausted(deployment: &str) {
    counter!("sluice_retry_budget_exhausted_total", "deployment" => label_value(deployment))
        .increment(1);
}

/// 1 while a deployment's circuit is not closed.
pub fn circuit(deployment: &str, state: &'static str) {
    gauge!("sluice_circuit_open", "deployment" => label_value(deployment))
        .set(if state == "closed" { 0.0 } else { 1.0 });
}

/// Size of a bounded map, after a sweep.
/// A request a kill switch refused or rerouted (`kind`: key, feature,
/// model, model_replaced).
pub fn killed(kind: &'static str) {
    counter!("sluice_killed_requests_total", "kind" => kind).increment(1);
}

/// A chaos fault injected (`fault`: a configured name or "runtime";
/// `kind`: `FaultKind::label`).
pub fn fault_injected(fault: &str, kind: &'static str) {
    counter!("sluice_faults_injected_total", "fault" => label_value(fault), "kind" => kind)
        .increment(1);
}

/// Kill switches in force (config and runtime).
pub fn kill_switches(n: usize) {
    gauge!("sluice_kill_switches").set(n as f64);
}

/// A finished request of an experiment arm (names come from the config,
/// so the label set is bounded by it).
pub fn experiment_request(experiment: &str, arm: &str, error: bool) {
    counter!(
        "sluice_experiment_requests_total",
        "experiment" => label_value(experiment),
        "arm" => label_value(arm),
        "outcome" => if error { "error" } else { "ok" }
    )
    .increment(1);
}

/// An experiment's candidate share changed (ramp step, rollback, promotion).
pub fn experiment_share(experiment: &str, percent: f64) {
    gauge!("sluice_experiment_candidate_percent", "experiment" => label_value(experiment))
        .set(percent);
}

/// A guard rolled an experiment back.
pub fn experiment_rollback(experiment: &str) {
    counter!("sluice_experiment_rollbacks_total", "experiment" => label_value(experiment))
        .increment(1);
}

/// A shadow copy's fate (`outcome`: sent, dropped_full, dropped_budget,
/// error); `shadow` is a configured name.
pub fn shadow(shadow: &str, outcome: &'static str) {
    counter!("sluice_shadow_requests_total", "shadow" => label_value(shadow), "outcome" => outcome)
        .increment(1);
}

/// The semantic cache's size.
pub fn semantic_cache_size(entries: usize, bytes: usize) {
    gauge!("sluice_semantic_cache_entries").set(entries as f64);
    gauge!("sluice_semantic_cache_bytes").set(bytes as f64);
}

/// One semantic cache lookup (`result` is a fixed label) and its time.
pub fn semantic_cache_lookup(result: &'static str, took: std::time::Duration) {
    counter!("sluice_semantic_cache_lookups_total", "result" => result).increment(1);
    histogram!("sluice_semantic_cache_lookup_seconds").record(took.as_secs_f64());
}

/// What a shadow's copies cost (never charged to a client's budgets).
pub fn shadow_cost(shadow: &str, nanos: u64) {
    counter!("sluice_shadow_cost_nanodollars_total", "shadow" => label_value(shadow))
        .increment(nanos);
}

/// A run not tracked by `[runs]` (its map was full): served, not counted.
pub fn runs_untracked() {
    counter!("sluice_runs_untracked_total").increment(1);
}

/// A run refused by `[runs]` (`what`: requests, tokens).
pub fn run_limited(what: &'static str) {
    counter!("sluice_run_limited_total", "limit" => what).increment(1);
}

/// A usage record dropped because its sink was not keeping up.
pub fn usage_dropped() {
    counter!("sluice_usage_dropped_total").increment(1);
}

/// A finished span dropped because the export queue was full.
pub fn trace_span_dropped() {
    counter!("sluice_trace_spans_dropped_total").increment(1);
}

/// Spans in one OTLP export request, by whether the collector took them.
pub fn trace_spans_exported(n: usize, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    counter!("sluice_trace_spans_exported_total", "result" => result).increment(n as u64);
}

/// A failed usage-log write.
pub fn usage_write_error() {
    counter!("sluice_usage_write_errors_total").increment(1);
}

/// A repeated request flagged as a loop (`action`: reject or alert).
pub fn loop_detected(action: &'static str) {
    counter!("sluice_loops_detected_total", "action" => action).increment(1);
}

/// A request loop detection could not remember (its map was full).
pub fn loop_untracked() {
    counter!("sluice_loops_untracked_total").increment(1);
}

/// A shared (Redis) cache call: hit, miss, stored or error.
pub fn shared_cache(result: &'static str) {
    counter!("sluice_cache_shared_total", "result" => result).increment(1);
}

/// Whether the shared (Redis) state store answers.
pub fn state_up(up: bool) {
    gauge!("sluice_state_up").set(if up { 1.0 } else { 0.0 });
}

/// A failed or timed-out call to the shared state store.
pub fn state_error(op: &'static str) {
    counter!("sluice_state_errors_total", "op" => op).increment(1);
}

/// A request served under local counters while the shared store was away.
pub fn state_fail_open() {
    counter!("sluice_state_fail_open_total").increment(1);
}

/// A settlement given up on after `SETTLE_GIVE_UP` of retries.
pub fn state_settle_lost() {
    counter!("sluice_state_settle_lost_total").increment(1);
}

pub fn state_entries(map: &'static str, n: usize) {
    gauge!("sluice_state_entries", "map" => map).set(n as f64);
}

/// Publishes the response cache's counters (read from the cache itself).
pub fn cache_stats(bytes: u64, entries: u64, hits: u64, misses: u64, evictions: u64) {
    gauge!("sluice_cache_bytes").set(bytes as f64);
    gauge!("sluice_cache_entries").set(entries as f64);
    counter!("sluice_cache_hits_total").absolute(hits);
    counter!("sluice_cache_misses_total").absolute(misses);
    counter!("sluice_cache_evictions_total").absolute(evictions);
}

pub fn cost_anomaly(dimension: &'static str) {
    counter!("sluice_cost_anomalies_total", "dimension" => dimension).increment(1);
}

/// An exact input count was made (the upper bound could not settle a
/// decision); `counted` says why.
pub fn input_counted(reason: &'static str) {
    counter!("sluice_input_counts_total", "reason" => reason).increment(1);
}

pub fn budget_rejected(budget: &str) {
    counter!("sluice_budget_rejected_total", "scope" => label_value(budget)).increment(1);
}

/// One crossed alert threshold, given in permille of the limit; the label
/// shows it as the fraction the config wrote (`500` → `0.5`, `1000` → `1`).
pub fn budget_alert(budget: &str, permille: u32) {
    counter!("sluice_budget_alerts_total", "budget" => label_value(budget), "threshold" => threshold_label(permille)).increment(1);
}

/// `0.5`, `0.8`, `1`, `1.25`: exact for every permille (the quotient is the
/// double nearest the decimal the config wrote).
fn threshold_label(permille: u32) -> String {
    format!("{}", f64::from(permille) / 1000.0)
}

/// Spend in nano-dollars (Prometheus counters are integers here).
/// Batch results lines read back, by what became of them.
pub fn batch_lines(outcome: &'static str, n: u64) {
    if n > 0 {
        counter!("sluice_batch_lines_total", "outcome" => outcome).increment(n);
    }
}

/// A request's tokens by kind and its cost, on its model's counters (one
/// lookup of the model's handles for all of them; zeros are not added).
pub fn usage(model: &str, usage: Option<&crate::usage::Usage>, cost: Option<u64>) {
    let counts = usage.map(|u| [u.input, u.cached_input, u.output, u.reasoning]);
    let cost = cost.filter(|&c| c > 0);
    if cost.is_none() && counts.is_none_or(|c| c.iter().all(|&n| n == 0)) {
        return;
    }
    let h = model_handles(model);
    for (counter, n) in h.tokens.iter().zip(counts.unwrap_or_default()) {
        if n > 0 {
            counter.increment(n);
        }
    }
    if let Some(c) = cost {
        h.cost.increment(c);
    }
}

pub fn rate_limited(rule: &str) {
    counter!("sluice_rate_limited_total", "scope" => label_value(rule)).increment(1);
}

pub fn config_reload(ok: bool) {
    counter!("sluice_config_reloads_total", "result" => if ok { "ok" } else { "error" })
        .increment(1);
}

/// `sluice_inflight_requests`, registered once by [`install`]: every
/// request moves it twice, and `gauge!` looks its key up in the registry
/// each time.
static INFLIGHT: std::sync::OnceLock<metrics::Gauge> = std::sync::OnceLock::new();

/// Tracks one in-flight request in `sluice_inflight_requests`.
pub struct Inflight(metrics::Gauge);

impl Inflight {
    pub fn start() -> Self {
        // Before `install` (unit tests) there is no recorder: a no-op handle.
        let gauge = INFLIGHT
            .get()
            .cloned()
            .unwrap_or_else(|| gauge!("sluice_inflight_requests"));
        gauge.increment(1.0);
        Inflight(gauge)
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Whether the budget journal is failing to persist charges.
pub fn journal_degraded(degraded: bool) {
    gauge!("sluice_journal_degraded").set(if degraded { 1.0 } else { 0.0 });
}

/// One failed budget journal write.
pub fn journal_write_error() {
    counter!("sluice_journal_write_errors_total").increment(1);
}

/// One charge not journaled (too many waiting for the disk).
pub fn journal_dropped() {
    counter!("sluice_journal_dropped_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn a_request_s_metrics_land_on_its_own_label_set_through_the_kept_handles() {
        let (rec, exporter) = described::Describing::new(PrometheusBuilder::new().build_recorder());
        let labels = |model, status| RequestLabels {
            model,
            provider: "p",
            endpoint: "chat",
            status,
            cache: "bypass",
        };
        let ms = Duration::from_millis(3);
        let done = |ttft, response_bytes| Finished {
            duration: ms,
            ttft,
            overhead: Duration::from_micros(40),
            response_bytes,
        };
        metrics::with_local_recorder(&rec, || {
            request_done(&labels("m-1", 200), &done(Some(ms), 100));
            request_done(&labels("m-1", 200), &done(None, 20));
            request_done(&labels("m-1", 503), &done(None, 3));
            let u = |input| crate::usage::Usage {
                input,
                ..Default::default()
            };
            usage("m-1", Some(&u(5)), Some(30));
            usage("m-1", Some(&u(7)), None);
            usage("m-1", None, Some(0));
            // Lengths in the key: ("m-1" + "p") and ("m-1p" + "") stay apart.
            request_done(
                &RequestLabels {
                    provider: "",
                    ..labels("m-1p", 200)
                },
                &done(None, 0),
            );
        });
        let text = exporter.render();
        let count = |series: &str| {
            text.lines()
                .find(|l| l.starts_with(series))
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        let req = |model: &str, provider: &str, class: &str| {
            format!(
                "sluice_requests_total{{model=\"{model}\",provider=\"{provider}\",endpoint=\"chat\",status_class=\"{class}\",cache=\"bypass\"}}"
            )
        };
        assert_eq!(
            count(&req("m-1", "p", "2xx")).as_deref(),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            count(&req("m-1", "p", "5xx")).as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            count(&req("m-1p", "", "2xx")).as_deref(),
            Some("1"),
            "{text}"
        );
        let ttft = "sluice_ttft_seconds_count{endpoint=\"chat\",model=\"m-1\"}";
        assert_eq!(count(ttft).as_deref(), Some("1"), "{text}");
        let input = "sluice_tokens_total{model=\"m-1\",kind=\"input\"}";
        assert_eq!(count(input).as_deref(), Some("12"), "{text}");
        let spent = "sluice_cost_nanodollars_total{model=\"m-1\"}";
        assert_eq!(count(spent).as_deref(), Some("30"), "{text}");
        // Bytes by endpoint add up over every label set; the overhead has none.
        let bytes = "sluice_response_bytes_total{endpoint=\"chat\"}";
        assert_eq!(count(bytes).as_deref(), Some("123"), "{text}");
        assert_eq!(
            count("sluice_overhead_seconds_count").as_deref(),
            Some("4"),
            "{text}"
        );
    }

    #[test]
    fn labels_are_printable_ascii_and_bounded() {
        assert!(matches!(label("gpt-4o"), Cow::Borrowed("gpt-4o")));
        assert_eq!(label("a\r\nb\0c\"d"), "a__b_c\"d");
        assert_eq!(label("modèle"), "mod_le");
        let long = "x".repeat(100_000);
        assert_eq!(label(&long).len(), MAX_LABEL_CHARS);
    }

    #[test]
    fn label_values_are_cleaned_and_shared() {
        assert_eq!(&*label_value("gpt-4o"), "gpt-4o");
        assert_eq!(&*label_value("a\r\nb"), "a__b");
        let long = "y".repeat(1000);
        assert_eq!(label_value(&long).len(), MAX_LABEL_CHARS);
    }

    #[test]
    fn threshold_labels_render_as_the_fractions_did() {
        for (p, f) in [
            (500, 0.5),
            (800, 0.8),
            (1000, 1.0),
            (1, 0.001),
            (1250, 1.25),
            (333, 0.333),
        ] {
            assert_eq!(threshold_label(p), format!("{f}"));
        }
        assert_eq!(threshold_label(1000), "1");
    }
}
