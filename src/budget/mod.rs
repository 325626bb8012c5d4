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
pub mod spend;

pub use crate::config::{applies, applies_any};
