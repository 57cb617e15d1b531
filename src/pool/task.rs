//! The completion slot shared by a running task and its [`TaskHandle`].

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::TaskError;
use super::dispatch::{Control, Dispatcher, Job, RunSlot, TaskId};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Arc, Mutex, StdArc};

/// A task's completion slot as its handle and its running task see it
/// (the [`TaskCell`] it lives in). A std `Arc` even under loom, so one
/// cell coerces to this, to the queue's job and to the registry's
/// [`Control`] without a second allocation (its locks are still the
/// facade's).
pub(crate) type Shared<T> = StdArc<dyn HasTask<T>>;

/// Whatever holds a task's completion slot (a [`TaskCell`]).
pub(crate) trait HasTask<T>: Send + Sync {
    fn task(&self) -> &TaskShared<T>;
}

/// A pool's work, ready to start on a run slot; it completes `shared`
/// (through a [`Finish`]) when it ends.
pub(crate) trait Work<T>: Send + 'static {
    fn run(self, shared: Shared<T>, slot: RunSlot);
}

/// Large work, boxed inside its cell (see `submit::INLINE_WORK_MAX`).
impl<T, J: Work<T>> Work<T> for Box<J> {
    fn run(self, shared: Shared<T>, slot: RunSlot) {
        (*self).run(shared, slot);
    }
}

/// One submission in one allocation: its completion slot (shared with
/// the handle) and its work until it starts. Queued, it is the queue's
/// job; running, its abort control (work that can be aborted). The work's
/// room stays allocated, empty, while the task runs: the price of not
/// allocating a second time for a job that queues; work above
/// `submit::INLINE_WORK_MAX` bytes is boxed, so that room is a pointer.
pub(crate) struct TaskCell<T, J> {
    task: TaskShared<T>,
    work: Mutex<Option<J>>,
}

impl<T, J> TaskCell<T, J> {
    pub(crate) fn new(work: J) -> Self {
        Self {
            task: TaskShared::new(),
            work: Mutex::new(Some(work)),
        }
    }

    /// The work, if neither started nor cancelled yet.
    pub(crate) fn take_work(&self) -> Option<J> {
        self.work.lock().take()
    }
}

impl<T: Send, J: Send> HasTask<T> for TaskCell<T, J> {
    fn task(&self) -> &TaskShared<T> {
        &self.task
    }
}

impl<T: Send, J: Send> Control for TaskCell<T, J> {
    fn abort_running(&self, why: TaskError) {
        self.task.abort_running(why);
    }
}

impl<T: Send + 'static, J: Work<T>> Job for TaskCell<T, J> {
    fn start(self: StdArc<Self>, slot: RunSlot) {
        match self.take_work() {
            Some(work) => work.run(self, slot),
            // Cannot happen: a job starts or is cancelled once. Dropping
            // the slot frees it.
            None => drop(slot),
        }
    }

    fn cancel(self: StdArc<Self>, why: TaskError) {
        // The work is dropped unrun, outside the lock.
        drop(self.take_work());
        self.task.complete(Err(why));
    }
}

pub(crate) struct TaskShared<T> {
    /// An outcome is being recorded (see `claim`): one atomic, not the lock.
    claimed: AtomicBool,
    state: Mutex<TaskState<T>>,
}

struct TaskState<T> {
    result: Option<Result<T, TaskError>>,
    /// The outcome is published.
    done: bool,
    waker: Option<Waker>,
    /// The running Tokio task's handle (kept, not turned into an
    /// `AbortHandle`: one reference count less per task), to abort it.
    /// Kept past the task's end, until the handle returns the result or
    /// the cell drops: dropping it when the task ends, on the worker
    /// that ran it, freed the Tokio task's memory there, on a thread other
    /// than the submitter that allocated it. With glibc's allocator every
    /// such free takes the submitter's arena lock, which the submitter's
    /// own allocations contend for: with `queue_capacity(0)` (submitter
    /// spawning, workers ending) that was ~1.8x the time per task of the
    /// `JoinSet` loop, whose handles are dropped by the submitter.
    abort: Option<tokio::task::JoinHandle<()>>,
    /// Why the running task was told to stop, once it was.
    abort_requested: Option<TaskError>,
    /// The handle returned the result.
    taken: bool,
}

impl<T> TaskShared<T> {
    fn new() -> Self {
        Self {
            claimed: AtomicBool::new(false),
            state: Mutex::new(TaskState {
                result: None,
                done: false,
                waker: None,
                abort: None,
                abort_requested: None,
                taken: false,
            }),
        }
    }

    /// Stores the outcome; the first completion wins. Wakes the handle.
    pub(crate) fn complete(&self, result: Result<T, TaskError>) -> bool {
        self.complete_then(result, || ())
    }

    /// As [`complete`](Self::complete), running `counted` (e.g. a metrics
    /// update) only if this completion won, and before the handle wakes.
    pub(crate) fn complete_then(
        &self,
        result: Result<T, TaskError>,
        counted: impl FnOnce(),
    ) -> bool {
        if !self.claim() {
            return false;
        }
        counted();
        self.publish(result);
        true
    }

    /// First phase of completing: true if this caller won the right to
    /// publish the outcome. The handle stays pending until `publish`, so
    /// bookkeeping done in between (counters, freeing the slot) is visible
    /// to whoever awaits the handle.
    pub(crate) fn claim(&self) -> bool {
        // AcqRel: the winner's bookkeeping is ordered after any loser's
        // look; publishing (under the lock) orders it before the handle.
        !self.claimed.swap(true, Ordering::AcqRel)
    }

    /// Second phase: stores the outcome and wakes the handle. The Tokio
    /// task's handle stays (see `TaskState::abort`).
    pub(crate) fn publish(&self, result: Result<T, TaskError>) {
        let waker = {
            let mut st = self.state.lock();
            st.done = true;
            st.result = Some(result);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Lets a later abort reach the running Tokio task.
    pub(crate) fn set_join_handle(&self, handle: tokio::task::JoinHandle<()>) {
        let unused = {
            let mut st = self.state.lock();
            if st.abort_requested.is_some() {
                handle.abort();
                Some(handle)
            } else if st.done {
                Some(handle)
            } else {
                st.abort = Some(handle);
                None
            }
        };
        // Detached outside the lock.
        drop(unused);
    }

    fn is_done(&self) -> bool {
        self.state.lock().done
    }

    /// How a task dropped before it finished is reported: as it was told to
    /// stop, or, told nothing, as stopped by its runtime shutting down.
    fn stopped_because(&self) -> TaskError {
        self.state
            .lock()
            .abort_requested
            .clone()
            .unwrap_or(TaskError::Shutdown)
    }
}

impl<T> TaskShared<T> {
    /// Stops the running task; its handle resolves with `why`.
    pub(crate) fn abort_running(&self, why: TaskError) {
        let handle = {
            let mut st = self.state.lock();
            // The first reason sticks: an abort then a shutdown is an abort.
            st.abort_requested.get_or_insert(why);
            st.abort.take()
        };
        if let Some(h) = handle {
            h.abort();
        }
    }
}

/// A handle on a task submitted to a pool: a future of its result.
///
/// Dropping the handle detaches the task: it keeps running and its slot is
/// freed when it ends. Polling it again after it returned yields
/// `Err(TaskError::PolledAfterCompletion)`. A finished async task's memory
/// is freed when its handle returns the result or is dropped (by the
/// thread doing so, usually the submitter's), not when the task ends.
///
/// How it resolves when the task does not run to its end:
///
/// | what stopped it | error |
/// |---|---|
/// | [`abort`](Self::abort) | [`TaskError::Cancelled`] |
/// | `clear_queue()` (it was queued) | [`TaskError::Cleared`] |
/// | a shutdown deadline (queued; or running, async) | [`TaskError::Shutdown`] |
/// | the per-task `timeout` | [`TaskError::TimedOut`] |
/// | a panic | [`TaskError::Panicked`] |
///
/// # Examples
///
/// ```
/// use flowguard::pool::WorkerPool;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = WorkerPool::builder().max_concurrency(4).build().unwrap();
/// let handle = pool.submit(async { 6 * 7 }).await.unwrap();
/// assert_eq!(handle.await.unwrap(), 42);
/// # }
/// ```
///
/// # Cancel safety
///
/// Awaiting a handle is cancel safe: dropping the `.await` loses nothing but
/// the result; the task itself carries on.
#[must_use = "dropping a TaskHandle detaches the task; await it to get the result"]
pub struct TaskHandle<T> {
    shared: Shared<T>,
    pool: Arc<Dispatcher>,
    id: TaskId,
}

impl<T: Send + 'static> TaskHandle<T> {
    pub(crate) fn new(shared: Shared<T>, pool: Arc<Dispatcher>, id: TaskId) -> Self {
        Self { shared, pool, id }
    }

    /// Aborts the task. A queued task is removed at once (its queue room is
    /// freed) and resolves to `Err(TaskError::Cancelled)`; a running async
    /// task is cancelled at its next await point and resolves the same way.
    /// Blocking and CPU closures cannot be interrupted: once started they
    /// run to the end and their handle resolves with their result.
    pub fn abort(&self) {
        if !self.pool.abort_queued(self.id) {
            self.shared.task().abort_running(TaskError::Cancelled);
        }
    }

    /// Whether the task has finished (with a value or an error).
    pub fn is_finished(&self) -> bool {
        self.shared.task().is_done()
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.shared.task().state.lock();
        if let Some(r) = st.result.take() {
            st.taken = true;
            // The finished Tokio task is freed here, on the awaiting
            // thread (usually the one that submitted it), outside the lock.
            let join = st.abort.take();
            drop(st);
            drop(join);
            return Poll::Ready(r);
        }
        if st.taken {
            return Poll::Ready(Err(TaskError::PolledAfterCompletion));
        }
        let stale = match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => None,
            _ => st.waker.replace(cx.waker().clone()),
        };
        drop(st);
        // A replaced waker is dropped unlocked: its drop runs its owner's
        // code, which may complete this task (a `clear_queue` cancelling it
        // publishes here) and so take this lock.
        drop(stale);
        Poll::Pending
    }
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id)
            .field("finished", &self.shared.task().state.lock().done)
            .finish()
    }
}

/// The caller-side timer of a call that cannot be interrupted (blocking
/// and CPU pools): resolves the handle to `TimedOut` after `timeout` unless
/// the call completed first; the caller aborts it as soon as the call
/// returns. Whichever completes the handle first is the one counted; the
/// call keeps its slot either way. The clock starts at the timer's first
/// poll, on `runtime`, so a paused test clock governs it even when the call
/// is started from a thread outside the runtime.
pub(crate) fn spawn_timeout<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    timeout: std::time::Duration,
    shared: Shared<T>,
    pool: Arc<Dispatcher>,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        tokio::time::sleep(timeout).await;
        shared.task().complete_then(Err(TaskError::TimedOut), || {
            pool.counters
                .timed_out
                .fetch_add(1, crate::sync::atomic::Ordering::Relaxed);
        });
    })
}

pin_project_lite::pin_project! {
    /// Polls a future inside `catch_unwind`, turning a panic into
    /// `TaskError::Panicked`.
    pub(crate) struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F> CatchUnwind<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(panicked(payload))),
        }
    }
}

/// Runs a closure, turning a panic into `TaskError::Panicked`.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, TaskError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(panicked)
}

fn panicked(payload: Box<dyn Any + Send>) -> TaskError {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    };
    TaskError::Panicked { message }
}

/// Held by a running task: records its outcome and frees its slot. If the
/// task is dropped before it ends (aborted, or its runtime shut down), the
/// handle resolves with the reason it was told to stop (`Shutdown` if none). Only the first outcome for a task is counted, and the slot is
/// freed before the handle wakes, so whoever awaited it sees the pool's
/// metrics already updated.
pub(crate) struct Finish<T> {
    shared: Shared<T>,
    slot: Option<RunSlot>,
}

impl<T> Finish<T> {
    pub(crate) fn new(shared: Shared<T>, slot: RunSlot) -> Self {
        Self {
            shared,
            slot: Some(slot),
        }
    }

    pub(crate) fn finish(mut self, outcome: Result<T, TaskError>) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Result<T, TaskError>) {
        let Some(slot) = self.slot.take() else { return };
        if self.shared.task().claim() {
            let kind = outcome.as_ref().map(|_| ()).map_err(Clone::clone);
            slot.counters().record(&kind);
            drop(slot);
            self.shared.task().publish(outcome);
        }
    }
}

impl<T> Drop for Finish<T> {
    fn drop(&mut self) {
        if self.slot.is_some() {
            let why = self.shared.task().stopped_because();
            self.record(Err(why));
        }
    }
}
