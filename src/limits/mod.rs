//! Token limits (count input, cap output) and rate limits.

pub mod context;
pub mod headers;
pub mod rate;
pub mod request;
pub mod tokens;
pub mod window;
