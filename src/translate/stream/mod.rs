//! Streams, event by event: Anthropic message events → OpenAI
//! `chat.completion.chunk`s ([`MessagesToChat`]) and back
//! ([`ChatToMessages`]).
//!
//! Each translator takes one SSE event's `data:` at a time (the caller frames
//! the byte stream with `stream::sse`) and appends whole SSE events to an
//! output buffer, so nothing but a few ids and counters is held between
//! events: the answer itself is never buffered.

mod to_chat;
mod to_messages;

pub use to_chat::MessagesToChat;
pub use to_messages::ChatToMessages;

use serde_json::Value;

/// Appends `data: JSON\n\n` (OpenAI's framing).
fn push_data(out: &mut Vec<u8>, value: &Value) {
    out.extend_from_slice(b"data: ");
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
    out.extend_from_slice(b"\n\n");
}

/// Appends `event: TYPE\ndata: JSON\n\n` (Anthropic's framing).
fn push_named(out: &mut Vec<u8>, event: &str, value: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.push(b'\n');
    push_data(out, value);
}

#[cfg(test)]
mod tests;
