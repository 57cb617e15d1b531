//! `CpuPool`: CPU-bound closures on dedicated OS threads.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::config::PoolConfig;
use super::dispatch::{Control, Dispatcher, Job, RunSlot};
use super::submit::{self, Submit, far_future};
use super::task::{Finish, TaskShared, catch};
use super::worker::shutdown;
use super::{PoolMetrics, ShutdownReport, SubmitError, TaskError, TaskHandle};
use crate::sync::{Arc, Condvar, Mutex, thread};
use crate::{ConfigError, ConfigErrorKind};

/// Runs CPU-bound closures on its own OS threads, one closure per thread at a
/// time, so heavy computation never starves the async runtime's workers.
/// Results are awaitable; submissions beyond the threads wait in a bounded
/// queue; panics are caught. Clones share one pool; the threads exit once
/// the last handle is dropped and the queued work is done, or at
/// [`shutdown`](Self::shutdown), which joins them.
///
/// (Rust has no GIL: these are threads, where Python would need processes.)
///
/// # Examples
///
/// ```
/// use flowguard::pool::CpuPool;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = CpuPool::builder().threads(2).build().unwrap();
/// let sum = pool.run(|| (1..=1_000_000u64).sum::<u64>()).await.unwrap();
/// assert_eq!(sum, 500_000_500_000);
/// pool.shutdown_timeout(std::time::Duration::from_secs(5)).await;
/// # }
/// ```
#[derive(Clone)]
pub struct CpuPool {
    inner: Arc<CpuInner>,
}

struct CpuInner {
    dispatch: Arc<Dispatcher>,
    handoff: Arc<Handoff>,
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
}

type Work = Box<dyn FnOnce() + Send>;

/// Started jobs waiting for a thread; never longer than the thread count,
/// because the dispatcher starts at most `threads` jobs at once.
#[derive(Default)]
struct Handoff {
    state: Mutex<HandoffState>,
    ready: Condvar,
}

#[derive(Default)]
struct HandoffState {
    work: VecDeque<Work>,
    exit: bool,
}

impl Handoff {
    fn push(&self, work: Work) {
        self.state.lock().work.push_back(work);
        self.ready.notify_one();
    }

    fn exit(&self) {
        self.state.lock().exit = true;
        self.ready.notify_all();
    }

    fn worker_loop(&self) {
        let mut st = self.state.lock();
        loop {
            if let Some(work) = st.work.pop_front() {
                drop(st);
                work();
                st = self.state.lock();
            } else if st.exit {
                return;
            } else {
                st = self.ready.wait(st);
            }
        }
    }
}

/// Configures a [`CpuPool`]. Defaults: `threads` = available parallelism,
/// `queue_capacity` 1024, name `"cpu_pool"` (threads are named `name-0`, …).
///
/// # Examples
///
/// ```
/// use flowguard::pool::CpuPool;
/// let err = CpuPool::builder().threads(0).build().unwrap_err();
/// assert_eq!(err.field(), "threads");
/// ```
#[derive(Debug, Clone)]
pub struct CpuPoolBuilder {
    config: PoolConfig,
}

/// The most threads a [`CpuPool`] may have.
pub const MAX_CPU_THREADS: usize = 4096;

impl CpuPoolBuilder {
    /// The number of worker threads (1 to [`MAX_CPU_THREADS`]).
    pub fn threads(mut self, n: usize) -> Self {
        self.config.max_concurrency = n;
        self
    }

    /// How many submissions may wait for a thread.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.config.queue_capacity = n;
        self
    }

    /// A name for tracing events and thread names.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Validates the configuration and starts the threads. Needs no runtime.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `threads` (0, above [`MAX_CPU_THREADS`], or the
    /// OS refused to start one) or `queue_capacity` (too large).
    pub fn build(self) -> Result<CpuPool, ConfigError> {
        let c = self.config;
        let threads_err =
            |kind, reason: String| ConfigError::new("cpu_pool", "threads", kind, reason);
        if c.max_concurrency == 0 {
            return Err(threads_err(
                ConfigErrorKind::Zero,
                "must be at least 1, got 0".into(),
            ));
        }
        if c.max_concurrency > MAX_CPU_THREADS {
            return Err(threads_err(
                ConfigErrorKind::TooLarge,
                format!(
                    "must be at most {MAX_CPU_THREADS}, got {}",
                    c.max_concurrency
                ),
            ));
        }
        c.validate()?;
        let handoff = Arc::new(Handoff::default());
        let mut threads = Vec::with_capacity(c.max_concurrency);
        for i in 0..c.max_concurrency {
            let h = handoff.clone();
            let spawned = thread::Builder::new()
                .name(format!("{}-{i}", c.name))
                .spawn(move || h.worker_loop());
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    handoff.exit();
                    return Err(threads_err(
                        ConfigErrorKind::TooLarge,
                        format!("could not start thread {i}: {e}"),
                    ));
                }
            }
        }
        Ok(CpuPool {
            inner: Arc::new(CpuInner {
                dispatch: Dispatcher::new(c.max_concurrency, c.queue_capacity, c.name),
                handoff,
                threads: Mutex::new(threads),
            }),
        })
    }
}

impl CpuPool {
    /// A builder with the defaults listed on [`CpuPoolBuilder`].
    pub fn builder() -> CpuPoolBuilder {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        CpuPoolBuilder {
            config: PoolConfig::new("cpu_pool", n),
        }
    }

    /// Runs `f` on a pool thread and returns its result.
    ///
    /// # Errors
    ///
    /// [`TaskError::Panicked`], or [`TaskError::Closed`] when the pool is closed.
    ///
    /// # Cancel safety
    ///
    /// Dropped while waiting for room: nothing runs. Dropped later: the
    /// closure still runs, its result is discarded.
    pub async fn run<F, T>(&self, f: F) -> Result<T, TaskError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.submit(f).await {
            Ok(handle) => handle.await,
            Err(_) => Err(TaskError::Closed),
        }
    }

    /// Submits `f`, waiting for queue room (backpressure).
    ///
    /// # Errors
    ///
    /// [`SubmitError::Closed`] with the closure.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting, nothing is queued.
    pub async fn submit<F, T>(&self, f: F) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        submit::submit(&*self.inner, f).await
    }

    /// Submits `f` only if it can run or queue at once.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] (counted as rejected) or [`SubmitError::Closed`], with the closure.
    pub fn try_submit<F, T>(&self, f: F) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        submit::try_submit(&*self.inner, f)
    }

    /// [`submit`](Self::submit), waiting at most `timeout` for queue room.
    ///
    /// # Errors
    ///
    /// [`SubmitError::TimedOut`] or [`SubmitError::Closed`], with the closure.
    ///
    /// # Cancel safety
    ///
    /// As [`submit`](Self::submit).
    pub async fn submit_timeout<F, T>(
        &self,
        f: F,
        timeout: Duration,
    ) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        submit::submit_timeout(&*self.inner, f, timeout).await
    }

    /// Stops intake; queued and running closures carry on. Idempotent.
    pub fn close(&self) {
        self.inner.dispatch.close();
    }

    /// Closes the pool, waits for queued and running closures until
    /// `deadline`, drops what is still queued, and joins the threads if they
    /// are idle. Closures still running at the deadline cannot be
    /// interrupted: they are counted in `aborted_running` and their threads
    /// finish detached.
    ///
    /// # Cancel safety
    ///
    /// Cancelling it leaves the pool closed with its work still running.
    pub async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        let report = shutdown(&self.inner.dispatch, deadline).await;
        self.inner.handoff.exit();
        if report.drained {
            let threads = std::mem::take(&mut *self.inner.threads.lock());
            // The threads are idle and told to exit: joining is prompt.
            let _ = tokio::task::spawn_blocking(move || {
                for t in threads {
                    let _ = t.join();
                }
            })
            .await;
        }
        report
    }

    /// [`shutdown`](Self::shutdown) with a deadline `timeout` from now.
    ///
    /// # Cancel safety
    ///
    /// As [`shutdown`](Self::shutdown).
    pub async fn shutdown_timeout(&self, timeout: Duration) -> ShutdownReport {
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(far_future);
        self.shutdown(deadline).await
    }

    /// Running, queued and lifetime counts; see [`PoolMetrics`].
    pub fn metrics(&self) -> PoolMetrics {
        PoolMetrics::from_dispatcher(&self.inner.dispatch)
    }
}

impl Drop for CpuInner {
    fn drop(&mut self) {
        // Threads finish the work already handed to them, then exit.
        self.handoff.exit();
    }
}

impl fmt::Debug for CpuPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.metrics();
        f.debug_struct("CpuPool")
            .field("name", &self.inner.dispatch.name)
            .field("threads", &m.max_concurrency)
            .field("running", &m.running)
            .field("queued", &m.queued)
            .finish()
    }
}

pub(crate) struct CpuJob<F, T> {
    f: F,
    shared: Arc<TaskShared<T>>,
    handoff: Arc<Handoff>,
}

impl<F, T> Submit<F, T> for CpuInner
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    type Job = CpuJob<F, T>;

    fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatch
    }

    fn job(&self, f: F, shared: Arc<TaskShared<T>>) -> Self::Job {
        CpuJob {
            f,
            shared,
            handoff: self.handoff.clone(),
        }
    }

    fn into_work(job: Self::Job) -> F {
        job.f
    }

    fn control(_: &Arc<TaskShared<T>>) -> Option<Box<dyn Control>> {
        None // a running closure cannot be interrupted
    }
}

impl<F, T> Job for CpuJob<F, T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn start(self: Box<Self>, slot: RunSlot) {
        let CpuJob { f, shared, handoff } = *self;
        let guard = Finish::new(shared, slot);
        handoff.push(Box::new(move || guard.finish(catch(f))));
    }

    fn cancel(self: Box<Self>) {
        self.shared.complete(Err(TaskError::Cancelled));
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}
