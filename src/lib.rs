//! Sluice: a high-throughput sidecar reverse proxy for LLM APIs.
//!
//! The data-plane pipeline is wired in [`proxy`]; each stage lives in its own
//! module. [`run`] starts both planes and handles signals.
//!
//! Dependencies between top-level modules point one way, from the edges of
//! the process down to a few leaves; there are no cycles
//! (`python3 scripts/module-deps.py` checks it, and the test suite runs it):
//!
//! - leaves: [`vocab`] (API shape, endpoint, identity, scope dimensions,
//!   refusals), [`find`] (byte-string search), [`text`] (strings built
//!   without `format!`), [`worker`] (the data plane's threads and what each
//!   keeps for itself), [`glob`], [`pricing`],
//!   [`window`], [`usage`], [`webhook`], [`stats`] (experiment statistics), [`translate`] (OpenAI ↔ Anthropic
//!   requests, responses, streams and errors), [`protocol`] (each wire
//!   format behind one interface: request facts, answers and usage, SSE
//!   framing, assembly and replay, error and rate-limit vocabulary);
//! - [`error`] depends only on leaves: no domain module;
//! - [`config`] on the leaves, [`path`] and [`sniff`];
//! - domain modules ([`auth`], [`route`], [`limits`], [`budget`], [`cache`],
//!   [`resilience`], [`upstream`], [`ownership`], [`batch`] (batch results
//!   read back, priced), [`stream`], [`fault`], [`telemetry`]) on config,
//!   error and the leaves, and on each other only downwards;
//! - [`app`] (one config snapshot plus the long-lived state) on the domain;
//! - [`record`], [`attempt`] and [`body`] on app;
//! - [`capture`] (rules, redaction, the capture file) on config and the
//!   leaves, used by [`record`];
//! - [`proxy`], [`admin`], [`server`], [`run`] and [`replay`] at the top;
//!   [`cli`] (the binary's subcommands that call a running Sluice) on config
//!   alone.

pub mod admin;
pub mod app;
pub mod attempt;
pub mod auth;
pub mod batch;
pub mod body;
pub mod budget;
pub mod cache;
pub mod capture;
pub mod cli;
pub mod config;
pub mod error;
pub mod experiment;
pub mod fault;
pub mod find;
pub mod fleet;
pub mod glob;
pub mod headers;
pub mod json_file;
pub mod jwt;
pub mod key_store;
pub mod kill;
pub mod limits;
pub mod metrics;
pub mod ownership;
pub mod path;
pub mod pricing;
pub mod protocol;
pub mod proxy;
pub mod record;
pub mod replay;
pub mod resilience;
pub mod route;
pub mod run;
pub mod server;
pub mod shadow;
pub mod sniff;
pub mod stats;
pub mod stream;
pub mod telemetry;
pub mod text;
pub mod translate;
pub mod upstream;
pub mod usage;
pub mod usage_log;
pub mod vocab;
pub mod webhook;
pub mod window;
pub mod worker;
