//! What this replica last saw of each fleet budget bucket's use, from its
//! own take and settle replies: enough to decide budget downgrades without
//! a second round trip (as fresh as this replica's last request to that
//! bucket). Bounded: past `MAX_SEEN` buckets the view starts afresh.

use std::sync::Mutex;

use hashbrown::HashMap;

use crate::budget::ledger::reached;
use crate::config::{applies, BudgetAction, BudgetRule};
use crate::limits::rate::Subject;
use crate::pricing::Nanos;
use crate::vocab::bucket_key;
use crate::window::WindowKey;

/// The most buckets remembered.
pub const MAX_SEEN: usize = 100_000;

#[derive(Debug, Default)]
pub struct Seen {
    used: Mutex<HashMap<String, (WindowKey, Nanos)>>,
}

impl Seen {
    /// `bucket` had `used` (spent + reserved) in `window`.
    pub fn note(&self, bucket: &str, window: WindowKey, used: Nanos) {
        let mut map = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SEEN && !map.contains_key(bucket) {
            map.clear();
        }
        map.insert(bucket.to_owned(), (window, used));
    }

    /// Buckets remembered.
    pub fn len(&self) -> usize {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The model to downgrade to, when a downgrade budget is past its
    /// threshold as last seen.
    pub fn downgrade(
        &self,
        budgets: &[BudgetRule],
        subject: &Subject<'_>,
        now: u64,
    ) -> Option<String> {
        let map = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return None;
        }
        budgets
            .iter()
            .filter(|b| b.action == BudgetAction::Downgrade && applies(b, subject.model))
            .find(|b| {
                let Some(limit) = b.limit_for(subject) else {
                    return false;
                };
                let bucket = bucket_key(&b.name, &b.scope, subject);
                map.get(&bucket)
                    .filter(|(w, _)| *w == b.window.key(now))
                    .is_some_and(|(_, used)| reached(*used, b.downgrade_permille, limit))
            })
            .and_then(|b| b.downgrade_to.clone())
    }
}
