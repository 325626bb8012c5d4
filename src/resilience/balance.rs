//! Load balancing across a model's deployments. The balancer orders the
//! candidates; the attempt loop takes the first one whose breaker lets it
//! through, so an open deployment is skipped.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::DeploymentState;
use crate::config::Balance;

/// A deployment the request may go to.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub provider: usize,
    pub upstream_model: String,
    pub weight: u32,
    pub state: Arc<DeploymentState>,
}

fn cost(c: &Candidate) -> u128 {
    let inflight = u128::from(c.state.inflight.load(Ordering::Relaxed));
    let ewma = u128::from(c.state.ewma_us.load(Ordering::Relaxed));
    // Unmeasured deployments cost nothing, so they get a first sample.
    ewma * (inflight + 1) * 1000 / u128::from(c.weight.max(1))
}

/// The order in which to try `cands` (indices), best first.
pub fn order(balance: Balance, cands: &[Candidate]) -> Vec<usize> {
    let n = cands.len();
    if n <= 1 {
        return (0..n).collect();
    }
    match balance {
        Balance::Weighted => {
            // Weighted sampling without replacement.
            let mut left: Vec<usize> = (0..n).collect();
            let mut out = Vec::with_capacity(n);
            while !left.is_empty() {
                let total: u64 = left
                    .iter()
                    .map(|&i| u64::from(cands[i].weight.max(1)))
                    .sum();
                let mut r = fastrand::u64(..total);
                let pos = left
                    .iter()
                    .position(|&i| {
                        let w = u64::from(cands[i].weight.max(1));
                        if r < w {
                            true
                        } else {
                            r -= w;
                            false
                        }
                    })
                    .unwrap_or(0);
                out.push(left.remove(pos));
            }
            out
        }
        Balance::LeastInflight => {
            let mut idx: Vec<(u128, u64, usize)> = (0..n)
                .map(|i| {
                    let load = u128::from(cands[i].state.inflight.load(Ordering::Relaxed)) * 1000
                        / u128::from(cands[i].weight.max(1));
                    (load, fastrand::u64(..), i)
                })
                .collect();
            idx.sort_unstable();
            idx.into_iter().map(|(_, _, i)| i).collect()
        }
        Balance::P2cEwma => {
            let a = fastrand::usize(..n);
            let mut b = fastrand::usize(..n - 1);
            if b >= a {
                b += 1;
            }
            let first = if cost(&cands[b]) < cost(&cands[a]) {
                b
            } else {
                a
            };
            let mut rest: Vec<(u128, usize)> = (0..n)
                .filter(|&i| i != first)
                .map(|i| (cost(&cands[i]), i))
                .collect();
            rest.sort_unstable();
            std::iter::once(first)
                .chain(rest.into_iter().map(|(_, i)| i))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::{Deployments, InflightGuard};

    fn cands(weights: &[u32]) -> (Deployments, Vec<Candidate>) {
        let reg = Deployments::default();
        let c = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Candidate {
                provider: i,
                upstream_model: format!("m{i}"),
                weight: w,
                state: reg.get("p", &format!("m{i}")),
            })
            .collect();
        (reg, c)
    }

    #[test]
    fn weighted_follows_weights() {
        let (_r, c) = cands(&[3, 1]);
        let firsts = (0..4000)
            .filter(|_| order(Balance::Weighted, &c)[0] == 0)
            .count();
        assert!(
            (2700..3300).contains(&firsts),
            "{firsts} of 4000 went to weight 3"
        );
        let o = order(Balance::Weighted, &c);
        assert_eq!(o.len(), 2);
        assert_ne!(o[0], o[1]);
    }

    #[test]
    fn least_inflight_prefers_idle() {
        let (_r, c) = cands(&[1, 1, 1]);
        let _busy = [
            InflightGuard::new(c[0].state.clone()),
            InflightGuard::new(c[2].state.clone()),
        ];
        assert_eq!(order(Balance::LeastInflight, &c)[0], 1);
    }

    #[test]
    fn p2c_prefers_fast() {
        let (_r, c) = cands(&[1, 1]);
        c[0].state.observe_latency(50_000);
        c[1].state.observe_latency(1_000);
        for _ in 0..50 {
            assert_eq!(order(Balance::P2cEwma, &c)[0], 1);
        }
    }
}
