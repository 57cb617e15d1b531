//! The submission path shared by the three pools: admission (wait, try, or
//! wait with a deadline), then dispatch at a priority; refused work goes
//! back to the caller.

use std::time::Duration;

use tokio::time::Instant;

use super::dispatch::{Control, Dispatcher, Job};
use super::task::TaskShared;
use super::{SubmitError, TaskHandle};
use crate::semaphore::{AcquireError, OwnedPermit};
use crate::sync::Arc;
use crate::sync::atomic::Ordering;

/// What a pool contributes to submission: how its work becomes a job.
pub(crate) trait Submit<W, T: Send + 'static>: Sync {
    /// The pool's job type for work `W`.
    type Job: Job;

    fn dispatcher(&self) -> &Arc<Dispatcher>;

    /// Wraps `work`; the job completes `shared` when it ends.
    fn job(&self, work: W, shared: Arc<TaskShared<T>>) -> Self::Job;

    /// Takes the work back out of a job that was never dispatched.
    fn into_work(job: Self::Job) -> W;

    /// How a running task can be aborted (None: it cannot be interrupted).
    fn control(shared: &Arc<TaskShared<T>>) -> Option<Box<dyn Control>>;
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
    match tokio::time::timeout_at(deadline, pool.dispatcher().admit.acquire_owned()).await {
        Ok(Ok(admit)) => dispatch(pool, work, admit, priority),
        Ok(Err(_)) => Err(SubmitError::Closed(work)),
        Err(_) => Err(SubmitError::TimedOut(work)),
    }
}

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
    let shared = TaskShared::new();
    let job = pool.job(work, shared.clone());
    let d = pool.dispatcher();
    match Dispatcher::dispatch_job(d, job, admit, P::control(&shared), priority) {
        Ok(id) => Ok(TaskHandle::new(shared, d.clone(), id)),
        Err(job) => Err(SubmitError::Closed(P::into_work(job))),
    }
}

/// A deadline far enough away to mean "never" without overflowing `Instant`.
pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}
