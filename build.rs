//! Lays out the tokenizer vocabularies (data/tokenizers/*.tiktoken, OpenAI's
//! published files) as tables compiled into the binary: Sluice reads them in
//! place, so a count needs no start-up work and keeps resident only the pages
//! it touches (src/limits/tokens/table.rs reads this layout).
//!
//! Layout, every number a little-endian u32:
//!   header: token count, slot bits, longest token's length, longest probe
//!   offsets: token count + 1 (token r is bytes[offsets[r]..offsets[r + 1]])
//!   slots: 1 << slot bits (0 empty, else `tag << 18 | rank + 1`; linear
//!          probing from the top bits of `token_hash`, the tag the 14 bits
//!          below those, so a probe rejects another token without reading it)
//!   bytes: every token's bytes, in rank order

#![allow(
    clippy::print_stdout,
    reason = "cargo reads a build script's directives from its stdout"
)]

use std::path::Path;

use base64::Engine as _;

include!("src/limits/tokens/table_hash.rs");

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    for name in ["o200k_base", "cl100k_base"] {
        let src = format!("data/tokenizers/{name}.tiktoken");
        println!("cargo::rerun-if-changed={src}");
        let text = std::fs::read_to_string(&src).expect("the vocabulary file is readable");
        let table = lay_out(&text).unwrap_or_else(|e| panic!("{src}: {e}"));
        std::fs::write(Path::new(&out).join(format!("{name}.table")), table)
            .expect("OUT_DIR is writable");
    }
    println!("cargo::rerun-if-changed=src/limits/tokens/table_hash.rs");
    println!("cargo::rerun-if-changed=build.rs");
}

fn lay_out(text: &str) -> Result<Vec<u8>, String> {
    let mut tokens: Vec<Vec<u8>> = Vec::new();
    for (line_no, line) in text.lines().enumerate() {
        let (b64, rank) = line
            .split_once(' ')
            .ok_or_else(|| format!("line {}: no rank", line_no + 1))?;
        let rank: usize = rank
            .parse()
            .map_err(|_| format!("line {}: bad rank", line_no + 1))?;
        // Ranks are the line order in both published files; the table
        // stores none and relies on it.
        if rank != tokens.len() {
            return Err(format!("line {}: rank {rank} out of order", line_no + 1));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("line {}: {e}", line_no + 1))?;
        if bytes.is_empty() {
            return Err(format!("line {}: empty token", line_no + 1));
        }
        tokens.push(bytes);
    }
    let n = tokens.len();
    if n + 1 >= 1 << RANK_BITS {
        return Err(format!("{n} tokens do not fit {RANK_BITS} bits"));
    }
    // At most 1/2 full, so a miss stops after a probe or two.
    let bits = (2 * n).next_power_of_two().trailing_zeros();
    let mask = (1usize << bits) - 1;
    let mut slots = vec![0u32; 1 << bits];
    let mut longest_probe = 0usize;
    for (rank, t) in tokens.iter().enumerate() {
        let h = token_hash(t);
        let mut i = (h >> (64 - bits)) as usize;
        let mut probe = 1;
        while slots[i] != 0 {
            let other = (slots[i] & ((1 << RANK_BITS) - 1)) as usize - 1;
            if tokens[other] == *t {
                return Err(format!("token {rank} repeats token {other}"));
            }
            i = (i + 1) & mask;
            probe += 1;
        }
        slots[i] = slot_tag(h, bits) << RANK_BITS | (rank as u32 + 1);
        longest_probe = longest_probe.max(probe);
    }
    let max_len = tokens.iter().map(Vec::len).max().unwrap_or(0);
    let total: usize = tokens.iter().map(Vec::len).sum();

    let mut out = Vec::with_capacity(4 * (4 + n + 1 + slots.len()) + total);
    for v in [n, bits as usize, max_len, longest_probe] {
        out.extend_from_slice(&(v as u32).to_le_bytes());
    }
    let mut at = 0u32;
    for t in &tokens {
        out.extend_from_slice(&at.to_le_bytes());
        at += t.len() as u32;
    }
    out.extend_from_slice(&at.to_le_bytes());
    for s in &slots {
        out.extend_from_slice(&s.to_le_bytes());
    }
    for t in &tokens {
        out.extend_from_slice(t);
    }
    Ok(out)
}
