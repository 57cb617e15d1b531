//! [`Quota`]: "n per period, bursts up to b", validated.

use std::fmt;
use std::time::Duration;

use super::gcra::{Gcra, MAX_TOLERANCE};
use crate::{ConfigError, ConfigErrorKind};

/// How fast tokens refill and how many can be saved up: "`n` per `period`,
/// bursts up to `burst`".
///
/// # The formula
///
/// A quota of `n` per `period` has the **emission interval**
/// `T = period / n` in whole nanoseconds, rounded down as `Duration`'s
/// division is (at least 1 ns): `3 per second` is one token every
/// 333,333,333 ns, `Duration::from_secs(1) / 3`. So a drained bucket of
/// `per_second(3)` holds its 3 tokens again one second later, as Go's
/// `x/time/rate` and resilience4j's limiter do (rounded up, the third
/// token would come 2 ns after the period). The price is a rate above the
/// stated one by less than one part in `T` nanoseconds (3 per 10⁹ for
/// `per_second(3)`: one token more every ten years). The **burst** `B` is
/// the bucket's capacity, and the **tolerance** is `tau = B * T`.
///
/// # What burst means, exactly
///
/// `B` is the number of tokens a full bucket holds, so from a full (idle)
/// bucket exactly `B` single-token requests are admitted at the same instant;
/// the `B + 1`-th waits `T`. Burst 1 therefore means "no bursting at all:
/// evenly spaced", not "one extra". Over any window of length `t` at most
/// `B + t / T` tokens are admitted (with `t / T` rounded down).
///
/// The constructors set the burst to `n` (the whole period's worth can be
/// spent at once); change it with [`with_burst`](Quota::with_burst).
///
/// # Spacing
///
/// "At most one call every 250 ms" (Bottleneck's `minTime`, aiolimiter's
/// `(rate, period)` with no saving up) is a quota with burst 1:
///
/// ```
/// use flowguard::rate::Quota;
/// use std::time::Duration;
///
/// let spacing = Quota::with_period(1, Duration::from_millis(250))?;
/// assert_eq!(spacing.burst(), 1);
/// assert_eq!(spacing.emission_interval(), Duration::from_millis(250));
///
/// let ten_per_second_burst_five = Quota::per_second(10)?.with_burst(5)?;
/// assert_eq!(ten_per_second_burst_five.emission_interval(), Duration::from_millis(100));
/// # Ok::<(), flowguard::ConfigError>(())
/// ```
///
/// # Errors
///
/// Every constructor returns a [`ConfigError`]: field `rate` for `n == 0`,
/// `period` for a zero period or one too long (the tolerance `B * T` must stay
/// under about 73 years), `burst` for a zero burst or one that makes the
/// tolerance too long.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    t_nanos: u64,
    burst: u32,
}

const COMPONENT: &str = "quota";

impl Quota {
    /// `n` tokens per second, burst `n`.
    ///
    /// # Errors
    ///
    /// `rate` is [`ConfigErrorKind::Zero`] when `n == 0`.
    ///
    /// # Panics
    ///
    /// Never.
    pub fn per_second(n: u32) -> Result<Self, ConfigError> {
        Self::with_period(n, Duration::from_secs(1))
    }

    /// `n` tokens per minute, burst `n`.
    ///
    /// # Errors
    ///
    /// As [`per_second`](Quota::per_second).
    ///
    /// # Panics
    ///
    /// Never.
    pub fn per_minute(n: u32) -> Result<Self, ConfigError> {
        Self::with_period(n, Duration::from_secs(60))
    }

    /// `n` tokens per hour, burst `n`.
    ///
    /// # Errors
    ///
    /// As [`per_second`](Quota::per_second).
    ///
    /// # Panics
    ///
    /// Never.
    pub fn per_hour(n: u32) -> Result<Self, ConfigError> {
        Self::with_period(n, Duration::from_secs(3600))
    }

    /// `n` tokens per `period`, burst `n`.
    ///
    /// # Errors
    ///
    /// `rate` is [`ConfigErrorKind::Zero`] when `n == 0`; `period` is
    /// [`ConfigErrorKind::Zero`] when it is zero and
    /// [`ConfigErrorKind::TooLarge`] when `period` (which is the tolerance at
    /// burst `n`) exceeds about 73 years.
    ///
    /// # Panics
    ///
    /// Never.
    pub fn with_period(n: u32, period: Duration) -> Result<Self, ConfigError> {
        if n == 0 {
            return Err(ConfigError::new(
                COMPONENT,
                "rate",
                ConfigErrorKind::Zero,
                "must be at least 1 token per period, got 0",
            ));
        }
        if period.is_zero() {
            return Err(ConfigError::new(
                COMPONENT,
                "period",
                ConfigErrorKind::Zero,
                "must be longer than zero",
            ));
        }
        let nanos = period.as_nanos();
        if nanos > u128::from(MAX_TOLERANCE) {
            return Err(ConfigError::new(
                COMPONENT,
                "period",
                ConfigErrorKind::TooLarge,
                format!("must be at most {MAX_TOLERANCE} ns (about 73 years), got {period:?}"),
            ));
        }
        let nanos = nanos as u64;
        // Rounded down, as `period / n` is; at least 1 ns (a rate above one
        // token a nanosecond is held to that).
        let t_nanos = (nanos / u64::from(n)).max(1);
        // Re-checked with the rounded T (1 ns times n may exceed nanos).
        Self::from_parts(t_nanos, n, "period")
    }

    /// The same rate with burst `burst`.
    ///
    /// # Errors
    ///
    /// `burst` is [`ConfigErrorKind::Zero`] for 0 and
    /// [`ConfigErrorKind::TooLarge`] when `burst * emission_interval` exceeds
    /// about 73 years.
    ///
    /// # Panics
    ///
    /// Never.
    pub fn with_burst(self, burst: u32) -> Result<Self, ConfigError> {
        if burst == 0 {
            return Err(ConfigError::new(
                COMPONENT,
                "burst",
                ConfigErrorKind::Zero,
                "must be at least 1 (burst 1 means evenly spaced, no bursting)",
            ));
        }
        Self::from_parts(self.t_nanos, burst, "burst")
    }

    fn from_parts(t_nanos: u64, burst: u32, field: &'static str) -> Result<Self, ConfigError> {
        match t_nanos.checked_mul(u64::from(burst)) {
            Some(tau) if tau <= MAX_TOLERANCE => Ok(Self { t_nanos, burst }),
            _ => Err(ConfigError::new(
                COMPONENT,
                field,
                ConfigErrorKind::TooLarge,
                format!(
                    "burst {burst} times the emission interval {t_nanos} ns exceeds {MAX_TOLERANCE} ns (about 73 years)"
                ),
            )),
        }
    }

    /// `T`: the time one token takes to refill (`period / n` in whole
    /// nanoseconds, rounded down, at least 1 ns).
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.t_nanos)
    }

    /// `B`: how many tokens a full bucket holds.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// `tau = B * T`: how long an empty bucket takes to refill completely.
    pub fn tolerance(&self) -> Duration {
        Duration::from_nanos(self.t_nanos * u64::from(self.burst))
    }

    pub(crate) fn from_gcra(g: Gcra) -> Self {
        Self {
            t_nanos: g.t,
            burst: g.burst,
        }
    }

    pub(crate) fn gcra(&self) -> Gcra {
        Gcra {
            t: self.t_nanos,
            burst: self.burst,
        }
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quota")
            .field("emission_interval", &self.emission_interval())
            .field("burst", &self.burst)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_down_as_duration_division() {
        let q = Quota::per_second(3).unwrap();
        assert_eq!(q.emission_interval(), Duration::from_secs(1) / 3);
        assert_eq!(q.emission_interval(), Duration::from_nanos(333_333_333));
        assert_eq!(q.burst(), 3);
        // A whole period refills the whole burst.
        assert!(q.tolerance() <= Duration::from_secs(1));
        let q = Quota::with_period(2, Duration::from_secs(1)).unwrap();
        assert_eq!(q.emission_interval(), Duration::from_millis(500));
        // More than one token a nanosecond is held to one.
        let q = Quota::with_period(5, Duration::from_nanos(3)).unwrap();
        assert_eq!(q.emission_interval(), Duration::from_nanos(1));
        assert_eq!(q.burst(), 5);
    }

    #[test]
    fn errors_name_fields() {
        assert_eq!(Quota::per_second(0).unwrap_err().field(), "rate");
        assert_eq!(
            Quota::with_period(1, Duration::ZERO).unwrap_err().field(),
            "period"
        );
        let e = Quota::with_period(1, Duration::MAX).unwrap_err();
        assert_eq!((e.field(), e.kind()), ("period", ConfigErrorKind::TooLarge));
        let e = Quota::per_hour(1)
            .unwrap()
            .with_burst(u32::MAX)
            .unwrap_err();
        assert_eq!((e.field(), e.kind()), ("burst", ConfigErrorKind::TooLarge));
        assert_eq!(
            Quota::per_hour(1)
                .unwrap()
                .with_burst(0)
                .unwrap_err()
                .kind(),
            ConfigErrorKind::Zero
        );
    }
}
