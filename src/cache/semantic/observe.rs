//! The observe-mode table: for each similarity threshold, how many lookups
//! would have been served from the cache and how alike the would-be answer
//! was to the real one (word-set Jaccard, as shadows compare answers).
//! Scores are kept in 0.01-wide buckets, so any threshold can be read.

use serde_json::{json, Value};

/// Buckets of 0.01 from 0 to 1 (a score under 0 falls in the first).
const BUCKETS: usize = 101;

/// Thresholds the table shows (plus the configured one).
pub const THRESHOLDS: [f32; 10] = [0.80, 0.85, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99];

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Lookups whose nearest entry scored here.
    nearest: u64,
    /// Of those, compared with the real answer once it was complete.
    compared: u64,
    /// Compared, and the answers' similarity was under `false_hit_below`.
    false_hits: u64,
    /// Sum of the answers' similarities.
    similarity: f64,
}

/// Counts per score bucket.
#[derive(Debug, Clone)]
pub struct Table {
    buckets: [Bucket; BUCKETS],
}

impl Default for Table {
    fn default() -> Self {
        Table {
            buckets: [Bucket::default(); BUCKETS],
        }
    }
}

fn bucket(score: f32) -> usize {
    ((score.max(0.0) * 100.0 + 1e-4).floor() as usize).min(BUCKETS - 1)
}

impl Table {
    /// A lookup found an entry scoring `score`.
    pub fn nearest(&mut self, score: f32) {
        self.buckets[bucket(score)].nearest += 1;
    }

    /// The real answer to a lookup whose nearest scored `score` came back;
    /// `similarity` is the two answers' word-set similarity.
    pub fn compared(&mut self, score: f32, similarity: f64, false_hit_below: f64) {
        let b = &mut self.buckets[bucket(score)];
        b.compared += 1;
        b.similarity += similarity;
        b.false_hits += u64::from(similarity < false_hit_below);
    }

    /// One row: every lookup whose nearest entry scored `threshold` or more.
    pub fn row(&self, threshold: f32) -> Value {
        let from = bucket(threshold);
        let mut sum = Bucket::default();
        for b in &self.buckets[from..] {
            sum.nearest += b.nearest;
            sum.compared += b.compared;
            sum.false_hits += b.false_hits;
            sum.similarity += b.similarity;
        }
        let of = |n: f64| (sum.compared > 0).then(|| n / sum.compared as f64);
        json!({
            "threshold": (f64::from(threshold) * 100.0).round() / 100.0,
            "would_hit": sum.nearest,
            "compared": sum.compared,
            "answer_similarity_mean": of(sum.similarity),
            "false_hits": sum.false_hits,
            "false_hit_rate": of(sum.false_hits as f64),
        })
    }

    /// The rows shown, `configured` among them.
    pub fn rows(&self, configured: f32) -> Vec<Value> {
        let mut ts: Vec<f32> = THRESHOLDS.to_vec();
        if !ts.iter().any(|t| bucket(*t) == bucket(configured)) {
            ts.push(configured);
            ts.sort_by(f32::total_cmp);
        }
        ts.into_iter().map(|t| self.row(t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_count_every_score_at_or_above_their_threshold() {
        let mut t = Table::default();
        t.nearest(0.97);
        t.compared(0.97, 0.9, 0.5);
        t.nearest(0.91);
        t.compared(0.91, 0.2, 0.5);
        t.nearest(0.5);
        let r = t.row(0.90);
        assert_eq!(r["would_hit"], 2);
        assert_eq!(r["compared"], 2);
        assert_eq!(r["false_hits"], 1);
        assert_eq!(r["false_hit_rate"], 0.5);
        let r = t.row(0.95);
        assert_eq!(r["would_hit"], 1);
        assert_eq!(r["false_hits"], 0);
        assert_eq!(t.row(0.99)["compared"], 0);
        assert!(t.row(0.99)["false_hit_rate"].is_null());
        assert_eq!(t.row(0.0)["would_hit"], 3);
        // 1.0 itself has a bucket; the configured threshold gets a row.
        t.nearest(1.0);
        assert_eq!(t.row(1.0)["would_hit"], 1);
        assert_eq!(t.rows(0.93).len(), THRESHOLDS.len() + 1);
        assert_eq!(t.rows(0.95).len(), THRESHOLDS.len());
    }
}
