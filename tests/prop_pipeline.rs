//! Property tests: random layer configurations and backend scripts, one
//! sequential caller, against the model in `tests/model/pipeline.rs`
//! (shared with the fuzz target).

#[path = "model/pipeline.rs"]
mod model;

use model::{Answer, Call, Config};
use proptest::prelude::*;

fn config() -> impl Strategy<Value = Config> {
    (
        proptest::option::of(1u16..2000),
        proptest::option::of((0u8..5, 0u16..300)),
        proptest::option::of((1u8..5, 1u16..2000)),
        proptest::option::of(1u16..800),
        any::<bool>(),
    )
        .prop_map(
            |(timeout_ms, retry, breaker, attempt_timeout_ms, pool)| Config {
                timeout_ms,
                retry,
                breaker,
                attempt_timeout_ms,
                pool,
            },
        )
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        3 => Just(Answer::Err),
        2 => Just(Answer::Ok),
        2 => (0u16..1000).prop_map(Answer::Slow),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pipeline_matches_model(
        config in config(),
        answers in proptest::collection::vec(answer(), 0..60),
        gaps in proptest::collection::vec(0u16..3000, 1..12),
    ) {
        let calls: Vec<Call> = gaps.into_iter().map(|gap_ms| Call { gap_ms }).collect();
        model::check(config, &answers, &calls);
    }

    #[test]
    fn decoded_bytes_match_model(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let (config, answers, calls) = model::from_bytes(&bytes);
        model::check(config, &answers, &calls);
    }
}
