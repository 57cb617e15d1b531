//! Property tests: random op sequences against the `VecDeque` model in
//! `tests/model/channel.rs` (shared with the fuzz target).

#[path = "model/channel.rs"]
mod model;

use model::Op;
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<u8>().prop_map(Op::TrySend),
        3 => any::<u8>().prop_map(Op::Send),
        1 => any::<u8>().prop_map(Op::ForceSend),
        2 => any::<u8>().prop_map(Op::PollSend),
        1 => any::<u8>().prop_map(Op::CancelSend),
        3 => Just(Op::TryRecv),
        1 => any::<u8>().prop_map(Op::RecvMany),
        1 => any::<u8>().prop_map(Op::TryReserve),
        1 => Just(Op::PermitSend),
        1 => Just(Op::DropPermit),
        1 => any::<u8>().prop_map(Op::SetCapacity),
        1 => any::<u8>().prop_map(Op::Reserve),
        1 => Just(Op::Close),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn channel_matches_model(
        cap in 1usize..6,
        max_weight in 1usize..16,
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        model::check_with(cap, max_weight, &ops);
    }

    #[test]
    fn decoded_bytes_match_model(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
        model::check(&model::ops_from_bytes(&bytes));
    }
}

#[test]
fn close_with_waiters_and_permits() {
    use Op::*;
    model::check_with(
        1,
        4,
        &[
            Send(1),
            Send(2),
            Send(1),
            TryReserve(0),
            Close,
            PollSend(0),
            TryRecv,
            PermitSend,
        ],
    );
}

#[test]
fn heavy_head_blocks_then_cancel_unblocks() {
    use Op::*;
    model::check_with(
        4,
        10,
        &[
            Send(8),
            Send(9),
            Send(1),
            CancelSend(0),
            PollSend(0),
            TryRecv,
        ],
    );
}

#[test]
fn regression_permit_drop_at_end_grants_waiter() {
    model::check(&model::ops_from_bytes(&[
        0, 0, 192, 123, 0, 0, 0, 0, 0, 0, 44,
    ]));
}

#[test]
fn force_send_eviction_hands_room_to_waiters() {
    use Op::*;
    // Two light values evicted for a lighter one leave room for the waiter.
    model::check_with(
        4,
        10,
        &[TrySend(5), TrySend(5), Send(4), ForceSend(1), PollSend(0)],
    );
}

/// Issue 19, item 3, as an op sequence: a reservation refused by a shrink
/// must not hold back a send that fits.
#[test]
fn refused_reservation_does_not_block_a_send() {
    use Op::*;
    model::check_with(
        3,
        12,
        &[
            TrySend(0),
            Reserve(2),
            SetCapacity(1),
            Send(0),
            PollSend(0),
            PollSend(0),
        ],
    );
}
