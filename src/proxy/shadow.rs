//! Shadow copies: a request matching a `[[shadows]]` rule is also sent to
//! the shadow model, in a task of its own, never on the client's path. The
//! copy takes one of the shadow's bounded slots or is dropped (counted).
//! Nothing else of it happens while the primary runs: the record spawns the
//! copy once the primary's answer went to the client (an agent's next call
//! comes after it has read the answer), handing it that answer. The copy is
//! then routed, sent and read to the end, and the two answers are compared
//! and recorded (a usage line joined by request id, the shadow's totals).
//! Its cost counts against the shadow's own daily cap, never against a
//! client's budgets; a client's own key never pays for a copy (passthrough
//! requests are not mirrored).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use crate::app::{App, Snapshot};
use crate::attempt::{self, Answered, Progress};
use crate::auth::Credential;
use crate::config::Shadow;
use crate::error::ApiShape;
use crate::metrics;
use crate::record::RequestRecord;
use crate::shadow::{compare, Answer, Pending, Primary, ShadowLive};
use crate::sniff::Endpoint;

use super::answer::{observer_for, read_bounded, ReadLimits};
use super::stages::Asked;

/// The longest a shadow's answer may pause between chunks.
const SHADOW_IDLE: Duration = Duration::from_secs(120);

/// Starts a shadow copy of this request when a rule matches and a slot is
/// free.
pub(super) fn mirror(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    asked: &Asked<'_>,
    body: &Bytes,
    rec: &mut RequestRecord,
) {
    let (cred, s) = (asked.cred, asked.s);
    let rules = &snap.config.shadows;
    if rules.is_empty() || matches!(cred, Credential::Passthrough { .. }) {
        return;
    }
    let id = &rec.facts.identity;
    let among = |list: &Option<Vec<String>>, v: Option<&str>| {
        list.as_ref()
            .is_none_or(|l| v.is_some_and(|v| l.iter().any(|x| x == v)))
    };
    let Some(rule) = rules.iter().find(|r| {
        crate::glob::glob_match(&r.model, &s.model)
            && among(&r.features, id.feature.as_deref())
            && among(&r.keys, id.key.as_deref())
    }) else {
        return;
    };
    if rule.percent < 100.0 && fastrand::f64() * 100.0 >= rule.percent {
        return;
    }
    let Some(live) = app.shadows.get(&rule.name) else {
        return;
    };
    if !live.under_cap(rule.max_per_day) {
        metrics::shadow(&rule.name, "dropped_budget");
        live.update(|t| t.dropped_budget += 1);
        return;
    }
    let Ok(permit) = live.slots.clone().try_acquire_owned() else {
        metrics::shadow(&rule.name, "dropped_full");
        live.update(|t| t.dropped_full += 1);
        return;
    };
    live.update(|t| t.mirrored += 1);
    metrics::shadow(&rule.name, "sent");
    let copy = Copy {
        app: app.clone(),
        snap: snap.clone(),
        rule: rule.clone(),
        live,
        method: asked.parts.method.clone(),
        path_and_query: asked.path_and_query.to_owned(),
        headers: asked.parts.headers.clone(),
        cred: cred.clone(),
        body: body.clone(),
        model: s.model.clone(),
        endpoint: rec.facts.endpoint,
        shape: rec.facts.shape,
        primary_id: rec.facts.id.clone(),
        budget: rec
            .facts
            .deadline
            .saturating_duration_since(tokio::time::Instant::now()),
    };
    // Nothing more happens on the primary's path: the record starts the
    // copy once the primary's answer went to the client.
    rec.facts.shadow = Some(Pending::new(move |primary| {
        crate::worker::spawn_main(copy.run(primary, permit));
    }));
}

/// One shadow copy, owned by its task.
struct Copy {
    app: Arc<App>,
    snap: Arc<Snapshot>,
    rule: Shadow,
    live: Arc<ShadowLive>,
    method: http::Method,
    path_and_query: String,
    headers: http::HeaderMap,
    cred: Credential,
    body: Bytes,
    model: String,
    endpoint: Endpoint,
    shape: ApiShape,
    primary_id: Arc<str>,
    /// The primary's time budget, the copy's own once it is sent.
    budget: std::time::Duration,
}

impl Copy {
    async fn run(self, primary: Primary, _slot: OwnedSemaphorePermit) {
        let deadline = tokio::time::Instant::now() + self.budget;
        let Some(groups) = self.groups() else {
            metrics::shadow(&self.rule.name, "error");
            return;
        };
        let started = Instant::now();
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let mut progress = Progress::default();
        let (answer, usage) = self.send(groups, &mut progress, started, deadline).await;
        let cost = usage
            .as_ref()
            .and_then(|u| Some(self.snap.config.prices.get(&progress.model)?.cost(u)));
        if let Some(c) = cost {
            self.live.spent(c);
            metrics::shadow_cost(&self.rule.name, c);
        }
        let answer = Answer {
            cost_nanos: cost,
            ..answer
        };
        if !(200..300).contains(&answer.status) {
            metrics::shadow(&self.rule.name, "error");
        }
        let comparison = compare(&primary, &answer);
        self.live.update(|t| {
            if !(200..300).contains(&answer.status) {
                t.shadow_errors += 1;
            }
            t.shadow_cost_nanos = t.shadow_cost_nanos.saturating_add(cost.unwrap_or(0));
            let (p, c) = (&primary, &comparison);
            t.compared += 1;
            t.status_match += u64::from(c.status_match);
            t.exact_match += u64::from(c.exact_match);
            t.finish_match += u64::from(c.finish_match);
            t.tool_names_match += u64::from(c.tool_names_match);
            t.with_tools +=
                u64::from(!p.facts.tool_names.is_empty() || !answer.facts.tool_names.is_empty());
            t.similarity.push(c.similarity);
            t.latency_delta_ms.push(c.latency_delta_ms);
            if let Some(d) = c.ttft_delta_ms {
                t.ttft_delta_ms.push(d);
            }
            t.primary_cost_nanos = t
                .primary_cost_nanos
                .saturating_add(p.cost_nanos.unwrap_or(0));
        });
        let usd = crate::pricing::nanos_to_usd;
        self.app.usage.write(&json!({
            "ts": ts,
            "request_id": format!("{}-shadow", self.primary_id),
            "shadow": self.rule.name,
            "shadow_of": &*self.primary_id,
            "endpoint": self.endpoint.label(),
            "model": self.rule.shadow_model,
            "upstream_model": (!progress.model.is_empty()).then_some(&progress.model),
            "provider": (!progress.provider.is_empty()).then_some(&*progress.provider),
            "status": answer.status,
            "latency_ms": answer.latency_ms,
            "ttft_ms": answer.ttft_ms,
            "input_tokens": usage.map(|u| u.input),
            "output_tokens": answer.output_tokens,
            "cost_usd": cost.map(usd),
            "finish_reason": answer.facts.finish_reason,
            "tool_names": (!answer.facts.tool_names.is_empty()).then_some(&answer.facts.tool_names),
            "comparison": comparison,
            "primary": {
                "status": primary.status,
                "latency_ms": primary.latency_ms,
                "ttft_ms": primary.ttft_ms,
                "output_tokens": primary.output_tokens,
                "cost_usd": primary.cost_nanos.map(usd),
                "finish_reason": primary.facts.finish_reason,
                "tool_names": (!primary.facts.tool_names.is_empty()).then_some(&primary.facts.tool_names),
            },
        }));
    }

    /// The shadow model's first group only, one try: a copy adds no
    /// retries. A shadow model of the other API gets the request
    /// translated (a copy to another provider's model is what a shadow is
    /// often for).
    fn groups(&self) -> Option<VecDeque<attempt::Group>> {
        let snap = &self.snap;
        let route = snap.router.resolve_across(
            &self.rule.shadow_model,
            self.shape,
            self.endpoint.crosses(),
            &snap.upstreams,
        )?;
        let input = attempt::GroupInput {
            upstreams: &snap.upstreams,
            registry: &self.app.deployments,
            cred: &self.cred,
            shape: self.shape,
            body: &self.body,
            include_usage: false,
            max_retries: 0,
            breakpoints: attempt::breakpoints(&snap.config.cache),
        };
        let groups: VecDeque<attempt::Group> = attempt::group_for(&route, &input)
            .map(|g| attempt::Group {
                context_fallback: None,
                ..g
            })
            .into_iter()
            .filter(|g| !g.candidates.is_empty())
            .collect();
        (!groups.is_empty()).then_some(groups)
    }

    /// Sends the copy and reads its answer to the end.
    async fn send(
        &self,
        groups: VecDeque<attempt::Group>,
        progress: &mut Progress,
        started: Instant,
        deadline: tokio::time::Instant,
    ) -> (Answer, Option<crate::usage::Usage>) {
        let call = attempt::Call {
            snap: &self.snap,
            registry: &self.app.deployments,
            method: &self.method,
            path_and_query: &self.path_and_query,
            client_headers: &self.headers,
            cred: &self.cred,
            body: self.body.clone(),
            client_model: Some(&self.model),
            endpoint: self.endpoint,
            shape: self.shape,
            deadline,
            reads_answer: true,
            fault: None,
            // A copy is not part of the client's trace.
            trace: &crate::telemetry::RequestTrace::default(),
            include_usage: false,
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (status, observed, ttft) = match attempt::run(&call, groups, progress).await {
            Ok(Answered::Stream(resp)) => {
                let head_at = started.elapsed();
                let (mut head, body) = resp.into_parts();
                let limits = ReadLimits {
                    max: self.snap.config.server.bounds.max_response_body,
                    idle: SHADOW_IDLE,
                    deadline,
                };
                let read = read_bounded(body, &head.headers, limits).await;
                // A copy sent to Bedrock is read as the Anthropic answer it carries.
                let api = super::bedrock::bedrock_api(&self.snap, &progress.provider);
                let read = read.map(|bytes| {
                    super::bedrock::decode_whole(&mut head, bytes, api, &progress.model)
                });
                let streamed = head
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
                // A translated copy is read in its provider's API; its finish
                // reason is put in the client's words for the comparison.
                let crossed = progress.crossing.as_ref().map(|c| c.to);
                let endpoint = match crossed {
                    Some(ApiShape::Anthropic) => Endpoint::Messages,
                    Some(ApiShape::OpenAi) => Endpoint::ChatCompletions,
                    None => self.endpoint,
                };
                match read {
                    Ok(bytes) => {
                        let mut observer = observer_for(endpoint, &head, false).with_text();
                        observer.observe(&bytes);
                        let mut observed = observer.finish();
                        if let (Some(to), Some(reason)) = (crossed, &observed.answer.finish_reason)
                        {
                            let word =
                                crate::protocol::Across::from(to.other()).finish_reason(reason);
                            observed.answer.finish_reason = Some(word.to_owned());
                        }
                        (
                            head.status.as_u16(),
                            observed,
                            streamed.then(|| ms(head_at)),
                        )
                    }
                    Err(_) => (502, Default::default(), None),
                }
            }
            Ok(Answered::Buffered(head, _)) => (head.status.as_u16(), Default::default(), None),
            Err(e) => (e.status().as_u16(), Default::default(), None),
        };
        let observed: crate::stream::observe::Observed = observed;
        let answer = Answer {
            status,
            latency_ms: ms(started.elapsed()),
            ttft_ms: ttft,
            output_tokens: observed.usage.map(|u| u.output),
            cost_nanos: None,
            text: observed.text,
            facts: observed.answer,
        };
        (answer, observed.usage)
    }
}
