//! Why an adaptive limiter gave no permit.

use std::fmt;

/// Why [`AdaptiveLimiter`](super::AdaptiveLimiter) did not hand out a
/// permit. Every variant is "not now": the limit moves, so a later call may
/// succeed. Each refusal counts in [`AdaptiveMetrics::rejections`](super::AdaptiveMetrics::rejections).
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::{AcquireError, AdaptiveLimiter, Aimd};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let aimd = Aimd::builder().initial_limit(1).min_limit(1).build().unwrap();
/// let limiter = AdaptiveLimiter::builder().algorithm(aimd).build().unwrap();
/// let _held = limiter.try_acquire().unwrap();
/// assert_eq!(limiter.try_acquire().unwrap_err(), AcquireError::Limited);
/// assert_eq!(limiter.metrics().rejections, 1);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AcquireError {
    /// `try_acquire` only: the limit is reached (or callers are queued
    /// ahead); the request is shed.
    Limited,
    /// `acquire*` only: the limit is reached and the backlog of waiting
    /// callers is at its bound.
    BacklogFull,
    /// `acquire_timeout` / `acquire_deadline` only: no permit came in time.
    TimedOut,
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Limited => "concurrency limit reached",
            Self::BacklogFull => "concurrency limit reached and the backlog is full",
            Self::TimedOut => "timed out waiting under the concurrency limit",
        })
    }
}

impl std::error::Error for AcquireError {}
