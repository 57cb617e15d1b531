//! Loom models of the retry budget's and the retry's shared state, through
//! the public API (the crate's sync facade is loom under `--cfg loom`).

#![cfg(loom)]

use std::time::Duration;

use flowguard::retry::{Backoff, Retry, RetryBudget};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

fn budget(ratio: f64) -> RetryBudget {
    RetryBudget::builder()
        .ratio(ratio)
        .min_per_sec(0)
        .ttl(Duration::from_secs(3600)) // nothing ages out during a model
        .build()
        .unwrap()
}

/// Concurrent withdrawals never take more retries than were paid for.
#[test]
fn concurrent_withdrawals_never_overdraw() {
    loom::model(|| {
        let b = budget(1.0);
        b.deposit();
        let won = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (b, won) = (b.clone(), won.clone());
                thread::spawn(move || {
                    if b.try_withdraw() {
                        won.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(won.load(Ordering::Relaxed), 1);
        assert_eq!(b.remaining(), 0);
    });
}

/// Deposits racing withdrawals: every deposit is counted once, and what
/// is left is exactly what was paid minus what was taken.
#[test]
fn deposits_and_withdrawals_conserve_the_balance() {
    loom::model(|| {
        let b = budget(1.0);
        let taken = Arc::new(AtomicUsize::new(0));
        let depositor = {
            let b = b.clone();
            thread::spawn(move || {
                b.deposit();
                b.deposit();
            })
        };
        let withdrawer = {
            let (b, taken) = (b.clone(), taken.clone());
            thread::spawn(move || {
                for _ in 0..2 {
                    if b.try_withdraw() {
                        taken.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        depositor.join().unwrap();
        withdrawer.join().unwrap();
        let taken = taken.load(Ordering::Relaxed) as u64;
        assert_eq!(b.remaining() + taken, 2);
    });
}

/// Clones calling at once share the counters: nothing is lost.
#[test]
fn clones_count_every_attempt() {
    loom::model(|| {
        let retry = Retry::<u32, ()>::builder()
            .max_retries(1)
            .backoff(Backoff::constant(Duration::ZERO))
            .build()
            .unwrap();
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let r = retry.clone();
                thread::spawn(move || {
                    let mut first = true;
                    loom::future::block_on(r.call(|| {
                        let fail = std::mem::replace(&mut first, false);
                        async move { if fail { Err(()) } else { Ok(1) } }
                    }))
                })
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), Ok(1));
        }
        let m = retry.metrics();
        assert_eq!(
            (m.calls, m.attempts, m.retries, m.succeeded_after_retry),
            (2, 4, 2, 2)
        );
    });
}
