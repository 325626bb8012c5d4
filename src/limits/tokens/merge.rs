//! Counting one pre-tokenizer piece the way tiktoken encodes it: a piece
//! that is itself a token is one token; otherwise start from single bytes
//! and keep joining the adjacent pair whose join has the lowest rank (the
//! leftmost on a tie) until no adjacent join is a token. Only the count is
//! kept, never the tokens.
//!
//! Short pieces (almost all of them) use a scan over a small array on the
//! stack; long ones (a paragraph of CJK text, a long identifier, a run of
//! punctuation) use a heap of candidate joins, so a hostile piece costs
//! O(n log n), not O(n²).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::table::Table;

/// Pieces up to this many bytes take the scan.
const SHORT: usize = 32;
/// Longest piece merged exactly. A longer one is a run of letters (or of
/// punctuation) with no space, digit or line break for 64 KiB, which no
/// honest text has: it counts as one token per byte, an upper bound (a token
/// is at least one byte), so it can neither be under-counted nor make the
/// merge hold 20 bytes of state per byte of it.
pub(super) const MAX_EXACT: usize = 64 << 10;

/// How many tokens tiktoken makes of `piece` (for a piece over
/// [`MAX_EXACT`] bytes, its length: never fewer).
pub(super) fn count_piece(table: &Table, piece: &[u8]) -> usize {
    match piece.len() {
        0 => 0,
        1 => 1,
        n if n > MAX_EXACT => n,
        _ if table.rank(piece).is_some() => 1,
        n if n <= SHORT => scan(table, piece),
        _ => heap(table, piece),
    }
}

const NONE: u32 = u32::MAX;

/// The rank of `piece[start..end]` as one token, or `NONE`.
fn join(table: &Table, piece: &[u8], start: u32, end: u32) -> u32 {
    table
        .rank(&piece[start as usize..end as usize])
        .unwrap_or(NONE)
}

/// The quadratic merge, for short pieces: `starts[..=parts]` are the parts'
/// boundaries and `ranks[i]` the rank of joining part `i` with part `i + 1`.
fn scan(table: &Table, piece: &[u8]) -> usize {
    let n = piece.len();
    let mut starts = [0u32; SHORT + 1];
    let mut ranks = [NONE; SHORT];
    for (i, s) in starts.iter_mut().enumerate().take(n + 1) {
        *s = i as u32;
    }
    let mut parts = n;
    for i in 0..parts - 1 {
        ranks[i] = join(table, piece, starts[i], starts[i + 2]);
    }
    loop {
        let mut best = NONE;
        let mut at = 0;
        for (i, &r) in ranks[..parts - 1].iter().enumerate() {
            if r < best {
                best = r;
                at = i;
            }
        }
        if best == NONE {
            return parts;
        }
        // Part `at` absorbs part `at + 1`.
        starts.copy_within(at + 2..=parts, at + 1);
        if at + 2 < parts {
            ranks.copy_within(at + 2..parts - 1, at + 1);
        }
        parts -= 1;
        if at + 1 < parts {
            ranks[at] = join(table, piece, starts[at], starts[at + 2]);
        } else {
            ranks[at] = NONE;
        }
        if at > 0 {
            ranks[at - 1] = join(table, piece, starts[at - 1], starts[at + 1]);
        }
        if parts == 1 {
            return 1;
        }
    }
}

/// The same merge for long pieces, with the candidate joins in a min-heap
/// ordered by (rank, start): the heap's top is the join the scan would pick.
/// A part is named by its first byte; `end[s]` is where part `s` ends
/// (0 once it was absorbed) and `prev[s]` where the part before it starts.
/// A heap entry names its join by both outer ends, so an entry made stale by
/// an earlier join no longer matches the parts and is skipped.
fn heap(table: &Table, piece: &[u8]) -> usize {
    let n = piece.len() as u32;
    let mut end: Vec<u32> = (1..=n).collect();
    let mut prev: Vec<u32> = (0..n).map(|s| s.wrapping_sub(1)).collect();
    let mut joins = BinaryHeap::with_capacity(piece.len());
    for s in 0..n - 1 {
        let r = join(table, piece, s, s + 2);
        if r != NONE {
            joins.push(Reverse((r, s, s + 2)));
        }
    }
    let mut parts = piece.len();
    while let Some(Reverse((_, s, e))) = joins.pop() {
        let m = end[s as usize];
        if m == 0 || m >= n || end[m as usize] != e {
            continue;
        }
        end[s as usize] = e;
        end[m as usize] = 0;
        if e < n {
            prev[e as usize] = s;
        }
        parts -= 1;
        let p = prev[s as usize];
        if p != NONE {
            let r = join(table, piece, p, e);
            if r != NONE {
                joins.push(Reverse((r, p, e)));
            }
        }
        if e < n {
            let after = end[e as usize];
            let r = join(table, piece, s, after);
            if r != NONE {
                joins.push(Reverse((r, s, after)));
            }
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::super::table::{CL100K, O200K};
    use super::*;

    /// Byte strings that exercise the merge order: repeats (ties between
    /// overlapping equal joins), mixed scripts, bytes that are not UTF-8.
    fn pieces() -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = vec![
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec(),
            b"abababababababababababababababababababababab".to_vec(),
            b"supercalifragilisticexpialidocious".to_vec(),
            "日本語のテキストと中文文本还有한국어텍스트도있습니다"
                .as_bytes()
                .to_vec(),
            "🚀🔥👩‍💻👨‍👩‍👧‍👦".as_bytes().to_vec(),
            b"\xff\xfe\x00\x01\x80\x80\x80abc\xc3".to_vec(),
            b"----------------------------------------------------------------".to_vec(),
            b"                                                ".to_vec(),
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet: Vec<&[u8]> = vec![
            b"a",
            b"b",
            b"e",
            b"th",
            b"ing",
            b" ",
            b"-",
            b"=",
            b"0",
            b"9",
            "é".as_bytes(),
            "語".as_bytes(),
            "🚀".as_bytes(),
            b"\xff",
        ];
        for _ in 0..2_000 {
            let len = rng.usize(2..80);
            let mut p = Vec::new();
            while p.len() < len {
                p.extend_from_slice(alphabet[rng.usize(..alphabet.len())]);
            }
            out.push(p);
        }
        out
    }

    /// The scan and the heap are the same merge: they agree on every piece,
    /// whatever its length.
    #[test]
    fn scan_and_heap_agree() {
        for table in [&O200K, &CL100K] {
            for p in pieces() {
                if p.len() <= SHORT {
                    assert_eq!(scan(table, &p), heap(table, &p), "{p:?}");
                }
                for chunk in p.chunks(SHORT) {
                    if chunk.len() >= 2 {
                        assert_eq!(scan(table, chunk), heap(table, chunk), "{chunk:?}");
                    }
                }
            }
        }
    }

    /// tiktoken's rule written the obvious way: join the lowest-ranked
    /// adjacent pair (leftmost on a tie) until none is a token.
    fn naive(table: &Table, piece: &[u8]) -> usize {
        if table.rank(piece).is_some() {
            return 1;
        }
        let mut parts: Vec<Vec<u8>> = piece.iter().map(|&b| vec![b]).collect();
        loop {
            let best = (0..parts.len() - 1)
                .filter_map(|i| {
                    table
                        .rank(&[&parts[i][..], &parts[i + 1][..]].concat())
                        .map(|r| (r, i))
                })
                .min();
            match best {
                None => return parts.len(),
                Some((_, i)) => {
                    let right = parts.remove(i + 1);
                    parts[i].extend_from_slice(&right);
                }
            }
        }
    }

    #[test]
    fn pieces_count_as_the_rule_says() {
        for table in [&O200K, &CL100K] {
            for p in pieces() {
                assert_eq!(count_piece(table, &p), naive(table, &p), "{p:?}");
            }
        }
    }

    #[test]
    fn long_pieces_are_merged_up_to_the_bound_then_counted_by_bytes() {
        // Up to the bound: the heap path, exact (as the scan is, chunk by chunk).
        let p = vec![b'a'; MAX_EXACT];
        let n = count_piece(&O200K, &p);
        assert_eq!(n, heap(&O200K, &p));
        assert!(n > 0 && n < p.len() / 4, "{n}");
        // Past it: one token per byte, never fewer than the merge would make.
        let p = vec![b'a'; MAX_EXACT + 1];
        assert_eq!(count_piece(&O200K, &p), p.len());
        assert!(heap(&O200K, &p) <= p.len());
    }
}
