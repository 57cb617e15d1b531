//! The whole [`Pipeline`] as one layer.

use std::fmt;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::attempts::{self, Runner};
use super::{BoxError, BoxResponseFuture, Refusal};
use crate::pipeline::{Pipeline, PipelineError};

/// Applies [`PipelineService`]: each request runs through `pipeline`
/// (timeout, retry, breaker, hedge, rate limit, bulkhead, attempt timeout,
/// fallback, in the pipeline's documented order), each attempt a call of
/// the inner service. The pipeline, its layers and its metrics are shared
/// by every service this layer makes and their clones.
///
/// The pipeline sees the inner service's outcomes with the error boxed
/// (`Pipeline<Response, BoxError>`), so its classifier
/// ([`failure_if`](crate::pipeline::PipelineBuilder::failure_if)) can
/// count a 5xx response as a failure, for the breaker and for retry alike.
///
/// # Requirements
///
/// As [`RetryLayer`](super::RetryLayer): the request and the inner service
/// `Clone`, everything `Send + 'static`.
///
/// # Examples
///
/// ```
/// use flowguard::breaker::{CircuitBreaker, State};
/// use flowguard::pipeline::Pipeline;
/// use flowguard::retry::{Backoff, RetryPolicy};
/// use flowguard::tower::{BoxError, PipelineLayer, Refusal};
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let breaker = CircuitBreaker::builder().consecutive_failures(3).build().unwrap();
/// let pipeline = Pipeline::<u16, BoxError>::builder()
///     .timeout(Duration::from_secs(2))
///     .retry(RetryPolicy::new().max_retries(2).backoff(Backoff::constant(Duration::from_millis(100))))
///     .breaker(breaker.clone())
///     .failure_if(|r| r.map_or(true, |status| *status >= 500))
///     .build()
///     .unwrap();
/// let svc = PipelineLayer::new(pipeline).layer(service_fn(|()| async { Ok::<u16, BoxError>(502) }));
/// // Three attempts, each a 502, each a failure: the breaker opens...
/// assert_eq!(svc.clone().oneshot(()).await.unwrap(), 502);
/// assert_eq!(breaker.state(), State::Open);
/// // ...and the next request is refused without calling the service.
/// let err = svc.oneshot(()).await.unwrap_err();
/// assert!(matches!(Refusal::find(&*err), Some(Refusal::BreakerOpen { .. })));
/// # }
/// ```
pub struct PipelineLayer<T> {
    pipeline: Pipeline<T, BoxError>,
}

impl<T> PipelineLayer<T> {
    /// A layer running every request through `pipeline`.
    pub fn new(pipeline: Pipeline<T, BoxError>) -> Self {
        Self { pipeline }
    }

    /// The pipeline (for its metrics and its breaker).
    pub fn pipeline(&self) -> &Pipeline<T, BoxError> {
        &self.pipeline
    }
}

impl<T> Clone for PipelineLayer<T> {
    fn clone(&self) -> Self {
        Self {
            pipeline: self.pipeline.clone(),
        }
    }
}

impl<T> fmt::Debug for PipelineLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineLayer")
            .field("pipeline", &self.pipeline)
            .finish()
    }
}

impl<S, T> Layer<S> for PipelineLayer<T> {
    type Service = PipelineService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        PipelineService {
            inner,
            pipeline: self.pipeline.clone(),
        }
    }
}

/// Runs each request through a [`Pipeline`], one inner call per attempt.
///
/// * **`poll_ready`** is the inner service's: the first attempt uses the
///   service it made ready; each later attempt (a retry, a hedge copy)
///   clones the inner service and waits for the clone to be ready. The
///   pipeline's own limits (rate limiter, bulkhead) are taken per attempt,
///   when the call starts, not in `poll_ready`.
/// * **The response** is the pipeline's value (a fallback's included).
///   Its errors become: the inner error, boxed, when the call ended on
///   one (retries exhausted included); [`Refusal::TimedOut`] for the total
///   or per-attempt timeout; [`Refusal::BreakerOpen`],
///   [`Refusal::RateLimited`] with their `retry_after`; and
///   [`Refusal::Overloaded`] for a full bulkhead.
///
/// # Cancel safety
///
/// As [`Pipeline::call`]: dropping the response future drops the attempt
/// in flight, its breaker permit counts as nothing, its bulkhead permit is
/// returned, and no further attempt is made.
///
/// # Examples
///
/// ```
/// use flowguard::pipeline::Pipeline;
/// use flowguard::tower::{BoxError, PipelineLayer};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pipeline = Pipeline::<&str, BoxError>::builder()
///     .fallback(|_| Ok("from cache"))
///     .build()
///     .unwrap();
/// let svc = PipelineLayer::new(pipeline)
///     .layer(service_fn(|()| async { Err::<&str, BoxError>("down".into()) }));
/// assert_eq!(svc.oneshot(()).await.unwrap(), "from cache");
/// # }
/// ```
pub struct PipelineService<S, T> {
    inner: S,
    pipeline: Pipeline<T, BoxError>,
}

impl<S, T> PipelineService<S, T> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline<T, BoxError> {
        &self.pipeline
    }
}

impl<S, T, Req> Service<Req> for PipelineService<S, T>
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
        attempts::call(&self.pipeline, &mut self.inner, req)
    }
}

impl<T: Send + 'static> Runner<T> for Pipeline<T, BoxError> {
    async fn run<F, Fut>(self, next: F) -> Result<T, BoxError>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, BoxError>> + Send,
        T: Send,
    {
        self.call(next).await.map_err(from_pipeline_error)
    }
}

/// A pipeline's error as this module's errors: the operation's own error
/// passes through, a layer's refusal becomes a [`Refusal`].
fn from_pipeline_error(e: PipelineError<BoxError>) -> BoxError {
    match e {
        PipelineError::Inner(e) | PipelineError::RetriesExhausted { last: e, .. } => e,
        PipelineError::Timeout { .. } | PipelineError::AttemptTimeout { .. } => {
            Refusal::TimedOut.into()
        }
        PipelineError::BreakerOpen { retry_after } => Refusal::BreakerOpen { retry_after }.into(),
        PipelineError::RateLimited { retry_after } => Refusal::RateLimited { retry_after }.into(),
        PipelineError::BulkheadFull | PipelineError::ConcurrencyLimited => {
            Refusal::Overloaded.into()
        }
    }
}

impl<S: Clone, T> Clone for PipelineService<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            pipeline: self.pipeline.clone(),
        }
    }
}

impl<S: fmt::Debug, T> fmt::Debug for PipelineService<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineService")
            .field("inner", &self.inner)
            .field("pipeline", &self.pipeline)
            .finish()
    }
}
