use std::fmt;

/// Why an acquire did not produce a permit.
///
/// Which variants a method can return is listed in its `# Errors` section.
/// "Not yet" ([`NoPermits`](Self::NoPermits), [`TimedOut`](Self::TimedOut))
/// is distinct from "never" ([`TooLarge`](Self::TooLarge),
/// [`Closed`](Self::Closed)).
///
/// # Examples
///
/// ```
/// use flowguard::semaphore::{AcquireError, Semaphore};
///
/// let sem = Semaphore::new(2);
/// assert_eq!(
///     sem.try_acquire_many(3).unwrap_err(),
///     AcquireError::TooLarge { requested: 3, capacity: 2 }
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AcquireError {
    /// The semaphore was closed; no permit will ever be handed out again.
    Closed,
    /// More permits were requested than the semaphore's capacity, so the
    /// request can never be satisfied (also returned to a waiter when a
    /// shrink makes its request impossible).
    TooLarge {
        /// The number of permits asked for.
        requested: usize,
        /// The capacity at the time of refusal.
        capacity: usize,
    },
    /// `try_acquire*` only: not enough permits are free right now (or earlier
    /// waiters are queued ahead of the caller).
    NoPermits,
    /// `*_timeout` / `*_deadline` only: the permits did not arrive in time.
    TimedOut,
    /// The queue was full ([`SemaphoreBuilder::queue_limit`](super::SemaphoreBuilder::queue_limit),
    /// oldest-first): the acquire was refused at once instead of waiting.
    QueueFull,
    /// A newest-first queue was full and this waiter, the oldest, was
    /// evicted to make room for a newer one.
    Evicted,
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("semaphore closed"),
            Self::TooLarge {
                requested,
                capacity,
            } => write!(
                f,
                "requested {requested} permits from a semaphore of capacity {capacity}"
            ),
            Self::NoPermits => f.write_str("no permits available"),
            Self::TimedOut => f.write_str("timed out waiting for permits"),
            Self::QueueFull => f.write_str("semaphore queue full"),
            Self::Evicted => f.write_str("evicted from a full semaphore queue by a newer waiter"),
        }
    }
}

impl std::error::Error for AcquireError {}
