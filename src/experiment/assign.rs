//! Which arm a request lands in: a stable bucket of 10,000 per caller, and
//! contiguous bucket ranges per arm.
//!
//! The bucket is the SHA-256 of the experiment's name and the caller's id,
//! so it is the same on every replica and across restarts, and a caller's
//! buckets in two experiments are independent. Arms own contiguous ranges:
//! the candidates first, in config order, then the control. A two-arm
//! experiment's ramp (1 % → 5 % → …) therefore only ever moves callers
//! between the control and the candidate, and only as many as the change
//! of share requires.

/// Buckets per experiment: a share is exact to 0.01 %.
pub const BUCKETS: u32 = 10_000;

/// The bucket of `id` in `experiment`.
pub fn bucket(experiment: &str, id: &str) -> u32 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(experiment.as_bytes());
    ctx.update(&[0]);
    ctx.update(id.as_bytes());
    let digest = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    // u64 → 10,000: the modulo bias is below 1e-15.
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u32
}

/// A random bucket (for `sticky = "random"`).
pub fn random_bucket() -> u32 {
    fastrand::u32(..BUCKETS)
}

/// Buckets per arm for these weights: the largest-remainder method, so
/// the counts add up to [`BUCKETS`] exactly. All-zero weights give the
/// control everything.
pub fn quotas(weights: &[f64], control: usize) -> Vec<u32> {
    let total: f64 = weights.iter().filter(|w| w.is_finite() && **w > 0.0).sum();
    let mut out = vec![0u32; weights.len()];
    if total <= 0.0 {
        if let Some(c) = out.get_mut(control) {
            *c = BUCKETS;
        }
        return out;
    }
    let mut rest: Vec<(usize, f64)> = Vec::with_capacity(weights.len());
    let mut given = 0u32;
    for (i, w) in weights.iter().enumerate() {
        let w = if w.is_finite() && *w > 0.0 { *w } else { 0.0 };
        let exact = w / total * f64::from(BUCKETS);
        let whole = exact.floor() as u32;
        out[i] = whole;
        given += whole;
        rest.push((i, exact - f64::from(whole)));
    }
    rest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for (i, _) in rest
        .into_iter()
        .take((BUCKETS - given.min(BUCKETS)) as usize)
    {
        out[i] += 1;
    }
    out
}

/// The arm owning `bucket`: candidates' ranges first (config order), the
/// control's last.
pub fn arm_of(bucket: u32, quotas: &[u32], control: usize) -> usize {
    let mut end = 0u32;
    for (i, q) in quotas.iter().enumerate() {
        if i == control {
            continue;
        }
        end += q;
        if bucket < end {
            return i;
        }
    }
    control
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        // Fixed values: a change of hash would reshuffle every caller.
        assert_eq!(bucket("exp", "u-1"), bucket("exp", "u-1"));
        assert_ne!(bucket("exp", "u-1"), bucket("other", "u-1"));
        let mut counts = [0u32; 10];
        for i in 0..10_000 {
            counts[(bucket("exp", &format!("user-{i}")) / 1000) as usize] += 1;
        }
        // Each tenth within 5 standard deviations of 1,000 (σ = 30).
        assert!(counts.iter().all(|c| (850..1150).contains(c)), "{counts:?}");
    }

    #[test]
    fn quotas_are_exact() {
        assert_eq!(quotas(&[95.0, 5.0], 0), vec![9500, 500]);
        assert_eq!(quotas(&[1.0, 1.0, 1.0], 0).iter().sum::<u32>(), BUCKETS);
        assert_eq!(quotas(&[0.0, 0.0], 1), vec![0, BUCKETS]);
        assert_eq!(quotas(&[99.99, 0.01], 0), vec![9999, 1]);
    }

    #[test]
    fn a_ramp_moves_only_the_share_it_changes() {
        let ids: Vec<String> = (0..5000).map(|i| format!("u{i}")).collect();
        let arm = |ids: &[String], cand: f64| -> Vec<usize> {
            let q = quotas(&[100.0 - cand, cand], 0);
            ids.iter()
                .map(|id| arm_of(bucket("e", id), &q, 0))
                .collect()
        };
        let at5 = arm(&ids, 5.0);
        let at25 = arm(&ids, 25.0);
        // Everyone in the candidate at 5 % is still there at 25 %.
        assert!(at5.iter().zip(&at25).all(|(a, b)| *a == 0 || *b == 1));
        let moved = at5.iter().zip(&at25).filter(|(a, b)| a != b).count();
        let share = moved as f64 / ids.len() as f64;
        assert!((0.17..0.23).contains(&share), "moved {share}");
        // Back to 0 %: nobody in the candidate.
        assert!(arm(&ids, 0.0).iter().all(|a| *a == 0));
    }

    #[test]
    fn control_owns_the_tail() {
        let q = quotas(&[50.0, 30.0, 20.0], 0);
        assert_eq!(arm_of(0, &q, 0), 1);
        assert_eq!(arm_of(2999, &q, 0), 1);
        assert_eq!(arm_of(3000, &q, 0), 2);
        assert_eq!(arm_of(4999, &q, 0), 2);
        assert_eq!(arm_of(5000, &q, 0), 0);
        assert_eq!(arm_of(9999, &q, 0), 0);
    }
}
