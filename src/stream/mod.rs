//! The response side: SSE framing, the observing tap, and streams translated
//! between APIs (`translate`).

pub mod observe;
pub mod translate;
