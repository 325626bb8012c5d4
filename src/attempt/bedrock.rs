//! The request for a deployment on AWS Bedrock: the Anthropic Messages body
//! (the client's, or the translation of an OpenAI chat request) in
//! Bedrock's shape (InvokeModel's, or translated for Converse) at the
//! model's path, signed with SigV4. Nothing of the client's credentials or
//! provider headers goes to AWS.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request};
use http_body_util::Full;

use crate::auth::Credential;
use crate::config::BedrockApi;
use crate::error::{ApiShape, ProxyError};
use crate::headers::upstream_request_headers;
use crate::resilience::balance::Candidate;
use crate::sniff::Endpoint;
use crate::upstream::{bedrock, converse};
use crate::upstream::{BedrockSignError, Upstream};

use super::{Call, Crossing};

/// The signed Bedrock request for `cand`.
pub(super) fn request(
    call: &Call<'_>,
    upstream: &Upstream,
    cand: &Candidate,
    crossing: Option<&Crossing>,
) -> Result<Request<Full<Bytes>>, ProxyError> {
    let messages = match crossing {
        Some(c) => c.to == ApiShape::Anthropic,
        None => call.endpoint == Endpoint::Messages,
    };
    if !messages {
        return Err(ProxyError::InvalidRequest(format!(
            "provider {:?} (AWS Bedrock) serves only messages requests",
            upstream.name
        )));
    }
    if matches!(call.cred, Credential::Passthrough { .. }) {
        // The chain is filtered already (Bedrock takes no client keys).
        return Err(ProxyError::Forbidden(format!(
            "provider {:?} does not accept client keys; use a virtual key",
            upstream.name
        )));
    }
    let body = crossing.map_or(&call.body, |c| &c.body);
    let betas = allowed_betas(call, upstream);
    let model = &cand.upstream_model;
    let api = upstream.bedrock_api().unwrap_or_default();
    let (body, stream) = match api {
        BedrockApi::Invoke => bedrock::request_body(body, &betas),
        BedrockApi::Converse => converse::request_body(body, &betas),
    }
    .map_err(ProxyError::InvalidRequest)?;
    let path = match api {
        BedrockApi::Invoke => bedrock::invoke_path(model, stream),
        BedrockApi::Converse => converse::converse_path(model, stream),
    };
    let uri = upstream
        .uri_for(&path, "")
        .map_err(|e| ProxyError::Internal(format!("building upstream URL: {e}")))?;
    let mut headers = bedrock_headers(call.client_headers);
    let json = HeaderValue::from_static("application/json");
    headers.insert(header::CONTENT_TYPE, json.clone());
    if stream {
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.amazon.eventstream"),
        );
        headers.insert("x-amzn-bedrock-accept", json);
    } else {
        headers.insert(header::ACCEPT, json);
    }
    // Sluice reads these bodies (usage, errors): uncompressed.
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    upstream
        .sign_bedrock(&uri, &mut headers, &body)
        .map_err(|e| match e {
            BedrockSignError::NoCredentials(env) => ProxyError::ProviderKeyMissing {
                provider: upstream.name.to_string(),
                env,
            },
            BedrockSignError::Failed(detail) => ProxyError::Internal(detail),
        })?;
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

/// The client's headers less its credentials (as for any provider), the
/// Anthropic ones (the version and betas go in the body) and any AWS one
/// (the signer's own, and nothing a client could make AWS act on).
fn bedrock_headers(client: &HeaderMap) -> HeaderMap {
    let mut headers = upstream_request_headers(client);
    let drop: Vec<header::HeaderName> = headers
        .keys()
        .filter(|n| {
            let n = n.as_str();
            n.starts_with("anthropic-") || n.starts_with("x-amz")
        })
        .cloned()
        .collect();
    for name in drop {
        headers.remove(name);
    }
    headers
}

/// The client's `anthropic-beta` values the provider allows (they go in
/// the body as `anthropic_beta`).
fn allowed_betas(call: &Call<'_>, upstream: &Upstream) -> Vec<String> {
    let mut headers = HeaderMap::new();
    for v in call.client_headers.get_all("anthropic-beta") {
        headers.append("anthropic-beta", v.clone());
    }
    upstream.set_billing_headers(&mut headers);
    headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_owned)
        .collect()
}
