//! The histogram's error bound, proven against exact quantiles: for random
//! samples (spread over every magnitude the buckets cover), every quantile
//! the snapshot reports is within 1/128 of the exact sample quantile of a
//! sorted copy, and count, sum, min and max are exact.

use flowguard::histogram::Histogram;
use proptest::prelude::*;

/// The exact sample quantile with the snapshot's definition: the value of
/// rank `ceil(q * n)` (at least 1) in sorted order.
fn exact(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len() as u64;
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    sorted[rank as usize - 1]
}

/// A value of random magnitude below 2^40 (the precise range).
fn value() -> impl Strategy<Value = u64> {
    (0u32..40, any::<u64>()).prop_map(|(bits, r)| if bits == 0 { 0 } else { r >> (64 - bits) })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn quantiles_within_one_percent(
        values in prop::collection::vec(value(), 1..400),
        qs in prop::collection::vec(0.0f64..=1.0, 1..8),
    ) {
        let h = Histogram::new();
        for &v in &values {
            h.record(v);
        }
        let s = h.snapshot();
        let mut sorted = values.clone();
        sorted.sort_unstable();
        prop_assert_eq!(s.count(), values.len() as u64);
        prop_assert_eq!(s.sum(), values.iter().sum::<u64>());
        prop_assert_eq!(s.min(), sorted[0]);
        prop_assert_eq!(s.max(), *sorted.last().unwrap());
        for q in qs.into_iter().chain([0.0, 0.5, 0.9, 0.99, 0.999, 1.0]) {
            let want = exact(&sorted, q);
            let got = s.quantile(q);
            prop_assert!(
                got.abs_diff(want) as f64 <= want as f64 / 128.0,
                "q {} got {} exact {}", q, got, want
            );
        }
        prop_assert_eq!(s.quantile(0.0), sorted[0]);
        prop_assert_eq!(s.quantile(1.0), *sorted.last().unwrap());
    }

    /// Quantiles never decrease with q and stay within [min, max].
    #[test]
    fn quantiles_are_monotone(values in prop::collection::vec(any::<u64>(), 1..200)) {
        let h = Histogram::new();
        for &v in &values {
            h.record(v);
        }
        let s = h.snapshot();
        let mut last = s.min();
        for i in 0..=100 {
            let got = s.quantile(i as f64 / 100.0);
            prop_assert!(got >= last && got <= s.max());
            last = got;
        }
    }
}
