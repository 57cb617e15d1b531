//! Retry with backoff, jitter, a deadline and a budget, as a layer.

use std::fmt;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::attempts::{self, Runner};
use super::{BoxError, BoxResponseFuture, Refusal};
use crate::ConfigError;
use crate::retry::{Retry, RetryError, RetryPolicy};

/// Applies [`RetryService`]: each request goes through `retry` (a
/// [`Retry`] from the retry module: its policy, budget, classifier,
/// `retry_after` hook, deadline and metrics, shared by every service this
/// layer makes and their clones).
///
/// The retry sees the inner service's outcome with the error boxed
/// (`Retry<Response, BoxError>`), so its classifier can retry a 503 *value*
/// as well as an error.
///
/// # Requirements
///
/// The request must be `Clone` (each attempt sends a clone) and the inner
/// service `Clone` (each attempt after the first uses a clone, made ready
/// first); both, and the response and the inner future, must be `Send +
/// 'static` (the response future is boxed). An HTTP request is `Clone`
/// when its body is: `http_body_util::Full<Bytes>` is, a streaming body is not.
///
/// # Examples
///
/// ```
/// use flowguard::retry::{Backoff, RetryPolicy};
/// use flowguard::tower::RetryLayer;
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let layer = RetryLayer::from_policy(
///     RetryPolicy::new().max_retries(3).backoff(Backoff::constant(Duration::from_millis(10))),
/// )
/// .unwrap();
/// let calls = Arc::new(AtomicU32::new(0));
/// let c = calls.clone();
/// let svc = layer.layer(service_fn(move |n: u32| {
///     let attempt = c.fetch_add(1, Ordering::SeqCst) + 1;
///     async move { if attempt < 3 { Err("busy".into()) } else { Ok::<_, flowguard::tower::BoxError>(n) } }
/// }));
/// assert_eq!(svc.oneshot(5).await.unwrap(), 5);
/// assert_eq!(calls.load(Ordering::SeqCst), 3);
/// assert_eq!(layer.retry().metrics().retries, 2);
/// # }
/// ```
pub struct RetryLayer<T> {
    retry: Retry<T, BoxError>,
}

impl<T> RetryLayer<T> {
    /// A layer sending every request through `retry`.
    pub fn new(retry: Retry<T, BoxError>) -> Self {
        Self { retry }
    }

    /// A layer retrying every error by `policy` (no value is retried).
    ///
    /// # Errors
    ///
    /// As [`RetryBuilder::build`](crate::retry::RetryBuilder::build).
    pub fn from_policy(policy: RetryPolicy) -> Result<Self, ConfigError> {
        Retry::builder().policy(policy).build().map(Self::new)
    }

    /// The retry (for its metrics and budget).
    pub fn retry(&self) -> &Retry<T, BoxError> {
        &self.retry
    }
}

impl<T> Clone for RetryLayer<T> {
    fn clone(&self) -> Self {
        Self {
            retry: self.retry.clone(),
        }
    }
}

impl<T> fmt::Debug for RetryLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("retry", &self.retry)
            .finish()
    }
}

impl<S, T> Layer<S> for RetryLayer<T> {
    type Service = RetryService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            retry: self.retry.clone(),
        }
    }
}

/// Sends a request again while the retry's classifier says so.
///
/// * **`poll_ready`** is the inner service's: the first attempt uses the
///   service it made ready; each retry clones the inner service and waits
///   for the clone to be ready (that wait counts against the retry's
///   deadline).
/// * **The response** is the first outcome the classifier accepts, or the
///   last one when retries run out (a value comes back as `Ok`, an error as
///   the inner service's own error, boxed); when the retry's deadline ends
///   the call, [`Refusal::TimedOut`].
///
/// # Cancel safety
///
/// Dropping the response future drops the attempt in flight or the sleep
/// before the next, and makes no further attempt. A budget withdrawal for
/// a retry already started is not refunded.
///
/// # Examples
///
/// ```
/// use flowguard::retry::{Backoff, Retry};
/// use flowguard::tower::{BoxError, RetryLayer};
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // Retry a 503 response, not only errors.
/// let retry = Retry::<u16, BoxError>::builder()
///     .max_retries(2)
///     .backoff(Backoff::constant(Duration::from_millis(5)))
///     .retry_if(|r| matches!(r, Ok(503) | Err(_)))
///     .build()
///     .unwrap();
/// let svc = RetryLayer::new(retry).layer(service_fn(|()| async { Ok::<u16, BoxError>(503) }));
/// assert_eq!(svc.oneshot(()).await.unwrap(), 503); // 3 attempts, then the last answer
/// # }
/// ```
pub struct RetryService<S, T> {
    inner: S,
    retry: Retry<T, BoxError>,
}

impl<S, T> RetryService<S, T> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, T, Req> Service<Req> for RetryService<S, T>
where
    S: Service<Req, Response = T> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    Req: Clone + Send + 'static,
    T: Send + 'static,
{
    type Response = T;
    type Error = BoxError;
    type Future = BoxResponseFuture<T>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        attempts::call(&self.retry, &mut self.inner, req)
    }
}

impl<T: Send + 'static> Runner<T> for Retry<T, BoxError> {
    async fn run<F, Fut>(self, next: F) -> Result<T, BoxError>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, BoxError>> + Send,
        T: Send,
    {
        self.call(next).await.map_err(|e| match e {
            RetryError::Exhausted { error, .. }
            | RetryError::NotRetryable { error, .. }
            | RetryError::BudgetExhausted { error, .. } => error,
            RetryError::Deadline { .. } => Refusal::TimedOut.into(),
        })
    }
}

impl<S: Clone, T> Clone for RetryService<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            retry: self.retry.clone(),
        }
    }
}

impl<S: fmt::Debug, T> fmt::Debug for RetryService<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryService")
            .field("inner", &self.inner)
            .field("retry", &self.retry)
            .finish()
    }
}
