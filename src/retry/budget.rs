//! The retry budget: "retries are at most `ratio` of recent first calls,
//! plus a small floor", shared by every clone (Finagle's and tower's rule).
//!
//! The core, [`BudgetCore`], is pure: time comes in as nanoseconds since the
//! budget was made. It keeps a ring of [`SLOTS`] buckets, each `ttl/SLOTS`
//! wide, of deposits (first calls) and withdrawals (retries); a bucket older
//! than `ttl` no longer counts. In integer units of [`UNIT`] per retry:
//!
//! ```text
//! balance = reserve + ratio·UNIT·(first calls in the window) − UNIT·(retries in the window)
//! reserve = min_per_sec · ttl_secs · UNIT
//! ```
//!
//! and a retry is allowed while `balance >= UNIT`. So over any `ttl`,
//! retries ≤ `ratio` × first calls + `min_per_sec` × ttl (up to one bucket's
//! worth of rounding at the window's edge), whatever the number of callers.
//! The shared layer is one mutex around the core: a budget is consulted once
//! per call and once per retry, next to a network call.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{ConfigError, ConfigErrorKind};
use crate::sync::{Arc, Mutex};

/// Buckets in the sliding window.
pub(crate) const SLOTS: usize = 10;
/// Balance units one retry costs.
pub(crate) const UNIT: i64 = 1000;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Absolute bucket number (`now / width`) this slot holds.
    epoch: u64,
    deposits: u64,
    withdrawals: u64,
}

/// The budget's arithmetic over injected time.
#[derive(Debug, Clone)]
pub(crate) struct BudgetCore {
    slots: [Slot; SLOTS],
    width_nanos: u64,
    deposit_units: i64,
    reserve_units: i64,
}

impl BudgetCore {
    /// `ratio` in `[0, 1000]`, `ttl` at least `SLOTS` ns (checked by the builder).
    pub(crate) fn new(ratio: f64, min_per_sec: u32, ttl: Duration) -> Self {
        let ttl_nanos = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
        let reserve = u128::from(min_per_sec) * ttl.as_nanos() * UNIT as u128 / 1_000_000_000;
        Self {
            slots: [Slot::default(); SLOTS],
            width_nanos: (ttl_nanos / SLOTS as u64).max(1),
            deposit_units: (ratio * UNIT as f64).round() as i64,
            reserve_units: i64::try_from(reserve).unwrap_or(i64::MAX / 2),
        }
    }

    fn slot(&mut self, now_nanos: u64) -> &mut Slot {
        let epoch = now_nanos / self.width_nanos;
        let s = &mut self.slots[(epoch % SLOTS as u64) as usize];
        if s.epoch != epoch {
            *s = Slot {
                epoch,
                ..Slot::default()
            };
        }
        s
    }

    /// Counts a first call.
    pub(crate) fn deposit(&mut self, now_nanos: u64) {
        let s = self.slot(now_nanos);
        s.deposits = s.deposits.saturating_add(1);
    }

    /// What is left, in `UNIT`s per retry (may be negative once deposits
    /// age out before the retries they paid for).
    pub(crate) fn balance(&self, now_nanos: u64) -> i64 {
        let epoch = now_nanos / self.width_nanos;
        let oldest = epoch.saturating_sub(SLOTS as u64 - 1);
        let (mut dep, mut wd) = (0i64, 0i64);
        for s in &self.slots {
            if s.epoch >= oldest && s.epoch <= epoch {
                dep = dep.saturating_add(s.deposits.min(i64::MAX as u64) as i64);
                wd = wd.saturating_add(s.withdrawals.min(i64::MAX as u64) as i64);
            }
        }
        self.reserve_units
            .saturating_add(dep.saturating_mul(self.deposit_units))
            .saturating_sub(wd.saturating_mul(UNIT))
    }

    /// Takes one retry's worth if the balance allows it.
    pub(crate) fn try_withdraw(&mut self, now_nanos: u64) -> bool {
        if self.balance(now_nanos) < UNIT {
            return false;
        }
        let s = self.slot(now_nanos);
        s.withdrawals = s.withdrawals.saturating_add(1);
        true
    }
}

/// A budget of retries shared by every [`Retry`](super::Retry) given it (and
/// by clones): retries stay below a ratio of recent first calls plus a
/// small floor per second, so a dead dependency sees at most
/// `1 + ratio` times its normal load instead of `1 + max_retries` times.
///
/// # Examples
///
/// ```
/// use flowguard::retry::RetryBudget;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // 10 % of first calls, no floor.
/// let budget = RetryBudget::builder()
///     .ratio(0.1)
///     .min_per_sec(0)
///     .ttl(Duration::from_secs(10))
///     .build()
///     .unwrap();
/// for _ in 0..20 {
///     budget.deposit(); // 20 first calls…
/// }
/// assert!(budget.try_withdraw()); // …pay for 2 retries
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw());
/// # }
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<BudgetInner>,
}

struct BudgetInner {
    core: Mutex<BudgetCore>,
    origin: Instant,
    ratio: f64,
    min_per_sec: u32,
    ttl: Duration,
}

/// Configures a [`RetryBudget`]. Defaults (tower's and Finagle's): `ratio`
/// 0.2, `min_per_sec` 10, `ttl` 10 s.
///
/// # Examples
///
/// ```
/// use flowguard::retry::RetryBudget;
/// let err = RetryBudget::builder().ratio(-1.0).build().unwrap_err();
/// assert_eq!(err.field(), "ratio");
/// ```
#[derive(Debug, Clone)]
pub struct RetryBudgetBuilder {
    ratio: f64,
    min_per_sec: u32,
    ttl: Duration,
}

impl RetryBudgetBuilder {
    /// Retries allowed per first call, on average over `ttl` (0 to 1000).
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries allowed per second whatever the traffic, so that a service
    /// with few calls can still retry.
    pub fn min_per_sec(mut self, n: u32) -> Self {
        self.min_per_sec = n;
        self
    }

    /// How long a first call keeps paying for retries (1 ms to 1 hour).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Validates and creates the budget.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `ratio` (negative, above 1000 or not a
    /// number) or `ttl` (zero, under 1 ms, or over 1 hour).
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        if !(0.0..=1000.0).contains(&self.ratio) {
            let kind = if self.ratio > 1000.0 {
                ConfigErrorKind::TooLarge
            } else {
                ConfigErrorKind::TooSmall
            };
            return Err(ConfigError::new(
                "retry_budget",
                "ratio",
                kind,
                format!("must be between 0 and 1000, got {}", self.ratio),
            ));
        }
        if self.ttl.is_zero() {
            return Err(ConfigError::new(
                "retry_budget",
                "ttl",
                ConfigErrorKind::Zero,
                "must be positive",
            ));
        }
        if self.ttl < Duration::from_millis(1) || self.ttl > Duration::from_secs(3600) {
            let kind = if self.ttl > Duration::from_secs(3600) {
                ConfigErrorKind::TooLarge
            } else {
                ConfigErrorKind::TooSmall
            };
            return Err(ConfigError::new(
                "retry_budget",
                "ttl",
                kind,
                format!("must be between 1 ms and 1 hour, got {:?}", self.ttl),
            ));
        }
        Ok(RetryBudget {
            inner: Arc::new(BudgetInner {
                core: Mutex::new(BudgetCore::new(self.ratio, self.min_per_sec, self.ttl)),
                origin: Instant::now(),
                ratio: self.ratio,
                min_per_sec: self.min_per_sec,
                ttl: self.ttl,
            }),
        })
    }
}

impl RetryBudget {
    /// A builder with the defaults listed on [`RetryBudgetBuilder`].
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder {
            ratio: 0.2,
            min_per_sec: 10,
            ttl: Duration::from_secs(10),
        }
    }

    fn now(&self) -> u64 {
        let d = Instant::now().saturating_duration_since(self.inner.origin);
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records a first call (a [`Retry`](super::Retry) does this itself).
    pub fn deposit(&self) {
        let now = self.now();
        self.inner.core.lock().deposit(now);
    }

    /// Takes one retry from the budget; `false` when it is spent (a
    /// [`Retry`](super::Retry) does this before each retry).
    pub fn try_withdraw(&self) -> bool {
        let now = self.now();
        self.inner.core.lock().try_withdraw(now)
    }

    /// How many retries the budget would allow right now.
    pub fn remaining(&self) -> u64 {
        let now = self.now();
        let b = self.inner.core.lock().balance(now);
        u64::try_from(b / UNIT).unwrap_or(0)
    }

    /// Whether `self` and `other` are clones of one budget.
    pub fn same_budget(&self, other: &RetryBudget) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.inner.ratio)
            .field("min_per_sec", &self.inner.min_per_sec)
            .field("ttl", &self.inner.ttl)
            .field("remaining", &self.remaining())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn ratio_of_deposits_plus_reserve() {
        let mut b = BudgetCore::new(0.5, 1, Duration::from_secs(10));
        // Reserve: 1/s × 10 s = 10 retries.
        assert_eq!(b.balance(0), 10 * UNIT);
        for _ in 0..4 {
            b.deposit(0);
        }
        assert_eq!(b.balance(0), 12 * UNIT);
        let taken = (0..100).filter(|_| b.try_withdraw(0)).count();
        assert_eq!(taken, 12);
        assert!(!b.try_withdraw(0));
    }

    #[test]
    fn old_buckets_age_out() {
        let mut b = BudgetCore::new(1.0, 0, Duration::from_secs(10));
        b.deposit(0);
        assert_eq!(b.balance(9 * SEC), UNIT, "still inside the window");
        assert_eq!(b.balance(10 * SEC), 0, "one ttl later it no longer pays");
        assert!(!b.try_withdraw(10 * SEC));
        // Withdrawals age out too, giving the reserve back.
        let mut r = BudgetCore::new(0.0, 1, Duration::from_secs(10));
        assert_eq!((0..20).filter(|_| r.try_withdraw(0)).count(), 10);
        assert!(!r.try_withdraw(5 * SEC));
        assert!(r.try_withdraw(10 * SEC));
    }

    #[test]
    fn a_slot_reused_for_a_later_epoch_starts_empty() {
        let mut b = BudgetCore::new(1.0, 0, Duration::from_secs(10));
        b.deposit(0);
        b.deposit(10 * SEC); // same ring slot, next lap
        assert_eq!(b.balance(10 * SEC), UNIT);
    }

    #[test]
    fn zero_ratio_and_floor_never_retries() {
        let mut b = BudgetCore::new(0.0, 0, Duration::from_secs(1));
        for t in 0..100 {
            b.deposit(t);
        }
        assert!(!b.try_withdraw(100));
    }
}
