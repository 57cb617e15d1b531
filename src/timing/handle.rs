//! `Debouncer`: the handle form, a worker task running a handler.
//!
//! Layers: [`DebounceCore`] decides; `State` (behind the facade `Mutex`) keeps
//! the latest value, the value due for invocation and the result batches;
//! the worker task owns the handler and the one `Sleep`, and runs one
//! invocation at a time.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::debounce::{DebounceCore, DebounceOptions, DebounceOptionsBuilder, Step};
use super::error::{CallError, Closed};
use crate::sync::{Arc, Mutex, WaitList, Waiter, Wakers};
use crate::{ConfigError, ConfigErrorKind};

/// The result slot shared by the calls folded into one invocation.
///
/// Allocated only when a caller waits (`call_wait`), once per batch.
struct Batch<R> {
    state: Mutex<BatchState<R>>,
}

enum BatchState<R> {
    /// The `CallWait`s pending on this batch.
    Waiting(WaitList),
    Done(Result<R, CallError>),
    /// This batch's invocation was folded into a later one (see `State::apply`).
    Forwarded(Arc<Batch<R>>),
}

impl<R> Batch<R> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(BatchState::Waiting(WaitList::new())),
        })
    }

    fn complete(&self, result: Result<R, CallError>) {
        let wakers = {
            let mut st = self.state.lock();
            if !matches!(*st, BatchState::Waiting(_)) {
                return;
            }
            match std::mem::replace(&mut *st, BatchState::Done(result)) {
                BatchState::Waiting(mut w) => w.signal(),
                _ => Wakers::default(),
            }
        };
        wakers.wake();
    }

    fn forward_to(&self, next: &Arc<Self>) {
        let wakers = {
            let mut st = self.state.lock();
            if !matches!(*st, BatchState::Waiting(_)) {
                return;
            }
            match std::mem::replace(&mut *st, BatchState::Forwarded(next.clone())) {
                BatchState::Waiting(mut w) => w.signal(),
                _ => Wakers::default(),
            }
        };
        // Wake rather than move: each waiter re-registers on the next batch.
        wakers.wake();
    }
}

/// Work to do once the state lock is released.
struct Deferred<T, R> {
    wake: Option<Waker>,
    fail: Option<(Arc<Batch<R>>, CallError)>,
    forward: Option<Forward<R>>,
    /// Values given up (folded over, discarded): a value's drop runs the
    /// caller's code, which may use this debouncer (a value holding a
    /// handle to it, say) and so take the lock. Allocates only when a
    /// value is given up.
    dropped: Vec<T>,
}

/// (folded batch, the batch it now waits on).
type Forward<R> = (Arc<Batch<R>>, Arc<Batch<R>>);

impl<T, R> Default for Deferred<T, R> {
    fn default() -> Self {
        Self {
            wake: None,
            fail: None,
            forward: None,
            dropped: Vec::new(),
        }
    }
}

impl<T, R> Deferred<T, R> {
    fn run(self) {
        drop(self.dropped);
        if let Some((from, to)) = self.forward {
            from.forward_to(&to);
        }
        if let Some((batch, err)) = self.fail {
            batch.complete(Err(err));
        }
        if let Some(w) = self.wake {
            w.wake();
        }
    }
}

struct State<T, R> {
    core: DebounceCore,
    /// lodash `lastArgs`.
    latest: Option<T>,
    latest_batch: Option<Arc<Batch<R>>>,
    /// Decided to invoke, not yet picked up by the worker, in order: at
    /// most one while the handler runs, at most [`MAX_DUE`] while it is
    /// idle (see [`State::apply`]).
    due: VecDeque<Job<T, R>>,
    running: bool,
    worker: Option<Waker>,
    handles: usize,
    closed: bool,
    calls: u64,
    invocations: u64,
    discarded: u64,
    cancelled: u64,
    folded: u64,
}

/// The most invocations that wait, decided while the handler is idle, for
/// the worker to start them one after another (see [`State::apply`]).
const MAX_DUE: usize = 16;

impl<T, R> State<T, R> {
    /// Acts on a core step. At most one step per lock hold reaches here.
    ///
    /// An invocation decided while the handler is idle (the worker has not
    /// yet started the ones before it: several edges in one scheduler turn,
    /// as a leading edge, `cancel`, and another leading edge) waits its
    /// turn, as lodash runs each one; [`MAX_DUE`] bounds them. One decided
    /// while the handler runs, behind one already waiting, folds into it
    /// (latest value wins): invocations never overlap, and a slow handler
    /// must not build a backlog.
    fn apply(&mut self, step: Step, out: &mut Deferred<T, R>) {
        match step {
            Step::Invoke => {
                let batch = self.latest_batch.take();
                let Some(value) = self.latest.take() else {
                    return;
                };
                let fold = !self.due.is_empty() && (self.running || self.due.len() >= MAX_DUE);
                match self.due.back_mut().filter(|_| fold) {
                    Some(last) => {
                        self.folded += 1;
                        out.dropped.push(std::mem::replace(&mut last.0, value));
                        last.1 = match (last.1.take(), batch) {
                            (Some(old), Some(new)) => {
                                out.forward = Some((old, new.clone()));
                                Some(new)
                            }
                            (old, new) => new.or(old),
                        };
                    }
                    None => self.due.push_back((value, batch)),
                }
                out.wake = self.worker.take();
            }
            Step::Discard => {
                if let Some(value) = self.latest.take() {
                    self.discarded += 1;
                    out.dropped.push(value);
                }
                if let Some(b) = self.latest_batch.take() {
                    out.fail = Some((b, CallError::Discarded));
                }
            }
            _ => {}
        }
    }

    /// Empties the value slots, handing back their values (to drop once
    /// unlocked) and their batches (to fail).
    fn take_all(&mut self) -> (Vec<T>, Vec<Arc<Batch<R>>>) {
        let mut values = Vec::new();
        let mut batches = Vec::new();
        values.extend(self.latest.take());
        batches.extend(self.latest_batch.take());
        for (value, batch) in std::mem::take(&mut self.due) {
            values.push(value);
            batches.extend(batch);
        }
        (values, batches)
    }
}

struct Shared<T, R> {
    state: Mutex<State<T, R>>,
}

/// Numbers describing a debouncer or throttler, read by
/// [`Debouncer::metrics`].
///
/// # Examples
///
/// ```
/// use flowguard::timing::Debouncer;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let d = Debouncer::builder(Duration::from_millis(50)).build_sync(|v: u32| v).unwrap();
/// for v in 0..3 {
///     d.call(v).unwrap();
/// }
/// tokio::time::sleep(Duration::from_millis(100)).await;
/// let m = d.metrics();
/// assert_eq!((m.calls, m.invocations), (3, 1)); // one trailing call for the burst
/// assert!(!m.pending);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimingMetrics {
    /// Calls accepted.
    pub calls: u64,
    /// Handler invocations completed.
    pub invocations: u64,
    /// Bursts that ended with a value but `trailing` off.
    pub discarded: u64,
    /// Pending values dropped by `cancel`.
    pub cancelled: u64,
    /// Invocations folded into a queued one while the handler was busy.
    pub folded: u64,
    /// Whether a value waits for a trailing invocation.
    pub pending: bool,
    /// Whether the handler is running now.
    pub running: bool,
}

/// Debounces calls into invocations of a handler, with lodash's semantics.
///
/// Built with a handler that receives the latest value: an async one with
/// [`build`](DebouncerBuilder::build), a plain function with
/// [`build_sync`](DebouncerBuilder::build_sync). The handler runs on a worker
/// task spawned on the current Tokio runtime. Clones share one debouncer.
/// See the [module docs](crate::timing) for the rules.
///
/// **Invocations never overlap.** Calls that arrive while the handler runs
/// are collected as usual, and the timer keeps its time (a trailing edge is
/// decided when it is due, not when the run ends); an invocation that comes
/// due meanwhile runs right after the handler returns, with the latest
/// value. At most one invocation waits behind the running one: if another
/// comes due before it starts, it is folded into the waiting one (its value
/// replaces the waiting value, and callers waiting on either receive the one
/// result).
///
/// **Nothing is folded while the handler is idle.** The handler runs on the
/// worker, so an invocation decided by a call (a leading edge, a `flush`)
/// starts at the worker's next turn, not inside the call. Edges decided
/// before it starts each run, in order, as lodash runs each one: with
/// `leading`, `call(1); cancel(); call(2); call(3)` in one scheduler turn
/// invokes 1 and 2 (both leading edges) and then 3 (the trailing edge).
/// Up to 16 such invocations wait; a 17th decided before the worker runs
/// folds into the 16th.
///
/// **Memory**: the latest value, the due values (one behind a running
/// handler, at most 16 before an idle one starts), and one result slot per
/// batch that someone awaits. `call` allocates nothing and touches no
/// timer (the due queue keeps its buffer); the worker keeps one `Sleep` and
/// resets it in place.
///
/// Dropping the last handle drops a pending (not yet due) value; an invocation
/// already due or running still completes, then the worker exits.
///
/// # Examples
///
/// ```
/// use flowguard::timing::Debouncer;
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let d = Debouncer::builder(Duration::from_millis(100))
///     .build(move |v: u32| {
///         let log = log.clone();
///         async move { log.lock().unwrap().push(v) }
///     })
///     .unwrap();
/// for v in 1..=5 {
///     d.call(v).unwrap();
///     tokio::time::sleep(Duration::from_millis(10)).await;
/// }
/// tokio::time::sleep(Duration::from_millis(200)).await;
/// assert_eq!(*seen.lock().unwrap(), vec![5]);
/// # }
/// ```
pub struct Debouncer<T, R = ()> {
    shared: Arc<Shared<T, R>>,
}

/// Builds a [`Debouncer`]; options as in [`DebounceOptions`].
///
/// # Examples
///
/// ```
/// use flowguard::timing::Debouncer;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let d = Debouncer::builder(Duration::from_millis(50))
///     .leading(true)
///     .max_wait(Duration::from_millis(200))
///     .build_sync(|v: u8| v * 2)
///     .unwrap();
/// assert_eq!(d.call_wait(21).unwrap().await, Ok(42)); // the leading edge
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DebouncerBuilder {
    opts: DebounceOptionsBuilder,
}

impl DebouncerBuilder {
    pub(crate) fn from_options(opts: DebounceOptionsBuilder) -> Self {
        Self { opts }
    }

    /// Invoke on the first call of a burst (default off).
    pub fn leading(mut self, leading: bool) -> Self {
        self.opts = self.opts.leading(leading);
        self
    }

    /// Invoke at the end of a burst with the latest value (default on).
    pub fn trailing(mut self, trailing: bool) -> Self {
        self.opts = self.opts.trailing(trailing);
        self
    }

    /// The longest a call may be delayed during a continuous burst; raised
    /// to `wait` if below it.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.opts = self.opts.max_wait(max_wait);
        self
    }

    /// Builds with an async handler and spawns its worker on the current runtime.
    ///
    /// # Errors
    ///
    /// - field `trailing`, [`ConfigErrorKind::Conflict`]: both edges are off.
    /// - field `runtime`, [`ConfigErrorKind::Missing`]: not called inside a
    ///   Tokio runtime.
    ///
    /// # Panics
    ///
    /// Never.
    pub fn build<T, R, F, Fut>(self, handler: F) -> Result<Debouncer<T, R>, ConfigError>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: FnMut(T) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        let opts = self.opts.build()?;
        Debouncer::spawn(opts, handler)
    }

    /// Builds with a synchronous handler (run on the worker task; keep it
    /// short, or use [`build`](Self::build) with `spawn_blocking` inside).
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    ///
    /// # Panics
    ///
    /// Never.
    pub fn build_sync<T, R, F>(self, mut handler: F) -> Result<Debouncer<T, R>, ConfigError>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: FnMut(T) -> R + Send + 'static,
    {
        self.build(move |v| std::future::ready(handler(v)))
    }
}

#[cfg(loom)]
impl DebouncerBuilder {
    /// Loom models only: builds without spawning and returns the worker
    /// future for the model to drive (no timer: flush and leading edges only).
    #[doc(hidden)]
    pub fn build_unspawned<T, R, F, Fut>(
        self,
        handler: F,
    ) -> Result<(Debouncer<T, R>, impl Future<Output = ()>), ConfigError>
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = R>,
    {
        let opts = self.opts.build()?;
        let shared = Debouncer::<T, R>::new_shared(opts);
        let worker = worker(WorkerGuard(shared.clone()), handler);
        Ok((Debouncer { shared }, worker))
    }
}

impl Debouncer<(), ()> {
    /// A builder with debounce defaults (trailing only, no `max_wait`).
    pub fn builder(wait: Duration) -> DebouncerBuilder {
        DebouncerBuilder::from_options(DebounceOptions::builder(wait))
    }
}

impl<T, R> Debouncer<T, R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    pub(crate) fn spawn<F, Fut>(opts: DebounceOptions, handler: F) -> Result<Self, ConfigError>
    where
        F: FnMut(T) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::new(
                "timing",
                "runtime",
                ConfigErrorKind::Missing,
                "must be built inside a Tokio runtime (the handler runs on a spawned task)",
            )
        })?;
        let shared = Self::new_shared(opts);
        // The guard exists before the task does: a worker future dropped
        // unpolled (the runtime shutting down first) still closes the
        // debouncer and fails its waiters.
        rt.spawn(worker(WorkerGuard(shared.clone()), handler));
        tracing::debug!(?opts, "debouncer started");
        Ok(Self { shared })
    }
}

impl<T, R> Debouncer<T, R> {
    fn new_shared(opts: DebounceOptions) -> Arc<Shared<T, R>> {
        Arc::new(Shared {
            state: Mutex::new(State {
                core: DebounceCore::new(opts),
                latest: None,
                latest_batch: None,
                due: VecDeque::new(),
                running: false,
                worker: None,
                handles: 1,
                closed: false,
                calls: 0,
                invocations: 0,
                discarded: 0,
                cancelled: 0,
                folded: 0,
            }),
        })
    }

    /// Calls with `value`, fire and forget.
    ///
    /// The value becomes the latest one; whether and when the handler runs
    /// follows the [rules](crate::timing). Allocates nothing.
    ///
    /// # Errors
    ///
    /// [`Closed`] with the value if the worker is gone (the handler panicked
    /// or the runtime shut down).
    ///
    /// # Panics
    ///
    /// Never.
    #[inline]
    pub fn call(&self, value: T) -> Result<(), Closed<T>> {
        self.call_inner(value, false).map(|_| ())
    }

    /// Calls with `value` and returns a future of the result of the
    /// invocation this call is folded into.
    ///
    /// The call is made now (its time is now, whether or not the future is
    /// ever polled). Every caller folded into one invocation gets a clone of
    /// its result. The first waiting caller of a batch allocates its result
    /// slot.
    ///
    /// # Errors
    ///
    /// [`Closed`] with the value if the worker is gone. The future resolves
    /// to a [`CallError`] if the batch is cancelled, discarded (trailing off),
    /// or the worker stops first.
    ///
    /// # Panics
    ///
    /// Never.
    pub fn call_wait(&self, value: T) -> Result<CallWait<R>, Closed<T>> {
        self.call_inner(value, true).map(|batch| CallWait {
            batch,
            waiter: None,
        })
    }

    fn call_inner(&self, value: T, wait: bool) -> Result<Option<Arc<Batch<R>>>, Closed<T>> {
        let mut out = Deferred::default();
        let (batch, old) = {
            let mut st = self.shared.state.lock();
            if st.closed {
                return Err(Closed(value));
            }
            // Read the clock under the lock so calls reach the core in time order.
            let now = Instant::now();
            st.calls += 1;
            let before = st.core.deadline();
            let old = st.latest.replace(value);
            let batch = if wait {
                Some(st.latest_batch.get_or_insert_with(Batch::new).clone())
            } else {
                None
            };
            let step = st.core.call(now);
            st.apply(step, &mut out);
            if out.wake.is_none() && st.core.deadline() != before {
                out.wake = st.worker.take();
            }
            (batch, old)
        };
        drop(old);
        out.run();
        Ok(batch)
    }

    /// Runs the pending invocation now (lodash `flush`).
    ///
    /// Returns whether an invocation was made due. With `trailing` off, a
    /// held value is discarded instead.
    ///
    /// # Panics
    ///
    /// Never.
    pub fn flush(&self) -> bool {
        let mut out = Deferred::default();
        let invoked = {
            let mut st = self.shared.state.lock();
            let step = st.core.flush(Instant::now());
            st.apply(step, &mut out);
            if step == Step::Invoke {
                tracing::debug!("debouncer flushed");
            }
            step == Step::Invoke
        };
        out.run();
        invoked
    }

    /// Drops the pending value and resets the timer rules (lodash `cancel`).
    ///
    /// Returns whether a value was dropped; callers waiting on it get
    /// [`CallError::Cancelled`]. An invocation already due or running is not
    /// affected.
    ///
    /// # Panics
    ///
    /// Never.
    pub fn cancel(&self) -> bool {
        let (batch, old) = {
            let mut st = self.shared.state.lock();
            let dropped = st.core.cancel() == Step::Discard;
            if dropped {
                st.cancelled += 1;
                tracing::debug!("debouncer cancelled");
            }
            (st.latest_batch.take(), st.latest.take())
        };
        let dropped = old.is_some();
        drop(old);
        if let Some(b) = batch {
            b.complete(Err(CallError::Cancelled));
        }
        dropped
    }

    /// Whether a value waits for a trailing invocation.
    pub fn is_pending(&self) -> bool {
        self.shared.state.lock().core.is_pending()
    }

    /// Whether the worker is gone (calls are refused with [`Closed`]).
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().closed
    }

    /// The options in force (`max_wait` already raised to `wait`).
    pub fn options(&self) -> DebounceOptions {
        *self.shared.state.lock().core.options()
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> TimingMetrics {
        metrics_of(&self.shared)
    }
}

fn metrics_of<T, R>(shared: &Shared<T, R>) -> TimingMetrics {
    let st = shared.state.lock();
    TimingMetrics {
        calls: st.calls,
        invocations: st.invocations,
        discarded: st.discarded,
        cancelled: st.cancelled,
        folded: st.folded,
        pending: st.core.is_pending(),
        running: st.running,
    }
}

impl<T, R> Debouncer<T, R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    /// Names the debouncer: with the `metrics` feature its counters are
    /// published under it (`flowguard_debounce_*`, see
    /// `flowguard::metrics`); without the feature the name is not used.
    /// Chain it on `build`; naming one twice publishes it twice.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::timing::Debouncer;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let d = Debouncer::builder(Duration::from_millis(50))
    ///     .build_sync(|v: u8| v)
    ///     .unwrap()
    ///     .name("search_box");
    /// d.call(1).unwrap();
    /// assert_eq!(d.metrics().calls, 1);
    /// # }
    /// ```
    pub fn name(self, name: impl Into<String>) -> Self {
        self.export("debounce", name.into());
        self
    }

    /// Publishes the counters under `primitive` (feature `metrics`).
    pub(crate) fn export(&self, primitive: &'static str, name: String) {
        #[cfg(all(feature = "metrics", not(loom)))]
        {
            let weak = Arc::downgrade(&self.shared);
            crate::metrics::Handles::new(primitive, &name).publish_each(
                [
                    "calls_total",
                    "invocations_total",
                    "discarded_total",
                    "cancelled_total",
                    "folded_total",
                    "pending",
                    "running",
                ],
                move || {
                    let m = metrics_of(&*weak.upgrade()?);
                    Some([
                        Some(m.calls as f64),
                        Some(m.invocations as f64),
                        Some(m.discarded as f64),
                        Some(m.cancelled as f64),
                        Some(m.folded as f64),
                        Some(f64::from(u8::from(m.pending))),
                        Some(f64::from(u8::from(m.running))),
                    ])
                },
            );
        }
        let _ = (primitive, name);
    }
}

impl<T, R> Clone for Debouncer<T, R> {
    fn clone(&self) -> Self {
        self.shared.state.lock().handles += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T, R> Drop for Debouncer<T, R> {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.shared.state.lock();
            st.handles -= 1;
            if st.handles == 0 {
                st.worker.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T, R> fmt::Debug for Debouncer<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.state.lock();
        f.debug_struct("Debouncer")
            .field("options", st.core.options())
            .field("pending", &st.core.is_pending())
            .field("running", &st.running)
            .field("closed", &st.closed)
            .finish()
    }
}

/// The result of the invocation a [`call_wait`](Debouncer::call_wait) was
/// folded into.
///
/// # Cancel safety
///
/// Dropping it does not undo the call; it only stops waiting.
///
/// # Examples
///
/// ```
/// use flowguard::timing::{CallError, Debouncer};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let d = Debouncer::builder(Duration::from_millis(10)).build_sync(|v: i32| v).unwrap();
/// let first = d.call_wait(1).unwrap();
/// let second = d.call_wait(2).unwrap();
/// assert_eq!(first.await, Ok(2)); // folded into the invocation with 2
/// assert_eq!(second.await, Ok(2));
/// let third = d.call_wait(3).unwrap();
/// d.cancel();
/// assert_eq!(third.await, Err(CallError::Cancelled));
/// # }
/// ```
pub struct CallWait<R> {
    batch: Option<Arc<Batch<R>>>,
    /// Its entry in `batch`'s list while pending: one however many tasks
    /// poll it, taken off when it is dropped.
    waiter: Option<Waiter>,
}

impl<R> fmt::Debug for CallWait<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallWait")
            .field("done", &self.batch.is_none())
            .finish()
    }
}

impl<R: Clone> Future for CallWait<R> {
    type Output = Result<R, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            let Some(batch) = this.batch.as_ref() else {
                // Polled after completion.
                return Poll::Ready(Err(CallError::Closed));
            };
            let mut st = batch.state.lock();
            match &mut *st {
                BatchState::Done(r) => {
                    let r = r.clone();
                    drop(st);
                    this.batch = None;
                    return Poll::Ready(r);
                }
                BatchState::Forwarded(next) => {
                    let next = next.clone();
                    drop(st);
                    // The forward emptied this batch's list: nothing to remove.
                    this.waiter = None;
                    this.batch = Some(next);
                }
                BatchState::Waiting(list) => {
                    let waiter = this.waiter.get_or_insert_with(|| list.waiter());
                    // The list is signalled only as the state leaves
                    // `Waiting`: under this lock the waiter is pending.
                    let (ready, stale) = list.poll(waiter, cx.waker());
                    debug_assert!(ready.is_pending(), "a batch's list signalled while Waiting");
                    drop(st);
                    // A replaced waker is dropped unlocked (its drop may run
                    // code that calls the debouncer).
                    drop(stale);
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<R> Drop for CallWait<R> {
    fn drop(&mut self) {
        let (Some(batch), Some(mut waiter)) = (self.batch.as_ref(), self.waiter.take()) else {
            return;
        };
        let left = match &mut *batch.state.lock() {
            BatchState::Waiting(list) => list.remove(&mut waiter),
            _ => None,
        };
        drop(left);
    }
}

type Job<T, R> = (T, Option<Arc<Batch<R>>>);

impl<T, R> Shared<T, R> {
    /// Waits for an invocation to come due, servicing the timer meanwhile.
    ///
    /// With `busy` (the handler is running) it only services the timer: an
    /// invocation that comes due then waits in `due`, and the call never
    /// returns `Ready`.
    fn poll_job(
        &self,
        cx: &mut Context<'_>,
        mut sleep: Option<Pin<&mut Sleep>>,
        armed: &mut Option<Instant>,
        busy: bool,
    ) -> Poll<Option<Job<T, R>>> {
        let mut out = Deferred::default();
        let mut dropped = None;
        let res = {
            let mut st = self.state.lock();
            loop {
                if busy {
                    // Neither take the due value nor stop: the run ends first.
                } else if let Some(job) = st.due.pop_front() {
                    st.running = true;
                    break Poll::Ready(Some(job));
                } else if st.handles == 0 {
                    st.core.cancel();
                    dropped = st.latest.take();
                    if let Some(b) = st.latest_batch.take() {
                        out.fail = Some((b, CallError::Closed));
                    }
                    break Poll::Ready(None);
                }
                if let (Some(deadline), Some(sleep)) = (st.core.deadline(), sleep.as_mut()) {
                    if *armed != Some(deadline) {
                        sleep.as_mut().reset(deadline);
                        *armed = Some(deadline);
                    }
                    if sleep.as_mut().poll(cx).is_ready() {
                        *armed = None;
                        // Tokio never completes a sleep early; `max` guards
                        // against a spin if a clock ever did.
                        let now = Instant::now().max(deadline);
                        let step = st.core.timer_fired(now);
                        st.apply(step, &mut out);
                        out.wake = None; // that would be this task
                        continue;
                    }
                }
                if !st.worker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    st.worker = Some(cx.waker().clone());
                }
                break Poll::Pending;
            }
        };
        drop(dropped);
        out.run();
        res
    }
}

/// Marks the debouncer closed when the worker ends, however it ends (a
/// handler panic unwinds through here, and a worker future dropped before
/// its first poll drops it too), and fails every waiting batch.
///
/// Created by the spawner and passed *into* the worker, never inside the
/// worker's body: an async body that has not been polled has not run.
struct WorkerGuard<T, R>(Arc<Shared<T, R>>);

impl<T, R> Drop for WorkerGuard<T, R> {
    fn drop(&mut self) {
        let (values, batches) = {
            let mut st = self.0.state.lock();
            st.closed = true;
            st.running = false;
            st.core.cancel();
            st.take_all()
        };
        drop(values); // unlocked: see `Deferred::dropped`
        tracing::debug!("debouncer worker stopped");
        for b in batches {
            b.complete(Err(CallError::Closed));
        }
    }
}

/// The batch of the invocation in progress; fails it with `Closed` if the
/// handler unwinds.
struct RunningBatch<R>(Option<Arc<Batch<R>>>);

impl<R> Drop for RunningBatch<R> {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.complete(Err(CallError::Closed));
        }
    }
}

async fn worker<T, R, F, Fut>(guard: WorkerGuard<T, R>, mut handler: F)
where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = R>,
{
    let shared = &guard.0;
    // The one timer, reset in place for the life of the debouncer. Loom
    // models run without a Tokio timer: flush and leading edges only.
    let mut sleep = (!cfg!(loom)).then(|| {
        Box::pin(tokio::time::sleep_until(super::debounce::add(
            Instant::now(),
            Duration::from_secs(86_400 * 365 * 30),
        )))
    });
    let mut armed = None;
    loop {
        let job = std::future::poll_fn(|cx| {
            shared.poll_job(cx, sleep.as_mut().map(|s| s.as_mut()), &mut armed, false)
        })
        .await;
        let Some((value, batch)) = job else {
            return;
        };
        // If the handler panics, the batch still hears about it.
        let mut batch = RunningBatch(batch);
        // The timer keeps its time while the handler runs: a trailing edge
        // due meanwhile is decided then (and waits in `due`), not when the
        // run ends, so a later burst cannot swallow it.
        let mut run = std::pin::pin!(handler(value));
        let result = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = run.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            let _ = shared.poll_job(cx, sleep.as_mut().map(|s| s.as_mut()), &mut armed, true);
            Poll::Pending
        })
        .await;
        {
            let mut st = shared.state.lock();
            st.running = false;
            st.invocations += 1;
        }
        if let Some(b) = batch.0.take() {
            b.complete(Ok(result));
        }
    }
}
