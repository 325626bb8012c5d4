// The hash that places a token in its vocabulary's table. build.rs includes
// this file to lay the tables out, and the lookups in table.rs use the same
// function, so the two can never disagree. Eight bytes per multiply: tokens
// are short (o200k's longest is 128 bytes), and the vocabulary is fixed, so
// no key here is chosen by a client.

/// Hash of a token's bytes; a table slot is taken from its top bits.
pub fn token_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        h = (h.rotate_left(26) ^ w).wrapping_mul(K);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut w = 0u64;
        for (i, &b) in rest.iter().enumerate() {
            w |= u64::from(b) << (8 * i);
        }
        h = (h.rotate_left(26) ^ w).wrapping_mul(K);
    }
    h ^ (h >> 31)
}

/// Bits of a table slot that hold the rank (plus one; 0 is an empty slot).
pub const RANK_BITS: u32 = 18;

/// The tag a slot keeps beside the rank: the 14 hash bits below the ones
/// that chose the slot (`bits` of them).
pub fn slot_tag(hash: u64, bits: u32) -> u32 {
    ((hash >> (64 - bits - (32 - RANK_BITS))) as u32) & ((1 << (32 - RANK_BITS)) - 1)
}
