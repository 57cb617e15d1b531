//! Property tests: the rate limiters against an exact rational token bucket.

#[path = "model/rate.rs"]
mod model;

use model::{Op, SvcOp};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (1u32..=8, 1u64..=2000, 1u32..=8)
            .prop_map(|(rate, period_ns, burst)| Op::Start { rate, period_ns, burst }),
        6 => prop_oneof![0u64..=5, 0u64..=1000].prop_map(Op::Advance),
        6 => (0u32..=10).prop_map(Op::TryAcquire),
        1 => (0u32..=4).prop_map(Op::Refund),
        3 => (0u8..4, 0u32..=10).prop_map(|(k, n)| Op::KeyedTryAcquire(k, n)),
        1 => (0u8..4, 0u32..=4).prop_map(|(k, n)| Op::KeyedRefund(k, n)),
        2 => Just(Op::Snapshot),
        1 => (1u32..=8, 1u64..=2000, 1u32..=8)
            .prop_map(|(rate, period_ns, burst)| Op::SetQuota { rate, period_ns, burst }),
        1 => Just(Op::Reapply),
    ]
}

fn svc_op() -> impl Strategy<Value = SvcOp> {
    prop_oneof![
        1 => (1u32..=8, 1u64..=2000, 1u32..=8)
            .prop_map(|(rate, period_ns, burst)| SvcOp::Start { rate, period_ns, burst }),
        6 => prop_oneof![0u64..=5, 0u64..=1000].prop_map(SvcOp::Advance),
        8 => any::<u8>().prop_map(SvcOp::Request),
        1 => any::<u8>().prop_map(SvcOp::Reserve),
        1 => any::<u8>().prop_map(SvcOp::Clone),
        1 => Just(SvcOp::New),
        2 => any::<u8>().prop_map(SvcOp::Available),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn limiter_matches_rational_token_bucket(
        start in (1u32..=8, 1u64..=2000, 1u32..=8),
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let mut all = vec![Op::Start { rate: start.0, period_ns: start.1, burst: start.2 }];
        all.extend(ops);
        model::check(&all);
    }

    #[test]
    fn per_service_layer_matches_rational_token_bucket(
        start in (1u32..=8, 1u64..=2000, 1u32..=8),
        ops in proptest::collection::vec(svc_op(), 0..200),
    ) {
        let mut all = vec![SvcOp::Start { rate: start.0, period_ns: start.1, burst: start.2 }];
        all.extend(ops);
        model::check_per_service(&all);
    }

    #[test]
    fn per_service_arbitrary_bytes_decode_and_check(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        model::check_per_service(&model::svc_ops_from_bytes(&bytes));
    }

    #[test]
    fn arbitrary_bytes_decode_and_check(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        model::check(&model::ops_from_bytes(&bytes));
    }
}

#[test]
fn regression_boundary_exactly_at_retry_instant() {
    use Op::*;
    model::check(&[
        Start {
            rate: 3,
            period_ns: 1000,
            burst: 2,
        },
        TryAcquire(2),
        TryAcquire(1),
        Advance(333),
        TryAcquire(1),
        Advance(1),
        TryAcquire(1),
        Snapshot,
        Refund(1),
        Snapshot,
    ]);
}

#[test]
fn regression_exact_set_quota_keeps_the_retry_instant() {
    use Op::*;
    model::check(&[
        // T = 10 ns, burst 4
        Start {
            rate: 4,
            period_ns: 40,
            burst: 4,
        },
        Advance(7),
        TryAcquire(2),
        Reapply,
        TryAcquire(3),
        // T = 20 ns, burst 3: 2 available is 20 ns of debt under both
        SetQuota {
            rate: 3,
            period_ns: 60,
            burst: 3,
        },
        TryAcquire(3),
        Snapshot,
        SetQuota {
            rate: 4,
            period_ns: 40,
            burst: 4,
        },
        TryAcquire(3),
        Snapshot,
        TryAcquire(2),
        Snapshot,
    ]);
}

/// FIFO `acquire` on the paused clock against a sequential reference:
/// requests of random sizes arrive at whole milliseconds and every admission
/// instant must match exactly.
///
/// Cancellation is left to `tests/rate.rs` and the loom models: cancelling
/// between Tokio's millisecond ticks (to avoid ties with admissions) makes
/// the paused clock's auto-advance overshoot, which would test Tokio's
/// timer grid rather than the limiter.
mod fifo {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use flowguard::rate::{Quota, RateLimiter};
    use proptest::prelude::*;
    use tokio::time::Instant;

    #[derive(Debug, Clone)]
    struct Req {
        gap_ms: u64,
        n: u32,
    }

    /// Admission instants in microseconds since start.
    fn reference(t_ms: u64, burst: u32, prefill: u32, reqs: &[Req]) -> Vec<Option<u64>> {
        let t = t_ms * 1000;
        let tau = t * u64::from(burst);
        let mut tat = t * u64::from(prefill);
        let mut free_at = 0u64;
        let mut arrival = 0u64;
        let mut out = Vec::new();
        for r in reqs {
            arrival += r.gap_ms * 1000;
            let ready = (tat + u64::from(r.n) * t).saturating_sub(tau);
            let head_at = arrival.max(free_at);
            let admit = if ready > head_at {
                ready.div_ceil(1000) * 1000
            } else {
                head_at
            };
            tat = tat.max(admit) + u64::from(r.n) * t;
            free_at = admit;
            out.push(Some(admit));
        }
        out
    }

    fn real(t_ms: u64, burst: u32, prefill: u32, reqs: &[Req]) -> Vec<Option<u64>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let q = Quota::with_period(1, Duration::from_millis(t_ms))
                .unwrap()
                .with_burst(burst)
                .unwrap();
            let l = RateLimiter::new(q);
            let start = Instant::now();
            if prefill > 0 {
                l.try_acquire(prefill).unwrap();
            }
            let log: Arc<Mutex<Vec<Option<u64>>>> = Arc::new(Mutex::new(vec![None; reqs.len()]));
            // Events: (time in µs, index, is_cancel).
            let mut events = Vec::new();
            let mut arrival = 0;
            for (i, r) in reqs.iter().enumerate() {
                arrival += r.gap_ms * 1000;
                events.push((arrival, i, false));
            }
            events.sort();
            let mut handles: Vec<Option<tokio::task::JoinHandle<()>>> =
                (0..reqs.len()).map(|_| None).collect();
            for (at, i, cancel) in events {
                // Sleep (not `advance`) so that due timers fire at their own
                // instants before the clock moves on.
                tokio::time::sleep_until(start + Duration::from_micros(at)).await;
                debug_assert!(!cancel);
                let (l, log, n) = (l.clone(), log.clone(), reqs[i].n);
                handles[i] = Some(tokio::spawn(async move {
                    l.acquire(n).await.unwrap();
                    log.lock().unwrap()[i] = Some(start.elapsed().as_micros() as u64);
                }));
                tokio::task::yield_now().await; // let it join the queue now
            }
            for h in handles.into_iter().flatten() {
                let _ = h.await;
            }
            assert_eq!(l.snapshot().waiters, 0);
            log.lock().unwrap().clone()
        })
    }

    fn req() -> impl Strategy<Value = Req> {
        (0u64..4, 1u32..=3).prop_map(|(gap_ms, n)| Req { gap_ms, n })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn fifo_acquire_matches_sequential_reference(
            t_ms in 1u64..=4,
            burst in 3u32..=5,
            prefill in 0u32..=3,
            reqs in proptest::collection::vec(req(), 1..12),
        ) {
            let prefill = prefill.min(burst);
            prop_assert_eq!(real(t_ms, burst, prefill, &reqs), reference(t_ms, burst, prefill, &reqs));
        }
    }
}

/// `set_quota` conversions: re-applying is the identity, exact round trips
/// do not drift, and inexact ones never gain credit and lose at most the
/// documented rounding.
mod conversions {
    use std::time::Duration;

    use flowguard::clock::{Clock, ManualClock};
    use flowguard::rate::{Quota, RateLimiter, TryAcquireError};
    use proptest::prelude::*;

    fn quota(t_ns: u64, burst: u32) -> Quota {
        Quota::with_period(1, Duration::from_nanos(t_ns))
            .unwrap()
            .with_burst(burst)
            .unwrap()
    }

    /// A limiter under `q` that took `taken` tokens at its origin and then
    /// waited `elapsed` ns.
    fn limiter(q: Quota, taken: u32, elapsed: u64) -> (RateLimiter<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        let l = RateLimiter::with_clock(q, clock.clone());
        l.try_acquire(taken).unwrap();
        clock.advance(Duration::from_nanos(elapsed));
        (l, clock)
    }

    /// Nanoseconds of debt (`tat - now`, 0 for a full bucket), read from the
    /// exact retry instant of a full burst. Takes the burst when it is there.
    fn debt(l: &RateLimiter<ManualClock>, clock: &ManualClock) -> u64 {
        match l.try_acquire(l.quota().burst()) {
            Ok(()) => 0,
            Err(TryAcquireError::NotUntil { retry_after }) => {
                (retry_after - clock.now()).as_nanos() as u64
            }
            Err(e) => panic!("{e:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn set_quota_with_the_current_quota_is_the_identity(
            t in 1u64..=1000, burst in 1u32..=8, taken in 0u32..=8, elapsed in 0u64..=8000,
            reloads in 1usize..50,
        ) {
            let q = quota(t, burst);
            let (l, clock) = limiter(q, taken.min(burst), elapsed);
            let before = (format!("{l:?}"), l.snapshot());
            for _ in 0..reloads {
                l.set_quota(q);
                l.set_quota(l.quota());
            }
            prop_assert_eq!((format!("{l:?}"), l.snapshot()), before);
            let expect = (u64::from(taken.min(burst)) * t).saturating_sub(elapsed);
            prop_assert_eq!(debt(&l, &clock), expect);
        }

        #[test]
        fn round_trips_through_exact_conversions_do_not_drift(
            t1 in 1u64..=1000, b1 in 1u32..=8, k in 1u64..=5, extra in 0u32..=4,
            taken in 0u32..=8, elapsed in 0u64..=8000, trips in 1usize..20,
        ) {
            // T2 = k * T1 and a burst that does not shrink: every debt scales
            // to whole nanoseconds both ways.
            let (q1, q2) = (quota(t1, b1), quota(t1 * k, b1 + extra));
            let taken = taken.min(b1);
            let (l, clock) = limiter(q1, taken, elapsed);
            let snapshot = l.snapshot();
            for _ in 0..trips {
                l.set_quota(q2);
                l.set_quota(q1);
            }
            prop_assert_eq!(l.snapshot(), snapshot);
            prop_assert_eq!(debt(&l, &clock), (u64::from(taken) * t1).saturating_sub(elapsed));
        }

        #[test]
        fn round_trips_never_gain_credit_and_lose_at_most_the_rounding(
            t1 in 1u64..=1000, b1 in 1u32..=8, t2 in 1u64..=1000, extra in 0u32..=4,
            taken in 0u32..=8, elapsed in 0u64..=8000,
        ) {
            let (q1, q2) = (quota(t1, b1), quota(t2, b1 + extra));
            let taken = taken.min(b1);
            let (l, clock) = limiter(q1, taken, elapsed);
            l.set_quota(q2);
            l.set_quota(q1);
            let before = (u64::from(taken) * t1).saturating_sub(elapsed);
            let after = debt(&l, &clock);
            prop_assert!(after >= before, "gained credit: {before} -> {after} ns of debt");
            prop_assert!(
                after - before <= t1.div_ceil(t2),
                "lost {} ns, more than ceil({t1} / {t2})", after - before
            );
        }
    }
}
