//! Property tests of the tower admission layers against the reference in
//! `tests/model/tower.rs` (shared with the fuzz target): random
//! `poll_ready` / `call` / drop / completion sequences on clones of a
//! `ConcurrencyLimit` and of a `LoadShed` sharing one semaphore. In flight
//! never above the limit, readiness as the model says, every permit back at
//! the end.

#[path = "model/tower.rs"]
mod model;

use model::{Case, Op};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    (0u8..6, 0usize..8).prop_map(|(k, i)| match k {
        0 => Op::Clone(i),
        1 => Op::PollReady(i),
        2 => Op::Call(i),
        3 => Op::DropService(i),
        4 => Op::Complete(i),
        _ => Op::DropFuture(i),
    })
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        1usize..=4,
        prop::collection::vec(op(), 0..80),
    )
        .prop_map(|(shed, limit, ops)| Case { shed, limit, ops })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn layers_agree_with_the_model(case in case()) {
        model::check(&case);
    }
}

/// The fuzz target's decoder gives cases the checker accepts.
#[test]
fn decoded_bytes_run() {
    model::check(&Case::from_bytes(&[]));
    model::check(&Case::from_bytes(&[
        3, 0, 0, 1, 0, 1, 1, 2, 0, 2, 1, 4, 0, 5, 0,
    ]));
    model::check(&Case::from_bytes(&[
        0, 0, 0, 1, 0, 1, 1, 2, 1, 3, 0, 1, 0, 2, 0,
    ]));
}

/// Three clones on one permit: the second waits, gets the permit when the
/// first's response completes, and the third queues behind it.
#[test]
fn clones_share_one_permit() {
    use Op::*;
    model::check(&Case {
        shed: false,
        limit: 1,
        ops: vec![
            Clone(0),
            Clone(0),
            PollReady(0),
            Call(0),
            PollReady(1),
            PollReady(2),
            Complete(0),
            PollReady(1),
            PollReady(2),
            DropService(1),
            PollReady(1),
        ],
    });
}
