//! The error a load answers with.

use std::fmt;

use crate::sync::StdArc as Arc;

/// Why a [`Loader`](super::Loader) could not answer one key.
///
/// Errors from the batch function are shared, not cloned: every key of a
/// failed batch gets the same [`Arc<E>`], so `E` needs no `Clone`.
/// `Debug` and `Display` need no bounds on `E` beyond what they print.
///
/// # Examples
///
/// ```
/// use flowguard::batch::LoadError;
///
/// let err: LoadError<std::io::Error> = LoadError::NotFound;
/// assert_eq!(err.to_string(), "key not found in the batch answer");
/// assert!(err.is_not_found());
/// ```
#[non_exhaustive]
pub enum LoadError<E> {
    /// The batch answered, but not for this key.
    NotFound,
    /// The whole batch failed; every key in it gets this same error.
    Batch(Arc<E>),
    /// The batch answered with an error for this key alone (from a
    /// [`Vec` answer](super::Loader::builder_vec)).
    Key(Arc<E>),
    /// A [`Vec` answer](super::Loader::builder_vec) had a different length
    /// than the keys it was asked for, so no value can be matched to a key.
    WrongLength {
        /// How many keys the batch function was given.
        expected: usize,
        /// How many values it answered.
        actual: usize,
    },
    /// The batch ended without answering: its function panicked, or the
    /// runtime running it shut down.
    Aborted,
    /// No Tokio runtime was running to spawn the batch on.
    NoRuntime,
}

impl<E> LoadError<E> {
    /// Whether this is [`LoadError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, LoadError::NotFound)
    }

    /// The batch function's error, if this error came from one.
    pub fn source_error(&self) -> Option<&E> {
        match self {
            LoadError::Batch(e) | LoadError::Key(e) => Some(e),
            _ => None,
        }
    }
}

// Manual impls: `Arc<E>` clones without `E: Clone`.
impl<E> Clone for LoadError<E> {
    fn clone(&self) -> Self {
        match self {
            LoadError::NotFound => LoadError::NotFound,
            LoadError::Batch(e) => LoadError::Batch(Arc::clone(e)),
            LoadError::Key(e) => LoadError::Key(Arc::clone(e)),
            LoadError::WrongLength { expected, actual } => LoadError::WrongLength {
                expected: *expected,
                actual: *actual,
            },
            LoadError::Aborted => LoadError::Aborted,
            LoadError::NoRuntime => LoadError::NoRuntime,
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotFound => f.write_str("NotFound"),
            LoadError::Batch(e) => f.debug_tuple("Batch").field(e).finish(),
            LoadError::Key(e) => f.debug_tuple("Key").field(e).finish(),
            LoadError::WrongLength { expected, actual } => f
                .debug_struct("WrongLength")
                .field("expected", expected)
                .field("actual", actual)
                .finish(),
            LoadError::Aborted => f.write_str("Aborted"),
            LoadError::NoRuntime => f.write_str("NoRuntime"),
        }
    }
}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotFound => f.write_str("key not found in the batch answer"),
            LoadError::Batch(e) => write!(f, "batch failed: {e}"),
            LoadError::Key(e) => write!(f, "load failed for this key: {e}"),
            LoadError::WrongLength { expected, actual } => {
                write!(f, "batch answered {actual} values for {expected} keys")
            }
            LoadError::Aborted => f.write_str("batch ended without an answer"),
            LoadError::NoRuntime => f.write_str("no tokio runtime to run the batch on"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Batch(e) | LoadError::Key(e) => Some(&**e),
            _ => None,
        }
    }
}
