//! Identity from a verified token (`[jwt]`): a shared gateway can accept a
//! JWT as the credential — HS256 with a secret, or RS256/ES256 with the
//! public keys of a JWKS file — and take the user, team and feature from
//! its claims, instead of trusting raw `x-sluice-*` headers. `exp` is
//! required; `iss` and `aud` are checked when configured.

use std::collections::HashMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::JwtConfig;

/// What a verified token says of its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub user: Option<String>,
    pub team: Option<String>,
    pub feature: Option<String>,
}

/// The keys and rules tokens are checked against (built with a snapshot).
pub struct JwtVerifier {
    /// (key id, key, algorithm); an HS256 secret has no id.
    keys: Vec<(Option<String>, DecodingKey, Algorithm)>,
    cfg: JwtConfig,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// Whether a presented credential has the shape of a JWT (three base64url
/// parts), so it is checked as one rather than as a key.
pub fn looks_like_jwt(text: &str) -> bool {
    text.starts_with("eyJ") && text.bytes().filter(|&b| b == b'.').count() == 2
}

impl JwtVerifier {
    /// The verifier of `cfg`; fails on an unreadable or empty JWKS file.
    pub fn new(cfg: &JwtConfig) -> Result<JwtVerifier, String> {
        let mut keys = Vec::new();
        if let Some(secret) = &cfg.secret {
            keys.push((
                None,
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            ));
        }
        if let Some(path) = &cfg.jwks_file {
            let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let set: JwkSet =
                serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            for jwk in &set.keys {
                let alg = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    _ => continue,
                };
                let key =
                    DecodingKey::from_jwk(jwk).map_err(|e| format!("{}: {e}", path.display()))?;
                keys.push((jwk.common.key_id.clone(), key, alg));
            }
        }
        if keys.is_empty() {
            return Err("no usable key (set secret_env or a jwks_file with RSA or EC keys)".into());
        }
        Ok(JwtVerifier {
            keys,
            cfg: cfg.clone(),
        })
    }

    /// The claims of a valid token; `None` for anything else (bad
    /// signature, wrong algorithm, expired, wrong issuer or audience).
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let (_, key, alg) = self.keys.iter().find(|(kid, _, alg)| {
            *alg == header.alg && (kid.is_none() || header.kid.is_none() || *kid == header.kid)
        })?;
        let mut v = Validation::new(*alg);
        v.leeway = 30;
        match &self.cfg.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        match &self.cfg.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<HashMap<String, Value>>(token, key, &v).ok()?;
        let claim = |name: &Option<String>| {
            let value = data.claims.get(name.as_deref()?)?;
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            (!text.is_empty() && text.len() <= 256 && !text.chars().any(char::is_control))
                .then_some(text)
        };
        Some(Claims {
            user: claim(&self.cfg.user_claim),
            team: claim(&self.cfg.team_claim),
            feature: claim(&self.cfg.feature_claim),
        })
    }
}
