//! Time sources.
//!
//! Async shells wait with `tokio::time`, so `tokio::time::pause()` makes every
//! timing test deterministic. Where a hot path *reads* the clock (the rate
//! limiter, the breaker) it reads it through [`Clock`], so the pure cores can
//! be driven by a [`ManualClock`] without any runtime at all.
//!
//! Instants are [`tokio::time::Instant`]s, so an instant read from a clock can
//! be handed straight to `tokio::time::sleep_until`.
//!
//! Waiting for an instant of a clock depends on how the clock moves. A clock
//! that moves by itself with Tokio's time (the default, [`TokioClock`]) is
//! waited for on Tokio's timer. A clock that moves only when told to
//! ([`ManualClock`]) says so through [`Clock::notify_on_advance`]: waiters
//! then park until it is moved and re-check once per move, with no timer,
//! no busy loop and no runtime needed.

use std::fmt;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::sync::Arc;
use crate::sync::atomic::{AtomicU64, Ordering};

/// A source of the current time.
///
/// Implementations must be monotonic: `now()` never goes backwards.
///
/// # Examples
///
/// ```
/// use flowguard::clock::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_millis(5));
/// assert_eq!(clock.now() - t0, Duration::from_millis(5));
/// ```
pub trait Clock: Clone + Send + Sync + fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> Instant;

    /// For a clock that moves only when told to: the [`Notify`] on which
    /// every move calls [`notify_waiters`](Notify::notify_waiters).
    ///
    /// A primitive waiting for an instant of this clock then parks on it and
    /// re-checks after each move, instead of sleeping on Tokio's timer, which
    /// knows nothing of this clock: no busy loop, a paused runtime stays free
    /// to auto-advance, and no Tokio runtime is needed at all.
    /// [`ManualClock`] returns its own.
    ///
    /// The default, `None`, is right for a clock that moves by itself at the
    /// pace of Tokio's time, like [`TokioClock`]: waiters sleep on Tokio's
    /// timer for the time left on this clock.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::clock::{Clock, ManualClock, TokioClock};
    /// use std::time::Duration;
    ///
    /// assert!(TokioClock.notify_on_advance().is_none());
    /// let clock = ManualClock::new();
    /// let moved = clock.notify_on_advance().unwrap().notified();
    /// clock.advance(Duration::from_millis(1));
    /// futures::executor::block_on(moved); // ready: the clock moved after it was made
    /// ```
    fn notify_on_advance(&self) -> Option<&Notify> {
        None
    }
}

/// The Tokio instant to sleep until for `at` on a clock that read
/// `clock_now`: `at` itself when it is still ahead on Tokio's clock (exact
/// for [`TokioClock`]); otherwise, for a clock behind Tokio's, Tokio's now
/// plus the time left on the clock, so that a lagging clock is re-checked
/// once that much time has passed, not on every scheduler turn.
pub(crate) fn tokio_wake_at(at: Instant, clock_now: Instant) -> Instant {
    let tokio_now = Instant::now();
    if at > tokio_now {
        at
    } else {
        tokio_now + at.saturating_duration_since(clock_now)
    }
}

/// The Tokio clock: `tokio::time::Instant::now()`.
///
/// It honours `tokio::time::pause()` and `advance()` (with Tokio's
/// `test-util` feature), which is what makes paused-clock tests of rate
/// limiters and breakers exact. This is every primitive's default clock.
///
/// # Examples
///
/// ```
/// use flowguard::clock::{Clock, TokioClock};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let t = TokioClock.now();
/// assert!(TokioClock.now() >= t);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokioClock;

impl Clock for TokioClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to; clones share one time.
///
/// For tests and for driving a primitive without a runtime. Reads are a
/// single atomic load. Every move wakes the primitives waiting on this
/// clock (see [`Clock::notify_on_advance`]), which then re-check; nothing
/// waiting on it sleeps on Tokio's timer.
///
/// # Examples
///
/// ```
/// use flowguard::clock::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let other = clock.clone();
/// let start = clock.now();
/// other.advance(Duration::from_secs(1));
/// assert_eq!(clock.now(), start + Duration::from_secs(1));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    origin: Instant,
    shared: Arc<Shared>,
}

struct Shared {
    elapsed_nanos: AtomicU64,
    /// Notified (all waiters) after every move.
    moved: Notify,
}

impl ManualClock {
    /// A clock standing at the instant it was created; it does not move by itself.
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A clock standing at `origin`.
    pub fn starting_at(origin: Instant) -> Self {
        Self {
            origin,
            shared: Arc::new(Shared {
                elapsed_nanos: AtomicU64::new(0),
                moved: Notify::new(),
            }),
        }
    }

    /// Moves the clock forward by `by` (saturating at about 584 years), then
    /// wakes everything waiting on this clock.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let elapsed = &self.shared.elapsed_nanos;
        let mut cur = elapsed.load(Ordering::Acquire);
        loop {
            let next = cur.saturating_add(by);
            if next == cur {
                return; // nothing moved, nobody to wake
            }
            match elapsed.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        self.shared.moved.notify_waiters();
    }

    /// How far the clock has been advanced since it was created.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.shared.elapsed_nanos.load(Ordering::Acquire))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Instant {
        self.origin + self.elapsed()
    }

    fn notify_on_advance(&self) -> Option<&Notify> {
        Some(&self.shared.moved)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_and_monotonic() {
        let c = ManualClock::new();
        let d = c.clone();
        let t0 = c.now();
        d.advance(Duration::from_millis(3));
        c.advance(Duration::from_millis(4));
        assert_eq!(c.now() - t0, Duration::from_millis(7));
        assert_eq!(d.elapsed(), Duration::from_millis(7));
    }

    #[test]
    fn manual_clock_wakes_its_waiters_on_every_move_only() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let c = ManualClock::new();
        let mut before = Box::pin(c.notify_on_advance().unwrap().notified());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(before.as_mut().poll(&mut cx).is_pending());
        c.advance(Duration::ZERO); // no move
        assert!(before.as_mut().poll(&mut cx).is_pending());
        c.advance(Duration::from_nanos(1));
        assert_eq!(before.as_mut().poll(&mut cx), Poll::Ready(()));
        // Made before a move but never polled: still sees it.
        let unpolled = c.notify_on_advance().unwrap().notified();
        c.clone().advance(Duration::from_nanos(1));
        assert_eq!(Box::pin(unpolled).as_mut().poll(&mut cx), Poll::Ready(()));
        c.advance(Duration::MAX);
        let mut after = Box::pin(c.notify_on_advance().unwrap().notified());
        c.advance(Duration::from_secs(1)); // saturated: no move
        assert!(after.as_mut().poll(&mut cx).is_pending());
    }

    #[test]
    fn manual_clock_saturates_instead_of_overflowing() {
        let c = ManualClock::new();
        c.advance(Duration::MAX);
        c.advance(Duration::MAX);
        assert_eq!(c.elapsed(), Duration::from_nanos(u64::MAX));
    }
}
