//! Sluice: a high-throughput sidecar reverse proxy for LLM APIs.
//!
//! The data-plane pipeline is wired in [`proxy`]; each stage lives in its own
//! module. [`run`] starts both planes and handles signals.

pub mod admin;
pub mod app;
pub mod attempt;
pub mod auth;
pub mod body;
pub mod budget;
pub mod cache;
pub mod config;
pub mod error;
pub mod headers;
pub mod limits;
pub mod metrics;
pub mod ownership;
pub mod path;
pub mod proxy;
pub mod record;
pub mod resilience;
pub mod route;
pub mod run;
pub mod server;
pub mod sniff;
pub mod stream;
pub mod upstream;
pub mod usage;
pub mod usage_log;
