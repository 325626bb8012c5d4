//! The answer of a deployment of the other API, translated back into the
//! client's: usage and the answer's facts are observed in the provider's own
//! shape (so costs are the answering provider's), then a JSON answer is
//! translated whole (it is read in full anyway), a stream event by event in
//! the tap, and an error into the status and body the client's SDK expects
//! (the provider's `retry-after` and `x-should-retry` kept).
//!
//! The response cache stores what the client got (its own API's bytes), so
//! a hit replays it like any other entry.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde_json::Value;

use crate::app::Snapshot;
use crate::attempt::{self, Crossing};
use crate::body::TapConfig;
use crate::error::ProxyError;
use crate::record::RequestRecord;
use crate::stream::observe::Observer;
use crate::stream::translate::SseTranslator;

use super::answer::{idle_of, local, observer_for, read_answer, ReadLimits};
use super::{Answer, UpstreamAnswer};

/// The client's answer from what a translated request's attempts returned.
pub(super) async fn answer(
    answer: attempt::Answered,
    crossing: &Crossing,
    rec: &mut RequestRecord,
    snap: &Snapshot,
    decoding: super::bedrock::Decoding,
) -> Result<Answer, ProxyError> {
    rec.facts.breakpoints = crossing.breakpoints as u32;
    let bounds = &snap.config.server.bounds;
    let limits = ReadLimits {
        max: bounds.max_response_body,
        idle: idle_of(snap, rec),
        deadline: rec.facts.deadline,
    };
    let (head, body) = match answer {
        attempt::Answered::Buffered(head, bytes) => {
            return Ok(Answer::Local(error(head, &bytes, crossing), Box::default()));
        }
        attempt::Answered::Stream(resp) => resp.into_parts(),
    };
    if !head.status.is_success() {
        let bytes = read_answer(body, &head.headers, limits, rec).await?;
        return Ok(Answer::Local(error(head, &bytes, crossing), Box::default()));
    }
    let across = crossing.across();
    let mut observer = observer_for(across.provider().endpoint(), &head, false)
        .with_max_event(bounds.max_sse_event);
    if rec.facts.shadow.is_some() {
        observer = observer.with_text();
    }
    match observer {
        Observer::Json { .. } => {
            let bytes = read_answer(body, &head.headers, limits, rec).await?;
            let bytes = decoding.json(bytes, rec)?;
            rec.first_byte(Instant::now());
            observer.observe(&bytes);
            let translated =
                json(&bytes, crossing).map_err(|detail| ProxyError::UpstreamConnect {
                    provider: rec.outcome.upstream.provider.to_string(),
                    detail,
                })?;
            if let Some(c) = rec.holds.capture.take() {
                c.finish_json(translated.clone());
            }
            Ok(Answer::Local(
                local(head, translated),
                Box::new(observer.finish()),
            ))
        }
        Observer::None => Err(ProxyError::UpstreamConnect {
            provider: rec.outcome.upstream.provider.to_string(),
            detail: "an answer that is neither JSON nor an event stream cannot be translated"
                .into(),
        }),
        _ => {
            let max = bounds.max_sse_event;
            let translator = SseTranslator::new(across, crossing.plan, unix_now(), max);
            Ok(Answer::Upstream(Box::new(UpstreamAnswer {
                head,
                body,
                tap: TapConfig {
                    observer,
                    idle: limits.idle,
                    deadline: limits.deadline,
                    capture: rec.holds.capture.take(),
                    translator: Some(translator),
                    decoder: decoding.stream,
                },
            })))
        }
    }
}

/// A successful JSON answer in the client's API.
fn json(bytes: &[u8], crossing: &Crossing) -> Result<Bytes, String> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("the provider's answer is not JSON: {e}"))?;
    let out = crossing
        .across()
        .answer(&value, crossing.plan, unix_now())
        .map_err(|r| format!("the provider's answer cannot be translated: {}", r.0))?;
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

/// A provider's error in the client's API, its headers kept (minus the
/// length and type of the old body).
fn error(
    head: http::response::Parts,
    bytes: &[u8],
    crossing: &Crossing,
) -> http::Response<crate::body::ProxyBody> {
    let status = head.status;
    let reply = crossing.across().error(status.as_u16(), bytes);
    let mut resp = local(head, Bytes::from(reply.body));
    *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(status);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
