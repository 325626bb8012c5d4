//! The Lua script every fleet decision goes through (state.lua: `take` and
//! `settle`), and the layout of their keys and arguments (documented above
//! each operation in the script).

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use crate::pricing::Nanos;
use crate::window::Window;

static STATE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("state.lua")));

/// How long budget buckets outlive their window, so the admin API still
/// shows the last one.
const KEEP_AFTER_WINDOW: u64 = 7 * 24 * 3600;

/// One rate rule a request is admitted under.
#[derive(Debug, Clone)]
pub struct RatePart {
    pub rule: String,
    pub bucket: String,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u64>,
}

/// One budget a request reserves at.
#[derive(Debug, Clone)]
pub struct BudgetPart {
    pub budget: String,
    pub bucket: String,
    pub window: Window,
    pub limit: Nanos,
    pub amount: Nanos,
    pub enforce: bool,
    /// Its scope has `run` (a refusal says `run_budget_exceeded`).
    pub per_run: bool,
}

impl BudgetPart {
    /// Seconds the bucket's hash is kept from now (0: forever).
    fn keep_s(&self, now: u64) -> u64 {
        self.window
            .ends_at(now)
            .map_or(0, |end| end.saturating_sub(now) + KEEP_AFTER_WINDOW)
    }
}

/// Key names under the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// `kind` is `rq` (requests per second), `tk` (tokens per second), `cc`
    /// (concurrency), `b` (budget hash) or `r` (budget reservations).
    pub fn of(&self, kind: &str, bucket: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + kind.len() + 1 + bucket.len());
        k.push_str(&self.prefix);
        k.push_str(kind);
        k.push(':');
        k.push_str(bucket);
        k
    }

    /// The day's spend per identity of one dimension (`user`, `team`, …).
    pub fn spend(&self, day: &str, dim: &str) -> String {
        format!("{}spend:{day}:{dim}", self.prefix)
    }

    pub fn live(&self) -> String {
        format!("{}live", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(String::new, |n| n.to_string())
}

/// The take script for one request.
pub fn take<'a>(
    keys: &Keys,
    id: &str,
    ttl: Duration,
    tokens: u64,
    rates: &[RatePart],
    budgets: &[BudgetPart],
    now: u64,
) -> redis::ScriptInvocation<'a> {
    let mut inv = STATE.prepare_invoke();
    inv.arg("take")
        .arg(id)
        .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        .arg(rates.len())
        .arg(budgets.len())
        .arg(tokens);
    for r in rates {
        inv.key(keys.of("rq", &r.bucket))
            .key(keys.of("tk", &r.bucket))
            .key(keys.of("cc", &r.bucket));
        inv.arg(opt(r.rpm))
            .arg(opt(r.tpm))
            .arg(opt(r.max_concurrent));
    }
    for b in budgets {
        inv.key(keys.of("b", &b.bucket))
            .key(keys.of("r", &b.bucket));
        inv.arg(b.window.key(now).as_str())
            .arg(b.limit)
            .arg(b.amount)
            .arg(if b.enforce { "1" } else { "0" })
            .arg(b.keep_s(now));
    }
    inv.key(keys.live());
    inv
}

/// What a settlement applies.
#[derive(Debug, Clone, Copy)]
pub struct Actual {
    pub reserved_tokens: u64,
    pub tokens: u64,
    pub cost: Nanos,
    /// The second the take booked its tokens in (Redis time).
    pub booked: i64,
    /// When the take's reservations expire (Redis time, ms).
    pub expires_ms: u64,
}

/// The settle script for one request; `attribution` names the identity's
/// (dimension, value) pairs its cost is attributed to.
pub fn settle<'a>(
    keys: &Keys,
    id: &str,
    rates: &[RatePart],
    budgets: &[BudgetPart],
    actual: &Actual,
    attribution: &[(&'static str, String)],
    now: u64,
) -> redis::ScriptInvocation<'a> {
    let mut inv = STATE.prepare_invoke();
    inv.arg("settle")
        .arg(id)
        .arg(actual.booked)
        .arg(rates.len())
        .arg(budgets.len())
        .arg(actual.reserved_tokens)
        .arg(actual.tokens)
        .arg(actual.expires_ms);
    for r in rates {
        inv.key(keys.of("tk", &r.bucket))
            .key(keys.of("cc", &r.bucket));
        inv.arg(if r.tpm.is_some() { "1" } else { "0" })
            .arg(if r.max_concurrent.is_some() { "1" } else { "0" });
    }
    for b in budgets {
        inv.key(keys.of("b", &b.bucket))
            .key(keys.of("r", &b.bucket));
        inv.arg(b.window.key(now).as_str())
            .arg(b.amount)
            .arg(actual.cost)
            .arg(b.keep_s(now));
    }
    inv.arg(attribution.len()).arg(actual.cost);
    let day = Window::Day.key(now);
    for (dim, value) in attribution {
        inv.key(keys.spend(&day, dim)).arg(value);
    }
    inv.key(keys.live());
    inv
}
