//! `/admin/kills`: kill switches set and cleared at runtime (see
//! `crate::kill`).

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{json_response, query_param};
use crate::app::App;
use crate::body::ProxyBody;

/// `/admin/kills`: list (GET), turn off (POST `?target=model%3Dx&reason=…
/// [&replacement=…]`, audited with the `x-sluice-operator` header), turn
/// back on (DELETE `?target=…`).
pub(super) async fn handle(app: &App, req: &Request<Incoming>) -> Response<ProxyBody> {
    use crate::kill::{Switch, Target};
    let snap = app.snapshot();
    let query = req.uri().query().unwrap_or("");
    let target = query_param(query, "target").map(|t| (Target::parse(&t), t));
    let bad_target = |t: &str| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("target {t:?} is not {}", crate::kill::TARGET_FORMS)}),
        )
    };
    match (req.method(), target) {
        (&Method::GET, _) => {
            let config: Vec<_> = snap
                .config
                .kill_switches
                .iter()
                .map(|s| json!({"source": "config", "switch": s}))
                .collect();
            let runtime: Vec<_> = app
                .kills
                .list()
                .into_iter()
                .map(|s| json!({"source": "admin", "switch": s}))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({ "switches": config.into_iter().chain(runtime).collect::<Vec<_>>() }),
            )
        }
        (&Method::POST, Some((Some(target), _)))
            if target
                .provider()
                .is_some_and(|p| !snap.upstreams.iter().any(|u| &*u.name == p)) =>
        {
            json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("no provider named {:?}", target.provider())}),
            )
        }
        (&Method::POST, Some((Some(target), _))) => {
            let replacement = query_param(query, "replacement");
            if let Some(r) = &replacement {
                let routable = matches!(target, Target::Model(_))
                    && snap
                        .router
                        .resolve(r, crate::error::ApiShape::OpenAi, &snap.upstreams)
                        .or_else(|| {
                            snap.router.resolve(
                                r,
                                crate::error::ApiShape::Anthropic,
                                &snap.upstreams,
                            )
                        })
                        .is_some();
                if !routable {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": format!("replacement {r:?} must be a model a [[models]] rule serves, for a model target")}),
                    );
                }
            }
            let by = super::operator(req);
            let switch = Switch {
                target,
                reason: query_param(query, "reason").unwrap_or_else(|| "no reason given".into()),
                by,
                at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                replacement,
            };
            // Fleet mode: in Redis, for every replica; else in the file.
            let set = match &app.fleet {
                Some(fleet) => fleet.kill(&switch).await,
                None => app.kills.set(switch.clone()),
            };
            match set {
                Ok(()) => {
                    tracing::warn!(target = %switch.target.value(), kind = switch.target.label(), by = %switch.by, reason = %switch.reason, "kill switch on");
                    crate::metrics::kill_switches(
                        snap.config.kill_switches.len() + app.kills.list().len(),
                    );
                    json_response(StatusCode::OK, &json!({"disabled": switch}))
                }
                Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e})),
            }
        }
        (&Method::DELETE, Some((Some(target), _))) => {
            let cleared = match &app.fleet {
                Some(fleet) => fleet.unkill(&target).await,
                None => app.kills.clear(&target),
            };
            match cleared {
                Ok(true) => {
                    tracing::warn!(target = %target.value(), kind = target.label(), "kill switch off");
                    crate::metrics::kill_switches(
                        snap.config.kill_switches.len() + app.kills.list().len(),
                    );
                    json_response(StatusCode::OK, &json!({"enabled": target}))
                }
                Ok(false) => json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": "no runtime kill switch on that target (config switches go with the config)"}),
                ),
                Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e})),
            }
        }
        (&Method::POST | &Method::DELETE, Some((None, t))) => bad_target(&t),
        (&Method::POST | &Method::DELETE, None) => bad_target(""),
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "GET, POST or DELETE"}),
        ),
    }
}
