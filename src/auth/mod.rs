//! Who is calling: a Sluice virtual key (looked up by its SHA-256), or the
//! client's own provider key passed through when the listener allows it.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use crate::config::{KeyConfig, TokenLimits};
use crate::error::ProxyError;
use crate::glob::in_filter;
use crate::path::Family;
pub use crate::vocab::Identity;

mod digest;

/// How the upstream request is authenticated.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A virtual key: Sluice uses the provider's configured key.
    Virtual(Arc<VirtualKey>),
    /// The client's own key, forwarded in the header it came in.
    Passthrough {
        header: HeaderName,
        value: HeaderValue,
    },
}

impl Credential {
    /// The virtual key, unless the client sent its own provider key.
    pub fn virtual_key(&self) -> Option<&VirtualKey> {
        match self {
            Credential::Virtual(vk) => Some(vk),
            Credential::Passthrough { .. } => None,
        }
    }
}

/// A configured virtual key.
#[derive(Debug)]
pub struct VirtualKey {
    pub name: Arc<str>,
    pub user: Option<Arc<str>>,
    pub team: Option<Arc<str>>,
    pub models: Option<Vec<String>>,
    pub limits: TokenLimits,
    /// Tier name for routing rules.
    pub tier: Option<String>,
    /// Passthrough families this key may reach (its own plus `[server]`'s).
    pub passthrough: Vec<Family>,
    /// May pick a tier through header rules even when identity headers are
    /// not trusted.
    pub tier_headers: bool,
}

impl VirtualKey {
    /// Whether this key may use the public model `model`.
    pub fn allows(&self, model: &str) -> bool {
        in_filter(self.models.as_ref(), model)
    }

    /// Whether this key may use the passthrough family `f`.
    pub fn allows_family(&self, f: Family) -> bool {
        self.passthrough.contains(&f)
    }
}

/// The key table of one config snapshot.
#[derive(Debug, Default)]
pub struct Keys {
    by_hash: HashMap<[u8; 32], Arc<VirtualKey>>,
    passthrough: bool,
    trust_headers: bool,
    /// The passthrough families every virtual key may use (`[server]`).
    families: Vec<Family>,
    /// `[jwt]`: verified tokens are credentials too.
    jwt: Option<crate::jwt::JwtVerifier>,
}

/// SHA-256 of a key, hex encoded: what `[[keys]] sha256` holds.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Keys {
    /// The key table; `families` are the passthrough families every virtual
    /// key may use.
    pub fn new(
        keys: &[KeyConfig],
        passthrough: bool,
        trust_headers: bool,
        families: &[Family],
    ) -> Self {
        let by_hash = keys
            .iter()
            .map(|k| {
                let mut allowed = k.passthrough.clone();
                allowed.extend_from_slice(families);
                allowed.sort();
                allowed.dedup();
                let vk = VirtualKey {
                    passthrough: allowed,
                    tier_headers: k.tier_headers,
                    name: k.name.as_str().into(),
                    user: k.user.as_deref().map(Into::into),
                    team: k.team.as_deref().map(Into::into),
                    models: k.models.clone(),
                    limits: k.limits,
                    tier: k.tier.clone(),
                };
                (k.sha256, Arc::new(vk))
            })
            .collect();
        Self {
            by_hash,
            passthrough,
            trust_headers,
            families: families.to_vec(),
            jwt: None,
        }
    }

    /// Accepts verified JWTs as credentials.
    pub fn with_jwt(mut self, jwt: Option<crate::jwt::JwtVerifier>) -> Self {
        self.jwt = jwt;
        self
    }

    /// A verified token's bearer, as a virtual key named `jwt`.
    fn bearer_of(&self, token: &str) -> Option<(Credential, Identity)> {
        let claims = self.jwt.as_ref()?.verify(token)?;
        let vk = Arc::new(VirtualKey {
            name: "jwt".into(),
            user: claims.user.map(Into::into),
            team: claims.team.map(Into::into),
            models: None,
            limits: TokenLimits::default(),
            tier: None,
            passthrough: self.families.clone(),
            tier_headers: false,
        });
        let id = Identity {
            key: Some(vk.name.clone()),
            user: vk.user.clone(),
            team: vk.team.clone(),
            feature: claims.feature.map(Into::into),
            ..Identity::default()
        };
        Some((Credential::Virtual(vk), id))
    }

    /// A key issued at runtime, as a virtual key of this snapshot.
    fn issued(&self, k: crate::key_store::IssuedKey) -> Arc<VirtualKey> {
        Arc::new(VirtualKey {
            name: k.name.into(),
            user: k.user.map(Into::into),
            team: k.team.map(Into::into),
            models: k.models,
            limits: TokenLimits::default(),
            tier: None,
            passthrough: self.families.clone(),
            tier_headers: false,
        })
    }

    /// Whether identity headers (`x-sluice-*`) are trusted.
    pub fn trusts_headers(&self) -> bool {
        self.trust_headers
    }

    /// Authenticates a request from its headers.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        issued: &crate::key_store::KeyStore,
    ) -> Result<(Credential, Identity), ProxyError> {
        let (header, value, key) = presented_key(headers).ok_or(ProxyError::MissingKey)?;
        if self.jwt.is_some() && crate::jwt::looks_like_jwt(key) {
            // A token that does not verify is refused, never passed through.
            return self.bearer_of(key).ok_or(ProxyError::InvalidKey);
        }
        let digest = digest::sha256(key.as_bytes());
        let runtime = || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            issued.lookup(&digest, now).map(|k| self.issued(k))
        };
        let found = self.by_hash.get(&digest).cloned().or_else(runtime);
        let (cred, mut id) = match found.as_ref() {
            Some(vk) => (
                Credential::Virtual(vk.clone()),
                Identity {
                    key: Some(vk.name.clone()),
                    user: vk.user.clone(),
                    team: vk.team.clone(),
                    ..Identity::default()
                },
            ),
            None if self.passthrough => (
                Credential::Passthrough { header, value },
                Identity {
                    // 128 bits of the key's SHA-256: distinct keys never
                    // share cache entries, budgets or rate buckets.
                    key: Some(crate::text::prefixed_hex("passthrough:", &digest[..16])),
                    ..Identity::default()
                },
            ),
            None => return Err(ProxyError::InvalidKey),
        };
        if self.trust_headers {
            let get = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .filter(|s| !s.is_empty())
                    .map(Arc::<str>::from)
            };
            id.user = id.user.or_else(|| get("x-sluice-user"));
            id.team = id.team.or_else(|| get("x-sluice-team"));
            id.feature = get("x-sluice-feature");
        }
        Ok((cred, id))
    }
}

/// The key the client presented, the header it used, and that header's value.
fn presented_key(headers: &HeaderMap) -> Option<(HeaderName, HeaderValue, &str)> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        // The scheme is case-insensitive (RFC 9110 §11.1); another scheme
        // leaves the key to `x-api-key`.
        let bearer = v
            .to_str()
            .ok()
            // (The scheme is a few bytes: a byte loop, not the generic
            // pattern searcher `split_once` takes.)
            .and_then(|s| {
                s.bytes()
                    .position(|b| b == b' ')
                    .map(|at| (&s[..at], &s[at + 1..]))
            })
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim())
            .filter(|key| !key.is_empty());
        if let Some(key) = bearer {
            return Some((http::header::AUTHORIZATION, v.clone(), key));
        }
    }
    let v = headers.get("x-api-key")?;
    let key = v.to_str().ok()?.trim();
    (!key.is_empty()).then(|| (HeaderName::from_static("x-api-key"), v.clone(), key))
}

/// The most bytes of a run id (`x-sluice-run`).
pub const MAX_RUN_ID: usize = 128;

/// The agent run a request belongs to: `x-sluice-run`, else (when
/// `from_traceparent`) the trace id of a W3C `traceparent`. A run id only
/// narrows what a client may do (it names per-run budgets and loop
/// detection), so it is read whether or not identity headers are trusted;
/// one longer than `MAX_RUN_ID` bytes or with control characters is refused.
pub fn run_id(
    headers: &http::HeaderMap,
    from_traceparent: bool,
) -> Result<Option<Arc<str>>, ProxyError> {
    if let Some(v) = headers.get("x-sluice-run") {
        let text = v.to_str().unwrap_or("");
        if text.is_empty() || text.len() > MAX_RUN_ID || text.chars().any(char::is_control) {
            return Err(ProxyError::InvalidRequest(format!(
                "x-sluice-run must be 1 to {MAX_RUN_ID} printable ASCII characters"
            )));
        }
        return Ok(Some(Arc::from(text)));
    }
    if !from_traceparent {
        return Ok(None);
    }
    // version-traceid-parentid-flags; an all-zero trace id is invalid.
    let trace = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split('-').nth(1))
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .filter(|id| id.bytes().any(|b| b != b'0'));
    Ok(trace.map(|id| Arc::from(id.to_ascii_lowercase())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(passthrough: bool) -> Keys {
        let mut sha = [0u8; 32];
        hex::decode_to_slice(hash_key("sk-sluice-alice"), &mut sha).expect("hex");
        let k = KeyConfig {
            name: "alice".into(),
            sha256: sha,
            user: Some("alice".into()),
            team: Some("research".into()),
            models: Some(vec!["gpt-4o*".into()]),
            limits: Default::default(),
            tier: None,
            passthrough: vec![Family::Files],
            tier_headers: false,
        };
        Keys::new(&[k], passthrough, true, &[Family::Batches])
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn virtual_key_by_bearer_or_x_api_key() {
        let t = keys(false);
        for h in [
            headers(&[("authorization", "Bearer sk-sluice-alice")]),
            headers(&[("x-api-key", "sk-sluice-alice")]),
        ] {
            let (cred, id) = t.authenticate(&h, &Default::default()).expect("ok");
            let Credential::Virtual(vk) = cred else {
                panic!("virtual")
            };
            assert!(vk.allows("gpt-4o-mini") && !vk.allows("o3"));
            assert_eq!(id.user.as_deref(), Some("alice"));
        }
    }

    #[test]
    fn unknown_key_needs_passthrough() {
        let h = headers(&[
            ("authorization", "Bearer sk-real"),
            ("x-sluice-user", "bob"),
        ]);
        assert!(matches!(
            keys(false).authenticate(&h, &Default::default()),
            Err(ProxyError::InvalidKey)
        ));
        let (cred, id) = keys(true)
            .authenticate(&h, &Default::default())
            .expect("passthrough");
        assert!(matches!(cred, Credential::Passthrough { .. }));
        assert_eq!(id.user.as_deref(), Some("bob"));
        assert!(id
            .key
            .as_deref()
            .is_some_and(|k| k.starts_with("passthrough:")));
        assert!(!id.key.as_deref().unwrap_or("").contains("sk-real"));
    }

    #[test]
    fn headers_do_not_override_a_key_identity() {
        let h = headers(&[
            ("x-api-key", "sk-sluice-alice"),
            ("x-sluice-user", "mallory"),
        ]);
        let (_, id) = keys(false)
            .authenticate(&h, &Default::default())
            .expect("ok");
        assert_eq!(id.user.as_deref(), Some("alice"));
    }

    #[test]
    fn scheme_is_case_insensitive_and_other_schemes_fall_back() {
        let t = keys(false);
        for h in [
            headers(&[("authorization", "BEARER sk-sluice-alice")]),
            headers(&[("authorization", "bEaReR  sk-sluice-alice")]),
            headers(&[
                ("authorization", "Basic Zm9vOmJhcg=="),
                ("x-api-key", "sk-sluice-alice"),
            ]),
        ] {
            let (cred, _) = t.authenticate(&h, &Default::default()).expect("ok");
            let Credential::Virtual(vk) = cred else {
                panic!("virtual")
            };
            assert!(vk.allows_family(Family::Files) && vk.allows_family(Family::Batches));
            assert!(!vk.allows_family(Family::Images));
        }
    }

    #[test]
    fn passthrough_identity_is_128_bits() {
        let h = headers(&[("authorization", "Bearer sk-real")]);
        let (_, id) = keys(true)
            .authenticate(&h, &Default::default())
            .expect("passthrough");
        let k = id.key.as_deref().unwrap_or("");
        assert_eq!(k.len(), "passthrough:".len() + 32, "{k}");
    }

    #[test]
    fn missing_key() {
        assert!(matches!(
            keys(true).authenticate(&HeaderMap::new(), &Default::default()),
            Err(ProxyError::MissingKey)
        ));
    }
}
