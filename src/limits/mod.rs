//! Token limits (count input, cap output) and rate limits.

pub mod context;
pub mod loops;
pub use crate::protocol::ratelimit as headers;
pub mod rate;
pub mod request;
pub mod runs;
pub mod tokens;
pub mod window;
