//! Property test: `WorkerPool` scheduling against a FIFO list-scheduler
//! model on the paused clock (see `tests/model/pool.rs`).

#[path = "model/pool.rs"]
mod model;

use model::Op;
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..=50).prop_map(Op::TrySubmit),
        3 => (0u64..=60).prop_map(Op::Advance),
        1 => (1usize..=4).prop_map(Op::Resize),
        1 => any::<usize>().prop_map(Op::Abort),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn pool_schedules_like_a_fifo_list_scheduler(
        k in 1usize..=4,
        q in 0usize..=4,
        ops in prop::collection::vec(op(), 0..40),
    ) {
        model::check(k, q, &ops);
    }
}

#[test]
fn bytes_decode_to_ops() {
    let ops = model::ops_from_bytes(&[0, 10, 0, 20, 4, 15, 6, 1, 7, 0]);
    assert_eq!(ops.len(), 5);
    model::check(1, 1, &ops);
}
