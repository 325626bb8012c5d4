//! The comparison `sluice replay` prints: one row per captured request
//! (what it was, what the candidate answered) and the totals. Plain data
//! and formatting, tested without a server.

use serde::Serialize;
use serde_json::Value;

/// One side of a comparison (the captured answer or the candidate's).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Side {
    pub status: u16,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub finish_reason: Option<String>,
    #[serde(skip)]
    pub text: String,
}

impl Side {
    /// The captured side of a record.
    pub fn captured(r: &Value) -> Side {
        let s = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
        Side {
            status: r
                .get("status")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .unwrap_or(0),
            model: s("upstream_model").or_else(|| s("model")),
            provider: s("provider"),
            latency_ms: r.get("latency_ms").and_then(Value::as_f64).unwrap_or(0.0),
            ttft_ms: r.get("ttft_ms").and_then(Value::as_f64),
            input_tokens: r.get("input_tokens").and_then(Value::as_u64),
            output_tokens: r.get("output_tokens").and_then(Value::as_u64),
            cost_usd: r.get("cost_usd").and_then(Value::as_f64),
            finish_reason: s("finish_reason"),
            text: s("response_text").unwrap_or_default(),
        }
    }
}

/// One replayed request.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub request_id: String,
    pub endpoint: String,
    /// Why it was not sent (its body was cut at capture, or is not JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub captured: Side,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Side>,
    /// Normalised-text similarity of the two answers, 0–1 (the shadow
    /// comparison's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f64>,
    pub status_match: bool,
    pub finish_match: bool,
}

impl Row {
    pub fn compared(request_id: String, endpoint: String, old: Side, new: Side) -> Row {
        let p = crate::shadow::Primary {
            status: old.status,
            latency_ms: old.latency_ms,
            ttft_ms: old.ttft_ms,
            output_tokens: old.output_tokens,
            cost_nanos: None,
            text: old.text.clone(),
            ..Default::default()
        };
        let a = crate::shadow::Answer {
            status: new.status,
            latency_ms: new.latency_ms,
            ttft_ms: new.ttft_ms,
            output_tokens: new.output_tokens,
            cost_nanos: None,
            text: new.text.clone(),
            ..Default::default()
        };
        let c = crate::shadow::compare(&p, &a);
        Row {
            request_id,
            endpoint,
            skipped: None,
            status_match: c.status_match,
            finish_match: old.finish_reason == new.finish_reason,
            similarity: Some(c.similarity),
            captured: old,
            candidate: Some(new),
        }
    }
}

/// What all the rows come to.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    pub requests: usize,
    pub replayed: usize,
    pub skipped: usize,
    pub status_match: usize,
    pub finish_match: usize,
    pub candidate_errors: usize,
    pub similarity_mean: Option<f64>,
    pub latency_ms_mean: Pair<Option<f64>>,
    pub input_tokens: Pair<u64>,
    pub output_tokens: Pair<u64>,
    pub cost_usd: Pair<f64>,
}

/// Captured and candidate values.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Pair<T> {
    pub captured: T,
    pub candidate: T,
}

pub fn totals(rows: &[Row]) -> Totals {
    let done: Vec<(&Side, &Side, f64)> = rows
        .iter()
        .filter_map(|r| Some((&r.captured, r.candidate.as_ref()?, r.similarity?)))
        .collect();
    let n = done.len();
    let mean = |f: &dyn Fn(&(&Side, &Side, f64)) -> f64| {
        (n > 0).then(|| done.iter().map(f).sum::<f64>() / n as f64)
    };
    let sum = |f: &dyn Fn(&Side) -> Option<u64>| Pair {
        captured: done.iter().filter_map(|d| f(d.0)).sum(),
        candidate: done.iter().filter_map(|d| f(d.1)).sum(),
    };
    Totals {
        requests: rows.len(),
        replayed: n,
        skipped: rows.len() - n,
        status_match: rows
            .iter()
            .filter(|r| r.candidate.is_some() && r.status_match)
            .count(),
        finish_match: rows
            .iter()
            .filter(|r| r.candidate.is_some() && r.finish_match)
            .count(),
        candidate_errors: done.iter().filter(|d| d.1.status >= 400).count(),
        similarity_mean: mean(&|d| d.2),
        latency_ms_mean: Pair {
            captured: mean(&|d| d.0.latency_ms),
            candidate: mean(&|d| d.1.latency_ms),
        },
        input_tokens: sum(&|s| s.input_tokens),
        output_tokens: sum(&|s| s.output_tokens),
        cost_usd: Pair {
            captured: done.iter().filter_map(|d| d.0.cost_usd).sum(),
            candidate: done.iter().filter_map(|d| d.1.cost_usd).sum(),
        },
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

fn tokens(s: &Side) -> String {
    format!("{}/{}", opt(&s.input_tokens), opt(&s.output_tokens))
}

fn usd(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |c| format!("{c:.6}"))
}

/// The table for people: a row per request, then the totals.
pub fn render(rows: &[Row], t: &Totals) -> String {
    let mut out = format!(
        "{:<24} {:<9} {:<15} {:<23} {:<21} {:<23} {:>5}\n",
        "REQUEST", "STATUS", "LATENCY ms", "TOKENS in/out", "COST $", "FINISH", "SIM"
    );
    for r in rows {
        let old = &r.captured;
        let Some(new) = &r.candidate else {
            out.push_str(&format!(
                "{:<24} skipped: {}\n",
                r.request_id,
                opt(&r.skipped)
            ));
            continue;
        };
        out.push_str(&format!(
            "{:<24} {:<9} {:<15} {:<23} {:<21} {:<23} {:>5}\n",
            r.request_id,
            format!("{}→{}", old.status, new.status),
            format!("{:.0}→{:.0}", old.latency_ms, new.latency_ms),
            format!("{}→{}", tokens(old), tokens(new)),
            format!("{}→{}", usd(old.cost_usd), usd(new.cost_usd)),
            format!("{}→{}", opt(&old.finish_reason), opt(&new.finish_reason)),
            r.similarity
                .map_or_else(|| "-".into(), |s| format!("{s:.2}")),
        ));
    }
    let mean = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.0}"));
    out.push_str(&format!(
        "TOTAL {} request(s), {} replayed, {} skipped; status same {}/{}, finish same {}/{}, \
         candidate errors {}; latency mean {}→{} ms; tokens {}/{}→{}/{}; cost ${}→${}; similarity mean {}\n",
        t.requests,
        t.replayed,
        t.skipped,
        t.status_match,
        t.replayed,
        t.finish_match,
        t.replayed,
        t.candidate_errors,
        mean(t.latency_ms_mean.captured),
        mean(t.latency_ms_mean.candidate),
        t.input_tokens.captured,
        t.output_tokens.captured,
        t.input_tokens.candidate,
        t.output_tokens.candidate,
        usd(Some(t.cost_usd.captured)),
        usd(Some(t.cost_usd.candidate)),
        t.similarity_mean.map_or_else(|| "-".into(), |s| format!("{s:.2}")),
    ));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_and_totals() {
        let old = Side::captured(
            &json!({"status": 200, "latency_ms": 100.0, "input_tokens": 10,
            "output_tokens": 4, "cost_usd": 0.002, "finish_reason": "stop",
            "response_text": "the answer is 42", "upstream_model": "big"}),
        );
        assert_eq!(old.model.as_deref(), Some("big"));
        let new = Side {
            status: 200,
            latency_ms: 50.0,
            input_tokens: Some(10),
            output_tokens: Some(5),
            cost_usd: Some(0.001),
            finish_reason: Some("stop".into()),
            text: "the answer is 41".into(),
            ..Side::default()
        };
        let a = Row::compared("r1".into(), "chat_completions".into(), old.clone(), new);
        assert!((a.similarity.unwrap_or(0.0) - 0.6).abs() < 1e-9);
        let skipped = Row {
            request_id: "r2".into(),
            endpoint: "chat_completions".into(),
            skipped: Some("request body truncated at capture".into()),
            captured: old,
            candidate: None,
            similarity: None,
            status_match: false,
            finish_match: false,
        };
        let rows = [a, skipped];
        let t = totals(&rows);
        assert_eq!((t.requests, t.replayed, t.skipped), (2, 1, 1));
        assert_eq!((t.status_match, t.finish_match), (1, 1));
        assert_eq!(
            t.output_tokens,
            Pair {
                captured: 4,
                candidate: 5
            }
        );
        let text = render(&rows, &t);
        assert!(text.contains("200→200"), "{text}");
        assert!(text.contains("stop→stop"), "{text}");
        assert!(text.contains("r2") && text.contains("skipped"), "{text}");
        assert!(text.contains("TOTAL 2 request(s), 1 replayed"), "{text}");
    }
}
