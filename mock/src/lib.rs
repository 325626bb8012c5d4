//! A deterministic mock LLM provider speaking the OpenAI and Anthropic wire formats.
//!
//! Used by Sluice's integration tests (a dev-dependency: `use sluice_mock::MockProvider;`), as
//! the `sluice-mock` binary (this crate's `src/main.rs`) by the SDK tests, the load harness
//! and the README's "Try it without a provider key". It serves HTTP/1.1 and h2c (prior
//! knowledge) with keep-alive on a plain TCP listener.
//!
//! # Modules
//! * `server`: the listener, the per-request flow and routing, the recorded state.
//! * `faults`: queued [`Fault`]s and the `x-mock-*` headers (statuses, delays, aborts, stalls,
//!   fragmented and endless streams).
//! * `openai`, `responses`, `anthropic`, `bedrock`, `converse`: one module per wire format;
//!   `objects`: files, batches and the echo fallback.
//! * `reply` (response plumbing, SSE framing), `error` (provider-shaped error bodies) and
//!   `content` (generated text and token accounting) are shared by the API modules.
//!
//! # Endpoints
//! * `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/embeddings`,
//!   `POST /v1/responses` (OpenAI), `POST /v1/messages`, `POST /v1/messages/count_tokens`
//!   (Anthropic; `anthropic-version` header required), `GET /v1/models` (Anthropic flavour when
//!   `anthropic-version` is present; ids `mock-model`, `mock-model-large`, `mock-embedding`,
//!   `other-model`, Anthropic: `mock-model`, `claude-mock-sonnet`, `claude-mock-haiku`).
//! * `POST /model/{id}/invoke` and `POST /model/{id}/invoke-with-response-stream` (AWS
//!   Bedrock, Anthropic models): the Bedrock body (`anthropic_version`, no `model` or
//!   `stream`) answered as `/v1/messages` would, the stream as binary
//!   `application/vnd.amazon.eventstream` frames (`chunk` events carrying each Anthropic event
//!   base64 in `{"bytes"}`); a request without a SigV4 `authorization` for service `bedrock`
//!   (or signed with access key [`BEDROCK_BAD_ACCESS_KEY`]) gets 403, and after
//!   [`MockProvider::verify_aws_signatures`] so does one whose signature is not the one AWS
//!   would compute with that secret; errors are `{"message"}`.
//! * `POST /model/{id}/converse` and `POST /model/{id}/converse-stream` (AWS Bedrock's
//!   Converse API, module `converse`): a Converse body (checked as Bedrock checks it) answered
//!   as the same conversation would be on `/v1/messages`, in Converse's JSON and event shapes
//!   (`messageStart`, `contentBlockStart`/`Delta`/`Stop`, `messageStop`, `metadata` with
//!   usage incl. cache reads and writes), signed and refused like the invoke paths.
//!   `x-mock-exception-after: N` cuts either API's stream after N frames with an exception
//!   frame (`x-mock-exception-type`, default `modelStreamErrorException`).
//! * `POST /v1/files`, `/v1/uploads`, `/v1/batches`, `/v1/vector_stores`,
//!   `/v1/messages/batches` answer a new object `{"id","object","path"}` with a fresh id
//!   (`file-mock-N`, `batch_mock_N`, ...); `GET /v1/batches/{id}` answers a completed batch
//!   with `output_file_id: "file-out-{id}"`; `GET /v1/messages/batches/{id}` an ended
//!   message batch.
//! * Batch results (`batch_results`): `GET /v1/files/file-out-{id}/content` answers five
//!   JSONL lines (`mock-model` 1000/500 and 2000/1000 prompt/completion tokens, an expired
//!   request, a 400, `mock-unpriced` 100/50); `GET /v1/messages/batches/{id}/results` six
//!   (`claude-mock-sonnet` 1000/500 and 2000/1000 input/output tokens, errored, expired,
//!   canceled, `claude-mock-unpriced` 100/50).
//! * Anything else (e.g. `GET /v1/echo-headers`, `GET /v1/files/x`) answers 200 with
//!   `{"path","method","headers":{..},"body_len"}`.
//!
//! # Generated content
//! The assistant text is `"echo: " + <last user text>` so parallel requests are distinguishable.
//! Text parts of a message are joined with a single space. Streams carry one piece per word
//! (the word plus the whitespace that follows it).
//!
//! Token accounting is deliberately simple: prompt tokens = whitespace-separated words of every
//! message's text + 3 per message (an Anthropic `system` prompt, a Responses `instructions`
//! string and every completion prompt count as one message each; embeddings count words only);
//! completion tokens = number of streamed pieces (for tool calls: number of argument fragments).
//! `max_tokens` / `max_completion_tokens` / `max_output_tokens` smaller than the word count
//! truncates the text to that many words (finish_reason `length`, Anthropic `max_tokens`,
//! Responses status `incomplete`, final event `response.incomplete`); the size modes
//! (`x-mock-echo-body`, `x-mock-large-response-kb`) ignore the limit.
//!
//! Tool calls: when the request has `tools` and its last message is a user turn (without tool
//! results) mentioning "weather", the mock calls the first tool with `{"city":"Paris"}`; after a
//! tool result it answers with text again. `x-mock-tool-calls: N` makes it N parallel calls
//! (the request's tools in order, round again past the last), each in its own block / item /
//! `tool_calls` entry as the real APIs send them.
//!
//! Response ids embed the 1-based sequence number N of the request (`chatcmpl-mock-N`,
//! `msg_mock_N`, ...), which is also its index + 1 in [`MockProvider::requests`] when recording
//! is on. `created` is a fixed timestamp so that bodies are byte-for-byte reproducible.
//!
//! # Request headers understood (the proxy forwards unknown headers)
//! | header | effect |
//! | --- | --- |
//! | `x-mock-words: N` | text is `w0 w1 ... w{N-1}` instead of the echo |
//! | `x-mock-chunk-chars: N` | stream pieces of N characters instead of one per word |
//! | `x-mock-delay-ms: D` | delay between streamed events |
//! | `x-mock-first-byte-delay-ms: D` | delay before the response headers |
//! | `x-mock-status: CODE` | answer CODE with a provider-shaped error body |
//! | `x-mock-retry-after: S` | `retry-after` value for `x-mock-status` (429 defaults to `1`) |
//! | `x-mock-abort-after: N` | stream: abort the connection after N events (no terminator); non-stream 2xx: abort after half the body |
//! | `x-mock-fragment: 1` | stream: split every event into several frames at awkward byte offsets |
//! | `x-mock-gzip: 1` | gzip non-stream bodies when `accept-encoding` allows gzip |
//! | `x-mock-echo-body: 1` | text is `len:<request body byte length>` |
//! | `x-mock-large-response-kb: N` | text is N KiB of ASCII words |
//! | `x-mock-endless-event-kb: N` | stream: after the first event, one `data:` line of N KiB that never ends (no newline), then silence until the client goes away |
//! | `x-mock-stall-after-bytes: N` | non-stream 2xx: send the first N bytes of the body, then nothing until the client goes away |
//! | `x-mock-tool-calls: N` | an answer that calls tools makes N parallel calls (default 1) |
//! | `x-mock-close: 1` | answer with `connection: close`, then close the connection |
//!
//! Embeddings: a text starting with `vec:` and comma-separated numbers (`vec:0.1,0.9 any
//! words`) is embedded as exactly that vector, so a test decides which texts are similar;
//! any other text gets 8 deterministic hash-derived floats.
//!
//! `authorization: Bearer bad-key` or `x-api-key: bad-key` gets a 401.
//!
//! Order of precedence for one request: queued [`Fault`] (one per request, FIFO), then
//! `x-mock-first-byte-delay-ms`, then `x-mock-status`, then the bad-key check, then routing.

mod anthropic;
mod batch_results;
mod bedrock;
mod content;
mod converse;
mod error;
mod faults;
mod objects;
mod openai;
mod reply;
mod responses;
mod server;

pub use bedrock::BAD_ACCESS_KEY as BEDROCK_BAD_ACCESS_KEY;
pub use faults::Fault;
pub use server::{MockProvider, RecordedRequest};
