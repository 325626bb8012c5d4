//! What of a request the semantic cache looks at: whether it may take part,
//! the text that is embedded, and the partition (everything else, which
//! must be equal for two requests to match). Plain functions of the body.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::index::PartKey;
use crate::cache::canonical_json;
use crate::config::{EmbedWhat, SemanticConfig};
use crate::sniff::{Endpoint, Sniffed};

/// Bumped when the partition recipe changes.
const VERSION: &[u8] = b"sluice-semantic-v1";

/// Why a request does not take part (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Endpoint,
    Tools,
    Images,
    Temperature,
    NoText,
}

impl Skip {
    pub fn label(self) -> &'static str {
        match self {
            Skip::Endpoint => "skip_endpoint",
            Skip::Tools => "skip_tools",
            Skip::Images => "skip_images",
            Skip::Temperature => "skip_temperature",
            Skip::NoText => "skip_no_text",
        }
    }
}

/// A request the semantic cache may answer: its text and partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub text: String,
    pub part: PartKey,
    /// The tenant, hashed (the per-tenant bound's key).
    pub tenant: u64,
}

/// Who is asking and where it goes: the parts of the partition that are
/// not in the body.
pub struct Scope<'a> {
    pub tenant: &'a str,
    pub upstream_model: &'a str,
    pub embedding_model: &'a str,
    /// The answer-changing request headers (`cache::key::vary`).
    pub vary: &'a str,
}

/// Whether the request takes part, and if so its question.
pub fn question(
    cfg: &SemanticConfig,
    endpoint: Endpoint,
    s: &Sniffed,
    body: &[u8],
    scope: &Scope<'_>,
) -> Result<Question, Skip> {
    if !crate::protocol::Protocol::of(endpoint).takes_messages() {
        return Err(Skip::Endpoint);
    }
    if s.has_tools && !cfg.allow_tools {
        return Err(Skip::Tools);
    }
    if s.has_images && !cfg.allow_images {
        return Err(Skip::Images);
    }
    if s.temperature != Some(0.0) && !cfg.any_temperature {
        return Err(Skip::Temperature);
    }
    let Ok(Value::Object(mut req)) = serde_json::from_slice::<Value>(body) else {
        return Err(Skip::NoText);
    };
    for field in ["stream", "stream_options", "user", "metadata", "model"] {
        req.remove(field);
    }
    let messages = match req.remove("messages") {
        Some(Value::Array(m)) => m,
        _ => return Err(Skip::NoText),
    };
    // The system prompt stays in the partition (top-level `system` for
    // Anthropic; system and developer messages for OpenAI) unless ignored.
    let (system, turns): (Vec<&Value>, Vec<&Value>) = messages
        .iter()
        .partition(|m| matches!(role(m), "system" | "developer"));
    if cfg.ignore_system_prompt {
        req.remove("system");
    } else if !system.is_empty() {
        req.insert(
            "system_messages".into(),
            Value::Array(system.into_iter().cloned().collect()),
        );
    }
    let text = match cfg.embed {
        EmbedWhat::LastUser => turns
            .iter()
            .rev()
            .find(|m| role(m) == "user")
            .map(|m| text_of(m))
            .unwrap_or_default(),
        EmbedWhat::Conversation => turns
            .iter()
            .map(|m| format!("{}: {}", role(m), text_of(m)))
            .collect::<Vec<_>>()
            .join("\n"),
    };
    let text: String = text.trim().chars().take(cfg.max_input_chars).collect();
    if text.is_empty() {
        return Err(Skip::NoText);
    }
    Ok(Question {
        text,
        part: partition(endpoint, scope, &req),
        tenant: tenant_hash(scope.tenant),
    })
}

fn partition(endpoint: Endpoint, scope: &Scope<'_>, rest: &Map<String, Value>) -> PartKey {
    let canonical = canonical_json(&Value::Object(rest.clone()));
    let mut h = Sha256::new();
    for part in [
        VERSION,
        endpoint.label().as_bytes(),
        scope.tenant.as_bytes(),
        scope.upstream_model.as_bytes(),
        scope.embedding_model.as_bytes(),
        scope.vary.as_bytes(),
        canonical.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The tenant's bucket for the per-tenant bound.
pub fn tenant_hash(tenant: &str) -> u64 {
    let d = Sha256::digest(tenant.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

fn role(m: &Value) -> &str {
    m.get("role").and_then(Value::as_str).unwrap_or("")
}

/// A message's text: its string content, or its text parts joined.
fn text_of(m: &Value) -> String {
    match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::config::SemanticMode;

    fn cfg() -> SemanticConfig {
        SemanticConfig {
            mode: SemanticMode::Serve,
            embedding_model: "embed".into(),
            models: vec!["*".into()],
            features: None,
            keys: None,
            threshold: 0.9,
            embed: EmbedWhat::LastUser,
            max_entries: 10,
            max_entries_per_tenant: 10,
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(60),
            embedding_timeout: Duration::from_secs(1),
            max_input_chars: 100,
            allow_tools: false,
            allow_images: false,
            any_temperature: false,
            ignore_system_prompt: false,
            false_hit_below: 0.5,
        }
    }

    fn ask(cfg: &SemanticConfig, tenant: &str, body: &Value) -> Result<Question, Skip> {
        let bytes = serde_json::to_vec(body).expect("json");
        let s = crate::sniff::sniff(&bytes, Endpoint::ChatCompletions).expect("sniff");
        let scope = Scope {
            tenant,
            upstream_model: "m",
            embedding_model: "e",
            vary: "",
        };
        question(cfg, Endpoint::ChatCompletions, &s, &bytes, &scope)
    }

    fn chat(system: &str, user: &str) -> Value {
        json!({"model": "x", "temperature": 0, "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": user}]},
        ]})
    }

    #[test]
    fn the_last_user_text_is_embedded_and_the_rest_partitions() {
        let c = cfg();
        let q = ask(&c, "key:a", &chat("be brief", "capital of France?")).expect("q");
        assert_eq!(q.text, "capital of France?");
        // Another question, same system prompt and settings: same partition.
        let q2 = ask(&c, "key:a", &chat("be brief", "tallest mountain?")).expect("q");
        assert_eq!(q.part, q2.part);
        // Another tenant, system prompt or setting: another partition.
        assert_ne!(
            ask(&c, "key:b", &chat("be brief", "x")).expect("q").part,
            q.part
        );
        assert_ne!(
            ask(&c, "key:a", &chat("be long", "x")).expect("q").part,
            q.part
        );
        let mut capped = chat("be brief", "x");
        capped["max_tokens"] = json!(5);
        assert_ne!(ask(&c, "key:a", &capped).expect("q").part, q.part);
        // Streaming or not, and `user`, do not matter.
        let mut streamed = chat("be brief", "x");
        streamed["stream"] = json!(true);
        streamed["user"] = json!("u1");
        assert_eq!(ask(&c, "key:a", &streamed).expect("q").part, q.part);
        // Unless the system prompt is ignored.
        let ignore = SemanticConfig {
            ignore_system_prompt: true,
            ..cfg()
        };
        assert_eq!(
            ask(&ignore, "key:a", &chat("be long", "x"))
                .expect("q")
                .part,
            ask(&ignore, "key:a", &chat("be brief", "x"))
                .expect("q")
                .part
        );
        let conv = SemanticConfig {
            embed: EmbedWhat::Conversation,
            ..cfg()
        };
        let q = ask(&conv, "key:a", &chat("be brief", "capital?")).expect("q");
        assert_eq!(q.text, "user: earlier\nassistant: ok\nuser: capital?");
        // Cut to max_input_chars.
        let long = "x".repeat(500);
        assert_eq!(
            ask(&c, "key:a", &chat("s", &long)).expect("q").text.len(),
            100
        );
    }

    #[test]
    fn tools_images_and_temperature_stay_out_unless_allowed() {
        let c = cfg();
        let mut warm = chat("s", "q");
        warm["temperature"] = json!(0.7);
        assert_eq!(ask(&c, "t", &warm), Err(Skip::Temperature));
        let mut unset = chat("s", "q");
        unset.as_object_mut().expect("obj").remove("temperature");
        assert_eq!(ask(&c, "t", &unset), Err(Skip::Temperature));
        let any = SemanticConfig {
            any_temperature: true,
            ..cfg()
        };
        // Allowed, yet 0.7 and 0 never share a partition.
        assert_ne!(
            ask(&any, "t", &warm).expect("q").part,
            ask(&any, "t", &chat("s", "q")).expect("q").part
        );
        let mut tools = chat("s", "q");
        tools["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
        assert_eq!(ask(&c, "t", &tools), Err(Skip::Tools));
        let allowed = SemanticConfig {
            allow_tools: true,
            ..cfg()
        };
        assert_ne!(
            ask(&allowed, "t", &tools).expect("q").part,
            ask(&allowed, "t", &chat("s", "q")).expect("q").part
        );
        let image = json!({"model": "x", "temperature": 0, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        ]}]});
        assert_eq!(ask(&c, "t", &image), Err(Skip::Images));
        let empty =
            json!({"model": "x", "temperature": 0, "messages": [{"role": "user", "content": " "}]});
        assert_eq!(ask(&c, "t", &empty), Err(Skip::NoText));
    }
}
