//! `GET /admin/shadows` and `GET /admin/shadows/{name}`: how each shadow's
//! answers compared with the primary's (see `crate::shadow`).

use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::json_response;
use crate::app::App;
use crate::body::ProxyBody;
use crate::config::Shadow;

fn view(app: &App, s: &Shadow) -> Value {
    let live = app.shadows.get(&s.name);
    json!({
        "name": s.name,
        "model": s.model,
        "shadow_model": s.shadow_model,
        "percent": s.percent,
        "max_in_flight": s.max_in_flight,
        "in_flight": live.as_ref().map(|l| s.max_in_flight.saturating_sub(l.slots.available_permits())),
        "spent_today_usd": live.as_ref().map(|l| crate::pricing::nanos_to_usd(l.spent_today())),
        "max_usd_per_day": s.max_per_day.map(crate::pricing::nanos_to_usd),
        "totals": live.map(|l| l.totals().view()),
    })
}

pub(super) fn handle(app: &App, path: &str) -> Response<ProxyBody> {
    let snap = app.snapshot();
    let name = path["/admin/shadows".len()..].trim_start_matches('/');
    if name.is_empty() {
        let all: Vec<Value> = snap.config.shadows.iter().map(|s| view(app, s)).collect();
        return json_response(StatusCode::OK, &json!({ "shadows": all }));
    }
    match snap.config.shadows.iter().find(|s| s.name == name) {
        Some(s) => json_response(StatusCode::OK, &view(app, s)),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no shadow named {name:?}")}),
        ),
    }
}
