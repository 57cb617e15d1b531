use std::fmt;

/// Why a pooled task produced no value.
///
/// Each way a task can be stopped has its own variant: [`Cancelled`]
/// (aborted through its handle), [`Cleared`] (removed by `clear_queue`),
/// [`Shutdown`] (cut off by a shutdown deadline or a runtime shutting
/// down); [`is_cancelled`](Self::is_cancelled) is true for all three.
/// [`PolledAfterCompletion`] is not about the task at all: its handle had
/// already returned the result.
///
/// [`Cancelled`]: TaskError::Cancelled
/// [`Cleared`]: TaskError::Cleared
/// [`Shutdown`]: TaskError::Shutdown
/// [`PolledAfterCompletion`]: TaskError::PolledAfterCompletion
///
/// # Examples
///
/// ```
/// use flowguard::pool::{TaskError, WorkerPool};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = WorkerPool::builder().max_concurrency(2).build().unwrap();
/// let handle = pool.submit(async { panic!("boom") }).await.unwrap();
/// assert!(matches!(handle.await, Err(TaskError::Panicked { .. })));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the pool caught it and freed the slot.
    Panicked {
        /// The panic message, when it was a string.
        message: String,
    },
    /// The task ran longer than the pool's per-task `timeout`. For a
    /// `BlockingPool` or `CpuPool` the call itself runs on to its end (it
    /// cannot be interrupted) and keeps its slot until then.
    TimedOut,
    /// The task was aborted with [`TaskHandle::abort`](super::TaskHandle::abort):
    /// removed from the queue, or (async tasks) cancelled at its next await
    /// point.
    Cancelled,
    /// `run` and `WorkerPool::map` only: the pool was closed, so the work
    /// was never submitted.
    Closed,
    /// The shutdown deadline came first: the task was dropped from the
    /// queue unrun, or (async tasks) aborted while running. Also what a
    /// task reports when the Tokio runtime running it shut down.
    Shutdown,
    /// The task was removed from the queue unrun by `clear_queue()`.
    Cleared,
    /// The handle was polled again after it had returned the task's result
    /// (this error is never recorded in the pool's metrics).
    PolledAfterCompletion,
}

impl TaskError {
    /// Whether the task was stopped by someone rather than failing on its
    /// own: [`Cancelled`](Self::Cancelled), [`Cleared`](Self::Cleared) or
    /// [`Shutdown`](Self::Shutdown). (Before these were told apart, all
    /// three were `Cancelled`: code that matched it can use this.)
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pool::TaskError;
    /// assert!(TaskError::Shutdown.is_cancelled());
    /// assert!(!TaskError::TimedOut.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled | Self::Cleared | Self::Shutdown)
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked { message } => write!(f, "task panicked: {message}"),
            Self::TimedOut => f.write_str("task timed out"),
            Self::Cancelled => f.write_str("task cancelled"),
            Self::Closed => f.write_str("pool closed"),
            Self::Shutdown => f.write_str("task stopped by the pool's shutdown"),
            Self::Cleared => f.write_str("task cleared from the queue"),
            Self::PolledAfterCompletion => f.write_str("task handle polled after completion"),
        }
    }
}

impl std::error::Error for TaskError {}

/// A submission the pool refused; the work comes back unrun.
///
/// # Examples
///
/// ```
/// use flowguard::pool::{SubmitError, WorkerPool};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = WorkerPool::builder().max_concurrency(1).queue_capacity(0).build().unwrap();
/// let _busy = pool.try_submit(std::future::pending::<()>()).unwrap();
/// match pool.try_submit(async { 42 }) {
///     Err(SubmitError::Full(work)) => assert_eq!(work.await, 42), // shed, but not lost
///     _ => unreachable!(),
/// }
/// # }
/// ```
#[non_exhaustive]
pub enum SubmitError<W> {
    /// `try_submit` only: every slot is busy and the queue is full.
    Full(W),
    /// The pool was closed or is shutting down.
    Closed(W),
    /// `submit_timeout` only: no queue room came free in time.
    TimedOut(W),
}

impl<W> SubmitError<W> {
    /// The work that was not submitted.
    pub fn into_inner(self) -> W {
        match self {
            Self::Full(w) | Self::Closed(w) | Self::TimedOut(w) => w,
        }
    }
}

impl<W> fmt::Debug for SubmitError<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::Closed(_) => f.write_str("Closed(..)"),
            Self::TimedOut(_) => f.write_str("TimedOut(..)"),
        }
    }
}

impl<W> fmt::Display for SubmitError<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("pool is full"),
            Self::Closed(_) => f.write_str("pool is closed"),
            Self::TimedOut(_) => f.write_str("timed out waiting for queue room"),
        }
    }
}

impl<W> std::error::Error for SubmitError<W> {}
