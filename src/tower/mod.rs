//! Every primitive as a tower [`Layer`](tower_layer::Layer), for axum,
//! tonic, hyper and anything else built on `tower::Service` (feature
//! `tower`).
//!
//! | layer | primitive | decides in | refuses with | HTTP |
//! |---|---|---|---|---|
//! | [`ConcurrencyLimitLayer`] | [`Semaphore`](crate::semaphore::Semaphore) | `poll_ready` (waits, FIFO) | — (backpressure) | — |
//! | [`LoadShedLayer`] | [`Semaphore`](crate::semaphore::Semaphore) | `poll_ready` (never waits) | [`Refusal::Overloaded`] | 503 + `Retry-After: 1` |
//! | [`RateLimitLayer`] | [`RateLimiter`](crate::rate::RateLimiter) | `poll_ready` (shed, or wait FIFO) | [`Refusal::RateLimited`] | 429 + `Retry-After` |
//! | [`PerServiceRateLimitLayer`] | a GCRA bucket per service value (tower's `RateLimit` policy) | `poll_ready` (shed, or wait) | shed: [`Refusal::RateLimited`]; wait: — (backpressure) | 429 + `Retry-After` |
//! | [`KeyedRateLimitLayer`] | [`KeyedRateLimiter`](crate::rate::KeyedRateLimiter) | `call` (needs the key) | [`Refusal::RateLimited`] | 429 + `Retry-After` |
//! | [`BreakerLayer`] | [`CircuitBreaker`](crate::breaker::CircuitBreaker) | `call` (times the call) | [`Refusal::BreakerOpen`] | 503 + `Retry-After` |
//! | [`TimeoutLayer`], [`DeadlineLayer`] | Tokio's timer | response future | [`Refusal::TimedOut`] | 504 |
//! | [`RetryLayer`] | [`Retry`](crate::retry::Retry) (policy, budget) | response future | the last error; [`Refusal::TimedOut`] at its deadline | — |
//! | [`HedgeLayer`] | [`HedgePolicy`](crate::fanout::HedgePolicy) | response future | the first copy's error | — |
//! | [`PipelineLayer`] | [`Pipeline`](crate::pipeline::Pipeline) | response future | its layers' refusals | as above |
//!
//! # `poll_ready` and `call`
//!
//! * **Backpressure propagates.** A layer that waits (a concurrency limit,
//!   a waiting rate limit) is not ready while it waits, and every layer is
//!   not ready while the service below is not. Layers that refuse are
//!   ready at once and answer the refusal from `call`, never from
//!   `poll_ready` (an error there means "this service is broken" to tower's
//!   `Buffer` and balancers).
//! * **Capacity taken in `poll_ready` belongs to that service value**
//!   until `call` moves it into the response future, which gives it back
//!   when it completes or is dropped. A service made ready and then dropped
//!   without `call` gives it back at once (a permit to its semaphore, a
//!   token to its bucket); nothing is held across `poll_ready` → drop.
//! * **Clones share every limit** (the semaphore, the bucket, the breaker,
//!   the budget) and start with nothing reserved. A layer value shares its
//!   primitive with every service it makes, so the same layer on several
//!   axum routes is one global limit. (tower's `ConcurrencyLimitLayer`
//!   makes a new semaphore per `layer` call; here that takes a new layer.)
//!   The one exception is asked for by name: [`PerServiceRateLimitLayer`]
//!   gives every service value and every clone a bucket of its own.
//! * **`call` without a successful `poll_ready`** returns [`NotReady`]
//!   instead of panicking as tower's services do, and does not call the
//!   service below. The one service without an error of its own, the
//!   waiting [`PerServiceRateLimit`], charges such a call its token (a
//!   debt its next `poll_ready`s wait out) and passes it on.
//!
//! # Errors
//!
//! Every service here but one has `Error = `[`BoxError`] (tower's
//! convention, so layers stack without nested error types), with the
//! inner service's error boxed as it was and a layer's own answer as a
//! [`Refusal`]. The exception, [`PerServiceRateLimitLayer::wait`], never
//! refuses, and so keeps the inner service's error and future types, as
//! tower's `RateLimit` does. Turn
//! an error into an HTTP response with [`error_response`] (429, 503 or 504
//! with `Retry-After` for a refusal, 500 otherwise), or put
//! `HandleErrorLayer::new(flowguard::tower::handle_error)` on top of the
//! stack in axum, whose routes may not fail. `http::Response<String>` is an
//! axum `IntoResponse`, so no axum-specific code is needed.
//!
//! # Order
//!
//! For a server, outermost first: the error handler, a [`LoadShedLayer`]
//! or [`ConcurrencyLimitLayer`] (global capacity), the
//! [`KeyedRateLimitLayer`] (per client), a [`TimeoutLayer`], the handler.
//! For a client call to another system, a [`PipelineLayer`] holds the
//! right order for timeout, retry, breaker, hedge and limits in one place
//! (see the [pipeline module](crate::pipeline)).
//!
//! # Examples
//!
//! ```
//! use flowguard::rate::{KeyedRateLimiter, Quota};
//! use flowguard::tower::{ConcurrencyLimitLayer, KeyedRateLimitLayer, TimeoutLayer, error_response};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // The request is (client, path); the response a status code.
//! let svc = ServiceBuilder::new()
//!     .layer(ConcurrencyLimitLayer::new(64).unwrap())
//!     .layer(KeyedRateLimitLayer::new(
//!         KeyedRateLimiter::new(Quota::per_minute(2).unwrap()),
//!         |req: &(&'static str, &'static str)| req.0,
//!     ))
//!     .layer(TimeoutLayer::new(Duration::from_secs(10)).unwrap())
//!     .service(service_fn(|_req: (&str, &str)| async { Ok::<u16, std::io::Error>(200) }));
//!
//! let mut statuses = Vec::new();
//! for _ in 0..3 {
//!     let status = match svc.clone().oneshot(("alice", "/")).await {
//!         Ok(status) => status,
//!         Err(e) => error_response::<String>(&*e).status().as_u16(),
//!     };
//!     statuses.push(status);
//! }
//! assert_eq!(statuses, [200, 200, 429]);
//! # }
//! ```

mod attempts;
mod breaker;
mod concurrency;
mod error;
mod future;
mod hedge;
mod http;
mod keyed;
mod load_shed;
mod pipeline;
mod rate;
mod rate_per_service;
mod retry;
mod timeout;

use std::future::Future;
use std::pin::Pin;

pub use self::breaker::{BreakerFuture, BreakerLayer, BreakerService};
pub use self::concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer};
pub use self::error::{NotReady, Refusal};
pub use self::future::ResponseFuture;
pub use self::hedge::{HedgeLayer, HedgeService};
pub use self::http::{
    DEFAULT_RETRY_AFTER, ServerErrors, error_response, handle_error, parse_retry_after,
};
pub use self::keyed::{KeyedRateLimit, KeyedRateLimitLayer};
pub use self::load_shed::{LoadShed, LoadShedLayer};
pub use self::pipeline::{PipelineLayer, PipelineService};
pub use self::rate::{RateLimit, RateLimitLayer};
pub use self::rate_per_service::{
    PerServiceAdmission, PerServiceRateLimit, PerServiceRateLimitLayer, Shedding, Waiting,
};
pub use self::retry::{RetryLayer, RetryService};
pub use self::timeout::{Deadline, DeadlineLayer, Timeout, TimeoutFuture, TimeoutLayer};
use crate::breaker::Outcome;

/// The error type of every service in this module (tower's own
/// convention): the inner service's error boxed as it was, or a
/// [`Refusal`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response future of the layers that run several attempts (retry,
/// hedge, pipeline): boxed, as their attempts are futures of their own.
pub type BoxResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// Decides how one outcome of a service counts on a circuit breaker.
///
/// Implemented by every `Fn(Result<&T, &E>) -> Outcome`, by [`AnyError`]
/// (the default: every `Err` a failure) and by [`ServerErrors`] (an error
/// or a 5xx response a failure).
///
/// # Examples
///
/// ```
/// use flowguard::breaker::Outcome;
/// use flowguard::tower::{AnyError, Classify};
///
/// assert_eq!(AnyError.classify(Ok::<_, &()>(&"fine")), Outcome::Success);
/// // A closure: "not found" is the caller's fault, not the backend's.
/// let classify = |r: Result<&u16, &()>| match r {
///     Ok(404) => Outcome::Ignored,
///     Ok(s) if *s < 500 => Outcome::Success,
///     _ => Outcome::Failure,
/// };
/// assert_eq!(classify.classify(Ok(&404)), Outcome::Ignored);
/// ```
pub trait Classify<T, E> {
    /// How `outcome` counts.
    fn classify(&self, outcome: Result<&T, &E>) -> Outcome;
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(Result<&T, &E>) -> Outcome,
{
    fn classify(&self, outcome: Result<&T, &E>) -> Outcome {
        self(outcome)
    }
}

/// The default classifier: every `Err` is a failure, every `Ok` a success.
///
/// # Examples
///
/// ```
/// use flowguard::breaker::Outcome;
/// use flowguard::tower::{AnyError, Classify};
///
/// assert_eq!(AnyError.classify(Err::<&(), _>(&"down")), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnyError;

impl<T, E> Classify<T, E> for AnyError {
    fn classify(&self, outcome: Result<&T, &E>) -> Outcome {
        match outcome {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}
