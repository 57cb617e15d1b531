//! Loom models of the rate limiter's concurrent invariants, through the
//! public API (the crate's sync facade is loom under `--cfg loom`).
//!
//! Under loom the waiting path arms no Tokio timer, so every model wakes its
//! waiters through `refund`; a lost wake-up shows up as a loom deadlock.

#![cfg(loom)]

use flowguard::clock::ManualClock;
use flowguard::rate::{Quota, RateLimiter};
use futures::FutureExt;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

fn limiter(burst: u32) -> RateLimiter<ManualClock> {
    // One token per hour: the stopped clock never refills during a model.
    let q = Quota::per_hour(burst).unwrap();
    RateLimiter::with_clock(q, ManualClock::new())
}

/// Concurrent `try_acquire` never admits more than the bucket holds.
#[test]
fn concurrent_try_acquire_admits_at_most_the_burst() {
    loom::model(|| {
        let l = limiter(2);
        let admitted = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (l, admitted) = (l.clone(), admitted.clone());
                thread::spawn(move || {
                    if l.try_acquire(1).is_ok() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        if l.try_acquire(1).is_ok() {
            admitted.fetch_add(1, Ordering::Relaxed);
        }
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 2);
    });
}

/// The FIFO hand-off never loses a wake-up: two queued waiters and a refund
/// racing with them both complete.
#[test]
fn fifo_hand_off_never_loses_a_wake_up() {
    loom::model(|| {
        let l = limiter(2);
        l.try_acquire(2).unwrap();
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let l = l.clone();
                thread::spawn(move || loom::future::block_on(l.acquire(1)).unwrap())
            })
            .collect();
        l.refund(2);
        for h in hs {
            h.join().unwrap();
        }
        let s = l.snapshot();
        assert_eq!((s.available, s.waiters), (0, 0));
    });
}

/// A waiter cancelled after one poll consumes nothing and leaves no place.
#[test]
fn cancelled_waiter_consumes_nothing() {
    loom::model(|| {
        let l = limiter(1);
        l.try_acquire(1).unwrap();
        let l2 = l.clone();
        let h = thread::spawn(move || {
            // Poll once, then drop.
            l2.acquire(1).now_or_never().is_some()
        });
        l.refund(1);
        let a_got_it = h.join().unwrap();
        let s = l.snapshot();
        assert_eq!(s.waiters, 0);
        assert_eq!(s.available, if a_got_it { 0 } else { 1 });
    });
}

/// Queued waiters are not barged by `try_acquire`, and a refund that races
/// with a waiter joining the queue still reaches it.
#[test]
fn refund_reaches_a_waiter_joining_the_queue() {
    loom::model(|| {
        let l = limiter(1);
        l.try_acquire(1).unwrap();
        let l2 = l.clone();
        let h = thread::spawn(move || loom::future::block_on(l2.acquire(1)).unwrap());
        l.refund(1);
        h.join().unwrap();
        assert!(
            l.try_acquire(1).is_err(),
            "the one token went to the waiter"
        );
        assert_eq!(l.snapshot().waiters, 0);
    });
}
