//! Worker threads: the data plane runs on `[server] workers` single-threaded
//! runtimes, one per core, the way nginx runs one event loop per worker.
//!
//! A connection is accepted once and handed, round-robin, to one worker,
//! and every task it needs stays there: the request, the upstream
//! connection it borrows (each worker has its own pool per provider, see
//! [`PerWorker`]) and the response's chunks. A wake-up is then a push on
//! the worker's own run queue, never a futex or an eventfd write to
//! another thread, which is what a work-stealing runtime pays for each
//! handoff between a request and its upstream connection.
//!
//! The main thread is worker 0: it also runs the admin plane, signals and
//! the background tasks ([`spawn_main`]). Workers `1..n` are threads named
//! `sluice-worker-{i}`.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The most workers a config may ask for.
pub const MAX_WORKERS: usize = 256;

/// Blocking threads of each worker thread's runtime (exact token counts of
/// long prompts run there, off the event loop); more wait their turn.
pub const BLOCKING_THREADS: usize = 8;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many workers the process runs (1 until [`Workers::start`]).
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// The main runtime, once [`Workers::start`] ran.
static MAIN: OnceLock<Handle> = OnceLock::new();

/// This thread's worker (0 on the main thread and on any other thread).
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// How many workers the process runs.
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// The number of workers when the config does not say: one per core.
pub fn default_count() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(MAX_WORKERS)
}

/// Spawns a task on the main runtime: work that outlives the request that
/// starts it (a shadow copy, a cache write) and that shutdown waits for
/// or flushes after the workers have stopped. Without [`Workers`] (tests,
/// one-shot commands), on the current runtime.
pub fn spawn_main<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match MAIN.get() {
        Some(main) => drop(main.spawn(fut)),
        None => drop(tokio::spawn(fut)),
    }
}

/// One `T` per worker, each used only from its own worker's thread (threads
/// that are not workers use worker 0's).
#[derive(Debug)]
pub struct PerWorker<T>(Box<[T]>);

impl<T> PerWorker<T> {
    /// `make(i)` for each worker `i`.
    pub fn new(make: impl FnMut(usize) -> T) -> Self {
        Self((0..count().max(1)).map(make).collect())
    }

    /// This thread's.
    pub fn get(&self) -> &T {
        // A value built while the count was smaller (before `start`, as in
        // tests) wraps instead of panicking.
        &self.0[index() % self.0.len()]
    }
}

/// The running workers: the main runtime's handle and one per thread.
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: CancellationToken,
}

impl Workers {
    /// Starts workers `1..n` (the calling runtime is worker 0). Call it
    /// before anything builds a [`PerWorker`].
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let n = n.clamp(1, MAX_WORKERS);
        let _ = MAIN.set(Handle::current());
        COUNT.store(n, Ordering::Relaxed);
        Self::spawn(n)
    }

    /// The threads alone (no process-wide state set).
    fn spawn(n: usize) -> std::io::Result<Workers> {
        // Dropped on an error below, it ends the threads already started.
        let mut workers = Workers {
            handles: vec![Handle::current()],
            threads: Vec::with_capacity(n - 1),
            stop: CancellationToken::new(),
        };
        for i in 1..n {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let stop = workers.stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sluice-worker-{i}"))
                .spawn(move || {
                    INDEX.with(|c| c.set(i));
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .max_blocking_threads(BLOCKING_THREADS)
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(rt.handle().clone()));
                    // A current-thread runtime runs its tasks only while
                    // something blocks on it: this, until shutdown.
                    rt.block_on(stop.cancelled());
                })?;
            let handle = rx
                .recv()
                .map_err(|_| std::io::Error::other("worker thread exited at start"))??;
            workers.handles.push(handle);
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Every worker's runtime, the main one first.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Ends the worker threads (their tasks are dropped) and waits for them.
    /// Call it once the data plane has drained.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl Drop for Workers {
    /// Without [`Workers::stop`] (start failed, or `run` returned early):
    /// the threads still end, without being waited for.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_worker_values_are_picked_by_the_threads_index() {
        let v = PerWorker::new(|i| i * 10);
        assert_eq!(*v.get(), 0, "a thread that is no worker uses worker 0's");
        std::thread::spawn(move || {
            INDEX.with(|c| c.set(3));
            // One value per worker; an index past them wraps.
            assert_eq!(*v.get(), (3 % v.0.len()) * 10);
        })
        .join()
        .expect("thread");
    }

    #[tokio::test]
    async fn workers_run_tasks_on_their_own_threads_and_stop() {
        let workers = Workers::spawn(3).expect("start");
        assert_eq!(workers.handles().len(), 3);
        for (i, h) in workers.handles().iter().enumerate().skip(1) {
            let (name, idx) = h
                .spawn(async { (std::thread::current().name().map(str::to_owned), index()) })
                .await
                .expect("task");
            assert_eq!(name.as_deref(), Some(format!("sluice-worker-{i}").as_str()));
            assert_eq!(idx, i);
        }
        workers.stop().await;
    }

    #[tokio::test]
    async fn dropped_workers_end_their_threads() {
        let workers = Workers::spawn(2).expect("start");
        let worker = workers.handles()[1].clone();
        drop(workers);
        // Its runtime is gone once the thread ends: a task sent there is
        // cancelled, never run.
        for _ in 0..500 {
            if worker.spawn(async {}).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the worker thread is still running");
    }
}
