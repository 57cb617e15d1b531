//! `WorkerPool`: bounded concurrency for async work.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::runtime::Handle;
use tokio::time::Instant;

use super::config::{PoolConfig, check_concurrency, runtime_or_current};
use super::dispatch::{Aborted, Dispatcher, RunSlot};
use super::submit::{self, Submit, far_future};
use super::task::{CatchUnwind, Finish, Shared, Work};
use super::{DEFAULT_PRIORITY, PoolMetrics, ShutdownReport, SubmitError, TaskError, TaskHandle};
use crate::ConfigError;
use crate::semaphore::AcquireOwned;
use crate::sync::Arc;

/// Runs async tasks with at most `max_concurrency` at once and a bounded
/// queue of submissions waiting for a slot. Clones share one pool.
///
/// Each task is spawned on the Tokio runtime only once it has a slot, so a
/// queued submission costs its future's memory and nothing else. A panic is
/// caught and reported as [`TaskError::Panicked`]; the slot is always given
/// back. Submitters waiting for queue room are served first-in, first-out.
///
/// # Examples
///
/// ```
/// use flowguard::pool::WorkerPool;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let pool = WorkerPool::builder()
///     .max_concurrency(8)
///     .queue_capacity(100)
///     .timeout(Duration::from_secs(5))
///     .name("http-fetch")
///     .build()
///     .unwrap();
///
/// let mut handles = Vec::new();
/// for i in 0..20u64 {
///     handles.push(pool.submit(async move {
///         tokio::time::sleep(Duration::from_millis(100)).await; // "I/O"
///         i
///     }).await.unwrap());
/// }
/// let mut sum = 0;
/// for h in handles {
///     sum += h.await.unwrap();
/// }
/// assert_eq!(sum, 190);
/// assert_eq!(pool.metrics().completed, 20);
/// # }
/// ```
#[derive(Clone)]
pub struct WorkerPool {
    inner: Arc<WorkerInner>,
}

struct WorkerInner {
    dispatch: Arc<Dispatcher>,
    runtime: Handle,
    timeout: Option<Duration>,
}

/// Configures a [`WorkerPool`]. Defaults: `max_concurrency` 64,
/// `queue_capacity` 1024, no per-task timeout, name `"worker_pool"`, the
/// current Tokio runtime.
///
/// # Examples
///
/// ```
/// use flowguard::pool::WorkerPool;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let err = WorkerPool::builder().max_concurrency(0).build().unwrap_err();
/// assert_eq!(err.field(), "max_concurrency");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct WorkerPoolBuilder {
    config: PoolConfig,
    runtime: Option<Handle>,
}

impl WorkerPoolBuilder {
    /// The most tasks that run at once (at least 1).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.config.max_concurrency = n;
        self
    }

    /// How many admitted submissions may wait for a slot (0 = none: submit
    /// waits, `try_submit` sheds, whenever every slot is busy).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.config.queue_capacity = n;
        self
    }

    /// A time limit for each task, counted from when it starts running;
    /// a task past it is cancelled and resolves to [`TaskError::TimedOut`].
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
    /// use flowguard::pool::WorkerPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// assert!(WorkerPool::builder().histogram_max_one_in(1).build().is_ok());
    /// let err = WorkerPool::builder().histogram_max_one_in(0).build().unwrap_err();
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

    /// Ages queued tasks: each gains one priority level for every `n` tasks
    /// started from the queue while it waits (at least 1), so low-priority
    /// work cannot starve. Default: strict priorities (see
    /// [the module docs](super#priorities)).
    pub fn priority_aging(mut self, n: usize) -> Self {
        self.config.priority_aging = Some(n);
        self
    }

    /// The runtime to spawn on (default: the one `build` is called in).
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Validates the configuration and creates the pool.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `max_concurrency` (0 or too large),
    /// `queue_capacity` (sum too large), `timeout` (zero), `priority_aging`
    /// (zero), `histogram_max_one_in` (0 or above
    /// [`MAX_ONE_IN_LIMIT`](crate::histogram::MAX_ONE_IN_LIMIT)) or
    /// `runtime` (no runtime given and none current).
    pub fn build(self) -> Result<WorkerPool, ConfigError> {
        self.config.validate()?;
        let runtime = runtime_or_current("worker_pool", self.runtime)?;
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
        Ok(WorkerPool {
            inner: Arc::new(WorkerInner {
                dispatch,
                runtime,
                timeout: c.timeout,
            }),
        })
    }
}

impl WorkerPool {
    /// A builder with the defaults listed on [`WorkerPoolBuilder`].
    pub fn builder() -> WorkerPoolBuilder {
        WorkerPoolBuilder {
            config: PoolConfig::new("worker_pool", 64),
            runtime: None,
        }
    }

    /// Submits a task, waiting for queue room if the pool is saturated
    /// (backpressure). Returns once the task is running or queued.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Closed`] with the future, if the pool is or becomes closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting for room, nothing is queued and
    /// the future is dropped unrun; the waiter's place goes to the next one.
    pub async fn submit<F>(&self, fut: F) -> Result<TaskHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        submit::submit(&*self.inner, fut, DEFAULT_PRIORITY).await
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
    /// use flowguard::pool::WorkerPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = WorkerPool::builder().max_concurrency(4).build().unwrap();
    /// let urgent = pool.submit_with_priority(async { "paged" }, 100).await.unwrap();
    /// assert_eq!(urgent.await.unwrap(), "paged");
    /// # }
    /// ```
    pub async fn submit_with_priority<F>(
        &self,
        fut: F,
        priority: i32,
    ) -> Result<TaskHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        submit::submit(&*self.inner, fut, priority).await
    }

    /// [`try_submit`](Self::try_submit) at `priority`.
    ///
    /// # Errors
    ///
    /// As [`try_submit`](Self::try_submit).
    pub fn try_submit_with_priority<F>(
        &self,
        fut: F,
        priority: i32,
    ) -> Result<TaskHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        submit::try_submit(&*self.inner, fut, priority)
    }

    /// Claims one of the pool's run slots for work that runs in the
    /// caller's own task (it need not be `Send` or `'static`), waiting for
    /// queue room and then for its turn in the queue like a submitted task
    /// at [`DEFAULT_PRIORITY`]. The slot counts in `running` until the
    /// [`PoolSlot`](super::PoolSlot) is dropped. The pool's per-task
    /// `timeout` does not apply: the pool does not run this work.
    ///
    /// # Errors
    ///
    /// [`SlotError::Closed`](super::SlotError::Closed) when the pool is or
    /// becomes closed (or shuts down) before the slot is given;
    /// [`SlotError::Cleared`](super::SlotError::Cleared) when
    /// `clear_queue()` removed the wait.
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting, it leaves the queue (counted as
    /// `cancelled`) or frees a slot handed to it meanwhile; no slot is lost.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pool::WorkerPool;
    /// use std::rc::Rc;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = WorkerPool::builder().max_concurrency(2).build().unwrap();
    /// let local = Rc::new(5); // not Send: could not be submitted
    /// let slot = pool.slot().await.unwrap();
    /// let answer = async { *local * 2 }.await;
    /// drop(slot);
    /// assert_eq!(answer, 10);
    /// # }
    /// ```
    pub async fn slot(&self) -> Result<super::PoolSlot, super::SlotError> {
        super::slot::slot(&self.inner.dispatch, None).await
    }

    /// [`slot`](Self::slot), giving up at `deadline`.
    ///
    /// # Errors
    ///
    /// As [`slot`](Self::slot), and
    /// [`SlotError::TimedOut`](super::SlotError::TimedOut) when no slot came
    /// free by the deadline (a deadline already past still takes a free slot
    /// if one is free at once).
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// As [`slot`](Self::slot).
    pub async fn slot_deadline(
        &self,
        deadline: Instant,
    ) -> Result<super::PoolSlot, super::SlotError> {
        super::slot::slot(&self.inner.dispatch, Some(deadline)).await
    }

    /// [`slot_deadline`](Self::slot_deadline) with a deadline `timeout`
    /// from now.
    ///
    /// # Errors
    ///
    /// As [`slot_deadline`](Self::slot_deadline).
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// As [`slot`](Self::slot).
    pub async fn slot_timeout(
        &self,
        timeout: Duration,
    ) -> Result<super::PoolSlot, super::SlotError> {
        let deadline = Instant::now().checked_add(timeout);
        super::slot::slot(&self.inner.dispatch, deadline).await
    }

    /// A run slot only if one is free now and nothing is queued (load
    /// shedding); see [`slot`](Self::slot).
    ///
    /// # Errors
    ///
    /// [`SlotError::Full`](super::SlotError::Full) (counted as `rejected`)
    /// or [`SlotError::Closed`](super::SlotError::Closed).
    ///
    /// # Panics
    ///
    /// Never.
    pub fn try_slot(&self) -> Result<super::PoolSlot, super::SlotError> {
        super::slot::try_slot(&self.inner.dispatch, true)
    }

    /// [`try_slot`](Self::try_slot) without counting a refusal (the
    /// caller goes on to wait for one).
    pub(crate) fn try_slot_uncounted(&self) -> Result<super::PoolSlot, super::SlotError> {
        super::slot::try_slot(&self.inner.dispatch, false)
    }

    /// Drops every queued task unrun and returns how many; their handles
    /// resolve to [`TaskError::Cleared`] and their queue room is freed at
    /// once (so waiting submitters get in). Running tasks carry on, and the
    /// pool stays open.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pool::{TaskError, WorkerPool};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = WorkerPool::builder().max_concurrency(1).build().unwrap();
    /// let running = pool.submit(async { 1 }).await.unwrap();
    /// let queued = pool.submit(async { 2 }).await.unwrap();
    /// assert_eq!(pool.clear_queue(), 1);
    /// assert_eq!(queued.await, Err(TaskError::Cleared));
    /// assert_eq!(running.await, Ok(1));
    /// # }
    /// ```
    pub fn clear_queue(&self) -> usize {
        let n = self.inner.dispatch.clear_queue();
        tracing::debug!(pool = %self.inner.dispatch.name, cleared = n, "pool queue cleared");
        n
    }

    /// Submits a task only if it can run or queue at once (load shedding).
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] with the future when every slot is busy and the
    /// queue is full (counted as `rejected`); [`SubmitError::Closed`] when closed.
    pub fn try_submit<F>(&self, fut: F) -> Result<TaskHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        submit::try_submit(&*self.inner, fut, DEFAULT_PRIORITY)
    }

    /// [`submit`](Self::submit), waiting at most `timeout` for queue room.
    ///
    /// # Errors
    ///
    /// [`SubmitError::TimedOut`] or [`SubmitError::Closed`], with the future.
    ///
    /// # Cancel safety
    ///
    /// As [`submit`](Self::submit).
    pub async fn submit_timeout<F>(
        &self,
        fut: F,
        timeout: Duration,
    ) -> Result<TaskHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        submit::submit_timeout(&*self.inner, fut, timeout, DEFAULT_PRIORITY).await
    }

    /// [`submit`](Self::submit), waiting until `deadline` at most for
    /// queue room (room made at the deadline instant itself counts).
    ///
    /// # Errors
    ///
    /// [`SubmitError::TimedOut`] or [`SubmitError::Closed`], with the future.
    ///
    /// # Cancel safety
    ///
    /// As [`submit`](Self::submit).
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pool::{SubmitError, WorkerPool};
    /// use std::time::Duration;
    /// use tokio::time::{Instant, sleep};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let pool = WorkerPool::builder().max_concurrency(1).queue_capacity(0).build().unwrap();
    /// let _busy = pool.submit(sleep(Duration::from_secs(60))).await.unwrap();
    /// let soon = Instant::now() + Duration::from_millis(50);
    /// let refused = pool.submit_deadline(async { 1 }, soon).await;
    /// assert!(matches!(refused, Err(SubmitError::TimedOut(_))));
    /// # }
    /// ```
    pub async fn submit_deadline<F>(
        &self,
        fut: F,
        deadline: Instant,
    ) -> Result<TaskHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        submit::submit_deadline(&*self.inner, fut, deadline, DEFAULT_PRIORITY).await
    }

    /// Runs `f` over every input with at most `max_concurrency` tasks in
    /// flight, yielding results **in input order**.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pool::WorkerPool;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = WorkerPool::builder().max_concurrency(4).build().unwrap();
    /// let doubled: Vec<u32> = pool
    ///     .map(1..=5u32, |x| async move { x * 2 })
    ///     .map(|r| r.unwrap())
    ///     .collect()
    ///     .await;
    /// assert_eq!(doubled, vec![2, 4, 6, 8, 10]);
    /// # }
    /// ```
    pub fn map<I, F, Fut>(&self, inputs: I, f: F) -> Map<Iter<I::IntoIter>, F, Fut>
    where
        I: IntoIterator,
        F: FnMut(I::Item) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        Map::new(
            self.clone(),
            Iter {
                iter: inputs.into_iter(),
            },
            f,
            true,
        )
    }

    /// Like [`map`](Self::map), yielding results **as they complete**.
    pub fn map_unordered<I, F, Fut>(&self, inputs: I, f: F) -> Map<Iter<I::IntoIter>, F, Fut>
    where
        I: IntoIterator,
        F: FnMut(I::Item) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        Map::new(
            self.clone(),
            Iter {
                iter: inputs.into_iter(),
            },
            f,
            false,
        )
    }

    /// Like [`map`](Self::map) over a `Stream` of inputs.
    pub fn map_stream<S, F, Fut>(&self, inputs: S, f: F) -> Map<S, F, Fut>
    where
        S: Stream,
        F: FnMut(S::Item) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        Map::new(self.clone(), inputs, f, true)
    }

    /// Like [`map_unordered`](Self::map_unordered) over a `Stream` of inputs.
    pub fn map_stream_unordered<S, F, Fut>(&self, inputs: S, f: F) -> Map<S, F, Fut>
    where
        S: Stream,
        F: FnMut(S::Item) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        Map::new(self.clone(), inputs, f, false)
    }

    /// Changes the concurrency limit while running. Growing starts queued
    /// tasks at once; shrinking lets running tasks finish and starts no new
    /// one until fewer than `n` run. The queue capacity is unchanged.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `max_concurrency` (0 or too large); nothing changes.
    pub fn set_max_concurrency(&self, n: usize) -> Result<(), ConfigError> {
        let d = &self.inner.dispatch;
        check_concurrency("worker_pool", n, d.queue_capacity)?;
        Dispatcher::set_max_concurrency(d, n);
        Ok(())
    }

    /// Stops intake: waiting and later submissions fail with `Closed`;
    /// queued and running tasks carry on. Idempotent.
    pub fn close(&self) {
        if self.inner.dispatch.close() {
            tracing::debug!(pool = %self.inner.dispatch.name, "pool closed");
        }
    }

    /// Whether [`close`](Self::close) (or a shutdown) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.dispatch.is_closed()
    }

    /// Closes the pool, lets queued and running tasks finish until
    /// `deadline`, then cancels what is still queued and aborts what still
    /// runs, and reports the counts. A task that finishes at the deadline
    /// instant itself counts as finished (its timer and the shutdown's fire
    /// together). A deadline that has already passed
    /// (`shutdown_timeout(Duration::ZERO)`) does this at once, without
    /// giving running tasks another turn; every handle then resolves
    /// ([`TaskError::Shutdown`] for what was cut short), tasks never polled
    /// included.
    ///
    /// # Cancel safety
    ///
    /// Cancelling it leaves the pool closed with its work still running.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pool::WorkerPool;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let pool = WorkerPool::builder().max_concurrency(1).build().unwrap();
    /// let quick = pool.submit(tokio::time::sleep(Duration::from_millis(10))).await.unwrap();
    /// let slow = pool.submit(tokio::time::sleep(Duration::from_secs(60))).await.unwrap();
    /// let report = pool.shutdown_timeout(Duration::from_secs(1)).await;
    /// assert!(!report.drained);
    /// assert_eq!((report.aborted_running, report.cancelled_queued), (1, 0));
    /// assert!(quick.await.is_ok());
    /// assert_eq!(slow.await, Err(flowguard::pool::TaskError::Shutdown));
    /// # }
    /// ```
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

/// Close, drain until the deadline, then cancel/abort the rest.
pub(crate) async fn shutdown(d: &Dispatcher, deadline: Instant) -> ShutdownReport {
    use crate::sync::atomic::Ordering::Relaxed;
    if d.close() {
        tracing::debug!(pool = %d.name, "pool closed for shutdown");
    }
    let done_before = d.counters.completed.load(Relaxed);
    // A deadline already past means "now": no timer (whose first poll may
    // not have fired yet) gives running tasks one more scheduler turn.
    let drained = if deadline <= Instant::now() {
        d.is_idle()
    } else {
        // Work done at the deadline instant itself counts as done.
        crate::clock::timeout_at_inclusive(deadline, d.idle())
            .await
            .is_some()
    };
    let cut = if drained {
        Aborted::default()
    } else {
        d.abort_all()
    };
    if !drained {
        tracing::debug!(
            pool = %d.name,
            cancelled_queued = cut.cancelled_queued,
            aborted_running = cut.aborted_running,
            still_running = cut.still_running,
            "pool shutdown deadline reached"
        );
    }
    ShutdownReport {
        drained,
        completed: d.counters.completed.load(Relaxed) - done_before,
        cancelled_queued: cut.cancelled_queued,
        aborted_running: cut.aborted_running,
        still_running: cut.still_running,
    }
}

impl fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.metrics();
        f.debug_struct("WorkerPool")
            .field("name", &self.inner.dispatch.name)
            .field("running", &m.running)
            .field("queued", &m.queued)
            .field("max_concurrency", &m.max_concurrency)
            .finish()
    }
}

pub(crate) struct WorkerJob<F> {
    fut: F,
    runtime: Handle,
    timeout: Option<Duration>,
}

impl<F> Submit<F, F::Output> for WorkerInner
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Work = WorkerJob<F>;
    const ABORTABLE: bool = true;

    fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatch
    }

    fn work(&self, fut: F) -> Self::Work {
        WorkerJob {
            fut,
            runtime: self.runtime.clone(),
            timeout: self.timeout,
        }
    }

    fn into_work(job: Self::Work) -> F {
        job.fut
    }
}

impl<F> Work<F::Output> for WorkerJob<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn run(self, shared: Shared<F::Output>, slot: RunSlot) {
        // The guard exists before the task does: a task aborted (or dropped
        // by a runtime shutting down) before its first poll still records
        // why it stopped, frees its slot and wakes its handle.
        let span = slot.span();
        let guard = Finish::new(shared.clone(), slot);
        // Each shape is its own future type, so the common one (no span,
        // no timeout) carries no timer: a smaller task for Tokio to
        // allocate and move.
        let task = match (span, self.timeout) {
            (None, None) => self.runtime.spawn(RunTask {
                fut: CatchUnwind::new(self.fut),
                guard: Some(guard),
            }),
            (None, Some(limit)) => self.runtime.spawn(run_timed(self.fut, guard, limit)),
            (Some(span), None) => {
                use tracing::Instrument;
                let run = RunTask {
                    fut: CatchUnwind::new(self.fut),
                    guard: Some(guard),
                };
                self.runtime.spawn(run.instrument(span))
            }
            (Some(span), Some(limit)) => {
                use tracing::Instrument;
                let run = run_timed(self.fut, guard, limit);
                self.runtime.spawn(run.instrument(span))
            }
        };
        shared.task().set_join_handle(task);
    }
}

async fn run_timed<F: Future>(fut: F, guard: Finish<F::Output>, limit: Duration) {
    let outcome = match tokio::time::timeout(limit, CatchUnwind::new(fut)).await {
        Ok(r) => r,
        Err(_) => Err(TaskError::TimedOut),
    };
    guard.finish(outcome);
}

pin_project_lite::pin_project! {
    /// A pool task without a timeout: the work, then its outcome recorded.
    /// Written by hand rather than as an `async fn`, which would keep the
    /// work twice in its layout (as argument and as awaited future).
    struct RunTask<F: Future> {
        #[pin]
        fut: CatchUnwind<F>,
        guard: Option<Finish<F::Output>>,
    }
}

impl<F: Future> Future for RunTask<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let outcome = std::task::ready!(this.fut.poll(cx));
        if let Some(guard) = this.guard.take() {
            guard.finish(outcome);
        }
        Poll::Ready(())
    }
}

pin_project_lite::pin_project! {
    /// A `Stream` over an iterator's items, for [`WorkerPool::map`].
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pool::WorkerPool;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = WorkerPool::builder().max_concurrency(2).build().unwrap();
    /// // `map` over an iterator wraps it in an `Iter`, a `Stream` of its items.
    /// let squares: Vec<u64> = pool.map(1..=3u64, |x| async move { x * x }).map(Result::unwrap).collect().await;
    /// assert_eq!(squares, [1, 4, 9]);
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct Iter<I> {
        iter: I,
    }
}

impl<I: Iterator> Stream for Iter<I> {
    type Item = I::Item;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<I::Item>> {
        Poll::Ready(self.project().iter.next())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.iter.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// Stream returned by [`WorkerPool::map`] and its variants: one
    /// `Result<T, TaskError>` per input.
    ///
    /// At most `max_concurrency` (at creation) tasks are in flight; it waits
    /// for pool admission like [`WorkerPool::submit`], so several maps and
    /// direct submitters share the pool fairly. If the pool closes, the
    /// remaining inputs yield `Err(TaskError::Closed)`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the stream drops the inputs not yet submitted; tasks already
    /// submitted carry on detached.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pool::WorkerPool;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = WorkerPool::builder().max_concurrency(2).build().unwrap();
    /// let mut results = pool.map(["a", "bb", "ccc"], |s| async move { s.len() });
    /// assert_eq!(results.next().await, Some(Ok(1))); // in input order
    /// assert_eq!(results.next().await, Some(Ok(2)));
    /// assert_eq!(results.next().await, Some(Ok(3)));
    /// assert_eq!(results.next().await, None);
    /// # }
    /// ```
    #[must_use = "streams do nothing unless polled"]
    pub struct Map<S, F, Fut: Future> {
        #[pin]
        inputs: S,
        inputs_done: bool,
        f: F,
        pool: WorkerPool,
        admitting: Option<(AcquireOwned, Fut)>,
        in_flight: VecDeque<InFlight<Fut::Output>>,
        window: usize,
        ordered: bool,
    }
}

/// One input's place in a [`Map`]'s window: a submitted task, or an input
/// the pool refused (closed), which yields `Closed` in its turn.
enum InFlight<T> {
    Task(TaskHandle<T>),
    Refused,
}

impl<T> Future for InFlight<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            InFlight::Task(handle) => Pin::new(handle).poll(cx),
            InFlight::Refused => Poll::Ready(Err(TaskError::Closed)),
        }
    }
}

impl<S, F, Fut: Future> Map<S, F, Fut> {
    fn new(pool: WorkerPool, inputs: S, f: F, ordered: bool) -> Self {
        let window = pool.metrics().max_concurrency;
        Self {
            inputs,
            inputs_done: false,
            f,
            pool,
            admitting: None,
            in_flight: VecDeque::new(),
            window,
            ordered,
        }
    }
}

impl<S, F, Fut> Stream for Map<S, F, Fut>
where
    S: Stream,
    F: FnMut(S::Item) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    type Item = Result<Fut::Output, TaskError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        // Top up the window.
        while this.in_flight.len() < *this.window {
            if this.admitting.is_none() {
                if *this.inputs_done {
                    break;
                }
                match this.inputs.as_mut().poll_next(cx) {
                    Poll::Ready(Some(item)) => {
                        let fut = (this.f)(item);
                        let admit = this.pool.inner.dispatch.admit.acquire_owned();
                        *this.admitting = Some((admit, fut));
                    }
                    Poll::Ready(None) => {
                        *this.inputs_done = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            let Some((admit, _)) = this.admitting.as_mut() else {
                break;
            };
            let admitted = match Pin::new(admit).poll(cx) {
                Poll::Pending => break,
                Poll::Ready(r) => r,
            };
            let (_, fut) = this.admitting.take().expect("checked above");
            match admitted.map_err(|_| ()).and_then(|a| {
                submit::dispatch(&*this.pool.inner, fut, a, DEFAULT_PRIORITY).map_err(|_| ())
            }) {
                Ok(handle) => this.in_flight.push_back(InFlight::Task(handle)),
                // Unordered: nothing to keep the place of.
                Err(()) if !*this.ordered => return Poll::Ready(Some(Err(TaskError::Closed))),
                // Ordered: the refusal waits its turn behind earlier inputs.
                Err(()) => this.in_flight.push_back(InFlight::Refused),
            }
        }
        // Yield a result.
        if *this.ordered {
            if let Some(front) = this.in_flight.front_mut() {
                if let Poll::Ready(r) = Pin::new(front).poll(cx) {
                    this.in_flight.pop_front();
                    return Poll::Ready(Some(r));
                }
                return Poll::Pending;
            }
        } else {
            for i in 0..this.in_flight.len() {
                if let Poll::Ready(r) = Pin::new(&mut this.in_flight[i]).poll(cx) {
                    this.in_flight.swap_remove_back(i);
                    return Poll::Ready(Some(r));
                }
            }
            if !this.in_flight.is_empty() {
                return Poll::Pending;
            }
        }
        if *this.inputs_done && this.admitting.is_none() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

impl<S, F, Fut: Future> fmt::Debug for Map<S, F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("in_flight", &self.in_flight.len())
            .field("ordered", &self.ordered)
            .finish()
    }
}
