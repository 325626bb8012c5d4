//! Token limits (count input, cap output) and rate limits.

pub mod context;
pub mod rate;
pub mod tokens;
pub mod window;
