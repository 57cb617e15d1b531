//! Property tests: the rate limiters against an exact rational token bucket.

#[path = "model/rate.rs"]
mod model;

use model::Op;
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
