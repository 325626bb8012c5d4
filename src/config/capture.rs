//! `[capture]`: request/response capture to a JSONL file, redacted before
//! anything is written (the live side is `crate::capture`). Off unless
//! configured.

use std::path::PathBuf;

use serde::Deserialize;

use super::raw::RawSize;
use super::values::parse_size;
use super::Validator;

/// The most `[[capture.rules]]`.
pub const MAX_CAPTURE_RULES: usize = 32;
/// The most user patterns (`redact_regex`) and JSON paths (`redact_json`).
pub const MAX_REDACT_PATTERNS: usize = 64;
/// Records waiting for the writer, at most.
pub const MAX_CAPTURE_QUEUE: usize = 65_536;

/// Headers never written, whatever the allow-list says.
pub const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "set-cookie",
];

/// Request headers written by default (none carries a credential).
pub const DEFAULT_HEADERS: &[&str] = &[
    "content-type",
    "user-agent",
    "anthropic-version",
    "anthropic-beta",
    "openai-beta",
    "x-sluice-user",
    "x-sluice-team",
    "x-sluice-feature",
    "x-sluice-run",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapture {
    pub path: String,
    pub max_file_bytes: Option<RawSize>,
    pub max_total_bytes: Option<RawSize>,
    pub max_body_bytes: Option<RawSize>,
    pub queue: Option<usize>,
    #[serde(default)]
    pub redact: Vec<String>,
    #[serde(default)]
    pub redact_regex: Vec<String>,
    #[serde(default)]
    pub redact_json: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub rules: Vec<RawCaptureRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCaptureRule {
    pub on: String,
    pub ratio: Option<f64>,
    pub key: Option<String>,
    pub user: Option<String>,
    pub feature: Option<String>,
    pub model: Option<String>,
}

/// A validated `[capture]` section.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// The file written; rotated files sit beside it (`NAME.<unix ms>`).
    pub path: PathBuf,
    /// A file past this size is rotated.
    pub max_file_bytes: u64,
    /// The current and rotated files together stay under this; the oldest
    /// rotated files are deleted.
    pub max_total_bytes: u64,
    /// Each captured body (request, response) is cut at this size, marked.
    pub max_body_bytes: usize,
    /// Records waiting for the writer; past it a record is dropped, counted.
    pub queue: usize,
    pub rules: Vec<CaptureRule>,
    pub redact: Redact,
    /// Request headers written (lower-case; never a credential).
    pub headers: Vec<String>,
    /// The providers' keys, blanked by value wherever they appear.
    pub secrets: Secrets,
}

/// Secrets known by value; `Debug` shows only how many.
#[derive(Clone, Default)]
pub struct Secrets(pub Vec<String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({})", self.0.len())
    }
}

/// When a request is captured.
#[derive(Debug, Clone, PartialEq)]
pub enum CaptureRule {
    /// Every request that ends in an error.
    Error,
    /// A share (0–1) of all requests.
    Sample(f64),
    /// Every request of this key, user, feature or model (a glob); all
    /// the fields given must match.
    Match {
        key: Option<String>,
        user: Option<String>,
        feature: Option<String>,
        model: Option<String>,
    },
}

/// A built-in redaction pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Email,
    Phone,
    Card,
}

/// What is blanked before a record is written (keys and credentials are
/// always blanked, whatever this says).
#[derive(Debug, Clone, Default)]
pub struct Redact {
    pub builtins: Vec<Builtin>,
    pub regexes: Vec<regex::Regex>,
    pub json_paths: Vec<JsonPath>,
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Field(String),
    Index(usize),
    /// `[*]`: every element of an array.
    Each,
}

/// A JSON path such as `messages[*].content` or `metadata.email`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    pub text: String,
    pub steps: Vec<Step>,
}

impl JsonPath {
    /// Parses `a.b[*].c[0]`: fields separated by dots, each followed by any
    /// number of `[*]` or `[N]`.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let mut steps = Vec::new();
        for part in text.split('.') {
            let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
            if name.is_empty() {
                return Err(format!("{text:?}: empty field name"));
            }
            if !name
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "{text:?}: field {name:?} (letters, digits, '_', '-')"
                ));
            }
            steps.push(Step::Field(name.to_owned()));
            while !rest.is_empty() {
                let Some(end) = rest.find(']').filter(|_| rest.starts_with('[')) else {
                    return Err(format!("{text:?}: expected [*] or [N] after {name:?}"));
                };
                let inner = &rest[1..end];
                steps.push(if inner == "*" {
                    Step::Each
                } else {
                    Step::Index(
                        inner
                            .parse()
                            .map_err(|_| format!("{text:?}: [{inner}] (expected [*] or [N])"))?,
                    )
                });
                rest = &rest[end + 1..];
            }
        }
        Ok(JsonPath {
            text: text.to_owned(),
            steps,
        })
    }
}

impl Validator<'_> {
    pub(super) fn capture(
        &mut self,
        raw: Option<&RawCapture>,
        providers: &[super::ProviderConfig],
    ) -> Option<CaptureConfig> {
        let raw = raw?;
        let f = "capture";
        if raw.path.trim().is_empty() {
            self.err(&format!("{f}.path"), "empty path");
        }
        let mut size = |name: &str, v: &Option<RawSize>, default: usize| match v {
            None => default,
            Some(r) => match parse_size(r) {
                Ok(0) => {
                    self.err(&format!("{f}.{name}"), "must be greater than zero");
                    default
                }
                Ok(n) => n,
                Err(e) => {
                    self.err(&format!("{f}.{name}"), e);
                    default
                }
            },
        };
        let max_file_bytes = size("max_file_bytes", &raw.max_file_bytes, 64 << 20) as u64;
        let max_total_bytes = size("max_total_bytes", &raw.max_total_bytes, 1 << 30) as u64;
        let max_body_bytes = size("max_body_bytes", &raw.max_body_bytes, 64 << 10);
        if max_total_bytes < 2 * max_file_bytes {
            self.err(
                &format!("{f}.max_total_bytes"),
                "must be at least twice max_file_bytes (the file being written and one rotated)",
            );
        }
        // A record holds two bodies and its fields: it must fit in a file.
        if (max_body_bytes as u64).saturating_mul(4) > max_file_bytes {
            self.err(
                &format!("{f}.max_body_bytes"),
                "must be at most a quarter of max_file_bytes",
            );
        }
        let queue = raw.queue.unwrap_or(1024);
        if queue == 0 || queue > MAX_CAPTURE_QUEUE {
            self.err(
                &format!("{f}.queue"),
                format!("from 1 to {MAX_CAPTURE_QUEUE}"),
            );
        }
        let rules = self.capture_rules(raw);
        let redact = self.capture_redact(raw);
        let mut headers: Vec<String> = DEFAULT_HEADERS.iter().map(|h| (*h).to_owned()).collect();
        for (i, h) in raw.headers.iter().enumerate() {
            let h = h.trim().to_ascii_lowercase();
            if SECRET_HEADERS.contains(&h.as_str()) {
                self.err(
                    &format!("{f}.headers[{i}]"),
                    format!("{h:?} carries a credential and is never written"),
                );
            } else if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                self.err(
                    &format!("{f}.headers[{i}]"),
                    format!("{h:?} is not a header name"),
                );
            } else if !headers.contains(&h) {
                headers.push(h);
            }
        }
        Some(CaptureConfig {
            path: PathBuf::from(raw.path.trim()),
            max_file_bytes,
            max_total_bytes,
            max_body_bytes,
            queue: queue.clamp(1, MAX_CAPTURE_QUEUE),
            rules,
            redact,
            headers,
            secrets: Secrets(
                providers
                    .iter()
                    .filter_map(|p| p.api_key.clone())
                    .filter(|k| !k.is_empty())
                    .collect(),
            ),
        })
    }

    fn capture_rules(&mut self, raw: &RawCapture) -> Vec<CaptureRule> {
        if raw.rules.len() > MAX_CAPTURE_RULES {
            self.err(
                "capture.rules",
                format!("at most {MAX_CAPTURE_RULES} rules"),
            );
        }
        let mut out = Vec::new();
        for (i, r) in raw.rules.iter().enumerate() {
            let f = format!("capture.rules[{i}]");
            let matchers = [&r.key, &r.user, &r.feature, &r.model];
            let has_match = matchers.iter().any(|m| m.is_some());
            let rule = match r.on.as_str() {
                "error" | "sample" if has_match => {
                    self.err(
                        &f,
                        "key, user, feature and model go with on = \"match\" only",
                    );
                    continue;
                }
                "error" => CaptureRule::Error,
                "sample" => {
                    let ratio = r.ratio.unwrap_or(f64::NAN);
                    if !(ratio.is_finite() && (0.0..=1.0).contains(&ratio)) {
                        self.err(
                            &format!("{f}.ratio"),
                            "required with on = \"sample\": 0 to 1",
                        );
                        continue;
                    }
                    CaptureRule::Sample(ratio)
                }
                "match" if !has_match => {
                    self.err(&f, "on = \"match\" needs key, user, feature or model");
                    continue;
                }
                "match" => CaptureRule::Match {
                    key: r.key.clone(),
                    user: r.user.clone(),
                    feature: r.feature.clone(),
                    model: r.model.clone(),
                },
                other => {
                    self.err(
                        &format!("{f}.on"),
                        format!("unknown {other:?} (expected error|sample|match)"),
                    );
                    continue;
                }
            };
            if r.ratio.is_some() && !matches!(rule, CaptureRule::Sample(_)) {
                self.err(&format!("{f}.ratio"), "goes with on = \"sample\" only");
            }
            out.push(rule);
        }
        out
    }

    fn capture_redact(&mut self, raw: &RawCapture) -> Redact {
        let mut out = Redact::default();
        for (i, name) in raw.redact.iter().enumerate() {
            let b = match name.as_str() {
                "email" => Builtin::Email,
                "phone" => Builtin::Phone,
                "card" => Builtin::Card,
                other => {
                    self.err(
                        &format!("capture.redact[{i}]"),
                        format!("unknown pattern {other:?} (expected email|phone|card)"),
                    );
                    continue;
                }
            };
            if !out.builtins.contains(&b) {
                out.builtins.push(b);
            }
        }
        if raw.redact_regex.len() > MAX_REDACT_PATTERNS {
            self.err(
                "capture.redact_regex",
                format!("at most {MAX_REDACT_PATTERNS} patterns"),
            );
        }
        for (i, re) in raw.redact_regex.iter().enumerate() {
            match regex::RegexBuilder::new(re).size_limit(1 << 20).build() {
                Ok(r) if r.is_match("") => self.err(
                    &format!("capture.redact_regex[{i}]"),
                    format!("{re:?} matches the empty string"),
                ),
                Ok(r) => out.regexes.push(r),
                Err(e) => self.err(&format!("capture.redact_regex[{i}]"), e),
            }
        }
        if raw.redact_json.len() > MAX_REDACT_PATTERNS {
            self.err(
                "capture.redact_json",
                format!("at most {MAX_REDACT_PATTERNS} paths"),
            );
        }
        for (i, p) in raw.redact_json.iter().enumerate() {
            match JsonPath::parse(p) {
                Ok(p) => out.json_paths.push(p),
                Err(e) => self.err(&format!("capture.redact_json[{i}]"), e),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "sk-provider-secret-1".into())
    }

    const BASE: &str = r#"
[[providers]]
name = "p"
kind = "openai"
api_key_env = "KEY"
[[models]]
name = "*"
provider = "p"
"#;

    #[test]
    fn capture_is_validated() {
        let ok = format!(
            "{BASE}{}",
            r#"
[capture]
path = "cap.jsonl"
max_file_bytes = "1MiB"
redact = ["email", "card"]
redact_regex = ['ACME-\d+']
redact_json = ["messages[*].content"]
headers = ["X-Source"]
[[capture.rules]]
on = "error"
[[capture.rules]]
on = "sample"
ratio = 0.5
[[capture.rules]]
on = "match"
user = "alice"
"#
        );
        let c = super::super::Config::parse(&ok, "t.toml", &env).expect("valid");
        let cap = c.capture.expect("capture");
        assert_eq!(cap.max_file_bytes, 1 << 20);
        assert_eq!(cap.max_total_bytes, 1 << 30);
        assert_eq!(cap.max_body_bytes, 64 << 10);
        assert_eq!(cap.rules.len(), 3);
        assert_eq!(cap.rules[1], CaptureRule::Sample(0.5));
        assert_eq!(cap.redact.builtins, vec![Builtin::Email, Builtin::Card]);
        assert!(cap.headers.contains(&"x-source".to_owned()));
        assert_eq!(cap.secrets.0, vec!["sk-provider-secret-1".to_owned()]);
        assert!(!format!("{cap:?}").contains("sk-provider"));
        let bad = format!(
            "{BASE}{}",
            r#"
[capture]
path = "cap.jsonl"
max_file_bytes = "1MiB"
max_total_bytes = "1MiB"
max_body_bytes = "512KiB"
queue = 0
redact = ["ssn"]
redact_regex = ["(unclosed", "a*"]
redact_json = ["a..b"]
headers = ["Authorization"]
[[capture.rules]]
on = "sample"
[[capture.rules]]
on = "error"
user = "x"
[[capture.rules]]
on = "match"
[[capture.rules]]
on = "always"
"#
        );
        let all = super::super::Config::parse(&bad, "t.toml", &env)
            .expect_err("invalid")
            .to_string();
        for needle in [
            "capture.max_total_bytes: must be at least twice",
            "capture.max_body_bytes: must be at most a quarter",
            "capture.queue: from 1",
            "capture.redact[0]: unknown pattern \"ssn\"",
            "capture.redact_regex[0]:",
            "capture.redact_regex[1]: \"a*\" matches the empty string",
            "capture.redact_json[0]:",
            "capture.headers[0]: \"authorization\" carries a credential",
            "capture.rules[0].ratio: required",
            "capture.rules[1]: key, user, feature and model go with on = \"match\" only",
            "capture.rules[2]: on = \"match\" needs",
            "capture.rules[3].on: unknown \"always\"",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn json_paths_parse() {
        let p = JsonPath::parse("messages[*].content").expect("ok");
        assert_eq!(
            p.steps,
            vec![
                Step::Field("messages".into()),
                Step::Each,
                Step::Field("content".into())
            ]
        );
        let p = JsonPath::parse("a.b[0][*]").expect("ok");
        assert_eq!(p.steps.len(), 4);
        for bad in ["", "a..b", "a[", "a[x]", "a]", ".a", "a b"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }
}
