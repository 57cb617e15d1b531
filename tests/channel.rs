//! Behaviour tests of `flowguard::channel`, on tokio's paused clock.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use flowguard::ConfigErrorKind;
use flowguard::channel::{
    self, Builder, RecvTimeoutError, ReserveError, SendError, SendTimeoutError, TryRecvError,
    TryReserveError, TrySendError,
};
use futures::StreamExt;
use tokio::time::Instant;

fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    std::pin::Pin::new(f).poll(&mut cx)
}

// ---- configuration ---------------------------------------------------------

#[test]
fn zero_capacity_is_a_typed_error() {
    let err = channel::bounded::<u8>(0).unwrap_err();
    assert_eq!(err.component(), "channel");
    assert_eq!(err.field(), "capacity");
    assert_eq!(err.kind(), ConfigErrorKind::Zero);
    let err = channel::bounded::<u8>(usize::MAX).unwrap_err();
    assert_eq!(
        (err.field(), err.kind()),
        ("capacity", ConfigErrorKind::TooLarge)
    );
}

#[test]
fn builder_validates_every_field() {
    let cases: Vec<(Builder<Vec<u8>>, &str, ConfigErrorKind)> = vec![
        (
            Builder::new(4).weigh(|v: &Vec<u8>| v.len()),
            "max_weight",
            ConfigErrorKind::Missing,
        ),
        (
            Builder::new(4).max_weight(10),
            "weigh",
            ConfigErrorKind::Missing,
        ),
        (
            Builder::new(4).weigh(|v: &Vec<u8>| v.len()).max_weight(0),
            "max_weight",
            ConfigErrorKind::Zero,
        ),
        (
            Builder::new(4).high_watermark(0),
            "high_watermark",
            ConfigErrorKind::Zero,
        ),
        (
            Builder::new(4).high_watermark(5),
            "high_watermark",
            ConfigErrorKind::TooLarge,
        ),
        (
            Builder::new(4).low_watermark(1),
            "high_watermark",
            ConfigErrorKind::Missing,
        ),
        (
            Builder::new(4).high_watermark(2).low_watermark(2),
            "low_watermark",
            ConfigErrorKind::Conflict,
        ),
        (
            Builder::new(0).high_watermark(2),
            "capacity",
            ConfigErrorKind::Zero,
        ),
    ];
    for (b, field, kind) in cases {
        let err = b.build().unwrap_err();
        assert_eq!((err.field(), err.kind()), (field, kind), "{err}");
        assert!(
            err.to_string().starts_with("invalid channel config: "),
            "{err}"
        );
    }
    assert!(
        Builder::<u8>::new(4)
            .high_watermark(4)
            .low_watermark(0)
            .build()
            .is_ok()
    );
}

#[test]
fn set_capacity_validates() {
    let (tx, rx) = Builder::<u8>::new(8).high_watermark(4).build().unwrap();
    assert_eq!(
        tx.set_capacity(0).unwrap_err().kind(),
        ConfigErrorKind::Zero
    );
    assert_eq!(
        rx.set_capacity(usize::MAX).unwrap_err().kind(),
        ConfigErrorKind::TooLarge
    );
    assert_eq!(
        tx.set_capacity(3).unwrap_err().kind(),
        ConfigErrorKind::TooSmall
    );
    tx.set_capacity(4).unwrap();
    assert_eq!(tx.metrics().capacity, 4);
}

// ---- sending -----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn send_waits_for_room_then_proceeds() {
    let (tx, rx) = channel::bounded::<u32>(2).unwrap();
    tx.send(1).await.unwrap();
    tx.send(2).await.unwrap();
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let v = rx.recv().await;
        (v, rx)
    });
    tx.send(3).await.unwrap();
    // The producer was held back exactly until the consumer took one.
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    let (v, rx) = consumer.await.unwrap();
    assert_eq!(v, Some(1));
    assert_eq!(rx.try_recv(), Ok(2));
    assert_eq!(rx.try_recv(), Ok(3));
}

#[tokio::test(start_paused = true)]
async fn waiting_senders_are_served_fifo() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    tx.send(0).await.unwrap();
    let mut handles = Vec::new();
    for i in 1..=5u32 {
        let tx = tx.clone();
        handles.push(tokio::spawn(async move { tx.send(i).await }));
        // Let each one park before the next starts.
        tokio::task::yield_now().await;
    }
    assert_eq!(tx.metrics().waiting_senders, 5);
    // A newcomer does not barge past them.
    assert_eq!(tx.try_send(99), Err(TrySendError::Full(99)));
    drop(tx);
    let mut got = Vec::new();
    while let Some(v) = rx.recv().await {
        got.push(v);
    }
    assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    for h in handles {
        h.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn try_send_full_closed_too_heavy() {
    let (tx, rx) = Builder::<Vec<u8>>::new(4)
        .weigh(|v| v.len())
        .max_weight(10)
        .build()
        .unwrap();
    assert_eq!(
        tx.try_send(vec![0; 11]),
        Err(TrySendError::TooHeavy(vec![0; 11]))
    );
    assert_eq!(
        tx.send(vec![0; 11]).await,
        Err(SendError::TooHeavy(vec![0; 11]))
    );
    tx.try_send(vec![0; 6]).unwrap();
    // Room in count but not in weight.
    assert_eq!(tx.try_send(vec![0; 5]), Err(TrySendError::Full(vec![0; 5])));
    tx.try_send(vec![0; 4]).unwrap();
    let m = rx.metrics();
    assert_eq!((m.len, m.weight, m.max_weight), (2, 10, Some(10)));
    drop(rx);
    assert_eq!(tx.try_send(vec![1]), Err(TrySendError::Closed(vec![1])));
    assert_eq!(tx.send(vec![2]).await, Err(SendError::Closed(vec![2])));
    assert_eq!(TrySendError::Full(1u8).to_string(), "channel is full");
    assert_eq!(TrySendError::Full(1u8).into_inner(), 1);
}

#[tokio::test(start_paused = true)]
async fn weight_bound_makes_senders_wait() {
    let (tx, rx) = Builder::<Vec<u8>>::new(100)
        .weigh(|v| v.len())
        .max_weight(10)
        .build()
        .unwrap();
    tx.send(vec![0; 8]).await.unwrap();
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(rx.recv().await.map(|v| v.len()), Some(8));
        rx
    });
    tx.send(vec![0; 8]).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(5));
    let rx = consumer.await.unwrap();
    assert_eq!(rx.metrics().weight, 8);
}

#[tokio::test(start_paused = true)]
async fn send_timeout_gives_the_value_back_at_the_deadline() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    tx.send(1).await.unwrap();
    let start = Instant::now();
    let r = tx.send_timeout(2, Duration::from_millis(250)).await;
    assert_eq!(r, Err(SendTimeoutError::Timeout(2)));
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(tx.metrics().waiting_senders, 0);
    // Not half-enqueued.
    assert_eq!(rx.try_recv(), Ok(1));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    // Succeeds when room comes in time.
    tx.send(1).await.unwrap();
    let rx2 = rx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        rx2.recv().await
    });
    tx.send_timeout(3, Duration::from_secs(1)).await.unwrap();
    assert_eq!(rx.try_recv(), Ok(3));
    // Huge timeouts do not panic.
    tx.send_timeout(4, Duration::MAX).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn cancelled_send_never_half_enqueues_and_gives_up_its_place() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    tx.send(1).await.unwrap();
    {
        let mut f = tx.send(2);
        assert!(poll_once(&mut f).is_pending());
        assert_eq!(tx.metrics().waiting_senders, 1);
    }
    assert_eq!(tx.metrics().waiting_senders, 0);
    assert_eq!(rx.try_recv(), Ok(1));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    // A cancelled send whose value was already handed over counts as sent.
    tx.send(1).await.unwrap();
    let mut f = tx.send(2);
    assert!(poll_once(&mut f).is_pending());
    assert_eq!(rx.try_recv(), Ok(1)); // hands room (and value) to the waiter
    drop(f);
    assert_eq!(rx.try_recv(), Ok(2));
}

#[tokio::test(start_paused = true)]
async fn force_send_evicts_oldest_and_counts() {
    let (tx, rx) = channel::bounded::<u32>(3).unwrap();
    for i in 0..3 {
        assert_eq!(tx.force_send(i).unwrap().len(), 0);
    }
    let ev: Vec<u32> = tx.force_send(3).unwrap().collect();
    assert_eq!(ev, [0]);
    let ev: Vec<u32> = tx.force_send(4).unwrap().collect();
    assert_eq!(ev, [1]);
    let m = rx.metrics();
    assert_eq!((m.len, m.evicted, m.sent), (3, 2, 5));
    let mut buf = Vec::new();
    rx.recv_many(&mut buf, 10).await;
    assert_eq!(buf, [2, 3, 4]);
    assert_eq!(rx.metrics().received, 3);
    // Room held by permits cannot be evicted.
    let _permits = tx.try_reserve_many(3).unwrap();
    assert_eq!(tx.force_send(9).unwrap_err(), TrySendError::Full(9));
    tx.close();
    drop(_permits);
    assert_eq!(tx.force_send(9).unwrap_err(), TrySendError::Closed(9));
}

#[tokio::test(start_paused = true)]
async fn force_send_weighted_evicts_as_many_as_needed() {
    let (tx, rx) = Builder::<Vec<u8>>::new(10)
        .weigh(|v| v.len())
        .max_weight(10)
        .build()
        .unwrap();
    for i in 0..5u8 {
        tx.try_send(vec![i; 2]).unwrap();
    }
    let ev: Vec<Vec<u8>> = tx.force_send(vec![9; 7]).unwrap().collect();
    // 10 queued + 7 needs the weight at 3 or less: four must go.
    assert_eq!(ev, [vec![0; 2], vec![1; 2], vec![2; 2], vec![3; 2]]);
    assert_eq!(rx.metrics().weight, 2 + 7);
    assert_eq!(rx.metrics().evicted, 4);
    assert_eq!(
        tx.force_send(vec![0; 11]).unwrap_err(),
        TrySendError::TooHeavy(vec![0; 11])
    );
}

// ---- reserving -----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn permits_hold_room_and_return_it_on_drop() {
    let (tx, rx) = channel::bounded::<u32>(2).unwrap();
    let p1 = tx.reserve().await.unwrap();
    let p2 = tx.try_reserve().unwrap();
    assert_eq!(tx.try_send(0), Err(TrySendError::Full(0)));
    assert_eq!(tx.try_reserve().unwrap_err(), TryReserveError::Full);
    assert_eq!(rx.metrics().reserved, 2);
    p1.send(1);
    drop(p2);
    assert_eq!(rx.metrics().reserved, 0);
    tx.try_send(2).unwrap();
    assert_eq!(rx.try_recv(), Ok(1));
    assert_eq!(rx.try_recv(), Ok(2));
}

#[tokio::test(start_paused = true)]
async fn reserve_many_is_all_or_nothing_and_fifo() {
    let (tx, rx) = channel::bounded::<u32>(4).unwrap();
    assert_eq!(tx.reserve_many(5).await.unwrap_err(), ReserveError::TooMany);
    assert_eq!(
        tx.try_reserve_many(5).unwrap_err(),
        TryReserveError::TooMany
    );
    tx.send(0).await.unwrap();
    tx.send(0).await.unwrap();
    let mut big = tx.reserve_many(3);
    assert!(poll_once(&mut big).is_pending());
    // A single send queues behind the waiting reservation.
    let mut small = tx.send(7);
    assert!(poll_once(&mut small).is_pending());
    rx.try_recv().unwrap();
    let Poll::Ready(Ok(permits)) = poll_once(&mut big) else {
        panic!("reservation should be granted");
    };
    assert_eq!(permits.len(), 3);
    assert!(poll_once(&mut small).is_pending());
    drop(permits);
    assert!(matches!(poll_once(&mut small), Poll::Ready(Ok(()))));
}

#[tokio::test(start_paused = true)]
async fn owned_permits_move_into_tasks_and_return_room() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    let permit = tx.clone().reserve_owned().await.unwrap();
    assert_eq!(rx.metrics().reserved, 1);
    // Parked behind the permit; cancelling it leaks nothing.
    let mut waiting = tx.clone().reserve_owned();
    assert!(poll_once(&mut waiting).is_pending());
    let tx2 = tokio::spawn(async move { permit.send(4) }).await.unwrap();
    drop(waiting);
    assert_eq!(rx.metrics().reserved, 0);
    assert_eq!(rx.recv().await, Some(4));
    let permit = tx2.reserve_owned().await.unwrap();
    let tx3 = permit.release();
    assert_eq!(rx.metrics().reserved, 0);
    let permit = tx3.reserve_owned().await.unwrap();
    drop(permit);
    assert_eq!(rx.metrics().reserved, 0);
    tx.close();
    assert_eq!(
        tx.clone().reserve_owned().await.unwrap_err(),
        ReserveError::Closed
    );
}

#[tokio::test(start_paused = true)]
async fn cancelled_reserve_returns_granted_room() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    tx.send(0).await.unwrap();
    let mut r = tx.reserve();
    assert!(poll_once(&mut r).is_pending());
    rx.try_recv().unwrap(); // grants the slot to `r`
    assert_eq!(rx.metrics().reserved, 1);
    drop(r);
    assert_eq!(rx.metrics().reserved, 0);
    tx.try_send(1).unwrap();
}

#[tokio::test(start_paused = true)]
async fn shrinking_capacity_refuses_a_waiting_oversized_reservation() {
    let (tx, rx) = channel::bounded::<u32>(4).unwrap();
    tx.send(0).await.unwrap();
    let mut r = tx.reserve_many(4);
    assert!(poll_once(&mut r).is_pending());
    tx.set_capacity(2).unwrap();
    assert!(matches!(
        poll_once(&mut r),
        Poll::Ready(Err(ReserveError::TooMany))
    ));
    drop(rx);
}

/// Issue 19, item 3: a reservation refused by a shrink must not keep a
/// later sender parked while there is room, before or after the refused
/// future is collected.
#[tokio::test(start_paused = true)]
async fn refused_reservation_does_not_park_a_later_sender() {
    let (tx, rx) = channel::bounded::<u32>(3).unwrap();
    tx.try_send(0).unwrap();
    let mut r = tx.reserve_many(3);
    assert!(poll_once(&mut r).is_pending());
    tx.set_capacity(2).unwrap();
    let mut s = tx.send(9);
    assert!(matches!(poll_once(&mut s), Poll::Ready(Ok(()))));
    assert!(matches!(
        poll_once(&mut r),
        Poll::Ready(Err(ReserveError::TooMany))
    ));
    assert_eq!(rx.metrics().len, 2);
    assert_eq!(rx.metrics().waiting_senders, 0);
    assert_eq!(rx.recv().await, Some(0));
    assert_eq!(rx.recv().await, Some(9));
}

/// The same, with the later sender queued before the refusal: collecting
/// the refused reservation hands the room on.
#[tokio::test(start_paused = true)]
async fn collecting_a_refused_reservation_serves_the_next_sender() {
    let (tx, rx) = channel::bounded::<u32>(3).unwrap();
    tx.try_send(0).unwrap();
    tx.try_send(1).unwrap();
    let mut r = tx.reserve_many(3);
    assert!(poll_once(&mut r).is_pending());
    let mut s = tx.send(9);
    assert!(poll_once(&mut s).is_pending());
    tx.set_capacity(2).unwrap();
    // Two of two used: `s` still waits, behind nobody that can be served.
    assert!(poll_once(&mut s).is_pending());
    assert!(matches!(
        poll_once(&mut r),
        Poll::Ready(Err(ReserveError::TooMany))
    ));
    assert_eq!(rx.recv().await, Some(0));
    assert!(matches!(poll_once(&mut s), Poll::Ready(Ok(()))));
    assert_eq!(rx.recv().await, Some(1));
    assert_eq!(rx.recv().await, Some(9));
}

#[tokio::test(start_paused = true)]
async fn growing_capacity_admits_waiting_senders() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    tx.send(0).await.unwrap();
    let mut f = tx.send(1);
    assert!(poll_once(&mut f).is_pending());
    rx.set_capacity(2).unwrap();
    assert!(matches!(poll_once(&mut f), Poll::Ready(Ok(()))));
    assert_eq!(rx.metrics().len, 2);
}

// ---- receiving -----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn recv_timeout_is_exact() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    let start = Instant::now();
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(40)).await,
        Err(RecvTimeoutError::Timeout)
    );
    assert_eq!(start.elapsed(), Duration::from_millis(40));
    assert_eq!(rx.metrics().waiting_receivers, 0);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(15)).await;
        tx.send(5).await.unwrap();
    });
    let start = Instant::now();
    assert_eq!(rx.recv_timeout(Duration::from_secs(1)).await, Ok(5));
    assert_eq!(start.elapsed(), Duration::from_millis(15));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(1)).await,
        Err(RecvTimeoutError::Closed)
    );
}

#[tokio::test(start_paused = true)]
async fn cancelled_recv_loses_nothing_and_passes_its_wakeup_on() {
    let (tx, rx) = channel::bounded::<u32>(4).unwrap();
    let rx2 = rx.clone();
    let mut a = rx.recv();
    assert!(poll_once(&mut a).is_pending());
    let other = tokio::spawn(async move { rx2.recv().await });
    tokio::task::yield_now().await;
    assert_eq!(tx.metrics().waiting_receivers, 2);
    tx.send(7).await.unwrap(); // wakes `a`, the first waiter
    drop(a); // ... which is cancelled: `other` must get the value.
    assert_eq!(other.await.unwrap(), Some(7));
    assert_eq!(rx.metrics().received, 1);
}

#[tokio::test(start_paused = true)]
async fn recv_many_waits_then_takes_up_to_limit() {
    let (tx, rx) = channel::bounded::<u32>(8).unwrap();
    let mut buf = Vec::new();
    assert_eq!(rx.recv_many(&mut buf, 0).await, 0);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(3)).await;
        for i in 0..5 {
            tx.try_send(i).unwrap();
        }
    });
    let start = Instant::now();
    assert_eq!(rx.recv_many(&mut buf, 4).await, 4);
    assert_eq!(start.elapsed(), Duration::from_millis(3));
    assert_eq!(rx.recv_many(&mut buf, 4).await, 1);
    assert_eq!(rx.recv_many(&mut buf, 4).await, 0);
    assert_eq!(buf, [0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn receiver_is_a_stream() {
    let (tx, rx) = channel::bounded::<u32>(2).unwrap();
    tokio::spawn(async move {
        for i in 0..10 {
            tx.send(i).await.unwrap();
        }
    });
    let got: Vec<u32> = rx.collect().await;
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}

#[test]
fn blocking_halves_work_from_plain_threads() {
    let (tx, rx) = channel::bounded::<u64>(2).unwrap();
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    tx.send_blocking(p * 1000 + i).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut got = Vec::new();
    while let Some(v) = rx.recv_blocking() {
        got.push(v);
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(got.len(), 1000);
    // FIFO per producer.
    for p in 0..2 {
        let mine: Vec<u64> = got.iter().copied().filter(|v| v / 1000 == p).collect();
        assert_eq!(mine, (0..500).map(|i| p * 1000 + i).collect::<Vec<_>>());
    }
}

// ---- closing -----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn senders_gone_receivers_drain_then_end() {
    let (tx, rx) = channel::bounded::<u32>(4).unwrap();
    let tx2 = tx.clone();
    tx.send(1).await.unwrap();
    drop(tx);
    assert!(!rx.is_closed());
    tx2.send(2).await.unwrap();
    drop(tx2);
    assert!(rx.is_closed());
    assert_eq!(rx.recv().await, Some(1));
    assert_eq!(rx.recv().await, Some(2));
    assert_eq!(rx.recv().await, None);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
}

#[tokio::test(start_paused = true)]
async fn receivers_gone_sends_fail_at_once_with_the_value() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    tx.send(1).await.unwrap();
    let waiting = tokio::spawn({
        let tx = tx.clone();
        async move { tx.send(2).await }
    });
    tokio::task::yield_now().await;
    drop(rx);
    assert_eq!(waiting.await.unwrap(), Err(SendError::Closed(2)));
    assert_eq!(tx.send(3).await, Err(SendError::Closed(3)));
    assert!(tx.reserve().await.is_err());
}

#[tokio::test(start_paused = true)]
async fn close_from_any_handle_wakes_everyone() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    let rx2 = rx.clone();
    let parked_rx = tokio::spawn(async move { rx2.recv().await });
    tokio::task::yield_now().await;
    assert!(rx.close());
    assert!(!tx.close());
    assert_eq!(parked_rx.await.unwrap(), None);
    assert_eq!(tx.try_send(1), Err(TrySendError::Closed(1)));
}

#[tokio::test(start_paused = true)]
async fn receivers_wait_for_outstanding_permits_after_close() {
    let (tx, rx) = channel::bounded::<u32>(2).unwrap();
    let permit = tx.try_reserve().unwrap();
    tx.close();
    let mut r = rx.recv();
    assert!(poll_once(&mut r).is_pending());
    permit.send(8);
    assert_eq!(r.await, Some(8));
    assert_eq!(rx.recv().await, None);
}

// ---- watermarks ----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn drained_resolves_only_below_the_low_mark() {
    let (tx, rx) = Builder::<u32>::new(10)
        .high_watermark(6)
        .low_watermark(2)
        .build()
        .unwrap();
    for i in 0..6 {
        assert!(!tx.is_congested());
        tx.send(i).await.unwrap();
    }
    assert!(tx.is_congested() && rx.metrics().congested);
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if rx.recv().await.is_none() {
                break;
            }
        }
    });
    tx.drained().await;
    // 6 -> 2 takes four receives, 10 ms apart.
    assert_eq!(start.elapsed(), Duration::from_millis(40));
    assert!(!tx.is_congested());
    drop(tx);
    consumer.await.unwrap();
}

// ---- memory ------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn memory_returns_after_a_burst() {
    let (tx, rx) = channel::bounded::<[u64; 8]>(100_000).unwrap();
    assert_eq!(rx.metrics().allocated, 0, "nothing is allocated up front");
    for i in 0..50_000 {
        tx.try_send([i; 8]).unwrap();
    }
    let peak = rx.metrics().allocated;
    assert!(peak >= 50_000);
    for _ in 0..50_000 {
        rx.recv().await.unwrap();
    }
    let m = rx.metrics();
    assert_eq!(m.peak_len, 50_000);
    assert!(
        m.allocated <= 64,
        "storage stayed at {} slots after the burst",
        m.allocated
    );
    // Steady trickle afterwards stays small.
    for i in 0..1_000 {
        tx.try_send([i; 8]).unwrap();
        rx.try_recv().unwrap();
    }
    assert!(rx.metrics().allocated <= 64);
}

// ---- metrics and types ---------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn metrics_count_everything() {
    let (tx, rx) = channel::bounded::<u32>(2).unwrap();
    tx.send(1).await.unwrap();
    tx.send(2).await.unwrap();
    let mut w = tx.send(3);
    assert!(poll_once(&mut w).is_pending());
    rx.recv().await.unwrap();
    assert!(poll_once(&mut w).is_ready());
    tx.force_send(4).unwrap();
    let m = tx.metrics();
    assert_eq!(
        (
            m.len,
            m.capacity,
            m.peak_len,
            m.sent,
            m.received,
            m.evicted,
            m.waiting_senders
        ),
        (2, 2, 2, 4, 1, 1, 0)
    );
    assert_eq!(m.max_weight, None);
    assert!(!m.closed);
    assert!(format!("{tx:?}").contains("Sender"));
}

#[tokio::test]
async fn public_types_are_send_sync_unpin() {
    fn send_sync<T: Send + Sync>() {}
    fn send_unpin<T: Send + Unpin>() {}
    fn is_send<T: Send>(_: &T) {}
    send_sync::<channel::Sender<u32>>();
    send_sync::<channel::Receiver<u32>>();
    send_sync::<channel::Permit<'static, u32>>();
    send_sync::<channel::Permits<'static, u32>>();
    send_sync::<channel::Evicted<u32>>();
    send_sync::<channel::OwnedPermit<u32>>();
    send_unpin::<channel::ReserveOwnedFuture<u32>>();
    send_sync::<channel::SendError<u32>>();
    send_unpin::<channel::Receiver<u32>>();
    send_unpin::<channel::SendFuture<'static, u32>>();
    send_unpin::<channel::RecvFuture<'static, u32>>();
    send_unpin::<channel::ReserveFuture<'static, u32>>();
    send_unpin::<channel::ReserveManyFuture<'static, u32>>();
    send_unpin::<channel::RecvManyFuture<'static, u32>>();
    send_unpin::<channel::DrainedFuture<'static, u32>>();
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    is_send(&tx.send_timeout(1, Duration::from_secs(1)));
    is_send(&rx.recv_timeout(Duration::from_secs(1)));
    let mut f = pin!(rx.recv());
    assert!(futures::poll!(f.as_mut()).is_pending());
}

/// Issue 19: after a shrink below what is queued, one `force_send` on an
/// unweighted channel evicts as many as it takes to fit again (its docs
/// say so); the bound holds afterwards.
#[tokio::test(start_paused = true)]
async fn force_send_after_a_shrink_evicts_back_under_the_capacity() {
    let (tx, rx) = channel::bounded::<u32>(4).unwrap();
    for i in 0..4 {
        tx.try_send(i).unwrap();
    }
    tx.set_capacity(2).unwrap();
    let ev: Vec<u32> = tx.force_send(9).unwrap().collect();
    assert_eq!(ev, [0, 1, 2]);
    assert_eq!(rx.metrics().len, 2);
    assert_eq!(rx.metrics().evicted, 3);
    assert_eq!(rx.try_recv(), Ok(3));
    assert_eq!(rx.try_recv(), Ok(9));
}

// ---- what tokio users reach for (issue 15) ------------------------------------

#[tokio::test(start_paused = true)]
async fn length_capacity_and_counts_on_both_halves() {
    let (tx, rx) = channel::bounded::<u32>(2).unwrap();
    assert!(tx.is_empty() && rx.is_empty() && !rx.is_full());
    tx.try_send(1).unwrap();
    assert_eq!((tx.len(), rx.len(), rx.capacity()), (1, 1, 2));
    let p = tx.try_reserve().unwrap();
    assert!(
        tx.is_full() && rx.is_full(),
        "a reserved slot counts as taken"
    );
    drop(p);
    assert!(!tx.is_full());
    let tx2 = tx.clone();
    let rx2 = rx.clone();
    assert_eq!((tx.sender_count(), tx.receiver_count()), (2, 2));
    assert!(tx.same_channel(&tx2) && rx.same_channel(&rx2));
    let (other, _orx) = channel::bounded::<u32>(1).unwrap();
    assert!(!tx.same_channel(&other));
    drop((tx2, rx2));
    assert_eq!((rx.sender_count(), rx.receiver_count()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn closed_resolves_when_every_receiver_is_gone() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    let rx2 = rx.clone();
    let mut closed = Box::pin(tx.closed());
    assert!(poll_once(&mut closed).is_pending());
    drop(rx);
    assert!(poll_once(&mut closed).is_pending(), "one receiver is left");
    drop(rx2);
    assert!(poll_once(&mut closed).is_ready());
    // Also when closed from the sending side, and at once once closed.
    let (tx, _rx) = channel::bounded::<u32>(1).unwrap();
    let mut closed = Box::pin(tx.closed());
    assert!(poll_once(&mut closed).is_pending());
    tx.close();
    assert!(poll_once(&mut closed).is_ready());
    tx.closed().await;
}

#[tokio::test(start_paused = true)]
async fn weak_senders_do_not_keep_the_channel_open() {
    let (tx, rx) = channel::bounded::<u32>(4).unwrap();
    let weak = tx.downgrade();
    assert_eq!(tx.sender_count(), 1, "a weak sender is not counted");
    let strong = weak.upgrade().unwrap();
    strong.send(1).await.unwrap();
    drop((tx, strong));
    assert!(
        weak.upgrade().is_none(),
        "no sender left: it cannot come back"
    );
    assert_eq!(rx.recv().await, Some(1));
    assert_eq!(rx.recv().await, None, "closed although a weak sender lives");
}

#[test]
fn blocking_timeouts_give_the_value_back_or_report_closed() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    tx.send_blocking(1).unwrap();
    assert_eq!(
        tx.send_blocking_timeout(2, Duration::from_millis(1)),
        Err(SendTimeoutError::Timeout(2))
    );
    assert_eq!(
        rx.metrics().waiting_senders,
        0,
        "the timed-out sender left the line"
    );
    let t = std::thread::spawn(move || {
        // Blocks until the main thread receives.
        tx.send_blocking_timeout(3, Duration::from_secs(60))
    });
    assert_eq!(rx.recv_blocking_timeout(Duration::from_secs(60)), Ok(1));
    assert_eq!(t.join().unwrap(), Ok(()));
    assert_eq!(rx.recv_blocking_timeout(Duration::from_secs(60)), Ok(3));
    assert_eq!(
        rx.recv_blocking_timeout(Duration::from_millis(1)),
        Err(RecvTimeoutError::Closed)
    );
}

/// The send-wait histogram holds the sends that found the channel full,
/// with the exact time they waited (paused clock); off with
/// `histograms(false)`.
#[tokio::test(start_paused = true)]
async fn send_wait_histogram_counts_blocked_sends() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    tx.send(1).await.unwrap(); // room: not in it
    let blocked = tokio::spawn({
        let tx = tx.clone();
        async move { tx.send(2).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(rx.recv().await, Some(1));
    blocked.await.unwrap().unwrap();
    let m = rx.metrics();
    assert_eq!(m.send_wait.count(), 1);
    assert_eq!(m.send_wait.max_duration(), Duration::from_millis(30));

    let (tx, rx) = channel::Builder::<u32>::new(1)
        .histograms(false)
        .build()
        .unwrap();
    tx.send(1).await.unwrap();
    let blocked = tokio::spawn({
        let tx = tx.clone();
        async move { tx.send(2).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(rx.recv().await, Some(1));
    blocked.await.unwrap().unwrap();
    assert_eq!(rx.metrics().send_wait.count(), 0);
}

/// One `send` that finds the channel (full, one value) full, waits, and is
/// served by a `try_recv`; the channel is full again afterwards.
fn queued_send(tx: &channel::Sender<u32>, rx: &channel::Receiver<u32>) {
    let mut send = pin!(tx.send(2));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(send.as_mut().poll(&mut cx).is_pending());
    assert!(rx.try_recv().is_ok());
    assert!(matches!(send.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
}

/// Sampled timing (see `flowguard::histogram`): sends that wait at a low
/// rate are each timed; thousands a millisecond are timed about one in 64,
/// each standing for 64; `histogram_max_one_in(1)` times every one; the
/// option is validated.
#[tokio::test(start_paused = true)]
async fn send_wait_histogram_samples_only_frequent_waits() {
    for max_one_in in [64, 1] {
        let (tx, rx) = Builder::<u32>::new(1)
            .histogram_max_one_in(max_one_in)
            .build()
            .unwrap();
        tx.try_send(1).unwrap();
        // Low rate: 200 waits of 1 ms each: every one, exactly.
        for _ in 0..200 {
            let mut send = pin!(tx.send(2));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(send.as_mut().poll(&mut cx).is_pending());
            tokio::time::advance(Duration::from_millis(1)).await;
            assert!(rx.try_recv().is_ok());
            assert!(send.as_mut().poll(&mut cx).is_ready());
        }
        let w = rx.metrics().send_wait;
        assert_eq!((w.count(), w.min(), w.max()), (200, 1_000_000, 1_000_000));
        // High rate: 20,000 at one instant (the window is open: all timed),
        // one more 2 ms later closes it; 64,000 more are drawn at 1 in 64.
        for _ in 0..20_000 {
            queued_send(&tx, &rx);
        }
        tokio::time::advance(Duration::from_millis(2)).await;
        queued_send(&tx, &rx);
        assert_eq!(rx.metrics().send_wait.count(), 20_201);
        for _ in 0..64_000 {
            queued_send(&tx, &rx);
        }
        let added = rx.metrics().send_wait.count() - 20_201;
        if max_one_in == 1 {
            assert_eq!(added, 64_000);
        } else {
            // About 1,000 timed (standard deviation 31; six allowed).
            assert_eq!(added % 64, 0, "{added}");
            assert!((added / 64).abs_diff(1_000) <= 186, "{added}");
        }
        assert_eq!(rx.len(), 1);
    }
    for (n, kind) in [
        (0, ConfigErrorKind::Zero),
        (65_537, ConfigErrorKind::TooLarge),
    ] {
        let e = Builder::<u32>::new(1)
            .histogram_max_one_in(n)
            .build()
            .unwrap_err();
        assert_eq!((e.field(), e.kind()), ("histogram_max_one_in", kind));
    }
}

/// A parked `send` learns it was served from a published mark, without the
/// lock; polled again before a receive served it, it must stay parked (and
/// keep its place), and once served it completes with its value queued.
#[test]
fn parked_send_repolled_before_it_is_served_stays_pending() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    tx.try_send(0).unwrap();
    let mut first = tx.send(1);
    assert!(poll_once(&mut first).is_pending());
    assert_eq!(rx.try_recv(), Ok(0)); // serves `first`
    assert!(matches!(poll_once(&mut first), Poll::Ready(Ok(()))));
    let mut second = tx.send(2);
    assert!(poll_once(&mut second).is_pending());
    assert!(poll_once(&mut second).is_pending());
    assert_eq!(tx.try_send(3), Err(channel::TrySendError::Full(3)));
    assert_eq!(rx.try_recv(), Ok(1)); // serves `second`
    assert!(matches!(poll_once(&mut second), Poll::Ready(Ok(()))));
    assert_eq!(rx.try_recv(), Ok(2));
    assert_eq!(rx.try_recv(), Err(channel::TryRecvError::Empty));
}

/// Room made, or a value sent, at the deadline instant itself (by a task
/// whose timer fired with the waiter's) counts: `send_timeout` and
/// `recv_timeout` succeed, as the crate's other deadline waits do.
#[tokio::test(start_paused = true)]
async fn room_or_a_value_made_at_the_deadline_instant_counts() {
    let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    tx.try_send(1).unwrap();
    let consumer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(rx.recv().await, Some(1));
        rx
    });
    assert_eq!(tx.send_timeout(2, Duration::from_secs(1)).await, Ok(()));
    let rx = consumer.await.unwrap();
    assert_eq!(rx.try_recv(), Ok(2));
    let producer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.try_send(3).unwrap();
        tx
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(1)).await, Ok(3));
    let _tx = producer.await.unwrap();
    // Past the deadline it still times out, and the value stays queued.
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(5)).await,
        Err(flowguard::channel::RecvTimeoutError::Timeout)
    );
}

// Reference: Python asyncio (Lib/test/test_asyncio/test_queues.py)
//
// Mapping: `Queue(maxsize)` is `channel::bounded(maxsize)` (an unbounded
// `Queue()` has no counterpart); `put`/`get` are `send`/`recv`;
// `put_nowait`/`get_nowait` are `try_send`/`try_recv` (`QueueFull` is
// `TrySendError::Full` with the value, `QueueEmpty` is
// `TryRecvError::Empty`); `qsize`, `full`, `empty`, `maxsize` are `len`,
// `is_full`, `is_empty`, `capacity`; `shutdown()` (3.13) is `close()`,
// after which `get` drains and then answers `None` instead of raising
// `QueueShutDown`. `shutdown(immediate=True)` and `task_done`/`join` have
// no counterpart and are not ported.

/// test_empty, test_full, test_order, and `qsize`.
#[tokio::test]
async fn py_qsize_full_empty_and_fifo_order() {
    let (tx, rx) = channel::bounded::<u32>(3).unwrap();
    assert!(rx.is_empty() && !tx.is_full());
    for i in [1, 3, 2] {
        tx.send(i).await.unwrap();
    }
    assert_eq!((rx.len(), rx.capacity()), (3, 3));
    assert!(tx.is_full() && !rx.is_empty());
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(rx.recv().await.unwrap());
    }
    assert_eq!(got, [1, 3, 2]);
    assert!(rx.is_empty() && !rx.is_full());
}

/// test_maxsize: a producer is held after `maxsize` puts and resumes as
/// the consumer takes.
#[tokio::test]
async fn py_maxsize_holds_the_producer_back() {
    let (tx, rx) = channel::bounded::<u32>(2).unwrap();
    let put = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let producer = tokio::spawn({
        let put = put.clone();
        async move {
            for i in 0..3 {
                tx.send(i).await.unwrap();
                put.lock().unwrap().push(i);
            }
        }
    });
    for _ in 0..2 {
        tokio::task::yield_now().await;
    }
    assert_eq!(*put.lock().unwrap(), [0, 1]);
    assert_eq!(rx.recv().await, Some(0));
    tokio::task::yield_now().await;
    assert_eq!(*put.lock().unwrap(), [0, 1, 2]);
    assert_eq!(rx.recv().await, Some(1));
    assert_eq!(rx.recv().await, Some(2));
    producer.await.unwrap();
}

/// test_nonblocking_get, test_nonblocking_get_exception,
/// test_nonblocking_put_exception.
#[test]
fn py_nowait_calls_report_empty_and_full() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    tx.try_send(1).unwrap();
    assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    assert_eq!(rx.try_recv(), Ok(1));
}

/// test_blocking_get_wait, test_put_with_waiting_getters.
#[tokio::test(start_paused = true)]
async fn py_get_waits_for_a_later_put() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    let start = Instant::now();
    tokio::spawn({
        let tx = tx.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.try_send(1).unwrap();
        }
    });
    assert_eq!(rx.recv().await, Some(1));
    assert_eq!(start.elapsed(), Duration::from_millis(10));
    let getter = tokio::spawn({
        let rx = rx.clone();
        async move { rx.recv().await }
    });
    tokio::task::yield_now().await;
    tx.send(2).await.unwrap();
    assert_eq!(getter.await.unwrap(), Some(2));
}

/// test_blocking_put_wait.
#[tokio::test(start_paused = true)]
async fn py_put_waits_for_a_later_get() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    let start = Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        rx.try_recv().unwrap();
        rx // kept alive
    });
    tx.send(1).await.unwrap();
    tx.send(2).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(10));
}

/// test_get_cancelled_race: of two waiting getters the first is
/// cancelled; the put goes to the second.
#[tokio::test]
async fn py_a_put_reaches_the_getter_left_after_a_cancel() {
    let (tx, rx) = channel::bounded::<&str>(1).unwrap();
    let getter = |rx: &channel::Receiver<&'static str>| {
        let rx = rx.clone();
        tokio::spawn(async move { rx.recv().await })
    };
    let (t1, t2) = (getter(&rx), getter(&rx));
    tokio::task::yield_now().await;
    t1.abort();
    tokio::task::yield_now().await;
    assert!(t1.is_finished());
    tx.send("a").await.unwrap();
    assert_eq!(t2.await.unwrap(), Some("a"));
}

/// test_get_with_waiting_putters: two parked putters, taken in order.
#[tokio::test]
async fn py_waiting_putters_are_taken_in_order() {
    let (tx, rx) = channel::bounded::<&str>(1).unwrap();
    for v in ["a", "b"] {
        let tx = tx.clone();
        tokio::spawn(async move { tx.send(v).await.unwrap() });
    }
    assert_eq!(rx.recv().await, Some("a"));
    assert_eq!(rx.recv().await, Some("b"));
}

/// test_why_are_getters_waiting, test_why_are_putters_waiting: nobody is
/// left parked.
#[tokio::test(start_paused = true)]
async fn py_producers_and_consumers_all_finish() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    let producer = tokio::spawn({
        let tx = tx.clone();
        async move {
            for i in 0..5 {
                tx.send(i).await.unwrap();
            }
        }
    });
    let consumer = tokio::spawn({
        let rx = rx.clone();
        async move {
            for _ in 0..5 {
                rx.recv().await.unwrap();
            }
        }
    });
    let all = async {
        producer.await.unwrap();
        consumer.await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(1), all)
        .await
        .expect("a getter or putter stayed parked");

    // Four putters on a queue of two; a getter drains what it finds.
    tx.set_capacity(2).unwrap();
    let putters: Vec<_> = (0..4)
        .map(|i| {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(i).await.unwrap() })
        })
        .collect();
    tokio::task::yield_now().await;
    for _ in 0..rx.len() {
        rx.try_recv().unwrap();
    }
    let all = async {
        for p in putters {
            p.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(1), all)
        .await
        .expect("a putter stayed parked");
    assert_eq!((rx.try_recv(), rx.try_recv()), (Ok(2), Ok(3)));
}

/// test_cancelled_getters_not_being_held_in_self_getters.
#[tokio::test(start_paused = true)]
async fn py_a_timed_out_get_leaves_no_registration() {
    let (_tx, rx) = channel::bounded::<u32>(5).unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(100)).await,
        Err(RecvTimeoutError::Timeout)
    );
    assert_eq!(rx.metrics().waiting_receivers, 0);
}

/// test_get_cancel_drop_one_pending_reader: a getter cancelled after two
/// puts loses neither; the next get sees the first.
#[tokio::test]
async fn py_a_cancelled_getter_drops_no_item() {
    let (tx, rx) = channel::bounded::<u32>(2).unwrap();
    let reader = tokio::spawn({
        let rx = rx.clone();
        async move { rx.recv().await }
    });
    tokio::task::yield_now().await;
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    reader.abort();
    let first = match reader.await {
        Ok(v) => v,
        Err(e) => {
            assert!(e.is_cancelled());
            rx.recv().await
        }
    };
    assert_eq!(first, Some(1), "1 must not be dropped");
    assert_eq!(rx.try_recv(), Ok(2));
}

/// test_get_cancel_drop_many_pending_readers: the wake-up meant for a
/// cancelled reader is passed on, and both items arrive.
#[tokio::test(start_paused = true)]
async fn py_cancelling_one_of_many_getters_loses_no_item() {
    let (tx, rx) = channel::bounded::<u32>(2).unwrap();
    let reader = || {
        let rx = rx.clone();
        tokio::spawn(async move { rx.recv().await })
    };
    let (r1, r2, r3) = (reader(), reader(), reader());
    tokio::task::yield_now().await;
    assert_eq!(rx.metrics().waiting_receivers, 3);
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    r1.abort();
    assert!(r1.await.unwrap_err().is_cancelled());
    let both = async { (r2.await.unwrap(), r3.await.unwrap()) };
    let (a, b) = tokio::time::timeout(Duration::from_secs(1), both)
        .await
        .expect("a reader was left parked with an item queued");
    let mut got = [a.unwrap(), b.unwrap()];
    got.sort();
    assert_eq!(got, [1, 2]);
}

/// test_put_cancel_drop, test_cancelled_put_silence_value_error_exception:
/// asyncio's cancelled `put` never puts, so its test retries. flowguard's
/// `send` is served by the `get` that makes room (its value is queued
/// then, documented): dropping it afterwards keeps the value, once.
#[tokio::test]
async fn py_a_put_cancelled_after_its_room_came_keeps_its_value_once() {
    let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    tx.try_send(1).unwrap();
    let mut writer = Box::pin(tx.send(2));
    assert!(poll_once(&mut writer).is_pending());
    assert_eq!(rx.try_recv(), Ok(1));
    drop(writer);
    assert_eq!(rx.try_recv(), Ok(2));
    assert_eq!(rx.len(), 0);
    // Cancelled before its room came: not sent, the slot stays free.
    tx.try_send(3).unwrap();
    let mut writer = Box::pin(tx.send(4));
    assert!(poll_once(&mut writer).is_pending());
    drop(writer);
    assert_eq!(tx.metrics().waiting_senders, 0);
    assert_eq!(rx.try_recv(), Ok(3));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
}

/// test_put_cancelled_race: a cancelled putter in the middle neither
/// blocks nor slips in.
#[tokio::test]
async fn py_a_cancelled_putter_is_skipped() {
    let (tx, rx) = channel::bounded::<&str>(1).unwrap();
    let put = |v| {
        let tx = tx.clone();
        tokio::spawn(async move { tx.send(v).await })
    };
    let (put_a, put_b, put_c) = (put("a"), put("b"), put("X"));
    tokio::task::yield_now().await;
    assert!(put_a.is_finished());
    assert!(!put_b.is_finished());
    put_c.abort();
    tokio::task::yield_now().await;
    assert!(put_c.is_finished());
    assert_eq!(rx.try_recv(), Ok("a"));
    tokio::task::yield_now().await;
    assert_eq!(rx.try_recv(), Ok("b"));
    put_b.await.unwrap().unwrap();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
}

/// test_cancelled_puts_not_being_held_in_self_putters.
#[tokio::test]
async fn py_a_cancelled_put_leaves_no_registration() {
    let (tx, _rx) = channel::bounded::<u32>(1).unwrap();
    tx.try_send(1).unwrap();
    let put = tokio::spawn({
        let tx = tx.clone();
        async move { tx.send(1).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(tx.metrics().waiting_senders, 1);
    put.abort();
    assert!(put.await.unwrap_err().is_cancelled());
    assert_eq!(tx.metrics().waiting_senders, 0);
}

/// test_shutdown_empty, test_shutdown_allowed_transitions.
#[tokio::test]
async fn py_shutdown_of_an_empty_queue_refuses_put_and_ends_get() {
    let (tx, rx) = channel::bounded::<&str>(1).unwrap();
    assert!(tx.close());
    assert!(!rx.close(), "already closed");
    assert_eq!(tx.send("data").await, Err(SendError::Closed("data")));
    assert_eq!(rx.recv().await, None);
}

/// test_shutdown_nonempty, test_shutdown_all_methods_in_one_task
/// (immediate=False): what was queued is still received, then `get` ends.
#[tokio::test]
async fn py_shutdown_keeps_queued_items_for_getters() {
    let (tx, rx) = channel::bounded::<&str>(4).unwrap();
    tx.send("L").await.unwrap();
    tx.try_send("O").unwrap();
    tx.close();
    assert_eq!(tx.send("E").await, Err(SendError::Closed("E")));
    assert_eq!(tx.try_send("W"), Err(TrySendError::Closed("W")));
    assert_eq!(rx.recv().await, Some("L"));
    assert_eq!(rx.try_recv(), Ok("O"));
    assert_eq!(rx.recv().await, None);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
}

/// test_shutdown_putters_deque: a waiting put fails with its value and is
/// no longer registered.
#[tokio::test]
async fn py_shutdown_fails_a_waiting_put() {
    let (tx, _rx) = channel::bounded::<&str>(2).unwrap();
    tx.send("E").await.unwrap();
    tx.send("W").await.unwrap();
    let t = tokio::spawn({
        let tx = tx.clone();
        async move { tx.send("Y").await }
    });
    tokio::task::yield_now().await;
    assert_eq!(tx.metrics().waiting_senders, 1);
    tx.close();
    assert_eq!(t.await.unwrap(), Err(SendError::Closed("Y")));
    assert_eq!(tx.metrics().waiting_senders, 0);
}

/// test_shutdown_getters_deque (as asyncio's `shutdown` wakes getters to
/// re-check): a getter parked on an empty queue ends at the shutdown.
#[tokio::test]
async fn py_shutdown_ends_a_getter_parked_on_an_empty_queue() {
    let (tx, rx) = channel::bounded::<&str>(1).unwrap();
    tx.send("Y").await.unwrap();
    let first = tokio::spawn({
        let rx = rx.clone();
        async move { rx.recv().await }
    });
    let second = tokio::spawn({
        let rx = rx.clone();
        async move { rx.recv().await }
    });
    tokio::task::yield_now().await;
    assert_eq!(first.await.unwrap(), Some("Y"));
    assert_eq!(rx.metrics().waiting_receivers, 1);
    tx.close();
    assert_eq!(second.await.unwrap(), None);
    assert_eq!(rx.metrics().waiting_receivers, 0);
}

/// test_shutdown_get: after a shutdown of a full queue of two, three
/// getters get the two items and one end.
#[tokio::test]
async fn py_getters_after_shutdown_share_the_rest_then_end() {
    let (tx, rx) = channel::bounded::<&str>(2).unwrap();
    tx.send("Y").await.unwrap();
    tx.send("D").await.unwrap();
    tx.close();
    let got = [rx.recv().await, rx.try_recv().ok(), rx.try_recv().ok()];
    assert_eq!(got, [Some("Y"), Some("D"), None]);
    assert_eq!(tx.try_send("x"), Err(TrySendError::Closed("x")));
}

// Reference: tokio (tokio/tests/sync_mpsc.rs)
//
// Mapping: tokio's `capacity()` (free room) is `capacity() - len() -
// metrics().reserved` here, its `max_capacity()` is `capacity()`;
// `TryRecvError::Disconnected` is `TryRecvError::Closed`;
// `try_reserve*` refusing a request above the capacity answers `TooMany`
// where tokio answers `Full` (typed "never possible" error, by design);
// capacity 0 is a `ConfigError` where tokio panics (pinned above in
// `zero_capacity_is_a_typed_error`). Blocking calls made on a runtime
// thread (tokio panics) are documented as not to be done, not tested.

fn free_room<T>(tx: &channel::Sender<T>) -> usize {
    tx.capacity() - tx.len() - tx.metrics().reserved
}

/// send_recv_with_buffer, async_send_recv_with_buffer, tx_close_gets_none.
#[tokio::test]
async fn tokio_send_recv_with_buffer() {
    let (tx, rx) = channel::bounded::<i32>(16).unwrap();
    tx.reserve().await.unwrap().send(1);
    tx.try_send(2).unwrap();
    drop(tx);
    assert_eq!(rx.recv().await, Some(1));
    assert_eq!(rx.recv().await, Some(2));
    assert_eq!(rx.recv().await, None);
    let (tx, rx) = channel::bounded::<i32>(10).unwrap();
    drop(tx);
    assert_eq!(rx.recv().await, None);
}

/// reserve_disarm: a slot frees when its value is received or its permit
/// dropped, and each frees exactly one waiting reservation.
#[tokio::test]
async fn tokio_reserve_disarm() {
    let (tx, rx) = channel::bounded::<i32>(2).unwrap();
    let permit1 = tx.reserve().await.unwrap();
    let permit2 = tx.reserve().await.unwrap();
    let mut r3 = tokio_test::task::spawn(tx.reserve());
    assert!(r3.poll().is_pending());
    let mut r4 = tokio_test::task::spawn(tx.reserve());
    assert!(r4.poll().is_pending());
    permit1.send(1);
    assert!(!r3.is_woken(), "the value still takes the slot");
    rx.recv().await.unwrap();
    assert!(r3.is_woken());
    assert!(!r4.is_woken());
    drop(permit2);
    assert!(r4.is_woken());
    let mut r1 = tokio_test::task::spawn(tx.reserve());
    assert!(r1.poll().is_pending());
}

/// async_send_recv_many_with_buffer, send_recv_many_bounded_capacity,
/// recv_many_with_non_empty_buffer_bounded_rx_closed_and_idle.
#[tokio::test]
async fn tokio_recv_many() {
    let (tx, rx) = channel::bounded::<i32>(2).unwrap();
    let mut buffer = Vec::with_capacity(3);
    assert_eq!(rx.recv_many(&mut buffer, 0).await, 0, "limit 0: at once");
    let handle = tokio::spawn(async move {
        for v in [1, 2, 7, 0] {
            tx.send(v).await.unwrap();
        }
    });
    let mut count = 0;
    while count < 4 {
        count += rx.recv_many(&mut buffer, 3).await;
        assert_eq!(buffer.len(), count);
    }
    assert_eq!(buffer, [1, 2, 7, 0]);
    assert_eq!(rx.recv_many(&mut buffer, 3).await, 0);
    handle.await.unwrap();

    // A closed, idle channel leaves the buffer as it was.
    let (_tx, rx) = channel::bounded::<i32>(1).unwrap();
    let mut buffer = vec![1];
    rx.close();
    assert_eq!(rx.recv_many(&mut buffer, 1).await, 0);
    assert_eq!(buffer, [1]);

    // Outstanding sends count: not 0 until the last one was received.
    let (tx, rx) = channel::bounded::<String>(100).unwrap();
    let mut buffer = Vec::new();
    let expected: Vec<String> = (0..9).map(|x| x.to_string()).collect();
    for x in &expected {
        tx.send(x.clone()).await.unwrap();
    }
    tx.send("one more".into()).await.unwrap();
    assert_eq!(rx.recv_many(&mut buffer, 9).await, 9);
    assert_eq!(buffer, expected);
    assert_eq!(rx.recv_many(&mut buffer, 9).await, 1);
    tokio::spawn(async move { tx.send("final".into()).await.unwrap() });
    assert_eq!(rx.recv_many(&mut buffer, 9).await, 1);
    assert_eq!(buffer.last().map(String::as_str), Some("final"));
    assert_eq!(rx.recv_many(&mut buffer, 9).await, 0);
    assert_eq!(buffer.len(), 11);
}

/// start_send_past_cap: a dropped waiting reservation passes its turn on
/// without waking itself.
#[tokio::test]
async fn tokio_start_send_past_cap() {
    let (tx1, rx) = channel::bounded::<()>(1).unwrap();
    let tx2 = tx1.clone();
    tx1.try_send(()).unwrap();
    let mut r1 = tokio_test::task::spawn(tx1.reserve());
    assert!(r1.poll().is_pending());
    {
        let mut r2 = tokio_test::task::spawn(tx2.reserve());
        assert!(r2.poll().is_pending());
        drop(r1);
        assert!(rx.recv().await.is_some());
        assert!(r2.is_woken());
    }
    drop((tx1, tx2));
    assert!(rx.recv().await.is_none());
}

/// no_t_bounds_buffer: `Debug` and `Clone` without `T: Debug + Clone`.
#[tokio::test]
async fn tokio_handles_need_no_bounds_on_t() {
    struct NoImpls;
    let (tx, rx) = channel::bounded::<NoImpls>(100).unwrap();
    assert!(format!("{tx:?}").starts_with("Sender"));
    assert!(format!("{rx:?}").starts_with("Receiver"));
    assert!(tx.clone().try_send(NoImpls).is_ok());
    assert!(rx.recv().await.is_some());
}

/// send_recv_buffer_limited: room granted to a waiting reservation is not
/// taken by a `try_send`.
#[tokio::test]
async fn tokio_send_recv_buffer_limited() {
    let (tx, rx) = channel::bounded::<i32>(1).unwrap();
    tx.reserve().await.unwrap().send(1);
    let mut p2 = tokio_test::task::spawn(tx.reserve());
    assert!(p2.poll().is_pending());
    assert!(rx.recv().await.is_some());
    assert!(p2.is_woken());
    assert_eq!(tx.try_send(1337), Err(TrySendError::Full(1337)));
    match p2.poll() {
        Poll::Ready(Ok(permit)) => permit.send(2),
        other => panic!("{other:?}"),
    }
    assert_eq!(rx.recv().await, Some(2));
}

/// recv_close_gets_none_idle, try_recv_after_receiver_close.
#[tokio::test]
async fn tokio_receiver_close_on_an_idle_channel() {
    let (tx, rx) = channel::bounded::<i32>(10).unwrap();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    rx.close();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    assert!(rx.recv().await.is_none());
    assert!(tx.send(1).await.is_err());
}

/// recv_close_gets_none_reserved: closing fails a waiting reservation, but
/// a receiver still waits for the value of an outstanding permit.
#[tokio::test]
async fn tokio_recv_close_gets_none_reserved() {
    let (tx1, rx) = channel::bounded::<i32>(1).unwrap();
    let tx2 = tx1.clone();
    let permit1 = tx1.reserve().await.unwrap();
    let mut permit2 = tokio_test::task::spawn(tx2.reserve());
    assert!(permit2.poll().is_pending());
    rx.close();
    assert!(permit2.is_woken());
    assert!(matches!(
        permit2.poll(),
        Poll::Ready(Err(ReserveError::Closed))
    ));
    {
        let mut recv = tokio_test::task::spawn(rx.recv());
        assert!(recv.poll().is_pending());
        permit1.send(123);
        assert!(recv.is_woken());
        assert_eq!(recv.poll(), Poll::Ready(Some(123)));
    }
    assert!(rx.recv().await.is_none());
}

/// try_send_fail, try_send_fail_with_try_recv.
#[tokio::test]
async fn tokio_try_send_fail_then_drain() {
    let (tx, rx) = channel::bounded::<&str>(1).unwrap();
    tx.try_send("hello").unwrap();
    assert_eq!(tx.try_send("fail"), Err(TrySendError::Full("fail")));
    assert_eq!(rx.try_recv(), Ok("hello"));
    tx.try_send("goodbye").unwrap();
    drop(tx);
    assert_eq!(rx.recv().await, Some("goodbye"));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    assert!(rx.recv().await.is_none());
}

/// reserve_many_above_cap, try_reserve_many_edge_cases.
#[tokio::test]
async fn tokio_reserving_more_than_the_capacity_fails_at_once() {
    let (tx, _rx) = channel::bounded::<()>(1).unwrap();
    for n in [2, usize::MAX / 8 + 1, usize::MAX] {
        assert_eq!(tx.reserve_many(n).await.unwrap_err(), ReserveError::TooMany);
        assert_eq!(
            tx.try_reserve_many(n).unwrap_err(),
            TryReserveError::TooMany
        );
    }
    assert_eq!(tx.metrics().waiting_senders, 0);
}

/// try_reserve_many_zero, reserve_many_zero: zero slots succeed even when
/// full, and fail once closed.
#[tokio::test]
async fn tokio_reserving_zero_slots() {
    let (tx, rx) = channel::bounded::<()>(1).unwrap();
    assert_eq!(tx.try_reserve_many(0).unwrap().next().map(|_| ()), None);
    assert_eq!(tx.reserve_many(0).await.unwrap().len(), 0);
    tx.send(()).await.unwrap();
    assert_eq!(tx.try_reserve_many(0).unwrap().len(), 0);
    assert_eq!(tx.reserve_many(0).await.unwrap().len(), 0);
    drop(rx);
    assert_eq!(tx.try_reserve_many(0).unwrap_err(), TryReserveError::Closed);
    assert_eq!(tx.reserve_many(0).await.unwrap_err(), ReserveError::Closed);
}

/// reserve_many_and_send, try_reserve_many_and_send.
#[tokio::test]
async fn tokio_reserve_many_and_send() {
    let (tx, rx) = channel::bounded::<&str>(100).unwrap();
    for i in 0..100 {
        for permit in tx.reserve_many(i).await.unwrap() {
            permit.send("foo");
            assert_eq!(rx.recv().await, Some("foo"));
        }
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        for permit in tx.try_reserve_many(i).unwrap() {
            permit.send("bar");
            assert_eq!(rx.recv().await, Some("bar"));
        }
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }
}

/// reserve_many_on_closed_channel, try_reserve_many_on_closed_channel,
/// dropping_rx_closes_channel(_for_try).
#[tokio::test]
async fn tokio_dropping_the_receiver_refuses_everything_and_drops_the_queue() {
    let (tx, rx) = channel::bounded::<std::sync::Arc<()>>(100).unwrap();
    let msg = std::sync::Arc::new(());
    tx.try_send(msg.clone()).unwrap();
    drop(rx);
    assert_eq!(
        std::sync::Arc::strong_count(&msg),
        1,
        "queued value dropped"
    );
    assert!(matches!(
        tx.try_send(msg.clone()),
        Err(TrySendError::Closed(_))
    ));
    assert_eq!(tx.try_reserve().unwrap_err(), TryReserveError::Closed);
    assert_eq!(
        tx.try_reserve_many(10).unwrap_err(),
        TryReserveError::Closed
    );
    assert_eq!(tx.reserve().await.unwrap_err(), ReserveError::Closed);
    assert_eq!(tx.reserve_many(10).await.unwrap_err(), ReserveError::Closed);
    assert!(tx.clone().reserve_owned().await.is_err());
    assert_eq!(std::sync::Arc::strong_count(&msg), 1);
}

/// unconsumed_messages_are_dropped.
#[test]
fn tokio_unconsumed_messages_are_dropped() {
    let msg = std::sync::Arc::new(());
    let (tx, rx) = channel::bounded(100).unwrap();
    tx.try_send(msg.clone()).unwrap();
    assert_eq!(std::sync::Arc::strong_count(&msg), 2);
    drop((tx, rx));
    assert_eq!(std::sync::Arc::strong_count(&msg), 1);
}

/// try_reserve_many_full: free room follows reservations and sends.
#[tokio::test]
async fn tokio_try_reserve_many_full() {
    for n in 1..30 {
        for k in 0..n {
            let (tx, rx) = channel::bounded::<usize>(n).unwrap();
            let permits = tx.try_reserve_many(n).unwrap();
            assert_eq!(permits.len(), n);
            assert_eq!(free_room(&tx), 0);
            assert_eq!(tx.try_reserve_many(1).unwrap_err(), TryReserveError::Full);
            for permit in permits.take(k) {
                permit.send(0);
            }
            // `take` dropped the rest of the iterator: their room is back.
            assert_eq!(free_room(&tx), n - k);
            drop(tx.try_reserve_many(1).unwrap());
            // (Above the capacity it is `TooMany`, "never possible".)
            let want = if k == 0 {
                TryReserveError::TooMany
            } else {
                TryReserveError::Full
            };
            assert_eq!(tx.try_reserve_many(n - k + 1).unwrap_err(), want);
            for _ in 0..k {
                assert_eq!(rx.recv().await, Some(0));
            }
            assert_eq!(free_room(&tx), n);
        }
    }
}

/// drop_permit_releases_permit, drop_permit_iterator_releases_permits.
#[tokio::test]
async fn tokio_dropped_permits_release_their_room() {
    let (tx1, _rx) = channel::bounded::<i32>(1).unwrap();
    let tx2 = tx1.clone();
    let permit = tx1.reserve().await.unwrap();
    let mut reserve2 = tokio_test::task::spawn(tx2.reserve());
    assert!(reserve2.poll().is_pending());
    drop(permit);
    assert!(reserve2.is_woken());
    assert!(matches!(reserve2.poll(), Poll::Ready(Ok(_))));

    for n in 1..100 {
        let (tx1, _rx) = channel::bounded::<i32>(n).unwrap();
        let tx2 = tx1.clone();
        let permits = tx1.reserve_many(n).await.unwrap();
        let mut reserve2 = tokio_test::task::spawn(tx2.reserve_many(n));
        assert!(reserve2.poll().is_pending());
        drop(permits);
        assert!(reserve2.is_woken());
        match reserve2.poll() {
            Poll::Ready(Ok(permits)) => drop(permits),
            other => panic!("{n}: {:?}", other.map(|r| r.map(|p| p.len()))),
        }
        assert_eq!(free_room(&tx1), n);
    }
}

/// ready_close_cancel_bounded, permit_available_not_acquired_close.
#[tokio::test]
async fn tokio_an_unused_permit_after_close_ends_the_receiver_when_dropped() {
    let (tx, rx) = channel::bounded::<()>(100).unwrap();
    let _tx2 = tx.clone();
    let permit = tx.reserve().await.unwrap();
    rx.close();
    let mut recv = tokio_test::task::spawn(rx.recv());
    assert!(recv.poll().is_pending());
    drop(permit);
    assert!(recv.is_woken());
    assert_eq!(recv.poll(), Poll::Ready(None));

    let (tx1, rx) = channel::bounded::<()>(1).unwrap();
    let tx2 = tx1.clone();
    let permit1 = tx1.reserve().await.unwrap();
    let mut permit2 = tokio_test::task::spawn(tx2.reserve());
    assert!(permit2.poll().is_pending());
    rx.close();
    drop(permit1);
    assert!(permit2.is_woken());
    drop(permit2);
    assert!(rx.recv().await.is_none());
}

/// try_recv_bounded, try_recv_close_while_empty_bounded.
#[test]
fn tokio_try_recv_bounded() {
    let (tx, rx) = channel::bounded::<&str>(5).unwrap();
    for _ in 0..5 {
        tx.try_send("hello").unwrap();
    }
    assert!(tx.try_send("hello").is_err());
    for _ in 0..5 {
        assert_eq!(rx.try_recv(), Ok("hello"));
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    for _ in 0..4 {
        tx.try_send("hello").unwrap();
    }
    assert_eq!(rx.try_recv(), Ok("hello"));
    tx.try_send("hello").unwrap();
    tx.try_send("hello").unwrap();
    assert!(tx.try_send("hello").is_err());
    for _ in 0..5 {
        assert_eq!(rx.try_recv(), Ok("hello"));
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    for _ in 0..3 {
        tx.try_send("hello").unwrap();
    }
    drop(tx);
    for _ in 0..3 {
        assert_eq!(rx.try_recv(), Ok("hello"));
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));

    let (tx, rx) = channel::bounded::<()>(5).unwrap();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    drop(tx);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
}

/// recv_timeout (which exercises `send_timeout`).
#[tokio::test(start_paused = true)]
async fn tokio_send_timeout() {
    let (tx, rx) = channel::bounded::<i32>(5).unwrap();
    for v in [10, 20, 30, 40, 50] {
        assert_eq!(tx.send_timeout(v, Duration::from_secs(1)).await, Ok(()));
    }
    let start = Instant::now();
    assert_eq!(
        tx.send_timeout(60, Duration::from_secs(1)).await,
        Err(SendTimeoutError::Timeout(60))
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    drop(rx);
    assert_eq!(
        tx.send_timeout(70, Duration::from_secs(1)).await,
        Err(SendTimeoutError::Closed(70))
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1), "closed: at once");
}

/// test_tx_capacity: reserving and sending use room; the configured
/// capacity stays.
#[tokio::test]
async fn tokio_free_room_follows_reservations_and_sends() {
    let (tx, _rx) = channel::bounded::<()>(10).unwrap();
    assert_eq!((free_room(&tx), tx.capacity()), (10, 10));
    let _permit = tx.reserve().await.unwrap();
    assert_eq!((free_room(&tx), tx.capacity()), (9, 10));
    tx.send(()).await.unwrap();
    assert_eq!((free_room(&tx), tx.capacity()), (8, 10));
}

/// test_rx_is_closed_* : closed after `close()` or once every sender is
/// gone (messages queued or not); open while a sender or an owned permit
/// (which holds one) lives.
#[tokio::test]
async fn tokio_receiver_is_closed() {
    let (_tx, rx) = channel::bounded::<()>(10).unwrap();
    assert!(!rx.is_closed());
    rx.close();
    assert!(rx.is_closed());

    let (tx, rx) = channel::bounded::<()>(10).unwrap();
    let another = tx.clone();
    tokio::spawn(async move { drop(another) }).await.unwrap();
    drop(tx);
    assert!(rx.is_closed());

    let (tx, rx) = channel::bounded(10).unwrap();
    for i in 0..10 {
        tx.send(i).await.unwrap();
    }
    assert!(!rx.is_closed(), "full but not closed");
    drop(tx);
    assert!(rx.is_closed(), "messages queued, no sender");

    let (tx, rx) = channel::bounded(10).unwrap();
    for i in 0..10 {
        tx.send(i).await.unwrap();
    }
    rx.close();
    assert!(rx.is_closed());

    let (tx, rx) = channel::bounded::<()>(10).unwrap();
    let _permit = tx.reserve_owned().await.unwrap();
    assert!(!rx.is_closed(), "an owned permit keeps a sender");
}

/// test_rx_is_empty_*, test_rx_len_*.
#[tokio::test]
async fn tokio_receiver_len_and_is_empty() {
    let (tx, rx) = channel::bounded(100).unwrap();
    assert!(rx.is_empty());
    assert_eq!(rx.len(), 0);
    for i in 0..100 {
        tx.send(i).await.unwrap();
        assert_eq!(rx.len(), i + 1);
    }
    assert!(!rx.is_empty());
    drop(tx);
    assert_eq!(rx.len(), 100, "len survives the senders");
    for i in (0..100).rev() {
        assert!(rx.recv().await.is_some());
        assert_eq!(rx.len(), i);
    }
    assert!(rx.is_empty());

    let (tx, rx) = channel::bounded::<()>(100).unwrap();
    drop(tx);
    assert_eq!(rx.len(), 0);

    for drop_first in [false, true] {
        let (tx, rx) = channel::bounded(100).unwrap();
        tx.send(()).await.unwrap();
        if drop_first {
            drop(tx);
            rx.close();
        } else {
            rx.close();
            drop(tx);
        }
        assert_eq!(rx.len(), 1, "close keeps what is queued");
    }
}

/// test_is_empty_32_msgs (tokio#6602): emptiness stays right as the ring
/// wraps.
#[tokio::test]
async fn tokio_is_empty_after_every_round_trip() {
    let (tx, rx) = channel::bounded(33).unwrap();
    for value in 1..257 {
        tx.send(value).await.unwrap();
        rx.recv().await.unwrap();
        assert!(rx.is_empty(), "{value}. len: {}", rx.len());
    }
}

/// drop_all_elements_during_panic: a panicking destructor while the last
/// receiver drops the queue does not leak the values behind it.
#[test]
fn tokio_every_value_is_dropped_even_if_one_drop_panics() {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    struct A(bool);
    impl Drop for A {
        fn drop(&mut self) {
            COUNTER.fetch_add(1, Relaxed);
            if self.0 {
                panic!("panic!")
            }
        }
    }
    let (tx, rx) = channel::bounded(4).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tx.try_send(A(true)).unwrap();
        tx.try_send(A(false)).unwrap();
        tx.try_send(A(false)).unwrap();
        drop(rx);
    }));
    assert!(r.is_err());
    assert_eq!(COUNTER.load(Relaxed), 3);
    // The channel is still usable: closed, nothing leaked or poisoned.
    assert!(matches!(
        tx.try_send(A(false)),
        Err(TrySendError::Closed(_))
    ));
    drop(tx);
}

// Reference: tokio (tokio/src/sync/tests/semaphore_batch.rs,
// release_permits_at_drop), applied to the channel's wait lists: a waker
// replaced or dropped by a re-poll or a cancellation runs its owner's
// drop code, which may use the same channel.

/// A waker that owns a sender of the channel it waits on.
struct SenderInWaker(#[allow(dead_code)] std::sync::Mutex<Option<channel::Sender<u32>>>);

impl std::task::Wake for SenderInWaker {
    fn wake(self: std::sync::Arc<Self>) {}
}

fn sender_waker(tx: &channel::Sender<u32>) -> Waker {
    Waker::from(std::sync::Arc::new(SenderInWaker(std::sync::Mutex::new(
        Some(tx.clone()),
    ))))
}

#[path = "support/deadlock.rs"]
mod deadlock;
use deadlock::without_deadlock;

#[test]
fn a_replaced_recv_waker_may_drop_a_sender() {
    without_deadlock(|| {
        let (tx, rx) = channel::bounded::<u32>(1).unwrap();
        let mut recv = Box::pin(rx.recv());
        let w = sender_waker(&tx);
        assert!(
            recv.as_mut()
                .poll(&mut Context::from_waker(&w))
                .is_pending()
        );
        drop(w);
        assert!(poll_once(&mut recv).is_pending()); // drops the first waker
        assert_eq!(rx.sender_count(), 1);
    });
}

#[test]
fn a_cancelled_recv_waker_may_drop_a_sender() {
    without_deadlock(|| {
        let (tx, rx) = channel::bounded::<u32>(1).unwrap();
        let mut recv = Box::pin(rx.recv());
        let w = sender_waker(&tx);
        assert!(
            recv.as_mut()
                .poll(&mut Context::from_waker(&w))
                .is_pending()
        );
        drop(w);
        drop(recv);
        assert_eq!(rx.sender_count(), 1);
    });
}

#[test]
fn a_replaced_send_waker_may_drop_a_sender() {
    without_deadlock(|| {
        let (tx, rx) = channel::bounded::<u32>(1).unwrap();
        tx.try_send(0).unwrap();
        let mut send = Box::pin(tx.send(1));
        let w = sender_waker(&tx);
        assert!(
            send.as_mut()
                .poll(&mut Context::from_waker(&w))
                .is_pending()
        );
        drop(w);
        assert!(poll_once(&mut send).is_pending());
        drop(send);
        assert_eq!(rx.sender_count(), 1);
    });
}

#[test]
fn a_cancelled_reserve_waker_may_drop_a_sender() {
    without_deadlock(|| {
        let (tx, rx) = channel::bounded::<u32>(1).unwrap();
        tx.try_send(0).unwrap();
        let mut reserve = Box::pin(tx.reserve());
        let w = sender_waker(&tx);
        assert!(
            reserve
                .as_mut()
                .poll(&mut Context::from_waker(&w))
                .is_pending()
        );
        drop(w);
        drop(reserve);
        assert_eq!(rx.sender_count(), 1);
    });
}
