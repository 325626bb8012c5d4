//! Single flight: of identical requests that miss the cache together, one
//! (the leader) goes upstream; the others wait for its answer instead of
//! sending the same request again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::entry::CachedResponse;
use super::key::CacheKey;

/// What a flight ends with: the answer, or `None` (failed, not cacheable).
type Outcome = Option<Arc<CachedResponse>>;

/// The channel state: `None` while the leader is still working.
type Slot = Option<Outcome>;

/// The requests currently in flight, by cache key.
#[derive(Debug, Default)]
pub struct Flights {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    flights: Mutex<HashMap<CacheKey, Entry>>,
    next_id: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Entry {
    /// Tells this flight from a later one under the same key.
    id: u64,
    rx: watch::Receiver<Slot>,
    progress: Arc<AtomicU64>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<CacheKey, Entry>> {
        // The map stays consistent even if a holder panicked.
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request's role in its flight.
#[derive(Debug)]
pub enum Flight {
    /// First in: go upstream, then report with [`LeaderGuard::done`].
    Leader(LeaderGuard),
    /// Another request with the same key is upstream: wait for its answer.
    Follower(Waiter),
}

impl Flights {
    /// An empty set of flights.
    pub fn new() -> Flights {
        Flights::default()
    }

    /// Joins the flight for `key`, leading it if there is none.
    pub fn join(&self, key: CacheKey) -> Flight {
        let mut flights = self.inner.lock();
        if let Some(entry) = flights.get(&key) {
            return Flight::Follower(Waiter {
                rx: entry.rx.clone(),
                progress: entry.progress.clone(),
            });
        }
        let id = self
            .inner
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        let progress = Arc::new(AtomicU64::new(0));
        flights.insert(
            key,
            Entry {
                id,
                rx,
                progress: progress.clone(),
            },
        );
        Flight::Leader(LeaderGuard {
            inner: Arc::clone(&self.inner),
            key,
            id,
            tx: Some(tx),
            progress,
        })
    }

    /// How many flights are open (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// Whether no flight is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Held by the leader; dropping it without [`done`](LeaderGuard::done)
/// (an error, a cancelled request) releases the followers with `None`.
#[derive(Debug)]
pub struct LeaderGuard {
    inner: Arc<Inner>,
    key: CacheKey,
    id: u64,
    tx: Option<watch::Sender<Slot>>,
    progress: Arc<AtomicU64>,
}

impl LeaderGuard {
    /// The leader's answer advanced (a chunk came from upstream and went to
    /// its client): followers keep waiting.
    pub fn progress(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends the flight: followers get `answer` (`None` when the response
    /// could not be cached, so they go upstream themselves).
    pub fn done(mut self, answer: Option<Arc<CachedResponse>>) {
        self.finish(answer);
    }

    /// The key this flight is for.
    pub fn key(&self) -> CacheKey {
        self.key
    }

    fn finish(&mut self, answer: Outcome) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        // Publish before leaving the map, so a request joining in between
        // becomes a follower that sees the answer at once.
        tx.send_replace(Some(answer));
        let mut flights = self.inner.lock();
        if flights.get(&self.key).is_some_and(|e| e.id == self.id) {
            flights.remove(&self.key);
        }
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// Held by a follower to wait for the leader's answer.
#[derive(Debug, Clone)]
pub struct Waiter {
    rx: watch::Receiver<Slot>,
    progress: Arc<AtomicU64>,
}

/// How long a follower waits on its leader.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// For the leader's first chunk (the provider's first-byte timeout).
    pub first: Duration,
    /// Between the leader's chunks (the provider's idle timeout).
    pub idle: Duration,
    /// The follower's own deadline.
    pub deadline: tokio::time::Instant,
}

impl Waiter {
    /// The leader's answer, or `None` if it failed, was not cacheable, or
    /// stopped making progress (no first chunk within `first`, then no chunk
    /// for `idle`: a leader whose client does not read holds nobody), or the
    /// deadline passed; then the follower goes upstream itself.
    pub async fn wait(mut self, patience: Patience) -> Option<Arc<CachedResponse>> {
        let mut seen = self.progress.load(Ordering::Relaxed);
        // A leader already streaming is held to the idle window at once.
        let mut window = if seen == 0 {
            patience.first
        } else {
            patience.idle
        };
        loop {
            let until = (tokio::time::Instant::now() + window).min(patience.deadline);
            match tokio::time::timeout_at(until, self.rx.wait_for(Option::is_some)).await {
                Ok(Ok(slot)) => return slot.clone().flatten(),
                // The leader vanished without a word.
                Ok(Err(_)) => return None,
                Err(_) => {
                    let now = self.progress.load(Ordering::Relaxed);
                    if now == seen || tokio::time::Instant::now() >= patience.deadline {
                        return None;
                    }
                    seen = now;
                    window = patience.idle;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sniff::Endpoint;
    use bytes::Bytes;

    fn answer() -> Arc<CachedResponse> {
        Arc::new(CachedResponse::json(
            Endpoint::ChatCompletions,
            "t",
            "m",
            Bytes::from_static(b"{}"),
        ))
    }

    const KEY: CacheKey = CacheKey([7; 32]);

    fn split(joins: Vec<Flight>) -> (Vec<LeaderGuard>, Vec<Waiter>) {
        let mut leaders = Vec::new();
        let mut followers = Vec::new();
        for f in joins {
            match f {
                Flight::Leader(g) => leaders.push(g),
                Flight::Follower(w) => followers.push(w),
            }
        }
        (leaders, followers)
    }

    #[tokio::test]
    async fn one_leader_and_followers_get_its_answer() {
        let flights = Arc::new(Flights::new());
        let joins = (0..20).map(|_| flights.join(KEY)).collect();
        let (mut leaders, followers) = split(joins);
        assert_eq!(leaders.len(), 1);
        assert_eq!(followers.len(), 19);
        // Another key flies on its own.
        assert!(matches!(flights.join(CacheKey([8; 32])), Flight::Leader(_)));

        let waits: Vec<_> = followers
            .into_iter()
            .map(|w| tokio::spawn(w.wait(patience(5))))
            .collect();
        let value = answer();
        leaders
            .pop()
            .expect("leader")
            .done(Some(Arc::clone(&value)));
        for w in waits {
            let got = w.await.expect("task").expect("answer");
            assert!(Arc::ptr_eq(&got, &value));
        }
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn concurrent_joins_elect_one_leader() {
        let flights = Arc::new(Flights::new());
        let barrier = Arc::new(tokio::sync::Barrier::new(20));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let flights = Arc::clone(&flights);
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    match flights.join(KEY) {
                        Flight::Leader(g) => {
                            // Hold the lead until everyone has joined.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            g.done(Some(answer()));
                            true
                        }
                        Flight::Follower(w) => {
                            assert!(w.wait(patience(5)).await.is_some());
                            false
                        }
                    }
                })
            })
            .collect();
        let mut leaders = 0;
        for t in tasks {
            leaders += usize::from(t.await.expect("task"));
        }
        assert_eq!(leaders, 1);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn dropped_leader_releases_followers_with_none() {
        let flights = Flights::new();
        let (mut leaders, followers) = split(vec![flights.join(KEY), flights.join(KEY)]);
        let wait = tokio::spawn(
            followers
                .into_iter()
                .next()
                .expect("follower")
                .wait(patience(5)),
        );
        drop(leaders.pop());
        assert!(wait.await.expect("task").is_none());
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn uncacheable_answer_releases_with_none() {
        let flights = Flights::new();
        let (mut leaders, followers) = split(vec![flights.join(KEY), flights.join(KEY)]);
        leaders.pop().expect("leader").done(None);
        let waiter = followers.into_iter().next().expect("follower");
        assert!(waiter.wait(patience(5)).await.is_none());
    }

    fn patience(secs: u64) -> Patience {
        Patience {
            first: Duration::from_secs(secs),
            idle: Duration::from_secs(secs),
            deadline: tokio::time::Instant::now() + Duration::from_secs(900),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn follower_gives_up_on_a_leader_without_progress() {
        let flights = Flights::new();
        let (leaders, followers) = split(vec![flights.join(KEY), flights.join(KEY)]);
        let waiter = followers.into_iter().next().expect("follower");
        let started = tokio::time::Instant::now();
        assert!(waiter.wait(patience(30)).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(flights.len(), 1, "the leader still flies");
        drop(leaders);
        assert!(flights.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_making_progress_keeps_its_followers() {
        let flights = Flights::new();
        let (mut leaders, followers) = split(vec![flights.join(KEY), flights.join(KEY)]);
        let leader = leaders.pop().expect("leader");
        let waiter = followers.into_iter().next().expect("follower");
        let p = Patience {
            first: Duration::from_secs(10),
            idle: Duration::from_secs(2),
            deadline: tokio::time::Instant::now() + Duration::from_secs(900),
        };
        let wait = tokio::spawn(waiter.wait(p));
        // First chunk at 9 s, then one every 1.5 s for a while, then done.
        tokio::time::sleep(Duration::from_secs(9)).await;
        for _ in 0..10 {
            leader.progress();
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        leader.done(Some(answer()));
        assert!(wait.await.expect("task").is_some());

        // A leader that stalls after its first chunk loses its follower
        // after the idle window, not the deadline.
        let (mut leaders, followers) = split(vec![flights.join(KEY), flights.join(KEY)]);
        let leader = leaders.pop().expect("leader");
        let started = tokio::time::Instant::now();
        let wait = tokio::spawn(followers.into_iter().next().expect("f").wait(p));
        tokio::time::sleep(Duration::from_secs(1)).await;
        leader.progress();
        assert!(wait.await.expect("task").is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(12));
        drop(leader);
    }

    #[tokio::test]
    async fn a_join_after_completion_leads_a_new_flight() {
        let flights = Flights::new();
        let Flight::Leader(first) = flights.join(KEY) else {
            panic!("first join leads");
        };
        first.done(Some(answer()));
        let Flight::Leader(second) = flights.join(KEY) else {
            panic!("a join after completion leads again");
        };
        // The old flight's cleanup must not remove the new one.
        assert_eq!(flights.len(), 1);
        drop(second);
        assert!(flights.is_empty());
    }
}
