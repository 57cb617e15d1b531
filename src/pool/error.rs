use std::fmt;

/// Why a pooled task produced no value.
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
    /// The task ran longer than the pool's per-task `timeout`.
    TimedOut,
    /// The task was aborted ([`TaskHandle::abort`](super::TaskHandle::abort)
    /// or a shutdown deadline) before it finished.
    Cancelled,
    /// `run` only: the pool was closed, so the work was never submitted.
    Closed,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked { message } => write!(f, "task panicked: {message}"),
            Self::TimedOut => f.write_str("task timed out"),
            Self::Cancelled => f.write_str("task cancelled"),
            Self::Closed => f.write_str("pool closed"),
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
