//! Paths that name no model (files, batches, `GET /v1/models` when the
//! config cannot answer it, …): a virtual key reaches only the families it
//! is allowed and the objects it created; the request goes to the first
//! provider speaking the client's API, once.

use std::collections::VecDeque;

use bytes::Bytes;
use http::request::Parts;

use crate::app::{App, Snapshot};
use crate::attempt;
use crate::auth::Credential;
use crate::error::ProxyError;
use crate::ownership;
use crate::path::Route as Target;
use crate::record::RequestRecord;

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
    let group = passthrough_group(snap, &app.deployments, rec.facts.shape, cred)
        .ok_or_else(|| ProxyError::NotFound(target.path.clone()))?;
    holds::take(app, snap, rec, "", None, |_| 0, holds::NO_BUDGET).await?;
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
        reads_answer: owner.is_some(),
        fault: None,
        trace: &rec.trace,
        include_usage: false,
    };
    let mut answer =
        attempt::run(&call, VecDeque::from([group]), &mut rec.outcome.upstream).await?;
    if let Some(key) = owner {
        answer = owned_answer(answer, rec, &app.owners, &key).await?;
    }
    upstream_answer(answer, rec, snap, false, None).await
}
