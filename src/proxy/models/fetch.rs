//! Fetching a provider's own model list: the request (with the credential
//! the caller is entitled to), its cache key, and reading the answer within
//! bounds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::auth::Credential;
use crate::cache::model_lists::ListKey;
use crate::config::ProviderKind;
use crate::metrics;
use crate::upstream::{Pool, SendError, Upstream};

/// Longest one list fetch may take (the provider's `first_byte` and
/// `total` timeouts apply when shorter).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest list body read from a provider.
pub const MAX_LIST_BYTES: usize = 8 << 20;
/// Most ids kept from one provider's list (the first ones).
pub const MAX_IDS: usize = 4096;
/// Longest id kept (longer ones, and ids with control characters, are
/// dropped).
pub const MAX_ID_BYTES: usize = 256;
/// The `anthropic-version` sent with an Anthropic list request.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The request that fetches `u`'s model list on behalf of `cred`, and its
/// cache key; `None` when the caller is not entitled to any (a client's own
/// key and a provider that does not take client keys; no configured key).
pub(super) fn list_request(
    u: &Upstream,
    cred: &Credential,
) -> Option<(Request<Full<Bytes>>, ListKey)> {
    let anthropic = u.kind == ProviderKind::Anthropic;
    let path = if anthropic {
        "/v1/models?limit=1000"
    } else {
        "/v1/models"
    };
    let uri = u.uri(path).ok()?;
    let mut headers = HeaderMap::new();
    match cred {
        Credential::Virtual(_) => {
            let (name, value) = u.auth_header()?;
            headers.insert(name.clone(), value.clone());
            u.set_billing_headers(&mut headers);
        }
        Credential::Passthrough { header, value } => {
            if !u.client_keys {
                return None;
            }
            headers.insert(header.clone(), value.clone());
        }
    }
    if anthropic {
        headers.insert(
            "anthropic-version",
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
    }
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let key = list_key(&u.name, &uri, &headers);
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.method_mut() = Method::GET;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Some((req, key))
}

/// SHA-256 over the provider name, URL and every header of the list
/// request, each part length-prefixed: two callers share a cached list only
/// when Sluice would send the very same request for it.
fn list_key(provider: &str, uri: &http::Uri, headers: &HeaderMap) -> ListKey {
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(b"sluice-model-list-v1");
    part(provider.as_bytes());
    part(uri.to_string().as_bytes());
    for (name, value) in headers {
        part(name.as_str().as_bytes());
        part(value.as_bytes());
    }
    h.finalize().into()
}

/// Fetches one list; a failure is logged, counted and answered `None`.
pub(super) async fn fetch(
    pool: Arc<Pool>,
    req: Request<Full<Bytes>>,
    provider: Arc<str>,
    first_byte: Duration,
    total: Duration,
) -> Option<Vec<Arc<str>>> {
    match fetch_ids(pool, req, &provider, first_byte, total).await {
        Ok(ids) => Some(ids),
        Err(why) => {
            tracing::warn!(provider = %provider, error = %why, "provider model list unavailable; listing without it");
            metrics::model_list_failed(&provider);
            None
        }
    }
}

async fn fetch_ids(
    pool: Arc<Pool>,
    req: Request<Full<Bytes>>,
    provider: &str,
    first_byte: Duration,
    total: Duration,
) -> Result<Vec<Arc<str>>, String> {
    let start = Instant::now();
    let deadline = start + total.min(FETCH_TIMEOUT);
    let head_by = (start + first_byte).min(deadline);
    let resp = match tokio::time::timeout_at(head_by, pool.send(req)).await {
        Err(_) => {
            metrics::upstream_attempt(provider, "timeout");
            return Err("no answer in time".into());
        }
        Ok(Err(e)) => {
            metrics::upstream_attempt(provider, "connect_error");
            return Err(match e {
                SendError::ConnectTimeout => "connect timed out".into(),
                SendError::Connect(why) => why,
            });
        }
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status();
    metrics::upstream_attempt(
        provider,
        match status.as_u16() {
            200..=399 => "ok",
            429 => "rate_limited",
            400..=499 => "client_error",
            _ => "server_error",
        },
    );
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    let read = Limited::new(resp.into_body(), MAX_LIST_BYTES).collect();
    let body = match tokio::time::timeout_at(deadline, read).await {
        Err(_) => return Err("the list did not arrive in time".into()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(format!("the list is over {MAX_LIST_BYTES} bytes"))
        }
        Ok(Err(e)) => return Err(format!("reading the list: {e}")),
        Ok(Ok(c)) => c.to_bytes(),
    };
    parse_ids(&body)
}

/// A list in either provider shape: `{"data":[{"id":..},..],..}`.
#[derive(Deserialize)]
struct List {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    id: String,
}

/// The ids of a provider's list: at most `MAX_IDS`, each non-empty, at most
/// `MAX_ID_BYTES` and free of control characters.
fn parse_ids(body: &[u8]) -> Result<Vec<Arc<str>>, String> {
    let list: List = serde_json::from_slice(body).map_err(|e| format!("not a model list: {e}"))?;
    Ok(list
        .data
        .into_iter()
        .map(|i| i.id)
        .filter(|id| {
            !id.is_empty() && id.len() <= MAX_ID_BYTES && !id.chars().any(char::is_control)
        })
        .take(MAX_IDS)
        .map(Arc::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::config::Config;

    /// The listing tests' providers: `oa`, `local`, `an`.
    fn upstreams() -> Vec<Upstream> {
        let text = super::super::tests::PROVIDERS;
        let cfg = Config::parse(text, "t", &|_| Some("sk-1".into())).expect("config");
        cfg.providers
            .iter()
            .map(|p| Upstream::new(p).expect("upstream"))
            .collect()
    }

    #[test]
    fn list_requests_carry_the_callers_entitlement_and_key_the_cache_by_it() {
        let u = upstreams();
        let (oa, local, an) = (&u[0], &u[1], &u[2]);
        let vk = Credential::Virtual(Arc::new(crate::auth::VirtualKey {
            name: "k".into(),
            user: None,
            team: None,
            models: None,
            limits: Default::default(),
            tier: None,
            passthrough: Vec::new(),
            tier_headers: false,
        }));
        let client = |key: &'static str| Credential::Passthrough {
            header: header::AUTHORIZATION,
            value: HeaderValue::from_static(key),
        };
        let (req, key) = list_request(oa, &vk).expect("virtual key");
        assert_eq!(req.uri().to_string(), "http://127.0.0.1:9/v1/models");
        assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer sk-1");
        let (_, again) = list_request(oa, &vk).expect("virtual key");
        assert_eq!(key, again, "every virtual key shares the provider's list");
        // No configured key: nothing to fetch with.
        assert!(list_request(local, &vk).is_none());
        // A client's own key: its own list, only where client keys go.
        let (req, a) = list_request(oa, &client("Bearer sk-a")).expect("client key");
        assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer sk-a");
        let (_, b) = list_request(oa, &client("Bearer sk-b")).expect("client key");
        assert!(a != b && a != key);
        let (req, _) = list_request(an, &vk).expect("anthropic");
        assert_eq!(
            req.uri().to_string(),
            "http://127.0.0.1:9/v1/models?limit=1000"
        );
        assert_eq!(req.headers()["x-api-key"], "sk-1");
        assert_eq!(req.headers()["anthropic-version"], ANTHROPIC_VERSION);
    }

    #[test]
    fn a_client_key_is_never_sent_to_a_provider_that_does_not_take_client_keys() {
        let u = upstreams();
        // `openai-compatible` takes no client keys unless configured to.
        let local = &u[1];
        assert!(!local.client_keys);
        let cred = Credential::Passthrough {
            header: header::AUTHORIZATION,
            value: HeaderValue::from_static("Bearer sk-a"),
        };
        assert!(list_request(local, &cred).is_none());
    }

    #[test]
    fn ids_are_bounded_and_clean() {
        let mut data: Vec<Value> = vec![
            json!({"id": "a", "object": "model"}),
            json!({"id": ""}),
            json!({"id": "bad\nid"}),
            json!({"id": "x".repeat(MAX_ID_BYTES + 1)}),
            json!({"type": "model", "id": "b", "display_name": "B"}),
        ];
        data.extend((0..MAX_IDS + 5).map(|i| json!({"id": format!("m{i}")})));
        let body = json!({"data": data, "has_more": false}).to_string();
        let ids = parse_ids(body.as_bytes()).expect("list");
        assert_eq!(ids.len(), MAX_IDS);
        assert_eq!((&*ids[0], &*ids[1], &*ids[2]), ("a", "b", "m0"));
        assert!(parse_ids(b"{\"error\":{}}").is_err());
        assert!(parse_ids(b"not json").is_err());
    }
}
