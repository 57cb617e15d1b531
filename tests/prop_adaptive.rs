//! Property tests of `flowguard::adaptive` against the references in
//! `tests/model/adaptive.rs` (shared with the fuzz target): every
//! algorithm, bare and windowed, with random settings and random samples
//! (zero and huge RTTs, any inflight, drops), stays equal to its reference
//! and within `[min, max]` with finite estimates; and the limiter, driven
//! by grants, reports and clock advances, feeds the algorithm the right
//! samples and never grants above the limit.

#[path = "model/adaptive.rs"]
mod model;

use model::{AlgoCase, LimiterOp, Op};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            prop_oneof![Just(0u32), 1u32..2_000, 1_000u32..400_000, Just(u32::MAX)],
            prop_oneof![0u16..8, 0u16..400, any::<u16>()],
            proptest::bool::weighted(0.15),
        )
            .prop_map(|(rtt_us, inflight, dropped)| Op::Sample { rtt_us, inflight, dropped }),
        1 => (0u16..3_000).prop_map(Op::AdvanceMs),
    ]
}

fn case() -> impl Strategy<Value = AlgoCase> {
    (
        (
            0u8..6,
            1u16..50,
            0u16..600,
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
        ),
        (
            any::<u8>(),
            any::<u64>(),
            1u16..500,
            0u16..1000,
            1u8..20,
            0u16..1000,
        ),
    )
        .prop_map(
            |(
                (kind, min, span, initial_at, ratio_milli, knob),
                (shape, seed, min_window_ms, window_span_ms, min_samples, min_rtt_us),
            )| AlgoCase {
                kind,
                min,
                span,
                initial_at,
                ratio_milli,
                knob,
                shape,
                seed,
                min_window_ms,
                window_span_ms,
                min_samples,
                min_rtt_us,
            },
        )
}

fn limiter_op() -> impl Strategy<Value = LimiterOp> {
    prop_oneof![
        4 => Just(LimiterOp::TryAcquire),
        3 => (any::<u8>(), 0u8..4).prop_map(|(at, how)| LimiterOp::Report(at, how)),
        1 => (0u16..1_000).prop_map(LimiterOp::AdvanceMs),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn algorithms_match_their_references_and_stay_in_bounds(
        c in case(),
        ops in proptest::collection::vec(op(), 0..400),
    ) {
        model::check_algorithm(c, &ops);
    }

    #[test]
    fn limiter_feeds_the_algorithm_and_never_grants_above_the_limit(
        initial in any::<u8>(),
        ops in proptest::collection::vec(limiter_op(), 0..300),
    ) {
        model::check_limiter(initial, &ops);
    }

    #[test]
    fn a_strided_limiter_feeds_each_report_once(
        stride in any::<u8>(),
        initial in any::<u8>(),
        ops in proptest::collection::vec(limiter_op(), 0..300),
    ) {
        model::check_limiter_strided(stride, initial, &ops);
    }

    #[test]
    fn decoded_bytes_match_references(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (c, ops) = AlgoCase::from_bytes(&bytes);
        model::check_algorithm(c, &ops);
        model::check_limiter(bytes.first().copied().unwrap_or(0), &model::limiter_ops_from_bytes(&bytes));
        let first = |i: usize| bytes.get(i).copied().unwrap_or(0);
        model::check_limiter_strided(first(1), first(0), &model::limiter_ops_from_bytes(&bytes));
    }
}

/// A saturated backend's samples (the RTT grows with the limit past a knee
/// of 80), fed to Vegas with probes every few samples: the reference and the
/// crate agree through drains and restores.
#[test]
fn vegas_probing_a_saturated_backend_matches_the_reference() {
    let case = AlgoCase {
        kind: 2,
        min: 1,
        span: 999,
        initial_at: 19,
        ratio_milli: 999,
        knob: 1,
        shape: 0x33,
        seed: 7,
        min_window_ms: 1,
        window_span_ms: 0,
        min_samples: 1,
        min_rtt_us: 0,
    };
    // Feed samples in lockstep with the limit the crate answers.
    let mut ops = Vec::new();
    let mut limit = 20usize;
    let mut shadow = flowguard::adaptive::Vegas::builder()
        .initial_limit(20)
        .alpha(4)
        .beta(8)
        .probe_multiplier(1)
        .seed(7)
        .build()
        .unwrap();
    for _ in 0..3_000 {
        let rtt_us = (100_000.0 * (limit as f64 / 80.0).max(1.0)) as u32;
        let op = Op::Sample {
            rtt_us,
            inflight: limit as u16,
            dropped: false,
        };
        ops.push(op);
        use flowguard::adaptive::LimitAlgorithm;
        limit = shadow.update(&flowguard::adaptive::Sample::new(
            tokio::time::Instant::now(),
            std::time::Duration::from_micros(rtt_us.into()),
            limit,
            false,
        ));
    }
    model::check_algorithm(case, &ops);
}
