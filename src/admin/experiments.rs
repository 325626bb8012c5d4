//! `/admin/experiments`: what each experiment's arms saw, where its
//! rollout stands, and the calls that move it (see `crate::experiment`).

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{json_response, query_param};
use crate::app::App;
use crate::body::ProxyBody;
use crate::config::Experiment;
use crate::experiment::Live;

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
            let counts: Vec<u64> = live.arms.iter().map(|a| a.stats().requests).collect();
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
            json_response(StatusCode::OK, &view(e, &live, &|a| killed(e, a)))
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "GET /admin/experiments/{name} or POST /admin/experiments/{name}/{action}"}),
        ),
    }
}

/// One experiment as the admin API shows it.
fn view(e: &Experiment, live: &Live, killed: &dyn Fn(&str) -> bool) -> Value {
    let weights = live.weights(e, killed);
    let total: f64 = weights.iter().sum();
    let state = live.state().clone();
    let arms: Vec<Value> = e
        .arms
        .iter()
        .zip(&live.arms)
        .zip(&weights)
        .enumerate()
        .map(|(i, ((arm, l), w))| {
            json!({
                "name": arm.name,
                "model": arm.model,
                "control": i == e.control,
                "share_percent": if total > 0.0 { w / total * 100.0 } else { 0.0 },
                "killed": killed(&arm.name),
                "stats": l.stats(),
            })
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
