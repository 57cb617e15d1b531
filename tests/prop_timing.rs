//! Property test: the debounce core equals lodash's algorithm (see
//! `tests/model/timing.rs`) for random options, call times and values.

#[path = "model/timing.rs"]
mod model;

use model::Op;
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u8..64, proptest::option::of(0u8..128), any::<bool>(), any::<bool>()).prop_map(
            |(wait, max_wait, leading, trailing)| Op::Options { wait, max_wait, leading, trailing }
        ),
        6 => (0u8..80).prop_map(Op::Advance),
        2 => Just(Op::Tick),
        8 => any::<u8>().prop_map(Op::Call),
        1 => Just(Op::Flush),
        1 => Just(Op::Cancel),
    ]
}

fn scenario() -> impl Strategy<Value = Vec<Op>> {
    // Options first, so most scenarios use non-default ones.
    (op(), proptest::collection::vec(op(), 0..200)).prop_map(|(first, mut rest)| {
        if let Op::Options { .. } = first {
            rest.insert(0, first);
        }
        rest
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn core_matches_lodash(ops in scenario()) {
        model::check(&ops);
    }
}

#[test]
fn throttle_burst_matches_lodash() {
    let mut ops = vec![Op::Options {
        wait: 10,
        max_wait: Some(10),
        leading: true,
        trailing: true,
    }];
    for i in 0..100 {
        ops.push(Op::Call(i));
        ops.push(Op::Advance(3));
    }
    ops.push(Op::Advance(50));
    model::check(&ops);
}

#[test]
fn decoded_bytes_are_checked() {
    let bytes: Vec<u8> = (0..=255u8).flat_map(|b| [b, b.wrapping_mul(7)]).collect();
    model::check(&model::ops_from_bytes(&bytes));
}
