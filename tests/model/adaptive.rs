//! Model checker for `flowguard::adaptive`, shared by
//! `tests/prop_adaptive.rs` (proptest) and `fuzz/fuzz_targets/adaptive.rs`
//! (libfuzzer).
//!
//! * `check_algorithm`: one of AIMD, Gradient2, Vegas, or one of them in a
//!   `Windowed`, with random settings, fed a random sample sequence, against
//!   a reference written from the rule tables in the module docs (no code
//!   shared with the crate: the Vegas probe's SplitMix64 jitter is written
//!   out again here). After every sample the limits must be equal, within
//!   `[min, max]`, and the estimates finite.
//! * `check_limiter`: an `AdaptiveLimiter` over AIMD on a manual clock,
//!   driven by `try_acquire`, reports and clock advances, against a naive
//!   list of held permits and a reference AIMD: every refusal and grant,
//!   the inflight each permit was taken at, the RTT each report feeds, the
//!   limit and the counts must match, and no permit is granted with the
//!   limit's worth already held.
//! * `check_limiter_strided`: the same steps with an algorithm that asks
//!   for one permit in `n` to be timed: each report reaches it exactly
//!   once, timed (with its RTT) or untimed (with its inflight and drop).
#![allow(dead_code)]
// The references clamp with `max`/`min`, not `clamp`: a NaN reaching them
// gives a different answer from the crate's, and the check fails.
#![allow(clippy::manual_clamp)]

use std::time::Duration;

use flowguard::adaptive::{
    AdaptiveLimiter, Aimd, Gradient2, LimitAlgorithm, QueueSize, Sample, Untimed, Vegas, Windowed,
};
use flowguard::clock::ManualClock;
use tokio::time::Instant;

/// One step of a sample sequence.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Sample {
        rtt_us: u32,
        inflight: u16,
        dropped: bool,
    },
    AdvanceMs(u16),
}

/// An algorithm and its settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AlgoCase {
    /// 0 AIMD, 1 Gradient2, 2 Vegas; +3: in a `Windowed`.
    pub(crate) kind: u8,
    pub(crate) min: u16,
    pub(crate) span: u16,
    pub(crate) initial_at: u16,
    /// AIMD backoff ratio, Gradient2 and Vegas smoothing, in thousandths.
    pub(crate) ratio_milli: u16,
    /// AIMD timeout (ms), Gradient2 long window (samples), Vegas probe
    /// multiplier (0: none).
    pub(crate) knob: u16,
    /// Gradient2 tolerance in tenths above 1 and queue (odd: fixed);
    /// Vegas alpha (low nibble) and beta above it (high nibble).
    pub(crate) shape: u8,
    pub(crate) seed: u64,
    pub(crate) min_window_ms: u16,
    pub(crate) window_span_ms: u16,
    pub(crate) min_samples: u8,
    pub(crate) min_rtt_us: u16,
}

impl AlgoCase {
    pub(crate) fn from_bytes(b: &[u8]) -> (Self, Vec<Op>) {
        let g = |i: usize| b.get(i).copied().unwrap_or(0);
        let w = |i: usize| u16::from_le_bytes([g(i), g(i + 1)]);
        let case = Self {
            kind: g(0) % 6,
            min: 1 + w(1) % 50,
            span: w(3) % 600,
            initial_at: w(5),
            ratio_milli: w(7),
            knob: w(9),
            shape: g(11),
            seed: u64::from_le_bytes(std::array::from_fn(|i| g(12 + i))),
            min_window_ms: 1 + w(20) % 500,
            window_span_ms: w(22) % 1000,
            min_samples: 1 + g(24) % 20,
            min_rtt_us: w(25) % 1000,
        };
        (case, ops_from_bytes(b.get(27..).unwrap_or(&[])))
    }

    fn bounds(&self) -> (usize, usize, usize) {
        let min = usize::from(self.min);
        let max = min + usize::from(self.span);
        let initial = min + usize::from(self.initial_at) % (max - min + 1);
        (initial, min, max)
    }

    /// The crate's algorithm and the reference, built from the same settings.
    fn build(&self) -> (Box<dyn LimitAlgorithm>, Box<dyn Reference>) {
        let (initial, min, max) = self.bounds();
        let (algo, reference): (Box<dyn LimitAlgorithm>, Box<dyn Reference>) = match self.kind % 3 {
            0 => {
                let ratio = 0.5 + f64::from(self.ratio_milli % 500) / 1000.0;
                let timeout = Duration::from_millis(1 + u64::from(self.knob % 5000));
                let a = Aimd::builder()
                    .initial_limit(initial)
                    .min_limit(min)
                    .max_limit(max)
                    .backoff_ratio(ratio)
                    .timeout(timeout)
                    .build()
                    .unwrap();
                let r = AimdRef {
                    limit: initial,
                    min,
                    max,
                    ratio,
                    timeout,
                };
                (Box::new(a), Box::new(r))
            }
            1 => {
                let smoothing = f64::from(1 + self.ratio_milli % 1000) / 1000.0;
                let tolerance = 1.0 + f64::from(self.shape >> 1) / 10.0;
                let window = 1 + usize::from(self.knob % 1000);
                let queue = if self.shape & 1 == 1 {
                    QueueSize::Fixed(usize::from(self.shape >> 4))
                } else {
                    QueueSize::SquareRoot {
                        min: usize::from(self.shape >> 5),
                    }
                };
                let a = Gradient2::builder()
                    .initial_limit(initial)
                    .min_limit(min)
                    .max_limit(max)
                    .smoothing(smoothing)
                    .tolerance(tolerance)
                    .long_window(window)
                    .queue_size(queue)
                    .build()
                    .unwrap();
                let r = GradientRef {
                    est: initial as f64,
                    min,
                    max,
                    smoothing,
                    tolerance,
                    queue,
                    window,
                    long: 0.0,
                    sum: 0.0,
                    count: 0,
                };
                (Box::new(a), Box::new(r))
            }
            _ => {
                let smoothing = f64::from(1 + self.ratio_milli % 1000) / 1000.0;
                let alpha = 1 + usize::from(self.shape & 0x0f) % 6;
                let beta = alpha + 1 + usize::from(self.shape >> 4) % 8;
                let probe = (self.knob % 41 != 0).then_some(u32::from(self.knob % 41));
                let mut b = Vegas::builder()
                    .initial_limit(initial)
                    .min_limit(min)
                    .max_limit(max)
                    .smoothing(smoothing)
                    .alpha(alpha)
                    .beta(beta)
                    .seed(self.seed);
                b = match probe {
                    Some(m) => b.probe_multiplier(m),
                    None => b.without_probe(),
                };
                let mut rng = Mix(self.seed);
                let jitter = rng.jitter();
                let r = VegasRef {
                    est: initial as f64,
                    min,
                    max,
                    smoothing,
                    alpha,
                    beta,
                    probe,
                    noload: None,
                    count: 0,
                    jitter,
                    rng,
                    drain: None,
                };
                (Box::new(b.build().unwrap()), Box::new(r))
            }
        };
        if self.kind < 3 {
            return (algo, reference);
        }
        let min_window = Duration::from_millis(self.min_window_ms.into());
        let max_window = min_window + Duration::from_millis(self.window_span_ms.into());
        let min_rtt = Duration::from_micros(self.min_rtt_us.into());
        let samples = usize::from(self.min_samples);
        let w = Windowed::builder(algo)
            .min_window(min_window)
            .max_window(max_window)
            .min_samples(samples)
            .min_rtt(min_rtt)
            .build()
            .unwrap();
        let r = WindowRef {
            inner: reference,
            min_window,
            max_window,
            min_samples: samples,
            min_rtt,
            window: Vec::new(),
            ends_at: None,
        };
        (Box::new(w), Box::new(r))
    }
}

pub(crate) fn ops_from_bytes(b: &[u8]) -> Vec<Op> {
    b.chunks(5)
        .map(|c| {
            let g = |i: usize| c.get(i).copied().unwrap_or(0);
            if g(0) % 5 == 0 {
                Op::AdvanceMs(u16::from_le_bytes([g(1), g(2)]))
            } else {
                // Latencies from 0 to ~4 s, denser at the low end.
                let rtt_us = u32::from(u16::from_le_bytes([g(1), g(2)])) << (g(3) % 7);
                Op::Sample {
                    rtt_us,
                    inflight: u16::from(g(4)) << (g(3) >> 5),
                    dropped: g(0) % 7 == 1,
                }
            }
        })
        .collect()
}

/// Runs one algorithm case; panics on any divergence from the reference.
pub(crate) fn check_algorithm(case: AlgoCase, ops: &[Op]) {
    let (_, min, max) = case.bounds();
    let (mut algo, mut reference) = case.build();
    assert_eq!(algo.limit(), reference.limit(), "{case:?}: initial");
    assert_eq!(algo.bounds(), (min, max));
    let t0 = Instant::now();
    let mut now = Duration::ZERO;
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::AdvanceMs(ms) => now += Duration::from_millis(ms.into()),
            Op::Sample {
                rtt_us,
                inflight,
                dropped,
            } => {
                let s = Sample::new(
                    t0 + now,
                    Duration::from_micros(rtt_us.into()),
                    inflight.into(),
                    dropped,
                );
                let got = algo.update(&s);
                let want = reference.update(&s);
                assert_eq!(got, want, "{case:?}: step {i} {s:?}");
                assert_eq!(algo.limit(), got);
                assert!(
                    (min..=max).contains(&got),
                    "{case:?}: {got} outside [{min}, {max}]"
                );
                assert!(reference.finite(), "{case:?}: step {i}: NaN or infinity");
            }
        }
    }
}

// ---- references -------------------------------------------------------------------

trait Reference {
    fn limit(&self) -> usize;
    fn update(&mut self, s: &Sample) -> usize;
    fn finite(&self) -> bool;
}

struct AimdRef {
    limit: usize,
    min: usize,
    max: usize,
    ratio: f64,
    timeout: Duration,
}

impl Reference for AimdRef {
    fn limit(&self) -> usize {
        self.limit
    }
    fn update(&mut self, s: &Sample) -> usize {
        let mut l = self.limit;
        if s.dropped || s.rtt > self.timeout {
            l = ((l as f64 * self.ratio).floor() as usize).min(l - 1);
        } else if 2 * s.inflight >= l {
            l += 1;
        }
        self.limit = l.max(self.min).min(self.max);
        self.limit
    }
    fn finite(&self) -> bool {
        true
    }
}

struct GradientRef {
    est: f64,
    min: usize,
    max: usize,
    smoothing: f64,
    tolerance: f64,
    queue: QueueSize,
    window: usize,
    long: f64,
    sum: f64,
    count: usize,
}

impl Reference for GradientRef {
    fn limit(&self) -> usize {
        self.est.floor() as usize
    }
    fn update(&mut self, s: &Sample) -> usize {
        if s.rtt.is_zero() {
            return self.limit();
        }
        let limit = self.limit();
        let queue = match self.queue {
            QueueSize::Fixed(n) => n,
            QueueSize::SquareRoot { min } => {
                let mut r = 0usize;
                while (r + 1) * (r + 1) <= limit {
                    r += 1;
                }
                r.max(min)
            }
            _ => unreachable!(),
        } as f64;
        let short = s.rtt.as_secs_f64();
        if self.count < 10 {
            self.count += 1;
            self.sum += short;
            self.long = self.sum / self.count as f64;
        } else {
            let f = 2.0 / (self.window as f64 + 1.0);
            self.long = self.long * (1.0 - f) + short * f;
        }
        let long = self.long;
        if long / short > 2.0 {
            self.long *= 0.95;
        }
        if (s.inflight as f64) < self.est / 2.0 {
            return self.limit();
        }
        let gradient = (self.tolerance * long / short).max(0.5).min(1.0);
        let new = self.est * gradient + queue;
        let new = self.est * (1.0 - self.smoothing) + new * self.smoothing;
        self.est = new.max(self.min as f64).min(self.max as f64);
        self.limit()
    }
    fn finite(&self) -> bool {
        self.est.is_finite() && self.long.is_finite()
    }
}

/// SplitMix64, written out again.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn jitter(&mut self) -> f64 {
        0.5 + 0.5 * ((self.next() >> 11) as f64 / 9_007_199_254_740_992.0)
    }
}

struct VegasRef {
    est: f64,
    min: usize,
    max: usize,
    smoothing: f64,
    alpha: usize,
    beta: usize,
    probe: Option<u32>,
    noload: Option<Duration>,
    count: u64,
    jitter: f64,
    rng: Mix,
    /// (restore, target, seen, lowest rtt)
    drain: Option<(f64, usize, u64, Option<Duration>)>,
}

fn log_step(n: usize) -> f64 {
    let mut digits = 0;
    let mut m = n;
    while m >= 10 {
        m /= 10;
        digits += 1;
    }
    digits.max(1) as f64
}

impl VegasRef {
    fn clamp(&self, x: f64) -> f64 {
        x.max(self.min as f64).min(self.max as f64)
    }
    fn smooth_to(&mut self, new: f64) {
        let new = self.clamp(new);
        self.est = self.clamp((1.0 - self.smoothing) * self.est + self.smoothing * new);
    }
    fn new_probe(&mut self) {
        self.count = 0;
        self.jitter = self.rng.jitter();
    }
}

impl Reference for VegasRef {
    fn limit(&self) -> usize {
        match self.drain {
            Some((_, target, _, _)) => target,
            None => self.est.floor() as usize,
        }
    }

    fn update(&mut self, s: &Sample) -> usize {
        if let Some((mut restore, target, mut seen, mut low)) = self.drain {
            seen += 1;
            let mut measured = None;
            if s.dropped {
                restore = self.clamp(restore - log_step(restore.floor() as usize));
            } else if s.rtt > Duration::ZERO {
                low = Some(low.map_or(s.rtt, |l: Duration| l.min(s.rtt)));
                if s.inflight <= target {
                    measured = Some(s.rtt);
                }
            }
            if measured.is_none() && seen < ((2.0 * restore).ceil() as u64).max(1) {
                self.drain = Some((restore, target, seen, low));
            } else {
                if let Some(rtt) = measured.or(low) {
                    self.noload = Some(rtt);
                }
                self.est = restore;
                self.drain = None;
                self.new_probe();
            }
            return self.limit();
        }
        if s.dropped {
            self.count += 1;
            let step = log_step(self.est.floor() as usize);
            self.smooth_to(self.est - step);
            return self.limit();
        }
        if s.rtt.is_zero() {
            return self.limit();
        }
        self.count += 1;
        let due = self
            .probe
            .is_some_and(|m| self.jitter * f64::from(m) * self.est <= self.count as f64);
        if due {
            match self.noload {
                None => {
                    self.noload = Some(s.rtt);
                    self.new_probe();
                }
                Some(noload) => {
                    let knee =
                        (self.est * noload.as_secs_f64() / s.rtt.as_secs_f64()).floor() as usize;
                    let target = knee.max(self.min);
                    if target >= self.est.floor() as usize {
                        self.noload = Some(s.rtt);
                        self.new_probe();
                    } else {
                        self.drain = Some((self.est, target, 0, None));
                    }
                }
            }
            return self.limit();
        }
        let noload = match self.noload {
            Some(n) if s.rtt >= n => n,
            _ => {
                self.noload = Some(s.rtt);
                return self.limit();
            }
        };
        if 2.0 * (s.inflight as f64) < self.est {
            return self.limit();
        }
        let log = log_step(self.est.floor() as usize);
        let alpha = self.alpha as f64 * log;
        let beta = self.beta as f64 * log;
        let queue = (self.est * (1.0 - noload.as_secs_f64() / s.rtt.as_secs_f64())).ceil();
        let new = if queue <= log {
            self.est + beta
        } else if queue < alpha {
            self.est + log
        } else if queue > beta {
            self.est - log.max(((queue - beta) / 2.0).floor())
        } else {
            return self.limit();
        };
        self.smooth_to(new);
        self.limit()
    }

    fn finite(&self) -> bool {
        self.est.is_finite() && self.drain.is_none_or(|d| d.0.is_finite())
    }
}

/// The windowed wrapper, naively: the window's samples kept in a list and
/// the aggregates computed from it when it closes.
struct WindowRef {
    inner: Box<dyn Reference>,
    min_window: Duration,
    max_window: Duration,
    min_samples: usize,
    min_rtt: Duration,
    /// (rtt, inflight, dropped, counts toward the RTT)
    window: Vec<(Duration, usize, bool, bool)>,
    ends_at: Option<Instant>,
}

impl Reference for WindowRef {
    fn limit(&self) -> usize {
        self.inner.limit()
    }
    fn update(&mut self, s: &Sample) -> usize {
        let timed = s.rtt >= self.min_rtt;
        // A too-fast success adds nothing, but may close the window.
        if timed || s.dropped {
            self.window.push((s.rtt, s.inflight, s.dropped, timed));
        }
        let end = s.start + s.rtt;
        if let Some(t) = self.ends_at {
            if end <= t {
                return self.limit();
            }
        }
        let w = std::mem::take(&mut self.window);
        let timed: Vec<Duration> = w.iter().filter(|x| x.3).map(|x| x.0).collect();
        let low = timed.iter().min().copied();
        let length = match low {
            Some(l) => (l * 2).max(self.min_window).min(self.max_window),
            None => self.min_window,
        };
        self.ends_at = Some(end + length);
        if w.len() >= self.min_samples {
            let mean = if timed.is_empty() {
                Duration::ZERO
            } else {
                let sum: u128 = timed.iter().map(|d| d.as_nanos()).sum();
                Duration::from_nanos((sum / timed.len() as u128) as u64)
            };
            let inflight = w.iter().map(|x| x.1).max().unwrap_or(0);
            let dropped = w.iter().any(|x| x.2);
            self.inner
                .update(&Sample::new(s.start, mean, inflight, dropped));
        }
        self.limit()
    }
    fn finite(&self) -> bool {
        self.inner.finite()
    }
}

// ---- the limiter ------------------------------------------------------------------

/// One step against the limiter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LimiterOp {
    TryAcquire,
    /// Report the held permit at this index (modulo the number held):
    /// 0 success, 1 dropped, 2 ignore, 3 drop unreported.
    Report(u8, u8),
    AdvanceMs(u16),
}

pub(crate) fn limiter_ops_from_bytes(b: &[u8]) -> Vec<LimiterOp> {
    b.chunks(3)
        .map(|c| {
            let g = |i: usize| c.get(i).copied().unwrap_or(0);
            match g(0) % 4 {
                0 | 1 => LimiterOp::TryAcquire,
                2 => LimiterOp::Report(g(1), g(2) % 4),
                _ => LimiterOp::AdvanceMs(u16::from(g(1)) * 4),
            }
        })
        .collect()
}

/// Runs a limiter case; panics on any divergence from the reference.
pub(crate) fn check_limiter(initial: u8, ops: &[LimiterOp]) {
    let initial = 1 + usize::from(initial % 40);
    let aimd = Aimd::builder()
        .initial_limit(initial)
        .min_limit(1)
        .max_limit(60)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut reference = AimdRef {
        limit: initial,
        min: 1,
        max: 60,
        ratio: 0.9,
        timeout: Duration::from_millis(500),
    };
    let clock = ManualClock::new();
    let limiter = AdaptiveLimiter::builder()
        .algorithm(aimd)
        .build_with_clock(clock.clone())
        .unwrap();
    // (permit, taken at, inflight then)
    let mut held = Vec::new();
    let (mut samples, mut drops, mut ignored, mut rejections) = (0u64, 0u64, 0u64, 0u64);
    for (i, op) in ops.iter().enumerate() {
        match *op {
            LimiterOp::AdvanceMs(ms) => clock.advance(Duration::from_millis(ms.into())),
            LimiterOp::TryAcquire => {
                let can = held.len() < reference.limit;
                match limiter.try_acquire() {
                    Ok(p) => {
                        assert!(
                            can,
                            "step {i}: granted with {} held of {}",
                            held.len(),
                            reference.limit
                        );
                        assert_eq!(p.inflight_at_start(), held.len() + 1);
                        held.push((p, clock.elapsed(), held.len() + 1));
                    }
                    Err(_) => {
                        assert!(
                            !can,
                            "step {i}: refused with {} held of {}",
                            held.len(),
                            reference.limit
                        );
                        rejections += 1;
                    }
                }
            }
            LimiterOp::Report(at, how) => {
                if held.is_empty() {
                    continue;
                }
                let (p, taken, inflight) = held.remove(usize::from(at) % held.len());
                let rtt = clock.elapsed() - taken;
                match how {
                    0 | 1 => {
                        let dropped = how == 1;
                        reference.update(&Sample::new(Instant::now(), rtt, inflight, dropped));
                        samples += 1;
                        drops += u64::from(dropped);
                        if dropped {
                            p.dropped();
                        } else {
                            p.success();
                        }
                    }
                    2 => {
                        ignored += 1;
                        p.ignore();
                    }
                    _ => {
                        ignored += 1;
                        drop(p);
                    }
                }
                // The inflight numbers of the rest are what they were.
            }
        }
        let m = limiter.metrics();
        assert_eq!(m.limit, reference.limit, "step {i}");
        assert_eq!(limiter.limit(), reference.limit);
        assert_eq!(m.inflight, held.len(), "step {i}");
        assert_eq!(
            (m.samples, m.drops, m.ignored, m.rejections),
            (samples, drops, ignored, rejections),
            "step {i}"
        );
    }
    drop(held);
    assert_eq!(limiter.metrics().inflight, 0);
}

// ---- the limiter, timing one permit in n ---------------------------------------

/// A fixed limit that asks for one permit in `stride` to be timed and
/// logs what it is fed.
#[derive(Debug, Clone, Default)]
struct Logged {
    limit: usize,
    stride: usize,
    timed: std::sync::Arc<std::sync::Mutex<Vec<Sample>>>,
    untimed: std::sync::Arc<std::sync::Mutex<Vec<Untimed>>>,
}

impl LimitAlgorithm for Logged {
    fn limit(&self) -> usize {
        self.limit
    }
    fn update(&mut self, s: &Sample) -> usize {
        self.timed.lock().unwrap().push(*s);
        self.limit
    }
    fn bounds(&self) -> (usize, usize) {
        (self.limit, self.limit)
    }
    fn timing_stride(&self) -> usize {
        self.stride
    }
    fn add_untimed(&mut self, u: &Untimed) {
        self.untimed.lock().unwrap().push(*u);
    }
}

/// Runs a limiter case with a timing stride of `1 + stride % 8`: which
/// permits are timed is the limiter's choice, so each report must reach
/// the algorithm exactly once, either as a timed sample with the RTT and
/// inflight of its permit, or (after the `metrics()` that follows every
/// step hands them over) as one untimed report with its inflight and drop
/// flag; the counts and the permits held must match a naive list.
pub(crate) fn check_limiter_strided(stride: u8, initial: u8, ops: &[LimiterOp]) {
    let limit = 1 + usize::from(initial % 40);
    let algo = Logged {
        limit,
        stride: 1 + usize::from(stride % 8),
        ..Logged::default()
    };
    let clock = ManualClock::new();
    let limiter = AdaptiveLimiter::builder()
        .algorithm(algo.clone())
        .build_with_clock(clock.clone())
        .unwrap();
    let mut held = Vec::new();
    let (mut samples, mut drops, mut ignored, mut rejections) = (0u64, 0u64, 0u64, 0u64);
    for (i, op) in ops.iter().enumerate() {
        let (timed_before, untimed_before) = (
            algo.timed.lock().unwrap().len(),
            algo.untimed.lock().unwrap().len(),
        );
        let mut expect = None;
        match *op {
            LimiterOp::AdvanceMs(ms) => clock.advance(Duration::from_millis(ms.into())),
            LimiterOp::TryAcquire => match limiter.try_acquire() {
                Ok(p) => {
                    assert!(held.len() < limit, "step {i}: granted over the limit");
                    assert_eq!(p.inflight_at_start(), held.len() + 1);
                    held.push((p, clock.elapsed(), held.len() + 1));
                }
                Err(_) => {
                    assert_eq!(held.len(), limit, "step {i}: refused under the limit");
                    rejections += 1;
                }
            },
            LimiterOp::Report(at, how) => {
                if held.is_empty() {
                    continue;
                }
                let (p, taken, inflight) = held.remove(usize::from(at) % held.len());
                let rtt = clock.elapsed() - taken;
                match how {
                    0 | 1 => {
                        let dropped = how == 1;
                        samples += 1;
                        drops += u64::from(dropped);
                        expect = Some((rtt, inflight, dropped));
                        if dropped {
                            p.dropped();
                        } else {
                            p.success();
                        }
                    }
                    2 => {
                        ignored += 1;
                        p.ignore();
                    }
                    _ => {
                        ignored += 1;
                        drop(p);
                    }
                }
            }
        }
        let m = limiter.metrics();
        assert_eq!((m.limit, m.inflight), (limit, held.len()), "step {i}");
        assert_eq!(
            (m.samples, m.drops, m.ignored, m.rejections),
            (samples, drops, ignored, rejections),
            "step {i}"
        );
        let timed = algo.timed.lock().unwrap();
        let untimed = algo.untimed.lock().unwrap();
        match expect {
            None => assert_eq!(
                (timed.len(), untimed.len()),
                (timed_before, untimed_before),
                "step {i}"
            ),
            Some((rtt, inflight, dropped)) => {
                if timed.len() > timed_before {
                    assert_eq!(untimed.len(), untimed_before, "step {i}: fed twice");
                    let s = timed[timed_before];
                    assert_eq!((s.rtt, s.inflight, s.dropped), (rtt, inflight, dropped));
                } else {
                    assert_eq!(untimed.len(), untimed_before + 1, "step {i}: lost");
                    let u = untimed[untimed_before];
                    assert_eq!((u.count, u.max_inflight, u.dropped), (1, inflight, dropped));
                }
            }
        }
    }
    drop(held);
    assert_eq!(limiter.metrics().inflight, 0);
}
