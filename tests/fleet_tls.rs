//! Fleet mode over TLS: a real redis-server serving only `rediss://` with a
//! certificate from a private CA (rcgen), and the real binary trusting that
//! CA through `[state] ca_file` — or refusing the server without it.

#[path = "support/harness.rs"]
mod harness;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use harness::*;
use http::StatusCode;
use serde_json::json;
use sluice_mock::MockProvider;

/// A redis-server listening only on a TLS port; killed on drop.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A CA and a leaf for `localhost` and 127.0.0.1, written to `dir`.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write");
    std::fs::write(&paths.1, leaf.pem()).expect("write");
    std::fs::write(&paths.2, leaf_key.serialize_pem()).expect("write");
    paths
}

async fn start_tls_redis(dir: &Path, ca: &Path, cert: &Path, key: &Path) -> TlsRedis {
    let port = free_port();
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--tls-port")
        .arg(port.to_string())
        .arg("--tls-cert-file")
        .arg(cert)
        .arg("--tls-key-file")
        .arg(key)
        .arg("--tls-ca-cert-file")
        .arg(ca)
        // Clients show no certificate of their own.
        .args(["--tls-auth-clients", "no", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/test.sh installs it)");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return TlsRedis { child, port };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server did not listen on its TLS port");
}

const PRICING: &str = "[[pricing]]\nmodel = \"mock-model\"\ninput = 1.0\noutput = 2.0\n\
                       [[budgets]]\nname = \"per-user\"\nscope = [\"user\"]\nwindow = \"day\"\nlimit_usd = 1.0\n";

fn fleet_config(mock: &str, port: u16, ca: Option<&Path>) -> String {
    let ca = ca.map_or(String::new(), |p| {
        format!("ca_file = \"{}\"\n", p.display())
    });
    config(mock, "", PRICING).replace(
        "[state]\n",
        &format!(
            "[state]\nbackend = \"redis\"\nurl = \"rediss://localhost:{port}/0\"\n\
             key_prefix = \"tls:\"\ntimeout = \"2s\"\n{ca}"
        ),
    )
}

fn chat() -> serde_json::Value {
    json!({"model": "mock-model", "max_tokens": 10, "messages": [{"role": "user", "content": "hello over tls"}]})
}

#[tokio::test]
async fn budgets_are_kept_in_redis_over_tls_with_a_private_ca() {
    let dir = temp_dir();
    let (ca, cert, key) = certificates(&dir);
    let redis = start_tls_redis(&dir, &ca, &cert, &key).await;
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&fleet_config(&mock.url(), redis.port, Some(&ca))).await;
    let (st, h, _) = post(&s, "/v1/chat/completions", &[], &chat()).await;
    assert_eq!(st, StatusCode::OK);
    assert!(h.contains_key("x-sluice-budget-remaining-usd"));
    let auth = format!("Bearer {ADMIN_TOKEN}");
    // The charge reaches Redis after the response: poll the fleet's view.
    let mut spent = 0.0;
    for _ in 0..100 {
        let (_, b) = get(&s.admin_url("/admin/budgets"), &[("authorization", &auth)])
            .await
            .expect("budgets");
        let v = json(&b);
        assert_eq!(v["scope"], "fleet");
        spent = v["budgets"][0]["spent_usd"].as_f64().unwrap_or(0.0);
        if spent > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(spent > 0.0, "settled spend is in redis");
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_is_refused() {
    let dir = temp_dir();
    let (ca, cert, key) = certificates(&dir);
    let redis = start_tls_redis(&dir, &ca, &cert, &key).await;
    let mock = MockProvider::start().await.expect("mock");
    // No ca_file: the system's roots do not know the private CA.
    let s = Sluice::start(&fleet_config(&mock.url(), redis.port, None)).await;
    let (st, h, b) = post(&s, "/v1/chat/completions", &[], &chat()).await;
    assert_eq!(
        st,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert_eq!(json(&b)["error"]["code"], "state_unavailable");
    assert_eq!(h["x-should-retry"], "true");
    assert!(mock.requests().is_empty(), "nothing reached the provider");
}
