//! A small fixed-memory log-linear histogram with a lock-free `record`.
//!
//! [`Histogram`] is what every primitive's `metrics()` uses for its wait and
//! run times (and the loader for its batch sizes): recording is a handful of
//! relaxed atomic operations on memory allocated once at construction, with
//! no lock and no allocation, so it can sit on an async hot path.
//! [`Histogram::snapshot`] reads it into a [`HistogramSnapshot`] that answers
//! count, min, max, mean and any quantile.
//!
//! # Layout and error bound
//!
//! HDR-style log-linear buckets: every value below 64 has a bucket of its
//! own (exact); above that, each power-of-two range `[2^e, 2^(e+1))` is cut
//! into 64 equal sub-buckets of width `2^(e-6)`. A quantile is reported as
//! the middle of the bucket holding it (clamped to the exact min and max),
//! so it is off from the exact sample quantile by at most half a bucket:
//! a **relative error of at most 1/128 (0.79 %)**, proven against exact
//! quantiles by `tests/prop_histogram.rs`.
//!
//! Values from 2^40 up (2^40 ns is about 18 minutes) are counted in one
//! overflow bucket: count, min and max stay exact, so do these values'
//! contribution to the sum, and a quantile that falls there is reported as
//! the exact max. This bounds the memory to
//! 2,241 counters (about 17.5 KiB) per histogram; covering all of `u64` at
//! the same precision would take 30 KiB for values no wait in a service
//! reaches. Durations are recorded in nanoseconds
//! ([`record_duration`](Histogram::record_duration)).
//!
//! Count, min and max are exact. The sum (and so the mean) is read from the
//! buckets at snapshot time, each value counted as its bucket's middle, as
//! HdrHistogram computes its mean: exact for values below 128, within
//! 1/128 of the exact sum above. Keeping it exact would cost every record a
//! second atomic read-modify-write; an exporter's own histogram (feature
//! `metrics`) keeps its exact sum.
//!
//! # Sampled timing
//!
//! Recording costs a few nanoseconds; *timing* an event costs two clock
//! reads (15–28 ns each with Tokio's clock, less with the CPU's counter
//! that a [`FastClock`](crate::clock::FastClock) reads in a multi-thread
//! runtime), several times a closed circuit breaker's call. So the
//! histograms whose events are that cheap, the semaphore's `wait`, the
//! breaker's `call_duration` (both opt-in) and a channel's `send_wait`
//! (on by default: a send that waits for room costs about 100 ns), do not
//! time every event when events are frequent:
//!
//! * **Low rates: every event.** Time runs in windows of about 1 ms
//!   (2^20 ns). While fewer than 128 events land in a window (about
//!   122,000 a second for one primitive) every event is timed, so a
//!   test, a quiet service or a paused clock sees each one, as before.
//! * **High rates: one in 2^k.** When a window closes (at the first timed
//!   event past its end) the next window times each event with
//!   probability 1/2^k, 2^k the largest power of two not above the
//!   closed window's events over 64, at most the builder's
//!   `histogram_max_one_in` (default [`DEFAULT_MAX_ONE_IN`], 64): from 64
//!   to 128 events a window are timed, fewer only past the cap. The
//!   window's event count is estimated from its timed events and their
//!   weights, so no event writes shared state to be counted.
//! * **Chosen independently of the duration.** Whether an event is timed
//!   is drawn before it starts, from the calling thread's own SplitMix64
//!   generator (no shared write, no contention between threads).
//! * **Weighted, so the histogram estimates every event.** A timed event
//!   drawn at 1 in 2^k is recorded with a count of 2^k
//!   ([`Histogram::record_n`]; the adjusted count of OpenTelemetry's
//!   probability sampling). So [`HistogramSnapshot::count`] and
//!   [`sum`](HistogramSnapshot::sum) are unbiased estimates of the number
//!   and total duration of all events (exact while every event is timed),
//!   and each quantile is the quantile of that estimate: the sampling
//!   error of a quantile from `n` timed events is about
//!   `sqrt(q (1 - q) / n)` in rank, on top of the buckets' 0.79 %.
//!   [`min`](HistogramSnapshot::min) and [`max`](HistogramSnapshot::max)
//!   are exact over the timed events only: an outlier among the untimed
//!   ones is not seen.
//! * **The primitives' counters stay exact**: a breaker's calls, failures
//!   and slow calls, a semaphore's waiters, are counted for every event,
//!   timed or not. With the breaker's slow-call policy on, every call is
//!   timed for the policy and the histogram records each from the same
//!   two reads: no sampling.
//! * **After a burst**, a primitive that falls quiet keeps the burst's
//!   rate until its next timed event (expected within 2^k events, each
//!   standing for 2^k), then times every event again.
//! * **Every event timed**, when wanted: `histogram_max_one_in(1)` on the
//!   builder (at two clock reads an event).
//!
//! A pool's `submit_wait` is its admission semaphore's `wait` and is
//! sampled the same way, and so are its `queue_wait` and `run_time`
//! (on by default: two clock reads were about 7 % of a pool task that
//! yields once; the pool builders' `histogram_max_one_in` caps all
//! three). The other histograms (a rate limiter's wait, a loader's
//! batches, a gather's children) time every event they record: their
//! events cost far more than two clock reads (a timer, a batch).
//!
//! # Why not a crate
//!
//! `hdrhistogram` (the maintained Rust port of HdrHistogram) records through
//! `&mut self`: sharing one between tasks needs a lock or its
//! channel-based `SyncHistogram`, whose recorders must be refreshed by a
//! collector. A primitive's `metrics()` must be readable at any time from
//! any clone, and its record must cost a few atomic adds, so this is the
//! small lock-free variant of the same bucket scheme.
//!
//! # Memory ordering and consistency
//!
//! Every operation is `Relaxed`: a histogram carries no data for another
//! thread to act on. A snapshot taken while others record may include some
//! of the concurrent samples and not others, and a sample's min/max update
//! may land just after its bucket count (the snapshot then falls back on
//! the bucket bounds); no sample is ever lost or counted twice: once all
//! recorders have finished, a snapshot counts each exactly once
//! (`tests/loom_histogram.rs`).
//!
//! # Example
//!
//! ```
//! use flowguard::histogram::Histogram;
//! use std::time::Duration;
//!
//! let h = Histogram::new();
//! for ms in 1..=100 {
//!     h.record_duration(Duration::from_millis(ms));
//! }
//! let s = h.snapshot();
//! assert_eq!(s.count(), 100);
//! assert_eq!(s.max(), 100_000_000); // nanoseconds, exact
//! let p99 = s.quantile_duration(0.99);
//! assert!(p99.abs_diff(Duration::from_millis(99)) <= Duration::from_millis(99) / 128);
//! ```

use std::fmt;
use std::time::Duration;

use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Sub-bucket bits: 2^SUB_BITS buckets per power of two.
#[cfg(not(loom))]
const SUB_BITS: u32 = 6;
/// Values from 2^MAX_BITS up share the overflow bucket.
#[cfg(not(loom))]
const MAX_BITS: u32 = 40;
// Under loom every counter is a modelled atomic and every snapshot load a
// possible preemption point: keep the model small (same arithmetic).
#[cfg(loom)]
const SUB_BITS: u32 = 1;
#[cfg(loom)]
const MAX_BITS: u32 = 3;

const SUB_COUNT: usize = 1 << SUB_BITS;
/// Buckets below the overflow bucket.
const NORMAL_BUCKETS: usize = ((MAX_BITS - SUB_BITS + 1) as usize) << SUB_BITS;
/// The overflow bucket's index.
const OVERFLOW: usize = NORMAL_BUCKETS;
const BUCKETS: usize = NORMAL_BUCKETS + 1;
const LIMIT: u64 = 1 << MAX_BITS;

/// The bucket a value falls in, without a branch: below `2 * SUB_COUNT`
/// the shift is 0 and the index is the value itself; above, `shift` is the
/// power of two's distance from `SUB_BITS` and the sub-bucket is the top
/// `SUB_BITS + 1` bits (whose leading 1 lands the index in its range);
/// every value from `LIMIT` up computes an index at or past `OVERFLOW`.
#[inline]
fn bucket_of(v: u64) -> usize {
    let msb = 63 - (v | (2 * SUB_COUNT as u64 - 1)).leading_zeros(); // >= SUB_BITS
    let shift = msb - SUB_BITS;
    (((shift as usize) << SUB_BITS) + (v >> shift) as usize).min(OVERFLOW)
}

/// The lowest value and the width of a normal bucket.
fn bucket_bounds(index: usize) -> (u64, u64) {
    if index < SUB_COUNT {
        (index as u64, 1)
    } else {
        let shift = (index >> SUB_BITS) as u32 - 1;
        let sub = (index & (SUB_COUNT - 1)) as u64;
        ((SUB_COUNT as u64 + sub) << shift, 1 << shift)
    }
}

/// The value a normal bucket stands for in the sum and in quantiles: its
/// middle (its only value for the exact buckets below `2 * SUB_COUNT`).
#[inline]
fn bucket_mid(index: usize) -> u64 {
    let (lo, w) = bucket_bounds(index);
    lo + w / 2
}

/// A fixed-memory, lock-free log-linear histogram of `u64` values.
///
/// See the [module documentation](self) for the bucket layout, the error
/// bound (≤ 0.79 % relative) and the memory ordering.
///
/// # Examples
///
/// ```
/// use flowguard::histogram::Histogram;
///
/// let sizes = Histogram::new();
/// for n in [1, 2, 2, 3, 50] {
///     sizes.record(n);
/// }
/// let s = sizes.snapshot();
/// assert_eq!((s.count(), s.min(), s.max(), s.p50()), (5, 1, 50, 2));
/// assert_eq!(s.mean(), 11.6);
/// ```
pub struct Histogram {
    /// A fixed-size array: the index needs no bounds check.
    buckets: Box<[AtomicU64; BUCKETS]>,
    /// The sum of the values in the overflow bucket only (the others'
    /// sum is read from their buckets at snapshot time).
    overflow_sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Histogram {
    /// An empty histogram (allocates its fixed set of counters).
    pub fn new() -> Self {
        let buckets: Box<[AtomicU64]> = (0..BUCKETS).map(|_| AtomicU64::new(0)).collect();
        Self {
            buckets: buckets
                .try_into()
                .unwrap_or_else(|_| unreachable!("BUCKETS counters were made")),
            overflow_sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }

    /// Records one value. Lock-free, allocation-free: one atomic add to
    /// its bucket, and two plain loads (a read-modify-write of the min or
    /// max only when the value is a new extreme).
    #[inline]
    pub fn record(&self, value: u64) {
        let index = bucket_of(value);
        self.buckets[index].fetch_add(1, Relaxed);
        if index == OVERFLOW {
            self.overflow_sum.fetch_add(value, Relaxed);
        }
        // A plain load first: once the extremes settle, no read-modify-write.
        if value < self.min.load(Relaxed) {
            self.min.fetch_min(value, Relaxed);
        }
        if value > self.max.load(Relaxed) {
            self.max.fetch_max(value, Relaxed);
        }
    }

    /// Records `value` as `count` values at once (one atomic add, as
    /// [`record`](Self::record)); `count` 0 records nothing. This is how a
    /// sampled event stands for the events it was drawn from (see
    /// [Sampled timing](self#sampled-timing)): one value timed out of 64
    /// is recorded with a count of 64.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::histogram::Histogram;
    ///
    /// let h = Histogram::new();
    /// h.record_n(10, 3);
    /// h.record(1_000);
    /// let s = h.snapshot();
    /// assert_eq!((s.count(), s.min(), s.max(), s.p50()), (4, 10, 1_000, 10));
    /// assert_eq!(s.sum(), 3 * 10 + 1_004); // 1000 counts as the middle of its bucket, [1000, 1008)
    /// ```
    #[inline]
    pub fn record_n(&self, value: u64, count: u64) {
        if count == 0 {
            return;
        }
        let index = bucket_of(value);
        self.buckets[index].fetch_add(count, Relaxed);
        if index == OVERFLOW {
            self.overflow_sum
                .fetch_add(value.wrapping_mul(count), Relaxed);
        }
        if value < self.min.load(Relaxed) {
            self.min.fetch_min(value, Relaxed);
        }
        if value > self.max.load(Relaxed) {
            self.max.fetch_max(value, Relaxed);
        }
    }

    /// Records a duration in nanoseconds (saturating at `u64::MAX` ns).
    #[inline]
    pub fn record_duration(&self, d: Duration) {
        self.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// A point-in-time copy of the non-empty buckets and the summary values.
    ///
    /// Lock-free; allocates the snapshot's bucket list.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::new();
        let mut count = 0u64;
        let mut sum = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Relaxed);
            if n != 0 {
                buckets.push((i as u32, n));
                count += n;
                if i != OVERFLOW {
                    sum = sum.wrapping_add(n.wrapping_mul(bucket_mid(i)));
                }
            }
        }
        let sum = sum.wrapping_add(self.overflow_sum.load(Relaxed));
        if count == 0 {
            return HistogramSnapshot::default();
        }
        // Recorders update the bucket before the extremes: widen them to
        // the buckets seen so that min <= every quantile <= max holds.
        let first = buckets[0].0 as usize;
        let last = buckets[buckets.len() - 1].0 as usize;
        let lowest = if first == OVERFLOW {
            LIMIT
        } else {
            bucket_bounds(first).0
        };
        let highest = if last == OVERFLOW {
            u64::MAX
        } else {
            let (lo, w) = bucket_bounds(last);
            lo + (w - 1)
        };
        let min = self.min.load(Relaxed);
        let max = self.max.load(Relaxed);
        let min = if min <= highest { min } else { lowest };
        let max = if max >= lowest { max } else { highest };
        HistogramSnapshot {
            count,
            sum,
            min,
            max: max.max(min),
            buckets: buckets.into_boxed_slice(),
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.snapshot(), f)
    }
}

/// A point-in-time view of a [`Histogram`]: count, sum, min, max and the
/// non-empty buckets, from which any quantile is read.
///
/// Values are in the unit recorded: nanoseconds for durations (the
/// `*_duration` readers convert). An empty snapshot reads 0 everywhere; so
/// does the snapshot of a histogram a primitive was built without.
///
/// # Examples
///
/// ```
/// use flowguard::histogram::Histogram;
///
/// let h = Histogram::new();
/// assert_eq!(h.snapshot().p99(), 0); // empty
/// for v in 0..1000 {
///     h.record(v);
/// }
/// let s = h.snapshot();
/// assert!(s.p50().abs_diff(499) <= 499 / 128); // exact below 64, within 0.79 % above
/// assert!(s.p90().abs_diff(899) <= 899 / 128);
/// assert!(s.quantile(0.999).abs_diff(998) <= 998 / 128);
/// assert_eq!(s.quantile(1.0), 999); // the max, exactly
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    count: u64,
    sum: u64,
    min: u64,
    max: u64,
    /// (bucket index, count), ascending, counts > 0.
    buckets: Box<[(u32, u64)]>,
}

impl HistogramSnapshot {
    /// Number of values recorded ([`record_n`](Histogram::record_n)
    /// counts its `count`): for a sampled histogram, the estimated number
    /// of events (see [Sampled timing](self#sampled-timing)).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the values recorded, each counted as the middle of its
    /// bucket: exact for values below 128 and from 2^40 up, within 1/128
    /// (0.79 %) of the exact sum otherwise (wrapping after 2^64).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// Smallest value recorded; 0 when empty.
    pub fn min(&self) -> u64 {
        self.min
    }

    /// Largest value recorded; 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean of the values recorded, [`sum`](Self::sum) over count (so
    /// within 0.79 %), kept between min and max; 0.0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.sum as f64 / self.count as f64).clamp(self.min as f64, self.max as f64)
        }
    }

    /// The value at quantile `q` (0.0 ..= 1.0; out-of-range and NaN are
    /// clamped): the smallest recorded value such that at least `q` of all
    /// values are at most it, within 0.79 % (see the module docs); the
    /// lowest and highest ranks are the exact min and max. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        // The rank (1-based) of the sample at q: ceil(q * count), at least 1.
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        // The extremes are kept exactly: no bucket rounding at the ends.
        if rank == 1 {
            return self.min;
        }
        if rank == self.count {
            return self.max;
        }
        let mut seen = 0;
        for &(index, n) in self.buckets.iter() {
            seen += n;
            if seen >= rank {
                let index = index as usize;
                if index == OVERFLOW {
                    return self.max;
                }
                return bucket_mid(index).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// The median, [`quantile(0.5)`](Self::quantile).
    pub fn p50(&self) -> u64 {
        self.quantile(0.5)
    }

    /// [`quantile(0.9)`](Self::quantile).
    pub fn p90(&self) -> u64 {
        self.quantile(0.9)
    }

    /// [`quantile(0.99)`](Self::quantile).
    pub fn p99(&self) -> u64 {
        self.quantile(0.99)
    }

    /// [`quantile(0.999)`](Self::quantile).
    pub fn p999(&self) -> u64 {
        self.quantile(0.999)
    }

    /// [`quantile`](Self::quantile) read as nanoseconds.
    pub fn quantile_duration(&self, q: f64) -> Duration {
        Duration::from_nanos(self.quantile(q))
    }

    /// [`max`](Self::max) read as nanoseconds.
    pub fn max_duration(&self) -> Duration {
        Duration::from_nanos(self.max)
    }

    /// [`mean`](Self::mean) read as nanoseconds.
    pub fn mean_duration(&self) -> Duration {
        Duration::from_nanos(self.mean() as u64)
    }
}

impl fmt::Debug for HistogramSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistogramSnapshot")
            .field("count", &self.count)
            .field("min", &self.min)
            .field("p50", &self.p50())
            .field("p90", &self.p90())
            .field("p99", &self.p99())
            .field("p999", &self.p999())
            .field("max", &self.max)
            .finish()
    }
}

/// A histogram a primitive records into when built with histograms on
/// (the default), or nothing when built with them off. With the `metrics`
/// feature, a named primitive also forwards each value to a
/// [`metrics::Histogram`] handle registered once at build time (durations
/// in seconds, the Prometheus convention).
///
/// A recorder made [`with_sampling`](Recorder::with_sampling) also decides
/// which events to time (see [Sampled timing](self#sampled-timing)):
/// [`sample`](Recorder::sample) before reading the clock, then
/// [`record_sampled`](Recorder::record_sampled).
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    hist: Option<Box<Histogram>>,
    sampler: Sampler,
    #[cfg(all(feature = "metrics", not(loom)))]
    export: crate::sync::StdOnceLock<::metrics::Histogram>,
}

/// The length of a sampling window: 2^20 ns, about 1.05 ms.
pub(crate) const WINDOW_NANOS: u64 = 1 << 20;
/// The timed events a sampling window aims for: an event rate of fewer
/// than twice this per window is timed on every event.
pub(crate) const TIMED_PER_WINDOW: u64 = 64;
/// The default cap on the sampling stride (one event in this many).
pub const DEFAULT_MAX_ONE_IN: u32 = 64;
/// The largest cap a builder accepts.
pub const MAX_ONE_IN_LIMIT: u32 = 1 << 16;

/// Which events are timed, shared by every thread that records: the
/// stride's log2 (read by every event, written once a window), and the
/// window's start and weighted event count (written by timed events only).
#[derive(Debug)]
struct Sampler {
    /// log2 of the stride: an event is timed with probability 2^-shift.
    shift: AtomicUsize,
    /// log2 of the largest stride allowed (0: every event is timed).
    max_shift: u32,
    /// When the window opened, in the caller's nanoseconds.
    window_start: AtomicU64,
    /// The events the window's timed events stand for (each its weight).
    window_events: AtomicU64,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new(1)
    }
}

impl Sampler {
    fn new(max_one_in: u32) -> Self {
        Self {
            shift: AtomicUsize::new(0),
            max_shift: max_one_in.max(1).ilog2(),
            window_start: AtomicU64::new(0),
            window_events: AtomicU64::new(0),
        }
    }

    /// Counts a timed event of `weight` ending at `now`; the first one
    /// past the window's end closes it and sets the stride for the next.
    fn observe(&self, weight: u64, now: u64) {
        if self.max_shift == 0 {
            return;
        }
        self.window_events.fetch_add(weight, Relaxed);
        let start = self.window_start.load(Relaxed);
        let elapsed = now.saturating_sub(start);
        if elapsed < WINDOW_NANOS {
            return;
        }
        // One closer per window; the others' events land in either window.
        if self
            .window_start
            .compare_exchange(start, now, Relaxed, Relaxed)
            .is_err()
        {
            return;
        }
        let events = self.window_events.swap(0, Relaxed);
        self.shift
            .store(shift_for(events, elapsed, self.max_shift) as usize, Relaxed);
    }
}

/// The stride's log2 for a window of `events` events over `elapsed` ns
/// (at least a window): the largest power of two not above the events per
/// window over [`TIMED_PER_WINDOW`], at most `max_shift`.
fn shift_for(events: u64, elapsed: u64, max_shift: u32) -> u32 {
    let elapsed = elapsed.max(WINDOW_NANOS);
    let per_window = u128::from(events) * u128::from(WINDOW_NANOS) / u128::from(elapsed);
    let stride = (per_window / u128::from(TIMED_PER_WINDOW)) as u64; // < 2^64: elapsed >= window
    if stride <= 1 {
        0
    } else {
        stride.ilog2().min(max_shift)
    }
}

/// Validates a builder's `histogram_max_one_in`: 1 ..= [`MAX_ONE_IN_LIMIT`],
/// rounded down to a power of two.
pub(crate) fn check_max_one_in(component: &'static str, n: u32) -> Result<u32, crate::ConfigError> {
    use crate::ConfigErrorKind;
    if n == 0 {
        return Err(crate::ConfigError::new(
            component,
            "histogram_max_one_in",
            ConfigErrorKind::Zero,
            "must be at least 1 (1 times every event)",
        ));
    }
    if n > MAX_ONE_IN_LIMIT {
        return Err(crate::ConfigError::new(
            component,
            "histogram_max_one_in",
            ConfigErrorKind::TooLarge,
            format!("must be at most {MAX_ONE_IN_LIMIT}, got {n}"),
        ));
    }
    Ok(1 << n.ilog2())
}

/// A sampling decision: the event is timed and stands for `2^shift` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timed(u8);

impl Timed {
    /// Timed because every event is (weight 1).
    pub(crate) const EVERY: Timed = Timed(0);

    /// How many events this timed one stands for.
    #[inline]
    pub(crate) fn weight(self) -> u64 {
        1 << self.0
    }
}

impl Recorder {
    pub(crate) fn new(enabled: bool) -> Self {
        Self::with_sampling(enabled, 1)
    }

    /// A recorder whose [`sample`](Self::sample) times every event at low
    /// rates and about one in up to `max_one_in` (rounded down to a power
    /// of two; 1: every event) at high ones.
    pub(crate) fn with_sampling(enabled: bool, max_one_in: u32) -> Self {
        Self {
            hist: enabled.then(|| Box::new(Histogram::new())),
            sampler: Sampler::new(max_one_in),
            #[cfg(all(feature = "metrics", not(loom)))]
            export: crate::sync::StdOnceLock::new(),
        }
    }

    /// Whether to time this event: `None` when off or when the event is
    /// not drawn. A relaxed load and, while sampling, a draw from the
    /// thread's own generator: no shared write.
    #[inline]
    pub(crate) fn sample(&self) -> Option<Timed> {
        self.hist.as_ref()?;
        let shift = self.sampler.shift.load(Relaxed) as u32;
        // shift <= 16: the draw's top `shift` bits are all zero with
        // probability 2^-shift, whatever the event's duration.
        if shift == 0 || crate::rng::thread_u64() >> (64 - shift) == 0 {
            Some(Timed(shift as u8))
        } else {
            None
        }
    }

    /// Records the duration of an event [`sample`](Self::sample) drew,
    /// `nanos` long and ending at `now` (nanoseconds from any origin fixed
    /// for this recorder), with the weight it was drawn with.
    #[inline]
    pub(crate) fn record_sampled(&self, timed: Timed, nanos: u64, now: u64) {
        #[cfg(loom)]
        let nanos = {
            let _ = nanos;
            0
        };
        // As for `record_duration`: under loom the shells' real times
        // must not decide which atomics are touched (no window closes).
        #[cfg(loom)]
        let now = {
            let _ = now;
            0
        };
        if let Some(h) = &self.hist {
            let weight = timed.weight();
            h.record_n(nanos, weight);
            #[cfg(all(feature = "metrics", not(loom)))]
            if let Some(e) = self.export.get() {
                e.record_many(nanos as f64 / 1e9, weight as usize);
            }
            self.sampler.observe(weight, now);
        }
    }

    /// The current stride: one event in this many is timed.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn stride(&self) -> u64 {
        1 << self.sampler.shift.load(Relaxed)
    }

    /// Whether values are kept: callers skip their clock reads when not.
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.hist.is_some()
    }

    /// Forwards every later value to `handle` too (once; a second call is
    /// ignored). Nothing is forwarded while histograms are off.
    #[cfg(all(feature = "metrics", not(loom)))]
    pub(crate) fn export_to(&self, handle: ::metrics::Histogram) {
        if self.enabled() {
            let _ = self.export.set(handle);
        }
    }

    #[inline]
    pub(crate) fn record(&self, value: u64) {
        if let Some(h) = &self.hist {
            h.record(value);
            #[cfg(all(feature = "metrics", not(loom)))]
            if let Some(e) = self.export.get() {
                e.record(value as f64);
            }
        }
    }

    #[inline]
    pub(crate) fn record_duration(&self, d: Duration) {
        // The shells time with Tokio's real clock; under loom a value that
        // differs between executions would change which atomics are
        // touched and make the model nondeterministic. Loom checks the
        // counting, not the values.
        #[cfg(loom)]
        let d = {
            let _ = d;
            Duration::ZERO
        };
        if let Some(h) = &self.hist {
            h.record_duration(d);
            #[cfg(all(feature = "metrics", not(loom)))]
            if let Some(e) = self.export.get() {
                e.record(d.as_secs_f64());
            }
        }
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        self.hist.as_ref().map(|h| h.snapshot()).unwrap_or_default()
    }
}

/// The sampler's shared state under the model checker, for
/// `tests/loom_histogram.rs` (not part of the API).
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_model {
    use super::{HistogramSnapshot, Recorder};

    /// A sampling recorder whose windows the model closes with chosen times.
    #[derive(Debug)]
    pub struct Sampled(Recorder);

    impl Sampled {
        /// A sampling recorder, histogram on.
        pub fn new(max_one_in: u32) -> Self {
            Self(Recorder::with_sampling(true, max_one_in))
        }

        /// Draws (always taken under loom) and records `value` ending at
        /// `now`; returns the weight recorded.
        pub fn record(&self, value: u64, now: u64) -> u64 {
            let Some(t) = self.0.sample() else {
                return 0;
            };
            if let Some(h) = &self.0.hist {
                h.record_n(value, t.weight());
            }
            self.0.sampler.observe(t.weight(), now);
            t.weight()
        }

        /// Counts `events` in the open window, as timed events of that
        /// total weight would (without modelling each one).
        pub fn preload(&self, events: u64) {
            self.0
                .sampler
                .window_events
                .fetch_add(events, crate::sync::atomic::Ordering::Relaxed);
        }

        /// The stride events are now drawn with.
        pub fn stride(&self) -> u64 {
            1 << self
                .0
                .sampler
                .shift
                .load(crate::sync::atomic::Ordering::Relaxed)
        }

        /// The histogram.
        pub fn snapshot(&self) -> HistogramSnapshot {
            self.0.snapshot()
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn layout_constants() {
        assert_eq!(SUB_COUNT, 64);
        assert_eq!(BUCKETS, 2241);
        assert_eq!(LIMIT, 1 << 40);
    }

    #[test]
    fn small_values_are_exact() {
        for v in 0..SUB_COUNT as u64 * 2 {
            let i = bucket_of(v);
            assert_eq!(bucket_bounds(i), (v, 1), "value {v}");
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 1);
        assert_eq!(bucket_of(63), 63);
        assert_eq!(bucket_of(64), 64);
        assert_eq!(bucket_of(127), 127);
        assert_eq!(bucket_of(128), 128); // first bucket of width 2
        assert_eq!(bucket_bounds(128), (128, 2));
        assert_eq!(bucket_of(129), 128);
        assert_eq!(bucket_of(130), 129);
    }

    #[test]
    fn buckets_are_contiguous_and_ascending() {
        let mut next = 0u64;
        for i in 0..NORMAL_BUCKETS {
            let (lo, w) = bucket_bounds(i);
            assert_eq!(lo, next, "bucket {i}");
            assert_eq!(bucket_of(lo), i);
            assert_eq!(bucket_of(lo + w - 1), i);
            // Relative width bounded: w / lo <= 1/64 above the exact range.
            if lo >= SUB_COUNT as u64 {
                assert!(w * SUB_COUNT as u64 <= lo, "bucket {i}");
            }
            next = lo + w;
        }
        assert_eq!(next, LIMIT);
        assert_eq!(bucket_of(LIMIT - 1), NORMAL_BUCKETS - 1);
        assert_eq!(bucket_of(LIMIT), OVERFLOW);
        assert_eq!(bucket_of(u64::MAX), OVERFLOW);
        assert_eq!(bucket_of(u64::MAX - 1), OVERFLOW);
    }

    #[test]
    fn empty_snapshot_reads_zero() {
        let s = Histogram::new().snapshot();
        assert_eq!((s.count(), s.min(), s.max(), s.sum()), (0, 0, 0, 0));
        assert_eq!((s.p50(), s.p999(), s.quantile(1.0)), (0, 0, 0));
        assert_eq!(s.mean(), 0.0);
        assert_eq!(s, HistogramSnapshot::default());
        assert_eq!(
            Recorder::new(false).snapshot(),
            HistogramSnapshot::default()
        );
    }

    #[test]
    fn extremes_and_overflow() {
        let h = Histogram::new();
        h.record(0);
        h.record(u64::MAX);
        h.record(LIMIT);
        let s = h.snapshot();
        assert_eq!((s.count(), s.min(), s.max()), (3, 0, u64::MAX));
        assert_eq!(s.quantile(0.0), 0);
        assert_eq!(s.p50(), u64::MAX); // in the overflow bucket: the max
        assert_eq!(s.sum(), u64::MAX.wrapping_add(LIMIT));
    }

    #[test]
    fn single_value_is_exact_anywhere() {
        for v in [0, 1, 63, 64, 1_000, 1_234_567, LIMIT - 1, LIMIT, u64::MAX] {
            let h = Histogram::new();
            h.record(v);
            let s = h.snapshot();
            for q in [0.0, 0.5, 0.99, 1.0] {
                assert_eq!(s.quantile(q), v, "value {v} q {q}");
            }
        }
    }

    #[test]
    fn durations_in_nanoseconds() {
        let h = Histogram::new();
        h.record_duration(Duration::from_nanos(1));
        h.record_duration(Duration::from_micros(250));
        h.record_duration(Duration::from_secs(3));
        h.record_duration(Duration::MAX); // saturates
        let s = h.snapshot();
        assert_eq!(s.min(), 1);
        assert_eq!(s.max(), u64::MAX);
        let p50 = s.quantile_duration(0.5);
        assert!(p50.abs_diff(Duration::from_micros(250)) <= Duration::from_micros(250) / 128);
        let p75 = s.quantile_duration(0.75);
        assert!(p75.abs_diff(Duration::from_secs(3)) <= Duration::from_secs(3) / 128);
    }

    #[test]
    fn quantile_argument_is_clamped() {
        let h = Histogram::new();
        for v in 1..=10 {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.quantile(-1.0), 1);
        assert_eq!(s.quantile(f64::NAN), 1);
        assert_eq!(s.quantile(7.0), 10);
        assert_eq!(s.quantile(0.3), 3);
        assert_eq!(s.quantile(0.31), 4);
    }

    #[test]
    fn record_n_counts_the_value_n_times() {
        let h = Histogram::new();
        h.record_n(5, 0); // nothing, not even the extremes
        assert_eq!(h.snapshot(), HistogramSnapshot::default());
        h.record_n(3, 4);
        h.record_n(LIMIT, 2);
        let s = h.snapshot();
        assert_eq!((s.count(), s.min(), s.max()), (6, 3, LIMIT));
        assert_eq!(s.sum(), 12 + 2 * LIMIT);
        assert_eq!((s.quantile(0.66), s.quantile(0.67)), (3, LIMIT));
    }

    #[test]
    fn the_stride_is_the_windows_events_over_the_target_as_a_power_of_two() {
        let w = WINDOW_NANOS;
        assert_eq!(shift_for(0, w, 16), 0);
        assert_eq!(
            shift_for(127, w, 16),
            0,
            "under twice the target: every event"
        );
        assert_eq!(shift_for(128, w, 16), 1);
        assert_eq!(shift_for(255, w, 16), 1);
        assert_eq!(shift_for(256, w, 16), 2);
        assert_eq!(shift_for(64 << 10, w, 16), 10);
        assert_eq!(shift_for(64 << 10, w, 6), 6, "capped");
        assert_eq!(shift_for(u64::MAX, w, 16), 16);
        // A longer window: the rate per window counts.
        assert_eq!(shift_for(256, 2 * w, 16), 1);
        assert_eq!(shift_for(256, 4 * w, 16), 0);
        assert_eq!(shift_for(256, w / 2, 16), 2, "read as a whole window");
    }

    #[test]
    fn max_one_in_is_checked_and_rounded_down() {
        assert_eq!(check_max_one_in("x", 1), Ok(1));
        assert_eq!(check_max_one_in("x", 100), Ok(64));
        assert_eq!(
            check_max_one_in("x", MAX_ONE_IN_LIMIT),
            Ok(MAX_ONE_IN_LIMIT)
        );
        let zero = check_max_one_in("x", 0).unwrap_err();
        assert_eq!(
            (zero.field(), zero.kind()),
            ("histogram_max_one_in", crate::ConfigErrorKind::Zero)
        );
        let big = check_max_one_in("x", MAX_ONE_IN_LIMIT + 1).unwrap_err();
        assert_eq!(big.kind(), crate::ConfigErrorKind::TooLarge);
    }

    /// Times `n` events (all drawn) ending at `now`; returns those timed.
    fn drive(r: &Recorder, n: u64, now: u64) -> u64 {
        let mut timed = 0;
        for _ in 0..n {
            if let Some(t) = r.sample() {
                r.record_sampled(t, 1_000, now);
                timed += 1;
            }
        }
        timed
    }

    #[test]
    fn low_rates_time_every_event() {
        let r = Recorder::with_sampling(true, 64);
        // 127 events a window, window after window: every one timed.
        for window in 1..=20 {
            assert_eq!(drive(&r, 127, window * WINDOW_NANOS), 127);
            assert_eq!(r.stride(), 1);
        }
        assert_eq!(r.snapshot().count(), 20 * 127);
        // Off: nothing is drawn; a cap of 1: never sampled.
        assert_eq!(Recorder::with_sampling(false, 64).sample(), None);
        let every = Recorder::with_sampling(true, 1);
        assert_eq!(drive(&every, 100_000, WINDOW_NANOS), 100_000);
        assert_eq!(drive(&every, 10, 10 * WINDOW_NANOS), 10);
        assert_eq!(every.stride(), 1);
    }

    #[test]
    fn high_rates_are_sampled_at_the_documented_rate_with_weights() {
        let r = Recorder::with_sampling(true, 64);
        // 10,000 events in the first window, all timed (weight 1); the
        // first event past its end closes it: 10,001 / 64 -> 1 in 64 (cap).
        assert_eq!(drive(&r, 10_000, 0), 10_000);
        assert_eq!(drive(&r, 1, WINDOW_NANOS), 1);
        assert_eq!(r.stride(), 64);
        let before = r.snapshot().count();
        assert_eq!(before, 10_001);
        // 64,000 events drawn at 1 in 64: about 1,000 timed (binomial,
        // standard deviation 31; six of them allowed), each weighing 64.
        let n = 64_000;
        let timed = drive(&r, n, WINDOW_NANOS + 1);
        assert!(timed.abs_diff(1_000) <= 186, "{timed} timed");
        let added = r.snapshot().count() - before;
        assert_eq!(added, timed * 64);
        // A quiet window after: back to every event at its first timed one.
        assert_eq!(r.stride(), 64);
        let mut quiet = 0;
        while r.stride() == 64 {
            quiet += 1;
            drive(&r, 1, 1_000 * WINDOW_NANOS);
            assert!(quiet < 10_000, "never drawn");
        }
        assert_eq!(r.stride(), 1);
        assert_eq!(drive(&r, 50, 1_001 * WINDOW_NANOS), 50);
        // A cap of 1024: the rate above picks 1 in 128.
        let r = Recorder::with_sampling(true, 1024);
        drive(&r, 10_000, 0);
        drive(&r, 1, WINDOW_NANOS);
        assert_eq!(r.stride(), 128);
    }

    /// A sampled histogram's quantiles against the exact ones of every
    /// event, for a known distribution (uniform over [10^3, 10^6) ns) and a
    /// seeded draw: within the buckets' 1/128 plus five standard errors
    /// of the sampled rank (`sqrt(q (1 - q) / timed)`); the count within
    /// five standard errors of the events.
    #[test]
    fn sampled_quantiles_are_within_the_documented_error() {
        use crate::rng::SplitMix64;
        let (n, stride) = (640_000u64, 64u64);
        let mut values = SplitMix64::new(1);
        let mut draw = SplitMix64::new(2);
        let h = Histogram::new();
        let mut all = Vec::with_capacity(n as usize);
        let mut timed = 0u64;
        for _ in 0..n {
            let v = values.between(1_000, 999_999);
            all.push(v);
            if draw.next_u64() >> (64 - stride.ilog2()) == 0 {
                h.record_n(v, stride);
                timed += 1;
            }
        }
        all.sort_unstable();
        let s = h.snapshot();
        let count_sd = stride as f64 * (timed as f64 * (1.0 - 1.0 / stride as f64)).sqrt();
        assert!(
            (s.count() as f64 - n as f64).abs() <= 5.0 * count_sd,
            "{}",
            s.count()
        );
        for q in [0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999] {
            let exact = all[((q * n as f64).ceil() as usize).clamp(1, n as usize) - 1];
            let rank_err = 5.0 * (q * (1.0 - q) / timed as f64).sqrt();
            // Uniform: a rank error r is a value error of r * the range.
            let bound = exact as f64 / 128.0 + rank_err * 999_000.0;
            let got = s.quantile(q);
            assert!(
                (got as f64 - exact as f64).abs() <= bound,
                "q {q}: got {got}, exact {exact}, bound {bound}"
            );
        }
    }

    #[test]
    fn recorder_off_keeps_nothing() {
        let r = Recorder::new(false);
        assert!(!r.enabled());
        r.record(5);
        assert_eq!(r.snapshot().count(), 0);
        let r = Recorder::new(true);
        r.record(5);
        assert_eq!(r.snapshot().count(), 1);
    }
}
