//! AIMD: additive increase, multiplicative decrease, driven by loss.
//!
//! A pure core (no clock, no runtime): it is fed [`Sample`]s and answers
//! the new limit. The rules, per sample, are Netflix concurrency-limits'
//! `AIMDLimit`:
//!
//! | the sample | new limit |
//! |---|---|
//! | `dropped`, or `rtt > timeout` | `min(limit − 1, ⌊limit × backoff_ratio⌋)` |
//! | otherwise, `inflight × 2 >= limit` | `limit + 1` |
//! | otherwise (the caller uses under half the limit) | unchanged |
//!
//! and the result is clamped to `[min_limit, max_limit]`. (The `limit −
//! 1` bound was in Netflix's first `AIMDLimit`; its current one takes the
//! plain `(int) (limit × ratio)`. The bound makes a decrease always
//! decrease whatever the float rounding of the product; for ratios in
//! `[0.5, 1)` and limits up to [`MAX_LIMIT`](super::MAX_LIMIT) the product
//! never rounds up to the limit, so the two give the same numbers.) Defaults as
//! Netflix's: initial 20, min 20, max 200, backoff ratio 0.9, timeout 5 s.
//! With the default min equal to the initial limit, AIMD never goes below
//! 20; lower `min_limit` for a backend whose knee may be smaller. Unlike
//! Netflix's builder, this one refuses an `initial_limit` outside
//! `[min_limit, max_limit]` (Netflix's `initialLimit(10)` with the default
//! min 20 starts at 10 and never returns there) and a `min_limit` of 0 (a
//! limit of 0 admits nothing, and no sample comes to raise it).
//!
//! The increase is per *sample*, not per round trip: with the limit in
//! use, every completion adds one, so the limit roughly doubles each round
//! trip until the first drop (TCP's slow start more than its congestion
//! avoidance). Wrap it in [`Windowed`](super::Windowed) for one decision
//! per window instead.

use std::time::Duration;

use super::{LimitAlgorithm, Sample, check_bounds};
use crate::error::{ConfigError, ConfigErrorKind};

/// The AIMD limit algorithm (loss-based). See the [module docs](self) for
/// the rules.
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::{Aimd, LimitAlgorithm, Sample};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let mut aimd = Aimd::builder().initial_limit(10).min_limit(1).build().unwrap();
/// let t = Instant::now();
/// let ok = Sample::new(t, Duration::from_millis(5), 10, false);
/// assert_eq!(aimd.update(&ok), 11); // busy and fine: +1
/// let drop = Sample::new(t, Duration::from_millis(5), 11, true);
/// assert_eq!(aimd.update(&drop), 9); // ⌊11 × 0.9⌋
/// let idle = Sample::new(t, Duration::from_millis(5), 2, false);
/// assert_eq!(aimd.update(&idle), 9); // under half in use: no growth
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    limit: usize,
    min: usize,
    max: usize,
    backoff_ratio: f64,
    timeout: Duration,
}

/// Configures an [`Aimd`]. Defaults: initial 20, min 20, max 200, backoff
/// ratio 0.9, timeout 5 s (Netflix's).
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::Aimd;
///
/// let err = Aimd::builder().backoff_ratio(0.3).build().unwrap_err();
/// assert_eq!(err.field(), "backoff_ratio");
/// let err = Aimd::builder().initial_limit(10).build().unwrap_err(); // below min 20
/// assert_eq!(err.field(), "initial_limit");
/// ```
#[derive(Debug, Clone)]
pub struct AimdBuilder {
    initial: usize,
    min: usize,
    max: usize,
    backoff_ratio: f64,
    timeout: Duration,
}

impl Default for AimdBuilder {
    fn default() -> Self {
        Self {
            initial: 20,
            min: 20,
            max: 200,
            backoff_ratio: 0.9,
            timeout: Duration::from_secs(5),
        }
    }
}

impl AimdBuilder {
    /// The limit before any sample (default 20).
    pub fn initial_limit(mut self, n: usize) -> Self {
        self.initial = n;
        self
    }

    /// The floor (default 20; at least 1).
    pub fn min_limit(mut self, n: usize) -> Self {
        self.min = n;
        self
    }

    /// The ceiling (default 200).
    pub fn max_limit(mut self, n: usize) -> Self {
        self.max = n;
        self
    }

    /// The factor applied on a drop (default 0.9; in `[0.5, 1.0)` as Netflix checks).
    pub fn backoff_ratio(mut self, ratio: f64) -> Self {
        self.backoff_ratio = ratio;
        self
    }

    /// A sample slower than this counts as a drop (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the settings and makes the algorithm.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `min_limit` (0, or above `max_limit`),
    /// `max_limit` (above [`MAX_PERMITS`](crate::semaphore::MAX_PERMITS)),
    /// `initial_limit` (outside `[min, max]`), `backoff_ratio` (outside
    /// `[0.5, 1.0)`) or `timeout` (zero).
    pub fn build(self) -> Result<Aimd, ConfigError> {
        const C: &str = "aimd";
        check_bounds(C, self.initial, self.min, self.max)?;
        if !(0.5..1.0).contains(&self.backoff_ratio) {
            return Err(ConfigError::new(
                C,
                "backoff_ratio",
                ConfigErrorKind::TooLarge,
                format!("must be in [0.5, 1.0), got {}", self.backoff_ratio),
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new(
                C,
                "timeout",
                ConfigErrorKind::Zero,
                "must be positive",
            ));
        }
        Ok(Aimd {
            limit: self.initial,
            min: self.min,
            max: self.max,
            backoff_ratio: self.backoff_ratio,
            timeout: self.timeout,
        })
    }
}

impl Aimd {
    /// AIMD with the defaults (initial 20, min 20, max 200, ratio 0.9, timeout 5 s).
    pub fn new() -> Self {
        Self {
            limit: 20,
            min: 20,
            max: 200,
            backoff_ratio: 0.9,
            timeout: Duration::from_secs(5),
        }
    }

    /// A builder with the defaults.
    pub fn builder() -> AimdBuilder {
        AimdBuilder::default()
    }
}

impl Default for Aimd {
    fn default() -> Self {
        Self::new()
    }
}

impl LimitAlgorithm for Aimd {
    fn limit(&self) -> usize {
        self.limit
    }

    fn update(&mut self, sample: &Sample) -> usize {
        let next = if sample.dropped || sample.rtt > self.timeout {
            // `limit ≤ MAX_PERMITS < 2^61`: exact in an f64 up to 2^53, and
            // the floor of the product is what Netflix's `(int)` cast takes.
            ((self.limit as f64 * self.backoff_ratio) as usize).min(self.limit.saturating_sub(1))
        } else if sample.inflight.saturating_mul(2) >= self.limit {
            self.limit.saturating_add(1)
        } else {
            self.limit
        };
        self.limit = next.clamp(self.min, self.max);
        self.limit
    }

    fn bounds(&self) -> (usize, usize) {
        (self.min, self.max)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn s(rtt_ms: u64, inflight: usize, dropped: bool) -> Sample {
        Sample::new(
            Instant::now(),
            Duration::from_millis(rtt_ms),
            inflight,
            dropped,
        )
    }

    #[test]
    fn defaults_are_netflixs() {
        let a = Aimd::new();
        assert_eq!(a, Aimd::builder().build().unwrap());
        assert_eq!((a.limit, a.min, a.max), (20, 20, 200));
        assert_eq!(a.backoff_ratio, 0.9);
        assert_eq!(a.timeout, Duration::from_secs(5));
        assert_eq!(Aimd::default(), a);
    }

    /// Netflix's `AIMDLimitTest`: increase on success when busy, decrease
    /// on drop, no growth while the caller uses under half.
    #[test]
    fn growth_and_backoff() {
        let mut a = Aimd::builder()
            .initial_limit(10)
            .min_limit(1)
            .build()
            .unwrap();
        assert_eq!(a.update(&s(1, 10, false)), 11);
        assert_eq!(a.update(&s(1, 6, false)), 12, "inflight 6 × 2 >= 11");
        assert_eq!(a.update(&s(1, 5, false)), 12, "inflight 5 × 2 < 12");
        assert_eq!(a.update(&s(1, 12, true)), 10, "⌊12 × 0.9⌋ = 10");
        assert_eq!(a.update(&s(1, 10, true)), 9);
        // Growth is one per sample: 9 → 29 in 20 busy samples.
        for _ in 0..20 {
            a.update(&s(1, 100, false));
        }
        assert_eq!(a.limit(), 29);
    }

    /// Each rule with numbers worked by hand, from the defaults (20, min
    /// 20, max 200, 0.9, 5 s) but a floor of 1.
    #[test]
    fn each_rule_by_hand() {
        let mut a = Aimd::builder().min_limit(1).build().unwrap();
        assert_eq!(a.update(&s(1, 10, false)), 21, "10 × 2 >= 20: + 1");
        assert_eq!(a.update(&s(1, 10, false)), 21, "10 × 2 < 21: unchanged");
        assert_eq!(a.update(&s(1, 11, false)), 22, "11 × 2 >= 21: + 1");
        assert_eq!(a.update(&s(1, 0, true)), 19, "⌊22 × 0.9⌋ = ⌊19.8⌋");
        assert_eq!(
            a.update(&s(5001, 19, false)),
            17,
            "rtt > 5 s: ⌊19 × 0.9⌋ = ⌊17.1⌋"
        );
        assert_eq!(
            a.update(&s(5000, 9, false)),
            18,
            "rtt = 5 s is no drop: + 1"
        );
        // A ratio near 1: ⌊2 × 0.99⌋ = 1 = limit − 1; at 1 the floor holds.
        let mut b = Aimd::builder()
            .initial_limit(2)
            .min_limit(1)
            .backoff_ratio(0.99)
            .build()
            .unwrap();
        assert_eq!(b.update(&s(1, 2, true)), 1);
        assert_eq!(b.update(&s(1, 1, true)), 1);
        // The largest ratio below 1: the product never rounds up to the
        // limit, so every drop takes one off (Netflix's plain cast agrees).
        let mut n = Aimd::builder()
            .initial_limit(200)
            .min_limit(1)
            .backoff_ratio(1.0 - f64::EPSILON / 2.0)
            .build()
            .unwrap();
        assert_eq!(n.update(&s(1, 0, true)), 199);
        assert_eq!(n.update(&s(1, 0, true)), 198);
        // Growth stops at the ceiling 200.
        let mut c = Aimd::builder().initial_limit(199).build().unwrap();
        assert_eq!(c.update(&s(1, 199, false)), 200);
        assert_eq!(c.update(&s(1, 200, false)), 200);
    }

    #[test]
    fn a_slow_sample_counts_as_a_drop() {
        let mut a = Aimd::builder()
            .initial_limit(100)
            .min_limit(1)
            .timeout(Duration::from_millis(50))
            .build()
            .unwrap();
        assert_eq!(a.update(&s(50, 100, false)), 101, "at the timeout: fine");
        assert_eq!(a.update(&s(51, 100, false)), 90, "past it: ⌊101 × 0.9⌋");
    }

    #[test]
    fn clamps_to_min_and_max() {
        let mut a = Aimd::builder()
            .initial_limit(3)
            .min_limit(2)
            .max_limit(4)
            .backoff_ratio(0.5)
            .build()
            .unwrap();
        assert_eq!(a.update(&s(1, 3, false)), 4);
        assert_eq!(a.update(&s(1, 4, false)), 4, "max");
        assert_eq!(a.update(&s(1, 4, true)), 2);
        assert_eq!(a.update(&s(1, 4, true)), 2, "min: ⌊2 × 0.5⌋ = 1 clamped");
        assert_eq!(a.bounds(), (2, 4));
        // The default floor equals the initial limit: drops cannot go below 20.
        let mut d = Aimd::new();
        assert_eq!(d.update(&s(1, 20, true)), 20);
    }

    #[test]
    fn builder_refuses_bad_fields() {
        let field = |b: AimdBuilder| b.build().unwrap_err().field();
        assert_eq!(
            field(Aimd::builder().min_limit(0).initial_limit(0)),
            "min_limit"
        );
        assert_eq!(field(Aimd::builder().max_limit(10)), "min_limit");
        assert_eq!(field(Aimd::builder().initial_limit(300)), "initial_limit");
        assert_eq!(field(Aimd::builder().backoff_ratio(1.0)), "backoff_ratio");
        assert_eq!(field(Aimd::builder().backoff_ratio(0.49)), "backoff_ratio");
        assert_eq!(
            field(Aimd::builder().backoff_ratio(f64::NAN)),
            "backoff_ratio"
        );
        assert_eq!(field(Aimd::builder().timeout(Duration::ZERO)), "timeout");
        assert!(Aimd::builder().backoff_ratio(0.5).build().is_ok());
    }
}
