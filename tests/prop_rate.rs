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
