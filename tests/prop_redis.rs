//! Property tests of the Redis limiter's pure parts (reservation
//! accounting, reply decoding, fallback share, health and probes) against a
//! reference written from the docs, on the in-process `MemoryStore`.

#[path = "model/redis.rs"]
mod model;

use model::{Cfg, Op};
use proptest::prelude::*;

fn cfg() -> impl Strategy<Value = Cfg> {
    (
        (1u32..=8, 1u64..=2000, 1u32..=8),
        (1u32..=8, 1u64..=3000, 0u8..6, 1u64..=3000),
    )
        .prop_map(
            |((rate, period_ns, burst), (batch, max_age_ns, policy, probe_ns))| Cfg {
                rate,
                period_ns,
                burst,
                batch,
                max_age_ns,
                policy,
                probe_ns,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop_oneof![0u64..=5, 0u64..=1000, 0u64..=5000].prop_map(Op::Advance),
        8 => (0u32..=9).prop_map(Op::Try),
        1 => (0u8..3).prop_map(Op::Fault),
        1 => Just(Op::Heal),
        1 => Just(Op::FlushScripts),
        1 => Just(Op::Clear),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn limiter_matches_the_reference(cfg in cfg(), ops in proptest::collection::vec(op(), 0..200)) {
        model::check(cfg, &ops);
    }

    #[test]
    fn arbitrary_bytes_decode_and_check(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let (cfg, ops) = model::case_from_bytes(&bytes);
        model::check(cfg, &ops);
    }
}
