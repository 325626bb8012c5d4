//! The file format: plain serde structs mirroring proxy.toml.
//!
//! Nothing here is trusted; `super::validate` turns it into typed config.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub providers: Vec<RawProvider>,
    #[serde(default)]
    pub models: Vec<RawModel>,
    #[serde(default)]
    pub keys: Vec<RawKey>,
    #[serde(default)]
    pub limits: RawTokenLimits,
    #[serde(default)]
    pub rate_limits: Vec<RawRateLimit>,
    #[serde(default)]
    pub retry: RawRetry,
    #[serde(default)]
    pub circuit_breaker: RawBreaker,
    #[serde(default)]
    pub routing: Vec<RawRouting>,
    #[serde(default)]
    pub budgets: Vec<RawBudget>,
    #[serde(default)]
    pub pricing: Vec<crate::pricing::Entry>,
    #[serde(default)]
    pub state: RawState,
    pub loop_detection: Option<super::loops::RawLoopDetection>,
    pub runs: Option<super::loops::RawRuns>,
    #[serde(default)]
    pub kill_switches: Vec<super::kill::RawKillSwitch>,
    pub jwt: Option<super::jwt::RawJwt>,
    pub telemetry: Option<super::telemetry::RawTelemetry>,
    #[serde(default)]
    pub experiments: Vec<super::experiments::RawExperiment>,
    #[serde(default)]
    pub shadows: Vec<super::shadows::RawShadow>,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub faults: Vec<super::faults::RawFault>,
    pub capture: Option<super::capture::RawCapture>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub mode: Option<String>,
    pub scope: Option<String>,
    pub max_bytes: Option<RawSize>,
    pub max_entry_bytes: Option<RawSize>,
    pub ttl: Option<String>,
    pub anthropic_breakpoints: Option<bool>,
    pub breakpoint_min_tokens: Option<u64>,
    pub shared_url: Option<String>,
    pub shared_url_env: Option<String>,
    pub shared_timeout: Option<String>,
    /// `[cache.semantic]`.
    pub semantic: Option<super::semantic::RawSemantic>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub name: Option<String>,
    #[serde(default)]
    pub scope: Vec<String>,
    pub window: String,
    pub limit_usd: f64,
    pub action: Option<String>,
    pub downgrade_to: Option<String>,
    pub downgrade_at: Option<f64>,
    pub alert_at: Option<Vec<f64>>,
    pub models: Option<Vec<String>>,
    pub webhook: Option<String>,
    pub overrides: Option<std::collections::BTreeMap<String, super::overrides::RawBudgetOverride>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub backend: Option<String>,
    pub path: Option<String>,
    pub max_buckets: Option<u64>,
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub key_prefix: Option<String>,
    pub timeout: Option<String>,
    pub on_unavailable: Option<String>,
    pub fail_open_share: Option<f64>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    pub provider: String,
    pub upstream_model: Option<String>,
    pub weight: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub max_retries: Option<u32>,
    pub max_attempts: Option<u32>,
    pub base_backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub max_retry_after: Option<String>,
    pub budget_ratio: Option<f64>,
    pub budget_min_per_second: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub consecutive_failures: Option<u32>,
    pub failure_rate: Option<f64>,
    pub window: Option<String>,
    pub min_requests: Option<u32>,
    pub open_for: Option<String>,
    pub half_open_probes: Option<u32>,
    pub probe_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub model: String,
    pub default: String,
    #[serde(default)]
    pub rules: Vec<RawRoutingRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoutingRule {
    #[serde(rename = "use")]
    pub use_model: String,
    pub header: Option<String>,
    pub feature: Option<String>,
    pub tier: Option<String>,
    pub min_input_tokens: Option<u64>,
    pub max_input_tokens: Option<u64>,
    pub tools: Option<bool>,
    pub images: Option<bool>,
    pub last_message_matches: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenLimits {
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub output_reserve: Option<u64>,
    pub max_request_cost_usd: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub name: Option<String>,
    #[serde(default)]
    pub scope: Vec<String>,
    pub models: Option<Vec<String>>,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub max_concurrent: Option<u64>,
    pub overrides: Option<std::collections::BTreeMap<String, super::overrides::RawRateOverride>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub max_body: Option<RawSize>,
    pub passthrough_keys: Option<bool>,
    pub trust_identity_headers: Option<bool>,
    pub run_from_traceparent: Option<bool>,
    pub end_user_from_body: Option<bool>,
    pub drain_timeout: Option<String>,
    pub workers: Option<u64>,
    pub tls: Option<RawTls>,
    pub passthrough: Option<Vec<String>>,
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub max_connections: Option<u64>,
    pub h2_max_concurrent_streams: Option<u32>,
    pub h2_max_header_list_size: Option<RawSize>,
    pub max_sse_event: Option<RawSize>,
    pub max_response_body: Option<RawSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
    pub usage: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<String>,
    pub first_byte: Option<String>,
    pub idle: Option<String>,
    pub total: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: String,
    pub kind: String,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub ca_file: Option<String>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    pub client_keys: Option<bool>,
    pub organization: Option<String>,
    pub project: Option<String>,
    pub anthropic_beta: Option<Vec<String>>,
    pub api_version: Option<String>,
    pub region: Option<String>,
    pub aws_access_key_id_env: Option<String>,
    pub aws_secret_access_key_env: Option<String>,
    pub aws_session_token_env: Option<String>,
    pub bedrock_api: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    #[serde(default)]
    pub deployments: Vec<RawDeployment>,
    pub balance: Option<String>,
    #[serde(default)]
    pub fallbacks: Vec<String>,
    pub context_fallback: Option<String>,
    pub context_window: Option<u64>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub name: Option<String>,
    pub sha256: String,
    pub user: Option<String>,
    pub team: Option<String>,
    pub models: Option<Vec<String>>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub tier: Option<String>,
    pub passthrough: Option<Vec<String>>,
    pub tier_headers: Option<bool>,
}

/// A byte size: a bare integer or a string such as `"32MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}
