//! The admin views of fleet state, read from Redis: every replica shows the
//! same fleet-wide numbers. A view lists at most `MAX_REPORTED` buckets.

use std::collections::BTreeMap;

use redis::aio::ConnectionManager;

use super::{unix_now, Fleet};
use crate::budget::ledger::BucketReport;
use crate::budget::spend::Spender;
use crate::config::{BudgetAction, BudgetRule};
use crate::limits::rate::BucketState;
use crate::pricing::nanos_to_usd;
use crate::window::Window;

/// The most buckets one admin view lists.
pub const MAX_REPORTED: usize = 10_000;

/// A view that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("redis state store: {0}")]
pub struct Unavailable(String);

impl From<redis::RedisError> for Unavailable {
    fn from(e: redis::RedisError) -> Self {
        Unavailable(e.to_string())
    }
}

impl Fleet {
    async fn admin_conn(&self) -> Result<ConnectionManager, Unavailable> {
        if self.health.available() {
            Ok(self.conn.clone())
        } else {
            Err(Unavailable(
                self.health
                    .unavailable_because()
                    .unwrap_or_else(|| "unavailable".into()),
            ))
        }
    }

    /// Keys under `prefix + kind + ":"`, at most `MAX_REPORTED`; the bucket
    /// names that follow the prefix.
    async fn buckets(&self, kind: &str) -> Result<Vec<String>, Unavailable> {
        let mut conn = self.admin_conn().await?;
        let head = self.keys.of(kind, "");
        let pattern = format!("{}*", glob_escape(&head));
        let mut cursor = 0u64;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            out.extend(
                keys.into_iter()
                    .filter_map(|k| k.strip_prefix(&head).map(str::to_owned)),
            );
            if next == 0 || out.len() >= MAX_REPORTED {
                out.truncate(MAX_REPORTED);
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Spend and reservations of every budget bucket, fleet-wide.
    pub async fn budget_report(
        &self,
        budgets: &[BudgetRule],
    ) -> Result<Vec<BucketReport>, Unavailable> {
        let now = unix_now();
        let buckets = self.buckets("b").await?;
        if buckets.is_empty() {
            // Redis refuses an empty pipeline.
            return Ok(Vec::new());
        }
        let mut conn = self.admin_conn().await?;
        let mut pipe = redis::pipe();
        for b in &buckets {
            pipe.cmd("HMGET")
                .arg(self.keys.of("b", b))
                .arg(&["w", "s", "r"]);
        }
        let rows: Vec<(Option<String>, Option<u64>, Option<i64>)> =
            pipe.query_async(&mut conn).await?;
        let mut out = Vec::new();
        for (bucket, (w, s, r)) in buckets.into_iter().zip(rows) {
            let name = bucket.split('|').next().unwrap_or("");
            let Some(rule) = budgets.iter().find(|b| b.name == name) else {
                continue;
            };
            let window = rule.window.key(now);
            let spent = if w.as_deref() == Some(window.as_str()) {
                s.unwrap_or(0)
            } else {
                0
            };
            let reserved = u64::try_from(r.unwrap_or(0)).unwrap_or(0);
            let limit = rule.limit_of_bucket(&bucket).unwrap_or(rule.limit);
            out.push(BucketReport {
                overridden: rule.overrides.for_bucket(&bucket).is_some(),
                budget: rule.name.clone(),
                bucket,
                window: window.to_string(),
                action: match rule.action {
                    BudgetAction::Reject => "reject",
                    BudgetAction::Downgrade => "downgrade",
                    BudgetAction::Alert => "alert",
                },
                limit_usd: nanos_to_usd(limit),
                spent_usd: nanos_to_usd(spent),
                reserved_usd: nanos_to_usd(reserved),
                remaining_usd: nanos_to_usd(limit.saturating_sub(spent.saturating_add(reserved))),
                resets_at: rule.window.ends_at(now),
            });
        }
        out.sort_by(|a, b| a.bucket.cmp(&b.bucket));
        Ok(out)
    }

    /// Resets the current window of a bucket (`budget` or `budget|user=x`)
    /// for the whole fleet; `false` when no such budget is configured.
    pub async fn reset_budget(
        &self,
        budgets: &[BudgetRule],
        bucket: &str,
    ) -> Result<bool, Unavailable> {
        let name = bucket.split('|').next().unwrap_or("");
        let Some(rule) = budgets.iter().find(|b| b.name == name) else {
            return Ok(false);
        };
        let mut conn = self.admin_conn().await?;
        let window = rule.window.key(unix_now());
        let () = redis::cmd("HSET")
            .arg(self.keys.of("b", bucket))
            .arg("w")
            .arg(window.as_str())
            .arg("s")
            .arg(0)
            .query_async(&mut conn)
            .await
            .map(|_: i64| ())?;
        tracing::info!(bucket, window = %window, "budget window reset (fleet-wide)");
        Ok(true)
    }

    /// Current use of every rate bucket whose name contains `filter`,
    /// fleet-wide.
    pub async fn rate_report(&self, filter: &str) -> Result<Vec<BucketState>, Unavailable> {
        let mut names = BTreeMap::new();
        for kind in ["rq", "tk", "cc"] {
            for b in self.buckets(kind).await? {
                if b.contains(filter) && names.len() < MAX_REPORTED {
                    names.insert(b, ());
                }
            }
        }
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.admin_conn().await?;
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let now_ms = secs * 1000 + micros / 1000;
        let mut pipe = redis::pipe();
        for b in names.keys() {
            pipe.cmd("HGETALL").arg(self.keys.of("rq", b));
            pipe.cmd("HGETALL").arg(self.keys.of("tk", b));
            pipe.cmd("ZCOUNT")
                .arg(self.keys.of("cc", b))
                .arg(format!("({now_ms}"))
                .arg("+inf");
        }
        let rows: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        // A window's fields are seconds, plus its bookkeeping ('t', 'o', 'n').
        let decode = |v: &redis::Value| -> Vec<(u64, u64)> {
            redis::from_redis_value_ref::<Vec<(String, u64)>>(v)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(s, n)| Some((s.parse().ok()?, n)))
                .collect()
        };
        let in_window = |h: &[(u64, u64)]| -> u64 {
            h.iter()
                .filter(|(s, _)| secs.saturating_sub(*s) < 61)
                .map(|(_, n)| n)
                .sum()
        };
        Ok(names
            .into_keys()
            .zip(rows.chunks(3))
            .map(|(bucket, row)| BucketState {
                bucket,
                requests_last_minute: row.first().map_or(0, |v| in_window(&decode(v))),
                tokens_last_minute: row.get(1).map_or(0, |v| in_window(&decode(v))),
                inflight: row
                    .get(2)
                    .and_then(|v| redis::from_redis_value_ref(v).ok())
                    .unwrap_or(0),
            })
            .collect())
    }

    /// Today's (UTC) top spenders along one dimension, fleet-wide.
    pub async fn spend_top(&self, dimension: &str, n: usize) -> Result<Vec<Spender>, Unavailable> {
        if !matches!(dimension, "user" | "team" | "feature" | "key") {
            return Ok(Vec::new());
        }
        let mut conn = self.admin_conn().await?;
        let day = Window::Day.key(unix_now());
        let mut rows: Vec<(String, u64)> = redis::cmd("HGETALL")
            .arg(self.keys.spend(&day, dimension))
            .query_async(&mut conn)
            .await?;
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(rows
            .into_iter()
            .take(n)
            .map(|(value, nanos)| Spender {
                value,
                spent_usd: nanos_to_usd(nanos),
            })
            .collect())
    }
}

/// `text` with Redis glob specials escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
