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

/// `prefix` followed by `bytes` in lowercase hex, in one allocation.
pub fn prefixed_hex(prefix: &str, bytes: &[u8]) -> Arc<str> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(prefix.len() + 2 * bytes.len());
    s.push_str(prefix);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    Arc::from(s)
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
    }
}
