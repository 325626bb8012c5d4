//! An AWS Bedrock answer made to look like Anthropic's before anything
//! else reads it: an error in Anthropic's shape (`{"message"}` becomes
//! `{"type":"error","error":{…}}`), and a streamed answer announced as
//! `text/event-stream`, its binary event frames decoded by the tap. A JSON
//! answer already is an Anthropic message.

use bytes::Bytes;
use http::{header, HeaderValue};

use crate::app::Snapshot;
use crate::attempt::Answered;
use crate::config::ProviderKind;
use crate::error::ProxyError;
use crate::record::RequestRecord;
use crate::upstream::bedrock::{error_body, EventStreamToSse};

use super::answer::{read_answer, ReadLimits};

/// The content type of Bedrock's streamed answers.
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// Whether the provider that answered is an AWS Bedrock one.
pub(super) fn answered_by_bedrock(snap: &Snapshot, rec: &RequestRecord) -> bool {
    snap.upstreams
        .iter()
        .find(|u| u.name == rec.outcome.upstream.provider)
        .is_some_and(|u| u.kind == ProviderKind::Bedrock)
}

/// `answer` in Anthropic's shape, and the decoder its body needs when it is
/// an event stream.
pub(super) async fn as_anthropic(
    answer: Answered,
    rec: &RequestRecord,
    limits: ReadLimits,
) -> Result<(Answered, Option<EventStreamToSse>), ProxyError> {
    match answer {
        Answered::Buffered(mut head, bytes) => {
            let bytes = anthropic_error(&mut head, &bytes);
            Ok((Answered::Buffered(head, bytes), None))
        }
        Answered::Stream(resp) if !resp.status().is_success() => {
            let (mut head, body) = resp.into_parts();
            let bytes = read_answer(body, &head.headers, limits, rec).await?;
            let bytes = anthropic_error(&mut head, &bytes);
            Ok((Answered::Buffered(head, bytes), None))
        }
        Answered::Stream(mut resp) if is_event_stream(resp.headers()) => {
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.remove(header::CONTENT_LENGTH);
            Ok((Answered::Stream(resp), Some(EventStreamToSse::default())))
        }
        answer => Ok((answer, None)),
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

/// A whole Bedrock answer read at once (a shadow copy's): an event stream
/// as the Anthropic SSE it carries; anything else unchanged.
pub(super) fn decode_whole(head: &mut http::response::Parts, bytes: Bytes) -> Bytes {
    if !is_event_stream(&head.headers) {
        return bytes;
    }
    head.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    EventStreamToSse::default().push(&bytes).unwrap_or_default()
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
        let mut h = head(200, "application/json");
        assert_eq!(decode_whole(&mut h, Bytes::from_static(b"{}")), "{}");
        let mut h = head(200, EVENT_STREAM);
        assert_eq!(decode_whole(&mut h, Bytes::new()), "");
        assert_eq!(h.headers[header::CONTENT_TYPE], "text/event-stream");
    }
}
