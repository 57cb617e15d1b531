//! Model checker for `flowguard::retry`, shared by `tests/prop_retry.rs`
//! (proptest) and `fuzz/fuzz_targets/retry.rs` (libfuzzer).
//!
//! Two checks, each run on a paused current-thread Tokio runtime:
//!
//! * `check_schedule`: a `Retry` whose every attempt fails, against a
//!   reference that computes the backoff formulas directly (in `f64`
//!   seconds, with no code shared with the crate). Without jitter the
//!   attempt instants must match the reference exactly, deadline and margin
//!   included; with jitter each delay must lie within its jitter's bounds.
//! * `check_budget`: a `RetryBudget` driven by deposits, withdrawals and
//!   clock advances, against a naive event list (every deposit and
//!   withdrawal kept with its time, the window recomputed from scratch).
#![allow(dead_code)]

use std::sync::Mutex;
use std::time::Duration;

use flowguard::retry::{Backoff, Jitter, Retry, RetryBudget, RetryError};
use tokio::time::Instant;

/// What a schedule check is given.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScheduleCase {
    /// 0 constant, 1 linear, 2 exponential.
    pub(crate) kind: u8,
    pub(crate) base_ms: u16,
    pub(crate) step_ms: u16,
    /// Exponential factor in tenths, 10..=40 (1.0 to 4.0).
    pub(crate) factor_tenths: u8,
    pub(crate) max_delay_ms: u32,
    /// 0 none, 1 full, 2 equal, 3 decorrelated.
    pub(crate) jitter: u8,
    pub(crate) max_retries: u8,
    /// Overall timeout in ms (0: none).
    pub(crate) timeout_ms: u32,
    pub(crate) margin_ms: u16,
    pub(crate) seed: u64,
}

impl ScheduleCase {
    pub(crate) fn from_bytes(b: &[u8]) -> Self {
        let g = |i: usize| b.get(i).copied().unwrap_or(0);
        let w = |i: usize| u16::from_le_bytes([g(i), g(i + 1)]);
        Self {
            kind: g(0) % 3,
            base_ms: w(1) % 2000,
            step_ms: w(3) % 2000,
            factor_tenths: 10 + g(5) % 31,
            max_delay_ms: 1 + u32::from(w(6)) * 4,
            jitter: g(8) % 4,
            max_retries: g(9) % 12,
            timeout_ms: if g(10) % 2 == 0 {
                0
            } else {
                1 + u32::from(w(11))
            },
            margin_ms: w(13) % 500,
            seed: u64::from_le_bytes(std::array::from_fn(|i| g(15 + i))),
        }
    }

    fn backoff(&self) -> Backoff {
        let base = Duration::from_millis(self.base_ms.into());
        match self.kind {
            0 => Backoff::constant(base),
            1 => Backoff::Linear {
                base,
                step: Duration::from_millis(self.step_ms.into()),
            },
            _ => Backoff::exponential(base, f64::from(self.factor_tenths) / 10.0),
        }
    }

    fn jitter(&self) -> Jitter {
        match self.jitter {
            0 => Jitter::None,
            1 => Jitter::Full,
            2 => Jitter::Equal,
            _ => Jitter::Decorrelated,
        }
    }

    /// Reference delay before retry `n` (1-based), before jitter, capped.
    fn temp(&self, n: u32) -> Duration {
        let base = f64::from(self.base_ms) / 1000.0;
        let k = f64::from(n - 1);
        let secs = match self.kind {
            0 => base,
            1 => base + k * f64::from(self.step_ms) / 1000.0,
            _ => base * (f64::from(self.factor_tenths) / 10.0).powf(k),
        };
        let cap = Duration::from_millis(self.max_delay_ms.into());
        Duration::try_from_secs_f64(secs)
            .unwrap_or(Duration::MAX)
            .min(cap)
    }
}

/// Runs one schedule case; panics on any divergence from the reference.
pub(crate) fn check_schedule(case: ScheduleCase) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut b = Retry::<(), u32>::builder()
            .max_retries(case.max_retries.into())
            .backoff(case.backoff())
            .max_delay(Duration::from_millis(case.max_delay_ms.into()))
            .jitter(case.jitter())
            .attempt_margin(Duration::from_millis(case.margin_ms.into()))
            .seed(case.seed);
        if case.timeout_ms > 0 {
            b = b.timeout(Duration::from_millis(case.timeout_ms.into()));
        }
        let retry = match b.build() {
            Ok(r) => r,
            Err(e) => {
                // The only refusals reachable from these cases.
                if e.field() == "attempt_margin" {
                    assert!(case.timeout_ms > 0 && u32::from(case.margin_ms) >= case.timeout_ms);
                } else {
                    assert!(case.jitter == 3 && case.base_ms == 0, "{case:?}: {e}");
                    assert_eq!(e.field(), "backoff");
                }
                return;
            }
        };
        let start = Instant::now();
        let times = Mutex::new(Vec::new());
        let err = retry
            .call_with_attempt(|n| {
                times.lock().unwrap().push(start.elapsed());
                async move { Err(n) }
            })
            .await
            .unwrap_err();
        let times = times.into_inner().unwrap();
        let deadline = (case.timeout_ms > 0).then(|| Duration::from_millis(case.timeout_ms.into()));
        let margin = Duration::from_millis(case.margin_ms.into());

        // Attempt numbers and the end.
        assert_eq!(err.attempts() as usize, times.len(), "{case:?}");
        let last = (!times.is_empty()).then_some(times.len() as u32);
        assert_eq!(err.error().copied(), last, "{case:?}");
        if let Some(d) = deadline {
            for t in &times {
                assert!(*t + margin <= d, "{case:?}: attempt at {t:?} past deadline");
            }
            assert!(start.elapsed() <= d, "{case:?}: ran past the deadline");
        }
        match err {
            RetryError::Exhausted { .. } => {
                assert_eq!(times.len(), usize::from(case.max_retries) + 1, "{case:?}")
            }
            RetryError::Deadline { .. } => assert!(deadline.is_some(), "{case:?}"),
            other => panic!("{case:?}: unexpected {other:?}"),
        }

        // Delays. Tokio's timer fires on whole milliseconds, so a sleep
        // lasts its delay rounded up to the next one (every attempt starts
        // on a millisecond here).
        let cap = Duration::from_millis(case.max_delay_ms.into());
        let base = case.temp(1);
        let mut prev = base;
        for (i, w) in times.windows(2).enumerate() {
            let gap = w[1] - w[0];
            let temp = case.temp(i as u32 + 1);
            let ok = match case.jitter() {
                Jitter::None => gap == ceil_ms(temp),
                Jitter::Full => gap <= ceil_ms(temp),
                Jitter::Equal => gap >= temp / 2 && gap <= ceil_ms(temp),
                _ => gap >= base && gap <= ceil_ms((prev * 3).min(cap)),
            };
            assert!(
                ok,
                "{case:?}: retry {} waited {gap:?}, temp {temp:?}",
                i + 1
            );
            prev = gap;
        }

        // Without jitter the whole run is determined: replay it.
        if case.jitter() == Jitter::None {
            let mut expect = vec![Duration::ZERO];
            let mut t = Duration::ZERO;
            for n in 1..=u32::from(case.max_retries) {
                let next = t + case.temp(n);
                // An attempt may start only before the deadline, with its margin.
                if deadline.is_some_and(|d| next >= d || next + margin > d) {
                    break;
                }
                t = ceil_ms(next);
                expect.push(t);
            }
            assert_eq!(times, expect, "{case:?}");
        }
    });
}

/// Rounds up to a whole millisecond, as Tokio's timer does.
fn ceil_ms(d: Duration) -> Duration {
    let ms = d.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// One step of a budget scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BudgetOp {
    Deposit,
    Withdraw,
    AdvanceMs(u16),
}

pub(crate) fn budget_ops_from_bytes(data: &[u8]) -> Vec<BudgetOp> {
    data.chunks(2)
        .map(|c| match c[0] % 4 {
            0 | 1 => BudgetOp::Deposit,
            2 => BudgetOp::Withdraw,
            _ => BudgetOp::AdvanceMs(u16::from(c.get(1).copied().unwrap_or(0)) * 8),
        })
        .collect()
}

/// Drives a budget (`ratio` in thousandths, floor per second, ttl in ms)
/// and the naive model side by side.
pub(crate) fn check_budget(ratio_milli: u16, min_per_sec: u8, ttl_ms: u16, ops: &[BudgetOp]) {
    let ratio_milli = u64::from(ratio_milli % 2001);
    let ttl_ms = u64::from(ttl_ms.max(10));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let budget = RetryBudget::builder()
            .ratio(ratio_milli as f64 / 1000.0)
            .min_per_sec(min_per_sec.into())
            .ttl(Duration::from_millis(ttl_ms))
            .build()
            .unwrap();
        // The model: every event with its time (ns since the budget's start).
        let width = ttl_ms * 1_000_000 / 10;
        let reserve = u64::from(min_per_sec) * ttl_ms; // in thousandths of a retry
        let mut deposits: Vec<u64> = Vec::new();
        let mut withdrawals: Vec<u64> = Vec::new();
        let start = Instant::now();
        let balance = |now: u64, deposits: &[u64], withdrawals: &[u64]| -> i64 {
            let epoch = now / width;
            let live = |t: &&u64| epoch - *t / width < 10;
            let d = deposits.iter().filter(live).count() as i64;
            let w = withdrawals.iter().filter(live).count() as i64;
            reserve as i64 + d * ratio_milli as i64 - w * 1000
        };
        for (step, op) in ops.iter().enumerate() {
            let now = start.elapsed().as_nanos() as u64;
            match *op {
                BudgetOp::Deposit => {
                    budget.deposit();
                    deposits.push(now);
                }
                BudgetOp::Withdraw => {
                    let expect = balance(now, &deposits, &withdrawals) >= 1000;
                    assert_eq!(budget.try_withdraw(), expect, "step {step}: {op:?}");
                    if expect {
                        withdrawals.push(now);
                    }
                }
                BudgetOp::AdvanceMs(ms) => {
                    tokio::time::advance(Duration::from_millis(ms.into())).await;
                }
            }
            let now = start.elapsed().as_nanos() as u64;
            let b = balance(now, &deposits, &withdrawals);
            assert_eq!(
                budget.remaining(),
                u64::try_from(b / 1000).unwrap_or(0),
                "step {step}: {op:?}"
            );
        }
    });
}
