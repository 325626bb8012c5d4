//! One capture record as a JSON line, redacted: built on the writer thread,
//! never on the request path.

use bytes::Bytes;
use serde_json::{json, Value};

use super::redact::Redactor;
use super::Finished;
use crate::stream::observe::{Observed, Observer};

/// Whether a body is a stream of server-sent events.
fn is_sse(body: &[u8]) -> bool {
    let t = body.trim_ascii_start();
    t.starts_with(b"data:") || t.starts_with(b"event:") || t.starts_with(b":")
}

/// What the proxy's own observer learns from a whole answer (a JSON body
/// or a stream of events): usage and the text (content, tool arguments).
pub fn observe(body: &[u8], anthropic: bool) -> Observed {
    let mut observer = if is_sse(body) {
        Observer::sse(anthropic, false).with_text()
    } else {
        Observer::json(anthropic).with_text()
    };
    observer.observe(&Bytes::copy_from_slice(body));
    observer.finish()
}

/// The answer's text (see [`observe`]).
pub fn response_text(body: &[u8], anthropic: bool) -> String {
    observe(body, anthropic).text
}

/// `text` cut to at most `max` bytes (at a character boundary).
fn cut(mut text: String, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

/// A body as written: redacted JSON when it is whole and parses, else
/// redacted text cut at the bound. Returns (body, truncated).
fn body(r: &Redactor<'_>, bytes: &[u8], whole: bool, max: usize) -> (Value, bool) {
    if bytes.is_empty() {
        return (Value::Null, false);
    }
    if whole && bytes.len() <= max && !is_sse(bytes) {
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            return (r.json(v), false);
        }
    }
    let (text, cut_here) = cut(r.text(&String::from_utf8_lossy(bytes)), max);
    (Value::String(text), cut_here || !whole)
}

pub(super) fn build(f: &Finished) -> Value {
    let p = &f.pending;
    let o = &f.outcome;
    let cfg = &p.cfg;
    let r = Redactor::new(&cfg.redact, &cfg.secrets.0);
    let max = cfg.max_body_bytes;
    let (request, request_truncated) = body(&r, &p.request, p.request_len <= max, max);
    let whole = p.response_len <= max as u64;
    let (response, response_truncated) = body(&r, &p.response, whole, max);
    let anthropic = o.endpoint == "messages";
    let (text, _) = cut(r.text(&response_text(&p.response, anthropic)), max);
    let headers: serde_json::Map<String, Value> = p
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(r.text(v))))
        .collect();
    let id = &o.identity;
    json!({
        "ts": o.ts,
        "request_id": &*o.request_id,
        "reason": f.reason,
        "method": p.method,
        "path": r.text(&p.path),
        "endpoint": o.endpoint,
        "stream": o.stream,
        "key": id.key.as_deref(),
        "user": id.user.as_deref(),
        "team": id.team.as_deref(),
        "feature": id.feature.as_deref(),
        "end_user": id.end_user.as_deref().map(|u| r.text(u)),
        "run": id.run.as_deref(),
        "model": o.model,
        "routed_to": o.routed_to,
        "upstream_model": (!o.upstream_model.is_empty()).then_some(&o.upstream_model),
        "provider": (!o.provider.is_empty()).then_some(&o.provider),
        "status": o.status,
        "error": o.error,
        "end": o.end,
        "latency_ms": o.latency_ms,
        "ttft_ms": o.ttft_ms,
        "input_tokens": o.usage.map(|u| u.input),
        "output_tokens": o.usage.map(|u| u.output),
        "cost_usd": o.cost_nanos.map(crate::pricing::nanos_to_usd),
        "finish_reason": o.finish_reason,
        "fault": o.fault,
        "trace_id": o.trace_id,
        "request_headers": headers,
        "request": request,
        "request_bytes": p.request_len,
        "request_truncated": request_truncated,
        "response": response,
        "response_bytes": p.response_len,
        "response_truncated": response_truncated,
        "response_text": text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons_and_text() {
        let json = br#"{"choices":[{"message":{"content":"hello there"},"finish_reason":"stop"}]}"#;
        assert_eq!(
            observe(json, false).answer.finish_reason.as_deref(),
            Some("stop")
        );
        assert_eq!(response_text(json, false).trim(), "hello there");
        let sse = b"data: {\"choices\":[{\"delta\":{\"content\":\"he\"},\"finish_reason\":null}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"llo\"},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n";
        assert_eq!(
            observe(sse, false).answer.finish_reason.as_deref(),
            Some("length")
        );
        assert_eq!(response_text(sse, false), "hello");
        let anthropic = br#"{"content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn"}"#;
        assert_eq!(
            observe(anthropic, true).answer.finish_reason.as_deref(),
            Some("end_turn")
        );
        assert_eq!(observe(b"{}", false).answer.finish_reason, None);
    }

    #[test]
    fn cuts_at_char_boundaries() {
        assert_eq!(cut("héllo".into(), 2), ("h".into(), true));
        assert_eq!(cut("abc".into(), 3), ("abc".into(), false));
    }
}
