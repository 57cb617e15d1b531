//! A fair, weighted, resizable async semaphore: the engine under every
//! bounded thing in flowguard.
//!
//! [`Semaphore`] hands out permits as RAII guards ([`Permit`],
//! [`OwnedPermit`]) that return to it when dropped. Compared with
//! `tokio::sync::Semaphore` it adds live resizing ([`Semaphore::set_capacity`]),
//! typed refusal of impossible requests ([`AcquireError::TooLarge`] instead of
//! waiting forever or panicking), timeouts, metrics, and a lock-free release
//! path when nobody waits.
//!
//! # Fairness
//!
//! Strictly first-in, first-out, weights included: a waiter is never
//! overtaken by one that arrived later, and `try_acquire*` never barges past
//! queued waiters. The price of strict FIFO is head-of-line blocking: while
//! the head of the queue waits for, say, 10 permits, a later request for 1
//! waits too, even if 1 permit is free. Permits returned in the meantime are
//! assigned to the head as they arrive, so it makes progress.
//!
//! Permits are **assigned at release**, not when the waiter next runs: a
//! released permit goes to the oldest waiter at once, and from then on it
//! is that waiter's, whether or not its task has resumed. A permit
//! released after that, with nobody left waiting, is free to anyone. So a
//! task that was just granted a permit, gives it back and asks again gets
//! it again at once, even while a waiter granted with it has not run yet.
//! asyncio (since 3.12) makes such a re-acquire wait behind the woken
//! waiters (its `test_acquire_fifo_order_2` logs 1, 2, 3, 4 where this
//! logs 1, 2, 4, 3). No waiter is overtaken in the order permits are
//! handed out either way; here nobody waits while a permit lies free.
//!
//! Built with [`Semaphore::builder`], a semaphore can bound its queue
//! ([`queue_limit`](SemaphoreBuilder::queue_limit), .NET's `QueueLimit`,
//! counted in waiters): a full queue refuses newcomers at once with
//! [`AcquireError::QueueFull`], or, with [`QueueOrder::NewestFirst`]
//! (.NET's `NewestFirst`), serves the newest waiter first and evicts the
//! oldest ([`AcquireError::Evicted`]) to make room. Newest-first suits
//! latency-sensitive work where an old request is likely abandoned.
//!
//! # Memory ordering
//!
//! Releasing permits *happens before* the acquire that obtains them: writes
//! made while holding a permit are visible to the next holder.
//!
//! # Example
//!
//! ```
//! use flowguard::semaphore::Semaphore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let sem = Semaphore::new(2);
//! let a = sem.acquire().await.unwrap();
//! let b = sem.try_acquire().unwrap();
//! assert!(sem.try_acquire().is_err()); // both permits are out
//! drop(a);
//! assert_eq!(sem.available(), 1);
//! # drop(b);
//! # }
//! ```

mod core;
mod error;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

pub use error::AcquireError;

/// Which queued acquirer is served first, and who gives way when a bounded
/// queue is full.
///
/// # Examples
///
/// ```
/// use flowguard::semaphore::{AcquireError, QueueOrder, Semaphore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let sem = Semaphore::builder()
///     .capacity(1)
///     .queue_limit(1)
///     .order(QueueOrder::NewestFirst)
///     .build()
///     .unwrap();
/// let held = sem.acquire().await.unwrap();
/// let mut old = Box::pin(sem.acquire());
/// assert!(futures::poll!(old.as_mut()).is_pending()); // queued
/// let new = sem.acquire(); // the queue is full: the oldest waiter gives way
/// # let mut new = Box::pin(new);
/// # assert!(futures::poll!(new.as_mut()).is_pending());
/// assert_eq!(old.await.unwrap_err(), AcquireError::Evicted);
/// drop(held);
/// assert!(new.await.is_ok());
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum QueueOrder {
    /// First in, first out; a full queue refuses newcomers
    /// ([`AcquireError::QueueFull`]). The default.
    #[default]
    OldestFirst,
    /// Last in, first out; a full queue evicts its oldest waiter
    /// ([`AcquireError::Evicted`]) to make room for the newcomer.
    NewestFirst,
}

use self::core::{Failure, WaitQueue, WaiterKey, WakeList};
use crate::clock::{FastClock, Stamp};
use crate::histogram::{HistogramSnapshot, Recorder, Timed};
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::{Arc, Mutex, StdArc};
use crate::{ConfigError, ConfigErrorKind};

/// The largest capacity a [`Semaphore`] can have: `usize::MAX >> 3`.
pub const MAX_PERMITS: usize = usize::MAX >> 3;

// The state word:
//
// | bits        | meaning                                                      |
// |-------------|--------------------------------------------------------------|
// | 0 (CLOSED)  | closed: every acquire fails                                  |
// | 1 (SLOW)    | returned permits must go through the locked queue: waiters   |
// |             | are queued or a shrink left debt. While set, the free count  |
// |             | is 0 and only the lock holder changes the word.               |
// | 2..         | free permits                                                 |
//
// Fast paths (uncontended acquire and release) are one CAS on this word;
// everything else takes the queue lock.
const CLOSED: usize = 1;
const SLOW: usize = 2;
const SHIFT: u32 = 2;

struct Inner {
    state: AtomicUsize,
    /// Mirrors of queue fields for lock-free reads; written under the lock.
    capacity: AtomicUsize,
    waiters: AtomicUsize,
    queue: Mutex<WaitQueue>,
    /// Time queued, of the acquires that had to queue.
    wait: Recorder,
    /// What the wait is timed with, while the wait histogram is on: a
    /// [`FastClock`] made with the semaphore (the CPU's counter inside a
    /// multi-thread runtime, Tokio's pausable clock elsewhere), read as
    /// [`Stamp`]s.
    clock: FastClock,
    /// The clock's epoch when the semaphore was made: the sampling
    /// windows' time origin (see `Recorder::record_sampled`).
    origin: Instant,
    /// For `tracing` events: the builder's name, or "semaphore".
    name: StdArc<str>,
}

/// A fair, weighted, resizable async semaphore. Clones share one semaphore.
///
/// See the [module documentation](self) for fairness and ordering guarantees.
///
/// # Examples
///
/// Bound concurrency across tasks:
///
/// ```
/// use flowguard::semaphore::Semaphore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let sem = Semaphore::new(3);
/// let mut tasks = Vec::new();
/// for i in 0..10 {
///     let sem = sem.clone();
///     tasks.push(tokio::spawn(async move {
///         let _permit = sem.acquire().await.unwrap();
///         i * 2 // at most 3 of these bodies run at once
///     }));
/// }
/// let mut sum = 0;
/// for t in tasks {
///     sum += t.await.unwrap();
/// }
/// assert_eq!(sum, 90);
/// # }
/// ```
///
/// Weighted permits and live resizing:
///
/// ```
/// use flowguard::semaphore::Semaphore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bytes = Semaphore::new(1024);
/// let big = bytes.acquire_many(1000).await.unwrap();
/// assert_eq!(bytes.available(), 24);
/// bytes.set_capacity(2048).unwrap(); // growing wakes waiters at once
/// assert_eq!(bytes.available(), 1048);
/// drop(big);
/// assert_eq!(bytes.available(), 2048);
/// # }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    inner: Arc<Inner>,
}

/// A point-in-time view of a [`Semaphore`].
///
/// # Examples
///
/// ```
/// use flowguard::semaphore::Semaphore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let sem = Semaphore::new(2);
/// let _held = sem.acquire().await.unwrap();
/// let m = sem.metrics();
/// assert_eq!((m.capacity, m.available, m.waiters, m.closed), (2, 1, 0, false));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SemaphoreMetrics {
    /// The configured number of permits.
    pub capacity: usize,
    /// Permits free right now.
    pub available: usize,
    /// Acquirers queued and waiting.
    pub waiters: usize,
    /// Whether [`Semaphore::close`] was called.
    pub closed: bool,
    /// How long acquires that had to queue waited for their permits
    /// (nanoseconds), from queueing to being granted. Acquires served at
    /// once are not in it (they read no clock), nor are those that failed
    /// or were dropped. Kept only when built with
    /// [`histograms(true)`](SemaphoreBuilder::histograms). Waits are
    /// **sampled** once more than about 128 queue per millisecond: a timed
    /// wait drawn at 1 in 2^k counts as 2^k waits, so `count`, `sum` and
    /// quantiles estimate all queued acquires and `min`/`max` are those of
    /// the timed ones (see [sampled timing](crate::histogram#sampled-timing);
    /// [`histogram_max_one_in(1)`](SemaphoreBuilder::histogram_max_one_in)
    /// times every one).
    pub wait: HistogramSnapshot,
}

impl Semaphore {
    /// A builder for a semaphore with a bounded queue or newest-first
    /// order; see [`SemaphoreBuilder`].
    pub fn builder() -> SemaphoreBuilder {
        SemaphoreBuilder {
            capacity: None,
            queue_limit: None,
            order: QueueOrder::OldestFirst,
            histograms: false,
            histogram_max_one_in: crate::histogram::DEFAULT_MAX_ONE_IN,
            name: None,
        }
    }

    fn with_queue(capacity: usize, queue: WaitQueue, histograms: bool, max_one_in: u32) -> Self {
        let clock = FastClock::for_histograms(histograms);
        let origin = crate::clock::Clock::epoch(&clock);
        Self {
            inner: Arc::new(Inner {
                state: AtomicUsize::new(capacity << SHIFT),
                capacity: AtomicUsize::new(capacity),
                waiters: AtomicUsize::new(0),
                queue: Mutex::new(queue),
                wait: Recorder::with_sampling(histograms, max_one_in),
                clock,
                origin,
                name: StdArc::from("semaphore"),
            }),
        }
    }

    /// Creates a semaphore with `capacity` permits.
    ///
    /// A capacity above [`MAX_PERMITS`] is clamped to it; use
    /// [`try_new`](Self::try_new) to have it refused instead.
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = flowguard::semaphore::Semaphore::new(4);
    /// assert_eq!(sem.capacity(), 4);
    /// ```
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.min(MAX_PERMITS);
        Self::with_queue(capacity, WaitQueue::new(capacity), false, 1)
    }

    /// Publishes a named semaphore's metrics (feature `metrics`).
    #[cfg(all(feature = "metrics", not(loom)))]
    fn export(&self, name: &str) {
        let h = crate::metrics::Handles::new("semaphore", name);
        self.export_wait(h.histogram("wait_seconds"));
        let (capacity, available, waiters) = (
            h.gauge("capacity"),
            h.gauge("available"),
            h.gauge("waiters"),
        );
        let weak = Arc::downgrade(&self.inner);
        crate::metrics::register(move || {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            capacity.set(inner.capacity.load(Ordering::Relaxed) as f64);
            available.set((inner.state.load(Ordering::Relaxed) >> SHIFT) as f64);
            waiters.set(inner.waiters.load(Ordering::Relaxed) as f64);
            true
        });
    }

    /// Forwards the wait histogram to an exported one.
    #[cfg(all(feature = "metrics", not(loom)))]
    pub(crate) fn export_wait(&self, handle: ::metrics::Histogram) {
        self.inner.wait.export_to(handle);
    }

    /// [`new`](Self::new) with the wait histogram on or off, its timing
    /// sampled at most one in `max_one_in` (a value `check_max_one_in`
    /// passed).
    pub(crate) fn with_sampled_histograms(
        capacity: usize,
        histograms: bool,
        max_one_in: u32,
    ) -> Self {
        let capacity = capacity.min(MAX_PERMITS);
        Self::with_queue(capacity, WaitQueue::new(capacity), histograms, max_one_in)
    }

    /// Creates a semaphore with `capacity` permits, refusing a capacity above
    /// [`MAX_PERMITS`].
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the field `capacity` when it is too large.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::semaphore::Semaphore;
    /// assert!(Semaphore::try_new(8).is_ok());
    /// assert_eq!(Semaphore::try_new(usize::MAX).unwrap_err().field(), "capacity");
    /// ```
    pub fn try_new(capacity: usize) -> Result<Self, ConfigError> {
        check_capacity(capacity)?;
        Ok(Self::new(capacity))
    }

    /// The configured number of permits (held, queued-for and free together).
    pub fn capacity(&self) -> usize {
        self.inner.capacity.load(Ordering::Acquire)
    }

    /// The number of permits free right now: what a `try_acquire*` could
    /// take.
    ///
    /// While acquirers are queued this is 0, even if some permits are not
    /// held by anyone: a returned permit goes to the queue (to the waiter
    /// being served, which keeps it as a partial assignment until it has
    /// all it asked for), never back to the free pool, so a later
    /// `try_acquire` cannot barge past the queue. Those permits are
    /// promised, not free. `capacity() - available()` is therefore "held or
    /// promised", not "held".
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::semaphore::Semaphore;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let sem = Semaphore::new(3);
    /// let two = sem.acquire_many(2).await.unwrap();
    /// let mut waiting = Box::pin(sem.acquire_many(3)); // needs all 3
    /// assert!(futures::poll!(waiting.as_mut()).is_pending());
    /// // The one unheld permit is promised to the waiter: none is free.
    /// assert_eq!(sem.available(), 0);
    /// drop(two);
    /// assert_eq!(waiting.await.unwrap().num_permits(), 3);
    /// # }
    /// ```
    pub fn available(&self) -> usize {
        self.inner.state.load(Ordering::Acquire) >> SHIFT
    }

    /// The number of acquirers queued and waiting.
    pub fn waiters(&self) -> usize {
        self.inner.waiters.load(Ordering::Acquire)
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) & CLOSED != 0
    }

    /// A snapshot of capacity, free permits, waiters and closed state. Lock-free.
    pub fn metrics(&self) -> SemaphoreMetrics {
        let state = self.inner.state.load(Ordering::Acquire);
        SemaphoreMetrics {
            capacity: self.capacity(),
            available: state >> SHIFT,
            waiters: self.waiters(),
            closed: state & CLOSED != 0,
            wait: self.inner.wait.snapshot(),
        }
    }

    /// Takes one permit if one is free and nobody is queued ahead.
    ///
    /// # Errors
    ///
    /// [`AcquireError::NoPermits`] when none is free (or others are queued),
    /// [`AcquireError::Closed`] after [`close`](Self::close),
    /// [`AcquireError::TooLarge`] when the capacity is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::semaphore::{AcquireError, Semaphore};
    /// let sem = Semaphore::new(1);
    /// let p = sem.try_acquire().unwrap();
    /// assert_eq!(sem.try_acquire().unwrap_err(), AcquireError::NoPermits);
    /// drop(p);
    /// assert!(sem.try_acquire().is_ok());
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, AcquireError> {
        self.try_acquire_many(1)
    }

    /// Takes `n` permits if they are free and nobody is queued ahead.
    /// `n == 0` gives an empty permit at once.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire); `TooLarge` when `n` exceeds the capacity.
    #[inline]
    pub fn try_acquire_many(&self, n: usize) -> Result<Permit<'_>, AcquireError> {
        self.inner.try_take(n)?;
        Ok(Permit {
            sem: self,
            permits: n,
        })
    }

    /// [`try_acquire`](Self::try_acquire) returning an [`OwnedPermit`] (`'static`).
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire).
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, AcquireError> {
        self.try_acquire_many_owned(1)
    }

    /// [`try_acquire_many`](Self::try_acquire_many) returning an [`OwnedPermit`].
    ///
    /// # Errors
    ///
    /// As [`try_acquire_many`](Self::try_acquire_many).
    pub fn try_acquire_many_owned(&self, n: usize) -> Result<OwnedPermit, AcquireError> {
        self.inner.try_take(n)?;
        Ok(OwnedPermit {
            sem: self.clone(),
            permits: n,
        })
    }

    /// Waits for one permit, in FIFO order.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Closed`] if the semaphore is or becomes closed;
    /// [`AcquireError::TooLarge`] at once when the capacity is 0, or when a
    /// shrink makes the request impossible while it waits.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. Dropping the future gives back any permits already
    /// assigned to it (they pass to the next waiter) and removes it from the
    /// queue; a later call queues at the back.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let sem = flowguard::semaphore::Semaphore::new(1);
    /// let permit = sem.acquire().await.unwrap();
    /// assert_eq!(permit.num_permits(), 1);
    /// # }
    /// ```
    #[inline]
    pub fn acquire(&self) -> Acquire<'_> {
        self.acquire_many(1)
    }

    /// Waits for `n` permits, in FIFO order; `n == 0` is ready at once.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire); `TooLarge` at once when `n` exceeds the capacity.
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire): partial assignments are handed back.
    #[inline]
    pub fn acquire_many(&self, n: usize) -> Acquire<'_> {
        Acquire {
            sem: self,
            waiter: Waiter::new(n),
        }
    }

    /// [`acquire`](Self::acquire) returning an [`OwnedPermit`] (`'static`,
    /// for moving into spawned tasks).
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire).
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    pub fn acquire_owned(&self) -> AcquireOwned {
        self.acquire_many_owned(1)
    }

    /// [`acquire_many`](Self::acquire_many) returning an [`OwnedPermit`].
    ///
    /// # Errors
    ///
    /// As [`acquire_many`](Self::acquire_many).
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    pub fn acquire_many_owned(&self, n: usize) -> AcquireOwned {
        AcquireOwned {
            sem: self.clone(),
            waiter: Waiter::new(n),
        }
    }

    /// Waits at most `timeout` for one permit. Free permits are taken even
    /// with a zero timeout.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire), plus [`AcquireError::TimedOut`].
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::semaphore::{AcquireError, Semaphore};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let sem = Semaphore::new(1);
    /// let _held = sem.acquire().await.unwrap();
    /// let err = sem.acquire_timeout(Duration::from_millis(50)).await.unwrap_err();
    /// assert_eq!(err, AcquireError::TimedOut);
    /// # }
    /// ```
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Permit<'_>, AcquireError> {
        self.acquire_many_timeout(1, timeout).await
    }

    /// Waits at most `timeout` for `n` permits.
    ///
    /// # Errors
    ///
    /// As [`acquire_many`](Self::acquire_many), plus [`AcquireError::TimedOut`].
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    pub async fn acquire_many_timeout(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Permit<'_>, AcquireError> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.acquire_many_deadline(n, deadline).await,
            None => self.acquire_many(n).await,
        }
    }

    /// Waits until `deadline` at most for one permit.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire), plus [`AcquireError::TimedOut`].
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    pub async fn acquire_deadline(&self, deadline: Instant) -> Result<Permit<'_>, AcquireError> {
        self.acquire_many_deadline(1, deadline).await
    }

    /// Waits until `deadline` at most for `n` permits.
    ///
    /// # Errors
    ///
    /// As [`acquire_many`](Self::acquire_many), plus [`AcquireError::TimedOut`].
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    pub async fn acquire_many_deadline(
        &self,
        n: usize,
        deadline: Instant,
    ) -> Result<Permit<'_>, AcquireError> {
        // The acquire is polled before the timer, so free permits win over
        // an elapsed deadline, and permits freed at the deadline instant
        // itself count (`timeout_at_inclusive`).
        crate::clock::timeout_at_inclusive(deadline, self.acquire_many(n))
            .await
            .unwrap_or(Err(AcquireError::TimedOut))
    }

    /// Changes the capacity while in use.
    ///
    /// Growing frees the new permits at once and wakes waiters. Shrinking
    /// never revokes held permits: it takes free permits first and retires the
    /// rest as held permits come back. Waiters whose request no longer fits
    /// fail with [`AcquireError::TooLarge`].
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `capacity` when `capacity` exceeds [`MAX_PERMITS`];
    /// nothing changes then.
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = flowguard::semaphore::Semaphore::new(4);
    /// let held = sem.try_acquire_many(3).unwrap();
    /// sem.set_capacity(2).unwrap();
    /// assert_eq!(sem.available(), 0);
    /// drop(held); // one of the three returned permits is retired
    /// assert_eq!(sem.available(), 2);
    /// ```
    pub fn set_capacity(&self, capacity: usize) -> Result<(), ConfigError> {
        self.inner.resize(|_| check_capacity(capacity))
    }

    /// Adds `n` permits to the capacity, as one step (no lost update against
    /// a concurrent resize).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `capacity` when the sum would exceed [`MAX_PERMITS`];
    /// nothing changes then.
    pub fn add_permits(&self, n: usize) -> Result<(), ConfigError> {
        self.inner
            .resize(|old| check_capacity(old.saturating_add(n)))
    }

    /// Closes the semaphore: every waiter and every later acquire fails with
    /// [`AcquireError::Closed`] at once. Held permits stay valid and return
    /// normally when dropped. Idempotent.
    ///
    /// A waiter that was already granted its permits but has not been polled
    /// since also gets `Closed`, not the permits: they go back to the
    /// semaphore during `close` (a waiter partly assigned gives back its
    /// part the same way). Tokio's semaphore also answers `Closed` there,
    /// but gets the assigned permits back only when that acquire future is
    /// dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::semaphore::{AcquireError, Semaphore};
    /// let sem = Semaphore::new(1);
    /// sem.close();
    /// assert_eq!(sem.try_acquire().unwrap_err(), AcquireError::Closed);
    /// ```
    ///
    /// A granted waiter not yet polled:
    ///
    /// ```
    /// use flowguard::semaphore::{AcquireError, Semaphore};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let sem = Semaphore::new(1);
    /// let held = sem.try_acquire().unwrap();
    /// let mut waiting = Box::pin(sem.acquire());
    /// assert!(futures::poll!(waiting.as_mut()).is_pending()); // queued
    /// drop(held); // the permit is granted to `waiting`, not yet polled
    /// sem.close();
    /// assert_eq!(sem.available(), 1); // given back by `close`
    /// assert_eq!(waiting.await.unwrap_err(), AcquireError::Closed);
    /// # }
    /// ```
    pub fn close(&self) {
        if self.inner.close() {
            tracing::debug!(semaphore = %self.inner.name, "semaphore closed");
        }
    }

    fn same(&self, other: &Semaphore) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.metrics();
        f.debug_struct("Semaphore")
            .field("capacity", &m.capacity)
            .field("available", &m.available)
            .field("waiters", &m.waiters)
            .field("closed", &m.closed)
            .finish()
    }
}

fn acquire_error(f: Failure) -> AcquireError {
    match f {
        Failure::Closed => AcquireError::Closed,
        Failure::TooLarge {
            requested,
            capacity,
        } => AcquireError::TooLarge {
            requested,
            capacity,
        },
        Failure::Evicted => AcquireError::Evicted,
    }
}

/// Configures a [`Semaphore`] with a bounded queue or newest-first order.
/// Defaults: no capacity (required), unbounded queue, oldest first.
///
/// # Examples
///
/// ```
/// use flowguard::semaphore::{AcquireError, Semaphore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // At most 2 callers may wait; the third is refused at once.
/// let sem = Semaphore::builder().capacity(1).queue_limit(2).build().unwrap();
/// let _held = sem.acquire().await.unwrap();
/// let a = Box::pin(sem.acquire());
/// let b = Box::pin(sem.acquire());
/// # let (mut a, mut b) = (a, b);
/// # assert!(futures::poll!(a.as_mut()).is_pending());
/// # assert!(futures::poll!(b.as_mut()).is_pending());
/// assert_eq!(sem.acquire().await.unwrap_err(), AcquireError::QueueFull);
/// assert_eq!(sem.waiters(), 2);
/// assert!(Semaphore::builder().build().is_err()); // capacity is required
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SemaphoreBuilder {
    capacity: Option<usize>,
    queue_limit: Option<usize>,
    order: QueueOrder,
    histograms: bool,
    histogram_max_one_in: u32,
    name: Option<String>,
}

impl SemaphoreBuilder {
    /// The number of permits (required; at most [`MAX_PERMITS`]).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// The most acquirers that may wait at once (0: none may; an acquire
    /// that cannot be served at once fails). Counted in waiters, not in
    /// permits as .NET's `QueueLimit` is: with weighted requests the number
    /// of parked tasks is what memory and latency depend on.
    pub fn queue_limit(mut self, waiters: usize) -> Self {
        self.queue_limit = Some(waiters);
        self
    }

    /// Who is served first and who gives way in a full queue.
    pub fn order(mut self, order: QueueOrder) -> Self {
        self.order = order;
        self
    }

    /// Whether to keep the [`wait`](SemaphoreMetrics::wait) histogram
    /// (default **off**, as for [`Semaphore::new`]). On, the semaphore is
    /// 17.5 KiB larger; it times every queued acquire while fewer than
    /// about 128 queue per millisecond, and a random one in up to
    /// [`histogram_max_one_in`](Self::histogram_max_one_in) above that
    /// (see [sampled timing](crate::histogram#sampled-timing)), so that
    /// the two clock reads a timed wait costs stay within a few percent of
    /// a queued acquire (`benches/histogram.rs`). It times waits with a
    /// [`FastClock`] made by `build`: the CPU's
    /// counter when built inside a multi-thread runtime, Tokio's clock
    /// (which a paused test clock stops) anywhere else. A pool's admission semaphore follows the pool's own
    /// `histograms` setting (off by default).
    pub fn histograms(mut self, on: bool) -> Self {
        self.histograms = on;
        self
    }

    /// The most events one timed wait may stand for when queued acquires
    /// are frequent (default [`DEFAULT_MAX_ONE_IN`](crate::histogram::DEFAULT_MAX_ONE_IN),
    /// 64; rounded down to a power of two); 1 times every queued acquire,
    /// at two clock reads each. See [sampled timing](crate::histogram#sampled-timing).
    /// Has no effect while [`histograms`](Self::histograms) is off.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::semaphore::Semaphore;
    ///
    /// let every = Semaphore::builder().capacity(4).histograms(true).histogram_max_one_in(1);
    /// assert!(every.build().is_ok());
    /// let err = Semaphore::builder().capacity(4).histogram_max_one_in(0).build().unwrap_err();
    /// assert_eq!(err.field(), "histogram_max_one_in");
    /// ```
    pub fn histogram_max_one_in(mut self, n: u32) -> Self {
        self.histogram_max_one_in = n;
        self
    }

    /// Names the semaphore: its `tracing` events carry the name, and with
    /// the `metrics` feature its metrics are published under it (see
    /// `flowguard::metrics`); unnamed semaphores are not.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Validates and creates the semaphore.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `capacity` (missing, or above [`MAX_PERMITS`])
    /// or `histogram_max_one_in` (0, or above
    /// [`MAX_ONE_IN_LIMIT`](crate::histogram::MAX_ONE_IN_LIMIT)).
    pub fn build(self) -> Result<Semaphore, ConfigError> {
        let Some(capacity) = self.capacity else {
            return Err(ConfigError::new(
                "semaphore",
                "capacity",
                ConfigErrorKind::Missing,
                "must be set",
            ));
        };
        let capacity = check_capacity(capacity)?;
        let max_one_in =
            crate::histogram::check_max_one_in("semaphore", self.histogram_max_one_in)?;
        let queue = WaitQueue::with_policy(capacity, self.order, self.queue_limit);
        let mut sem = Semaphore::with_queue(capacity, queue, self.histograms, max_one_in);
        if let Some(name) = self.name {
            // Before exporting: the exporter's weak reference would make
            // `get_mut` fail.
            if let Some(inner) = Arc::get_mut(&mut sem.inner) {
                inner.name = StdArc::from(name.as_str());
            }
            #[cfg(all(feature = "metrics", not(loom)))]
            sem.export(&name);
        }
        Ok(sem)
    }
}

fn check_capacity(capacity: usize) -> Result<usize, ConfigError> {
    if capacity > MAX_PERMITS {
        return Err(ConfigError::new(
            "semaphore",
            "capacity",
            ConfigErrorKind::TooLarge,
            format!("must be at most {MAX_PERMITS}, got {capacity}"),
        ));
    }
    Ok(capacity)
}

impl Inner {
    /// The lock-free attempt: succeeds only if `n` permits are free, which
    /// implies nobody is queued (see the state word).
    #[inline]
    fn try_take(&self, n: usize) -> Result<(), AcquireError> {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            if cur & CLOSED != 0 {
                return Err(AcquireError::Closed);
            }
            if n == 0 {
                return Ok(());
            }
            if cur >> SHIFT < n {
                return Err(self.refusal(n));
            }
            match self.state.compare_exchange_weak(
                cur,
                cur - (n << SHIFT),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => cur = actual,
            }
        }
    }

    #[cold]
    fn refusal(&self, n: usize) -> AcquireError {
        let capacity = self.capacity.load(Ordering::Acquire);
        if n > capacity {
            AcquireError::TooLarge {
                requested: n,
                capacity,
            }
        } else {
            AcquireError::NoPermits
        }
    }

    /// Returns permits: one CAS unless waiters or debt route them through the queue.
    #[inline]
    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            if cur & SLOW != 0 {
                return self.release_slow(n);
            }
            match self.state.compare_exchange_weak(
                cur,
                cur + (n << SHIFT),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    #[cold]
    fn release_slow(&self, n: usize) {
        let mut wakers = WakeList::default();
        {
            let mut q = self.queue.lock();
            self.release_locked(&mut q, n, &mut wakers);
        }
        wakers.wake_all();
    }

    /// Under the lock: hands `n` permits to debt and waiters; once the queue
    /// is idle, folds what is left into the free count and clears `SLOW`.
    fn release_locked(&self, q: &mut WaitQueue, n: usize, wakers: &mut WakeList) {
        let leftover = q.release(n, wakers);
        if q.is_idle() {
            let mut cur = self.state.load(Ordering::Acquire);
            loop {
                let next = (cur + (leftover << SHIFT)) & !SLOW;
                match self.state.compare_exchange_weak(
                    cur,
                    next,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(actual) => cur = actual,
                }
            }
        } else {
            debug_assert_eq!(leftover, 0);
        }
        self.waiters.store(q.waiting(), Ordering::Release);
    }

    /// The slow acquire: under the lock, either take `n` free permits or take
    /// whatever is free as a partial assignment and queue for the rest (a
    /// newest-first queue may grant it at once, or evict its oldest waiter
    /// to make room). `Ok(None)`: the permits are the caller's.
    #[cold]
    fn enqueue(&self, n: usize, cx: &mut Context<'_>) -> Result<Option<WaiterKey>, AcquireError> {
        let mut wakers = WakeList::default();
        let mut stale = None;
        let result = {
            let mut q = self.queue.lock();
            self.enqueue_locked(&mut q, n, cx, &mut wakers, &mut stale)
        };
        wakers.wake_all();
        drop(stale); // unlocked: see `WaitQueue::poll`
        result
    }

    fn enqueue_locked(
        &self,
        q: &mut WaitQueue,
        n: usize,
        cx: &mut Context<'_>,
        wakers: &mut WakeList,
        stale: &mut Option<Waker>,
    ) -> Result<Option<WaiterKey>, AcquireError> {
        let mut cur = self.state.load(Ordering::Acquire);
        if cur & CLOSED != 0 {
            return Err(AcquireError::Closed);
        }
        if n > q.capacity() {
            return Err(AcquireError::TooLarge {
                requested: n,
                capacity: q.capacity(),
            });
        }
        // A full queue: refuse (oldest-first) or evict the oldest
        // (newest-first). Either way only if the caller would have to wait.
        let mut evicted = 0;
        if q.is_full() && (cur >> SHIFT) < n {
            if q.order() == QueueOrder::OldestFirst || q.waiting() == 0 {
                return Err(AcquireError::QueueFull);
            }
            evicted = q.evict_oldest(wakers);
        }
        loop {
            let free = cur >> SHIFT;
            debug_assert!(cur & SLOW == 0 || free == 0);
            let (next, queue) = if free >= n {
                (cur - (n << SHIFT), false)
            } else {
                ((cur & CLOSED) | SLOW, true)
            };
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if !queue => {
                    // (Nobody was queued, so nobody was evicted.)
                    debug_assert_eq!(evicted, 0);
                    return Ok(None);
                }
                Ok(_) => {
                    let (key, reclaimed) = q.enqueue(n, free, cx.waker().clone());
                    // Newest-first: the displaced waiter's partial assignment
                    // and the evicted one's permits go to the newcomer first.
                    self.release_locked(q, reclaimed + evicted, wakers);
                    if let Poll::Ready(r) = q.poll(key, cx.waker(), stale) {
                        self.waiters.store(q.waiting(), Ordering::Release);
                        return r.map(|_| None).map_err(acquire_error);
                    }
                    self.waiters.store(q.waiting(), Ordering::Release);
                    return Ok(Some(key));
                }
                Err(actual) => cur = actual,
            }
        }
    }

    fn poll_queued(&self, key: WaiterKey, cx: &mut Context<'_>) -> Poll<Result<(), AcquireError>> {
        let mut stale = None;
        let r = self.queue.lock().poll(key, cx.waker(), &mut stale);
        // A replaced waker is dropped unlocked: its drop may return permits
        // here, which takes the lock.
        drop(stale);
        r.map(|r| r.map(|_| ()).map_err(acquire_error))
    }

    fn cancel(&self, key: WaiterKey) {
        let mut wakers = WakeList::default();
        let waker;
        {
            let mut q = self.queue.lock();
            let back;
            (back, waker) = q.cancel(key);
            self.release_locked(&mut q, back, &mut wakers);
        }
        wakers.wake_all();
        drop(waker); // unlocked, as in `poll_queued`
    }

    /// Sets the capacity to `target(old)` under the lock.
    fn resize(
        &self,
        target: impl FnOnce(usize) -> Result<usize, ConfigError>,
    ) -> Result<(), ConfigError> {
        let mut wakers = WakeList::default();
        let (old, capacity);
        {
            let mut q = self.queue.lock();
            old = q.capacity();
            capacity = target(old)?;
            if capacity > old {
                let free = q.grow(capacity - old);
                self.capacity.store(capacity, Ordering::Release);
                self.release_locked(&mut q, free, &mut wakers);
            } else if capacity < old {
                self.retire_locked(&mut q, old - capacity, &mut wakers);
            }
        }
        wakers.wake_all();
        if old != capacity {
            tracing::debug!(semaphore = %self.name, old, new = capacity, "semaphore resized");
        }
        Ok(())
    }

    /// Removes `by` from the capacity: free permits first, the rest becomes
    /// debt paid by permits as they return.
    fn retire_locked(&self, q: &mut WaitQueue, by: usize, wakers: &mut WakeList) {
        let mut cur = self.state.load(Ordering::Acquire);
        let took = loop {
            let take = (cur >> SHIFT).min(by);
            let mut next = cur - (take << SHIFT);
            if take < by {
                next |= SLOW;
            }
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break take,
                Err(actual) => cur = actual,
            }
        };
        let back = q.shrink(by, took, wakers);
        self.capacity.store(q.capacity(), Ordering::Release);
        self.release_locked(q, back, wakers);
    }

    fn forget(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut wakers = WakeList::default();
        {
            let mut q = self.queue.lock();
            let back = q.forget(n, &mut wakers);
            self.capacity.store(q.capacity(), Ordering::Release);
            self.release_locked(&mut q, back, &mut wakers);
        }
        wakers.wake_all();
    }

    /// Returns true if this call closed it.
    fn close(&self) -> bool {
        let mut wakers = WakeList::default();
        {
            let mut q = self.queue.lock();
            if q.is_closed() {
                return false;
            }
            self.state.fetch_or(CLOSED, Ordering::AcqRel);
            let back = q.close(&mut wakers);
            self.release_locked(&mut q, back, &mut wakers);
        }
        wakers.wake_all();
        true
    }
}

/// The state shared by [`Acquire`] and [`AcquireOwned`].
#[derive(Debug)]
struct Waiter {
    permits: usize,
    queued: Option<WaiterKey>,
    /// When it queued, if its wait is timed (histogram on, and drawn).
    since: Option<(Stamp, Timed)>,
}

impl Waiter {
    fn new(permits: usize) -> Self {
        Self {
            permits,
            queued: None,
            since: None,
        }
    }

    #[inline]
    fn poll(&mut self, inner: &Inner, cx: &mut Context<'_>) -> Poll<Result<(), AcquireError>> {
        let res = match self.queued {
            Some(key) => {
                let res = std::task::ready!(inner.poll_queued(key, cx));
                self.queued = None;
                if let (Some((since, timed)), Ok(())) = (self.since.take(), &res) {
                    let (waited, now) = inner.clock.elapsed_and_now_nanos(since, inner.origin);
                    inner.wait.record_sampled(timed, waited, now);
                }
                res
            }
            None => match inner.try_take(self.permits) {
                Err(AcquireError::NoPermits) => match inner.enqueue(self.permits, cx) {
                    Ok(Some(key)) => {
                        self.queued = Some(key);
                        self.since = inner.wait.sample().map(|t| (inner.clock.stamp(), t));
                        return Poll::Pending;
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                },
                res => res,
            },
        };
        Poll::Ready(res)
    }

    fn cancel(&mut self, inner: &Inner) {
        if let Some(key) = self.queued.take() {
            inner.cancel(key);
        }
    }
}

/// Future returned by [`Semaphore::acquire`] and [`Semaphore::acquire_many`].
///
/// Polling it again after it completed starts a new acquire.
///
/// # Cancel safety
///
/// Dropping it gives back any permits already assigned to it.
///
/// # Examples
///
/// ```
/// use flowguard::semaphore::Semaphore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let sem = Semaphore::new(1);
/// let held = sem.acquire().await.unwrap();
/// let mut next = Box::pin(sem.acquire()); // an `Acquire`
/// assert!(futures::poll!(next.as_mut()).is_pending());
/// assert_eq!(sem.waiters(), 1);
/// drop(next); // cancelled: out of the queue, nothing taken
/// assert_eq!(sem.waiters(), 0);
/// drop(held);
/// assert_eq!(sem.available(), 1);
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Acquire<'a> {
    sem: &'a Semaphore,
    waiter: Waiter,
}

impl<'a> Future for Acquire<'a> {
    type Output = Result<Permit<'a>, AcquireError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let sem = this.sem;
        this.waiter.poll(&sem.inner, cx).map(|r| {
            r.map(|()| Permit {
                sem,
                permits: this.waiter.permits,
            })
        })
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        self.waiter.cancel(&self.sem.inner);
    }
}

/// Future returned by [`Semaphore::acquire_owned`] and
/// [`Semaphore::acquire_many_owned`]; `'static`.
///
/// # Cancel safety
///
/// Dropping it gives back any permits already assigned to it.
///
/// # Examples
///
/// ```
/// use flowguard::semaphore::Semaphore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let sem = Semaphore::new(1);
/// // Owns a handle to the semaphore, so it can move into a spawned task.
/// let task = tokio::spawn(sem.acquire_owned());
/// let permit = task.await.unwrap().unwrap();
/// assert_eq!(sem.available(), 0);
/// drop(permit);
/// assert_eq!(sem.available(), 1);
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct AcquireOwned {
    sem: Semaphore,
    waiter: Waiter,
}

impl Future for AcquireOwned {
    type Output = Result<OwnedPermit, AcquireError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.waiter.poll(&this.sem.inner, cx).map(|r| {
            r.map(|()| OwnedPermit {
                sem: this.sem.clone(),
                permits: this.waiter.permits,
            })
        })
    }
}

impl Drop for AcquireOwned {
    fn drop(&mut self) {
        self.waiter.cancel(&self.sem.inner);
    }
}

/// Permits borrowed from a [`Semaphore`]; returned to it on drop.
///
/// # Examples
///
/// ```
/// let sem = flowguard::semaphore::Semaphore::new(5);
/// let mut p = sem.try_acquire_many(4).unwrap();
/// let q = p.split(1).unwrap();
/// assert_eq!((p.num_permits(), q.num_permits()), (3, 1));
/// p.merge(q).unwrap();
/// assert_eq!(p.num_permits(), 4);
/// p.forget(); // capacity shrinks by 4 for good
/// assert_eq!(sem.capacity(), 1);
/// ```
#[must_use = "dropping a permit releases it at once"]
pub struct Permit<'a> {
    sem: &'a Semaphore,
    permits: usize,
}

impl<'a> Permit<'a> {
    /// How many permits this guard holds.
    pub fn num_permits(&self) -> usize {
        self.permits
    }

    /// Keeps the permits out of circulation for good: the semaphore's
    /// capacity shrinks by their number, less what an earlier shrink
    /// already counted. After [`Semaphore::set_capacity`] lowered the
    /// capacity below what was held, the held permits owe that difference;
    /// forgetting them pays it first, so the capacity is not lowered twice
    /// for the same permits (4 held, capacity set from 4 to 2, forget all 4:
    /// capacity 0, not -2).
    pub fn forget(mut self) {
        let n = std::mem::take(&mut self.permits);
        self.sem.inner.forget(n);
    }

    /// Splits `n` permits off into a new guard; `None` if this one holds fewer.
    pub fn split(&mut self, n: usize) -> Option<Permit<'a>> {
        self.permits = self.permits.checked_sub(n)?;
        Some(Permit {
            sem: self.sem,
            permits: n,
        })
    }

    /// Absorbs `other` into this guard.
    ///
    /// # Errors
    ///
    /// Gives `other` back if it belongs to a different semaphore.
    pub fn merge(&mut self, mut other: Permit<'a>) -> Result<(), Permit<'a>> {
        if !self.sem.same(other.sem) {
            return Err(other);
        }
        self.permits += std::mem::take(&mut other.permits);
        Ok(())
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.sem.inner.release(self.permits);
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("permits", &self.permits)
            .finish()
    }
}

/// Permits owned independently of any borrow (`'static`); returned on drop.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let sem = flowguard::semaphore::Semaphore::new(1);
/// let permit = sem.acquire_owned().await.unwrap();
/// tokio::spawn(async move {
///     let _permit = permit; // released when the task ends
/// })
/// .await
/// .unwrap();
/// assert_eq!(sem.available(), 1);
/// # }
/// ```
#[must_use = "dropping a permit releases it at once"]
pub struct OwnedPermit {
    sem: Semaphore,
    permits: usize,
}

impl OwnedPermit {
    /// How many permits this guard holds.
    pub fn num_permits(&self) -> usize {
        self.permits
    }

    /// The semaphore the permits belong to.
    pub fn semaphore(&self) -> &Semaphore {
        &self.sem
    }

    /// Keeps the permits out of circulation for good; the capacity shrinks
    /// as for [`Permit::forget`] (by their number, less what an earlier
    /// shrink already counted).
    pub fn forget(mut self) {
        let n = std::mem::take(&mut self.permits);
        self.sem.inner.forget(n);
    }

    /// Splits `n` permits off into a new guard; `None` if this one holds fewer.
    pub fn split(&mut self, n: usize) -> Option<OwnedPermit> {
        self.permits = self.permits.checked_sub(n)?;
        Some(OwnedPermit {
            sem: self.sem.clone(),
            permits: n,
        })
    }

    /// Absorbs `other` into this guard.
    ///
    /// # Errors
    ///
    /// Gives `other` back if it belongs to a different semaphore.
    pub fn merge(&mut self, mut other: OwnedPermit) -> Result<(), OwnedPermit> {
        if !self.sem.same(&other.sem) {
            return Err(other);
        }
        self.permits += std::mem::take(&mut other.permits);
        Ok(())
    }
}

impl Drop for OwnedPermit {
    #[inline]
    fn drop(&mut self) {
        self.sem.inner.release(self.permits);
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("permits", &self.permits)
            .finish()
    }
}
