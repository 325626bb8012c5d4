//! Building the client's answer: from an upstream response or from the
//! cache (`GET /v1/models` is answered in `models`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Response};
use http_body_util::{BodyExt, Limited};

use crate::app::Snapshot;
use crate::attempt;
use crate::body::{ProxyBody, TapConfig};
use crate::cache;
use crate::error::ProxyError;
use crate::headers::{client_response_headers, value};
use crate::ownership::{answer_ids, IdSink, Owners};
use crate::protocol::Protocol;
use crate::record::{CacheState, RequestRecord};
use crate::sniff::{Endpoint, Sniffed};
use crate::stream::observe::{Observed, Observer};

use super::{Answer, UpstreamAnswer};

/// The answer for the client from what the attempt loop returned. A
/// successful non-streamed body is read in full (bounded by the deadline) so
/// its cost can go in `x-sluice-cost-usd`; streams go through the tap. With
/// `ids`, the stored object the answer names is recorded as the key's before
/// the client can see its id.
pub(super) async fn upstream_answer(
    answer: attempt::Answered,
    rec: &mut RequestRecord,
    snap: &Snapshot,
    inject_usage: bool,
    ids: Option<IdSink>,
) -> Result<Answer, ProxyError> {
    // A Bedrock answer is read as Anthropic's from here on.
    let (answer, mut decoding) = match super::bedrock::answered_by_bedrock(snap, rec) {
        Some(api) => {
            let limits = ReadLimits {
                max: snap.config.server.bounds.max_response_body,
                idle: idle_of(snap, rec),
                deadline: rec.facts.deadline,
            };
            super::bedrock::as_anthropic(answer, api, rec, limits).await?
        }
        None => (answer, super::bedrock::Decoding::default()),
    };
    if let Some(crossing) = rec.outcome.upstream.crossing.clone() {
        return super::crossed::answer(answer, &crossing, rec, snap, decoding).await;
    }
    match answer {
        attempt::Answered::Buffered(head, bytes) => {
            Ok(Answer::Local(local(head, bytes), Box::default()))
        }
        attempt::Answered::Stream(resp) => {
            let (head, body) = resp.into_parts();
            let bounds = &snap.config.server.bounds;
            let mut observer = observer_for(rec.facts.endpoint, &head, inject_usage)
                .with_max_event(bounds.max_sse_event);
            let idle = idle_of(snap, rec);
            if rec.facts.shadow.is_some() {
                // A shadow compares its answer with this one's text.
                observer = observer.with_text();
            }
            if let Some(sink) = ids.clone().filter(|_| head.status.is_success()) {
                observer = observer.with_ids(sink);
            }
            if matches!(observer, Observer::Json { .. }) && head.status.is_success() {
                let limits = ReadLimits {
                    max: bounds.max_response_body,
                    idle,
                    deadline: rec.facts.deadline,
                };
                let bytes = read_answer(body, &head.headers, limits, rec).await?;
                let bytes = decoding.json(bytes, rec)?;
                rec.first_byte(Instant::now());
                if let Some(sink) = &ids {
                    if let Some(id) = answer_ids(&bytes).first() {
                        sink.owners.record(id, &sink.key);
                    }
                }
                observer.observe(&bytes);
                if let Some(c) = rec.holds.capture.take() {
                    c.finish_json(bytes.clone());
                }
                let observed = observer.finish();
                return Ok(Answer::Local(local(head, bytes), Box::new(observed)));
            }
            Ok(Answer::Upstream(Box::new(UpstreamAnswer {
                head,
                body,
                tap: TapConfig {
                    observer,
                    idle,
                    deadline: rec.facts.deadline,
                    capture: rec.holds.capture.take(),
                    translator: None,
                    decoder: decoding.stream.take(),
                },
            })))
        }
    }
}

/// The client's complete answer: `bytes` under the provider's status and
/// headers.
pub(super) fn local(head: http::response::Parts, bytes: Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(bytes));
    *resp.status_mut() = head.status;
    *resp.headers_mut() = client_response_headers(head.headers, false);
    resp
}

/// The idle timeout of the provider that answered.
pub(super) fn idle_of(snap: &Snapshot, rec: &RequestRecord) -> Duration {
    snap.upstreams
        .iter()
        .find(|u| u.name == rec.outcome.upstream.provider)
        .map_or(snap.config.server.drain_timeout, |u| u.timeouts.idle)
}

/// An upstream body read in full within `limits`; what went wrong as the
/// client's error.
pub(super) async fn read_answer<B>(
    body: B,
    headers: &http::HeaderMap,
    limits: ReadLimits,
    rec: &RequestRecord,
) -> Result<Bytes, ProxyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let provider = || rec.outcome.upstream.provider.to_string();
    read_bounded(body, headers, limits)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge => ProxyError::UpstreamBodyTooLarge {
                provider: provider(),
                limit: limits.max,
            },
            ReadError::Failed(e) => ProxyError::UpstreamConnect {
                provider: provider(),
                detail: format!("response body failed: {e}"),
            },
            ReadError::Idle => ProxyError::UpstreamTimeout {
                provider: provider(),
                phase: "idle",
            },
            ReadError::Total => ProxyError::UpstreamTimeout {
                provider: provider(),
                phase: "total",
            },
        })
}

/// Bounds on reading an upstream body in full.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadLimits {
    /// Most bytes.
    pub max: usize,
    /// Longest wait for the next chunk.
    pub idle: Duration,
    /// When the whole request must be over.
    pub deadline: tokio::time::Instant,
}

/// Why a body could not be read in full.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReadError {
    TooLarge,
    Idle,
    Total,
    Failed(String),
}

/// Reads a whole body: at most `max` bytes (a larger declared length is
/// refused before reading), no gap between chunks longer than `idle`, done
/// by `deadline`.
pub(super) async fn read_bounded<B>(
    mut body: B,
    headers: &http::HeaderMap,
    limits: ReadLimits,
) -> Result<Bytes, ReadError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    loop {
        let next = tokio::time::Instant::now() + limits.idle;
        let (wait, on_timeout) = if next < limits.deadline {
            (next, ReadError::Idle)
        } else {
            (limits.deadline, ReadError::Total)
        };
        let frame = match tokio::time::timeout_at(wait, body.frame()).await {
            Err(_) => return Err(on_timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ReadError::Failed(e.to_string())),
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            len = len.saturating_add(data.len());
            if len > limits.max {
                return Err(ReadError::TooLarge);
            }
            chunks.push(data);
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    })
}

/// Largest passthrough answer read to record the ids it gives its caller.
const MAX_OWNED_ANSWER: usize = 1 << 20;

/// A successful JSON answer to a request that gives its caller objects (a
/// creation, a completed upload, a batch with its output files): read in
/// full (at most 1 MiB, within the deadline) and its ids recorded as the
/// key's before the client sees them.
pub(super) async fn owned_answer(
    answer: attempt::Answered,
    rec: &RequestRecord,
    owners: &Owners,
    key: &str,
) -> Result<attempt::Answered, ProxyError> {
    let attempt::Answered::Stream(resp) = answer else {
        return Ok(answer);
    };
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // Asked for uncompressed; a provider that compresses anyway leaves its
    // ids unrecorded (unreachable: fail closed).
    let encoded = resp
        .headers()
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() != b"identity");
    if !resp.status().is_success() || !json || encoded {
        return Ok(attempt::Answered::Stream(resp));
    }
    let (head, body) = resp.into_parts();
    let read = tokio::time::timeout_at(
        rec.facts.deadline,
        Limited::new(body, MAX_OWNED_ANSWER).collect(),
    )
    .await;
    let bytes = match read {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            let detail = if e.is::<http_body_util::LengthLimitError>() {
                format!("answer over {MAX_OWNED_ANSWER} bytes; Sluice reads it to record who owns its objects")
            } else {
                format!("response body failed: {e}")
            };
            return Err(ProxyError::UpstreamConnect {
                provider: rec.outcome.upstream.provider.to_string(),
                detail,
            });
        }
        Err(_) => {
            return Err(ProxyError::UpstreamTimeout {
                provider: rec.outcome.upstream.provider.to_string(),
                phase: "total",
            })
        }
    };
    owners.record_answer(&bytes, key);
    Ok(attempt::Answered::Buffered(head, bytes))
}

/// A cached answer in the form the client asked for: JSON, or replayed as
/// SSE (with the usage chunk when the client asked for it). `None` when the
/// entry cannot be replayed that way (treated as a miss).
pub(super) fn cache_hit(
    hit: &cache::CachedResponse,
    s: &Sniffed,
    rec: &mut RequestRecord,
) -> Option<Answer> {
    let (body, content_type) = if s.stream {
        let frames = Protocol::of(hit.endpoint).replay(&hit.body, s.include_usage)?;
        (ProxyBody::Frames(frames.into()), "text/event-stream")
    } else {
        (ProxyBody::full(hit.body.clone()), hit.content_type.as_str())
    };
    rec.outcome.cache = CacheState::Hit;
    rec.outcome.upstream.model = hit.model.clone();
    rec.first_byte(Instant::now());
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, value(content_type));
    let observed = Observed {
        usage: hit.usage,
        complete: true,
        answer: crate::stream::observe::answer::of_json(&hit.body),
        ..Observed::default()
    };
    Some(Answer::Local(resp, Box::new(observed)))
}

pub(super) fn observer_for(
    endpoint: Endpoint,
    head: &http::response::Parts,
    injected: bool,
) -> Observer {
    let protocol = Protocol::of(endpoint);
    let anthropic = protocol.anthropic();
    let content_type = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("text/event-stream") {
        Observer::sse(anthropic, injected)
    } else if protocol.reads_answers() {
        Observer::json(anthropic)
    } else {
        Observer::None
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::stream::{self, StreamExt};
    use http::HeaderValue;
    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;

    type Chunks = Vec<Result<Frame<Bytes>, Infallible>>;

    fn chunks(parts: &[&'static str]) -> Chunks {
        parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect()
    }

    fn limits(max: usize, idle_s: u64, total_s: u64) -> ReadLimits {
        ReadLimits {
            max,
            idle: Duration::from_secs(idle_s),
            deadline: tokio::time::Instant::now() + Duration::from_secs(total_s),
        }
    }

    fn headers(len: Option<u64>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(n) = len {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        h
    }

    #[tokio::test(start_paused = true)]
    async fn reads_a_body_within_its_bounds() {
        let body = StreamBody::new(stream::iter(chunks(&["{\"a\":", "1}"])));
        let got = read_bounded(body, &headers(None), limits(7, 1, 10)).await;
        assert_eq!(got, Ok(Bytes::from_static(b"{\"a\":1}")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_past_the_bound_is_refused() {
        let body = StreamBody::new(stream::iter(chunks(&["{\"a\":", "12}"])));
        let got = read_bounded(body, &headers(None), limits(7, 1, 10)).await;
        assert_eq!(got, Err(ReadError::TooLarge));
        // A declared length over the bound: refused before any byte is read.
        let body = StreamBody::new(stream::pending::<Result<Frame<Bytes>, Infallible>>());
        let got = read_bounded(body, &headers(Some(8)), limits(7, 1, 10)).await;
        assert_eq!(got, Err(ReadError::TooLarge));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_between_chunks_is_an_idle_timeout_and_the_deadline_still_holds() {
        let stalled =
            || StreamBody::new(stream::iter(chunks(&["{\"a\""])).chain(stream::pending()));
        let got = read_bounded(stalled(), &headers(None), limits(100, 1, 600)).await;
        assert_eq!(got, Err(ReadError::Idle));
        let got = read_bounded(stalled(), &headers(None), limits(100, 600, 1)).await;
        assert_eq!(got, Err(ReadError::Total));
    }
}
