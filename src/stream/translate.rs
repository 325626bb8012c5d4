//! A stream translated as its bytes pass: Sluice's SSE splitter frames the
//! provider's stream, `translate::stream` turns each event into the client's
//! API. The response body calls [`SseTranslator::feed`] per upstream chunk
//! and forwards what it returns at once: only an incomplete event is held.

use bytes::Bytes;

use crate::protocol::sse::{parse_block, SseSplitter};
use crate::protocol::{Across, ApiShape};
use crate::translate::stream::{ChatToMessages, MessagesToChat};
use crate::translate::Plan;

/// Which way a stream is translated.
#[derive(Debug)]
enum Direction {
    /// An Anthropic provider, an OpenAI client.
    ToChat(MessagesToChat),
    /// An OpenAI provider, an Anthropic client.
    ToMessages(ChatToMessages),
}

/// Translates one provider stream, chunk by chunk.
#[derive(Debug)]
pub struct SseTranslator {
    splitter: SseSplitter,
    direction: Direction,
}

impl SseTranslator {
    /// Anthropic events in, OpenAI chunks out (`created`: the Unix time the
    /// chunks carry).
    /// The translator of a provider's stream for a request that crossed
    /// `across` (`created`: the Unix time OpenAI chunks carry).
    pub fn new(across: Across, plan: Plan, created: u64, max_event: usize) -> SseTranslator {
        match across.to() {
            ApiShape::Anthropic => SseTranslator::to_chat(plan, created, max_event),
            ApiShape::OpenAi => SseTranslator::to_messages(max_event),
        }
    }

    pub fn to_chat(plan: Plan, created: u64, max_event: usize) -> SseTranslator {
        SseTranslator {
            splitter: SseSplitter::with_max_event(max_event),
            direction: Direction::ToChat(MessagesToChat::new(plan, created)),
        }
    }

    /// OpenAI chunks in, Anthropic events out.
    pub fn to_messages(max_event: usize) -> SseTranslator {
        SseTranslator {
            splitter: SseSplitter::with_max_event(max_event),
            direction: Direction::ToMessages(ChatToMessages::new()),
        }
    }

    /// The translated bytes of the events `chunk` completes (often empty).
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        let mut out = Vec::new();
        let direction = &mut self.direction;
        self.splitter.feed(chunk, |block| {
            let data = parse_block(block).data;
            match direction {
                Direction::ToChat(t) => t.event(&data, &mut out),
                Direction::ToMessages(t) => t.event(&data, &mut out),
            }
        });
        Bytes::from(out)
    }

    /// The provider's stream ended: whatever closes the client's stream (an
    /// OpenAI provider that stopped after its finish reason without
    /// `[DONE]`), and whether the stream ended properly.
    pub fn finish(&mut self) -> (Bytes, bool) {
        let mut out = Vec::new();
        let done = match &mut self.direction {
            Direction::ToChat(t) => t.done(),
            Direction::ToMessages(t) => t.finish(&mut out),
        };
        (Bytes::from(out), done && !self.splitter.oversized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANTHROPIC: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    #[test]
    fn any_split_gives_the_same_bytes_and_events_pass_at_once() {
        let whole = {
            let mut t = SseTranslator::to_chat(Plan::default(), 1, 1 << 20);
            let out = t.feed(ANTHROPIC.as_bytes());
            assert_eq!(t.finish(), (Bytes::new(), true));
            out
        };
        assert!(whole.ends_with(b"data: [DONE]\n\n"));
        let text = std::str::from_utf8(&whole).expect("utf-8");
        assert!(text.contains("\"content\":\"Hi\""), "{text}");
        for at in 0..ANTHROPIC.len() {
            let mut t = SseTranslator::to_chat(Plan::default(), 1, 1 << 20);
            let mut out = t.feed(&ANTHROPIC.as_bytes()[..at]).to_vec();
            out.extend_from_slice(&t.feed(&ANTHROPIC.as_bytes()[at..]));
            assert_eq!(out, whole.to_vec(), "split at {at}");
        }
        // The first event is out as soon as it is complete.
        let first = ANTHROPIC.find("\n\n").expect("event") + 2;
        let mut t = SseTranslator::to_chat(Plan::default(), 1, 1 << 20);
        assert!(t
            .feed(&ANTHROPIC.as_bytes()[..first])
            .starts_with(b"data: {"));
    }

    #[test]
    fn an_openai_stream_without_done_is_closed_at_the_end() {
        let mut t = SseTranslator::to_messages(1 << 20);
        let chunk = "data: {\"id\":\"c\",\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\n";
        let out = t.feed(chunk.as_bytes());
        assert!(out.starts_with(b"event: message_start\n"));
        let (tail, ended) = t.finish();
        assert!(ended);
        assert!(tail.ends_with(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    }
}
