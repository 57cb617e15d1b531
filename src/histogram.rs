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

use crate::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
    /// Number of values recorded.
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
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    hist: Option<Box<Histogram>>,
    #[cfg(all(feature = "metrics", not(loom)))]
    export: crate::sync::StdOnceLock<::metrics::Histogram>,
}

impl Recorder {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            hist: enabled.then(|| Box::new(Histogram::new())),
            #[cfg(all(feature = "metrics", not(loom)))]
            export: crate::sync::StdOnceLock::new(),
        }
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

    /// A duration already in nanoseconds (exported in seconds).
    #[inline]
    pub(crate) fn record_nanos(&self, nanos: u64) {
        #[cfg(loom)]
        let nanos = {
            let _ = nanos;
            0
        };
        if let Some(h) = &self.hist {
            h.record(nanos);
            #[cfg(all(feature = "metrics", not(loom)))]
            if let Some(e) = self.export.get() {
                e.record(nanos as f64 / 1e9);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        self.hist.as_ref().map(|h| h.snapshot()).unwrap_or_default()
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
