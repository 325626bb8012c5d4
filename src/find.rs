//! Byte-string search with each needle's searcher built once.
//!
//! `memchr::memmem::find(haystack, needle)` builds a searcher for the
//! needle on every call, which costs more than the search itself on a
//! stream's short events (a profile of streams at c=16 had it at ~10 % of
//! Sluice's own CPU). `find!(haystack, b"needle")` keeps one searcher per
//! call site in a static, built on first use.

/// The first position of a literal needle in a haystack, with the needle's
/// searcher built once (per call site).
macro_rules! find {
    ($haystack:expr, $needle:expr) => {{
        static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new($needle));
        FINDER.find($haystack)
    }};
}

/// Whether a haystack holds a literal needle (see `find!`).
macro_rules! contains {
    ($haystack:expr, $needle:expr) => {
        $crate::find::find!($haystack, $needle).is_some()
    };
}

/// Every position of a literal needle, not overlapping (see `find!`).
macro_rules! find_iter {
    ($haystack:expr, $needle:expr) => {{
        static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new($needle));
        FINDER.find_iter($haystack)
    }};
}

pub(crate) use {contains, find, find_iter};

#[cfg(test)]
mod tests {
    #[test]
    fn finds_like_memmem() {
        let hay: &[u8] = b"data: {\"usage\":{\"a\":1}} \"usage\":{";
        assert_eq!(
            find!(hay, b"\"usage\":{"),
            memchr::memmem::find(hay, b"\"usage\":{")
        );
        assert!(contains!(hay, b"data:"));
        assert!(!contains!(hay, b"missing"));
        assert_eq!(find_iter!(hay, b"usage").count(), 2);
        // Each call site keeps its own searcher: the same site, other haystacks.
        for h in [&b"xx\n\nyy"[..], b"\n\n", b"none"] {
            assert_eq!(find!(h, b"\n\n"), memchr::memmem::find(h, b"\n\n"));
        }
    }
}
