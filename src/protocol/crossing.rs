//! Which way a request that crosses APIs is translated: an OpenAI chat
//! completions client answered by an Anthropic deployment, or the other way
//! round. The mappings themselves are [`crate::translate`]'s; this picks the
//! direction for each part (request, answer, error, finish reason, the
//! fields lost), so no caller branches on the API.

use serde_json::Value;

use super::{ApiShape, Endpoint, Protocol};
use crate::translate::{self, error::ErrorReply, Plan, Refused};

/// A crossing from the client's API to the other one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Across {
    from: ApiShape,
}

impl Across {
    /// The crossing of a request whose client speaks `from`.
    pub fn from(from: ApiShape) -> Across {
        Across { from }
    }

    /// The API the request is sent in.
    pub fn to(self) -> ApiShape {
        self.from.other()
    }

    /// The format the provider answers in.
    pub fn provider(self) -> Protocol {
        match self.to() {
            ApiShape::Anthropic => Protocol::of(Endpoint::Messages),
            ApiShape::OpenAi => Protocol::of(Endpoint::ChatCompletions),
        }
    }

    /// The path the translated request is sent to.
    pub fn path(self) -> &'static str {
        match self.to() {
            ApiShape::Anthropic => "/v1/messages",
            ApiShape::OpenAi => "/v1/chat/completions",
        }
    }

    /// The request in the provider's API, and what answering it needs.
    pub fn request(self, req: &Value) -> Result<(Value, Plan), Refused> {
        match self.from {
            ApiShape::OpenAi => translate::request::chat_to_messages(req),
            ApiShape::Anthropic => translate::request::messages_to_chat(req),
        }
    }

    /// A provider's JSON answer in the client's API (`created`: the Unix
    /// time an OpenAI answer carries).
    pub fn answer(self, answer: &Value, plan: Plan, created: u64) -> Result<Value, Refused> {
        match self.from {
            ApiShape::OpenAi => translate::response::message_to_chat(answer, plan, created),
            ApiShape::Anthropic => translate::response::chat_to_message(answer),
        }
    }

    /// A provider's error in the client's API, with the status its SDK
    /// expects.
    pub fn error(self, status: u16, body: &[u8]) -> ErrorReply {
        match self.from {
            ApiShape::OpenAi => translate::error::anthropic_to_openai(status, body),
            ApiShape::Anthropic => translate::error::openai_to_anthropic(status, body),
        }
    }

    /// A provider's finish reason in the client's words.
    pub fn finish_reason(self, provider_reason: &str) -> &'static str {
        match self.from {
            ApiShape::OpenAi => translate::response::finish_reason(provider_reason),
            ApiShape::Anthropic => translate::response::stop_reason(provider_reason),
        }
    }

    /// The client's fields that are accepted but dropped on the way.
    pub fn lost(self) -> &'static [&'static str] {
        match self.from {
            ApiShape::OpenAi => translate::LOST_ON_CHAT_TO_MESSAGES,
            ApiShape::Anthropic => translate::LOST_ON_MESSAGES_TO_CHAT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_part_goes_the_right_way() {
        let openai = Across::from(ApiShape::OpenAi);
        assert_eq!(openai.to(), ApiShape::Anthropic);
        assert_eq!(openai.path(), "/v1/messages");
        assert_eq!(openai.provider().endpoint(), Endpoint::Messages);
        let (req, _) = openai
            .request(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .expect("translates");
        assert!(
            req.get("max_tokens").is_some(),
            "Anthropic requires max_tokens"
        );
        assert_eq!(openai.finish_reason("end_turn"), "stop");
        assert_eq!(openai.lost(), translate::LOST_ON_CHAT_TO_MESSAGES);
        assert_eq!(openai.error(529, b"{}").status, 503);

        let anthropic = Across::from(ApiShape::Anthropic);
        assert_eq!(anthropic.to(), ApiShape::OpenAi);
        assert_eq!(anthropic.path(), "/v1/chat/completions");
        assert_eq!(anthropic.provider().endpoint(), Endpoint::ChatCompletions);
        assert_eq!(anthropic.finish_reason("length"), "max_tokens");
        assert_eq!(anthropic.lost(), translate::LOST_ON_MESSAGES_TO_CHAT);
    }
}
