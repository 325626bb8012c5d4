//! Money: prices, costs, and budgets that cannot be overspent.
//!
//! Every request under a budget reserves its worst-case cost (input at full
//! price + its whole output cap) at every budget that applies, all or
//! nothing, under one lock; when it ends the reservation is settled to the
//! actual cost. Settled spend is journaled to the embedded state file with
//! group commit (one fsync per batch) before the request's usage record is
//! written, so a charge that shows in the usage log survives `kill -9`.

pub mod alert;
pub mod journal;
pub mod ledger;
pub mod pricing;
pub mod spend;
pub mod window;

use crate::config::BudgetRule;
use crate::route::in_filter;

/// Whether a budget covers requests for `model`.
pub fn applies(b: &BudgetRule, model: &str) -> bool {
    in_filter(b.models.as_ref(), model)
}

/// Whether any budget covers requests for `model`.
pub fn applies_any(budgets: &[BudgetRule], model: &str) -> bool {
    budgets.iter().any(|b| applies(b, model))
}
