//! A vocabulary's rank table, read in place from the binary (build.rs lays
//! it out from OpenAI's published `.tiktoken` files).
//!
//! Nothing is built at start or on first use: a lookup hashes the bytes and
//! probes an open-addressing slot array; a slot keeps 14 more bits of its
//! token's hash beside the rank, so only a probable match reads the token's
//! bytes to compare. Resident memory is only the pages counts have touched, at most the
//! table's size (o200k_base 4.3 MB, cl100k_base 2.1 MB), and the kernel
//! may drop them again under pressure (they are file-backed).

use super::table_hash::{slot_tag, token_hash, RANK_BITS};

/// One vocabulary: byte strings to BPE ranks (the rank is the merge
/// priority, lower merges first).
pub(super) struct Table {
    data: &'static [u8],
    bits: u32,
    longest: usize,
    /// The most slots any token's insert probed: a lookup that has probed
    /// this many without finding its bytes is a miss.
    probes: usize,
    slots: usize,
    bytes: usize,
}

/// Where the offsets start: after the four header words.
const OFFSETS: usize = 16;

pub(super) static O200K: Table = Table::new(include_bytes!(concat!(
    env!("OUT_DIR"),
    "/o200k_base.table"
)));
pub(super) static CL100K: Table = Table::new(include_bytes!(concat!(
    env!("OUT_DIR"),
    "/cl100k_base.table"
)));

const fn word(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

impl Table {
    const fn new(data: &'static [u8]) -> Table {
        let tokens = word(data, 0) as usize;
        let bits = word(data, 4);
        let slots = OFFSETS + 4 * (tokens + 1);
        let bytes = slots + 4 * (1 << bits);
        Table {
            data,
            bits,
            longest: word(data, 8) as usize,
            probes: word(data, 12) as usize,
            slots,
            bytes,
        }
    }

    /// How many tokens the vocabulary has.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        word(self.data, 0) as usize
    }

    /// The bytes of the token with this rank.
    pub(super) fn token(&self, rank: u32) -> &'static [u8] {
        let at = OFFSETS + 4 * rank as usize;
        let start = word(self.data, at) as usize;
        let end = word(self.data, at + 4) as usize;
        &self.data[self.bytes + start..self.bytes + end]
    }

    /// The rank of `bytes`, if they are a token.
    pub(super) fn rank(&self, bytes: &[u8]) -> Option<u32> {
        if bytes.is_empty() || bytes.len() > self.longest {
            return None;
        }
        let mask = (1usize << self.bits) - 1;
        let h = token_hash(bytes);
        let tag = slot_tag(h, self.bits);
        let mut i = (h >> (64 - self.bits)) as usize;
        for _ in 0..self.probes {
            let slot = word(self.data, self.slots + 4 * i);
            if slot == 0 {
                return None;
            }
            if slot >> RANK_BITS == tag {
                let rank = (slot & ((1 << RANK_BITS) - 1)) - 1;
                if self.token(rank) == bytes {
                    return Some(rank);
                }
            }
            i = (i + 1) & mask;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_finds_its_own_rank() {
        for table in [&O200K, &CL100K] {
            for rank in 0..table.len() as u32 {
                assert_eq!(table.rank(table.token(rank)), Some(rank));
            }
            // Byte-level BPE: every single byte is a token.
            for b in 0..=255u8 {
                assert!(table.rank(&[b]).is_some(), "byte {b}");
            }
            assert_eq!(table.rank(b""), None);
            assert_eq!(table.rank(&vec![b'x'; table.longest + 1]), None);
        }
        assert_eq!(O200K.len(), 199_998);
        assert_eq!(CL100K.len(), 100_256);
    }

    #[test]
    fn known_ranks() {
        // From the published files: "!" is rank 0 in both, " the" is 279 in
        // cl100k and 290 in o200k.
        assert_eq!(CL100K.rank(b"!"), Some(0));
        assert_eq!(CL100K.rank(b" the"), Some(279));
        assert_eq!(O200K.rank(b" the"), Some(290));
        assert_eq!(CL100K.rank(b"not a token at all, surely"), None);
    }

    #[test]
    fn the_vocabulary_files_are_the_published_ones() {
        use sha2::{Digest, Sha256};
        // The sha256 sums tiktoken checks its downloads against.
        for (file, sum) in [
            (
                "o200k_base.tiktoken",
                "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
            ),
            (
                "cl100k_base.tiktoken",
                "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
            ),
        ] {
            let path = format!("{}/data/tokenizers/{file}", env!("CARGO_MANIFEST_DIR"));
            let bytes = std::fs::read(&path).expect("vocabulary file");
            assert_eq!(hex::encode(Sha256::digest(&bytes)), sum, "{file}");
        }
    }
}
