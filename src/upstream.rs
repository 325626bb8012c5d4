//! Upstream providers: a pooled keep-alive client per provider (rustls with
//! webpki roots plus an optional extra CA; h2 where the upstream offers it),
//! URL building and provider authentication.

pub mod bedrock;
pub mod converse;
pub mod pool;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use percent_encoding::utf8_percent_encode;

use crate::config::{BedrockApi, ProviderConfig, ProviderKind, Timeouts};
use crate::error::ApiShape;
use crate::worker::PerWorker;
pub use pool::Pool;

/// A provider ready to take requests.
pub struct Upstream {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    pub timeouts: Timeouts,
    /// A connection pool per worker, so a request and the upstream
    /// connection it borrows run on one thread (see [`crate::worker`]).
    pools: PerWorker<Arc<Pool>>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// Path prefix from the base URL, without a trailing slash.
    prefix: String,
    /// The provider's own credential header, when a key is configured.
    auth: Option<(HeaderName, HeaderValue)>,
    /// Env var the key comes from (for error messages).
    pub api_key_env: Option<String>,
    /// Whether a client's own key may be sent here (passthrough mode).
    pub client_keys: bool,
    /// Billing headers sent with virtual-key requests (organisation, project).
    billing: Vec<(HeaderName, HeaderValue)>,
    /// `anthropic-beta` values a virtual-key client may ask for.
    anthropic_beta: Vec<String>,
    /// Azure OpenAI's `api-version`.
    api_version: Option<String>,
    /// AWS Bedrock: the region, and who signs (`None` without credentials).
    bedrock: Option<BedrockAuth>,
}

/// What signs a Bedrock provider's requests.
struct BedrockAuth {
    signer: Option<bedrock::Signer>,
    /// The variable to set when the credentials are missing.
    env: String,
    /// The `host` hyper sends (and the signature covers).
    host: String,
    /// InvokeModel or Converse.
    api: BedrockApi,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field(
                "base",
                &format_args!("{}://{}{}", self.scheme, self.authority, self.prefix),
            )
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Upstream {
    /// This worker's pool of connections to the provider.
    pub fn pool(&self) -> &Arc<Pool> {
        self.pools.get()
    }

    /// Builds the provider's client; fails on an unreadable CA file.
    pub fn new(p: &ProviderConfig) -> Result<Upstream, String> {
        let connector = build_connector(p)?;
        let parts = p.base_url.clone().into_parts();
        let scheme = parts.scheme.ok_or("base_url has no scheme")?;
        let authority = parts.authority.ok_or("base_url has no host")?;
        // Signed requests name their host as sent: over HTTP/1 hyper drops a
        // default port from `host`, over h2 `:authority` keeps it, so a
        // Bedrock URL loses it here and both send what was signed.
        let authority = match p.kind {
            ProviderKind::Bedrock => host_header(&scheme, &authority)
                .parse()
                .map_err(|e| format!("base_url host: {e}"))?,
            _ => authority,
        };
        let prefix = parts
            .path_and_query
            .map(|pq| pq.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let auth = match &p.api_key {
            None => None,
            Some(key) => {
                let (name, text) = match p.kind {
                    ProviderKind::Anthropic => (HeaderName::from_static("x-api-key"), key.clone()),
                    ProviderKind::Azure => (HeaderName::from_static("api-key"), key.clone()),
                    _ => (http::header::AUTHORIZATION, format!("Bearer {key}")),
                };
                let mut v = HeaderValue::from_str(&text).map_err(|_| {
                    format!("the key in {:?} is not a valid header value", p.api_key_env)
                })?;
                v.set_sensitive(true);
                Some((name, v))
            }
        };
        let mut billing = Vec::new();
        for (name, text) in [
            ("openai-organization", &p.organization),
            ("openai-project", &p.project),
        ] {
            if let Some(t) = text {
                let v = HeaderValue::from_str(t)
                    .map_err(|_| format!("{name} {t:?} is not a valid header value"))?;
                billing.push((HeaderName::from_static(name), v));
            }
        }
        let bedrock = p.bedrock.as_ref().map(|b| BedrockAuth {
            signer: b.keys.as_ref().map(|k| bedrock::Signer {
                credentials: bedrock::AwsCredentials {
                    access_key_id: k.access_key_id.clone(),
                    secret_access_key: k.secret_access_key.clone(),
                    session_token: k.session_token.clone(),
                },
                region: b.region.clone(),
            }),
            env: format!("{} and {}", b.access_key_id_env, b.secret_access_key_env),
            host: host_header(&scheme, &authority),
            api: b.api,
        });
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| format!("base_url: {e}"))?;
        let host = HeaderValue::from_str(&host_header(&scheme, &authority))
            .map_err(|e| format!("base_url host: {e}"))?;
        let pools = PerWorker::new(|_| {
            Arc::new(Pool::new(connector.clone(), origin.clone(), host.clone()))
        });
        Ok(Upstream {
            bedrock,
            client_keys: p.client_keys,
            billing,
            anthropic_beta: p.anthropic_beta.clone(),
            api_version: p.api_version.clone(),
            name: p.name.as_str().into(),
            kind: p.kind,
            timeouts: p.timeouts,
            pools,
            scheme,
            authority,
            prefix,
            auth,
            api_key_env: p.api_key_env.clone(),
        })
    }

    /// Whether this provider serves requests of the given API shape.
    pub fn speaks(&self, shape: ApiShape) -> bool {
        match shape {
            ApiShape::Anthropic => self.kind.is_anthropic_shaped(),
            ApiShape::OpenAi => self.kind.is_openai_shaped(),
        }
    }

    /// The upstream URL for a client path such as `/v1/chat/completions?x=1`.
    ///
    /// OpenAI-style base URLs carry the version (`https://api.openai.com/v1`),
    /// so the client's `/v1` is replaced by the base path; Anthropic base URLs
    /// are bare origins and the path is kept.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        self.uri_for(path_and_query, "")
    }

    /// [`Upstream::uri`] for a request routed to `model`: Azure OpenAI puts
    /// the deployment (the model name sent to it) in the path and its
    /// `api-version` in the query.
    pub fn uri_for(&self, path_and_query: &str, model: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(self.path_for(path_and_query, model))
            .build()
    }

    /// [`Upstream::uri_for`] in origin form (the path and query alone): what
    /// an HTTP/1 request line carries. The pool adds the scheme and
    /// authority for HTTP/2, so a request's URI is parsed once, not built
    /// whole and cut back.
    pub fn origin_form(&self, path_and_query: &str, model: &str) -> Result<Uri, http::Error> {
        let pq = http::uri::PathAndQuery::try_from(self.path_for(path_and_query, model))?;
        Ok(Uri::from(pq))
    }

    /// The upstream path and query for a client's (see [`Upstream::uri`]).
    fn path_for(&self, path_and_query: &str, model: &str) -> String {
        match (self.kind, &self.api_version) {
            (ProviderKind::Azure, Some(version)) => {
                azure_path(&self.prefix, path_and_query, model, version)
            }
            // Bedrock's path (`/model/{id}/invoke`) is made by the caller.
            (ProviderKind::Anthropic | ProviderKind::Bedrock, _) => {
                crate::text::concat(&[&self.prefix, path_and_query])
            }
            _ => {
                let rest = path_and_query.strip_prefix("/v1").unwrap_or(path_and_query);
                crate::text::concat(&[&self.prefix, rest])
            }
        }
    }

    /// Headers that choose who is billed, or turn on features pricing does
    /// not model, come from config for virtual-key requests, never from the
    /// client: organisation and project are replaced, and only allowed
    /// `anthropic-beta` values are kept.
    pub fn set_billing_headers(&self, headers: &mut HeaderMap) {
        const ORGANIZATION: HeaderName = HeaderName::from_static("openai-organization");
        const PROJECT: HeaderName = HeaderName::from_static("openai-project");
        const BETA: HeaderName = HeaderName::from_static("anthropic-beta");
        headers.remove(ORGANIZATION);
        headers.remove(PROJECT);
        for (name, v) in &self.billing {
            headers.insert(name.clone(), v.clone());
        }
        if !headers.contains_key(BETA) {
            return;
        }
        let betas: Vec<String> = headers
            .get_all(BETA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|b| self.anthropic_beta.iter().any(|a| a == b))
            .map(str::to_owned)
            .collect();
        headers.remove(BETA);
        if let Ok(v) = HeaderValue::from_str(&betas.join(",")) {
            if !betas.is_empty() {
                headers.insert(BETA, v);
            }
        }
    }

    /// The provider credential header Sluice adds for virtual-key requests.
    pub fn auth_header(&self) -> Option<&(HeaderName, HeaderValue)> {
        self.auth.as_ref()
    }

    /// The Bedrock runtime API this provider's requests use (`None`: not a
    /// Bedrock provider).
    pub fn bedrock_api(&self) -> Option<BedrockApi> {
        self.bedrock.as_ref().map(|b| b.api)
    }

    /// Signs a Bedrock request (SigV4 over its URL, `host`, `content-type`
    /// and body). `Err` names the variables to set when the provider has no
    /// credentials, or why signing failed.
    pub fn sign_bedrock(
        &self,
        uri: &Uri,
        headers: &mut HeaderMap,
        body: &[u8],
    ) -> Result<(), BedrockSignError> {
        let b = self
            .bedrock
            .as_ref()
            .ok_or_else(|| BedrockSignError::Failed("not a Bedrock provider".into()))?;
        let signer = b
            .signer
            .as_ref()
            .ok_or_else(|| BedrockSignError::NoCredentials(b.env.clone()))?;
        let now = std::time::SystemTime::now();
        bedrock::sign(
            signer,
            "POST",
            &uri.to_string(),
            &b.host,
            headers,
            body,
            now,
        )
        .map_err(BedrockSignError::Failed)
    }
}

/// Why a Bedrock request could not be signed.
#[derive(Debug)]
pub enum BedrockSignError {
    /// No credentials in the environment: the variables to set.
    NoCredentials(String),
    Failed(String),
}

/// The `host` header hyper's client sends for a URL: the host, and the port
/// when it is not the scheme's default.
fn host_header(scheme: &http::uri::Scheme, authority: &http::uri::Authority) -> String {
    let default = if *scheme == http::uri::Scheme::HTTPS {
        443
    } else {
        80
    };
    match authority.port_u16() {
        Some(port) if port != default => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    }
}

/// An Azure OpenAI path: `/v1/chat/completions?x=1` for deployment `d` is
/// `/openai/deployments/d/chat/completions?x=1&api-version=V`; paths that
/// name no deployment (files, batches, responses) are `/openai/…`. The
/// client's own `api-version`, if any, is replaced by the configured one.
fn azure_path(prefix: &str, path_and_query: &str, model: &str, version: &str) -> String {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let rest = path.strip_prefix("/v1").unwrap_or(path);
    let per_deployment = [
        "/chat/completions",
        "/completions",
        "/embeddings",
        "/audio/",
        "/images/",
    ]
    .iter()
    .any(|p| rest == *p || (p.ends_with('/') && rest.starts_with(p)));
    let mut out = String::with_capacity(prefix.len() + path_and_query.len() + model.len() + 48);
    out.push_str(prefix);
    out.push_str("/openai");
    if per_deployment && !model.is_empty() {
        out.push_str("/deployments/");
        out.extend(utf8_percent_encode(model, PATH_SEGMENT));
    }
    out.push_str(rest);
    out.push('?');
    for pair in query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("api-version="))
    {
        out.push_str(pair);
        out.push('&');
    }
    out.push_str("api-version=");
    out.push_str(version);
    out
}

/// What a deployment name escapes in a path segment.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The connector one provider's clients share (TLS roots, timeouts).
fn build_connector(p: &ProviderConfig) -> Result<HttpsConnector<HttpConnector>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &p.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let mut added = 0;
        for cert in rustls_pemfile_certs(&pem) {
            roots
                .add(cert)
                .map_err(|e| format!("{}: bad certificate: {e}", ca.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{}: no PEM certificates found", ca.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(p.timeouts.connect));
    http.set_keepalive(Some(Duration::from_secs(60)));

    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http))
}

/// Why a request got no response headers from a provider (the transport's
/// own failures; timeouts Sluice imposes are the attempt loop's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The connection was not established within `timeouts.connect`.
    ConnectTimeout,
    /// Connecting, the TLS handshake or the exchange failed; the error and
    /// its causes on one line (no secrets: these are transport errors).
    Connect(String),
}

impl SendError {
    /// Classifies a connect error: a connect timeout shows as an I/O
    /// `TimedOut` in it or its causes.
    pub fn classify(e: &(dyn std::error::Error + 'static)) -> SendError {
        let mut source = Some(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::TimedOut {
                    return SendError::ConnectTimeout;
                }
            }
            source = s.source();
        }
        SendError::Connect(error_chain(e))
    }
}

/// The error and its causes, one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Certificates from PEM text.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn upstream(kind: &str, url: &str) -> Upstream {
        let text = format!(
            "[[providers]]\nname = \"p\"\nkind = \"{kind}\"\nbase_url = \"{url}\"\napi_key_env = \"K\"\n"
        );
        let cfg = Config::parse(&text, "t", &|_| Some("sk-1".into())).expect("config");
        Upstream::new(&cfg.providers[0]).expect("upstream")
    }

    #[test]
    fn the_host_sent_over_http1_drops_a_default_port() {
        // Made once per provider; the pool adds it to HTTP/1 requests (HTTP/2
        // carries the host in `:authority`).
        let host = |url: &str| {
            let parts = url.parse::<Uri>().expect("uri").into_parts();
            host_header(
                &parts.scheme.expect("scheme"),
                &parts.authority.expect("authority"),
            )
        };
        assert_eq!(host("http://127.0.0.1:9/v1"), "127.0.0.1:9");
        assert_eq!(host("http://vllm.internal:80/v1"), "vllm.internal");
        assert_eq!(host("https://api.openai.com/v1"), "api.openai.com");
    }

    #[tokio::test]
    async fn urls_by_kind() {
        let o = upstream("openai", "https://api.openai.com/v1");
        assert_eq!(
            o.uri("/v1/chat/completions?a=1").expect("uri").to_string(),
            "https://api.openai.com/v1/chat/completions?a=1"
        );
        let g = upstream("openai-compatible", "http://127.0.0.1:9/openai/v1/");
        assert_eq!(
            g.uri("/v1/models").expect("uri").to_string(),
            "http://127.0.0.1:9/openai/v1/models"
        );
        let a = upstream("anthropic", "https://api.anthropic.com");
        assert_eq!(
            a.uri("/v1/messages").expect("uri").to_string(),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(a.auth_header().map(|(n, _)| n.as_str()), Some("x-api-key"));
        let z = upstream("azure", "https://acme.openai.azure.com");
        assert_eq!(
            z.uri_for("/v1/chat/completions?api-version=1&x=2", "gpt-4o prod")
                .expect("uri")
                .to_string(),
            "https://acme.openai.azure.com/openai/deployments/gpt-4o%20prod/chat/completions?x=2&api-version=2024-10-21"
        );
        assert_eq!(
            z.uri_for("/v1/files/file-1/content", "")
                .expect("uri")
                .to_string(),
            "https://acme.openai.azure.com/openai/files/file-1/content?api-version=2024-10-21"
        );
        assert_eq!(
            z.uri_for("/v1/audio/transcriptions", "whisper").expect("uri").to_string(),
            "https://acme.openai.azure.com/openai/deployments/whisper/audio/transcriptions?api-version=2024-10-21"
        );
        assert_eq!(z.auth_header().map(|(n, _)| n.as_str()), Some("api-key"));
        // The origin form is the same path and query, alone.
        for (u, path, model) in [
            (&o, "/v1/chat/completions?a=1", ""),
            (&g, "/v1/models", ""),
            (&a, "/v1/messages", ""),
            (&z, "/v1/chat/completions?api-version=1&x=2", "gpt-4o prod"),
        ] {
            let whole = u.uri_for(path, model).expect("uri");
            let origin = u.origin_form(path, model).expect("uri");
            assert!(origin.scheme().is_none() && origin.authority().is_none());
            assert_eq!(origin.path_and_query(), whole.path_and_query());
        }
        assert!(format!("{a:?}").contains("redacted") && !format!("{a:?}").contains("sk-1"));
    }

    #[tokio::test]
    async fn the_signed_host_is_the_one_hyper_sends() {
        let host = |url: &str| {
            let parts = url.parse::<Uri>().expect("uri").into_parts();
            host_header(
                &parts.scheme.expect("scheme"),
                &parts.authority.expect("authority"),
            )
        };
        assert_eq!(
            host("https://bedrock-runtime.us-east-1.amazonaws.com"),
            "bedrock-runtime.us-east-1.amazonaws.com"
        );
        assert_eq!(host("https://h.example:443"), "h.example");
        assert_eq!(host("http://127.0.0.1:8081"), "127.0.0.1:8081");
        assert_eq!(host("http://h.example:80"), "h.example");
        // A Bedrock URL drops a default port, so h2's `:authority` is the
        // signed host too.
        let text = "[[providers]]\nname = \"b\"\nkind = \"bedrock\"\nregion = \"us-east-1\"\n\
                    base_url = \"https://b.example:443\"\n";
        let cfg = Config::parse(text, "t", &|_| Some("k".into())).expect("config");
        let b = Upstream::new(&cfg.providers[0]).expect("upstream");
        assert_eq!(
            b.uri("/model/m/invoke").expect("uri").to_string(),
            "https://b.example/model/m/invoke"
        );
    }
}
