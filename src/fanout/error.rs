//! The fan-out error: every hedged attempt failed.

use std::error::Error;
use std::fmt;

/// Every attempt of a [`hedge`](super::hedge) call failed.
///
/// Carries the primary attempt's error back (the hedges' errors are
/// dropped) and how many attempts were sent.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::{hedge, HedgePolicy};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let policy = HedgePolicy::builder().fixed_delay(Duration::from_millis(10)).build().unwrap();
/// let err = hedge(|| async { Err::<(), _>("backend down") }, &policy).await.unwrap_err();
/// assert_eq!(err.attempts(), 1);
/// assert_eq!(err.into_inner(), "backend down");
/// # }
/// ```
#[non_exhaustive]
pub struct HedgeError<E> {
    /// The primary attempt's error.
    pub error: E,
    /// How many attempts were sent (the primary plus hedges).
    pub attempts: usize,
}

impl<E> HedgeError<E> {
    /// How many attempts were sent (the primary plus hedges).
    pub fn attempts(&self) -> usize {
        self.attempts
    }

    /// The primary attempt's error.
    pub fn into_inner(self) -> E {
        self.error
    }
}

impl<E> fmt::Debug for HedgeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeError")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl<E> fmt::Display for HedgeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all {} hedged attempts failed", self.attempts)
    }
}

impl<E: Error + 'static> Error for HedgeError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.error)
    }
}
