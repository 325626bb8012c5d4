//! `/admin/capture`: the capture rules, the triggers in force and the
//! counters (GET); capture one key, user or feature for the next N minutes
//! (POST `{"user": "alice", "minutes": 15}`); end a trigger early (DELETE
//! `?user=alice`).

use std::sync::atomic::Ordering;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{json_response, query_param};
use crate::app::App;
use crate::body::ProxyBody;
use crate::capture::triggers::{MAX_MINUTES, MAX_VALUE};
use crate::capture::{now_secs, Dim, Trigger};
use crate::config::CaptureRule;

const DIMS: [(&str, Dim); 3] = [
    ("key", Dim::Key),
    ("user", Dim::User),
    ("feature", Dim::Feature),
];

pub(super) async fn handle(app: &App, req: Request<Incoming>) -> Response<ProxyBody> {
    let now = now_secs();
    let bad = |msg: String| json_response(StatusCode::BAD_REQUEST, &json!({"error": msg}));
    match req.method().clone() {
        Method::GET => json_response(StatusCode::OK, &view(app, now)),
        Method::DELETE => {
            let query = req.uri().query().unwrap_or("");
            let Some((dim, value)) = DIMS
                .iter()
                .find_map(|(name, d)| Some((*d, query_param(query, name)?)))
            else {
                return bad("DELETE /admin/capture?key=K (or user=U, feature=F)".into());
            };
            if app.capture.triggers.clear(dim, &value, now) {
                tracing::info!(?dim, value = %value, by = %super::operator(&req), "capture trigger off");
                json_response(StatusCode::OK, &json!({"cleared": value}))
            } else {
                json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": "no capture trigger for that subject"}),
                )
            }
        }
        Method::POST => {
            if !app.capture.is_on() {
                return json_response(
                    StatusCode::CONFLICT,
                    &json!({"error": "capture is off: configure [capture] (path) and restart"}),
                );
            }
            let by = super::operator(&req);
            let body = match super::faults::read(req.into_body()).await {
                Ok(b) => b,
                Err(e) => return bad(e),
            };
            let (dim, value, minutes) = match parse(&body) {
                Ok(p) => p,
                Err(e) => return bad(e),
            };
            let t = Trigger {
                dim,
                value,
                by,
                set_at: now,
                expires_at: now.saturating_add(minutes * 60),
            };
            match app.capture.triggers.set(t.clone(), now) {
                Ok(()) => {
                    tracing::info!(?t.dim, value = %t.value, by = %t.by, minutes, "capture trigger on");
                    json_response(StatusCode::OK, &json!({"trigger": t}))
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

fn view(app: &App, now: u64) -> Value {
    let snap = app.snapshot();
    let c = &app.capture.counts;
    let rules: Vec<Value> = snap
        .config
        .capture
        .iter()
        .flat_map(|c| c.rules.iter())
        .map(|r| match r {
            CaptureRule::Error => json!({"on": "error"}),
            CaptureRule::Sample(ratio) => json!({"on": "sample", "ratio": ratio}),
            CaptureRule::Match {
                key,
                user,
                feature,
                model,
            } => {
                json!({"on": "match", "key": key, "user": user, "feature": feature, "model": model})
            }
        })
        .collect();
    let triggers: Vec<Value> = app
        .capture
        .triggers
        .list(now)
        .into_iter()
        .map(|t| {
            let left = t.expires_at.saturating_sub(now);
            json!({"dim": t.dim, "value": t.value, "by": t.by, "set_at": t.set_at,
                   "expires_at": t.expires_at, "expires_in": left})
        })
        .collect();
    json!({
        "on": app.capture.is_on(),
        "path": snap.config.capture.as_ref().map(|c| c.path.display().to_string()),
        "rules": rules,
        "triggers": triggers,
        "written": c.written.load(Ordering::Relaxed),
        "dropped_queue_full": c.dropped_queue_full.load(Ordering::Relaxed),
        "dropped_write_error": c.dropped_write_error.load(Ordering::Relaxed),
    })
}

/// One of `key`, `user`, `feature`, and `minutes` (1 to [`MAX_MINUTES`]).
fn parse(body: &[u8]) -> Result<(Dim, String, u64), String> {
    let obj = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err("expected a JSON object".into()),
        Err(e) => return Err(format!("body: {e}")),
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "key" | "user" | "feature" | "minutes"))
    {
        return Err(format!("unknown field {k:?} (key, user, feature, minutes)"));
    }
    let subjects: Vec<(Dim, &Value)> = DIMS
        .iter()
        .filter_map(|(name, d)| Some((*d, obj.get(*name)?)))
        .collect();
    let [(dim, value)] = subjects.as_slice() else {
        return Err("exactly one of key, user or feature".into());
    };
    let value = match value {
        Value::String(s) if !s.is_empty() && s.len() <= MAX_VALUE => s.clone(),
        _ => return Err(format!("the subject: a string of 1 to {MAX_VALUE} bytes")),
    };
    let minutes = obj
        .get("minutes")
        .and_then(Value::as_u64)
        .filter(|m| (1..=MAX_MINUTES).contains(m))
        .ok_or_else(|| format!("minutes is required: 1 to {MAX_MINUTES}"))?;
    Ok((*dim, value, minutes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_subject_and_bounded_minutes() {
        let ok = parse(br#"{"user":"alice","minutes":15}"#).expect("ok");
        assert_eq!(ok, (Dim::User, "alice".into(), 15));
        for bad in [
            &br#"{"user":"alice"}"#[..],
            br#"{"user":"alice","minutes":0}"#,
            br#"{"user":"alice","minutes":1441}"#,
            br#"{"user":"alice","key":"k","minutes":5}"#,
            br#"{"minutes":5}"#,
            br#"{"user":"","minutes":5}"#,
            br#"{"user":"alice","minutes":5,"model":"x"}"#,
            br#"[1]"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
