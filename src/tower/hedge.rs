//! Hedged requests as a layer: a slow request is sent again, first success wins.

use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::attempts::{self, Runner};
use super::{BoxError, BoxResponseFuture};
use crate::fanout::{HedgePolicy, hedge};

/// Applies [`HedgeService`]: a request still unanswered after the
/// policy's delay is sent again (up to its `max_hedges` extra copies); the
/// first `Ok` wins and the other copies are dropped. The policy, and the
/// latencies it learns, are shared by every service this layer makes and
/// their clones.
///
/// Hedge only idempotent requests: every copy reaches the inner service.
/// An `Ok` wins, whatever it holds (an HTTP 503 included); put a retry
/// around the hedge to act on values.
///
/// # Requirements
///
/// As [`RetryLayer`](super::RetryLayer): the request and the inner service
/// `Clone`, everything `Send + 'static`.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::HedgePolicy;
/// use flowguard::tower::HedgeLayer;
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use tokio::time::{Instant, sleep};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let policy = HedgePolicy::builder().fixed_delay(Duration::from_millis(50)).build().unwrap();
/// let sent = Arc::new(AtomicU32::new(0));
/// let s = sent.clone();
/// let svc = HedgeLayer::new(policy.clone()).layer(service_fn(move |()| {
///     // The first copy is stuck for a second; the second answers in 10 ms.
///     let ms = if s.fetch_add(1, Ordering::SeqCst) == 0 { 1000 } else { 10 };
///     async move {
///         sleep(Duration::from_millis(ms)).await;
///         Ok::<_, std::io::Error>(ms)
///     }
/// }));
/// let start = Instant::now();
/// assert_eq!(svc.oneshot(()).await.unwrap(), 10);
/// assert_eq!(start.elapsed(), Duration::from_millis(60));
/// assert_eq!(policy.metrics().hedge_wins, 1);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HedgeLayer {
    policy: HedgePolicy,
}

impl HedgeLayer {
    /// A layer hedging by `policy`.
    pub fn new(policy: HedgePolicy) -> Self {
        Self { policy }
    }

    /// The policy (for its metrics).
    pub fn policy(&self) -> &HedgePolicy {
        &self.policy
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = HedgeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HedgeService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// Sends a copy of a slow request and answers with the first success.
///
/// * **`poll_ready`** is the inner service's: the first copy uses the
///   service it made ready; each hedge clones the inner service and waits
///   for the clone to be ready (the hedge delay counts from the first
///   copy's start, not from that wait).
/// * **The response** is the first `Ok`; when every copy failed, the first
///   copy's error.
///
/// # Cancel safety
///
/// Dropping the response future drops every copy in flight.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::HedgePolicy;
/// use flowguard::tower::HedgeLayer;
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let policy = HedgePolicy::builder().fixed_delay(Duration::from_millis(5)).build().unwrap();
/// let svc = HedgeLayer::new(policy).layer(service_fn(|()| async { Err::<(), _>(std::io::Error::other("down")) }));
/// assert_eq!(svc.oneshot(()).await.unwrap_err().to_string(), "down");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HedgeService<S> {
    inner: S,
    policy: HedgePolicy,
}

impl<S> HedgeService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req> Service<Req> for HedgeService<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    Req: Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        attempts::call(&self.policy, &mut self.inner, req)
    }
}

impl<T: Send + 'static> Runner<T> for HedgePolicy {
    async fn run<F, Fut>(self, next: F) -> Result<T, BoxError>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, BoxError>> + Send,
        T: Send,
    {
        hedge(next, &self)
            .await
            .map(|won| won.value)
            .map_err(|e| e.into_inner())
    }
}

impl<S> HedgeService<S> {
    /// The policy.
    pub fn policy(&self) -> &HedgePolicy {
        &self.policy
    }
}
