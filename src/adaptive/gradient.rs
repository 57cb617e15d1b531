//! Gradient2: delay-based, comparing a short-term RTT to a long-term one.
//!
//! A pure core following Netflix concurrency-limits' `Gradient2Limit`. Per
//! sample (`rtt` in seconds, the limit kept as an `f64` estimate):
//!
//! | step | rule |
//! |---|---|
//! | 1 | `queue = queue_size(⌊estimate⌋)` |
//! | 2 | `short = rtt`; `long = EMA(rtt)` over `long_window` samples (a plain mean for the first 10, then the factor `2 / (long_window + 1)`) |
//! | 3 | if `long / short > 2`: the stored long RTT is multiplied by 0.95 (latency is back to normal after a long overload: let the long average catch up faster) |
//! | 4 | if `inflight < estimate / 2`: no change (the caller does not use the limit, so there is nothing to learn) |
//! | 5 | `gradient = clamp(tolerance × long / short, 0.5, 1.0)` |
//! | 6 | `new = estimate × gradient + queue` |
//! | 7 | `estimate = estimate × (1 − smoothing) + new × smoothing`, clamped to `[min_limit, max_limit]` |
//!
//! and the limit is `⌊estimate⌋`. With no queueing (`short ≤ tolerance ×
//! long`) the gradient is 1 and the limit grows by `smoothing × queue` per
//! sample; when the short RTT climbs past `tolerance` times the long one
//! the gradient pulls it down, at most by half per step (outliers must not
//! shed half the traffic at once).
//!
//! Defaults as Netflix's: initial 20, min 20, max 200, smoothing 0.2,
//! tolerance 1.5 (Netflix's `rttTolerance`; 1.0 gives the plain ratio
//! `long / short`), long window 600 samples (warm-up 10), queue size a
//! fixed 4 ([`QueueSize::Fixed(4)`](QueueSize::Fixed), Netflix's
//! `concurrency -> 4`). [`QueueSize::SquareRoot`] is the option of
//! Netflix's first `GradientLimit` (its `SquareRootFunction`,
//! `max(min, ⌊√limit⌋)`): the growth step then scales with the limit.
//!
//! Where this differs, deliberately:
//!
//! * **A zero RTT** (a clock too coarse to see the call) is ignored: the
//!   ratio `long / short` would be infinite or NaN. Netflix divides by it.
//! * **Drops are ignored**, as in Netflix's Gradient2: the algorithm reads
//!   latency only. A backend that fails fast under load looks healthy to
//!   it; use [`Aimd`](super::Aimd) or [`Vegas`](super::Vegas) (which
//!   back off on drops) for such a backend.
//!
//! Because the long RTT follows the short one, Gradient2 measures a
//! *change* of latency, not a level: under a load that never lets up it
//! settles where the queue's growth and the long average's catch-up
//! balance, which may be well above the backend's knee. The adaptive
//! limiter's default is [`Vegas`](super::Vegas), whose no-load RTT is a
//! level.

use std::time::Duration;

use super::{LimitAlgorithm, Sample, check_bounds};
use crate::error::{ConfigError, ConfigErrorKind};

/// How many requests may queue above what the RTT gradient allows: the
/// additive term of [`Gradient2`]'s update, as a function of the limit.
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::QueueSize;
///
/// assert_eq!(QueueSize::Fixed(4).at(100), 4);
/// assert_eq!(QueueSize::SquareRoot { min: 4 }.at(100), 10);
/// assert_eq!(QueueSize::SquareRoot { min: 4 }.at(9), 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueSize {
    /// The same number whatever the limit (the default is `Fixed(4)`, as
    /// Netflix's Gradient2).
    Fixed(usize),
    /// `max(min, ⌊√limit⌋)` (Netflix's `SquareRootFunction`, from its first
    /// `GradientLimit`): the growth step scales with the limit.
    SquareRoot {
        /// The floor.
        min: usize,
    },
}

impl QueueSize {
    /// The queue allowance at `limit`.
    pub fn at(&self, limit: usize) -> usize {
        match *self {
            Self::Fixed(n) => n,
            Self::SquareRoot { min } => min.max(isqrt(limit)),
        }
    }
}

/// `⌊√n⌋`, exact for every `usize`.
fn isqrt(n: usize) -> usize {
    let mut r = (n as f64).sqrt() as usize;
    // Correct the float's rounding at the edges.
    while r.checked_mul(r).is_none_or(|sq| sq > n) {
        r -= 1;
    }
    while (r + 1).checked_mul(r + 1).is_some_and(|sq| sq <= n) {
        r += 1;
    }
    r
}

/// Netflix's `ExpAvgMeasurement`: a plain mean over the first `warmup`
/// samples, then an exponential average with factor `2 / (window + 1)`.
#[derive(Debug, Clone, PartialEq)]
struct ExpAvg {
    value: f64,
    sum: f64,
    count: usize,
    window: usize,
    warmup: usize,
}

impl ExpAvg {
    fn new(window: usize, warmup: usize) -> Self {
        Self {
            value: 0.0,
            sum: 0.0,
            count: 0,
            window,
            warmup,
        }
    }

    fn add(&mut self, x: f64) -> f64 {
        if self.count < self.warmup {
            self.count += 1;
            self.sum += x;
            self.value = self.sum / self.count as f64;
        } else {
            let f = 2.0 / (self.window as f64 + 1.0);
            self.value = self.value * (1.0 - f) + x * f;
        }
        self.value
    }
}

/// The Gradient2 limit algorithm (delay-based). See the [module docs](self)
/// for the rules.
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::{Gradient2, LimitAlgorithm, Sample};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let mut g = Gradient2::builder().initial_limit(50).min_limit(1).build().unwrap();
/// let t = Instant::now();
/// // Steady latency and the limit in use: it grows by smoothing × queue
/// // (0.2 × 4 = 0.8) per sample.
/// for _ in 0..4 {
///     g.update(&Sample::new(t, Duration::from_millis(10), 50, false));
/// }
/// assert_eq!(g.limit(), 53); // 53.2
/// // Latency triples: the gradient (1.5 × long / short) pulls it down.
/// let after = g.update(&Sample::new(t, Duration::from_millis(30), 53, false));
/// assert!(after < 53);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Gradient2 {
    estimate: f64,
    min: usize,
    max: usize,
    smoothing: f64,
    tolerance: f64,
    queue_size: QueueSize,
    long_rtt: ExpAvg,
}

/// Configures a [`Gradient2`]. Defaults (Netflix's): initial 20, min 20,
/// max 200, smoothing 0.2, tolerance 1.5, long window 600 samples, queue
/// size a fixed 4.
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::{Gradient2, QueueSize};
///
/// let g = Gradient2::builder()
///     .initial_limit(10)
///     .min_limit(5)
///     .max_limit(500)
///     .queue_size(QueueSize::Fixed(4))
///     .build()
///     .unwrap();
/// # drop(g);
/// let err = Gradient2::builder().tolerance(0.9).build().unwrap_err();
/// assert_eq!(err.field(), "tolerance");
/// ```
#[derive(Debug, Clone)]
pub struct Gradient2Builder {
    initial: usize,
    min: usize,
    max: usize,
    smoothing: f64,
    tolerance: f64,
    long_window: usize,
    queue_size: QueueSize,
}

impl Default for Gradient2Builder {
    fn default() -> Self {
        Self {
            initial: 20,
            min: 20,
            max: 200,
            smoothing: 0.2,
            tolerance: 1.5,
            long_window: 600,
            queue_size: QueueSize::Fixed(4),
        }
    }
}

impl Gradient2Builder {
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

    /// How much of each new value is taken, in `(0, 1]` (default 0.2).
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// How many times the long RTT the short one may reach before the
    /// limit comes down, at least 1 (default 1.5).
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Samples in the long RTT's exponential average, at least 1 (default 600).
    pub fn long_window(mut self, samples: usize) -> Self {
        self.long_window = samples;
        self
    }

    /// The additive queue allowance (default `Fixed(4)`).
    pub fn queue_size(mut self, queue_size: QueueSize) -> Self {
        self.queue_size = queue_size;
        self
    }

    /// Checks the settings and makes the algorithm.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `min_limit`, `max_limit`, `initial_limit` (as
    /// for [`AimdBuilder::build`](super::AimdBuilder::build)), `smoothing`
    /// (outside `(0, 1]`), `tolerance` (below 1 or not finite) or
    /// `long_window` (0).
    pub fn build(self) -> Result<Gradient2, ConfigError> {
        const C: &str = "gradient2";
        check_bounds(C, self.initial, self.min, self.max)?;
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err(ConfigError::new(
                C,
                "smoothing",
                ConfigErrorKind::TooLarge,
                format!("must be in (0, 1], got {}", self.smoothing),
            ));
        }
        if !(self.tolerance >= 1.0 && self.tolerance.is_finite()) {
            return Err(ConfigError::new(
                C,
                "tolerance",
                ConfigErrorKind::TooSmall,
                format!(
                    "must be a finite number of at least 1.0, got {}",
                    self.tolerance
                ),
            ));
        }
        if self.long_window == 0 {
            return Err(ConfigError::new(
                C,
                "long_window",
                ConfigErrorKind::Zero,
                "must be at least 1 sample",
            ));
        }
        Ok(Gradient2 {
            estimate: self.initial as f64,
            min: self.min,
            max: self.max,
            smoothing: self.smoothing,
            tolerance: self.tolerance,
            queue_size: self.queue_size,
            long_rtt: ExpAvg::new(self.long_window, 10),
        })
    }
}

impl Gradient2 {
    /// Gradient2 with the defaults.
    pub fn new() -> Self {
        match Gradient2Builder::default().build() {
            Ok(g) => g,
            // The defaults are valid (a unit test checks it).
            Err(_) => unreachable!("default Gradient2 settings are valid"),
        }
    }

    /// A builder with the defaults.
    pub fn builder() -> Gradient2Builder {
        Gradient2Builder::default()
    }

    /// The limit as the algorithm holds it, before flooring.
    pub fn estimate(&self) -> f64 {
        self.estimate
    }
}

impl Default for Gradient2 {
    fn default() -> Self {
        Self::new()
    }
}

impl LimitAlgorithm for Gradient2 {
    fn limit(&self) -> usize {
        self.estimate as usize
    }

    fn update(&mut self, sample: &Sample) -> usize {
        if sample.rtt.is_zero() {
            return self.limit();
        }
        let queue = self.queue_size.at(self.limit()) as f64;
        let short = secs(sample.rtt);
        let long = self.long_rtt.add(short);
        if long / short > 2.0 {
            self.long_rtt.value *= 0.95;
        }
        if (sample.inflight as f64) < self.estimate / 2.0 {
            return self.limit();
        }
        let gradient = (self.tolerance * long / short).clamp(0.5, 1.0);
        let new = self.estimate * gradient + queue;
        let new = self.estimate * (1.0 - self.smoothing) + new * self.smoothing;
        self.estimate = new.clamp(self.min as f64, self.max as f64);
        self.limit()
    }

    fn bounds(&self) -> (usize, usize) {
        (self.min, self.max)
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn s(rtt_ms: u64, inflight: usize) -> Sample {
        Sample::new(
            Instant::now(),
            Duration::from_millis(rtt_ms),
            inflight,
            false,
        )
    }

    #[test]
    fn defaults_are_netflixs() {
        let g = Gradient2::new();
        assert_eq!((g.limit(), g.min, g.max), (20, 20, 200));
        assert_eq!((g.smoothing, g.tolerance), (0.2, 1.5));
        assert_eq!((g.long_rtt.window, g.long_rtt.warmup), (600, 10));
        assert_eq!(g.queue_size, QueueSize::Fixed(4));
        assert_eq!(g.queue_size.at(10_000), 4, "fixed, whatever the limit");
        assert_eq!(Gradient2::default(), g);
    }

    #[test]
    fn square_root_is_exact() {
        for n in [0usize, 1, 3, 4, 15, 16, 17, 99, 100, 1 << 40, usize::MAX] {
            let r = isqrt(n);
            assert!(r * r <= n, "{n}");
            assert!((r + 1).checked_mul(r + 1).is_none_or(|sq| sq > n), "{n}");
        }
        assert_eq!(QueueSize::SquareRoot { min: 4 }.at(200), 14);
    }

    #[test]
    fn steady_latency_grows_by_smoothing_times_queue() {
        let mut g = Gradient2::builder()
            .initial_limit(100)
            .queue_size(QueueSize::Fixed(4))
            .build()
            .unwrap();
        g.update(&s(10, 100));
        assert!((g.estimate() - 100.8).abs() < 1e-9, "{}", g.estimate());
        g.update(&s(10, 100));
        assert!((g.estimate() - 101.6).abs() < 1e-9);
        assert_eq!(g.limit(), 101);
    }

    #[test]
    fn no_growth_while_app_limited() {
        let mut g = Gradient2::builder().initial_limit(100).build().unwrap();
        for _ in 0..50 {
            assert_eq!(g.update(&s(10, 49)), 100);
        }
        assert_eq!(g.update(&s(10, 50)), 100, "100 + 0.2 × 4 = 100.8");
        assert!((g.estimate() - 100.8).abs() < 1e-9);
    }

    /// The brief's case: from 20 (the default floor) with the short RTT
    /// twice the long one and the limit in use. Tolerance 1.0 (the plain
    /// ratio): gradient 0.5, `20 × 0.5 + 4 = 14`, smoothed `20 × 0.8 + 14 ×
    /// 0.2 = 18.8`, clamped to the floor 20. Tolerance 1.5: gradient 0.75,
    /// `19`, `19.8`, clamped to 20.
    #[test]
    fn defaults_hold_the_floor_when_latency_doubles() {
        for tolerance in [1.0, 1.5] {
            let mut g = Gradient2::builder().tolerance(tolerance).build().unwrap();
            // App-limited: only the long RTT moves.
            g.update(&s(10, 0));
            g.update(&s(10, 0));
            // long = mean(10, 10, 40) = 20 ms, short = 40 ms: ratio 0.5.
            assert_eq!(g.update(&s(40, 20)), 20);
            assert_eq!(g.estimate(), 20.0);
        }
        // With the floor lowered the arithmetic shows: long = mean(10, 10,
        // 40) = 20, short = 40 (ratio 0.5), tolerance 1.0: 0.5 → 14 → 18.8.
        let mut g = Gradient2::builder()
            .min_limit(1)
            .tolerance(1.0)
            .build()
            .unwrap();
        g.update(&s(10, 0));
        g.update(&s(10, 0));
        g.update(&s(40, 20));
        assert!((g.estimate() - 18.8).abs() < 1e-9, "{}", g.estimate());
        assert_eq!(g.limit(), 18);
    }

    /// Each step of the module table with numbers worked by hand: nine
    /// app-limited samples of 10 ms (long = 10 ms, the estimate stays 100),
    /// then one of 20 ms: long = (9 × 10 + 20) / 10 = 11 ms, gradient =
    /// 1.5 × 11 / 20 = 0.825, new = 100 × 0.825 + 4 = 86.5, estimate =
    /// 0.8 × 100 + 0.2 × 86.5 = 97.3.
    #[test]
    fn one_update_worked_by_hand() {
        let mut g = Gradient2::builder()
            .initial_limit(100)
            .min_limit(1)
            .build()
            .unwrap();
        for _ in 0..9 {
            assert_eq!(g.update(&s(10, 49)), 100, "49 < 100 / 2: app-limited");
        }
        assert!((g.long_rtt.value - 0.010).abs() < 1e-12);
        assert_eq!(g.update(&s(20, 50)), 97);
        assert!((g.long_rtt.value - 0.011).abs() < 1e-12);
        assert!((g.estimate() - 97.3).abs() < 1e-9, "{}", g.estimate());
        // After the warm-up the long RTT is an EMA with factor 2 / 601; a
        // sample at the long RTT × 1.5 exactly: gradient 1, + 0.2 × 4.
        let long = g.long_rtt.value;
        let f = 2.0 / 601.0;
        let rtt = Duration::from_secs_f64(0.011);
        let before = g.estimate();
        g.update(&Sample::new(Instant::now(), rtt, 100, false));
        assert!((g.long_rtt.value - (long * (1.0 - f) + 0.011 * f)).abs() < 1e-15);
        assert!(
            (g.estimate() - (before + 0.8)).abs() < 1e-9,
            "gradient 1: + 0.2 × 4"
        );
    }

    #[test]
    fn rising_latency_cuts_by_the_gradient_at_most_half() {
        let mut g = Gradient2::builder()
            .initial_limit(100)
            .min_limit(1)
            .queue_size(QueueSize::Fixed(0))
            .build()
            .unwrap();
        for _ in 0..10 {
            g.update(&s(10, 100)); // long = 10 ms
        }
        assert_eq!(g.limit(), 100);
        // short = 1000 ms: 1.5 × long / short < 0.5, so gradient 0.5;
        // new = 50; estimate = 0.8 × 100 + 0.2 × 50 = 90.
        g.update(&s(1000, 100));
        assert!((g.estimate() - 90.0).abs() < 1e-9, "{}", g.estimate());
    }

    #[test]
    fn long_rtt_decays_when_latency_recovers() {
        let mut g = Gradient2::builder().long_window(1).build().unwrap();
        for _ in 0..10 {
            g.update(&s(100, 0));
        }
        // long = 100 ms; a 10 ms sample with window 1 sets long to 10 ms
        // (factor 1), no decay; with warmup the mean first:
        assert!((g.long_rtt.value - 0.1).abs() < 1e-12);
        g.update(&s(10, 0));
        assert!((g.long_rtt.value - 0.01).abs() < 1e-12);
        let mut h = Gradient2::builder().long_window(600).build().unwrap();
        for _ in 0..10 {
            h.update(&s(100, 0));
        }
        let before = h.long_rtt.value;
        h.update(&s(10, 0));
        let ema = before * (1.0 - 2.0 / 601.0) + 0.01 * 2.0 / 601.0;
        assert!(
            (h.long_rtt.value - ema * 0.95).abs() < 1e-12,
            "decayed by 5 %"
        );
    }

    #[test]
    fn zero_rtt_is_ignored_and_bounds_hold() {
        let mut g = Gradient2::builder()
            .initial_limit(5)
            .min_limit(5)
            .max_limit(6)
            .queue_size(QueueSize::Fixed(1))
            .build()
            .unwrap();
        assert_eq!(g.update(&s(0, 5)), 5);
        assert_eq!(g.long_rtt.count, 0);
        for _ in 0..100 {
            g.update(&s(1, 6));
        }
        assert_eq!(g.limit(), 6);
        for _ in 0..100 {
            g.update(&s(10_000, 6));
        }
        assert_eq!(g.limit(), 5);
        assert_eq!(g.bounds(), (5, 6));
    }

    #[test]
    fn builder_refuses_bad_fields() {
        let field = |b: Gradient2Builder| b.build().unwrap_err().field();
        assert_eq!(field(Gradient2::builder().smoothing(0.0)), "smoothing");
        assert_eq!(field(Gradient2::builder().smoothing(1.5)), "smoothing");
        assert_eq!(field(Gradient2::builder().smoothing(f64::NAN)), "smoothing");
        assert_eq!(
            field(Gradient2::builder().tolerance(f64::INFINITY)),
            "tolerance"
        );
        assert_eq!(field(Gradient2::builder().long_window(0)), "long_window");
        assert_eq!(
            field(Gradient2::builder().initial_limit(1)),
            "initial_limit"
        );
        assert!(
            Gradient2::builder()
                .smoothing(1.0)
                .tolerance(1.0)
                .build()
                .is_ok()
        );
    }
}
