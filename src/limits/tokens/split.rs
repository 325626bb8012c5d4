//! The pre-tokenizers: the regular expressions tiktoken splits text with
//! before any merge (BPE never joins across two pieces).
//!
//! tiktoken's patterns use one look-ahead, `\s+(?!\S)` (a whitespace run
//! leaves its last character to the word after it). The regex engine here
//! has no look-around, so the alternation becomes three patterns, tried in
//! order at each position: everything before the look-ahead (plus `\s+$`,
//! the look-ahead's case at the end of the text), then `\s+\s` with its last
//! character given back (the look-ahead's case before a word), then `\s+`.
//! The match is anchored at the end of the previous piece, so pieces tile
//! the text.

use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::LazyLock;

use regex_automata::meta::{Cache, Regex};
use regex_automata::util::pool::{Pool, PoolGuard};
use regex_automata::{Anchored, Input};

/// One vocabulary's pre-tokenizer.
pub(super) struct Splitter {
    regex: Regex,
    /// Search caches, taken one per text: the regex's own pool would be
    /// taken once per piece, under a lock on every thread but the first.
    /// Holds at most as many caches as texts were ever split at once.
    caches: Pool<Cache, NewCache>,
}

type NewCache = Box<dyn Fn() -> Cache + Send + Sync + UnwindSafe + RefUnwindSafe>;

/// The pattern whose last character is a look-ahead, given back.
const LOOKAHEAD: usize = 1;

impl Splitter {
    fn new(words: &str) -> Splitter {
        let patterns = [words, r"\s+\s", r"\s+"];
        // Constant patterns, built by every test below: this cannot fail.
        let regex = Regex::new_many(&patterns).expect("the pre-tokenizer patterns compile");
        let for_caches = regex.clone();
        let caches = Pool::new(Box::new(move || for_caches.create_cache()) as NewCache);
        Splitter { regex, caches }
    }

    /// Calls `piece` with each piece of `text`, in order.
    pub(super) fn each(&self, text: &str, mut piece: impl FnMut(&str)) {
        let mut cache: PoolGuard<'_, Cache, NewCache> = self.caches.get();
        let mut at = 0;
        while at < text.len() {
            let input = Input::new(text).range(at..).anchored(Anchored::Yes);
            let end = match self.regex.search_with(&mut cache, &input) {
                Some(m) if m.pattern().as_usize() == LOOKAHEAD => {
                    // `\s+\s` matched at least two characters: give the last back.
                    let run = &text[at..m.end()];
                    m.end() - run.chars().next_back().map_or(0, char::len_utf8)
                }
                Some(m) if m.end() > at => m.end(),
                // Every character matches one of the patterns; should one
                // ever not, it is a piece on its own rather than lost.
                _ => at + text[at..].chars().next().map_or(1, char::len_utf8),
            };
            piece(&text[at..end]);
            at = end;
        }
    }
}

/// o200k_base's pattern (tiktoken's `O200K_BASE_PAT_STR` up to the
/// look-ahead): words with their leading punctuation and a contraction,
/// split at case changes; numbers in threes; punctuation runs; newlines.
pub(super) static O200K: LazyLock<Splitter> = LazyLock::new(|| {
    Splitter::new(concat!(
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|\p{N}{1,3}",
        r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"|\s*[\r\n]+",
        r"|\s+$",
    ))
});

/// cl100k_base's pattern, the same way.
pub(super) static CL100K: LazyLock<Splitter> = LazyLock::new(|| {
    Splitter::new(concat!(
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)",
        r"|[^\r\n\p{L}\p{N}]?\p{L}+",
        r"|\p{N}{1,3}",
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*",
        r"|\s*[\r\n]+",
        r"|\s+$",
    ))
});

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(s: &Splitter, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        s.each(text, |p| out.push(p.to_owned()));
        out
    }

    #[test]
    fn pieces_tile_the_text() {
        let text = "Hello,  world!\n\n  It's 12345 o'clock   \t\r\n日本語 🚀🚀 end  ";
        for s in [&*O200K, &*CL100K] {
            assert_eq!(pieces(s, text).concat(), text);
        }
    }

    #[test]
    fn a_whitespace_run_leaves_its_last_space_to_the_next_word() {
        assert_eq!(
            pieces(&O200K, "a   b"),
            vec!["a", "  ", " b"],
            "the look-ahead case"
        );
        assert_eq!(pieces(&O200K, "a   "), vec!["a", "   "], "at the end");
        assert_eq!(pieces(&O200K, "a b"), vec!["a", " b"]);
        assert_eq!(
            pieces(&CL100K, "x  \u{3000}y"),
            vec!["x", "  ", "\u{3000}y"]
        );
    }
}
