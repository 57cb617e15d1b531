//! A wrapper that feeds an algorithm one aggregate sample per time window.
//!
//! A pure core after Netflix concurrency-limits' `WindowedLimit` (with its
//! default average window). Samples are collected until one *ends*
//! (`start + rtt`) past the window's end; then the window closes and, if it
//! holds at least `min_samples` samples, the inner algorithm gets one sample:
//!
//! | field | aggregate over the window |
//! |---|---|
//! | `rtt` | the mean RTT |
//! | `inflight` | the largest `inflight` |
//! | `dropped` | whether any sample was dropped |
//! | `start` | the closing sample's start |
//!
//! The next window ends `clamp(2 × the closed window's lowest RTT,
//! min_window, max_window)` after the closing sample ended: about two
//! round trips, so each decision sees the effect of the one before.
//! Defaults as Netflix's: windows of exactly 1 s (`min_window` =
//! `max_window` = 1 s), at least 10 samples, samples faster than 100 µs
//! ignored.
//!
//! **Timing only as many permits as a window needs** (not in Netflix's,
//! which reads the clock twice for every request): the window's decision
//! needs the mean RTT, not every RTT. So when a window closes, the
//! wrapper asks an [`AdaptiveLimiter`](super::AdaptiveLimiter) to time
//! about one permit in `n` ([`LimitAlgorithm::timing_stride`]), with `n`
//! = the closed window's reports (too-fast ones included) divided by
//! [`timed_per_window`](WindowedBuilder::timed_per_window) (default 160),
//! between 1 and [`max_time_one_in`](WindowedBuilder::max_time_one_in)
//! (default 16). A backend served a few hundred times a window is timed
//! on every permit, as Netflix's; one served a million times a second is
//! timed on one permit in 16. The untimed reports still count toward the
//! window (its sample count, its largest `inflight`, its drop flag;
//! [`LimitAlgorithm::add_untimed`]) but add no RTT and cannot close it:
//! the window closes at the first *timed* report that ends past its end,
//! about `n` reports late at most; a window with untimed reports but no
//! timed sample (and no drop) is discarded, having no RTT to decide on.
//! `max_time_one_in(1)` times every permit.
//!
//! Where this differs, deliberately: **a too-fast sample still tells the
//! time**: it adds nothing to the window, as in Netflix's, but one that
//! ends past the window's end closes it (Netflix's waits for the next
//! sample above the threshold), so windows keep their length and the
//! timing stride above is kept up to date. **Drops always count.**
//! Netflix drops every sample faster than the 100 µs threshold, drops included, so a
//! backend that fails fast is never seen to fail. Here a dropped sample
//! always counts toward the window (its sample count and its drop flag)
//! and adds its RTT to the mean only when that RTT is above the
//! threshold; a window of fast drops alone reports an RTT of zero with
//! `dropped` set. The very first sample closes the window it opened at
//! once (Netflix's first deadline is 0): with `min_samples` 1 that sample
//! alone is a decision, as in Netflix's; otherwise the window is
//! discarded, and the first real window starts then.

use std::time::Duration;

use tokio::time::Instant;

use super::{LimitAlgorithm, Sample, Untimed};
use crate::error::{ConfigError, ConfigErrorKind};

/// Feeds `A` one aggregate sample per window. See the [module docs](self).
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::{Aimd, LimitAlgorithm, Sample, Windowed};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let aimd = Aimd::builder().initial_limit(10).min_limit(1).build().unwrap();
/// let mut w = Windowed::builder(aimd).min_samples(3).build().unwrap();
/// let t0 = Instant::now();
/// let ms = Duration::from_millis;
/// w.update(&Sample::new(t0, ms(10), 10, false)); // opens the first window
/// for i in 0..200u64 {
///     // 200 samples in the next second: no decision until it closes.
///     w.update(&Sample::new(t0 + ms(5 * i), ms(10), 10, i == 7));
/// }
/// assert_eq!(w.limit(), 10);
/// w.update(&Sample::new(t0 + ms(1_100), ms(10), 10, false)); // closes it
/// assert_eq!(w.limit(), 9); // one window with a drop: ⌊10 × 0.9⌋, once
/// ```
#[derive(Debug, Clone)]
pub struct Windowed<A> {
    inner: A,
    min_window: Duration,
    max_window: Duration,
    min_samples: usize,
    min_rtt: Duration,
    timed_per_window: usize,
    max_stride: usize,
    /// The stride asked for now (1 until the first window closes).
    stride: usize,
    window: Window,
    ends_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Window {
    /// Every report, too fast ones included (for the timing stride).
    reports: usize,
    count: usize,
    timed: u64,
    rtt_sum_nanos: u128,
    rtt_min: Option<Duration>,
    max_inflight: usize,
    dropped: bool,
}

impl Window {
    fn add_untimed(&mut self, u: &Untimed) {
        let n = usize::try_from(u.count).unwrap_or(usize::MAX);
        self.reports = self.reports.saturating_add(n);
        self.count = self.count.saturating_add(n);
        self.max_inflight = self.max_inflight.max(u.max_inflight);
        self.dropped |= u.dropped;
    }

    fn add(&mut self, s: &Sample, timed: bool) {
        self.count += 1;
        self.max_inflight = self.max_inflight.max(s.inflight);
        self.dropped |= s.dropped;
        if timed {
            self.timed += 1;
            self.rtt_sum_nanos += s.rtt.as_nanos();
            self.rtt_min = Some(self.rtt_min.map_or(s.rtt, |m| m.min(s.rtt)));
        }
    }

    fn mean_rtt(&self) -> Duration {
        match self.rtt_sum_nanos.checked_div(u128::from(self.timed)) {
            Some(n) => Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX)),
            None => Duration::ZERO,
        }
    }
}

/// Configures a [`Windowed`]. Defaults: 1 s windows, at least 10 samples,
/// samples under 100 µs ignored (Netflix's), enough permits timed for
/// about 160 timed samples a window, at least one in 16.
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::{Vegas, Windowed};
/// use std::time::Duration;
///
/// let w = Windowed::builder(Vegas::new())
///     .min_window(Duration::from_millis(100))
///     .max_window(Duration::from_secs(2))
///     .min_samples(20)
///     .build()
///     .unwrap();
/// # drop(w);
/// let err = Windowed::builder(Vegas::new())
///     .min_window(Duration::from_secs(3))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "max_window");
/// ```
#[derive(Debug, Clone)]
pub struct WindowedBuilder<A> {
    inner: A,
    min_window: Duration,
    max_window: Duration,
    min_samples: usize,
    min_rtt: Duration,
    timed_per_window: usize,
    max_stride: usize,
}

impl<A: LimitAlgorithm> WindowedBuilder<A> {
    /// The shortest window (default 1 s; above zero).
    pub fn min_window(mut self, d: Duration) -> Self {
        self.min_window = d;
        self
    }

    /// The longest window (default 1 s; at least `min_window`).
    pub fn max_window(mut self, d: Duration) -> Self {
        self.max_window = d;
        self
    }

    /// Windows with fewer samples are discarded (default 10; at least 1).
    pub fn min_samples(mut self, n: usize) -> Self {
        self.min_samples = n;
        self
    }

    /// Samples faster than this are ignored, drops excepted (default 100 µs).
    pub fn min_rtt(mut self, d: Duration) -> Self {
        self.min_rtt = d;
        self
    }

    /// How many timed samples a window should get (default 160; at least
    /// 1): the [timing stride](LimitAlgorithm::timing_stride) asked of an
    /// [`AdaptiveLimiter`](super::AdaptiveLimiter) is the last window's
    /// sample count over this. See the [module docs](self).
    pub fn timed_per_window(mut self, n: usize) -> Self {
        self.timed_per_window = n;
        self
    }

    /// The largest timing stride asked for (default 16; at least 1, which
    /// times every permit). See the [module docs](self).
    pub fn max_time_one_in(mut self, n: usize) -> Self {
        self.max_stride = n;
        self
    }

    /// Checks the settings and makes the wrapper.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `min_window` (zero), `max_window` (below
    /// `min_window`), `min_samples`, `timed_per_window` or
    /// `max_time_one_in` (0).
    pub fn build(self) -> Result<Windowed<A>, ConfigError> {
        const C: &str = "windowed";
        if self.min_window.is_zero() {
            return Err(ConfigError::new(
                C,
                "min_window",
                ConfigErrorKind::Zero,
                "must be positive",
            ));
        }
        if self.max_window < self.min_window {
            return Err(ConfigError::new(
                C,
                "max_window",
                ConfigErrorKind::Conflict,
                format!(
                    "must be at least min_window {:?}, got {:?}",
                    self.min_window, self.max_window
                ),
            ));
        }
        if self.min_samples == 0 {
            return Err(ConfigError::new(
                C,
                "min_samples",
                ConfigErrorKind::Zero,
                "must be at least 1",
            ));
        }
        for (field, n) in [
            ("timed_per_window", self.timed_per_window),
            ("max_time_one_in", self.max_stride),
        ] {
            if n == 0 {
                return Err(ConfigError::new(
                    C,
                    field,
                    ConfigErrorKind::Zero,
                    "must be at least 1",
                ));
            }
        }
        Ok(Windowed {
            inner: self.inner,
            timed_per_window: self.timed_per_window,
            max_stride: self.max_stride,
            stride: 1,
            min_window: self.min_window,
            max_window: self.max_window,
            min_samples: self.min_samples,
            min_rtt: self.min_rtt,
            window: Window::default(),
            ends_at: None,
        })
    }
}

impl<A: LimitAlgorithm> Windowed<A> {
    /// Wraps `inner` with the default windows.
    pub fn new(inner: A) -> Self {
        match Self::builder(inner).build() {
            Ok(w) => w,
            // The defaults are valid (a unit test checks it).
            Err(_) => unreachable!("default window settings are valid"),
        }
    }

    /// A builder wrapping `inner`, with the defaults.
    pub fn builder(inner: A) -> WindowedBuilder<A> {
        WindowedBuilder {
            inner,
            min_window: Duration::from_secs(1),
            max_window: Duration::from_secs(1),
            min_samples: 10,
            min_rtt: Duration::from_micros(100),
            timed_per_window: 160,
            max_stride: 16,
        }
    }

    /// The wrapped algorithm.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

impl<A: LimitAlgorithm> LimitAlgorithm for Windowed<A> {
    fn limit(&self) -> usize {
        self.inner.limit()
    }

    fn update(&mut self, s: &Sample) -> usize {
        let timed = s.rtt >= self.min_rtt;
        self.window.reports = self.window.reports.saturating_add(1);
        if timed || s.dropped {
            self.window.add(s, timed);
        }
        let end = s.start.checked_add(s.rtt).unwrap_or(s.start);
        if self.ends_at.is_some_and(|t| end <= t) {
            return self.limit();
        }
        let w = std::mem::take(&mut self.window);
        self.stride = (w.reports / self.timed_per_window).clamp(1, self.max_stride);
        let length = w
            .rtt_min
            .map_or(self.min_window, |m| m.saturating_mul(2))
            .clamp(self.min_window, self.max_window);
        self.ends_at = Some(end.checked_add(length).unwrap_or(end));
        // Untimed reports alone (no RTT, no drop) say nothing to decide on.
        if w.count >= self.min_samples && (w.timed > 0 || w.dropped) {
            self.inner.update(&Sample::new(
                s.start,
                w.mean_rtt(),
                w.max_inflight,
                w.dropped,
            ));
        }
        self.limit()
    }

    fn bounds(&self) -> (usize, usize) {
        self.inner.bounds()
    }

    fn timing_stride(&self) -> usize {
        self.stride
    }

    fn add_untimed(&mut self, reports: &Untimed) {
        self.window.add_untimed(reports);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::adaptive::Aimd;

    /// Records what the inner algorithm is fed.
    #[derive(Debug, Default)]
    struct Spy(Vec<Sample>);

    impl LimitAlgorithm for Spy {
        fn limit(&self) -> usize {
            self.0.len() + 1
        }
        fn update(&mut self, s: &Sample) -> usize {
            self.0.push(*s);
            self.limit()
        }
        fn bounds(&self) -> (usize, usize) {
            (1, usize::MAX)
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn defaults_are_netflixs() {
        let w = Windowed::new(Spy::default());
        assert_eq!((w.min_window, w.max_window), (MS * 1000, MS * 1000));
        assert_eq!(w.min_samples, 10);
        assert_eq!(w.min_rtt, Duration::from_micros(100));
        assert_eq!((w.timed_per_window, w.max_stride), (160, 16));
        assert_eq!(w.bounds(), (1, usize::MAX));
    }

    #[test]
    fn aggregates_mean_rtt_max_inflight_and_any_drop() {
        let t0 = Instant::now();
        let mut w = Windowed::builder(Spy::default())
            .min_window(MS * 100)
            .max_window(MS * 100)
            .min_samples(3)
            .build()
            .unwrap();
        w.update(&Sample::new(t0, MS * 10, 1, false)); // closes the first window at once
        assert_eq!(w.inner().0.len(), 0, "one sample is below min_samples");
        // The window ends at 10 + 100 ms.
        w.update(&Sample::new(t0 + MS * 20, MS * 10, 4, false));
        w.update(&Sample::new(t0 + MS * 30, MS * 30, 9, true));
        w.update(&Sample::new(t0 + MS * 40, MS * 20, 2, false));
        assert_eq!(w.inner().0.len(), 0);
        w.update(&Sample::new(t0 + MS * 100, MS * 40, 3, false)); // ends at 140
        let fed = w.inner().0[0];
        assert_eq!(fed.rtt, MS * 25, "mean of 10, 30, 20, 40");
        assert_eq!((fed.inflight, fed.dropped), (9, true));
        assert_eq!(fed.start, t0 + MS * 100);
        assert_eq!(w.ends_at, Some(t0 + MS * 240));
    }

    /// Netflix's first deadline is 0: the first sample closes the window it
    /// opened, and with a window size of 1 it is a decision of its own.
    #[test]
    fn the_first_sample_alone_decides_with_min_samples_one() {
        let t0 = Instant::now();
        let mut w = Windowed::builder(Spy::default())
            .min_samples(1)
            .build()
            .unwrap();
        w.update(&Sample::new(t0, MS * 10, 7, false));
        assert_eq!(w.inner().0, vec![Sample::new(t0, MS * 10, 7, false)]);
        assert_eq!(w.ends_at, Some(t0 + MS * 1010), "then a 1 s window");
    }

    #[test]
    fn window_length_is_twice_the_lowest_rtt_within_bounds() {
        let t0 = Instant::now();
        let mut w = Windowed::builder(Spy::default())
            .min_window(MS * 50)
            .max_window(MS * 500)
            .min_samples(1)
            .build()
            .unwrap();
        w.update(&Sample::new(t0, MS * 60, 1, false));
        assert_eq!(w.ends_at, Some(t0 + MS * 180), "60 + 2 × 60");
        w.update(&Sample::new(t0 + MS * 200, MS * 10, 1, false));
        assert_eq!(w.ends_at, Some(t0 + MS * 260), "210 + max(50, 2 × 10)");
        w.update(&Sample::new(t0 + MS * 300, MS * 400, 1, false));
        assert_eq!(w.ends_at, Some(t0 + MS * 1200), "700 + min(500, 800)");
        assert_eq!(w.inner().0.len(), 3);
    }

    #[test]
    fn fast_samples_are_ignored_but_fast_drops_count() {
        let t0 = Instant::now();
        let mut w = Windowed::builder(Spy::default())
            .min_samples(2)
            .build()
            .unwrap();
        w.update(&Sample::new(t0, MS, 1, false));
        w.update(&Sample::new(
            t0 + MS * 10,
            Duration::from_micros(50),
            5,
            false,
        ));
        assert_eq!(w.window.count, 0, "too fast: ignored");
        w.update(&Sample::new(t0 + MS * 10, Duration::ZERO, 5, true));
        w.update(&Sample::new(t0 + MS * 20, Duration::ZERO, 6, true));
        w.update(&Sample::new(t0 + MS * 2000, Duration::ZERO, 7, true));
        let fed = w.inner().0[0];
        assert_eq!(
            (fed.rtt, fed.inflight, fed.dropped),
            (Duration::ZERO, 7, true)
        );
    }

    #[test]
    fn one_backoff_per_window_not_per_drop() {
        let t0 = Instant::now();
        let aimd = Aimd::builder()
            .initial_limit(100)
            .min_limit(1)
            .build()
            .unwrap();
        let mut w = Windowed::builder(aimd).min_samples(1).build().unwrap();
        w.update(&Sample::new(t0, MS, 0, false)); // app-limited: no change
        for i in 0..50 {
            w.update(&Sample::new(t0 + MS * (10 + i), MS, 100, true));
        }
        assert_eq!(w.limit(), 100, "the window is still open");
        w.update(&Sample::new(t0 + MS * 1200, MS, 100, false));
        assert_eq!(w.limit(), 90, "fifty drops, one window, one backoff");
    }

    #[test]
    fn builder_refuses_bad_fields() {
        let b = || Windowed::builder(Spy::default());
        assert_eq!(
            b().min_window(Duration::ZERO).build().unwrap_err().field(),
            "min_window"
        );
        assert_eq!(
            b().max_window(MS).build().unwrap_err().field(),
            "max_window"
        );
        assert_eq!(
            b().min_samples(0).build().unwrap_err().field(),
            "min_samples"
        );
        assert_eq!(
            b().timed_per_window(0).build().unwrap_err().field(),
            "timed_per_window"
        );
        assert_eq!(
            b().max_time_one_in(0).build().unwrap_err().field(),
            "max_time_one_in"
        );
    }

    #[test]
    fn the_stride_is_the_last_windows_reports_over_the_target_capped() {
        let t0 = Instant::now();
        let mut w = Windowed::builder(Spy::default())
            .min_window(MS * 100)
            .max_window(MS * 100)
            .timed_per_window(10)
            .max_time_one_in(4)
            .build()
            .unwrap();
        assert_eq!(w.timing_stride(), 1, "nothing known yet");
        w.update(&Sample::new(t0, MS, 1, false)); // closes the first window
        assert_eq!(w.timing_stride(), 1);
        // 29 reports, 5 of them too fast, then the closing one: 31 with
        // the untimed 1 handed over.
        for i in 0..29u32 {
            let rtt = if i < 5 { Duration::ZERO } else { MS };
            w.update(&Sample::new(t0 + MS * (2 + i), rtt, 1, false));
        }
        w.add_untimed(&Untimed::new(1, 1, false));
        assert_eq!(w.timing_stride(), 1, "the window is open");
        w.update(&Sample::new(t0 + MS * 150, MS, 1, false));
        assert_eq!(w.timing_stride(), 3, "⌊31 / 10⌋");
        w.add_untimed(&Untimed::new(1_000, 1, false));
        w.update(&Sample::new(t0 + MS * 300, MS, 1, false));
        assert_eq!(w.timing_stride(), 4, "capped");
    }

    #[test]
    fn untimed_reports_count_but_cannot_decide_alone() {
        let t0 = Instant::now();
        let mut w = Windowed::builder(Spy::default())
            .min_window(MS * 100)
            .max_window(MS * 100)
            .min_samples(5)
            .build()
            .unwrap();
        w.update(&Sample::new(t0, MS * 10, 1, false)); // ends at 110
        // Untimed reports only, then a too-fast sample that closes the
        // window by time: no RTT to decide on, nothing fed.
        w.add_untimed(&Untimed::new(20, 7, false));
        w.update(&Sample::new(t0 + MS * 200, Duration::ZERO, 1, false));
        assert!(w.inner().0.is_empty());
        assert_eq!(w.ends_at, Some(t0 + MS * 300), "closed by the fast one");
        // Four untimed (one a drop) and one timed sample: five samples,
        // the RTT of the timed one, their largest inflight, the drop.
        w.add_untimed(&Untimed::new(3, 9, false));
        w.add_untimed(&Untimed::new(1, 2, true));
        w.update(&Sample::new(t0 + MS * 310, MS * 30, 4, false));
        let fed = w.inner().0[0];
        assert_eq!((fed.rtt, fed.inflight, fed.dropped), (MS * 30, 9, true));
    }

    #[test]
    fn a_too_fast_sample_closes_the_window_but_adds_nothing() {
        let t0 = Instant::now();
        let mut w = Windowed::builder(Spy::default())
            .min_window(MS * 100)
            .max_window(MS * 100)
            .min_samples(2)
            .build()
            .unwrap();
        w.update(&Sample::new(t0, MS * 10, 1, false)); // ends at 110
        w.update(&Sample::new(t0 + MS * 20, MS * 10, 3, false));
        w.update(&Sample::new(t0 + MS * 30, MS * 20, 4, false));
        w.update(&Sample::new(
            t0 + MS * 200,
            Duration::from_micros(50),
            8,
            false,
        ));
        let fed = w.inner().0[0];
        assert_eq!(
            (fed.rtt, fed.inflight),
            (MS * 15, 4),
            "the fast one's 8 is not counted"
        );
    }
}
