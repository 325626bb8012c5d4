//! The request headers that belong to one API: Anthropic's
//! `anthropic-version` (required) and `anthropic-beta`.

use http::{HeaderMap, HeaderValue};

use crate::vocab::ApiShape;

/// The Messages API version sent when the client named none (an OpenAI
/// client whose request crosses to Anthropic, or a bare HTTP client).
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// Makes a client's request headers fit the API they go to: what only the
/// client's API understands is removed when the request crosses, and what
/// the target API requires is added when missing.
pub fn fit(headers: &mut HeaderMap, from: ApiShape, to: ApiShape) {
    if from == ApiShape::Anthropic && to != from {
        // The Anthropic client's version and betas mean nothing elsewhere.
        headers.remove("anthropic-version");
        headers.remove("anthropic-beta");
    }
    if to == ApiShape::Anthropic && !headers.contains_key("anthropic-version") {
        headers.insert(
            "anthropic-version",
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_the_target_api() {
        let mut h = HeaderMap::new();
        h.insert("anthropic-version", HeaderValue::from_static("2024-01-01"));
        h.insert("anthropic-beta", HeaderValue::from_static("x"));
        let mut same = h.clone();
        fit(&mut same, ApiShape::Anthropic, ApiShape::Anthropic);
        assert_eq!(same, h);
        fit(&mut h, ApiShape::Anthropic, ApiShape::OpenAi);
        assert!(h.is_empty());
        fit(&mut h, ApiShape::OpenAi, ApiShape::Anthropic);
        assert_eq!(h["anthropic-version"], DEFAULT_ANTHROPIC_VERSION);
    }
}
