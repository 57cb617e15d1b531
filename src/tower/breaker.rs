//! A circuit breaker around a service, with a classifier of its outcomes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{AnyError, BoxError, Classify, Refusal};
use crate::breaker::{CircuitBreaker, Outcome, OwnedCallPermit};
use crate::clock::{Clock, FastClock};

/// Applies [`BreakerService`]: every call asks `breaker` first, and its
/// outcome, as the classifier judges it, is recorded on the breaker. The
/// breaker is shared by every service this layer makes, their clones, and
/// anyone else holding it (clone it before giving it, to watch its state).
///
/// The default classifier, [`AnyError`], counts every `Err` as a failure;
/// for HTTP, [`ServerErrors`](super::ServerErrors) also counts a 5xx
/// response; any `Fn(Result<&Response, &Error>) -> Outcome` will do.
///
/// # Examples
///
/// ```
/// use flowguard::breaker::{CircuitBreaker, Outcome, State};
/// use flowguard::tower::{BreakerLayer, Refusal};
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let breaker = CircuitBreaker::builder()
///     .consecutive_failures(2)
///     .open_wait(Duration::from_secs(30))
///     .build()
///     .unwrap();
/// // A response of 500 or more is a failure, even though it is an `Ok`.
/// let layer = BreakerLayer::new(breaker.clone()).classify(|r: Result<&u16, &std::io::Error>| match r {
///     Ok(status) if *status < 500 => Outcome::Success,
///     _ => Outcome::Failure,
/// });
/// let svc = layer.layer(service_fn(|()| async { Ok::<u16, std::io::Error>(503) }));
/// assert_eq!(svc.clone().oneshot(()).await.unwrap(), 503);
/// assert_eq!(svc.clone().oneshot(()).await.unwrap(), 503);
/// assert_eq!(breaker.state(), State::Open);
/// let err = svc.oneshot(()).await.unwrap_err();
/// assert_eq!(
///     Refusal::find(&*err),
///     Some(&Refusal::BreakerOpen { retry_after: Some(Duration::from_secs(30)) })
/// );
/// # }
/// ```
pub struct BreakerLayer<K = AnyError, C: Clock = FastClock> {
    breaker: CircuitBreaker<C>,
    classify: K,
}

impl<C: Clock> BreakerLayer<AnyError, C> {
    /// A layer on `breaker` counting every `Err` as a failure.
    pub fn new(breaker: CircuitBreaker<C>) -> Self {
        Self {
            breaker,
            classify: AnyError,
        }
    }
}

impl<K, C: Clock> BreakerLayer<K, C> {
    /// Judges outcomes with `classify` instead: a closure
    /// `Fn(Result<&Response, &Error>) -> Outcome` or a [`Classify`] type.
    pub fn classify<K2>(self, classify: K2) -> BreakerLayer<K2, C> {
        BreakerLayer {
            breaker: self.breaker,
            classify,
        }
    }

    /// The breaker (for its state and metrics).
    pub fn breaker(&self) -> &CircuitBreaker<C> {
        &self.breaker
    }
}

impl<K: Clone, C: Clock> Clone for BreakerLayer<K, C> {
    fn clone(&self) -> Self {
        Self {
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<K, C: Clock> fmt::Debug for BreakerLayer<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerLayer")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S, K: Clone, C: Clock> Layer<S> for BreakerLayer<K, C> {
    type Service = BreakerService<S, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// Asks the breaker in `call`, and records the outcome when the response
/// future completes.
///
/// * **`poll_ready`** is the inner service's (an open breaker does not
///   make the service unready: refusing at once is the breaker's point).
/// * **`call`** takes a breaker permit: refused (open, forced open, or
///   half-open with every probe slot taken), it answers
///   [`Refusal::BreakerOpen`] with the time left of the open wait, without
///   calling the inner service (whatever that service's `poll_ready`
///   reserved stays with it until its next call or its drop, as for
///   [`KeyedRateLimit`](super::KeyedRateLimit)); admitted, it calls it. The permit is taken
///   here, not in `poll_ready`, so that an idle ready service holds no
///   half-open probe slot and a slow call is timed from its start.
/// * **The response future** classifies the result and records it on the
///   permit; the result itself passes through unchanged (a 5xx counted as a
///   failure is still returned as the response).
///
/// # Cancel safety
///
/// Dropping the response future before it completes records nothing (the
/// permit counts as ignored) and gives back a half-open probe slot.
///
/// # Examples
///
/// ```
/// use flowguard::breaker::CircuitBreaker;
/// use flowguard::tower::BreakerLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let breaker = CircuitBreaker::new();
/// let svc = BreakerLayer::new(breaker.clone())
///     .layer(service_fn(|()| async { Err::<(), _>(std::io::Error::other("down")) }));
/// assert!(svc.oneshot(()).await.is_err());
/// assert_eq!(breaker.metrics().failed_calls, 1);
/// # }
/// ```
pub struct BreakerService<S, K = AnyError, C: Clock = FastClock> {
    inner: S,
    breaker: CircuitBreaker<C>,
    classify: K,
}

impl<S, K, C: Clock> BreakerService<S, K, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker<C> {
        &self.breaker
    }
}

impl<S, K, C, Req> Service<Req> for BreakerService<S, K, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Classify<S::Response, S::Error> + Clone,
    C: Clock,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BreakerFuture<S::Future, K, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let kind = match self.breaker.try_acquire_owned() {
            Ok(permit) => Kind::Running {
                fut: self.inner.call(req),
                permit: Some(permit),
                classify: self.classify.clone(),
            },
            Err(rejected) => Kind::Refused {
                refusal: Some(Refusal::BreakerOpen {
                    retry_after: rejected.retry_after(),
                }),
            },
        };
        BreakerFuture { kind }
    }
}

pin_project! {
    /// The response future of [`BreakerService`].
    ///
    /// # Cancel safety
    ///
    /// Dropping it before it completes records nothing on the breaker and
    /// gives back a half-open probe slot.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::breaker::CircuitBreaker;
    /// use flowguard::tower::BreakerLayer;
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let breaker = CircuitBreaker::new();
    /// let mut svc = BreakerLayer::new(breaker.clone())
    ///     .layer(service_fn(|()| async { Ok::<_, std::io::Error>(()) }));
    /// let fut = svc.ready().await.unwrap().call(());
    /// drop(fut); // cancelled: counts as nothing
    /// assert_eq!(breaker.metrics().calls, 0);
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct BreakerFuture<F, K, C: Clock> {
        #[pin]
        kind: Kind<F, K, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, K, C: Clock> {
        Running {
            #[pin]
            fut: F,
            permit: Option<OwnedCallPermit<C>>,
            classify: K,
        },
        Refused {
            refusal: Option<Refusal>,
        },
    }
}

impl<F, K, C, T, E> Future for BreakerFuture<F, K, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    K: Classify<T, E>,
    C: Clock,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Running {
                fut,
                permit,
                classify,
            } => {
                let out = std::task::ready!(fut.poll(cx));
                if let Some(p) = permit.take() {
                    match classify.classify(out.as_ref()) {
                        Outcome::Success => p.success(),
                        Outcome::Failure => p.failure(),
                        Outcome::Ignored => p.ignore(),
                    }
                }
                Poll::Ready(out.map_err(Into::into))
            }
            KindProj::Refused { refusal } => match refusal.take() {
                Some(r) => Poll::Ready(Err(r.into())),
                None => Poll::Pending,
            },
        }
    }
}

impl<F, K, C: Clock> fmt::Debug for BreakerFuture<F, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let running = matches!(self.kind, Kind::Running { .. });
        f.debug_struct("BreakerFuture")
            .field("running", &running)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, K: Clone, C: Clock> Clone for BreakerService<S, K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S: fmt::Debug, K, C: Clock> fmt::Debug for BreakerService<S, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerService")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}
