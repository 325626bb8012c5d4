//! The per-request record: created when a request arrives, finished exactly
//! once (when the response is built, or when a streamed body ends or is
//! dropped), producing metrics and one JSON usage line.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;

use crate::app::Snapshot;
use crate::attempt::{AttemptInfo, Progress};
use crate::auth::Identity;
use crate::budget::ledger::{BudgetHold, Ledger};
use crate::cache::Capture;
use crate::error::ApiShape;
use crate::limits::rate::Admission;
use crate::limits::tokens::{self, Family};
use crate::metrics::{self, Inflight, RequestLabels};
use crate::pricing::{nanos_to_usd, Price};
use crate::sniff::Endpoint;
use crate::stream::observe::Observed;
use crate::usage::Usage;
use crate::usage_log::UsageLog;

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

/// Everything known about a request while it is served.
pub struct RequestRecord {
    pub id: Arc<str>,
    started: Instant,
    started_at: SystemTime,
    pub identity: Identity,
    pub endpoint: Endpoint,
    pub shape: ApiShape,
    pub stream: bool,
    pub model: String,
    /// The provider and upstream model, the attempts and their timings.
    pub upstream: Progress,
    pub status: u16,
    pub request_bytes: u64,
    first_byte_at: Option<Instant>,
    pub error: Option<&'static str>,
    /// Input tokens counted before sending (when a limit needed them).
    pub input_counted: Option<u64>,
    /// The upstream model's tokenizer.
    pub family: Option<Family>,
    /// The body sent upstream, kept (a reference, not a copy) to count its
    /// input when the provider never reports usage.
    pub request_body: Option<Bytes>,
    /// Rate-limit reservations, settled with the real usage at the end.
    pub admission: Option<Admission>,
    /// The model a routing model (e.g. `auto`) chose.
    pub routed_to: Option<String>,
    /// When the whole request must be over.
    pub deadline: tokio::time::Instant,
    /// The config the request was served under (budgets, prices).
    pub snap: Option<Arc<Snapshot>>,
    /// The price of the model that answered.
    pub price: Option<Price>,
    /// Budget reservations, settled with the actual cost at the end.
    pub budget: Option<BudgetHold>,
    /// Where spend is attributed.
    pub ledger: Option<Arc<Ledger>>,
    /// `hit`, `miss` or `bypass`.
    pub cache: &'static str,
    /// Anthropic prompt-cache breakpoints Sluice added.
    pub breakpoints: u32,
    /// Tees the upstream answer into the cache (a miss that may be stored).
    pub capture: Option<Capture>,
    /// The record was finished (metrics, settlement, usage line).
    done: bool,
    sink: UsageLog,
    _inflight: Inflight,
}

impl RequestRecord {
    pub fn new(id: Arc<str>, started: Instant, sink: UsageLog) -> Self {
        Self {
            id,
            started,
            started_at: SystemTime::now(),
            identity: Identity::default(),
            endpoint: Endpoint::Other,
            shape: ApiShape::OpenAi,
            stream: false,
            model: String::new(),
            upstream: Progress::default(),
            status: 0,
            request_bytes: 0,
            first_byte_at: None,
            error: None,
            input_counted: None,
            family: None,
            request_body: None,
            admission: None,
            routed_to: None,
            deadline: tokio::time::Instant::from_std(started) + Duration::from_secs(900),
            snap: None,
            price: None,
            budget: None,
            ledger: None,
            cache: "bypass",
            breakpoints: 0,
            capture: None,
            done: false,
            sink,
            _inflight: Inflight::start(),
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn first_byte(&mut self, at: Instant) {
        self.first_byte_at.get_or_insert(at);
    }

    /// A terminal SSE error event in the client's API shape.
    pub fn error_event(&self, message: &str) -> Bytes {
        let text = match self.shape {
            ApiShape::OpenAi => format!(
                "data: {}\n\n",
                json!({"error": {"message": message, "type": "server_error", "param": null, "code": "upstream_stream_error"}})
            ),
            ApiShape::Anthropic => format!(
                "event: error\ndata: {}\n\n",
                json!({"type": "error", "error": {"type": "api_error", "message": message}})
            ),
        };
        Bytes::from(text)
    }

    /// Finishes the request: metrics, settlement and the usage line.
    pub fn finish(mut self, end: StreamEnd, observed: Observed, response_bytes: u64) {
        self.complete(end, observed, response_bytes);
    }

    fn complete(&mut self, end: StreamEnd, observed: Observed, response_bytes: u64) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let now = Instant::now();
        let duration = now.duration_since(self.started);
        let ttft = self.first_byte_at.map(|t| t.duration_since(self.started));
        let (usage, usage_source) = match observed.usage {
            Some(u) => (Some(u), "provider"),
            None => match self.estimate(&observed) {
                Some(u) => (Some(u), "estimated"),
                None => (None, "none"),
            },
        };
        if self.price.is_none() && !self.upstream.model.is_empty() {
            self.price = self
                .snap
                .as_ref()
                .and_then(|s| s.config.prices.get(&self.upstream.model));
        }
        if let Some(adm) = self.admission.take() {
            adm.settle(usage.map_or(0, |u| u.input + u.output));
        }
        let list_cost = usage.and_then(|u| self.price.map(|p| p.cost(&u)));
        // A cache hit costs nothing; what it would have cost is recorded.
        let (cost, cost_saved) = if self.cache == "hit" {
            (Some(0), list_cost)
        } else {
            (list_cost, None)
        };

        // Labels come from the config, never from what a client sent.
        let model_label = match &self.snap {
            _ if self.upstream.model.is_empty() => "-",
            Some(snap) => snap.router.model_label(&self.upstream.model),
            None => crate::route::OTHER_MODEL,
        };
        metrics::request_done(
            &RequestLabels {
                model: model_label,
                provider: if self.upstream.provider.is_empty() {
                    "-"
                } else {
                    &self.upstream.provider
                },
                endpoint: self.endpoint.label(),
                status: self.status,
                cache: self.cache,
            },
            duration,
        );
        if let Some(t) = ttft {
            metrics::ttft(self.endpoint.label(), t);
        }
        metrics::overhead(
            self.first_byte_at
                .map(|fb| fb.duration_since(self.started))
                .unwrap_or(duration)
                .saturating_sub(self.upstream.wait),
        );
        if let Some(c) = cost {
            metrics::cost(model_label, c);
            if let Some(l) = &self.ledger {
                l.attribute(&self.identity, c);
            }
        }
        if let Some(u) = &usage {
            metrics::tokens(model_label, "input", u.input);
            metrics::tokens(model_label, "cached_input", u.cached_input);
            metrics::tokens(model_label, "output", u.output);
            metrics::tokens(model_label, "reasoning", u.reasoning);
        }
        metrics::response_bytes(self.endpoint.label(), response_bytes);
        if self.upstream.attempts > 0 {
            metrics::stream_end(end.label());
        }

        let line = UsageLine {
            ts: humantime::format_rfc3339_millis(self.started_at).to_string(),
            request_id: &self.id,
            key: self.identity.key.as_deref(),
            user: self.identity.user.as_deref(),
            team: self.identity.team.as_deref(),
            feature: self.identity.feature.as_deref(),
            end_user: self.identity.end_user.as_deref(),
            endpoint: self.endpoint.label(),
            model: (!self.model.is_empty()).then_some(self.model.as_str()),
            routed_to: self.routed_to.as_deref(),
            upstream_model: (!self.upstream.model.is_empty())
                .then_some(self.upstream.model.as_str()),
            provider: (!self.upstream.provider.is_empty()).then_some(&*self.upstream.provider),
            status: self.status,
            stream: self.stream,
            end: end.label(),
            error: self
                .error
                .or(observed.stream_error.then_some("upstream_stream_error")),
            input_tokens: usage.map(|u| u.input),
            cached_input_tokens: usage.map(|u| u.cached_input),
            cache_write_tokens: usage.map(|u| u.cache_write),
            output_tokens: usage.map(|u| u.output),
            reasoning_tokens: usage.map(|u| u.reasoning),
            usage_source,
            latency_ms: ms(duration),
            ttft_ms: ttft.map(ms),
            upstream_ms: (self.upstream.attempts > 0).then(|| ms(self.upstream.wait)),
            request_bytes: self.request_bytes,
            response_bytes,
            attempts: self.upstream.attempts,
            attempt_log: &self.upstream.log,
            cost_usd: cost.map(nanos_to_usd),
            cache: self.cache,
            cost_saved_usd: cost_saved.map(nanos_to_usd),
            prompt_cache_breakpoints: self.breakpoints,
        };
        match (self.budget.take(), &self.snap) {
            (Some(hold), Some(snap)) => {
                // The usage line is written once the charge is durable.
                let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
                bytes.push(b'\n');
                let budgets = &snap.config.budgets;
                for (budget, bucket, t) in hold.settle(budgets, cost.unwrap_or(0), Some(bytes)) {
                    if let Some(rule) = budgets.iter().find(|b| b.name == budget) {
                        crate::budget::alert::fire(rule, &bucket, t);
                    }
                }
            }
            _ => self.sink.write(&line),
        }
    }
}

impl RequestRecord {
    /// The cost of what a complete response reported (for `x-sluice-cost-usd`);
    /// a cache hit costs nothing.
    pub fn cost_of(&self, observed: &Observed) -> Option<u64> {
        if self.cache == "hit" {
            return Some(0);
        }
        Some(self.price?.cost(observed.usage.as_ref()?))
    }

    /// Usage for a request the provider answered but never reported usage
    /// for (a cut stream): the input as counted, the output from the
    /// streamed text, both with the model's tokenizer.
    fn estimate(&self, observed: &Observed) -> Option<Usage> {
        let answered = self.upstream.attempts > 0
            && ((200..300).contains(&self.status) || self.upstream.awaiting);
        if !answered || !self.endpoint.generates() {
            return None;
        }
        let family = self.family?;
        let input = self.input_counted.or_else(|| {
            self.request_body
                .as_ref()
                .map(|b| tokens::count_or_bound(self.endpoint, b, family))
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
        if self.status == 0 {
            // nginx's "client closed request".
            self.status = 499;
        }
        self.complete(StreamEnd::ClientGone, Observed::default(), 0);
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// One line of the usage log.
#[derive(Serialize)]
pub struct UsageLine<'a> {
    pub ts: String,
    pub request_id: &'a str,
    pub key: Option<&'a str>,
    pub user: Option<&'a str>,
    pub team: Option<&'a str>,
    pub feature: Option<&'a str>,
    pub end_user: Option<&'a str>,
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
    pub prompt_cache_breakpoints: u32,
}
