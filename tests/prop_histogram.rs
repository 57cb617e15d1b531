//! The histogram's error bound, proven against exact quantiles (the
//! reference in `tests/model/histogram.rs`, shared with the fuzz target):
//! for random samples spread over every magnitude the buckets cover, every
//! quantile the snapshot reports is within 1/128 of the exact sample
//! quantile of a sorted copy; count, min and max are exact, the sum within
//! 1/128 (exact for values below 128 and in the overflow bucket); quantiles
//! are monotone and exact at both ends, overflow bucket included; a
//! weighted record (`record_n`, how sampled timing records) is exactly that
//! many plain records.

#[path = "model/histogram.rs"]
mod model;

use proptest::prelude::*;

/// A value of random magnitude below 2^40 (the precise range).
fn value() -> impl Strategy<Value = u64> {
    (0u32..=40, any::<u64>()).prop_map(|(bits, r)| if bits == 0 { 0 } else { r >> (64 - bits) })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn quantiles_within_one_percent(
        values in prop::collection::vec(value(), 1..400),
        qs in prop::collection::vec(0.0f64..=1.0, 1..8),
    ) {
        model::check(&values, &qs);
    }

    /// Any u64 (the overflow bucket too): exact ends, monotone.
    #[test]
    fn any_values_monotone_and_exact_at_the_ends(
        values in prop::collection::vec(any::<u64>(), 0..200),
        qs in prop::collection::vec(0.0f64..=1.0, 0..8),
    ) {
        model::check(&values, &qs);
    }

    /// Weighted records (a sampled event standing for `c` events) are
    /// exactly `c` plain records; a count of 0 records nothing.
    #[test]
    fn record_n_is_n_records(
        pairs in prop::collection::vec((value(), 0u8..=70), 0..60),
        qs in prop::collection::vec(0.0f64..=1.0, 0..4),
    ) {
        model::check_weighted(&pairs, &qs);
    }
}

#[test]
fn fuzz_bytes_decode() {
    let (values, qs) = model::from_bytes(&[255, 1, 0, 0, 0, 0, 0, 0, 3]);
    assert_eq!((values, qs), (vec![511 >> 3], vec![1.0]));
}

#[test]
fn fuzz_weighted_bytes_decode() {
    let (pairs, qs) = model::pairs_from_bytes(&[255, 1, 0, 0, 0, 0, 0, 0, 3, 7]);
    assert_eq!((pairs, qs), (vec![(511 >> 3, 7)], vec![1.0]));
    model::check_weighted(&[(511 >> 3, 7), (3, 0)], &[0.5]);
}

/// A fuzz find (CI, 2026-11-30): values whose buckets put the sum exactly
/// 1/128 above the exact one; the mean's check divided in f64 and read the
/// bound as exceeded by a rounding.
#[test]
fn mean_exactly_at_the_error_bound() {
    let bytes = [
        0u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10,
    ];
    let (values, qs) = model::from_bytes(&bytes);
    model::check(&values, &qs);
}
