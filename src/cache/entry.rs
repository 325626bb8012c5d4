//! One cached answer: the complete non-streaming response body plus what the
//! pipeline needs to serve, account and purge it.

use std::mem;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::{Endpoint, Protocol};
use crate::usage::Usage;

/// A complete, successful response held in the cache. Streamed answers are
/// stored in their non-streaming form and replayed as SSE on demand.
#[derive(Debug, Clone)]
pub struct CachedResponse {
    /// The endpoint that produced it (decides how it is replayed).
    pub endpoint: Endpoint,
    /// The upstream HTTP status (a success).
    pub status: u16,
    /// The `content-type` of `body`, normally `application/json`.
    pub content_type: String,
    /// The complete JSON response, as the non-streaming API returns it.
    pub body: Bytes,
    /// The usage the original request reported (what a hit saved).
    pub usage: Option<Usage>,
    /// When the answer was stored.
    pub created: Instant,
    /// The tenant scope the entry belongs to (for purging by tenant).
    pub tenant: String,
    /// The upstream model that produced it (for purging by model).
    pub model: String,
}

impl CachedResponse {
    /// A JSON response stored now, its usage read from `body`.
    pub fn json(endpoint: Endpoint, tenant: &str, model: &str, body: Bytes) -> CachedResponse {
        CachedResponse {
            endpoint,
            status: 200,
            content_type: "application/json".to_owned(),
            usage: Protocol::of(endpoint).usage_of(&body),
            body,
            created: Instant::now(),
            tenant: tenant.to_owned(),
            model: model.to_owned(),
        }
    }

    /// Bytes the entry holds, for the cache's byte bound: the body, the
    /// strings, and the struct itself; saturates at `u32::MAX`.
    pub fn weight(&self) -> u32 {
        let total = mem::size_of::<CachedResponse>()
            .saturating_add(self.body.len())
            .saturating_add(self.content_type.len())
            .saturating_add(self.tenant.len())
            .saturating_add(self.model.len());
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    /// How long ago the entry was stored (for an `age` header).
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_counts_body_and_strings() {
        let e = CachedResponse::json(
            Endpoint::ChatCompletions,
            "team:a",
            "gpt-4o-mini",
            Bytes::from(vec![b' '; 1000]),
        );
        let fixed = mem::size_of::<CachedResponse>() as u32;
        assert_eq!(e.weight(), fixed + 1000 + 16 + 6 + 11);
    }
}
