//! `[state]`: where budget spend and rate windows live. `embedded` (the
//! default) keeps them in this process and its journal file; `redis` shares
//! them with every replica that names the same Redis and key prefix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawConfig;
use super::{Permille, Validator};

/// Default of `[state] timeout`: the most one Redis call may take.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// Default of `[state] fail_open_share`, in permille.
pub const DEFAULT_FAIL_OPEN_SHARE: Permille = 100;
/// The most a budget limit may be in `redis` mode: Redis scripts compare in
/// doubles, exact for integers up to 2^53 nano-dollars (about $9M).
pub const MAX_REDIS_NANOS: u64 = 1 << 53;

/// What requests under a limit get while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Refused with 503 (and `x-should-retry: true`).
    FailClosed,
    /// Served under local counters, each limit scaled to `fail_open_share`.
    FailOpen,
}

/// `[state] backend = "redis"`.
#[derive(Clone)]
pub struct RedisState {
    /// `redis://` or `rediss://` URL (may hold a password: never logged).
    pub url: String,
    pub key_prefix: String,
    pub timeout: Duration,
    pub on_unavailable: OnUnavailable,
    /// The share of every limit one replica may use on its own while Redis
    /// is unavailable (`fail_open`), in permille.
    pub fail_open_share: Permille,
    /// The CA (PEM) a `rediss://` server's certificate must chain to,
    /// instead of the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("url", &redact(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("on_unavailable", &self.on_unavailable)
            .field("fail_open_share", &self.fail_open_share)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// A file kept beside the state file: `sluice-state.jsonl` + `owners.jsonl`
/// is `sluice-state.owners.jsonl`.
pub fn beside_state(state_path: &Path, suffix: &str) -> PathBuf {
    let stem = state_path
        .file_stem()
        .map_or_else(|| "sluice-state".into(), |s| s.to_string_lossy());
    state_path.with_file_name(format!("{stem}.{suffix}"))
}

/// A Redis URL without its password, for logs and the admin config view.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl Validator<'_> {
    /// The embedded state file, and the Redis settings when the backend is
    /// `redis`.
    pub(super) fn state(
        &mut self,
        raw: &RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (PathBuf, Option<RedisState>) {
        let s = &raw.state;
        let path = PathBuf::from(s.path.as_deref().unwrap_or("sluice-state.jsonl"));
        let redis = match s.backend.as_deref() {
            None | Some("embedded") => {
                for (set, key) in [
                    (s.url.is_some(), "url"),
                    (s.url_env.is_some(), "url_env"),
                    (s.key_prefix.is_some(), "key_prefix"),
                    (s.timeout.is_some(), "timeout"),
                    (s.on_unavailable.is_some(), "on_unavailable"),
                    (s.fail_open_share.is_some(), "fail_open_share"),
                    (s.ca_file.is_some(), "ca_file"),
                ] {
                    if set {
                        // A key that parses but does nothing is a bug.
                        self.err(
                            &format!("state.{key}"),
                            "only applies with backend = \"redis\"",
                        );
                    }
                }
                None
            }
            Some("redis") => Some(self.redis(raw, env)),
            Some(other) => {
                self.err(
                    "state.backend",
                    format!("unknown backend {other:?} (expected embedded|redis)"),
                );
                None
            }
        };
        (path, redis)
    }

    /// A Redis URL given as `url_field` or as the environment variable
    /// `env_field` names (exactly one of them), checked to be `redis://` or
    /// `rediss://`; `None` when neither is set or it is unusable (errors
    /// noted).
    pub(super) fn redis_url(
        &mut self,
        url_field: &str,
        env_field: &str,
        url: &Option<String>,
        url_env: &Option<String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<String> {
        let (text, field) = match (url, url_env) {
            (None, None) => return None,
            (Some(u), None) => (u.clone(), url_field),
            (None, Some(name)) => match env(name).filter(|v| !v.is_empty()) {
                Some(u) => (u, env_field),
                None => {
                    self.err(env_field, format!("environment variable {name} is not set"));
                    return None;
                }
            },
            (Some(_), Some(_)) => {
                self.err(
                    url_field,
                    format!("set {url_field} or {env_field}, not both"),
                );
                return None;
            }
        };
        if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
            self.err(
                field,
                format!("{} is not a redis:// or rediss:// URL", redact(&text)),
            );
            return None;
        }
        Some(text)
    }

    fn redis(&mut self, raw: &RawConfig, env: &dyn Fn(&str) -> Option<String>) -> RedisState {
        let s = &raw.state;
        let url = self
            .redis_url("state.url", "state.url_env", &s.url, &s.url_env, env)
            .unwrap_or_else(|| {
                if s.url.is_none() && s.url_env.is_none() {
                    self.err("state.url", "backend = \"redis\" needs url or url_env");
                }
                String::new()
            });
        let timeout = self.duration("state.timeout", s.timeout.as_deref(), DEFAULT_REDIS_TIMEOUT);
        if timeout.is_zero() {
            self.err("state.timeout", "must be greater than zero");
        }
        let on_unavailable = match s.on_unavailable.as_deref() {
            None | Some("fail_closed") => OnUnavailable::FailClosed,
            Some("fail_open") => OnUnavailable::FailOpen,
            Some(other) => {
                self.err(
                    "state.on_unavailable",
                    format!("unknown policy {other:?} (expected fail_closed|fail_open)"),
                );
                OnUnavailable::FailClosed
            }
        };
        let fail_open_share = match s.fail_open_share {
            None => DEFAULT_FAIL_OPEN_SHARE,
            Some(f) if f > 0.0 && f <= 1.0 => (f * 1000.0).round().max(1.0) as Permille,
            Some(f) => {
                self.err(
                    "state.fail_open_share",
                    format!("{f} is not a fraction in (0, 1]"),
                );
                DEFAULT_FAIL_OPEN_SHARE
            }
        };
        for (i, b) in raw.budgets.iter().enumerate() {
            if crate::pricing::usd_to_nanos(b.limit_usd) > MAX_REDIS_NANOS {
                self.err(
                    &format!("budgets[{i}].limit_usd"),
                    "above $9,007,199, the most the redis backend counts exactly",
                );
            }
        }
        let key_prefix = s.key_prefix.clone().unwrap_or_else(|| "sluice:".into());
        if key_prefix.chars().any(|c| c.is_control() || c == ' ') {
            self.err(
                "state.key_prefix",
                "must not hold spaces or control characters",
            );
        }
        let ca_file = s.ca_file.as_ref().map(PathBuf::from);
        if let Some(ca) = &ca_file {
            if !url.is_empty() && !url.starts_with("rediss://") {
                self.err("state.ca_file", "only applies to a rediss:// URL");
            }
            if !ca.exists() {
                self.err("state.ca_file", format!("{} does not exist", ca.display()));
            }
        }
        RedisState {
            url,
            key_prefix,
            timeout,
            on_unavailable,
            fail_open_share,
            ca_file,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact("rediss://default:s3cret@redis.example:6380/0"),
            "rediss://***@redis.example:6380/0"
        );
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
    }
}
