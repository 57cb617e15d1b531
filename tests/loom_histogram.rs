//! Loom model of the histogram: concurrent records are never lost or
//! double-counted, and a snapshot taken while they run is consistent
//! (count between what finished and what started, min <= quantiles <= max).
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_histogram`.
#![cfg(loom)]

use flowguard::histogram::Histogram;
use loom::sync::Arc;
use loom::thread;

#[test]
fn concurrent_records_and_snapshot() {
    loom::model(|| {
        let h = Arc::new(Histogram::new());
        let a = {
            let h = h.clone();
            thread::spawn(move || h.record(1))
        };
        let b = {
            let h = h.clone();
            thread::spawn(move || h.record(6))
        };
        let mid = h.snapshot();
        assert!(mid.count() <= 2);
        if mid.count() > 0 {
            assert!(mid.min() <= mid.p50() && mid.p50() <= mid.max());
            assert!(mid.min() >= 1 && mid.max() <= 7, "{mid:?}");
        }
        a.join().unwrap();
        b.join().unwrap();
        let end = h.snapshot();
        assert_eq!(end.count(), 2);
        // Loom's buckets are coarse (width 2 from 4 up): 6 counts as the
        // middle of [6, 8) in the sum.
        assert_eq!(end.sum(), 1 + 7);
        assert_eq!((end.min(), end.max()), (1, 6));
    });
}

/// Two records of the same bucket at once: the counter's read-modify-write
/// loses neither.
#[test]
fn same_bucket_counts_both() {
    loom::model(|| {
        let h = Arc::new(Histogram::new());
        let t = {
            let h = h.clone();
            thread::spawn(move || h.record(2))
        };
        h.record(2);
        t.join().unwrap();
        let s = h.snapshot();
        assert_eq!((s.count(), s.min(), s.max(), s.p50()), (2, 2, 2, 2));
    });
}
