//! Translation between OpenAI chat completions and Anthropic messages, both
//! directions: requests, JSON responses, streams (event by event, never the
//! whole answer) and error bodies.
//!
//! Pure functions over `serde_json` values: no I/O, no config, no other
//! module of Sluice, so every mapping is unit-tested here and the corpus in
//! `tests/translate/` pins the wire forms. A field either maps (as written in
//! README.md, "Crossing providers"), is dropped because it cannot change the
//! answer (listed in [`LOST_ON_CHAT_TO_MESSAGES`] and
//! [`LOST_ON_MESSAGES_TO_CHAT`]), or is refused with a [`Refused`] the caller
//! renders as a 400 `invalid_request_error`: never silently dropped.

pub mod error;
mod json;
pub mod request;
pub mod response;
pub mod stream;

pub use json::Refused;

/// What the response side of a translated request needs to know about it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    /// The client asked for a stream.
    pub stream: bool,
    /// The client asked for a usage chunk at the end of an OpenAI stream
    /// (`stream_options.include_usage`).
    pub include_usage: bool,
    /// OpenAI JSON mode or structured output was asked of Anthropic: the
    /// answer comes as the input of the forced tool [`JSON_TOOL`] and goes
    /// back to the client as the message content.
    pub json_tool: bool,
}

/// The tool an OpenAI `response_format` (`json_object`, `json_schema`) is
/// sent to Anthropic as: forced with `tool_choice`, its input schema the
/// requested one, its input the answer.
pub const JSON_TOOL: &str = "json_response";

/// The default `max_tokens` Anthropic requires when an OpenAI request sets no
/// output cap (`max_tokens` / `max_completion_tokens`).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// OpenAI chat fields (and parts of fields) that are accepted but have no
/// Anthropic equivalent and cannot change the answer, so they are dropped
/// on the way to an Anthropic deployment. `sluice check` lists them for a
/// cross-API route.
pub const LOST_ON_CHAT_TO_MESSAGES: &[&str] = &[
    "messages[].name",
    "image_url.detail",
    "tools[].function.strict",
    "metadata",
    "store (false)",
    "seed",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

/// Anthropic messages fields that are accepted but dropped on the way to an
/// OpenAI deployment (OpenAI caches prompts without markers; earlier turns'
/// thinking is not sent to another vendor's model).
pub const LOST_ON_MESSAGES_TO_CHAT: &[&str] = &[
    "cache_control",
    "thinking blocks in earlier assistant turns",
    "tool_result.is_error",
    "service_tier",
    "citations",
];
