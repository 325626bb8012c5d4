//! What a request reserves before it goes upstream: a slot under every rate
//! limit that applies, and its worst-case cost at every budget that applies
//! (all or nothing). Both start from the input's upper bound and ask for the
//! exact count only when the bound would refuse (see `count`).

use crate::app::{App, Snapshot};
use crate::error::ProxyError;
use crate::limits::rate;
use crate::metrics;
use crate::pricing::Nanos;
use crate::record::RequestRecord;
use crate::vocab::LimitKind;

use super::count::Input;

/// Admits the request under the rate limits, reserving `reserve(input)`
/// tokens, or refuses it. A tokens-per-minute refusal made with the bound is
/// checked again with the exact count.
pub(super) async fn admit(
    app: &App,
    snap: &Snapshot,
    rec: &mut RequestRecord,
    model: &str,
    input: Option<&mut Input>,
    reserve: impl Fn(u64) -> u64,
) -> Result<(), ProxyError> {
    let rules = &snap.config.rate_limits;
    if rules.is_empty() {
        return Ok(());
    }
    let try_admit = |rec: &RequestRecord, tokens: u64| {
        let subject = rate::Subject {
            identity: &rec.facts.identity,
            model,
        };
        app.rate.admit(rules, &subject, tokens)
    };
    let tokens = input.as_ref().map_or(0, |i| i.tokens());
    let result = match (try_admit(rec, reserve(tokens)), input) {
        (Err(r), Some(input)) if r.kind == LimitKind::Tokens && input.exact().is_none() => {
            let n = input.count("rate_limit").await?;
            try_admit(rec, reserve(n))
        }
        (result, _) => result,
    };
    let admission = result.map_err(|r| {
        metrics::rate_limited(&r.rule);
        ProxyError::RateLimited(r)
    })?;
    rec.holds.admission = Some(admission);
    Ok(())
}

/// Reserves `worst(input)` at every budget that applies, all or nothing. A
/// refusal made with the bound is checked again with the exact count.
pub(super) async fn reserve(
    app: &App,
    snap: &Snapshot,
    rec: &mut RequestRecord,
    model: &str,
    input: &mut Input,
    worst: impl Fn(u64) -> Result<Nanos, ProxyError>,
) -> Result<(), ProxyError> {
    let budgets = &snap.config.budgets;
    let try_reserve = |rec: &RequestRecord, amount: Nanos| {
        let subject = rate::Subject {
            identity: &rec.facts.identity,
            model,
        };
        app.ledger.reserve(budgets, &subject, amount)
    };
    let result = match try_reserve(rec, worst(input.tokens())?) {
        Err(_) if input.exact().is_none() => {
            let n = input.count("budget").await?;
            try_reserve(rec, worst(n)?)
        }
        result => result,
    };
    let hold = result.map_err(|e| {
        metrics::budget_rejected(&e.budget);
        ProxyError::BudgetExhausted(e)
    })?;
    rec.holds.budget = Some(hold);
    Ok(())
}
