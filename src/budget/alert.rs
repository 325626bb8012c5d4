//! Budget alerts: a warning log, a metric, and (when the budget names one)
//! a JSON POST to a webhook. Webhooks are best effort: sent off the request
//! path, bounded to 5 seconds, failures logged.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use crate::config::{BudgetRule, Permille};

/// One alert, as logged and as POSTed.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub budget: String,
    pub bucket: String,
    pub threshold: f64,
    pub limit_usd: f64,
}

type WebhookClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn client() -> &'static WebhookClient {
    static CLIENT: OnceLock<WebhookClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let https = match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(b) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(b.with_root_certificates(roots).with_no_client_auth())
                .https_or_http()
                .enable_http1()
                .build(),
            // Only reachable if ring lacked every safe protocol version.
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .build(),
        };
        Client::builder(TokioExecutor::new()).build(https)
    })
}

/// Logs, counts and (if configured) POSTs an alert; `permille` is the
/// threshold crossed, in thousandths of the limit.
pub fn fire(rule: &BudgetRule, bucket: &str, permille: Permille) {
    // Reporting only: the ledger compared integers.
    let threshold = f64::from(permille) / 1000.0;
    let alert = Alert {
        budget: rule.name.clone(),
        bucket: bucket.to_owned(),
        threshold,
        limit_usd: crate::pricing::nanos_to_usd(rule.limit),
    };
    crate::metrics::budget_alert(&alert.budget, permille);
    tracing::warn!(budget = %alert.budget, bucket = %alert.bucket, threshold, "budget alert: {:.0}% of the limit spent", threshold * 100.0);
    let Some(url) = rule.webhook.clone() else {
        return;
    };
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let body = serde_json::to_vec(&alert).unwrap_or_default();
        let req = http::Request::post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        let Ok(req) = req else { return };
        match tokio::time::timeout(Duration::from_secs(5), client().request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => {}
            Ok(Ok(resp)) => {
                tracing::warn!(%url, status = %resp.status(), "budget alert webhook refused")
            }
            Ok(Err(e)) => tracing::warn!(%url, error = %e, "budget alert webhook failed"),
            Err(_) => tracing::warn!(%url, "budget alert webhook timed out"),
        }
    });
}
