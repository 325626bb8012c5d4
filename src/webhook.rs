//! Best-effort JSON webhooks (budget alerts, experiment rollbacks): POSTed
//! off the request path, bounded to 5 seconds, failures logged.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

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

/// POSTs `body` (JSON) to `url` in a task of its own; `what` names the
/// webhook in logs. Does nothing outside a tokio runtime.
pub fn post(url: http::Uri, body: Vec<u8>, what: &'static str) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let req = http::Request::post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        let Ok(req) = req else { return };
        match tokio::time::timeout(Duration::from_secs(5), client().request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => {}
            Ok(Ok(resp)) => tracing::warn!(%url, status = %resp.status(), "{what} webhook refused"),
            Ok(Err(e)) => tracing::warn!(%url, error = %e, "{what} webhook failed"),
            Err(_) => tracing::warn!(%url, "{what} webhook timed out"),
        }
    });
}
