//! Time sources.
//!
//! Async shells wait with `tokio::time`, so `tokio::time::pause()` makes every
//! timing test deterministic. Where a hot path *reads* the clock (the rate
//! limiter, the breaker) it reads it through [`Clock`], so the pure cores can
//! be driven by a [`ManualClock`] without any runtime at all.
//!
//! Instants are [`tokio::time::Instant`]s, so an instant read from a clock can
//! be handed straight to `tokio::time::sleep_until`.

use std::fmt;
use std::time::Duration;

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
/// single atomic load.
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
    elapsed_nanos: Arc<AtomicU64>,
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
            elapsed_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the clock forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let mut cur = self.elapsed_nanos.load(Ordering::Acquire);
        loop {
            let next = cur.saturating_add(by);
            match self.elapsed_nanos.compare_exchange_weak(
                cur,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// How far the clock has been advanced since it was created.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos.load(Ordering::Acquire))
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
    fn manual_clock_saturates_instead_of_overflowing() {
        let c = ManualClock::new();
        c.advance(Duration::MAX);
        c.advance(Duration::MAX);
        assert_eq!(c.elapsed(), Duration::from_nanos(u64::MAX));
    }
}
