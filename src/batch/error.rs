//! The error a load answers with.

use std::fmt;

use crate::sync::StdArc as Arc;

/// Why a [`Loader`](super::Loader) could not answer one key, and which
/// loader it was ([`loader`](Self::loader), the builder's
/// [`name`](super::LoaderBuilder::name)).
///
/// What went wrong is its [`kind`](Self::kind). Errors from the batch
/// function are shared, not cloned: every key of a failed batch gets the
/// same [`Arc<E>`], so `E` needs no `Clone`. `Debug` and `Display` need no
/// bounds on `E` beyond what they print; `Display` starts with the
/// loader's name, so a log line says which of a service's loaders failed.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use flowguard::batch::{LoadErrorKind, Loader};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let users = Loader::builder(|_ids: Vec<u32>| async { Err::<HashMap<u32, String>, _>("db down") })
///     .name("users")
///     .build()
///     .unwrap();
/// let err = users.load(1).await.unwrap_err();
/// assert_eq!(err.loader(), "users");
/// assert!(matches!(err.kind(), LoadErrorKind::Batch(e) if **e == "db down"));
/// assert_eq!(err.to_string(), "loader `users`: batch failed: db down");
/// # }
/// ```
pub struct LoadError<E> {
    kind: LoadErrorKind<E>,
    loader: Arc<str>,
}

/// What went wrong with one key: the [`kind`](LoadError::kind) of a
/// [`LoadError`].
///
/// # Examples
///
/// ```
/// use flowguard::batch::LoadErrorKind;
///
/// let kind: LoadErrorKind<std::io::Error> = LoadErrorKind::NotFound;
/// assert_eq!(kind.to_string(), "key not found in the batch answer");
/// ```
#[non_exhaustive]
pub enum LoadErrorKind<E> {
    /// The batch answered, but not for this key.
    NotFound,
    /// The whole batch failed; every key in it gets this same error.
    Batch(Arc<E>),
    /// The batch answered with an error for this key alone (from a
    /// [`Vec` answer](super::Loader::builder_vec), or
    /// [primed](super::Loader::prime_error)).
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
    pub(crate) fn new(kind: LoadErrorKind<E>, loader: Arc<str>) -> Self {
        Self { kind, loader }
    }

    /// What went wrong.
    pub fn kind(&self) -> &LoadErrorKind<E> {
        &self.kind
    }

    /// What went wrong, by value.
    pub fn into_kind(self) -> LoadErrorKind<E> {
        self.kind
    }

    /// The name of the loader that answered (its builder's
    /// [`name`](super::LoaderBuilder::name); `"loader"` by default).
    pub fn loader(&self) -> &str {
        &self.loader
    }

    /// Whether this is [`LoadErrorKind::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self.kind, LoadErrorKind::NotFound)
    }

    /// The batch function's error, if this error came from one.
    pub fn source_error(&self) -> Option<&E> {
        self.kind.source_error()
    }
}

impl<E> LoadErrorKind<E> {
    /// The batch function's error, if this error came from one.
    pub fn source_error(&self) -> Option<&E> {
        match self {
            LoadErrorKind::Batch(e) | LoadErrorKind::Key(e) => Some(e),
            _ => None,
        }
    }
}

// Manual impls: `Arc<E>` clones without `E: Clone`.
impl<E> Clone for LoadErrorKind<E> {
    fn clone(&self) -> Self {
        match self {
            LoadErrorKind::NotFound => LoadErrorKind::NotFound,
            LoadErrorKind::Batch(e) => LoadErrorKind::Batch(Arc::clone(e)),
            LoadErrorKind::Key(e) => LoadErrorKind::Key(Arc::clone(e)),
            LoadErrorKind::WrongLength { expected, actual } => LoadErrorKind::WrongLength {
                expected: *expected,
                actual: *actual,
            },
            LoadErrorKind::Aborted => LoadErrorKind::Aborted,
            LoadErrorKind::NoRuntime => LoadErrorKind::NoRuntime,
        }
    }
}

impl<E> Clone for LoadError<E> {
    fn clone(&self) -> Self {
        Self {
            kind: self.kind.clone(),
            loader: Arc::clone(&self.loader),
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for LoadErrorKind<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadErrorKind::NotFound => f.write_str("NotFound"),
            LoadErrorKind::Batch(e) => f.debug_tuple("Batch").field(e).finish(),
            LoadErrorKind::Key(e) => f.debug_tuple("Key").field(e).finish(),
            LoadErrorKind::WrongLength { expected, actual } => f
                .debug_struct("WrongLength")
                .field("expected", expected)
                .field("actual", actual)
                .finish(),
            LoadErrorKind::Aborted => f.write_str("Aborted"),
            LoadErrorKind::NoRuntime => f.write_str("NoRuntime"),
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadError")
            .field("loader", &self.loader)
            .field("kind", &self.kind)
            .finish()
    }
}

impl<E: fmt::Display> fmt::Display for LoadErrorKind<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadErrorKind::NotFound => f.write_str("key not found in the batch answer"),
            LoadErrorKind::Batch(e) => write!(f, "batch failed: {e}"),
            LoadErrorKind::Key(e) => write!(f, "load failed for this key: {e}"),
            LoadErrorKind::WrongLength { expected, actual } => {
                write!(f, "batch answered {actual} values for {expected} keys")
            }
            LoadErrorKind::Aborted => f.write_str("batch ended without an answer"),
            LoadErrorKind::NoRuntime => f.write_str("no tokio runtime to run the batch on"),
        }
    }
}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loader `{}`: {}", self.loader, self.kind)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadErrorKind<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadErrorKind::Batch(e) | LoadErrorKind::Key(e) => Some(&**e),
            _ => None,
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.kind.source()
    }
}
