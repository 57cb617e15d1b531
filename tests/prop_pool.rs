//! Property test: `WorkerPool` scheduling against a priority list-scheduler
//! model, strict and with aging, on the paused clock (see
//! `tests/model/pool.rs`).

#[path = "model/pool.rs"]
mod model;

use model::Op;
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => ((1u64..=50), (-1i32..=2)).prop_map(|(ms, priority)| Op::TrySubmit { ms, priority }),
        3 => (0u64..=60).prop_map(Op::Advance),
        1 => (1usize..=4).prop_map(Op::Resize),
        1 => any::<usize>().prop_map(Op::Abort),
        1 => Just(Op::ClearQueue),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn pool_schedules_like_a_priority_list_scheduler(
        k in 1usize..=4,
        q in 0usize..=6,
        aging in prop::option::of(1usize..=3),
        ops in prop::collection::vec(op(), 0..40),
    ) {
        model::check(k, q, aging, &ops);
    }
}

#[test]
fn bytes_decode_to_ops() {
    let ops = model::ops_from_bytes(&[0, 10, 0x40, 20, 8, 15, 12, 1, 14, 0, 15, 0]);
    assert_eq!(ops.len(), 6);
    assert!(matches!(
        ops[1],
        model::Op::TrySubmit {
            ms: 21,
            priority: 0
        }
    ));
    assert!(matches!(ops[5], model::Op::ClearQueue));
    model::check(1, 1, None, &ops);
    model::check(1, 1, Some(1), &ops);
}
