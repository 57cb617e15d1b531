//! A rate limit on a [`RateLimiter`]: shed with 429, or wait.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::future::ResponseFuture;
use super::{BoxError, NotReady, Refusal};
use crate::clock::{Clock, FastClock};
use crate::pipeline::Admission;
use crate::rate::{AcquireError, RateLimiter, TryAcquireError};

type Waiting = Pin<Box<dyn Future<Output = Result<(), AcquireError>> + Send + Sync>>;

/// Applies [`RateLimit`]: one token of `limiter` per request, for every
/// service this layer makes and their clones (and anyone else holding the
/// limiter).
///
/// Choose what happens when there is no token: [`shed`](Self::shed)
/// refuses with [`Refusal::RateLimited`] and its `retry_after` (a 429 with
/// `Retry-After`: what a server does to its clients);
/// [`wait`](Self::wait) holds the request back until a token comes, in
/// FIFO order with the limiter's other waiters (what a client does to
/// respect a downstream quota; tower's `RateLimit` always waits).
///
/// One budget for all: tower's `RateLimit` keeps a count per service value
/// instead; for that policy (a limit per connection, say) use
/// [`PerServiceRateLimitLayer`](super::PerServiceRateLimitLayer), whose
/// docs say when each is right.
///
/// # Examples
///
/// ```
/// use flowguard::rate::{Quota, RateLimiter};
/// use flowguard::tower::{RateLimitLayer, Refusal};
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let limiter = RateLimiter::new(Quota::per_second(2).unwrap());
/// let svc = RateLimitLayer::shed(limiter).layer(service_fn(|()| async { Ok::<_, std::io::Error>(()) }));
/// svc.clone().oneshot(()).await.unwrap();
/// svc.clone().oneshot(()).await.unwrap(); // the burst of 2 is used
/// let err = svc.oneshot(()).await.unwrap_err();
/// assert_eq!(
///     Refusal::find(&*err),
///     Some(&Refusal::RateLimited { retry_after: Some(Duration::from_millis(500)) })
/// );
/// # }
/// ```
#[derive(Debug)]
pub struct RateLimitLayer<C: Clock = FastClock> {
    limiter: RateLimiter<C>,
    admission: Admission,
}

impl<C: Clock> RateLimitLayer<C> {
    /// Refuses a request at once when there is no token
    /// ([`Admission::Shed`]).
    pub fn shed(limiter: RateLimiter<C>) -> Self {
        Self::with_admission(limiter, Admission::Shed)
    }

    /// Waits in `poll_ready` for a token ([`Admission::Wait`]).
    pub fn wait(limiter: RateLimiter<C>) -> Self {
        Self::with_admission(limiter, Admission::Wait)
    }

    /// As [`shed`](Self::shed) or [`wait`](Self::wait), by `admission`.
    pub fn with_admission(limiter: RateLimiter<C>, admission: Admission) -> Self {
        Self { limiter, admission }
    }

    /// The limiter (for its snapshot, or to change its quota live).
    pub fn limiter(&self) -> &RateLimiter<C> {
        &self.limiter
    }
}

impl<C: Clock> Clone for RateLimitLayer<C> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            admission: self.admission,
        }
    }
}

impl<S, C: Clock> Layer<S> for RateLimitLayer<C> {
    type Service = RateLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            admission: self.admission,
            state: State::Idle,
        }
    }
}

/// Takes one token per request, in `poll_ready`, before the inner service
/// is polled: a refused request never reserves anything below it.
///
/// * **`poll_ready`** takes a token. With none, [`Admission::Shed`] returns
///   ready at once and marks the next `call` refused (re-deciding on the
///   next `poll_ready`); [`Admission::Wait`] is not ready until a token is
///   taken (queued behind the limiter's earlier waiters), so backpressure
///   reaches the caller. With the token held, it polls the inner service.
/// * **`call`** spends the token on the inner call, or answers
///   [`Refusal::RateLimited`] with `retry_after` (the exact wait from that
///   `poll_ready`; `None` only when a request of one token exceeds the burst).
/// * **Drop**: a token taken by `poll_ready` and never spent is refunded;
///   a wait in progress leaves the queue. **Clone**: shares the limiter,
///   holds no token.
///
/// # Cancel safety
///
/// Dropping the service refunds an unspent token and cancels a wait
/// (consuming nothing). Once `call` ran, the token is spent, whatever
/// becomes of the response future.
///
/// # Examples
///
/// ```
/// use flowguard::rate::{Quota, RateLimiter};
/// use flowguard::tower::RateLimitLayer;
/// use std::task::{Context, Waker};
/// use tower::{Layer, Service, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let limiter = RateLimiter::new(Quota::per_second(1).unwrap());
/// let layer = RateLimitLayer::wait(limiter.clone());
/// let inner = service_fn(|()| async { Ok::<_, std::io::Error>(()) });
/// let (mut a, mut b) = (layer.layer(inner), layer.layer(inner));
/// let mut cx = Context::from_waker(Waker::noop());
/// assert!(a.poll_ready(&mut cx).is_ready()); // took the only token
/// assert!(b.poll_ready(&mut cx).is_pending()); // waits for the next
/// drop(a); // never called: the token is refunded, and b gets it
/// assert!(b.poll_ready(&mut cx).is_ready());
/// # }
/// ```
pub struct RateLimit<S, C: Clock = FastClock> {
    inner: S,
    limiter: RateLimiter<C>,
    admission: Admission,
    state: State,
}

enum State {
    Idle,
    Waiting(Waiting),
    /// A token is taken and not yet spent.
    Reserved,
    Refused(Refusal),
}

impl<S, C: Clock> RateLimit<S, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The limiter.
    pub fn limiter(&self) -> &RateLimiter<C> {
        &self.limiter
    }
}

/// The refusal for a `try_acquire` error, `retry_after` counted from `now`.
pub(super) fn rate_refusal(e: TryAcquireError, now: Instant) -> Refusal {
    Refusal::RateLimited {
        retry_after: e.wait_time_from(now),
    }
}

impl<S, C, Req> Service<Req> for RateLimit<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Clock,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, ()>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The common case inline: idle (every call leaves it so), a token
        // there to take. Tested first on its own, and the state written
        // only over `Idle`, so the path has no dispatch and nothing to drop.
        if let State::Idle = self.state {
            match self.limiter.try_acquire(1) {
                Ok(()) => self.state = State::Reserved,
                Err(e) => {
                    if self.no_token(e) {
                        return Poll::Ready(Ok(()));
                    }
                    return self.poll_wait(cx);
                }
            }
            return self.inner.poll_ready(cx).map_err(Into::into);
        }
        self.poll_ready_other(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if let State::Reserved = self.state {
            self.state = State::Idle;
            return ResponseFuture::running(self.inner.call(req), ());
        }
        ResponseFuture::failed(self.take_refusal())
    }
}

impl<S, C: Clock> RateLimit<S, C> {
    /// `poll_ready` in any state but `Idle`: holding a token, refused by
    /// the last `poll_ready` (re-decided now), or waiting.
    #[cold]
    #[inline(never)]
    fn poll_ready_other<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        match &self.state {
            State::Reserved => {}
            State::Idle | State::Refused(_) => match self.limiter.try_acquire(1) {
                Ok(()) => self.state = State::Reserved,
                Err(e) => {
                    if self.no_token(e) {
                        return Poll::Ready(Ok(()));
                    }
                    return self.poll_wait(cx);
                }
            },
            State::Waiting(_) => return self.poll_wait(cx),
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    /// `try_acquire` found no token: start waiting (and say so by
    /// returning `false`), or mark the next `call` refused (`true`).
    #[cold]
    #[inline(never)]
    fn no_token(&mut self, e: TryAcquireError) -> bool {
        if matches!(e, TryAcquireError::NotUntil { .. }) && self.admission == Admission::Wait {
            let limiter = self.limiter.clone();
            self.state = State::Waiting(Box::pin(async move { limiter.acquire(1).await }));
            return false;
        }
        let now = self.limiter.clock().now();
        self.state = State::Refused(rate_refusal(e, now));
        true
    }

    /// Polls the wait for a token, then the inner service.
    #[cold]
    #[inline(never)]
    fn poll_wait<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        if let State::Waiting(wait) = &mut self.state {
            match wait.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => self.state = State::Reserved,
                Poll::Ready(Err(_)) => {
                    // The quota shrank below one token while waiting.
                    self.state = State::Refused(Refusal::RateLimited { retry_after: None });
                    return Poll::Ready(Ok(()));
                }
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    /// What `call` answers without a token: the refusal `poll_ready`
    /// decided, or [`NotReady`].
    #[cold]
    #[inline(never)]
    fn take_refusal(&mut self) -> BoxError {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Refused(r) => r.into(),
            // A wait is dropped, so the service leaves the limiter's line:
            // kept, a service its owner stopped polling would hold up the
            // services behind it (see `NotReady`).
            State::Idle | State::Waiting(_) | State::Reserved => NotReady.into(),
        }
    }
}

impl<S, C: Clock> Drop for RateLimit<S, C> {
    fn drop(&mut self) {
        if matches!(self.state, State::Reserved) {
            self.limiter.refund(1);
        }
    }
}

impl<S: Clone, C: Clock> Clone for RateLimit<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            admission: self.admission,
            state: State::Idle,
        }
    }
}

impl<S: fmt::Debug, C: Clock> fmt::Debug for RateLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Idle => "idle",
            State::Waiting(_) => "waiting for a token",
            State::Reserved => "holding a token",
            State::Refused(_) => "refused",
        };
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("admission", &self.admission)
            .field("state", &state)
            .finish()
    }
}
