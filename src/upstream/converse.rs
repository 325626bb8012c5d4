//! AWS Bedrock's Converse API (`POST /model/{id}/converse` and
//! `/converse-stream`): one request and answer shape for every model family
//! on Bedrock (Claude, Llama, Mistral, Nova, …). Sluice routes a Converse
//! deployment as an Anthropic one, so this module translates between the
//! Anthropic Messages API and Converse: the request ([`request_body`]), the
//! JSON answer ([`message_from_converse`]) and the streamed events, frame by
//! frame ([`StreamEvents`], fed by the Bedrock event-stream decoder).
//!
//! Pure functions over `serde_json` values, like `crate::translate`: a field
//! maps, or it is refused with a message that names it (a 400), never
//! silently dropped. The mapping is tabled in README.md ("AWS Bedrock").

mod request;
mod response;
mod stream;

pub use request::request_body;
pub use response::{message_from_converse, stop_reason};
pub use stream::StreamEvents;

use percent_encoding::utf8_percent_encode;

/// The path of a Converse call to `model`.
pub fn converse_path(model: &str, stream: bool) -> String {
    let verb = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!(
        "/model/{}/{verb}",
        utf8_percent_encode(model, super::bedrock::SEGMENT)
    )
}

/// The Anthropic message id of a Converse answer: Bedrock's request id
/// (`x-amzn-requestid`), so logs on both sides meet.
pub fn message_id(request_id: Option<&str>) -> String {
    let id: String = request_id
        .unwrap_or("unknown")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    format!("msg_bdrk_{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_escape_the_model_id_and_ids_come_from_the_request_id() {
        assert_eq!(
            converse_path("meta.llama3-1-70b-instruct-v1:0", false),
            "/model/meta.llama3-1-70b-instruct-v1%3A0/converse"
        );
        assert!(converse_path("m", true).ends_with("/converse-stream"));
        assert_eq!(message_id(Some("ab-12\n<x>")), "msg_bdrk_ab-12x");
        assert_eq!(message_id(None), "msg_bdrk_unknown");
    }
}
