//! What each format's request says: which field caps the output, how many
//! answers it asks for, where its input and system prompt are, and what the
//! provider keeps of it. Facts only; reading the body is `sniff`'s and
//! counting is `limits`'.

use serde_json::{Map, Value};

use super::{Endpoint, Protocol};

/// The output-cap fields a request may carry, as read from its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct CapFields {
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
}

/// Where a format's input is, for counting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// `messages` (and an Anthropic `system`), `tools`; `primed`: the
    /// provider adds tokens to prime the reply.
    Messages { system: bool, primed: bool },
    /// Responses: `instructions`, then `input` (a string or items), `tools`.
    Items,
    /// `prompt` (text completions).
    Prompt,
    /// `input` (embeddings).
    Embedding,
    /// Nothing Sluice counts.
    None,
}

impl Protocol {
    /// The output cap a request asks for in the field(s) its format defines
    /// (the larger when chat carries both), and the field used. A field
    /// another API defines is not this request's cap (and is not clamped).
    pub fn output_cap(self, f: CapFields) -> (Option<u64>, Option<&'static str>) {
        let (cap, field) = match self.endpoint() {
            Endpoint::ChatCompletions => match (f.max_completion_tokens, f.max_tokens) {
                (Some(a), Some(b)) => (Some(a.max(b)), "max_completion_tokens"),
                (Some(a), None) => (Some(a), "max_completion_tokens"),
                (None, b) => (b, "max_tokens"),
            },
            Endpoint::Completions | Endpoint::Messages => (f.max_tokens, "max_tokens"),
            Endpoint::Responses => (f.max_output_tokens, "max_output_tokens"),
            _ => (None, ""),
        };
        (cap, cap.and(Some(field)))
    }

    /// The output-cap field to set: the one the client used, or the one the
    /// provider expects (`openai_upstream`: OpenAI's reasoning models refuse
    /// `max_tokens`, most compatible servers only know `max_tokens`).
    pub fn output_field(
        self,
        client_field: Option<&'static str>,
        openai_upstream: bool,
    ) -> Option<&'static str> {
        match self.endpoint() {
            Endpoint::ChatCompletions => Some(client_field.unwrap_or(if openai_upstream {
                "max_completion_tokens"
            } else {
                "max_tokens"
            })),
            Endpoint::Completions | Endpoint::Messages => Some("max_tokens"),
            Endpoint::Responses => Some("max_output_tokens"),
            _ => None,
        }
    }

    /// Output-cap fields that mean the same as `field`: when one is clamped,
    /// a larger value in the other is clamped too.
    pub fn cap_aliases(field: &str) -> &'static [&'static str] {
        match field {
            "max_completion_tokens" => &["max_tokens"],
            "max_tokens" => &["max_completion_tokens"],
            _ => &[],
        }
    }

    /// Answers generated per request (`n`; `best_of` on completions): the
    /// output cap is per choice, so the worst case multiplies by this.
    pub fn choices(self, n: Option<u64>, best_of: Option<u64>) -> u64 {
        match self.endpoint() {
            Endpoint::ChatCompletions => n.unwrap_or(1),
            Endpoint::Completions => n.unwrap_or(1).max(best_of.unwrap_or(1)),
            _ => 1,
        }
        .max(1)
    }

    /// Whether the input is a `messages` array of role/content turns (chat
    /// completions and messages: the formats translated into each other,
    /// and the ones the semantic cache reads).
    pub fn takes_messages(self) -> bool {
        matches!(
            self.endpoint(),
            Endpoint::ChatCompletions | Endpoint::Messages
        )
    }

    /// Where the input is, for counting it.
    pub fn input(self) -> Input {
        match self.endpoint() {
            Endpoint::ChatCompletions => Input::Messages {
                system: false,
                primed: true,
            },
            Endpoint::Messages | Endpoint::CountTokens => Input::Messages {
                system: true,
                primed: false,
            },
            Endpoint::Responses => Input::Items,
            Endpoint::Completions => Input::Prompt,
            Endpoint::Embeddings => Input::Embedding,
            Endpoint::Models | Endpoint::Other => Input::None,
        }
    }

    /// Whether the same request always gets the same answer (embeddings);
    /// generations are only at temperature 0.
    pub fn deterministic(self) -> bool {
        self.endpoint() == Endpoint::Embeddings
    }

    /// Whether a stream reports usage only when the request asks for it
    /// (`stream_options.include_usage`, OpenAI chat and completions).
    pub fn usage_on_request(self) -> bool {
        matches!(
            self.endpoint(),
            Endpoint::ChatCompletions | Endpoint::Completions
        )
    }

    /// Whether the provider keeps the answer as an object by default when
    /// the request says nothing (`store`): `None` for formats that store
    /// nothing.
    pub fn stores_by_default(self) -> Option<bool> {
        match self.endpoint() {
            Endpoint::Responses => Some(true),
            Endpoint::ChatCompletions => Some(false),
            _ => None,
        }
    }

    /// Whether prompt caching is asked for with `cache_control` breakpoints
    /// in the request (Anthropic messages).
    pub fn has_cache_breakpoints(self) -> bool {
        self.endpoint() == Endpoint::Messages
    }

    /// Puts `prefix` before the system prompt of a request body: chat's
    /// first system (or developer) message, Anthropic's `system`, Responses'
    /// `instructions`. Formats without a system prompt are left as they are.
    pub fn prefix_system(self, obj: &mut Map<String, Value>, prefix: &str) {
        match self.endpoint() {
            Endpoint::ChatCompletions => {
                let Some(Value::Array(messages)) = obj.get_mut("messages") else {
                    return;
                };
                let first_is_system = messages.first().is_some_and(|m| {
                    matches!(
                        m.get("role").and_then(Value::as_str),
                        Some("system" | "developer")
                    )
                });
                let done = first_is_system
                    && messages[0]
                        .get_mut("content")
                        .is_some_and(|c| prepend(c, prefix));
                if !done {
                    messages.insert(0, serde_json::json!({"role": "system", "content": prefix}));
                }
            }
            Endpoint::Messages => prefix_field(obj, "system", prefix),
            Endpoint::Responses => prefix_field(obj, "instructions", prefix),
            // Completions and embeddings have no system prompt.
            _ => {}
        }
    }
}

fn prefix_field(obj: &mut Map<String, Value>, field: &str, prefix: &str) {
    let done = obj.get_mut(field).is_some_and(|s| prepend(s, prefix));
    if !done {
        obj.insert(field.into(), Value::String(prefix.to_owned()));
    }
}

/// Prepends `prefix` to a string, or puts a text block first in an array.
fn prepend(slot: &mut Value, prefix: &str) -> bool {
    match slot {
        Value::String(s) => {
            s.insert_str(0, prefix);
            true
        }
        Value::Array(a) => {
            a.insert(0, serde_json::json!({"type": "text", "text": prefix}));
            true
        }
        _ => false,
    }
}
