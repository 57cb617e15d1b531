//! Behaviour tests for `flowguard::rate`, on the paused Tokio clock.
//!
//! Reference behaviour: Go's `x/time/rate` tests (burst then steady rate,
//! simultaneous requests at a boundary, wait vs deadline) and .NET's
//! token-bucket limiter tests (queue order, refusal carries retry-after).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowguard::ConfigErrorKind;
use flowguard::clock::{Clock, ManualClock};
use flowguard::rate::{
    AcquireError, KeyedRateLimiter, Quota, RateLimiter, RateSnapshot, TryAcquireError,
};
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn retry_after(r: Result<(), TryAcquireError>) -> Instant {
    match r {
        Err(TryAcquireError::NotUntil { retry_after }) => retry_after,
        other => panic!("expected NotUntil, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn burst_then_steady_rate() {
    let l = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(5).unwrap());
    let start = Instant::now();
    let mut times = Vec::new();
    for _ in 0..8 {
        l.acquire(1).await.unwrap();
        times.push(start.elapsed());
    }
    assert_eq!(
        times,
        vec![ms(0), ms(0), ms(0), ms(0), ms(0), ms(100), ms(200), ms(300)]
    );
}

#[tokio::test(start_paused = true)]
async fn try_acquire_retry_after_is_exact() {
    let l = RateLimiter::new(Quota::per_second(4).unwrap().with_burst(2).unwrap());
    let start = Instant::now();
    l.try_acquire(2).unwrap();
    let at = retry_after(l.try_acquire(2));
    assert_eq!(at - start, ms(500));
    tokio::time::advance(at - start - Duration::from_nanos(1)).await;
    assert_eq!(
        retry_after(l.try_acquire(2)),
        at,
        "same answer one ns before"
    );
    tokio::time::advance(Duration::from_nanos(1)).await;
    assert_eq!(l.try_acquire(2), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn impossible_and_empty_requests() {
    let l = RateLimiter::new(Quota::per_second(3).unwrap());
    assert_eq!(
        l.try_acquire(4),
        Err(TryAcquireError::InsufficientCapacity {
            requested: 4,
            burst: 3
        })
    );
    assert_eq!(
        l.acquire(u32::MAX).await,
        Err(AcquireError::InsufficientCapacity {
            requested: u32::MAX,
            burst: 3
        })
    );
    l.try_acquire(3).unwrap();
    assert_eq!(l.try_acquire(0), Ok(()), "zero tokens pass an empty bucket");
    assert_eq!(l.acquire(0).await, Ok(()));
    let err = l.try_acquire(4).unwrap_err();
    assert_eq!(err.wait_time_from(Instant::now()), None);
    assert_eq!(
        err.to_string(),
        "requested 4 tokens but the burst is 3: never possible"
    );
}

#[tokio::test(start_paused = true)]
async fn simultaneous_requests_at_a_boundary_admit_exactly_the_tokens_there() {
    // Go: rate 1 per 100 ms, burst 1; at the boundary only one of many wins.
    let l = RateLimiter::new(Quota::with_period(1, ms(100)).unwrap());
    l.try_acquire(1).unwrap();
    tokio::time::advance(ms(100)).await;
    let admitted = (0..10).filter(|_| l.try_acquire(1).is_ok()).count();
    assert_eq!(admitted, 1);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_bucket() {
    let a = RateLimiter::new(Quota::per_minute(2).unwrap());
    let b = a.clone();
    a.try_acquire(1).unwrap();
    b.try_acquire(1).unwrap();
    assert!(a.try_acquire(1).is_err());
    assert!(b.try_acquire(1).is_err());
}

type Log = Arc<Mutex<Vec<(usize, Duration)>>>;

fn spawn_acquire(
    l: &RateLimiter,
    id: usize,
    n: u32,
    log: &Log,
    start: Instant,
) -> tokio::task::JoinHandle<()> {
    let l = l.clone();
    let log = log.clone();
    tokio::spawn(async move {
        l.acquire(n).await.unwrap();
        log.lock().unwrap().push((id, start.elapsed()));
    })
}

#[tokio::test(start_paused = true)]
async fn queue_is_fifo_and_later_small_requests_do_not_barge() {
    // 1 token / 100 ms, burst 3, start empty.
    let l = RateLimiter::new(Quota::with_period(3, ms(300)).unwrap());
    l.try_acquire(3).unwrap();
    let start = Instant::now();
    let log: Log = Arc::default();
    let mut hs = Vec::new();
    for (id, n) in [(0, 3u32), (1, 1), (2, 2), (3, 1)] {
        hs.push(spawn_acquire(&l, id, n, &log, start));
        tokio::task::yield_now().await; // enqueue in this order
    }
    assert_eq!(l.snapshot().waiters, 4);
    assert_eq!(l.snapshot().queued_tokens, 7);
    // A later try_acquire may not barge, and is told when the queue ahead clears.
    let at = retry_after(l.try_acquire(1));
    assert_eq!(at - start, ms(800));
    for h in hs {
        h.await.unwrap();
    }
    assert_eq!(
        *log.lock().unwrap(),
        vec![(0, ms(300)), (1, ms(400)), (2, ms(600)), (3, ms(700))]
    );
    assert_eq!(l.snapshot().waiters, 0);
    // After the queue drained the fast path works again.
    tokio::time::advance(ms(100)).await;
    assert_eq!(l.try_acquire(1), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn dropped_waiter_consumes_nothing_and_frees_its_place() {
    let l = RateLimiter::new(Quota::with_period(1, ms(100)).unwrap());
    l.try_acquire(1).unwrap();
    let start = Instant::now();
    let log: Log = Arc::default();
    let head = spawn_acquire(&l, 0, 1, &log, start);
    tokio::task::yield_now().await;
    let second = spawn_acquire(&l, 1, 1, &log, start);
    tokio::task::yield_now().await;
    assert_eq!(l.snapshot().waiters, 2);
    tokio::time::advance(ms(50)).await;
    head.abort();
    let _ = head.await;
    assert_eq!(l.snapshot().waiters, 1);
    second.await.unwrap();
    // The second caller got the token the head would have had, at 100 ms.
    assert_eq!(*log.lock().unwrap(), vec![(1, ms(100))]);
    assert_eq!(l.snapshot().waiters, 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_polled_acquire_future_restores_the_fast_path() {
    let l = RateLimiter::new(Quota::with_period(1, ms(100)).unwrap());
    l.try_acquire(1).unwrap();
    {
        let fut = l.acquire(1);
        tokio::pin!(fut);
        assert!(futures::poll!(fut.as_mut()).is_pending());
        assert_eq!(l.snapshot().waiters, 1);
    }
    assert_eq!(l.snapshot().waiters, 0);
    tokio::time::advance(ms(100)).await;
    assert_eq!(
        l.try_acquire(1),
        Ok(()),
        "the cancelled waiter took nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn acquire_timeout_fails_at_once_without_consuming() {
    // Go: Wait with a deadline shorter than the needed delay fails at once.
    let l = RateLimiter::new(Quota::with_period(1, ms(100)).unwrap());
    l.try_acquire(1).unwrap();
    let start = Instant::now();
    let err = l.acquire_timeout(1, ms(99)).await.unwrap_err();
    assert_eq!(Instant::now(), start, "failed without waiting");
    assert_eq!(
        err,
        AcquireError::Timeout {
            retry_after: start + ms(100)
        }
    );
    assert_eq!(l.snapshot().waiters, 0);
    // Exactly the needed delay is enough.
    l.acquire_timeout(1, ms(100)).await.unwrap();
    assert_eq!(start.elapsed(), ms(100));
    // The prediction counts the queue ahead.
    let log: Log = Arc::default();
    let h = spawn_acquire(&l, 0, 1, &log, start);
    tokio::task::yield_now().await;
    let t = Instant::now();
    let err = l.acquire_timeout(1, ms(199)).await.unwrap_err();
    assert_eq!(
        err,
        AcquireError::Timeout {
            retry_after: t + ms(200)
        }
    );
    assert_eq!(Instant::now(), t);
    l.acquire_timeout(1, ms(200)).await.unwrap();
    assert_eq!(t.elapsed(), ms(200));
    h.await.unwrap();
    assert_eq!(*log.lock().unwrap(), vec![(0, ms(200))]);
}

#[tokio::test(start_paused = true)]
async fn acquire_timeout_gives_up_at_the_deadline_when_the_rate_drops() {
    let l = RateLimiter::new(Quota::with_period(1, ms(100)).unwrap());
    l.try_acquire(1).unwrap();
    let start = Instant::now();
    let l2 = l.clone();
    let h = tokio::spawn(async move { l2.acquire_timeout(1, ms(150)).await });
    tokio::task::yield_now().await;
    l.set_quota(Quota::with_period(1, Duration::from_secs(10)).unwrap());
    let res = h.await.unwrap();
    assert!(matches!(res, Err(AcquireError::Timeout { .. })), "{res:?}");
    assert_eq!(start.elapsed(), ms(150));
    assert_eq!(l.snapshot().waiters, 0);
}

#[tokio::test(start_paused = true)]
async fn refund_is_capped_and_wakes_the_head_early() {
    let l = RateLimiter::new(Quota::with_period(4, Duration::from_secs(4)).unwrap());
    l.try_acquire(4).unwrap();
    l.refund(1);
    assert_eq!(l.snapshot().available, 1);
    l.refund(50);
    assert_eq!(l.snapshot().available, 4);
    assert_eq!(l.snapshot().next_token_at, None);
    l.try_acquire(4).unwrap();
    let start = Instant::now();
    let l2 = l.clone();
    let h = tokio::spawn(async move {
        l2.acquire(3).await.unwrap();
        Instant::now()
    });
    tokio::time::advance(ms(500)).await;
    l.refund(2); // 2 back + 0.5 refilled: 3 tokens at 1.0 s instead of 3.0 s
    let done = h.await.unwrap();
    assert_eq!(done - start, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn set_quota_carries_tokens_over_and_reevaluates_waiters() {
    let l = RateLimiter::new(Quota::per_second(10).unwrap());
    l.try_acquire(4).unwrap();
    l.set_quota(Quota::per_second(100).unwrap());
    let s = l.snapshot();
    assert_eq!((s.available, s.burst), (6, 100));
    assert_eq!(l.quota(), Quota::per_second(100).unwrap());
    l.set_quota(Quota::per_second(5).unwrap());
    assert_eq!(l.snapshot().available, 5);

    // Waiter for 4 behind an empty bucket; shrinking the burst to 3 fails it,
    // and the next waiter moves up.
    l.try_acquire(5).unwrap();
    let start = Instant::now();
    let (a, b) = (l.clone(), l.clone());
    let big = tokio::spawn(async move { a.acquire(4).await });
    tokio::task::yield_now().await;
    let small = tokio::spawn(async move {
        b.acquire(1).await.unwrap();
        Instant::now()
    });
    tokio::task::yield_now().await;
    l.set_quota(Quota::per_second(3).unwrap());
    assert_eq!(
        big.await.unwrap(),
        Err(AcquireError::InsufficientCapacity {
            requested: 4,
            burst: 3
        })
    );
    // Empty stays empty; one token at the new rate is 333,333,334 ns away,
    // and Tokio's timer wakes on the next whole millisecond.
    assert_eq!(small.await.unwrap() - start, ms(334));
}

#[tokio::test(start_paused = true)]
async fn set_quota_speeding_up_wakes_the_head_at_the_new_time() {
    let l = RateLimiter::new(Quota::per_minute(1).unwrap());
    l.try_acquire(1).unwrap();
    let start = Instant::now();
    let l2 = l.clone();
    let h = tokio::spawn(async move {
        l2.acquire(1).await.unwrap();
        Instant::now()
    });
    tokio::task::yield_now().await;
    l.set_quota(Quota::per_second(1).unwrap());
    assert_eq!(h.await.unwrap() - start, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn snapshot_reports_tokens_and_next_arrival() {
    let l = RateLimiter::new(Quota::per_second(4).unwrap());
    let start = Instant::now();
    let s = l.snapshot();
    assert_eq!((s.available, s.next_token_at, s.waiters), (4, None, 0));
    assert_eq!(s.emission_interval, ms(250));
    l.try_acquire(4).unwrap();
    tokio::time::advance(ms(300)).await;
    let s = l.snapshot();
    assert_eq!(s.available, 1);
    assert_eq!(s.next_token_at, Some(start + ms(500)));
}

#[tokio::test(start_paused = true)]
async fn manual_clock_drives_checks() {
    let clock = ManualClock::new();
    let l = RateLimiter::with_clock(Quota::per_second(2).unwrap(), clock.clone());
    l.try_acquire(2).unwrap();
    let at = retry_after(l.try_acquire(1));
    assert_eq!(at - clock.now(), ms(500));
    clock.advance(ms(499));
    assert!(l.try_acquire(1).is_err());
    clock.advance(ms(1));
    assert!(l.try_acquire(1).is_ok());
}

// ---- keyed ----

#[tokio::test(start_paused = true)]
async fn keyed_buckets_are_independent_and_exact() {
    let l = KeyedRateLimiter::new(Quota::per_second(2).unwrap());
    let start = Instant::now();
    l.try_acquire(&1u64, 2).unwrap();
    let at = retry_after(l.try_acquire(&1, 1));
    assert_eq!(at - start, ms(500));
    l.try_acquire(&2, 2).unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(
        l.try_acquire(&3, 3),
        Err(TryAcquireError::InsufficientCapacity {
            requested: 3,
            burst: 2
        })
    );
    assert_eq!(l.len(), 2, "an impossible request stores no key");
    l.acquire(&1, 1).await.unwrap();
    assert_eq!(start.elapsed(), ms(500));
    assert_eq!(
        l.acquire(&1, 9).await,
        Err(AcquireError::InsufficientCapacity {
            requested: 9,
            burst: 2
        })
    );
    l.refund(&1, 1);
    assert!(l.try_acquire(&1, 1).is_ok());
}

#[tokio::test(start_paused = true)]
async fn keyed_idle_keys_make_room_for_new_ones() {
    let l = KeyedRateLimiter::<u64>::builder(Quota::per_second(10).unwrap())
        .shards(1)
        .build()
        .unwrap();
    for k in 0..100 {
        l.try_acquire(&k, 1).unwrap();
    }
    assert_eq!(l.len(), 100);
    tokio::time::advance(ms(100)).await; // every bucket has refilled
    // Calls for a key already held do no sweeping work...
    for _ in 0..1000 {
        let _ = l.try_acquire(&0, 1);
    }
    assert_eq!(l.len(), 100);
    // ...new keys do, once the table would have to grow: the 100 idle keys
    // go, without any background task and without a forced eviction.
    for k in 1000..1100 {
        l.try_acquire(&k, 1).unwrap();
    }
    assert!(l.len() < 150, "idle keys swept to make room: {}", l.len());
    assert_eq!(l.snapshot().evicted_while_full, 0);
    tokio::time::advance(ms(1000)).await; // key 0's debt too
    l.evict_idle();
    assert_eq!(l.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn keyed_churn_below_the_cap_stays_flat() {
    // 100 new keys every 100 ms, each idle again 100 ms later, far below
    // max_keys: the table must not keep every key it ever saw.
    let l = KeyedRateLimiter::<u64>::builder(Quota::per_second(10).unwrap())
        .shards(1)
        .max_keys(1_000_000)
        .build()
        .unwrap();
    for round in 0..200u64 {
        for k in 0..100 {
            l.try_acquire(&(round * 1000 + k), 1).unwrap();
        }
        // At most two rounds (200 keys) are live at once; idle ones are
        // swept when the table would grow, so it never grows past the
        // step above them (448 keys; where it stops depends on the hash
        // layout, as removals leave tombstones). Without the sweep: 20 000.
        assert!(l.len() <= 512, "round {round}: {} keys held", l.len());
        tokio::time::advance(ms(100)).await;
    }
    assert_eq!(l.snapshot().evicted_while_full, 0);
}

/// Admitted and refused checks are counted over all keys (per thread,
/// summed by the snapshot); `n == 0` and requests above the burst
/// touch no shard and are not counted; an `acquire` that waits counts one
/// refusal per try.
#[tokio::test(start_paused = true)]
async fn keyed_snapshot_counts_admitted_and_refused_over_all_keys() {
    let l = KeyedRateLimiter::<u32>::builder(Quota::per_second(10).unwrap().with_burst(2).unwrap())
        .shards(4)
        .build()
        .unwrap()
        .name("per_user");
    for key in 0..3 {
        l.try_acquire(&key, 2).unwrap(); // new keys: admitted
        assert!(l.try_acquire(&key, 1).is_err()); // empty bucket: refused
    }
    assert!(l.try_acquire(&0, 0).is_ok()); // not counted
    assert!(l.try_acquire(&0, 3).is_err()); // above the burst: not counted
    let s = l.snapshot();
    assert_eq!((s.admitted, s.refused, s.keys), (3, 3, 3));
    l.acquire(&0, 1).await.unwrap(); // one refused try, then admitted
    let s = l.snapshot();
    assert_eq!((s.admitted, s.refused), (4, 4));
}

#[tokio::test(start_paused = true)]
async fn keyed_million_distinct_keys_stay_at_the_cap() {
    let clock = ManualClock::new();
    let l = KeyedRateLimiter::<u64>::builder(Quota::per_hour(1).unwrap())
        .max_keys(1000)
        .shards(8)
        .build_with_clock(clock.clone())
        .unwrap();
    for k in 0..1_000_000u64 {
        l.try_acquire(&k, 1).unwrap(); // never refused: policy is evict, not reject
        if k % 100_000 == 0 {
            assert!(l.len() <= 1000);
        }
        if k % 1000 == 0 {
            clock.advance(Duration::from_millis(1));
        }
    }
    assert_eq!(l.len(), 1000);
    let s = l.snapshot();
    assert_eq!((s.keys, s.max_keys), (1000, 1000));
    assert_eq!(s.evicted_while_full, 1_000_000 - 1000);
}

#[test]
fn keyed_flood_from_threads_stays_at_the_cap_with_default_shards() {
    // Default shards (four per core, at least 16): memory stays at
    // `max_keys` however many threads flood it with new keys.
    let l = KeyedRateLimiter::<u64>::builder(Quota::per_hour(1).unwrap())
        .max_keys(3000)
        .build_with_clock(ManualClock::new())
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let l = &l;
            s.spawn(move || {
                for k in 0..50_000u64 {
                    l.try_acquire(&(t << 32 | k), 1).unwrap();
                    if k % 5000 == 0 {
                        assert!(l.len() <= 3000);
                    }
                }
            });
        }
    });
    let s = l.snapshot();
    assert_eq!((s.keys, s.max_keys), (3000, 3000));
    assert_eq!(s.evicted_while_full, 200_000 - 3000);
    // Below the default shard floor, the default shard count follows max_keys.
    let small = KeyedRateLimiter::<u64>::builder(Quota::per_hour(1).unwrap())
        .max_keys(5)
        .build_with_clock(ManualClock::new())
        .unwrap();
    for k in 0..100 {
        small.try_acquire(&k, 1).unwrap();
    }
    assert_eq!(small.len(), 5);
}

/// The snapshot's counts are exact with many threads on the same keys,
/// and across threads that exit and hand their counting slot on: every
/// check is counted once, and exactly the keys' bursts are admitted.
#[test]
fn keyed_counts_are_exact_across_threads_that_come_and_go() {
    const KEYS: u64 = 4;
    const BURST: u32 = 500;
    let l =
        KeyedRateLimiter::<u64>::builder(Quota::per_hour(1).unwrap().with_burst(BURST).unwrap())
            .shards(2)
            .build_with_clock(ManualClock::new())
            .unwrap();
    let admitted = AtomicUsize::new(0);
    for _round in 0..3 {
        std::thread::scope(|s| {
            for t in 0..6u64 {
                let (l, admitted) = (&l, &admitted);
                s.spawn(move || {
                    for i in 0..400u64 {
                        if l.try_acquire(&((i + t) % KEYS), 1).is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
    }
    let s = l.snapshot();
    let checks = 3 * 6 * 400;
    assert_eq!(
        admitted.load(Ordering::Relaxed),
        (KEYS * u64::from(BURST)) as usize
    );
    assert_eq!(s.admitted, KEYS * u64::from(BURST));
    assert_eq!(s.admitted + s.refused, checks);
}

#[test]
fn keyed_builder_validates_each_field() {
    let q = Quota::per_second(1).unwrap();
    let e = KeyedRateLimiter::<u8>::builder(q)
        .max_keys(0)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.component(), e.field(), e.kind()),
        ("keyed_rate_limiter", "max_keys", ConfigErrorKind::Zero)
    );
    let e = KeyedRateLimiter::<u8>::builder(q)
        .shards(0)
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("shards", ConfigErrorKind::Zero));
    let e = KeyedRateLimiter::<u8>::builder(q)
        .shards(1 << 20)
        .max_keys(1 << 30)
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("shards", ConfigErrorKind::TooLarge));
    let e = KeyedRateLimiter::<u8>::builder(q)
        .shards(10)
        .max_keys(5)
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("shards", ConfigErrorKind::Conflict));
    assert!(e.to_string().contains("shards"));
}

#[test]
fn quota_validates_each_field() {
    let e = Quota::per_second(0).unwrap_err();
    assert_eq!(
        (e.component(), e.field(), e.kind()),
        ("quota", "rate", ConfigErrorKind::Zero)
    );
    let e = Quota::with_period(5, Duration::ZERO).unwrap_err();
    assert_eq!((e.field(), e.kind()), ("period", ConfigErrorKind::Zero));
    let e = Quota::with_period(5, Duration::MAX).unwrap_err();
    assert_eq!((e.field(), e.kind()), ("period", ConfigErrorKind::TooLarge));
    let e = Quota::per_second(1).unwrap().with_burst(0).unwrap_err();
    assert_eq!((e.field(), e.kind()), ("burst", ConfigErrorKind::Zero));
    let e = Quota::per_hour(1)
        .unwrap()
        .with_burst(u32::MAX)
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("burst", ConfigErrorKind::TooLarge));
    // The largest legal values do not panic anywhere.
    let q = Quota::with_period(1, Duration::from_nanos(1 << 61)).unwrap();
    let l = RateLimiter::with_clock(q, ManualClock::new());
    l.try_acquire(1).unwrap();
    assert!(l.try_acquire(1).is_err());
    l.refund(u32::MAX);
    let q = Quota::with_period(u32::MAX, Duration::from_nanos(1)).unwrap();
    assert_eq!(q.emission_interval(), Duration::from_nanos(1));
    let l = RateLimiter::with_clock(q, ManualClock::new());
    l.try_acquire(u32::MAX).unwrap();
}

#[test]
fn public_types_are_send_sync_and_futures_send() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    fn unpin<T: Unpin>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _g = rt.enter();
    let l = RateLimiter::new(Quota::per_second(1).unwrap());
    send_sync(&l);
    let a = l.acquire(1);
    send(&a);
    send_sync(&a);
    unpin(&a);
    send(&l.acquire_timeout(1, ms(1)));
    let k = KeyedRateLimiter::<String>::new(Quota::per_second(1).unwrap());
    send_sync(&k);
    send(&k.acquire(&String::new(), 1));
    send_sync(&Quota::per_second(1).unwrap());
    send_sync(&TryAcquireError::InsufficientCapacity {
        requested: 1,
        burst: 1,
    });
}

#[tokio::test(start_paused = true)]
async fn manual_clock_waiter_is_served_by_the_move_without_tokio_time_passing() {
    let clock = ManualClock::new();
    let l = RateLimiter::with_clock(Quota::per_second(1).unwrap(), clock.clone());
    l.try_acquire(1).unwrap();
    let l2 = l.clone();
    let h = tokio::spawn(async move { l2.acquire(1).await });
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    assert_eq!(l.snapshot().waiters, 1);
    let tokio_start = Instant::now();
    clock.advance(Duration::from_secs(1));
    // The move wakes the head, which re-checks on the manual clock: no
    // Tokio timer is involved.
    assert_eq!(h.await.unwrap(), Ok(()));
    assert_eq!(Instant::now(), tokio_start);
    assert_eq!(l.snapshot().waiters, 0);
}

// ---- set_quota carries the bucket over exactly (issue 19, item 7) ----

/// The whole observable bucket: its `Debug` (TAT to the nanosecond, flags
/// aside) and the exact instant a full burst would be admitted.
fn bucket<C: Clock>(l: &RateLimiter<C>) -> (String, RateSnapshot) {
    (format!("{l:?}"), l.snapshot())
}

#[tokio::test(start_paused = true)]
async fn set_quota_with_the_quota_in_force_changes_nothing() {
    let q = Quota::per_second(10).unwrap().with_burst(1).unwrap();
    let l = RateLimiter::new(q);
    let start = Instant::now();
    // Full bucket at the limiter's origin instant, then an empty one.
    let before = bucket(&l);
    l.set_quota(q);
    assert_eq!(bucket(&l), before, "full bucket");
    l.try_acquire(1).unwrap();
    tokio::time::advance(ms(30)).await;
    let before = bucket(&l);
    for _ in 0..1000 {
        l.set_quota(q);
    }
    assert_eq!(bucket(&l), before, "1000 reloads of the same quota");
    assert_eq!(retry_after(l.try_acquire(1)), start + ms(100));
}

#[tokio::test(start_paused = true)]
async fn reapplying_the_quota_does_not_delay_a_queued_waiter() {
    let q = Quota::per_second(10).unwrap().with_burst(1).unwrap();
    let l = RateLimiter::new(q);
    l.try_acquire(1).unwrap();
    let start = Instant::now();
    let l2 = l.clone();
    let h = tokio::spawn(async move {
        l2.acquire(1).await.unwrap();
        Instant::now()
    });
    tokio::task::yield_now().await;
    assert_eq!(l.snapshot().waiters, 1);
    l.set_quota(q);
    // 100 ms, not 101 ms: a 1 ns nudge would cross Tokio's millisecond tick.
    assert_eq!(h.await.unwrap() - start, ms(100));
}

#[tokio::test(start_paused = true)]
async fn set_quota_at_the_origin_instant_keeps_a_full_bucket_full() {
    let l = RateLimiter::new(Quota::per_second(10).unwrap());
    l.set_quota(Quota::per_second(5).unwrap());
    let s = l.snapshot();
    assert_eq!((s.available, s.next_token_at), (5, None));
    l.try_acquire(5).unwrap();
}

#[tokio::test(start_paused = true)]
async fn set_quota_with_an_exact_conversion_loses_no_nanosecond() {
    // 100/s burst 4 with 2 taken: 2 available, 20 ms of debt.
    let a = Quota::per_second(100).unwrap().with_burst(4).unwrap();
    // 50/s burst 3: 2 available is 1 missing, 20 ms of debt: the same TAT.
    let b = Quota::per_second(50).unwrap().with_burst(3).unwrap();
    let l = RateLimiter::new(a);
    tokio::time::advance(ms(7)).await; // away from the origin instant
    let start = Instant::now();
    l.try_acquire(2).unwrap();
    assert_eq!(retry_after(l.try_acquire(3)), start + ms(10));
    let under_a = bucket(&l);
    l.set_quota(b);
    assert_eq!(l.snapshot().available, 2);
    assert_eq!(retry_after(l.try_acquire(3)), start + ms(20));
    for _ in 0..100 {
        l.set_quota(a);
        l.set_quota(b);
    }
    assert_eq!(retry_after(l.try_acquire(3)), start + ms(20));
    l.set_quota(a);
    assert_eq!(bucket(&l), under_a, "round trip a -> b -> a");
    assert_eq!(retry_after(l.try_acquire(3)), start + ms(10));
    // The fast path still works after an exact conversion.
    l.try_acquire(2).unwrap();
    assert_eq!(l.snapshot().available, 0);
}

// ---- waiting on a manual clock parks until it moves (issue 19) ----

/// Counts the polls of a future, to tell a parked waiter from a spinning one.
struct CountPolls<F> {
    fut: std::pin::Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: std::future::Future> std::future::Future for CountPolls<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.fut.as_mut().poll(cx)
    }
}

fn counted<F: std::future::Future>(fut: F) -> (CountPolls<F>, Arc<AtomicUsize>) {
    let polls = Arc::new(AtomicUsize::new(0));
    let f = CountPolls {
        fut: Box::pin(fut),
        polls: polls.clone(),
    };
    (f, polls)
}

async fn turns(n: usize) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn manual_clock_waiter_parks_until_the_clock_moves() {
    let clock = ManualClock::new();
    let l = RateLimiter::with_clock(Quota::per_second(1).unwrap(), clock.clone());
    l.try_acquire(1).unwrap();
    let l2 = l.clone();
    let (fut, polls) = counted(async move { l2.acquire(1).await });
    let h = tokio::spawn(fut);
    turns(1).await;
    assert_eq!(l.snapshot().waiters, 1);
    // Tokio's clock passes the instant; the limiter's clock does not move.
    tokio::time::advance(Duration::from_secs(5)).await;
    turns(100).await;
    assert_eq!(polls.load(Ordering::SeqCst), 1, "parked, not re-checking");
    clock.advance(ms(999));
    turns(10).await;
    assert!(!h.is_finished());
    assert_eq!(polls.load(Ordering::SeqCst), 2, "one re-check per move");
    clock.advance(ms(1));
    assert_eq!(h.await.unwrap(), Ok(()));
    assert_eq!(polls.load(Ordering::SeqCst), 3);
    assert_eq!(l.snapshot().waiters, 0);
}

#[tokio::test(start_paused = true)]
async fn keyed_manual_clock_waiter_parks_until_the_clock_moves() {
    let clock = ManualClock::new();
    let k = KeyedRateLimiter::with_clock(Quota::per_second(1).unwrap(), clock.clone());
    k.try_acquire(&7u8, 1).unwrap();
    let k2 = k.clone();
    let (fut, polls) = counted(async move { k2.acquire(&7, 1).await });
    let h = tokio::spawn(fut);
    turns(1).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    turns(100).await;
    assert_eq!(polls.load(Ordering::SeqCst), 1, "parked, not re-checking");
    clock.advance(Duration::from_secs(1));
    assert_eq!(h.await.unwrap(), Ok(()));
    assert_eq!(polls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn acquire_deadline_is_measured_on_the_limiters_clock() {
    let clock = ManualClock::new();
    let l = RateLimiter::with_clock(Quota::per_second(1).unwrap(), clock.clone());
    l.try_acquire(1).unwrap();
    let l2 = l.clone();
    let h = tokio::spawn(async move { l2.acquire_timeout(1, Duration::from_secs(2)).await });
    turns(1).await;
    l.set_quota(Quota::per_minute(1).unwrap()); // now the wait overruns
    // Ten seconds of Tokio's time are not two seconds of the limiter's.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!h.is_finished());
    assert_eq!(l.snapshot().waiters, 1);
    clock.advance(Duration::from_secs(2));
    let start = clock.now() - Duration::from_secs(2);
    assert_eq!(
        h.await.unwrap(),
        Err(AcquireError::Timeout {
            retry_after: start + Duration::from_secs(60)
        })
    );
    assert_eq!(l.snapshot().waiters, 0);
}

#[test]
fn manual_clock_waits_need_no_runtime() {
    let clock = ManualClock::new();
    let q = Quota::per_second(1).unwrap().with_burst(2).unwrap();
    let l = RateLimiter::with_clock(q, clock.clone());
    let k = KeyedRateLimiter::with_clock(q, clock.clone());
    l.try_acquire(2).unwrap();
    k.try_acquire(&1u8, 2).unwrap();
    // Two seconds later both waiters' tokens are there.
    let (a, b, c, ()) = futures::executor::block_on(async {
        futures::join!(
            l.acquire(1),
            l.acquire_timeout(1, Duration::from_secs(5)),
            k.acquire(&1, 1),
            async { clock.advance(Duration::from_secs(2)) },
        )
    });
    assert_eq!((a, b, c), (Ok(()), Ok(()), Ok(())));
}

/// The wait histogram: one entry per `acquire` that queued, with the exact
/// time it waited (paused clock); immediate acquires and `try_acquire` are
/// not in it; `histograms(false)` keeps none.
#[tokio::test(start_paused = true)]
async fn wait_histogram_counts_queued_acquires() {
    let limiter = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(1).unwrap());
    limiter.acquire(1).await.unwrap(); // the burst: at once
    limiter.acquire(1).await.unwrap(); // 100 ms
    limiter.try_acquire(1).unwrap_err();
    let (a, b) = tokio::join!(limiter.acquire(1), limiter.acquire(1)); // 100 and 200 ms
    a.unwrap();
    b.unwrap();
    let wait = limiter.snapshot().wait;
    assert_eq!(wait.count(), 3);
    assert_eq!((wait.min(), wait.max()), (100_000_000, 200_000_000));
    assert!(wait.p50().abs_diff(100_000_000) <= 100_000_000 / 128); // a bucket's middle

    let off =
        RateLimiter::new(Quota::per_second(10).unwrap().with_burst(1).unwrap()).histograms(false);
    off.acquire(1).await.unwrap();
    off.acquire(1).await.unwrap();
    assert_eq!(off.snapshot().wait.count(), 0);
}

/// Go's `Wait` with a deadline succeeds whenever its reservation's time is
/// within the deadline. Here the prediction (666.67 ms, inside 667 ms) lets
/// the caller queue; the waiter ahead, which needs a full bucket (burst 1),
/// is woken at 334 ms by Tokio's 1 ms timer but admitted as of 333.33 ms,
/// its exact ready instant, so the caller's turn stays at 666.67 ms and it
/// is admitted at 667 ms (charged at its turn, the refill the full bucket
/// could not hold would be lost and it would time out after waiting).
#[tokio::test(start_paused = true)]
async fn acquire_timeout_admits_what_it_predicted_despite_timer_rounding() {
    let l = RateLimiter::new(Quota::per_second(3).unwrap().with_burst(1).unwrap());
    l.try_acquire(1).unwrap();
    let l2 = l.clone();
    let ahead = tokio::spawn(async move { l2.acquire(1).await });
    tokio::task::yield_now().await;
    // Predicted: two emission intervals, 666,666,666 ns.
    assert_eq!(l.acquire_timeout(1, ms(667)).await, Ok(()));
    ahead.await.unwrap().unwrap();
}

/// Spacing quota with an emission interval that is not a whole millisecond:
/// Go's `Wait` loop runs at the quota's rate (its reservations are made at
/// their exact instants), and so does this one: each wait is woken at the
/// next millisecond but admitted as of its exact instant, so 100 tokens at
/// T = 1.5 ms take 150 ms, not 200.
#[tokio::test(start_paused = true)]
async fn a_burst_one_acquire_loop_keeps_the_quotas_rate_with_sub_millisecond_intervals() {
    let l = RateLimiter::new(
        Quota::with_period(2, Duration::from_micros(3000))
            .unwrap()
            .with_burst(1)
            .unwrap(),
    );
    l.try_acquire(1).unwrap();
    let start = Instant::now();
    for _ in 0..100 {
        l.acquire(1).await.unwrap();
    }
    assert!(start.elapsed() <= ms(151), "{:?}", start.elapsed());
}

/// Go's `x/time/rate` and resilience4j: a drained bucket of 3 per second
/// holds 3 tokens again exactly one period later (the emission interval is
/// rounded down, `Duration::from_secs(1) / 3`, never up past the period).
#[tokio::test(start_paused = true)]
async fn a_drained_bucket_is_full_again_exactly_one_period_later() {
    let clock = ManualClock::new();
    let l = RateLimiter::with_clock(Quota::per_second(3).unwrap(), clock.clone());
    for _ in 0..3 {
        l.try_acquire(1).unwrap();
    }
    assert!(l.try_acquire(1).is_err());
    clock.advance(Duration::from_secs(1) / 3);
    assert_eq!(l.snapshot().available, 1, "one token per T = 1 s / 3");
    clock.advance(Duration::from_secs(1) - Duration::from_secs(1) / 3);
    assert_eq!(l.snapshot().available, 3);
    for _ in 0..3 {
        l.try_acquire(1).unwrap();
    }
    assert!(l.try_acquire(1).is_err());
    // The keyed limiter reads the same quota.
    let k = KeyedRateLimiter::<u8>::builder(Quota::per_second(3).unwrap())
        .build_with_clock(clock.clone())
        .unwrap();
    for _ in 0..3 {
        k.try_acquire(&1, 1).unwrap();
    }
    assert!(k.try_acquire(&1, 1).is_err());
    clock.advance(Duration::from_secs(1));
    for _ in 0..3 {
        k.try_acquire(&1, 1).unwrap();
    }
}

/// The keyed limiter's waiters keep the quota's rate through Tokio's 1 ms
/// timer, as the plain limiter's do (see
/// `a_burst_one_acquire_loop_keeps_the_quotas_rate_with_sub_millisecond_intervals`).
#[tokio::test(start_paused = true)]
async fn a_keyed_acquire_loop_keeps_the_quotas_rate_with_sub_millisecond_intervals() {
    let quota = Quota::with_period(2, Duration::from_micros(3000))
        .unwrap()
        .with_burst(1)
        .unwrap();
    let k = KeyedRateLimiter::<u8>::builder(quota).build().unwrap();
    k.try_acquire(&7, 1).unwrap();
    let start = Instant::now();
    for _ in 0..100 {
        k.acquire(&7, 1).await.unwrap();
    }
    assert!(start.elapsed() <= ms(151), "{:?}", start.elapsed());
    // A plain check is never back-dated: the bucket is empty right after.
    assert!(k.try_acquire(&7, 1).is_err());
}

// Reference: Go golang.org/x/time/rate (rate_test.go)
//
// Go's tables are in steps of d = 100 ms from t0; `tN` below is N * d. Go's
// `AllowN(t, n)` is `try_acquire(n)` with a `ManualClock` standing at `t`,
// `TokensAt(t)` is `snapshot().available` (whole tokens, which these tables
// only ever hold), `WaitN` is `acquire` / `acquire_deadline` on the paused
// clock, and a cancelled `Wait` is a dropped `acquire` future. Go's
// reservations have no counterpart (see `flowguard::rate`, "No
// reservations"); a reservation still waiting is an `acquire` still queued.

fn d(n: u64) -> Duration {
    ms(100 * n)
}

/// Go's `run`: `(tN, tokens there before the call, n, allowed)` per step, on a
/// clock that only moves forward.
fn run_go_table(
    clock: &ManualClock,
    steps: &[(u64, Option<u32>, u32, bool)],
    tokens: impl Fn() -> u32,
    allow: impl Fn(u32) -> bool,
) {
    let t0 = clock.elapsed();
    for (i, &(at, toks, n, ok)) in steps.iter().enumerate() {
        clock.advance(d(at) - (clock.elapsed() - t0));
        if let Some(toks) = toks {
            assert_eq!(tokens(), toks, "step {i}: tokens at t{at}");
        }
        assert_eq!(allow(n), ok, "step {i}: allow({n}) at t{at}");
    }
}

/// Go's `TestLimit` / `TestEvery`: `Every(interval)` is a quota of one per
/// interval, exact to the nanosecond; Go's `Inf` (`Every(0)`) and intervals
/// past 73 years are configuration errors here.
#[test]
fn go_every_is_one_token_per_interval() {
    for every in [
        Duration::from_nanos(1),
        Duration::from_micros(1),
        ms(1),
        ms(10),
        ms(100),
        Duration::from_secs(1),
        Duration::from_secs(2),
        ms(2500),
        Duration::from_secs(4),
        Duration::from_secs(10),
    ] {
        let q = Quota::with_period(1, every).unwrap();
        assert_eq!((q.emission_interval(), q.burst()), (every, 1), "{every:?}");
    }
    let e = Quota::with_period(1, Duration::ZERO).unwrap_err();
    assert_eq!((e.field(), e.kind()), ("period", ConfigErrorKind::Zero));
    let e = Quota::with_period(1, Duration::from_nanos(i64::MAX as u64)).unwrap_err();
    assert_eq!((e.field(), e.kind()), ("period", ConfigErrorKind::TooLarge));
}

#[test]
fn go_limiter_burst_1() {
    let clock = ManualClock::new();
    let q = Quota::per_second(10).unwrap().with_burst(1).unwrap();
    let l = RateLimiter::with_clock(q, clock.clone());
    let steps = [
        (0, Some(1), 1, true),
        (0, Some(0), 1, false),
        (0, Some(0), 1, false),
        (1, Some(1), 1, true),
        (1, Some(0), 1, false),
        (1, Some(0), 1, false),
        (2, Some(1), 2, false), // burst 1: n = 2 never passes
        (2, Some(1), 1, true),
        (2, Some(0), 1, false),
    ];
    run_go_table(
        &clock,
        &steps,
        || l.snapshot().available,
        |n| l.try_acquire(n).is_ok(),
    );
    // The keyed limiter's buckets follow the same table.
    let clock = ManualClock::new();
    let k = KeyedRateLimiter::with_clock(q, clock.clone());
    let steps = steps.map(|(at, _, n, ok)| (at, None, n, ok));
    run_go_table(&clock, &steps, || 0, |n| k.try_acquire(&"k", n).is_ok());
}

#[test]
fn go_limiter_burst_3() {
    let clock = ManualClock::new();
    let q = Quota::per_second(10).unwrap().with_burst(3).unwrap();
    let l = RateLimiter::with_clock(q, clock.clone());
    let steps = [
        (0, Some(3), 2, true),
        (0, Some(1), 2, false),
        (0, Some(1), 1, true),
        (0, Some(0), 1, false),
        (1, Some(1), 4, false),
        (2, Some(2), 1, true),
        (3, Some(2), 1, true),
        (4, Some(2), 1, true),
        (4, Some(1), 1, true),
        (4, Some(0), 1, false),
        (4, Some(0), 1, false),
        (9, Some(3), 3, true),
        (9, Some(0), 0, true),
    ];
    run_go_table(
        &clock,
        &steps,
        || l.snapshot().available,
        |n| l.try_acquire(n).is_ok(),
    );
    let clock = ManualClock::new();
    let k = KeyedRateLimiter::with_clock(q, clock.clone());
    let steps = steps.map(|(at, _, n, ok)| (at, None, n, ok));
    run_go_table(&clock, &steps, || 0, |n| k.try_acquire(&"k", n).is_ok());
}

/// A clock that can be set to any instant after its epoch, backwards too.
#[derive(Clone, Debug)]
struct SettableClock {
    epoch: Instant,
    at: Arc<std::sync::atomic::AtomicU64>,
}

impl SettableClock {
    fn set(&self, at: Duration) {
        self.at.store(at.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for SettableClock {
    fn now(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.at.load(Ordering::SeqCst))
    }
    fn epoch(&self) -> Instant {
        self.epoch
    }
}

/// Go's `TestLimiterJumpBackwards`, adapted. A `Clock` must be monotonic,
/// but a check that read the clock just before another one admitted a
/// request judges at an instant before that admission, which is the same
/// thing. Go rewinds its `last` and keeps its 2 tokens there; the GCRA
/// charges the earlier instant against the later TAT, so it sees 1 token
/// there and admits one fewer: never more than the bucket held at the
/// latest instant seen.
#[test]
fn go_limiter_jump_backwards_never_admits_more() {
    let clock = SettableClock {
        epoch: Instant::now(),
        at: Arc::default(),
    };
    let l = RateLimiter::with_clock(
        Quota::per_second(10).unwrap().with_burst(3).unwrap(),
        clock.clone(),
    );
    // (tN, tokens, allowed); Go: t0 has 2 tokens, and a second t0 take passes.
    let steps = [
        (1, 3, true),
        (0, 1, true),
        (0, 0, false),
        (0, 0, false),
        (1, 1, true),
        (1, 0, false),
        (1, 0, false),
        (2, 1, true),
        (2, 0, false),
        (2, 0, false),
    ];
    for (i, (at, toks, ok)) in steps.into_iter().enumerate() {
        clock.set(d(at));
        assert_eq!(l.snapshot().available, toks, "step {i}: tokens at t{at}");
        assert_eq!(l.try_acquire(1).is_ok(), ok, "step {i}: allow at t{at}");
    }
}

/// Go's `TestLimiter_noTruncationErrors`: a rate of 1 per 1.3 s admits its
/// first request, and its next exactly 1.3 s later.
#[test]
fn go_no_truncation_errors() {
    let clock = ManualClock::new();
    let q = Quota::with_period(10, Duration::from_secs(13))
        .unwrap()
        .with_burst(1)
        .unwrap();
    let l = RateLimiter::with_clock(q, clock.clone());
    assert!(l.try_acquire(1).is_ok());
    clock.advance(ms(1299));
    assert!(l.try_acquire(1).is_err());
    clock.advance(ms(1));
    assert!(l.try_acquire(1).is_ok());
}

/// Go's `TestSimultaneousRequests`: 15 threads at once on a slow bucket of
/// burst 5; exactly 5 pass, on the plain and on the keyed limiter.
#[test]
fn go_simultaneous_requests_admit_exactly_the_burst() {
    let clock = ManualClock::new();
    let q = Quota::per_second(1).unwrap().with_burst(5).unwrap();
    let l = RateLimiter::with_clock(q, clock.clone());
    let k = KeyedRateLimiter::with_clock(q, clock.clone());
    let barrier = std::sync::Barrier::new(15);
    let (plain, keyed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..15 {
            s.spawn(|| {
                barrier.wait();
                if l.try_acquire(1).is_ok() {
                    plain.fetch_add(1, Ordering::SeqCst);
                }
                if k.try_acquire(&0u8, 1).is_ok() {
                    keyed.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(plain.into_inner(), 5);
    assert_eq!(keyed.into_inner(), 5);
}

/// Go's `TestLongRunningQPS` on a manual clock: 100 per second, burst 100,
/// offered every 2 ms for 5 s. Go accepts 0.999 * ideal ..= ideal + 1
/// (ideal = 100 + 100 * 5 = 600); the exact count is 100 + 4998 ms / 10 ms.
#[test]
fn go_long_running_qps() {
    let clock = ManualClock::new();
    let q = Quota::per_second(100).unwrap();
    let l = RateLimiter::with_clock(q, clock.clone());
    let k = KeyedRateLimiter::with_clock(q, clock.clone());
    let (mut plain, mut keyed) = (0, 0);
    while clock.elapsed() < Duration::from_secs(5) {
        plain += usize::from(l.try_acquire(1).is_ok());
        keyed += usize::from(k.try_acquire(&1u8, 1).is_ok());
        clock.advance(ms(2));
    }
    assert_eq!((plain, keyed), (599, 599)); // within Go's 599..=601
}

/// Go's `TestSimpleReserve`: burst 2 at 10/s; 2 now, 2 at t2, and 2 asked at
/// t3 at t4.
#[tokio::test(start_paused = true)]
async fn go_simple_reserve() {
    let l = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(2).unwrap());
    let t0 = Instant::now();
    l.acquire(2).await.unwrap();
    assert_eq!(t0.elapsed(), d(0));
    assert_eq!(retry_after(l.try_acquire(2)), t0 + d(2));
    l.acquire(2).await.unwrap();
    assert_eq!(t0.elapsed(), d(2));
    tokio::time::advance(d(1)).await;
    assert_eq!(retry_after(l.try_acquire(2)), t0 + d(4));
    l.acquire(2).await.unwrap();
    assert_eq!(t0.elapsed(), d(4));
}

/// Go's `TestMix`: over the burst is refused; a queued wait for 2 (Go's
/// reservation) keeps a later check for 1 out until t3. `available` counts
/// the bucket's own tokens and leaves the queue to `queued_tokens` (Go's
/// `TokensAt` says -1 there).
#[tokio::test(start_paused = true)]
async fn go_mix_of_checks_and_waits() {
    let l = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(2).unwrap());
    let t0 = Instant::now();
    assert_eq!(
        l.try_acquire(3),
        Err(TryAcquireError::InsufficientCapacity {
            requested: 3,
            burst: 2
        })
    );
    l.try_acquire(2).unwrap();
    tokio::time::advance(d(1)).await;
    assert_eq!(l.snapshot().available, 1);
    assert_eq!(retry_after(l.try_acquire(2)), t0 + d(2));
    let l2 = l.clone();
    let waiter = tokio::spawn(async move {
        l2.acquire(2).await.unwrap();
        Instant::now()
    });
    turns(1).await;
    let s = l.snapshot();
    assert_eq!((s.available, s.waiters, s.queued_tokens), (1, 1, 2));
    assert_eq!(retry_after(l.try_acquire(1)), t0 + d(3));
    assert_eq!(waiter.await.unwrap(), t0 + d(2));
    tokio::time::advance(t0 + d(3) - Instant::now()).await;
    assert_eq!(l.try_acquire(1), Ok(()));
}

/// Go's `TestCancelInvalid`: a wait refused for asking more than the burst
/// takes nothing and gives nothing: the next 2 still come at t2.
#[tokio::test(start_paused = true)]
async fn go_refused_wait_changes_nothing() {
    let l = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(2).unwrap());
    let t0 = Instant::now();
    l.acquire(2).await.unwrap();
    assert!(matches!(
        l.acquire(3).await,
        Err(AcquireError::InsufficientCapacity { .. })
    ));
    assert_eq!(retry_after(l.try_acquire(2)), t0 + d(2));
}

/// Go's `TestCancelLast`: the last waiter, cancelled at t1, gives its 2
/// tokens back (it never took them), so 2 asked at t1 come at t2.
#[tokio::test(start_paused = true)]
async fn go_cancel_last_waiter_gives_everything_back() {
    let l = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(2).unwrap());
    let t0 = Instant::now();
    l.acquire(2).await.unwrap();
    assert!(
        tokio::time::timeout(d(1), l.acquire(2)).await.is_err(),
        "cancelled at t1"
    );
    assert_eq!(l.snapshot().waiters, 0);
    assert_eq!(retry_after(l.try_acquire(2)), t0 + d(2));
    l.acquire(2).await.unwrap();
    assert_eq!(t0.elapsed(), d(2));
}

/// Go's `TestCancelTooLate`: a wait that has completed stays spent; 2 asked
/// at t3 come at t4.
#[tokio::test(start_paused = true)]
async fn go_completed_wait_stays_spent() {
    let l = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(2).unwrap());
    let t0 = Instant::now();
    l.acquire(2).await.unwrap();
    let done = l.acquire(2);
    done.await.unwrap(); // acted at t2, then "cancelled" (dropped) too late
    assert_eq!(t0.elapsed(), d(2));
    tokio::time::advance(d(1)).await;
    assert_eq!(retry_after(l.try_acquire(2)), t0 + d(4));
}

/// Go's `TestCancel0Tokens` and `TestCancelMulti`, adapted. Go restores
/// only the tokens that later reservations have not used, so a cancelled
/// reservation ahead of others gives back less than it took. A queued
/// `acquire` takes nothing until it is served, so cancelling it gives
/// everything back and the waiters behind move up: burst 4, drained at t0,
/// waiters for 3, 1 and 1; the 3 and the last 1 cancelled at t1. The
/// middle one is served at once (Go: t4), and 3 more come at t4 (Go: t5).
#[tokio::test(start_paused = true)]
async fn go_cancelled_waiters_ahead_give_everything_back() {
    let l = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(4).unwrap());
    let t0 = Instant::now();
    l.try_acquire(4).unwrap();
    let (a, c) = (l.clone(), l.clone());
    let ra = tokio::spawn(async move { a.acquire(3).await });
    turns(1).await;
    let log: Log = Arc::default();
    let rb = spawn_acquire(&l, 1, 1, &log, t0);
    turns(1).await;
    let rc = tokio::spawn(async move { c.acquire(1).await });
    turns(1).await;
    assert_eq!(l.snapshot().queued_tokens, 5);
    tokio::time::advance(d(1)).await;
    rc.abort();
    ra.abort();
    let _ = (ra.await, rc.await);
    rb.await.unwrap();
    assert_eq!(*log.lock().unwrap(), vec![(1, d(1))]);
    assert_eq!(retry_after(l.try_acquire(3)), t0 + d(4));
}

/// Go's `TestReserveSetLimit`: 5/s burst 2, drained at t0, a wait for 2
/// queued (Go: served at t4); at t2 the rate becomes 10/s. The waiter is
/// re-evaluated (served at t3: the 1 token saved by t2 is kept, the next
/// comes 100 ms later), and 1 more asked at t2 comes at t4, as in Go.
#[tokio::test(start_paused = true)]
async fn go_reserve_set_limit() {
    let l = RateLimiter::new(Quota::per_second(5).unwrap().with_burst(2).unwrap());
    let t0 = Instant::now();
    l.try_acquire(2).unwrap();
    let log: Log = Arc::default();
    let first = spawn_acquire(&l, 0, 2, &log, t0);
    turns(1).await;
    tokio::time::advance(d(2)).await;
    l.set_quota(Quota::per_second(10).unwrap().with_burst(2).unwrap());
    assert_eq!(retry_after(l.try_acquire(1)), t0 + d(4));
    let second = spawn_acquire(&l, 1, 1, &log, t0);
    first.await.unwrap();
    second.await.unwrap();
    assert_eq!(*log.lock().unwrap(), vec![(0, d(3)), (1, d(4))]);
}

/// Go's `TestReserveSetBurst`: 5/s burst 2, drained at t0, a wait for 2
/// queued; at t3 the burst becomes 4, keeping the 1.5 tokens saved. The
/// waiter is served at t4, and 4 asked at t3 come at t12 (Go, asked at t3:
/// -0.5 tokens, 4.5 more at 5/s, t12).
#[tokio::test(start_paused = true)]
async fn go_reserve_set_burst() {
    let l = RateLimiter::new(Quota::per_second(5).unwrap().with_burst(2).unwrap());
    let t0 = Instant::now();
    l.try_acquire(2).unwrap();
    let log: Log = Arc::default();
    let first = spawn_acquire(&l, 0, 2, &log, t0);
    turns(1).await;
    tokio::time::advance(d(3)).await;
    l.set_quota(Quota::per_second(5).unwrap().with_burst(4).unwrap());
    assert_eq!(l.snapshot().available, 1);
    assert_eq!(retry_after(l.try_acquire(4)), t0 + d(12));
    let second = spawn_acquire(&l, 1, 4, &log, t0);
    first.await.unwrap();
    second.await.unwrap();
    assert_eq!(*log.lock().unwrap(), vec![(0, d(4)), (1, d(12))]);
}

/// Go's `TestReserveSetLimitCancel`: as `go_reserve_set_limit`, and the
/// waiter is cancelled at t2 after the change; it gives its 2 back, and 2
/// asked at t2 come at t3.
#[tokio::test(start_paused = true)]
async fn go_reserve_set_limit_then_cancel() {
    let l = RateLimiter::new(Quota::per_second(5).unwrap().with_burst(2).unwrap());
    let t0 = Instant::now();
    l.try_acquire(2).unwrap();
    let l2 = l.clone();
    let waiter = tokio::spawn(async move { l2.acquire(2).await });
    turns(1).await;
    tokio::time::advance(d(2)).await;
    l.set_quota(Quota::per_second(10).unwrap().with_burst(2).unwrap());
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(l.snapshot().waiters, 0);
    assert_eq!(retry_after(l.try_acquire(2)), t0 + d(3));
}

/// Go's `TestReserveMax` (and the refusals of `TestReserveJumpBack`): with
/// at most d to wait, a token at t1 is waited for, one at t2 is refused at
/// once; refusals (over the wait, over the burst) leave the bucket as it was.
#[tokio::test(start_paused = true)]
async fn go_reserve_max_wait() {
    let l = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(2).unwrap());
    let t0 = Instant::now();
    assert_eq!(l.acquire_timeout(2, d(1)).await, Ok(()));
    let l2 = l.clone();
    let near = tokio::spawn(async move {
        l2.acquire_timeout(1, d(1)).await.unwrap();
        Instant::now()
    });
    turns(1).await;
    assert_eq!(
        l.acquire_timeout(1, d(1)).await,
        Err(AcquireError::Timeout {
            retry_after: t0 + d(2)
        })
    );
    assert_eq!(Instant::now(), t0, "refused at once");
    assert!(matches!(
        l.acquire_timeout(3, d(9)).await,
        Err(AcquireError::InsufficientCapacity { .. })
    ));
    let s = l.snapshot();
    assert_eq!((s.waiters, s.queued_tokens), (1, 1));
    assert_eq!(near.await.unwrap(), t0 + d(1));
    assert_eq!(retry_after(l.try_acquire(1)), t0 + d(2));
}

/// Go's `TestWaitSimple`: over the burst fails at once; 2 of 3 pass now, 3
/// more wait 2 d.
#[tokio::test(start_paused = true)]
async fn go_wait_simple() {
    let l = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(3).unwrap());
    let t0 = Instant::now();
    assert_eq!(
        l.acquire(4).await,
        Err(AcquireError::InsufficientCapacity {
            requested: 4,
            burst: 3
        })
    );
    l.acquire(2).await.unwrap();
    assert_eq!(t0.elapsed(), d(0));
    l.acquire(3).await.unwrap();
    assert_eq!(t0.elapsed(), d(2));
}

/// Go's `TestWaitSimple` "already-cancelled", adapted to the documented
/// departure: an expired deadline still takes tokens that are there (Go
/// fails), and fails at once, taking nothing, when they are not.
#[tokio::test(start_paused = true)]
async fn go_wait_with_an_expired_deadline_takes_only_what_is_there() {
    let l = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(3).unwrap());
    tokio::time::advance(d(1)).await;
    let past = Instant::now() - d(1);
    assert_eq!(l.acquire_deadline(1, past).await, Ok(()));
    assert_eq!(l.acquire_timeout(2, Duration::ZERO).await, Ok(()));
    let t = Instant::now();
    assert_eq!(
        l.acquire_timeout(1, Duration::ZERO).await,
        Err(AcquireError::Timeout {
            retry_after: t + d(1)
        })
    );
    assert_eq!(Instant::now(), t);
    assert_eq!(l.snapshot().waiters, 0);
    assert_eq!(retry_after(l.try_acquire(1)), t + d(1));
}

/// Go's `TestWaitCancel`: 2 of 3 now; a wait for 3 cancelled at d takes
/// nothing, so at d 2 tokens are there for the next wait, at once.
#[tokio::test(start_paused = true)]
async fn go_wait_cancel_takes_nothing() {
    let l = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(3).unwrap());
    let t0 = Instant::now();
    l.acquire(2).await.unwrap();
    assert!(tokio::time::timeout(d(1), l.acquire(3)).await.is_err());
    assert_eq!(t0.elapsed(), d(1));
    assert_eq!(l.snapshot().available, 2);
    l.acquire(2).await.unwrap();
    assert_eq!(t0.elapsed(), d(1));
}

/// Go's `TestWaitTimeout`: with a deadline d away, 2 pass at once and a
/// wait for 3 more (2 d away) fails at once.
#[tokio::test(start_paused = true)]
async fn go_wait_timeout_fails_at_once() {
    let l = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(3).unwrap());
    let t0 = Instant::now();
    let deadline = t0 + d(1);
    assert_eq!(l.acquire_deadline(2, deadline).await, Ok(()));
    assert_eq!(
        l.acquire_deadline(3, deadline).await,
        Err(AcquireError::Timeout {
            retry_after: t0 + d(2)
        })
    );
    assert_eq!(t0.elapsed(), d(0));
    assert_eq!(l.snapshot().available, 1);
}

/// Go's `TestWaitInf` and `TestZeroLimit`, adapted to the documented
/// departure: no infinite rate and no zero rate or burst. The slowest quota
/// (1 per 2^61 ns, about 73 years; Go's `TestTinyLimit` asks for 1 per 317
/// years, which is refused) admits its one token and then refuses, without
/// overflow.
#[test]
fn go_zero_and_infinite_limits_are_configuration_errors() {
    let e = Quota::per_second(0).unwrap_err();
    assert_eq!((e.field(), e.kind()), ("rate", ConfigErrorKind::Zero));
    let e = Quota::with_period(1, Duration::ZERO).unwrap_err();
    assert_eq!((e.field(), e.kind()), ("period", ConfigErrorKind::Zero));
    let e = Quota::per_second(3).unwrap().with_burst(0).unwrap_err();
    assert_eq!((e.field(), e.kind()), ("burst", ConfigErrorKind::Zero));
    let e = Quota::with_period(1, Duration::from_secs(10_000_000_000)).unwrap_err();
    assert_eq!((e.field(), e.kind()), ("period", ConfigErrorKind::TooLarge));
    let clock = ManualClock::new();
    let slowest = Quota::with_period(1, Duration::from_nanos(1 << 61)).unwrap();
    let l = RateLimiter::with_clock(slowest, clock.clone());
    assert!(l.try_acquire(1).is_ok());
    assert_eq!(
        retry_after(l.try_acquire(1)),
        clock.now() + Duration::from_nanos(1 << 61)
    );
}

/// Go's `TestSetAfterZeroLimit`, on the slowest quota: drained, then set
/// to 10/s, the next token comes 100 ms later.
#[tokio::test(start_paused = true)]
async fn go_set_limit_after_the_slowest_quota() {
    let slowest = Quota::with_period(1, Duration::from_nanos(1 << 61)).unwrap();
    let l = RateLimiter::new(slowest);
    assert!(l.try_acquire(1).is_ok());
    assert!(l.try_acquire(1).is_err());
    l.set_quota(Quota::per_second(10).unwrap().with_burst(1).unwrap());
    let t = Instant::now();
    l.acquire(1).await.unwrap();
    assert_eq!(t.elapsed(), d(1));
}

// Reference: resilience4j RateLimiter (RefillRateLimiterTest.java,
// RateLimitersImplementationTest.java)

/// `refillTest`: 10 per second, all 10 taken; 100 ms later 1 token (not a
/// whole period's worth: refill is continuous), 510 ms later 4.
#[test]
fn r4j_refill_is_continuous() {
    let clock = ManualClock::new();
    let l = RateLimiter::with_clock(Quota::per_second(10).unwrap(), clock.clone());
    l.try_acquire(10).unwrap();
    clock.advance(ms(100));
    assert!(l.try_acquire(1).is_ok());
    assert!(l.try_acquire(4).is_err());
    clock.advance(ms(410));
    assert!(l.try_acquire(4).is_ok());
    assert!(l.try_acquire(1).is_err());
}

/// `testMaxCapacity`: 10 per second, burst 20; after taking 10, each wait of
/// i * 100 ms (i = 1..=20) gives enough for a request of i, up to the burst.
#[test]
fn r4j_burst_above_the_rate_holds_up_to_the_burst() {
    let clock = ManualClock::new();
    let q = Quota::per_second(10).unwrap().with_burst(20).unwrap();
    let l = RateLimiter::with_clock(q, clock.clone());
    l.try_acquire(10).unwrap();
    for i in 1..=20u32 {
        clock.advance(ms(100 * u64::from(i)));
        assert_eq!(l.try_acquire(i), Ok(()), "i = {i}");
    }
    assert_eq!(l.snapshot().available, 0);
}

/// `acquireBigNumberOfPermitsAtStartOfCycleTest` and
/// `tryToAcquireBigNumberOfPermitsAtEndOfCycleTest`, with the timeout 0:
/// a request larger than what is left fails at once and takes nothing,
/// and passes once refilled.
#[tokio::test(start_paused = true)]
async fn r4j_big_requests_with_a_zero_timeout() {
    let l = RateLimiter::new(Quota::with_period(10, ms(250)).unwrap());
    assert_eq!(l.acquire_timeout(1, Duration::ZERO).await, Ok(()));
    assert_eq!(l.acquire_timeout(5, Duration::ZERO).await, Ok(()));
    assert!(matches!(
        l.acquire_timeout(5, Duration::ZERO).await,
        Err(AcquireError::Timeout { .. })
    ));
    assert_eq!(l.snapshot().available, 4);
    tokio::time::advance(ms(25)).await;
    assert_eq!(l.acquire_timeout(5, Duration::ZERO).await, Ok(()));
    assert_eq!(l.snapshot().available, 0);
}

/// Go's `TestSimpleReserve` on a clock moved by hand in one step past the
/// waiter's ready instant. Go charges a waiting reservation at its own
/// instant (t2), so 2 asked at t3 come at t4. Here too: the head of the
/// queue, woken by the move, is charged at its ready instant, as if the
/// clock had passed through it (it was charged at the move, t3, which lost
/// the refill from t2 to t3 and put the next 2 at t5).
#[tokio::test(start_paused = true)]
async fn go_simple_reserve_with_one_coarse_manual_move() {
    let clock = ManualClock::new();
    let q = Quota::per_second(10).unwrap().with_burst(2).unwrap();
    let l = RateLimiter::with_clock(q, clock.clone());
    let t0 = clock.now();
    l.try_acquire(2).unwrap();
    let l2 = l.clone();
    let waiter = tokio::spawn(async move { l2.acquire(2).await });
    turns(1).await;
    clock.advance(d(3));
    waiter.await.unwrap().unwrap();
    assert_eq!(retry_after(l.try_acquire(2)), t0 + d(4));
}

/// Go's `Wait` with a deadline succeeds whenever its reservation's instant
/// is within the deadline. Burst 1 at 10/s, drained; a wait queued ahead
/// (ready at t1) and a wait with the deadline t2 (predicted t2, so it
/// queues). One move of the clock by hand to t2: the head is admitted as
/// of t1, and the second wait, past its deadline but reached by the queue
/// at t2, is admitted too, as Go admits it at t2.
#[tokio::test(start_paused = true)]
async fn go_wait_deadline_that_fits_the_prediction_on_one_coarse_manual_move() {
    let clock = ManualClock::new();
    let q = Quota::per_second(10).unwrap().with_burst(1).unwrap();
    let l = RateLimiter::with_clock(q, clock.clone());
    l.try_acquire(1).unwrap();
    let (a, b) = (l.clone(), l.clone());
    let ahead = tokio::spawn(async move { a.acquire(1).await });
    turns(1).await;
    let with_deadline = tokio::spawn(async move { b.acquire_timeout(1, d(2)).await });
    turns(1).await;
    assert_eq!(l.snapshot().waiters, 2);
    clock.advance(d(2));
    assert_eq!(ahead.await.unwrap(), Ok(()));
    assert_eq!(with_deadline.await.unwrap(), Ok(()));
}

/// The other side of the coarse-move rule: a waiter behind a head that is
/// not ready by its deadline still gives up on the move past it.
#[tokio::test(start_paused = true)]
async fn a_coarse_move_past_a_deadline_behind_a_head_not_ready_times_out() {
    let clock = ManualClock::new();
    let q = Quota::per_second(10).unwrap().with_burst(5).unwrap();
    let l = RateLimiter::with_clock(q, clock.clone());
    l.try_acquire(5).unwrap();
    let (a, b) = (l.clone(), l.clone());
    // Needs the whole burst: ready at t5.
    let ahead = tokio::spawn(async move { a.acquire(5).await });
    turns(1).await;
    // Predicted at t6 (behind the 5): a deadline of t6 lets it queue.
    let behind = tokio::spawn(async move { b.acquire_timeout(1, d(6)).await });
    turns(1).await;
    assert_eq!(l.snapshot().waiters, 2);
    // Take the bucket away from under them: the head is not ready by t6.
    l.set_quota(Quota::per_second(1).unwrap().with_burst(5).unwrap());
    clock.advance(d(7));
    turns(2).await;
    assert!(matches!(
        behind.await.unwrap(),
        Err(AcquireError::Timeout { .. })
    ));
    assert_eq!(l.snapshot().waiters, 1);
    drop(ahead);
}

/// A head is never charged before it became the head: a waiter behind one
/// that gives up after the bucket filled is admitted at the instant it
/// moved up, not at the earlier instant the bucket alone would give it
/// (which would hand it a token the full bucket never held).
#[tokio::test(start_paused = true)]
async fn a_head_is_charged_no_earlier_than_it_became_the_head() {
    let clock = ManualClock::new();
    let q = Quota::per_second(10).unwrap().with_burst(5).unwrap();
    let l = RateLimiter::with_clock(q, clock.clone());
    l.try_acquire(5).unwrap();
    let (a, b) = (l.clone(), l.clone());
    let ahead = tokio::spawn(async move { a.acquire(5).await }); // ready at t5
    turns(1).await;
    let behind = tokio::spawn(async move { b.acquire(1).await });
    turns(1).await;
    // Full again at t5; at t7 the head leaves before it is polled.
    clock.advance(d(7));
    ahead.abort();
    assert!(ahead.await.unwrap_err().is_cancelled());
    behind.await.unwrap().unwrap();
    // Charged at t7, out of a full bucket: 4 left.
    assert_eq!(l.snapshot().available, 4);
}

/// The keyed limiter's `acquire` on a clock moved by hand in one step past
/// the ready instant takes the tokens as of that instant, as the plain
/// limiter's head does (Go's `TestSimpleReserve`, per key).
#[tokio::test(start_paused = true)]
async fn keyed_acquire_on_a_coarse_manual_move_is_charged_at_the_ready_instant() {
    let clock = ManualClock::new();
    let q = Quota::per_second(10).unwrap().with_burst(2).unwrap();
    let k = KeyedRateLimiter::with_clock(q, clock.clone());
    let t0 = clock.now();
    k.try_acquire(&"a", 2).unwrap();
    let k2 = k.clone();
    let waiter = tokio::spawn(async move { k2.acquire(&"a", 2).await });
    turns(1).await;
    clock.advance(d(3));
    waiter.await.unwrap().unwrap();
    assert_eq!(retry_after(k.try_acquire(&"a", 2)), t0 + d(4));
}

// Reference: tokio (tokio/src/sync/tests/semaphore_batch.rs,
// release_permits_at_drop), applied to the limiter's waiter queue: a waker
// replaced by a re-poll, or removed when its wait ends, runs its owner's
// drop code, which may use the same limiter.

/// A waker whose drop reads the limiter it waits on (which takes the
/// waiter lock).
struct LimiterInWaker(RateLimiter);

impl std::task::Wake for LimiterInWaker {
    fn wake(self: Arc<Self>) {}
}

impl Drop for LimiterInWaker {
    fn drop(&mut self) {
        let _ = self.0.snapshot();
    }
}

#[path = "support/deadlock.rs"]
mod deadlock;
use deadlock::without_deadlock;

/// Polls `f` once with `w`.
fn poll<F: std::future::Future + Unpin>(
    f: &mut F,
    w: &std::task::Waker,
) -> std::task::Poll<F::Output> {
    std::pin::Pin::new(f).poll(&mut std::task::Context::from_waker(w))
}

#[test]
fn tokio_a_waiters_dropped_waker_may_use_the_limiter() {
    use std::task::Waker;
    without_deadlock(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let l = RateLimiter::new(Quota::per_second(1).unwrap());
            let waker = || Waker::from(Arc::new(LimiterInWaker(l.clone())));
            let noop = Waker::noop();
            l.try_acquire(1).unwrap();
            let mut head = Box::pin(l.acquire(1));
            let mut behind = Box::pin(l.acquire(1));
            assert!(poll(&mut head, noop).is_pending());
            // Re-polled with another waker: the first one is dropped.
            assert!(poll(&mut behind, &waker()).is_pending());
            assert!(poll(&mut behind, &waker()).is_pending());
            // Cancelled: its (second) waker is dropped.
            drop(behind);
            // Admitted: the waker stored by its last wait is dropped.
            assert!(poll(&mut head, &waker()).is_pending());
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(poll(&mut head, noop).is_ready());
            assert_eq!(l.snapshot().waiters, 0);
        });
    });
}
