//! Loom models of the rate limiter's concurrent invariants, through the
//! public API (the crate's sync facade is loom under `--cfg loom`).
//!
//! Under loom the waiting path arms no Tokio timer, so every model wakes its
//! waiters through `refund`; a lost wake-up shows up as a loom deadlock.

#![cfg(loom)]

use std::time::Duration;

use flowguard::clock::{Clock, ManualClock};
use flowguard::rate::{KeyedRateLimiter, Quota, RateLimiter, TryAcquireError};
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

/// A check racing with a `set_quota` whose conversion is exact (the TAT
/// stays bit-identical, only the flag marks the change) is judged under the
/// old quota or the new one, and the bucket ends as one of the two
/// sequential orders leaves it: never a check judged under the old quota
/// whose debt then escapes the conversion.
#[test]
fn try_acquire_racing_an_exact_set_quota_is_linearizable() {
    // 2 per hour, burst 2 (T = 30 min) -> 1 per hour, burst 1 (T = 60 min).
    // At the origin instant the bucket is full under both: exact.
    let q1 = Quota::per_hour(2).unwrap();
    let q2 = Quota::per_hour(1).unwrap();
    let min = |m: u64| Some(Duration::from_secs(60 * m));
    // Check first: admitted under q1 (1 of 2 left = full under q2), then one more.
    // set_quota first: admitted under q2, the next token 60 min away.
    let sequential = [(true, None), (true, min(60))];
    loom::model(move || {
        let clock = ManualClock::new();
        let l = RateLimiter::with_clock(q1, clock.clone());
        let l2 = l.clone();
        let h = thread::spawn(move || l2.try_acquire(1).is_ok());
        l.set_quota(q2);
        let admitted = h.join().unwrap();
        let next = match l.try_acquire(1) {
            Ok(()) => None,
            Err(TryAcquireError::NotUntil { retry_after }) => Some(retry_after - clock.now()),
            Err(e) => panic!("{e:?}"),
        };
        assert!(
            sequential.contains(&(admitted, next)),
            "not a sequential outcome: admitted {admitted}, next token in {next:?}"
        );
    });
}

/// The head parked on a clock moved by hand is woken by the move: a move
/// racing with the head's check (made before its clock read) is never lost.
#[test]
fn a_move_of_the_manual_clock_reaches_the_parked_head() {
    loom::model(|| {
        let clock = ManualClock::new();
        let l = RateLimiter::with_clock(Quota::per_hour(1).unwrap(), clock.clone());
        l.try_acquire(1).unwrap();
        let l2 = l.clone();
        let h = thread::spawn(move || loom::future::block_on(l2.acquire(1)).unwrap());
        clock.advance(Duration::from_secs(3600));
        h.join().unwrap();
        assert_eq!(l.snapshot().waiters, 0);
    });
}

/// Keyed: checks of one held key run under the shard's shared lock and
/// race on the key's cell; the compare-and-swap admits exactly the burst.
#[test]
fn keyed_checks_of_a_held_key_admit_exactly_the_burst() {
    loom::model(|| {
        let l = KeyedRateLimiter::<u8, _>::builder(Quota::per_hour(2).unwrap())
            .shards(1)
            .build_with_clock(ManualClock::new())
            .unwrap();
        l.try_acquire(&1, 1).unwrap(); // held, one token left... then a refund
        l.refund(&1, 1); // back to two
        let l2 = l.clone();
        let h = thread::spawn(move || l2.try_acquire(&1, 1).is_ok());
        let mine = [l.try_acquire(&1, 1).is_ok(), l.try_acquire(&1, 1).is_ok()];
        let theirs = h.join().unwrap();
        let admitted = mine.iter().filter(|&&a| a).count() + usize::from(theirs);
        assert_eq!(admitted, 2);
        let s = l.snapshot();
        assert_eq!((s.admitted, s.refused, s.keys), (3, 1, 1));
    });
}

/// Keyed: two checks of one unseen key race to insert it; the second to
/// take the exclusive lock finds it there and takes from its cell, so the
/// key is inserted once and a burst of 1 admits one of them.
#[test]
fn keyed_racing_inserts_of_one_key_insert_it_once() {
    for seed in seeds() {
        loom::model(move || racing_inserts(seed));
    }
}

fn racing_inserts(seed: u64) {
    let l = KeyedRateLimiter::<u8, _>::builder(Quota::per_hour(1).unwrap())
        .shards(1)
        .hasher_seed(seed)
        .build_with_clock(ManualClock::new())
        .unwrap();
    let l2 = l.clone();
    let h = thread::spawn(move || l2.try_acquire(&7, 1).is_ok());
    let mine = l.try_acquire(&7, 1).is_ok();
    let theirs = h.join().unwrap();
    assert!(mine ^ theirs, "exactly one admitted: {mine} {theirs}");
    assert_eq!(l.len(), 1);
}

/// The keyed models' hasher seeds: the limiter's hasher is fixed under
/// loom (a model must replay the same table layout on every iteration),
/// so each model runs over several seeds to cover several layouts (which
/// key a sweep visits first, which slots the keys land in), plus one drawn
/// at random per run and printed, as the shipping hasher would be.
fn seeds() -> Vec<u64> {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(0u8);
    println!("random hasher seed: {random}");
    (0..8).chain([random]).collect()
}

/// Keyed: an idle key reclaimed by a new key's sweep while another thread
/// checks it loses and double-counts nothing: the check either took the
/// held cell (the key is then busy and survives the sweep) or, the cell
/// swept, starts a fresh one, which holds what the swept one held (a full
/// bucket). Either way two checks with a burst of 1 get one token.
#[test]
fn keyed_key_reclaimed_during_a_check_keeps_its_tokens() {
    for seed in seeds() {
        println!("seed {seed}");
        loom::model(move || reclaimed_during_a_check(seed));
    }
}

fn reclaimed_during_a_check(seed: u64) {
    let clock = ManualClock::new();
    let l = KeyedRateLimiter::<u8, _>::builder(Quota::per_hour(1).unwrap())
        .shards(1)
        .max_keys(2)
        .hasher_seed(seed)
        .build_with_clock(clock.clone())
        .unwrap();
    l.try_acquire(&1, 1).unwrap();
    l.try_acquire(&2, 1).unwrap();
    clock.advance(Duration::from_secs(3600)); // both idle: full buckets
    let l2 = l.clone();
    // The shard is full: the new key sweeps the idle ones.
    let h = thread::spawn(move || l2.try_acquire(&3, 1).is_ok());
    let first = l.try_acquire(&1, 1).is_ok();
    let second = l.try_acquire(&1, 1).is_ok();
    assert!(h.join().unwrap());
    assert_eq!((first, second), (true, false), "seed {seed}");
    let s = l.snapshot();
    // Key 2 swept, 1 and 3 held; the sweep made room, nobody evicted.
    assert_eq!((s.keys, s.evicted_while_full), (2, 0));
    assert_eq!((s.admitted, s.refused), (4, 1));
}

/// Keyed: a new key that finds its shard full evicts one of two busy keys
/// while another thread checks one of them. The check is judged on the
/// key's bucket either before the eviction (refused: its debt is there)
/// or after it (the key evicted, a fresh bucket: admitted, and its
/// re-insertion evicts in turn); never on a cell being removed. Over the
/// seeds the sample's first key, the one evicted on a tie, is either key.
#[test]
fn keyed_eviction_racing_a_check_of_a_busy_key_is_linearizable() {
    for seed in seeds() {
        loom::model(move || {
            let l = KeyedRateLimiter::<u8, _>::builder(Quota::per_hour(1).unwrap())
                .shards(1)
                .max_keys(2)
                .hasher_seed(seed)
                .build_with_clock(ManualClock::new())
                .unwrap();
            l.try_acquire(&1, 1).unwrap(); // both busy for an hour,
            l.try_acquire(&2, 1).unwrap(); // equal TATs
            let l2 = l.clone();
            let h = thread::spawn(move || l2.try_acquire(&3, 1).is_ok());
            let admitted = l.try_acquire(&1, 1).is_ok();
            assert!(h.join().unwrap(), "a new key is never refused");
            let s = l.snapshot();
            assert_eq!(s.keys, 2);
            // Admitted only if key 1 was evicted first; its fresh bucket
            // then needed room too.
            let evictions = if admitted { 2 } else { 1 };
            assert_eq!(s.evicted_while_full, evictions, "seed {seed}");
            assert_eq!(
                (s.admitted, s.refused),
                (3 + u64::from(admitted), u64::from(!admitted))
            );
        });
    }
}
