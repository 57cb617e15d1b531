//! How a pipeline call ended without a value, and which layer said so.

use std::fmt;
use std::time::Duration;

/// Why [`Pipeline::call`](super::Pipeline::call) returned no value. The
/// operation's own error comes back untouched; a refusal by a layer says
/// which layer and, where known, when to come back.
///
/// # Examples
///
/// ```
/// use flowguard::pipeline::{Pipeline, PipelineError};
/// use flowguard::retry::RetryPolicy;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let pipeline = Pipeline::builder()
///     .retry(RetryPolicy::new().max_retries(1))
///     .build()
///     .unwrap();
/// let err = pipeline.call(|| async { Err::<(), _>("down") }).await.unwrap_err();
/// assert!(matches!(err, PipelineError::RetriesExhausted { last: "down", attempts: 2 }));
/// assert_eq!(err.layer(), "retry");
/// assert_eq!(err.into_inner(), Some("down"));
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PipelineError<E> {
    /// The operation's error, untouched: one the classifier does not count
    /// as a failure, or a failure with no retry layer to try again.
    Inner(E),
    /// Every retry was used, or the retry budget refused the next one; the
    /// last attempt's error.
    RetriesExhausted {
        /// The last attempt's error.
        last: E,
        /// Attempts made.
        attempts: u32,
    },
    /// The total timeout passed, or left no room for another attempt.
    Timeout {
        /// Attempts started.
        attempts: u32,
        /// The last finished attempt's error, if any.
        last: Option<E>,
    },
    /// The per-attempt timeout cut the last attempt, and no retry was left.
    AttemptTimeout {
        /// Attempts started.
        attempts: u32,
    },
    /// The circuit breaker refused the call (open, forced open, or no
    /// half-open probe slot free). Not retried: the breaker is there to
    /// keep calls away.
    BreakerOpen {
        /// When the breaker will admit a probe, if known.
        retry_after: Option<Duration>,
    },
    /// The rate limiter had no token in time.
    RateLimited {
        /// When a token will be there, if one ever can be.
        retry_after: Option<Duration>,
    },
    /// The bulkhead (concurrency limit) was full: refused at once
    /// ([`Admission::Shed`](super::Admission::Shed)), or no slot came free
    /// before the call's deadline. A wait cut by the total timeout is
    /// reported as the wait it cut, as a rate limiter's and an adaptive
    /// limit's are, not as [`Timeout`](Self::Timeout) (Polly's timeout
    /// around a queued limiter and resilience4j's TimeLimiter around a
    /// bulkhead report a timeout there): the caller learns which resource
    /// ran out. Not retried.
    BulkheadFull,
    /// The adaptive concurrency limit was reached (shed, a full backlog, or
    /// no permit before the deadline). Not retried.
    ConcurrencyLimited,
}

impl<E> PipelineError<E> {
    /// The operation's error, if the call ended on one.
    pub fn inner(&self) -> Option<&E> {
        match self {
            Self::Inner(e) | Self::RetriesExhausted { last: e, .. } => Some(e),
            Self::Timeout { last, .. } => last.as_ref(),
            _ => None,
        }
    }

    /// Takes the operation's error out, if the call ended on one.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) | Self::RetriesExhausted { last: e, .. } => Some(e),
            Self::Timeout { last, .. } => last,
            _ => None,
        }
    }

    /// How long until a call could succeed, when a layer knows
    /// (breaker open, rate limited).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::BreakerOpen { retry_after } | Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The layer that ended the call: `"operation"`, `"retry"`,
    /// `"timeout"`, `"attempt_timeout"`, `"breaker"`, `"rate_limit"`,
    /// `"bulkhead"` or `"adaptive_limit"`.
    pub fn layer(&self) -> &'static str {
        match self {
            Self::Inner(_) => "operation",
            Self::RetriesExhausted { .. } => "retry",
            Self::Timeout { .. } => "timeout",
            Self::AttemptTimeout { .. } => "attempt_timeout",
            Self::BreakerOpen { .. } => "breaker",
            Self::RateLimited { .. } => "rate_limit",
            Self::BulkheadFull => "bulkhead",
            Self::ConcurrencyLimited => "adaptive_limit",
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Self::Inner(_) => "operation failed",
            Self::RetriesExhausted { .. } => "retries exhausted",
            Self::Timeout { .. } => "timed out",
            Self::AttemptTimeout { .. } => "attempt timed out",
            Self::BreakerOpen { .. } => "circuit breaker open",
            Self::RateLimited { .. } => "rate limited",
            Self::BulkheadFull => "bulkhead full",
            Self::ConcurrencyLimited => "concurrency limit reached",
        }
    }
}

impl<E> fmt::Debug for PipelineError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("PipelineError");
        d.field("layer", &self.layer());
        if let Some(r) = self.retry_after() {
            d.field("retry_after", &r);
        }
        d.field("has_inner", &self.inner().is_some()).finish()
    }
}

impl<E: fmt::Display> fmt::Display for PipelineError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what())?;
        if let Some(r) = self.retry_after() {
            write!(f, "; retry after {r:?}")?;
        }
        if let Some(e) = self.inner() {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

impl<E: std::error::Error + 'static> std::error::Error for PipelineError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner().map(|e| e as _)
    }
}
