//! The histogram's reference: exact quantiles of a sorted copy. Shared by
//! `tests/prop_histogram.rs` and `fuzz/fuzz_targets/histogram.rs`.

#![allow(dead_code)]

use flowguard::histogram::Histogram;

/// The exact sample quantile with the snapshot's definition: the value of
/// rank `ceil(q * n)` (at least 1) in sorted order.
pub(crate) fn exact(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len() as u64;
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    sorted[rank as usize - 1]
}

/// Records `values` and checks the snapshot against the exact answers:
/// count, min and max exact; the sum exact for the overflow bucket's
/// values (wrapping) and within 1/128 of the exact sum for the others; every quantile in `qs` (and
/// the usual ones) within 1/128 of the exact one for values below 2^40,
/// exact at both ends, monotone in q.
pub(crate) fn check(values: &[u64], qs: &[f64]) {
    let h = Histogram::new();
    for &v in values {
        h.record(v);
    }
    let s = h.snapshot();
    if values.is_empty() {
        assert_eq!((s.count(), s.p50(), s.max()), (0, 0, 0));
        return;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    assert_eq!(s.count(), values.len() as u64);
    let (normal, overflow): (Vec<u64>, Vec<u64>) = values.iter().partition(|&&v| v < 1 << 40);
    let normal_sum: u64 = normal.iter().sum(); // < 2^40 * len: no overflow
    let overflow_sum = overflow.iter().fold(0u64, |a, &v| a.wrapping_add(v));
    let got = s.sum().wrapping_sub(overflow_sum);
    assert!(
        got.abs_diff(normal_sum) as f64 <= normal_sum as f64 / 128.0,
        "sum {got} exact {normal_sum}"
    );
    if normal.iter().all(|&v| v < 128) {
        assert_eq!(got, normal_sum);
    }
    // The mean: the sum over the count, kept between min and max.
    let mean = s.mean();
    assert!(sorted[0] as f64 <= mean && mean <= *sorted.last().unwrap() as f64);
    if overflow.is_empty() {
        let exact = normal_sum as f64 / values.len() as f64;
        // The bound is reached exactly when every value sits at the far
        // end of its bucket; the divisions round in f64, so allow for that.
        assert!(
            (mean - exact).abs() <= exact / 128.0 * (1.0 + 1e-12) + 1e-9,
            "mean {mean} exact {exact}"
        );
    }
    assert_eq!(s.min(), sorted[0]);
    assert_eq!(s.max(), *sorted.last().unwrap());
    assert_eq!(s.quantile(0.0), sorted[0]);
    assert_eq!(s.quantile(1.0), *sorted.last().unwrap());
    let mut last = 0;
    let usual = [0.0, 0.5, 0.9, 0.99, 0.999, 1.0];
    let mut all: Vec<f64> = qs
        .iter()
        .copied()
        .filter(|q| (0.0..=1.0).contains(q))
        .collect();
    all.extend(usual);
    all.sort_by(f64::total_cmp);
    for q in all {
        let want = exact(&sorted, q);
        let got = s.quantile(q);
        assert!(got >= last, "not monotone at q {q}");
        last = got;
        if want < 1 << 40 {
            assert!(
                got.abs_diff(want) as f64 <= want as f64 / 128.0,
                "q {q} got {got} exact {want}"
            );
        }
    }
}

/// Values and quantiles from fuzz bytes: 8 bytes per value, shifted by a
/// byte-chosen amount so every magnitude appears; the first byte picks
/// one extra quantile.
pub(crate) fn from_bytes(data: &[u8]) -> (Vec<u64>, Vec<f64>) {
    let q = data.first().map_or(0.5, |&b| f64::from(b) / 255.0);
    let values = data
        .chunks_exact(9)
        .map(|c| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&c[..8]);
            u64::from_le_bytes(raw) >> (c[8] % 64)
        })
        .collect();
    (values, vec![q])
}

/// `record_n(v, c)` against `c` calls of `record(v)`: the two snapshots
/// are equal (so every check above holds for weighted records too), and
/// the expanded values pass [`check`].
pub(crate) fn check_weighted(pairs: &[(u64, u8)], qs: &[f64]) {
    let weighted = Histogram::new();
    let repeated = Histogram::new();
    let mut expanded = Vec::new();
    for &(v, c) in pairs {
        weighted.record_n(v, u64::from(c));
        for _ in 0..c {
            repeated.record(v);
            expanded.push(v);
        }
    }
    assert_eq!(weighted.snapshot(), repeated.snapshot());
    check(&expanded, qs);
}

/// Weighted values from fuzz bytes: as [`from_bytes`], with a tenth byte
/// per value for its count (0 ..= 255).
pub(crate) fn pairs_from_bytes(data: &[u8]) -> (Vec<(u64, u8)>, Vec<f64>) {
    let q = data.first().map_or(0.5, |&b| f64::from(b) / 255.0);
    let pairs = data
        .chunks_exact(10)
        .map(|c| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&c[..8]);
            (u64::from_le_bytes(raw) >> (c[8] % 64), c[9])
        })
        .collect();
    (pairs, vec![q])
}
