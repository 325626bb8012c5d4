//! Charges that cannot be refused: money the provider has already billed
//! (batch results read back), added to every budget that applies even past
//! its limit. Later requests are then refused as usual.

use std::sync::Arc;

use super::{applies, scope_of, threshold, Ledger, Line};
use crate::config::{BudgetRule, Permille};
use crate::limits::rate::Subject;
use crate::pricing::Nanos;

impl Ledger {
    /// Adds each `(subject, amount)` to every budget that applies to it
    /// (an exempt subject's budgets excepted), without checking any limit.
    /// The usage record `then` is written once every charge is durable.
    /// Returns the alert thresholds crossed, as (budget, bucket, permille).
    pub fn force(
        self: &Arc<Self>,
        budgets: &[BudgetRule],
        charges: &[(Subject<'_>, Nanos)],
        then: Vec<u8>,
    ) -> Vec<(String, String, Permille)> {
        let now = (self.clock)();
        let mut crossed = Vec::new();
        let mut lines = Vec::new();
        {
            let mut map = self.lock();
            for (subject, amount) in charges.iter().filter(|(_, n)| *n > 0) {
                for b in budgets.iter().filter(|b| applies(b, subject.model)) {
                    let Some(limit) = b.limit_for(subject) else {
                        continue;
                    };
                    let window = b.window.key(now);
                    let key = self.bucket_for(&map, b, subject, &window);
                    let (bucket, s) = Self::slot(&mut map, &key, &window);
                    let before = s.spent;
                    s.spent = s.spent.saturating_add(*amount);
                    let limit = b.limit_of_bucket(bucket.as_str()).unwrap_or(limit);
                    for &t in &b.alert_permille {
                        let at = threshold(limit, t);
                        if before < at && s.spent >= at {
                            crossed.push((b.name.clone(), bucket.as_str().to_owned(), t));
                        }
                    }
                    lines.push(Line {
                        b: b.name.clone(),
                        s: scope_of(bucket.as_str()).to_owned(),
                        w: window.to_string(),
                        n: Some(*amount),
                        reset: false,
                    });
                }
            }
        }
        let last = lines.len();
        let mut then = Some(then);
        for (i, line) in lines.into_iter().enumerate() {
            let t = if i + 1 == last { then.take() } else { None };
            self.journal.append(line, t, &self.usage);
        }
        if let Some(t) = then {
            self.usage.write_raw(t);
        }
        crossed
    }
}
