//! The configuration error every builder in the crate returns.

use std::borrow::Cow;
use std::fmt;

/// A builder was given a value it cannot work with.
///
/// It names the field and says why, e.g.
/// `invalid pool config: max_concurrency must be at least 1, got 0`.
///
/// # Examples
///
/// ```
/// use flowguard::{ConfigError, ConfigErrorKind};
///
/// let err = flowguard::semaphore::Semaphore::try_new(usize::MAX).unwrap_err();
/// assert_eq!(err.field(), "capacity");
/// assert_eq!(err.kind(), ConfigErrorKind::TooLarge);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    component: &'static str,
    field: &'static str,
    kind: ConfigErrorKind,
    reason: Cow<'static, str>,
}

/// What is wrong with a configuration value.
///
/// # Examples
///
/// ```
/// use flowguard::ConfigErrorKind;
/// use flowguard::pool::WorkerPool;
///
/// let err = WorkerPool::builder().max_concurrency(0).build().unwrap_err();
/// assert_eq!(err.field(), "max_concurrency");
/// assert_eq!(err.kind(), ConfigErrorKind::Zero);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The value is zero (or empty) where at least one is needed.
    Zero,
    /// The value is above the largest one supported.
    TooLarge,
    /// The value is below the smallest one supported.
    TooSmall,
    /// The value conflicts with another field (the reason names it).
    Conflict,
    /// A required field was not set.
    Missing,
}

impl ConfigError {
    /// Creates an error for `field` of `component` (e.g. `"pool"`, `"max_concurrency"`).
    pub(crate) fn new(
        component: &'static str,
        field: &'static str,
        kind: ConfigErrorKind,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            component,
            field,
            kind,
            reason: reason.into(),
        }
    }

    /// The component whose configuration was refused (`"semaphore"`, `"pool"`, …).
    pub fn component(&self) -> &'static str {
        self.component
    }

    /// The name of the offending builder field, as spelt in the builder method.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The kind of problem.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// Why the value was refused, in words.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} config: {} {}",
            self.component, self.field, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}
