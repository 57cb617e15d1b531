//! `BlockingPool`: blocking calls on Tokio's blocking threads, bounded.

use std::fmt;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::Instant;

use super::config::{PoolConfig, check_concurrency, runtime_or_current};
use super::dispatch::{Dispatcher, RunSlot};
use super::submit::{self, Submit, far_future};
use super::task::{Finish, Shared, Work, catch, spawn_timeout};
use super::worker::shutdown;
use super::{DEFAULT_PRIORITY, PoolMetrics, ShutdownReport, SubmitError, TaskError, TaskHandle};
use crate::ConfigError;
use crate::sync::Arc;

/// Runs blocking closures (a synchronous database driver, file I/O, a C
/// library) on Tokio's blocking threads, at most `max_concurrency` at once,
/// with a bounded queue instead of Tokio's default of 512 threads and an
/// unbounded queue. The async runtime's workers are never blocked. Clones
/// share one pool.
///
/// A blocking call cannot be interrupted: a per-task `timeout` makes the
/// *caller* stop waiting ([`TaskError::TimedOut`]), but the call keeps its
/// slot until it returns, so the pool never runs more than
/// `max_concurrency` calls.
///
/// # Examples
///
/// ```
/// use flowguard::pool::BlockingPool;
///
/// # #[tokio::main] async fn main() {
/// let pool = BlockingPool::builder().max_concurrency(4).build().unwrap();
/// let len = pool
///     .run(|| std::fs::read_to_string("Cargo.toml").map(|s| s.len()))
///     .await
///     .unwrap();
/// assert!(len.unwrap() > 0);
/// # }
/// ```
#[derive(Clone)]
pub struct BlockingPool {
    inner: Arc<BlockingInner>,
}

struct BlockingInner {
    dispatch: Arc<Dispatcher>,
    runtime: Handle,
    timeout: Option<Duration>,
}

/// Configures a [`BlockingPool`]. Defaults: `max_concurrency` 16,
/// `queue_capacity` 1024, no timeout, name `"blocking_pool"`, the current
/// Tokio runtime.
///
/// # Examples
///
/// ```
/// use flowguard::pool::BlockingPool;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let err = BlockingPool::builder().queue_capacity(usize::MAX).build().unwrap_err();
/// assert_eq!(err.field(), "queue_capacity");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BlockingPoolBuilder {
    config: PoolConfig,
    runtime: Option<Handle>,
}

impl BlockingPoolBuilder {
    /// The most blocking calls that run at once (at least 1).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.config.max_concurrency = n;
        self
    }

    /// How many admitted calls may wait for a slot.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.config.queue_capacity = n;
        self
    }

    /// How long a caller waits for a started call before it gets
    /// [`TaskError::TimedOut`], counted from when the call starts (not from
    /// submission). The call itself cannot be interrupted: it runs on to
    /// its end and keeps its slot until then, so the pool still never runs
    /// more than `max_concurrency` calls; its result is discarded.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = Some(timeout);
        self
    }

    /// A name for tracing events.
    /// With the `metrics` feature, the pool's metrics are published under
    /// it (see `flowguard::metrics`); unnamed pools are not.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self.config.named = true;
        self
    }

    /// Whether to keep the wait and run-time histograms of
    /// [`PoolMetrics`](super::PoolMetrics) (default on). Their timing is
    /// sampled when tasks are frequent (see
    /// [`histogram_max_one_in`](Self::histogram_max_one_in)): a timed task
    /// reads the clock once at its start and once at its end, outside the
    /// pool's lock (a task handed a slot at another's end shares that
    /// read); an untimed one reads none. Off, no clock is read.
    pub fn histograms(mut self, on: bool) -> Self {
        self.config.histograms = on;
        self
    }

    /// The most tasks that one timed task may stand for in the
    /// `submit_wait`, `queue_wait` and `run_time` histograms (default
    /// [`DEFAULT_MAX_ONE_IN`](crate::histogram::DEFAULT_MAX_ONE_IN), 64;
    /// rounded down to a power of two). While fewer than about 128 tasks
    /// start per millisecond every one is timed; above that about one in
    /// 2^k is, recorded with a weight of 2^k, so counts and sums stay
    /// unbiased estimates (see [sampled timing](crate::histogram#sampled-timing)).
    /// 1 times every task. The counters of [`PoolMetrics`](super::PoolMetrics)
    /// (`completed`, `failed`, `cancelled`, ...) are exact whatever this is.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pool::BlockingPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// assert!(BlockingPool::builder().histogram_max_one_in(1).build().is_ok());
    /// let err = BlockingPool::builder().histogram_max_one_in(0).build().unwrap_err();
    /// assert_eq!(err.field(), "histogram_max_one_in");
    /// # }
    /// ```
    pub fn histogram_max_one_in(mut self, n: u32) -> Self {
        self.config.histogram_max_one_in = n;
        self
    }

    /// Runs each task inside a `pool_task` span at `debug` level, with the
    /// pool's name as field `pool`, so the task's own events carry it.
    /// Off by default: creating a span costs time even when no subscriber
    /// wants it.
    pub fn trace_tasks(mut self, on: bool) -> Self {
        self.config.trace_tasks = on;
        self
    }

    /// Ages queued calls: each gains one priority level for every `n` calls
    /// started from the queue while it waits (at least 1). Default: strict
    /// priorities (see [the module docs](super#priorities)).
    pub fn priority_aging(mut self, n: usize) -> Self {
        self.config.priority_aging = Some(n);
        self
    }

    /// The runtime whose blocking threads to use (default: the current one).
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Validates the configuration and creates the pool.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `max_concurrency`, `queue_capacity`, `timeout`,
    /// `priority_aging`, `histogram_max_one_in` or `runtime`, as for
    /// [`WorkerPoolBuilder::build`](super::WorkerPoolBuilder::build).
    pub fn build(self) -> Result<BlockingPool, ConfigError> {
        self.config.validate()?;
        let runtime = runtime_or_current("blocking_pool", self.runtime)?;
        let c = self.config;
        let dispatch = Dispatcher::new(
            c.max_concurrency,
            c.queue_capacity,
            c.name,
            (c.histograms, c.histogram_max_one_in),
            c.trace_tasks,
        );
        dispatch.set_priority_aging(c.priority_aging);
        #[cfg(all(feature = "metrics", not(loom)))]
        if c.named {
            super::export(&dispatch);
        }
        Ok(BlockingPool {
            inner: Arc::new(BlockingInner {
                dispatch,
                runtime,
                timeout: c.timeout,
            }),
        })
    }
}

impl BlockingPool {
    /// A builder with the defaults listed on [`BlockingPoolBuilder`].
    pub fn builder() -> BlockingPoolBuilder {
        BlockingPoolBuilder {
            config: PoolConfig::new("blocking_pool", 16),
            runtime: None,
        }
    }

    /// Runs `f` on a blocking thread once a slot is free and returns its result.
    ///
    /// # Errors
    ///
    /// [`TaskError::Panicked`], [`TaskError::TimedOut`], or
    /// [`TaskError::Closed`] when the pool is closed (use
    /// [`submit`](Self::submit) to get the closure back instead).
    ///
    /// # Cancel safety
    ///
    /// Dropped while waiting for room: nothing runs. Dropped after the call
    /// started: the call runs on to the end, its result is discarded.
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
        submit::submit(&*self.inner, f, DEFAULT_PRIORITY).await
    }

    /// [`submit`](Self::submit) at `priority` (higher starts first; plain
    /// `submit` is [`DEFAULT_PRIORITY`]). The priority orders the queue of
    /// admitted work, not the wait for queue room (see
    /// [the module docs](super#priorities)).
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit).
    ///
    /// # Cancel safety
    ///
    /// As [`submit`](Self::submit).
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pool::BlockingPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = BlockingPool::builder().max_concurrency(1).build().unwrap();
    /// let urgent = pool.submit_with_priority(|| 6 * 7, 100).await.unwrap();
    /// assert_eq!(urgent.await.unwrap(), 42);
    /// # }
    /// ```
    pub async fn submit_with_priority<F, T>(
        &self,
        f: F,
        priority: i32,
    ) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        submit::submit(&*self.inner, f, priority).await
    }

    /// [`try_submit`](Self::try_submit) at `priority`.
    ///
    /// # Errors
    ///
    /// As [`try_submit`](Self::try_submit).
    pub fn try_submit_with_priority<F, T>(
        &self,
        f: F,
        priority: i32,
    ) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        submit::try_submit(&*self.inner, f, priority)
    }

    /// Drops every queued call unrun and returns how many; their handles
    /// resolve to [`TaskError::Cleared`] and their queue room is freed at
    /// once. Running calls carry on, and the pool stays open.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pool::{BlockingPool, TaskError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = BlockingPool::builder().max_concurrency(1).build().unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel::<()>();
    /// let running = pool.submit(move || rx.recv().unwrap()).await.unwrap();
    /// let queued = pool.submit(|| 2).await.unwrap();
    /// assert_eq!(pool.clear_queue(), 1);
    /// assert_eq!(queued.await, Err(TaskError::Cleared));
    /// tx.send(()).unwrap();
    /// assert_eq!(running.await, Ok(()));
    /// # }
    /// ```
    pub fn clear_queue(&self) -> usize {
        let n = self.inner.dispatch.clear_queue();
        tracing::debug!(pool = %self.inner.dispatch.name, cleared = n, "pool queue cleared");
        n
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
        submit::try_submit(&*self.inner, f, DEFAULT_PRIORITY)
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
        submit::submit_timeout(&*self.inner, f, timeout, DEFAULT_PRIORITY).await
    }

    /// [`submit`](Self::submit), waiting until `deadline` at most for
    /// queue room (room made at the deadline instant itself counts).
    ///
    /// # Errors
    ///
    /// [`SubmitError::TimedOut`] or [`SubmitError::Closed`], with the closure.
    ///
    /// # Cancel safety
    ///
    /// As [`submit`](Self::submit).
    pub async fn submit_deadline<F, T>(
        &self,
        f: F,
        deadline: Instant,
    ) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        submit::submit_deadline(&*self.inner, f, deadline, DEFAULT_PRIORITY).await
    }

    /// Changes the concurrency limit while running (see
    /// [`WorkerPool::set_max_concurrency`](super::WorkerPool::set_max_concurrency)).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `max_concurrency`; nothing changes.
    pub fn set_max_concurrency(&self, n: usize) -> Result<(), ConfigError> {
        let d = &self.inner.dispatch;
        check_concurrency("blocking_pool", n, d.queue_capacity)?;
        Dispatcher::set_max_concurrency(d, n);
        Ok(())
    }

    /// Stops intake; queued and running calls carry on. Idempotent.
    pub fn close(&self) {
        if self.inner.dispatch.close() {
            tracing::debug!(pool = %self.inner.dispatch.name, "pool closed");
        }
    }

    /// Whether [`close`](Self::close) (or a shutdown) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.dispatch.is_closed()
    }

    /// Closes the pool and waits for queued and running calls until
    /// `deadline`; then drops what is still queued (those handles resolve to
    /// [`TaskError::Shutdown`]). Calls still running at the deadline cannot
    /// be interrupted: they are counted in
    /// [`still_running`](ShutdownReport::still_running), run on detached,
    /// and their handles resolve with their results.
    ///
    /// # Cancel safety
    ///
    /// Cancelling it leaves the pool closed with its work still running.
    pub async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        shutdown(&self.inner.dispatch, deadline).await
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

impl fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.metrics();
        f.debug_struct("BlockingPool")
            .field("name", &self.inner.dispatch.name)
            .field("running", &m.running)
            .field("queued", &m.queued)
            .finish()
    }
}

pub(crate) struct BlockingJob<F> {
    f: F,
    runtime: Handle,
    timeout: Option<Duration>,
    pool: Arc<Dispatcher>,
}

impl<F, T> Submit<F, T> for BlockingInner
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    type Work = BlockingJob<F>;
    const ABORTABLE: bool = false; // a blocking call cannot be interrupted

    fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatch
    }

    fn work(&self, f: F) -> Self::Work {
        BlockingJob {
            f,
            runtime: self.runtime.clone(),
            timeout: self.timeout,
            pool: self.dispatch.clone(),
        }
    }

    fn into_work(job: Self::Work) -> F {
        job.f
    }
}

impl<F, T> Work<T> for BlockingJob<F>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn run(self, shared: Shared<T>, slot: RunSlot) {
        let BlockingJob {
            f,
            runtime,
            timeout,
            pool,
        } = self;
        // The caller-side timer; aborted as soon as the call returns. The
        // first of the two to complete the handle is the one counted.
        let timer = timeout.map(|d| spawn_timeout(&runtime, d, shared.clone(), pool));
        let span = slot.span();
        let guard = Finish::new(shared, slot);
        runtime.spawn_blocking(move || {
            let entered = span.as_ref().map(tracing::Span::enter);
            let outcome = catch(f);
            drop(entered);
            if let Some(t) = timer {
                t.abort();
            }
            guard.finish(outcome);
        });
    }
}
