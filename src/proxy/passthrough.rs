//! Paths that name no model (files, batches, `GET /v1/models` when the
//! config cannot answer it, …): a virtual key reaches only the families it
//! is allowed and the objects it created; the request goes to the first
//! provider speaking the client's API, once.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;

use crate::app::{App, Snapshot};
use crate::attempt;
use crate::auth::Credential;
use crate::batch::{self, Format};
use crate::error::ProxyError;
use crate::ownership;
use crate::path::Route as Target;
use crate::record::RequestRecord;
use crate::stream::observe::Observer;

use super::answer::{owned_answer, upstream_answer};
use super::stages::{deadline, owned_passthrough, passthrough_allowed, passthrough_group};
use super::{holds, Answer};

pub(super) async fn serve(
    app: &App,
    snap: &Snapshot,
    parts: &Parts,
    target: &Target,
    cred: &Credential,
    body: Bytes,
    rec: &mut RequestRecord,
) -> Result<Answer, ProxyError> {
    // `GET /v1/models` (and `/v1/models/{id}`): answered by Sluice from
    // config and the providers' own lists.
    if let Some(list) =
        super::models::answer(app, snap, target, &parts.method, rec.facts.shape, cred).await
    {
        return Ok(Answer::Local(list?, Box::default()));
    }
    if let Some(family) = target.family {
        passthrough_allowed(snap, cred, family, &body)?;
    }
    // Ownership: a virtual key reaches only the objects it created, and
    // never lists a family (the provider's list holds every key's).
    let owner = owned_passthrough(app, cred, &target.path, parts, &body)?;
    // Batch results read back by the key that created the batch.
    let results = owner
        .as_ref()
        .and_then(|_| batch::read_back(&target.path, &parts.method))
        .filter(|(format, id)| *format == Format::Anthropic || app.owners.is_batch_output(id));
    let group = passthrough_group(snap, &app.deployments, rec.facts.shape, cred)
        .ok_or_else(|| ProxyError::NotFound(target.path.clone()))?;
    holds::take(app, snap, rec, "", None, |_| 0, holds::NO_BUDGET).await?;
    if results.is_some() && rec.holds.owed_to.is_none() {
        // In a fleet, what the results cost is owed to the shared budgets.
        rec.holds.owed_to = app.fleet.clone();
    }
    let owner = owner.filter(|_| ownership::records_answer(&target.path, &parts.method));
    let call = attempt::Call {
        snap,
        registry: &app.deployments,
        method: &parts.method,
        path_and_query: &target.path_and_query(parts.uri.query()),
        client_headers: &parts.headers,
        cred,
        body,
        client_model: None,
        endpoint: rec.facts.endpoint,
        shape: rec.facts.shape,
        deadline: deadline(rec, snap, &group),
        reads_answer: owner.is_some() || results.is_some(),
        fault: None,
        trace: &rec.trace,
        include_usage: false,
    };
    let mut answer =
        attempt::run(&call, VecDeque::from([group]), &mut rec.outcome.upstream).await?;
    if let Some(key) = owner {
        answer = owned_answer(answer, rec, &app.owners, &key).await?;
    }
    let answer = upstream_answer(answer, rec, snap, false, None).await?;
    Ok(match results {
        Some((format, id)) => priced_results(answer, app, snap, format, id),
        None => answer,
    })
}

/// Watches a successful batch results answer as it streams to the client:
/// each succeeded request is priced at the batch rate and charged once
/// (see [`crate::batch`]). A compressed answer cannot be read: it passes
/// uncharged, with a warning.
fn priced_results(answer: Answer, app: &App, snap: &Snapshot, format: Format, id: &str) -> Answer {
    let Answer::Upstream(mut up) = answer else {
        return answer;
    };
    if !up.head.status.is_success() {
        return Answer::Upstream(up);
    }
    if up
        .head
        .headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() != b"identity")
    {
        tracing::warn!(object = id, "batch results came compressed; not charged");
        return Answer::Upstream(up);
    }
    let prices = snap.config.prices.clone();
    let pricer: batch::Pricer = Arc::new(move |model: &str| prices.get(model));
    let marks: Arc<dyn batch::Marks> = app.owners.clone();
    let tally = batch::Tally::new(format, id, marks, pricer);
    up.tap.observer = Observer::Batch(Box::new(tally));
    Answer::Upstream(up)
}
