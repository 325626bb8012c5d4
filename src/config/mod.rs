//! Configuration: parse proxy.toml into raw structs, then validate once into
//! typed config. Request code never re-checks config.

mod bedrock;
mod bounds;
mod budget;
mod cache;
mod capture;
mod experiments;
mod faults;
mod jwt;
mod kill;
mod limits;
mod loops;
mod overrides;
mod raw;
mod routing;
mod semantic;
mod shadows;
mod state;
mod telemetry;
mod values;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use bedrock::{AwsKeys, BedrockApi, BedrockConfig};
pub use bounds::Bounds;
pub use budget::{applies, applies_any, BudgetAction, BudgetRule, Permille};
pub use cache::{CacheConfig, CacheMode, CacheScope, SharedCacheConfig};
pub use capture::{
    Builtin, CaptureConfig, CaptureRule, JsonPath, Redact, Secrets, Step, DEFAULT_HEADERS,
    SECRET_HEADERS,
};
pub use experiments::{Arm, Experiment, Guards, Pin, Ramp, Sticky, MAX_ARMS, MAX_EXPERIMENTS};
pub use faults::{
    FaultAt, FaultKind, FaultMatch, FaultRule, RawFault, MAX_CHUNK_DELAY, MAX_FAULT_DELAY,
    MAX_FAULT_NAME,
};
pub use jwt::JwtConfig;
pub use kill::{Switch, Target, TARGET_FORMS};
pub use limits::{Dim, RateRule, TokenLimits};
pub use loops::{LoopAction, LoopDetection, RunLimits};
pub use overrides::{Overrides, RateLimits};
pub use routing::{
    Balance, BreakerConfig, Deployment, HeaderMatch, ModelRule, RetryConfig, TierRoute, TierRule,
};
pub use semantic::{EmbedWhat, SemanticConfig, SemanticMode, MAX_SEMANTIC_DIMS};
pub use shadows::{Shadow, MAX_SHADOWS, MAX_SHADOW_IN_FLIGHT};
pub use state::{beside_state, redact, OnUnavailable, RedisState, MAX_REDIS_NANOS};
pub use telemetry::TelemetryConfig;
pub use values::parse_duration;
use values::parse_size;

use crate::path::Family;
use raw::{RawConfig, RawTimeouts};

/// Default request body limit: 32 MiB.
const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;

/// Default of `[state] max_buckets`.
pub const DEFAULT_MAX_BUCKETS: usize = 100_000;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub providers: Vec<ProviderConfig>,
    pub models: Vec<ModelRule>,
    pub keys: Vec<KeyConfig>,
    /// Global per-request token limits.
    pub limits: TokenLimits,
    /// Tokens reserved for the output of a request that sets no output cap,
    /// when a tokens-per-minute limit applies.
    pub output_reserve: u64,
    pub rate_limits: Vec<RateRule>,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    /// Routing models (e.g. `auto`) and their tier rules.
    pub routing: Vec<TierRoute>,
    pub budgets: Vec<BudgetRule>,
    /// The shipped price table with `[[pricing]]` applied.
    pub prices: crate::pricing::PriceTable,
    /// The most one request may cost (worst case), in nano-dollars.
    pub max_request_cost: Option<crate::pricing::Nanos>,
    /// The embedded state file (budget spend journal).
    pub state_path: PathBuf,
    /// `[state] backend = "redis"`: budgets and rate windows shared by
    /// every replica through Redis.
    pub redis: Option<RedisState>,
    /// Entries each per-identity map (rate-limit buckets, budget buckets,
    /// spend attribution) may hold; identities past it share an overflow
    /// entry.
    pub max_buckets: usize,
    pub cache: CacheConfig,
    /// `[cache] shared_url`: a Redis every replica shares as a second level
    /// behind its own cache (set up at start).
    pub shared_cache: Option<SharedCacheConfig>,
    /// `[cache.semantic]`, when its mode is observe or serve.
    pub semantic_cache: Option<SemanticConfig>,
    /// `[loop_detection]`, when present.
    pub loop_detection: Option<LoopDetection>,
    /// `[runs]`: totals per agent run, when present.
    pub runs: Option<RunLimits>,
    /// `[[kill_switches]]`: what the config turns off.
    pub kill_switches: Vec<Switch>,
    /// `[jwt]`: verified tokens as credentials.
    pub jwt: Option<JwtConfig>,
    /// `[[experiments]]`: public model names split between arms.
    pub experiments: Vec<Experiment>,
    /// `[[shadows]]`: requests mirrored to shadow models.
    pub shadows: Vec<Shadow>,
    /// The first 12 hex digits of the config text's SHA-256: every usage
    /// record names the config it was served under.
    pub version: String,
    /// `[[faults]]`: chaos injection (none unless configured).
    pub faults: Vec<FaultRule>,
    /// `[telemetry]`: OTLP trace export, when `otlp_endpoint` is set (read
    /// at start; a reload does not change it).
    pub telemetry: Option<TelemetryConfig>,
    /// `[capture]`: requests and answers written (redacted) to a file,
    /// when configured.
    pub capture: Option<std::sync::Arc<CaptureConfig>>,
}

/// The data-plane listener and its request limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body: usize,
    pub passthrough_keys: bool,
    pub trust_identity_headers: bool,
    /// A request without `x-sluice-run` belongs to the run its
    /// `traceparent` trace id names.
    pub run_from_traceparent: bool,
    pub end_user_from_body: bool,
    pub drain_timeout: Duration,
    /// Threads serving the data plane (`[server] workers`; one per core by
    /// default), each with its own connections and upstream pools.
    pub workers: usize,
    pub tls: Option<TlsFiles>,
    /// Passthrough families every virtual key may use (`[server] passthrough`).
    pub passthrough: Vec<Family>,
    /// Connection, header, body and upstream-body bounds.
    pub bounds: Bounds,
}

/// PEM files for a TLS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token for `/admin/*`; `None` disables those endpoints.
    pub token: Option<String>,
}

/// Where usage records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageSink {
    Off,
    Stdout,
    File(PathBuf),
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub json: bool,
    pub usage: UsageSink,
}

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    OpenAiCompatible,
    /// Azure OpenAI: the OpenAI wire format at deployment URLs, with an
    /// `api-version` query parameter and an `api-key` header.
    Azure,
    /// AWS Bedrock's Anthropic models: the Anthropic Messages API through
    /// `InvokeModel`, signed with SigV4.
    Bedrock,
}

/// The Azure OpenAI `api-version` used when a provider names none (the
/// newest GA version when this was written).
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

impl ProviderKind {
    /// True for providers that speak the OpenAI wire format.
    pub fn is_openai_shaped(self) -> bool {
        matches!(self, Self::OpenAi | Self::OpenAiCompatible | Self::Azure)
    }

    /// True for providers that take Anthropic Messages requests (and so
    /// count tokens with Claude's tokenizer).
    pub fn is_anthropic_shaped(self) -> bool {
        matches!(self, Self::Anthropic | Self::Bedrock)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::OpenAiCompatible => "openai-compatible",
            Self::Azure => "azure",
            Self::Bedrock => "bedrock",
        }
    }
}

/// Per-phase upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(120),
            idle: Duration::from_secs(120),
            total: Duration::from_secs(15 * 60),
        }
    }
}

/// An upstream provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Parsed base URL (scheme, authority and path prefix).
    pub base_url: http::Uri,
    pub api_key_env: Option<String>,
    /// The key itself, read from `api_key_env` when the config was loaded.
    pub api_key: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub timeouts: Timeouts,
    /// Whether a client's own key (passthrough mode) may be sent here.
    pub client_keys: bool,
    /// `OpenAI-Organization` sent with virtual-key requests.
    pub organization: Option<String>,
    /// `OpenAI-Project` sent with virtual-key requests.
    pub project: Option<String>,
    /// `anthropic-beta` values a virtual-key client may ask for.
    pub anthropic_beta: Vec<String>,
    /// Azure OpenAI's `api-version` (only for kind `azure`).
    pub api_version: Option<String>,
    /// Region and credentials (only for kind `bedrock`).
    pub bedrock: Option<BedrockConfig>,
}

/// A virtual key, stored by its SHA-256.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    pub name: String,
    pub sha256: [u8; 32],
    pub user: Option<String>,
    pub team: Option<String>,
    /// Model names (or globs) this key may use; `None` = all.
    pub models: Option<Vec<String>>,
    pub limits: TokenLimits,
    /// A tier name routing rules can match (`tier = "premium"`).
    pub tier: Option<String>,
    /// Passthrough families (files, batches, ...) this key may use.
    pub passthrough: Vec<Family>,
    /// Whether this key may pick a tier with the `x-sluice-tier`-style
    /// header rules when identity headers are not trusted.
    pub tier_headers: bool,
}

/// Every problem found in a config file.
#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.join("\n"))]
pub struct ConfigError {
    pub errors: Vec<String>,
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            errors: vec![format!("{}: {e}", path.display())],
        })?;
        Self::parse(&text, &path.display().to_string(), &|name| {
            std::env::var(name).ok()
        })
    }

    /// Parse and validate config text; `origin` names the file in errors and
    /// `env` resolves environment variables (injectable for tests).
    pub fn parse(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| ConfigError {
            errors: vec![format!("{origin}: {}: {}", e.path(), e.inner().message())],
        })?;
        let mut v = Validator {
            origin,
            errors: Vec::new(),
        };
        let config = v.config(raw, env).map(|mut c| {
            c.version = version_of(text);
            c
        });
        match config {
            Some(c) if v.errors.is_empty() => Ok(c),
            _ => Err(ConfigError { errors: v.errors }),
        }
    }
}

/// The first 12 hex digits of the SHA-256 of a config's text.
fn version_of(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    hex::encode(&digest.as_ref()[..6])
}

struct Validator<'a> {
    origin: &'a str,
    errors: Vec<String>,
}

impl Validator<'_> {
    fn err(&mut self, field: &str, msg: impl std::fmt::Display) {
        self.errors.push(format!("{}: {field}: {msg}", self.origin));
    }

    fn addr(&mut self, field: &str, value: Option<&str>, default: &str) -> SocketAddr {
        let text = value.unwrap_or(default);
        match text.parse() {
            Ok(a) => a,
            Err(_) => {
                self.err(
                    field,
                    format!("invalid socket address {text:?} (expected IP:PORT)"),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        }
    }

    fn duration(&mut self, field: &str, value: Option<&str>, default: Duration) -> Duration {
        match value.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.err(field, e);
                default
            }
        }
    }

    fn timeouts(&mut self, field: &str, raw: &RawTimeouts, base: Timeouts) -> Timeouts {
        Timeouts {
            connect: self.duration(
                &format!("{field}.connect"),
                raw.connect.as_deref(),
                base.connect,
            ),
            first_byte: self.duration(
                &format!("{field}.first_byte"),
                raw.first_byte.as_deref(),
                base.first_byte,
            ),
            idle: self.duration(&format!("{field}.idle"), raw.idle.as_deref(), base.idle),
            total: self.duration(&format!("{field}.total"), raw.total.as_deref(), base.total),
        }
    }

    fn config(&mut self, raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Option<Config> {
        let s = &raw.server;
        let max_body = match &s.max_body {
            None => DEFAULT_MAX_BODY,
            Some(size) => match parse_size(size) {
                Ok(n) if n > 0 => n,
                Ok(_) => {
                    self.err("server.max_body", "must be greater than zero");
                    DEFAULT_MAX_BODY
                }
                Err(e) => {
                    self.err("server.max_body", e);
                    DEFAULT_MAX_BODY
                }
            },
        };
        let server = ServerConfig {
            listen: self.addr("server.listen", s.listen.as_deref(), "127.0.0.1:8080"),
            max_body,
            passthrough_keys: s.passthrough_keys.unwrap_or(false),
            trust_identity_headers: s.trust_identity_headers.unwrap_or(false),
            run_from_traceparent: s.run_from_traceparent.unwrap_or(false),
            end_user_from_body: s.end_user_from_body.unwrap_or(false),
            passthrough: self.families("server.passthrough", s.passthrough.as_deref()),
            drain_timeout: self.duration(
                "server.drain_timeout",
                s.drain_timeout.as_deref(),
                Duration::from_secs(30),
            ),
            workers: match s.workers {
                None => crate::worker::default_count(),
                Some(n) => match usize::try_from(n) {
                    Ok(n @ 1..=crate::worker::MAX_WORKERS) => n,
                    _ => {
                        self.err(
                            "server.workers",
                            format!("must be between 1 and {}", crate::worker::MAX_WORKERS),
                        );
                        1
                    }
                },
            },
            tls: s.tls.as_ref().map(|t| {
                for (field, path) in [("server.tls.cert", &t.cert), ("server.tls.key", &t.key)] {
                    if !Path::new(path).exists() {
                        self.err(field, format!("{path} does not exist"));
                    }
                }
                TlsFiles {
                    cert: PathBuf::from(&t.cert),
                    key: PathBuf::from(&t.key),
                }
            }),
            bounds: self.bounds(s),
        };

        let admin = AdminConfig {
            listen: self.addr(
                "admin.listen",
                raw.admin.listen.as_deref(),
                "127.0.0.1:9090",
            ),
            token: raw
                .admin
                .token_env
                .as_deref()
                .and_then(env)
                .filter(|t| !t.is_empty()),
        };

        let log = LogConfig {
            level: raw.log.level.clone().unwrap_or_else(|| "info".into()),
            json: match raw.log.format.as_deref() {
                None | Some("text") => false,
                Some("json") => true,
                Some(other) => {
                    self.err(
                        "log.format",
                        format!("unknown format {other:?} (expected text|json)"),
                    );
                    false
                }
            },
            usage: match raw.log.usage.as_deref() {
                None | Some("stdout") => UsageSink::Stdout,
                Some("off") => UsageSink::Off,
                Some("") => {
                    self.err("log.usage", "empty path (expected stdout|off|a file path)");
                    UsageSink::Off
                }
                Some(path) => UsageSink::File(PathBuf::from(path)),
            },
        };

        let default_timeouts = self.timeouts("timeouts", &raw.timeouts, Timeouts::default());
        let providers = self.providers(&raw, default_timeouts, env);
        let models = self.models(&raw, &providers);
        let keys = self.keys(&raw);
        let limits = self.token_limits(
            "limits",
            raw.limits.max_input_tokens,
            raw.limits.max_output_tokens,
        );
        let rate_limits = self.rate_limits(&raw);
        let retry = self.retry(&raw.retry);
        let breaker = self.breaker(&raw.circuit_breaker);
        let routing = self.routing(&raw, &models);
        for (i, entry) in raw.pricing.iter().enumerate() {
            if let Some(problem) = entry.problem() {
                self.err(&format!("pricing[{i}]"), problem);
            }
        }
        let prices = crate::pricing::PriceTable::with_overrides(&raw.pricing);
        let budgets = self.budgets(&raw, &models, &providers, &prices);
        let (state_path, redis) = self.state(&raw, env);
        let max_buckets = match raw.state.max_buckets {
            None => DEFAULT_MAX_BUCKETS,
            Some(0) => {
                self.err("state.max_buckets", "must be at least 1");
                DEFAULT_MAX_BUCKETS
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let (cache, shared_cache) = self.cache(&raw.cache, env);
        let semantic_cache =
            self.semantic_cache(raw.cache.semantic.as_ref(), &models, &providers, cache.ttl);
        let loop_detection = self.loop_detection(raw.loop_detection.as_ref());
        let runs = self.runs(raw.runs.as_ref());
        let kill_switches = self.kill_switches(&raw);
        let faults = self.faults(&raw);
        let jwt = self.jwt(raw.jwt.as_ref(), env);
        let experiments = self.experiments(&raw, &models, &routing);
        let shadows = self.shadows(&raw, &models);
        let telemetry = self.telemetry(raw.telemetry.as_ref());
        let capture = self
            .capture(raw.capture.as_ref(), &providers)
            .map(std::sync::Arc::new);
        let max_request_cost = raw.limits.max_request_cost_usd.map(|usd| {
            if usd <= 0.0 {
                self.err("limits.max_request_cost_usd", "must be greater than zero");
            }
            crate::pricing::usd_to_nanos(usd)
        });

        Some(Config {
            server,
            admin,
            log,
            providers,
            models,
            keys,
            limits,
            output_reserve: raw.limits.output_reserve.unwrap_or(1024),
            rate_limits,
            retry,
            breaker,
            routing,
            budgets,
            prices,
            max_request_cost,
            state_path,
            redis,
            max_buckets,
            cache,
            shared_cache,
            semantic_cache,
            loop_detection,
            runs,
            kill_switches,
            jwt,
            experiments,
            shadows,
            version: String::new(),
            faults,
            telemetry,
            capture,
        })
    }

    fn providers(
        &mut self,
        raw: &RawConfig,
        base: Timeouts,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Vec<ProviderConfig> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, p) in raw.providers.iter().enumerate() {
            let field = format!("providers[{i}]");
            if !seen.insert(p.name.clone()) {
                self.err(
                    &format!("{field}.name"),
                    format!("duplicate provider name {:?}", p.name),
                );
            }
            let kind = match p.kind.as_str() {
                "openai" => ProviderKind::OpenAi,
                "anthropic" => ProviderKind::Anthropic,
                "openai-compatible" => ProviderKind::OpenAiCompatible,
                "azure" => ProviderKind::Azure,
                "bedrock" => ProviderKind::Bedrock,
                other => {
                    self.err(
                        &format!("{field}.kind"),
                        format!(
                            "unknown kind {other:?} (expected openai|anthropic|openai-compatible|azure|bedrock)"
                        ),
                    );
                    continue;
                }
            };
            let api_version = match (&p.api_version, kind) {
                (Some(v), ProviderKind::Azure) => {
                    let ok = !v.is_empty()
                        && v.len() <= 64
                        && v.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                    if !ok {
                        self.err(
                            &format!("{field}.api_version"),
                            format!("{v:?} is not an api-version such as 2024-10-21"),
                        );
                    }
                    Some(v.clone())
                }
                (None, ProviderKind::Azure) => Some(DEFAULT_AZURE_API_VERSION.to_owned()),
                (Some(_), _) => {
                    self.err(&format!("{field}.api_version"), "only for kind azure");
                    None
                }
                (None, _) => None,
            };
            let bedrock = self.bedrock(&field, p, kind, env);
            if kind == ProviderKind::Bedrock && bedrock.is_none() {
                continue;
            }
            let bedrock_url = bedrock.as_ref().map(BedrockConfig::default_url);
            let default_url = match kind {
                ProviderKind::OpenAi => Some("https://api.openai.com/v1"),
                ProviderKind::Anthropic => Some("https://api.anthropic.com"),
                ProviderKind::Bedrock => bedrock_url.as_deref(),
                ProviderKind::OpenAiCompatible | ProviderKind::Azure => None,
            };
            let Some(url_text) = p.base_url.as_deref().or(default_url) else {
                self.err(
                    &format!("{field}.base_url"),
                    format!("required for kind {}", kind.as_str()),
                );
                continue;
            };
            let base_url = match parse_base_url(url_text) {
                Ok(u) => u,
                Err(e) => {
                    self.err(&format!("{field}.base_url"), e);
                    continue;
                }
            };
            let ca_file = p.ca_file.as_ref().map(PathBuf::from);
            if let Some(ca) = &ca_file {
                if !ca.exists() {
                    self.err(
                        &format!("{field}.ca_file"),
                        format!("{} does not exist", ca.display()),
                    );
                }
            }
            out.push(ProviderConfig {
                name: p.name.clone(),
                kind,
                base_url,
                api_key_env: p.api_key_env.clone(),
                api_key: p
                    .api_key_env
                    .as_deref()
                    .and_then(env)
                    .filter(|k| !k.is_empty()),
                ca_file,
                timeouts: self.timeouts(&format!("{field}.timeouts"), &p.timeouts, base),
                // A client's own key goes only to the provider it was made for.
                client_keys: p.client_keys.unwrap_or(matches!(
                    kind,
                    ProviderKind::OpenAi | ProviderKind::Anthropic
                )),
                organization: self.header_text(&format!("{field}.organization"), &p.organization),
                project: self.header_text(&format!("{field}.project"), &p.project),
                anthropic_beta: p.anthropic_beta.clone().unwrap_or_default(),
                api_version,
                bedrock,
            });
        }
        out
    }

    fn keys(&mut self, raw: &RawConfig) -> Vec<KeyConfig> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, k) in raw.keys.iter().enumerate() {
            let field = format!("keys[{i}]");
            let mut sha = [0u8; 32];
            if hex::decode_to_slice(k.sha256.trim(), &mut sha).is_err() {
                self.err(
                    &format!("{field}.sha256"),
                    "expected 64 hex characters (make one with `sluice hash-key KEY`)",
                );
                continue;
            }
            if !seen.insert(sha) {
                self.err(&format!("{field}.sha256"), "duplicate key");
            }
            let limits = self.token_limits(&field, k.max_input_tokens, k.max_output_tokens);
            let passthrough =
                self.families(&format!("{field}.passthrough"), k.passthrough.as_deref());
            out.push(KeyConfig {
                limits,
                passthrough,
                tier_headers: k.tier_headers.unwrap_or(false),
                tier: k.tier.clone(),
                name: k
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("key-{}", &k.sha256[..8])),
                sha256: sha,
                user: k.user.clone(),
                team: k.team.clone(),
                models: k.models.clone(),
            });
        }
        out
    }
}

impl Validator<'_> {
    /// Passthrough family names.
    fn families(&mut self, field: &str, names: Option<&[String]>) -> Vec<Family> {
        let mut out = Vec::new();
        for name in names.unwrap_or_default() {
            match Family::parse(name) {
                Some(f) => out.push(f),
                None => {
                    let known: Vec<&str> = Family::ALL.iter().map(|(n, _)| *n).collect();
                    self.err(
                        field,
                        format!(
                            "unknown family {name:?} (expected one of {})",
                            known.join("|")
                        ),
                    );
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Text that becomes a header value.
    fn header_text(&mut self, field: &str, text: &Option<String>) -> Option<String> {
        let t = text.as_ref()?;
        if http::HeaderValue::from_str(t).is_err() {
            self.err(field, "not a valid header value");
            return None;
        }
        Some(t.clone())
    }
}

fn parse_base_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("invalid URL {text:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("URL {text:?} must start with http:// or https://")),
    }
    if uri.authority().is_none() {
        return Err(format!("URL {text:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("URL {text:?} must not have a query"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests;
