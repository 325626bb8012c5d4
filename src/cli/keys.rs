//! `sluice keys …`: the admin API's runtime keys (`/admin/keys`) from a shell.
//!
//! The address and the token come from the same config file Sluice runs on
//! (`[admin] listen`, `token_env`), so an operator on the host types no
//! secret; `--admin HOST:PORT` reaches another replica and
//! `SLUICE_ADMIN_TOKEN` overrides the token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::config::Config;

pub const USAGE: &str = "\
  sluice keys create NAME [--user U] [--team T] [--models a,b*] [--expires-in 30d]
  sluice keys list
  sluice keys update NAME [--user U] [--team T] [--models a,b*] [--expires-in 30d|never]
  sluice keys rotate NAME [--grace 10m]
  sluice keys revoke NAME
                                  manage the keys issued at runtime through the admin API of
                                  the Sluice running on --config (or --admin HOST:PORT); the
                                  token is the config's [admin] token_env, or SLUICE_ADMIN_TOKEN;
                                  --operator NAME is recorded with each change (default $USER)";

/// What a query value escapes: all but the characters URLs leave alone.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One `sluice keys` call, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct KeysCommand {
    method: http::Method,
    /// Path and query of the admin call.
    target: String,
    config: PathBuf,
    admin: Option<SocketAddr>,
    operator: Option<String>,
}

/// Parses the arguments after `keys`.
pub fn parse(args: &[String]) -> Result<KeysCommand, String> {
    let mut config = PathBuf::from("proxy.toml");
    let mut admin = None;
    let mut operator = None;
    let mut query: Vec<(&str, String)> = Vec::new();
    let mut positional: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().cloned().ok_or(format!("{flag} needs a value"));
        match a.as_str() {
            "-c" | "--config" => config = PathBuf::from(value(a)?),
            "--admin" => {
                let v = value(a)?;
                admin = Some(v.parse().map_err(|_| format!("--admin {v:?}: HOST:PORT"))?);
            }
            "--operator" => operator = Some(value(a)?),
            "--user" => query.push(("user", value(a)?)),
            "--team" => query.push(("team", value(a)?)),
            "--models" => query.push(("models", value(a)?)),
            "--expires-in" => query.push(("expires_in", value(a)?)),
            "--grace" => query.push(("grace", value(a)?)),
            s if s.starts_with('-') => return Err(format!("keys: unknown option {s}")),
            s => positional.push(s),
        }
    }
    let allowed: &[&str] = match positional.first().copied() {
        Some("create") => &["user", "team", "models", "expires_in"],
        Some("update") => &["user", "team", "models", "expires_in"],
        Some("rotate") => &["grace"],
        Some("list" | "revoke") | None => &[],
        Some(other) => return Err(format!("keys: unknown action {other}")),
    };
    if let Some((field, _)) = query.iter().find(|(f, _)| !allowed.contains(f)) {
        return Err(format!(
            "keys {}: --{} does not apply",
            positional.first().copied().unwrap_or("list"),
            field.replace('_', "-")
        ));
    }
    let (method, path, name) = match positional.as_slice() {
        [] | ["list"] => (http::Method::GET, "/admin/keys", None),
        ["create", name] => (http::Method::POST, "/admin/keys", Some(*name)),
        ["update", name] => (http::Method::PATCH, "/admin/keys", Some(*name)),
        ["rotate", name] => (http::Method::POST, "/admin/keys/rotate", Some(*name)),
        ["revoke", name] => (http::Method::DELETE, "/admin/keys", Some(*name)),
        [action, ..] => return Err(format!("keys {action} takes one NAME")),
    };
    let pairs: Vec<String> = name
        .map(|n| ("name", n.to_owned()))
        .into_iter()
        .chain(query)
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(&v, QUERY_VALUE)))
        .collect();
    let target = if pairs.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", pairs.join("&"))
    };
    Ok(KeysCommand {
        method,
        target,
        config,
        admin,
        operator,
    })
}

/// Makes the admin call; returns the status and the answer's body.
pub async fn run(cmd: KeysCommand) -> Result<(http::StatusCode, String), String> {
    let env_token = std::env::var("SLUICE_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    // The config is read only for what the flags and the environment leave out.
    let config = match (cmd.admin, &env_token) {
        (Some(_), Some(_)) => None,
        _ => Some(
            Config::load(&cmd.config)
                .map_err(|e| format!("{}: {}", cmd.config.display(), e.errors.join("; ")))?,
        ),
    };
    let addr = match (cmd.admin, &config) {
        (Some(a), _) => a,
        (None, Some(c)) => reachable(c.admin.listen),
        (None, None) => return Err("no admin address".into()),
    };
    let token = env_token
        .or_else(|| config.as_ref().and_then(|c| c.admin.token.clone()))
        .ok_or("no admin token: set [admin] token_env's variable or SLUICE_ADMIN_TOKEN")?;
    let operator = cmd
        .operator
        .or_else(|| std::env::var("USER").ok())
        .filter(|o| !o.is_empty())
        .unwrap_or_else(|| "cli".into());
    let req = http::Request::builder()
        .method(cmd.method)
        .uri(format!("http://{addr}{}", cmd.target))
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header("x-sluice-operator", operator)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let call = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| format!("{addr}: no answer in 10 s"))?
        .map_err(|e| format!("{addr}: {e}"))
}

/// The address to call for a listen address: a wildcard listener is reached
/// on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn each_action_maps_to_its_admin_call() {
        let c = parse(&args(
            "create ci-bot --user ci --models gpt-4o,claude-* --expires-in 30d",
        ))
        .expect("create");
        assert_eq!(c.method, http::Method::POST);
        assert_eq!(
            c.target,
            "/admin/keys?name=ci-bot&user=ci&models=gpt-4o%2Cclaude-%2A&expires_in=30d"
        );
        let c = parse(&args("rotate ci-bot --grace 10m --admin 10.0.0.2:9090")).expect("rotate");
        assert_eq!(
            (c.method, c.target.as_str()),
            (
                http::Method::POST,
                "/admin/keys/rotate?name=ci-bot&grace=10m"
            )
        );
        assert_eq!(c.admin, Some("10.0.0.2:9090".parse().expect("addr")));
        assert_eq!(parse(&args("list")).expect("list").target, "/admin/keys");
        assert_eq!(
            parse(&args("revoke x")).expect("revoke").method,
            http::Method::DELETE
        );
        assert_eq!(
            parse(&args("update x --expires-in never"))
                .expect("update")
                .target,
            "/admin/keys?name=x&expires_in=never"
        );
    }

    #[test]
    fn a_misplaced_or_unknown_flag_is_refused() {
        assert!(parse(&args("revoke x --grace 1m")).is_err());
        assert!(parse(&args("list --user u")).is_err());
        assert!(parse(&args("create")).is_err());
        assert!(parse(&args("create a b")).is_err());
        assert!(parse(&args("create a --colour red")).is_err());
        assert!(parse(&args("burn a")).is_err());
        assert!(parse(&args("create a --admin nowhere")).is_err());
    }

    #[test]
    fn a_wildcard_listener_is_called_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:9090".parse().expect("addr")),
            "127.0.0.1:9090".parse::<SocketAddr>().expect("addr")
        );
        let local: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(reachable(local), local);
    }
}
