//! `[jwt]`: a verified token is the credential and its claims the identity,
//! through the real binary (HS256 with a secret; ES256 with a JWKS file of
//! an rcgen key).

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use http::StatusCode;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sluice_mock::MockProvider;

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hs256(claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

#[tokio::test]
async fn a_verified_token_is_the_credential_and_its_claims_the_identity() {
    std::env::set_var("SLUICE_TEST_JWT_SECRET", SECRET);
    let mock = MockProvider::start().await.expect("mock");
    let jwt =
        "[jwt]\nsecret_env = \"SLUICE_TEST_JWT_SECRET\"\nissuer = \"idp\"\naudience = \"sluice\"\n\
               team_claim = \"grp\"\nfeature_claim = \"app\"\n";
    let s = Sluice::start(&config(&mock.url(), "", jwt)).await;
    let good = json!({"sub": "u-77", "grp": "ml", "app": "search", "iss": "idp", "aud": "sluice", "exp": now() + 600});
    let (st, h) = chat_with_key(&s, &hs256(&good, SECRET)).await;
    assert_eq!(st, StatusCode::OK);
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(
        (
            rec["key"].clone(),
            rec["user"].clone(),
            rec["team"].clone(),
            rec["feature"].clone()
        ),
        (json!("jwt"), json!("u-77"), json!("ml"), json!("search"))
    );
    // Forged, expired, wrong issuer or audience, or unsigned: 401, never passed on.
    let mut bad = Vec::new();
    bad.push(hs256(&good, "another-secret-of-at-least-32-bytes!!"));
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    bad.push(hs256(&expired, SECRET));
    let mut other_iss = good.clone();
    other_iss["iss"] = json!("evil");
    bad.push(hs256(&other_iss, SECRET));
    let mut other_aud = good.clone();
    other_aud["aud"] = json!("someone-else");
    bad.push(hs256(&other_aud, SECRET));
    let mut no_exp = good.clone();
    no_exp.as_object_mut().expect("object").remove("exp");
    bad.push(hs256(&no_exp, SECRET));
    // alg "none": header {"alg":"none"} and no signature.
    bad.push("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_owned());
    for token in &bad {
        assert_eq!(
            chat_with_key(&s, token).await.0,
            StatusCode::UNAUTHORIZED,
            "{token}"
        );
    }
    assert!(
        mock.requests().len() == 1,
        "only the good token reached the provider"
    );
    // Configured keys still work beside tokens.
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn es256_tokens_verify_against_a_jwks_file() {
    use base64::Engine;
    let key = rcgen::KeyPair::generate().expect("P-256 key");
    let raw = key.public_key_raw(); // 0x04 || X || Y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
                                 "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}]});
    let dir = temp_dir();
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks.to_string()).expect("write");
    let mock = MockProvider::start().await.expect("mock");
    let extra = format!("[jwt]\njwks_file = \"{}\"\n", path.display());
    let s = Sluice::start(&config(&mock.url(), "", &extra)).await;
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let claims = json!({"sub": "svc-1", "exp": now() + 600});
    let token = encode(
        &header,
        &claims,
        &EncodingKey::from_ec_der(&key.serialize_der()),
    )
    .expect("token");
    let (st, h) = chat_with_key(&s, &token).await;
    assert_eq!(st, StatusCode::OK);
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["user"], "svc-1");
    // Signed by another key: refused.
    let other = rcgen::KeyPair::generate().expect("key");
    let forged = encode(
        &header,
        &claims,
        &EncodingKey::from_ec_der(&other.serialize_der()),
    )
    .expect("token");
    assert_eq!(chat_with_key(&s, &forged).await.0, StatusCode::UNAUTHORIZED);
}
