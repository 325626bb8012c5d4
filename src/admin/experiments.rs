//! `/admin/experiments`: what each experiment's arms saw, where its
//! rollout stands, and the calls that move it (see `crate::experiment`).

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{json_response, query_param};
use crate::app::App;
use crate::body::ProxyBody;
use crate::config::Experiment;
use crate::experiment::{ArmStats, Live};
use crate::stats::{self, Effect, Metric, TestConfig};

/// `GET /admin/experiments` (all), `GET /admin/experiments/{name}` (one,
/// with its statistics), `POST /admin/experiments/{name}/{pause|resume|
/// promote|rollback}?reason=…` (audited with `x-sluice-operator`).
pub(super) async fn handle(app: &App, req: &Request<Incoming>) -> Response<ProxyBody> {
    let snap = app.snapshot();
    let rest = req.uri().path()["/admin/experiments".len()..].trim_start_matches('/');
    let (name, action) = match rest.split_once('/') {
        Some((n, a)) => (n, Some(a)),
        None => (rest, None),
    };
    let experiments = &snap.config.experiments;
    let killed = |e: &Experiment, arm: &str| {
        app.kills
            .for_arm(&snap.config.kill_switches, &e.name, arm)
            .is_some()
    };
    if name.is_empty() {
        if req.method() != Method::GET {
            return json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "GET"}));
        }
        let all: Vec<Value> = experiments
            .iter()
            .filter_map(|e| {
                let live = app.experiments.get(&e.name)?;
                Some(view(e, &live, &|a| killed(e, a)))
            })
            .collect();
        return json_response(StatusCode::OK, &json!({ "experiments": all }));
    }
    let Some((e, live)) = experiments
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| Some((e, app.experiments.get(&e.name)?)))
    else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no experiment named {name:?}")}),
        );
    };
    match (req.method(), action) {
        (&Method::GET, None) => json_response(StatusCode::OK, &view(e, &live, &|a| killed(e, a))),
        (&Method::POST, Some(action)) => {
            if e.candidate().is_none() {
                return json_response(
                    StatusCode::CONFLICT,
                    &json!({"error": "rollout calls need exactly two arms (a control and one candidate)"}),
                );
            }
            let by = super::operator(req);
            let reason = query_param(req.uri().query().unwrap_or(""), "reason");
            let counts: Vec<u64> = live.arms.iter().map(|a| a.stats().requests()).collect();
            {
                let mut state = live.state();
                match action {
                    "pause" => state.pause(&by, reason.clone(), &counts),
                    "resume" => state.resume(&by, reason.clone(), &counts),
                    "promote" => state.promote(&by, reason.clone(), &counts),
                    "rollback" => state.roll_back(
                        &by,
                        reason
                            .clone()
                            .unwrap_or_else(|| "rolled back by an operator".into()),
                        &counts,
                    ),
                    other => {
                        return json_response(
                            StatusCode::NOT_FOUND,
                            &json!({"error": format!("unknown action {other:?} (pause, resume, promote, rollback)")}),
                        )
                    }
                }
            }
            tracing::warn!(experiment = %e.name, %action, %by, reason = reason.as_deref().unwrap_or(""), "experiment rollout changed by an operator");
            if let Err(err) = app.experiments.persist() {
                return json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": err}));
            }
            if let Some(fleet) = &app.fleet {
                // Every replica follows within a second (its probe reads it).
                let state = live.state().clone();
                if let Err(err) = fleet.save_experiments(&[state]).await {
                    return json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({"error": format!("saved here, not shared with the fleet: {err}")}),
                    );
                }
            }
            json_response(StatusCode::OK, &view(e, &live, &|a| killed(e, a)))
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "GET /admin/experiments/{name} or POST /admin/experiments/{name}/{action}"}),
        ),
    }
}

/// The minimum effects "can we decide yet?" is answered for: +2 points of
/// error rate, +10 % mean latency (on log latency) and +10 % cost per request.
const EFFECTS: [(Metric, Effect); 3] = [
    (Metric::ErrorRate, Effect::Absolute(0.02)),
    (Metric::LogLatency, Effect::Relative(0.1)),
    (Metric::CostUsd, Effect::Relative(0.1)),
];

/// A candidate against the control: each metric's sequential comparison
/// (difference, always-valid interval and p-value, decision) and how many
/// more requests per arm would detect the minimum effect at 80 % power.
fn against(control: &ArmStats, candidate: &ArmStats, test: &TestConfig) -> Value {
    let mut out = serde_json::Map::new();
    for metric in [
        Metric::ErrorRate,
        Metric::LogLatency,
        Metric::TtftMs,
        Metric::CostUsd,
    ] {
        let c = stats::compare(metric, control, candidate, test);
        out.insert(metric_name(metric).into(), json!(c));
    }
    let plans: serde_json::Map<String, Value> = EFFECTS
        .iter()
        .map(|(metric, effect)| {
            let p = stats::plan(
                *metric,
                control.sample(*metric),
                candidate.sample(*metric),
                *effect,
                0.8,
                test,
            );
            (metric_name(*metric).to_owned(), json!(p))
        })
        .collect();
    out.insert("to_decide".into(), Value::Object(plans));
    Value::Object(out)
}

fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::ErrorRate => "error_rate",
        Metric::LatencyMs => "latency_ms",
        Metric::LogLatency => "log_latency",
        Metric::TtftMs => "ttft_ms",
        Metric::CostUsd => "cost_usd",
    }
}

/// One experiment as the admin API shows it.
fn view(e: &Experiment, live: &Live, killed: &dyn Fn(&str) -> bool) -> Value {
    let weights = live.weights(e, killed);
    let total: f64 = weights.iter().sum();
    let state = live.state().clone();
    let stats: Vec<ArmStats> = live.arms.iter().map(|a| a.stats()).collect();
    let test = e.guards.as_ref().map(|g| g.stats.test).unwrap_or_default();
    let arms: Vec<Value> = e
        .arms
        .iter()
        .zip(&stats)
        .zip(&weights)
        .enumerate()
        .map(|(i, ((arm, s), w))| {
            let mut v = json!({
                "name": arm.name,
                "model": arm.model,
                "control": i == e.control,
                "share_percent": if total > 0.0 { w / total * 100.0 } else { 0.0 },
                "killed": killed(&arm.name),
                "stats": s.snapshot(),
            });
            if let (false, Some(control)) = (i == e.control, stats.get(e.control)) {
                v["vs_control"] = against(control, s, &test);
            }
            v
        })
        .collect();
    json!({
        "name": e.name,
        "model": e.model,
        "rollout": {
            "phase": state.phase,
            "step": e.ramp.as_ref().map(|_| state.step),
            "steps": e.ramp.as_ref().map(|r| &r.steps),
            "since": state.since,
            "by": state.by,
            "reason": state.reason,
        },
        "arms": arms,
    })
}
