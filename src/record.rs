//! The per-request record: created when a request arrives, finished exactly
//! once (when the response is built, or when a streamed body ends or is
//! dropped), producing metrics and one JSON usage line.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;

use crate::app::Snapshot;
use crate::attempt::{AttemptInfo, Progress};
use crate::auth::Identity;
use crate::budget::ledger::{BudgetHold, Ledger};
use crate::cache::Capture;
use crate::error::ApiShape;
use crate::fleet::{Fleet, FleetHold, Settled};
use crate::limits::rate::Admission;
use crate::limits::tokens::{self, Family};
use crate::metrics::{self, Inflight, RequestLabels};
use crate::pricing::{nanos_to_usd, Price};
use crate::sniff::Endpoint;
use crate::stream::observe::Observed;
use crate::telemetry::{RequestEnd, RequestTrace};
use crate::usage::Usage;
use crate::usage_log::UsageLog;

mod batch_charge;

/// How a response body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    Complete,
    ClientGone,
    UpstreamError(String),
    IdleTimeout,
    TotalTimeout,
}

impl StreamEnd {
    pub fn label(&self) -> &'static str {
        match self {
            StreamEnd::Complete => "complete",
            StreamEnd::ClientGone => "client_gone",
            StreamEnd::UpstreamError(_) => "upstream_error",
            StreamEnd::IdleTimeout => "idle_timeout",
            StreamEnd::TotalTimeout => "total_timeout",
        }
    }

    pub fn message(&self) -> String {
        match self {
            StreamEnd::Complete => "complete".into(),
            StreamEnd::ClientGone => "client went away".into(),
            StreamEnd::UpstreamError(e) => format!("upstream stream failed: {e}"),
            StreamEnd::IdleTimeout => "upstream stream stalled past the idle timeout".into(),
            StreamEnd::TotalTimeout => "request exceeded the total timeout".into(),
        }
    }
}

/// What is known about a request. Each field is written once, by the stage
/// that learns it (in pipeline order: path, identity, body, sniff, routing,
/// token plan, deadline), and only read after that.
pub struct Facts {
    pub id: Arc<str>,
    pub identity: Identity,
    pub endpoint: Endpoint,
    pub shape: ApiShape,
    pub stream: bool,
    /// The model the client asked for.
    pub model: String,
    /// The model a routing model (e.g. `auto`) or a budget downgrade chose.
    pub routed_to: Option<String>,
    pub request_bytes: u64,
    /// The upstream model's tokenizer.
    pub family: Option<Family>,
    /// Input tokens counted before sending (when a decision needed them).
    pub input_counted: Option<u64>,
    /// The body sent upstream, kept (a reference, not a copy) to count its
    /// input when the provider never reports usage.
    pub request_body: Option<Bytes>,
    /// When the whole request must be over.
    pub deadline: tokio::time::Instant,
    /// Anthropic prompt-cache breakpoints Sluice added.
    pub breakpoints: u32,
    /// `[loop_detection]` found this request repeated past its limit.
    pub loop_detected: bool,
    /// The experiment arm the request was given.
    pub arm: Option<crate::experiment::Pick>,
    /// A shadow copy waiting for this answer: started when the record
    /// completes, so its work never competes with the primary's.
    pub shadow: Option<crate::shadow::Pending>,
    /// The chaos fault injected at the client's edge, by name.
    pub fault: Option<Arc<str>>,
    /// That fault, when it spoils the streamed answer.
    pub stream_fault: Option<crate::config::FaultKind>,
    /// `[capture]` is armed for this request: its body and the answer's
    /// first bytes, handed to the writer when the record finishes.
    pub capture: Option<Box<crate::capture::Pending>>,
    /// Sluice set or lowered the output cap the request was sent with.
    pub output_capped: bool,
}

/// What a request holds and must release when it ends: each is settled or
/// dropped exactly once, by `finish` (or `Drop`).
#[derive(Default)]
pub struct Holds {
    /// Rate-limit reservations, settled with the real usage at the end.
    pub admission: Option<Admission>,
    /// Budget reservations, settled with the actual cost at the end.
    pub budget: Option<BudgetHold>,
    /// Fleet mode: rate and budget reservations in Redis, settled by a
    /// task once the request ends.
    pub fleet: Option<FleetHold>,
    /// Fleet mode, served under local limits while Redis was away (or a
    /// batch read-back, whose charge cannot be refused): the fleet its
    /// cost is owed to.
    pub owed_to: Option<Arc<Fleet>>,
    /// Tees the upstream answer into the cache (a miss that may be stored).
    pub capture: Option<Capture>,
    /// `[runs]`: the run's totals, which this request's tokens join.
    pub run: Option<Arc<crate::limits::runs::RunTotals>>,
}

/// Whether the response cache took part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// Not cacheable, or the cache is off.
    Bypass,
    /// Looked up and not found (the answer may be stored).
    Miss,
    /// Answered from the cache.
    Hit,
    /// Answered from the semantic cache (an earlier answer to a similar
    /// question).
    Semantic,
}

impl CacheState {
    pub fn label(self) -> &'static str {
        match self {
            CacheState::Bypass => "bypass",
            CacheState::Miss => "miss",
            CacheState::Hit => "hit",
            CacheState::Semantic => "semantic",
        }
    }

    /// Served from a cache (costs nothing).
    pub fn is_hit(self) -> bool {
        matches!(self, CacheState::Hit | CacheState::Semantic)
    }
}

/// What happened: written as the request is served.
pub struct Outcome {
    pub status: u16,
    /// The provider and model, the attempts and their timings (written by
    /// the attempt loop; it also holds the in-flight guard of the
    /// deployment that answered).
    pub upstream: Progress,
    first_byte_at: Option<Instant>,
    pub error: Option<&'static str>,
    pub cache: CacheState,
    /// The semantic cache's nearest entry's cosine similarity (served or,
    /// in observe mode, the would-be hit).
    pub semantic_score: Option<f32>,
}

/// One request while it is served: created when it arrives, finished exactly
/// once (when the response is built, or when a streamed body ends or is
/// dropped).
pub struct RequestRecord {
    pub facts: Facts,
    pub holds: Holds,
    pub outcome: Outcome,
    started: Instant,
    started_at: SystemTime,
    /// The config the request was served under (budgets, prices, labels).
    pub snap: Option<Arc<Snapshot>>,
    /// Where spend is attributed.
    pub ledger: Option<Arc<Ledger>>,
    /// The request's span (open until the record finishes, so a streamed
    /// answer is inside it) and its trace id.
    pub trace: RequestTrace,
    /// The record was finished (metrics, settlement, usage line).
    done: bool,
    sink: UsageLog,
    _inflight: Inflight,
}

impl RequestRecord {
    pub fn new(id: Arc<str>, started: Instant, sink: UsageLog) -> Self {
        Self {
            facts: Facts {
                id,
                identity: Identity::default(),
                endpoint: Endpoint::Other,
                shape: ApiShape::OpenAi,
                stream: false,
                model: String::new(),
                routed_to: None,
                request_bytes: 0,
                family: None,
                input_counted: None,
                request_body: None,
                deadline: tokio::time::Instant::from_std(started) + Duration::from_secs(900),
                breakpoints: 0,
                loop_detected: false,
                arm: None,
                shadow: None,
                fault: None,
                stream_fault: None,
                capture: None,
                output_capped: false,
            },
            holds: Holds::default(),
            outcome: Outcome {
                status: 0,
                upstream: Progress::default(),
                first_byte_at: None,
                error: None,
                cache: CacheState::Bypass,
                semantic_score: None,
            },
            started,
            started_at: SystemTime::now(),
            snap: None,
            ledger: None,
            trace: RequestTrace::default(),
            done: false,
            sink,
            _inflight: Inflight::start(),
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn first_byte(&mut self, at: Instant) {
        self.outcome.first_byte_at.get_or_insert(at);
    }

    /// Answer bytes as they pass, for `[capture]` (a bounded copy, only
    /// when capture is armed).
    pub fn tee(&mut self, chunk: &[u8]) {
        if let Some(c) = &mut self.facts.capture {
            c.tee(chunk);
        }
    }

    /// A terminal SSE error event in the client's API shape.
    pub fn error_event(&self, message: &str) -> Bytes {
        crate::protocol::errors::event(self.facts.shape, message)
    }

    /// Finishes the request: metrics, settlement and the usage line.
    pub fn finish(mut self, end: StreamEnd, observed: Observed, response_bytes: u64) {
        self.complete(end, observed, response_bytes);
    }

    fn complete(&mut self, end: StreamEnd, mut observed: Observed, response_bytes: u64) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let now = Instant::now();
        let duration = now.duration_since(self.started);
        let ttft = self
            .outcome
            .first_byte_at
            .map(|t| t.duration_since(self.started));
        let (usage, usage_source) = match observed.usage {
            Some(u) => (Some(u), "provider"),
            None => match self.estimate(&observed) {
                Some(u) => (Some(u), "estimated"),
                None => (None, "none"),
            },
        };
        if let (Some(runs), Some(run)) = (self.holds.run.take(), &self.facts.identity.run) {
            runs.add_tokens(run, usage.map_or(0, |u| u.input + u.output));
        }
        if let Some(adm) = self.holds.admission.take() {
            adm.settle(usage.map_or(0, |u| u.input + u.output));
        }
        let list_cost = usage.and_then(|u| self.price().map(|p| p.cost(&u)));
        // Batch results read back: what the read charged, at the batch rate.
        let batch = observed.batch.take();
        let line_usage = batch.as_ref().map(|b| b.usage()).or(usage);
        // A cache hit costs nothing; what it would have cost is recorded.
        let (cost, cost_saved) = if let Some(b) = &batch {
            (Some(b.cost()), None)
        } else if self.outcome.cache.is_hit() {
            (Some(0), list_cost)
        } else {
            (list_cost, None)
        };

        // Labels come from the config, never from what a client sent.
        let model_label = match &self.snap {
            _ if self.outcome.upstream.model.is_empty() => "-",
            Some(snap) => snap.router.model_label(&self.outcome.upstream.model),
            None => crate::route::OTHER_MODEL,
        };
        metrics::request_done(
            &RequestLabels {
                model: model_label,
                provider: if self.outcome.upstream.provider.is_empty() {
                    "-"
                } else {
                    &self.outcome.upstream.provider
                },
                endpoint: self.facts.endpoint.label(),
                status: self.outcome.status,
                cache: self.outcome.cache.label(),
            },
            &metrics::Finished {
                duration,
                ttft,
                overhead: self
                    .outcome
                    .first_byte_at
                    .map(|fb| fb.duration_since(self.started))
                    .unwrap_or(duration)
                    .saturating_sub(self.outcome.upstream.wait),
                response_bytes,
            },
        );
        if let Some(b) = &batch {
            self.batch_metrics(b);
        } else {
            if let (Some(c), Some(l)) = (cost, &self.ledger) {
                l.attribute(&self.facts.identity, c);
            }
            metrics::usage(model_label, usage.as_ref(), cost);
        }
        if self.outcome.upstream.attempts > 0 {
            metrics::stream_end(end.label());
        }

        if let Some(pick) = &self.facts.arm {
            let error = self.outcome.status >= 500
                || observed.stream_error
                || !matches!(end, StreamEnd::Complete | StreamEnd::ClientGone);
            pick.live.observe(&crate::experiment::Observation {
                error,
                latency_ms: ms(duration),
                ttft_ms: ttft.map(ms),
                input_tokens: usage.map_or(0, |u| u.input),
                output_tokens: usage.map_or(0, |u| u.output),
                cost_nanodollars: cost.unwrap_or(0),
                cache_hit: self.outcome.cache.is_hit(),
            });
            metrics::experiment_request(&pick.experiment, &pick.arm, error);
        }
        // The client has the answer: a shadow copy goes now.
        if let Some(copy) = self.facts.shadow.take() {
            copy.start(crate::shadow::Primary {
                status: self.outcome.status,
                latency_ms: ms(duration),
                ttft_ms: ttft.map(ms),
                output_tokens: usage.map(|u| u.output),
                cost_nanos: cost,
                text: observed.text.clone(),
                facts: observed.answer.clone(),
            });
        }
        if let Some(c) = self.facts.capture.take() {
            c.finish(self.capture_outcome(&end, &observed, usage, cost, duration, ttft));
        }
        let line = UsageLine {
            ts: Timestamp(self.started_at),
            request_id: &self.facts.id,
            key: self.facts.identity.key.as_deref(),
            user: self.facts.identity.user.as_deref(),
            team: self.facts.identity.team.as_deref(),
            feature: self.facts.identity.feature.as_deref(),
            end_user: self.facts.identity.end_user.as_deref(),
            run: self.facts.identity.run.as_deref(),
            endpoint: self.facts.endpoint.label(),
            model: (!self.facts.model.is_empty()).then_some(self.facts.model.as_str()),
            routed_to: self.facts.routed_to.as_deref(),
            upstream_model: (!self.outcome.upstream.model.is_empty())
                .then_some(self.outcome.upstream.model.as_str())
                .or(batch.as_deref().and_then(batch_charge::only_model)),
            provider: (!self.outcome.upstream.provider.is_empty())
                .then_some(&*self.outcome.upstream.provider),
            status: self.outcome.status,
            stream: self.facts.stream,
            end: end.label(),
            error: self
                .outcome
                .error
                .or(observed.stream_error.then_some("upstream_stream_error")),
            input_tokens: line_usage.map(|u| u.input),
            cached_input_tokens: line_usage.map(|u| u.cached_input),
            cache_write_tokens: line_usage.map(|u| u.cache_write),
            cache_write_1h_tokens: line_usage.map(|u| u.cache_write_1h).filter(|n| *n > 0),
            output_tokens: line_usage.map(|u| u.output),
            reasoning_tokens: line_usage.map(|u| u.reasoning),
            usage_source: if batch.is_some() {
                "provider"
            } else {
                usage_source
            },
            latency_ms: ms(duration),
            ttft_ms: ttft.map(ms),
            upstream_ms: (self.outcome.upstream.attempts > 0)
                .then(|| ms(self.outcome.upstream.wait)),
            request_bytes: self.facts.request_bytes,
            response_bytes,
            attempts: self.outcome.upstream.attempts,
            attempt_log: &self.outcome.upstream.log,
            cost_usd: cost.map(nanos_to_usd),
            cache: self.outcome.cache.label(),
            cost_saved_usd: cost_saved.map(nanos_to_usd),
            semantic_similarity: self
                .outcome
                .semantic_score
                .map(|s| (f64::from(s) * 1e4).round() / 1e4),
            prompt_cache_breakpoints: self.facts.breakpoints,
            loop_detected: self.facts.loop_detected,
            experiment: self.facts.arm.as_ref().map(|p| &*p.experiment),
            arm: self.facts.arm.as_ref().map(|p| &*p.arm),
            config_version: self.snap.as_ref().map(|s| s.config.version.as_str()),
            fault: self
                .facts
                .fault
                .as_deref()
                .or(self.outcome.upstream.fault.as_deref()),
            trace_id: self.trace.trace_id(),
            finish_reason: observed.answer.finish_reason.as_deref(),
            output_capped: self.facts.output_capped,
            stopped_at_cap: self.facts.output_capped && observed.answer.hit_output_cap(),
            tool_calls: observed.answer.tool_calls,
            tool_names: &observed.answer.tool_names,
            batch: batch.as_deref().map(batch_charge::BatchLine::of),
        };
        self.end_span(&end, line_usage, cost, &line);
        if let Some(b) = &batch {
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            self.charge_batch(b, bytes);
            return;
        }
        if let (Some(fleet), Some(snap), Some(c)) = (self.holds.owed_to.take(), &self.snap, cost) {
            let subject = crate::limits::rate::Subject {
                identity: &self.facts.identity,
                model: &self.facts.model,
            };
            fleet.owe(&snap.config.budgets, &subject, &self.attribution(), c);
        }
        if let Some(hold) = self.holds.fleet.take() {
            // The usage line is written once the charge is in Redis.
            let bytes = self.sink.line(&line);
            let sink = self.sink.clone();
            let snap = self.snap.clone();
            let tokens = usage.map_or(0, |u| u.input + u.output);
            hold.settle(
                tokens,
                cost.unwrap_or(0),
                self.attribution(),
                Box::new(move |settled| {
                    if let Some(bytes) = bytes {
                        sink.write_raw(bytes);
                    }
                    if let (Some(settled), Some(snap)) = (settled, snap) {
                        fire_alerts(&snap.config.budgets, &settled);
                    }
                }),
            );
            return;
        }
        match (self.holds.budget.take(), &self.snap) {
            (Some(hold), Some(snap)) => {
                // The usage line is written once the charge is durable.
                let bytes = self.sink.line(&line);
                let budgets = &snap.config.budgets;
                for (budget, bucket, t) in hold.settle(budgets, cost.unwrap_or(0), bytes) {
                    if let Some(rule) = budgets.iter().find(|b| b.name == budget) {
                        crate::budget::alert::fire(rule, &bucket, t);
                    }
                }
            }
            _ => self.sink.write(&line),
        }
    }
}

/// Fires the alerts whose thresholds a fleet settlement crossed.
fn fire_alerts(budgets: &[crate::config::BudgetRule], settled: &[Settled]) {
    for s in settled {
        let Some(rule) = budgets.iter().find(|b| b.name == s.budget) else {
            continue;
        };
        let limit = rule.limit_of_bucket(&s.bucket).unwrap_or(rule.limit);
        for &t in &rule.alert_permille {
            let at = crate::budget::ledger::threshold(limit, t);
            if s.before < at && s.after >= at {
                crate::budget::alert::fire(rule, &s.bucket, t);
            }
        }
    }
}

impl RequestRecord {
    /// What `[capture]` writes beside the bodies.
    fn capture_outcome(
        &self,
        end: &StreamEnd,
        observed: &Observed,
        usage: Option<Usage>,
        cost: Option<u64>,
        duration: Duration,
        ttft: Option<Duration>,
    ) -> crate::capture::Outcome {
        let f = &self.facts;
        let up = &self.outcome.upstream;
        crate::capture::Outcome {
            ts: humantime::format_rfc3339_millis(self.started_at).to_string(),
            request_id: f.id.clone(),
            identity: f.identity.clone(),
            endpoint: f.endpoint.label(),
            stream: f.stream,
            model: f.model.clone(),
            routed_to: f.routed_to.clone(),
            upstream_model: up.model.clone(),
            provider: up.provider.to_string(),
            status: self.outcome.status,
            error: self
                .outcome
                .error
                .or(observed.stream_error.then_some("upstream_stream_error")),
            end: end.label(),
            failed: self.outcome.status >= 400
                || observed.stream_error
                || !matches!(end, StreamEnd::Complete | StreamEnd::ClientGone),
            latency_ms: ms(duration),
            ttft_ms: ttft.map(ms),
            usage,
            cost_nanos: cost,
            finish_reason: observed.answer.finish_reason.clone(),
            fault: f
                .fault
                .as_deref()
                .or(up.fault.as_deref())
                .map(str::to_owned),
            trace_id: self.trace.trace_id(),
        }
    }

    /// Ends the request span with what the request came to.
    fn end_span(
        &self,
        end: &StreamEnd,
        usage: Option<Usage>,
        cost: Option<u64>,
        line: &UsageLine<'_>,
    ) {
        if !self.trace.is_open() {
            return;
        }
        let up = &self.outcome.upstream;
        let system = self.snap.as_ref().and_then(|snap| {
            let u = snap.upstreams.iter().find(|u| u.name == up.provider)?;
            Some(crate::telemetry::system(u.kind))
        });
        let budget_remaining = match &self.holds.fleet {
            Some(f) => f.remaining,
            None => self.holds.budget.as_ref().and_then(|b| b.remaining),
        };
        let span_end = RequestEnd {
            endpoint: self.facts.endpoint,
            status: self.outcome.status,
            system,
            request_model: (!self.facts.model.is_empty()).then_some(self.facts.model.as_str()),
            response_model: (!up.model.is_empty()).then_some(up.model.as_str()),
            provider: (!up.provider.is_empty()).then_some(&*up.provider),
            usage,
            cost_usd: cost.map(nanos_to_usd),
            cache: self.outcome.cache.label(),
            attempts: up.attempts,
            budget_remaining_usd: budget_remaining.map(nanos_to_usd),
            error: line.error,
            stream: self.facts.stream,
            end: end.label(),
            finish_reason: line.finish_reason,
        };
        self.trace.finish(&span_end);
    }

    /// The identity's (dimension, value) pairs spend is attributed to.
    fn attribution(&self) -> Vec<(&'static str, String)> {
        let id = &self.facts.identity;
        [
            ("user", &id.user),
            ("team", &id.team),
            ("feature", &id.feature),
            ("key", &id.key),
        ]
        .into_iter()
        .filter_map(|(dim, v)| Some((dim, v.as_deref()?.to_owned())))
        .collect()
    }

    /// The cost of what a complete response reported (for `x-sluice-cost-usd`);
    /// a cache hit costs nothing.
    pub fn cost_of(&self, observed: &Observed) -> Option<u64> {
        if self.outcome.cache.is_hit() {
            return Some(0);
        }
        Some(self.price()?.cost(observed.usage.as_ref()?))
    }

    /// The price of the model that answered.
    fn price(&self) -> Option<Price> {
        if self.outcome.upstream.model.is_empty() {
            return None;
        }
        self.snap
            .as_ref()?
            .config
            .prices
            .get(&self.outcome.upstream.model)
    }

    /// Usage for a request the provider answered but never reported usage
    /// for (a cut stream): the input as counted, the output from the
    /// streamed text, both with the model's tokenizer.
    fn estimate(&self, observed: &Observed) -> Option<Usage> {
        let answered = self.outcome.upstream.attempts > 0
            && ((200..300).contains(&self.outcome.status) || self.outcome.upstream.awaiting);
        if !answered || !self.facts.endpoint.generates() {
            return None;
        }
        let family = self.facts.family?;
        let input = self.facts.input_counted.or_else(|| {
            self.facts
                .request_body
                .as_ref()
                .map(|b| tokens::count_or_bound(self.facts.endpoint, b, family))
        })?;
        Some(Usage {
            input,
            output: family.count(&observed.text),
            ..Usage::default()
        })
    }
}

/// A request dropped before it finished (the client went away before the
/// response headers, or the server stopped) still ends in exactly one
/// usage record and one settlement: charged for its input, and for output
/// counted so far, when the provider had the request.
impl Drop for RequestRecord {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.outcome.status == 0 {
            // nginx's "client closed request".
            self.outcome.status = 499;
        }
        self.complete(StreamEnd::ClientGone, Observed::default(), 0);
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A wall-clock time, written as RFC 3339 with milliseconds only when a
/// line is serialized (most requests build a line nobody writes: the
/// usage log off, no span).
#[derive(Debug, Clone, Copy)]
pub struct Timestamp(pub SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

/// One line of the usage log.
#[derive(Serialize)]
pub struct UsageLine<'a> {
    pub ts: Timestamp,
    pub request_id: &'a str,
    pub key: Option<&'a str>,
    pub user: Option<&'a str>,
    pub team: Option<&'a str>,
    pub feature: Option<&'a str>,
    pub end_user: Option<&'a str>,
    pub run: Option<&'a str>,
    pub endpoint: &'static str,
    pub model: Option<&'a str>,
    pub routed_to: Option<&'a str>,
    pub upstream_model: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub status: u16,
    pub stream: bool,
    pub end: &'static str,
    pub error: Option<&'static str>,
    pub input_tokens: Option<u64>,
    pub cached_input_tokens: Option<u64>,
    pub cache_write_tokens: Option<u64>,
    /// The part of `cache_write_tokens` kept an hour (Anthropic); absent
    /// when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_1h_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    pub usage_source: &'static str,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub upstream_ms: Option<f64>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub attempts: u32,
    pub attempt_log: &'a [AttemptInfo],
    pub cost_usd: Option<f64>,
    pub cache: &'static str,
    pub cost_saved_usd: Option<f64>,
    /// The semantic cache's nearest entry's cosine similarity: the hit's
    /// (`cache: "semantic"`) or, in observe mode, the would-be hit's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub semantic_similarity: Option<f64>,
    pub prompt_cache_breakpoints: u32,
    pub loop_detected: bool,
    pub experiment: Option<&'a str>,
    pub arm: Option<&'a str>,
    pub config_version: Option<&'a str>,
    /// The chaos fault injected into this request (`[[faults]]` or
    /// `/admin/faults` name), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<&'a str>,
    /// The W3C trace id (the request span's, or the client's `traceparent`).
    pub trace_id: Option<String>,
    /// How the answer ended, in the provider's words (`stop`, `length`,
    /// `tool_calls`, `end_turn`, `max_tokens`, `completed`, …).
    pub finish_reason: Option<&'a str>,
    /// Sluice set or lowered the output cap (a limit, a budget, the cost cap).
    pub output_capped: bool,
    /// Capped by Sluice, and the answer stopped at that cap.
    pub stopped_at_cap: bool,
    /// Tool calls in the answer.
    pub tool_calls: u32,
    /// Distinct names of the tools called (bounded, see
    /// `stream::observe::answer`).
    pub tool_names: &'a [String],
    /// Batch results read back: what the read charged (see `crate::batch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<batch_charge::BatchLine<'a>>,
}
