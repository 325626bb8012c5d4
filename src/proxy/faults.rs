//! The chaos stage: which fault this request gets, once it is routed (so a
//! fault can match the model) and before the cache, limits and budgets (an
//! injected failure costs nothing and holds nothing, as a provider's
//! failure would not).

use std::time::Duration;

use http::{HeaderMap, Response};

use crate::app::{App, Snapshot};
use crate::body::{ProxyBody, ResetConnection};
use crate::config::{FaultAt, FaultKind};
use crate::fault::{self, Hit, Subject};
use crate::record::RequestRecord;

use super::Answer;

/// What the faults do to this request.
#[derive(Default)]
pub(super) struct Chaos {
    /// The client gets this instead of an upstream answer.
    pub answer: Option<Answer>,
    /// Every upstream attempt rolls for this one.
    pub upstream: Option<Hit>,
}

/// Picks this request's faults: at the client's edge (a status or a reset
/// answers now; a delay waits now; a stream fault is noted for the
/// response body) and upstream (handed to the attempt loop).
pub(super) async fn pick(
    app: &App,
    snap: &Snapshot,
    headers: &HeaderMap,
    rec: &mut RequestRecord,
    upstream_model: &str,
) -> Chaos {
    let config = &snap.config.faults;
    if config.is_empty() && app.faults.is_idle() {
        return Chaos::default();
    }
    let subject = Subject {
        identity: &rec.facts.identity,
        model: &rec.facts.model,
        upstream_model,
        headers,
        stream: rec.facts.stream,
    };
    let now = fault::now_secs();
    let client = app
        .faults
        .choose(config, &subject, FaultAt::Client, now, fastrand::f64);
    let upstream = app
        .faults
        .choose(config, &subject, FaultAt::Upstream, now, fastrand::f64);
    let mut chaos = Chaos {
        answer: None,
        upstream,
    };
    let Some(hit) = client else {
        return chaos;
    };
    hit.counted();
    tracing::debug!(request_id = %rec.facts.id, fault = %hit.name, kind = hit.kind.label(), "fault injected");
    rec.facts.fault = Some(hit.name.clone());
    match hit.kind {
        FaultKind::Delay(d) => delay(d).await,
        FaultKind::Status {
            status,
            retry_after,
        } => {
            let resp = fault::status_response(
                status,
                retry_after,
                rec.facts.shape,
                &rec.facts.model,
                &rec.facts.id,
            );
            chaos.answer = Some(Answer::Local(resp.map(ProxyBody::full), Box::default()));
        }
        FaultKind::Reset { after: 0 } => {
            let mut resp = Response::new(ProxyBody::empty());
            resp.extensions_mut().insert(ResetConnection);
            chaos.answer = Some(Answer::Local(resp, Box::default()));
        }
        kind => rec.facts.stream_fault = Some(kind),
    }
    chaos
}

async fn delay(d: Duration) {
    tokio::time::sleep(d).await;
}

/// The response body with the request's stream fault applied, when the
/// answer is a successful event stream (an error answer is left alone).
pub(super) fn spoil(resp: Response<ProxyBody>, kind: Option<FaultKind>) -> Response<ProxyBody> {
    let Some(kind) = kind else {
        return resp;
    };
    let sse = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !resp.status().is_success() || !sse {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // Events are added or cut: any declared length is wrong now.
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        ProxyBody::Faulty(Box::new(crate::body::FaultyBody::new(body, kind))),
    )
}
