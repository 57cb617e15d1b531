//! What the layers answer instead of calling the service below.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// A layer's answer in place of the inner service's: the request was not
/// admitted, or not answered in time. Every layer of this module returns
/// refusals as this type, boxed in a [`BoxError`](super::BoxError); find one again with
/// [`Refusal::find`], and turn it into an HTTP response with
/// [`to_response`](Refusal::to_response) (429, 503 or 504, with
/// `Retry-After` where the layer knows when to come back).
///
/// "Not yet, come back after this long" carries its `retry_after`; a
/// refusal that can never turn into an admission (a closed semaphore, a
/// rate-limit request larger than the burst) says so by having none.
///
/// # Examples
///
/// ```
/// use flowguard::tower::{BoxError, Refusal};
/// use std::time::Duration;
///
/// let err: BoxError = Refusal::RateLimited { retry_after: Some(Duration::from_millis(1500)) }.into();
/// let refusal = Refusal::find(&*err).unwrap();
/// assert_eq!(refusal.status(), http::StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(refusal.retry_after(), Some(Duration::from_millis(1500)));
/// assert_eq!(refusal.layer(), "rate_limit");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// A rate limiter had no token ([`RateLimitLayer`](super::RateLimitLayer),
    /// [`KeyedRateLimitLayer`](super::KeyedRateLimitLayer), a pipeline's limiter).
    RateLimited {
        /// How long until a token is there; `None` when no request of this
        /// size ever fits the burst.
        retry_after: Option<Duration>,
    },
    /// No capacity: [`LoadShedLayer`](super::LoadShedLayer) found no free
    /// permit or an unready service below, a
    /// [`ConcurrencyLimitLayer`](super::ConcurrencyLimitLayer)'s semaphore
    /// was resized to 0, or a pipeline's bulkhead was full.
    Overloaded,
    /// A circuit breaker refused the call ([`BreakerLayer`](super::BreakerLayer)
    /// or a pipeline's breaker).
    BreakerOpen {
        /// How long until the open wait ends; `None` when half-open with
        /// every probe slot taken, or forced open.
        retry_after: Option<Duration>,
    },
    /// A timeout or deadline passed before the response
    /// ([`TimeoutLayer`](super::TimeoutLayer), [`DeadlineLayer`](super::DeadlineLayer),
    /// a retry deadline, a pipeline's timeouts).
    TimedOut,
    /// The semaphore behind a concurrency limit or load shedder was closed:
    /// nothing will be admitted again.
    Closed,
}

impl Refusal {
    /// How long until a request could be admitted, when the layer knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::BreakerOpen { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The layer that refused: `"rate_limit"`, `"load_shed"`, `"breaker"`,
    /// `"timeout"` or `"concurrency_limit"` (closed).
    pub fn layer(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limit",
            Self::Overloaded => "load_shed",
            Self::BreakerOpen { .. } => "breaker",
            Self::TimedOut => "timeout",
            Self::Closed => "concurrency_limit",
        }
    }

    /// The first `Refusal` in `err` or its chain of
    /// [`source`](Error::source)s, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::tower::{BoxError, Refusal};
    ///
    /// let err: BoxError = Refusal::TimedOut.into();
    /// assert_eq!(Refusal::find(&*err), Some(&Refusal::TimedOut));
    /// let other: BoxError = "something else".into();
    /// assert_eq!(Refusal::find(&*other), None);
    /// ```
    pub fn find<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a Refusal> {
        let mut cur: Option<&'a (dyn Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(r) = e.downcast_ref::<Refusal>() {
                return Some(r);
            }
            cur = e.source();
        }
        None
    }

    fn what(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate limited",
            Self::Overloaded => "overloaded",
            Self::BreakerOpen { .. } => "circuit breaker open",
            Self::TimedOut => "timed out",
            Self::Closed => "closed",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what())?;
        if let Some(r) = self.retry_after() {
            write!(f, "; retry after {r:?}")?;
        }
        Ok(())
    }
}

impl Error for Refusal {}

/// `call` came without a successful `poll_ready` first (a breach of the
/// `Service` contract). Tower's own services panic here; these return this
/// error instead, and do not call the service below. It maps to a 500.
///
/// A service of a shared layer ([`ConcurrencyLimit`](super::ConcurrencyLimit),
/// [`RateLimit`](super::RateLimit)) that was waiting in `poll_ready` leaves
/// the line when called: kept there, a service its owner no longer polls
/// would hold up every service behind it (the head of the line is served
/// first), so the misuse costs only the misused service its place.
/// A shedding [`PerServiceRateLimit`](super::PerServiceRateLimit) answers
/// this too; a waiting one, which keeps the inner service's error type,
/// instead charges the call its token and passes it on (see its docs).
///
/// # Examples
///
/// ```
/// use flowguard::tower::{BoxError, NotReady};
///
/// let err: BoxError = NotReady.into();
/// assert!(err.is::<NotReady>());
/// assert_eq!(err.to_string(), "service called before poll_ready returned ready");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NotReady;

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("service called before poll_ready returned ready")
    }
}

impl Error for NotReady {}
