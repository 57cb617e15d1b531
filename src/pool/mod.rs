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
//! `submit_timeout`, a [`TaskHandle`] to await or `abort()`, `close()`,
//! `shutdown(deadline)` returning a [`ShutdownReport`], and `metrics()`
//! returning [`PoolMetrics`]. A submission holds its place from admission to
//! completion, so `running + queued <= max_concurrency + queue_capacity`
//! always; queued work is not spawned and uses no runtime resources.
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
mod submit;
mod task;
mod worker;

pub use blocking::{BlockingPool, BlockingPoolBuilder};
pub use cpu::{CpuPool, CpuPoolBuilder, MAX_CPU_THREADS};
pub use error::{SubmitError, TaskError};
pub use task::TaskHandle;
pub use worker::{Iter, Map, WorkerPool, WorkerPoolBuilder};

use crate::sync::atomic::Ordering::Relaxed;
use dispatch::Dispatcher;

/// A snapshot of a pool's load and lifetime counts.
#[derive(Debug, Clone, Copy, PartialEq)]
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
    /// Tasks aborted, or dropped from the queue at a shutdown deadline.
    pub cancelled: u64,
    /// `try_submit` calls refused because the pool was full.
    pub rejected: u64,
    /// `running / max_concurrency`, from 0.0 to 1.0 (above 1.0 briefly after
    /// a shrink).
    pub utilisation: f64,
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
        }
    }
}

/// What a `shutdown` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// True if everything finished before the deadline.
    pub drained: bool,
    /// Tasks that completed with a value during the shutdown.
    pub completed: u64,
    /// Queued tasks dropped unrun at the deadline (their handles resolve to
    /// `Cancelled`).
    pub cancelled_queued: usize,
    /// Tasks still running at the deadline: async tasks are aborted;
    /// blocking and CPU closures cannot be interrupted and finish detached.
    pub aborted_running: usize,
}
