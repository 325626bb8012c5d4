//! Virtual keys issued at runtime through the admin API, against the real
//! binary: usable at once, kept across a restart, revoked at once, rotated
//! with a grace period.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use harness::*;
use http::{Method, StatusCode};
use serde_json::json;
use sluice_mock::MockProvider;

#[tokio::test]
async fn an_issued_key_works_at_once_survives_a_restart_and_dies_when_revoked() {
    let mock = MockProvider::start().await.expect("mock");
    let cfg = config(&mock.url(), "", "");
    let s = Sluice::start(&cfg).await;
    let (st, v) = admin_as(
        &s,
        Method::POST,
        "/admin/keys?name=ci-bot&user=ci&team=infra&models=gpt-4o-mini",
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let key = v["key"].as_str().expect("key").to_owned();
    assert!(key.starts_with("sk-sluice-") && key.len() > 60);
    let (st, h) = chat_with_key(&s, &key).await;
    assert_eq!(st, StatusCode::OK);
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(
        (rec["key"].clone(), rec["user"].clone(), rec["team"].clone()),
        (json!("ci-bot"), json!("ci"), json!("infra"))
    );
    // The allow-list holds.
    let auth = format!("Bearer {key}");
    let other = json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let (st, _, _) = call(
        Method::POST,
        &s.url("/v1/messages"),
        &[
            ("x-api-key", key.as_str()),
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        other.to_string(),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Listed without its secret; a second key of that name is refused.
    let (_, v) = admin_as(&s, Method::GET, "/admin/keys").await;
    assert_eq!(v["keys"][0]["name"], "ci-bot");
    assert_eq!(v["keys"][0]["created_by"], "platform-bob");
    assert!(!v.to_string().contains(&key[10..]), "{v}");
    let (st, _) = admin_as(&s, Method::POST, "/admin/keys?name=ci-bot").await;
    assert_eq!(st, StatusCode::CONFLICT);

    let dir = s.stop_keeping_dir().await;
    let s = Sluice::start_in(dir.clone(), &cfg).await;
    assert_eq!(
        chat_with_key(&s, &key).await.0,
        StatusCode::OK,
        "kept across a restart"
    );
    let stored = std::fs::read_to_string(dir.join("state.keys.json")).expect("file");
    assert!(!stored.contains(&key), "only the digest is stored");

    // Updated in place: a new identity, no more allow-list.
    let (st, v) = admin_as(
        &s,
        Method::PATCH,
        "/admin/keys?name=ci-bot&user=ci-2&models=",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["updated"], 1);
    let (st, h) = chat_with_key(&s, &key).await;
    assert_eq!(st, StatusCode::OK);
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["user"], "ci-2");
    let (_, v) = admin_as(&s, Method::GET, "/admin/keys").await;
    assert_eq!(v["keys"][0]["models"], json!(null), "{v}");
    let (st, _) = admin_as(&s, Method::PATCH, "/admin/keys?name=nobody&user=x").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let (st, _) = admin_as(&s, Method::DELETE, "/admin/keys?name=ci-bot").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        chat_with_key(&s, &key).await.0,
        StatusCode::UNAUTHORIZED,
        "revoked at once"
    );
}

#[tokio::test]
async fn a_rotated_key_keeps_the_old_one_only_for_its_grace() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", "")).await;
    let (_, v) = admin_as(&s, Method::POST, "/admin/keys?name=agent&user=a").await;
    let old = v["key"].as_str().expect("key").to_owned();
    let (st, v) = admin_as(&s, Method::POST, "/admin/keys/rotate?name=agent&grace=2s").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let new = v["key"].as_str().expect("key").to_owned();
    assert_ne!(old, new);
    assert_eq!(chat_with_key(&s, &new).await.0, StatusCode::OK);
    assert_eq!(
        chat_with_key(&s, &old).await.0,
        StatusCode::OK,
        "within the grace"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while chat_with_key(&s, &old).await.0 == StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "the old key outlived its grace"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(chat_with_key(&s, &old).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(chat_with_key(&s, &new).await.0, StatusCode::OK);
    // An expiring key, and bad input.
    let (st, v) = admin_as(&s, Method::POST, "/admin/keys?name=temp&expires_in=1h").await;
    assert_eq!(st, StatusCode::CREATED);
    assert!(v["expires_at"].as_u64().is_some());
    assert_eq!(
        admin_as(&s, Method::POST, "/admin/keys?name=bad%7Cname")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        admin_as(&s, Method::POST, "/admin/keys?name=x&expires_in=soon")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

/// Runs `sluice keys ARGS` against `s` and returns (success, stdout).
async fn keys_cli(s: &Sluice, args: &[&str], env_token: bool) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("keys")
        .args(args)
        .arg("--config")
        .arg(&s.config_path)
        .arg("--admin")
        .arg(s.admin.to_string())
        .arg("--operator")
        .arg("cli-carol")
        .env("SLUICE_TEST_OPENAI_KEY", "unused")
        .env("SLUICE_TEST_ANTHROPIC_KEY", "unused")
        .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("SLUICE_ADMIN_TOKEN");
    if env_token {
        // The override wins over the config's token_env.
        cmd.env("SLUICE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SLUICE_TEST_ADMIN_TOKEN", "wrong");
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run sluice keys");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn the_keys_command_issues_lists_rotates_and_revokes() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", "")).await;
    let (ok, out) = keys_cli(
        &s,
        &["create", "cli-bot", "--user", "u 1", "--models", "gpt-4o*"],
        false,
    )
    .await;
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let key = v["key"].as_str().expect("key").to_owned();
    let (st, h) = chat_with_key(&s, &key).await;
    assert_eq!(st, StatusCode::OK);
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["user"], "u 1", "the value reached the admin API intact");

    let (ok, out) = keys_cli(&s, &["list"], true).await;
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["keys"][0]["created_by"], "cli-carol");
    assert!(!out.contains(&key[10..]), "no secret in a listing");

    let (ok, out) = keys_cli(&s, &["rotate", "cli-bot", "--grace", "0s"], false).await;
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let new = v["key"].as_str().expect("key").to_owned();
    assert_eq!(chat_with_key(&s, &new).await.0, StatusCode::OK);

    let (ok, _) = keys_cli(&s, &["revoke", "cli-bot"], false).await;
    assert!(ok);
    assert_eq!(chat_with_key(&s, &new).await.0, StatusCode::UNAUTHORIZED);
    // A refusal from the admin API is a failed command with its reason.
    let (ok, out) = keys_cli(&s, &["revoke", "cli-bot"], false).await;
    assert!(!ok);
    assert!(out.contains("no runtime key"), "{out}");
}
