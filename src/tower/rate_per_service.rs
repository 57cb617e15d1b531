//! A rate limit whose bucket belongs to one service value: one budget per
//! clone, held inline (no `Arc`, no atomics).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::future::ResponseFuture;
use super::{BoxError, NotReady, Refusal};
#[cfg(not(loom))]
use crate::clock::tokio_wake_at;
use crate::clock::{Clock, FastClock};
use crate::pipeline::Admission;
use crate::rate::Quota;
use crate::rate::gcra::{Gcra, Refusal as GcraRefusal, TIMER_SLACK_NANOS};

/// What a waiting service polls: Tokio's timer until its token is due, or,
/// on a clock moved by hand, the clock's next move.
type Wake = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// Applies [`PerServiceRateLimit`]: a GCRA bucket of `quota` **per service
/// value**, like tower's own `RateLimit`, where [`RateLimitLayer`](super::RateLimitLayer) shares
/// one bucket among all.
///
/// Each service this layer makes starts with a full bucket of its own,
/// held inline in the service: `poll_ready(&mut self)` has it to itself,
/// so a check is a clock read and a few integer operations, with no `Arc`,
/// atomic or lock. Still GCRA: bursts up to the quota's burst, an exact
/// `retry_after`, the limiter's clock (Tokio's, so a paused test runtime
/// drives it), and the same [`Refusal::RateLimited`] and 429 with
/// `Retry-After` (see [`error_response`](super::error_response)) as
/// [`RateLimitLayer`](super::RateLimitLayer).
///
/// # Which one
///
/// * **Shared** ([`RateLimitLayer`](super::RateLimitLayer), the default): one budget for every
///   service the layer makes and all their clones. Right for a limit that
///   must hold in total: a downstream API's quota, the capacity of this
///   server, anything a client could otherwise escape by opening more
///   connections or by the framework cloning the service.
/// * **Per service** (this layer): one budget per service value. Right
///   where one service value serves one stream of requests and a limit per
///   stream is meant: a per-connection limit in a server that drives one
///   service value per connection with `poll_ready`/`call`, or a client
///   that owns its service (one per backend, or behind tower's `Buffer`,
///   whose worker owns the one value). This is the policy of tower's
///   `RateLimit`, with GCRA bursts instead of a fixed window.
///
/// Frameworks that clone the service for every request (axum's `Router`
/// does for its routes, and `hyper-util`'s `TowerToHyperService` does per
/// request) give every request a fresh copy, so a per-service limit there
/// limits nothing: use [`RateLimitLayer`](super::RateLimitLayer), or
/// [`KeyedRateLimitLayer`](super::KeyedRateLimitLayer) keyed by the
/// client, for those.
///
/// # Examples
///
/// ```
/// use flowguard::rate::Quota;
/// use flowguard::tower::{PerServiceRateLimitLayer, Refusal};
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let layer = PerServiceRateLimitLayer::shed(Quota::per_second(2).unwrap());
/// let echo = service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) });
/// let (mut a, mut b) = (layer.layer(echo), layer.layer(echo));
/// assert_eq!((&mut a).oneshot(1).await.unwrap(), 1);
/// assert_eq!((&mut a).oneshot(2).await.unwrap(), 2); // a's burst of 2 is used
/// let err = (&mut a).oneshot(3).await.unwrap_err();
/// assert_eq!(
///     Refusal::find(&*err),
///     Some(&Refusal::RateLimited { retry_after: Some(Duration::from_millis(500)) })
/// );
/// assert_eq!((&mut b).oneshot(4).await.unwrap(), 4); // b has a budget of its own
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PerServiceRateLimitLayer<C: Clock = FastClock> {
    gcra: Gcra,
    clock: C,
    admission: Admission,
}

impl PerServiceRateLimitLayer<FastClock> {
    /// Refuses a request at once when its service has no token
    /// ([`Admission::Shed`]). The clock is a [`FastClock`] made now: made
    /// inside a multi-thread runtime it reads the CPU's counter, anywhere
    /// else Tokio's clock (which `tokio::time::pause()` drives).
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::rate::Quota;
    /// use flowguard::tower::PerServiceRateLimitLayer;
    ///
    /// let layer = PerServiceRateLimitLayer::shed(Quota::per_second(100).unwrap());
    /// assert_eq!(layer.quota(), Quota::per_second(100).unwrap());
    /// ```
    pub fn shed(quota: Quota) -> Self {
        Self::with_admission(quota, Admission::Shed)
    }

    /// Waits in `poll_ready` until its service has a token
    /// ([`Admission::Wait`]; tower's `RateLimit` always waits). The clock
    /// is chosen as for [`shed`](Self::shed).
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::rate::Quota;
    /// use flowguard::tower::PerServiceRateLimitLayer;
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let layer = PerServiceRateLimitLayer::wait(Quota::per_second(10).unwrap().with_burst(1).unwrap());
    /// let mut svc = layer.layer(service_fn(|()| async { Ok::<_, std::io::Error>(()) }));
    /// let start = Instant::now();
    /// for _ in 0..3 {
    ///     (&mut svc).oneshot(()).await.unwrap();
    /// }
    /// assert_eq!(start.elapsed(), Duration::from_millis(200)); // one per 100 ms
    /// # }
    /// ```
    pub fn wait(quota: Quota) -> Self {
        Self::with_admission(quota, Admission::Wait)
    }

    /// As [`shed`](Self::shed) or [`wait`](Self::wait), by `admission`.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pipeline::Admission;
    /// use flowguard::rate::Quota;
    /// use flowguard::tower::PerServiceRateLimitLayer;
    ///
    /// let layer = PerServiceRateLimitLayer::with_admission(Quota::per_minute(60).unwrap(), Admission::Shed);
    /// assert_eq!(layer.admission(), Admission::Shed);
    /// ```
    pub fn with_admission(quota: Quota, admission: Admission) -> Self {
        Self {
            gcra: quota.gcra(),
            clock: FastClock::new(),
            admission,
        }
    }
}

impl<C: Clock> PerServiceRateLimitLayer<C> {
    /// The same layer reading time from `clock` (a
    /// [`ManualClock`](crate::clock::ManualClock) in a test, say). With a
    /// clock moved by hand, a waiting service parks until the clock moves
    /// and re-checks then; with any other it sleeps on Tokio's timer for
    /// the time left on `clock`.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::clock::ManualClock;
    /// use flowguard::rate::Quota;
    /// use flowguard::tower::PerServiceRateLimitLayer;
    /// use std::task::{Context, Waker};
    /// use std::time::Duration;
    /// use tower::{Layer, Service, service_fn};
    ///
    /// let clock = ManualClock::new();
    /// let layer = PerServiceRateLimitLayer::wait(Quota::per_second(1).unwrap()).with_clock(clock.clone());
    /// let mut svc = layer.layer(service_fn(|()| async { Ok::<_, std::io::Error>(()) }));
    /// let mut cx = Context::from_waker(Waker::noop());
    /// assert!(svc.poll_ready(&mut cx).is_ready());
    /// drop(svc.call(()));
    /// assert!(svc.poll_ready(&mut cx).is_pending()); // the next token is 1 s away
    /// clock.advance(Duration::from_secs(1));
    /// assert!(svc.poll_ready(&mut cx).is_ready());
    /// ```
    pub fn with_clock<C2: Clock>(self, clock: C2) -> PerServiceRateLimitLayer<C2> {
        PerServiceRateLimitLayer {
            gcra: self.gcra,
            clock,
            admission: self.admission,
        }
    }

    /// The quota each service gets.
    pub fn quota(&self) -> Quota {
        Quota::from_gcra(self.gcra)
    }

    /// Shed or wait.
    pub fn admission(&self) -> Admission {
        self.admission
    }
}

impl<S, C: Clock> Layer<S> for PerServiceRateLimitLayer<C> {
    type Service = PerServiceRateLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let clock = self.clock.clone();
        PerServiceRateLimit {
            inner,
            gcra: self.gcra,
            tat: 0,
            origin: clock.epoch(),
            clock,
            admission: self.admission,
            state: State::Idle,
        }
    }
}

/// One GCRA bucket of its own, taken from one token per request in
/// `poll_ready`; made by [`PerServiceRateLimitLayer`] (which says when to
/// choose it over the shared [`RateLimit`](super::RateLimit)).
///
/// * **`poll_ready`** takes a token from this service's bucket. With none,
///   [`Admission::Shed`] returns ready at once and marks the next `call`
///   refused (re-deciding on the next `poll_ready`); [`Admission::Wait`]
///   is not ready until the token is due, and then takes it, so
///   backpressure reaches the caller. With the token held, it polls the
///   inner service.
/// * **`call`** spends the token on the inner call, or answers
///   [`Refusal::RateLimited`] with the exact `retry_after` from that
///   `poll_ready`; without a `poll_ready` before it, [`NotReady`].
/// * **Clone**: a copy of the bucket as it stands (the tokens it holds,
///   not a token reserved by `poll_ready`), from then on independent of
///   the original: each clone has a budget of its own.
/// * **Drop**: the bucket goes with the service; nothing is shared, so
///   nothing is given back.
///
/// # Panics
///
/// Only as [`tokio::time::sleep`] does: a service that waits
/// ([`Admission::Wait`]) for a token on a clock that moves by itself
/// sleeps on Tokio's timer, so it must then be polled inside a Tokio
/// runtime with time enabled. Shedding never needs a runtime, and neither
/// does waiting on a clock moved by hand
/// ([`ManualClock`](crate::clock::ManualClock)).
///
/// # Cancel safety
///
/// A wait lives in the service and is dropped with it, consuming nothing.
/// Once `call` ran, the token is spent, whatever becomes of the response
/// future.
///
/// # Examples
///
/// ```
/// use flowguard::rate::Quota;
/// use flowguard::tower::PerServiceRateLimitLayer;
/// use std::task::{Context, Waker};
/// use std::time::Duration;
/// use tower::{Layer, Service, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let layer = PerServiceRateLimitLayer::wait(Quota::per_second(1).unwrap());
/// let mut a = layer.layer(service_fn(|()| async { Ok::<_, std::io::Error>(()) }));
/// let mut cx = Context::from_waker(Waker::noop());
/// assert!(a.poll_ready(&mut cx).is_ready()); // took a's only token
/// drop(a.call(()));
/// let mut b = a.clone(); // a copy of a's (empty) bucket
/// assert!(a.poll_ready(&mut cx).is_pending());
/// assert!(b.poll_ready(&mut cx).is_pending());
/// tokio::time::advance(Duration::from_secs(1)).await;
/// assert!(a.poll_ready(&mut cx).is_ready()); // a's token ...
/// assert!(b.poll_ready(&mut cx).is_ready()); // ... and b's own
/// assert_eq!(a.available(), 0);
/// # }
/// ```
pub struct PerServiceRateLimit<S, C: Clock = FastClock> {
    inner: S,
    gcra: Gcra,
    /// Theoretical arrival time, ns since `origin` (0: a full bucket).
    tat: u64,
    origin: Instant,
    clock: C,
    admission: Admission,
    state: State,
}

enum State {
    Idle,
    /// A token is taken and not yet spent.
    Reserved,
    Refused(Refusal),
    /// Not ready: waiting for the token to come due.
    Waiting(Wake),
}

impl<S, C: Clock> PerServiceRateLimit<S, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The quota of this service's bucket.
    pub fn quota(&self) -> Quota {
        Quota::from_gcra(self.gcra)
    }

    /// Whole tokens in this service's bucket now (a token reserved by
    /// `poll_ready` and not yet spent is not in it).
    pub fn available(&self) -> u32 {
        self.gcra.available(self.tat, self.now()).0
    }

    #[inline]
    fn now(&self) -> u64 {
        self.clock.nanos_since(self.origin)
    }

    #[cfg(not(loom))]
    fn instant(&self, at: u64) -> Instant {
        self.origin + Duration::from_nanos(at)
    }
}

impl<S, C, Req> Service<Req> for PerServiceRateLimit<S, C>
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
        // The common case inline: idle (every call leaves it so) and a
        // token in the bucket.
        if let State::Idle = self.state {
            let now = self.now();
            match self.gcra.take(self.tat, now, 1) {
                Ok(tat) => {
                    self.tat = tat;
                    self.state = State::Reserved;
                }
                Err(refusal) => return self.no_token(refusal, now, cx),
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

impl<S, C: Clock> PerServiceRateLimit<S, C> {
    /// `poll_ready` in any state but `Idle`.
    #[cold]
    #[inline(never)]
    fn poll_ready_other<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        match &mut self.state {
            State::Reserved => {}
            State::Idle | State::Refused(_) => {
                let now = self.now();
                match self.gcra.take(self.tat, now, 1) {
                    Ok(tat) => {
                        self.tat = tat;
                        self.state = State::Reserved;
                    }
                    Err(refusal) => return self.no_token(refusal, now, cx),
                }
            }
            State::Waiting(wake) => {
                if wake.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.state = State::Idle;
                return self.wait_for_token(cx, false);
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    /// The bucket refused at `now`: mark the next `call` refused (shed), or
    /// start waiting.
    #[cold]
    #[inline(never)]
    fn no_token<Req>(
        &mut self,
        refusal: GcraRefusal,
        now: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), BoxError>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        match (refusal, self.admission) {
            (GcraRefusal::NotUntil(_), Admission::Wait) => self.wait_for_token(cx, true),
            (GcraRefusal::NotUntil(at), _) => {
                self.state = State::Refused(Refusal::RateLimited {
                    retry_after: Some(Duration::from_nanos(at.saturating_sub(now))),
                });
                Poll::Ready(Ok(()))
            }
            // One token never exceeds a quota's burst (at least 1); kept
            // for completeness.
            (GcraRefusal::Insufficient, _) => {
                self.state = State::Refused(Refusal::RateLimited { retry_after: None });
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Takes the token if it is due, or arms the wake-up for it and
    /// returns `Pending`. A wake-up that fires at once lets it re-check
    /// once per poll (`recheck`), so that a clock behind Tokio's cannot
    /// make it spin; after that it yields and checks on the next poll.
    fn wait_for_token<Req>(
        &mut self,
        cx: &mut Context<'_>,
        mut recheck: bool,
    ) -> Poll<Result<(), BoxError>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        loop {
            // On a clock moved by hand, register for its next move *before*
            // reading it, so that a move after the check still wakes us.
            let mut wake = self.clock.moves().map(|_| {
                let clock = self.clock.clone();
                let wake: Wake = Box::pin(async move {
                    if let Some(moves) = clock.moves() {
                        moves.moved().await;
                    }
                });
                wake
            });
            if let Some(wake) = &mut wake {
                // Fresh: takes its mark of the clock and registers; pending.
                let _ = wake.as_mut().poll(cx);
            }
            let now = self.now();
            // Here the bucket either refused at `now` just before (its
            // token is not ready, and this is `now`), or Tokio's timer woke
            // us up to 1 ms after the token was ready, or a clock moved by
            // hand moved past it: charged at the token's instant, as
            // `RateLimiter::acquire` charges its head, so neither the
            // timer's rounding nor a coarse move costs rate. (The bucket is
            // this service's alone: nothing but its own takes moves its
            // ready instant, which lies after the refusal that started
            // the wait.)
            let slack = if wake.is_some() {
                u64::MAX
            } else {
                TIMER_SLACK_NANOS
            };
            let charged = self.gcra.charge_at(self.tat, now, 1, slack);
            let at = match self.gcra.take(self.tat, charged, 1) {
                Ok(tat) => {
                    self.tat = tat;
                    self.state = State::Reserved;
                    return self.inner.poll_ready(cx).map_err(Into::into);
                }
                Err(GcraRefusal::NotUntil(at)) => at,
                Err(GcraRefusal::Insufficient) => {
                    self.state = State::Refused(Refusal::RateLimited { retry_after: None });
                    return Poll::Ready(Ok(()));
                }
            };
            let mut wake = match wake {
                Some(wake) => wake,
                None => self.timer(at, now),
            };
            let fired = wake.as_mut().poll(cx).is_ready();
            self.state = State::Waiting(wake);
            if !fired {
                return Poll::Pending;
            }
            if recheck {
                recheck = false;
                continue;
            }
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
    }

    /// Tokio's timer for the instant `at`, on a clock that read `now`.
    fn timer(&self, at: u64, now: u64) -> Wake {
        #[cfg(not(loom))]
        {
            let wake_at = tokio_wake_at(self.instant(at), self.instant(now));
            Box::pin(tokio::time::sleep_until(wake_at))
        }
        #[cfg(loom)]
        {
            let _ = (at, now);
            Box::pin(std::future::pending())
        }
    }

    /// What `call` answers without a token: the refusal `poll_ready`
    /// decided, or [`NotReady`].
    #[cold]
    #[inline(never)]
    fn take_refusal(&mut self) -> BoxError {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Refused(r) => r.into(),
            // A wait stays armed: `call` without readiness changes nothing.
            State::Waiting(wake) => {
                self.state = State::Waiting(wake);
                NotReady.into()
            }
            State::Idle | State::Reserved => NotReady.into(),
        }
    }
}

impl<S: Clone, C: Clock> Clone for PerServiceRateLimit<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            gcra: self.gcra,
            // The bucket as it stands; a token reserved by `poll_ready`
            // stays the original's.
            tat: self.tat,
            origin: self.origin,
            clock: self.clock.clone(),
            admission: self.admission,
            state: State::Idle,
        }
    }
}

impl<S: fmt::Debug, C: Clock> fmt::Debug for PerServiceRateLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Idle => "idle",
            State::Waiting(_) => "waiting for a token",
            State::Reserved => "holding a token",
            State::Refused(_) => "refused",
        };
        f.debug_struct("PerServiceRateLimit")
            .field("inner", &self.inner)
            .field("quota", &self.quota())
            .field("tat_nanos", &self.tat)
            .field("admission", &self.admission)
            .field("state", &state)
            .finish()
    }
}
