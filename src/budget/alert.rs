//! Budget alerts: a warning log, a metric, and (when the budget names one)
//! a JSON POST to a webhook. Webhooks are best effort: sent off the request
//! path, bounded to 5 seconds, failures logged.

use serde::Serialize;

use crate::config::{BudgetRule, Permille};

/// One alert, as logged and as POSTed.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub budget: String,
    pub bucket: String,
    pub threshold: f64,
    pub limit_usd: f64,
}

/// Logs, counts and (if configured) POSTs an alert; `permille` is the
/// threshold crossed, in thousandths of the limit.
pub fn fire(rule: &BudgetRule, bucket: &str, permille: Permille) {
    // Reporting only: the ledger compared integers.
    let threshold = f64::from(permille) / 1000.0;
    let alert = Alert {
        budget: rule.name.clone(),
        bucket: bucket.to_owned(),
        threshold,
        limit_usd: crate::pricing::nanos_to_usd(rule.limit),
    };
    crate::metrics::budget_alert(&alert.budget, permille);
    tracing::warn!(budget = %alert.budget, bucket = %alert.bucket, threshold, "budget alert: {:.0}% of the limit spent", threshold * 100.0);
    let Some(url) = rule.webhook.clone() else {
        return;
    };
    crate::webhook::post(
        url,
        serde_json::to_vec(&alert).unwrap_or_default(),
        "budget alert",
    );
}
