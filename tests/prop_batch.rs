//! Property tests: random load schedules, real loader vs the naive model in
//! `tests/model/batch.rs`.

#[path = "model/batch.rs"]
mod model;

use model::Op;
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..8).prop_map(Op::Load),
        2 => Just(Op::Tick),
        2 => (0u8..16).prop_map(Op::Advance),
        1 => any::<u8>().prop_map(Op::Cancel),
        1 => (0u8..8).prop_map(Op::Clear),
        1 => Just(Op::ClearAll),
        1 => (0u8..8).prop_map(Op::Prime),
    ]
}

fn schedule() -> impl Strategy<Value = Vec<Op>> {
    (0u8..16, any::<bool>(), prop::collection::vec(op(), 0..60)).prop_map(|(n, cache, ops)| {
        std::iter::once(Op::Configure(n, cache))
            .chain(ops)
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn loader_matches_model(ops in schedule()) {
        model::check(&ops);
    }

    #[test]
    fn fuzz_bytes_decode_and_check(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        model::check(&model::ops_from_bytes(&bytes));
    }
}

#[test]
fn dedup_against_running_batch_then_clear_refetches() {
    use Op::*;
    model::check(&[
        Configure(2, true),
        Load(1),
        Tick,
        Load(1),
        Clear(1),
        Load(1),
        Advance(10),
        Load(1),
    ]);
}

#[test]
fn clear_then_prime_while_loading_is_not_overwritten_by_the_fetch() {
    use Op::*;
    // Key 1 pending, key 2 running; each cleared then primed, then both land.
    model::check(&[
        Configure(3, true),
        Load(2),
        Tick,
        Load(1),
        Prime(1),
        Prime(2),
        Clear(1),
        Clear(2),
        Prime(1),
        Prime(2),
        Advance(15),
        Load(1),
        Load(2),
    ]);
}

#[test]
fn lru_keeps_a_hot_key_fifo_refetches_it() {
    use Op::*;
    // Cache of 4: key 0 read again before 4 more keys arrive.
    for configure in [Configure(3, true), Configure(3 | 4, true)] {
        model::check(&[
            configure,
            Load(0),
            Advance(10),
            Load(1),
            Load(2),
            Load(3),
            Advance(10),
            Load(0),
            Load(5),
            Advance(10),
            Load(0),
            Advance(10),
        ]);
    }
}

#[test]
fn ttl_expires_values_primes_and_refetches() {
    use Op::*;
    model::check(&[
        Configure(3 | 8, true),
        Load(1),
        Prime(2),
        Advance(10),
        Load(1),
        Load(2),
        Advance(14),
        Load(1),
        Advance(1),
        Load(1),
        Load(2),
        Advance(20),
        Prime(2),
    ]);
}
