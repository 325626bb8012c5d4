//! Prices and cost. Money is integer nano-dollars throughout (a price of
//! $2.50 per 1M tokens is 2,500 nano-dollars per token), never floats in
//! the ledger.

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

/// A model's price, in nano-dollars per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    pub input: Nanos,
    pub cached_input: Nanos,
    pub cache_write: Nanos,
    pub output: Nanos,
}

impl Price {
    /// From USD per 1M tokens (what price lists show): USD/1M tokens ×
    /// 1e9 nano/USD ÷ 1e6 tokens = × 1000 nano-dollars per token.
    pub fn from_per_million(
        input: f64,
        cached: Option<f64>,
        write: Option<f64>,
        output: f64,
    ) -> Price {
        let per_token = |usd_per_m: f64| (usd_per_m * 1000.0).round().max(0.0) as Nanos;
        Price {
            input: per_token(input),
            cached_input: per_token(cached.unwrap_or(input)),
            cache_write: per_token(write.unwrap_or(input)),
            output: per_token(output),
        }
    }

    /// The cost of a request's usage.
    /// Saturating: absurd counts cost `u64::MAX`, never a wrapped small sum.
    pub fn cost(&self, u: &Usage) -> Nanos {
        let fresh = u
            .input
            .saturating_sub(u.cached_input.saturating_add(u.cache_write));
        fresh
            .saturating_mul(self.input)
            .saturating_add(u.cached_input.saturating_mul(self.cached_input))
            .saturating_add(u.cache_write.saturating_mul(self.cache_write))
            .saturating_add(u.output.saturating_mul(self.output))
    }

    /// The most a request can cost: every input token at full price and the
    /// whole output cap.
    pub fn worst_case(&self, input_tokens: u64, max_output: u64) -> Nanos {
        input_tokens
            .saturating_mul(self.input.max(self.cache_write))
            .saturating_add(max_output.saturating_mul(self.output))
    }
}

/// Prices by model name prefix (longest match wins).
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    /// Sorted by prefix length, longest first.
    entries: Vec<(String, Price)>,
}

#[derive(Deserialize)]
struct File {
    price: Vec<Entry>,
}

/// One price entry (also the shape of `[[pricing]]` in proxy.toml).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub model: String,
    pub input: f64,
    pub cached_input: Option<f64>,
    pub cache_write: Option<f64>,
    pub output: f64,
}

impl Entry {
    pub fn price(&self) -> Price {
        Price::from_per_million(self.input, self.cached_input, self.cache_write, self.output)
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
        PriceTable { entries }
    }

    /// The price of `model`: the longest entry that is a prefix of its name
    /// (after any `provider/` prefix).
    pub fn get(&self, model: &str) -> Option<Price> {
        let m = model.rsplit('/').next().unwrap_or(model);
        self.entries
            .iter()
            .find(|(prefix, _)| m.starts_with(prefix.as_str()))
            .map(|(_, p)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_match_longest_prefix() {
        let t = PriceTable::with_overrides(&[]);
        let mini = t.get("gpt-4o-mini-2024-07-18").expect("priced");
        assert_eq!(mini.input, 150);
        assert_eq!(mini.output, 600);
        assert_eq!(t.get("gpt-4o-2024-08-06").expect("priced").input, 2500);
        assert_eq!(
            t.get("claude-sonnet-4-5-20250929")
                .expect("priced")
                .cache_write,
            3750
        );
        assert!(t.get("llama-3").is_none());
    }

    #[test]
    fn overrides_win() {
        let t = PriceTable::with_overrides(&[Entry {
            model: "gpt-4o".into(),
            input: 1.0,
            cached_input: None,
            cache_write: None,
            output: 2.0,
        }]);
        assert_eq!(t.get("gpt-4o").expect("p").input, 1000);
        assert_eq!(t.get("gpt-4o").expect("p").cached_input, 1000);
        assert_eq!(
            t.get("gpt-4o-mini").expect("p").input,
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
            reasoning: 0,
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
}
