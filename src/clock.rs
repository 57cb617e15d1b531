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
//! ([`ManualClock`]) says so through [`Clock::moves`]: waiters then park
//! until it is moved and re-check once per move, with no timer, no busy loop
//! and no runtime needed.

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Mutex, WaitList, Waiter};

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

    /// For a clock that moves only when told to: the [`Moves`] it signals
    /// after every move.
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
    /// assert!(TokioClock.moves().is_none());
    /// let clock = ManualClock::new();
    /// let moved = clock.moves().unwrap().moved();
    /// clock.advance(Duration::from_millis(1));
    /// futures::executor::block_on(moved); // ready: the clock moved after it was made
    /// ```
    fn moves(&self) -> Option<&Moves> {
        None
    }

    /// An instant to count time from: no later than any later
    /// [`now`](Self::now). A primitive reads it once, when it is made, and
    /// keeps its times as nanoseconds since it (see
    /// [`nanos_since`](Self::nanos_since)). The default is `now()`; a clock
    /// that counts from an instant of its own returns that one, so that
    /// `nanos_since` of it needs no instant arithmetic.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::clock::{Clock, ManualClock};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let epoch = clock.epoch();
    /// clock.advance(Duration::from_micros(3));
    /// assert_eq!(clock.nanos_since(epoch), 3_000);
    /// ```
    #[inline]
    fn epoch(&self) -> Instant {
        self.now()
    }

    /// Whole nanoseconds from `origin` to now: 0 when `origin` is later,
    /// `u64::MAX` after about 584 years. The default computes it from
    /// [`now`](Self::now).
    #[inline]
    fn nanos_since(&self, origin: Instant) -> u64 {
        nanos_between(origin, self.now())
    }

    /// [`nanos_since`](Self::nanos_since) when it is at most `max`, else
    /// `None`; `None` may also mean the clock cannot tell cheaply (`now`
    /// earlier than `origin`, say), and the caller then asks
    /// `nanos_since`. For a hot path that goes on only with a time in its
    /// range and takes its slow path otherwise: a clock can then skip the
    /// saturation `nanos_since` owes at both ends, and keep its common case
    /// small enough to inline. The default calls `nanos_since`.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::clock::{Clock, ManualClock};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let epoch = clock.epoch();
    /// clock.advance(Duration::from_micros(3));
    /// assert_eq!(clock.nanos_since_at_most(epoch, 5_000), Some(3_000));
    /// assert_eq!(clock.nanos_since_at_most(epoch, 2_999), None);
    /// ```
    #[inline]
    fn nanos_since_at_most(&self, origin: Instant, max: u64) -> Option<u64> {
        let n = self.nanos_since(origin);
        (n <= max).then_some(n)
    }
}

/// Whole nanoseconds from `origin` to `now`, saturating at both ends.
#[inline]
pub(crate) fn nanos_between(origin: Instant, now: Instant) -> u64 {
    let d = now.saturating_duration_since(origin);
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// The two numbers an instant is made of where `std` keeps it as a
/// `timespec` (every Unix): whole seconds of the OS's monotonic clock and
/// the nanoseconds past them. Read through the instant's derived `Hash`,
/// which feeds exactly those two fields, in that order, to the hasher: no
/// unsafe code, and everything inlines to two loads.
///
/// That this is what `Hash` feeds is `std`'s implementation, not its
/// promise: [`fields_are_exact`] checks it (once per thread), and a clock
/// whose check fails uses [`nanos_between`] instead.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Fields {
    secs: i64,
    nanos: u32,
    /// How many `i64`s, `u32`s (after the `i64`), and anything else the
    /// instant fed: 1, 1 and 0 where the shape is the expected one.
    i64s: u8,
    u32s: u8,
    others: u8,
}

impl Fields {
    #[inline]
    fn of(t: Instant) -> Self {
        let mut f = Self::default();
        t.hash(&mut f);
        f
    }

    fn has_timespec_shape(&self) -> bool {
        self.i64s == 1 && self.u32s == 1 && self.others == 0 && self.nanos < 1_000_000_000
    }
}

impl Hasher for Fields {
    fn finish(&self) -> u64 {
        0
    }
    #[inline]
    fn write(&mut self, _: &[u8]) {
        self.others = self.others.saturating_add(1);
    }
    #[inline]
    fn write_i64(&mut self, v: i64) {
        self.secs = v;
        self.i64s = self.i64s.saturating_add(1);
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.nanos = v;
        if self.i64s == 1 {
            self.u32s = self.u32s.saturating_add(1);
        } else {
            self.others = self.others.saturating_add(1);
        }
    }
    #[inline]
    fn write_u8(&mut self, _: u8) {
        self.write(&[]);
    }
    #[inline]
    fn write_u16(&mut self, _: u16) {
        self.write(&[]);
    }
    #[inline]
    fn write_u64(&mut self, _: u64) {
        self.write(&[]);
    }
    #[inline]
    fn write_u128(&mut self, _: u128) {
        self.write(&[]);
    }
    #[inline]
    fn write_usize(&mut self, _: usize) {
        self.write(&[]);
    }
    #[inline]
    fn write_i8(&mut self, _: i8) {
        self.write(&[]);
    }
    #[inline]
    fn write_i16(&mut self, _: i16) {
        self.write(&[]);
    }
    #[inline]
    fn write_i32(&mut self, _: i32) {
        self.write(&[]);
    }
    #[inline]
    fn write_i128(&mut self, _: i128) {
        self.write(&[]);
    }
    #[inline]
    fn write_isize(&mut self, _: isize) {
        self.write(&[]);
    }
}

/// [`nanos_between`] from the instants' [`Fields`]: the same value, with
/// none of `std`'s instant subtraction (a call, a `Duration` built and
/// checked, two saturating operations). Exact wherever
/// [`fields_are_exact`] holds.
///
/// The common case is [`nanos_between_fields_at_most`]'s `u64` arithmetic;
/// anything it declines (earlier instants, past its bounds) goes the
/// `i128` way, which holds any difference exactly.
#[inline]
fn nanos_between_fields(origin: Instant, now: Instant) -> u64 {
    nanos_between_fields_at_most(origin, now, u64::MAX)
        .unwrap_or_else(|| nanos_between_fields_wide(Fields::of(origin), Fields::of(now)))
}

/// [`nanos_between_fields`] for any two instants, in `i128` (which holds
/// any difference of two `i64` seconds times 10⁹): 0 when `n` is earlier,
/// `u64::MAX` past it.
#[cold]
fn nanos_between_fields_wide(o: Fields, n: Fields) -> u64 {
    let total = (i128::from(n.secs) - i128::from(o.secs)) * 1_000_000_000
        + (i128::from(n.nanos) - i128::from(o.nanos));
    if total <= 0 {
        0
    } else {
        u64::try_from(total).unwrap_or(u64::MAX)
    }
}

/// [`nanos_between_fields`] when `now` is no earlier than `origin`, less
/// than about 584 years after it, and at most `max` nanoseconds after it;
/// `None` otherwise. No saturation and no out-of-line call, so that the
/// common case inlines into a hot path (whose slow path handles `None`).
///
/// The seconds' difference `ds` is checked to be in `0..BOUND`, so
/// `ds * 10⁹ + nanos` provably stays below `u64::MAX`.
#[inline(always)]
fn nanos_between_fields_at_most(origin: Instant, now: Instant, max: u64) -> Option<u64> {
    /// `BOUND * 10⁹ + 999_999_999 <= u64::MAX`.
    const BOUND: u64 = u64::MAX / 1_000_000_000 - 1;
    let (o, n) = (Fields::of(origin), Fields::of(now));
    match n.secs.overflowing_sub(o.secs) {
        (ds, false) if (ds as u64) < BOUND => {
            // `now` earlier within `origin`'s second wraps to above
            // `u64::MAX - 10⁹`, which the clamped `max` rejects (a branch
            // fewer than a checked subtraction; the clamp folds away for a
            // constant `max`).
            let v =
                ((ds as u64) * 1_000_000_000 + u64::from(n.nanos)).wrapping_sub(u64::from(o.nanos));
            (v <= max.min(u64::MAX - 1_000_000_000)).then_some(v)
        }
        _ => None,
    }
}

/// Whether [`nanos_between_fields`] equals [`nanos_between`] on this
/// platform: the instant feeds its hasher one `i64` then one `u32` below
/// 10⁹, and on instants a known time apart (crossing a second, both
/// orders, past the `u64` clamp) both ways agree, which they do only where
/// the two fields are a `timespec`'s seconds and nanoseconds. Pure
/// arithmetic on one clock read (about 4 000 instructions), done once per
/// thread: the answer is the platform's, the same for every clock.
fn fields_are_exact() -> bool {
    thread_local! {
        static EXACT: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
    }
    EXACT.with(|exact| {
        exact.get().unwrap_or_else(|| {
            let checked = check_fields();
            exact.set(Some(checked));
            checked
        })
    })
}

/// The check behind [`fields_are_exact`].
fn check_fields() -> bool {
    let a = Instant::now();
    if !Fields::of(a).has_timespec_shape() {
        return false;
    }
    let steps = [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_nanos(999_999_999),
        Duration::from_secs(1),
        Duration::new(1, 1),
        Duration::new(7, 500_000_000),
        Duration::new(86_400, 999_999_999),
        // past u64::MAX nanoseconds (about 584.5 years): both clamp
        Duration::from_secs(600 * 366 * 86_400),
    ];
    steps.iter().all(|&d| {
        let pairs = [
            (a, a.checked_add(d)),
            (a.checked_sub(d).unwrap_or(a), Some(a)),
        ];
        pairs.into_iter().all(|(x, y)| {
            let Some(y) = y else { return true };
            Fields::of(y).has_timespec_shape()
                && nanos_between_fields(x, y) == nanos_between(x, y)
                && nanos_between_fields(y, x) == nanos_between(y, x)
        })
    })
}

/// The moves of a clock that moves only when told to, for the tasks waiting
/// on it: the clock calls [`signal`](Moves::signal) after every move, and a
/// waiter makes a [`moved`](Moves::moved) future *before* it reads the
/// clock, so that no move after its read is missed.
///
/// Written against the crate's sync facade, so the loom models check the
/// hand-off. Memory: a slot per [`Moved`] future pending at once since the
/// last signal (a dropped one frees its slot for the next).
///
/// # Examples
///
/// ```
/// use flowguard::clock::Moves;
///
/// let moves = Moves::new();
/// let moved = moves.moved();
/// moves.signal();
/// futures::executor::block_on(moved);
/// ```
#[derive(Debug, Default)]
pub struct Moves {
    waiting: Mutex<WaitList>,
}

impl Moves {
    /// A signal nobody waits on yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes every task waiting for a move. Call it after the clock moved.
    pub fn signal(&self) {
        let wakers = self.waiting.lock().signal();
        wakers.wake();
    }

    /// A future that completes at the first [`signal`](Self::signal) after
    /// this call (even one before it is first polled).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future unregisters it; the signal it waited for is not
    /// consumed (every waiter sees every signal).
    pub fn moved(&self) -> Moved<'_> {
        Moved {
            moves: self,
            waiter: self.waiting.lock().waiter(),
        }
    }
}

/// The future returned by [`Moves::moved`]. Dropping it unregisters it.
///
/// # Cancel safety
///
/// Dropping it unregisters it; nothing else changes.
///
/// # Examples
///
/// ```
/// use flowguard::clock::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let mut moved = Box::pin(clock.moves().unwrap().moved());
/// futures::executor::block_on(async {
///     assert!(futures::poll!(moved.as_mut()).is_pending()); // registered
///     clock.advance(Duration::from_millis(5));
///     moved.await; // woken by the move
/// });
/// ```
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Moved<'a> {
    moves: &'a Moves,
    waiter: Waiter,
}

impl Future for Moved<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let (ready, stale) = this.moves.waiting.lock().poll(&mut this.waiter, cx.waker());
        // A replaced waker is dropped unlocked: its drop may move the clock,
        // whose signal takes this lock.
        drop(stale);
        ready
    }
}

impl Drop for Moved<'_> {
    fn drop(&mut self) {
        let removed = self.moves.waiting.lock().remove(&mut self.waiter);
        // Dropped unlocked, as in `poll`.
        drop(removed);
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

/// `fut`'s output if it completes by `deadline`, the deadline instant
/// itself included: when the timer fires first, `fut` gets one more poll
/// after a scheduler turn, so that work due at that same instant (another
/// task's timer fired with ours: the holder of a permit, a consumer freeing
/// room, a running task ending) goes first, as `fanout` counts a future
/// done at the deadline as done. `None` when it was not done; `fut` is then
/// dropped, as on any cancellation. Every `_deadline` wait of the crate
/// ends through here.
pub(crate) async fn timeout_at_inclusive<F: Future>(
    deadline: Instant,
    fut: F,
) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    if let Ok(out) = tokio::time::timeout_at(deadline, fut.as_mut()).await {
        return Some(out);
    }
    tokio::task::yield_now().await;
    match std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
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

    /// From the instants' fields where this thread's check passed (see
    /// [`FastClock`]'s cost notes): the same value as `std`'s subtraction.
    #[inline]
    fn nanos_since(&self, origin: Instant) -> u64 {
        let now = Instant::now();
        if fields_are_exact() {
            nanos_between_fields(origin, now)
        } else {
            nanos_between(origin, now)
        }
    }
}

/// Tokio's clock, read cheaply: the default clock of the primitives that
/// read the clock on every call ([`RateLimiter`](crate::rate::RateLimiter),
/// [`KeyedRateLimiter`](crate::rate::KeyedRateLimiter),
/// [`CircuitBreaker`](crate::breaker::CircuitBreaker)).
///
/// Its instants are Tokio instants, to be handed to `tokio::time::sleep_until`
/// like [`TokioClock`]'s. Which way it reads them is chosen once, when it is
/// made ([`FastClock::new`], which every default constructor calls):
///
/// * **Made inside a multi-thread Tokio runtime** (`#[tokio::main]`'s
///   default), whose clock cannot be paused, it reads the CPU's time-stamp
///   counter through [`quanta`] and adds the elapsed nanoseconds to a Tokio
///   instant read once at creation. On
///   x86-64 with an invariant TSC that is an `rdtsc` and a multiply instead
///   of a `clock_gettime` call (see the numbers below); where the CPU has no
///   usable counter quanta reads the OS clock itself and nothing is gained.
/// * **Made anywhere else** — inside a current-thread runtime (every
///   `#[tokio::test]`; the only kind whose clock `tokio::time::pause()` can
///   stop) or outside any runtime (a test that builds its primitives before
///   the paused runtime it drives them in) — it reads
///   `tokio::time::Instant::now()` on every call, exactly like
///   [`TokioClock`]: `pause()`, `advance()` and auto-advance drive it, and
///   paused-clock tests stay exact.
///
/// # The trade-off
///
/// * A clock made inside a multi-thread runtime ignores a
///   `tokio::time::pause()` of some other, current-thread runtime it is
///   later used in (the multi-thread runtime itself cannot pause). Give
///   such a primitive a [`TokioClock`] explicitly.
/// * Primitives built outside any runtime (in `main` before the runtime
///   starts) pay for the exact Tokio read; build them inside the runtime to
///   get the counter.
/// * The counter is scaled with quanta's calibration against the OS's
///   monotonic clock, taken once per process (the first `FastClock` made
///   outside a current-thread runtime pays for it). Over hours it may drift
///   from Tokio's clock by the calibration's error; the primitives tolerate
///   that: a waiter woken by Tokio's timer a little before the instant
///   this clock promised re-checks and sleeps the rest (see
///   `tokio_wake_at`), never spinning.
/// * Across cores it relies on the counters being synchronised, as governor's
///   default clock (also quanta) does. Readers never see time before the
///   clock's creation.
/// * The first counter-reading `FastClock` in a process calibrates the
///   counter (quanta; about 0.65 ms measured on the development machine,
///   213 ms under valgrind).
///
/// # What it costs
///
/// Measured on the 2-core development machine (KVM, TSC clocksource, load
/// 4.7, so for direction only): `std::time::Instant::now()` 27 ns,
/// `tokio::time::Instant::now()` 28 ns (with Tokio's `test-util` compiled
/// in but no clock ever paused; without `test-util`, as in a user's release
/// build, it *is* `std::time::Instant::now()`; once any runtime in the
/// process has paused its clock, every Tokio read also looks up the
/// current runtime), quanta's scaled counter 16 ns.
///
/// Reading Tokio's clock, the nanoseconds since a primitive's origin are
/// worked out from the two instants' seconds and nanoseconds directly
/// (about 12 instructions) rather than by `std`'s instant subtraction
/// (about 75): the same value to the nanosecond, on every platform whose
/// instants pass a check made once per thread; elsewhere `std`'s way.
///
/// # Examples
///
/// ```
/// use flowguard::clock::{Clock, FastClock};
///
/// // In a multi-thread runtime: the counter is read.
/// let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
/// let clock = rt.block_on(async { FastClock::new() });
/// assert!(!clock.reads_tokio());
/// let t = clock.now();
/// assert!(clock.now() >= t);
/// // Outside any runtime: Tokio's clock, which a paused runtime can stop.
/// assert!(FastClock::new().reads_tokio());
///
/// // Inside a (paused) current-thread runtime: Tokio's clock.
/// let paused = tokio::runtime::Builder::new_current_thread()
///     .enable_time()
///     .start_paused(true)
///     .build()
///     .unwrap();
/// paused.block_on(async {
///     let clock = FastClock::new();
///     assert!(clock.reads_tokio());
///     let t = clock.now();
///     tokio::time::advance(std::time::Duration::from_secs(5)).await;
///     assert_eq!(clock.now() - t, std::time::Duration::from_secs(5));
/// });
/// ```
///
/// [`quanta`]: https://docs.rs/quanta
#[derive(Clone)]
pub struct FastClock {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    /// `tokio::time::Instant::now()` on every read, differences by `std`'s
    /// instant subtraction.
    Tokio,
    /// `tokio::time::Instant::now()` on every read, differences from the
    /// instants' fields ([`nanos_between_fields`]; chosen where
    /// [`fields_are_exact`]).
    TokioFields,
    /// `base` plus the counter's nanoseconds since `base_raw`.
    #[cfg(not(loom))]
    Counter {
        counter: quanta::Clock,
        base_raw: u64,
        base: Instant,
    },
}

impl FastClock {
    /// Chooses how to read time, once: the CPU's counter inside a
    /// multi-thread runtime, Tokio's clock (pausable) anywhere else.
    ///
    /// # Panics
    ///
    /// Never.
    pub fn new() -> Self {
        if !in_multi_thread_runtime() {
            return Self::tokio();
        }
        #[cfg(not(loom))]
        {
            let counter = quanta::Clock::new();
            let base = Instant::now();
            let base_raw = counter.raw();
            Self {
                mode: Mode::Counter {
                    counter,
                    base_raw,
                    base,
                },
            }
        }
        #[cfg(loom)]
        Self::tokio()
    }

    /// The clock for a primitive's timing histograms: [`new`](Self::new)
    /// when they are `on`, else Tokio's clock (nothing is timed, so there
    /// is no counter to calibrate).
    pub(crate) fn for_histograms(on: bool) -> Self {
        if on { Self::new() } else { Self::tokio() }
    }

    /// A `FastClock` that reads Tokio's clock on every call, wherever it is made.
    pub fn tokio() -> Self {
        let mode = if fields_are_exact() {
            Mode::TokioFields
        } else {
            Mode::Tokio
        };
        Self { mode }
    }

    /// Whether it reads `tokio::time::Instant::now()` on every call (and so
    /// follows a paused clock) rather than the CPU's counter.
    pub fn reads_tokio(&self) -> bool {
        matches!(self.mode, Mode::Tokio | Mode::TokioFields)
    }
}

/// A point in time read by [`FastClock::stamp`], for timing an interval
/// with the fewest instructions: the counter's raw value, or Tokio's
/// instant. No arithmetic happens until [`FastClock::elapsed_and_now_nanos`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stamp {
    Tokio(Instant),
    #[cfg(not(loom))]
    Raw(u64),
}

impl FastClock {
    /// The current time, as cheaply as this clock reads it.
    #[inline]
    pub(crate) fn stamp(&self) -> Stamp {
        match &self.mode {
            Mode::Tokio | Mode::TokioFields => Stamp::Tokio(Instant::now()),
            #[cfg(not(loom))]
            Mode::Counter { counter, .. } => Stamp::Raw(counter.raw()),
        }
    }

    /// Whole nanoseconds from `since` (a [`stamp`](Self::stamp) of this
    /// clock) to now, 0 if `since` is later; and the time now in
    /// nanoseconds from `origin`; from one read of the clock.
    /// `origin` is this clock's [`epoch`](Clock::epoch) read once when the
    /// caller was made: the counter measures from its own base, which is
    /// that epoch; Tokio's clock from `origin` itself.
    #[inline]
    pub(crate) fn elapsed_and_now_nanos(&self, since: Stamp, origin: Instant) -> (u64, u64) {
        self.between_and_now_nanos(since, self.stamp(), origin)
    }

    /// [`elapsed_and_now_nanos`](Self::elapsed_and_now_nanos) with `now`
    /// a [`stamp`](Self::stamp) the caller already read, so that one read
    /// ends several intervals (a pool task's run and the next task's wait).
    #[inline]
    pub(crate) fn between_and_now_nanos(
        &self,
        since: Stamp,
        now: Stamp,
        origin: Instant,
    ) -> (u64, u64) {
        match (&self.mode, since, now) {
            #[cfg(not(loom))]
            (
                Mode::Counter {
                    counter, base_raw, ..
                },
                Stamp::Raw(raw),
                Stamp::Raw(now),
            ) => (
                counter.delta_as_nanos(raw, now),
                counter.delta_as_nanos(*base_raw, now),
            ),
            (Mode::TokioFields, Stamp::Tokio(at), Stamp::Tokio(now)) => (
                nanos_between_fields(at, now),
                nanos_between_fields(origin, now),
            ),
            (_, Stamp::Tokio(at), Stamp::Tokio(now)) => {
                (nanos_between(at, now), nanos_between(origin, now))
            }
            // Stamps of two kinds: not both made by this clock (a
            // primitive keeps one clock for life).
            #[cfg(not(loom))]
            (_, Stamp::Raw(_), _) | (_, Stamp::Tokio(_), Stamp::Raw(_)) => {
                (0, nanos_between(origin, Instant::now()))
            }
        }
    }
}

/// Whether the calling thread is inside a multi-thread Tokio runtime, whose
/// clock cannot be paused.
fn in_multi_thread_runtime() -> bool {
    matches!(
        tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(tokio::runtime::RuntimeFlavor::MultiThread)
    )
}

impl Default for FastClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FastClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reads = if self.reads_tokio() {
            "tokio"
        } else {
            "counter"
        };
        f.debug_struct("FastClock").field("reads", &reads).finish()
    }
}

impl Clock for FastClock {
    #[inline]
    fn now(&self) -> Instant {
        match &self.mode {
            Mode::Tokio | Mode::TokioFields => Instant::now(),
            #[cfg(not(loom))]
            Mode::Counter {
                counter,
                base_raw,
                base,
            } => *base + Duration::from_nanos(counter.delta_as_nanos(*base_raw, counter.raw())),
        }
    }

    #[inline]
    fn epoch(&self) -> Instant {
        match &self.mode {
            Mode::Tokio | Mode::TokioFields => Instant::now(),
            #[cfg(not(loom))]
            Mode::Counter { base, .. } => *base,
        }
    }

    /// Only the dispatch is inline: each mode reads in a function of its
    /// own, so that the common one, Tokio's clock through the instant's
    /// fields, is a lean leaf (it saves no registers it does not use)
    /// instead of sharing one frame with the counter's path, and the
    /// caller's inlined part stays small enough not to keep the caller
    /// itself from being inlined (160 → 146 instructions a call through
    /// the per-service tower rate limit before that moved to
    /// [`nanos_since_at_most`](Clock::nanos_since_at_most)).
    #[inline]
    fn nanos_since(&self, origin: Instant) -> u64 {
        match &self.mode {
            Mode::TokioFields => tokio_fields_nanos_since(origin),
            _ => self.nanos_since_other(origin),
        }
    }

    /// Tokio's clock read and converted inline, with no saturation and no
    /// call but the read: the per-service tower rate limit's `poll_ready`
    /// then inlines whole into tower's `Oneshot` (146 → 132 instructions a
    /// call on a current-thread runtime, tower's `RateLimit` 119).
    #[inline]
    fn nanos_since_at_most(&self, origin: Instant, max: u64) -> Option<u64> {
        match &self.mode {
            Mode::TokioFields => nanos_between_fields_at_most(origin, Instant::now(), max),
            _ => {
                let n = self.nanos_since_other(origin);
                (n <= max).then_some(n)
            }
        }
    }
}

/// [`FastClock::nanos_since`] reading Tokio's clock, through the instants'
/// fields.
#[inline(never)]
fn tokio_fields_nanos_since(origin: Instant) -> u64 {
    nanos_between_fields(origin, Instant::now())
}

impl FastClock {
    /// [`Clock::nanos_since`] in the other modes: Tokio's clock through
    /// `std`'s subtraction, or the counter.
    #[inline(never)]
    fn nanos_since_other(&self, origin: Instant) -> u64 {
        match &self.mode {
            #[cfg(not(loom))]
            Mode::Counter {
                counter,
                base_raw,
                base,
            } if origin == *base => counter.delta_as_nanos(*base_raw, counter.raw()),
            _ => nanos_between(origin, self.now()),
        }
    }
}

/// A clock that moves only when told to; clones share one time.
///
/// For tests and for driving a primitive without a runtime. Reads are a
/// single atomic load. Every move wakes the primitives waiting on this
/// clock (see [`Clock::moves`]), which then re-check; nothing
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
    /// Signalled after every move.
    moves: Moves,
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
                moves: Moves::new(),
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
        self.shared.moves.signal();
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

    fn moves(&self) -> Option<&Moves> {
        Some(&self.shared.moves)
    }

    #[inline]
    fn epoch(&self) -> Instant {
        self.origin
    }

    #[inline]
    fn nanos_since(&self, origin: Instant) -> u64 {
        if origin == self.origin {
            self.shared.elapsed_nanos.load(Ordering::Acquire)
        } else {
            nanos_between(origin, self.now())
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn manual_clock_is_shared_and_monotonic() {
        let c = ManualClock::new();
        let d = c.clone();
        let t0 = c.now();
        d.advance(Duration::from_millis(3));
        c.advance(Duration::from_millis(4));
        assert_eq!(c.now() - t0, Duration::from_millis(7));
        assert_eq!(d.elapsed(), Duration::from_millis(7));
        assert_eq!(c.epoch(), t0);
        assert_eq!(d.nanos_since(c.epoch()), 7_000_000);
        assert_eq!(d.nanos_since(t0 + Duration::from_millis(2)), 5_000_000);
        assert_eq!(d.nanos_since(t0 + Duration::from_millis(9)), 0);
    }

    #[test]
    fn manual_clock_wakes_its_waiters_on_every_move_only() {
        let c = ManualClock::new();
        let moves = c.moves().unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut before = moves.moved();
        assert!(Pin::new(&mut before).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut before).poll(&mut cx).is_pending());
        assert_eq!(moves.waiting.lock().len(), 1, "one entry per future");
        c.advance(Duration::ZERO); // no move
        assert!(Pin::new(&mut before).poll(&mut cx).is_pending());
        c.advance(Duration::from_nanos(1));
        assert_eq!(Pin::new(&mut before).poll(&mut cx), Poll::Ready(()));
        // Made before a move but never polled: still sees it.
        let mut unpolled = moves.moved();
        c.clone().advance(Duration::from_nanos(1));
        assert_eq!(Pin::new(&mut unpolled).poll(&mut cx), Poll::Ready(()));
        // A dropped waiter leaves nothing behind.
        let mut dropped = moves.moved();
        assert!(Pin::new(&mut dropped).poll(&mut cx).is_pending());
        drop(dropped);
        assert!(moves.waiting.lock().is_empty());
        c.advance(Duration::MAX);
        let mut after = moves.moved();
        c.advance(Duration::from_secs(1)); // saturated: no move
        assert!(Pin::new(&mut after).poll(&mut cx).is_pending());
    }

    /// A waker whose drop moves the clock it waits on.
    struct ClockInWaker(ManualClock);

    impl std::task::Wake for ClockInWaker {
        fn wake(self: std::sync::Arc<Self>) {}
    }

    impl Drop for ClockInWaker {
        fn drop(&mut self) {
            self.0.advance(Duration::from_nanos(1));
        }
    }

    /// tokio's `release_permits_at_drop` (semaphore_batch.rs), applied to
    /// a clock's waiters: a `Moved` future re-polled with a new waker, or
    /// dropped, drops its old waker; that waker's drop may move the clock,
    /// whose signal takes the same lock. Run on its own thread, so that a
    /// deadlock fails the test instead of hanging it.
    #[test]
    fn a_dropped_moved_waker_may_move_the_clock() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let c = ManualClock::new();
            let waker = || Waker::from(std::sync::Arc::new(ClockInWaker(c.clone())));
            let moves = c.moves().unwrap();
            let mut moved = moves.moved();
            for _ in 0..2 {
                // The second poll replaces (drops) the first waker, which
                // moves the clock.
                let w = waker();
                assert!(
                    Pin::new(&mut moved)
                        .poll(&mut Context::from_waker(&w))
                        .is_pending()
                );
            }
            let mut cx = Context::from_waker(Waker::noop());
            assert_eq!(Pin::new(&mut moved).poll(&mut cx), Poll::Ready(()));
            // Dropped while registered: its waker is dropped, and moves it.
            let mut cancelled = moves.moved();
            let w = waker();
            assert!(
                Pin::new(&mut cancelled)
                    .poll(&mut Context::from_waker(&w))
                    .is_pending()
            );
            drop(w);
            let before = c.elapsed();
            drop(cancelled);
            assert_eq!(c.elapsed(), before + Duration::from_nanos(1));
            assert!(moves.waiting.lock().is_empty());
            let _ = done_tx.send(());
        });
        match done_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(()) => t.join().unwrap(),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::panic::resume_unwind(t.join().unwrap_err())
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("deadlocked"),
        }
    }

    #[test]
    fn moves_are_send_sync_unpin() {
        fn check<T: Send + Sync + Unpin>() {}
        check::<Moves>();
        check::<Moved<'static>>();
        check::<ManualClock>();
    }

    #[test]
    fn fast_clock_in_a_multi_thread_runtime_counts_from_its_epoch() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let c = rt.block_on(async { FastClock::new() });
        assert!(!c.reads_tokio());
        let epoch = c.epoch();
        let a = c.nanos_since(epoch);
        let t = c.now();
        let b = c.nanos_since(epoch);
        assert!(a <= b, "never goes back on one thread");
        assert!(t >= epoch);
        // The epoch shortcut and the general path agree (within the reads).
        let via_now = nanos_between(epoch, t);
        assert!(a <= via_now && via_now <= b, "{a} <= {via_now} <= {b}");
        // Another origin takes the general path.
        let later = epoch + Duration::from_secs(3600);
        assert_eq!(c.nanos_since(later), 0);
        assert!(c.nanos_since(epoch - Duration::from_secs(1)) >= 1_000_000_000);
        assert_eq!(format!("{c:?}"), "FastClock { reads: \"counter\" }");
    }

    #[test]
    fn stamps_time_an_interval_on_either_reading() {
        // Tokio's reading: a paused runtime moves it exactly.
        let c = FastClock::tokio();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let origin = c.epoch();
            tokio::time::advance(Duration::from_millis(2)).await;
            let s = c.stamp();
            assert!(matches!(s, Stamp::Tokio(_)));
            tokio::time::advance(Duration::from_millis(7)).await;
            assert_eq!(c.elapsed_and_now_nanos(s, origin), (7_000_000, 9_000_000));
            // A stamp from the future reads 0.
            let later = Stamp::Tokio(Instant::now() + Duration::from_secs(1));
            assert_eq!(c.elapsed_and_now_nanos(later, origin).0, 0);
        });
        // The counter's reading: raw stamps, monotone, and they agree with
        // the clock's own instants.
        let mt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let c = mt.block_on(async { FastClock::new() });
        let origin = c.epoch();
        let t0 = c.now();
        let s = c.stamp();
        assert!(matches!(s, Stamp::Raw(_)));
        let (waited, now) = c.elapsed_and_now_nanos(s, origin);
        let t1 = c.now();
        assert!(waited <= nanos_between(t0, t1), "{waited}");
        // The time now, from the clock's own epoch: between the instants
        // read around it.
        assert!(nanos_between(origin, t0) <= now && now <= nanos_between(origin, t1));
        // A raw stamp read by a Tokio-reading clock is not its own: 0.
        assert_eq!(FastClock::tokio().elapsed_and_now_nanos(s, origin).0, 0);
    }

    #[test]
    fn fast_clock_outside_a_runtime_reads_tokio_so_a_paused_runtime_drives_it() {
        let c = FastClock::new();
        assert!(c.reads_tokio());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let epoch = c.epoch();
            tokio::time::advance(Duration::from_secs(2)).await;
            assert_eq!(c.nanos_since(epoch), 2_000_000_000);
        });
        let mt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let _in = mt.enter();
        assert!(!FastClock::new().reads_tokio());
        assert!(FastClock::tokio().reads_tokio());
    }

    #[tokio::test(start_paused = true)]
    async fn fast_clock_in_a_current_thread_runtime_follows_the_paused_clock() {
        let c = FastClock::new();
        assert!(c.reads_tokio());
        let epoch = c.epoch();
        assert_eq!(epoch, Instant::now());
        tokio::time::advance(Duration::from_nanos(1_500)).await;
        assert_eq!(c.nanos_since(epoch), 1_500);
        assert_eq!(c.now(), epoch + Duration::from_nanos(1_500));
    }

    /// `TokioClock::nanos_since` (the fields' difference here) follows the
    /// paused clock to the nanosecond, across a second's boundary, and is 0
    /// for an origin in the future.
    #[tokio::test(start_paused = true)]
    async fn tokio_clock_nanos_since_follows_the_paused_clock() {
        let c = TokioClock;
        let origin = c.now();
        tokio::time::advance(Duration::from_nanos(1_500)).await;
        assert_eq!(c.nanos_since(origin), 1_500);
        tokio::time::advance(Duration::new(1, 999_999_000)).await;
        assert_eq!(c.nanos_since(origin), 2_000_000_500);
        assert_eq!(c.nanos_since(c.now() + Duration::from_nanos(1)), 0);
        assert_eq!(c.nanos_since(origin), reference(origin, c.now()));
    }

    /// The reference: `Duration::as_nanos` of the saturating difference,
    /// clamped to `u64`.
    fn reference(origin: Instant, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
    }

    #[cfg(unix)]
    #[test]
    fn instant_fields_are_a_timespec_here() {
        assert!(check_fields());
        assert!(fields_are_exact());
        assert!(fields_are_exact()); // the cached answer
        let f = Fields::of(Instant::now());
        assert!(f.has_timespec_shape(), "{f:?}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let c = rt.block_on(async { FastClock::new() });
        assert!(matches!(c.mode, Mode::TokioFields));
        assert!(matches!(FastClock::tokio().mode, Mode::TokioFields));
    }

    #[test]
    fn a_hasher_fed_anything_else_rejects_the_shape() {
        let mut f = Fields::default();
        42_u64.hash(&mut f);
        assert!(!f.has_timespec_shape());
        let mut f = Fields::default();
        (7_u32, -1_i64).hash(&mut f); // the u32 before the i64
        assert!(!f.has_timespec_shape());
        let mut f = Fields::default();
        (1_i64, 2_u32, 3_u8).hash(&mut f); // one field too many
        assert!(!f.has_timespec_shape());
        let mut f = Fields::default();
        (1_i64, 1_000_000_000_u32).hash(&mut f); // not a nanosecond count
        assert!(!f.has_timespec_shape());
        let mut f = Fields::default();
        (1_i64, 999_999_999_u32).hash(&mut f);
        assert!(f.has_timespec_shape());
        assert_eq!(f.finish(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn fields_difference_is_exact_at_the_edges() {
        let a = Instant::now();
        let ns = Duration::from_nanos;
        // Where the origin is: 0; before it: 0, however far.
        assert_eq!(nanos_between_fields(a, a), 0);
        assert_eq!(nanos_between_fields(a, a - ns(1)), 0);
        assert_eq!(nanos_between_fields(a, a - Duration::from_secs(3)), 0);
        assert_eq!(nanos_between_fields(a + Duration::from_secs(1), a), 0);
        // One nanosecond, and across every nanosecond borrow of a second.
        assert_eq!(nanos_between_fields(a, a + ns(1)), 1);
        for d in [999_999_999, 1_000_000_000, 1_000_000_001, 1_999_999_999] {
            assert_eq!(nanos_between_fields(a, a + ns(d)), d);
            let x = a + ns(d % 1_000_000_000);
            assert_eq!(nanos_between_fields(x, x + ns(d)), d, "from {d}");
        }
        // The largest count, and past it: u64::MAX (about 584.5 years).
        assert_eq!(nanos_between_fields(a, a + ns(u64::MAX)), u64::MAX);
        assert_eq!(nanos_between_fields(a, a + ns(u64::MAX - 1)), u64::MAX - 1);
        let past = a + ns(u64::MAX) + ns(1);
        assert_eq!(nanos_between_fields(a, past), u64::MAX);
        let far = a + Duration::from_secs(1_000 * 366 * 86_400);
        assert_eq!(nanos_between_fields(a, far), u64::MAX);
        // Either side of the narrow path's bound on whole seconds, from an
        // origin late in its second and one early in it.
        let bound = u64::MAX / 1_000_000_000 - 1;
        for o in [a, a + ns(999_999_999 - u64::from(Fields::of(a).nanos))] {
            for secs in [bound - 1, bound, bound + 1] {
                for nanos in [0, 1, 999_999_999] {
                    let n = o + Duration::new(secs, nanos);
                    assert_eq!(
                        nanos_between_fields(o, n),
                        reference(o, n),
                        "{secs}.{nanos}"
                    );
                    assert_eq!(nanos_between_fields(n, o), 0);
                }
            }
        }
        // The wide path on its own: earlier seconds, and the same second.
        let (fa, fb) = (Fields::of(a), Fields::of(a + ns(1_500_000_000)));
        assert_eq!(nanos_between_fields_wide(fb, fa), 0);
        assert_eq!(nanos_between_fields_wide(fa, fb), 1_500_000_000);
        assert_eq!(nanos_between_fields_wide(fa, fa), 0);
        for (o, n) in [(a, a + ns(1)), (a, past), (a, far), (a + ns(5), a)] {
            assert_eq!(nanos_between_fields(o, n), reference(o, n));
            assert_eq!(nanos_between(o, n), reference(o, n));
        }
    }

    #[cfg(unix)]
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2048, ..Default::default() })]

        #[test]
        fn fields_difference_matches_as_nanos(
            base in 0_u32..1_000_000_000,
            (xs, xn) in (secs(), 0_u32..1_000_000_000),
            (ys, yn) in (secs(), 0_u32..1_000_000_000),
        ) {
            // Offsets from nanoseconds to past the u64 clamp, both orders.
            let a = Instant::now() + Duration::from_nanos(u64::from(base));
            let (o, n) = (a + Duration::new(xs, xn), a + Duration::new(ys, yn));
            proptest::prop_assert_eq!(nanos_between_fields(o, n), reference(o, n));
            proptest::prop_assert_eq!(nanos_between_fields(n, o), reference(n, o));
            proptest::prop_assert_eq!(nanos_between(o, n), reference(o, n));
            // The hot path's form: the exact value or `None`, and `None`
            // only above `max` or for `now` earlier than `origin`.
            for (o, n) in [(o, n), (n, o)] {
                let exact = reference(o, n);
                for max in [0, exact.saturating_sub(1), exact, u64::MAX] {
                    let fast = nanos_between_fields_at_most(o, n, max);
                    if let Some(v) = fast {
                        proptest::prop_assert_eq!(v, exact);
                        proptest::prop_assert!(v <= max);
                    }
                    if exact <= max && n >= o && exact < 500 * 365 * 86_400 * 1_000_000_000 {
                        proptest::prop_assert_eq!(fast, Some(exact));
                    }
                }
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn fields_difference_at_most_is_exact_or_none() {
        let a = Instant::now();
        let ns = Duration::from_nanos;
        assert_eq!(nanos_between_fields_at_most(a, a, 0), Some(0));
        assert_eq!(nanos_between_fields_at_most(a, a + ns(7), 7), Some(7));
        assert_eq!(nanos_between_fields_at_most(a, a + ns(7), 6), None);
        for d in [999_999_999, 1_000_000_000, 1_000_000_001, 1_999_999_999] {
            let x = a + ns(d % 1_000_000_000);
            assert_eq!(
                nanos_between_fields_at_most(x, x + ns(d), u64::MAX),
                Some(d)
            );
        }
        // Earlier within the origin's second (the wrapping subtraction) and
        // in an earlier second: `None`, whatever the bound.
        for max in [0, 1_000_000_000, u64::MAX - 1_000_000_000, u64::MAX] {
            assert_eq!(nanos_between_fields_at_most(a + ns(1), a, max), None);
            assert_eq!(
                nanos_between_fields_at_most(a + Duration::from_secs(2), a, max),
                None
            );
        }
        // Past the narrow path's bound: `None` (the caller asks `nanos_since`).
        let far = a + Duration::from_secs(1_000 * 366 * 86_400);
        assert_eq!(nanos_between_fields_at_most(a, far, u64::MAX), None);
    }

    #[tokio::test(start_paused = true)]
    async fn nanos_since_at_most_agrees_with_nanos_since_on_fast_and_manual_clocks() {
        let fast = FastClock::tokio();
        let manual = ManualClock::new();
        let (fo, mo) = (fast.epoch(), manual.epoch());
        for step in [0, 1, 999_999_999, 1_000_000_001, 3_600_000_000_000] {
            tokio::time::advance(Duration::from_nanos(step)).await;
            manual.advance(Duration::from_nanos(step));
            for (n, at_most) in [
                (
                    fast.nanos_since(fo),
                    fast.nanos_since_at_most(fo, u64::MAX >> 3),
                ),
                (
                    manual.nanos_since(mo),
                    manual.nanos_since_at_most(mo, u64::MAX >> 3),
                ),
            ] {
                assert_eq!(at_most, Some(n));
            }
            let n = fast.nanos_since(fo);
            if n > 0 {
                assert_eq!(fast.nanos_since_at_most(fo, n - 1), None);
            }
        }
        // An origin later than now: `None`, never a wrapped value.
        let later = Instant::now() + Duration::from_millis(5);
        assert_eq!(fast.nanos_since_at_most(later, u64::MAX), None);
        assert_eq!(fast.nanos_since(later), 0);
    }

    /// Whole seconds of an offset: none, a few, or up to about 950 years.
    #[cfg(unix)]
    fn secs() -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        prop_oneof![Just(0_u64), 0_u64..3, 0_u64..30_000_000_000]
    }

    #[test]
    fn manual_clock_saturates_instead_of_overflowing() {
        let c = ManualClock::new();
        c.advance(Duration::MAX);
        c.advance(Duration::MAX);
        assert_eq!(c.elapsed(), Duration::from_nanos(u64::MAX));
    }
}
