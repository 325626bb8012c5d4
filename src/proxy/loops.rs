//! The loop-detection stage (`[loop_detection]`): the same request again
//! and again from one run, key or user is refused (or flagged) before any
//! routing, counting or reservation work.

use std::time::Instant;

use bytes::Bytes;

use crate::app::{App, Snapshot};
use crate::config::LoopAction;
use crate::error::ProxyError;
use crate::limits::loops::Verdict;
use crate::metrics;
use crate::record::RequestRecord;
use crate::vocab::{bucket_key, Subject};

pub(super) fn check(
    app: &App,
    snap: &Snapshot,
    rec: &mut RequestRecord,
    body: &Bytes,
) -> Result<(), ProxyError> {
    let Some(cfg) = &snap.config.loop_detection else {
        return Ok(());
    };
    let subject = Subject {
        identity: &rec.facts.identity,
        model: &rec.facts.model,
    };
    // `|run=abc`: who sent it; a request without that dimension is not counted.
    let who = bucket_key("", &[cfg.scope], &subject);
    if who.ends_with('=') {
        return Ok(());
    }
    let Some(key) = crate::cache::cache_key(rec.facts.endpoint, &rec.facts.model, &who, "", body)
    else {
        return Ok(());
    };
    match app
        .loops
        .check(key.0, Instant::now(), cfg.max_repeats, cfg.within)
    {
        Verdict::Fresh => Ok(()),
        Verdict::Untracked => {
            metrics::loop_untracked();
            Ok(())
        }
        Verdict::Loop => {
            rec.facts.loop_detected = true;
            metrics::loop_detected(cfg.action.label());
            tracing::warn!(
                request_id = %rec.facts.id,
                sender = %who.trim_start_matches('|'),
                repeats = cfg.max_repeats,
                action = cfg.action.label(),
                "loop detected: the same request again"
            );
            match cfg.action {
                LoopAction::Alert => Ok(()),
                LoopAction::Reject => Err(ProxyError::LoopDetected {
                    repeats: cfg.max_repeats,
                    within_secs: cfg.within.as_secs(),
                    scope: cfg.scope.as_str(),
                }),
            }
        }
    }
}
