//! Loom models of the semaphore's concurrent invariants. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_semaphore`.
#![cfg(loom)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use flowguard::semaphore::{AcquireError, Semaphore};
use loom::future::block_on;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// (a) A release while an acquirer waits always wakes it (no lost wake-up):
/// `block_on` would deadlock, and loom report it, if the wake were lost.
#[test]
fn release_wakes_waiting_acquirer() {
    loom::model(|| {
        let sem = Semaphore::new(1);
        let held = sem.try_acquire_owned().unwrap();
        let s2 = sem.clone();
        let t = thread::spawn(move || {
            let p = block_on(s2.acquire()).unwrap();
            assert_eq!(p.num_permits(), 1);
        });
        drop(held);
        t.join().unwrap();
        assert_eq!(sem.available(), 1);
    });
}

/// (b) Permits are conserved under concurrent acquire, release, cancel and
/// resize: at quiescence available == capacity and nobody waits.
#[test]
fn permits_conserved_under_acquire_cancel_resize() {
    loom::model(|| {
        let sem = Semaphore::new(2);
        let a = sem.clone();
        let t1 = thread::spawn(move || {
            let p = block_on(a.acquire_many(2)).unwrap();
            drop(p);
        });
        let b = sem.clone();
        let t2 = thread::spawn(move || {
            // Poll once (maybe queued, maybe partially assigned), then cancel.
            let mut fut = pin!(b.acquire_many(2));
            let _ = poll_once(fut.as_mut());
        });
        sem.set_capacity(3).unwrap();
        sem.set_capacity(2).unwrap();
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(sem.waiters(), 0);
        assert_eq!(sem.capacity(), 2);
        assert_eq!(sem.available(), 2);
    });
}

/// (b') Close racing with a waiter and a holder: the waiter fails with
/// `Closed` or gets its permit; either way every permit comes home.
#[test]
fn close_races_with_waiter_and_release() {
    loom::model(|| {
        let sem = Semaphore::new(1);
        let held = sem.try_acquire_owned().unwrap();
        let s2 = sem.clone();
        let t = thread::spawn(move || match block_on(s2.acquire()) {
            Ok(p) => drop(p),
            Err(e) => assert_eq!(e, AcquireError::Closed),
        });
        let s3 = sem.clone();
        let closer = thread::spawn(move || s3.close());
        drop(held);
        t.join().unwrap();
        closer.join().unwrap();
        assert_eq!(sem.available(), 1);
        assert_eq!(sem.waiters(), 0);
    });
}

/// (c) Two queued waiters are served in arrival order, whatever the
/// interleaving of the releasing thread.
#[test]
fn queued_waiters_served_in_arrival_order() {
    loom::model(|| {
        let sem = Semaphore::new(1);
        let held = sem.try_acquire_owned().unwrap();
        let mut first = pin!(sem.acquire());
        let mut second = pin!(sem.acquire());
        assert!(poll_once(first.as_mut()).is_pending());
        assert!(poll_once(second.as_mut()).is_pending());
        let t = thread::spawn(move || drop(held));
        let p = block_on(first.as_mut()).unwrap();
        assert!(
            poll_once(second.as_mut()).is_pending(),
            "second overtook first"
        );
        drop(p);
        t.join().unwrap();
        assert!(matches!(poll_once(second.as_mut()), Poll::Ready(Ok(_))));
    });
}

/// Holders never exceed the capacity while a resize races them.
#[test]
fn holders_never_exceed_capacity_across_shrink() {
    loom::model(|| {
        let sem = Semaphore::new(2);
        let inside = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for _ in 0..2 {
            let (sem, inside) = (sem.clone(), inside.clone());
            threads.push(thread::spawn(move || {
                if let Ok(p) = block_on(sem.acquire()) {
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    assert!(now <= 2);
                    inside.fetch_sub(1, Ordering::SeqCst);
                    drop(p);
                }
            }));
        }
        sem.set_capacity(1).unwrap();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(sem.available(), 1);
    });
}

/// (e) Newest-first with a full queue: two acquirers race a release. Each
/// ends exactly once (served, or evicted by the other), nobody hangs (a
/// lost wake-up would deadlock `block_on`), and every permit comes back.
#[test]
fn newest_first_eviction_races_a_release() {
    use flowguard::semaphore::QueueOrder;
    loom::model(|| {
        let sem = Semaphore::builder()
            .capacity(1)
            .queue_limit(1)
            .order(QueueOrder::NewestFirst)
            .build()
            .unwrap();
        let held = sem.try_acquire_owned().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let (s, served) = (sem.clone(), served.clone());
                thread::spawn(move || match block_on(s.acquire()) {
                    Ok(p) => {
                        served.fetch_add(1, Ordering::Relaxed);
                        drop(p);
                    }
                    Err(e) => assert_eq!(e, AcquireError::Evicted),
                })
            })
            .collect();
        drop(held);
        for t in ts {
            t.join().unwrap();
        }
        assert!(served.load(Ordering::Relaxed) >= 1);
        assert_eq!(sem.waiters(), 0);
        assert_eq!(sem.available(), 1);
    });
}
