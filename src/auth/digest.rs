//! The SHA-256 of a presented key, remembered per thread.
//!
//! Every request's key is hashed: virtual keys are found by their digest,
//! and a key passed through is named by it. On a CPU without SHA extensions
//! that is ~3.6k instructions, 4 % of a plain request, spent again on every
//! request of a client that always sends the same key. So each thread keeps
//! the digests of the keys it saw last, in a direct-mapped table: a key's
//! slot is chosen by a hash seeded at random per thread, and a hit is
//! confirmed by comparing the whole key in constant time (`subtle`), so
//! neither the table's layout nor the comparison tells a client anything
//! about another client's key. A key that misses is hashed and replaces
//! the slot's key.
//!
//! Bound: [`SLOTS`] keys of at most [`MAX_KEY`] bytes per thread (~34 KiB
//! at most); a longer key is hashed every time.

use std::cell::RefCell;
use std::hash::BuildHasher;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Keys remembered per thread (a power of two).
pub const SLOTS: usize = 64;
/// The longest key remembered, in bytes.
pub const MAX_KEY: usize = 512;

struct Slot {
    key: Box<[u8]>,
    digest: [u8; 32],
}

struct Memo {
    seed: foldhash::fast::RandomState,
    slots: [Option<Slot>; SLOTS],
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo {
        seed: foldhash::fast::RandomState::default(),
        slots: [const { None }; SLOTS],
    });
}

/// SHA-256 of `key`.
pub fn sha256(key: &[u8]) -> [u8; 32] {
    if key.len() > MAX_KEY {
        return Sha256::digest(key).into();
    }
    // (A thread being torn down has no table: the key is hashed.)
    let remembered = MEMO.try_with(|memo| {
        let mut memo = memo.borrow_mut();
        let at = memo.seed.hash_one(key) as usize & (SLOTS - 1);
        let slot = &mut memo.slots[at];
        // (`ct_eq` on slices is false for different lengths.)
        if let Some(s) = slot.as_ref().filter(|s| bool::from(s.key.ct_eq(key))) {
            return s.digest;
        }
        let digest: [u8; 32] = Sha256::digest(key).into();
        *slot = Some(Slot {
            key: key.into(),
            digest,
        });
        digest
    });
    remembered.unwrap_or_else(|_| Sha256::digest(key).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(key: &[u8]) -> [u8; 32] {
        Sha256::digest(key).into()
    }

    #[test]
    fn remembered_or_not_the_digest_is_the_keys() {
        // Far more keys than slots, twice over: hits, misses and keys that
        // push each other out of a slot.
        let keys: Vec<Vec<u8>> = (0..SLOTS * 4)
            .map(|i| format!("sk-test-{i}").into_bytes())
            .collect();
        for _ in 0..2 {
            for k in &keys {
                assert_eq!(sha256(k), plain(k));
                assert_eq!(sha256(k), plain(k), "a second time, from the table");
            }
        }
        // Keys that differ only in length or in their last byte.
        for k in [&b""[..], b"a", b"ab", b"abc", b"abd", b"sk-test-1\0"] {
            assert_eq!(sha256(k), plain(k));
        }
        let long = vec![b'k'; MAX_KEY + 1];
        assert_eq!(sha256(&long), plain(&long));
        assert_eq!(sha256(&long[..MAX_KEY]), plain(&long[..MAX_KEY]));
    }
}
