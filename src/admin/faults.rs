//! `/admin/faults`: chaos faults switched on at runtime, always with an
//! expiry (see `crate::fault`).

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{json_response, query_param};
use crate::app::App;
use crate::body::ProxyBody;
use crate::fault::{FaultRule, RawFault, Stored, MAX_EXPIRES_IN};

/// Largest request body (one fault as JSON).
const MAX_BODY: usize = 16 * 1024;

/// `/admin/faults`: list (GET: config and runtime ones), switch on (POST, a
/// JSON body with a `[[faults]]` entry's fields plus `expires_in` seconds,
/// 1 to 86400; audited with `x-sluice-operator`; a runtime fault of the
/// same name is replaced), switch off (DELETE `?name=…`).
pub(super) async fn handle(app: &App, req: Request<Incoming>) -> Response<ProxyBody> {
    let now = crate::fault::now_secs();
    let bad = |msg: String| json_response(StatusCode::BAD_REQUEST, &json!({"error": msg}));
    match req.method().clone() {
        Method::GET => {
            let snap = app.snapshot();
            let config = snap
                .config
                .faults
                .iter()
                .map(|f| json!({"source": "config", "fault": f.raw}));
            let runtime = app.faults.list(now).into_iter().map(|s| {
                json!({"source": "admin", "fault": s.fault, "by": s.by, "set_at": s.set_at,
                       "expires_at": s.expires_at, "expires_in": s.expires_at.saturating_sub(now)})
            });
            json_response(
                StatusCode::OK,
                &json!({"faults": config.chain(runtime).collect::<Vec<_>>()}),
            )
        }
        Method::DELETE => {
            let query = req.uri().query().unwrap_or("");
            let Some(name) = query_param(query, "name") else {
                return bad("DELETE /admin/faults?name=NAME".into());
            };
            match app.faults.clear(&name, now) {
                Ok(true) => {
                    tracing::warn!(fault = %name, by = %super::operator(&req), "fault off");
                    json_response(StatusCode::OK, &json!({"cleared": name}))
                }
                Ok(false) => json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": "no runtime fault by that name (config faults go with the config)"}),
                ),
                Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e})),
            }
        }
        Method::POST => {
            let by = super::operator(&req);
            let body = match read(req.into_body()).await {
                Ok(b) => b,
                Err(e) => return bad(e),
            };
            let (raw, expires_in) = match parse(&body) {
                Ok(p) => p,
                Err(e) => return bad(e),
            };
            let rule = match FaultRule::from_raw(&raw) {
                Ok(r) => r,
                Err(errs) => {
                    let errors: Vec<String> =
                        errs.into_iter().map(|(f, m)| format!("{f}: {m}")).collect();
                    return json_response(StatusCode::BAD_REQUEST, &json!({"errors": errors}));
                }
            };
            if app
                .snapshot()
                .config
                .faults
                .iter()
                .any(|f| f.name == rule.name)
            {
                return bad(format!("a [[faults]] entry is named {:?}", rule.name));
            }
            let stored = Stored {
                fault: raw,
                by,
                set_at: now,
                expires_at: now.saturating_add(expires_in),
            };
            match app.faults.set(stored.clone(), rule, now) {
                Ok(()) => {
                    tracing::warn!(fault = %stored.fault.name, by = %stored.by, expires_in, "fault on");
                    json_response(StatusCode::OK, &json!({"fault": stored}))
                }
                Err(e) => json_response(StatusCode::CONFLICT, &json!({"error": e})),
            }
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "GET, POST or DELETE"}),
        ),
    }
}

pub(super) async fn read(body: Incoming) -> Result<bytes::Bytes, String> {
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        Limited::new(body, MAX_BODY).collect(),
    )
    .await;
    match read {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => Err(format!("body: {e} (at most {MAX_BODY} bytes)")),
        Err(_) => Err("body: not received within 10s".into()),
    }
}

/// The fault and its `expires_in` (mandatory, 1 to [`MAX_EXPIRES_IN`]).
fn parse(body: &[u8]) -> Result<(RawFault, u64), String> {
    let mut obj = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err("expected a JSON object".into()),
        Err(e) => return Err(format!("body: {e}")),
    };
    let expires_in = match obj.remove("expires_in") {
        Some(Value::Number(n)) => n.as_u64().filter(|s| (1..=MAX_EXPIRES_IN).contains(s)),
        None => {
            return Err(format!(
            "expires_in is required (seconds, 1 to {MAX_EXPIRES_IN}): a fault cannot be left on"
        ))
        }
        Some(_) => None,
    }
    .ok_or_else(|| format!("expires_in: seconds, 1 to {MAX_EXPIRES_IN}"))?;
    let raw: RawFault = serde_json::from_value(Value::Object(obj)).map_err(|e| e.to_string())?;
    Ok((raw, expires_in))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_mandatory_and_capped() {
        let ok = parse(br#"{"name":"x","status":500,"expires_in":60}"#).expect("ok");
        assert_eq!(ok.1, 60);
        assert_eq!(ok.0.status, Some(500));
        for bad in [
            &br#"{"name":"x","status":500}"#[..],
            br#"{"name":"x","status":500,"expires_in":0}"#,
            br#"{"name":"x","status":500,"expires_in":86401}"#,
            br#"{"name":"x","status":500,"expires_in":"1h"}"#,
            br#"{"name":"x","status":500,"expires_in":60,"colour":"red"}"#,
            br#"[1]"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
