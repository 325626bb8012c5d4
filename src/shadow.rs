//! Shadow traffic at run time: per shadow, the copies in flight (bounded),
//! the spend of the day (capped), and how its answers compared with the
//! primary's. The copying itself is `proxy::shadow`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::config::Shadow;
use crate::stats::Moments;
use crate::stream::observe::AnswerFacts;

/// What the primary answer was, for the comparison.
#[derive(Debug, Clone, Default)]
pub struct Primary {
    pub status: u16,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub output_tokens: Option<u64>,
    pub cost_nanos: Option<u64>,
    /// The answer's text (content and tool arguments).
    pub text: String,
    /// How the answer ended and the tools it called.
    pub facts: AnswerFacts,
}

/// A shadow copy waiting for its primary: the record starts it, with the
/// primary's answer, once that answer went to the client (or the request
/// ended otherwise). Nothing of the copy runs before: its work never
/// competes with the primary's, and it costs the primary one spawn.
pub struct Pending(Box<dyn FnOnce(Primary) + Send + Sync>);

impl Pending {
    pub fn new(start: impl FnOnce(Primary) + Send + Sync + 'static) -> Pending {
        Pending(Box::new(start))
    }

    pub fn start(self, primary: Primary) {
        (self.0)(primary)
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("shadow::Pending")
    }
}

/// What the shadow answered.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub status: u16,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub output_tokens: Option<u64>,
    pub cost_nanos: Option<u64>,
    pub text: String,
    pub facts: AnswerFacts,
}

/// The two answers side by side.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    pub status_match: bool,
    /// The same text, byte for byte.
    pub exact_match: bool,
    /// Normalised-text similarity, 0–1: the Jaccard index of the two
    /// answers' sets of lower-cased words.
    pub similarity: f64,
    /// Whether each answer's text parses as JSON (structured output).
    pub primary_json: bool,
    pub shadow_json: bool,
    /// The same finish (stop) reason.
    pub finish_match: bool,
    /// The same tools called, in the same order (both none included): what
    /// matters most for an agent's next step.
    pub tool_names_match: bool,
    pub latency_delta_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_delta_ms: Option<f64>,
}

fn words(text: &str) -> std::collections::HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn is_json(text: &str) -> bool {
    let t = text.trim();
    !t.is_empty() && serde_json::from_str::<serde_json::Value>(t).is_ok()
}

pub fn compare(p: &Primary, s: &Answer) -> Comparison {
    let (a, b) = (words(&p.text), words(&s.text));
    let union = a.union(&b).count();
    let similarity = if union == 0 {
        1.0
    } else {
        a.intersection(&b).count() as f64 / union as f64
    };
    Comparison {
        status_match: p.status == s.status,
        exact_match: p.text == s.text,
        similarity,
        primary_json: is_json(&p.text),
        shadow_json: is_json(&s.text),
        finish_match: p.facts.finish_reason == s.facts.finish_reason,
        tool_names_match: p.facts.tool_names == s.facts.tool_names,
        latency_delta_ms: s.latency_ms - p.latency_ms,
        ttft_delta_ms: p.ttft_ms.zip(s.ttft_ms).map(|(p, s)| s - p),
    }
}

/// One shadow's running totals.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub mirrored: u64,
    pub dropped_full: u64,
    pub dropped_budget: u64,
    pub compared: u64,
    pub status_match: u64,
    pub exact_match: u64,
    pub finish_match: u64,
    pub tool_names_match: u64,
    /// Comparisons where either side called a tool.
    pub with_tools: u64,
    pub shadow_errors: u64,
    pub similarity: Moments,
    pub latency_delta_ms: Moments,
    pub ttft_delta_ms: Moments,
    pub primary_cost_nanos: u64,
    pub shadow_cost_nanos: u64,
}

impl Totals {
    pub fn view(&self) -> serde_json::Value {
        let rate = |n: u64| (self.compared > 0).then(|| n as f64 / self.compared as f64);
        serde_json::json!({
            "mirrored": self.mirrored,
            "dropped_queue_full": self.dropped_full,
            "dropped_budget": self.dropped_budget,
            "compared": self.compared,
            "shadow_errors": self.shadow_errors,
            "status_agreement": rate(self.status_match),
            "exact_match_rate": rate(self.exact_match),
            "finish_reason_agreement": rate(self.finish_match),
            "tool_names_agreement": rate(self.tool_names_match),
            "compared_with_tools": self.with_tools,
            "similarity_mean": self.similarity.mean(),
            "latency_delta_ms_mean": self.latency_delta_ms.mean(),
            "ttft_delta_ms_mean": self.ttft_delta_ms.mean(),
            "primary_cost_usd": crate::pricing::nanos_to_usd(self.primary_cost_nanos),
            "shadow_cost_usd": crate::pricing::nanos_to_usd(self.shadow_cost_nanos),
        })
    }
}

/// One shadow's live side.
pub struct ShadowLive {
    pub name: Arc<str>,
    /// Copies in flight: a copy takes a permit or is dropped.
    pub slots: Arc<Semaphore>,
    capacity: usize,
    /// (UTC day number, spend that day in nano-dollars).
    spend: Mutex<(u64, u64)>,
    totals: Mutex<Totals>,
}

fn today() -> u64 {
    crate::experiment::ramp_now() / 86_400
}

impl ShadowLive {
    fn new(s: &Shadow) -> ShadowLive {
        ShadowLive {
            name: s.name.as_str().into(),
            slots: Arc::new(Semaphore::new(s.max_in_flight)),
            capacity: s.max_in_flight,
            spend: Mutex::new((today(), 0)),
            totals: Mutex::new(Totals::default()),
        }
    }

    pub fn totals(&self) -> Totals {
        self.totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut Totals)) {
        f(&mut self.totals.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Whether today's spend is under `cap`.
    pub fn under_cap(&self, cap: Option<u64>) -> bool {
        let Some(cap) = cap else { return true };
        let mut spend = self.spend.lock().unwrap_or_else(|e| e.into_inner());
        if spend.0 != today() {
            *spend = (today(), 0);
        }
        spend.1 < cap
    }

    /// Adds a copy's cost to today's spend.
    pub fn spent(&self, nanos: u64) {
        let mut spend = self.spend.lock().unwrap_or_else(|e| e.into_inner());
        if spend.0 != today() {
            *spend = (today(), 0);
        }
        spend.1 = spend.1.saturating_add(nanos);
    }

    pub fn spent_today(&self) -> u64 {
        let spend = self.spend.lock().unwrap_or_else(|e| e.into_inner());
        if spend.0 == today() {
            spend.1
        } else {
            0
        }
    }
}

/// Every shadow's live side, by name (bounded by the config).
#[derive(Default)]
pub struct Shadows {
    live: RwLock<HashMap<String, Arc<ShadowLive>>>,
}

impl Shadows {
    /// Matches the live side to a (new) config: totals are kept by name,
    /// a changed `max_in_flight` gets a new bound.
    pub fn sync(&self, config: &[Shadow]) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::with_capacity(config.len());
        for s in config {
            let entry = match live.remove(&s.name) {
                Some(l) if l.capacity == s.max_in_flight => l,
                Some(old) => {
                    let fresh = ShadowLive::new(s);
                    *fresh.totals.lock().unwrap_or_else(|e| e.into_inner()) = old.totals();
                    Arc::new(fresh)
                }
                None => Arc::new(ShadowLive::new(s)),
            };
            next.insert(s.name.clone(), entry);
        }
        *live = next;
    }

    pub fn get(&self, name: &str) -> Option<Arc<ShadowLive>> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_of_texts() {
        let p = Primary {
            status: 200,
            latency_ms: 100.0,
            text: "The answer is 42.".into(),
            ..Primary::default()
        };
        let same = Answer {
            status: 200,
            latency_ms: 150.0,
            text: "The answer is 42.".into(),
            ..Answer::default()
        };
        let c = compare(&p, &same);
        assert!(c.exact_match && c.status_match);
        assert_eq!(c.similarity, 1.0);
        assert_eq!(c.latency_delta_ms, 50.0);
        let close = Answer {
            text: "the ANSWER is 41".into(),
            status: 500,
            ..Answer::default()
        };
        let c = compare(&p, &close);
        assert!(!c.exact_match && !c.status_match);
        // {the, answer, is, 42} vs {the, answer, is, 41}: 3 of 5.
        assert!((c.similarity - 0.6).abs() < 1e-12);
        let json = Answer {
            text: r#"{"tool": "search"}"#.into(),
            ..Answer::default()
        };
        assert!(compare(&p, &json).shadow_json);
        assert!(!compare(&p, &json).primary_json);
    }

    #[test]
    fn tool_calls_and_finish_reasons_are_compared() {
        let facts = |finish: &str, tools: &[&str]| AnswerFacts {
            finish_reason: Some(finish.into()),
            tool_calls: tools.len() as u32,
            tool_names: tools.iter().map(|t| (*t).to_owned()).collect(),
        };
        let p = Primary {
            facts: facts("tool_calls", &["search", "read"]),
            ..Primary::default()
        };
        let same = Answer {
            facts: facts("tool_calls", &["search", "read"]),
            ..Answer::default()
        };
        let c = compare(&p, &same);
        assert!(c.finish_match && c.tool_names_match);
        let other = Answer {
            facts: facts("tool_calls", &["read", "search"]),
            ..Answer::default()
        };
        assert!(!compare(&p, &other).tool_names_match, "order matters");
        let text = Answer {
            facts: facts("stop", &[]),
            ..Answer::default()
        };
        let c = compare(&p, &text);
        assert!(!c.finish_match && !c.tool_names_match);
        let none = Primary::default();
        assert!(compare(&none, &Answer::default()).tool_names_match);
    }

    #[test]
    fn the_daily_cap_holds() {
        let s = Shadow {
            name: "s".into(),
            model: "*".into(),
            shadow_model: "m".into(),
            percent: 100.0,
            features: None,
            keys: None,
            max_per_day: Some(10),
            max_in_flight: 2,
        };
        let l = ShadowLive::new(&s);
        assert!(l.under_cap(s.max_per_day));
        l.spent(10);
        assert!(!l.under_cap(s.max_per_day));
        assert!(l.under_cap(None));
        assert_eq!(l.spent_today(), 10);
    }
}
