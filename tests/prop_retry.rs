//! Property tests of `flowguard::retry` against the reference in
//! `tests/model/retry.rs` (shared with the fuzz target): the delay schedule
//! for random backoffs, caps, jitters, seeds and deadlines, and the budget
//! against a naive event list.

#[path = "model/retry.rs"]
mod model;

use model::{BudgetOp, ScheduleCase};
use proptest::prelude::*;

fn case() -> impl Strategy<Value = ScheduleCase> {
    (
        (0u8..3, 0u16..2000, 0u16..2000, 10u8..=40, 1u32..20_000),
        (
            0u8..4,
            0u8..12,
            prop_oneof![Just(0u32), 1u32..30_000],
            0u16..500,
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (kind, base_ms, step_ms, factor_tenths, max_delay_ms),
                (jitter, max_retries, timeout_ms, margin_ms, seed),
            )| {
                ScheduleCase {
                    kind,
                    base_ms,
                    step_ms,
                    factor_tenths,
                    max_delay_ms,
                    jitter,
                    max_retries,
                    timeout_ms,
                    margin_ms,
                    seed,
                }
            },
        )
}

fn budget_op() -> impl Strategy<Value = BudgetOp> {
    prop_oneof![
        3 => Just(BudgetOp::Deposit),
        3 => Just(BudgetOp::Withdraw),
        1 => (0u16..3000).prop_map(BudgetOp::AdvanceMs),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn schedule_matches_reference(c in case()) {
        model::check_schedule(c);
    }

    #[test]
    fn budget_matches_naive_model(
        ratio_milli in 0u16..2000,
        min_per_sec in 0u8..5,
        ttl_ms in 10u16..5000,
        ops in proptest::collection::vec(budget_op(), 0..200),
    ) {
        model::check_budget(ratio_milli, min_per_sec, ttl_ms, &ops);
    }

    #[test]
    fn decoded_bytes_match_reference(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        model::check_schedule(ScheduleCase::from_bytes(&bytes));
        model::check_budget(300, 1, 1000, &model::budget_ops_from_bytes(&bytes));
    }
}

/// The seeds' example: three attempts after the first, 2 s, 4 s, 8 s.
#[test]
fn seeds_exponential_example() {
    model::check_schedule(ScheduleCase {
        kind: 2,
        base_ms: 2000,
        step_ms: 0,
        factor_tenths: 20,
        max_delay_ms: 60_000,
        jitter: 0,
        max_retries: 3,
        timeout_ms: 0,
        margin_ms: 0,
        seed: 0,
    });
}

/// Found by the fuzz target: a sleep that would end exactly at the deadline
/// is not taken (no attempt could start then).
#[test]
fn no_sleep_that_ends_at_the_deadline() {
    model::check_schedule(ScheduleCase {
        kind: 2,
        base_ms: 592,
        step_ms: 1699,
        factor_tenths: 17,
        max_delay_ms: 1,
        jitter: 0,
        max_retries: 11,
        timeout_ms: 1,
        margin_ms: 0,
        seed: 0,
    });
}
