//! Property test: the breaker against a naive reference model over random
//! (time step, outcome, duration) sequences (see `tests/model/breaker.rs`).

#[path = "model/breaker.rs"]
mod model;

use model::{Cfg, Op};
use proptest::prelude::*;

fn cfg() -> impl Strategy<Value = Cfg> {
    (
        (prop::option::of(1u32..7), 1u64..400, 1u32..5, 1u32..7),
        (
            prop::option::of(prop::sample::select(vec![20u32, 25, 50, 60, 100])),
            prop::option::of(prop::sample::select(vec![34u32, 50, 100])),
            1u64..300,
            prop::option::of(1u32..5),
        ),
        (
            1u64..1000,
            1u32..4,
            1u64..9,
            1u32..4,
            prop::option::of(1u64..2000),
        ),
    )
        .prop_map(
            |(
                (count_window, bucket_ms, buckets, minimum_calls),
                (failure_rate, slow_rate, slow_ms, consecutive),
                (wait_ms, multiplier, max_factor, probes, max_half_open_ms),
            )| Cfg {
                count_window,
                bucket_ms,
                buckets,
                minimum_calls,
                failure_rate,
                slow_rate,
                slow_ms,
                consecutive,
                wait_ms,
                multiplier,
                max_wait_ms: wait_ms * max_factor,
                probes,
                max_half_open_ms,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..1500).prop_map(Op::Advance),
        3 => Just(Op::Acquire),
        3 => (any::<usize>(), 0u8..4).prop_map(|(i, how)| Op::Finish(i, how)),
        5 => (any::<bool>(), 0u64..400).prop_map(|(failure, ms)| Op::Call { failure, ms }),
        1 => Just(Op::NextReady),
        1 => prop_oneof![Just(Op::ForceOpen), Just(Op::Disable), Just(Op::Reset)],
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn breaker_matches_reference_model(cfg in cfg(), ops in prop::collection::vec(op(), 0..120)) {
        model::check(&cfg, &ops);
    }
}

#[test]
fn bytes_decode_to_a_config_and_ops() {
    let mut bytes = vec![1u8; 13];
    bytes.extend_from_slice(&[9, 0, 9, 0, 9, 0, 0, 200, 9, 1, 13, 0]);
    let (cfg, ops) = model::cfg_and_ops_from_bytes(&bytes).unwrap();
    assert_eq!(ops.len(), 6);
    model::check(&cfg, &ops);
    assert!(model::cfg_and_ops_from_bytes(&[0; 12]).is_none());
}
