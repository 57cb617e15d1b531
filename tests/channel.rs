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
