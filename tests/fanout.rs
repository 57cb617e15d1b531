//! Behaviour of `flowguard::fanout` on the paused Tokio clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flowguard::ConfigErrorKind;
use flowguard::fanout::{
    Finish, Gather, GatherFuture, GatherStream, Gathered, HedgeFuture, HedgePolicy, Outcome,
    Spawned, Straggler, gather_with_timeout, hedge, hedge_with_attempt,
};
use futures::{Stream, StreamExt};
use tokio::time::{Instant, sleep};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Counts drops and polls so a test can prove a future was cancelled.
#[derive(Clone, Default)]
struct Counters {
    dropped: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

struct Guard(Counters);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Counters {
    /// A future that sleeps `delay` then yields `value`, counted.
    fn task<T>(&self, delay: Duration, value: T) -> impl Future<Output = T> + Send + 'static
    where
        T: Send + 'static,
    {
        let c = self.clone();
        async move {
            let now = c.running.fetch_add(1, Ordering::SeqCst) + 1;
            c.peak.fetch_max(now, Ordering::SeqCst);
            let _guard = Guard(c.clone());
            if !delay.is_zero() {
                sleep(delay).await;
            }
            c.finished.fetch_add(1, Ordering::SeqCst);
            value
        }
    }

    fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
    fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }
    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[tokio::test(start_paused = true)]
async fn gather_returns_exactly_at_the_deadline_with_per_index_outcomes() {
    let c = Counters::default();
    let start = Instant::now();
    let futs = [100, 400, 50, 300, 301].map(|d| c.task(ms(d), d));
    let g = gather_with_timeout(futs, ms(300)).await;
    assert_eq!(start.elapsed(), ms(300));
    assert_eq!(g.finish(), Finish::Deadline);
    assert_eq!(g.len(), 5);
    assert_eq!(
        g.completed().map(|(i, v)| (i, *v)).collect::<Vec<_>>(),
        [(0, 100), (2, 50), (3, 300)]
    );
    assert_eq!(g.timed_out().collect::<Vec<_>>(), [1, 4]);
    assert_eq!((g.completed_count(), g.timed_out_count()), (3, 2));
    // Stragglers were dropped before gather returned, never finished.
    assert_eq!(c.dropped(), 5);
    assert_eq!(c.finished(), 3);
    sleep(ms(1000)).await;
    assert_eq!(c.finished(), 3);
}

#[tokio::test(start_paused = true)]
async fn gather_returns_when_all_done_before_the_deadline() {
    let c = Counters::default();
    let start = Instant::now();
    let g = gather_with_timeout([10, 30, 20].map(|d| c.task(ms(d), d)), ms(1000)).await;
    assert_eq!(start.elapsed(), ms(30));
    assert_eq!(g.finish(), Finish::AllCompleted);
    assert_eq!(g.into_completed(), [(0, 10), (1, 30), (2, 20)]);
}

#[tokio::test(start_paused = true)]
async fn latency_is_the_slowest_not_the_sum() {
    let start = Instant::now();
    let futs = (0..8).map(|i| async move {
        sleep(ms(200)).await;
        i
    });
    let g = gather_with_timeout(futs, ms(1000)).await;
    assert_eq!(start.elapsed(), ms(200));
    assert_eq!(g.completed_count(), 8);
}

#[tokio::test(start_paused = true)]
async fn empty_gather_is_done_at_once() {
    let g = gather_with_timeout(Vec::<BoxFut<u8>>::new(), ms(10)).await;
    assert!(g.is_empty());
    assert_eq!(g.finish(), Finish::AllCompleted);
}

#[tokio::test(start_paused = true)]
async fn zero_timeout_keeps_what_is_ready_on_the_first_poll() {
    let ready: BoxFut<u8> = Box::pin(async { 1 });
    let slow: BoxFut<u8> = Box::pin(async {
        sleep(ms(1)).await;
        2
    });
    let g = gather_with_timeout([ready, slow], Duration::ZERO).await;
    assert!(matches!(g.outcomes()[0], Outcome::Completed(1)));
    assert!(matches!(g.outcomes()[1], Outcome::TimedOut));
}

#[tokio::test(start_paused = true)]
async fn huge_timeout_means_no_deadline() {
    let g = gather_with_timeout([async { 1 }], Duration::MAX).await;
    assert_eq!(g.finish(), Finish::AllCompleted);
}

#[tokio::test(start_paused = true)]
async fn deadline_instant_is_exact() {
    let start = Instant::now();
    let c = Counters::default();
    let g = Gather::new([10, 70].map(|d| c.task(ms(d), d)))
        .deadline(start + ms(50))
        .build()
        .unwrap()
        .await;
    assert_eq!(start.elapsed(), ms(50));
    assert_eq!(g.timed_out().collect::<Vec<_>>(), [1]);
}

#[tokio::test(start_paused = true)]
async fn concurrency_bound_is_respected_and_starts_in_order() {
    let c = Counters::default();
    let start = Instant::now();
    let futs = [100, 100, 100, 100, 100].map(|d| c.task(ms(d), d));
    let g = Gather::new(futs).concurrency(2).build().unwrap();
    let mut stream = g.into_stream();
    let mut seen = Vec::new();
    while let Some((i, o)) = stream.next().await {
        assert!(o.is_completed());
        seen.push((i, start.elapsed()));
    }
    assert_eq!(c.peak(), 2);
    assert_eq!(
        seen,
        [
            (0, ms(100)),
            (1, ms(100)),
            (2, ms(200)),
            (3, ms(200)),
            (4, ms(300))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_unstarted_futures_time_out_and_are_dropped() {
    let c = Counters::default();
    let futs = [100, 100, 100].map(|d| c.task(ms(d), d));
    let g = Gather::new(futs)
        .concurrency(1)
        .timeout(ms(150))
        .build()
        .unwrap()
        .await;
    assert!(g.outcomes()[0].is_completed());
    assert_eq!(g.timed_out().collect::<Vec<_>>(), [1, 2]);
    // Index 2 never started: its future was dropped without being polled.
    assert_eq!(c.peak(), 1);
    assert_eq!(c.finished(), 1);
    assert_eq!(c.dropped(), 2); // only started futures hold a Guard
}

#[tokio::test(start_paused = true)]
async fn metrics_do_not_count_cut_off_futures_as_started() {
    let c = Counters::default();
    let mut g = Gather::new([100, 100, 100].map(|d| c.task(ms(d), d)))
        .concurrency(1)
        .timeout(ms(50))
        .build()
        .unwrap();
    let out = (&mut g).await;
    assert_eq!(out.timed_out_count(), 3);
    let m = g.metrics();
    assert_eq!((m.total, m.started, m.in_flight, m.succeeded), (3, 1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn metrics_track_progress() {
    let c = Counters::default();
    let mut g = Gather::new([10, 20, 30].map(|d| c.task(ms(d), d)))
        .concurrency(2)
        .build()
        .unwrap();
    let m = g.metrics();
    assert_eq!((m.total, m.started, m.in_flight), (3, 0, 0));
    assert!(futures::poll!(&mut g).is_pending());
    let m = g.metrics();
    assert_eq!((m.started, m.in_flight, m.succeeded), (2, 2, 0));
    sleep(ms(10)).await;
    assert!(futures::poll!(&mut g).is_pending());
    let m = g.metrics();
    assert_eq!((m.started, m.in_flight, m.succeeded), (3, 2, 1));
    let out = g.await;
    assert_eq!(out.completed_count(), 3);
}

fn result_task(
    c: &Counters,
    delay: u64,
    ok: bool,
) -> impl Future<Output = Result<u64, u64>> + Send + 'static {
    c.task(ms(delay), if ok { Ok(delay) } else { Err(delay) })
}

#[tokio::test(start_paused = true)]
async fn quorum_returns_at_the_kth_success_and_cancels_the_rest() {
    let c = Counters::default();
    let start = Instant::now();
    let futs = [(50, true), (10, false), (30, true), (20, true), (90, true)]
        .map(|(d, ok)| result_task(&c, d, ok));
    let g = Gather::new(futs)
        .quorum(2)
        .timeout(ms(1000))
        .build()
        .unwrap()
        .await;
    assert_eq!(start.elapsed(), ms(30));
    assert_eq!(g.finish(), Finish::QuorumReached);
    assert_eq!(g.success_count(), 2);
    assert_eq!(
        g.successes().map(|(i, v)| (i, *v)).collect::<Vec<_>>(),
        [(2, 30), (3, 20)]
    );
    assert!(matches!(g.outcomes()[1], Outcome::Completed(Err(10))));
    assert_eq!(g.cancelled().collect::<Vec<_>>(), [0, 4]);
    assert_eq!(c.dropped(), 5);
    sleep(ms(200)).await;
    assert_eq!(c.finished(), 3);
}

#[tokio::test(start_paused = true)]
async fn quorum_gives_up_as_soon_as_it_is_impossible() {
    let c = Counters::default();
    let start = Instant::now();
    // Need 3 of 4: the second failure (at 20 ms) makes it impossible.
    let futs =
        [(10, false), (20, false), (5, true), (500, true)].map(|(d, ok)| result_task(&c, d, ok));
    let g = Gather::new(futs).quorum(3).build().unwrap().await;
    assert_eq!(start.elapsed(), ms(20));
    assert_eq!(g.finish(), Finish::QuorumImpossible);
    assert_eq!(g.cancelled().collect::<Vec<_>>(), [3]);
    assert_eq!(c.dropped(), 4);
}

#[tokio::test(start_paused = true)]
async fn quorum_with_deadline_stops_at_deadline() {
    let c = Counters::default();
    let start = Instant::now();
    let futs = [(10, true), (200, true)].map(|(d, ok)| result_task(&c, d, ok));
    let g = Gather::new(futs)
        .quorum(2)
        .timeout(ms(100))
        .build()
        .unwrap()
        .await;
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(g.finish(), Finish::Deadline);
    assert_eq!(g.success_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_cancels_on_first_error() {
    let c = Counters::default();
    let start = Instant::now();
    let futs =
        [(10, true), (40, false), (30, false), (100, true)].map(|(d, ok)| result_task(&c, d, ok));
    let g = Gather::new(futs).fail_fast().build().unwrap().await;
    assert_eq!(start.elapsed(), ms(30));
    assert_eq!(g.finish(), Finish::FailedFast);
    assert!(matches!(g.outcomes()[0], Outcome::Completed(Ok(10))));
    assert!(matches!(g.outcomes()[2], Outcome::Completed(Err(30))));
    assert_eq!(g.cancelled().collect::<Vec<_>>(), [1, 3]);
    assert_eq!(c.dropped(), 4);
}

#[tokio::test(start_paused = true)]
async fn stream_yields_in_completion_order_then_the_cut_off() {
    let c = Counters::default();
    let futs = [30, 10, 500, 20].map(|d| c.task(ms(d), d));
    let stream: GatherStream<_> = Gather::new(futs)
        .timeout(ms(100))
        .build()
        .unwrap()
        .into_stream();
    assert_eq!(stream.size_hint(), (4, Some(4)));
    let items: Vec<(usize, Option<u64>)> = stream.map(|(i, o)| (i, o.completed())).collect().await;
    assert_eq!(
        items,
        [(1, Some(10)), (3, Some(20)), (0, Some(30)), (2, None)]
    );
    assert_eq!(c.dropped(), 4);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_gather_cancels_everything() {
    let c = Counters::default();
    let mut g = Gather::new([10, 20].map(|d| c.task(ms(d), d)))
        .build()
        .unwrap();
    assert!(futures::poll!(&mut g).is_pending());
    assert_eq!(c.dropped(), 0);
    drop(g);
    assert_eq!(c.dropped(), 2);
    assert_eq!(c.finished(), 0);
}

#[tokio::test(start_paused = true)]
async fn futures_that_wake_themselves_many_times_complete() {
    struct YieldN(u32);
    impl Future for YieldN {
        type Output = u32;
        fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<u32> {
            if self.0 == 0 {
                return std::task::Poll::Ready(7);
            }
            self.0 -= 1;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
    let g = Gather::new((0..100).map(|i| YieldN(i % 7)))
        .build()
        .unwrap()
        .await;
    assert_eq!(g.completed_count(), 100);
    let g = Gather::new((0..100).map(|i| async move {
        for _ in 0..(i % 5) {
            tokio::task::yield_now().await;
        }
        i
    }))
    .concurrency(7)
    .build()
    .unwrap()
    .await;
    assert_eq!(
        g.into_completed()
            .into_iter()
            .map(|(_, v)| v)
            .collect::<Vec<_>>(),
        (0..100).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn spawned_mode_captures_panics_and_aborts_at_the_deadline() {
    let c = Counters::default();
    let start = Instant::now();
    let ok: BoxFut<u64> = Box::pin(c.task(ms(10), 1));
    let boom: BoxFut<u64> = Box::pin(async {
        sleep(ms(5)).await;
        panic!("boom")
    });
    let slow: BoxFut<u64> = Box::pin(c.task(ms(500), 3));
    let g: GatherFuture<_, Spawned> = Gather::new([ok, boom, slow])
        .spawn()
        .timeout(ms(100))
        .build()
        .unwrap();
    let g = g.await;
    assert_eq!(start.elapsed(), ms(100));
    assert!(matches!(g.outcomes()[0], Outcome::Completed(1)));
    assert_eq!(g.panicked().collect::<Vec<_>>(), [1]);
    assert_eq!(g.timed_out().collect::<Vec<_>>(), [2]);
    // The abort takes effect when the runtime next runs the task.
    tokio::task::yield_now().await;
    assert_eq!(c.dropped(), 2);
    sleep(ms(1000)).await;
    assert_eq!(c.finished(), 1);
}

/// Outcomes as `Some(value)` / `None` (cut off), in input order.
fn values<T: Copy>(g: &Gathered<T>) -> Vec<Option<T>> {
    g.outcomes()
        .iter()
        .map(|o| match o {
            Outcome::Completed(v) => Some(*v),
            _ => None,
        })
        .collect()
}

/// Gathers sleeps of `delays` ms with `timeout_ms`, in-task and spawned,
/// and returns both results with the time each took.
async fn both_modes(
    delays: &[u64],
    concurrency: usize,
    timeout_ms: u64,
) -> [(Vec<Option<u64>>, Duration); 2] {
    let c = Counters::default();
    let start = Instant::now();
    let in_task = Gather::new(delays.iter().map(|&d| c.task(ms(d), d)))
        .concurrency(concurrency)
        .timeout(ms(timeout_ms))
        .build()
        .unwrap()
        .await;
    let in_task = (values(&in_task), start.elapsed());
    let start = Instant::now();
    let spawned = Gather::new(delays.iter().map(|&d| c.task(ms(d), d)))
        .spawn()
        .concurrency(concurrency)
        .timeout(ms(timeout_ms))
        .build()
        .unwrap()
        .await;
    [in_task, (values(&spawned), start.elapsed())]
}

#[tokio::test(start_paused = true)]
async fn a_child_done_exactly_at_the_deadline_is_completed_in_both_modes() {
    // asyncio's wait(): timers due at the deadline have already run.
    let [in_task, spawned] = both_modes(&[100, 101], usize::MAX, 100).await;
    assert_eq!(in_task, (vec![Some(100), None], ms(100)));
    assert_eq!(spawned, in_task);

    // With a concurrency bound: the child started at the deadline by the one
    // finishing then is polled once too, and is ready at once.
    let [in_task, spawned] = both_modes(&[100, 0, 5], 1, 100).await;
    assert_eq!(in_task, (vec![Some(100), Some(0), None], ms(100)));
    assert_eq!(spawned, in_task);
}

#[tokio::test(start_paused = true)]
async fn many_children_due_at_the_deadline_all_complete_in_both_modes() {
    // 200 children due at the deadline, a few just after it: more than
    // Tokio's cooperative budget lets one in-task poll see (128 timer
    // polls), and more than the runtime runs between two polls of the
    // awaiting task in spawned mode (61 tasks).
    let delays: Vec<u64> = (0..200)
        .map(|i| if i % 10 == 9 { 101 } else { 100 })
        .collect();
    let want: Vec<Option<u64>> = delays.iter().map(|&d| (d == 100).then_some(d)).collect();
    let [in_task, spawned] = both_modes(&delays, usize::MAX, 100).await;
    assert_eq!(in_task, (want.clone(), ms(100)));
    assert_eq!(spawned, (want, ms(100)));
}

#[tokio::test(start_paused = true)]
async fn spawned_gather_driven_from_a_task_counts_children_due_at_the_deadline() {
    // The awaiting task is an ordinary spawned task here (not the test's
    // `block_on` future), so it is scheduled with the children.
    let c = Counters::default();
    let futs: Vec<_> = [50, 100, 100, 150].map(|d| c.task(ms(d), d)).into();
    let stream: GatherStream<_, Spawned> = Gather::new(futs)
        .spawn()
        .timeout(ms(100))
        .build()
        .unwrap()
        .into_stream();
    let start = Instant::now();
    let items = tokio::spawn(stream.map(|(i, o)| (i, o.completed())).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(start.elapsed(), ms(100));
    let mut at_deadline = items[1..3].to_vec();
    at_deadline.sort();
    assert_eq!(items[0], (0, Some(50)));
    assert_eq!(at_deadline, [(1, Some(100)), (2, Some(100))]);
    assert_eq!(items[3], (3, None));
}

#[tokio::test(start_paused = true)]
async fn spawned_quorum_counts_panics_as_failures() {
    let futs: Vec<BoxFut<Result<u8, u8>>> = vec![
        Box::pin(async { panic!("x") }),
        Box::pin(async { Err(1) }),
        Box::pin(async {
            sleep(ms(50)).await;
            Ok(2)
        }),
    ];
    let g = Gather::new(futs).spawn().quorum(2).build().unwrap().await;
    assert_eq!(g.finish(), Finish::QuorumImpossible);
    assert_eq!(g.panicked_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_mode_on_many_threads() {
    // No timers here: this runtime's clock is real.
    let g = Gather::new((0..64u64).map(|i| async move {
        for _ in 0..(i % 8) {
            tokio::task::yield_now().await;
        }
        i
    }))
    .spawn()
    .concurrency(16)
    .build()
    .unwrap()
    .await;
    assert_eq!(g.completed_count(), 64);
    assert!(g.outcomes()[63].is_completed());
}

// Without a deadline a spawned child is polled with its task's own waker
// (no wake counting); results keep input order, panics are reported, and
// children woken from another task complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_without_a_deadline_keeps_order_and_reports_panics_on_many_threads() {
    let (tx, rx) = tokio::sync::oneshot::channel::<u64>();
    let mut futs: Vec<BoxFut<u64>> = (0..200u64)
        .map(|i| -> BoxFut<u64> {
            Box::pin(async move {
                for _ in 0..(i % 5) {
                    tokio::task::yield_now().await;
                }
                if i == 7 {
                    panic!("seven");
                }
                i * 3
            })
        })
        .collect();
    futs.push(Box::pin(async move { rx.await.unwrap_or(0) }));
    tokio::spawn(async move {
        tokio::task::yield_now().await;
        let _ = tx.send(1000);
    });
    let g = Gather::new(futs).spawn().build().unwrap().await;
    assert_eq!(g.finish(), Finish::AllCompleted);
    assert_eq!(g.len(), 201);
    assert_eq!(g.panicked().collect::<Vec<_>>(), [7]);
    assert_eq!(g.outcomes()[7], Outcome::Panicked(Box::new("seven")));
    for (i, outcome) in g.outcomes().iter().enumerate() {
        let want = match i {
            7 => continue,
            200 => 1000,
            _ => i as u64 * 3,
        };
        assert_eq!(outcome, &Outcome::Completed(want), "child {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_a_spawned_gather_without_a_deadline_aborts_its_children() {
    let c = Counters::default();
    let futs: Vec<BoxFut<u64>> = vec![
        Box::pin(c.task(Duration::ZERO, 1)),
        Box::pin(c.task(ms(50), 2)),
        Box::pin(c.task(ms(60), 3)),
    ];
    let mut g = Gather::new(futs).spawn().build().unwrap();
    assert!(futures::poll!(&mut g).is_pending());
    for _ in 0..3 {
        tokio::task::yield_now().await; // the tasks start, the first ends
    }
    drop(g);
    sleep(ms(100)).await;
    assert_eq!((c.finished(), c.dropped()), (1, 3), "two aborted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_zero_timeout_keeps_what_each_first_poll_finished_on_many_threads() {
    // No timers: the deadline has passed at once, so the gather waits for
    // every task's first poll (on whichever worker) and keeps what it
    // finished, as the in-task mode keeps what is ready on its first poll.
    for _ in 0..20 {
        let futs: Vec<BoxFut<usize>> = (0..64)
            .map(|i| -> BoxFut<usize> {
                if i % 2 == 0 {
                    Box::pin(async move { i })
                } else {
                    Box::pin(std::future::pending())
                }
            })
            .collect();
        let g = Gather::new(futs)
            .spawn()
            .timeout(Duration::ZERO)
            .build()
            .unwrap()
            .await;
        assert_eq!(g.finish(), Finish::Deadline);
        assert_eq!(
            g.into_completed(),
            (0..64).step_by(2).map(|i| (i, i)).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn gather_builder_rejects_bad_input() {
    let err = |g: Result<GatherFuture<BoxFut<Result<u8, u8>>>, _>| g.unwrap_err();
    let futs = || -> Vec<BoxFut<Result<u8, u8>>> {
        vec![Box::pin(async { Ok(1) }), Box::pin(async { Ok(2) })]
    };

    let e = err(Gather::new(futs()).concurrency(0).build());
    assert_eq!(
        (e.component(), e.field(), e.kind()),
        ("gather", "concurrency", ConfigErrorKind::Zero)
    );
    let e = err(Gather::new(futs()).quorum(0).build());
    assert_eq!((e.field(), e.kind()), ("quorum", ConfigErrorKind::Zero));
    let e = err(Gather::new(futs()).quorum(3).build());
    assert_eq!((e.field(), e.kind()), ("quorum", ConfigErrorKind::TooLarge));
    assert_eq!(
        e.to_string(),
        "invalid gather config: quorum must be at most the number of futures (2), got 3"
    );
    let e = err(Gather::new(futs()).quorum(1).fail_fast().build());
    assert_eq!(
        (e.field(), e.kind()),
        ("fail_fast", ConfigErrorKind::Conflict)
    );
    let e = err(Gather::new(futs())
        .timeout(ms(1))
        .deadline(Instant::now())
        .build());
    assert_eq!(
        (e.field(), e.kind()),
        ("deadline", ConfigErrorKind::Conflict)
    );
    let e = err(Gather::new(Vec::new()).quorum(1).build());
    assert_eq!(e.kind(), ConfigErrorKind::TooLarge);
    // Good input still builds.
    assert!(
        Gather::new(futs())
            .quorum(2)
            .concurrency(1)
            .timeout(ms(1))
            .build()
            .is_ok()
    );
}

// ---------------------------------------------------------------- hedging

/// A backend whose n-th request (0-based) takes `latencies[n]` and answers `oks[n]`.
#[derive(Clone)]
struct Backend {
    latencies: Arc<Vec<u64>>,
    oks: Arc<Vec<bool>>,
    sent: Arc<AtomicUsize>,
    c: Counters,
}

impl Backend {
    fn new(spec: &[(u64, bool)]) -> Self {
        Self {
            latencies: Arc::new(spec.iter().map(|s| s.0).collect()),
            oks: Arc::new(spec.iter().map(|s| s.1).collect()),
            sent: Arc::default(),
            c: Counters::default(),
        }
    }

    fn request(&self) -> impl Future<Output = Result<u64, String>> + Send + 'static {
        let n = self.sent.fetch_add(1, Ordering::SeqCst);
        let d = self.latencies[n];
        let out = if self.oks[n] {
            Ok(n as u64)
        } else {
            Err(format!("attempt {n} failed"))
        };
        self.c.task(ms(d), out)
    }
}

fn fixed(delay: u64, hedges: usize) -> HedgePolicy {
    HedgePolicy::builder()
        .fixed_delay(ms(delay))
        .max_hedges(hedges)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn hedge_fast_primary_sends_nothing_extra() {
    let b = Backend::new(&[(5, true)]);
    let start = Instant::now();
    let won = hedge(|| b.request(), &fixed(10, 2)).await.unwrap();
    assert_eq!((won.value, won.winner, won.attempts), (0, 0, 1));
    assert_eq!(start.elapsed(), ms(5));
}

#[tokio::test(start_paused = true)]
async fn hedges_are_sent_at_multiples_of_the_delay_and_losers_dropped() {
    // Primary 1000 ms, hedge 1 at 10 ms takes 1000 ms, hedge 2 at 20 ms takes 5 ms.
    let b = Backend::new(&[(1000, true), (1000, true), (5, true)]);
    let policy = fixed(10, 2);
    let start = Instant::now();
    let won = hedge(|| b.request(), &policy).await.unwrap();
    assert_eq!(start.elapsed(), ms(25));
    assert_eq!((won.value, won.winner, won.attempts), (2, 2, 3));
    assert_eq!(b.c.dropped(), 3);
    sleep(ms(2000)).await;
    assert_eq!(b.c.finished(), 1);
    let m = policy.metrics();
    assert_eq!(
        (m.calls, m.hedges_sent, m.hedge_wins, m.failures),
        (1, 2, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_primary_done_exactly_at_the_hedge_delay_wins_without_a_hedge() {
    // The same rule as the gather's deadline: a completion due at the
    // instant the timer fires is seen before the timer.
    let b = Backend::new(&[(10, true), (1, true)]);
    let policy = fixed(10, 1);
    let start = Instant::now();
    let won = hedge(|| b.request(), &policy).await.unwrap();
    assert_eq!((won.value, won.winner, won.attempts), (0, 0, 1));
    assert_eq!(start.elapsed(), ms(10));
    assert_eq!(b.sent.load(Ordering::SeqCst), 1);
    assert_eq!(policy.metrics().hedges_sent, 0);
}

#[tokio::test(start_paused = true)]
async fn max_hedges_caps_attempts() {
    let b = Backend::new(&[(100, true), (100, true), (100, true)]);
    let start = Instant::now();
    let won = hedge(|| b.request(), &fixed(10, 1)).await.unwrap();
    assert_eq!((won.winner, won.attempts), (0, 2));
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(b.sent.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_error_does_not_win_while_another_runs() {
    // Hedge 1 fails fast at 15 ms; the primary still succeeds at 50 ms.
    let b = Backend::new(&[(50, true), (5, false)]);
    let start = Instant::now();
    let won = hedge(|| b.request(), &fixed(10, 1)).await.unwrap();
    assert_eq!((won.winner, won.attempts), (0, 2));
    assert_eq!(start.elapsed(), ms(50));
}

#[tokio::test(start_paused = true)]
async fn when_all_fail_the_primarys_error_comes_back() {
    let b = Backend::new(&[(30, false), (5, false)]);
    let policy = fixed(10, 1);
    let start = Instant::now();
    let err = hedge(|| b.request(), &policy).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(30));
    assert_eq!(err.attempts(), 2);
    assert_eq!(err.to_string(), "all 2 hedged attempts failed");
    assert_eq!(err.into_inner(), "attempt 0 failed");
    assert_eq!(policy.metrics().failures, 1);
}

#[tokio::test(start_paused = true)]
async fn primary_failing_before_the_delay_is_not_retried() {
    let b = Backend::new(&[(3, false), (1, true)]);
    let err = hedge(|| b.request(), &fixed(10, 1)).await.unwrap_err();
    assert_eq!(err.attempts(), 1);
    assert_eq!(b.sent.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_primary_failing_exactly_at_the_delay_still_gets_its_due_hedge() {
    // The hedge is due at 10 ms, the instant the primary fails: the call is
    // not over, the hedge goes out (a failure *before* the delay is final).
    let b = Backend::new(&[(10, false), (5, true)]);
    let start = Instant::now();
    let won = hedge(|| b.request(), &fixed(10, 1)).await.unwrap();
    assert_eq!((won.value, won.winner, won.attempts), (1, 1, 2));
    assert_eq!(start.elapsed(), ms(15));
}

#[tokio::test(start_paused = true)]
async fn a_zero_delay_sends_every_hedge_at_once_even_if_the_primary_fails_at_once() {
    // Polly's `Delay = TimeSpan.Zero`: all attempts start together; an
    // attempt that fails on its first poll does not end the call while
    // hedges are due.
    let b = Backend::new(&[(0, false), (0, false), (3, true)]);
    let start = Instant::now();
    let won = hedge(|| b.request(), &fixed(0, 2)).await.unwrap();
    assert_eq!((won.value, won.winner, won.attempts), (2, 2, 3));
    assert_eq!(start.elapsed(), ms(3));
    // All fail at once: every attempt was sent, the primary's error comes back.
    let b = Backend::new(&[(0, false), (0, false), (0, false)]);
    let err = hedge(|| b.request(), &fixed(0, 2)).await.unwrap_err();
    assert_eq!((err.attempts(), err.attempt), (3, 0));
}

#[tokio::test(start_paused = true)]
async fn percentile_delay_is_learned_once_enough_samples_exist() {
    let policy = HedgePolicy::builder()
        .percentile(0.9)
        .window(10)
        .min_samples(5)
        .max_hedges(1)
        .build()
        .unwrap();
    // Cold: no hedging at all, even for a slow primary.
    let b = Backend::new(&[(100, true)]);
    let won = hedge(|| b.request(), &policy).await.unwrap();
    assert_eq!(won.attempts, 1);
    assert_eq!(policy.current_delay(), None);
    // Warm it with latencies 1..=10 ms: p90 is 9 ms.
    for n in 1..=10 {
        policy.record_latency(ms(n));
    }
    assert_eq!(policy.current_delay(), Some(ms(9)));
    let b = Backend::new(&[(100, true), (2, true)]);
    let start = Instant::now();
    let won = hedge(|| b.request(), &policy).await.unwrap();
    assert_eq!((won.winner, won.attempts), (1, 2));
    assert_eq!(start.elapsed(), ms(11));
    // The window is bounded: the winner's 2 ms evicted the oldest sample.
    assert_eq!(policy.metrics().samples, 10);
}

#[tokio::test(start_paused = true)]
async fn percentile_uses_initial_delay_until_warm() {
    let policy = HedgePolicy::builder()
        .percentile(0.95)
        .min_samples(3)
        .initial_delay(ms(7))
        .build()
        .unwrap();
    assert_eq!(policy.current_delay(), Some(ms(7)));
    let b = Backend::new(&[(100, true), (1, true)]);
    let start = Instant::now();
    let won = hedge(|| b.request(), &policy).await.unwrap();
    assert_eq!(won.winner, 1);
    assert_eq!(start.elapsed(), ms(8));
}

#[tokio::test(start_paused = true)]
async fn zero_max_hedges_never_hedges() {
    let policy = fixed(1, 0);
    let b = Backend::new(&[(100, true)]);
    let won = hedge(|| b.request(), &policy).await.unwrap();
    assert_eq!(won.attempts, 1);
    assert_eq!(policy.current_delay(), None);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_hedge_drops_every_attempt() {
    let b = Backend::new(&[(100, true), (100, true)]);
    let mut fut = hedge(|| b.request(), &fixed(10, 1));
    assert!(futures::poll!(&mut fut).is_pending());
    sleep(ms(10)).await;
    assert!(futures::poll!(&mut fut).is_pending());
    assert_eq!(b.sent.load(Ordering::SeqCst), 2);
    drop(fut);
    assert_eq!(b.c.dropped(), 2);
}

#[test]
fn hedge_policy_builder_rejects_bad_input() {
    let e = HedgePolicy::builder().build().unwrap_err();
    assert_eq!(
        (e.component(), e.field(), e.kind()),
        ("hedge", "fixed_delay", ConfigErrorKind::Missing)
    );
    let e = HedgePolicy::builder()
        .fixed_delay(ms(1))
        .percentile(0.5)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("percentile", ConfigErrorKind::Conflict)
    );
    for (p, kind) in [
        (0.0, ConfigErrorKind::TooSmall),
        (-1.0, ConfigErrorKind::TooSmall),
        (f64::NAN, ConfigErrorKind::TooSmall),
        (1.01, ConfigErrorKind::TooLarge),
        (f64::INFINITY, ConfigErrorKind::TooLarge),
    ] {
        let e = HedgePolicy::builder().percentile(p).build().unwrap_err();
        assert_eq!((e.field(), e.kind()), ("percentile", kind), "p = {p}");
    }
    let e = HedgePolicy::builder()
        .percentile(0.9)
        .window(0)
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("window", ConfigErrorKind::Zero));
    let e = HedgePolicy::builder()
        .percentile(0.9)
        .window(1 << 20)
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("window", ConfigErrorKind::TooLarge));
    let e = HedgePolicy::builder()
        .percentile(0.9)
        .min_samples(0)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("min_samples", ConfigErrorKind::Zero)
    );
    let e = HedgePolicy::builder()
        .percentile(0.9)
        .window(5)
        .min_samples(6)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("min_samples", ConfigErrorKind::TooLarge)
    );
    let e = HedgePolicy::builder()
        .fixed_delay(ms(1))
        .window(5)
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("window", ConfigErrorKind::Conflict));
    let e = HedgePolicy::builder()
        .fixed_delay(ms(1))
        .initial_delay(ms(5))
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("initial_delay", ConfigErrorKind::Conflict)
    );
    let e = HedgePolicy::builder()
        .fixed_delay(ms(1))
        .max_hedges(17)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("max_hedges", ConfigErrorKind::TooLarge)
    );
    // Extremes that are accepted.
    assert!(
        HedgePolicy::builder()
            .fixed_delay(Duration::MAX)
            .max_hedges(16)
            .build()
            .is_ok()
    );
    assert!(
        HedgePolicy::builder()
            .percentile(1.0)
            .window(1)
            .build()
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn huge_fixed_delay_never_hedges_and_never_panics() {
    let b = Backend::new(&[(10, true)]);
    let policy = HedgePolicy::builder()
        .fixed_delay(Duration::MAX)
        .max_hedges(16)
        .build()
        .unwrap();
    let won = hedge(|| b.request(), &policy).await.unwrap();
    assert_eq!(won.attempts, 1);
}

#[test]
fn public_types_are_send_sync_unpin() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    fn unpin<T: Unpin>() {}
    type F = BoxFut<Result<u8, u8>>;
    send::<GatherFuture<F>>();
    unpin::<GatherFuture<F>>();
    send::<GatherFuture<F, Spawned>>();
    send::<GatherStream<F>>();
    unpin::<GatherStream<F>>();
    send::<Gathered<u8>>();
    send::<Outcome<u8>>();
    send::<HedgePolicy>();
    sync::<HedgePolicy>();
    send::<flowguard::fanout::HedgeError<String>>();
    sync::<flowguard::fanout::HedgeError<String>>();
    fn hedge_future_is_send(p: &HedgePolicy) -> impl Send + Sync + Unpin + use<'_> {
        let f: HedgeFuture<_, _> = hedge(|| async { Ok::<u8, u8>(1) }, p);
        f.final_error_if(|e| *e == 0)
    }
    let _ = hedge_future_is_send;
    fn numbered_is_send(p: &HedgePolicy) -> impl Send + Unpin + use<'_> {
        hedge_with_attempt(|k| async move { Ok::<usize, u8>(k) }, p)
    }
    let _ = numbered_is_send;
    send::<Straggler<u8>>();
    sync::<Straggler<u8>>();
    unpin::<Straggler<u8>>();
}

// ---- issue 15: named stop rules, detached stragglers, Outcome equality ----

#[tokio::test(start_paused = true)]
async fn first_completed_stops_at_any_completion_err_included() {
    let c = Counters::default();
    let futs = [
        result_task(&c, 30, true),
        result_task(&c, 10, false),
        result_task(&c, 20, true),
    ];
    let start = Instant::now();
    let g = Gather::new(futs).first_completed().build().unwrap().await;
    assert_eq!(start.elapsed(), ms(10), "at the first completion, an Err");
    assert_eq!(g.finish(), Finish::FirstCompleted);
    assert_eq!(
        g.outcomes(),
        [
            Outcome::Cancelled,
            Outcome::Completed(Err(10)),
            Outcome::Cancelled
        ]
    );
    assert_eq!(c.dropped(), 3, "the rest were cancelled");
    // quorum(1) would have waited for the first Ok instead.
    let c = Counters::default();
    let futs = [result_task(&c, 30, true), result_task(&c, 10, false)];
    let g = Gather::new(futs).quorum(1).build().unwrap().await;
    assert_eq!((g.finish(), g.success_count()), (Finish::QuorumReached, 1));
}

#[tokio::test(start_paused = true)]
async fn an_early_finish_keeps_every_completion_of_its_instant() {
    // asyncio's `wait(FIRST_COMPLETED)` / `FIRST_EXCEPTION` return every
    // future done by then: two done at the same instant are both done, the
    // same rule as "done at the deadline counts as done".
    for spawned in [false, true] {
        for first_error in [false, true] {
            // The first at 10 ms decides (an Ok for first_completed, an Err
            // for first_error); the second is done at the same instant.
            let c = Counters::default();
            let futs = [
                result_task(&c, 10, !first_error),
                result_task(&c, 10, first_error),
                result_task(&c, 30, true),
            ];
            let g = Gather::new(futs);
            let g = if first_error {
                g.first_error()
            } else {
                g.first_completed()
            };
            let g = if spawned {
                g.spawn().build().unwrap().await
            } else {
                g.build().unwrap().await
            };
            let (finish, first) = if first_error {
                (Finish::FailedFast, Err(10))
            } else {
                (Finish::FirstCompleted, Ok(10))
            };
            assert_eq!(g.finish(), finish);
            assert_eq!(
                g.outcomes(),
                [
                    Outcome::Completed(first),
                    Outcome::Completed(if first_error { Ok(10) } else { Err(10) }),
                    Outcome::Cancelled
                ],
                "spawned: {spawned}, first_error: {first_error}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn first_completed_needs_no_result_output_and_counts_panics_spawned() {
    let c = Counters::default();
    let g = Gather::new([c.task(ms(20), "slow"), c.task(ms(5), "fast")])
        .first_completed()
        .build()
        .unwrap()
        .await;
    assert_eq!(
        g.outcomes(),
        [Outcome::Cancelled, Outcome::Completed("fast")]
    );

    let boom: BoxFut<u8> = Box::pin(async {
        sleep(ms(1)).await;
        panic!("first")
    });
    let slow: BoxFut<u8> = Box::pin(async {
        sleep(ms(50)).await;
        1
    });
    let g = Gather::new([slow, boom])
        .spawn()
        .first_completed()
        .build()
        .unwrap()
        .await;
    assert_eq!(g.finish(), Finish::FirstCompleted);
    assert_eq!(g.panicked().collect::<Vec<_>>(), [1]);
    assert_eq!(g.outcomes()[1], Outcome::Panicked(Box::new("first")));
}

#[tokio::test(start_paused = true)]
async fn first_error_is_fail_fast_by_its_asyncio_name() {
    for first_error in [true, false] {
        let c = Counters::default();
        let futs = [
            result_task(&c, 10, true),
            result_task(&c, 20, false),
            result_task(&c, 30, true),
        ];
        let g = Gather::new(futs);
        let g = if first_error {
            g.first_error()
        } else {
            g.fail_fast()
        };
        let start = Instant::now();
        let g = g.build().unwrap().await;
        assert_eq!(start.elapsed(), ms(20));
        assert_eq!(g.finish(), Finish::FailedFast);
        assert_eq!(
            g.into_outcomes(),
            [
                Outcome::Completed(Ok(10)),
                Outcome::Completed(Err(20)),
                Outcome::Cancelled
            ]
        );
    }
    // No error: it waits for all, as asyncio's FIRST_EXCEPTION does.
    let c = Counters::default();
    let futs = [result_task(&c, 10, true), result_task(&c, 20, true)];
    let g = Gather::new(futs).first_error().build().unwrap().await;
    assert_eq!(g.finish(), Finish::AllCompleted);
}

#[tokio::test(start_paused = true)]
async fn first_completed_conflicts_with_other_stop_rules() {
    let c = Counters::default();
    let e = Gather::new([result_task(&c, 1, true)])
        .first_completed()
        .quorum(1)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("first_completed", ConfigErrorKind::Conflict)
    );
    let e = Gather::new([result_task(&c, 1, true)])
        .first_error()
        .first_completed()
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("first_completed", ConfigErrorKind::Conflict)
    );
}

#[tokio::test(start_paused = true)]
async fn detached_stragglers_keep_running_and_hand_back_their_results() {
    let c = Counters::default();
    let futs: Vec<BoxFut<u64>> = vec![
        Box::pin(c.task(ms(10), 10)),
        Box::pin(c.task(ms(300), 300)),
        Box::pin(c.task(ms(200), 200)),
    ];
    let start = Instant::now();
    let mut g = Gather::new(futs)
        .spawn()
        .timeout(ms(100))
        .detach_stragglers()
        .build()
        .unwrap()
        .await;
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(g.finish(), Finish::Deadline);
    assert_eq!(
        g.outcomes(),
        [Outcome::Completed(10), Outcome::Detached, Outcome::Detached]
    );
    assert_eq!(g.detached().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(g.timed_out_count(), 0);
    assert_eq!(c.dropped(), 1, "stragglers were not aborted");
    let stragglers = g.take_stragglers();
    assert!(g.take_stragglers().is_empty(), "taken once");
    assert_eq!(
        stragglers.iter().map(Straggler::index).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(!stragglers[0].is_finished());
    let mut done = Vec::new();
    for s in stragglers {
        done.push((s.index(), s.await, start.elapsed()));
    }
    assert_eq!(
        done,
        [
            (1, Outcome::Completed(300), ms(300)),
            (2, Outcome::Completed(200), ms(300)), // already done by then
        ]
    );
    assert_eq!((c.finished(), c.dropped()), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn a_straggler_can_be_aborted_and_dropping_one_detaches() {
    let c = Counters::default();
    let futs: Vec<BoxFut<Result<u64, u64>>> = vec![
        Box::pin(result_task(&c, 5, false)),
        Box::pin(result_task(&c, 100, true)),
        Box::pin(result_task(&c, 100, true)),
        Box::pin(result_task(&c, 100, true)),
    ];
    // Concurrency 3: the fourth never starts, so it is not detached.
    let mut g = Gather::new(futs)
        .spawn()
        .concurrency(3)
        .first_error()
        .detach_stragglers()
        .build()
        .unwrap()
        .await;
    assert_eq!(g.finish(), Finish::FailedFast);
    assert_eq!(
        g.outcomes(),
        [
            Outcome::Completed(Err(5)),
            Outcome::Detached,
            Outcome::Detached,
            Outcome::Cancelled
        ]
    );
    let mut stragglers = g.take_stragglers().into_iter();
    let (first, second) = (stragglers.next().unwrap(), stragglers.next().unwrap());
    first.abort();
    assert_eq!(first.await, Outcome::Cancelled);
    drop(second); // detached, like a JoinHandle
    sleep(ms(200)).await;
    assert_eq!(
        c.finished(),
        2,
        "the dropped straggler's task ran to its end"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_hands_back_its_stragglers_too() {
    let c = Counters::default();
    let futs: Vec<BoxFut<u64>> = vec![Box::pin(c.task(ms(50), 50)), Box::pin(c.task(ms(5), 5))];
    let mut stream = Gather::new(futs)
        .spawn()
        .first_completed()
        .detach_stragglers()
        .build()
        .unwrap()
        .into_stream();
    let mut seen = Vec::new();
    while let Some((i, o)) = stream.next().await {
        seen.push((i, o));
    }
    assert_eq!(seen, [(1, Outcome::Completed(5)), (0, Outcome::Detached)]);
    let mut stragglers = stream.take_stragglers();
    assert_eq!(stragglers.len(), 1);
    assert_eq!(stragglers.pop().unwrap().await, Outcome::Completed(50));
}

#[tokio::test(start_paused = true)]
async fn dropping_a_detaching_gather_before_it_finishes_still_aborts() {
    let c = Counters::default();
    let futs: Vec<BoxFut<u64>> = vec![Box::pin(c.task(ms(50), 1))];
    let mut g = Gather::new(futs)
        .spawn()
        .timeout(ms(10))
        .detach_stragglers()
        .build()
        .unwrap();
    assert!(futures::poll!(&mut g).is_pending());
    tokio::task::yield_now().await; // the task starts
    drop(g);
    sleep(ms(100)).await;
    assert_eq!((c.finished(), c.dropped()), (0, 1), "aborted, not detached");
}

#[test]
fn outcomes_compare_by_value_and_panics_by_message() {
    assert_eq!(Outcome::Completed(1), Outcome::Completed(1));
    assert_ne!(Outcome::Completed(1), Outcome::Completed(2));
    assert_ne!(Outcome::Completed(1), Outcome::TimedOut);
    assert_eq!(Outcome::<u8>::Cancelled, Outcome::Cancelled);
    assert_eq!(Outcome::<u8>::Detached, Outcome::Detached);
    assert_ne!(Outcome::<u8>::TimedOut, Outcome::Cancelled);
    let a = Outcome::<u8>::Panicked(Box::new("boom"));
    assert_eq!(a, Outcome::Panicked(Box::new("boom".to_owned())));
    assert_ne!(a, Outcome::Panicked(Box::new("bang")));
    // Non-string payloads: equal only to themselves (reflexive, so `Eq`).
    let b = Outcome::<u8>::Panicked(Box::new(42u32));
    assert_eq!(b, b);
    assert_ne!(b, Outcome::Panicked(Box::new(42u32)));
    fn eq<T: Eq>() {}
    eq::<Outcome<u8>>();
}

// ---- issue 15: hedging ------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn each_request_is_told_its_attempt_number() {
    let policy = fixed(10, 3);
    let seen = std::sync::Mutex::new(Vec::new());
    let start = Instant::now();
    let won = hedge_with_attempt(
        |attempt| {
            seen.lock().unwrap().push((attempt, start.elapsed()));
            async move {
                // Only the third hedge is fast.
                sleep(ms(if attempt == 3 { 1 } else { 1000 })).await;
                Ok::<usize, ()>(attempt)
            }
        },
        &policy,
    )
    .await
    .unwrap();
    assert_eq!((won.value, won.winner, won.attempts), (3, 3, 4));
    assert_eq!(
        *seen.lock().unwrap(),
        [(0, ms(0)), (1, ms(10)), (2, ms(20)), (3, ms(30))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_final_error_ends_the_call_at_once() {
    // Primary hangs; hedge 1 (at 10 ms) fails in 5 ms with a final error.
    let b = Backend::new(&[(1000, true), (5, false), (1, true)]);
    let policy = fixed(10, 2);
    let start = Instant::now();
    let err = hedge(|| b.request(), &policy)
        .final_error_if(|e: &String| e.starts_with("attempt 1"))
        .await
        .unwrap_err();
    assert_eq!(
        start.elapsed(),
        ms(15),
        "no wait for the primary or hedge 2"
    );
    assert!(err.is_final());
    assert_eq!((err.attempt, err.attempts), (1, 2));
    assert_eq!(err.error, "attempt 1 failed");
    assert!(
        err.other_errors.is_empty(),
        "the primary was dropped, not failed"
    );
    assert_eq!(b.c.dropped(), 2);
    assert_eq!(
        b.sent.load(Ordering::SeqCst),
        2,
        "no hedge after a final error"
    );
    assert_eq!(policy.metrics().failures, 1);
    assert!(err.to_string().contains("final"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn errors_that_are_not_final_still_wait_for_the_others() {
    let b = Backend::new(&[(50, true), (5, false)]);
    let won = hedge(|| b.request(), &fixed(10, 1))
        .final_error_if(|e: &String| e.contains("never"))
        .await
        .unwrap();
    assert_eq!((won.winner, won.attempts), (0, 2));
}

#[tokio::test(start_paused = true)]
async fn hedge_on_error_sends_the_next_attempt_at_once() {
    let policy = HedgePolicy::builder()
        .fixed_delay(ms(100))
        .max_hedges(2)
        .hedge_on_error(true)
        .build()
        .unwrap();
    // Primary fails at 3 ms: hedge 1 goes at 3 ms (not 100) and fails at
    // 8 ms; hedge 2 goes at 8 ms and answers at 9 ms.
    let b = Backend::new(&[(3, false), (5, false), (1, true)]);
    let start = Instant::now();
    let won = hedge(|| b.request(), &policy).await.unwrap();
    assert_eq!(start.elapsed(), ms(9));
    assert_eq!((won.value, won.winner, won.attempts), (2, 2, 3));
    // Without it, the same backend fails the call at 3 ms (no hedge due).
    let b = Backend::new(&[(3, false), (5, false), (1, true)]);
    let err = hedge(|| b.request(), &fixed(100, 2)).await.unwrap_err();
    assert_eq!(err.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn hedge_on_error_keeps_the_timed_schedule_and_max_hedges() {
    let policy = HedgePolicy::builder()
        .fixed_delay(ms(10))
        .max_hedges(2)
        .hedge_on_error(true)
        .build()
        .unwrap();
    // Primary fails at 2 ms -> hedge 1 at 2 ms (slow); hedge 2 is due at
    // 20 ms on the k × delay schedule; then max_hedges stops it.
    let b = Backend::new(&[(2, false), (100, false), (100, false)]);
    let start = Instant::now();
    let err = hedge(|| b.request(), &policy).await.unwrap_err();
    assert_eq!(
        start.elapsed(),
        ms(120),
        "hedge 2 sent at 20 ms, fails at 120"
    );
    assert_eq!(err.attempts(), 3);
    assert_eq!(b.sent.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn every_attempts_error_is_kept() {
    let b = Backend::new(&[(30, false), (5, false), (1, false)]);
    let err = hedge(|| b.request(), &fixed(10, 2)).await.unwrap_err();
    // Hedge 1 fails at 15 ms, hedge 2 at 21 ms, the primary at 30 ms.
    assert!(!err.is_final());
    assert_eq!((err.attempt, err.error.as_str()), (0, "attempt 0 failed"));
    assert_eq!(
        err.other_errors,
        [
            (1, "attempt 1 failed".to_owned()),
            (2, "attempt 2 failed".to_owned())
        ]
    );
    assert_eq!(err.errors().map(|(k, _)| k).collect::<Vec<_>>(), [0, 1, 2]);
    let all = err.into_errors();
    assert_eq!(all[2], (2, "attempt 2 failed".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn the_extra_load_budget_caps_hedges_to_a_fraction_of_calls() {
    let policy = HedgePolicy::builder()
        .fixed_delay(ms(10))
        .max_hedges(3)
        .max_extra_load(0.1)
        .extra_load_burst(2)
        .build()
        .unwrap();
    assert_eq!(policy.metrics().budget_available, Some(2));
    let mut winners = Vec::new();
    for _ in 0..30 {
        // Every call is slow: each would send 3 hedges if it could.
        let won = hedge_with_attempt(
            |attempt| async move {
                sleep(ms(if attempt == 0 { 35 } else { 100 })).await;
                Ok::<_, ()>(attempt)
            },
            &policy,
        )
        .await
        .unwrap();
        winners.push(won.attempts);
    }
    // Call 1: the burst pays for 2 hedges, the 3rd is refused (and the
    // call sends no more). Then 0.1 per call: one hedge at calls 11, 21.
    assert_eq!(winners[0], 3);
    assert_eq!(winners[10], 2);
    assert_eq!(winners[20], 2);
    assert_eq!(winners.iter().filter(|&&a| a > 1).count(), 3);
    let m = policy.metrics();
    assert_eq!((m.calls, m.hedges_sent), (30, 4));
    // Every call wanted more hedges than the budget held: each ends with
    // exactly one refusal, after which it asks for no more.
    assert_eq!(m.hedges_denied, 30);
    assert!(m.hedges_sent as f64 <= 2.0 + 0.1 * m.calls as f64);
}

#[test]
fn hedge_policy_builder_checks_the_new_fields() {
    let b = || HedgePolicy::builder().fixed_delay(ms(1));
    for (ratio, kind) in [
        (0.0, ConfigErrorKind::TooSmall),
        (f64::NAN, ConfigErrorKind::TooSmall),
        (-1.0, ConfigErrorKind::TooSmall),
        (16.5, ConfigErrorKind::TooLarge),
    ] {
        let e = b().max_extra_load(ratio).build().unwrap_err();
        assert_eq!((e.field(), e.kind()), ("max_extra_load", kind), "{ratio}");
    }
    let e = b().extra_load_burst(3).build().unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("extra_load_burst", ConfigErrorKind::Conflict)
    );
    let e = b()
        .max_extra_load(0.05)
        .extra_load_burst(0)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("extra_load_burst", ConfigErrorKind::Zero)
    );
    let e = b()
        .max_extra_load(0.05)
        .extra_load_burst(u32::MAX)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("extra_load_burst", ConfigErrorKind::TooLarge)
    );
    assert!(
        b().max_extra_load(16.0)
            .hedge_on_error(true)
            .build()
            .is_ok()
    );
}

/// Child latencies go into the caller's histogram, in both modes: the
/// completed ones with their exact time (paused clock), not those the
/// deadline cut off.
#[tokio::test(start_paused = true)]
async fn child_latency_histogram_in_both_modes() {
    let h = std::sync::Arc::new(flowguard::histogram::Histogram::new());
    let nap = |ms: u64| async move { tokio::time::sleep(Duration::from_millis(ms)).await };
    let g = Gather::new([nap(10), nap(20), nap(500)])
        .timeout(Duration::from_millis(100))
        .child_latency(&h)
        .build()
        .unwrap()
        .await;
    assert_eq!(g.completed_count(), 2);
    let s = h.snapshot();
    assert_eq!((s.count(), s.min(), s.max()), (2, 10_000_000, 20_000_000));
    Gather::new([nap(40)])
        .spawn()
        .child_latency(&h)
        .build()
        .unwrap()
        .await;
    assert_eq!((h.snapshot().count(), h.snapshot().max()), (3, 40_000_000));
}

#[tokio::test(start_paused = true)]
async fn in_task_first_completed_polls_every_child_ready_at_the_first_poll() {
    // All three are done on their first poll: each was started, so each is
    // done at the instant of the first completion (asyncio would have
    // started them all as tasks).
    let futs = [1, 2, 3].map(|n| async move { n });
    let g = Gather::new(futs).first_completed().build().unwrap().await;
    assert_eq!(g.finish(), Finish::FirstCompleted);
    assert_eq!(
        g.outcomes(),
        [1, 2, 3].map(Outcome::Completed),
        "a ready child was cancelled without a poll"
    );
    // Bounded: the two slots free at the start are filled; the slots they
    // free are not refilled after the first completion.
    let futs = [1, 2, 3, 4].map(|n| async move { n });
    let g = Gather::new(futs)
        .concurrency(2)
        .first_completed()
        .build()
        .unwrap()
        .await;
    assert_eq!(
        g.outcomes(),
        [
            Outcome::Completed(1),
            Outcome::Completed(2),
            Outcome::Cancelled,
            Outcome::Cancelled
        ]
    );
    // A quorum still stops at exactly its k-th success.
    let futs = [1, 2, 3].map(|n| async move { Ok::<_, ()>(n) });
    let g = Gather::new(futs).quorum(1).build().unwrap().await;
    assert_eq!(
        g.outcomes(),
        [
            Outcome::Completed(Ok(1)),
            Outcome::Cancelled,
            Outcome::Cancelled
        ]
    );
}

// Reference: Python asyncio (Lib/test/test_asyncio/test_tasks.py: wait, as_completed, gather)
//
// `asyncio.wait(ALL_COMPLETED)` and `gather(return_exceptions=True)` are a
// plain gather; `FIRST_COMPLETED` is `first_completed()`; `FIRST_EXCEPTION`
// and `gather(return_exceptions=False)` are `first_error()`; `as_completed`
// is `into_stream()`. asyncio leaves the pending tasks running: here they
// are cancelled, or, spawned with `detach_stragglers()`, left running.

/// Sleeps `ms` then yields `Ok(ms)` or `Err(ms)`, boxed for mixed inputs.
fn boxed_result(c: &Counters, ms_: u64, ok: bool) -> BoxFut<Result<u64, u64>> {
    Box::pin(result_task(c, ms_, ok))
}

// test_wait, test_wait_with_exception
#[tokio::test(start_paused = true)]
async fn asyncio_wait_all_completed_returns_values_and_errors_after_the_slowest() {
    let c = Counters::default();
    let start = Instant::now();
    let g = Gather::new([result_task(&c, 100, true), result_task(&c, 150, false)])
        .build()
        .unwrap()
        .await;
    assert_eq!(start.elapsed(), ms(150));
    assert_eq!(g.finish(), Finish::AllCompleted);
    assert_eq!(
        g.outcomes(),
        [Outcome::Completed(Ok(100)), Outcome::Completed(Err(150))]
    );
    assert_eq!(g.success_count(), 1);
}

// test_wait_first_completed
#[tokio::test(start_paused = true)]
async fn asyncio_wait_first_completed_returns_the_first_and_the_rest_are_not_done() {
    let c = Counters::default();
    let start = Instant::now();
    let g = Gather::new([c.task(ms(10_000), "a"), c.task(ms(100), "b")])
        .first_completed()
        .build()
        .unwrap()
        .await;
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(g.finish(), Finish::FirstCompleted);
    assert_eq!(g.outcomes(), [Outcome::Cancelled, Outcome::Completed("b")]);
    assert_eq!(
        (c.finished(), c.dropped()),
        (1, 2),
        "a was dropped, not run"
    );

    // asyncio's `pending` set keeps running: spawned, detached.
    let c = Counters::default();
    let futs: Vec<BoxFut<&str>> = vec![
        Box::pin(c.task(ms(10_000), "a")),
        Box::pin(c.task(ms(100), "b")),
    ];
    let mut g = Gather::new(futs)
        .spawn()
        .first_completed()
        .detach_stragglers()
        .build()
        .unwrap()
        .await;
    assert_eq!(g.outcomes(), [Outcome::Detached, Outcome::Completed("b")]);
    let a = g.take_stragglers().pop().unwrap();
    assert!(!a.is_finished());
    assert_eq!(a.await, Outcome::Completed("a"));
    assert_eq!(start.elapsed(), ms(100 + 10_000));
}

// test_wait_really_done. asyncio resumes the waiter one loop turn after
// the first completion, so a task one `sleep(0)` behind is done too; here
// the first completion is the instant, and the task still a poll away is
// cancelled in both modes (never reported done while it is not).
#[tokio::test(start_paused = true)]
async fn asyncio_wait_first_completed_with_a_task_one_yield_behind() {
    fn yields(n: usize) -> BoxFut<usize> {
        Box::pin(async move {
            for _ in 0..n {
                tokio::task::yield_now().await;
            }
            n
        })
    }
    let g = Gather::new([yields(1), yields(2)])
        .first_completed()
        .build()
        .unwrap()
        .await;
    assert_eq!(g.outcomes(), [Outcome::Completed(1), Outcome::Cancelled]);
    let g = Gather::new([yields(1), yields(2)])
        .spawn()
        .first_completed()
        .build()
        .unwrap()
        .await;
    assert_eq!(g.outcomes(), [Outcome::Completed(1), Outcome::Cancelled]);
}

// test_wait_first_exception, test_wait_first_exception_in_wait
#[tokio::test(start_paused = true)]
async fn asyncio_wait_first_exception_returns_at_the_first_error() {
    for fails_at in [0, 10] {
        let c = Counters::default();
        let start = Instant::now();
        let g = Gather::new([
            result_task(&c, 10_000, true),
            result_task(&c, fails_at, false),
        ])
        .first_error()
        .build()
        .unwrap()
        .await;
        assert_eq!(start.elapsed(), ms(fails_at));
        assert_eq!(g.finish(), Finish::FailedFast);
        assert_eq!(
            g.outcomes(),
            [Outcome::Cancelled, Outcome::Completed(Err(fails_at))]
        );
    }
}

// test_wait_with_timeout
#[tokio::test(start_paused = true)]
async fn asyncio_wait_with_timeout_returns_what_finished_by_then() {
    let c = Counters::default();
    let start = Instant::now();
    let g = Gather::new([c.task(ms(100), 'a'), c.task(ms(150), 'b')])
        .timeout(ms(110))
        .build()
        .unwrap()
        .await;
    assert_eq!(start.elapsed(), ms(110));
    assert_eq!(g.finish(), Finish::Deadline);
    assert_eq!(g.outcomes(), [Outcome::Completed('a'), Outcome::TimedOut]);

    let futs: Vec<BoxFut<char>> = vec![
        Box::pin(c.task(ms(100), 'a')),
        Box::pin(c.task(ms(150), 'b')),
    ];
    let start = Instant::now();
    let mut g = Gather::new(futs)
        .spawn()
        .timeout(ms(110))
        .detach_stragglers()
        .build()
        .unwrap()
        .await;
    assert_eq!(g.outcomes(), [Outcome::Completed('a'), Outcome::Detached]);
    assert_eq!(
        g.take_stragglers().pop().unwrap().await,
        Outcome::Completed('b')
    );
    assert_eq!(start.elapsed(), ms(150));
}

// test_wait_concurrent_complete: a timeout equal to a task's sleep.
#[tokio::test(start_paused = true)]
async fn asyncio_wait_timeout_equal_to_a_completion_counts_it_done() {
    let [in_task, spawned] = both_modes(&[100, 150], usize::MAX, 100).await;
    assert_eq!(in_task, (vec![Some(100), None], ms(100)));
    assert_eq!(spawned, in_task);
}

// test_wait_errors / test_wait_invalid_args: asyncio's `wait(set())`
// raises ValueError; a gather of nothing is `gather()`'s `[]`, at once,
// whatever the stopping rule.
#[tokio::test(start_paused = true)]
async fn asyncio_wait_of_nothing_is_done_at_once_under_every_rule() {
    let none = Vec::<BoxFut<Result<u8, u8>>>::new;
    let start = Instant::now();
    let gathers = [
        Gather::new(none()).first_completed().build().unwrap().await,
        Gather::new(none()).first_error().build().unwrap().await,
        Gather::new(none()).timeout(ms(50)).build().unwrap().await,
        Gather::new(none())
            .spawn()
            .first_completed()
            .build()
            .unwrap()
            .await,
    ];
    for g in gathers {
        assert!(g.is_empty());
        assert_eq!(g.finish(), Finish::AllCompleted);
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
}

// test_as_completed
#[tokio::test(start_paused = true)]
async fn asyncio_as_completed_yields_in_completion_order() {
    let c = Counters::default();
    let start = Instant::now();
    let futs = [
        c.task(ms(10), 'b'),
        c.task(ms(150), 'c'),
        c.task(ms(10), 'a'),
    ];
    let items: Vec<(usize, Option<char>)> = Gather::new(futs)
        .build()
        .unwrap()
        .into_stream()
        .map(|(i, o)| (i, o.completed()))
        .collect()
        .await;
    assert_eq!(start.elapsed(), ms(150));
    let mut first_two = items[..2].to_vec();
    first_two.sort();
    assert_eq!(first_two, [(0, Some('b')), (2, Some('a'))]);
    assert_eq!(items[2], (1, Some('c')));
}

// test_as_completed_with_timeout
#[tokio::test(start_paused = true)]
async fn asyncio_as_completed_with_timeout_yields_the_cut_off_at_the_deadline() {
    let c = Counters::default();
    let start = Instant::now();
    let mut stream = Gather::new([c.task(ms(100), 'a'), c.task(ms(150), 'b')])
        .timeout(ms(120))
        .build()
        .unwrap()
        .into_stream();
    let (i, o) = stream.next().await.unwrap();
    assert_eq!(
        (i, o, start.elapsed()),
        (0, Outcome::Completed('a'), ms(100))
    );
    let (i, o) = stream.next().await.unwrap();
    assert_eq!((i, o, start.elapsed()), (1, Outcome::TimedOut, ms(120)));
    assert!(stream.next().await.is_none());
    assert_eq!(stream.finish(), Some(Finish::Deadline));
}

// test_as_completed_with_unused_timeout
#[tokio::test(start_paused = true)]
async fn asyncio_as_completed_with_an_unused_timeout_ends_at_the_last_completion() {
    let c = Counters::default();
    let start = Instant::now();
    let items: Vec<_> = Gather::new([c.task(ms(10), 'a')])
        .timeout(ms(1000))
        .build()
        .unwrap()
        .into_stream()
        .collect()
        .await;
    assert_eq!(items, [(0, Outcome::Completed('a'))]);
    assert_eq!(start.elapsed(), ms(10));
}

// GatherTestsBase._check_success (return_exceptions True and False)
#[tokio::test(start_paused = true)]
async fn asyncio_gather_results_keep_input_order_not_completion_order() {
    for first_error in [false, true] {
        let c = Counters::default();
        // b finishes first, then a, then c.
        let futs = [(20, 2), (10, 1), (30, 3)].map(|(d, v)| c.task(ms(d), Ok::<u64, ()>(v)));
        let g = Gather::new(futs);
        let g = if first_error { g.first_error() } else { g };
        let g = g.build().unwrap().await;
        assert_eq!(g.finish(), Finish::AllCompleted);
        assert_eq!(
            g.into_completed(),
            [(0, Ok(2)), (1, Ok(1)), (2, Ok(3))],
            "first_error: {first_error}"
        );
    }
}

// GatherTestsBase.test_return_exceptions
#[tokio::test(start_paused = true)]
async fn asyncio_gather_return_exceptions_waits_for_all_and_keeps_errors_in_place() {
    let c = Counters::default();
    let start = Instant::now();
    let futs = [
        result_task(&c, 30, true),
        result_task(&c, 10, true),
        result_task(&c, 20, false),
        result_task(&c, 40, false),
    ];
    let g = Gather::new(futs).build().unwrap().await;
    assert_eq!(start.elapsed(), ms(40), "an Err does not end it");
    assert_eq!(
        g.into_outcomes(),
        [Ok(30), Ok(10), Err(20), Err(40)].map(Outcome::Completed)
    );
}

// GatherTestsBase.test_one_exception: gather raises the first exception;
// asyncio leaves the other children running ("does nothing").
#[tokio::test(start_paused = true)]
async fn asyncio_gather_first_exception_ends_it_and_the_rest_are_cancelled_or_detached() {
    let spec = [(10, true), (20, false), (30, true), (40, true), (50, false)];
    let c = Counters::default();
    let start = Instant::now();
    let g = Gather::new(spec.map(|(d, ok)| result_task(&c, d, ok)))
        .first_error()
        .build()
        .unwrap()
        .await;
    assert_eq!(start.elapsed(), ms(20));
    assert_eq!(
        g.outcomes(),
        [
            Outcome::Completed(Ok(10)),
            Outcome::Completed(Err(20)),
            Outcome::Cancelled,
            Outcome::Cancelled,
            Outcome::Cancelled
        ]
    );
    assert_eq!(c.dropped(), 5);

    let c = Counters::default();
    let mut g = Gather::new(spec.map(|(d, ok)| boxed_result(&c, d, ok)))
        .spawn()
        .first_error()
        .detach_stragglers()
        .build()
        .unwrap()
        .await;
    assert_eq!(g.detached().collect::<Vec<_>>(), [2, 3, 4]);
    let mut rest = Vec::new();
    for s in g.take_stragglers() {
        rest.push(s.await);
    }
    assert_eq!(rest, [Ok(30), Ok(40), Err(50)].map(Outcome::Completed));
}

// Reference: Python asyncio (Lib/test/test_asyncio/test_waitfor.py)
//
// `wait_for(fut, t)` is a gather of one future with a timeout.

// test_wait_for
#[tokio::test(start_paused = true)]
async fn asyncio_wait_for_cuts_off_and_drops_the_inner_future() {
    let c = Counters::default();
    let start = Instant::now();
    let g = gather_with_timeout([c.task(ms(10_000), "done")], ms(100)).await;
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(g.outcomes(), [Outcome::TimedOut]);
    assert_eq!(c.dropped(), 1, "dropped before the gather returned");
    sleep(ms(20_000)).await;
    assert_eq!(c.finished(), 0);
}

// test_wait_for_timeout_less_then_0_or_0_future_done
#[tokio::test(start_paused = true)]
async fn asyncio_wait_for_zero_or_past_timeout_keeps_a_done_future() {
    let start = Instant::now();
    let g = gather_with_timeout([std::future::ready("done")], Duration::ZERO).await;
    assert_eq!(g.outcomes(), [Outcome::Completed("done")]);
    let past = start.checked_sub(ms(1000)).unwrap_or(start);
    let g = Gather::new([std::future::ready("done")])
        .deadline(past)
        .build()
        .unwrap()
        .await;
    assert_eq!(g.outcomes(), [Outcome::Completed("done")]);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

// test_wait_for_timeout_less_then_0_or_0
#[tokio::test(start_paused = true)]
async fn asyncio_wait_for_zero_or_past_timeout_cancels_a_running_future() {
    let start = Instant::now();
    for past in [false, true] {
        let c = Counters::default();
        let g = Gather::new([c.task(ms(10_000), "done")]);
        let g = if past {
            g.deadline(start.checked_sub(ms(1000)).unwrap_or(start))
        } else {
            g.timeout(Duration::ZERO)
        };
        let g = g.build().unwrap().await;
        assert_eq!(g.outcomes(), [Outcome::TimedOut], "past: {past}");
        assert_eq!((c.peak(), c.dropped()), (1, 1), "started, then dropped");
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
}

// test_wait_for_timeout_less_then_0_or_0_coroutine_do_not_started: asyncio
// never starts a coroutine given a timeout <= 0. Here a zero timeout still
// polls each future once (documented on `Gather::deadline`: "an instant
// already past leaves only what is ready on the first poll").
#[tokio::test(start_paused = true)]
async fn zero_timeout_polls_once_what_asyncio_wait_for_would_not_start() {
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let foo = async move {
        s.fetch_add(1, Ordering::SeqCst);
    };
    let g = gather_with_timeout([foo], Duration::ZERO).await;
    assert_eq!(g.outcomes(), [Outcome::Completed(())]);
    assert_eq!(started.load(Ordering::SeqCst), 1);
}

// test_wait_for_waits_for_task_cancellation: `wait_for` returns only once
// the cancelled inner task has finished. A spawned child cut off at the
// deadline is aborted, but the gather returns before the abort has run.
#[tokio::test(start_paused = true)]
#[ignore = "documented departure (fanout module docs): spawned children cut off at the deadline are aborted, not awaited; asyncio's wait_for waits for the cancelled task"]
async fn asyncio_wait_for_a_spawned_child_is_gone_when_the_gather_returns() {
    let c = Counters::default();
    let futs: Vec<BoxFut<&str>> = vec![Box::pin(c.task(ms(10_000), "done"))];
    let g = Gather::new(futs)
        .spawn()
        .timeout(ms(100))
        .build()
        .unwrap()
        .await;
    assert_eq!(g.outcomes(), [Outcome::TimedOut]);
    assert_eq!(c.dropped(), 1);
}

// Reference: Python asyncio (Lib/test/test_asyncio/test_timeouts.py)

// test_timeout_zero_sleep_zero, test_timeout_in_the_past_sleep_zero
#[tokio::test(start_paused = true)]
async fn asyncio_timeout_zero_or_past_cuts_off_a_future_that_yields_once() {
    let start = Instant::now();
    let yield_once = || async {
        tokio::task::yield_now().await;
        "late"
    };
    let g = gather_with_timeout([yield_once()], Duration::ZERO).await;
    assert_eq!(g.outcomes(), [Outcome::TimedOut]);
    let past = start.checked_sub(ms(11_000)).unwrap_or(start);
    let g = Gather::new([yield_once()])
        .deadline(past)
        .build()
        .unwrap()
        .await;
    assert_eq!(g.outcomes(), [Outcome::TimedOut]);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

// Reference: App-vNext/Polly v8 (HedgingResilienceStrategyTests.cs, HedgingStrategyOptionsTests.cs)
//
// Polly's `ShouldHandle` says which outcomes are failures that call for the
// next hedge at once: here that is `hedge_on_error(true)`, and an outcome
// Polly does not handle (returned as final) is `final_error_if`. Polly's
// `Delay = InfiniteTimeSpan` (hedge only on failure) is
// `fixed_delay(Duration::MAX)` with `hedge_on_error(true)`.

fn polly(delay: Duration, hedges: usize) -> HedgePolicy {
    HedgePolicy::builder()
        .fixed_delay(delay)
        .max_hedges(hedges)
        .hedge_on_error(true)
        .build()
        .unwrap()
}

// HedgingStrategyOptionsTests.Ctor_EnsureDefaults: MaxHedgedAttempts = 1.
#[tokio::test(start_paused = true)]
async fn polly_default_is_one_hedged_attempt() {
    let policy = HedgePolicy::builder().fixed_delay(ms(10)).build().unwrap();
    let b = Backend::new(&[(100, true), (100, true), (100, true)]);
    let won = hedge(|| b.request(), &policy).await.unwrap();
    assert_eq!((won.winner, won.attempts), (0, 2));
}

// ExecuteAsync_EnsureHedgedTasksCancelled_Ok
#[tokio::test(start_paused = true)]
async fn polly_the_primary_wins_and_the_hedges_in_flight_are_dropped() {
    const HOUR: u64 = 3_600_000;
    let b = Backend::new(&[(HOUR, true), (24 * HOUR, false), (24 * HOUR, false)]);
    let start = Instant::now();
    let won = hedge(|| b.request(), &fixed(1000, 2)).await.unwrap();
    assert_eq!((won.value, won.winner, won.attempts), (0, 0, 3));
    assert_eq!(start.elapsed(), ms(HOUR));
    assert_eq!(b.c.dropped(), 3, "both hedges dropped with the call");
    sleep(ms(48 * HOUR)).await;
    assert_eq!(b.c.finished(), 1);
}

// ExecuteAsync_EnsurePrimaryTaskCancelled_Ok, ExecuteAsync_EnsureDiscardedResultDisposed
#[tokio::test(start_paused = true)]
async fn polly_a_hedge_wins_and_the_primary_in_flight_is_dropped() {
    const HOUR: u64 = 3_600_000;
    let b = Backend::new(&[(24 * HOUR, true), (HOUR, true), (HOUR, true), (HOUR, true)]);
    let start = Instant::now();
    let won = hedge(|| b.request(), &fixed(1000, 3)).await.unwrap();
    assert_eq!((won.value, won.winner, won.attempts), (1, 1, 4));
    assert_eq!(start.elapsed(), ms(1000 + HOUR));
    assert_eq!(b.c.dropped(), 4);
    sleep(ms(48 * HOUR)).await;
    assert_eq!(b.c.finished(), 1, "the primary never finished");
}

// ExecuteAsync_ZeroHedgingDelay_EnsureAllTasksSpawnedAtOnce
#[tokio::test(start_paused = true)]
async fn polly_zero_delay_starts_every_attempt_at_once() {
    let start = Instant::now();
    let started = std::sync::Mutex::new(Vec::new());
    let won = hedge_with_attempt(
        |k| {
            started.lock().unwrap().push((k, start.elapsed()));
            async move {
                sleep(ms(86_400_000)).await;
                Ok::<_, ()>(k)
            }
        },
        &fixed(0, 3),
    )
    .await
    .unwrap();
    assert_eq!(
        *started.lock().unwrap(),
        [0, 1, 2, 3].map(|k| (k, Duration::ZERO))
    );
    assert_eq!((won.winner, won.attempts), (0, 4));
}

// ExecuteAsync_InfiniteHedgingDelay_EnsureNoConcurrentExecutions
#[tokio::test(start_paused = true)]
async fn polly_infinite_delay_hedges_only_after_a_failure_one_at_a_time() {
    let c = Counters::default();
    let start = Instant::now();
    let started = std::sync::Mutex::new(Vec::new());
    let err = hedge_with_attempt(
        |k| {
            started.lock().unwrap().push(start.elapsed());
            c.task(ms(10), Err::<(), _>(k))
        },
        &polly(Duration::MAX, 2),
    )
    .await
    .unwrap_err();
    assert_eq!(c.peak(), 1, "never two attempts at once");
    assert_eq!(*started.lock().unwrap(), [ms(0), ms(10), ms(20)]);
    assert_eq!((err.attempts(), err.attempt, err.error), (3, 0, 0));
    // Without hedge_on_error an infinite delay never hedges.
    let b = Backend::new(&[(10, false), (1, true)]);
    let err = hedge(|| b.request(), &fixed(u64::MAX, 2))
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), 1);
}

/// Polly's test errors: the primary throws InvalidCast, hedge k the k-th.
const POLLY_ERRORS: [&str; 5] = [
    "InvalidCast",
    "Argument",
    "InvalidOperation",
    "BadImageFormat",
    "NotSupported",
];

// ExecuteAsync_ExceptionsHandled_ShouldThrowAnyException
#[tokio::test(start_paused = true)]
async fn polly_an_unhandled_error_ends_the_call_with_that_error() {
    let policy = polly(ms(1000), 3);
    let err = hedge_with_attempt(|k| async move { Err::<(), _>(POLLY_ERRORS[k]) }, &policy)
        .final_error_if(|e| !matches!(*e, "InvalidOperation" | "Argument" | "InvalidCast"))
        .await
        .unwrap_err();
    assert!(err.is_final());
    assert_eq!(
        (err.attempt, err.error, err.attempts),
        (3, "BadImageFormat", 4)
    );
    assert_eq!(policy.metrics().hedges_sent, 3);
}

// ExecuteAsync_ExceptionsHandled_ShouldThrowLastException: every attempt
// failed with a handled error; the primary's comes back.
#[tokio::test(start_paused = true)]
async fn polly_when_every_handled_attempt_fails_the_primarys_error_comes_back() {
    let err = hedge_with_attempt(
        |k| async move { Err::<(), _>(POLLY_ERRORS[k]) },
        &polly(ms(1000), 3),
    )
    .final_error_if(|e| *e == "NotSupported")
    .await
    .unwrap_err();
    assert!(!err.is_final());
    assert_eq!(
        (err.attempt, err.error, err.attempts),
        (0, "InvalidCast", 4)
    );
    assert_eq!(
        err.errors().map(|(k, _)| k).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
}

// ExecuteAsync_PrimaryExceptionNotHandled_Rethrow
#[tokio::test(start_paused = true)]
async fn polly_an_unhandled_primary_error_is_returned_without_a_hedge() {
    let policy = polly(ms(1000), 3);
    let sent = AtomicUsize::new(0);
    let err = hedge_with_attempt(
        |k| {
            sent.fetch_add(1, Ordering::SeqCst);
            async move { Err::<(), _>(POLLY_ERRORS[k]) }
        },
        &policy,
    )
    .final_error_if(|e| *e != "InvalidOperation")
    .await
    .unwrap_err();
    assert!(err.is_final());
    assert_eq!(
        (err.attempt, err.error, err.attempts),
        (0, "InvalidCast", 1)
    );
    assert_eq!(sent.load(Ordering::SeqCst), 1);
    assert_eq!(policy.metrics().hedges_sent, 0);
}

// ExecuteAsync_ExceptionsHandled_ShouldReturnLastResult
#[tokio::test(start_paused = true)]
async fn polly_a_hedge_succeeding_after_handled_failures_wins() {
    let won = hedge_with_attempt(
        |k| async move {
            if k == 3 {
                Ok("Success")
            } else {
                Err(POLLY_ERRORS[k])
            }
        },
        &polly(ms(1000), 3),
    )
    .await
    .unwrap();
    assert_eq!((won.value, won.winner, won.attempts), ("Success", 3, 4));
}

// ExecuteAsync_AllAttemptsFailAndTheOriginalCallIsTheSlowest_EnsureOriginalCallsResultReturned
// (Delay -1 fallback mode, 0 parallel mode, 1 s latency mode)
#[tokio::test(start_paused = true)]
async fn polly_when_all_fail_the_slow_primarys_error_comes_back_in_every_mode() {
    let modes = [
        ("fallback", polly(Duration::MAX, 2)),
        ("parallel", fixed(0, 2)),
        ("latency", polly(ms(1000), 2)),
    ];
    for (mode, policy) in modes {
        let start = Instant::now();
        let err = hedge_with_attempt(
            |k| async move {
                if k == 0 {
                    sleep(ms(200)).await;
                    Err::<(), _>("1st".to_owned())
                } else {
                    Err((k + 1).to_string())
                }
            },
            &policy,
        )
        .await
        .unwrap_err();
        assert_eq!((err.attempt, err.error.as_str()), (0, "1st"), "{mode}");
        assert_eq!(err.attempts(), 3, "{mode}");
        assert_eq!(start.elapsed(), ms(200), "{mode}");
    }
}

// ExecuteAsync_EnsureOnHedgingCalled: one hedge per MaxHedgedAttempts, in
// ascending attempt order.
#[tokio::test(start_paused = true)]
async fn polly_every_hedge_is_sent_in_attempt_order_when_all_fail() {
    let policy = polly(ms(1000), 3);
    let seen = std::sync::Mutex::new(Vec::new());
    let err = hedge_with_attempt(
        |k| {
            seen.lock().unwrap().push(k);
            async { Err::<(), _>("Failure") }
        },
        &policy,
    )
    .await
    .unwrap_err();
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2, 3]);
    assert_eq!(err.attempts(), 4);
    let m = policy.metrics();
    assert_eq!((m.calls, m.hedges_sent, m.failures), (1, 3, 1));
}

// Reference: tokio (tokio/src/sync/tests/semaphore_batch.rs,
// release_permits_at_drop), applied to a gather's ready queue: the
// gather's waker, replaced by a re-poll, runs its owner's drop code, which
// may wake one of the gather's children (whose waker pushes onto the same
// queue, under its lock).

/// A waker that owns the sender a child of the gather it drives waits on:
/// dropping it wakes that child.
struct SenderInWaker(
    #[allow(dead_code)] std::sync::Mutex<Option<tokio::sync::oneshot::Sender<u32>>>,
);

impl std::task::Wake for SenderInWaker {
    fn wake(self: Arc<Self>) {}
}

#[path = "support/deadlock.rs"]
mod deadlock;
use deadlock::without_deadlock;

#[test]
fn tokio_a_replaced_gather_waker_may_wake_a_child() {
    without_deadlock(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, rx): (Vec<_>, Vec<_>) = (0..2)
                .map(|_| tokio::sync::oneshot::channel::<u32>())
                .unzip();
            let mut tx = tx.into_iter();
            let mut gather = Gather::new(rx).build().unwrap();
            let mut poll = |w: std::task::Waker| {
                Pin::new(&mut gather).poll(&mut std::task::Context::from_waker(&w))
            };
            let waker =
                |tx| std::task::Waker::from(Arc::new(SenderInWaker(std::sync::Mutex::new(tx))));
            assert!(poll(waker(tx.next())).is_pending());
            // Re-polled with another waker: the first is dropped, and with
            // it the first child's sender, which wakes that child.
            assert!(poll(waker(tx.next())).is_pending());
            assert!(poll(std::task::Waker::noop().clone()).is_ready());
        });
    });
}
