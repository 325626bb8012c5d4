//! `[jwt]`: accept a verified JWT as the credential (see `crate::jwt`).

use std::path::PathBuf;

use serde::Deserialize;

use super::Validator;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub secret_env: Option<String>,
    pub jwks_file: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub user_claim: Option<String>,
    pub team_claim: Option<String>,
    pub feature_claim: Option<String>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// HS256 secret (read from `secret_env`; never logged).
    pub secret: Option<String>,
    /// RS256/ES256 public keys (a JWKS document).
    pub jwks_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub user_claim: Option<String>,
    pub team_claim: Option<String>,
    pub feature_claim: Option<String>,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("jwks_file", &self.jwks_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Validator<'_> {
    pub(super) fn jwt(
        &mut self,
        raw: Option<&RawJwt>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<JwtConfig> {
        let raw = raw?;
        let secret = raw.secret_env.as_deref().and_then(|name| {
            let v = env(name).filter(|v| !v.is_empty());
            match &v {
                None => self.err(
                    "jwt.secret_env",
                    format!("environment variable {name} is not set"),
                ),
                Some(s) if s.len() < 32 => self.err(
                    "jwt.secret_env",
                    "an HS256 secret must be at least 32 bytes",
                ),
                Some(_) => {}
            }
            v
        });
        let jwks_file = raw.jwks_file.as_ref().map(PathBuf::from);
        if let Some(p) = &jwks_file {
            if !p.exists() {
                self.err("jwt.jwks_file", format!("{} does not exist", p.display()));
            }
        }
        if raw.secret_env.is_none() && jwks_file.is_none() {
            self.err("jwt", "needs secret_env (HS256) or jwks_file (RS256/ES256)");
        }
        Some(JwtConfig {
            secret,
            jwks_file,
            issuer: raw.issuer.clone(),
            audience: raw.audience.clone(),
            user_claim: Some(raw.user_claim.clone().unwrap_or_else(|| "sub".into())),
            team_claim: raw.team_claim.clone(),
            feature_claim: raw.feature_claim.clone(),
        })
    }
}
