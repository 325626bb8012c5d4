//! An AWS Bedrock answer made to look like Anthropic's before anything
//! else reads it: an error in Anthropic's shape (`{"message"}` becomes
//! `{"type":"error","error":{…}}`), and a streamed answer announced as
//! `text/event-stream`, its binary event frames decoded by the tap. An
//! InvokeModel JSON answer already is an Anthropic message; a Converse one
//! is translated once read ([`Decoding::json`]).

use bytes::Bytes;
use http::{header, HeaderValue};

use crate::app::Snapshot;
use crate::attempt::Answered;
use crate::config::BedrockApi;
use crate::error::ProxyError;
use crate::record::RequestRecord;
use crate::upstream::bedrock::{error_body, EventStreamToSse};
use crate::upstream::converse::{message_from_converse, message_id, StreamEvents};

use super::answer::{read_answer, ReadLimits};

/// The content type of Bedrock's streamed answers.
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// The Bedrock API of provider `name` (`None`: not a Bedrock provider).
pub(super) fn bedrock_api(snap: &Snapshot, name: &str) -> Option<BedrockApi> {
    snap.upstreams
        .iter()
        .find(|u| &*u.name == name)
        .and_then(|u| u.bedrock_api())
}

/// The Bedrock API of the provider that answered (`None`: not Bedrock).
pub(super) fn answered_by_bedrock(snap: &Snapshot, rec: &RequestRecord) -> Option<BedrockApi> {
    bedrock_api(snap, &rec.outcome.upstream.provider)
}

/// How the body of a Bedrock answer becomes Anthropic's.
#[derive(Default)]
pub(crate) struct Decoding {
    /// An event stream's decoder (the tap runs it).
    pub(crate) stream: Option<EventStreamToSse>,
    /// A Converse JSON answer: the model and id its Anthropic message takes.
    converse_json: Option<(String, String)>,
}

impl Decoding {
    /// A successful JSON answer, read whole, in Anthropic's shape.
    pub(super) fn json(&self, bytes: Bytes, rec: &RequestRecord) -> Result<Bytes, ProxyError> {
        let Some((model, id)) = &self.converse_json else {
            return Ok(bytes);
        };
        message_from_converse(&bytes, model, id).map_err(|detail| ProxyError::UpstreamConnect {
            provider: rec.outcome.upstream.provider.to_string(),
            detail,
        })
    }
}

/// `answer` in Anthropic's shape, and what its body needs decoded.
pub(super) async fn as_anthropic(
    answer: Answered,
    api: BedrockApi,
    rec: &RequestRecord,
    limits: ReadLimits,
) -> Result<(Answered, Decoding), ProxyError> {
    match answer {
        Answered::Buffered(mut head, bytes) => {
            let bytes = anthropic_error(&mut head, &bytes);
            Ok((Answered::Buffered(head, bytes), Decoding::default()))
        }
        Answered::Stream(resp) if !resp.status().is_success() => {
            let (mut head, body) = resp.into_parts();
            let bytes = read_answer(body, &head.headers, limits, rec).await?;
            let bytes = anthropic_error(&mut head, &bytes);
            Ok((Answered::Buffered(head, bytes), Decoding::default()))
        }
        Answered::Stream(mut resp) => {
            let converse = (api == BedrockApi::Converse).then(|| {
                let id = resp
                    .headers()
                    .get("x-amzn-requestid")
                    .and_then(|v| v.to_str().ok());
                (rec.outcome.upstream.model.clone(), message_id(id))
            });
            if !is_event_stream(resp.headers()) {
                let decoding = Decoding {
                    stream: None,
                    converse_json: converse,
                };
                if decoding.converse_json.is_some() {
                    // The translated body has another length.
                    resp.headers_mut().remove(header::CONTENT_LENGTH);
                }
                return Ok((Answered::Stream(resp), decoding));
            }
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.remove(header::CONTENT_LENGTH);
            let decoder = match converse {
                Some((model, id)) => EventStreamToSse::converse(StreamEvents::new(model, id)),
                None => EventStreamToSse::default(),
            };
            let decoding = Decoding {
                stream: Some(decoder),
                converse_json: None,
            };
            Ok((Answered::Stream(resp), decoding))
        }
    }
}

fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(EVENT_STREAM.as_bytes()))
}

/// A Bedrock error body in Anthropic's shape (one already in it, such as an
/// injected fault's, is kept), its head saying so.
fn anthropic_error(head: &mut http::response::Parts, bytes: &[u8]) -> Bytes {
    let anthropic = serde_json::from_slice::<serde_json::Value>(bytes)
        .is_ok_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("error"));
    head.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    head.headers.remove(header::CONTENT_LENGTH);
    if anthropic {
        Bytes::copy_from_slice(bytes)
    } else {
        error_body(head.status.as_u16(), bytes)
    }
}

/// A whole answer read at once (a shadow copy's) from a provider with
/// Bedrock API `api` (`None`: not Bedrock), answered by `model`: an event
/// stream as the Anthropic SSE it carries, a Converse message as
/// Anthropic's; anything else unchanged.
pub(super) fn decode_whole(
    head: &mut http::response::Parts,
    bytes: Bytes,
    api: Option<BedrockApi>,
    model: &str,
) -> Bytes {
    let converse = || StreamEvents::new(model.to_owned(), message_id(None));
    let ok = head.status.is_success();
    match api {
        None => bytes,
        Some(api) if is_event_stream(&head.headers) => {
            head.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            let mut decoder = match api {
                BedrockApi::Invoke => EventStreamToSse::default(),
                BedrockApi::Converse => EventStreamToSse::converse(converse()),
            };
            decoder.push(&bytes).unwrap_or_default()
        }
        Some(BedrockApi::Converse) if ok => {
            message_from_converse(&bytes, model, &message_id(None)).unwrap_or(bytes)
        }
        Some(_) => bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, content_type: &str) -> http::response::Parts {
        let mut resp = http::Response::new(());
        *resp.status_mut() = http::StatusCode::from_u16(status).expect("status");
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("ascii"),
        );
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(9));
        resp.into_parts().0
    }

    #[test]
    fn bedrock_errors_take_anthropics_shape_once() {
        let mut h = head(429, "application/json");
        let body = anthropic_error(&mut h, br#"{"message":"Rate exceeded"}"#);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["message"], "Rate exceeded");
        assert!(h.headers.get(header::CONTENT_LENGTH).is_none());
        // Already Anthropic's (an injected fault): kept as it is.
        let again = anthropic_error(&mut h, &body);
        assert_eq!(again, body);
    }

    #[test]
    fn a_whole_event_stream_reads_as_sse_and_other_bodies_are_untouched() {
        let invoke = Some(BedrockApi::Invoke);
        let mut h = head(200, "application/json");
        assert_eq!(
            decode_whole(&mut h, Bytes::from_static(b"{}"), invoke, "m"),
            "{}"
        );
        let mut h = head(200, EVENT_STREAM);
        assert_eq!(decode_whole(&mut h, Bytes::new(), invoke, "m"), "");
        assert_eq!(h.headers[header::CONTENT_TYPE], "text/event-stream");
        // Converse's message is Anthropic's once read.
        let converse = Some(BedrockApi::Converse);
        let answer = br#"{"output":{"message":{"content":[{"text":"hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":1,"outputTokens":1}}"#;
        let mut h = head(200, "application/json");
        let out = decode_whole(&mut h, Bytes::from_static(answer), converse, "m");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["content"][0]["text"], "hi");
        // Not Bedrock: untouched whatever its type.
        let mut h = head(200, EVENT_STREAM);
        assert_eq!(
            decode_whole(&mut h, Bytes::from_static(b"x"), None, "m"),
            "x"
        );
    }
}
