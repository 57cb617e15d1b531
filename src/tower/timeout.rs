//! A time limit on each response: a fixed timeout, or a deadline per request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use super::{BoxError, Refusal};
use crate::{ConfigError, ConfigErrorKind};

/// Applies [`Timeout`]: each response must come within `timeout` of its
/// `call`, or the call ends with [`Refusal::TimedOut`] (a 504).
///
/// # Examples
///
/// ```
/// use flowguard::tower::{Refusal, TimeoutLayer};
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let layer = TimeoutLayer::new(Duration::from_millis(100)).unwrap();
/// let slow = layer.layer(service_fn(|()| async {
///     tokio::time::sleep(Duration::from_secs(1)).await;
///     Ok::<_, std::io::Error>(())
/// }));
/// let err = slow.oneshot(()).await.unwrap_err();
/// assert_eq!(Refusal::find(&*err), Some(&Refusal::TimedOut));
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// Each response within `timeout` of its call.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `timeout` when it is zero (no call could
    /// ever answer).
    pub fn new(timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::new(
                "timeout layer",
                "timeout",
                ConfigErrorKind::Zero,
                "must be positive (no call could ever answer)",
            ));
        }
        Ok(Self { timeout })
    }

    /// The time limit.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// Ends a call that has not answered within the timeout, counted from
/// `call` (the wait in `poll_ready` is not counted, as in tower's
/// `Timeout`: bound that with a deadline above, or shed instead).
///
/// `poll_ready` is the inner service's. The inner future is dropped when
/// the time is up.
///
/// # Panics
///
/// Polling the response future needs a Tokio runtime with time enabled
/// once the inner future is pending (it then starts a timer); a response
/// ready at its first poll needs none.
///
/// # Cancel safety
///
/// Dropping the response future drops the inner future and the timer.
///
/// # Examples
///
/// ```
/// use flowguard::tower::TimeoutLayer;
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let svc = TimeoutLayer::new(Duration::from_secs(1)).unwrap()
///     .layer(service_fn(|n: u8| async move { Ok::<_, std::io::Error>(n) }));
/// assert_eq!(svc.oneshot(7).await.unwrap(), 7);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Timeout<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        TimeoutFuture::new(
            self.inner.call(req),
            Instant::now().checked_add(self.timeout),
        )
    }
}

/// Applies [`Deadline`]: each request says when its answer is due,
/// through `deadline_of` (a deadline header, a gRPC timeout, a value the
/// request carries); `None` means no limit.
///
/// # Examples
///
/// ```
/// use flowguard::tower::{DeadlineLayer, Refusal};
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // The request is how many milliseconds the caller will wait.
/// let layer = DeadlineLayer::new(|ms: &u64| Some(Instant::now() + Duration::from_millis(*ms)));
/// let svc = layer.layer(service_fn(|_ms: u64| async {
///     tokio::time::sleep(Duration::from_millis(50)).await;
///     Ok::<_, std::io::Error>("done")
/// }));
/// assert_eq!(svc.clone().oneshot(80).await.unwrap(), "done");
/// let err = svc.oneshot(20).await.unwrap_err();
/// assert_eq!(Refusal::find(&*err), Some(&Refusal::TimedOut));
/// # }
/// ```
#[derive(Clone)]
pub struct DeadlineLayer<F> {
    deadline_of: F,
}

impl<F> DeadlineLayer<F> {
    /// Reads each request's deadline with `deadline_of`.
    pub fn new<Req>(deadline_of: F) -> Self
    where
        F: Fn(&Req) -> Option<Instant>,
    {
        Self { deadline_of }
    }
}

impl<F> fmt::Debug for DeadlineLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineLayer").finish_non_exhaustive()
    }
}

impl<S, F: Clone> Layer<S> for DeadlineLayer<F> {
    type Service = Deadline<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            deadline_of: self.deadline_of.clone(),
        }
    }
}

/// Ends a call still running at its request's deadline, with
/// [`Refusal::TimedOut`]; a deadline already past ends it at the first
/// poll of the response future (the inner service was called: it saw the
/// request, and may act on it before the future is dropped).
///
/// `poll_ready` is the inner service's.
///
/// # Panics
///
/// Polling the response future needs a Tokio runtime with time enabled
/// once the inner future is pending (it then starts a timer); a response
/// ready at its first poll needs none.
///
/// # Cancel safety
///
/// Dropping the response future drops the inner future and the timer.
///
/// # Examples
///
/// ```
/// use flowguard::tower::DeadlineLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = DeadlineLayer::new(|_: &()| None) // no deadline: no limit
///     .layer(service_fn(|()| async { Ok::<_, std::io::Error>(1) }));
/// assert_eq!(svc.oneshot(()).await.unwrap(), 1);
/// # }
/// ```
#[derive(Clone)]
pub struct Deadline<S, F> {
    inner: S,
    deadline_of: F,
}

impl<S, F> Deadline<S, F> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: fmt::Debug, F> fmt::Debug for Deadline<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadline")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, F, Req> Service<Req> for Deadline<S, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: Fn(&Req) -> Option<Instant>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let deadline = (self.deadline_of)(&req);
        TimeoutFuture::new(self.inner.call(req), deadline)
    }
}

pin_project! {
    /// The response future of [`Timeout`] and [`Deadline`].
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the inner future and the timer.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::tower::{TimeoutFuture, TimeoutLayer};
    /// use std::time::Duration;
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut svc = TimeoutLayer::new(Duration::from_secs(1)).unwrap()
    ///     .layer(service_fn(|()| async { Ok::<_, std::io::Error>(()) }));
    /// let fut: TimeoutFuture<_> = svc.ready().await.unwrap().call(());
    /// fut.await.unwrap();
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct TimeoutFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    // Without a deadline there is no timer at all (none made, none
    // registered). With one, the timer is made only when the inner future
    // first returns pending: a response ready at once (a cache hit, an
    // error answered at once) never touches the runtime's timer, which was
    // a third of the per-call cost of this layer. An enum rather than a
    // flag beside the timer: the flag made the future 8 bytes larger than
    // tower's (136 against 128 around a ready future), past the size up to
    // which moves are inlined, and each call paid two `memcpy` calls
    // moving it.
    #[project = KindProj]
    enum Kind<F> {
        Armed {
            #[pin]
            fut: F,
            deadline: Instant,
            #[pin]
            sleep: Option<Sleep>,
        },
        Unarmed {
            #[pin]
            fut: F,
        },
    }
}

impl<F> TimeoutFuture<F> {
    #[inline]
    fn new(fut: F, deadline: Option<Instant>) -> Self {
        let kind = match deadline {
            Some(deadline) => Kind::Armed {
                fut,
                deadline,
                sleep: None,
            },
            None => Kind::Unarmed { fut },
        };
        Self { kind }
    }
}

impl<F, T, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Armed {
                fut,
                deadline,
                mut sleep,
            } => {
                if let Poll::Ready(out) = fut.poll(cx) {
                    return Poll::Ready(out.map_err(Into::into));
                }
                if sleep.is_none() {
                    sleep.set(Some(tokio::time::sleep_until(*deadline)));
                }
                match sleep.as_pin_mut().map(|s| s.poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(Err(Refusal::TimedOut.into())),
                    _ => Poll::Pending,
                }
            }
            KindProj::Unarmed { fut } => fut.poll(cx).map_err(Into::into),
        }
    }
}

impl<F> fmt::Debug for TimeoutFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutFuture")
            .field(
                "deadline",
                &match &self.kind {
                    Kind::Armed { deadline, .. } => Some(*deadline),
                    Kind::Unarmed { .. } => None,
                },
            )
            .finish_non_exhaustive()
    }
}
