//! Worker pools: "run at most N of these at once".
//!
//! The seeds' decision, one pool per kind of work, one vocabulary for all:
//!
//! | work | pool | runs on |
//! |---|---|---|
//! | async I/O (HTTP calls, database queries with an async driver) | [`WorkerPool`] | the Tokio runtime, at most N tasks at once |
//! | a blocking library (sync driver, file I/O, FFI) | [`BlockingPool`] | Tokio's blocking threads, at most N at once |
//! | CPU-bound computation (parsing, hashing, image work) | [`CpuPool`] | its own OS threads, so the runtime never starves |
//!
//! Each has `submit(work).await` (waits for queue room: backpressure),
//! `try_submit(work)` (sheds at once, handing the work back),
//! `submit_timeout`, `submit_with_priority` / `try_submit_with_priority`, a
//! [`TaskHandle`] to await or `abort()`, `clear_queue()`, `close()`,
//! `shutdown(deadline)` returning a [`ShutdownReport`], and `metrics()`
//! returning [`PoolMetrics`]. A submission holds its place from admission to
//! completion, so `running + queued <= max_concurrency + queue_capacity`
//! always; queued work is not spawned and uses no runtime resources.
//!
//! # Priorities
//!
//! Queued work starts highest priority first (an `i32`, higher first;
//! plain `submit` uses [`DEFAULT_PRIORITY`], 0), first-in, first-out within
//! a priority. The starvation policy is explicit:
//!
//! - **Strict (the default).** A queued task waits as long as anything of
//!   a higher priority is queued, however long that is. Use it when low
//!   priority really means "only when idle".
//! - **Aging** (`priority_aging(n)` on every builder). A queued task gains
//!   one priority level for every `n` tasks started from the queue while it
//!   waits, so a task of priority `p` is never overtaken by a task of
//!   priority `q > p` that was queued `(q − p) × n` or more starts after it:
//!   nothing waits forever. Counted in starts, not time, so it needs no
//!   clock and behaves the same under load and when idle.
//!
//! Priority orders the queue, not admission: when the queue is full,
//! `submit_with_priority` waits for room first come, first served like
//! `submit` (use `try_submit_with_priority` to shed instead).
//!
//! ```
//! use flowguard::pool::WorkerPool;
//! use std::sync::{Arc, Mutex};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let pool = WorkerPool::builder().max_concurrency(1).build().unwrap();
//! let order = Arc::new(Mutex::new(Vec::new()));
//! let busy = pool.submit(async {}).await.unwrap(); // takes the only slot
//! let mut handles = vec![busy];
//! for (job, priority) in [("report", 0), ("checkout", 10), ("thumbnail", -5), ("login", 10)] {
//!     let order = order.clone();
//!     let work = async move { order.lock().unwrap().push(job) };
//!     handles.push(pool.submit_with_priority(work, priority).await.unwrap());
//! }
//! for h in handles {
//!     h.await.unwrap();
//! }
//! assert_eq!(*order.lock().unwrap(), ["checkout", "login", "report", "thumbnail"]);
//! # }
//! ```
//!
//! For a concurrency limit found by measurement rather than set by hand,
//! acquire from an [`AdaptiveLimiter`](crate::adaptive::AdaptiveLimiter)
//! before each `submit` and report from the task; see
//! [its module docs](crate::adaptive#with-a-workerpool).
//!
//! # Example
//!
//! ```
//! use flowguard::pool::WorkerPool;
//! use futures::StreamExt;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let pool = WorkerPool::builder().max_concurrency(64).build().unwrap();
//! let start = tokio::time::Instant::now();
//! // 1000 requests of 100 ms each, 64 at a time: 16 rounds, not 1000.
//! let ok = pool
//!     .map_unordered(0..1000, |_| tokio::time::sleep(Duration::from_millis(100)))
//!     .filter(|r| std::future::ready(r.is_ok()))
//!     .count()
//!     .await;
//! assert_eq!(ok, 1000);
//! assert_eq!(start.elapsed(), Duration::from_millis(1600));
//! # }
//! ```

mod blocking;
mod config;
mod cpu;
mod dispatch;
mod error;
mod queue;
mod slot;
mod submit;
mod task;
mod worker;

pub use blocking::{BlockingPool, BlockingPoolBuilder};
pub use cpu::{CpuPool, CpuPoolBuilder, MAX_CPU_THREADS};
pub use error::{SubmitError, TaskError};
pub use slot::{PoolSlot, SlotError};
/// The priority of work submitted without one (`submit`, `try_submit`, …).
pub const DEFAULT_PRIORITY: i32 = queue::DEFAULT_PRIORITY;
pub use task::TaskHandle;
pub use worker::{Iter, Map, WorkerPool, WorkerPoolBuilder};

use crate::histogram::HistogramSnapshot;
use crate::sync::atomic::Ordering::Relaxed;
use dispatch::Dispatcher;

/// A snapshot of a pool's load and lifetime counts.
///
/// # Examples
///
/// ```
/// use flowguard::pool::WorkerPool;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = WorkerPool::builder().max_concurrency(4).queue_capacity(8).build().unwrap();
/// pool.submit(async { 1 }).await.unwrap().await.unwrap();
/// let m = pool.metrics();
/// assert_eq!((m.max_concurrency, m.queue_capacity), (4, 8));
/// assert_eq!((m.running, m.queued, m.completed), (0, 0, 1));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PoolMetrics {
    /// Tasks running now.
    pub running: usize,
    /// Admitted tasks waiting for a slot.
    pub queued: usize,
    /// The concurrency limit (threads, for a `CpuPool`).
    pub max_concurrency: usize,
    /// The queue bound.
    pub queue_capacity: usize,
    /// Tasks that returned a value.
    pub completed: u64,
    /// Tasks that failed on their own: `panicked + timed_out`.
    pub failed: u64,
    /// Tasks that panicked.
    pub panicked: u64,
    /// Tasks stopped by the per-task timeout.
    pub timed_out: u64,
    /// Tasks stopped by someone: aborted, cleared from the queue, or cut off
    /// at a shutdown deadline (every [`TaskError::is_cancelled`] outcome).
    pub cancelled: u64,
    /// `try_submit` calls refused because the pool was full.
    pub rejected: u64,
    /// `running / max_concurrency`, from 0.0 to 1.0 (above 1.0 briefly after
    /// a shrink).
    pub utilisation: f64,
    /// How long submitters waited for queue room (nanoseconds; only the
    /// `submit` calls that had to wait: those admitted at once read no
    /// clock). See [`SemaphoreMetrics::wait`](crate::semaphore::SemaphoreMetrics::wait).
    pub submit_wait: HistogramSnapshot,
    /// How long admitted tasks waited in the queue for a run slot
    /// (nanoseconds; only tasks that queued). Sampled when tasks are
    /// frequent, each timed task weighted by the tasks it stands for (see
    /// the builders' `histogram_max_one_in`).
    pub queue_wait: HistogramSnapshot,
    /// How long tasks ran, from start to end (nanoseconds): completed,
    /// failed, timed out or aborted while running. Sampled as `queue_wait`.
    pub run_time: HistogramSnapshot,
}

impl PoolMetrics {
    fn from_dispatcher(d: &Dispatcher) -> Self {
        let load = d.load();
        let c = &d.counters;
        let panicked = c.panicked.load(Relaxed);
        let timed_out = c.timed_out.load(Relaxed);
        Self {
            running: load.running,
            queued: load.queued,
            max_concurrency: load.max_concurrency,
            queue_capacity: d.queue_capacity,
            completed: c.completed.load(Relaxed),
            failed: panicked + timed_out,
            panicked,
            timed_out,
            cancelled: c.cancelled.load(Relaxed),
            rejected: c.rejected.load(Relaxed),
            utilisation: load.running as f64 / load.max_concurrency as f64,
            submit_wait: d.admit.metrics().wait,
            queue_wait: d.queue_wait.snapshot(),
            run_time: d.run_time.snapshot(),
        }
    }
}

/// What a `shutdown` did.
///
/// # Examples
///
/// ```
/// use flowguard::pool::WorkerPool;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let pool = WorkerPool::builder().max_concurrency(2).build().unwrap();
/// let task = pool.submit(tokio::time::sleep(Duration::from_millis(10))).await.unwrap();
/// let report = pool.shutdown_timeout(Duration::from_secs(1)).await;
/// assert!(report.drained); // everything finished before the deadline
/// assert_eq!((report.completed, report.aborted_running), (1, 0));
/// assert!(task.await.is_ok());
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// True if everything finished before the deadline.
    pub drained: bool,
    /// Tasks that completed with a value during the shutdown.
    pub completed: u64,
    /// Queued tasks dropped unrun at the deadline (their handles resolve to
    /// [`TaskError::Shutdown`]).
    pub cancelled_queued: usize,
    /// Async tasks (`WorkerPool`) still running at the deadline, aborted
    /// there (their handles resolve to [`TaskError::Shutdown`]).
    pub aborted_running: usize,
    /// Blocking and CPU calls (`BlockingPool`, `CpuPool`) still running at
    /// the deadline. They cannot be interrupted: they run on, detached,
    /// keep their slot until they return, and their handles resolve with
    /// their result. Always 0 for a `WorkerPool`.
    pub still_running: usize,
}

/// Publishes a named pool's metrics (feature `metrics`).
#[cfg(all(feature = "metrics", not(loom)))]
fn export(d: &crate::sync::Arc<Dispatcher>) {
    let h = crate::metrics::Handles::new("pool", &d.name);
    d.admit.export_wait(h.histogram("submit_wait_seconds"));
    d.queue_wait.export_to(h.histogram("queue_wait_seconds"));
    d.run_time.export_to(h.histogram("run_seconds"));
    let (running, queued, max) = (
        h.gauge("running"),
        h.gauge("queued"),
        h.gauge("max_concurrency"),
    );
    let (completed, failed) = (h.counter("completed_total"), h.counter("failed_total"));
    let (cancelled, rejected) = (h.counter("cancelled_total"), h.counter("rejected_total"));
    let weak = crate::sync::Arc::downgrade(d);
    crate::metrics::register(move || {
        let Some(d) = weak.upgrade() else {
            return false;
        };
        let load = d.load();
        let c = &d.counters;
        running.set(load.running as f64);
        queued.set(load.queued as f64);
        max.set(load.max_concurrency as f64);
        completed.absolute(c.completed.load(Relaxed));
        failed.absolute(c.panicked.load(Relaxed) + c.timed_out.load(Relaxed));
        cancelled.absolute(c.cancelled.load(Relaxed));
        rejected.absolute(c.rejected.load(Relaxed));
        true
    });
}
