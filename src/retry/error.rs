//! How a retried call ended without a result.

use std::fmt;

/// Why [`Retry::call`](super::Retry::call) gave up. Each variant hands back
/// the last error of the operation untouched (none only when the deadline
/// left no time for any attempt, or cut the only one short) and how many
/// attempts were started.
///
/// A *value* the classifier wanted retried (say, an HTTP 503 response) that
/// runs out of attempts is returned as `Ok(value)`, not as an error: the
/// caller gets the last response as it came.
///
/// # Examples
///
/// ```
/// use flowguard::retry::{Retry, RetryError};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let retry = Retry::builder().max_retries(2).build().unwrap();
/// let err = retry.call(|| async { Err::<(), _>("down") }).await.unwrap_err();
/// assert!(matches!(err, RetryError::Exhausted { error: "down", attempts: 3 }));
/// assert_eq!(err.attempts(), 3);
/// assert_eq!(err.into_error(), Some("down"));
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryError<E> {
    /// Every allowed attempt failed; the last error.
    Exhausted {
        /// The last attempt's error.
        error: E,
        /// Attempts made (1 + retries).
        attempts: u32,
    },
    /// The classifier said this outcome is not worth retrying.
    NotRetryable {
        /// The error as returned.
        error: E,
        /// Attempts made.
        attempts: u32,
    },
    /// The shared [`RetryBudget`](super::RetryBudget) refused the next retry.
    BudgetExhausted {
        /// The last attempt's error.
        error: E,
        /// Attempts made.
        attempts: u32,
    },
    /// The deadline came, or left too little time for the next attempt.
    Deadline {
        /// The last finished attempt's error, if any attempt finished.
        error: Option<E>,
        /// Attempts started (one cut short by the deadline included).
        attempts: u32,
    },
}

impl<E> RetryError<E> {
    /// How many attempts were started.
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Exhausted { attempts, .. }
            | Self::NotRetryable { attempts, .. }
            | Self::BudgetExhausted { attempts, .. }
            | Self::Deadline { attempts, .. } => *attempts,
        }
    }

    /// The last error of the operation, if one was returned.
    pub fn error(&self) -> Option<&E> {
        match self {
            Self::Exhausted { error, .. }
            | Self::NotRetryable { error, .. }
            | Self::BudgetExhausted { error, .. } => Some(error),
            Self::Deadline { error, .. } => error.as_ref(),
        }
    }

    /// Takes the last error of the operation out.
    pub fn into_error(self) -> Option<E> {
        match self {
            Self::Exhausted { error, .. }
            | Self::NotRetryable { error, .. }
            | Self::BudgetExhausted { error, .. } => Some(error),
            Self::Deadline { error, .. } => error,
        }
    }

    /// Whether the deadline ended it.
    pub fn is_deadline(&self) -> bool {
        matches!(self, Self::Deadline { .. })
    }

    fn what(&self) -> &'static str {
        match self {
            Self::Exhausted { .. } => "retries exhausted",
            Self::NotRetryable { .. } => "error not retryable",
            Self::BudgetExhausted { .. } => "retry budget exhausted",
            Self::Deadline { .. } => "deadline reached",
        }
    }
}

impl<E> fmt::Debug for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryError")
            .field("kind", &self.what())
            .field("attempts", &self.attempts())
            .field("has_error", &self.error().is_some())
            .finish()
    }
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} after {} attempt", self.what(), self.attempts())?;
        if self.attempts() != 1 {
            f.write_str("s")?;
        }
        if let Some(e) = self.error() {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error().map(|e| e as _)
    }
}
