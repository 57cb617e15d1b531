//! The rate limiters' errors.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// Why [`try_acquire`](super::RateLimiter::try_acquire) refused.
///
/// "Not yet, retry at X" ([`NotUntil`](TryAcquireError::NotUntil)) is kept
/// apart from "never possible"
/// ([`InsufficientCapacity`](TryAcquireError::InsufficientCapacity)).
///
/// # Examples
///
/// ```
/// use flowguard::rate::{Quota, RateLimiter, TryAcquireError};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let limiter = RateLimiter::new(Quota::per_second(2).unwrap());
/// assert!(limiter.try_acquire(2).is_ok());
/// match limiter.try_acquire(1) {
///     Err(TryAcquireError::NotUntil { retry_after }) => {
///         assert_eq!(retry_after - tokio::time::Instant::now(), std::time::Duration::from_millis(500));
///     }
///     other => panic!("{other:?}"),
/// }
/// assert!(matches!(limiter.try_acquire(3), Err(TryAcquireError::InsufficientCapacity { requested: 3, burst: 2 })));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TryAcquireError {
    /// Not enough tokens now. The request is admitted at `retry_after` if
    /// nothing else takes tokens first (it is refused at any earlier
    /// instant). While `acquire` callers are queued, `try_acquire` refuses so
    /// as not to barge ahead of them, and `retry_after` is then a lower bound.
    NotUntil {
        /// The earliest instant the same request can succeed.
        retry_after: Instant,
    },
    /// More tokens were requested than the bucket can ever hold.
    InsufficientCapacity {
        /// The caller's request.
        requested: u32,
        /// The quota's burst at the time of the request.
        burst: u32,
    },
    /// Only from a [`RedisRateLimiter`](super::RedisRateLimiter) (feature
    /// `redis`) under the fail-closed policy: Redis could not be asked, and
    /// nothing was taken.
    #[cfg(feature = "redis")]
    Unavailable {
        /// Why Redis could not be asked.
        cause: super::RedisErrorKind,
    },
}

impl TryAcquireError {
    /// How long from `now` until the request could succeed; `None` when it
    /// never can (or, for `Unavailable`, when nobody knows).
    pub fn wait_time_from(&self, now: Instant) -> Option<Duration> {
        match self {
            Self::NotUntil { retry_after } => Some(retry_after.saturating_duration_since(now)),
            Self::InsufficientCapacity { .. } => None,
            #[cfg(feature = "redis")]
            Self::Unavailable { .. } => None,
        }
    }
}

impl fmt::Display for TryAcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUntil { .. } => f.write_str("rate limited: not enough tokens yet"),
            Self::InsufficientCapacity { requested, burst } => write!(
                f,
                "requested {requested} tokens but the burst is {burst}: never possible"
            ),
            #[cfg(feature = "redis")]
            Self::Unavailable { cause } => write!(f, "rate limit unavailable: {cause}"),
        }
    }
}

impl Error for TryAcquireError {}

/// Why [`acquire`](super::RateLimiter::acquire) or
/// [`acquire_timeout`](super::RateLimiter::acquire_timeout) failed.
///
/// # Examples
///
/// ```
/// use flowguard::rate::{AcquireError, Quota, RateLimiter};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let limiter = RateLimiter::new(Quota::per_second(1).unwrap());
/// limiter.acquire(1).await.unwrap();
/// let err = limiter.acquire_timeout(1, Duration::from_millis(10)).await.unwrap_err();
/// assert!(matches!(err, AcquireError::Timeout { .. }));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcquireError {
    /// More tokens were requested than the bucket can ever hold (also when a
    /// [`set_quota`](super::RateLimiter::set_quota) shrank the burst below
    /// a queued request).
    InsufficientCapacity {
        /// The caller's request.
        requested: u32,
        /// The quota's burst.
        burst: u32,
    },
    /// The wait would have exceeded the timeout; nothing was consumed.
    Timeout {
        /// The predicted instant the request would have been admitted.
        retry_after: Instant,
    },
    /// Only from a [`RedisRateLimiter`](super::RedisRateLimiter) (feature
    /// `redis`) under the fail-closed policy: Redis could not be asked, and
    /// nothing was taken.
    #[cfg(feature = "redis")]
    Unavailable {
        /// Why Redis could not be asked.
        cause: super::RedisErrorKind,
    },
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InsufficientCapacity { requested, burst } => write!(
                f,
                "requested {requested} tokens but the burst is {burst}: never possible"
            ),
            Self::Timeout { .. } => f.write_str("rate limit wait would exceed the timeout"),
            #[cfg(feature = "redis")]
            Self::Unavailable { cause } => write!(f, "rate limit unavailable: {cause}"),
        }
    }
}

impl Error for AcquireError {}
