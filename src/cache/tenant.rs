//! Who may share cache entries: the tenant part of the key.
//!
//! - `key`: each virtual key, and each distinct passthrough credential (by a
//!   128-bit hash of it), is its own tenant;
//! - `team`: keys of one team share; a key without a team, and every
//!   passthrough credential, is its own tenant (never one big "no team"
//!   tenant);
//! - `shared`: everyone shares, passthrough credentials included — a hit is
//!   then served without the provider having seen the client's key, so an
//!   operator choosing it for passthrough clients accepts that.

use crate::auth::Identity;
use crate::config::CacheScope;

/// The tenant scope of a request's cache entries.
pub fn tenant(scope: CacheScope, identity: &Identity, passthrough: bool) -> String {
    let key = || format!("key:{}", identity.key.as_deref().unwrap_or(""));
    match scope {
        CacheScope::Shared => String::new(),
        CacheScope::Key => key(),
        CacheScope::Team if passthrough => key(),
        CacheScope::Team => match identity.team.as_deref() {
            Some(team) => format!("team:{team}"),
            None => key(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: &str, team: Option<&str>) -> Identity {
        Identity {
            key: Some(key.into()),
            team: team.map(Into::into),
            ..Identity::default()
        }
    }

    #[test]
    fn tenants() {
        let a = id("a", None);
        let b = id("b", None);
        let t1 = id("c", Some("ops"));
        let t2 = id("d", Some("ops"));
        let team = CacheScope::Team;
        assert_ne!(tenant(team, &a, false), tenant(team, &b, false));
        assert_eq!(tenant(team, &t1, false), tenant(team, &t2, false));
        // A team called like a key never meets that key.
        assert_ne!(
            tenant(team, &id("x", Some("a")), false),
            tenant(team, &a, false)
        );
        // Passthrough credentials stay apart even when they claim a team.
        assert_ne!(tenant(team, &t1, true), tenant(team, &t2, true));
        assert_ne!(
            tenant(CacheScope::Key, &t1, false),
            tenant(CacheScope::Key, &t2, false)
        );
        assert_eq!(
            tenant(CacheScope::Shared, &a, true),
            tenant(CacheScope::Shared, &b, false)
        );
    }
}
