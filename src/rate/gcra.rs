//! The GCRA core: pure arithmetic on one "theoretical arrival time" (TAT).
//!
//! Time is a `u64` count of nanoseconds since the limiter's origin and comes
//! in as an argument; nothing here reads a clock, locks or allocates. Proptest
//! and the fuzz target drive this file (through the public API) against a token
//! bucket in exact rational arithmetic.
//!
//! With emission interval `T` (nanoseconds per token) and burst `B`, the
//! tolerance is `tau = B * T`. The bucket is described by `tat`:
//!
//! * tokens available at `now` = `(tau - max(0, tat - now)) / T` (a rational
//!   number in `[0, B]`); `tat <= now` means a full bucket;
//! * taking `n` tokens at `now` is allowed iff
//!   `max(tat, now) + n * T - now <= tau`, and then `tat' = max(tat, now) + n * T`;
//! * when refused, the earliest instant it is allowed is exactly
//!   `tat + n * T - tau` (it is refused one nanosecond before).
//!
//! This is the same rule as a token bucket of capacity `B` refilled with one
//! token every `T`, with fractional tokens kept exactly.

/// Largest time (nanoseconds since origin) the core works with. Times beyond
/// it saturate; together with `MAX_TOLERANCE` it keeps every TAT below 2^62,
/// leaving the state word's two top bits free for flags.
pub(crate) const MAX_NOW: u64 = (1 << 61) - 1;
/// Largest `tau = burst * T` a quota may have (about 73 years).
pub(crate) const MAX_TOLERANCE: u64 = 1 << 61;

/// The highest TAT [`Gcra::force_one`] leaves: past every TAT a take
/// makes (`MAX_NOW + MAX_TOLERANCE`), and low enough that adding a cost of
/// at most `MAX_TOLERANCE` cannot overflow. Above 2^62, so only for a TAT
/// held alone (the per-service bucket), never in a flagged state word.
pub(crate) const MAX_DEBT: u64 = MAX_NOW + 2 * MAX_TOLERANCE;

/// How late Tokio's timer may wake a waiter whose tokens are ready (its
/// 1 ms resolution): the most a waiter woken by it is back-dated by
/// [`Gcra::charge_at`].
pub(crate) const TIMER_SLACK_NANOS: u64 = 1_000_000;

/// The two numbers a quota boils down to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Emission interval `T`: nanoseconds per token (>= 1).
    pub(crate) t: u64,
    /// Burst `B` (>= 1); `tau = B * T <= MAX_TOLERANCE`.
    pub(crate) burst: u32,
}

/// Why `n` tokens cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not now; allowed at this time (nanoseconds since origin).
    NotUntil(u64),
    /// Never: `n` exceeds the burst.
    Insufficient,
}

impl Gcra {
    /// Tolerance `tau = B * T`.
    #[inline]
    pub(crate) fn tau(&self) -> u64 {
        self.t * u64::from(self.burst)
    }

    /// Tries to take `n` tokens at `now` from the bucket described by `tat`.
    /// Returns the new TAT on success.
    #[inline]
    pub(crate) fn take(&self, tat: u64, now: u64, n: u32) -> Result<u64, Refusal> {
        if n > self.burst {
            return Err(Refusal::Insufficient);
        }
        let now = now.min(MAX_NOW);
        let cost = self.t * u64::from(n);
        let tau = self.tau();
        let base = tat.max(now);
        let new_tat = base + cost;
        if new_tat - now <= tau {
            Ok(new_tat)
        } else {
            // tat > now here (base == now would give cost <= tau).
            Err(Refusal::NotUntil(new_tat - tau))
        }
    }

    /// [`take`](Self::take) of one token, which never exceeds the burst
    /// (at least 1): the new TAT, or the instant the token is due.
    #[inline]
    pub(crate) fn take_one(&self, tat: u64, now: u64) -> Result<u64, u64> {
        let now = now.min(MAX_NOW);
        let tau = self.tau();
        let new_tat = tat.max(now) + self.t;
        if new_tat - now <= tau {
            Ok(new_tat)
        } else {
            Err(new_tat - tau)
        }
    }

    /// Charges one token at `now` whether or not the bucket holds it: a
    /// debt the following takes wait out. Capped at [`MAX_DEBT`], so that
    /// [`take`](Self::take)'s arithmetic stays in range however many are
    /// forced.
    #[inline]
    pub(crate) fn force_one(&self, tat: u64, now: u64) -> u64 {
        tat.max(now.min(MAX_NOW))
            .saturating_add(self.t)
            .min(MAX_DEBT)
    }

    /// The instant to take `n` tokens as for a waiter woken (by a timer)
    /// at `now`: the exact instant they became ready when that passed at
    /// most `slack` ago, else `now`. A waiter charged at its wake-up would
    /// lose the refill a full bucket could not hold between the two (a
    /// burst-1 quota of one token every 1.5 ms, woken on a 1 ms timer, ran
    /// at one every 2 ms); charged at its ready instant it keeps the
    /// quota's rate, as Go's reservations do. `take` at the returned
    /// instant succeeds whenever it would at `now`.
    #[inline]
    pub(crate) fn charge_at(&self, tat: u64, now: u64, n: u32, slack: u64) -> u64 {
        let ready = tat
            .saturating_add(self.t.saturating_mul(u64::from(n)))
            .saturating_sub(self.tau());
        if ready <= now {
            ready.max(now.saturating_sub(slack))
        } else {
            now
        }
    }

    /// The instant (ns since origin) at which `n <= burst` tokens will be
    /// available, assuming nothing else is taken: `now` if they are already.
    #[inline]
    pub(crate) fn ready_at(&self, tat: u64, now: u64, n: u64) -> u64 {
        let now = now.min(MAX_NOW);
        let at = tat
            .saturating_add(self.t.saturating_mul(n))
            .saturating_sub(self.tau());
        at.max(now)
    }

    /// Gives `n` tokens back at `now`, never beyond a full bucket.
    #[inline]
    pub(crate) fn refund(&self, tat: u64, now: u64, n: u32) -> u64 {
        let now = now.min(MAX_NOW);
        if tat <= now {
            return tat;
        }
        tat.saturating_sub(self.t.saturating_mul(u64::from(n)))
            .max(now)
    }

    /// Whole tokens available at `now`, and when the next whole token
    /// arrives (`None` when the bucket is full).
    pub(crate) fn available(&self, tat: u64, now: u64) -> (u32, Option<u64>) {
        let now = now.min(MAX_NOW);
        let debt = tat.saturating_sub(now);
        let credit = self.tau() - debt.min(self.tau());
        let whole = credit / self.t;
        if whole >= u64::from(self.burst) {
            (self.burst, None)
        } else {
            // The (whole + 1)-th token is complete when credit reaches
            // (whole + 1) * T; credit grows one per nanosecond from
            // tat - tau on, so that is at tat - tau + (whole + 1) * T (the
            // same as now + the missing credit while the debt is at most
            // tau, and right for the deeper debt a forced take leaves).
            // Below 2^64: tat <= MAX_DEBT, (whole + 1) * T <= 2 * tau.
            (whole as u32, Some(tat + (whole + 1) * self.t - self.tau()))
        }
    }

    /// Whether a bucket with this TAT is full at `now` (an idle key).
    #[inline]
    pub(crate) fn is_full(tat: u64, now: u64) -> bool {
        tat <= now.min(MAX_NOW)
    }

    /// Re-expresses the bucket `tat` (under `self`) under quota `new`, at `now`.
    ///
    /// The available credit carries over, measured in tokens, including the
    /// fraction of a token already refilled; it is capped at the new burst.
    /// The new debt is what the new burst lacks of that credit, so the debt
    /// (`burst - available`) itself carries over only when the burst does
    /// not change. Rounded towards less credit.
    ///
    /// Exact conversions return `tat` itself: the same quota, a debt that
    /// scales to a whole number of nanoseconds, or a full bucket that stays
    /// full (any `tat <= now` means full, so it is left as it was).
    pub(crate) fn convert(&self, new: &Gcra, tat: u64, now: u64) -> u64 {
        if self == new {
            return tat;
        }
        let now = now.min(MAX_NOW);
        let debt = u128::from(tat.saturating_sub(now).min(self.tau()));
        // missing tokens (rational) = debt / T_old.
        // new available = min(B_old - debt/T_old, B_new)
        // new debt = (B_new - new available) * T_new
        //          = max(0, (B_new - B_old) * T_new + debt * T_new / T_old)
        let t_old = i128::from(self.t);
        let t_new = i128::from(new.t);
        let num =
            (i128::from(new.burst) - i128::from(self.burst)) * t_new * t_old + debt as i128 * t_new;
        let new_debt = if num <= 0 {
            0
        } else {
            // ceil(num / t_old)
            ((num + t_old - 1) / t_old) as u64
        };
        if new_debt == 0 && Self::is_full(tat, now) {
            return tat;
        }
        now + new_debt.min(new.tau())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn g(t: u64, burst: u32) -> Gcra {
        Gcra { t, burst }
    }

    #[test]
    fn take_one_is_take_of_one_token() {
        // Burst 3, T = 10 (tau 30), against `take` over a grid of states.
        let q = g(10, 3);
        for tat in [0, 5, 10, 29, 30, 31, 40, 100] {
            for now in [0, 1, 9, 10, 11, 50, 99, 100, MAX_NOW, u64::MAX] {
                let want = q.take(tat, now, 1).map_err(|r| match r {
                    Refusal::NotUntil(at) => at,
                    Refusal::Insufficient => unreachable!(),
                });
                assert_eq!(q.take_one(tat, now), want, "tat {tat} now {now}");
            }
        }
        // Exactly at the boundary: tat - now + T == tau is allowed.
        assert_eq!(q.take_one(20, 0), Ok(30));
        assert_eq!(q.take_one(21, 0), Err(1));
    }

    #[test]
    fn force_one_charges_past_an_empty_bucket_and_caps_the_debt() {
        let q = g(10, 2);
        // A full bucket: charged from now.
        assert_eq!(q.force_one(0, 50), 60);
        // An empty one: the debt grows one T per forced token.
        assert_eq!(q.force_one(70, 50), 80);
        assert_eq!(q.take_one(80, 50), Err(70));
        // Capped, whatever the cost or the clock.
        let big = g(MAX_TOLERANCE, 1);
        let mut tat = 0;
        for _ in 0..8 {
            tat = big.force_one(tat, u64::MAX);
        }
        assert_eq!(tat, MAX_DEBT);
        // And a take after the cap neither overflows nor succeeds.
        assert_eq!(big.take_one(tat, MAX_NOW), Err(MAX_DEBT));
        assert_eq!(big.take(tat, 0, 1), Err(Refusal::NotUntil(MAX_DEBT)));
        assert_eq!(big.available(tat, 0), (0, Some(MAX_DEBT)));
    }

    #[test]
    fn charge_at_back_dates_to_the_ready_instant_within_the_slack() {
        // Burst 1, T = 1500: after a take at 0, tat = 1500; ready at 1500.
        let q = g(1500, 1);
        // Not ready yet: now.
        assert_eq!(q.charge_at(1500, 1499, 1, 1000), 1499);
        // Exactly ready: now.
        assert_eq!(q.charge_at(1500, 1500, 1, 1000), 1500);
        // Woken late by less than the slack: the ready instant.
        assert_eq!(q.charge_at(1500, 2000, 1, 1000), 1500);
        assert_eq!(q.charge_at(1500, 2500, 1, 1000), 1500);
        // Later than the slack: at most the slack back.
        assert_eq!(q.charge_at(1500, 2501, 1, 1000), 1501);
        // No slack: now.
        assert_eq!(q.charge_at(1500, 2000, 1, 0), 2000);
        // n tokens of a burst 4 at T = 10 (tau 40): ready at tat + 10n - 40.
        let q = g(10, 4);
        assert_eq!(q.charge_at(100, 95, 3, 50), 90);
        assert_eq!(q.charge_at(100, 89, 3, 50), 89);
        // The take at the charged instant succeeds, and keeps the rate.
        assert_eq!(g(1500, 1).take(1500, 1500, 1), Ok(3000));
        // Saturating: nothing overflows at the extremes.
        assert_eq!(g(u64::MAX / 2, 1).charge_at(u64::MAX, 5, 2, 1), 5);
    }

    #[test]
    fn full_bucket_admits_exactly_burst_at_once() {
        let q = g(100, 3);
        let mut tat = 0;
        for _ in 0..3 {
            tat = q.take(tat, 1000, 1).unwrap();
        }
        assert_eq!(q.take(tat, 1000, 1), Err(Refusal::NotUntil(1100)));
        assert!(q.take(tat, 1099, 1).is_err());
        assert_eq!(q.take(tat, 1100, 1), Ok(1400));
    }

    #[test]
    fn more_than_burst_is_never_possible() {
        let q = g(100, 3);
        assert_eq!(q.take(0, 10_000, 4), Err(Refusal::Insufficient));
        assert_eq!(q.take(0, 10_000, 3), Ok(10_300));
    }

    #[test]
    fn zero_tokens_always_pass() {
        let q = g(100, 1);
        let tat = q.take(0, 0, 1).unwrap();
        assert_eq!(q.take(tat, 0, 0), Ok(tat));
    }

    #[test]
    fn retry_after_for_many_tokens_is_exact() {
        let q = g(10, 5);
        let tat = q.take(0, 0, 5).unwrap(); // empty at 0, tat 50
        assert_eq!(q.take(tat, 0, 3), Err(Refusal::NotUntil(30)));
        assert!(q.take(tat, 29, 3).is_err());
        assert_eq!(q.take(tat, 30, 3), Ok(80));
        assert_eq!(q.ready_at(tat, 0, 3), 30);
        assert_eq!(q.ready_at(tat, 40, 3), 40);
    }

    #[test]
    fn refund_caps_at_full() {
        let q = g(10, 5);
        let tat = q.take(0, 100, 2).unwrap(); // 120
        assert_eq!(q.refund(tat, 100, 1), 110);
        assert_eq!(q.refund(tat, 100, 9), 100);
        assert_eq!(q.refund(50, 100, 1), 50);
    }

    #[test]
    fn available_and_next_token() {
        let q = g(10, 4);
        assert_eq!(q.available(0, 100), (4, None));
        let tat = q.take(0, 100, 4).unwrap(); // 140
        assert_eq!(q.available(tat, 100), (0, Some(110)));
        assert_eq!(q.available(tat, 105), (0, Some(110)));
        assert_eq!(q.available(tat, 110), (1, Some(120)));
        assert_eq!(q.available(tat, 140), (4, None));
    }

    #[test]
    fn convert_keeps_available_tokens() {
        let old = g(10, 4);
        let new = g(20, 8);
        // 2 tokens missing of 4 -> 2 available -> under burst 8: 6 missing * 20.
        assert_eq!(old.convert(&new, 120, 100), 100 + 120);
        // a full bucket keeps its 4 tokens, then refills to the new burst 8
        assert_eq!(old.convert(&new, 50, 100), 180);
        // shrinking the burst caps credit: 4 available, new burst 2 -> full
        assert_eq!(old.convert(&g(10, 2), 100, 100), 100);
        // a half-refilled token keeps its fraction: 1.5 missing at T=10 -> 1.5 * 30
        assert_eq!(old.convert(&g(30, 4), 115, 100), 145);
    }

    #[test]
    fn exact_conversions_return_the_tat_itself() {
        let q = g(10, 4);
        // the same quota: the identity, whatever the bucket holds
        for tat in [0, 50, 100, 120, 140] {
            assert_eq!(q.convert(&q, tat, 100), tat);
        }
        // 2 available of 4 at T=10 is 1 missing of 3 at T=20: 20 ns either way
        assert_eq!(q.convert(&g(20, 3), 120, 100), 120);
        assert_eq!(g(20, 3).convert(&q, 120, 100), 120);
        // a full bucket stays as it was (any tat <= now is full)
        assert_eq!(q.convert(&g(7, 2), 50, 100), 50);
        assert_eq!(q.convert(&g(7, 4), 100, 100), 100);
        // a round trip through a multiple of T is exact
        let slow = g(30, 4);
        assert_eq!(slow.convert(&q, q.convert(&slow, 117, 100), 100), 117);
    }

    #[test]
    fn huge_times_saturate_without_overflow() {
        let q = g(MAX_TOLERANCE, 1);
        let tat = q.take(0, u64::MAX, 1).unwrap();
        assert!(tat < 1 << 62);
        assert!(q.take(tat, u64::MAX, 1).is_err());
        let _ = q.ready_at(tat, u64::MAX, 1);
        let _ = q.available(tat, u64::MAX);
        let _ = q.refund(tat, u64::MAX, u32::MAX);
    }
}
