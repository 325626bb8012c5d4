//! A request sent to a deployment of the other API: its body translated
//! once per attempt group (OpenAI chat completions ↔ Anthropic messages),
//! and what the answer's translation back needs (`translate::Plan`).

use bytes::Bytes;
use serde_json::Value;

use crate::error::{ApiShape, ProxyError};
use crate::protocol::Across;
use crate::translate::{Plan, Refused};

/// A group's request in the other API.
#[derive(Debug)]
pub struct Crossing {
    /// The provider's API (the answer comes back in it).
    pub to: ApiShape,
    /// The translated body (the model still the client's; each deployment's
    /// upstream model is written in as for any request).
    pub body: Bytes,
    /// The provider's path for it.
    pub path: &'static str,
    /// What translating the answer back needs.
    pub plan: Plan,
    /// Prompt-cache breakpoints Sluice added to the translated body.
    pub breakpoints: usize,
}

impl Crossing {
    /// Which way the answer is translated back.
    pub fn across(&self) -> Across {
        Across::from(self.to.other())
    }
}

/// Translates `body` (in the client's API, `from`) for a provider of the
/// other API. `include_usage` is what the client asked for: a usage chunk
/// Sluice added to an OpenAI stream for its own accounting is not passed on.
/// With `breakpoints` (`[cache] anthropic_breakpoints`: the smallest prefix
/// worth one), a request going to Anthropic gets prompt-cache breakpoints as
/// a client's own messages request would.
pub fn translate(
    from: ApiShape,
    body: &[u8],
    include_usage: bool,
    breakpoints: Option<u64>,
) -> Result<Crossing, Refused> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Refused(format!("the request body is not JSON: {e}")))?;
    let across = Across::from(from);
    let (mut out, plan) = across.request(&value)?;
    // The usage chunk an OpenAI client asked for (its stream is rebuilt).
    let plan = Plan {
        include_usage,
        ..plan
    };
    let (to, path) = (across.to(), across.path());
    let added = match (breakpoints, out.as_object_mut()) {
        (Some(min), Some(obj)) if across.provider().has_cache_breakpoints() => {
            crate::cache::prompt::add_breakpoints(obj, min)
        }
        _ => 0,
    };
    let body = serde_json::to_vec(&out).map_err(|e| Refused(format!("encoding: {e}")))?;
    Ok(Crossing {
        to,
        body: Bytes::from(body),
        path,
        plan,
        breakpoints: added,
    })
}

/// A refusal as the client's 400 (`invalid_request_error`).
pub fn refused(model: &str, r: Refused) -> ProxyError {
    ProxyError::InvalidRequest(format!(
        "model {model:?} is served through the other provider API, and this request cannot be \
         translated: {}",
        r.0
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_request_becomes_a_messages_request_and_keeps_the_clients_usage_choice() {
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},
            "messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#;
        let c = translate(ApiShape::OpenAi, body, false, None).expect("translates");
        assert_eq!(c.to, ApiShape::Anthropic);
        assert_eq!(c.path, "/v1/messages");
        assert!(c.plan.stream);
        assert!(!c.plan.include_usage, "Sluice's own usage chunk stays");
        let v: Value = serde_json::from_slice(&c.body).expect("json");
        assert_eq!(v["system"][0]["text"], "be brief");
        assert_eq!(v["model"], "m");
    }

    #[test]
    fn a_messages_request_becomes_a_chat_request_that_reports_usage() {
        let body = br#"{"model":"m","max_tokens":5,"stream":true,
            "messages":[{"role":"user","content":"hi"}]}"#;
        let c = translate(ApiShape::Anthropic, body, false, None).expect("translates");
        assert_eq!((c.to, c.path), (ApiShape::OpenAi, "/v1/chat/completions"));
        let v: Value = serde_json::from_slice(&c.body).expect("json");
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn a_long_translated_prefix_gets_prompt_cache_breakpoints() {
        let system = "rules ".repeat(3000);
        let body = serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"}
        ]});
        let body = serde_json::to_vec(&body).expect("json");
        let plain = translate(ApiShape::OpenAi, &body, false, None).expect("translates");
        assert_eq!(plain.breakpoints, 0);
        let marked = translate(ApiShape::OpenAi, &body, false, Some(1024)).expect("translates");
        assert!(marked.breakpoints > 0);
        let v: Value = serde_json::from_slice(&marked.body).expect("json");
        assert_eq!(v["system"][0]["cache_control"]["type"], "ephemeral");
    }

    #[test]
    fn what_cannot_be_translated_is_a_400() {
        let body = br#"{"model":"m","n":2,"messages":[{"role":"user","content":"hi"}]}"#;
        let e = translate(ApiShape::OpenAi, body, false, None).expect_err("n > 1");
        assert_eq!(refused("m", e).status().as_u16(), 400);
    }
}
