//! What a request reserves before it goes upstream: a slot under every rate
//! limit that applies, and its worst-case cost at every budget that applies
//! (all or nothing). Both start from the input's upper bound and ask for the
//! exact count only when the bound would refuse (see `count`).
//!
//! Embedded state reserves in this process; fleet state (Redis) reserves
//! both in one round trip, and while Redis is away the `on_unavailable`
//! policy refuses or falls back to this process's scaled-down limits.

use crate::app::{App, Snapshot};
use crate::config::{BudgetRule, OnUnavailable, RateRule};
use crate::error::ProxyError;
use crate::fleet::{self, Fleet, Refusal};
use crate::limits::rate;
use crate::metrics;
use crate::pricing::Nanos;
use crate::record::RequestRecord;
use crate::vocab::LimitKind;

use super::count::Input;

/// `take`'s `worst` for a request no budget prices (passthrough).
pub(super) const NO_BUDGET: Option<fn(u64) -> Result<Nanos, ProxyError>> = None;

/// Reserves the request under every rate limit (`reserve(input)` tokens)
/// and, when it is priced, `worst(input)` at every budget.
pub(super) async fn take(
    app: &App,
    snap: &Snapshot,
    rec: &mut RequestRecord,
    model: &str,
    mut input: Option<&mut Input>,
    reserve: impl Fn(u64) -> u64,
    worst: Option<impl Fn(u64) -> Result<Nanos, ProxyError>>,
) -> Result<(), ProxyError> {
    let (rules, budgets) = match &app.fleet {
        None => (&snap.config.rate_limits, &snap.config.budgets),
        Some(fleet) => {
            match take_fleet(
                fleet,
                snap,
                rec,
                model,
                input.as_deref_mut(),
                &reserve,
                &worst,
            )
            .await
            {
                Ok(()) => return Ok(()),
                Err(ProxyError::StateUnavailable) => match (&snap.local_limits, fleet.policy) {
                    (Some(local), OnUnavailable::FailOpen) => {
                        metrics::state_fail_open();
                        rec.holds.owed_to = Some(fleet.clone());
                        (&local.rate_limits, &local.budgets)
                    }
                    _ => return Err(ProxyError::StateUnavailable),
                },
                Err(e) => return Err(e),
            }
        }
    };
    admit(app, rules, rec, model, input.as_deref_mut(), &reserve).await?;
    if let (Some(worst), Some(input)) = (worst, input) {
        reserve_budgets(app, budgets, rec, model, input, worst).await?;
    }
    Ok(())
}

/// One round trip to Redis; again with the exact count when the bound was
/// refused. `Err(StateUnavailable)` means the policy decides.
async fn take_fleet(
    fleet: &std::sync::Arc<Fleet>,
    snap: &Snapshot,
    rec: &mut RequestRecord,
    model: &str,
    mut input: Option<&mut Input>,
    reserve: &impl Fn(u64) -> u64,
    worst: &Option<impl Fn(u64) -> Result<Nanos, ProxyError>>,
) -> Result<(), ProxyError> {
    let ttl = rec
        .facts
        .deadline
        .saturating_duration_since(tokio::time::Instant::now())
        + fleet::RESERVATION_GRACE;
    let mut tokens = input.as_ref().map_or(0, |i| i.tokens());
    loop {
        let cost = worst.as_ref().map(|w| w(tokens)).transpose()?;
        let subject = rate::Subject {
            identity: &rec.facts.identity,
            model,
        };
        let ask = fleet::Ask {
            id: &rec.facts.id,
            subject: &subject,
            rules: &snap.config.rate_limits,
            budgets: &snap.config.budgets,
            tokens: reserve(tokens),
            cost,
            ttl,
        };
        let refusal = match fleet.take(&ask).await {
            Ok(hold) => {
                rec.holds.fleet = hold;
                return Ok(());
            }
            Err(r) => r,
        };
        let by_bound = input.as_ref().is_some_and(|i| i.exact().is_none());
        match refusal {
            Refusal::Rate(r) if by_bound && r.kind == LimitKind::Tokens => {}
            Refusal::Budget(_) if by_bound => {}
            Refusal::Rate(r) => {
                metrics::rate_limited(&r.rule);
                return Err(ProxyError::RateLimited(r));
            }
            Refusal::Budget(e) => {
                metrics::budget_rejected(&e.budget);
                return Err(ProxyError::BudgetExhausted(e));
            }
            Refusal::Unavailable => return Err(ProxyError::StateUnavailable),
        }
        if let Some(input) = input.as_deref_mut() {
            tokens = input.count("fleet").await?;
        }
    }
}

/// Admits the request under the rate limits, reserving `reserve(input)`
/// tokens, or refuses it. A tokens-per-minute refusal made with the bound is
/// checked again with the exact count.
pub(super) async fn admit(
    app: &App,
    rules: &[RateRule],
    rec: &mut RequestRecord,
    model: &str,
    input: Option<&mut Input>,
    reserve: impl Fn(u64) -> u64,
) -> Result<(), ProxyError> {
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
async fn reserve_budgets(
    app: &App,
    budgets: &[BudgetRule],
    rec: &mut RequestRecord,
    model: &str,
    input: &mut Input,
    worst: impl Fn(u64) -> Result<Nanos, ProxyError>,
) -> Result<(), ProxyError> {
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
