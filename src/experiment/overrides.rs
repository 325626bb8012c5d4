//! An arm's changes to the request body: top-level parameters (e.g.
//! `temperature`) and a prefix on the system prompt, in the endpoint's own
//! shape. Key order is preserved; an arm without changes leaves the bytes
//! untouched.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::config::Arm;
use crate::error::ProxyError;
use crate::protocol::{Endpoint, Protocol};

/// Whether `arm` changes requests at all.
pub fn changes(arm: &Arm) -> bool {
    !arm.params.is_empty() || arm.system_prefix.is_some()
}

/// The body with `arm`'s parameters set and its system prefix added.
pub fn apply(body: Bytes, arm: &Arm, endpoint: Endpoint) -> Result<Bytes, ProxyError> {
    if !changes(arm) {
        return Ok(body);
    }
    let mut obj: Map<String, Value> = serde_json::from_slice(&body)
        .map_err(|e| ProxyError::InvalidRequest(format!("invalid JSON in request body: {e}")))?;
    for (k, v) in &arm.params {
        obj.insert(k.clone(), v.clone());
    }
    if let Some(prefix) = &arm.system_prefix {
        Protocol::of(endpoint).prefix_system(&mut obj, prefix);
    }
    serde_json::to_vec(&obj)
        .map(Bytes::from)
        .map_err(|e| ProxyError::Internal(format!("re-encoding request body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(params: &str, prefix: Option<&str>) -> Arm {
        Arm {
            name: "b".into(),
            model: "m".into(),
            weight: 1.0,
            params: serde_json::from_str(params).expect("params"),
            system_prefix: prefix.map(str::to_owned),
        }
    }

    fn json(b: &Bytes) -> Value {
        serde_json::from_slice(b).expect("json")
    }

    #[test]
    fn no_changes_keep_the_bytes() {
        let body = Bytes::from_static(br#"{"model":"x",  "messages":[]}"#);
        let out = apply(body.clone(), &arm("{}", None), Endpoint::ChatCompletions).expect("ok");
        assert_eq!(out, body);
    }

    #[test]
    fn params_are_set() {
        let body = Bytes::from_static(br#"{"model":"x","temperature":1.0,"messages":[]}"#);
        let out = apply(
            body,
            &arm(r#"{"temperature":0.2,"top_p":0.9}"#, None),
            Endpoint::ChatCompletions,
        )
        .expect("ok");
        let v = json(&out);
        assert_eq!(v["temperature"], 0.2);
        assert_eq!(v["top_p"], 0.9);
        assert_eq!(v["model"], "x");
    }

    #[test]
    fn chat_prefix_joins_a_system_message_or_adds_one() {
        let a = arm("{}", Some("[v2] "));
        let body = Bytes::from_static(
            br#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}]}"#,
        );
        let v = json(&apply(body, &a, Endpoint::ChatCompletions).expect("ok"));
        assert_eq!(v["messages"][0]["content"], "[v2] Be brief.");
        assert_eq!(v["messages"].as_array().map(Vec::len), Some(2));

        let body = Bytes::from_static(br#"{"messages":[{"role":"user","content":"hi"}]}"#);
        let v = json(&apply(body, &a, Endpoint::ChatCompletions).expect("ok"));
        assert_eq!(v["messages"][0]["role"], "system");
        assert_eq!(v["messages"][0]["content"], "[v2] ");
        assert_eq!(v["messages"][1]["content"], "hi");
    }

    #[test]
    fn anthropic_and_responses_prefixes() {
        let a = arm("{}", Some("P:"));
        let body = Bytes::from_static(br#"{"system":[{"type":"text","text":"S"}],"messages":[]}"#);
        let v = json(&apply(body, &a, Endpoint::Messages).expect("ok"));
        assert_eq!(v["system"][0]["text"], "P:");
        assert_eq!(v["system"][1]["text"], "S");
        let body = Bytes::from_static(br#"{"messages":[]}"#);
        let v = json(&apply(body, &a, Endpoint::Messages).expect("ok"));
        assert_eq!(v["system"], "P:");
        let body = Bytes::from_static(br#"{"instructions":"I","input":"x"}"#);
        let v = json(&apply(body, &a, Endpoint::Responses).expect("ok"));
        assert_eq!(v["instructions"], "P:I");
    }
}
