//! Behaviour of the async semaphore, on the paused Tokio clock.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use flowguard::semaphore::{AcquireError, MAX_PERMITS, QueueOrder, Semaphore};
use flowguard::{ConfigErrorKind, clock::ManualClock};
use tokio::time::Instant;

fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::pin::Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test(start_paused = true)]
async fn weighted_waiters_are_served_in_arrival_order() {
    let sem = Semaphore::new(3);
    let all = sem.acquire_many(3).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (i, n) in [(0, 3), (1, 1), (2, 2)] {
        let (sem, order) = (sem.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let p = sem.acquire_many(n).await.unwrap();
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(p);
        }));
        tokio::task::yield_now().await; // enqueue in this order
    }
    assert_eq!(sem.waiters(), 3);
    // One free permit is not enough for the head (needs 3); the 1-permit
    // waiter behind it must not overtake.
    let mut all = all;
    let one = all.split(1).unwrap();
    drop(one);
    tokio::task::yield_now().await;
    assert!(order.lock().unwrap().is_empty());
    drop(all);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    assert_eq!(sem.available(), 3);
}

#[tokio::test]
async fn try_acquire_never_barges_past_a_queued_waiter() {
    let sem = Semaphore::new(2);
    let held = sem.try_acquire_many(2).unwrap();
    let mut waiter = Box::pin(sem.acquire_many(2));
    assert!(poll_once(&mut waiter).is_pending());
    let mut held = held;
    drop(held.split(1).unwrap()); // one permit returns: assigned to the waiter
    assert_eq!(sem.try_acquire().unwrap_err(), AcquireError::NoPermits);
    assert_eq!(sem.available(), 0);
    drop(held);
    let p = match poll_once(&mut waiter) {
        Poll::Ready(Ok(p)) => p,
        other => panic!("expected permits, got {other:?}"),
    };
    assert_eq!(p.num_permits(), 2);
}

#[tokio::test]
async fn impossible_requests_fail_at_once() {
    let sem = Semaphore::new(4);
    let too_large = AcquireError::TooLarge {
        requested: 5,
        capacity: 4,
    };
    assert_eq!(sem.acquire_many(5).await.unwrap_err(), too_large);
    assert_eq!(sem.try_acquire_many(5).unwrap_err(), too_large);
    assert_eq!(sem.acquire_many_owned(5).await.unwrap_err(), too_large);
    assert_eq!(
        sem.try_acquire_many(usize::MAX).unwrap_err(),
        AcquireError::TooLarge {
            requested: usize::MAX,
            capacity: 4
        }
    );
    let empty = Semaphore::new(0);
    assert!(matches!(
        empty.acquire().await,
        Err(AcquireError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn zero_permits_are_granted_at_once_even_when_none_are_free() {
    let sem = Semaphore::new(1);
    let _all = sem.try_acquire().unwrap();
    let p = sem.acquire_many(0).await.unwrap();
    assert_eq!(p.num_permits(), 0);
    assert_eq!(sem.try_acquire_many(0).unwrap().num_permits(), 0);
}

#[tokio::test]
async fn growing_wakes_waiters_and_shrinking_never_revokes() {
    let sem = Semaphore::new(2);
    let held = sem.acquire_many(2).await.unwrap();
    let mut waiter = Box::pin(sem.acquire_many(2));
    assert!(poll_once(&mut waiter).is_pending());
    sem.set_capacity(5).unwrap();
    let got = match poll_once(&mut waiter) {
        Poll::Ready(Ok(p)) => p,
        other => panic!("grow should have satisfied the waiter: {other:?}"),
    };
    assert_eq!((got.num_permits(), sem.available()), (2, 1));
    // Shrink to 1 while 4 are held: the free one is retired, nothing is revoked.
    sem.set_capacity(1).unwrap();
    assert_eq!((sem.capacity(), sem.available()), (1, 0));
    assert_eq!(held.num_permits(), 2);
    drop(held);
    assert_eq!(sem.available(), 0, "returned permits pay the debt first");
    drop(got);
    assert_eq!(sem.available(), 1);
}

#[tokio::test]
async fn shrinking_below_a_waiters_request_fails_it() {
    let sem = Semaphore::new(4);
    let _held = sem.try_acquire_many(4).unwrap();
    let mut waiter = Box::pin(sem.acquire_many(3));
    assert!(poll_once(&mut waiter).is_pending());
    sem.set_capacity(2).unwrap();
    assert!(matches!(
        poll_once(&mut waiter),
        Poll::Ready(Err(AcquireError::TooLarge {
            requested: 3,
            capacity: 2
        }))
    ));
    assert_eq!(sem.waiters(), 0);
}

#[tokio::test]
async fn close_fails_waiters_and_later_acquires_but_held_permits_return() {
    let sem = Semaphore::new(2);
    let held = sem.try_acquire_many(2).unwrap();
    let s2 = sem.clone();
    let waiter = tokio::spawn(async move { s2.acquire().await.map(|p| p.num_permits()) });
    tokio::task::yield_now().await;
    assert_eq!(sem.waiters(), 1);
    sem.close();
    sem.close(); // idempotent
    assert_eq!(waiter.await.unwrap(), Err(AcquireError::Closed));
    assert_eq!(sem.acquire().await.unwrap_err(), AcquireError::Closed);
    assert_eq!(sem.try_acquire().unwrap_err(), AcquireError::Closed);
    drop(held);
    assert_eq!(sem.available(), 2);
    assert!(sem.is_closed());
}

#[tokio::test]
async fn cancelled_waiter_hands_its_partial_permits_on() {
    let sem = Semaphore::new(3);
    let mut held = sem.try_acquire_many(3).unwrap();
    let mut first = Box::pin(sem.acquire_many(3));
    let mut second = Box::pin(sem.acquire_many(2));
    assert!(poll_once(&mut first).is_pending());
    assert!(poll_once(&mut second).is_pending());
    drop(held.split(2).unwrap()); // 2 assigned to `first`
    assert!(poll_once(&mut first).is_pending());
    drop(first); // cancel: its 2 go to `second`
    match poll_once(&mut second) {
        Poll::Ready(Ok(p)) => assert_eq!(p.num_permits(), 2),
        other => panic!("expected the handed-on permits: {other:?}"),
    }
    drop(held);
    assert_eq!(sem.available(), 3);
    assert_eq!(sem.waiters(), 0);
}

#[tokio::test(start_paused = true)]
async fn acquire_timeout_is_exact_on_the_paused_clock() {
    let sem = Semaphore::new(1);
    let held = sem.acquire().await.unwrap();
    let start = Instant::now();
    let err = sem
        .acquire_timeout(Duration::from_millis(250))
        .await
        .unwrap_err();
    assert_eq!(err, AcquireError::TimedOut);
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(sem.waiters(), 0, "timed-out waiter left the queue");
    drop(held);
    // Free permits win even with a zero timeout or an elapsed deadline.
    assert!(sem.acquire_timeout(Duration::ZERO).await.is_ok());
    assert!(sem.acquire_deadline(start).await.is_ok());
    // Duration::MAX does not overflow.
    assert!(sem.acquire_many_timeout(1, Duration::MAX).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn acquire_timeout_succeeds_when_permit_arrives_before_the_deadline() {
    let sem = Semaphore::new(1);
    let held = sem.acquire_owned().await.unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
    });
    let start = Instant::now();
    let p = sem
        .acquire_timeout(Duration::from_millis(101))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    drop(p);
}

#[tokio::test]
async fn forget_split_and_merge_keep_the_books() {
    let a = Semaphore::new(6);
    let b = Semaphore::new(6);
    let mut p = a.try_acquire_many(4).unwrap();
    assert!(p.split(5).is_none());
    let q = p.split(3).unwrap();
    let foreign = b.try_acquire().unwrap();
    let foreign = p.merge(foreign).unwrap_err();
    assert_eq!(foreign.num_permits(), 1);
    p.merge(q).unwrap();
    assert_eq!(p.num_permits(), 4);
    p.forget();
    assert_eq!((a.capacity(), a.available()), (2, 2));
    let mut o = a.try_acquire_many_owned(2).unwrap();
    let o2 = o.split(1).unwrap();
    o.merge(o2).unwrap();
    assert_eq!(o.semaphore().available(), 0);
    o.forget();
    assert_eq!((a.capacity(), a.available()), (0, 0));
}

#[tokio::test]
async fn forget_fails_waiters_that_can_no_longer_fit() {
    let sem = Semaphore::new(2);
    let p = sem.try_acquire().unwrap();
    let mut waiter = Box::pin(sem.acquire_many(2));
    assert!(poll_once(&mut waiter).is_pending());
    p.forget();
    assert!(matches!(
        poll_once(&mut waiter),
        Poll::Ready(Err(AcquireError::TooLarge {
            requested: 2,
            capacity: 1
        }))
    ));
    assert_eq!(sem.available(), 1);
}

#[test]
fn capacity_limits_are_typed_errors_not_panics() {
    let err = Semaphore::try_new(MAX_PERMITS + 1).unwrap_err();
    assert_eq!(
        (err.component(), err.field(), err.kind()),
        ("semaphore", "capacity", ConfigErrorKind::TooLarge)
    );
    assert!(err.to_string().contains("capacity"));
    assert_eq!(Semaphore::new(usize::MAX).capacity(), MAX_PERMITS);
    let sem = Semaphore::new(MAX_PERMITS - 1);
    assert_eq!(sem.add_permits(5).unwrap_err().field(), "capacity");
    assert_eq!(sem.add_permits(usize::MAX).unwrap_err().field(), "capacity");
    assert_eq!(sem.capacity(), MAX_PERMITS - 1, "nothing changed");
    sem.add_permits(1).unwrap();
    assert_eq!(sem.capacity(), MAX_PERMITS);
    assert!(sem.set_capacity(usize::MAX).is_err());
}

#[test]
fn metrics_report_plain_numbers() {
    let sem = Semaphore::new(3);
    let _p = sem.try_acquire_many(2).unwrap();
    let m = sem.metrics();
    assert_eq!(
        (m.capacity, m.available, m.waiters, m.closed),
        (3, 1, 0, false)
    );
    let dbg = format!("{sem:?}");
    assert!(dbg.contains("available: 1"), "{dbg}");
}

#[test]
fn types_are_send_sync_and_futures_are_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Semaphore>();
    send_sync::<flowguard::semaphore::Permit<'static>>();
    send_sync::<flowguard::semaphore::OwnedPermit>();
    send_sync::<flowguard::semaphore::AcquireOwned>();
    send_sync::<flowguard::semaphore::Acquire<'static>>();
    send_sync::<ManualClock>();
    let sem = Semaphore::new(1);
    send(&sem.acquire_timeout(Duration::from_secs(1)));
    send(&sem.acquire_many_deadline(1, Instant::now()));
    fn unpin<T: Unpin>(_: &T) {}
    unpin(&sem.acquire());
    unpin(&sem.acquire_owned());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_holders_never_exceed_capacity() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let sem = Semaphore::new(3);
    let in_use = Arc::new(AtomicUsize::new(0));
    let high = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (sem, in_use, high) = (sem.clone(), in_use.clone(), high.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let n = 1 + (i % 3);
                let _p = sem.acquire_many(n).await.unwrap();
                let now = in_use.fetch_add(n, Ordering::SeqCst) + n;
                high.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                in_use.fetch_sub(n, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(high.load(Ordering::SeqCst) <= 3);
    assert_eq!(high.load(Ordering::SeqCst), 3, "full capacity was used");
    assert_eq!(sem.available(), 3);
}

/// Issue 19: forgetting permits after a shrink does not lower the capacity
/// twice (the docs of `Permit::forget` say so).
#[tokio::test]
async fn forget_after_a_shrink_pays_the_debt_first() {
    let sem = Semaphore::new(4);
    let p = sem.try_acquire_many(4).unwrap();
    sem.set_capacity(2).unwrap();
    p.forget();
    assert_eq!(sem.capacity(), 0);
    assert_eq!(sem.available(), 0);
    sem.add_permits(1).unwrap();
    assert_eq!((sem.capacity(), sem.available()), (1, 1));
}

// ---- bounded queues and newest-first (issue 15) ------------------------------

#[tokio::test]
async fn a_full_queue_refuses_newcomers_at_once() {
    let sem = Semaphore::builder()
        .capacity(1)
        .queue_limit(2)
        .build()
        .unwrap();
    let held = sem.acquire().await.unwrap();
    let mut a = Box::pin(sem.acquire());
    let mut b = Box::pin(sem.acquire());
    assert!(poll_once(&mut a).is_pending());
    assert!(poll_once(&mut b).is_pending());
    assert_eq!(sem.acquire().await.unwrap_err(), AcquireError::QueueFull);
    assert_eq!(
        sem.acquire_timeout(Duration::from_secs(5))
            .await
            .unwrap_err(),
        AcquireError::QueueFull,
        "refused at once, not after the timeout"
    );
    assert_eq!(sem.waiters(), 2);
    // FIFO as usual once permits come back; room in the queue again.
    drop(held);
    let pa = a.await.unwrap();
    assert!(poll_once(&mut b).is_pending());
    let mut c = Box::pin(sem.acquire());
    assert!(poll_once(&mut c).is_pending());
    drop(pa);
    drop(b.await.unwrap());
    assert!(c.await.is_ok());
}

#[tokio::test]
async fn a_zero_queue_limit_never_waits() {
    let sem = Semaphore::builder()
        .capacity(2)
        .queue_limit(0)
        .build()
        .unwrap();
    let p = sem.acquire().await.unwrap();
    let q = sem.acquire().await.unwrap(); // a free permit is still taken
    assert_eq!(sem.acquire().await.unwrap_err(), AcquireError::QueueFull);
    drop((p, q));
}

#[tokio::test]
async fn newest_first_serves_lifo_and_evicts_the_oldest() {
    let sem = Semaphore::builder()
        .capacity(1)
        .queue_limit(2)
        .order(QueueOrder::NewestFirst)
        .build()
        .unwrap();
    let held = sem.acquire().await.unwrap();
    let mut a = Box::pin(sem.acquire());
    let mut b = Box::pin(sem.acquire());
    let mut c = Box::pin(sem.acquire());
    assert!(poll_once(&mut a).is_pending());
    assert!(poll_once(&mut b).is_pending());
    assert!(
        poll_once(&mut c).is_pending(),
        "c queues; a, the oldest, gives way"
    );
    assert_eq!(a.await.unwrap_err(), AcquireError::Evicted);
    assert_eq!(sem.waiters(), 2);
    drop(held);
    // The newest is served first.
    let pc = c.await.unwrap();
    assert!(poll_once(&mut b).is_pending());
    drop(pc);
    assert!(b.await.is_ok());
}

#[tokio::test]
async fn the_semaphore_builder_validates() {
    let e = Semaphore::builder().build().unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("capacity", ConfigErrorKind::Missing)
    );
    let e = Semaphore::builder()
        .capacity(usize::MAX)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("capacity", ConfigErrorKind::TooLarge)
    );
    assert_eq!(AcquireError::QueueFull.to_string(), "semaphore queue full");
}

#[tokio::test]
async fn available_is_zero_while_permits_are_promised_to_a_waiter() {
    let sem = Semaphore::new(3);
    let two = sem.acquire_many(2).await.unwrap();
    let mut all = Box::pin(sem.acquire_many(3));
    assert!(poll_once(&mut all).is_pending());
    assert_eq!(
        sem.available(),
        0,
        "the unheld permit is promised to the waiter"
    );
    assert!(
        sem.try_acquire().is_err(),
        "and cannot be taken past the queue"
    );
    drop(two);
    assert_eq!(all.await.unwrap().num_permits(), 3);
}

/// The wait histogram holds the acquires that queued, with the time they
/// queued (paused clock: exact to the histogram's 1/128); acquires served
/// at once read no clock and are not in it; off by default.
#[tokio::test(start_paused = true)]
async fn wait_histogram_counts_only_queued_acquires() {
    let sem = Semaphore::builder()
        .capacity(1)
        .histograms(true)
        .build()
        .unwrap();
    for _ in 0..3 {
        drop(sem.acquire().await.unwrap()); // served at once
    }
    assert_eq!(sem.metrics().wait.count(), 0);
    let held = sem.acquire().await.unwrap();
    let waiter = {
        let sem = sem.clone();
        tokio::spawn(async move { drop(sem.acquire().await.unwrap()) })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(held);
    waiter.await.unwrap();
    let wait = sem.metrics().wait;
    assert_eq!(wait.count(), 1);
    assert_eq!(wait.max_duration(), Duration::from_millis(100));
    assert_eq!(wait.p50(), 100_000_000);

    let off = Semaphore::new(1); // the default: off
    let held = off.acquire().await.unwrap();
    let waiter = {
        let off = off.clone();
        tokio::spawn(async move { drop(off.acquire().await.unwrap()) })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    drop(held);
    waiter.await.unwrap();
    assert_eq!(off.metrics().wait.count(), 0);
}

/// Built inside a multi-thread runtime, the semaphore times waits with the
/// CPU's counter (a `FastClock`): the queued acquire is counted once, with
/// a wait no longer than the real time around it.
#[test]
fn wait_histogram_in_a_multi_thread_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sem = Semaphore::builder()
            .capacity(1)
            .histograms(true)
            .build()
            .unwrap();
        let start = std::time::Instant::now();
        let held = sem.acquire().await.unwrap();
        let (queued_tx, queued_rx) = tokio::sync::oneshot::channel();
        let waiter = {
            let sem = sem.clone();
            tokio::spawn(async move {
                let mut acquire = Box::pin(sem.acquire());
                assert!(futures::poll!(acquire.as_mut()).is_pending());
                queued_tx.send(()).unwrap();
                drop(acquire.await.unwrap());
            })
        };
        queued_rx.await.unwrap();
        drop(held);
        waiter.await.unwrap();
        let bound = start.elapsed();
        let wait = sem.metrics().wait;
        assert_eq!(wait.count(), 1);
        assert!(wait.max_duration() <= bound, "{wait:?} > {bound:?}");
    });
}

/// One acquire that queues, at once: poll (queued), release, poll (granted).
fn queued_acquire(sem: &Semaphore) {
    let cx = &mut Context::from_waker(Waker::noop());
    let held = sem.try_acquire().unwrap();
    let mut waiting = std::pin::pin!(sem.acquire());
    assert!(waiting.as_mut().poll(cx).is_pending());
    drop(held);
    assert!(matches!(waiting.as_mut().poll(cx), Poll::Ready(Ok(_))));
}

/// Sampled timing (see `flowguard::histogram`): waits at a low rate are
/// each timed; thousands a millisecond are timed about one in 64, each
/// standing for 64; `histogram_max_one_in(1)` times every one.
#[tokio::test(start_paused = true)]
async fn wait_histogram_samples_only_frequent_waits() {
    let sem = Semaphore::builder()
        .capacity(1)
        .histograms(true)
        .build()
        .unwrap();
    // Low rate: 300 waits of 1 ms, one after another: every one.
    for _ in 0..300 {
        let held = sem.acquire().await.unwrap();
        let waiter = {
            let sem = sem.clone();
            tokio::spawn(async move { drop(sem.acquire().await.unwrap()) })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        drop(held);
        waiter.await.unwrap();
    }
    let wait = sem.metrics().wait;
    assert_eq!(
        (wait.count(), wait.min(), wait.max()),
        (300, 1_000_000, 1_000_000)
    );

    // High rate: 20,000 at one instant (timed: the window is open), then
    // 2 ms later one more closes it; 64,000 more are drawn at 1 in 64.
    for max_one_in in [64, 1] {
        let sem = Semaphore::builder()
            .capacity(1)
            .histograms(true)
            .histogram_max_one_in(max_one_in)
            .build()
            .unwrap();
        for _ in 0..20_000 {
            queued_acquire(&sem);
        }
        tokio::time::advance(Duration::from_millis(2)).await;
        queued_acquire(&sem);
        assert_eq!(sem.metrics().wait.count(), 20_001);
        for _ in 0..64_000 {
            queued_acquire(&sem);
        }
        let added = sem.metrics().wait.count() - 20_001;
        if max_one_in == 1 {
            assert_eq!(added, 64_000);
        } else {
            // About 1,000 timed (standard deviation 31; six allowed).
            assert_eq!(added % 64, 0, "{added}");
            assert!((added / 64).abs_diff(1_000) <= 186, "{added}");
        }
        assert_eq!(sem.available(), 1);
    }
}

#[test]
fn histogram_max_one_in_is_validated() {
    let build = |n| {
        Semaphore::builder()
            .capacity(1)
            .histogram_max_one_in(n)
            .build()
    };
    for (n, kind) in [
        (0, ConfigErrorKind::Zero),
        (65_537, ConfigErrorKind::TooLarge),
    ] {
        let e = build(n).unwrap_err();
        assert_eq!((e.field(), e.kind()), ("histogram_max_one_in", kind));
    }
    assert!(build(65_536).is_ok());
}

/// A permit freed at the deadline instant itself, by a task whose timer
/// fired with the waiter's, is taken: done at the deadline counts as done,
/// as in `fanout` (and asyncio, whose timers at one instant run in the
/// order they were set).
#[tokio::test(start_paused = true)]
async fn a_permit_freed_at_the_deadline_instant_is_taken() {
    let sem = Semaphore::new(1);
    let held = sem.try_acquire_owned().unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(held);
    });
    let start = Instant::now();
    let permit = sem.acquire_timeout(Duration::from_secs(1)).await;
    assert!(permit.is_ok(), "{permit:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    drop(permit);
    // One freed a nanosecond later is not.
    let held = sem.try_acquire_owned().unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1) + Duration::from_millis(1)).await;
        drop(held);
    });
    assert_eq!(
        sem.acquire_timeout(Duration::from_secs(1))
            .await
            .unwrap_err(),
        AcquireError::TimedOut
    );
}
