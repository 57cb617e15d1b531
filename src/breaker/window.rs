//! Sliding windows of call outcomes: the pure arithmetic under the breaker.
//!
//! Two kinds, as in resilience4j:
//!
//! - **count-based**: the last `size` recorded outcomes, kept in a ring of
//!   one byte per outcome (memory: `size` bytes);
//! - **time-based**: the outcomes of the last `length`, kept as `buckets`
//!   per-bucket totals (memory: `buckets` × 24 bytes, whatever the call
//!   rate). Bucket `i` holds the outcomes recorded at
//!   `origin + i·width ≤ t < origin + (i+1)·width`, `width = length / buckets`;
//!   the window is the current bucket and the `buckets - 1` before it, so an
//!   outcome is forgotten between `length - width` and `length` after it was
//!   recorded (at bucket granularity, never later).
//!
//! Both keep running totals, so recording and reading are O(1) (a time window
//! that has been idle clears at most `buckets` stale buckets once).
//! Nothing here reads a clock: instants come in as arguments.

use std::time::Duration;

use tokio::time::Instant;

/// One call's outcome as the window sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Record {
    /// The call was classified as a failure.
    pub(crate) failure: bool,
    /// The call took longer than the slow-call threshold.
    pub(crate) slow: bool,
}

impl Record {
    #[inline]
    fn encode(self) -> u8 {
        u8::from(self.failure) | (u8::from(self.slow) << 1)
    }

    #[inline]
    fn decode(bits: u8) -> Self {
        Self {
            failure: bits & 1 != 0,
            slow: bits & 2 != 0,
        }
    }
}

/// Totals over a window: calls, failed calls, slow calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Counts {
    #[inline]
    pub(crate) fn add(&mut self, r: Record) {
        self.calls += 1;
        self.failures += u64::from(r.failure);
        self.slow += u64::from(r.slow);
    }

    #[inline]
    fn sub(&mut self, r: Record) {
        self.calls -= 1;
        self.failures -= u64::from(r.failure);
        self.slow -= u64::from(r.slow);
    }

    #[inline]
    fn sub_counts(&mut self, other: Counts) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }

    /// `failures / calls ≥ threshold_percent / 100`, exactly for whole-number
    /// thresholds (both sides are products of integers below 2^53).
    #[inline]
    pub(crate) fn failure_rate_at_least(&self, threshold_percent: f64) -> bool {
        rate_at_least(self.failures, self.calls, threshold_percent)
    }

    /// `slow / calls ≥ threshold_percent / 100`.
    #[inline]
    pub(crate) fn slow_rate_at_least(&self, threshold_percent: f64) -> bool {
        rate_at_least(self.slow, self.calls, threshold_percent)
    }

    /// Failure rate in percent (`None` with no calls).
    pub(crate) fn failure_percent(&self) -> Option<f64> {
        percent(self.failures, self.calls)
    }

    /// Slow-call rate in percent (`None` with no calls).
    pub(crate) fn slow_percent(&self) -> Option<f64> {
        percent(self.slow, self.calls)
    }
}

#[inline]
fn rate_at_least(part: u64, calls: u64, threshold_percent: f64) -> bool {
    calls > 0 && (part as f64) * 100.0 >= threshold_percent * (calls as f64)
}

fn percent(part: u64, calls: u64) -> Option<f64> {
    (calls > 0).then(|| part as f64 * 100.0 / calls as f64)
}

/// The last `size` outcomes.
#[derive(Debug, Clone)]
pub(crate) struct CountWindow {
    slots: Box<[u8]>,
    /// Where the next outcome goes (the oldest one once full).
    next: usize,
    len: usize,
    totals: Counts,
}

impl CountWindow {
    /// `size` must be at least 1 (the builder checks it).
    pub(crate) fn new(size: u32) -> Self {
        Self {
            slots: vec![0; size.max(1) as usize].into_boxed_slice(),
            next: 0,
            len: 0,
            totals: Counts::default(),
        }
    }

    #[inline]
    pub(crate) fn record(&mut self, r: Record) {
        if self.len == self.slots.len() {
            self.totals.sub(Record::decode(self.slots[self.next]));
        } else {
            self.len += 1;
        }
        self.slots[self.next] = r.encode();
        self.totals.add(r);
        self.next += 1;
        if self.next == self.slots.len() {
            self.next = 0;
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        self.totals
    }

    pub(crate) fn clear(&mut self) {
        self.next = 0;
        self.len = 0;
        self.totals = Counts::default();
    }
}

/// The outcomes of the last `length`, in `buckets` buckets.
#[derive(Debug, Clone)]
pub(crate) struct TimeWindow {
    origin: Instant,
    bucket_nanos: u64,
    buckets: Box<[Counts]>,
    /// Index (since `origin`) of the newest bucket; the window is
    /// `head - buckets + 1 ..= head`.
    head: u64,
    totals: Counts,
}

impl TimeWindow {
    /// `buckets ≥ 1` and `length ≥ buckets` nanoseconds (the builder checks it).
    pub(crate) fn new(origin: Instant, length: Duration, buckets: u32) -> Self {
        let buckets = buckets.max(1);
        let nanos = u64::try_from(length.as_nanos()).unwrap_or(u64::MAX);
        Self {
            origin,
            bucket_nanos: (nanos / u64::from(buckets)).max(1),
            buckets: vec![Counts::default(); buckets as usize].into_boxed_slice(),
            head: 0,
            totals: Counts::default(),
        }
    }

    /// The bucket index of `now` (instants before `origin` count as bucket 0).
    #[inline]
    pub(crate) fn bucket_of(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / u128::from(self.bucket_nanos)).unwrap_or(u64::MAX)
    }

    /// Moves the window so that `now`'s bucket is the newest, clearing the
    /// buckets that fell out. Time never moves the window backwards.
    #[inline]
    fn advance(&mut self, now: Instant) {
        let idx = self.bucket_of(now);
        if idx <= self.head {
            return;
        }
        let n = self.buckets.len() as u64;
        let steps = (idx - self.head).min(n);
        // The slots of indices idx-steps+1..=idx last held indices ≤ idx-n,
        // which are outside the new window.
        for k in 0..steps {
            let slot = ((idx - k) % n) as usize;
            let stale = std::mem::take(&mut self.buckets[slot]);
            self.totals.sub_counts(stale);
        }
        self.head = idx;
    }

    #[inline]
    pub(crate) fn record(&mut self, now: Instant, r: Record) {
        self.advance(now);
        let slot = (self.head % self.buckets.len() as u64) as usize;
        self.buckets[slot].add(r);
        self.totals.add(r);
    }

    pub(crate) fn counts(&mut self, now: Instant) -> Counts {
        self.advance(now);
        self.totals
    }

    pub(crate) fn clear(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = Counts::default());
        self.totals = Counts::default();
    }
}

/// Either kind of window.
#[derive(Debug, Clone)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    #[inline]
    pub(crate) fn record(&mut self, now: Instant, r: Record) {
        match self {
            Window::Count(w) => w.record(r),
            Window::Time(w) => w.record(now, r),
        }
    }

    pub(crate) fn counts(&mut self, now: Instant) -> Counts {
        match self {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(now),
        }
    }

    pub(crate) fn clear(&mut self) {
        match self {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
        }
    }

    /// Whether this is a count window holding its full size.
    #[inline]
    pub(crate) fn is_full_count(&self) -> bool {
        matches!(self, Window::Count(w) if w.len == w.slots.len())
    }

    /// Whether recording needs the current time.
    pub(crate) fn is_time_based(&self) -> bool {
        matches!(self, Window::Time(_))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const F: Record = Record {
        failure: true,
        slow: false,
    };
    const S: Record = Record {
        failure: false,
        slow: false,
    };
    const SLOW: Record = Record {
        failure: false,
        slow: true,
    };

    #[test]
    fn count_window_keeps_the_last_n() {
        let mut w = CountWindow::new(3);
        for r in [F, F, S] {
            w.record(r);
        }
        assert_eq!(w.counts().calls, 3);
        assert_eq!(w.counts().failures, 2);
        w.record(S); // evicts the first F
        assert_eq!(w.counts().failures, 1);
        w.record(SLOW); // evicts the second F
        assert_eq!(
            w.counts(),
            Counts {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
        w.clear();
        assert_eq!(w.counts(), Counts::default());
    }

    #[test]
    fn rates_are_inclusive_and_exact() {
        let c = Counts {
            calls: 5,
            failures: 2,
            slow: 0,
        };
        assert!(c.failure_rate_at_least(40.0));
        assert!(!c.failure_rate_at_least(40.000_001));
        assert_eq!(c.failure_percent(), Some(40.0));
        assert_eq!(Counts::default().failure_percent(), None);
        assert!(!Counts::default().failure_rate_at_least(0.0));
    }

    #[test]
    fn time_window_forgets_at_bucket_granularity() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut w = TimeWindow::new(t0, 10 * s, 10);
        w.record(t0 + s / 2, F); // bucket 0
        w.record(t0 + 3 * s, F); // bucket 3
        assert_eq!(w.counts(t0 + 9 * s + s / 2).failures, 2);
        // Bucket 10 is the newest: bucket 0 left the window.
        assert_eq!(w.counts(t0 + 10 * s).failures, 1);
        assert_eq!(w.counts(t0 + 12 * s + s / 2).failures, 1);
        assert_eq!(w.counts(t0 + 13 * s).failures, 0);
        // A long idle gap clears everything at once.
        w.record(t0 + 14 * s, S);
        assert_eq!(w.counts(t0 + 1000 * s).calls, 0);
    }

    #[test]
    fn window_kind_and_fullness() {
        let t0 = Instant::now();
        let mut w = Window::Count(CountWindow::new(2));
        assert!(!w.is_time_based());
        assert!(!w.is_full_count(), "empty");
        w.record(t0, S);
        assert!(!w.is_full_count(), "1 of 2");
        w.record(t0, F);
        assert!(w.is_full_count(), "2 of 2");
        w.record(t0, S);
        assert!(w.is_full_count(), "stays full as it slides");
        w.clear();
        assert!(!w.is_full_count(), "cleared");

        let mut w = Window::Time(TimeWindow::new(t0, Duration::from_secs(1), 1));
        assert!(w.is_time_based());
        w.record(t0, S);
        assert!(
            !w.is_full_count(),
            "a time window is never a full count window"
        );
    }

    #[derive(Debug, Clone)]
    enum WOp {
        Advance(u64),
        Record(bool, bool),
        Clear,
    }

    fn wop() -> impl Strategy<Value = WOp> {
        prop_oneof![
            (0u64..3_000).prop_map(WOp::Advance),
            (any::<bool>(), any::<bool>()).prop_map(|(f, s)| WOp::Record(f, s)),
            Just(WOp::Clear),
        ]
    }

    proptest! {
        #[test]
        fn count_window_matches_naive_recount(size in 1u32..8, ops in proptest::collection::vec(wop(), 0..200)) {
            let mut w = CountWindow::new(size);
            let mut all: Vec<Record> = Vec::new();
            for op in ops {
                match op {
                    WOp::Advance(_) => {}
                    WOp::Record(failure, slow) => {
                        let r = Record { failure, slow };
                        w.record(r);
                        all.push(r);
                    }
                    WOp::Clear => { w.clear(); all.clear(); }
                }
                let mut naive = Counts::default();
                for r in all.iter().rev().take(size as usize) { naive.add(*r); }
                prop_assert_eq!(w.counts(), naive);
            }
        }

        #[test]
        fn time_window_matches_naive_recount(buckets in 1u32..6, width_ms in 1u64..1_000, ops in proptest::collection::vec(wop(), 0..200)) {
            let t0 = Instant::now();
            let length = Duration::from_millis(width_ms * u64::from(buckets));
            let mut w = TimeWindow::new(t0, length, buckets);
            let mut now = t0;
            let mut all: Vec<(Instant, Record)> = Vec::new();
            for op in ops {
                match op {
                    WOp::Advance(ms) => now += Duration::from_millis(ms),
                    WOp::Record(failure, slow) => {
                        let r = Record { failure, slow };
                        w.record(now, r);
                        all.push((now, r));
                    }
                    WOp::Clear => { w.clear(); all.clear(); }
                }
                // Naive: an outcome at t is in the window at `now` iff its
                // bucket index is within `buckets - 1` of now's.
                let idx = |t: Instant| (t - t0).as_millis() as u64 / width_ms;
                let mut naive = Counts::default();
                for (t, r) in &all {
                    if idx(now) - idx(*t) < u64::from(buckets) { naive.add(*r); }
                }
                prop_assert_eq!(w.counts(now), naive);
            }
        }
    }
}
