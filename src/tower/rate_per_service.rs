//! A rate limit whose bucket belongs to one service value: one budget per
//! clone, held inline (no `Arc`, no atomics).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
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
use crate::rate::gcra::{Gcra, MAX_NOW, TIMER_SLACK_NANOS};

/// What a waiting service polls: Tokio's timer until its token is due, or,
/// on a clock moved by hand, the clock's next move.
type Wake = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

mod sealed {
    pub trait Sealed {}
}

/// How a per-service rate limit admits a request without a token, as a
/// type: [`Waiting`] or [`Shedding`]. Sealed.
///
/// The two differ in their service's shape, which is why this is a type
/// and not an [`Admission`] value: a waiting service never refuses, so it
/// keeps the inner service's error and future types (tower's `RateLimit`
/// shape), where a shedding one answers [`Refusal::RateLimited`] and so
/// has `Error = `[`BoxError`].
///
/// # Examples
///
/// ```
/// use flowguard::pipeline::Admission;
/// use flowguard::tower::{PerServiceAdmission, PerServiceRateLimitLayer};
/// use flowguard::clock::Clock;
///
/// fn describe<C: Clock, A: PerServiceAdmission>(layer: &PerServiceRateLimitLayer<C, A>) -> &'static str {
///     if A::ADMISSION == Admission::Wait { "waits for a token" } else { "refuses without a token" }
/// }
/// let quota = flowguard::rate::Quota::per_second(5).unwrap();
/// assert_eq!(describe(&PerServiceRateLimitLayer::wait(quota)), "waits for a token");
/// assert_eq!(describe(&PerServiceRateLimitLayer::shed(quota)), "refuses without a token");
/// ```
pub trait PerServiceAdmission: sealed::Sealed + Copy + fmt::Debug + Send + Sync + 'static {
    /// The same choice as an [`Admission`] value.
    const ADMISSION: Admission;
}

/// A [`PerServiceRateLimit`] that waits in `poll_ready` for its token
/// ([`Admission::Wait`]; tower's `RateLimit` policy and shape).
///
/// # Examples
///
/// ```
/// use flowguard::pipeline::Admission;
/// use flowguard::tower::{PerServiceAdmission, Waiting};
///
/// assert_eq!(Waiting::ADMISSION, Admission::Wait);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Waiting;

/// A [`PerServiceRateLimit`] that refuses a request at once without a
/// token ([`Admission::Shed`]), answering [`Refusal::RateLimited`].
///
/// # Examples
///
/// ```
/// use flowguard::pipeline::Admission;
/// use flowguard::tower::{PerServiceAdmission, Shedding};
///
/// assert_eq!(Shedding::ADMISSION, Admission::Shed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shedding;

impl sealed::Sealed for Waiting {}
impl sealed::Sealed for Shedding {}

impl PerServiceAdmission for Waiting {
    const ADMISSION: Admission = Admission::Wait;
}

impl PerServiceAdmission for Shedding {
    const ADMISSION: Admission = Admission::Shed;
}

/// Applies [`PerServiceRateLimit`]: a GCRA bucket of `quota` **per service
/// value**, like tower's own `RateLimit`, where [`RateLimitLayer`](super::RateLimitLayer) shares
/// one bucket among all.
///
/// Each service this layer makes starts with a full bucket of its own,
/// held inline in the service: `poll_ready(&mut self)` has it to itself,
/// so a check is a clock read and a few integer operations, with no `Arc`,
/// atomic or lock. Still GCRA: bursts up to the quota's burst, an exact
/// `retry_after`, the limiter's clock (Tokio's, so a paused test runtime
/// drives it).
///
/// Two ways to meet a request without a token, chosen by constructor (and
/// carried in the type, `A`):
///
/// * [`wait`](PerServiceRateLimitLayer::wait) ([`Waiting`]): not ready
///   until the token is due. The service keeps the inner service's
///   `Error` and `Future` types, exactly as tower's `RateLimit` does, so it
///   replaces it anywhere (an axum route whose handler cannot fail stays
///   one that cannot fail).
/// * [`shed`](PerServiceRateLimitLayer::shed) ([`Shedding`]): ready at
///   once, and `call` answers [`Refusal::RateLimited`] with the exact
///   `retry_after` (a 429 with `Retry-After` through
///   [`error_response`](super::error_response)), as
///   [`RateLimitLayer`](super::RateLimitLayer) does; `Error = `[`BoxError`].
///
/// # Which one: shared or per service
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
pub struct PerServiceRateLimitLayer<C: Clock = FastClock, A: PerServiceAdmission = Waiting> {
    gcra: Gcra,
    clock: C,
    admission: PhantomData<A>,
}

impl PerServiceRateLimitLayer<FastClock, Shedding> {
    /// Refuses a request at once when its service has no token
    /// ([`Shedding`]). The clock is a [`FastClock`] made now: made inside a
    /// multi-thread runtime it reads the CPU's counter, anywhere else
    /// Tokio's clock (which `tokio::time::pause()` drives).
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
        Self::with_fast_clock(quota)
    }
}

impl PerServiceRateLimitLayer<FastClock, Waiting> {
    /// Waits in `poll_ready` until its service has a token ([`Waiting`];
    /// tower's `RateLimit` always waits). The service keeps the inner
    /// service's error and future types. The clock is chosen as for
    /// [`shed`](PerServiceRateLimitLayer::shed).
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
    ///     // The inner service's error type, as with tower's `RateLimit`.
    ///     let _: Result<(), std::io::Error> = (&mut svc).oneshot(()).await;
    /// }
    /// assert_eq!(start.elapsed(), Duration::from_millis(200)); // one per 100 ms
    /// # }
    /// ```
    pub fn wait(quota: Quota) -> Self {
        Self::with_fast_clock(quota)
    }
}

impl<A: PerServiceAdmission> PerServiceRateLimitLayer<FastClock, A> {
    fn with_fast_clock(quota: Quota) -> Self {
        Self {
            gcra: quota.gcra(),
            clock: FastClock::new(),
            admission: PhantomData,
        }
    }
}

impl<C: Clock, A: PerServiceAdmission> PerServiceRateLimitLayer<C, A> {
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
    pub fn with_clock<C2: Clock>(self, clock: C2) -> PerServiceRateLimitLayer<C2, A> {
        PerServiceRateLimitLayer {
            gcra: self.gcra,
            clock,
            admission: PhantomData,
        }
    }

    /// The quota each service gets.
    pub fn quota(&self) -> Quota {
        Quota::from_gcra(self.gcra)
    }

    /// Shed or wait (`A` as a value).
    pub fn admission(&self) -> Admission {
        A::ADMISSION
    }
}

impl<C: Clock, A: PerServiceAdmission> Clone for PerServiceRateLimitLayer<C, A> {
    fn clone(&self) -> Self {
        Self {
            gcra: self.gcra,
            clock: self.clock.clone(),
            admission: PhantomData,
        }
    }
}

impl<C: Clock, A: PerServiceAdmission> fmt::Debug for PerServiceRateLimitLayer<C, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerServiceRateLimitLayer")
            .field("quota", &self.quota())
            .field("clock", &self.clock)
            .field("admission", &A::ADMISSION)
            .finish()
    }
}

impl<S, C: Clock, A: PerServiceAdmission> Layer<S> for PerServiceRateLimitLayer<C, A> {
    type Service = PerServiceRateLimit<S, C, A>;

    fn layer(&self, inner: S) -> Self::Service {
        let clock = self.clock.clone();
        PerServiceRateLimit {
            inner,
            gcra: self.gcra,
            tat: 0,
            origin: clock.epoch(),
            clock,
            state: State::Idle,
            wake: None,
            admission: PhantomData,
        }
    }
}

/// One GCRA bucket of its own, taken from one token per request in
/// `poll_ready`; made by [`PerServiceRateLimitLayer`] (which says when to
/// choose it over the shared [`RateLimit`](super::RateLimit)).
///
/// * **`poll_ready`** takes a token from this service's bucket, then polls
///   the inner service with the token held (one token however often it is
///   polled). With no token, a [`Waiting`] service is not ready until the
///   token is due, and then takes it, so backpressure reaches the caller;
///   a [`Shedding`] one is ready at once and marks the next `call` refused
///   (re-deciding on the next `poll_ready`).
/// * **`call`** spends the token on the inner call. Without a token, a
///   [`Shedding`] service answers [`Refusal::RateLimited`] with the exact
///   `retry_after` from that `poll_ready`, or [`NotReady`] when no
///   `poll_ready` came first, and calls nothing. A [`Waiting`] service,
///   which has no error of its own to answer with, never refuses: a `call`
///   without a successful `poll_ready` (a caller breaking tower's
///   contract, on which tower's own `RateLimit` panics) is charged its
///   token anyway, as a debt the following `poll_ready`s wait out, and
///   goes to the inner service.
/// * **Clone**: a copy of the bucket as it stands (the tokens it holds,
///   not a token reserved by `poll_ready`), from then on independent of
///   the original: each clone has a budget of its own.
/// * **Drop**: the bucket goes with the service; nothing is shared, so
///   nothing is given back.
///
/// # Errors
///
/// [`Waiting`]: the inner service's errors, as they are. [`Shedding`]:
/// [`BoxError`] holding the inner service's error, a
/// [`Refusal::RateLimited`], or [`NotReady`].
///
/// # Panics
///
/// Only as [`tokio::time::sleep`] does: a service that waits
/// ([`Waiting`]) for a token on a clock that moves by itself sleeps on
/// Tokio's timer, so it must then be polled inside a Tokio runtime with
/// time enabled. Shedding never needs a runtime, and neither does waiting
/// on a clock moved by hand ([`ManualClock`](crate::clock::ManualClock)).
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
pub struct PerServiceRateLimit<S, C: Clock = FastClock, A: PerServiceAdmission = Waiting> {
    inner: S,
    gcra: Gcra,
    /// Theoretical arrival time, ns since `origin` (0: a full bucket).
    tat: u64,
    origin: Instant,
    clock: C,
    state: State,
    /// The wake-up a [`Waiting`] service waits on (in `State::Waiting`).
    wake: Option<Wake>,
    admission: PhantomData<A>,
}

/// Plain data, so that the hot path's changes are single stores with no
/// drop to check; a wait's wake-up lives beside it, in `wake`.
#[derive(Clone, Copy)]
enum State {
    Idle,
    /// A token is taken and not yet spent.
    Reserved,
    /// Shedding: the next `call` answers this.
    Refused(Refusal),
    /// Waiting: not ready until the token comes due (`wake` is set).
    Waiting,
}

impl<S, C: Clock, A: PerServiceAdmission> PerServiceRateLimit<S, C, A> {
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

impl<S, C, Req> Service<Req> for PerServiceRateLimit<S, C, Waiting>
where
    S: Service<Req>,
    C: Clock,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // The common case inline: idle (every call leaves it so) and a
        // token in the bucket; anything else out of line.
        if self.take_idle() {
            return self.inner.poll_ready(cx);
        }
        self.poll_ready_slow(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> S::Future {
        if let State::Reserved = self.state {
            self.state = State::Idle;
        } else {
            self.charge_unready();
        }
        self.inner.call(req)
    }
}

impl<S, C: Clock> PerServiceRateLimit<S, C, Waiting> {
    /// Idle with a token in the bucket at a time the clock tells cheaply
    /// (see [`Clock::nanos_since_at_most`]): takes it. `false` leaves the
    /// rest, the clamp included, to the slow path.
    #[inline]
    fn take_idle(&mut self) -> bool {
        if let State::Idle = self.state {
            // Within range (the first 73 years), so that the take needs no
            // clamp; beyond it (or a clock that cannot tell cheaply), the
            // slow path clamps.
            if let Some(now) = self.clock.nanos_since_at_most(self.origin, MAX_NOW) {
                if let Ok(tat) = self.gcra.take_one(self.tat, now) {
                    self.tat = tat;
                    self.state = State::Reserved;
                    return true;
                }
            }
        }
        false
    }

    /// `poll_ready` where [`take_idle`](Self::take_idle) got no token.
    #[cold]
    #[inline(never)]
    fn poll_ready_slow<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>>
    where
        S: Service<Req>,
    {
        std::task::ready!(self.poll_wait(cx));
        self.inner.poll_ready(cx)
    }

    /// `poll_ready`'s token where [`take_idle`](Self::take_idle) got none:
    /// `Ready` once reserved.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.state {
            State::Reserved => Poll::Ready(()),
            State::Waiting => {
                if let Some(wake) = &mut self.wake {
                    if wake.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                self.wake = None;
                self.state = State::Idle;
                self.wait_for_token(cx, false)
            }
            // Idle: the inline take found no token, or a time it could not
            // use (past the core's range, which the take here clamps, or one
            // the clock could not tell cheaply). A waiting service
            // is never `Refused`. Wait, re-reading the clock.
            State::Idle | State::Refused(_) => {
                self.state = State::Idle;
                self.wait_for_token(cx, true)
            }
        }
    }

    /// `call` without a token reserved: charged anyway, a debt the next
    /// `poll_ready`s wait out. A wait in progress stays armed (it re-checks
    /// when it fires and finds the later instant).
    #[cold]
    #[inline(never)]
    fn charge_unready(&mut self) {
        let now = self.now();
        self.tat = self.gcra.force_one(self.tat, now);
    }

    /// Takes the token if it is due, or arms the wake-up for it and
    /// returns `Pending`. A wake-up that fires at once lets it re-check
    /// once per poll (`recheck`), so that a clock behind Tokio's cannot
    /// make it spin; after that it yields and checks on the next poll.
    fn wait_for_token(&mut self, cx: &mut Context<'_>, mut recheck: bool) -> Poll<()> {
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
            let at = match self.gcra.take_one(self.tat, charged) {
                Ok(tat) => {
                    self.tat = tat;
                    self.state = State::Reserved;
                    self.wake = None;
                    return Poll::Ready(());
                }
                Err(at) => at,
            };
            let mut wake = match wake {
                Some(wake) => wake,
                None => self.timer(at, now),
            };
            let fired = wake.as_mut().poll(cx).is_ready();
            self.state = State::Waiting;
            // The previous wake-up (if any) is this service's own future:
            // dropping it here, under no lock, is fine.
            self.wake = Some(wake);
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
}

impl<S, C, Req> Service<Req> for PerServiceRateLimit<S, C, Shedding>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Clock,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, ()>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if !matches!(self.state, State::Reserved) {
            let now = self.now();
            match self.gcra.take_one(self.tat, now) {
                Ok(tat) => {
                    self.tat = tat;
                    self.state = State::Reserved;
                }
                Err(at) => {
                    self.refuse(at, now);
                    return Poll::Ready(Ok(()));
                }
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
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

impl<S, C: Clock> PerServiceRateLimit<S, C, Shedding> {
    /// The bucket refused at `now`, its token due at `at`: the next `call`
    /// answers that.
    #[cold]
    #[inline(never)]
    fn refuse(&mut self, at: u64, now: u64) {
        self.state = State::Refused(Refusal::RateLimited {
            retry_after: Some(Duration::from_nanos(at.saturating_sub(now))),
        });
    }

    /// What `call` answers without a token: the refusal `poll_ready`
    /// decided, or [`NotReady`].
    #[cold]
    #[inline(never)]
    fn take_refusal(&mut self) -> BoxError {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Refused(r) => r.into(),
            // A shedding service never waits; kept total.
            State::Waiting | State::Idle | State::Reserved => NotReady.into(),
        }
    }
}

impl<S: Clone, C: Clock, A: PerServiceAdmission> Clone for PerServiceRateLimit<S, C, A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            gcra: self.gcra,
            // The bucket as it stands; a token reserved by `poll_ready`
            // stays the original's.
            tat: self.tat,
            origin: self.origin,
            clock: self.clock.clone(),
            state: State::Idle,
            wake: None,
            admission: PhantomData,
        }
    }
}

impl<S: fmt::Debug, C: Clock, A: PerServiceAdmission> fmt::Debug for PerServiceRateLimit<S, C, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Idle => "idle",
            State::Waiting => "waiting for a token",
            State::Reserved => "holding a token",
            State::Refused(_) => "refused",
        };
        f.debug_struct("PerServiceRateLimit")
            .field("inner", &self.inner)
            .field("quota", &self.quota())
            .field("tat_nanos", &self.tat)
            .field("admission", &A::ADMISSION)
            .field("state", &state)
            .finish()
    }
}
