//! Vegas: delay-based, estimating the queue from the no-load RTT (TCP Vegas).
//!
//! A pure core after Netflix concurrency-limits' `VegasLimit`. It keeps the
//! lowest RTT seen, `rtt_noload`, as the latency of a request that does not
//! queue, and estimates how many requests are queued in the backend:
//!
//! ```text
//! queue = ⌈estimate × (1 − rtt_noload / rtt)⌉
//! ```
//!
//! With `log = max(1, ⌊log10 ⌊estimate⌋⌋)`, `alpha = 3·log`, `beta = 6·log`
//! and `threshold = log`, each sample (after the bookkeeping below) moves
//! the estimate:
//!
//! | the sample | new estimate |
//! |---|---|
//! | dropped | `estimate − log` |
//! | `inflight × 2 < estimate` (the caller uses under half) | unchanged |
//! | `queue ≤ threshold` (no queueing: grow fast) | `estimate + beta` |
//! | `queue < alpha` (a little queueing: grow slowly) | `estimate + log` |
//! | `queue > beta` (too much queueing) | `estimate − max(log, ⌊(queue − beta) / 2⌋)` |
//! | `alpha ≤ queue ≤ beta` (the sweet spot) | unchanged |
//!
//! then clamps it to `[min_limit, max_limit]` and smooths it
//! (`estimate = (1 − smoothing)·estimate + smoothing·new`). The limit is
//! `⌊estimate⌋`. Bookkeeping first: a sample faster than `rtt_noload` (or
//! the first sample) only records the new `rtt_noload`; and every
//! `jitter × probe_multiplier × estimate` samples (`jitter` uniform in
//! `[0.5, 1)`, drawn again after each probe) the no-load RTT is measured
//! again (a *probe*, below), so that a backend whose no-load latency rose
//! is not mistaken for one that queues.
//!
//! So the limit settles where the backend queues between `alpha` and
//! `beta` requests: for a backend with `k` servers, in `[k + alpha, k +
//! beta]` (`[k + 3, k + 6]` for a knee between 10 and 99, `[k + 6, k + 12]`
//! between 100 and 999).
//!
//! Defaults as Netflix's: initial 20, max 1000, smoothing 1.0 (none), alpha
//! 3·log, beta 6·log, threshold log, increase `+ log`, decrease `− log`,
//! probe multiplier 30 with a jitter in `[0.5, 1)`; min 1 (Netflix has no
//! floor but 1). `log` is Netflix's `Log10RootFunction`: `max(1, ⌊log10
//! limit⌋)`, so the steps are never 0.
//!
//! Where this differs, deliberately:
//!
//! * **A drop never sets `rtt_noload`.** Netflix checks for a new minimum
//!   before it looks at the drop, so a request that failed fast (a 503 in
//!   a millisecond) becomes the "no-load latency", the queue estimate
//!   jumps to nearly the whole limit, and the limit collapses. Here a
//!   dropped sample only decreases the limit.
//! * **A probe drains before it measures.** Netflix's probe takes the
//!   current sample's RTT as the new `rtt_noload`. When the backend is kept
//!   busy that RTT includes the queue, so each probe raises the floor the
//!   queue is measured from and the limit climbs another `alpha..beta`
//!   above the knee, probe after probe. Here a probe first lowers the
//!   limit to the Little's-law estimate of what the backend serves without
//!   queueing, `⌊estimate ×
//!   rtt_noload / rtt⌋` (at least `min_limit`), and takes as `rtt_noload`
//!   the RTT of the first request started with at most that many in flight
//!   (or, after `2 × estimate` samples without one, the lowest RTT seen
//!   while draining); then the limit returns to where it was (less `log`
//!   for each drop seen meanwhile). When the old `rtt_noload` is right,
//!   that lowered limit is the backend's knee itself, so the drain costs no
//!   throughput; when the backend's no-load latency did rise, the lowered
//!   limit is below the knee and the new latency is measured unqueued (the
//!   idea of TCP BBR's `ProbeRTT`). When the probing sample shows no queue
//!   (the estimate would not go down), it is taken at once, as Netflix does.
//! * **Too much queueing sheds half the excess.** Netflix steps down by
//!   `log` whatever the queue, so when the backend loses half its capacity
//!   the limit takes about `limit / log` decisions to follow it (at one
//!   decision per window, tens of seconds). Here the step is half the
//!   queue above `beta` when that is more than `log`: the excess halves
//!   with each decision, and the sweet spot, the slow steps near it, and
//!   the limit Vegas settles at are Netflix's.
//! * **A zero RTT** (a clock too coarse to see the call) is ignored, as
//!   Netflix refuses it.
//! * **A drop never starts a probe.** Netflix counts every sample towards
//!   the next probe and may probe on a drop, taking its RTT (a timeout, or
//!   a fast failure) as the no-load latency; here the probe waits for the
//!   next sample that did not drop.
//! * **`alpha` and `beta` set multiples of `log`.** Netflix's builder
//!   `alpha(3)` sets a constant 3 whatever the limit (its default is the
//!   function `3 × log`); here `alpha(3)` is that default function, and a
//!   constant is not offered. The two agree for limits below 100.
//!
//! Fed one sample per request, Vegas moves the limit by up to `beta` per
//! sample, so its speed grows with the request rate while the feedback
//! still takes a round trip: at a few thousand requests a second it
//! overshoots and swings. [`Windowed`](super::Windowed) gives it one
//! decision per window of about two round trips, as TCP Vegas adjusts once
//! per round trip; the [`AdaptiveLimiter`](super::AdaptiveLimiter)'s
//! default is Vegas so wrapped.

use std::time::Duration;

use super::{LimitAlgorithm, Sample, check_bounds};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::rng::{SplitMix64, entropy_seed};

/// `max(1, ⌊log10 n⌋)`: the step of every Vegas rule.
pub(crate) fn log10_step(n: usize) -> usize {
    (n.checked_ilog10().unwrap_or(0) as usize).max(1)
}

/// The Vegas limit algorithm (delay-based). See the [module docs](self)
/// for the rules and where they differ from Netflix's.
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::{LimitAlgorithm, Sample, Vegas};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let mut v = Vegas::builder().initial_limit(20).seed(1).build().unwrap();
/// let t = Instant::now();
/// let ms = Duration::from_millis;
/// v.update(&Sample::new(t, ms(100), 20, false)); // the first sample: rtt_noload = 100 ms
/// assert_eq!(v.update(&Sample::new(t, ms(100), 20, false)), 26); // no queue: + beta (6)
/// // 26 in flight at 130 ms: queue ⌈26 × (1 − 100/130)⌉ = 6, the sweet spot.
/// assert_eq!(v.update(&Sample::new(t, ms(130), 26, false)), 26);
/// // At 200 ms the queue is 13 > beta: half the excess goes, ⌊(13 − 6) / 2⌋.
/// assert_eq!(v.update(&Sample::new(t, ms(200), 26, false)), 23);
/// ```
#[derive(Debug, Clone)]
pub struct Vegas {
    estimate: f64,
    min: usize,
    max: usize,
    smoothing: f64,
    alpha: usize,
    beta: usize,
    probe_multiplier: Option<u32>,
    rtt_noload: Option<Duration>,
    probe_count: u64,
    probe_jitter: f64,
    rng: SplitMix64,
    drain: Option<Drain>,
}

/// A probe in progress: the limit is held at `target` until a request
/// started with at most `target` in flight comes back.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Drain {
    restore: f64,
    target: usize,
    seen: u64,
    min_rtt: Option<Duration>,
}

/// Configures a [`Vegas`]. Defaults: initial 20, min 1, max 1000, smoothing
/// 1.0, alpha 3, beta 6 (times `log`), probe multiplier 30, a seed from the
/// process's entropy.
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::Vegas;
///
/// let v = Vegas::builder().max_limit(500).smoothing(0.5).seed(7).build().unwrap();
/// # drop(v);
/// let err = Vegas::builder().alpha(6).beta(3).build().unwrap_err();
/// assert_eq!(err.field(), "beta");
/// ```
#[derive(Debug, Clone)]
pub struct VegasBuilder {
    initial: usize,
    min: usize,
    max: usize,
    smoothing: f64,
    alpha: usize,
    beta: usize,
    probe_multiplier: Option<u32>,
    seed: Option<u64>,
}

impl Default for VegasBuilder {
    fn default() -> Self {
        Self {
            initial: 20,
            min: 1,
            max: 1000,
            smoothing: 1.0,
            alpha: 3,
            beta: 6,
            probe_multiplier: Some(30),
            seed: None,
        }
    }
}

impl VegasBuilder {
    /// The limit before any sample (default 20).
    pub fn initial_limit(mut self, n: usize) -> Self {
        self.initial = n;
        self
    }

    /// The floor (default 1).
    pub fn min_limit(mut self, n: usize) -> Self {
        self.min = n;
        self
    }

    /// The ceiling (default 1000).
    pub fn max_limit(mut self, n: usize) -> Self {
        self.max = n;
        self
    }

    /// How much of each new value is taken, in `(0, 1]` (default 1.0: all of it).
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// The low end of the queue's sweet spot, in multiples of `log`
    /// (default 3; at least 1). Netflix's `alpha(int)` is a constant
    /// instead (see the [module docs](self)).
    pub fn alpha(mut self, multiple: usize) -> Self {
        self.alpha = multiple;
        self
    }

    /// The high end of the queue's sweet spot, in multiples of `log`
    /// (default 6; above `alpha`). Netflix's `beta(int)` is a constant.
    pub fn beta(mut self, multiple: usize) -> Self {
        self.beta = multiple;
        self
    }

    /// Probe the no-load RTT about every `multiple × limit` samples
    /// (default 30; at least 1).
    pub fn probe_multiplier(mut self, multiple: u32) -> Self {
        self.probe_multiplier = Some(multiple);
        self
    }

    /// Never probe: `rtt_noload` only ever goes down.
    pub fn without_probe(mut self) -> Self {
        self.probe_multiplier = None;
        self
    }

    /// Seeds the probe jitter, for reproducible runs (default: from the
    /// process's entropy).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings and makes the algorithm.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `min_limit`, `max_limit`, `initial_limit` (as
    /// for [`AimdBuilder::build`](super::AimdBuilder::build)), `smoothing`
    /// (outside `(0, 1]`), `alpha` (0), `beta` (not above `alpha`) or
    /// `probe_multiplier` (0).
    pub fn build(self) -> Result<Vegas, ConfigError> {
        const C: &str = "vegas";
        check_bounds(C, self.initial, self.min, self.max)?;
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err(ConfigError::new(
                C,
                "smoothing",
                ConfigErrorKind::TooLarge,
                format!("must be in (0, 1], got {}", self.smoothing),
            ));
        }
        if self.alpha == 0 {
            return Err(ConfigError::new(
                C,
                "alpha",
                ConfigErrorKind::Zero,
                "must be at least 1",
            ));
        }
        if self.beta <= self.alpha {
            return Err(ConfigError::new(
                C,
                "beta",
                ConfigErrorKind::Conflict,
                format!("must be above alpha {}, got {}", self.alpha, self.beta),
            ));
        }
        if self.probe_multiplier == Some(0) {
            return Err(ConfigError::new(
                C,
                "probe_multiplier",
                ConfigErrorKind::Zero,
                "must be at least 1 (or use `without_probe`)",
            ));
        }
        let mut rng = SplitMix64::new(self.seed.unwrap_or_else(entropy_seed));
        let probe_jitter = jitter(&mut rng);
        Ok(Vegas {
            estimate: self.initial as f64,
            min: self.min,
            max: self.max,
            smoothing: self.smoothing,
            alpha: self.alpha,
            beta: self.beta,
            probe_multiplier: self.probe_multiplier,
            rtt_noload: None,
            probe_count: 0,
            probe_jitter,
            rng,
            drain: None,
        })
    }
}

/// Uniform in `[0.5, 1)`, from the top 53 bits of one draw.
fn jitter(rng: &mut SplitMix64) -> f64 {
    0.5 + 0.5 * ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
}

impl Vegas {
    /// Vegas with the defaults and an unseeded probe jitter.
    pub fn new() -> Self {
        match VegasBuilder::default().build() {
            Ok(v) => v,
            // The defaults are valid (a unit test checks it).
            Err(_) => unreachable!("default Vegas settings are valid"),
        }
    }

    /// A builder with the defaults.
    pub fn builder() -> VegasBuilder {
        VegasBuilder::default()
    }

    /// The limit as the algorithm holds it, before flooring (while a probe
    /// drains, the limit it will return to).
    pub fn estimate(&self) -> f64 {
        self.drain.map_or(self.estimate, |d| d.restore)
    }

    /// The no-load RTT measured so far (`None` before the first sample).
    pub fn rtt_noload(&self) -> Option<Duration> {
        self.rtt_noload
    }

    /// Whether a probe is draining the limit right now.
    pub fn is_probing(&self) -> bool {
        self.drain.is_some()
    }

    fn clamp(&self, x: f64) -> f64 {
        x.clamp(self.min as f64, self.max as f64)
    }

    /// Moves the estimate toward `new` by the smoothing factor.
    fn set(&mut self, new: f64) {
        let new = self.clamp(new);
        self.estimate = self.clamp((1.0 - self.smoothing) * self.estimate + self.smoothing * new);
    }

    fn step(&self) -> f64 {
        log10_step(self.estimate as usize) as f64
    }

    fn reset_probe(&mut self) {
        self.probe_count = 0;
        self.probe_jitter = jitter(&mut self.rng);
    }

    fn probe_due(&self) -> bool {
        self.probe_multiplier.is_some_and(|m| {
            self.probe_jitter * f64::from(m) * self.estimate <= self.probe_count as f64
        })
    }

    /// A probe is due and `rtt` just came back: take it if it shows no
    /// queue, else drain to the knee Little's law gives.
    fn start_probe(&mut self, rtt: Duration) {
        let Some(noload) = self.rtt_noload else {
            self.rtt_noload = Some(rtt);
            self.reset_probe();
            return;
        };
        let current = self.estimate as usize;
        let knee = (self.estimate * noload.as_secs_f64() / rtt.as_secs_f64()) as usize;
        let target = knee.max(self.min);
        if target >= current {
            self.rtt_noload = Some(rtt);
            self.reset_probe();
            return;
        }
        tracing::debug!(
            limit = current,
            target,
            "vegas probe: draining to measure the no-load rtt"
        );
        self.drain = Some(Drain {
            restore: self.estimate,
            target,
            seen: 0,
            min_rtt: None,
        });
    }

    fn drain_step(&mut self, s: &Sample) {
        let Some(mut d) = self.drain else { return };
        d.seen += 1;
        let mut measured = None;
        if s.dropped {
            d.restore = self.clamp(d.restore - log10_step(d.restore as usize) as f64);
        } else if !s.rtt.is_zero() {
            d.min_rtt = Some(d.min_rtt.map_or(s.rtt, |m| m.min(s.rtt)));
            if s.inflight <= d.target {
                measured = Some(s.rtt);
            }
        }
        let give_up = (2.0 * d.restore).ceil() as u64;
        if measured.is_none() && d.seen < give_up.max(1) {
            self.drain = Some(d);
            return;
        }
        if let Some(rtt) = measured.or(d.min_rtt) {
            self.rtt_noload = Some(rtt);
        }
        self.estimate = d.restore;
        self.drain = None;
        self.reset_probe();
    }
}

impl Default for Vegas {
    fn default() -> Self {
        Self::new()
    }
}

impl LimitAlgorithm for Vegas {
    fn limit(&self) -> usize {
        match self.drain {
            Some(d) => d.target,
            None => self.estimate as usize,
        }
    }

    fn update(&mut self, s: &Sample) -> usize {
        if self.drain.is_some() {
            self.drain_step(s);
            return self.limit();
        }
        if s.dropped {
            self.probe_count += 1;
            self.set(self.estimate - self.step());
            return self.limit();
        }
        if s.rtt.is_zero() {
            return self.limit();
        }
        self.probe_count += 1;
        if self.probe_due() {
            self.start_probe(s.rtt);
            return self.limit();
        }
        let noload = match self.rtt_noload {
            Some(n) if s.rtt >= n => n,
            _ => {
                self.rtt_noload = Some(s.rtt);
                return self.limit();
            }
        };
        if (s.inflight as f64) * 2.0 < self.estimate {
            return self.limit();
        }
        let log = self.step();
        let (alpha, beta) = (self.alpha as f64 * log, self.beta as f64 * log);
        let queue = (self.estimate * (1.0 - noload.as_secs_f64() / s.rtt.as_secs_f64())).ceil();
        let new = if queue <= log {
            self.estimate + beta
        } else if queue < alpha {
            self.estimate + log
        } else if queue > beta {
            // Netflix steps down by `log` whatever the excess; half the
            // excess, when larger, lets a halved backend be followed in a
            // few decisions instead of `limit / log` of them.
            self.estimate - log.max(((queue - beta) / 2.0).floor())
        } else {
            return self.limit();
        };
        self.set(new);
        self.limit()
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

    fn vegas() -> VegasBuilder {
        Vegas::builder().seed(42)
    }

    #[test]
    fn defaults_are_netflixs() {
        let v = Vegas::new();
        assert_eq!((v.limit(), v.min, v.max), (20, 1, 1000));
        assert_eq!((v.smoothing, v.alpha, v.beta), (1.0, 3, 6));
        assert_eq!(v.probe_multiplier, Some(30));
        assert!((0.5..1.0).contains(&v.probe_jitter));
        assert_eq!(v.rtt_noload(), None);
        assert_eq!(Vegas::default().limit(), 20);
    }

    #[test]
    fn log_step_has_a_floor_of_one() {
        assert_eq!(
            [0, 1, 9, 10, 99, 100, 999, 1000, usize::MAX].map(log10_step),
            [1, 1, 1, 1, 1, 2, 2, 3, 19]
        );
    }

    /// Netflix's `Log10RootFunction` table for 0..1000, `max(1, (int)
    /// log10(i))`, and its formula above.
    #[test]
    fn log_step_matches_log10_root_table() {
        for i in 0..=100_000usize {
            let float = if i == 0 {
                0
            } else {
                (i as f64).log10() as usize
            };
            assert_eq!(log10_step(i), float.max(1), "{i}");
        }
    }

    /// A probe comes after `⌈jitter × 30 × estimate⌉` samples, drops
    /// counted; one that shows no queue takes its RTT at once and draws a
    /// new jitter.
    #[test]
    fn probe_interval_is_jitter_times_30_times_the_estimate() {
        let mut v = vegas().build().unwrap();
        let j = v.probe_jitter;
        assert!((0.5..1.0).contains(&j));
        let due = (j * 30.0 * 20.0).ceil() as u64;
        v.update(&s(100, 1, false)); // sample 1: rtt_noload = 100 ms
        for n in 2..due {
            // App-limited samples (1 × 2 < 20) count too.
            v.update(&s(100, 1, false));
            assert_eq!(v.probe_count, n, "no probe before {due}");
        }
        // The probe's sample shows no queue: taken at once, count reset.
        v.update(&s(100, 1, false));
        assert_eq!((v.probe_count, v.limit()), (0, 20));
        assert!(!v.is_probing());
        assert_ne!(v.probe_jitter, j, "a new jitter (same seed, next draw)");
        let mut v = vegas().build().unwrap();
        let due = (v.probe_jitter * 30.0 * 20.0).ceil() as u64;
        v.update(&s(100, 1, false));
        for _ in 2..due {
            v.update(&s(100, 1, false));
        }
        assert_eq!(v.probe_count, due - 1);
        v.update(&s(120, 1, false)); // due: knee ⌊20 × 100/120⌋ = 16 < 20: drain
        assert!(v.is_probing());
        assert_eq!(v.limit(), 16);
        v.update(&s(120, 16, false)); // started with 16 in flight: measured
        assert!(!v.is_probing());
        assert_eq!(v.rtt_noload(), Some(Duration::from_millis(120)));
        assert_eq!((v.limit(), v.probe_count), (20, 0));
    }

    /// Netflix's `VegasLimitTest` scenarios: increase with no queue, a
    /// small step with a little queue, decrease past beta, hold in the
    /// sweet spot, decrease on drop, no growth while app-limited.
    #[test]
    fn vegas_steps() {
        let mut v = vegas().initial_limit(10).without_probe().build().unwrap();
        assert_eq!(v.update(&s(10, 10, false)), 10, "first sample: noload only");
        assert_eq!(v.rtt_noload(), Some(Duration::from_millis(10)));
        assert_eq!(v.update(&s(10, 10, false)), 16, "no queue: + beta 6");
        // 16 × (1 − 10/11) = 1.45 → 2: above threshold 1, below alpha 3: + 1.
        assert_eq!(v.update(&s(11, 16, false)), 17);
        // 17 × (1 − 10/17) = 7 > beta 6: − max(1, ⌊(7 − 6) / 2⌋) = − 1.
        assert_eq!(v.update(&s(17, 17, false)), 16);
        // 16 × (1 − 10/14) = 4.57 → 5: in [3, 6]: hold.
        assert_eq!(v.update(&s(14, 16, false)), 16);
        assert_eq!(v.update(&s(10, 16, true)), 15, "a drop: − 1");
        assert_eq!(v.update(&s(10, 7, false)), 15, "7 × 2 < 15: app-limited");
        assert_eq!(v.update(&s(10, 8, false)), 21, "8 × 2 >= 15: + beta");
    }

    #[test]
    fn a_large_queue_sheds_half_its_excess() {
        let mut v = vegas().initial_limit(100).without_probe().build().unwrap();
        v.update(&s(100, 100, false));
        // 100 × (1 − 100/200) = 50 queued; beta 12: − ⌊(50 − 12) / 2⌋ = − 19.
        assert_eq!(v.update(&s(200, 100, false)), 81);
        // 81 × (1 − 100/120) = 13.5 → 14: − max(1, ⌊(14 − 6) / 2⌋) = − 4.
        assert_eq!(v.update(&s(120, 81, false)), 77);
        // 77 × (1 − 100/110) = 7 → 7 > 6: − max(1, 0) = − 1, Netflix's step.
        assert_eq!(v.update(&s(110, 77, false)), 76);
    }

    #[test]
    fn steps_scale_with_log10_of_the_limit() {
        let mut v = vegas().initial_limit(150).without_probe().build().unwrap();
        v.update(&s(100, 150, false));
        assert_eq!(v.update(&s(100, 150, false)), 162, "log 2: + beta 12");
        assert_eq!(v.update(&s(110, 162, false)), 160, "queue 15 > 12: − 2");
    }

    #[test]
    fn small_limits_still_move() {
        // `log` is at least 1 (Netflix's `Log10RootFunction`), so a
        // limit under 10 still moves.
        let mut v = vegas().initial_limit(3).without_probe().build().unwrap();
        v.update(&s(10, 3, false));
        assert_eq!(v.update(&s(10, 3, false)), 9);
        assert_eq!(v.update(&s(10, 9, true)), 8);
    }

    #[test]
    fn a_fast_drop_does_not_become_the_noload_rtt() {
        let mut v = vegas().initial_limit(50).without_probe().build().unwrap();
        v.update(&s(100, 50, false));
        assert_eq!(v.update(&s(1, 50, true)), 49);
        assert_eq!(v.rtt_noload(), Some(Duration::from_millis(100)));
        assert_eq!(v.update(&s(100, 49, false)), 55, "still no queue");
    }

    #[test]
    fn zero_rtt_is_ignored() {
        let mut v = vegas().initial_limit(50).build().unwrap();
        assert_eq!(v.update(&s(0, 50, false)), 50);
        assert_eq!(v.rtt_noload(), None);
        assert_eq!(v.probe_count, 0);
    }

    #[test]
    fn smoothing_takes_part_of_each_step() {
        let mut v = vegas()
            .initial_limit(20)
            .smoothing(0.5)
            .without_probe()
            .build()
            .unwrap();
        v.update(&s(10, 20, false));
        v.update(&s(10, 20, false));
        assert_eq!(v.estimate(), 23.0, "20 + 0.5 × 6");
    }

    #[test]
    fn bounds_hold() {
        let mut v = vegas()
            .initial_limit(5)
            .min_limit(4)
            .max_limit(8)
            .build()
            .unwrap();
        v.update(&s(10, 5, false));
        for _ in 0..10 {
            v.update(&s(10, 100, false));
        }
        assert_eq!(v.limit(), 8);
        for _ in 0..10 {
            v.update(&s(10, 100, true));
        }
        assert_eq!(v.limit(), 4);
        assert_eq!(v.bounds(), (4, 8));
    }

    /// A backend with `k` servers, each request taking `base` ms unqueued,
    /// kept busy by a caller that always fills the limit: the RTT is
    /// `base × max(1, limit / k)`. Returns the limit after `n` samples.
    fn saturated(v: &mut Vegas, k: usize, base: f64, n: usize) -> Vec<usize> {
        let mut seen = Vec::new();
        for _ in 0..n {
            let limit = v.limit();
            let rtt = base * (limit as f64 / k as f64).max(1.0);
            v.update(&Sample::new(
                Instant::now(),
                Duration::from_secs_f64(rtt / 1000.0),
                limit,
                false,
            ));
            seen.push(v.limit());
        }
        seen
    }

    #[test]
    fn settles_between_alpha_and_beta_above_the_knee() {
        let mut v = vegas().without_probe().build().unwrap();
        let seen = saturated(&mut v, 80, 100.0, 200);
        assert!(
            seen[20..].iter().all(|&l| (83..=86).contains(&l)),
            "{seen:?}"
        );
    }

    /// Netflix's probe takes the queued RTT (107.5 ms at a limit of 86
    /// over 80 servers) as the new floor, so the queue estimate drops to 0
    /// and the limit climbs another band, probe after probe. The draining
    /// probe holds it at the knee across about 60 probes.
    #[test]
    fn probes_do_not_ratchet_a_saturated_backend() {
        let mut v = vegas().probe_multiplier(1).build().unwrap();
        let seen = saturated(&mut v, 80, 100.0, 4000);
        assert!(
            seen[100..].iter().all(|&l| (79..=86).contains(&l)),
            "{:?}",
            &seen[100..]
        );
        assert!(seen[100..].iter().any(|&l| l < 83), "probes happened");
        assert_eq!(v.rtt_noload(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn a_probe_finds_a_higher_noload_rtt() {
        // The backend's no-load latency doubles (100 → 200 ms): without a
        // probe the queue estimate is half the limit and the limit sinks
        // to 2 × beta; the probe measures 200 ms and it recovers.
        let mut v = vegas().without_probe().build().unwrap();
        saturated(&mut v, 80, 100.0, 100);
        let sunk = saturated(&mut v, 80, 200.0, 300);
        assert!(*sunk.last().unwrap() <= 13, "{sunk:?}");

        let mut p = vegas().probe_multiplier(2).build().unwrap();
        saturated(&mut p, 80, 100.0, 100);
        let seen = saturated(&mut p, 80, 200.0, 1000);
        assert_eq!(p.rtt_noload(), Some(Duration::from_millis(200)));
        assert!(
            seen[900..].iter().all(|&l| (79..=86).contains(&l)),
            "{:?}",
            &seen[900..]
        );
    }

    #[test]
    fn drain_gives_up_and_counts_drops() {
        let mut v = vegas()
            .initial_limit(40)
            .probe_multiplier(1)
            .build()
            .unwrap();
        v.update(&s(100, 40, false));
        // Queued samples until the probe is due (20 ≤ count ≤ 40).
        while !v.is_probing() {
            v.update(&s(200, 40, false));
        }
        let restore = v.estimate();
        let target = v.limit();
        assert!(target < restore as usize);
        v.update(&s(100, 40, true));
        assert_eq!(v.estimate(), restore - 1.0, "a drop while draining");
        // Never a sample at or under the target: give up after 2 × restore.
        let mut n = 1;
        while v.is_probing() {
            v.update(&s(150, target + 1, false));
            n += 1;
        }
        assert_eq!(n as f64, (2.0 * (restore - 1.0)).ceil());
        assert_eq!(v.rtt_noload(), Some(Duration::from_millis(150)));
        assert_eq!(v.limit(), (restore - 1.0) as usize);
    }

    #[test]
    fn builder_refuses_bad_fields() {
        let field = |b: VegasBuilder| b.build().unwrap_err().field();
        assert_eq!(field(Vegas::builder().smoothing(0.0)), "smoothing");
        assert_eq!(field(Vegas::builder().alpha(0)), "alpha");
        assert_eq!(field(Vegas::builder().beta(3)), "beta");
        assert_eq!(
            field(Vegas::builder().probe_multiplier(0)),
            "probe_multiplier"
        );
        assert_eq!(field(Vegas::builder().max_limit(10)), "initial_limit");
        assert_eq!(field(Vegas::builder().min_limit(0)), "min_limit");
    }
}
