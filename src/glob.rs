//! Model-name globs: `*` stands for any run of characters. A leaf module:
//! config validation, routing, allow-lists, limits and budgets all match
//! model names the same way.

use std::collections::HashMap;

/// The maps' hasher: foldhash, seeded per process. Their keys come from the
/// config, never from clients, so a client's names can only be looked up,
/// not pile into one bucket; SipHash cost ~150 instructions a lookup, and
/// every request looks its model up a few times.
type Fast = foldhash::fast::RandomState;

/// Whether `model` matches a model filter: `None` matches everything,
/// otherwise any of the globs (key allow-lists, rate limits, budgets).
pub fn in_filter(patterns: Option<&Vec<String>>, model: &str) -> bool {
    patterns.is_none_or(|pats| pats.iter().any(|p| glob_match(p, model)))
}

/// Matches `text` against a pattern where `*` stands for any run of
/// characters. Allocation-free: the literal head and tail are stripped, and
/// the parts between stars are found leftmost-first in what lies between
/// (the earliest placement of each part leaves the most room for the rest).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // (The stars found by `memchr`: `split_once('*')` goes through the
    // generic pattern searcher, ~300 instructions a call.)
    let Some(star) = memchr::memchr(b'*', pattern.as_bytes()) else {
        return pattern == text;
    };
    let (first, rest) = (&pattern[..star], &pattern[star + 1..]);
    let (middle, last) = match memchr::memrchr(b'*', rest.as_bytes()) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => ("", rest),
    };
    let Some(between) = text.strip_prefix(first).and_then(|t| t.strip_suffix(last)) else {
        return false;
    };
    let mut remaining = between;
    for part in middle.split('*').filter(|p| !p.is_empty()) {
        match remaining.find(part) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// An ordered list of globs compiled for lookup: the first pattern (in list
/// order) that matches a name is found with one hash lookup for exact
/// patterns and one per distinct literal-prefix length for globs, instead of
/// a glob match per pattern. 2,000 `m-N-*` rules cost about five lookups.
#[derive(Debug, Default)]
pub struct GlobIndex {
    patterns: Vec<Box<str>>,
    /// Exact (star-free) patterns → their positions, ascending.
    exact: HashMap<Box<str>, Vec<usize>, Fast>,
    /// Globs by their literal prefix (what precedes the first `*`) →
    /// positions, ascending.
    by_prefix: HashMap<Box<str>, Vec<usize>, Fast>,
    /// The distinct lengths of those prefixes, ascending.
    prefix_lens: Vec<usize>,
}

impl GlobIndex {
    /// Compiles `patterns`; positions in lookups are indices into it.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Self {
        let mut index = GlobIndex::default();
        for (i, p) in patterns.into_iter().enumerate() {
            index.patterns.push(p.into());
            match p.split_once('*') {
                None => index.exact.entry(p.into()).or_default().push(i),
                Some((prefix, _)) => {
                    index.by_prefix.entry(prefix.into()).or_default().push(i);
                    index.prefix_lens.push(prefix.len());
                }
            }
        }
        index.prefix_lens.sort_unstable();
        index.prefix_lens.dedup();
        index
    }

    /// The pattern at position `i`.
    pub fn pattern(&self, i: usize) -> Option<&str> {
        self.patterns.get(i).map(|p| &**p)
    }

    /// Whether any pattern matches `name`.
    pub fn matches_any(&self, name: &str) -> bool {
        self.first(name, |_| true).is_some()
    }

    /// The first position (in list order) whose pattern matches `name` and
    /// for which `accept` holds — exactly what scanning the list in order
    /// would find.
    pub fn first(&self, name: &str, accept: impl FnMut(usize) -> bool) -> Option<usize> {
        self.first_in(name, true, accept)
    }

    /// As `first`, among the glob patterns only.
    pub fn first_glob(&self, name: &str, accept: impl FnMut(usize) -> bool) -> Option<usize> {
        self.first_in(name, false, accept)
    }

    fn first_in(
        &self,
        name: &str,
        exact: bool,
        mut accept: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let mut best: Option<usize> = None;
        // Each candidate list is ascending: its first accepted match is its
        // earliest, and nothing at or past the best so far can win.
        let mut scan = |list: &[usize], full_match: bool, best: &mut Option<usize>| {
            for &i in list {
                if best.is_some_and(|b| i >= b) {
                    return;
                }
                let matched =
                    !full_match || self.patterns.get(i).is_some_and(|p| glob_match(p, name));
                if matched && accept(i) {
                    *best = Some(i);
                    return;
                }
            }
        };
        if exact {
            if let Some(list) = self.exact.get(name) {
                scan(list, false, &mut best);
            }
        }
        for &len in &self.prefix_lens {
            // A cut inside a character cannot equal a (valid UTF-8) prefix.
            let Some(prefix) = name.get(..len) else {
                if len > name.len() {
                    break;
                }
                continue;
            };
            if let Some(list) = self.by_prefix.get(prefix) {
                scan(list, true, &mut best);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matcher as it was before it stopped allocating.
    fn reference_match(pattern: &str, text: &str) -> bool {
        let Some((first, rest)) = pattern.split_once('*') else {
            return pattern == text;
        };
        let Some(mut remaining) = text.strip_prefix(first) else {
            return false;
        };
        let mut parts: Vec<&str> = rest.split('*').collect();
        let last = parts.pop().unwrap_or("");
        for part in parts {
            match remaining.find(part) {
                Some(i) => remaining = &remaining[i + part.len()..],
                None => return false,
            }
        }
        remaining.len() >= last.len() && remaining.ends_with(last)
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("*", ""));
        assert!(glob_match("claude-*", "claude-sonnet-4"));
        assert!(!glob_match("claude-*", "gpt-4o"));
        assert!(glob_match("gpt-*-mini", "gpt-4o-mini"));
        assert!(!glob_match("gpt-*-mini", "gpt-4o"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*bc", "abc-"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("ab*ab", "ab"));
        assert!(!glob_match("a*a", "a"));
        assert!(glob_match("a**a", "aa"));
        assert!(glob_match("é*ü", "éxü"));
    }

    /// A small deterministic generator (an LCG), so the randomised cases
    /// are the same on every run.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }

        fn word(&mut self, alphabet: &[&str], max_len: u64) -> String {
            let len = self.below(max_len + 1);
            (0..len)
                .map(|_| alphabet[self.below(alphabet.len() as u64)])
                .collect()
        }
    }

    const PATTERN_ALPHABET: &[&str] = &["a", "b", "-", "é", "*", "*", "ab"];
    const NAME_ALPHABET: &[&str] = &["a", "b", "-", "é"];

    #[test]
    fn matcher_agrees_with_the_reference() {
        let mut rng = Lcg(7);
        for _ in 0..50_000 {
            let p = rng.word(PATTERN_ALPHABET, 6);
            let t = rng.word(NAME_ALPHABET, 8);
            assert_eq!(glob_match(&p, &t), reference_match(&p, &t), "{p:?} {t:?}");
        }
    }

    #[test]
    fn index_finds_what_an_ordered_scan_finds() {
        let mut rng = Lcg(42);
        for round in 0..400 {
            let n = 1 + rng.below(40);
            let patterns: Vec<String> = (0..n).map(|_| rng.word(PATTERN_ALPHABET, 5)).collect();
            // Which positions a caller accepts (a provider that speaks the
            // request's API, say): fixed per round.
            let accepted: Vec<bool> = (0..n).map(|_| rng.below(4) != 0).collect();
            let index = GlobIndex::new(patterns.iter().map(String::as_str));
            for _ in 0..60 {
                let name = if rng.below(3) == 0 {
                    // Exactly a pattern, stars and all.
                    patterns[rng.below(n as u64)].clone()
                } else {
                    rng.word(NAME_ALPHABET, 7)
                };
                let linear = (0..n).find(|&i| glob_match(&patterns[i], &name) && accepted[i]);
                assert_eq!(
                    index.first(&name, |i| accepted[i]),
                    linear,
                    "round {round}: {patterns:?} {name:?}"
                );
                let linear_glob = (0..n).find(|&i| {
                    patterns[i].contains('*') && glob_match(&patterns[i], &name) && accepted[i]
                });
                assert_eq!(index.first_glob(&name, |i| accepted[i]), linear_glob);
                assert_eq!(
                    index.matches_any(&name),
                    patterns.iter().any(|p| glob_match(p, &name))
                );
            }
        }
    }

    #[test]
    fn first_in_config_order_wins_between_exact_and_glob() {
        let index = GlobIndex::new(["gpt-*", "gpt-4o", "*", "gpt-4o"]);
        assert_eq!(index.first("gpt-4o", |_| true), Some(0));
        assert_eq!(index.first("gpt-4o", |i| i != 0), Some(1));
        assert_eq!(index.first("gpt-4o", |i| i > 1), Some(2));
        assert_eq!(index.first("gpt-4o", |i| i == 3), Some(3));
        assert_eq!(index.first("claude", |_| true), Some(2));
        assert_eq!(index.first_glob("gpt-4o", |i| i != 0), Some(2));
        assert_eq!(index.pattern(1), Some("gpt-4o"));
    }
}
