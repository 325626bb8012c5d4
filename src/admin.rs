//! The admin plane: health, readiness, Prometheus metrics, and token-protected
//! `/admin/*` operations.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::app::App;
use crate::body::ProxyBody;
use crate::config::OnUnavailable;

mod capture;
mod experiments;
mod export;
mod faults;
mod keys;
mod kills;
mod shadows;

/// Serves one admin request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if app.is_shutting_down() {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            } else if let Some(why) = app.fleet.as_ref().and_then(|f| {
                // Fail-closed replicas refuse limited requests without Redis:
                // send traffic elsewhere. Fail-open ones still serve.
                (f.policy == OnUnavailable::FailClosed)
                    .then(|| f.health.unavailable_because())
                    .flatten()
                    .map(|e| format!("redis state store unavailable ({e})"))
            }) {
                let mut r = Response::new(ProxyBody::full(format!("not ready: {why}\n")));
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                r
            } else if let Some(why) = app.ledger.journal_degraded() {
                // Charges cannot be made durable: send traffic elsewhere.
                let mut r = Response::new(ProxyBody::full(format!("not ready: {why}\n")));
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                r
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            let s = app.cache.stats();
            crate::metrics::cache_stats(s.bytes, s.entries, s.hits, s.misses, s.evictions);
            let mut r = Response::new(ProxyBody::full(app.render_metrics()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (_, p) if p.starts_with("/admin/") => {
            if let Some(denied) = reject(&app, &req) {
                return denied;
            }
            if p == "/admin/experiments" || p.starts_with("/admin/experiments/") {
                return experiments::handle(&app, &req).await;
            }
            if p == "/admin/faults" {
                return faults::handle(&app, req).await;
            }
            if p == "/admin/capture" {
                return capture::handle(&app, req).await;
            }
            if p == "/admin/kills" {
                return kills::handle(&app, &req).await;
            }
            if p == "/admin/keys" || p == "/admin/keys/rotate" {
                return keys::handle(&app, &req).await;
            }
            admin(&app, req.method(), p, req.uri().query().unwrap_or("")).await
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
    }
}

async fn admin(app: &App, method: &Method, path: &str, query: &str) -> Response<ProxyBody> {
    match (method, path) {
        (&Method::GET, p) if p == "/admin/shadows" || p.starts_with("/admin/shadows/") => {
            shadows::handle(app, p)
        }
        (&Method::POST, "/admin/reload") => match app.reload() {
            Ok(()) => json_response(StatusCode::OK, &json!({"reloaded": true})),
            Err(e) => {
                tracing::error!(errors = %e, "config reload refused; old config keeps serving");
                json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({"reloaded": false, "errors": e.errors}),
                )
            }
        },
        (&Method::GET, "/admin/deployments") => {
            let cfg = app.snapshot().config.breaker;
            json_response(
                StatusCode::OK,
                &json!({"deployments": app.deployments.report(&cfg)}),
            )
        }
        (&Method::POST, p) if p.starts_with("/admin/deployments/") => {
            // /admin/deployments/{provider}/{model}/eject|restore
            let rest = &p["/admin/deployments/".len()..];
            let Some((name, action)) = rest.rsplit_once('/') else {
                return json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": "expected /admin/deployments/PROVIDER/MODEL/eject|restore"}),
                );
            };
            let name = percent_decode(name);
            let Some(d) = app.deployments.find(&name) else {
                return json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("unknown deployment {name:?} (see GET /admin/deployments)")}),
                );
            };
            match action {
                "eject" => d.breaker.eject(),
                "restore" => d.breaker.restore(),
                _ => {
                    return json_response(
                        StatusCode::NOT_FOUND,
                        &json!({"error": "expected eject or restore"}),
                    )
                }
            }
            let cfg = app.snapshot().config.breaker;
            let state = d.breaker.state(&cfg);
            crate::metrics::circuit(&d.name, state);
            tracing::warn!(deployment = %name, action, "deployment {action}ed by the admin API");
            json_response(
                StatusCode::OK,
                &json!({"deployment": name, "circuit": state}),
            )
        }
        (&Method::GET, "/admin/cache") => {
            let s = app.cache.stats();
            json_response(
                StatusCode::OK,
                &json!({"entries": s.entries, "bytes": s.bytes, "hits": s.hits, "misses": s.misses, "evictions": s.evictions}),
            )
        }
        (&Method::GET, "/admin/cache/semantic") => {
            let snap = app.snapshot();
            json_response(
                StatusCode::OK,
                &app.semantic.view(snap.config.semantic_cache.as_ref()),
            )
        }
        (&Method::POST, "/admin/cache/semantic/purge") => {
            let purged = app.semantic.purge();
            json_response(StatusCode::OK, &json!({"purged": purged}))
        }
        (&Method::POST, "/admin/cache/purge") => {
            let model = query_param(query, "model");
            let tenant = query_param(query, "tenant");
            let purged = if model.is_none() && tenant.is_none() {
                let n = app.cache.stats().entries;
                app.cache.purge_all();
                n
            } else {
                app.cache.purge_where(|e| {
                    model.as_deref().is_none_or(|m| e.model == m)
                        && tenant.as_deref().is_none_or(|t| e.tenant == t)
                })
            };
            json_response(StatusCode::OK, &json!({"purged": purged}))
        }
        (&Method::GET, "/admin/budgets") => {
            let snap = app.snapshot();
            let budgets = &snap.config.budgets;
            match &app.fleet {
                Some(fleet) => match fleet.budget_report(budgets).await {
                    Ok(report) => json_response(
                        StatusCode::OK,
                        &json!({"scope": "fleet", "budgets": report}),
                    ),
                    Err(e) => state_unavailable(&e),
                },
                None => json_response(
                    StatusCode::OK,
                    &json!({"scope": "process", "budgets": app.ledger.report(budgets)}),
                ),
            }
        }
        (&Method::POST, "/admin/budgets/reset") => {
            let snap = app.snapshot();
            let bucket = query_param(query, "bucket").unwrap_or_default();
            let reset = match &app.fleet {
                Some(fleet) => match fleet.reset_budget(&snap.config.budgets, &bucket).await {
                    Ok(done) => done,
                    Err(e) => return state_unavailable(&e),
                },
                None => app.ledger.reset(&snap.config.budgets, &bucket),
            };
            if reset {
                tracing::warn!(%bucket, "budget reset by the admin API");
                json_response(StatusCode::OK, &json!({"reset": bucket}))
            } else {
                json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("unknown budget bucket {bucket:?} (expected NAME or NAME|dim=value, see GET /admin/budgets)")}),
                )
            }
        }
        (&Method::GET, "/admin/spend") => {
            let by = query_param(query, "by").unwrap_or_else(|| "user".into());
            let n = query_param(query, "top")
                .and_then(|t| t.parse().ok())
                .unwrap_or(10);
            let (scope, top) = match &app.fleet {
                Some(fleet) => match fleet.spend_top(&by, n).await {
                    Ok(top) => ("fleet", top),
                    Err(e) => return state_unavailable(&e),
                },
                None => ("process", app.ledger.spend.top(&by, n)),
            };
            json_response(
                StatusCode::OK,
                &json!({"by": by, "window": "today (UTC)", "scope": scope, "top": top}),
            )
        }
        (&Method::GET, "/admin/usage") => usage_export(app, query),
        (&Method::GET, "/admin/limits") => {
            // `?filter=user=alice` narrows to buckets whose name contains it.
            let filter = query_param(query, "filter").unwrap_or_default();
            let snap = app.snapshot();
            let overrides = rate_overrides(&snap.config.rate_limits);
            match &app.fleet {
                Some(fleet) => match fleet.rate_report(&filter).await {
                    Ok(buckets) => json_response(
                        StatusCode::OK,
                        &json!({"scope": "fleet", "buckets": buckets, "overrides": overrides}),
                    ),
                    Err(e) => state_unavailable(&e),
                },
                None => json_response(
                    StatusCode::OK,
                    &json!({"scope": "process", "buckets": app.rate.snapshot(&filter), "overrides": overrides}),
                ),
            }
        }
        (&Method::GET, "/admin/config") => {
            let snap = app.snapshot();
            let c = &snap.config;
            json_response(
                StatusCode::OK,
                &json!({
                    "server": {
                        "listen": c.server.listen.to_string(),
                        "max_body": c.server.max_body,
                        "passthrough_keys": c.server.passthrough_keys,
                        "tls": c.server.tls.is_some(),
                    },
                    "state": match &c.redis {
                        None => json!({"backend": "embedded", "path": c.state_path}),
                        Some(r) => json!({
                            "backend": "redis",
                            "url": crate::config::redact(&r.url),
                            "key_prefix": r.key_prefix,
                            "timeout_ms": r.timeout.as_millis() as u64,
                            "on_unavailable": match r.on_unavailable {
                                OnUnavailable::FailClosed => "fail_closed",
                                OnUnavailable::FailOpen => "fail_open",
                            },
                            "fail_open_share": f64::from(r.fail_open_share) / 1000.0,
                        }),
                    },
                    "providers": c.providers.iter().map(|p| {
                        let mut v = json!({
                            "name": p.name,
                            "kind": p.kind.as_str(),
                            "base_url": p.base_url.to_string(),
                            "api_key_env": p.api_key_env,
                            "api_key_set": p.api_key.is_some(),
                        });
                        // Bedrock signs with AWS credentials: where they come from.
                        if let Some(b) = &p.bedrock {
                            v["region"] = json!(b.region);
                            v["bedrock_api"] = json!(b.api.as_str());
                            v["aws_access_key_id_env"] = json!(b.access_key_id_env);
                            v["aws_secret_access_key_env"] = json!(b.secret_access_key_env);
                            v["aws_session_token_env"] = json!(b.session_token_env);
                            v["api_key_set"] = json!(b.keys.is_some());
                        }
                        v
                    }).collect::<Vec<_>>(),
                    "models": c.models.iter().map(|m| json!({
                        "name": m.pattern,
                        "deployments": m.deployments.iter().map(|d| json!({
                            "provider": c.providers.get(d.provider).map(|p| p.name.as_str()),
                            "upstream_model": d.upstream_model,
                            "weight": d.weight,
                        })).collect::<Vec<_>>(),
                        "fallbacks": m.fallbacks,
                        "context_fallback": m.context_fallback,
                    })).collect::<Vec<_>>(),
                    "keys": c.keys.iter().map(|k| json!({
                        "name": k.name, "user": k.user, "team": k.team, "models": k.models,
                    })).collect::<Vec<_>>(),
                    "faults": c.faults.iter().map(|f| &f.raw).collect::<Vec<_>>(),
                }),
            )
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "unknown admin endpoint"}),
        ),
    }
}

/// Checks the bearer token in constant time (`/admin/*` is off without
/// one); `Some` is the refusal to send.
fn reject(app: &App, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
    let snap = app.snapshot();
    let Some(token) = snap.config.admin.token.as_deref() else {
        return Some(json_response(
            StatusCode::FORBIDDEN,
            &json!({"error": "admin API disabled: set [admin] token_env and that variable"}),
        ));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    (!constant_time_eq(presented.as_bytes(), token.as_bytes())).then(|| {
        json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid admin token"}),
        )
    })
}

/// The usage records between `from` and `to` (RFC 3339, inclusive), as
/// JSON (`format=json`, the default) or CSV (`format=csv`), streamed from
/// the file (see `export`).
fn usage_export(app: &App, query: &str) -> Response<ProxyBody> {
    let snap = app.snapshot();
    let crate::config::UsageSink::File(path) = &snap.config.log.usage else {
        return json_response(
            StatusCode::CONFLICT,
            &json!({"error": "usage export needs [log] usage = \"<file path>\""}),
        );
    };
    let q = match export::Query::parse(|name| query_param(query, name)) {
        Ok(q) => q,
        Err(e) => return json_response(StatusCode::BAD_REQUEST, &json!({ "error": e })),
    };
    let Some(permit) = export::permit() else {
        let mut r = json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": format!("at most {} usage exports run at once; retry later", export::MAX_CONCURRENT)}),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": format!("{}: {e}", path.display())}),
            )
        }
    };
    let csv = q.csv;
    let mut resp = Response::new(export::stream(file, q, permit));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if csv { "text/csv" } else { "application/json" }),
    );
    resp
}

/// A query parameter, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

/// A query value as forms write it: `+` is a space, `%XX` a byte.
fn percent_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Equal, in time that depends only on the lengths (`subtle`'s compare,
/// which the optimiser cannot short-circuit).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The configured per-entity rate limits, for `/admin/limits`.
fn rate_overrides(rules: &[crate::config::RateRule]) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = rules
        .iter()
        .flat_map(|r| {
            r.overrides.iter().map(move |(scope, limits)| match limits {
                None => json!({"rule": r.name, "scope": scope, "unlimited": true}),
                Some(l) => json!({
                    "rule": r.name,
                    "scope": scope,
                    "requests_per_minute": l.requests_per_minute,
                    "tokens_per_minute": l.tokens_per_minute,
                    "max_concurrent": l.max_concurrent,
                }),
            })
        })
        .collect();
    out.sort_by_key(|v| (v["rule"].to_string(), v["scope"].to_string()));
    out
}

/// Who made an admin change: `x-sluice-operator` (1–128 bytes), else `admin`.
fn operator(req: &Request<Incoming>) -> String {
    req.headers()
        .get("x-sluice-operator")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .unwrap_or("admin")
        .to_owned()
}

/// An admin view that needs Redis while it is unavailable.
fn state_unavailable(e: &crate::fleet::report::Unavailable) -> Response<ProxyBody> {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({"error": e.to_string()}),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("user%3Dalice+x"), "user=alice x");
        assert_eq!(super::percent_decode("%zz%4"), "%zz%4");
        assert_eq!(super::percent_decode("caf%C3%A9"), "café");
    }
}
