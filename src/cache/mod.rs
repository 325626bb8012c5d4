//! Exact response cache: answers to identical requests are served from
//! memory instead of going upstream again.
//!
//! # What counts as identical: the cache key
//!
//! The key is a SHA-256 over, in this order (each part prefixed with its
//! length, so parts cannot run into each other):
//!
//! 1. a version tag (`sluice-cache-key-v1`), bumped if this recipe changes;
//! 2. the endpoint (`chat_completions`, `completions`, `responses`,
//!    `messages`, ...), so the same body sent to two APIs never collides;
//! 3. the **upstream model** the request was routed to, not the name the
//!    client sent: two aliases of one deployment share entries, and a public
//!    name that routes to different models (tiers, fallbacks) does not mix
//!    their answers;
//! 4. the **tenant scope**: the virtual key, the team, or one shared scope,
//!    as configured. One tenant never receives an answer produced for
//!    another unless they share a scope;
//! 5. the request body in canonical form.
//!
//! The canonical form is the parsed JSON body (it must be an object) with
//! these top-level fields removed, because they do not change the answer:
//!
//! - `stream` and `stream_options`: a cached answer is replayed as SSE or
//!   returned as JSON, whichever the client asks for;
//! - `user` and `metadata` (OpenAI's end-user id, Anthropic's
//!   `metadata.user_id`): who asked, not what;
//! - `model`: replaced by the resolved upstream model (3).
//!
//! Everything else stays in, at any depth: messages, input, system prompt,
//! tools and tool choice, temperature, top_p, seed, max tokens, response
//! format, stop sequences, `n`, reasoning effort, and fields Sluice does not
//! know. The JSON is written with object keys sorted at every depth, without
//! whitespace, strings as serde_json escapes them, and numbers normalised:
//! an integer-valued number within 64-bit integer range is written as an
//! integer (`1.0` and `1` are the same, as are `-0.0` and `0`), any other
//! number as the shortest decimal that reads back as the same 64-bit float
//! (`0.50` and `0.5` are the same).
//! Array order matters; so do types (`"0.5"` is not `0.5`). Request headers
//! are not part of the key.
//!
//! # What is stored
//!
//! Only complete, successful answers: a 2xx JSON response, or a stream that
//! ended properly (`[DONE]` with a finish reason on every choice,
//! `message_stop`, `response.completed` / `response.incomplete`) without an
//! error event. A streamed answer is assembled into its non-streaming JSON
//! form as it passes ([`crate::protocol::StreamAssembler`]); a later request gets it as JSON,
//! or replayed as SSE if it streams ([`crate::protocol::Protocol::replay`]), with the usage chunk when
//! it asked for one. Entries live for a TTL and the cache is bounded in
//! bytes ([`ResponseCache`]).
//!
//! # Single flight
//!
//! Identical requests that miss together go upstream once: the first leads,
//! the rest wait (bounded) for its answer and go upstream themselves if it
//! fails or cannot be cached ([`Flights`]).

pub mod capture;
pub mod entry;
pub mod flight;
pub mod key;
pub mod model_lists;
pub mod policy;
pub mod prompt;
pub mod semantic;
pub mod shared;
pub mod store;
pub mod tenant;

pub use capture::Capture;
pub use entry::CachedResponse;
pub use flight::{Flight, Flights, LeaderGuard, Patience, Waiter};
pub use key::{cache_key, canonical_json, CacheKey};
pub use store::{CacheStats, ResponseCache};
