//! Config for spend: budgets, prices and the embedded state file.

use super::raw::RawConfig;
use super::{Dim, ModelRule, Overrides, ProviderConfig, Validator};
use crate::glob::in_filter;
use crate::pricing::{usd_to_nanos, Nanos, PriceTable};
use crate::vocab::Subject;
use crate::window::Window;

/// A share in thousandths: budget thresholds are compared in integers
/// against nano-dollar amounts, never as floats.
pub type Permille = u32;

/// The largest `alert_at` accepted: 1000 × the limit (alert-only budgets do
/// not stop spend, so thresholds past 100% are meaningful).
const MAX_ALERT_FRACTION: f64 = 1000.0;

/// A fraction of the limit as written in the config (`0.8`), in permille,
/// rounded to the nearest thousandth; `None` unless finite and within
/// `0..=max`.
fn to_permille(fraction: f64, max: f64) -> Option<Permille> {
    (fraction.is_finite() && (0.0..=max).contains(&fraction))
        .then(|| (fraction * 1000.0).round() as Permille)
}

/// What happens when a budget is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetAction {
    /// 429 `insufficient_quota`.
    Reject,
    /// Route to a cheaper model past `downgrade_at`; reject at the limit.
    Downgrade,
    /// Metric, log line (and nothing else) at each `alert_at` threshold.
    Alert,
}

/// One budget: a spend limit per window for each combination of `scope`
/// values (an empty scope is one global budget).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRule {
    pub name: String,
    pub scope: Vec<Dim>,
    pub window: Window,
    pub limit: Nanos,
    pub action: BudgetAction,
    pub downgrade_to: Option<String>,
    /// Share of the limit (in permille) from which requests are downgraded
    /// (`downgrade_at`).
    pub downgrade_permille: Permille,
    /// Shares of the limit (in permille) at which an alert fires (`alert_at`).
    pub alert_permille: Vec<Permille>,
    /// Only requests for these public models (globs); `None` = all.
    pub models: Option<Vec<String>>,
    /// Where alerts are POSTed (JSON), if anywhere.
    pub webhook: Option<http::Uri>,
    /// Scope values with their own limit (`None`: exempt).
    pub overrides: Overrides<Option<Nanos>>,
}

impl BudgetRule {
    /// The limit for a subject's bucket (`None`: exempt).
    pub fn limit_for(&self, subject: &Subject<'_>) -> Option<Nanos> {
        match self.overrides.for_subject(&self.scope, subject) {
            Some(o) => *o,
            None => Some(self.limit),
        }
    }

    /// The limit of a bucket by its name (`None`: exempt).
    pub fn limit_of_bucket(&self, bucket: &str) -> Option<Nanos> {
        match self.overrides.for_bucket(bucket) {
            Some(o) => *o,
            None => Some(self.limit),
        }
    }
}

impl Validator<'_> {
    pub(super) fn budgets(
        &mut self,
        raw: &RawConfig,
        models: &[ModelRule],
        providers: &[ProviderConfig],
        prices: &PriceTable,
    ) -> Vec<BudgetRule> {
        let mut out: Vec<BudgetRule> = Vec::new();
        for (i, b) in raw.budgets.iter().enumerate() {
            let field = format!("budgets[{i}]");
            let scope = self.dims(&field, &b.scope);
            let window = Window::parse(&b.window).unwrap_or_else(|| {
                self.err(
                    &format!("{field}.window"),
                    format!(
                        "unknown window {:?} (expected hour|day|week|month|lifetime)",
                        b.window
                    ),
                );
                Window::Day
            });
            if !(b.limit_usd > 0.0 && b.limit_usd.is_finite()) {
                self.err(&format!("{field}.limit_usd"), "must be greater than zero");
            }
            let action = match b.action.as_deref() {
                None | Some("reject") => BudgetAction::Reject,
                Some("downgrade") => BudgetAction::Downgrade,
                Some("alert") => BudgetAction::Alert,
                Some(other) => {
                    self.err(
                        &format!("{field}.action"),
                        format!("unknown action {other:?} (expected reject|downgrade|alert)"),
                    );
                    BudgetAction::Reject
                }
            };
            if action == BudgetAction::Downgrade {
                match &b.downgrade_to {
                    None => self.err(
                        &format!("{field}.downgrade_to"),
                        "required for action = \"downgrade\"",
                    ),
                    Some(m)
                        if !models
                            .iter()
                            .any(|r| crate::glob::glob_match(&r.pattern, m)) =>
                    {
                        self.err(
                            &format!("{field}.downgrade_to"),
                            format!("no [[models]] entry serves {m:?}"),
                        )
                    }
                    Some(_) => {}
                }
            }
            let downgrade_permille = to_permille(b.downgrade_at.unwrap_or(0.8), 1.0)
                .unwrap_or_else(|| {
                    self.err(&format!("{field}.downgrade_at"), "must be between 0 and 1");
                    800
                });
            let mut alert_permille = Vec::new();
            for (j, &t) in b
                .alert_at
                .as_deref()
                .unwrap_or(&[0.5, 0.8, 1.0])
                .iter()
                .enumerate()
            {
                match to_permille(t, MAX_ALERT_FRACTION).filter(|&p| p > 0) {
                    Some(p) => alert_permille.push(p),
                    None => self.err(
                        &format!("{field}.alert_at[{j}]"),
                        format!(
                            "must be a fraction of the limit above 0 and at most \
                             {MAX_ALERT_FRACTION} (at least 0.001)"
                        ),
                    ),
                }
            }
            let name = b.name.clone().unwrap_or_else(|| format!("budget-{i}"));
            if out.iter().any(|o| o.name == name) {
                self.err(
                    &format!("{field}.name"),
                    format!("duplicate budget name {name:?}"),
                );
            }
            let webhook = b
                .webhook
                .as_deref()
                .and_then(|w| match w.parse::<http::Uri>() {
                    Ok(u)
                        if matches!(u.scheme_str(), Some("http") | Some("https"))
                            && u.authority().is_some() =>
                    {
                        Some(u)
                    }
                    _ => {
                        self.err(
                            &format!("{field}.webhook"),
                            format!("invalid URL {w:?} (expected http:// or https://)"),
                        );
                        None
                    }
                });
            let overrides = self.budget_overrides(&field, b.overrides.as_ref(), &scope);
            out.push(BudgetRule {
                overrides,
                webhook,
                name,
                scope,
                window,
                limit: usd_to_nanos(b.limit_usd),
                action,
                downgrade_to: b.downgrade_to.clone(),
                downgrade_permille,
                alert_permille,
                models: b.models.clone(),
            });
        }
        // A budget in force on a model with no price would let it run free.
        for (i, m) in models.iter().enumerate() {
            if m.pattern.contains('*') || !applies_any(&out, &m.pattern) {
                continue;
            }
            for d in &m.deployments {
                let upstream = d.upstream_model.as_deref().unwrap_or(&m.pattern);
                if prices.get(upstream).is_none() {
                    let provider = providers.get(d.provider).map_or("?", |p| p.name.as_str());
                    self.err(
                        &format!("models[{i}]"),
                        format!(
                            "no price for {upstream:?} on {provider:?}, and a budget applies \
                             to {:?} (add a [[pricing]] entry)",
                            m.pattern
                        ),
                    );
                }
            }
        }
        out
    }
}

/// Whether a budget covers requests for `model`.
pub fn applies(b: &BudgetRule, model: &str) -> bool {
    in_filter(b.models.as_ref(), model)
}

/// Whether any budget covers requests for `model`.
pub fn applies_any(budgets: &[BudgetRule], model: &str) -> bool {
    budgets.iter().any(|b| applies(b, model))
}
