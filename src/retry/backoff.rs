//! The retry delay schedule: a pure core (no clock, no runtime).
//!
//! Retry `n` (1 for the first retry) waits
//!
//! | backoff | delay before jitter |
//! |---|---|
//! | `Constant(d)` | `d` |
//! | `Linear { base, step }` | `base + step·(n−1)` |
//! | `Exponential { base, factor }` | `base · factor^(n−1)` |
//!
//! capped at `max_delay`, then jittered as in the AWS Architecture Blog's
//! "Exponential Backoff And Jitter" (with `temp` the capped delay above and
//! `rand(a, b)` uniform on `[a, b]`):
//!
//! | jitter | sleep |
//! |---|---|
//! | `None` | `temp` |
//! | `Full` | `rand(0, temp)` |
//! | `Equal` | `temp/2 + rand(0, temp/2)` |
//! | `Decorrelated` | `min(max_delay, rand(base, 3·previous sleep))`, the previous sleep starting at `base` |
//!
//! where `base` is the un-jittered first delay. Decorrelated jitter ignores
//! the backoff's growth rule: it grows by its own (on average ×1.5 a step).

use std::time::Duration;

use crate::rng::SplitMix64;

/// How the delay grows from one retry to the next (before jitter).
///
/// # Examples
///
/// ```
/// use flowguard::retry::Backoff;
/// use std::time::Duration;
///
/// let b = Backoff::exponential(Duration::from_secs(2), 2.0);
/// assert_eq!(b.delay(1), Duration::from_secs(2));
/// assert_eq!(b.delay(3), Duration::from_secs(8));
/// assert_eq!(Backoff::linear(Duration::from_millis(100)).delay(3), Duration::from_millis(300));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// The same delay before every retry.
    Constant(Duration),
    /// `base` before the first retry, `step` more before each later one.
    Linear {
        /// Delay before the first retry.
        base: Duration,
        /// Added for each later retry.
        step: Duration,
    },
    /// `base` before the first retry, multiplied by `factor` for each later
    /// one (`factor >= 1`, checked by the builder).
    Exponential {
        /// Delay before the first retry.
        base: Duration,
        /// Growth per retry.
        factor: f64,
    },
}

impl Backoff {
    /// `Constant(delay)`.
    pub fn constant(delay: Duration) -> Self {
        Self::Constant(delay)
    }

    /// `Linear { base, step: base }`: `base`, `2·base`, `3·base`, … (Polly's linear).
    pub fn linear(base: Duration) -> Self {
        Self::Linear { base, step: base }
    }

    /// `Exponential { base, factor }`: `base`, `base·factor`, `base·factor²`, …
    pub fn exponential(base: Duration, factor: f64) -> Self {
        Self::Exponential { base, factor }
    }

    /// The delay before retry `n` (1-based; 0 is read as 1), before the cap
    /// and jitter. Saturates at `Duration::MAX`; never panics.
    pub fn delay(&self, n: u32) -> Duration {
        let k = n.max(1) - 1;
        match *self {
            Self::Constant(d) => d,
            Self::Linear { base, step } => step
                .checked_mul(k)
                .and_then(|s| base.checked_add(s))
                .unwrap_or(Duration::MAX),
            Self::Exponential { base, factor } => {
                let secs = base.as_secs_f64() * factor.powi(k.min(i32::MAX as u32) as i32);
                Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
            }
        }
    }

    /// The first delay, `base` of the jitter formulas.
    pub(crate) fn base(&self) -> Duration {
        self.delay(1)
    }
}

/// How each delay is randomised, to keep many callers from retrying in
/// lock-step (see the module table for the formulas).
///
/// # Examples
///
/// ```
/// use flowguard::retry::{Backoff, Jitter, Retry};
/// use std::time::Duration;
///
/// let retry = Retry::<(), ()>::builder()
///     .backoff(Backoff::exponential(Duration::from_millis(100), 2.0))
///     .jitter(Jitter::Full)
///     .seed(7) // reproducible delays, for tests
///     .build()
///     .unwrap();
/// # let _ = retry;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// No randomness: the backoff's delays exactly.
    #[default]
    None,
    /// Anywhere from zero to the delay (AWS "full jitter"): the most spread.
    Full,
    /// At least half the delay, plus up to the other half at random.
    Equal,
    /// Each sleep drawn from `[base, 3 × previous sleep]`, capped.
    Decorrelated,
}

/// A delay schedule for one call: the backoff, the cap, the jitter and the
/// random state, advanced one retry at a time.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    backoff: Backoff,
    jitter: Jitter,
    max_delay: Duration,
    rng: SplitMix64,
    previous: Duration,
}

impl Schedule {
    pub(crate) fn new(backoff: Backoff, jitter: Jitter, max_delay: Duration, seed: u64) -> Self {
        Self {
            backoff,
            jitter,
            max_delay,
            rng: SplitMix64::new(seed),
            previous: backoff.base().min(max_delay),
        }
    }

    /// The sleep before retry `n` (1-based). Call once per retry, in order:
    /// decorrelated jitter depends on the previous sleep.
    pub(crate) fn delay(&mut self, n: u32) -> Duration {
        let temp = self.backoff.delay(n).min(self.max_delay);
        let sleep = match self.jitter {
            Jitter::None => temp,
            Jitter::Full => self.uniform(Duration::ZERO, temp),
            Jitter::Equal => {
                let half = temp / 2;
                half + self.uniform(Duration::ZERO, temp - half)
            }
            Jitter::Decorrelated => {
                let base = self.backoff.base().min(self.max_delay);
                let hi = self.previous.saturating_mul(3);
                self.uniform(base, hi).min(self.max_delay)
            }
        };
        self.previous = sleep;
        sleep
    }

    fn uniform(&mut self, lo: Duration, hi: Duration) -> Duration {
        let lo_ns = nanos(lo);
        let hi_ns = nanos(hi);
        Duration::from_nanos(self.rng.between(lo_ns, hi_ns))
    }
}

/// Nanoseconds, saturating at `u64::MAX` (about 584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn delays(mut s: Schedule, n: u32) -> Vec<Duration> {
        (1..=n).map(|i| s.delay(i)).collect()
    }

    #[test]
    fn backoff_growth_rules() {
        assert_eq!(Backoff::constant(5 * MS).delay(9), 5 * MS);
        let lin = Backoff::Linear {
            base: 10 * MS,
            step: 3 * MS,
        };
        assert_eq!(
            [lin.delay(1), lin.delay(2), lin.delay(4)],
            [10 * MS, 13 * MS, 19 * MS]
        );
        let exp = Backoff::exponential(100 * MS, 2.0);
        assert_eq!(exp.delay(0), 100 * MS);
        assert_eq!(
            [exp.delay(1), exp.delay(2), exp.delay(5)],
            [100 * MS, 200 * MS, 1600 * MS]
        );
        assert_eq!(
            Backoff::exponential(MS, 1.5).delay(3),
            Duration::from_micros(2250)
        );
    }

    #[test]
    fn huge_values_saturate_instead_of_panicking() {
        assert_eq!(
            Backoff::exponential(MS, 10.0).delay(u32::MAX),
            Duration::MAX
        );
        assert_eq!(Backoff::linear(Duration::MAX).delay(3), Duration::MAX);
        let s = Schedule::new(
            Backoff::exponential(MS, 10.0),
            Jitter::Full,
            Duration::MAX,
            1,
        );
        for d in delays(s, 64) {
            assert!(d <= Duration::MAX);
        }
    }

    #[test]
    fn cap_applies_before_jitter() {
        let s = Schedule::new(
            Backoff::exponential(100 * MS, 2.0),
            Jitter::None,
            350 * MS,
            0,
        );
        assert_eq!(delays(s, 4), [100 * MS, 200 * MS, 350 * MS, 350 * MS]);
    }

    #[test]
    fn full_and_equal_jitter_bounds() {
        let full = Schedule::new(Backoff::constant(100 * MS), Jitter::Full, Duration::MAX, 3);
        let equal = Schedule::new(Backoff::constant(100 * MS), Jitter::Equal, Duration::MAX, 3);
        let f = delays(full, 500);
        let e = delays(equal, 500);
        assert!(f.iter().all(|d| *d <= 100 * MS));
        assert!(
            f.iter().any(|d| *d < 10 * MS),
            "full jitter reaches near zero"
        );
        assert!(e.iter().all(|d| *d >= 50 * MS && *d <= 100 * MS));
        assert!(e.iter().any(|d| *d < 55 * MS) && e.iter().any(|d| *d > 95 * MS));
    }

    #[test]
    fn decorrelated_jitter_bounds() {
        let base = 10 * MS;
        let cap = 2000 * MS;
        let mut s = Schedule::new(Backoff::constant(base), Jitter::Decorrelated, cap, 11);
        let mut prev = base;
        for i in 1..200 {
            let d = s.delay(i);
            assert!(
                d >= base && d <= (prev * 3).min(cap),
                "{d:?} after {prev:?}"
            );
            prev = d;
        }
    }

    #[test]
    fn seeded_schedules_repeat() {
        let mk = |seed| Schedule::new(Backoff::exponential(MS, 2.0), Jitter::Full, 1000 * MS, seed);
        assert_eq!(delays(mk(5), 10), delays(mk(5), 10));
        assert_ne!(delays(mk(5), 10), delays(mk(6), 10));
    }
}
