//! `GET /v1/models` and `GET /v1/models/{id}`, answered by Sluice: the
//! configured exact model names, merged with each provider's own list for
//! the glob rules that send names on to it, all filtered by what the caller
//! may use, so an SDK's `models.list()` shows every model the client can
//! actually use.
//!
//! Order: the exact names in config order, then for each glob-routed
//! provider (in rule order) its ids in the provider's order; each id once.
//! A provider id is listed when a request for it would be routed by a glob
//! rule that sends it on unchanged to that provider (not when an earlier
//! rule takes the name elsewhere), and when the caller's key allows it.
//!
//! Fetching a provider's list: `GET {base_url}/models` (Anthropic:
//! `/v1/models?limit=1000`, one page) through the provider's pooled client,
//! with the credential the caller is entitled to: for a virtual key the
//! provider's configured key (and its organisation/project); for a client's
//! own key (passthrough mode) that key, and only to providers that take
//! client keys. Lists are cached by the exact request (URL and headers,
//! credential included), so one client's list is never shown to another
//! credential; see `cache::model_lists` for the TTLs and bounds. A list that
//! cannot be fetched leaves the answer with the configured names and what is
//! still cached: never an error for the whole list.

mod fetch;

use std::collections::HashSet;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Response, StatusCode};
use serde_json::Value;

use crate::app::{App, Snapshot};
use crate::auth::Credential;
use crate::body::ProxyBody;
use crate::cache::model_lists::Ids;
use crate::error::{ApiShape, ProxyError};
use crate::path::{Family, Route as Target};
use crate::protocol;
use crate::sniff::Endpoint;

use fetch::{fetch, list_request};

/// `owned_by` of the configured names.
const SLUICE: &str = "sluice";

/// One model the caller may use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    id: Arc<str>,
    /// `sluice` for a configured name, else the provider whose list has it.
    owner: Arc<str>,
}

/// Sluice's answer to a request that lists models (`GET /v1/models`) or
/// looks one up (`GET /v1/models/{id}`: found when the caller may use it,
/// else 404 in the caller's API shape); `None` for any other request (other
/// methods on `/v1/models/{id}` stay a passthrough path).
pub(super) async fn answer(
    app: &App,
    snap: &Snapshot,
    target: &Target,
    method: &Method,
    shape: ApiShape,
    cred: &Credential,
) -> Option<Result<Response<ProxyBody>, ProxyError>> {
    if target.endpoint == Endpoint::Models {
        let listed = visible(app, snap, shape, cred, None).await;
        return Some(Ok(json_response(protocol::models::list(
            shape,
            &listed.iter().map(Listed::wire).collect::<Vec<_>>(),
        ))));
    }
    if *method != Method::GET || target.family != Some(Family::Models) {
        return None;
    }
    let raw = target.path.strip_prefix("/v1/models/")?;
    let Some(id) = decode(raw) else {
        return Some(Err(ProxyError::UnknownModel {
            model: raw.to_owned(),
        }));
    };
    let found = visible(app, snap, shape, cred, Some(&id)).await;
    Some(match found.first() {
        Some(m) => Ok(json_response(protocol::models::model(shape, m.wire()))),
        None => Err(ProxyError::UnknownModel { model: id }),
    })
}

/// The models `cred` may use through `shape` (only `wanted`, when given;
/// a configured name is then found without fetching any list).
async fn visible(
    app: &App,
    snap: &Snapshot,
    shape: ApiShape,
    cred: &Credential,
    wanted: Option<&str>,
) -> Vec<Listed> {
    let upstreams = &snap.upstreams;
    let router = &snap.router;
    let allowed = |m: &str| match cred {
        Credential::Virtual(vk) => vk.allows(m),
        Credential::Passthrough { .. } => true,
    };
    let owner: Arc<str> = Arc::from(SLUICE);
    let mut seen: HashSet<Arc<str>> = HashSet::new();
    let mut out: Vec<Listed> = Vec::new();
    for name in router.listed_models() {
        if wanted.is_some_and(|w| w != name) || !allowed(name) || seen.contains(name) {
            continue;
        }
        // Usable: routed for this API, and (for a client's own key) some
        // deployment on its chain takes client keys.
        // A virtual key also reaches models of the other API (translated).
        let own_key = matches!(cred, Credential::Passthrough { .. });
        let usable = router
            .resolve_across(name, shape, !own_key, upstreams)
            .is_some_and(|r| {
                !own_key
                    || router.chain(r, shape, false, upstreams).iter().any(|r| {
                        r.rule
                            .deployments
                            .iter()
                            .any(|d| upstreams.get(d.provider).is_some_and(|u| u.client_keys))
                    })
            });
        if usable {
            let id: Arc<str> = Arc::from(name);
            seen.insert(id.clone());
            out.push(Listed {
                id,
                owner: owner.clone(),
            });
        }
    }
    // Experiments' public names, when their control is served for this API.
    for e in &snap.config.experiments {
        let name = e.model.as_str();
        if wanted.is_some_and(|w| w != name) || !allowed(name) || seen.contains(name) {
            continue;
        }
        let control = &e.arms[e.control].model;
        if router.resolve(control, shape, upstreams).is_some() {
            let id: Arc<str> = Arc::from(name);
            seen.insert(id.clone());
            out.push(Listed {
                id,
                owner: owner.clone(),
            });
        }
    }
    if wanted.is_some() && !out.is_empty() {
        return out;
    }

    // Each glob-routed provider's own list, fetched (or taken from the
    // cache) concurrently.
    let fetches = router
        .glob_providers(shape, upstreams)
        .into_iter()
        .filter_map(|p| {
            let u = upstreams.get(p)?;
            let (req, key) = list_request(u, cred)?;
            Some((p, key, req, u))
        })
        .map(|(p, key, req, u)| async move {
            let fetch = fetch(
                u.pool().clone(),
                req,
                u.name.clone(),
                u.timeouts.first_byte,
                u.timeouts.total,
            );
            (p, app.model_lists.get(key, fetch).await)
        });
    let lists: Vec<(usize, Ids)> = futures_util::future::join_all(fetches).await;
    for (p, ids) in lists {
        let Some(provider) = upstreams.get(p) else {
            continue;
        };
        for id in ids.iter() {
            if wanted.is_some_and(|w| w != id.as_ref())
                || seen.contains(id)
                || !allowed(id)
                || !router.passes_on(id, shape, upstreams, p)
            {
                continue;
            }
            seen.insert(id.clone());
            out.push(Listed {
                id: id.clone(),
                owner: provider.name.clone(),
            });
        }
    }
    out
}

/// The `{id}` of `/v1/models/{id}` as the client meant it (the normalised
/// path keeps escapes of reserved characters, e.g. `%3A`).
fn decode(raw: &str) -> Option<String> {
    if !raw.contains('%') {
        return Some(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Listed {
    fn wire(&self) -> protocol::models::Model<'_> {
        protocol::models::Model {
            id: &self.id,
            owner: &self.owner,
        }
    }
}

fn json_response(body: Value) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body.to_string()));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// `oa` (OpenAI, key), `local` (OpenAI-compatible, no key), `an`
    /// (Anthropic, key): the providers of the listing tests.
    pub(super) const PROVIDERS: &str = r#"
[[providers]]
name = "oa"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "K"

[[providers]]
name = "local"
kind = "openai-compatible"
base_url = "http://127.0.0.1:9/v1"

[[providers]]
name = "an"
kind = "anthropic"
base_url = "http://127.0.0.1:9"
api_key_env = "K"
"#;

    fn snapshot(models: &str) -> Snapshot {
        let text = format!("{PROVIDERS}{models}\n");
        let cfg = Config::parse(&text, "t", &|_| Some("sk-1".into())).expect("config");
        Snapshot::build(cfg).expect("snapshot")
    }

    #[test]
    fn glob_providers_are_those_a_glob_sends_names_on_to() {
        let snap = snapshot(
            r#"
[[models]]
name = "claude-*"
provider = "an"
[[models]]
name = "fixed-*"
provider = "local"
upstream_model = "one"
[[models]]
name = "gpt-*"
provider = "oa"
[[models]]
name = "*"
provider = "oa"
"#,
        );
        let (r, u) = (&snap.router, &snap.upstreams);
        // `fixed-*` maps every name to one model: the provider's list says
        // nothing about it. `oa` appears once.
        assert_eq!(r.glob_providers(ApiShape::OpenAi, u), [0]);
        assert_eq!(r.glob_providers(ApiShape::Anthropic, u), [2]);
        assert!(r.passes_on("gpt-4o", ApiShape::OpenAi, u, 0));
        assert!(r.passes_on("o3", ApiShape::OpenAi, u, 0));
        // Taken by an earlier rule to another model.
        assert!(!r.passes_on("fixed-x", ApiShape::OpenAi, u, 0));
        assert!(r.passes_on("claude-x", ApiShape::Anthropic, u, 2));
        assert!(!r.passes_on("gpt-4o", ApiShape::Anthropic, u, 2));
    }

    #[test]
    fn ids_in_paths_are_decoded() {
        assert_eq!(decode("gpt-4o").as_deref(), Some("gpt-4o"));
        assert_eq!(
            decode("ft%3Agpt-4o%3Aorg").as_deref(),
            Some("ft:gpt-4o:org")
        );
        assert_eq!(decode("bad%zz"), None);
        assert_eq!(decode("bad%4"), None);
        assert_eq!(decode("%FF"), None);
    }
}
