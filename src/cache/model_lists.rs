//! Providers' own model lists (for `GET /v1/models` with a glob rule),
//! cached briefly with one fetch in flight per list.
//!
//! A list is keyed by the exact upstream request that fetches it (URL and
//! headers, credential included; see `proxy::models`), so one caller's list
//! is never served to a caller whose request would differ.
//!
//! Bounds (documented in the README):
//! - a fetched list is used for [`FRESH`] (60 s); then the next caller
//!   fetches it again while the callers arriving meanwhile wait for that one
//!   fetch: a stampede of clients causes one upstream call per list;
//! - a failed fetch is not retried for [`RETRY_AFTER_FAILURE`] (5 s); until
//!   then, and after it, callers get the last good list as long as it is at
//!   most [`KEEP_STALE`] (10 min) old, else none;
//! - at most [`MAX_ENTRIES`] lists and [`MAX_BYTES`] of ids are kept; the
//!   least recently used list goes first.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// A provider's model ids, in the provider's order.
pub type Ids = Arc<[Arc<str>]>;

/// Which list: a SHA-256 of the request that fetches it.
pub type ListKey = [u8; 32];

/// How long a fetched list is used before it is fetched again.
pub const FRESH: Duration = Duration::from_secs(60);
/// How long after a failed fetch the next one may start.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// How long a good list stands in for failing fetches.
pub const KEEP_STALE: Duration = Duration::from_secs(600);
/// Most lists kept.
pub const MAX_ENTRIES: usize = 256;
/// Most bytes of ids kept, over all lists (each id also counts
/// [`ID_OVERHEAD`]).
pub const MAX_BYTES: usize = 8 << 20;
/// What one kept id costs besides its bytes (its `Arc` header and slot).
pub const ID_OVERHEAD: usize = 32;

/// The cached lists, shared by every request (they outlive config
/// snapshots: the key already names the provider's URL and credential).
#[derive(Debug, Default)]
pub struct ModelLists {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    lists: HashMap<ListKey, Entry>,
    /// Bytes of ids held (see [`ID_OVERHEAD`]).
    bytes: usize,
    /// Use counter for least-recently-used eviction.
    tick: u64,
}

#[derive(Debug)]
struct Entry {
    ids: Ids,
    bytes: usize,
    /// When `ids` were fetched (`None`: never).
    fetched: Option<Instant>,
    /// When the last fetch ended, and whether it worked.
    checked: Option<(Instant, bool)>,
    /// The fetch in flight: its channel closes when it ends.
    flight: Option<watch::Receiver<Option<Ids>>>,
    used: u64,
}

impl Entry {
    fn new() -> Entry {
        Entry {
            ids: Ids::from(Vec::new()),
            bytes: 0,
            fetched: None,
            checked: None,
            flight: None,
            used: 0,
        }
    }

    /// No fetch is due yet.
    fn settled(&self, now: Instant) -> bool {
        self.checked.is_some_and(|(at, ok)| {
            let wait = if ok { FRESH } else { RETRY_AFTER_FAILURE };
            now < at + wait
        })
    }

    /// The list to answer with now: the last good one while it is not too
    /// old.
    fn current(&self, now: Instant) -> Ids {
        match self.fetched {
            Some(at) if now <= at + KEEP_STALE => self.ids.clone(),
            _ => Ids::from(Vec::new()),
        }
    }

    /// The fetch in flight, if its task is still running.
    fn in_flight(&self) -> Option<watch::Receiver<Option<Ids>>> {
        self.flight
            .as_ref()
            .filter(|rx| rx.has_changed().is_ok())
            .cloned()
    }
}

fn size_of(ids: &[Arc<str>]) -> usize {
    ids.iter()
        .map(|id| id.len().saturating_add(ID_OVERHEAD))
        .fold(0usize, usize::saturating_add)
}

impl Inner {
    /// The entry for `key`, made room for if it is new.
    fn entry(&mut self, key: ListKey) -> &mut Entry {
        self.tick = self.tick.wrapping_add(1);
        if !self.lists.contains_key(&key) {
            while self.lists.len() >= MAX_ENTRIES {
                if !self.evict_one(None) {
                    break;
                }
            }
        }
        let tick = self.tick;
        let e = self.lists.entry(key).or_insert_with(Entry::new);
        e.used = tick;
        e
    }

    /// Drops the least recently used list other than `keep`.
    fn evict_one(&mut self, keep: Option<ListKey>) -> bool {
        let victim = self
            .lists
            .iter()
            .filter(|(k, _)| Some(**k) != keep)
            .min_by_key(|(_, e)| e.used)
            .map(|(k, _)| *k);
        match victim.and_then(|k| self.lists.remove(&k)) {
            Some(e) => {
                self.bytes = self.bytes.saturating_sub(e.bytes);
                true
            }
            None => false,
        }
    }

    /// Records how a fetch ended; returns the list its waiters answer with.
    fn finish(&mut self, key: ListKey, result: Option<Vec<Arc<str>>>, now: Instant) -> Ids {
        let Some(e) = self.lists.get_mut(&key) else {
            // Evicted while fetching: the waiters still get the answer.
            return result.map_or_else(|| Ids::from(Vec::new()), Ids::from);
        };
        e.flight = None;
        let Some(ids) = result else {
            e.checked = Some((now, false));
            return e.current(now);
        };
        let ids = Ids::from(ids);
        let bytes = size_of(&ids);
        self.bytes = self.bytes.saturating_sub(e.bytes).saturating_add(bytes);
        e.ids = ids.clone();
        e.bytes = bytes;
        e.fetched = Some(now);
        e.checked = Some((now, true));
        while self.bytes > MAX_BYTES {
            if !self.evict_one(Some(key)) {
                break;
            }
        }
        ids
    }
}

impl ModelLists {
    /// An empty cache.
    pub fn new() -> ModelLists {
        ModelLists::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The list under `key`: the cached one while it is fresh, else the
    /// outcome of one fetch shared by every caller that asks meanwhile
    /// (`fetch` runs only if this caller starts it, in its own task, so a
    /// caller going away does not cancel it for the others). A fetch that
    /// fails (`None`) leaves the last good list, while it is not too old.
    /// `fetch` must bound its own time.
    pub async fn get<F>(&self, key: ListKey, fetch: F) -> Ids
    where
        F: Future<Output = Option<Vec<Arc<str>>>> + Send + 'static,
    {
        let mut rx = {
            let mut inner = self.lock();
            let now = Instant::now();
            let e = inner.entry(key);
            if e.settled(now) {
                return e.current(now);
            }
            match e.in_flight() {
                Some(rx) => rx,
                None => {
                    let (tx, rx) = watch::channel(None);
                    e.flight = Some(rx.clone());
                    let shared = Arc::clone(&self.inner);
                    // Not tracked for shutdown: it only fills this cache, and
                    // `fetch` bounds its time.
                    tokio::spawn(async move {
                        let result = fetch.await;
                        let ids = shared
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .finish(key, result, Instant::now());
                        tx.send_replace(Some(ids));
                    });
                    rx
                }
            }
        };
        if let Ok(ids) = rx.wait_for(Option::is_some).await {
            if let Some(ids) = ids.as_ref() {
                return ids.clone();
            }
        }
        // The fetch task went away without an answer (runtime shutting
        // down): whatever is kept.
        let mut inner = self.lock();
        let now = Instant::now();
        inner.entry(key).current(now)
    }

    /// How many lists are kept.
    pub fn len(&self) -> usize {
        self.lock().lists.len()
    }

    /// Whether no list is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn ids(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    fn names(ids: &Ids) -> Vec<&str> {
        ids.iter().map(|s| s.as_ref()).collect()
    }

    /// A fetch that counts its runs, takes a second, and answers `answer`.
    fn counted(
        calls: &Arc<AtomicUsize>,
        answer: Option<&[&str]>,
    ) -> impl Future<Output = Option<Vec<Arc<str>>>> + Send + 'static {
        let calls = calls.clone();
        let answer = answer.map(ids);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            answer
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch_and_the_list_stays_fresh() {
        let lists = Arc::new(ModelLists::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (lists, calls) = (lists.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                lists.get([1; 32], counted(&calls, Some(&["a", "b"]))).await
            }));
        }
        for t in tasks {
            assert_eq!(names(&t.await.expect("join")), ["a", "b"]);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Fresh: no fetch.
        tokio::time::advance(FRESH - Duration::from_secs(2)).await;
        let got = lists.get([1; 32], counted(&calls, Some(&["c"]))).await;
        assert_eq!(names(&got), ["a", "b"]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Expired: fetched again.
        tokio::time::advance(Duration::from_secs(2)).await;
        let got = lists.get([1; 32], counted(&calls, Some(&["c"]))).await;
        assert_eq!(names(&got), ["c"]);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Another key is another list.
        let got = lists.get([2; 32], counted(&calls, Some(&["d"]))).await;
        assert_eq!(names(&got), ["d"]);
        assert_eq!(lists.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_fetch_keeps_the_last_list_for_a_while_and_is_not_retried_at_once() {
        let lists = ModelLists::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let got = lists.get([1; 32], counted(&calls, None)).await;
        assert!(got.is_empty(), "nothing known yet");
        let got = lists.get([1; 32], counted(&calls, Some(&["a"]))).await;
        assert!(got.is_empty(), "not retried at once");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(RETRY_AFTER_FAILURE).await;
        let got = lists.get([1; 32], counted(&calls, Some(&["a"]))).await;
        assert_eq!(names(&got), ["a"]);
        // Failing after a good fetch: the good list stands in...
        tokio::time::advance(FRESH).await;
        let got = lists.get([1; 32], counted(&calls, None)).await;
        assert_eq!(names(&got), ["a"]);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // ...until it is too old.
        tokio::time::advance(KEEP_STALE).await;
        let got = lists.get([1; 32], counted(&calls, None)).await;
        assert!(got.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_going_away_does_not_cancel_the_fetch() {
        let lists = Arc::new(ModelLists::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let first = {
            let (lists, calls) = (lists.clone(), calls.clone());
            tokio::spawn(async move { lists.get([1; 32], counted(&calls, Some(&["a"]))).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        let got = lists.get([1; 32], counted(&calls, Some(&["b"]))).await;
        assert_eq!(names(&got), ["a"], "joined the first caller's fetch");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_and_bytes_are_bounded() {
        let lists = ModelLists::new();
        let calls = Arc::new(AtomicUsize::new(0));
        for i in 0..(MAX_ENTRIES + 10) {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            lists.get(key, counted(&calls, Some(&["m"]))).await;
        }
        assert_eq!(lists.len(), MAX_ENTRIES);
        // Two lists of over half the byte bound each: only one is kept.
        let big: Vec<String> = (0..MAX_BYTES / 2 / (ID_OVERHEAD + 8) + 1)
            .map(|i| format!("{i:08}"))
            .collect();
        let big: Vec<&str> = big.iter().map(String::as_str).collect();
        lists.get([0xaa; 32], counted(&calls, Some(&big))).await;
        let got = lists.get([0xbb; 32], counted(&calls, Some(&big))).await;
        assert_eq!(got.len(), big.len());
        let inner = lists.lock();
        assert!(inner.bytes <= MAX_BYTES, "{}", inner.bytes);
        assert!(!inner.lists.contains_key(&[0xaa; 32]));
        assert!(inner.lists.contains_key(&[0xbb; 32]));
    }
}
