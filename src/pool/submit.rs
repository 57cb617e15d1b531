//! The submission path shared by the three pools: admission (wait, try, or
//! wait with a deadline), then dispatch at a priority; refused work goes
//! back to the caller.

use std::time::Duration;

use tokio::time::Instant;

use super::dispatch::{ControlRef, Dispatcher, JobRef};
use super::task::{Shared, TaskCell, Work};
use super::{SubmitError, TaskHandle};
use crate::clock::timeout_at_inclusive;
use crate::semaphore::{AcquireError, OwnedPermit};
use crate::sync::atomic::Ordering;
use crate::sync::{Arc, StdArc};

/// What a pool contributes to submission: how its work becomes a job.
pub(crate) trait Submit<W, T: Send + 'static>: Sync {
    /// The pool's wrapping of work `W` (with what it needs to start it).
    type Work: Work<T>;

    /// Whether a running task can be aborted (false: it cannot be
    /// interrupted, as a blocking or CPU call).
    const ABORTABLE: bool;

    fn dispatcher(&self) -> &Arc<Dispatcher>;

    /// Wraps `work`; it completes the task's handle when it ends.
    fn work(&self, work: W) -> Self::Work;

    /// Takes the work back out of a job that was never dispatched.
    fn into_work(job: Self::Work) -> W;
}

/// Waits for queue room, then dispatches.
pub(crate) async fn submit<P, W, T>(
    pool: &P,
    work: W,
    priority: i32,
) -> Result<TaskHandle<T>, SubmitError<W>>
where
    P: Submit<W, T>,
    T: Send + 'static,
{
    match pool.dispatcher().admit.acquire_owned().await {
        Ok(admit) => dispatch(pool, work, admit, priority),
        Err(_) => Err(SubmitError::Closed(work)),
    }
}

/// Dispatches only if there is room now; a refusal is counted as rejected.
pub(crate) fn try_submit<P, W, T>(
    pool: &P,
    work: W,
    priority: i32,
) -> Result<TaskHandle<T>, SubmitError<W>>
where
    P: Submit<W, T>,
    T: Send + 'static,
{
    let d = pool.dispatcher();
    match d.admit.try_acquire_owned() {
        Ok(admit) => dispatch(pool, work, admit, priority),
        Err(AcquireError::Closed) => Err(SubmitError::Closed(work)),
        Err(_) => {
            d.counters.rejected.fetch_add(1, Ordering::Relaxed);
            Err(SubmitError::Full(work))
        }
    }
}

/// Waits at most `timeout` for queue room, then dispatches.
pub(crate) async fn submit_timeout<P, W, T>(
    pool: &P,
    work: W,
    timeout: Duration,
    priority: i32,
) -> Result<TaskHandle<T>, SubmitError<W>>
where
    P: Submit<W, T>,
    T: Send + 'static,
{
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(far_future);
    submit_deadline(pool, work, deadline, priority).await
}

/// Waits until `deadline` at most for queue room, then dispatches.
pub(crate) async fn submit_deadline<P, W, T>(
    pool: &P,
    work: W,
    deadline: Instant,
    priority: i32,
) -> Result<TaskHandle<T>, SubmitError<W>>
where
    P: Submit<W, T>,
    T: Send + 'static,
{
    // Room made at the deadline instant itself counts (`timeout_at_inclusive`).
    match timeout_at_inclusive(deadline, pool.dispatcher().admit.acquire_owned()).await {
        Some(Ok(admit)) => dispatch(pool, work, admit, priority),
        Some(Err(_)) => Err(SubmitError::Closed(work)),
        None => Err(SubmitError::TimedOut(work)),
    }
}

/// Work larger than this (bytes, with what the pool adds to it) lives in
/// its own box inside the task's cell: the cell keeps the work's room,
/// empty, while the task runs, and a large future would then take its
/// size twice (cell and Tokio task) for the whole run.
const INLINE_WORK_MAX: usize = 256;

pub(crate) fn dispatch<P, W, T>(
    pool: &P,
    work: W,
    admit: OwnedPermit,
    priority: i32,
) -> Result<TaskHandle<T>, SubmitError<W>>
where
    P: Submit<W, T>,
    T: Send + 'static,
{
    let work = pool.work(work);
    if std::mem::size_of::<P::Work>() <= INLINE_WORK_MAX {
        dispatch_cell(pool, work, admit, priority, |w| w)
    } else {
        dispatch_cell(pool, Box::new(work), admit, priority, |b| *b)
    }
}

fn dispatch_cell<P, W, T, J>(
    pool: &P,
    work: J,
    admit: OwnedPermit,
    priority: i32,
    unwrap: impl FnOnce(J) -> P::Work,
) -> Result<TaskHandle<T>, SubmitError<W>>
where
    P: Submit<W, T>,
    T: Send + 'static,
    J: Work<T>,
{
    // One allocation per submission (small work): the handle's completion
    // slot, which also holds the work until it starts and is the running
    // task's abort control.
    let cell = StdArc::new(TaskCell::new(work));
    let control = P::ABORTABLE.then(|| cell.clone() as ControlRef);
    let d = pool.dispatcher();
    match Dispatcher::dispatch(d, cell.clone() as JobRef, admit, control, priority) {
        Ok(id) => Ok(TaskHandle::new(cell as Shared<T>, d.clone(), id)),
        Err(job) => {
            // Refused before it was queued or started: the work is still in
            // the cell (only a start or a cancel takes it out).
            drop(job);
            match cell.take_work() {
                Some(w) => Err(SubmitError::Closed(P::into_work(unwrap(w)))),
                None => unreachable!("a refused job is neither started nor cancelled"),
            }
        }
    }
}

/// A deadline far enough away to mean "never" without overflowing `Instant`.
pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}
