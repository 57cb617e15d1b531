//! The pure rules of fan-out: when a gather is finished, and how a hedge
//! delay is learned. No runtime, no clock reads: time comes in as arguments.

use std::collections::VecDeque;
use std::time::Duration;

/// Why a gather stopped.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::{gather_with_timeout, Finish};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let gathered = gather_with_timeout((1..=2).map(|i| async move { i }), Duration::from_secs(1)).await;
/// assert_eq!(gathered.finish(), Finish::AllCompleted);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Finish {
    /// Every future ran to completion before the deadline.
    AllCompleted,
    /// The deadline passed; the futures still running were cancelled.
    Deadline,
    /// `quorum(k)` successes arrived; the rest were cancelled.
    QuorumReached,
    /// So many futures failed that `quorum(k)` successes could no longer
    /// arrive; the rest were cancelled.
    QuorumImpossible,
    /// With `fail_fast()` (or `first_error()`), one future failed; the rest
    /// not done by that instant were cancelled.
    FailedFast,
    /// With `first_completed()`, one future completed (with any value, or
    /// a panic); the rest not done by that instant were cancelled.
    FirstCompleted,
}

/// Counts completions and decides when a gather is done.
///
/// `total` futures; each completion is recorded as a success or a failure
/// (without a classifier every completion is a success).
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    total: usize,
    quorum: Option<usize>,
    fail_fast: bool,
    first_completed: bool,
    succeeded: usize,
    failed: usize,
}

impl Tally {
    /// `quorum` must be `1..=total`; at most one of `quorum`, `fail_fast`
    /// and `first_completed` is set. The builder checks both.
    pub(crate) fn new(total: usize, quorum: Option<usize>, fail_fast: bool) -> Self {
        Self {
            total,
            quorum,
            fail_fast,
            first_completed: false,
            succeeded: 0,
            failed: 0,
        }
    }

    /// Finish at the first completion, whatever it was.
    pub(crate) fn set_first_completed(&mut self, yes: bool) {
        self.first_completed = yes;
    }

    /// [`set_first_completed`](Self::set_first_completed), by value.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn first_completed(mut self, yes: bool) -> Self {
        self.set_first_completed(yes);
        self
    }

    /// Records one completion and says whether the gather is now finished.
    #[inline]
    pub(crate) fn record(&mut self, success: bool) -> Option<Finish> {
        if success {
            self.succeeded += 1;
        } else {
            self.failed += 1;
        }
        self.verdict()
    }

    /// Whether the gather is finished with what has been recorded so far
    /// (also answers for zero futures or an impossible quorum up front).
    #[inline]
    pub(crate) fn verdict(&self) -> Option<Finish> {
        if let Some(k) = self.quorum {
            if self.succeeded >= k {
                return Some(Finish::QuorumReached);
            }
            // Even if every unfinished future succeeded, k would not be reached.
            if self.succeeded + self.unfinished() < k {
                return Some(Finish::QuorumImpossible);
            }
        }
        if self.fail_fast && self.failed > 0 {
            return Some(Finish::FailedFast);
        }
        if self.first_completed && self.succeeded + self.failed > 0 {
            return Some(Finish::FirstCompleted);
        }
        if self.unfinished() == 0 {
            return Some(Finish::AllCompleted);
        }
        None
    }

    #[inline]
    pub(crate) fn unfinished(&self) -> usize {
        self.total - self.succeeded - self.failed
    }

    pub(crate) fn total(&self) -> usize {
        self.total
    }

    pub(crate) fn succeeded(&self) -> usize {
        self.succeeded
    }

    pub(crate) fn failed(&self) -> usize {
        self.failed
    }
}

/// A bounded rolling window of recent latencies and its percentile.
///
/// Holds at most `capacity` samples; a new sample evicts the oldest.
#[derive(Debug, Clone)]
pub(crate) struct LatencyWindow {
    samples: VecDeque<Duration>,
    capacity: usize,
    /// Reused for selection so a percentile query allocates nothing.
    scratch: Vec<Duration>,
}

impl LatencyWindow {
    /// `capacity >= 1`; the builder checks it.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            samples: VecDeque::with_capacity(capacity),
            capacity,
            scratch: Vec::with_capacity(capacity),
        }
    }

    pub(crate) fn record(&mut self, latency: Duration) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(latency);
    }

    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    /// The nearest-rank percentile (`p` in `(0, 1]`) once `min_samples`
    /// samples exist: the smallest sample that at least `p` of the window is
    /// less than or equal to.
    pub(crate) fn percentile(&mut self, p: f64, min_samples: usize) -> Option<Duration> {
        let n = self.samples.len();
        if n == 0 || n < min_samples {
            return None;
        }
        let rank = nearest_rank(p, n);
        self.scratch.clear();
        self.scratch.extend(self.samples.iter().copied());
        let (_, value, _) = self.scratch.select_nth_unstable(rank - 1);
        Some(*value)
    }
}

/// `ceil(p * n)` clamped to `1..=n`.
pub(crate) fn nearest_rank(p: f64, n: usize) -> usize {
    let rank = (p * n as f64).ceil();
    if rank.is_nan() || rank < 1.0 {
        1
    } else if rank >= n as f64 {
        n
    } else {
        rank as usize
    }
}

/// The extra-load cap of hedging ("The Tail at Scale": hedges should add
/// only a few percent of load): a token bucket counted in calls, not time.
///
/// Every call deposits `ratio` of a token, up to `burst` tokens; every
/// hedge takes one whole token, or is refused. Over any run of `n` calls at
/// most `burst + ratio × n` hedges are sent. It starts full, so a fresh
/// policy may hedge `burst` times before the ratio binds. Fixed point in
/// millionths of a token, so it is exact for ratios like 0.05.
#[derive(Debug, Clone)]
pub(crate) struct LoadBudget {
    per_call: u64,
    cap: u64,
    tokens: u64,
}

/// One token, in the budget's fixed point.
const TOKEN: u64 = 1_000_000;

impl LoadBudget {
    /// `ratio` in `(0, 16]` and `burst` in `1..=1_000_000`; the builder
    /// checks both.
    pub(crate) fn new(ratio: f64, burst: u32) -> Self {
        let cap = u64::from(burst.max(1)) * TOKEN;
        Self {
            per_call: (ratio * TOKEN as f64).round() as u64,
            cap,
            tokens: cap,
        }
    }

    /// A call started.
    pub(crate) fn deposit(&mut self) {
        self.tokens = self.tokens.saturating_add(self.per_call).min(self.cap);
    }

    /// Takes one hedge's token; false (nothing taken) if there is none.
    pub(crate) fn withdraw(&mut self) -> bool {
        if self.tokens >= TOKEN {
            self.tokens -= TOKEN;
            true
        } else {
            false
        }
    }

    /// Whole hedges the budget would allow now.
    pub(crate) fn available(&self) -> u64 {
        self.tokens / TOKEN
    }
}

/// When hedge number `k` (1-based) is due: `k × delay` after the primary
/// started, or `None` if that overflows.
pub(crate) fn hedge_due(
    start: tokio::time::Instant,
    delay: Duration,
    k: u32,
) -> Option<tokio::time::Instant> {
    delay.checked_mul(k).and_then(|d| start.checked_add(d))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn all_completed_without_quorum() {
        let mut t = Tally::new(3, None, false);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), Some(Finish::AllCompleted));
        assert_eq!((t.succeeded(), t.failed(), t.unfinished()), (2, 1, 0));
    }

    #[test]
    fn zero_futures_are_done_at_once() {
        assert_eq!(
            Tally::new(0, None, false).verdict(),
            Some(Finish::AllCompleted)
        );
    }

    #[test]
    fn quorum_reached_at_kth_success() {
        let mut t = Tally::new(5, Some(2), false);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(Finish::QuorumReached));
    }

    #[test]
    fn quorum_impossible_as_soon_as_it_is() {
        // 4 futures, need 3: the second failure makes it impossible.
        let mut t = Tally::new(4, Some(3), false);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(Finish::QuorumImpossible));
    }

    #[test]
    fn fail_fast_on_first_failure() {
        let mut t = Tally::new(4, None, true);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), Some(Finish::FailedFast));
    }

    #[test]
    fn first_completed_finishes_on_any_completion() {
        let mut t = Tally::new(3, None, false).first_completed(true);
        assert_eq!(t.verdict(), None);
        assert_eq!(t.record(false), Some(Finish::FirstCompleted));
        let mut t = Tally::new(3, None, false).first_completed(true);
        assert_eq!(t.record(true), Some(Finish::FirstCompleted));
        // One future: its completion is both first and last; "first" wins.
        let mut t = Tally::new(1, None, false).first_completed(true);
        assert_eq!(t.record(true), Some(Finish::FirstCompleted));
    }

    #[test]
    fn load_budget_allows_burst_then_ratio_per_call() {
        let mut b = LoadBudget::new(0.05, 2);
        assert_eq!(b.available(), 2);
        assert!(b.withdraw());
        assert!(b.withdraw());
        assert!(!b.withdraw(), "burst spent");
        // 5% per call: one hedge per 20 calls, exactly.
        for _ in 0..19 {
            b.deposit();
            assert!(!b.withdraw());
        }
        b.deposit();
        assert!(b.withdraw());
        // Deposits stop at the burst.
        for _ in 0..1000 {
            b.deposit();
        }
        assert_eq!(b.available(), 2);
    }

    #[test]
    fn load_budget_ratio_above_one_and_tiny_ratios() {
        let mut b = LoadBudget::new(2.0, 4);
        while b.withdraw() {}
        b.deposit();
        assert_eq!(b.available(), 2);
        let mut b = LoadBudget::new(1e-9, 1);
        assert!(b.withdraw());
        for _ in 0..1000 {
            b.deposit();
        }
        assert!(!b.withdraw(), "rounds to nothing per call");
    }

    #[test]
    fn window_is_bounded_and_rolls() {
        let mut w = LatencyWindow::new(3);
        for ms in [10, 20, 30, 40] {
            w.record(Duration::from_millis(ms));
        }
        assert_eq!(w.len(), 3);
        // 10 was evicted: window is 20, 30, 40.
        assert_eq!(w.percentile(0.01, 1), Some(Duration::from_millis(20)));
        assert_eq!(w.percentile(1.0, 1), Some(Duration::from_millis(40)));
        assert_eq!(w.percentile(0.5, 1), Some(Duration::from_millis(30)));
    }

    #[test]
    fn window_needs_min_samples() {
        let mut w = LatencyWindow::new(10);
        w.record(Duration::from_millis(1));
        assert_eq!(w.percentile(0.95, 2), None);
        w.record(Duration::from_millis(2));
        assert_eq!(w.percentile(0.95, 2), Some(Duration::from_millis(2)));
    }

    #[test]
    fn p95_of_one_to_hundred() {
        let mut w = LatencyWindow::new(100);
        for ms in (1..=100).rev() {
            w.record(Duration::from_millis(ms));
        }
        assert_eq!(w.percentile(0.95, 1), Some(Duration::from_millis(95)));
        assert_eq!(w.percentile(0.99, 1), Some(Duration::from_millis(99)));
    }

    #[test]
    fn nearest_rank_clamps() {
        assert_eq!(nearest_rank(0.0, 10), 1);
        assert_eq!(nearest_rank(1.0, 10), 10);
        assert_eq!(nearest_rank(0.95, 20), 19);
        assert_eq!(nearest_rank(f64::NAN, 5), 1);
    }

    #[test]
    fn hedge_due_multiplies_and_never_overflows() {
        let start = tokio::time::Instant::now();
        assert_eq!(
            hedge_due(start, Duration::from_millis(10), 3),
            Some(start + Duration::from_millis(30))
        );
        assert_eq!(hedge_due(start, Duration::MAX, 2), None);
    }
}
