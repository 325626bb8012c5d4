//! Config for the bounds on what a client or an upstream can make Sluice
//! hold: connections, the time to send headers and bodies, HTTP/2 limits,
//! SSE event and upstream body sizes.

use std::time::Duration;

use super::raw::{RawServer, RawSize};
use super::values::{parse_duration, parse_size};
use super::Validator;

/// Default `server.header_timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `server.idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `server.body_timeout`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `server.h2_max_concurrent_streams`.
pub const DEFAULT_H2_STREAMS: u32 = 100;
/// Default `server.h2_max_header_list_size`: 64 KiB.
pub const DEFAULT_H2_HEADER_LIST: u32 = 64 << 10;
/// Default `server.max_sse_event`: 16 MiB.
pub const DEFAULT_MAX_SSE_EVENT: usize = 16 << 20;
/// Default `server.max_response_body`: 64 MiB.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 64 << 20;

/// Bounds on connections and bodies (all under `[server]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// From accept (TLS handshake included) until the first request's
    /// headers are complete.
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long (after its
    /// first request), or whose client reads nothing for this long, is
    /// closed.
    pub idle_timeout: Duration,
    /// The whole request body must arrive within this.
    pub body_timeout: Duration,
    /// Open data-plane connections; `None` = derived from the fd limit.
    pub max_connections: Option<usize>,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_header_list_size: u32,
    /// Largest SSE event from an upstream (bytes).
    pub max_sse_event: usize,
    /// Largest non-streamed upstream body Sluice reads in full (bytes).
    pub max_response_body: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: None,
            h2_max_concurrent_streams: DEFAULT_H2_STREAMS,
            h2_max_header_list_size: DEFAULT_H2_HEADER_LIST,
            max_sse_event: DEFAULT_MAX_SSE_EVENT,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
        }
    }
}

impl Validator<'_> {
    pub(super) fn bounds(&mut self, s: &RawServer) -> Bounds {
        let d = Bounds::default();
        let h2_headers = self.positive_size(
            "server.h2_max_header_list_size",
            s.h2_max_header_list_size.as_ref(),
            d.h2_max_header_list_size as usize,
        );
        Bounds {
            header_timeout: self.positive_duration(
                "server.header_timeout",
                s.header_timeout.as_deref(),
                d.header_timeout,
            ),
            idle_timeout: self.positive_duration(
                "server.idle_timeout",
                s.idle_timeout.as_deref(),
                d.idle_timeout,
            ),
            body_timeout: self.positive_duration(
                "server.body_timeout",
                s.body_timeout.as_deref(),
                d.body_timeout,
            ),
            max_connections: match s.max_connections {
                None => None,
                Some(0) => {
                    self.err("server.max_connections", "must be greater than zero");
                    None
                }
                Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            },
            h2_max_concurrent_streams: match s.h2_max_concurrent_streams {
                None => d.h2_max_concurrent_streams,
                Some(0) => {
                    self.err(
                        "server.h2_max_concurrent_streams",
                        "must be greater than zero",
                    );
                    d.h2_max_concurrent_streams
                }
                Some(n) => n,
            },
            h2_max_header_list_size: u32::try_from(h2_headers).unwrap_or_else(|_| {
                self.err("server.h2_max_header_list_size", "must be under 4GiB");
                d.h2_max_header_list_size
            }),
            max_sse_event: self.positive_size(
                "server.max_sse_event",
                s.max_sse_event.as_ref(),
                d.max_sse_event,
            ),
            max_response_body: self.positive_size(
                "server.max_response_body",
                s.max_response_body.as_ref(),
                d.max_response_body,
            ),
        }
    }

    fn positive_duration(
        &mut self,
        field: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        match value.map(parse_duration) {
            None => default,
            Some(Ok(d)) if !d.is_zero() => d,
            Some(Ok(_)) => {
                self.err(field, "must be greater than zero");
                default
            }
            Some(Err(e)) => {
                self.err(field, e);
                default
            }
        }
    }

    fn positive_size(&mut self, field: &str, value: Option<&RawSize>, default: usize) -> usize {
        match value.map(parse_size) {
            None => default,
            Some(Ok(n)) if n > 0 => n,
            Some(Ok(_)) => {
                self.err(field, "must be greater than zero");
                default
            }
            Some(Err(e)) => {
                self.err(field, e);
                default
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    use super::*;

    fn parse(server: &str) -> Result<Config, String> {
        Config::parse(&format!("[server]\n{server}\n"), "t.toml", &|_| None)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_overrides() {
        let c = parse("").expect("valid");
        assert_eq!(c.server.bounds, Bounds::default());
        let c = parse(
            "header_timeout = \"5s\"\nidle_timeout = \"10s\"\nbody_timeout = \"1m\"\n\
             max_connections = 500\nh2_max_concurrent_streams = 20\n\
             h2_max_header_list_size = \"32KiB\"\nmax_sse_event = \"1MiB\"\n\
             max_response_body = \"8MiB\"",
        )
        .expect("valid");
        let b = c.server.bounds;
        assert_eq!(b.header_timeout, Duration::from_secs(5));
        assert_eq!(b.idle_timeout, Duration::from_secs(10));
        assert_eq!(b.body_timeout, Duration::from_secs(60));
        assert_eq!(b.max_connections, Some(500));
        assert_eq!(b.h2_max_concurrent_streams, 20);
        assert_eq!(b.h2_max_header_list_size, 32 << 10);
        assert_eq!(b.max_sse_event, 1 << 20);
        assert_eq!(b.max_response_body, 8 << 20);
    }

    #[test]
    fn workers_default_to_the_cores_and_are_bounded() {
        let c = parse("").expect("valid");
        assert_eq!(c.server.workers, crate::worker::default_count());
        assert_eq!(parse("workers = 3").expect("valid").server.workers, 3);
        for bad in ["workers = 0", "workers = 257"] {
            let err = parse(bad).expect_err("invalid");
            assert!(
                err.contains("server.workers: must be between 1 and 256"),
                "{err}"
            );
        }
    }

    #[test]
    fn every_bad_bound_is_named() {
        let err = parse(
            "header_timeout = \"0s\"\nidle_timeout = \"soon\"\nmax_connections = 0\n\
             h2_max_concurrent_streams = 0\nmax_sse_event = 0\nmax_response_body = \"9 parsecs\"",
        )
        .expect_err("invalid");
        for field in [
            "server.header_timeout: must be greater than zero",
            "server.idle_timeout: invalid duration",
            "server.max_connections: must be greater than zero",
            "server.h2_max_concurrent_streams: must be greater than zero",
            "server.max_sse_event: must be greater than zero",
            "server.max_response_body: unknown size unit",
        ] {
            assert!(err.contains(field), "{field} missing from:\n{err}");
        }
    }
}
