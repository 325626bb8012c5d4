//! Prices and cost. Money is integer nano-dollars throughout (a price of
//! $2.50 per 1M tokens is 2,500 nano-dollars per token), never floats in
//! the ledger.

use std::collections::HashMap;

use serde::Deserialize;

use crate::usage::Usage;

/// Nano-dollars (1e-9 USD).
pub type Nanos = u64;

/// Converts dollars (from config) to nano-dollars.
pub fn usd_to_nanos(usd: f64) -> Nanos {
    (usd * 1e9).round().max(0.0) as Nanos
}

/// Converts nano-dollars to dollars, for display.
pub fn nanos_to_usd(n: Nanos) -> f64 {
    n as f64 / 1e9
}

/// `n` nano-dollars as a decimal number of dollars with `decimals` (at most
/// 9) places, cut (never rounded up: a remaining budget is not shown larger
/// than it is). Integer arithmetic, so exact at any size, and no formatting
/// machinery on the request path.
pub fn usd_text(n: Nanos, decimals: u32) -> String {
    let decimals = decimals.min(9);
    let mut digits = itoa::Buffer::new();
    let mut s = String::with_capacity(24);
    s.push_str(digits.format(n / 1_000_000_000));
    if decimals > 0 {
        let frac = (n % 1_000_000_000) / 10u64.pow(9 - decimals);
        let frac = digits.format(frac);
        s.push('.');
        for _ in frac.len()..decimals as usize {
            s.push('0');
        }
        s.push_str(frac);
    }
    s
}

/// One set of per-token rates, in nano-dollars per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    pub input: Nanos,
    pub cached_input: Nanos,
    /// Prompt-cache writes with the provider's short lifetime (Anthropic's
    /// 5 minutes).
    pub cache_write: Nanos,
    /// Prompt-cache writes kept an hour (Anthropic's `ttl: "1h"`).
    pub cache_write_1h: Nanos,
    pub output: Nanos,
}

impl Rates {
    /// From USD per 1M tokens (what price lists show): USD/1M tokens ×
    /// 1e9 nano/USD ÷ 1e6 tokens = × 1000 nano-dollars per token. A cache
    /// rate not given is the input rate; the hour-long write rate not given
    /// is the short one.
    pub fn from_per_million(
        input: f64,
        cached: Option<f64>,
        write: Option<f64>,
        write_1h: Option<f64>,
        output: f64,
    ) -> Rates {
        let per_token = |usd_per_m: f64| (usd_per_m * 1000.0).round().max(0.0) as Nanos;
        let cache_write = per_token(write.unwrap_or(input));
        Rates {
            input: per_token(input),
            cached_input: per_token(cached.unwrap_or(input)),
            cache_write,
            cache_write_1h: write_1h.map_or(cache_write, per_token),
            output: per_token(output),
        }
    }

    /// The cost of a request's usage at these rates.
    /// Saturating: absurd counts cost `u64::MAX`, never a wrapped small sum.
    fn cost(&self, u: &Usage) -> Nanos {
        let fresh = u
            .input
            .saturating_sub(u.cached_input.saturating_add(u.cache_write));
        let long_writes = u.cache_write_1h.min(u.cache_write);
        fresh
            .saturating_mul(self.input)
            .saturating_add(u.cached_input.saturating_mul(self.cached_input))
            .saturating_add((u.cache_write - long_writes).saturating_mul(self.cache_write))
            .saturating_add(long_writes.saturating_mul(self.cache_write_1h))
            .saturating_add(u.output.saturating_mul(self.output))
    }

    /// The dearest rate an input token can be billed at.
    fn dearest_input(&self) -> Nanos {
        self.input.max(self.cache_write).max(self.cache_write_1h)
    }
}

/// A model's price: its rates, the rates above a long-context threshold,
/// and its batch discount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    pub base: Rates,
    /// Above this many input tokens (all of them, cached or not), the whole
    /// request is billed at these rates (e.g. Claude Sonnet 4 over 200k).
    pub long_context: Option<(u64, Rates)>,
    /// A batch API's result costs this many thousandths of the list price.
    pub batch_permille: u32,
}

/// The batch discount when an entry names none: half price, as OpenAI's and
/// Anthropic's batch APIs charge.
pub const DEFAULT_BATCH_PERMILLE: u32 = 500;

impl Price {
    /// A price without tiers (the rates as in [`Rates::from_per_million`]).
    pub fn from_per_million(
        input: f64,
        cached: Option<f64>,
        write: Option<f64>,
        output: f64,
    ) -> Price {
        Price {
            base: Rates::from_per_million(input, cached, write, None, output),
            long_context: None,
            batch_permille: DEFAULT_BATCH_PERMILLE,
        }
    }

    /// The rates a request with `input` prompt tokens is billed at.
    pub fn rates(&self, input: u64) -> &Rates {
        match &self.long_context {
            Some((above, long)) if input > *above => long,
            _ => &self.base,
        }
    }

    /// The cost of a request's usage.
    /// Saturating: absurd counts cost `u64::MAX`, never a wrapped small sum.
    pub fn cost(&self, u: &Usage) -> Nanos {
        self.rates(u.input).cost(u)
    }

    /// The cost of a request's usage run through a batch API.
    pub fn batch_cost(&self, u: &Usage) -> Nanos {
        let list = self.cost(u);
        // u128: a saturated list price times the permille must not wrap.
        let discounted = u128::from(list) * u128::from(self.batch_permille) / 1000;
        Nanos::try_from(discounted).unwrap_or(Nanos::MAX)
    }

    /// The most a request can cost: every input token at the dearest input
    /// rate and the whole output cap, at the rates its input size selects.
    pub fn worst_case(&self, input_tokens: u64, max_output: u64) -> Nanos {
        let r = self.rates(input_tokens);
        input_tokens
            .saturating_mul(r.dearest_input())
            .saturating_add(max_output.saturating_mul(r.output))
    }

    /// The output rate at the rates `input_tokens` selects.
    pub fn output_rate(&self, input_tokens: u64) -> Nanos {
        self.rates(input_tokens).output
    }
}

/// Prices by model name: an entry prices its exact name, its dated
/// snapshots (`-YYYY-MM-DD`, `-YYYYMMDD`, `-MMDD`) and its `-latest` alias;
/// any other variant (`o3-pro`, `gpt-5-codex`, …) needs its own entry.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    /// Sorted by name length, longest first.
    entries: Vec<(String, Price)>,
    /// The same entries by exact name: most requests name a priced model
    /// exactly, and a hash is cheaper than scanning for the longest prefix.
    /// (foldhash: the keys come from config; a client's name is only
    /// looked up.)
    exact: HashMap<String, Price, foldhash::fast::RandomState>,
}

/// Whether `suffix` (what follows an entry's name) names a snapshot or an
/// alias of the same model: empty, `-latest`, or a date in one of the forms
/// the providers use (`-2024-05-13`, `-20250514`, `-0125`).
fn same_model_suffix(suffix: &str) -> bool {
    let Some(rest) = suffix.strip_prefix('-') else {
        return suffix.is_empty();
    };
    if rest == "latest" {
        return true;
    }
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    // A month and a day that exist (so `-2024` is not read as a `-MMDD`).
    let month_day = |m: &str, d: &str| {
        matches!(m.parse::<u8>(), Ok(1..=12)) && matches!(d.parse::<u8>(), Ok(1..=31))
    };
    match rest.len() {
        4 => digits(rest, 4) && month_day(&rest[..2], &rest[2..]),
        8 => digits(rest, 8) && month_day(&rest[4..6], &rest[6..]),
        10 => {
            let b = rest.as_bytes();
            b[4] == b'-'
                && b[7] == b'-'
                && digits(&rest[..4], 4)
                && digits(&rest[5..7], 2)
                && digits(&rest[8..], 2)
                && month_day(&rest[5..7], &rest[8..])
        }
        _ => false,
    }
}

#[derive(Deserialize)]
struct File {
    price: Vec<Entry>,
}

/// One price entry (also the shape of `[[pricing]]` in proxy.toml).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub model: String,
    pub input: f64,
    pub cached_input: Option<f64>,
    pub cache_write: Option<f64>,
    pub cache_write_1h: Option<f64>,
    pub output: f64,
    /// Rates for requests over a long-context threshold.
    pub long_context: Option<LongContextEntry>,
    /// The batch APIs' price as a fraction of the list price (default 0.5).
    pub batch: Option<f64>,
}

/// `long_context = { above = 200000, input = 6.0, output = 22.5, … }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContextEntry {
    /// Input tokens beyond which these rates apply to the whole request.
    pub above: u64,
    pub input: f64,
    pub cached_input: Option<f64>,
    pub cache_write: Option<f64>,
    pub cache_write_1h: Option<f64>,
    pub output: f64,
}

impl Entry {
    pub fn price(&self) -> Price {
        Price {
            base: Rates::from_per_million(
                self.input,
                self.cached_input,
                self.cache_write,
                self.cache_write_1h,
                self.output,
            ),
            long_context: self.long_context.as_ref().map(|l| {
                let rates = Rates::from_per_million(
                    l.input,
                    l.cached_input,
                    l.cache_write,
                    l.cache_write_1h,
                    l.output,
                );
                (l.above, rates)
            }),
            batch_permille: self.batch.map_or(DEFAULT_BATCH_PERMILLE, |b| {
                (b * 1000.0).round().clamp(0.0, 1000.0) as u32
            }),
        }
    }

    /// What is wrong with this entry, if anything (for `sluice check`).
    pub fn problem(&self) -> Option<String> {
        let rates = [
            Some(self.input),
            self.cached_input,
            self.cache_write,
            self.cache_write_1h,
            Some(self.output),
        ];
        let long = self.long_context.as_ref();
        let long_rates = long.map_or(Vec::new(), |l| {
            vec![
                Some(l.input),
                l.cached_input,
                l.cache_write,
                l.cache_write_1h,
                Some(l.output),
            ]
        });
        if rates
            .iter()
            .chain(&long_rates)
            .flatten()
            .any(|r| !r.is_finite() || *r < 0.0)
        {
            return Some("prices are USD per 1M tokens, finite and not negative".into());
        }
        if self.batch.is_some_and(|b| !(0.0..=1.0).contains(&b)) {
            return Some("batch: a fraction of the list price, from 0 to 1".into());
        }
        if long.is_some_and(|l| l.above == 0) {
            return Some("long_context.above: a number of input tokens above 0".into());
        }
        None
    }
}

const DEFAULTS: &str = include_str!("prices.toml");

impl PriceTable {
    /// The shipped defaults, with `overrides` replacing or adding entries.
    pub fn with_overrides(overrides: &[Entry]) -> PriceTable {
        let mut entries: Vec<(String, Price)> = toml::from_str::<File>(DEFAULTS)
            .map(|f| {
                f.price
                    .iter()
                    .map(|e| (e.model.clone(), e.price()))
                    .collect()
            })
            .unwrap_or_default();
        for o in overrides {
            entries.retain(|(m, _)| m != &o.model);
            entries.push((o.model.clone(), o.price()));
        }
        entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        let exact = entries.iter().cloned().collect();
        PriceTable { entries, exact }
    }

    /// The price of `model` (after any `provider/` prefix): the longest
    /// entry that is its name, or its name followed by a date or `-latest`.
    /// A prefix alone is not enough: `o3-pro` is not priced as `o3`.
    pub fn get(&self, model: &str) -> Option<Price> {
        let m = crate::text::model_name(model);
        let m = bedrock_anthropic_name(m).unwrap_or(m);
        // An entry that is the whole name is its longest match.
        if let Some(p) = self.exact.get(m) {
            return Some(*p);
        }
        // The first byte first: most entries differ there, and it is
        // cheaper than the prefix compare (every priced request scans).
        let first = m.as_bytes().first();
        self.entries
            .iter()
            .filter(|(name, _)| name.as_bytes().first() == first)
            .find(|(name, _)| m.strip_prefix(name.as_str()).is_some_and(same_model_suffix))
            .map(|(_, p)| *p)
    }
}

/// The Anthropic name of an AWS Bedrock model id, priced as that model:
/// `anthropic.claude-3-5-sonnet-20241022-v2:0` and the inference profile
/// `us.anthropic.claude-sonnet-4-20250514-v1:0` are `claude-3-5-sonnet-20241022`
/// and `claude-sonnet-4-20250514`. `None` for any other name.
fn bedrock_anthropic_name(id: &str) -> Option<&str> {
    // (A searcher built once: this runs for every priced request. A name
    // with no `.` at all, most of them, is ruled out before it.)
    memchr::memchr(b'.', id.as_bytes())?;
    let at = crate::find::find!(id.as_bytes(), b"anthropic.")?;
    let rest = &id[at + "anthropic.".len()..];
    let (name, version) = rest.rsplit_once("-v")?;
    // `2`, `2:0`, `1:0:200k`: a version, then optional `:` parts.
    let mut parts = version.split(':');
    let number = parts.next()?;
    let digits = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
    let rest_ok = parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    (digits && rest_ok && !name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_text_is_exact_and_cut() {
        assert_eq!(usd_text(0, 9), "0.000000000");
        assert_eq!(usd_text(123, 9), "0.000000123");
        assert_eq!(usd_text(1_234_567_891, 9), "1.234567891");
        assert_eq!(usd_text(1_999_999, 6), "0.001999");
        assert_eq!(usd_text(u64::MAX, 9), "18446744073.709551615");
        assert_eq!(usd_text(5_000_000_000, 0), "5");
        // The same text as the float formatting it replaced, where that was exact.
        for n in [1, 999, 1_000, 42_000_017, 3_000_000_000] {
            assert_eq!(usd_text(n, 9), format!("{:.9}", nanos_to_usd(n)));
        }
    }

    #[test]
    fn bedrock_model_ids_are_priced_as_their_anthropic_model() {
        let t = PriceTable::with_overrides(&[]);
        for id in [
            "anthropic.claude-3-5-sonnet-20241022-v2:0",
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            "anthropic.claude-3-5-sonnet-20240620-v1:0:200k",
        ] {
            let p = t.get(id).unwrap_or_else(|| panic!("{id} unpriced"));
            assert_eq!(p.base.input, 3000, "{id}");
        }
        assert_eq!(
            bedrock_anthropic_name("eu.anthropic.claude-sonnet-4-20250514-v1:0"),
            Some("claude-sonnet-4-20250514")
        );
        assert_eq!(bedrock_anthropic_name("claude-3-5-sonnet"), None);
        assert_eq!(bedrock_anthropic_name("anthropic.claude-x-vnext"), None);
        assert!(t.get("meta.llama3-70b-instruct-v1:0").is_none());
    }

    #[test]
    fn defaults_parse_and_match_longest_prefix() {
        let t = PriceTable::with_overrides(&[]);
        let mini = t.get("gpt-4o-mini-2024-07-18").expect("priced");
        assert_eq!(mini.base.input, 150);
        assert_eq!(mini.base.output, 600);
        assert_eq!(t.get("gpt-4o-2024-08-06").expect("priced").base.input, 2500);
        assert_eq!(
            t.get("claude-sonnet-4-5-20250929")
                .expect("priced")
                .base
                .cache_write,
            3750
        );
        assert!(t.get("llama-3").is_none());
    }

    #[test]
    fn only_dates_and_latest_extend_an_entry() {
        let t = PriceTable::with_overrides(&[]);
        let input = |m: &str| t.get(m).map(|p| p.base.input);
        // Dated snapshots and aliases share their model's price.
        assert_eq!(input("gpt-4o-2024-08-06"), Some(2500), "-YYYY-MM-DD");
        assert_eq!(input("claude-sonnet-4-20250514"), Some(3000), "-YYYYMMDD");
        assert_eq!(input("gpt-3.5-turbo-0125"), Some(500), "-MMDD");
        assert_eq!(input("claude-3-7-sonnet-latest"), Some(3000), "-latest");
        assert_eq!(input("openai/gpt-4o"), Some(2500), "provider prefix");
        // Other variants are not their base model.
        assert_eq!(input("o3-pro"), Some(20_000));
        assert_eq!(t.get("o3-pro").map(|p| p.base.output), Some(80_000));
        assert_eq!(input("o3-pro-2025-06-10"), Some(20_000));
        assert_eq!(input("o1-pro"), Some(150_000));
        assert_eq!(t.get("o1-pro").map(|p| p.base.output), Some(600_000));
        assert_eq!(input("gpt-5-pro"), Some(15_000));
        assert_eq!(input("gpt-4o-2024-05-13"), Some(5000));
        assert_eq!(
            t.get("gpt-4o-2024-05-13").map(|p| p.base.output),
            Some(15_000)
        );
        for unpriced in [
            "gpt-4o-realtime-preview",
            "gpt-4o-audio-preview-2024-12-17",
            "o3-deep-research-2025",
            "gpt-4o-2024",
            "gpt-4o-2024-5-13",
            "gpt-4o-20240513x",
            "gpt-4oo",
            "o3x",
            "claude-sonnet-4-5-thinking",
        ] {
            assert_eq!(input(unpriced), None, "{unpriced}");
        }
        assert!(same_model_suffix(""));
        assert!(!same_model_suffix("-"));
        assert!(!same_model_suffix("-123"));
        assert!(!same_model_suffix("-2024-05-13-x"));
        assert!(!same_model_suffix("-2024"), "not a month and day");
        assert!(!same_model_suffix("-20241340"));
        assert!(!same_model_suffix("-2024-13-01"));
        assert!(!same_model_suffix("-ééééé"), "10 bytes, not ASCII");
    }

    #[test]
    fn overrides_win() {
        let t = PriceTable::with_overrides(&[Entry {
            model: "gpt-4o".into(),
            input: 1.0,
            output: 2.0,
            ..Entry::default()
        }]);
        assert_eq!(t.get("gpt-4o").expect("p").base.input, 1000);
        assert_eq!(t.get("gpt-4o").expect("p").base.cached_input, 1000);
        assert_eq!(
            t.get("gpt-4o-mini").expect("p").base.input,
            150,
            "longer prefix still wins"
        );
    }

    #[test]
    fn cost_is_exact_integer_math() {
        let p = Price::from_per_million(3.0, Some(0.3), Some(3.75), 15.0);
        let u = Usage {
            input: 10_000,
            cached_input: 6_000,
            cache_write: 1_000,
            output: 500,
            ..Usage::default()
        };
        // 3000 fresh × 3000 + 6000 × 300 + 1000 × 3750 + 500 × 15000 nano-dollars
        assert_eq!(p.cost(&u), 9_000_000 + 1_800_000 + 3_750_000 + 7_500_000);
        assert_eq!(nanos_to_usd(p.cost(&u)), 0.02205);
        assert_eq!(usd_to_nanos(5.0), 5_000_000_000);
    }

    #[test]
    fn cost_saturates_instead_of_wrapping() {
        let p = Price::from_per_million(3.0, None, None, 15.0);
        let huge = Usage {
            input: u64::MAX,
            output: u64::MAX,
            ..Usage::default()
        };
        assert_eq!(p.cost(&huge), u64::MAX);
        assert_eq!(p.worst_case(u64::MAX, u64::MAX), u64::MAX);
        let odd = Usage {
            input: 1,
            cached_input: u64::MAX,
            cache_write: u64::MAX,
            ..Usage::default()
        };
        assert_eq!(p.cost(&odd), u64::MAX);
    }

    #[test]
    fn a_long_prompt_is_billed_wholly_at_the_long_context_rates() {
        let t = PriceTable::with_overrides(&[]);
        let sonnet = t.get("claude-sonnet-4-5-20250929").expect("priced");
        let at = |input: u64| Usage {
            input,
            output: 1_000,
            ..Usage::default()
        };
        // $3 / $15 up to 200k input tokens, then $6 / $22.50 for every token.
        assert_eq!(sonnet.cost(&at(200_000)), 200_000 * 3_000 + 1_000 * 15_000);
        assert_eq!(sonnet.cost(&at(200_001)), 200_001 * 6_000 + 1_000 * 22_500);
        assert_eq!(
            sonnet.worst_case(200_001, 1_000),
            200_001 * 12_000 + 1_000 * 22_500
        );
        let gpt = t.get("gpt-4.1").expect("priced");
        assert_eq!(
            gpt.cost(&at(900_000)),
            900_000 * 2_000 + 1_000 * 8_000,
            "no tier"
        );
    }

    #[test]
    fn hour_long_cache_writes_have_their_own_rate() {
        let t = PriceTable::with_overrides(&[]);
        let sonnet = t.get("claude-sonnet-4-5").expect("priced");
        let u = Usage {
            input: 10_000,
            cache_write: 4_000,
            cache_write_1h: 1_000,
            ..Usage::default()
        };
        // 6000 fresh × $3, 3000 5-minute writes × $3.75, 1000 1-hour writes × $6.
        assert_eq!(
            sonnet.cost(&u),
            6_000 * 3_000 + 3_000 * 3_750 + 1_000 * 6_000
        );
        // An entry without the hour rate bills those writes at the short one.
        let plain = Price::from_per_million(3.0, Some(0.3), Some(3.75), 15.0);
        assert_eq!(plain.cost(&u), 6_000 * 3_000 + 4_000 * 3_750);
    }

    #[test]
    fn a_batch_costs_its_discount_of_the_list_price() {
        let t = PriceTable::with_overrides(&[Entry {
            model: "cheap-batch".into(),
            input: 1.0,
            output: 2.0,
            batch: Some(0.25),
            ..Entry::default()
        }]);
        let u = Usage {
            input: 1_000,
            output: 1_000,
            ..Usage::default()
        };
        let mini = t.get("gpt-4o-mini").expect("priced");
        assert_eq!(mini.batch_cost(&u), (1_000 * 150 + 1_000 * 600) / 2);
        assert_eq!(t.get("cheap-batch").expect("p").batch_cost(&u), 750_000);
        let huge = Usage {
            input: u64::MAX,
            ..Usage::default()
        };
        assert_eq!(mini.batch_cost(&huge), u64::MAX / 2, "no wrap");
    }

    #[test]
    fn the_shipped_table_is_valid_and_bad_entries_are_named() {
        let file: File = toml::from_str(DEFAULTS).expect("shipped table parses");
        for e in &file.price {
            assert_eq!(e.problem(), None, "{}", e.model);
        }
        let bad = |e: Entry| e.problem().expect("a problem");
        assert!(bad(Entry {
            input: -1.0,
            ..Entry::default()
        })
        .contains("not negative"));
        assert!(bad(Entry {
            batch: Some(2.0),
            ..Entry::default()
        })
        .contains("batch"));
        let long = LongContextEntry {
            above: 0,
            ..LongContextEntry::default()
        };
        assert!(bad(Entry {
            long_context: Some(long),
            ..Entry::default()
        })
        .contains("above"));
    }
}
