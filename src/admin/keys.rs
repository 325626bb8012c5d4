//! `/admin/keys`: virtual keys issued, listed, updated, rotated and revoked
//! at runtime (see `crate::key_store`).

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{json_response, query_param};
use crate::app::App;
use crate::body::ProxyBody;
use crate::key_store::{insert, new_secret, IssuedKey};

/// What one call changes.
struct Change {
    /// Keys to store (new, or old ones with a shortened expiry).
    put: Vec<IssuedKey>,
    /// Digests to remove.
    revoked: Vec<String>,
    /// The new key's secret, shown once.
    secret: Option<String>,
}

/// `/admin/keys`: issue (POST `?name=…&user=…&team=…&models=a,b&expires_in=30d`;
/// the key is in the answer, once), list (GET), update (PATCH `?name=…` and
/// any of user, team, models, expires_in), revoke (DELETE `?name=…`);
/// `/admin/keys/rotate` (POST `?name=…&grace=10m`): a new key for the same
/// identity, the old one valid for `grace` more. Audited with
/// `x-sluice-operator`.
pub(super) async fn handle(app: &App, req: &Request<Incoming>) -> Response<ProxyBody> {
    let query = req.uri().query().unwrap_or("");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let by = super::operator(req);
    let bad = |msg: String| json_response(StatusCode::BAD_REQUEST, &json!({"error": msg}));
    let duration = |field: &str| -> Result<Option<u64>, String> {
        query_param(query, field)
            .map(|t| {
                crate::config::parse_duration(&t)
                    .map(|d| d.as_secs())
                    .map_err(|e| format!("{field}: {e}"))
            })
            .transpose()
    };
    let name = query_param(query, "name").filter(|n| {
        !n.is_empty() && n.len() <= 128 && !n.chars().any(|c| c.is_control() || c == '|')
    });
    let rotate = req.uri().path().ends_with("/rotate");
    let change: Result<Change, String> = match (req.method(), name, rotate) {
        (&Method::GET, _, false) => {
            let keys = app.issued_keys.list();
            let shown: Vec<_> = keys
                .iter()
                .map(|k| {
                    json!({"name": k.name, "sha256_prefix": &k.sha256[..12.min(k.sha256.len())],
                               "user": k.user, "team": k.team, "models": k.models,
                               "expires_at": k.expires_at, "created_at": k.created_at,
                               "created_by": k.created_by, "expired": k.expired(now)})
                })
                .collect();
            return json_response(StatusCode::OK, &json!({ "keys": shown }));
        }
        (&Method::POST, Some(name), false) => {
            let snap = app.snapshot();
            let taken = snap.config.keys.iter().any(|k| k.name == name)
                || app.issued_keys.list().iter().any(|k| k.name == name);
            if taken {
                return json_response(
                    StatusCode::CONFLICT,
                    &json!({"error": format!("a key named {name:?} exists")}),
                );
            }
            let expires_at = match duration("expires_in") {
                Ok(d) => d.map(|s| now + s),
                Err(e) => return bad(e),
            };
            let text = |f: &str| query_param(query, f).filter(|v| !v.is_empty() && v.len() <= 256);
            new_secret().map(|secret| {
                let key = IssuedKey {
                    name,
                    sha256: crate::auth::hash_key(&secret),
                    user: text("user"),
                    team: text("team"),
                    models: text("models").map(|m| m.split(',').map(str::to_owned).collect()),
                    expires_at,
                    created_at: now,
                    created_by: by.clone(),
                };
                Change {
                    put: vec![key],
                    revoked: Vec::new(),
                    secret: Some(secret),
                }
            })
        }
        (&Method::POST, Some(name), true) => {
            let grace = match duration("grace") {
                Ok(d) => d.unwrap_or(0),
                Err(e) => return bad(e),
            };
            let old: Vec<IssuedKey> = app
                .issued_keys
                .list()
                .into_iter()
                .filter(|k| k.name == name && !k.expired(now))
                .collect();
            let Some(newest) = old.iter().max_by_key(|k| k.created_at).cloned() else {
                return json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("no live runtime key named {name:?}")}),
                );
            };
            new_secret().map(|secret| {
                let mut put: Vec<IssuedKey> = old
                    .into_iter()
                    .map(|mut k| {
                        let until = now + grace;
                        k.expires_at = Some(k.expires_at.map_or(until, |t| t.min(until)));
                        k
                    })
                    .collect();
                put.push(IssuedKey {
                    sha256: crate::auth::hash_key(&secret),
                    created_at: now,
                    created_by: by.clone(),
                    ..newest
                });
                Change {
                    put,
                    revoked: Vec::new(),
                    secret: Some(secret),
                }
            })
        }
        (&Method::PATCH, Some(name), false) => match updated(app, query, &name, now) {
            Ok(put) => Ok(Change {
                put,
                revoked: Vec::new(),
                secret: None,
            }),
            Err((status, e)) => return json_response(status, &json!({ "error": e })),
        },
        (&Method::DELETE, Some(name), false) => {
            let gone: Vec<String> = app
                .issued_keys
                .list()
                .into_iter()
                .filter(|k| k.name == name)
                .map(|k| k.sha256)
                .collect();
            if gone.is_empty() {
                return json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("no runtime key named {name:?} (config keys go with the config)")}),
                );
            }
            Ok(Change {
                put: Vec::new(),
                revoked: gone,
                secret: None,
            })
        }
        (&Method::POST | &Method::PATCH | &Method::DELETE, None, _) => {
            return bad("name: 1 to 128 characters, no '|' or control characters".into())
        }
        _ => {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "GET, POST, PATCH or DELETE"}),
            )
        }
    };
    let Change {
        put,
        revoked,
        secret,
    } = match change {
        Ok(c) => c,
        Err(e) => return json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e})),
    };
    let written = match &app.fleet {
        Some(fleet) => fleet.write_keys(&put, &revoked).await,
        None => app.issued_keys.update(|map| {
            for sha in &revoked {
                map.retain(|_, k| &k.sha256 != sha);
            }
            for k in put.iter().cloned() {
                insert(map, k)?;
            }
            Ok(())
        }),
    };
    if let Err(e) = written {
        return json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e}));
    }
    let names: Vec<&str> = put.iter().map(|k| k.name.as_str()).collect();
    tracing::warn!(by = %by, keys = ?names, revoked = revoked.len(), rotated = rotate, "virtual keys changed by the admin API");
    match (secret, put.last()) {
        (Some(secret), Some(k)) => json_response(
            if rotate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            },
            &json!({"key": secret, "name": k.name, "expires_at": k.expires_at,
                    "note": "the key is shown once; Sluice keeps only its SHA-256"}),
        ),
        (None, Some(_)) => json_response(StatusCode::OK, &json!({"updated": put.len()})),
        _ => json_response(StatusCode::OK, &json!({"revoked": revoked.len()})),
    }
}

/// The live keys named `name` with the fields the query sets replaced: a
/// parameter present replaces its field; `models=` lifts the allow-list,
/// `expires_in=never` the expiry.
fn updated(
    app: &App,
    query: &str,
    name: &str,
    now: u64,
) -> Result<Vec<IssuedKey>, (StatusCode, String)> {
    let expires_at = match query_param(query, "expires_in").as_deref() {
        None => None,
        Some("never") => Some(None),
        Some(t) => match crate::config::parse_duration(t) {
            Ok(d) => Some(Some(now + d.as_secs())),
            Err(e) => return Err((StatusCode::BAD_REQUEST, format!("expires_in: {e}"))),
        },
    };
    let field =
        |f: &str| query_param(query, f).map(|v| (!v.is_empty() && v.len() <= 256).then_some(v));
    let (user, team, models) = (field("user"), field("team"), field("models"));
    let put: Vec<IssuedKey> = app
        .issued_keys
        .list()
        .into_iter()
        .filter(|k| k.name == name && !k.expired(now))
        .map(|mut k| {
            if let Some(u) = &user {
                k.user = u.clone();
            }
            if let Some(t) = &team {
                k.team = t.clone();
            }
            if let Some(m) = &models {
                k.models = m
                    .as_ref()
                    .map(|m| m.split(',').map(str::to_owned).collect());
            }
            if let Some(e) = expires_at {
                k.expires_at = e;
            }
            k
        })
        .collect();
    if put.is_empty() {
        return Err((
            StatusCode::NOT_FOUND,
            format!("no live runtime key named {name:?}"),
        ));
    }
    Ok(put)
}
