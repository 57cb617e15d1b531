//! [`RateLimiter`]: the shared bucket word, the FIFO waiter queue and the
//! async shell around the GCRA core.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use super::error::{AcquireError, TryAcquireError};
use super::gcra::{Gcra, Refusal, TIMER_SLACK_NANOS};
use super::quota::Quota;
#[cfg(not(loom))]
use crate::clock::tokio_wake_at;
use crate::clock::{Clock, FastClock, Moved};
use crate::histogram::{HistogramSnapshot, Recorder};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, CachePadded, Mutex, StdArc};

/// The bucket's state word.
///
/// | bits   | meaning |
/// |--------|---------|
/// | 0..=61 | TAT: theoretical arrival time, ns since the limiter's origin |
/// | 62     | `RECONFIG`: a `set_quota` is rewriting the quota, or rewrote it without changing the TAT (readers go slow) |
/// | 63     | `QUEUED`: `acquire` callers are waiting; `try_acquire` must not barge |
///
/// Both flags are set only while the waiter mutex is held. The TAT changes by
/// compare-and-swap from anywhere; `try_acquire` is one load and one CAS of
/// this word when neither flag is set.
///
/// `RECONFIG` seen *under the mutex* is stale: `set_quota` leaves it set when
/// its conversion is exact (the TAT stays bit-identical), so that the word
/// still differs from what a check racing with it loaded. Whoever next
/// changes the TAT under the mutex clears it; until then checks take the
/// slow path.
const QUEUED: u64 = 1 << 63;
const RECONFIG: u64 = 1 << 62;
const FLAGS: u64 = QUEUED | RECONFIG;
const TAT_MASK: u64 = !FLAGS;

/// A token-bucket rate limiter (GCRA): "at most R per period, bursts up to B",
/// with a fair FIFO queue for callers that wait.
///
/// Clones share one bucket. The clock is a type parameter (default
/// [`FastClock`]: made inside a multi-thread runtime it reads a cheaper CPU
/// counter; made anywhere else it reads Tokio's clock, so
/// `tokio::time::pause()` drives both checks and waits);
/// build with [`new`](RateLimiter::new) or [`with_clock`](RateLimiter::with_clock).
///
/// # Examples
///
/// ```
/// use flowguard::rate::{Quota, RateLimiter};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // 10 per second, bursts of up to 5.
/// let limiter = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(5).unwrap());
/// let start = Instant::now();
/// for _ in 0..5 {
///     limiter.try_acquire(1).unwrap(); // the burst, at once
/// }
/// limiter.acquire(1).await.unwrap(); // then one every 100 ms
/// assert_eq!(start.elapsed(), Duration::from_millis(100));
/// # }
/// ```
///
/// # Fairness
///
/// [`acquire`](RateLimiter::acquire) callers are served strictly in arrival
/// order, even when a later one asks for fewer tokens. While anyone is
/// queued, [`try_acquire`](RateLimiter::try_acquire) refuses rather than
/// barge ahead. Only the head of the queue holds a timer; when it is served
/// it wakes the next, so no herd of sleepers re-checks the bucket.
///
/// # Memory ordering
///
/// Every admission is a successful compare-and-swap (acquire-release) on one
/// word, so admissions are totally ordered and no two callers can spend the
/// same token. A [`set_quota`](RateLimiter::set_quota) takes effect for every
/// check that starts after it returns; a check racing with it is judged
/// under the old or the new quota. (It flags the word while it rewrites the
/// quota and always leaves the word changed: a new TAT, or, when the
/// conversion is exact and the TAT stays bit-identical, the flag still set
/// until the TAT next changes. So a check that read the word before and the
/// quota after cannot complete its CAS; only other operations restoring the
/// identical word inside one check's load-to-CAS window, such as two
/// `set_quota` calls that undo each other, could let it through, judged
/// under the quota of a moment before.) Re-applying the quota in force
/// changes nothing at all.
pub struct RateLimiter<C: Clock = FastClock> {
    inner: Arc<Inner<C>>,
}

struct Inner<C> {
    /// The bucket word, the only field a check writes, alone on its cache
    /// lines. Everything a check reads before it (the clock, the origin)
    /// and after it (`t`, `burst`) is never written on the fast path; on
    /// the word's line, every admission on another core would take them
    /// away too, so that a check would miss on its clock read, before it
    /// even loads the word, and widen the window between its load and its
    /// compare-and-swap in which another core takes the line (issue 17: 2
    /// threads at 1.33x governor's check).
    state: CachePadded<AtomicU64>,
    /// Emission interval `T`, ns. Written only under `waiters` with `RECONFIG` set.
    t: AtomicU64,
    /// Burst `B`. Written only under `waiters` with `RECONFIG` set.
    burst: AtomicU64,
    waiters: Mutex<Waiters>,
    origin: Instant,
    clock: C,
    /// Time queued, of the `acquire`s that had to wait.
    wait: Recorder,
    /// For `tracing` events: the limiter's name, or "rate_limiter".
    name: StdArc<str>,
}

#[derive(Debug, Default)]
struct Waiters {
    /// Arrival order = id order; the first entry is the head.
    queue: BTreeMap<u64, Waiter>,
    next_id: u64,
    queued_tokens: u64,
}

#[derive(Debug)]
struct Waiter {
    n: u32,
    waker: Option<Waker>,
    /// The earliest instant (ns since the origin) it may be charged at:
    /// when it queued, when it became the head, or when a refund or a new
    /// quota changed the bucket under it. A head is charged at its ready
    /// instant, never before this (see [`Inner::charged_at`]).
    since: u64,
}

/// A plain-number picture of a [`RateLimiter`] at one instant.
///
/// # Examples
///
/// ```
/// use flowguard::rate::{Quota, RateLimiter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let limiter = RateLimiter::new(Quota::per_second(4).unwrap());
/// limiter.try_acquire(3).unwrap();
/// let s = limiter.snapshot();
/// assert_eq!((s.available, s.burst, s.waiters), (1, 4, 0));
/// assert!(s.next_token_at.is_some());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateSnapshot {
    /// Whole tokens available now (ignoring queued waiters).
    pub available: u32,
    /// When the next whole token arrives; `None` when the bucket is full.
    pub next_token_at: Option<Instant>,
    /// How many `acquire` callers are queued.
    pub waiters: usize,
    /// How many tokens they ask for in total.
    pub queued_tokens: u64,
    /// The quota's burst.
    pub burst: u32,
    /// The quota's emission interval.
    pub emission_interval: Duration,
    /// How long the `acquire` calls that had to queue waited for their
    /// tokens (nanoseconds, on the limiter's clock); calls served at once
    /// and calls that gave up are not in it.
    pub wait: HistogramSnapshot,
}

enum Fast {
    Refused(Refusal),
    Flagged,
}

impl RateLimiter<FastClock> {
    /// A limiter on the default [`FastClock`](crate::clock::FastClock), starting with a full bucket.
    ///
    /// # Panics
    ///
    /// Never.
    pub fn new(quota: Quota) -> Self {
        Self::with_clock(quota, FastClock::new())
    }
}

impl<C: Clock> RateLimiter<C> {
    /// A limiter reading time from `clock`, starting with a full bucket.
    ///
    /// How [`acquire`](Self::acquire) waits follows the clock. With a clock
    /// moved by hand ([`ManualClock`](crate::clock::ManualClock), or any
    /// whose [`moves`](Clock::moves) is `Some`) the
    /// head of the queue parks until the clock is moved (or a
    /// [`refund`](Self::refund) or [`set_quota`](Self::set_quota) wakes it)
    /// and re-checks once per move; deadlines are measured on that clock
    /// too, and no Tokio runtime is needed. With any other clock it sleeps
    /// on Tokio's timer for the time left on `clock`.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::clock::ManualClock;
    /// use flowguard::rate::{Quota, RateLimiter};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let clock = ManualClock::new();
    /// let limiter = RateLimiter::with_clock(Quota::per_second(1).unwrap(), clock.clone());
    /// assert!(limiter.try_acquire(1).is_ok());
    /// assert!(limiter.try_acquire(1).is_err());
    /// clock.advance(Duration::from_secs(1));
    /// assert!(limiter.try_acquire(1).is_ok());
    /// # }
    /// ```
    pub fn with_clock(quota: Quota, clock: C) -> Self {
        let g = quota.gcra();
        let origin = clock.epoch();
        Self {
            inner: Arc::new(Inner {
                state: CachePadded(AtomicU64::new(0)),
                t: AtomicU64::new(g.t),
                burst: AtomicU64::new(u64::from(g.burst)),
                waiters: Mutex::new(Waiters::default()),
                origin,
                clock,
                wait: Recorder::new(true),
                name: StdArc::from("rate_limiter"),
            }),
        }
    }

    /// Names the limiter: its `tracing` events carry the name, and with the
    /// `metrics` feature its metrics are published under it (see
    /// `flowguard::metrics`); unnamed limiters are not.
    /// Chain it on the constructor (after
    /// [`histograms`](Self::histograms), if any): a limiter that already
    /// has clones keeps its name and is not exported.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::rate::{Quota, RateLimiter};
    ///
    /// let search = RateLimiter::new(Quota::per_second(100).unwrap()).name("search");
    /// # drop(search);
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        let name: String = name.into();
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.name = StdArc::from(name.as_str());
            #[cfg(all(feature = "metrics", not(loom)))]
            self.export(&name);
        }
        self
    }

    /// Publishes a named limiter's metrics (feature `metrics`).
    #[cfg(all(feature = "metrics", not(loom)))]
    fn export(&self, name: &str) {
        let h = crate::metrics::Handles::new("rate", name);
        self.inner.wait.export_to(h.histogram("wait_seconds"));
        let (available, waiters) = (h.gauge("available"), h.gauge("waiters"));
        let weak = Arc::downgrade(&self.inner);
        crate::metrics::register(move || {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            let g = inner.gcra();
            let tat = inner.state.load(Ordering::Acquire) & TAT_MASK;
            available.set(f64::from(g.available(tat, inner.now()).0));
            waiters.set(inner.waiters.lock().queue.len() as f64);
            true
        });
    }

    /// Keeps the [`wait`](RateSnapshot::wait) histogram (the default) or
    /// not; off, a queued `acquire` reads the clock no more than it needs
    /// to wait. Chain it on the constructor: a limiter that already has
    /// clones keeps its setting.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::rate::{Quota, RateLimiter};
    ///
    /// let limiter = RateLimiter::new(Quota::per_second(10).unwrap()).histograms(false);
    /// assert_eq!(limiter.snapshot().wait.count(), 0);
    /// ```
    pub fn histograms(mut self, on: bool) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            if inner.wait.enabled() != on {
                inner.wait = Recorder::new(on);
            }
        }
        self
    }

    /// Takes `n` tokens now, or says when to come back. Never waits.
    ///
    /// `n == 0` always succeeds. The refusal's `retry_after` is exact: the
    /// same request is refused at every earlier instant and admitted at it,
    /// provided nobody else takes tokens in between (while `acquire` callers
    /// are queued it refuses, and `retry_after` is the instant the queue
    /// ahead plus this request would be served).
    ///
    /// Uncontended, this is one clock read, one atomic load and one
    /// compare-and-swap: no lock, no allocation.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::NotUntil`] when there are not enough tokens yet;
    /// [`TryAcquireError::InsufficientCapacity`] at once when `n` exceeds the
    /// burst.
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::rate::{Quota, RateLimiter, TryAcquireError};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let limiter = RateLimiter::new(Quota::per_second(1).unwrap());
    /// limiter.try_acquire(1).unwrap();
    /// let Err(TryAcquireError::NotUntil { retry_after }) = limiter.try_acquire(1) else { panic!() };
    /// let wait = retry_after - tokio::time::Instant::now();
    /// assert_eq!(wait, Duration::from_secs(1));
    /// tokio::time::advance(wait - Duration::from_nanos(1)).await;
    /// assert!(limiter.try_acquire(1).is_err()); // refused one ns before
    /// tokio::time::advance(Duration::from_nanos(1)).await;
    /// assert!(limiter.try_acquire(1).is_ok()); // admitted at it
    /// # }
    /// ```
    #[inline]
    pub fn try_acquire(&self, n: u32) -> Result<(), TryAcquireError> {
        if n == 0 {
            return Ok(());
        }
        let inner = &*self.inner;
        let now = inner.now();
        match inner.try_take(n, now) {
            Ok(()) => Ok(()),
            Err(Fast::Refused(r)) => Err(inner.refusal(r, n)),
            Err(Fast::Flagged) => inner.try_acquire_slow(n),
        }
    }

    /// Waits in the FIFO queue until `n` tokens are taken.
    ///
    /// The head of the queue sleeps until its exact retry instant, which
    /// Tokio's timer rounds up to its 1 ms resolution; with a clock moved by
    /// hand it parks until the clock is moved instead (see
    /// [`with_clock`](Self::with_clock)). Woken by the timer, it is
    /// admitted as of that exact instant (as Go's `Wait` reserves at its
    /// exact time), so the rounding costs no rate: a loop of `acquire(1)`
    /// on a burst-1 quota of one token every 1.5 ms makes 100 admissions
    /// in 150 ms, not 200. The instant a caller sees its admission can
    /// then be up to 1 ms after the one the bucket accounts, so two seen
    /// admissions may be up to 1 ms closer than `T`.
    ///
    /// # Errors
    ///
    /// [`AcquireError::InsufficientCapacity`] at once when `n` exceeds the
    /// burst (or when a [`set_quota`](Self::set_quota) shrinks the burst
    /// below `n` while waiting).
    ///
    /// # Panics
    ///
    /// Only as [`tokio::time::sleep`] does: when it has to wait on Tokio's
    /// timer and is polled outside a Tokio runtime with time enabled. Tokens
    /// that are there are taken without a runtime, and with a clock moved by
    /// hand ([`ManualClock`](crate::clock::ManualClock)) it never needs one.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it completes consumes no
    /// tokens and frees its place in the queue (the next caller moves up).
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::rate::{Quota, RateLimiter};
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let limiter = RateLimiter::new(Quota::per_second(2).unwrap());
    /// let start = Instant::now();
    /// for _ in 0..4 {
    ///     limiter.acquire(1).await.unwrap();
    /// }
    /// // two at once, then one every 500 ms
    /// assert_eq!(start.elapsed(), Duration::from_secs(1));
    /// # }
    /// ```
    pub fn acquire(&self, n: u32) -> Acquire<'_, C> {
        Acquire {
            inner: &self.inner,
            n,
            state: AcqState::Init,
            deadline: None,
            sleep: None,
            moved: None,
            since: None,
        }
    }

    /// Like [`acquire`](Self::acquire), but fails at once, consuming nothing,
    /// when the predicted wait exceeds `timeout` (Go's `Limiter.Wait` with a
    /// deadline).
    ///
    /// The prediction counts the tokens of everybody queued ahead. Should the
    /// wait still overrun (a [`set_quota`](Self::set_quota) slowed the rate),
    /// it gives up at the deadline, again consuming nothing.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Timeout`] with the predicted admission instant;
    /// [`AcquireError::InsufficientCapacity`] as for `acquire`.
    ///
    /// # Panics
    ///
    /// As [`acquire`](Self::acquire): only when it has to wait on Tokio's
    /// timer outside a Tokio runtime with time enabled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::rate::{AcquireError, Quota, RateLimiter};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let limiter = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(1).unwrap());
    /// limiter.try_acquire(1).unwrap();
    /// // the next token is 100 ms away
    /// let err = limiter.acquire_timeout(1, Duration::from_millis(99)).await.unwrap_err();
    /// assert!(matches!(err, AcquireError::Timeout { .. }));
    /// assert!(limiter.acquire_timeout(1, Duration::from_millis(100)).await.is_ok());
    /// # }
    /// ```
    pub async fn acquire_timeout(&self, n: u32, timeout: Duration) -> Result<(), AcquireError> {
        let deadline = self.inner.clock.now().checked_add(timeout);
        match deadline {
            Some(deadline) => self.acquire_deadline(n, deadline).await,
            None => self.acquire(n).await,
        }
    }

    /// [`acquire_timeout`](Self::acquire_timeout) with an absolute deadline
    /// on the limiter's clock. With a clock moved by hand it gives up at the
    /// first move that reaches the deadline; with any other clock, after the
    /// time left to the deadline on Tokio's timer.
    ///
    /// # Errors
    ///
    /// As [`acquire_timeout`](Self::acquire_timeout).
    ///
    /// # Panics
    ///
    /// As [`acquire`](Self::acquire): only when it has to wait on Tokio's
    /// timer outside a Tokio runtime with time enabled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`acquire`](Self::acquire).
    pub async fn acquire_deadline(&self, n: u32, deadline: Instant) -> Result<(), AcquireError> {
        let inner = &*self.inner;
        let id = match inner.start(n, Some(deadline))? {
            None => return Ok(()),
            Some(id) => id,
        };
        let by_hand = inner.clock.moves().is_some();
        let fut = Acquire {
            inner: &self.inner,
            n,
            state: AcqState::Queued(id),
            // Enforced by the future itself on a clock moved by hand.
            deadline: by_hand.then_some(deadline),
            sleep: None,
            moved: None,
            since: inner.wait.enabled().then(|| inner.clock.now()),
        };
        if by_hand {
            return fut.await;
        }
        #[cfg(not(loom))]
        {
            let wake_at = tokio_wake_at(deadline, inner.clock.now());
            match crate::clock::timeout_at_inclusive(wake_at, fut).await {
                Some(res) => res,
                // The future was dropped, so its place is already freed.
                None => Err(AcquireError::Timeout {
                    retry_after: inner.predict(n),
                }),
            }
        }
        #[cfg(loom)]
        {
            fut.await
        }
    }

    /// Gives `n` tokens back, e.g. when a call cost less than was reserved.
    /// The bucket never holds more than its burst.
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::rate::{Quota, RateLimiter};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let limiter = RateLimiter::new(Quota::per_minute(10).unwrap());
    /// limiter.try_acquire(10).unwrap(); // reserve the worst case
    /// limiter.refund(7); // the call only cost 3
    /// assert_eq!(limiter.snapshot().available, 7);
    /// limiter.refund(100);
    /// assert_eq!(limiter.snapshot().available, 10); // capped at the burst
    /// # }
    /// ```
    pub fn refund(&self, n: u32) {
        if n == 0 {
            return;
        }
        let inner = &*self.inner;
        let now = inner.now();
        let mut s = inner.state.load(Ordering::Acquire);
        loop {
            if s & RECONFIG != 0 {
                inner.refund_slow(now, n);
                return;
            }
            let tat = s & TAT_MASK;
            let new = inner.gcra().refund(tat, now, n);
            if new == tat {
                return;
            }
            match inner.state.compare_exchange_weak(
                s,
                new | (s & FLAGS),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => s = actual,
            }
        }
        if s & QUEUED != 0 {
            inner.wake_head(now);
        }
    }

    /// Replaces the quota, effective at once.
    ///
    /// **How tokens carry over:** the tokens available now carry over as a
    /// count, including the fraction of a token already refilled, capped at
    /// the new burst; the rest of the new burst is missing and refills at the
    /// new rate (so the missing tokens, `burst - available`, carry over only
    /// when the burst stays the same). (This is Go's `SetLimit`/`SetBurst`
    /// rule.) A full bucket of 4 under a
    /// new burst of 8 holds 4 and refills to 8 at the new rate; an empty one
    /// stays empty. Queued waiters are re-evaluated; those asking for more than
    /// the new burst fail with [`AcquireError::InsufficientCapacity`].
    ///
    /// **Exactness:** the missing tokens are kept as whole nanoseconds of
    /// debt, rounded up (towards less credit, never more). Re-applying the
    /// quota in force changes nothing, however often (a config reload is
    /// free), and a change whose conversion is exact (a full bucket, or a debt
    /// that scales to whole nanoseconds) keeps every retry instant to the
    /// nanosecond; so does a round trip through such a change. An inexact
    /// conversion rounds the debt up to the next whole nanosecond: a round
    /// trip from quota 1 through quota 2 and back, with a burst that does not
    /// shrink on the way, adds at most `ceil(T1 / T2)` ns of debt.
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::rate::{Quota, RateLimiter};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let limiter = RateLimiter::new(Quota::per_second(10).unwrap());
    /// limiter.try_acquire(4).unwrap(); // 6 left
    /// limiter.set_quota(Quota::per_second(100).unwrap());
    /// assert_eq!(limiter.snapshot().available, 6);
    /// limiter.set_quota(Quota::per_second(5).unwrap());
    /// assert_eq!(limiter.snapshot().available, 5); // capped at the new burst
    /// # }
    /// ```
    pub fn set_quota(&self, quota: Quota) {
        let inner = &*self.inner;
        let new = quota.gcra();
        let wakers: Vec<Waker> = {
            let mut w = inner.waiters.lock();
            let old = inner.gcra();
            if old == new {
                // The quota in force: nothing to convert, nobody to wake.
                return;
            }
            let before = inner.state.fetch_or(RECONFIG, Ordering::AcqRel);
            inner.t.store(new.t, Ordering::Release);
            inner.burst.store(u64::from(new.burst), Ordering::Release);
            let now = inner.now();
            let mut s = before | RECONFIG;
            loop {
                let tat = s & TAT_MASK;
                let next = old.convert(&new, tat, now);
                // The word must end up different from any word a check
                // racing with this call loaded before it: such a check may
                // have read the quota half-written. When the TAT itself
                // changes that is so; when the conversion is exact, the TAT
                // stays bit-identical and `RECONFIG` stays set instead, until
                // the next change of the TAT under the mutex clears it.
                let stale = if next == tat { RECONFIG } else { 0 };
                match inner.state.compare_exchange_weak(
                    s,
                    next | stale | (s & QUEUED),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(actual) => s = actual,
                }
            }
            w.queue
                .values_mut()
                .filter_map(|x| {
                    x.since = x.since.max(now);
                    x.waker.take()
                })
                .collect()
        };
        tracing::debug!(
            limiter = %inner.name,
            emission_interval = ?quota.emission_interval(),
            burst = quota.burst(),
            waiters = wakers.len(),
            "rate limiter quota changed"
        );
        for w in wakers {
            w.wake();
        }
    }

    /// The clock the limiter reads (for turning a refusal's instant into
    /// a wait on the same clock).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn clock(&self) -> &C {
        &self.inner.clock
    }

    /// The quota in force.
    ///
    /// Takes the waiter lock briefly, so that it never sees a quota half
    /// written by a concurrent [`set_quota`](Self::set_quota).
    pub fn quota(&self) -> Quota {
        let _w = self.inner.waiters.lock();
        Quota::from_gcra(self.inner.gcra())
    }

    /// Tokens available now, when the next one arrives, and the queue.
    ///
    /// Takes the waiter lock briefly; meant for metrics, not the hot path.
    #[doc(alias = "metrics")]
    pub fn snapshot(&self) -> RateSnapshot {
        let inner = &*self.inner;
        let w = inner.waiters.lock();
        let g = inner.gcra();
        let now = inner.now();
        let tat = inner.state.load(Ordering::Acquire) & TAT_MASK;
        let (available, next) = g.available(tat, now);
        RateSnapshot {
            available,
            next_token_at: next.map(|at| inner.instant(at)),
            waiters: w.queue.len(),
            queued_tokens: w.queued_tokens,
            burst: g.burst,
            emission_interval: Duration::from_nanos(g.t),
            wait: inner.wait.snapshot(),
        }
    }
}

impl<C: Clock> Clone for RateLimiter<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Clock> fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.inner.state.load(Ordering::Relaxed);
        f.debug_struct("RateLimiter")
            .field("quota", &self.quota())
            .field("tat_nanos", &(s & TAT_MASK))
            .field("queued", &(s & QUEUED != 0))
            .field("clock", &self.inner.clock)
            .finish()
    }
}

impl<C: Clock> Inner<C> {
    #[inline]
    fn now(&self) -> u64 {
        self.clock.nanos_since(self.origin)
    }

    /// The instant the head of the queue is admitted as, by
    /// [`Gcra::charge_at`]: its ready instant, never before `since` (when
    /// it became the head, or the bucket last changed under it). On a
    /// clock that moves by itself, also at most 1 ms before `now` (Tokio's
    /// timer wakes it up to that late; later than that, the runtime was
    /// busy and the call really happens now). On a clock moved by hand,
    /// without that bound: a move past the ready instant admits the head
    /// as if the clock had passed through every instant between, so the
    /// outcome does not depend on how coarsely a test moves the clock (as
    /// Go's reservations are made at their exact instant).
    #[inline]
    fn charged_at(&self, g: Gcra, tat: u64, now: u64, n: u32, since: u64) -> u64 {
        let mut slack = now.saturating_sub(since);
        if self.clock.moves().is_none() {
            slack = slack.min(TIMER_SLACK_NANOS);
        }
        g.charge_at(tat, now, n, slack)
    }

    /// Whether waiter `id`, on a clock moved by hand, would be admitted by
    /// `deadline` (ns since the origin) had the clock passed through every
    /// instant up to `now`: the queue ahead of it admitted one by one, each
    /// at its [charge instant](Self::charged_at). False as soon as one of
    /// them (or `id` itself) is not ready by `now`.
    fn admissible_by(&self, w: &Waiters, id: u64, deadline: u64, now: u64) -> bool {
        let g = self.gcra();
        let mut tat = self.state.load(Ordering::Acquire) & TAT_MASK;
        let mut floor = 0;
        for (&k, x) in &w.queue {
            let at = self.charged_at(g, tat, now, x.n, x.since.max(floor));
            match g.take(tat, at, x.n) {
                Ok(next) if at <= now => {
                    if k == id {
                        return at <= deadline;
                    }
                    tat = next;
                    floor = at;
                }
                _ => return false,
            }
        }
        false
    }

    /// `at` in ns since the origin (0 before it).
    fn nanos_at(&self, at: Instant) -> u64 {
        crate::clock::nanos_between(self.origin, at)
    }

    /// [`admissible_by`](Self::admissible_by) under the lock, now.
    fn admissible(&self, id: u64, deadline: Instant) -> bool {
        let w = self.waiters.lock();
        self.admissible_by(&w, id, self.nanos_at(deadline), self.now())
    }

    #[inline]
    fn instant(&self, at: u64) -> Instant {
        self.origin + Duration::from_nanos(at)
    }

    #[inline]
    fn gcra(&self) -> Gcra {
        Gcra {
            t: self.t.load(Ordering::Acquire),
            burst: self.burst.load(Ordering::Acquire) as u32,
        }
    }

    #[inline]
    fn refusal(&self, r: Refusal, n: u32) -> TryAcquireError {
        match r {
            Refusal::NotUntil(at) => TryAcquireError::NotUntil {
                retry_after: self.instant(at),
            },
            Refusal::Insufficient => TryAcquireError::InsufficientCapacity {
                requested: n,
                burst: self.burst.load(Ordering::Acquire) as u32,
            },
        }
    }

    /// The fast path: one load, one CAS when the word carries no flag.
    #[inline]
    fn try_take(&self, n: u32, now: u64) -> Result<(), Fast> {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if s & FLAGS != 0 {
                return Err(Fast::Flagged);
            }
            // Quota read after the word: see `set_quota`.
            let new = self.gcra().take(s, now, n).map_err(Fast::Refused)?;
            match self
                .state
                .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(actual) => s = actual,
            }
        }
    }

    #[cold]
    fn try_acquire_slow(&self, n: u32) -> Result<(), TryAcquireError> {
        let w = self.waiters.lock();
        let now = self.now();
        let g = self.gcra();
        if n > g.burst {
            return Err(self.refusal(Refusal::Insufficient, n));
        }
        if w.queue.is_empty() {
            // The flag is a finished set_quota's (`RECONFIG` under the lock
            // is stale) and `QUEUED` is clear: the word is ours to try.
            let mut s = self.state.load(Ordering::Acquire);
            loop {
                let new = g
                    .take(s & TAT_MASK, now, n)
                    .map_err(|r| self.refusal(r, n))?;
                match self
                    .state
                    .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return Ok(()),
                    Err(actual) => s = actual,
                }
            }
        }
        let tat = self.state.load(Ordering::Acquire) & TAT_MASK;
        let at = g.ready_at(tat, now, w.queued_tokens + u64::from(n));
        Err(TryAcquireError::NotUntil {
            retry_after: self.instant(at),
        })
    }

    /// `refund` while the word carries `RECONFIG`: under the lock, where the
    /// flag is stale. It stays set when the TAT does not change.
    #[cold]
    fn refund_slow(&self, now: u64, n: u32) {
        let w = self.waiters.lock();
        let g = self.gcra();
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let tat = s & TAT_MASK;
            let new = g.refund(tat, now, n);
            if new == tat {
                return;
            }
            match self.state.compare_exchange_weak(
                s,
                new | (s & QUEUED),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => s = actual,
            }
        }
        let queued = s & QUEUED != 0;
        drop(w);
        if queued {
            self.wake_head(now);
        }
    }

    /// Predicted admission instant of `n` behind the current queue.
    fn predict(&self, n: u32) -> Instant {
        let w = self.waiters.lock();
        let g = self.gcra();
        let tat = self.state.load(Ordering::Acquire) & TAT_MASK;
        self.instant(g.ready_at(tat, self.now(), w.queued_tokens + u64::from(n)))
    }

    /// First poll: admit at once (`Ok(None)`) or join the queue (`Ok(Some(id))`).
    /// With a deadline, refuses to queue when the predicted admission is later.
    fn start(&self, n: u32, deadline: Option<Instant>) -> Result<Option<u64>, AcquireError> {
        if n == 0 {
            return Ok(None);
        }
        let now = self.now();
        match self.try_take(n, now) {
            Ok(()) => return Ok(None),
            Err(Fast::Refused(Refusal::Insufficient)) => {
                return Err(AcquireError::InsufficientCapacity {
                    requested: n,
                    burst: self.burst.load(Ordering::Acquire) as u32,
                });
            }
            Err(_) => {}
        }
        self.enqueue(n, deadline)
    }

    #[cold]
    fn enqueue(&self, n: u32, deadline: Option<Instant>) -> Result<Option<u64>, AcquireError> {
        let mut w = self.waiters.lock();
        let g = self.gcra();
        if n > g.burst {
            return Err(AcquireError::InsufficientCapacity {
                requested: n,
                burst: g.burst,
            });
        }
        let now = self.now();
        let mut s = self.state.load(Ordering::Acquire);
        if w.queue.is_empty() {
            // Re-check under the lock: nobody can queue ahead of us now.
            while let Ok(new) = g.take(s & TAT_MASK, now, n) {
                match self
                    .state
                    .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return Ok(None),
                    Err(actual) => s = actual,
                }
            }
        }
        if let Some(deadline) = deadline {
            let at = self.instant(g.ready_at(s & TAT_MASK, now, w.queued_tokens + u64::from(n)));
            if at > deadline {
                return Err(AcquireError::Timeout { retry_after: at });
            }
        }
        let id = w.next_id;
        w.next_id += 1;
        w.queued_tokens += u64::from(n);
        w.queue.insert(
            id,
            Waiter {
                n,
                waker: None,
                since: now,
            },
        );
        if w.queue.len() == 1 {
            self.state.fetch_or(QUEUED, Ordering::AcqRel);
            tracing::debug!(limiter = %self.name, "rate limiter queue started");
        }
        Ok(Some(id))
    }

    /// A queued caller's poll: done, or wait (with the wake-up instant
    /// when it is the head, which alone holds a timer). With `deadline`
    /// (ns since the origin; only on a clock moved by hand), a head whose
    /// charge instant falls after it is not admitted: `Expired`.
    ///
    /// A waker it replaces or removes is dropped after the lock is
    /// released: dropping a waker runs its owner's code, which may use this
    /// limiter (and take the lock again).
    fn poll_queued(&self, id: u64, n: u32, waker: &Waker, deadline: Option<u64>) -> Queued {
        let mut stale = None;
        let r = self.poll_queued_inner(id, n, waker, deadline, &mut stale);
        drop(stale); // unlocked
        r
    }

    /// [`poll_queued`](Self::poll_queued), which drops `stale` once this
    /// has released the lock.
    fn poll_queued_inner(
        &self,
        id: u64,
        n: u32,
        waker: &Waker,
        deadline: Option<u64>,
        stale: &mut Option<Waker>,
    ) -> Queued {
        let mut w = self.waiters.lock();
        let g = self.gcra();
        if n > g.burst {
            let next = self.remove_locked(&mut w, id, stale);
            drop(w);
            if let Some(next) = next {
                next.wake();
            }
            return Queued::Done(Err(AcquireError::InsufficientCapacity {
                requested: n,
                burst: g.burst,
            }));
        }
        let is_head = w.queue.keys().next() == Some(&id);
        if !is_head {
            if let Some(me) = w.queue.get_mut(&id) {
                *stale = store_waker(&mut me.waker, waker);
            }
            return Queued::Wait(None);
        }
        let last = w.queue.len() == 1;
        let now = self.now();
        let since = w.queue.get(&id).map_or(now, |me| me.since);
        let mut s = self.state.load(Ordering::Acquire);
        let charged = loop {
            let at = self.charged_at(g, s & TAT_MASK, now, n, since);
            match g.take(s & TAT_MASK, at, n) {
                Ok(_) if deadline.is_some_and(|d| at > d) => return Queued::Expired,
                Ok(new) => {
                    let word = if last { new } else { new | QUEUED };
                    match self.state.compare_exchange_weak(
                        s,
                        word,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => break at,
                        Err(actual) => s = actual,
                    }
                }
                Err(_) => {
                    // n <= burst was checked under this lock, so only NotUntil.
                    let at = g.ready_at(s & TAT_MASK, now, u64::from(n));
                    if let Some(me) = w.queue.get_mut(&id) {
                        *stale = store_waker(&mut me.waker, waker);
                    }
                    return Queued::Wait(Some(self.instant(at)));
                }
            }
        };
        *stale = w.queue.remove(&id).and_then(|me| me.waker);
        w.queued_tokens -= u64::from(n);
        let next = w.queue.values_mut().next().and_then(|h| {
            // It becomes the head at the instant this one was admitted.
            h.since = h.since.max(charged);
            h.waker.take()
        });
        drop(w);
        if last {
            tracing::debug!(limiter = %self.name, "rate limiter queue drained");
        }
        if let Some(next) = next {
            next.wake();
        }
        Queued::Done(Ok(()))
    }

    /// Removes a waiter (cancelled or failed); returns the new head's waker
    /// when the head left, so the caller wakes it after unlocking. The
    /// removed waiter's own waker goes to `stale`, for the caller to drop
    /// after unlocking (see [`poll_queued`](Self::poll_queued)).
    fn remove_locked(&self, w: &mut Waiters, id: u64, stale: &mut Option<Waker>) -> Option<Waker> {
        let was_head = w.queue.keys().next() == Some(&id);
        let me = w.queue.remove(&id)?;
        *stale = me.waker;
        w.queued_tokens -= u64::from(me.n);
        if w.queue.is_empty() {
            self.state.fetch_and(!QUEUED, Ordering::AcqRel);
            tracing::debug!(limiter = %self.name, "rate limiter queue drained");
            return None;
        }
        if was_head {
            let now = self.now();
            w.queue.values_mut().next().and_then(|h| {
                h.since = h.since.max(now);
                h.waker.take()
            })
        } else {
            None
        }
    }

    fn cancel(&self, id: u64) {
        let mut stale = None;
        let mut w = self.waiters.lock();
        let next = self.remove_locked(&mut w, id, &mut stale);
        drop(w);
        drop(stale); // unlocked: see `poll_queued`
        if let Some(next) = next {
            next.wake();
        }
    }

    /// Wakes the head after a refund made at `now` changed the bucket under
    /// it (which it cannot be charged before).
    fn wake_head(&self, now: u64) {
        let waker = {
            let mut w = self.waiters.lock();
            w.queue.values_mut().next().and_then(|h| {
                h.since = h.since.max(now);
                h.waker.clone()
            })
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

enum Queued {
    Done(Result<(), AcquireError>),
    Wait(Option<Instant>),
    /// The head, ready, but only after its deadline.
    Expired,
}

/// Stores `waker` in `slot` unless an equivalent one is there; returns the
/// waker it replaced, for the caller to drop after unlocking.
#[must_use = "drop the replaced waker after unlocking"]
fn store_waker(slot: &mut Option<Waker>, waker: &Waker) -> Option<Waker> {
    match slot {
        Some(w) if w.will_wake(waker) => None,
        _ => slot.replace(waker.clone()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcqState {
    Init,
    Queued(u64),
    Done,
}

/// The future returned by [`RateLimiter::acquire`].
///
/// Resolves once the tokens are taken. Dropping it before then consumes
/// nothing and frees its place in the queue. Polling it again after it
/// completed returns `Pending` (it never takes tokens twice).
///
/// # Examples
///
/// ```
/// use flowguard::rate::{Quota, RateLimiter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let limiter = RateLimiter::new(Quota::per_second(1).unwrap());
/// limiter.try_acquire(1).unwrap();
/// let waiting = limiter.acquire(1); // nothing happens until polled
/// assert_eq!(limiter.snapshot().waiters, 0);
/// waiting.await.unwrap();
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<'a, C: Clock = FastClock> {
    inner: &'a Arc<Inner<C>>,
    n: u32,
    state: AcqState,
    /// Give up once the clock reaches it. Set only with a clock moved by
    /// hand; otherwise Tokio's timer enforces deadlines around the future.
    deadline: Option<Instant>,
    /// Only the head of the queue arms this, and only on a clock that moves
    /// by itself.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// On a clock moved by hand: made before each check, so that a move
    /// after the check wakes us.
    moved: Option<Moved<'a>>,
    /// When it queued, if the wait histogram is on.
    since: Option<Instant>,
}

impl<'a, C: Clock> Future for Acquire<'a, C> {
    type Output = Result<(), AcquireError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let inner: &'a Inner<C> = this.inner;
        let by_hand = inner.clock.moves();
        // A timer that is already due lets the head re-check at once, but
        // only once per poll, so that a clock running behind Tokio's cannot
        // make this loop spin.
        #[cfg(not(loom))]
        let mut rechecked = false;
        loop {
            match this.state {
                AcqState::Done => return Poll::Pending,
                AcqState::Init => match this.inner.start(this.n, None) {
                    Ok(None) => {
                        this.state = AcqState::Done;
                        return Poll::Ready(Ok(()));
                    }
                    Ok(Some(id)) => {
                        this.state = AcqState::Queued(id);
                        this.since = inner.wait.enabled().then(|| inner.clock.now());
                    }
                    Err(e) => {
                        this.state = AcqState::Done;
                        return Poll::Ready(Err(e));
                    }
                },
                AcqState::Queued(id) => {
                    if let Some(moves) = by_hand {
                        // Before the check reads the clock: see `moved`.
                        this.moved.get_or_insert_with(|| moves.moved());
                    }
                    let deadline = this.deadline.map(|d| inner.nanos_at(d));
                    let at = match inner.poll_queued(id, this.n, cx.waker(), deadline) {
                        Queued::Expired => return Poll::Ready(this.give_up(id)),
                        Queued::Done(res) => {
                            if let (Some(since), Ok(())) = (this.since.take(), &res) {
                                let now = inner.clock.now();
                                inner
                                    .wait
                                    .record_duration(now.saturating_duration_since(since));
                            }
                            this.state = AcqState::Done;
                            this.sleep = None;
                            this.moved = None;
                            return Poll::Ready(res);
                        }
                        Queued::Wait(at) => at,
                    };
                    if let Some(moved) = &mut this.moved {
                        // A clock moved by hand: the queue and the clock's
                        // moves wake us; no timer.
                        // Past the deadline, it gives up unless the queue
                        // ahead of it, admitted instant by instant, reaches
                        // it by the deadline (it is then woken in turn).
                        if this
                            .deadline
                            .is_some_and(|d| inner.clock.now() >= d && !inner.admissible(id, d))
                        {
                            return Poll::Ready(this.give_up(id));
                        }
                        if at.is_none() && this.deadline.is_none() {
                            return Poll::Pending; // not the head: the queue wakes us
                        }
                        if Pin::new(moved).poll(cx).is_ready() {
                            this.moved = None; // it moved: check again
                            continue;
                        }
                        return Poll::Pending;
                    }
                    let Some(at) = at else {
                        return Poll::Pending; // not the head: the queue wakes us
                    };
                    #[cfg(not(loom))]
                    {
                        let wake_at = tokio_wake_at(at, inner.clock.now());
                        match &mut this.sleep {
                            Some(sleep) => sleep.as_mut().reset(wake_at),
                            None => {
                                this.sleep = Some(Box::pin(tokio::time::sleep_until(wake_at)));
                            }
                        }
                        if let Some(sleep) = &mut this.sleep {
                            if sleep.as_mut().poll(cx).is_ready() {
                                if !rechecked {
                                    rechecked = true;
                                    continue;
                                }
                                // Yield, and check again on the next turn.
                                cx.waker().wake_by_ref();
                            }
                        }
                    }
                    #[cfg(loom)]
                    let _ = at; // no timer under loom: models wake by refund or the clock
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<C: Clock> Acquire<'_, C> {
    /// Leaves the queue at the deadline (on a clock moved by hand).
    fn give_up(&mut self, id: u64) -> Result<(), AcquireError> {
        self.state = AcqState::Done;
        self.moved = None;
        self.inner.cancel(id);
        Err(AcquireError::Timeout {
            retry_after: self.inner.predict(self.n),
        })
    }
}

impl<C: Clock> Drop for Acquire<'_, C> {
    fn drop(&mut self) {
        if let AcqState::Queued(id) = self.state {
            self.inner.cancel(id);
        }
    }
}

impl<C: Clock> fmt::Debug for Acquire<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("n", &self.n)
            .field("state", &self.state)
            .finish()
    }
}
