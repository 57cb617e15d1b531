//! Property tests: random fan-out scenarios against the reference model in
//! `tests/model/fanout.rs` (shared with the fuzz target).

#[path = "model/fanout.rs"]
mod model;

use model::Op;
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u16..300, any::<bool>()).prop_map(|(delay_ms, ok)| Op::Future { delay_ms, ok }),
        2 => (0u16..400).prop_map(Op::Timeout),
        1 => (0u8..6).prop_map(Op::Concurrency),
        1 => (0u8..8).prop_map(Op::Quorum),
        1 => Just(Op::FailFast),
        1 => (0u16..100).prop_map(Op::HedgeDelay),
        1 => (0u8..5).prop_map(Op::MaxHedges),
        2 => (0u16..100).prop_map(Op::Sample),
        1 => Just(Op::FirstCompleted),
        1 => Just(Op::Detach),
        1 => Just(Op::HedgeOnError),
        1 => any::<u8>().prop_map(Op::FinalErrors),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn fanout_matches_model(ops in proptest::collection::vec(op(), 0..24)) {
        model::check(&ops);
    }

    /// Small delays make same-instant completions (ties) common.
    #[test]
    fn fanout_matches_model_with_ties(
        ops in proptest::collection::vec(
            prop_oneof![
                4 => (1u16..4, any::<bool>()).prop_map(|(delay_ms, ok)| Op::Future { delay_ms, ok }),
                1 => (0u16..6).prop_map(Op::Timeout),
                1 => (0u8..4).prop_map(Op::Concurrency),
                1 => (0u8..5).prop_map(Op::Quorum),
                1 => Just(Op::FailFast),
                1 => (0u16..4).prop_map(Op::HedgeDelay),
                1 => Just(Op::FirstCompleted),
                1 => Just(Op::Detach),
                1 => Just(Op::HedgeOnError),
                1 => any::<u8>().prop_map(Op::FinalErrors),
            ],
            0..16,
        )
    ) {
        model::check(&ops);
    }
}

#[test]
fn decoding_arbitrary_bytes_never_panics() {
    for seed in 0u8..=255 {
        let bytes: Vec<u8> = (0..60u8)
            .map(|i| i.wrapping_mul(seed).wrapping_add(seed))
            .collect();
        model::check(&model::ops_from_bytes(&bytes));
    }
}
