//! The response side: SSE framing and the observing tap.

pub mod observe;
pub mod sse;
