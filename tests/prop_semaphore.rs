//! Property test: the semaphore against a naive FIFO model over random op
//! sequences (see `tests/model/semaphore.rs`).

#[path = "model/semaphore.rs"]
mod model;

use flowguard::semaphore::QueueOrder;
use model::Op;
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..7).prop_map(Op::Acquire),
        2 => (0usize..7).prop_map(Op::TryAcquire),
        4 => any::<usize>().prop_map(Op::Release),
        2 => any::<usize>().prop_map(Op::Cancel),
        1 => (0usize..10).prop_map(Op::Resize),
        1 => any::<usize>().prop_map(Op::Forget),
        1 => Just(Op::Close),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn semaphore_matches_fifo_model(cap in 0usize..8, ops in prop::collection::vec(op(), 0..80)) {
        model::check(cap, &ops);
    }

    #[test]
    fn bounded_and_newest_first_queues_match_the_model(
        cap in 0usize..8,
        newest_first in any::<bool>(),
        limit in proptest::option::of(0usize..4),
        ops in prop::collection::vec(op(), 0..80),
    ) {
        let order = if newest_first { QueueOrder::NewestFirst } else { QueueOrder::OldestFirst };
        model::check_with(cap, order, limit, &ops);
    }
}

#[test]
fn bytes_decode_to_ops() {
    let ops = model::ops_from_bytes(&[0, 3, 6, 0, 11, 4, 13, 0]);
    assert_eq!(ops.len(), 4);
    model::check(4, &ops);
}

/// Newest-first with a full queue: the oldest waiter is evicted and the
/// newcomer served from its partial assignment.
#[test]
fn newest_first_eviction_hands_the_partial_assignment_on() {
    use Op::*;
    model::check_with(
        0,
        QueueOrder::NewestFirst,
        Some(1),
        &[Resize(3), Acquire(1), Acquire(3), Acquire(1)],
    );
}
