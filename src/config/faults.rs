//! `[[faults]]`: chaos injection rules (off unless configured). The same
//! raw entry comes from proxy.toml or, with an expiry, from `POST
//! /admin/faults` (the runtime ones live in `crate::fault`); both go through
//! [`FaultRule::from_raw`], so the admin API refuses what `sluice check`
//! refuses.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::raw::RawConfig;
use super::values::parse_duration;
use super::Validator;

/// Longest `delay` (before the first byte).
pub const MAX_FAULT_DELAY: Duration = Duration::from_secs(300);
/// Longest `chunk_delay` (between streamed events).
pub const MAX_CHUNK_DELAY: Duration = Duration::from_secs(60);
/// Longest fault name (config names become metric label values).
pub const MAX_FAULT_NAME: usize = 64;

/// One `[[faults]]` entry (or the body of `POST /admin/faults`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFault {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `name=value`: a request header that must be present with this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_after: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub malformed_after: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_after: Option<u32>,
}

/// Where a fault replaces the real thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAt {
    /// The client's answer: the agent's SDK sees the failure; Sluice does
    /// not retry it.
    Client,
    /// An upstream attempt's answer: Sluice's retries, breakers and
    /// fallbacks see it as if the provider had sent it.
    Upstream,
}

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Added latency before the first byte.
    Delay(Duration),
    /// A pause before every streamed event after the first.
    SlowChunks(Duration),
    /// The provider's own error for this status (400 is its context-length
    /// error), with `retry-after` seconds when set.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// The stream ends cleanly after this many events, without its proper
    /// end (`[DONE]`, `message_stop`).
    Truncate { after: u32 },
    /// An event that is not valid JSON after this many events.
    Malformed { after: u32 },
    /// The connection is dropped after this many events (0: before the
    /// response head).
    Reset { after: u32 },
}

impl FaultKind {
    /// The metric label (a fixed set).
    pub fn label(&self) -> &'static str {
        match self {
            FaultKind::Delay(_) => "delay",
            FaultKind::SlowChunks(_) => "slow_chunks",
            FaultKind::Status { status: 400, .. } => "context_length",
            FaultKind::Status { status: 429, .. } => "status_429",
            FaultKind::Status { status: 500, .. } => "status_500",
            FaultKind::Status { status: 503, .. } => "status_503",
            FaultKind::Status { .. } => "status_529",
            FaultKind::Truncate { .. } => "truncate",
            FaultKind::Malformed { .. } => "malformed",
            FaultKind::Reset { .. } => "reset",
        }
    }

    /// Whether it changes a response body as it streams (so only a
    /// streamed request can have it).
    pub fn on_stream(&self) -> bool {
        matches!(
            self,
            FaultKind::SlowChunks(_)
                | FaultKind::Truncate { .. }
                | FaultKind::Malformed { .. }
                | FaultKind::Reset { after: 1.. }
        )
    }
}

/// Which requests a fault applies to: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultMatch {
    /// A model glob, against the model the client sent or the upstream one.
    pub model: Option<String>,
    pub key: Option<String>,
    pub feature: Option<String>,
    pub user: Option<String>,
    /// Header name (lowercase) and exact value.
    pub header: Option<(http::HeaderName, String)>,
}

/// A validated fault.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    pub name: String,
    pub matcher: FaultMatch,
    /// Of the matching requests, in [0, 100].
    pub percent: f64,
    pub at: FaultAt,
    pub kind: FaultKind,
    /// The entry as written (shown by `GET /admin/faults`, persisted).
    pub raw: RawFault,
}

impl FaultRule {
    /// Validates one entry; every problem is returned with its field.
    pub fn from_raw(raw: &RawFault) -> Result<FaultRule, Vec<(&'static str, String)>> {
        let mut errs: Vec<(&'static str, String)> = Vec::new();
        let name_ok = !raw.name.is_empty()
            && raw.name.len() <= MAX_FAULT_NAME
            && raw
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            errs.push((
                "name",
                format!("{:?}: 1 to {MAX_FAULT_NAME} of A-Z a-z 0-9 - _ .", raw.name),
            ));
        }
        for (field, v) in [
            ("model", &raw.model),
            ("key", &raw.key),
            ("feature", &raw.feature),
            ("user", &raw.user),
        ] {
            if v.as_deref().is_some_and(|v| v.is_empty() || v.len() > 256) {
                errs.push((field, "must be 1 to 256 characters".into()));
            }
        }
        let header = raw.header.as_deref().and_then(|h| match parse_header(h) {
            Ok(pair) => Some(pair),
            Err(e) => {
                errs.push(("header", e));
                None
            }
        });
        let percent = raw.percent.unwrap_or(100.0);
        if !(0.0..=100.0).contains(&percent) {
            errs.push(("percent", format!("{percent} is not between 0 and 100")));
        }
        let at = match raw.at.as_deref() {
            None | Some("client") => FaultAt::Client,
            Some("upstream") => FaultAt::Upstream,
            Some(other) => {
                errs.push((
                    "at",
                    format!("unknown place {other:?} (expected client|upstream)"),
                ));
                FaultAt::Client
            }
        };
        let kind = kind(raw, &mut errs);
        if let Some(k) = &kind {
            if at == FaultAt::Upstream && k.on_stream() {
                errs.push((
                    "at",
                    "a stream fault happens after the response head, when Sluice never retries: \
                     use at = \"client\""
                        .into(),
                ));
            }
            if raw.retry_after.is_some() && !matches!(k, FaultKind::Status { .. }) {
                errs.push(("retry_after", "only with status".into()));
            }
        }
        match kind {
            Some(kind) if errs.is_empty() => Ok(FaultRule {
                name: raw.name.clone(),
                matcher: FaultMatch {
                    model: raw.model.clone(),
                    key: raw.key.clone(),
                    feature: raw.feature.clone(),
                    user: raw.user.clone(),
                    header,
                },
                percent,
                at,
                kind,
                raw: raw.clone(),
            }),
            _ => Err(errs),
        }
    }
}

/// The one fault an entry names.
fn kind(raw: &RawFault, errs: &mut Vec<(&'static str, String)>) -> Option<FaultKind> {
    let mut kinds = Vec::new();
    let mut duration = |field: &'static str, text: &Option<String>, max: Duration| {
        let t = text.as_deref()?;
        match parse_duration(t) {
            Ok(d) if d <= max => Some(d),
            Ok(_) => {
                errs.push((field, format!("at most {}s", max.as_secs())));
                None
            }
            Err(e) => {
                errs.push((field, e));
                None
            }
        }
    };
    let delay = duration("delay", &raw.delay, MAX_FAULT_DELAY);
    let chunk_delay = duration("chunk_delay", &raw.chunk_delay, MAX_CHUNK_DELAY);
    kinds.extend(delay.map(FaultKind::Delay));
    kinds.extend(chunk_delay.map(FaultKind::SlowChunks));
    if let Some(status) = raw.status {
        if matches!(status, 400 | 429 | 500 | 503 | 529) {
            kinds.push(FaultKind::Status {
                status,
                retry_after: raw
                    .retry_after
                    .or((status == 429).then_some(1))
                    .map(|s| s.min(3600)),
            });
        } else {
            errs.push((
                "status",
                format!("{status} (expected 400 (context length), 429, 500, 503 or 529)"),
            ));
        }
    }
    kinds.extend(
        raw.truncate_after
            .map(|after| FaultKind::Truncate { after }),
    );
    kinds.extend(
        raw.malformed_after
            .map(|after| FaultKind::Malformed { after }),
    );
    kinds.extend(raw.reset_after.map(|after| FaultKind::Reset { after }));
    let named = [
        raw.delay.is_some(),
        raw.chunk_delay.is_some(),
        raw.status.is_some(),
        raw.truncate_after.is_some(),
        raw.malformed_after.is_some(),
        raw.reset_after.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    match named {
        0 => {
            errs.push((
                "name",
                "names no fault (one of delay, chunk_delay, status, truncate_after, \
                 malformed_after, reset_after)"
                    .into(),
            ));
            None
        }
        1 => kinds.pop(),
        _ => {
            errs.push((
                "name",
                "names more than one fault (one of delay, chunk_delay, status, truncate_after, \
                 malformed_after, reset_after)"
                    .into(),
            ));
            None
        }
    }
}

/// `x-chaos=on` (or `x-chaos: on`): a header name and the exact value.
fn parse_header(text: &str) -> Result<(http::HeaderName, String), String> {
    let (name, value) = text
        .split_once('=')
        .or_else(|| text.split_once(':'))
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    let name = http::HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{:?} is not a header name", name.trim()))?;
    let value = value.trim();
    if http::HeaderValue::from_str(value).is_err() || value.len() > 256 {
        return Err(format!("{value:?} is not a header value"));
    }
    Ok((name, value.to_owned()))
}

impl Validator<'_> {
    pub(super) fn faults(&mut self, raw: &RawConfig) -> Vec<FaultRule> {
        let mut out: Vec<FaultRule> = Vec::new();
        for (i, f) in raw.faults.iter().enumerate() {
            match FaultRule::from_raw(f) {
                Ok(rule) => {
                    if out.iter().any(|r| r.name == rule.name) {
                        self.err(
                            &format!("faults[{i}].name"),
                            format!("duplicate fault name {:?}", rule.name),
                        );
                    }
                    out.push(rule);
                }
                Err(errs) => {
                    for (field, msg) in errs {
                        self.err(&format!("faults[{i}].{field}"), msg);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawFault {
        toml::from_str(toml_text).expect("raw fault")
    }

    #[test]
    fn one_fault_per_entry_with_its_bounds() {
        let r = FaultRule::from_raw(&raw("name = \"a\"\nstatus = 429")).expect("ok");
        assert_eq!(
            r.kind,
            FaultKind::Status {
                status: 429,
                retry_after: Some(1)
            }
        );
        assert_eq!(r.at, FaultAt::Client);
        assert_eq!(r.percent, 100.0);
        let whole = FaultRule::from_raw(&raw("name = \"a\"\nstatus = 500\npercent = 20"));
        assert_eq!(whole.map(|r| r.percent), Ok(20.0), "an integer percent");
        let fields = |t: &str| -> Vec<&'static str> {
            FaultRule::from_raw(&raw(t))
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        };
        assert_eq!(fields("name = \"a\""), ["name"]);
        assert_eq!(
            fields("name = \"a\"\nstatus = 429\ndelay = \"1s\""),
            ["name"]
        );
        assert_eq!(fields("name = \"a b\"\nstatus = 429"), ["name"]);
        assert_eq!(fields("name = \"a\"\nstatus = 418"), ["status"]);
        assert_eq!(fields("name = \"a\"\ndelay = \"1h\""), ["delay"]);
        assert_eq!(
            fields("name = \"a\"\nstatus = 500\npercent = 101.0"),
            ["percent"]
        );
        assert_eq!(fields("name = \"a\"\nstatus = 500\nat = \"edge\""), ["at"]);
        assert_eq!(
            fields("name = \"a\"\ntruncate_after = 2\nat = \"upstream\""),
            ["at"]
        );
        assert_eq!(
            fields("name = \"a\"\ndelay = \"1s\"\nretry_after = 2"),
            ["retry_after"]
        );
        assert_eq!(
            fields("name = \"a\"\nstatus = 500\nheader = \"x-chaos\""),
            ["header"]
        );
        // A reset before the head can be an upstream fault; one mid-stream cannot.
        assert!(
            FaultRule::from_raw(&raw("name = \"a\"\nreset_after = 0\nat = \"upstream\"")).is_ok()
        );
        assert_eq!(
            fields("name = \"a\"\nreset_after = 3\nat = \"upstream\""),
            ["at"]
        );
        let h = FaultRule::from_raw(&raw("name = \"a\"\nstatus = 500\nheader = \"X-Chaos: on\""))
            .expect("ok");
        assert_eq!(
            h.matcher.header,
            Some((http::HeaderName::from_static("x-chaos"), "on".into()))
        );
        assert!(toml::from_str::<RawFault>("name = \"a\"\nstatus = 500\nwhen = 1").is_err());
    }
}
