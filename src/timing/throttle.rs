//! `Throttler`: a `Debouncer` with throttle defaults.
//!
//! lodash defines `throttle(f, wait)` as `debounce(f, wait, { leading: true,
//! trailing: true, maxWait: wait })`, and so does this module: the same core,
//! the same worker, other defaults.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::time::Duration;

use super::debounce::{DebounceOptions, DebounceOptionsBuilder};
use super::handle::Debouncer;
use crate::ConfigError;

/// Throttles calls: at most one invocation per `wait` during a burst, the
/// first call at once (leading) and the latest value at the end (trailing).
///
/// A throttle is a debounce with `max_wait = wait`; with both edges on, the
/// trailing invocation happens only if more than one call came in the
/// window. It dereferences to [`Debouncer`], so `call`, `call_wait`, `flush`,
/// `cancel`, `is_pending` and `metrics` are the same, with the same rules for
/// calls that arrive while the handler runs.
///
/// # Examples
///
/// ```
/// use flowguard::timing::Throttler;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let t = Throttler::builder(Duration::from_millis(100))
///     .build_sync(|reading: u32| reading)
///     .unwrap();
/// // A 1 kHz sensor for one second.
/// for i in 0..1000 {
///     t.call(i).unwrap();
///     tokio::time::sleep(Duration::from_millis(1)).await;
/// }
/// tokio::time::sleep(Duration::from_millis(200)).await;
/// // About ten per second (lodash re-arms its timer on the call after an
/// // invocation, so each period is one call interval longer).
/// assert_eq!(t.metrics().invocations, 11);
/// # }
/// ```
pub struct Throttler<T, R = ()> {
    inner: Debouncer<T, R>,
}

/// Builds a [`Throttler`]: only the edges can be changed (`max_wait` is `wait`).
///
/// # Examples
///
/// ```
/// use flowguard::timing::Throttler;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let t = Throttler::builder(Duration::from_millis(100))
///     .leading(false)
///     .build(|v: u8| async move { v })
///     .unwrap();
/// assert!(!t.options().leading());
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ThrottlerBuilder {
    opts: DebounceOptionsBuilder,
}

impl ThrottlerBuilder {
    /// Invoke on the first call of a burst (default on).
    pub fn leading(mut self, leading: bool) -> Self {
        self.opts = self.opts.leading(leading);
        self
    }

    /// Invoke at the end of a window with the latest value (default on).
    pub fn trailing(mut self, trailing: bool) -> Self {
        self.opts = self.opts.trailing(trailing);
        self
    }

    /// Builds with an async handler and spawns its worker on the current runtime.
    ///
    /// # Errors
    ///
    /// - field `trailing`, [`ConfigErrorKind::Conflict`](crate::ConfigErrorKind::Conflict):
    ///   both edges are off.
    /// - field `runtime`, [`ConfigErrorKind::Missing`](crate::ConfigErrorKind::Missing):
    ///   not called inside a Tokio runtime.
    ///
    /// # Panics
    ///
    /// Never.
    pub fn build<T, R, F, Fut>(self, handler: F) -> Result<Throttler<T, R>, ConfigError>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: FnMut(T) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        let opts = self.opts.build()?;
        Ok(Throttler {
            inner: Debouncer::spawn(opts, handler)?,
        })
    }

    /// Builds with a synchronous handler.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    ///
    /// # Panics
    ///
    /// Never.
    pub fn build_sync<T, R, F>(self, mut handler: F) -> Result<Throttler<T, R>, ConfigError>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: FnMut(T) -> R + Send + 'static,
    {
        self.build(move |v| std::future::ready(handler(v)))
    }
}

impl Throttler<(), ()> {
    /// A builder with throttle defaults (leading and trailing, `max_wait = wait`).
    pub fn builder(wait: Duration) -> ThrottlerBuilder {
        ThrottlerBuilder {
            opts: DebounceOptions::throttle_builder(wait),
        }
    }
}

impl<T, R> Throttler<T, R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    /// Names the throttler: with the `metrics` feature its counters are
    /// published under it (`flowguard_throttle_*`, see
    /// `flowguard::metrics`); without the feature the name is not used.
    /// Chain it on `build`; naming one twice publishes it twice.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::timing::Throttler;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let t = Throttler::builder(Duration::from_millis(100))
    ///     .build_sync(|v: u8| v)
    ///     .unwrap()
    ///     .name("scroll");
    /// t.call(1).unwrap();
    /// assert_eq!(t.metrics().calls, 1);
    /// # }
    /// ```
    pub fn name(self, name: impl Into<String>) -> Self {
        self.inner.export("throttle", name.into());
        self
    }
}

impl<T, R> Deref for Throttler<T, R> {
    type Target = Debouncer<T, R>;

    fn deref(&self) -> &Debouncer<T, R> {
        &self.inner
    }
}

impl<T, R> Clone for Throttler<T, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T, R> fmt::Debug for Throttler<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Throttler").field(&self.inner).finish()
    }
}
