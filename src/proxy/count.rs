//! When the input is counted. Counting is the one per-request cost that
//! grows with the prompt (and the first count loads a tokenizer's tables),
//! so the exact count is made only where the cheap upper bound
//! ([`tokens::upper_bound`], one pass over the bytes) cannot settle a
//! decision:
//!
//! - an input limit or context window the bound already fits needs no count;
//!   one the bound exceeds is counted before sending (small bodies) or beside
//!   the upstream request (long ones, see [`with_context_check`]);
//! - a rate reservation, a budget reservation and the cost-cap clamp start
//!   from the bound (it is never below the count, so a reservation is never
//!   short) and ask for the exact count only when the bound would refuse or
//!   clamp; everything settles to the provider's usage at the end.

use bytes::Bytes;

use crate::error::ProxyError;
use crate::limits::request::Plan;
use crate::limits::tokens::{self, Family};
use crate::metrics;
use crate::sniff::Endpoint;

/// Bodies below this size are counted on the request's task (well under a
/// millisecond); larger ones off the async workers, and, when only the
/// context window needs the count, beside the upstream request.
pub(super) const CONCURRENT_COUNT_MIN: usize = 64 * 1024;

/// The request's input tokens as far as they are known.
pub(super) struct Input {
    endpoint: Endpoint,
    family: Family,
    body: Bytes,
    bound: u64,
    exact: Option<u64>,
}

impl Input {
    /// The bound, and a count already made for the same tokenizer (tier
    /// routing may have counted).
    pub fn new(
        endpoint: Endpoint,
        family: Family,
        body: Bytes,
        counted: Option<(Family, u64)>,
    ) -> Self {
        let bound = tokens::upper_bound(&body, family);
        let exact = counted.and_then(|(f, n)| (f == family).then_some(n));
        Self {
            endpoint,
            family,
            body,
            bound,
            exact,
        }
    }

    /// The best known upper bound: the count when made, else the bound.
    pub fn tokens(&self) -> u64 {
        self.exact.unwrap_or(self.bound)
    }

    pub fn exact(&self) -> Option<u64> {
        self.exact
    }

    /// Counts exactly (once), for `reason` (a metric label). A count that
    /// fails fails the request closed.
    pub async fn count(&mut self, reason: &'static str) -> Result<u64, ProxyError> {
        if let Some(n) = self.exact {
            return Ok(n);
        }
        metrics::input_counted(reason);
        let (endpoint, family) = (self.endpoint, self.family);
        let n = if self.body.len() < CONCURRENT_COUNT_MIN {
            tokens::count_request(endpoint, &self.body, family)?
        } else {
            let body = self.body.clone();
            tokio::task::spawn_blocking(move || tokens::count_request(endpoint, &body, family))
                .await
                .map_err(|e| ProxyError::Internal(format!("token counting failed: {e}")))??
        };
        self.exact = Some(n);
        Ok(n)
    }

    /// Checks the input limits of `plan`: settled by the bound when it fits,
    /// else by the count. A long body whose only question is the context
    /// window is counted beside the upstream request: the returned task.
    pub async fn check(
        &mut self,
        plan: &Plan,
        configured_limit: Option<u64>,
    ) -> Result<Option<tokio::task::JoinHandle<Result<u64, ProxyError>>>, ProxyError> {
        let over = |limit: Option<u64>| limit.is_some_and(|l| self.tokens() > l);
        let window_only = over(plan.max_input.map(|(l, _)| l)) && !over(configured_limit);
        if window_only && self.exact.is_none() && self.body.len() >= CONCURRENT_COUNT_MIN {
            let (body, endpoint, family) = (self.body.clone(), self.endpoint, self.family);
            metrics::input_counted("context_window");
            return Ok(Some(tokio::task::spawn_blocking(move || {
                tokens::count_request(endpoint, &body, family)
            })));
        }
        if over(plan.max_input.map(|(l, _)| l)) || over(configured_limit) {
            let n = self.count("input_limit").await?;
            plan.check_input(n)?;
        }
        Ok(None)
    }
}

/// Runs the attempts while the input is counted. If the count finishes first
/// and is over the context window, the request is refused with the usual 400
/// and the upstream request is dropped (cancelled); if the provider answers
/// first, its answer stands — it enforces its own window. Real providers
/// take far longer than the count to answer a long prompt, so the check still
/// fails fast, without adding the count's milliseconds to every long request.
pub(super) async fn with_context_check<T>(
    run: impl std::future::Future<Output = Result<T, ProxyError>>,
    count: tokio::task::JoinHandle<Result<u64, ProxyError>>,
    plan: &Plan,
) -> Result<T, ProxyError> {
    tokio::pin!(run);
    tokio::select! {
        biased;
        answered = &mut run => answered,
        counted = count => {
            // A count that fails (unreadable input, a panicked task) fails
            // the request closed.
            let n = counted
                .map_err(|e| ProxyError::Internal(format!("token counting failed: {e}")))??;
            plan.check_input(n)?;
            run.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::request::InputLimit;

    fn body(words: usize) -> Bytes {
        let text = "word ".repeat(words);
        Bytes::from(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": text}]})
                .to_string(),
        )
    }

    fn plan(limit: Option<(u64, InputLimit)>) -> Plan {
        Plan {
            output_cap: None,
            max_output: None,
            max_input: limit,
        }
    }

    fn input(words: usize) -> Input {
        Input::new(Endpoint::ChatCompletions, Family::O200k, body(words), None)
    }

    #[tokio::test]
    async fn the_bound_settles_what_it_can() {
        let mut i = input(10);
        assert!(i.tokens() >= 10);
        let p = plan(Some((10_000, InputLimit::Configured)));
        assert!(i.check(&p, Some(10_000)).await.expect("fits").is_none());
        assert_eq!(i.exact(), None, "a limit the bound fits is not counted");
    }

    #[tokio::test]
    async fn a_bound_over_the_limit_is_counted() {
        let mut i = input(2_000);
        let bound = i.tokens();
        let p = plan(Some((3_000, InputLimit::Configured)));
        assert!(bound > 3_000);
        assert!(i.check(&p, Some(3_000)).await.expect("fits").is_none());
        let n = i.exact().expect("counted");
        assert!(n < bound && n >= 2_000);
        assert_eq!(i.tokens(), n);
        let mut over = input(4_000);
        assert!(over.check(&p, Some(3_000)).await.is_err());
    }

    #[tokio::test]
    async fn only_the_window_on_a_long_body_is_counted_beside() {
        let mut i = input(20_000);
        let p = plan(Some((1_000, InputLimit::ContextWindow(1_000))));
        let task = i.check(&p, None).await.expect("deferred").expect("a task");
        assert!(task.await.expect("joined").expect("counted") > 1_000);
        // A prior count for the same tokenizer is reused, for another is not.
        let b = body(10);
        let reused = Input::new(
            Endpoint::ChatCompletions,
            Family::O200k,
            b.clone(),
            Some((Family::O200k, 7)),
        );
        assert_eq!(reused.exact(), Some(7));
        let other = Input::new(
            Endpoint::ChatCompletions,
            Family::O200k,
            b,
            Some((Family::Cl100k, 7)),
        );
        assert_eq!(other.exact(), None);
    }
}
