//! Strings built on the request path without the formatting machinery
//! (`format!` costs ~500–1,000 instructions a call; these a few dozen).

use std::sync::Arc;

/// `parts` joined, in one allocation.
pub fn concat(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
    s
}

/// A model's own name, after any `provider/` prefix (`openai/gpt-4o` →
/// `gpt-4o`). `str::rsplit('/')` took ~600 instructions through the
/// generic pattern searcher; this is one `memrchr`.
pub fn model_name(model: &str) -> &str {
    match memchr::memrchr(b'/', model.as_bytes()) {
        // (`/` is ASCII: the byte after it starts a character.)
        Some(at) => &model[at + 1..],
        None => model,
    }
}

/// `s` split at every `/`, exactly as `str::split('/')` splits it, by a
/// byte loop: request paths are short, and the generic char searcher cost
/// ~120 instructions a segment.
pub fn split_slash(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.bytes().position(|b| b == b'/') {
            // (`/` is ASCII: both sides are character boundaries.)
            Some(at) => {
                rest = Some(&r[at + 1..]);
                Some(&r[..at])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// `prefix` followed by `bytes` in lowercase hex, in one allocation.
pub fn prefixed_hex(prefix: &str, bytes: &[u8]) -> Arc<str> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Made on the stack (the heap only past 96 bytes) and copied once into
    // the `Arc`: a request id and a passthrough key's name are made on
    // every request.
    let len = prefix.len() + 2 * bytes.len();
    let mut stack = [0u8; 96];
    let mut heap = Vec::new();
    let out = match stack.get_mut(..len) {
        Some(out) => out,
        None => {
            heap.resize(len, 0);
            &mut heap[..]
        }
    };
    let (head, hex) = out.split_at_mut(prefix.len());
    head.copy_from_slice(prefix.as_bytes());
    for (pair, b) in hex.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    // A `str` prefix and ASCII digits: always UTF-8.
    Arc::from(std::str::from_utf8(out).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_as_format_would_make_them() {
        assert_eq!(concat(&["openai", "/", "gpt-4o"]), "openai/gpt-4o");
        assert_eq!(concat(&[]), "");
        let z = 0x00ab_cdef_0123_4567_u64;
        assert_eq!(
            &*prefixed_hex("req_", &z.to_be_bytes()),
            format!("req_{z:016x}")
        );
        assert_eq!(&*prefixed_hex("p:", &[]), "p:");
        for p in [
            "",
            "/",
            "//",
            "a",
            "/v1/chat/completions",
            "v1/",
            "a//b/",
            "é/ü/",
            "/%2e/./..",
        ] {
            assert_eq!(
                split_slash(p).collect::<Vec<_>>(),
                p.split('/').collect::<Vec<_>>(),
                "{p:?}"
            );
        }
        for m in ["gpt-4o", "openai/gpt-4o", "a/b/c", "x/", "/", "", "é/ü"] {
            assert_eq!(model_name(m), m.rsplit('/').next().unwrap_or(m));
        }
        // Past the stack buffer, the same text.
        let long = [0xa5u8; 60];
        assert_eq!(
            &*prefixed_hex("x:", &long),
            format!("x:{}", "a5".repeat(60))
        );
    }
}
