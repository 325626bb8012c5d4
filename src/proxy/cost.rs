//! The output cap a request is sent with, and its worst-case cost: the token
//! plan's cap, a default cap when a budget needs a finite worst case, and a
//! clamp to what the per-request cost cap affords. Decided before the cache
//! step, so the cache key is computed from the body as it is sent.

use crate::error::ProxyError;
use crate::limits::request::Plan;
use crate::pricing::{nanos_to_usd, Nanos, Price};

/// What the pricing of one request decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priced {
    /// Set this output-cap field to this value (per choice).
    pub output_cap: Option<(&'static str, u64)>,
    /// The output cap in force, per choice.
    pub max_output: Option<u64>,
    /// The most the request can cost (every choice at its whole cap).
    pub worst: Nanos,
}

/// The inputs of [`price`].
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    /// Counted input tokens.
    pub input: u64,
    /// Answers generated (`n`, `best_of`).
    pub choices: u64,
    /// The endpoint's output-cap field (`None`: the endpoint has none).
    pub field: Option<&'static str>,
    /// The endpoint generates tokens.
    pub generates: bool,
    /// The cap injected when nothing else sets one.
    pub output_reserve: u64,
    /// `max_request_cost_usd`.
    pub cost_cap: Option<Nanos>,
}

/// Prices a request under `plan`: a request under a budget always has a
/// finite output cap; over the per-request cost cap the output is clamped to
/// what the cap affords, or the request is refused.
pub fn price(plan: &Plan, price: &Price, ask: Ask) -> Result<Priced, ProxyError> {
    let mut output_cap = plan.output_cap;
    let mut max_output = plan.max_output;
    if max_output.is_none() && ask.generates {
        max_output = Some(ask.output_reserve);
        output_cap = ask.field.map(|f| (f, ask.output_reserve));
    }
    let choices = ask.choices.max(1);
    let total_output = |per_choice: u64| per_choice.saturating_mul(choices);
    let mut worst = price.worst_case(ask.input, total_output(max_output.unwrap_or(0)));
    if let Some(cap) = ask.cost_cap {
        if worst > cap {
            let input_cost = price.worst_case(ask.input, 0);
            let affordable =
                cap.saturating_sub(input_cost) / price.output_rate(ask.input).max(1) / choices;
            match ask.field {
                Some(f) if affordable > 0 && ask.generates => {
                    output_cap = Some((f, affordable));
                    max_output = Some(affordable);
                    worst = price.worst_case(ask.input, total_output(affordable));
                }
                _ => {
                    return Err(ProxyError::RequestTooExpensive {
                        worst: nanos_to_usd(worst),
                        cap: nanos_to_usd(cap),
                    })
                }
            }
        }
    }
    Ok(Priced {
        output_cap,
        max_output,
        worst,
    })
}

/// Prices a request from its input as far as it is known: the bound
/// settles it unless the per-request cost cap would clamp or refuse, which
/// asks for the exact count (the body as sent must not depend on a bound).
pub(super) async fn price_input(
    plan: &Plan,
    p: &Price,
    ask: Ask,
    input: &mut super::count::Input,
) -> Result<Priced, ProxyError> {
    let with = |n: u64| price(plan, p, Ask { input: n, ..ask });
    let first = with(input.tokens());
    if ask.cost_cap.is_none() || input.exact().is_some() {
        return first;
    }
    let unclamped = price(
        plan,
        p,
        Ask {
            input: input.tokens(),
            cost_cap: None,
            ..ask
        },
    );
    match (&first, &unclamped) {
        (Ok(a), Ok(b)) if a == b => first,
        _ => with(input.count("cost_cap").await?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Price {
        Price {
            base: crate::pricing::Rates {
                input: 1_000,
                output: 4_000,
                ..Default::default()
            },
            ..Price::default()
        }
    }

    fn ask(choices: u64, cap: Option<Nanos>) -> Ask {
        Ask {
            input: 10,
            choices,
            field: Some("max_tokens"),
            generates: true,
            output_reserve: 4096,
            cost_cap: cap,
        }
    }

    fn plan(max_output: Option<u64>) -> Plan {
        Plan {
            output_cap: None,
            max_output,
            max_input: None,
        }
    }

    #[test]
    fn choices_multiply_the_worst_case() {
        let one = price(&plan(Some(1000)), &p(), ask(1, None)).expect("ok");
        let many = price(&plan(Some(1000)), &p(), ask(128, None)).expect("ok");
        assert_eq!(one.worst, 10 * 1_000 + 1000 * 4_000);
        assert_eq!(many.worst, 10 * 1_000 + 128 * 1000 * 4_000);
    }

    #[test]
    fn the_cost_cap_clamps_per_choice_or_refuses() {
        // Cap affords 10k + 8 * 4k: one choice gets 8 tokens, 4 choices 2.
        let cap = 10 * 1_000 + 8 * 4_000;
        let one = price(&plan(Some(1000)), &p(), ask(1, Some(cap))).expect("ok");
        assert_eq!(one.output_cap, Some(("max_tokens", 8)));
        let four = price(&plan(Some(1000)), &p(), ask(4, Some(cap))).expect("ok");
        assert_eq!(four.output_cap, Some(("max_tokens", 2)));
        assert!(four.worst <= cap);
        assert!(price(&plan(Some(1000)), &p(), ask(9, Some(cap))).is_err());
    }

    #[test]
    fn a_default_cap_is_injected() {
        let r = price(&plan(None), &p(), ask(1, None)).expect("ok");
        assert_eq!(r.output_cap, Some(("max_tokens", 4096)));
    }
}
