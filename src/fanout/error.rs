//! The fan-out error: a hedged call failed.

use std::error::Error;
use std::fmt;

/// A [`hedge`](super::hedge) call failed: every attempt failed, or one
/// failed with an error declared [final](super::HedgeFuture::final_error_if).
///
/// Carries back the reported error (the primary's when every attempt
/// failed, as a call without hedging would have; the final one otherwise),
/// which attempt it came from, every other attempt's error, and how many
/// attempts were sent.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::{hedge_with_attempt, HedgePolicy};
/// use std::time::Duration;
/// use tokio::time::sleep;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let policy = HedgePolicy::builder().fixed_delay(Duration::from_millis(10)).build().unwrap();
/// let err = hedge_with_attempt(
///     |attempt| async move {
///         sleep(Duration::from_millis(if attempt == 0 { 30 } else { 5 })).await;
///         Err::<(), _>(format!("attempt {attempt}: backend down"))
///     },
///     &policy,
/// )
/// .await
/// .unwrap_err();
/// assert_eq!((err.attempts(), err.attempt), (2, 0));
/// assert_eq!(err.other_errors, [(1, "attempt 1: backend down".to_owned())]);
/// let all: Vec<usize> = err.errors().map(|(k, _)| k).collect();
/// assert_eq!(all, [0, 1]);
/// assert_eq!(err.into_inner(), "attempt 0: backend down");
/// # }
/// ```
#[non_exhaustive]
pub struct HedgeError<E> {
    /// The reported error: the primary attempt's when every attempt failed,
    /// the final error when one ended the call.
    pub error: E,
    /// How many attempts were sent (the primary plus hedges).
    pub attempts: usize,
    /// Which attempt `error` came from: 0 is the primary, `k` the `k`-th hedge.
    pub attempt: usize,
    /// Every other attempt's error, `(attempt, error)`, in the order they
    /// failed. Attempts still in flight when a final error ended the call
    /// have none.
    pub other_errors: Vec<(usize, E)>,
    is_final: bool,
}

impl<E> HedgeError<E> {
    pub(crate) fn new(
        error: E,
        attempts: usize,
        attempt: usize,
        other_errors: Vec<(usize, E)>,
        is_final: bool,
    ) -> Self {
        Self {
            error,
            attempts,
            attempt,
            other_errors,
            is_final,
        }
    }

    /// How many attempts were sent (the primary plus hedges).
    pub fn attempts(&self) -> usize {
        self.attempts
    }

    /// Whether an error declared final ended the call early (otherwise
    /// every attempt sent failed).
    pub fn is_final(&self) -> bool {
        self.is_final
    }

    /// Every attempt's error, `(attempt, &error)`, in attempt order.
    pub fn errors(&self) -> impl Iterator<Item = (usize, &E)> + '_ {
        let mut all: Vec<(usize, &E)> = std::iter::once((self.attempt, &self.error))
            .chain(self.other_errors.iter().map(|(k, e)| (*k, e)))
            .collect();
        all.sort_by_key(|(k, _)| *k);
        all.into_iter()
    }

    /// Every attempt's error, `(attempt, error)`, in attempt order.
    pub fn into_errors(self) -> Vec<(usize, E)> {
        let mut all = self.other_errors;
        all.push((self.attempt, self.error));
        all.sort_by_key(|(k, _)| *k);
        all
    }

    /// The reported error (see [`error`](Self::error)).
    pub fn into_inner(self) -> E {
        self.error
    }
}

impl<E> fmt::Debug for HedgeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeError")
            .field("attempts", &self.attempts)
            .field("attempt", &self.attempt)
            .field("other_errors", &self.other_errors.len())
            .field("is_final", &self.is_final)
            .finish_non_exhaustive()
    }
}

impl<E> fmt::Display for HedgeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_final {
            write!(
                f,
                "hedged attempt {} failed with a final error ({} sent)",
                self.attempt, self.attempts
            )
        } else {
            write!(f, "all {} hedged attempts failed", self.attempts)
        }
    }
}

impl<E: Error + 'static> Error for HedgeError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.error)
    }
}
