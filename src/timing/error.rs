//! Errors of the debounce and throttle handles.

use std::fmt;

/// The handle's worker is gone (its handler panicked or the runtime shut
/// down); the value given to the call comes back.
///
/// # Examples
///
/// ```
/// use flowguard::timing::Closed;
///
/// let err = Closed(42);
/// assert_eq!(err.to_string(), "debouncer is closed");
/// assert_eq!(err.into_inner(), 42);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Closed<T>(pub T);

impl<T> Closed<T> {
    /// The value that was not accepted.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Closed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Closed(..)")
    }
}

impl<T> fmt::Display for Closed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("debouncer is closed")
    }
}

impl<T> std::error::Error for Closed<T> {}

/// Why an awaited call got no result.
///
/// The value itself cannot come back: by then it was folded into (replaced
/// by) a later call's value, or dropped.
///
/// # Examples
///
/// ```
/// use flowguard::timing::CallError;
///
/// assert_eq!(CallError::Cancelled.to_string(), "the pending invocation was cancelled");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallError {
    /// `cancel()` dropped the pending invocation the call was folded into.
    Cancelled,
    /// The burst ended with `trailing` off, so its value was never invoked.
    Discarded,
    /// The handler panicked, or the worker stopped (runtime shut down, or the
    /// last handle was dropped), before the invocation completed.
    Closed,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cancelled => "the pending invocation was cancelled",
            Self::Discarded => "the burst ended without a trailing invocation",
            Self::Closed => "the debouncer closed before invoking",
        })
    }
}

impl std::error::Error for CallError {}
