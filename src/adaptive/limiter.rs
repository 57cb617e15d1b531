//! `AdaptiveLimiter`: the shared state (limit, backlog, partitions) and the
//! async shell (`acquire`, `try_acquire`, the permit).
//!
//! The current limit, the number of permits held, whether anyone waits
//! and a count of untimed successes live in one atomic word (`state`: the
//! held count in bits 0–23, the *queued* flag in bit 24, the limit in bits
//! 25–48, the untimed successes, wrapping, in bits 49–63). Taking a permit
//! is one compare-and-swap of that word (refused while the flag is set or
//! the count has reached the limit), returning one is one `fetch_sub`, or
//! for an untimed success one `fetch_add` that also counts it; a change of
//! the limit rewrites its bits, so a shrink never revokes a held permit and
//! no permit is handed out while as many as the limit are held. (The first
//! version resized a crate `Semaphore`; its owned permit, the separate
//! in-flight counter and a lock on every release cost four times a plain
//! semaphore's acquire and release, the issue allows 1.5×.)
//!
//! Timing: while the algorithm's [`timing_stride`](LimitAlgorithm::timing_stride)
//! is `n > 1` (the default windowed Vegas asks for up to 16 under load),
//! about one permit in `n` reads the clock; the stride is read again after
//! each timed sample, under the lock, into `stride`. An untimed success only bumps the word's count (its
//! `inflight` goes to `pending_max` when it is the largest yet); the lock's
//! next holder hands the count since the last hand-over to the algorithm
//! ([`LimitAlgorithm::add_untimed`]). The count wraps at 2^15; a release
//! that brings its low 14 bits to zero hands over itself, so no more than
//! 2^15 ever pile up between hand-overs.
//!
//! Callers that must wait are queued here, in a backlog that knows about
//! partitions and releases in FIFO or LIFO order.
//!
//! Locking: one mutex (`shared`) guards the algorithm, the history and the
//! backlog, and is the only place the queued flag and the limit bits
//! change. A reported release takes it (it feeds the algorithm); an
//! unreported one (`ignore`) takes it only when the word it decremented
//! had the queued flag. A caller that must wait sets the flag under the
//! lock and then re-checks the word: the flag and the release's decrement
//! are read-modify-writes of the same word, so one of them sees the other
//! (a release before the flag leaves a permit the re-check takes; a
//! release after it sees the flag and serves the backlog). The fast path
//! of an acquire takes no lock.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use super::{AcquireError, LimitAlgorithm, Sample, Untimed, Vegas, Windowed};
use crate::clock::{Clock, FastClock};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crate::sync::{Arc, Mutex, StdArc};

type Bypass = Box<dyn Fn(&str) -> bool + Send + Sync>;
type Hook = Box<dyn Fn(&LimitChange) + Send + Sync>;

/// Which waiting caller gets a permit that comes free.
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::{AdaptiveLimiter, Order};
///
/// let limiter = AdaptiveLimiter::builder().order(Order::Lifo).build().unwrap();
/// # drop(limiter);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Order {
    /// The longest waiting first (the default).
    #[default]
    Fifo,
    /// The latest arrival first: under overload the freshest requests are
    /// served while old ones (whose callers may have given up) wait or time
    /// out (Netflix's `LifoBlockingLimiter`).
    Lifo,
}

/// One move of the limit, as kept in [`AdaptiveMetrics::history`] and given
/// to [`on_limit_change`](AdaptiveLimiterBuilder::on_limit_change).
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::{AdaptiveLimiter, Aimd};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let aimd = Aimd::builder().initial_limit(4).min_limit(1).build().unwrap();
/// let limiter = AdaptiveLimiter::builder().algorithm(aimd).build().unwrap();
/// limiter.try_acquire().unwrap().dropped(); // ⌊4 × 0.9⌋ = 3
/// let change = limiter.metrics().history[0];
/// assert_eq!((change.from, change.to, change.seq), (4, 3, 1));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitChange {
    /// When the sample that moved it was reported, on the limiter's clock.
    pub at: Instant,
    /// The limit before.
    pub from: usize,
    /// The limit after.
    pub to: usize,
    /// The number of changes so far, this one included.
    pub seq: u64,
}

/// One partition's share and load, in [`AdaptiveMetrics::partitions`].
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::{AdaptiveLimiter, Aimd};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let limiter = AdaptiveLimiter::builder()
///     .algorithm(Aimd::new()) // 20
///     .partition("live", 0.7)
///     .build()
///     .unwrap();
/// let _p = limiter.labelled("live").try_acquire().unwrap();
/// let m = limiter.metrics();
/// let (default, live) = (&m.partitions[0], &m.partitions[1]);
/// assert_eq!((live.name.as_str(), live.inflight, live.guaranteed), ("live", 1, 14));
/// assert_eq!((default.name.as_str(), default.guaranteed), ("", 6)); // the rest: ⌈20 × 0.3⌉
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionMetrics {
    /// The partition's name (`""` for the default partition).
    pub name: String,
    /// Permits its callers hold.
    pub inflight: usize,
    /// Permits it is guaranteed at the current limit: `max(1, ⌈limit × share⌉)`
    /// (0 for a share of 0).
    pub guaranteed: usize,
    /// Its callers in the backlog.
    pub waiting: usize,
}

/// A snapshot of an [`AdaptiveLimiter`].
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::AdaptiveLimiter;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let limiter = AdaptiveLimiter::builder().build().unwrap();
/// let p = limiter.try_acquire().unwrap();
/// let m = limiter.metrics();
/// assert_eq!((m.limit, m.inflight, m.samples), (20, 1, 0));
/// p.success();
/// assert_eq!(limiter.metrics().samples, 1);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdaptiveMetrics {
    /// The current limit.
    pub limit: usize,
    /// Permits held now (bypassed callers not counted).
    pub inflight: usize,
    /// Callers in the backlog.
    pub waiting: usize,
    /// Outcomes fed to the algorithm (`success` and `dropped` reports).
    pub samples: u64,
    /// `dropped` reports.
    pub drops: u64,
    /// Permits released without a sample (`ignore`, or dropped unreported).
    pub ignored: u64,
    /// Callers refused: shed by `try_acquire`, a full backlog, or a timeout.
    pub rejections: u64,
    /// Callers the bypass predicate let through uncounted.
    pub bypassed: u64,
    /// The last changes of the limit, oldest first (at most
    /// [`history`](AdaptiveLimiterBuilder::history) of them).
    pub history: Vec<LimitChange>,
    /// Each partition, the default one (`""`) first.
    pub partitions: Vec<PartitionMetrics>,
}

/// Enforces a concurrency limit that an algorithm moves as outcomes are
/// reported. Clones share one limit, one backlog and one set of metrics.
///
/// See the [module documentation](super) for the algorithms, the
/// partitions and the bypass, and how the permit's report feeds the limit.
///
/// # Fairness
///
/// A caller that must wait joins the backlog and is served in the
/// configured [`Order`], callers of partitions below their guaranteed share
/// first. While anyone waits, `try_acquire` and new `acquire`s do not take
/// a free permit ahead of them: the "callers wait" flag lives in the same
/// atomic word as the count of permits held, so the lock-free path sees it
/// in the same step that would take the permit.
///
/// # Cost
///
/// `try_acquire` is one compare-and-swap, plus one clock read for a
/// *timed* permit; `ignore` (or dropping the permit) one atomic
/// decrement, with the lock only when callers wait; `success` of an
/// untimed permit one atomic add (the lock only when callers wait), of a
/// timed one, and `dropped`, the lock and the algorithm's update (a timed
/// one also reads the clock). Which permits are timed is the algorithm's
/// choice ([`LimitAlgorithm::timing_stride`]): every one for the plain
/// algorithms, about one in 16 for the default windowed Vegas under load
/// (see [`Windowed`]). The clock is a [`FastClock`]: the CPU's counter
/// when the limiter is built inside a multi-thread runtime, Tokio's clock
/// elsewhere (`benches/adaptive.rs` measures both flavours).
///
/// # Memory ordering
///
/// Returning a permit *happens before* the acquire that obtains it.
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::AdaptiveLimiter;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let limiter = AdaptiveLimiter::builder().build().unwrap(); // windowed Vegas, limit 20 to start
/// let permit = limiter.acquire().await.unwrap();
/// let outcome: Result<&str, &str> = Ok("answer"); // ... call the backend ...
/// match outcome {
///     Ok(_) => permit.success(),
///     Err(_) => permit.dropped(), // overload: a timeout, a 503
/// }
/// assert_eq!(limiter.metrics().samples, 1);
/// # }
/// ```
pub struct AdaptiveLimiter<C: Clock = FastClock> {
    inner: Arc<Inner<C>>,
    partition: usize,
    bypass: bool,
}

impl<C: Clock> Clone for AdaptiveLimiter<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            partition: self.partition,
            bypass: self.bypass,
        }
    }
}

/// The largest limit an [`AdaptiveLimiter`] enforces, `2^24 − 1`: the
/// limit, the permits held and a count of reports share one 64-bit atomic
/// word. An algorithm's answer above it is clamped to it.
///
/// # Examples
///
/// ```
/// assert_eq!(flowguard::adaptive::MAX_LIMIT, 16_777_215);
/// ```
pub const MAX_LIMIT: usize = (1 << 24) - 1;

/// The held count's bits in the state word.
const HELD: u64 = (1 << 24) - 1;
/// Set while callers are queued.
const QUEUED: u64 = 1 << 24;
/// Where the limit's bits start.
const LIMIT_SHIFT: u32 = 25;
/// Where the count of untimed successes starts (to bit 63; it wraps).
const UNTIMED_SHIFT: u32 = 49;
/// The untimed count's values (15 bits).
const UNTIMED_MASK: u64 = (1 << 15) - 1;
/// An untimed success: one more counted, one permit fewer held.
const UNTIMED_RELEASE: u64 = (1 << UNTIMED_SHIFT) - 1;
/// A release whose count (before it) has these low bits set hands over.
const HAND_OVER: u64 = (1 << 14) - 1;

fn limit_of(state: u64) -> usize {
    ((state >> LIMIT_SHIFT) & HELD) as usize
}

fn untimed_of(state: u64) -> u64 {
    state >> UNTIMED_SHIFT
}

fn held_of(state: u64) -> usize {
    (state & HELD) as usize
}

struct Inner<C> {
    /// The limit, the permits held and the queued flag (module docs).
    state: AtomicU64,
    clock: C,
    order: Order,
    max_backlog: usize,
    /// Index 0 is the default partition.
    partitions: Box<[PartitionSlot]>,
    /// Named partitions exist: only then are their `busy` counts kept (the
    /// default partition alone holds what `state` counts).
    partitioned: bool,
    bypass: Option<Bypass>,
    hook: Option<Hook>,
    counters: Counters,
    /// The algorithm's [`timing_stride`](LimitAlgorithm::timing_stride)
    /// as of its last update: one permit in `stride` per thread reads the
    /// clock. Written under the lock, only when it changes.
    stride: AtomicUsize,
    /// The largest `inflight` among the untimed successes not yet handed
    /// to the algorithm (their count is in `state`).
    pending_max: AtomicUsize,
    shared: Mutex<Shared>,
    /// For `tracing` events: the builder's name, or "adaptive".
    name: StdArc<str>,
}

struct PartitionSlot {
    name: Box<str>,
    share: f64,
    busy: AtomicUsize,
}

/// Counts bumped outside the lock (`samples` and `drops` are counted in
/// [`Shared`], under it).
#[derive(Debug, Default)]
struct Counters {
    ignored: AtomicU64,
    rejections: AtomicU64,
    bypassed: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

struct Shared {
    algorithm: Box<dyn LimitAlgorithm>,
    limit: usize,
    samples: u64,
    drops: u64,
    /// The untimed count in `state` at the last hand-over.
    untimed_seen: u64,
    history: VecDeque<LimitChange>,
    history_len: usize,
    changes: u64,
    backlog: Backlog,
}

/// The permits' guaranteed share of `limit` for a partition of `share`
/// (Netflix's `max(1, ⌈limit × share⌉)`, at most `limit`). The product is
/// shaved by 1e-9 first, so that shares like `1 − 0.7`
/// (0.30000000000000004) do not round a whole permit up.
fn guaranteed(share: f64, limit: usize) -> usize {
    if share <= 0.0 {
        0
    } else {
        (((limit as f64 * share) - 1e-9).ceil() as usize).clamp(1, limit.max(1))
    }
}

// ---- the backlog -------------------------------------------------------------

/// Waiting callers: a slab of slots and, per partition, the keys of its
/// waiting callers in arrival order.
#[derive(Debug, Default)]
struct Backlog {
    slots: Vec<Slot>,
    free: Vec<usize>,
    queues: Vec<VecDeque<usize>>,
    next_seq: u64,
    /// Callers queued (granted ones excluded).
    waiting: usize,
}

#[derive(Debug)]
struct Slot {
    seq: u64,
    partition: usize,
    state: SlotState,
}

#[derive(Debug)]
enum SlotState {
    Free,
    Waiting(Waker),
    /// A permit taken for the caller, not yet collected by its future.
    Granted(Grant),
}

#[derive(Debug)]
struct Grant {
    inflight: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    index: usize,
    seq: u64,
}

impl Backlog {
    fn new(partitions: usize) -> Self {
        Self {
            queues: (0..partitions).map(|_| VecDeque::new()).collect(),
            ..Self::default()
        }
    }

    fn push(&mut self, partition: usize, waker: Waker) -> Key {
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = Slot {
            seq,
            partition,
            state: SlotState::Waiting(waker),
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.queues[partition].push_back(index);
        self.waiting += 1;
        Key { index, seq }
    }

    fn slot_mut(&mut self, key: Key) -> Option<&mut Slot> {
        self.slots
            .get_mut(key.index)
            .filter(|s| s.seq == key.seq && !matches!(s.state, SlotState::Free))
    }

    /// Frees `key`'s slot; returns its grant if it had one. A caller still
    /// waiting is taken out of its queue, and its waker is returned, for
    /// the caller to drop after unlocking: dropping a waker runs its
    /// owner's code, which may return a permit here (and take the lock).
    fn remove(&mut self, key: Key) -> (Option<Grant>, Option<Waker>) {
        let Some(slot) = self.slot_mut(key) else {
            return (None, None);
        };
        let partition = slot.partition;
        let state = std::mem::replace(&mut slot.state, SlotState::Free);
        self.free.push(key.index);
        match state {
            SlotState::Granted(g) => (Some(g), None),
            SlotState::Waiting(w) => {
                let q = &mut self.queues[partition];
                if let Some(pos) = q.iter().position(|&i| i == key.index) {
                    q.remove(pos);
                    self.waiting -= 1;
                }
                (None, Some(w))
            }
            SlotState::Free => (None, None),
        }
    }

    /// The next caller of `partition` to serve, taken out of its queue.
    fn pop(&mut self, partition: usize, order: Order) -> Option<usize> {
        let q = &mut self.queues[partition];
        let index = match order {
            Order::Fifo => q.pop_front(),
            Order::Lifo => q.pop_back(),
        }?;
        self.waiting -= 1;
        Some(index)
    }

    /// The seq of the caller `partition` would serve next.
    fn next_seq_of(&self, partition: usize, order: Order) -> Option<u64> {
        let q = &self.queues[partition];
        let index = match order {
            Order::Fifo => q.front(),
            Order::Lifo => q.back(),
        }?;
        Some(self.slots[*index].seq)
    }
}

/// Whether this thread times the permit it is handing out: its first, and
/// then one after a gap drawn uniformly from `0..=2 × (stride − 1)`
/// untimed ones (so one in `stride` on average). The countdown is per
/// thread, shared by all limiters: no shared write. The gap is random so
/// that limiters used in a fixed rotation on one thread (a handler that
/// calls the same backends in the same order) are each timed about one
/// permit in `stride`, not one always and the others never.
#[inline]
fn timed_here(stride: usize) -> bool {
    #[cfg(not(loom))]
    std::thread_local! {
        /// The countdown, and a xorshift state for the gaps.
        static TIMING: std::cell::Cell<(usize, u32)> = const { std::cell::Cell::new((0, 0x9E37_79B9)) };
    }
    // Loom runs its threads on one OS thread: its own thread-locals start
    // afresh for each thread of each execution.
    #[cfg(loom)]
    loom::thread_local! {
        static TIMING: std::cell::Cell<(usize, u32)> = std::cell::Cell::new((0, 0x9E37_79B9));
    }
    TIMING.with(|c| match c.get() {
        (0, mut x) => {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let span = stride.saturating_sub(1).saturating_mul(2).saturating_add(1);
            c.set((x as usize % span, x));
            true
        }
        (n, x) => {
            c.set((n - 1, x));
            false
        }
    })
}

// ---- shared state ------------------------------------------------------------

impl<C: Clock> Inner<C> {
    /// The lock-free path: a free permit while nobody waits. One CAS.
    #[inline]
    fn try_take(&self, partition: usize) -> Option<Grant> {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & QUEUED != 0 || held_of(s) >= limit_of(s) {
                return None;
            }
            match self
                .state
                .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Some(self.grant(s, partition)),
                Err(now) => s = now,
            }
        }
    }

    /// Under the lock: a free permit for a queued caller (the queued flag
    /// does not stop it). Returns the word before.
    fn take_locked(&self) -> Option<u64> {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if held_of(s) >= limit_of(s) {
                return None;
            }
            match self
                .state
                .compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(s),
                Err(now) => s = now,
            }
        }
    }

    #[inline]
    fn grant(&self, before: u64, partition: usize) -> Grant {
        if self.partitioned {
            self.partitions[partition]
                .busy
                .fetch_add(1, Ordering::Relaxed);
        }
        Grant {
            inflight: held_of(before) + 1,
        }
    }

    /// Gives a permit back to the word; returns the word before.
    #[inline]
    fn give_back(&self, partition: usize) -> u64 {
        if self.partitioned {
            self.partitions[partition]
                .busy
                .fetch_sub(1, Ordering::Relaxed);
        }
        self.state.fetch_sub(1, Ordering::AcqRel)
    }

    /// Permits a partition holds (the default partition alone: all of them).
    fn busy(&self, partition: usize) -> usize {
        if self.partitioned {
            self.partitions[partition].busy.load(Ordering::Relaxed)
        } else {
            held_of(self.state.load(Ordering::Acquire))
        }
    }

    /// Under the lock: the partition whose caller is served next. Callers
    /// of partitions under their guaranteed share come first; among equals,
    /// the oldest (FIFO) or newest (LIFO) caller.
    fn pick(&self, st: &Shared) -> Option<usize> {
        let mut best: Option<(bool, u64, usize)> = None;
        for (p, slot) in self.partitions.iter().enumerate() {
            let Some(seq) = st.backlog.next_seq_of(p, self.order) else {
                continue;
            };
            let under = self.busy(p) < guaranteed(slot.share, st.limit);
            let better = match best {
                None => true,
                Some((b_under, b_seq, _)) => {
                    (under && !b_under)
                        || (under == b_under
                            && match self.order {
                                Order::Fifo => seq < b_seq,
                                Order::Lifo => seq > b_seq,
                            })
                }
            };
            if better {
                best = Some((under, seq, p));
            }
        }
        best.map(|(_, _, p)| p)
    }

    /// Under the lock: hands free permits to waiting callers, then clears
    /// the queued flag if nobody is left waiting.
    fn dispense(&self, st: &mut Shared, wakers: &mut Vec<Waker>) {
        while st.backlog.waiting > 0 {
            let Some(p) = self.pick(st) else { break };
            let Some(before) = self.take_locked() else {
                break;
            };
            let Some(index) = st.backlog.pop(p, self.order) else {
                // `pick` only names a partition with a caller queued.
                self.state.fetch_sub(1, Ordering::AcqRel);
                break;
            };
            let grant = self.grant(before, p);
            let slot = &mut st.backlog.slots[index];
            if let SlotState::Waiting(w) =
                std::mem::replace(&mut slot.state, SlotState::Granted(grant))
            {
                wakers.push(w);
            }
        }
        self.sync_queued(st);
    }

    /// Under the lock: clears the queued flag once nobody waits.
    fn sync_queued(&self, st: &Shared) {
        if st.backlog.waiting == 0 {
            self.state.fetch_and(!QUEUED, Ordering::AcqRel);
        }
    }

    /// Returns a permit with a report: feeds the sample to the algorithm,
    /// then gives the permit back and serves the backlog, under the lock.
    /// An untimed success is only counted, without the lock.
    #[inline]
    fn release_reported(&self, held: Held, dropped: bool) {
        match held.start {
            None if !dropped => self.release_untimed(held),
            _ => self.release_locked(held, dropped),
        }
    }

    /// An untimed success: the permit is returned and the success counted
    /// in one add to the state word, for the lock's next holder.
    #[inline]
    fn release_untimed(&self, held: Held) {
        if held.inflight > self.pending_max.load(Ordering::Relaxed) {
            self.pending_max.fetch_max(held.inflight, Ordering::Relaxed);
        }
        if self.partitioned {
            self.partitions[held.partition]
                .busy
                .fetch_sub(1, Ordering::Relaxed);
        }
        let before = self.state.fetch_add(UNTIMED_RELEASE, Ordering::AcqRel);
        if before & QUEUED != 0 || untimed_of(before) & HAND_OVER == HAND_OVER {
            self.serve_backlog();
        }
    }

    /// Under the lock: hands the untimed successes counted since the last
    /// hand-over to the algorithm.
    fn flush_locked(&self, st: &mut Shared) {
        let seen = untimed_of(self.state.load(Ordering::Acquire));
        let count = seen.wrapping_sub(st.untimed_seen) & UNTIMED_MASK;
        if count == 0 {
            return;
        }
        st.untimed_seen = seen;
        let max_inflight = self.pending_max.swap(0, Ordering::Relaxed);
        st.samples += count;
        st.algorithm
            .add_untimed(&Untimed::new(count, max_inflight, false));
    }

    fn release_locked(&self, held: Held, dropped: bool) {
        let mut wakers = Vec::new();
        let change = {
            let mut st = self.shared.lock();
            self.flush_locked(&mut st);
            st.samples += 1;
            st.drops += u64::from(dropped);
            let change = match held.start {
                Some(start) => {
                    let now = self.clock.now();
                    let rtt = now.saturating_duration_since(start);
                    let sample = Sample::new(start, rtt, held.inflight, dropped);
                    self.record_locked(&mut st, &sample, now)
                }
                None => {
                    // An untimed drop: counted now; the limit is read at
                    // the next timed sample.
                    st.algorithm
                        .add_untimed(&Untimed::new(1, held.inflight, true));
                    None
                }
            };
            self.give_back(held.partition);
            if st.backlog.waiting > 0 {
                self.dispense(&mut st, &mut wakers);
            }
            change
        };
        for w in wakers {
            w.wake();
        }
        if let Some(c) = change {
            tracing::debug!(limiter = %self.name, from = c.from, to = c.to, "adaptive limit changed");
            if let Some(hook) = &self.hook {
                hook(&c);
            }
        }
    }

    /// Returns a permit without a report: no lock unless callers wait.
    #[inline]
    fn release_unreported(&self, partition: usize) {
        Counters::bump(&self.counters.ignored);
        if self.give_back(partition) & QUEUED != 0 {
            self.serve_backlog();
        }
    }

    #[cold]
    fn serve_backlog(&self) {
        let mut wakers = Vec::new();
        {
            let mut st = self.shared.lock();
            self.flush_locked(&mut st);
            self.dispense(&mut st, &mut wakers);
        }
        for w in wakers {
            w.wake();
        }
    }

    /// Under the lock: feeds the algorithm; applies a new limit to the
    /// state word and the history.
    fn record_locked(&self, st: &mut Shared, sample: &Sample, now: Instant) -> Option<LimitChange> {
        let to = st.algorithm.update(sample).clamp(1, MAX_LIMIT);
        let stride = st.algorithm.timing_stride().max(1);
        if self.stride.load(Ordering::Relaxed) != stride {
            self.stride.store(stride, Ordering::Relaxed);
        }
        let from = st.limit;
        if to == from {
            return None;
        }
        st.limit = to;
        // Only the lock holder writes the limit's bits, the held count
        // never carries into them (it stays at most the limit, below
        // 2^24), nor they into the untimed count (the limit stays below
        // 2^24): adding the difference is exact.
        if to > from {
            self.state
                .fetch_add(((to - from) as u64) << LIMIT_SHIFT, Ordering::AcqRel);
        } else {
            self.state
                .fetch_sub(((from - to) as u64) << LIMIT_SHIFT, Ordering::AcqRel);
        }
        st.changes += 1;
        let change = LimitChange {
            at: now,
            from,
            to,
            seq: st.changes,
        };
        if st.history_len > 0 {
            if st.history.len() == st.history_len {
                st.history.pop_front();
            }
            st.history.push_back(change);
        }
        Some(change)
    }

    /// A caller's future polled for the first time (slow path): queue it,
    /// unless a permit is free or the backlog is full.
    #[cold]
    fn enqueue(
        &self,
        partition: usize,
        cx: &mut Context<'_>,
    ) -> Result<Result<Grant, Key>, AcquireError> {
        let mut st = self.shared.lock();
        if st.backlog.waiting == 0 {
            // Re-checked under the lock: a release since the fast path
            // returned its permit, and nobody is ahead.
            if let Some(before) = self.take_locked() {
                return Ok(Ok(self.grant(before, partition)));
            }
        }
        if st.backlog.waiting >= self.max_backlog {
            drop(st);
            Counters::bump(&self.counters.rejections);
            return Err(AcquireError::BacklogFull);
        }
        let key = st.backlog.push(partition, cx.waker().clone());
        // Set the flag, then re-check the word (module docs): a permit
        // returned before the flag was set is handed out now.
        self.state.fetch_or(QUEUED, Ordering::AcqRel);
        let mut wakers = Vec::new();
        self.dispense(&mut st, &mut wakers);
        let mine = match st.backlog.slot_mut(key).map(|s| &s.state) {
            Some(SlotState::Granted(_)) => st.backlog.remove(key).0,
            _ => None,
        };
        drop(st);
        for w in wakers {
            if !w.will_wake(cx.waker()) {
                w.wake();
            }
        }
        Ok(mine.ok_or(key))
    }

    /// A queued caller's future polled again.
    fn poll_queued(&self, key: Key, cx: &mut Context<'_>) -> Poll<Option<Grant>> {
        let mut st = self.shared.lock();
        let Some(slot) = st.backlog.slot_mut(key) else {
            return Poll::Ready(None);
        };
        let stale = match &mut slot.state {
            SlotState::Waiting(w) if !w.will_wake(cx.waker()) => {
                Some(std::mem::replace(w, cx.waker().clone()))
            }
            SlotState::Waiting(_) => None,
            SlotState::Granted(_) => return Poll::Ready(st.backlog.remove(key).0),
            SlotState::Free => return Poll::Ready(None),
        };
        drop(st);
        // The replaced waker is dropped unlocked (see `Backlog::remove`).
        drop(stale);
        Poll::Pending
    }

    /// A queued caller's future dropped: leave the queue, or give back the
    /// permit granted to it.
    fn cancel(&self, key: Key) {
        let mut wakers = Vec::new();
        let stale = {
            let mut st = self.shared.lock();
            let partition = st.backlog.slot_mut(key).map(|s| s.partition);
            let (grant, stale) = st.backlog.remove(key);
            if let (Some(_grant), Some(p)) = (grant, partition) {
                self.give_back(p);
            }
            self.dispense(&mut st, &mut wakers);
            stale
        };
        for w in wakers {
            w.wake();
        }
        // Its own waker, dropped unlocked (see `Backlog::remove`).
        drop(stale);
    }
}

// ---- the builder -------------------------------------------------------------

/// Configures an [`AdaptiveLimiter`]. Defaults: [`Vegas`] in a
/// [`Windowed`] (both with their defaults: limit 20 to start, one decision
/// per 1 s window), FIFO order, a backlog of 100 callers (Netflix's
/// `LifoBlockingLimiter` default), no partitions, no bypass, a history of
/// the last 64 changes.
///
/// Netflix's limiters default to Vegas fed every sample; at a few thousand
/// requests a second that swings the limit by hundreds within a round trip
/// (the simulation in `tests/adaptive.rs` shows it), so the default here
/// makes one decision per window, as Netflix's own gRPC example does with
/// its `WindowedLimit`. For a backend that answers in milliseconds, a
/// shorter [`min_window`](super::WindowedBuilder::min_window) (windows are
/// then two round trips) follows it faster.
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::{AdaptiveLimiter, Gradient2, Order};
///
/// let limiter = AdaptiveLimiter::builder()
///     .algorithm(Gradient2::new())
///     .order(Order::Lifo)
///     .max_backlog(50)
///     .partition("live", 0.7)
///     .partition("batch", 0.3)
///     .bypass_if(|label| label == "health")
///     .history(16)
///     .build()
///     .unwrap();
/// # drop(limiter);
/// let err = AdaptiveLimiter::builder()
///     .partition("live", 0.8)
///     .partition("batch", 0.3)
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "partition");
/// ```
pub struct AdaptiveLimiterBuilder {
    algorithm: Box<dyn LimitAlgorithm>,
    order: Order,
    max_backlog: usize,
    partitions: Vec<(String, f64)>,
    bypass: Option<Bypass>,
    history: usize,
    hook: Option<Hook>,
    name: Option<String>,
}

impl fmt::Debug for AdaptiveLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimiterBuilder")
            .field("algorithm", &self.algorithm)
            .field("order", &self.order)
            .field("max_backlog", &self.max_backlog)
            .field("partitions", &self.partitions)
            .field("bypass", &self.bypass.is_some())
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

impl AdaptiveLimiterBuilder {
    /// The algorithm that moves the limit (default
    /// `Windowed::new(Vegas::new())`). Its current limit is the limit to
    /// start with.
    pub fn algorithm(mut self, algorithm: impl LimitAlgorithm) -> Self {
        self.algorithm = Box::new(algorithm);
        self
    }

    /// Names the limiter: the field `limiter` of its `tracing` events
    /// (default `"adaptive"`), and, with the `metrics` feature, the label
    /// `name` of its exported metrics (`flowguard_adaptive_limit`,
    /// `_inflight`, `_waiting`, `_samples_total`, `_drops_total`,
    /// `_rejections_total`; see `flowguard::metrics`). Unnamed limiters are
    /// not exported.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::adaptive::AdaptiveLimiter;
    ///
    /// let limiter = AdaptiveLimiter::builder().name("search").build().unwrap();
    /// # drop(limiter);
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Which waiting caller is served first (default [`Order::Fifo`]).
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// How many callers may wait in `acquire` at once (default 100); the
    /// next one is refused with [`AcquireError::BacklogFull`]. 0 makes
    /// `acquire` shed like `try_acquire`.
    pub fn max_backlog(mut self, n: usize) -> Self {
        self.max_backlog = n;
        self
    }

    /// A partition named `name` guaranteed `share` (in `(0, 1]`) of the
    /// limit while its callers want it; see the [module docs](super) for
    /// the rules. Handles for it come from
    /// [`labelled(name)`](AdaptiveLimiter::labelled).
    pub fn partition(mut self, name: impl Into<String>, share: f64) -> Self {
        self.partitions.push((name.into(), share));
        self
    }

    /// Callers whose label (see [`labelled`](AdaptiveLimiter::labelled))
    /// makes `predicate` true pass without a permit and are not counted in
    /// the limit or its samples (health checks, admin calls). The predicate
    /// runs once per `labelled` call, not per acquire.
    pub fn bypass_if(mut self, predicate: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.bypass = Some(Box::new(predicate));
        self
    }

    /// How many of the last limit changes [`metrics`](AdaptiveLimiter::metrics)
    /// reports (default 64; 0 keeps none).
    pub fn history(mut self, n: usize) -> Self {
        self.history = n;
        self
    }

    /// Called after each change of the limit, outside the limiter's lock,
    /// on the thread whose report moved it (Netflix's `notifyOnChange`): to
    /// export the limit, or to mirror it into a [`WorkerPool`](crate::pool::WorkerPool)'s
    /// `set_max_concurrency`. Two changes on two threads may reach it out
    /// of order; [`LimitChange::seq`] orders them.
    pub fn on_limit_change(mut self, hook: impl Fn(&LimitChange) + Send + Sync + 'static) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    /// Checks the settings and makes the limiter, on a [`FastClock`]:
    /// built inside a multi-thread runtime it reads the CPU's counter,
    /// anywhere else Tokio's clock (so paused-clock tests stay exact).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `partition`: an empty or repeated name, a
    /// share outside `(0, 1]`, or shares adding up to more than 1.
    pub fn build(self) -> Result<AdaptiveLimiter, ConfigError> {
        self.build_with_clock(FastClock::new())
    }

    /// As [`build`](Self::build), reading RTTs from `clock` (a
    /// [`ManualClock`](crate::clock::ManualClock) in tests). Timeouts
    /// (`acquire_timeout`) still run on Tokio's timer.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_with_clock<C: Clock>(self, clock: C) -> Result<AdaptiveLimiter<C>, ConfigError> {
        const C: &str = "adaptive limiter";
        let bad = |kind, reason: String| Err(ConfigError::new(C, "partition", kind, reason));
        let mut total = 0.0;
        for (i, (name, share)) in self.partitions.iter().enumerate() {
            if name.is_empty() {
                return bad(ConfigErrorKind::Zero, "names must not be empty".into());
            }
            if self.partitions[..i].iter().any(|(n, _)| n == name) {
                return bad(
                    ConfigErrorKind::Conflict,
                    format!("{name:?} is given twice"),
                );
            }
            if !(*share > 0.0 && *share <= 1.0) {
                return bad(
                    ConfigErrorKind::TooLarge,
                    format!("share of {name:?} must be in (0, 1], got {share}"),
                );
            }
            total += share;
        }
        if total > 1.0 + 1e-9 {
            return bad(
                ConfigErrorKind::Conflict,
                format!("shares must add up to at most 1, got {total}"),
            );
        }
        let default_share = match 1.0 - total {
            _ if self.partitions.is_empty() => 1.0,
            // Shares adding up to 1 up to rounding leave nothing.
            rest if rest < 1e-9 => 0.0,
            rest => rest,
        };
        let partitions: Box<[PartitionSlot]> = std::iter::once((String::new(), default_share))
            .chain(self.partitions)
            .map(|(name, share)| PartitionSlot {
                name: name.into_boxed_str(),
                share,
                busy: AtomicUsize::new(0),
            })
            .collect();
        let limit = self.algorithm.limit().clamp(1, MAX_LIMIT);
        let stride = self.algorithm.timing_stride().max(1);
        let n = partitions.len();
        let limiter = AdaptiveLimiter {
            inner: Arc::new(Inner {
                state: AtomicU64::new((limit as u64) << LIMIT_SHIFT),
                clock,
                order: self.order,
                max_backlog: self.max_backlog,
                partitions,
                partitioned: n > 1,
                bypass: self.bypass,
                hook: self.hook,
                counters: Counters::default(),
                stride: AtomicUsize::new(stride),
                pending_max: AtomicUsize::new(0),
                shared: Mutex::new(Shared {
                    algorithm: self.algorithm,
                    limit,
                    samples: 0,
                    drops: 0,
                    untimed_seen: 0,
                    history: VecDeque::new(),
                    history_len: self.history,
                    changes: 0,
                    backlog: Backlog::new(n),
                }),
                name: StdArc::from(self.name.as_deref().unwrap_or("adaptive")),
            }),
            partition: 0,
            bypass: false,
        };
        #[cfg(all(feature = "metrics", not(loom)))]
        if let Some(name) = &self.name {
            limiter.export(name);
        }
        Ok(limiter)
    }
}

// ---- the handle --------------------------------------------------------------

impl AdaptiveLimiter {
    /// A builder with the defaults (windowed Vegas, FIFO, a backlog of 100).
    pub fn builder() -> AdaptiveLimiterBuilder {
        AdaptiveLimiterBuilder {
            algorithm: Box::new(Windowed::new(Vegas::new())),
            order: Order::Fifo,
            max_backlog: 100,
            partitions: Vec::new(),
            bypass: None,
            history: 64,
            hook: None,
            name: None,
        }
    }

    /// A limiter driven by `algorithm`, with the other defaults.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::adaptive::{AdaptiveLimiter, Aimd};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let limiter = AdaptiveLimiter::new(Aimd::new());
    /// assert_eq!(limiter.limit(), 20);
    /// # }
    /// ```
    pub fn new(algorithm: impl LimitAlgorithm) -> Self {
        match Self::builder().algorithm(algorithm).build() {
            Ok(l) => l,
            // Without partitions there is nothing to refuse.
            Err(_) => unreachable!("a limiter without partitions is valid"),
        }
    }
}

impl<C: Clock> AdaptiveLimiter<C> {
    /// A handle for callers labelled `label`, sharing this limiter: its
    /// permits count against the partition of that name (the default
    /// partition if none has it), and if the
    /// [bypass predicate](AdaptiveLimiterBuilder::bypass_if) holds for
    /// `label`, its callers pass without a permit.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::adaptive::AdaptiveLimiter;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let limiter = AdaptiveLimiter::builder()
    ///     .partition("live", 0.7)
    ///     .bypass_if(|label| label == "health")
    ///     .build()
    ///     .unwrap();
    /// let live = limiter.labelled("live");
    /// let health = limiter.labelled("health");
    /// let p = live.try_acquire().unwrap();
    /// let h = health.try_acquire().unwrap();
    /// assert!(h.is_bypass());
    /// let m = limiter.metrics();
    /// assert_eq!((m.inflight, m.bypassed), (1, 1));
    /// assert_eq!(m.partitions[1].name, "live");
    /// assert_eq!(m.partitions[1].inflight, 1);
    /// # drop((p, h));
    /// # }
    /// ```
    pub fn labelled(&self, label: &str) -> Self {
        let inner = &self.inner;
        Self {
            inner: inner.clone(),
            partition: inner
                .partitions
                .iter()
                .position(|p| &*p.name == label)
                .unwrap_or(0),
            bypass: inner.bypass.as_ref().is_some_and(|f| f(label)),
        }
    }

    /// The current limit (one atomic load).
    pub fn limit(&self) -> usize {
        limit_of(self.inner.state.load(Ordering::Acquire))
    }

    /// Permits held now (one atomic load).
    pub fn inflight(&self) -> usize {
        held_of(self.inner.state.load(Ordering::Acquire))
    }

    /// Takes a permit if one is free and nobody waits; sheds the call
    /// otherwise.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Limited`] when the limit is reached or callers are
    /// queued.
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::adaptive::{AdaptiveLimiter, Aimd};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let limiter = AdaptiveLimiter::new(Aimd::new()); // 20
    /// let held: Vec<_> = (0..20).map(|_| limiter.try_acquire().unwrap()).collect();
    /// assert!(limiter.try_acquire().is_err());
    /// # drop(held);
    /// # }
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<C>, AcquireError> {
        if self.bypass {
            return Ok(self.bypass_permit());
        }
        match self.inner.try_take(self.partition) {
            Some(g) => Ok(self.permit(g)),
            None => {
                Counters::bump(&self.inner.counters.rejections);
                Err(AcquireError::Limited)
            }
        }
    }

    /// Waits for a permit, in the backlog, in the configured [`Order`].
    /// There is no default timeout (Netflix's `BlockingLimiter` waits at
    /// most an hour and its LIFO one a second): bound the wait with
    /// [`acquire_timeout`](Self::acquire_timeout) or `max_backlog`.
    ///
    /// # Errors
    ///
    /// [`AcquireError::BacklogFull`] at once when the limit is reached and
    /// [`max_backlog`](AdaptiveLimiterBuilder::max_backlog) callers already wait.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. Dropping the future leaves the backlog; a permit
    /// already granted to it goes to the next caller, unreported.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::adaptive::{AdaptiveLimiter, Aimd};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let aimd = Aimd::builder().initial_limit(1).min_limit(1).build().unwrap();
    /// let limiter = AdaptiveLimiter::new(aimd);
    /// let first = limiter.acquire().await.unwrap();
    /// let l = limiter.clone();
    /// let waiter = tokio::spawn(async move { l.acquire().await.unwrap().success() });
    /// tokio::task::yield_now().await;
    /// assert_eq!(limiter.metrics().waiting, 1);
    /// first.success(); // its permit goes to the waiter
    /// waiter.await.unwrap();
    /// assert_eq!(limiter.metrics().samples, 2);
    /// # }
    /// ```
    #[inline]
    pub fn acquire(&self) -> Acquire<'_, C> {
        Acquire {
            limiter: self,
            key: None,
        }
    }

    /// Waits at most `timeout` for a permit. A free permit is taken even
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
    /// use flowguard::adaptive::{AcquireError, AdaptiveLimiter, Aimd};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let aimd = Aimd::builder().initial_limit(1).min_limit(1).build().unwrap();
    /// let limiter = AdaptiveLimiter::new(aimd);
    /// let _held = limiter.acquire().await.unwrap();
    /// let err = limiter.acquire_timeout(Duration::from_millis(50)).await.unwrap_err();
    /// assert_eq!(err, AcquireError::TimedOut);
    /// # }
    /// ```
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Permit<C>, AcquireError> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.acquire_deadline(deadline).await,
            None => self.acquire().await,
        }
    }

    /// Waits until `deadline` at most for a permit.
    ///
    /// # Errors
    ///
    /// As [`acquire_timeout`](Self::acquire_timeout).
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    pub async fn acquire_deadline(&self, deadline: Instant) -> Result<Permit<C>, AcquireError> {
        // The acquire is polled first: a free permit wins over an elapsed
        // deadline, and one freed at the deadline instant itself counts.
        match crate::clock::timeout_at_inclusive(deadline, self.acquire()).await {
            Some(r) => r,
            None => {
                Counters::bump(&self.inner.counters.rejections);
                Err(AcquireError::TimedOut)
            }
        }
    }

    /// A snapshot of the limit, the load, the counts and the history.
    /// Takes the limiter's lock briefly.
    pub fn metrics(&self) -> AdaptiveMetrics {
        let inner = &*self.inner;
        let c = &inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut st = inner.shared.lock();
        inner.flush_locked(&mut st);
        let partitions = inner
            .partitions
            .iter()
            .enumerate()
            .zip(&st.backlog.queues)
            .map(|((i, p), q)| PartitionMetrics {
                name: p.name.to_string(),
                inflight: inner.busy(i),
                guaranteed: guaranteed(p.share, st.limit),
                waiting: q.len(),
            })
            .collect();
        AdaptiveMetrics {
            limit: st.limit,
            inflight: held_of(inner.state.load(Ordering::Acquire)),
            waiting: st.backlog.waiting,
            samples: st.samples,
            drops: st.drops,
            ignored: l(&c.ignored),
            rejections: l(&c.rejections),
            bypassed: l(&c.bypassed),
            history: st.history.iter().copied().collect(),
            partitions,
        }
    }

    /// Publishes a named limiter's metrics (feature `metrics`).
    #[cfg(all(feature = "metrics", not(loom)))]
    fn export(&self, name: &str) {
        let h = crate::metrics::Handles::new("adaptive", name);
        let (limit, inflight, waiting) =
            (h.gauge("limit"), h.gauge("inflight"), h.gauge("waiting"));
        let (samples, drops, rejections) = (
            h.counter("samples_total"),
            h.counter("drops_total"),
            h.counter("rejections_total"),
        );
        let weak = Arc::downgrade(&self.inner);
        crate::metrics::register(move || {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            let m = AdaptiveLimiter {
                inner,
                partition: 0,
                bypass: false,
            }
            .metrics();
            limit.set(m.limit as f64);
            inflight.set(m.inflight as f64);
            waiting.set(m.waiting as f64);
            samples.absolute(m.samples);
            drops.absolute(m.drops);
            rejections.absolute(m.rejections);
            true
        });
    }

    #[inline]
    fn permit(&self, g: Grant) -> Permit<C> {
        let inner = &*self.inner;
        let stride = inner.stride.load(Ordering::Relaxed);
        let start = (stride <= 1 || timed_here(stride)).then(|| inner.clock.now());
        Permit {
            inner: self.inner.clone(),
            held: Some(Held {
                partition: self.partition,
                start,
                inflight: g.inflight,
            }),
        }
    }

    #[cold]
    fn bypass_permit(&self) -> Permit<C> {
        Counters::bump(&self.inner.counters.bypassed);
        Permit {
            inner: self.inner.clone(),
            held: None,
        }
    }
}

impl<C: Clock> fmt::Debug for AdaptiveLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimiter")
            .field("limit", &self.limit())
            .field("inflight", &self.inflight())
            .field("partition", &&*self.inner.partitions[self.partition].name)
            .field("bypass", &self.bypass)
            .finish_non_exhaustive()
    }
}

// ---- the future --------------------------------------------------------------

/// Future returned by [`AdaptiveLimiter::acquire`].
///
/// Polling it again after it completed starts a new acquire.
///
/// # Cancel safety
///
/// Dropping it leaves the backlog; a permit already granted to it is
/// returned (unreported) and handed to the next caller.
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::{AdaptiveLimiter, Aimd};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let limiter = AdaptiveLimiter::new(Aimd::builder().initial_limit(1).min_limit(1).build().unwrap());
/// let held = limiter.acquire().await.unwrap();
/// let mut next = Box::pin(limiter.acquire()); // an `Acquire`
/// assert!(futures::poll!(next.as_mut()).is_pending()); // the limit is 1
/// held.success();
/// next.await.unwrap().success();
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<'a, C: Clock = FastClock> {
    limiter: &'a AdaptiveLimiter<C>,
    key: Option<Key>,
}

impl<C: Clock> fmt::Debug for Acquire<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("queued", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

impl<C: Clock> Future for Acquire<'_, C> {
    type Output = Result<Permit<C>, AcquireError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let limiter = this.limiter;
        let inner = &*limiter.inner;
        if let Some(key) = this.key {
            let grant = std::task::ready!(inner.poll_queued(key, cx));
            this.key = None;
            // A slot can only vanish through this future: the `None` arm
            // is unreachable, and answers as a full backlog would.
            return Poll::Ready(match grant {
                Some(g) => Ok(limiter.permit(g)),
                None => Err(AcquireError::BacklogFull),
            });
        }
        if limiter.bypass {
            return Poll::Ready(Ok(limiter.bypass_permit()));
        }
        if let Some(g) = inner.try_take(limiter.partition) {
            return Poll::Ready(Ok(limiter.permit(g)));
        }
        match inner.enqueue(limiter.partition, cx) {
            Ok(Ok(g)) => Poll::Ready(Ok(limiter.permit(g))),
            Ok(Err(key)) => {
                this.key = Some(key);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<C: Clock> Drop for Acquire<'_, C> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.limiter.inner.cancel(key);
        }
    }
}

// ---- the permit --------------------------------------------------------------

struct Held {
    partition: usize,
    /// `None` for a permit not timed (see [`LimitAlgorithm::timing_stride`]).
    start: Option<Instant>,
    inflight: usize,
}

/// One request's place under the limit; report how it went.
///
/// [`success`](Self::success) and [`dropped`](Self::dropped) feed a sample
/// (the time since the permit was handed out, the number in flight when it
/// was, and whether it was dropped) to the algorithm;
/// [`ignore`](Self::ignore) returns the permit without one. **Dropping the
/// permit without a report counts as `ignore`**: a request abandoned
/// half-way (its future dropped by a `select!` or a timeout of the caller's
/// own) says nothing about the backend, and a panic must not read as an
/// answer. Report a timeout you *waited for* as `dropped`. Owned
/// (`'static`): it can move into a spawned task.
///
/// What counts as dropped: the backend refused or failed for lack of
/// capacity (a timeout, a 503/429, a connection refused, a queue-full
/// error). An error that says nothing about load (a 404, a validation
/// error) is a `success` for the limit, or an `ignore`.
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::{AdaptiveLimiter, Aimd};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let aimd = Aimd::builder().initial_limit(10).min_limit(1).build().unwrap();
/// let limiter = AdaptiveLimiter::new(aimd);
/// let mut permits: Vec<_> = (0..10).map(|_| limiter.try_acquire().unwrap()).collect();
/// let last = permits.pop().unwrap();
/// assert_eq!(last.inflight_at_start(), 10);
/// last.success(); // taken with 10 in flight of 10: + 1
/// assert_eq!(limiter.limit(), 11);
/// permits.pop().unwrap().dropped(); // ⌊11 × 0.9⌋
/// assert_eq!(limiter.limit(), 9);
/// drop(permits); // the other 8: ignored
/// let m = limiter.metrics();
/// assert_eq!((m.samples, m.drops, m.ignored, m.inflight), (2, 1, 8, 0));
/// # }
/// ```
#[must_use = "dropping the permit at once counts the request as ignored"]
pub struct Permit<C: Clock = FastClock> {
    inner: Arc<Inner<C>>,
    held: Option<Held>,
}

impl<C: Clock> Permit<C> {
    /// The request succeeded: its RTT and load are a sample.
    pub fn success(mut self) {
        self.finish(Some(false));
    }

    /// The request was dropped for lack of capacity (a timeout, a 503): a
    /// sample that tells the algorithm to back off.
    pub fn dropped(mut self) {
        self.finish(Some(true));
    }

    /// The request says nothing about the backend: the permit is returned
    /// without a sample.
    pub fn ignore(mut self) {
        self.finish(None);
    }

    /// How many permits were held, this one included, when it was handed
    /// out (0 for a bypass permit).
    pub fn inflight_at_start(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.inflight)
    }

    /// Whether the bypass predicate let this request through (it holds no
    /// permit, and its report is not a sample).
    pub fn is_bypass(&self) -> bool {
        self.held.is_none()
    }

    #[inline]
    fn finish(&mut self, outcome: Option<bool>) {
        if let Some(held) = self.held.take() {
            match outcome {
                Some(dropped) => self.inner.release_reported(held, dropped),
                None => self.inner.release_unreported(held.partition),
            }
        }
    }
}

impl<C: Clock> Drop for Permit<C> {
    fn drop(&mut self) {
        self.finish(None);
    }
}

impl<C: Clock> fmt::Debug for Permit<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("bypass", &self.is_bypass())
            .field("inflight_at_start", &self.inflight_at_start())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn guaranteed_shares_round_up_but_not_on_float_noise() {
        assert_eq!(guaranteed(0.0, 100), 0);
        assert_eq!(guaranteed(0.7, 10), 7);
        assert_eq!(guaranteed(1.0 - 0.7, 20), 6, "0.30000000000000004 × 20");
        assert_eq!(guaranteed(0.25, 10), 3, "⌈2.5⌉");
        assert_eq!(guaranteed(0.01, 10), 1, "at least one");
        assert_eq!(guaranteed(1.0, MAX_LIMIT), MAX_LIMIT);
    }

    /// Answers whatever it is told to, to drive the limit's bits.
    #[derive(Debug)]
    struct Told(std::sync::Arc<AtomicUsize>);

    impl LimitAlgorithm for Told {
        fn limit(&self) -> usize {
            self.0.load(Ordering::Relaxed)
        }
        fn update(&mut self, _: &Sample) -> usize {
            self.0.load(Ordering::Relaxed)
        }
        fn bounds(&self) -> (usize, usize) {
            (1, usize::MAX)
        }
    }

    /// The limit's bits and the held count share one word: answers above
    /// `MAX_LIMIT` are clamped, a shrink below the held count leaves the
    /// count alone, and growing back from there is exact.
    #[test]
    fn the_state_word_keeps_limit_and_count_apart() {
        let told = std::sync::Arc::new(AtomicUsize::new(usize::MAX));
        let l = AdaptiveLimiter::builder()
            .algorithm(Told(told.clone()))
            .build_with_clock(crate::clock::ManualClock::new())
            .unwrap();
        assert_eq!((l.limit(), l.inflight()), (MAX_LIMIT, 0));
        let held: Vec<_> = (0..3).map(|_| l.try_acquire().unwrap()).collect();
        assert_eq!(held[2].inflight_at_start(), 3);
        told.store(1, Ordering::Relaxed);
        l.try_acquire().unwrap().success(); // taken with 4 held; 4 → limit 1
        assert_eq!((l.limit(), l.inflight()), (1, 3));
        assert!(l.try_acquire().is_err());
        told.store(5, Ordering::Relaxed);
        let mut held = held.into_iter();
        held.next().unwrap().success(); // the limit grows back to 5
        assert_eq!((l.limit(), l.inflight()), (5, 2));
        let more: Vec<_> = (0..3).map(|_| l.try_acquire().unwrap()).collect();
        assert!(l.try_acquire().is_err(), "5 held of 5");
        drop((held, more));
        assert_eq!((l.limit(), l.inflight()), (5, 0));
        let m = l.metrics();
        assert_eq!((m.samples, m.ignored, m.history.len()), (2, 5, 2));
    }

    #[test]
    fn backlog_serves_in_order_and_removes_from_the_middle() {
        let w = Waker::noop();
        let mut b = Backlog::new(2);
        let k: Vec<Key> = (0..4).map(|i| b.push(i % 2, w.clone())).collect();
        assert_eq!(b.waiting, 4);
        assert_eq!(b.next_seq_of(0, Order::Fifo), Some(0));
        assert_eq!(b.next_seq_of(0, Order::Lifo), Some(2));
        let (grant, waker) = b.remove(k[1]);
        assert!(grant.is_none());
        assert!(waker.is_some(), "a waiting caller's waker comes back");
        assert_eq!(b.waiting, 3);
        assert_eq!(b.next_seq_of(1, Order::Fifo), Some(3));
        assert_eq!(b.pop(0, Order::Lifo), Some(k[2].index));
        assert_eq!(b.pop(0, Order::Fifo), Some(k[0].index));
        assert_eq!(b.pop(0, Order::Fifo), None);
        assert_eq!(b.waiting, 1);
        // A freed slot is reused with a new seq: the old key no longer matches.
        let again = b.push(0, w.clone());
        assert_eq!(again.index, k[1].index);
        assert!(b.slot_mut(k[1]).is_none());
        assert!(b.slot_mut(again).is_some());
    }
}
