//! The open-files limit, and the connection cap that keeps Sluice inside it.
//!
//! Every accepted connection is a file descriptor, and while it has a
//! request in flight it may hold one upstream connection as well; the rest
//! of the process (listeners, the spend journal, the usage log, the admin
//! plane's connections) needs a few more. A cap derived from the limit means
//! a flood of connections makes new ones wait in the kernel's accept queue
//! instead of failing `accept` (and upstream connects) with EMFILE.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors kept outside the data plane's connections: listeners, the
/// journal, logs, the runtime, and the admin plane's connections.
pub const RESERVED_FDS: u64 = 64;
/// Admin-plane connections open at once (inside `RESERVED_FDS`).
pub const ADMIN_MAX_CONNECTIONS: usize = 16;
/// The cap when the fd limit is unlimited.
const UNLIMITED_CAP: usize = 1 << 20;

/// Raises the soft open-files limit to the hard limit (as the Go runtime
/// does), and returns the soft limit in force; `None` = unlimited.
pub fn raise_nofile_limit() -> Option<u64> {
    let lim = getrlimit(Resource::Nofile);
    match (lim.current, lim.maximum) {
        (Some(soft), Some(hard)) if soft < hard => {
            let raised = Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => Some(hard),
                Err(e) => {
                    tracing::debug!(soft, hard, error = %e, "could not raise the open-files limit");
                    Some(soft)
                }
            }
        }
        (soft, _) => soft,
    }
}

/// The data-plane connection cap for a soft fd limit: half of what is left
/// after the reserve, since each connection may hold an upstream one too.
pub fn connection_cap(nofile: Option<u64>) -> usize {
    match nofile {
        None => UNLIMITED_CAP,
        Some(n) => {
            let cap = n.saturating_sub(RESERVED_FDS) / 2;
            usize::try_from(cap)
                .unwrap_or(UNLIMITED_CAP)
                .clamp(1, UNLIMITED_CAP)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_leaves_room_for_upstream_sockets_and_the_reserve() {
        assert_eq!(connection_cap(Some(256)), 96);
        assert_eq!(connection_cap(Some(1024)), 480);
        assert_eq!(connection_cap(Some(65536)), 32736);
        // Never zero, never unbounded.
        assert_eq!(connection_cap(Some(10)), 1);
        assert_eq!(connection_cap(None), UNLIMITED_CAP);
        assert_eq!(connection_cap(Some(u64::MAX)), UNLIMITED_CAP);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = getrlimit(Resource::Nofile).current;
        let after = raise_nofile_limit();
        match (before, after) {
            (Some(b), Some(a)) => assert!(a >= b),
            (None, a) => assert_eq!(a, None),
            (Some(_), None) => panic!("a finite limit became unlimited"),
        }
    }
}
