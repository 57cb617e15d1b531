//! Loom models of the loader's concurrent invariants, through the public API.
//!
//! Under `--cfg loom` each batch's worker is a loom thread (see
//! `spawn_worker`), so the models explore the interleavings of callers
//! registering keys, workers taking them, and answers being published.
#![cfg(loom)]

use std::collections::HashMap;
use std::task::{Context, Poll};

use flowguard::batch::Loader;
use loom::future::block_on;
use loom::sync::{Arc, Mutex};
use loom::thread;

type Calls = Arc<Mutex<Vec<Vec<u64>>>>;

fn loader(calls: &Calls, max_batch_size: usize) -> Loader<u64, u64, ()> {
    let calls = Arc::clone(calls);
    Loader::builder(move |keys: Vec<u64>| {
        calls.lock().unwrap().push(keys.clone());
        async move {
            Ok(keys
                .into_iter()
                .map(|k| (k, k * 10))
                .collect::<HashMap<_, _>>())
        }
    })
    .max_batch_size(max_batch_size)
    .build()
    .unwrap()
}

fn no_batch_has_a_duplicate(calls: &Calls) {
    for batch in calls.lock().unwrap().iter() {
        let mut sorted = batch.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            batch.len(),
            "key fetched twice in one batch: {batch:?}"
        );
    }
}

/// Two callers load overlapping keys at once: each gets its values, and no
/// batch fetches a key twice.
#[test]
fn overlapping_loads_each_get_their_values() {
    loom::model(|| {
        let calls: Calls = Arc::new(Mutex::new(Vec::new()));
        let l = loader(&calls, 8);
        let l2 = l.clone();
        let t = thread::spawn(move || {
            let out = block_on(l2.load(2));
            assert_eq!(out.unwrap(), 20);
        });
        let out = block_on(l.load_many([1, 2]));
        assert_eq!(
            out.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [10, 20]
        );
        t.join().unwrap();
        no_batch_has_a_duplicate(&calls);
        let fetched: usize = calls.lock().unwrap().iter().map(Vec::len).sum();
        assert!((2..=3).contains(&fetched), "fetched {fetched} keys");
    });
}

/// A caller that registered a key and then gave up does not take the value
/// from another caller waiting on the same key.
#[test]
fn a_cancelled_waiter_loses_no_one_elses_value() {
    loom::model(|| {
        let calls: Calls = Arc::new(Mutex::new(Vec::new()));
        let l = loader(&calls, 8);
        let l2 = l.clone();
        let t = thread::spawn(move || {
            let mut load = l2.load(1);
            let waker = futures::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            if let Poll::Ready(v) = std::pin::Pin::new(&mut load).poll(&mut cx) {
                assert_eq!(v.unwrap(), 10);
            }
            drop(load);
        });
        assert_eq!(block_on(l.load(1)).unwrap(), 10);
        t.join().unwrap();
        no_batch_has_a_duplicate(&calls);
    });
}

/// A batch filled by one caller while its worker is taking it: the keys end
/// up in exactly one batch call each, and every waiter is answered.
#[test]
fn sealing_races_the_worker_without_losing_keys() {
    loom::model(|| {
        let calls: Calls = Arc::new(Mutex::new(Vec::new()));
        let l = loader(&calls, 2);
        let l2 = l.clone();
        let t = thread::spawn(move || assert_eq!(block_on(l2.load(2)).unwrap(), 20));
        assert_eq!(block_on(l.load(1)).unwrap(), 10);
        t.join().unwrap();
        let mut fetched: Vec<u64> = calls.lock().unwrap().iter().flatten().copied().collect();
        fetched.sort_unstable();
        assert_eq!(fetched, [1, 2]);
        let m = l.metrics();
        assert_eq!((m.keys_in_flight, m.keys_waiting), (0, 0));
    });
}

/// `clear` then `prime` from another thread while a fetch of the key is at
/// any stage (collecting, running, answered): the prime is stored and the
/// fetch never overwrites it; the waiting load still gets the fetch.
#[test]
fn clear_then_prime_wins_over_a_fetch_at_any_stage() {
    loom::model(|| {
        let calls: Calls = Arc::new(Mutex::new(Vec::new()));
        let calls2 = Arc::clone(&calls);
        let l = Loader::builder(move |keys: Vec<u64>| {
            calls2.lock().unwrap().push(keys.clone());
            async move {
                Ok::<_, ()>(
                    keys.into_iter()
                        .map(|k| (k, k * 10))
                        .collect::<HashMap<_, _>>(),
                )
            }
        })
        .cache(4)
        .build()
        .unwrap();
        // Registered (its worker thread spawned), perhaps already answered.
        let mut load = l.load(1);
        let waker = futures::task::noop_waker();
        let first = std::pin::Pin::new(&mut load).poll(&mut Context::from_waker(&waker));
        let l2 = l.clone();
        let t = thread::spawn(move || {
            l2.clear(&1);
            assert!(l2.prime(1, 99), "clear then prime always stores");
        });
        let fetched = match first {
            Poll::Ready(v) => v,
            Poll::Pending => block_on(load),
        };
        assert_eq!(fetched.unwrap(), 10);
        t.join().unwrap();
        assert_eq!(l.try_load(&1).unwrap().unwrap(), 99);
        assert_eq!(*calls.lock().unwrap(), vec![vec![1]]);
    });
}

/// LRU under concurrency: a cache hit (which reorders the cache) races a
/// fetch whose answer evicts the least recently used entry. Whichever runs
/// first, every caller gets its value, the cache stays at its bound, and
/// the key just answered is cached.
#[test]
fn lru_hits_race_an_evicting_insert() {
    loom::model(|| {
        let calls: Calls = Arc::new(Mutex::new(Vec::new()));
        let calls2 = Arc::clone(&calls);
        let l = Loader::builder(move |keys: Vec<u64>| {
            calls2.lock().unwrap().push(keys.clone());
            async move {
                Ok::<_, ()>(
                    keys.into_iter()
                        .map(|k| (k, k * 10))
                        .collect::<HashMap<_, _>>(),
                )
            }
        })
        .cache(2)
        .cache_eviction(flowguard::batch::CacheEviction::Lru)
        .build()
        .unwrap();
        assert!(l.prime(1, 10));
        assert!(l.prime(2, 20));
        let l2 = l.clone();
        let t = thread::spawn(move || assert_eq!(block_on(l2.load(1)).unwrap(), 10));
        assert_eq!(block_on(l.load(3)).unwrap(), 30);
        t.join().unwrap();
        let m = l.metrics();
        assert_eq!(m.cache_entries, 2);
        assert!(l.try_load(&3).is_some(), "the fresh answer is cached");
        // Key 1 was either hit before the insert (then 2 was evicted) or
        // evicted first (then fetched again): never lost, never fetched twice at once.
        no_batch_has_a_duplicate(&calls);
        let fetched: Vec<Vec<u64>> = calls.lock().unwrap().clone();
        assert!(
            fetched == [vec![3]] || fetched == [vec![3], vec![1]],
            "{fetched:?}"
        );
    });
}
