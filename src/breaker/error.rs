//! The breaker's errors.

use std::fmt;
use std::time::Duration;

/// A call the breaker refused without running it.
///
/// `Open` is "not yet, retry after this long"; `HalfOpenFull` and
/// `ForcedOpen` have no known time: use
/// [`wait_until_ready`](super::CircuitBreaker::wait_until_ready) to wait for
/// the breaker instead of guessing.
///
/// # Examples
///
/// ```
/// use flowguard::breaker::{CircuitBreaker, Rejected};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let breaker = CircuitBreaker::new();
/// breaker.force_open();
/// let err = breaker.try_acquire().unwrap_err();
/// assert_eq!(err, Rejected::ForcedOpen);
/// assert_eq!(err.to_string(), "circuit breaker is forced open");
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejected {
    /// The breaker is open; a call may be admitted (as a probe) after
    /// `retry_after`.
    Open {
        /// How long until the open wait ends.
        retry_after: Duration,
    },
    /// The breaker is half-open and all its probe slots are taken.
    HalfOpenFull,
    /// The breaker was forced open and stays so until `reset()`.
    ForcedOpen,
}

impl Rejected {
    /// How long until a call may be admitted, when that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejected::Open { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::Open { retry_after } => {
                write!(f, "circuit breaker is open; retry after {retry_after:?}")
            }
            Rejected::HalfOpenFull => {
                f.write_str("circuit breaker is half-open and all probe slots are taken")
            }
            Rejected::ForcedOpen => f.write_str("circuit breaker is forced open"),
        }
    }
}

impl std::error::Error for Rejected {}

/// The error of [`CircuitBreaker::call`](super::CircuitBreaker::call): either
/// the breaker refused the call, or the call ran and returned its own error,
/// which comes back unchanged.
///
/// `Debug` does not need `E: Debug` (the inner error prints as `Inner(..)`);
/// the inner error is the `source()` when it implements `Error`.
///
/// # Examples
///
/// ```
/// use flowguard::breaker::{BreakerError, CircuitBreaker};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let breaker = CircuitBreaker::new();
/// let r: Result<(), _> = breaker.call(|| async { Err("backend down") }).await;
/// match r {
///     Err(BreakerError::Inner(e)) => assert_eq!(e, "backend down"),
///     other => panic!("unexpected {other:?}"),
/// }
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerError<E> {
    /// The breaker refused the call; the backend was not touched.
    Rejected(Rejected),
    /// The call ran and failed with this error.
    Inner(E),
}

impl<E> BreakerError<E> {
    /// The refusal, if the call did not run.
    pub fn rejected(&self) -> Option<Rejected> {
        match self {
            BreakerError::Rejected(r) => Some(*r),
            BreakerError::Inner(_) => None,
        }
    }

    /// The inner error, if the call ran and failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            BreakerError::Inner(e) => Some(e),
            BreakerError::Rejected(_) => None,
        }
    }
}

impl<E> From<Rejected> for BreakerError<E> {
    fn from(r: Rejected) -> Self {
        BreakerError::Rejected(r)
    }
}

impl<E> fmt::Debug for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Rejected(r) => f.debug_tuple("Rejected").field(r).finish(),
            BreakerError::Inner(_) => f.write_str("Inner(..)"),
        }
    }
}

impl<E> fmt::Display for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Rejected(r) => fmt::Display::fmt(r, f),
            BreakerError::Inner(_) => f.write_str("the call through the circuit breaker failed"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for BreakerError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Display already says why it was refused.
            BreakerError::Rejected(_) => None,
            BreakerError::Inner(e) => Some(e),
        }
    }
}
