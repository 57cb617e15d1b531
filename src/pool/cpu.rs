//! `CpuPool`: CPU-bound closures on dedicated OS threads.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::Instant;

use super::config::PoolConfig;
use super::dispatch::{Dispatcher, RunSlot};
use super::submit::{self, Submit, far_future};
use super::task::{self, Finish, Shared, catch, spawn_timeout};
use super::worker::shutdown;
use super::{DEFAULT_PRIORITY, PoolMetrics, ShutdownReport, SubmitError, TaskError, TaskHandle};
use crate::sync::atomic::{AtomicUsize, Ordering};
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
/// A running closure cannot be interrupted: a per-task
/// [`timeout`](CpuPoolBuilder::timeout) makes the *caller* stop waiting
/// ([`TaskError::TimedOut`]), while the closure runs on to its end on its
/// thread, which stays busy until then.
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
    /// The per-task timeout and the runtime its timers run on.
    timeout: Option<(Duration, Handle)>,
}

type Work = Box<dyn FnOnce() + Send>;

/// Started jobs waiting for a thread; never longer than the thread count,
/// because the dispatcher starts at most `threads` jobs at once.
#[derive(Default)]
struct Handoff {
    state: Mutex<HandoffState>,
    ready: Condvar,
    /// Threads started and not yet exited.
    live: AtomicUsize,
}

/// Counts a pool thread out when it exits, however it exits.
struct LiveThread(Arc<Handoff>);

impl Drop for LiveThread {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Release);
    }
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
/// `queue_capacity` 1024, no per-task timeout, strict priorities, name
/// `"cpu_pool"` (threads are named `name-0`, …).
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
    runtime: Option<Handle>,
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
    /// use flowguard::pool::CpuPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// assert!(CpuPool::builder().histogram_max_one_in(1).build().is_ok());
    /// let err = CpuPool::builder().histogram_max_one_in(0).build().unwrap_err();
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

    /// How long a caller waits for a started closure before its handle
    /// resolves to [`TaskError::TimedOut`], counted from when the closure
    /// starts on a thread (not from submission).
    ///
    /// The closure is **not** stopped: Rust cannot interrupt a thread, so it
    /// runs on to its end, its thread stays busy (the pool still never runs
    /// more than `threads` closures), and its result is discarded. Check a
    /// deadline or a flag inside long computations if they must stop early.
    ///
    /// The timers run on a Tokio runtime: [`build`](Self::build) then needs
    /// one (the current one, or [`runtime`](Self::runtime)).
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pool::{CpuPool, TaskError};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let pool = CpuPool::builder().threads(1).timeout(Duration::from_millis(50)).build().unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel::<()>();
    /// let start = tokio::time::Instant::now();
    /// let stuck = pool.submit(move || rx.recv().unwrap()).await.unwrap();
    /// assert_eq!(stuck.await, Err(TaskError::TimedOut));
    /// assert_eq!(start.elapsed(), Duration::from_millis(50));
    /// assert_eq!(pool.metrics().running, 1); // the closure runs on
    /// tx.send(()).unwrap();
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = Some(timeout);
        self
    }

    /// The runtime the per-task timeout's timers run on (default: the one
    /// `build` is called in). Unused without a [`timeout`](Self::timeout).
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Ages queued closures: each gains one priority level for every `n`
    /// closures started from the queue while it waits (at least 1).
    /// Default: strict priorities (see [the module docs](super#priorities)).
    pub fn priority_aging(mut self, n: usize) -> Self {
        self.config.priority_aging = Some(n);
        self
    }

    /// Validates the configuration and starts the threads. Needs no runtime
    /// unless a [`timeout`](Self::timeout) is set.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `threads` (0, above [`MAX_CPU_THREADS`], or the
    /// OS refused to start one), `queue_capacity` (too large), `timeout`
    /// (zero), `priority_aging` (zero), `histogram_max_one_in` (0 or above
    /// [`MAX_ONE_IN_LIMIT`](crate::histogram::MAX_ONE_IN_LIMIT)) or
    /// `runtime` (a timeout without a runtime given or current).
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
        let timeout = match c.timeout {
            None => None,
            Some(d) => {
                let runtime = match self.runtime {
                    Some(h) => h,
                    None => Handle::try_current().map_err(|_| {
                        ConfigError::new(
                            "cpu_pool",
                            "runtime",
                            ConfigErrorKind::Missing,
                            "is needed for the timeout's timers: build inside a Tokio runtime or pass one with `runtime(handle)`",
                        )
                    })?,
                };
                Some((d, runtime))
            }
        };
        let handoff = Arc::new(Handoff::default());
        let mut threads = Vec::with_capacity(c.max_concurrency);
        for i in 0..c.max_concurrency {
            let h = handoff.clone();
            // Counted before it runs, so `live_threads` is exact once built.
            handoff.live.fetch_add(1, Ordering::Release);
            let spawned = thread::Builder::new()
                .name(format!("{}-{i}", c.name))
                .spawn(move || {
                    let live = LiveThread(h);
                    live.0.worker_loop();
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    handoff.live.fetch_sub(1, Ordering::Release);
                    handoff.exit();
                    return Err(threads_err(
                        ConfigErrorKind::TooLarge,
                        format!("could not start thread {i}: {e}"),
                    ));
                }
            }
        }
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
        Ok(CpuPool {
            inner: Arc::new(CpuInner {
                dispatch,
                handoff,
                threads: Mutex::new(threads),
                timeout,
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
            runtime: None,
        }
    }

    /// Runs `f` on a pool thread and returns its result.
    ///
    /// # Errors
    ///
    /// [`TaskError::Panicked`], [`TaskError::TimedOut`] (with a
    /// [`timeout`](CpuPoolBuilder::timeout)), or [`TaskError::Closed`] when
    /// the pool is closed.
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
    /// use flowguard::pool::CpuPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = CpuPool::builder().threads(1).build().unwrap();
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
    /// use flowguard::pool::{CpuPool, TaskError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = CpuPool::builder().threads(1).build().unwrap();
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

    /// Stops intake; queued and running closures carry on. Idempotent.
    pub fn close(&self) {
        if self.inner.dispatch.close() {
            tracing::debug!(pool = %self.inner.dispatch.name, "pool closed");
        }
    }

    /// Whether [`close`](Self::close) (or a shutdown) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.dispatch.is_closed()
    }

    /// Closes the pool, waits for queued and running closures until
    /// `deadline`, drops what is still queued (those handles resolve to
    /// [`TaskError::Shutdown`]), and joins the threads if they are idle.
    /// Closures still running at the deadline cannot be interrupted: they
    /// are counted in [`still_running`](ShutdownReport::still_running),
    /// their handles resolve with their results, and their threads exit,
    /// detached, once they return.
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

    /// How many of the pool's threads are alive now: `threads` from
    /// `build` on; fewer only once the pool winds down (0 after a drained
    /// [`shutdown`](Self::shutdown), which joins them; after one that was
    /// not drained, each thread exits as its last closure returns; after
    /// the last clone is dropped, once the work handed to them is done).
    /// `metrics().running` is how many of them are busy.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pool::CpuPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = CpuPool::builder().threads(3).build().unwrap();
    /// assert_eq!(pool.live_threads(), 3);
    /// assert!(pool.shutdown_timeout(std::time::Duration::from_secs(5)).await.drained);
    /// assert_eq!(pool.live_threads(), 0);
    /// # }
    /// ```
    pub fn live_threads(&self) -> usize {
        self.inner.handoff.live.load(Ordering::Acquire)
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
            .field("live_threads", &self.live_threads())
            .field("running", &m.running)
            .field("queued", &m.queued)
            .finish()
    }
}

pub(crate) struct CpuJob<F> {
    f: F,
    handoff: Arc<Handoff>,
    /// The per-task timeout, its runtime, and the pool for its counter.
    timeout: Option<(Duration, Handle, Arc<Dispatcher>)>,
}

impl<F, T> Submit<F, T> for CpuInner
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    type Work = CpuJob<F>;
    const ABORTABLE: bool = false; // a running closure cannot be interrupted

    fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatch
    }

    fn work(&self, f: F) -> Self::Work {
        CpuJob {
            f,
            handoff: self.handoff.clone(),
            timeout: self
                .timeout
                .as_ref()
                .map(|(d, rt)| (*d, rt.clone(), self.dispatch.clone())),
        }
    }

    fn into_work(job: Self::Work) -> F {
        job.f
    }
}

impl<F, T> task::Work<T> for CpuJob<F>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn run(self, shared: Shared<T>, slot: RunSlot) {
        let CpuJob {
            f,
            handoff,
            timeout,
        } = self;
        let timer =
            timeout.map(|(d, runtime, pool)| spawn_timeout(&runtime, d, shared.clone(), pool));
        let span = slot.span();
        let guard = Finish::new(shared, slot);
        handoff.push(Box::new(move || {
            let entered = span.as_ref().map(tracing::Span::enter);
            let outcome = catch(f);
            drop(entered);
            if let Some(t) = timer {
                t.abort();
            }
            guard.finish(outcome);
        }));
    }
}
