//! Behaviour of the worker pools, on the paused Tokio clock where time matters.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flowguard::ConfigErrorKind;
use flowguard::pool::{BlockingPool, CpuPool, SlotError, SubmitError, TaskError, WorkerPool};
use futures::StreamExt;
use tokio::time::{Instant, sleep};

/// Tracks how many run at once and the high-water mark.
#[derive(Clone, Default)]
struct Gauge {
    now: Arc<AtomicUsize>,
    high: Arc<AtomicUsize>,
}

impl Gauge {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.high.fetch_max(n, Ordering::SeqCst);
    }
    fn exit(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
    fn high(&self) -> usize {
        self.high.load(Ordering::SeqCst)
    }
}

fn pool(max: usize, queue: usize) -> WorkerPool {
    WorkerPool::builder()
        .max_concurrency(max)
        .queue_capacity(queue)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn in_flight_never_exceeds_max_and_work_finishes_in_rounds() {
    let pool = pool(8, 1000);
    let gauge = Gauge::default();
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..100u64 {
        let g = gauge.clone();
        handles.push(
            pool.submit(async move {
                g.enter();
                sleep(Duration::from_millis(100)).await;
                g.exit();
                i
            })
            .await
            .unwrap(),
        );
    }
    let m = pool.metrics();
    assert_eq!((m.running, m.queued), (8, 92));
    let mut sum = 0;
    for h in handles {
        sum += h.await.unwrap();
    }
    assert_eq!(sum, 4950);
    assert_eq!(gauge.high(), 8);
    // ceil(100 / 8) = 13 rounds of 100 ms.
    assert_eq!(start.elapsed(), Duration::from_millis(1300));
    let m = pool.metrics();
    assert_eq!((m.running, m.queued, m.completed), (0, 0, 100));
}

#[tokio::test(start_paused = true)]
async fn queue_bound_is_backpressure_for_submit_and_shedding_for_try_submit() {
    let pool = pool(2, 3);
    let mut held = Vec::new();
    // `async { sleep().await }`: the timer starts when the task runs, not
    // when it is submitted.
    for _ in 0..5 {
        held.push(
            pool.try_submit(async { sleep(Duration::from_millis(100)).await })
                .unwrap(),
        );
    }
    let m = pool.metrics();
    assert_eq!((m.running, m.queued), (2, 3));
    // Full: try_submit hands the future back and counts a rejection.
    let back = pool.try_submit(async { 7 }).unwrap_err();
    assert!(matches!(back, SubmitError::Full(_)));
    assert_eq!(back.into_inner().await, 7);
    assert_eq!(pool.metrics().rejected, 1);
    // submit waits for room: the first slot frees at 100 ms.
    let start = Instant::now();
    let h = pool.submit(async { 1 }).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let m = pool.metrics();
    assert_eq!((m.running, m.queued), (2, 2), "h queued behind tasks 2..=4");
    assert_eq!(h.await.unwrap(), 1);
    // submit_timeout gives the future back when no room comes in time.
    while let Ok(h) = pool.try_submit(async { sleep(Duration::from_secs(10)).await }) {
        held.push(h);
    }
    let err = pool
        .submit_timeout(async { 2 }, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(err, SubmitError::TimedOut(_)));
}

#[tokio::test(start_paused = true)]
async fn queued_work_is_not_spawned_and_starts_in_fifo_order() {
    let pool = pool(1, 10);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Arc::new(AtomicUsize::new(0));
    let mut hs = Vec::new();
    for i in 0..5 {
        let (order, started) = (order.clone(), started.clone());
        hs.push(
            pool.submit(async move {
                started.fetch_add(1, Ordering::SeqCst);
                order.lock().unwrap().push(i);
                sleep(Duration::from_millis(10)).await;
            })
            .await
            .unwrap(),
        );
    }
    tokio::task::yield_now().await;
    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "queued tasks must not run"
    );
    for h in hs {
        h.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn per_task_timeout_is_exact_and_frees_the_slot() {
    let pool = WorkerPool::builder()
        .max_concurrency(1)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let start = Instant::now();
    let slow = pool.submit(sleep(Duration::from_secs(10))).await.unwrap();
    let next = pool.submit(async { Instant::now() }).await.unwrap();
    assert_eq!(slow.await.unwrap_err(), TaskError::TimedOut);
    let started_at = next.await.unwrap();
    assert_eq!(started_at - start, Duration::from_millis(300));
    let m = pool.metrics();
    assert_eq!((m.timed_out, m.failed, m.completed), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn panics_are_isolated_and_give_their_slot_back() {
    let pool = pool(1, 10);
    let bad = pool
        .submit(async {
            sleep(Duration::from_millis(5)).await;
            panic!("backend exploded");
        })
        .await
        .unwrap();
    let good = pool.submit(async { "still alive" }).await.unwrap();
    assert_eq!(
        bad.await.unwrap_err(),
        TaskError::Panicked {
            message: "backend exploded".into()
        }
    );
    assert_eq!(good.await.unwrap(), "still alive");
    let m = pool.metrics();
    assert_eq!((m.panicked, m.completed, m.running), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn abort_removes_queued_work_at_once_and_cancels_running_work() {
    let pool = pool(1, 2);
    let dropped = Arc::new(AtomicUsize::new(0));
    struct OnDrop(Arc<AtomicUsize>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let d = dropped.clone();
    let running = pool
        .submit(async move {
            let _g = OnDrop(d);
            sleep(Duration::from_secs(60)).await;
        })
        .await
        .unwrap();
    let queued = pool.submit(async { 1 }).await.unwrap();
    assert_eq!(pool.metrics().queued, 1);
    queued.abort();
    assert_eq!(pool.metrics().queued, 0, "queue room freed at once");
    assert_eq!(queued.await.unwrap_err(), TaskError::Cancelled);
    tokio::task::yield_now().await;
    running.abort();
    assert_eq!(running.await.unwrap_err(), TaskError::Cancelled);
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "the future was dropped");
    let after = pool.submit(async { 2 }).await.unwrap();
    assert_eq!(after.await.unwrap(), 2, "slot was returned");
    assert_eq!(pool.metrics().cancelled, 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_before_the_deadline() {
    let pool = pool(2, 10);
    for _ in 0..4 {
        // Detached: dropping the handle leaves the task running.
        drop(
            pool.submit(async { sleep(Duration::from_millis(100)).await })
                .await
                .unwrap(),
        );
    }
    let start = Instant::now();
    let report = pool.shutdown_timeout(Duration::from_secs(1)).await;
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert!(report.drained);
    assert_eq!(report.completed, 4);
    assert!(matches!(
        pool.submit(async {}).await,
        Err(SubmitError::Closed(_))
    ));
    assert!(pool.is_closed());
}

#[tokio::test(start_paused = true)]
async fn shutdown_deadline_is_exact_and_aborts_the_rest() {
    let pool = pool(2, 10);
    let mut hs = Vec::new();
    for i in 0..5u64 {
        hs.push(
            pool.submit(sleep(Duration::from_millis(300 * (i + 1))))
                .await
                .unwrap(),
        );
    }
    let start = Instant::now();
    let report = pool.shutdown(start + Duration::from_millis(500)).await;
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert!(!report.drained);
    // At 300 ms task 0 ends and task 2 starts; at 500 ms tasks 1 and 2
    // run, tasks 3 and 4 wait.
    assert_eq!(report.completed, 1);
    assert_eq!(report.aborted_running, 2);
    assert_eq!(report.cancelled_queued, 2);
    assert_eq!(report.still_running, 0, "async tasks can always be aborted");
    let results: Vec<_> = futures::future::join_all(hs).await;
    assert!(results[0].is_ok());
    assert!(results[1..].iter().all(|r| *r == Err(TaskError::Shutdown)));
    let m = pool.metrics();
    assert_eq!((m.running, m.queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn close_fails_waiting_submitters_but_running_work_finishes() {
    let pool = pool(1, 0);
    let h = pool.submit(sleep(Duration::from_millis(50))).await.unwrap();
    let p2 = pool.clone();
    let waiting = tokio::spawn(async move { p2.submit(async { 1 }).await.is_err() });
    tokio::task::yield_now().await;
    pool.close();
    assert!(
        waiting.await.unwrap(),
        "waiting submitter must fail with Closed"
    );
    assert!(h.await.is_ok());
}

/// Every pool answers `is_closed()` (the crate's `close()` / `is_closed()`
/// pair), after `close()` and after a shutdown alike.
#[tokio::test(start_paused = true)]
async fn every_pool_says_whether_it_is_closed() {
    let blocking = BlockingPool::builder().build().unwrap();
    let cpu = CpuPool::builder().threads(1).build().unwrap();
    assert!(!blocking.is_closed() && !cpu.is_closed());
    blocking.close();
    cpu.close();
    assert!(blocking.is_closed() && cpu.is_closed());
    assert!(matches!(
        blocking.try_submit(|| 1),
        Err(SubmitError::Closed(_))
    ));
    assert!(matches!(cpu.try_submit(|| 1), Err(SubmitError::Closed(_))));

    let blocking = BlockingPool::builder().build().unwrap();
    let cpu = CpuPool::builder().threads(1).build().unwrap();
    assert!(blocking.shutdown_timeout(Duration::ZERO).await.drained);
    assert!(cpu.shutdown_timeout(Duration::ZERO).await.drained);
    assert!(blocking.is_closed() && cpu.is_closed());
}

#[tokio::test(start_paused = true)]
async fn set_max_concurrency_grows_now_and_shrinks_as_tasks_end() {
    let pool = pool(1, 100);
    let gauge = Gauge::default();
    let mut hs = Vec::new();
    for _ in 0..6 {
        let g = gauge.clone();
        hs.push(
            pool.submit(async move {
                g.enter();
                sleep(Duration::from_millis(100)).await;
                g.exit();
            })
            .await
            .unwrap(),
        );
    }
    pool.set_max_concurrency(3).unwrap();
    tokio::task::yield_now().await;
    assert_eq!(pool.metrics().running, 3);
    pool.set_max_concurrency(2).unwrap();
    sleep(Duration::from_millis(150)).await;
    // 3 ended; only 2 may start.
    assert_eq!(pool.metrics().running, 2);
    for h in hs {
        h.await.unwrap();
    }
    assert_eq!(gauge.high(), 3);
    assert_eq!(
        pool.set_max_concurrency(0).unwrap_err().kind(),
        ConfigErrorKind::Zero
    );
}

#[tokio::test(start_paused = true)]
async fn map_is_bounded_and_keeps_input_order() {
    let pool = pool(4, 10);
    let gauge = Gauge::default();
    let g = gauge.clone();
    let start = Instant::now();
    let out: Vec<u64> = pool
        .map(0..20u64, move |i| {
            let g = g.clone();
            async move {
                g.enter();
                sleep(Duration::from_millis(100 - i)).await; // later ones finish sooner
                g.exit();
                i
            }
        })
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(out, (0..20).collect::<Vec<_>>());
    assert!(gauge.high() <= 4);
    assert!(start.elapsed() <= Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn map_unordered_yields_in_completion_order() {
    let pool = pool(3, 10);
    let out: Vec<u64> = pool
        .map_unordered([300u64, 100, 200], |ms| async move {
            sleep(Duration::from_millis(ms)).await;
            ms
        })
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(out, vec![100, 200, 300]);
    let from_stream: Vec<_> = pool
        .map_stream_unordered(futures::stream::iter(0..3), |x| async move { x })
        .collect()
        .await;
    assert_eq!(from_stream.len(), 3);
    let ordered: Vec<_> = pool
        .map_stream(futures::stream::iter(0..3), |x| async move { x })
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(ordered, vec![0, 1, 2]);
}

#[tokio::test]
async fn builders_validate_every_field() {
    let e = WorkerPool::builder()
        .max_concurrency(0)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("max_concurrency", ConfigErrorKind::Zero)
    );
    let e = WorkerPool::builder()
        .max_concurrency(usize::MAX)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("max_concurrency", ConfigErrorKind::TooLarge)
    );
    let e = WorkerPool::builder()
        .queue_capacity(usize::MAX)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("queue_capacity", ConfigErrorKind::TooLarge)
    );
    let e = WorkerPool::builder()
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("timeout", ConfigErrorKind::Zero));
    let e = BlockingPool::builder()
        .max_concurrency(0)
        .build()
        .unwrap_err();
    assert_eq!(e.component(), "blocking_pool");
    let e = CpuPool::builder().threads(0).build().unwrap_err();
    assert_eq!((e.field(), e.kind()), ("threads", ConfigErrorKind::Zero));
    let e = CpuPool::builder().threads(1_000_000).build().unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("threads", ConfigErrorKind::TooLarge)
    );
    let e = CpuPool::builder()
        .threads(1)
        .queue_capacity(usize::MAX)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "queue_capacity");
}

#[test]
fn building_an_async_pool_outside_a_runtime_is_an_error_not_a_panic() {
    let e = WorkerPool::builder().build().unwrap_err();
    assert_eq!((e.field(), e.kind()), ("runtime", ConfigErrorKind::Missing));
    let e = BlockingPool::builder().build().unwrap_err();
    assert_eq!(e.field(), "runtime");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let p = WorkerPool::builder().runtime(rt.handle().clone()).build();
    assert!(p.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_pool_bounds_blocking_calls() {
    let pool = BlockingPool::builder()
        .max_concurrency(3)
        .queue_capacity(100)
        .build()
        .unwrap();
    let gauge = Gauge::default();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let mut hs = Vec::new();
    for i in 0..10 {
        let (g, rx) = (gauge.clone(), rx.clone());
        hs.push(
            pool.submit(move || {
                g.enter();
                // Block until the test lets one call through.
                rx.lock().unwrap().recv().unwrap();
                g.exit();
                i
            })
            .await
            .unwrap(),
        );
    }
    for _ in 0..10 {
        tx.send(()).unwrap();
    }
    let mut sum = 0;
    for h in hs {
        sum += h.await.unwrap();
    }
    assert_eq!(sum, 45);
    assert!(gauge.high() <= 3, "high-water mark {}", gauge.high());
    let m = pool.metrics();
    assert_eq!((m.completed, m.running), (10, 0));
    assert_eq!(
        pool.run(|| panic!("sync panic")).await.unwrap_err(),
        TaskError::Panicked {
            message: "sync panic".into()
        }
    );
    assert_eq!(pool.run(|| 5).await.unwrap(), 5);
    assert!(pool.shutdown_timeout(Duration::from_secs(5)).await.drained);
    assert_eq!(pool.run(|| 5).await.unwrap_err(), TaskError::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_timeout_releases_the_caller_but_keeps_the_slot() {
    let pool = BlockingPool::builder()
        .max_concurrency(1)
        .timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let h = pool.submit(move || rx.recv().unwrap()).await.unwrap();
    assert_eq!(h.await.unwrap_err(), TaskError::TimedOut);
    assert_eq!(pool.metrics().running, 1, "the call still holds its slot");
    let queued = pool.try_submit(|| ()).unwrap();
    assert_eq!(pool.metrics().queued, 1, "no second call may start");
    tx.send(()).unwrap();
    queued.await.unwrap();
    assert!(pool.shutdown_timeout(Duration::from_secs(5)).await.drained);
    let m = pool.metrics();
    assert_eq!((m.timed_out, m.completed, m.running), (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_pool_runs_on_its_own_threads_and_joins_them() {
    let pool = CpuPool::builder()
        .threads(2)
        .name("crunch")
        .build()
        .unwrap();
    let names: Vec<String> = futures::future::join_all(
        (0..4).map(|_| pool.run(|| std::thread::current().name().unwrap_or("").to_owned())),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    assert!(names.iter().all(|n| n.starts_with("crunch-")), "{names:?}");
    let e = pool
        .run(|| -> u8 { panic!("bad input") })
        .await
        .unwrap_err();
    assert!(matches!(e, TaskError::Panicked { .. }));
    assert_eq!(
        pool.run(|| 2 + 2).await.unwrap(),
        4,
        "threads survive panics"
    );
    let report = pool.shutdown_timeout(Duration::from_secs(5)).await;
    assert!(report.drained);
    assert!(matches!(pool.try_submit(|| 1), Err(SubmitError::Closed(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_pool_queue_is_bounded() {
    let pool = CpuPool::builder()
        .threads(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let a = pool.try_submit(move || rx.recv().unwrap()).unwrap();
    let b = pool.try_submit(|| 1).unwrap();
    assert!(matches!(pool.try_submit(|| 2), Err(SubmitError::Full(_))));
    tx.send(()).unwrap();
    a.await.unwrap();
    assert_eq!(b.await.unwrap(), 1);
    assert_eq!(pool.metrics().rejected, 1);
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<WorkerPool>();
    send_sync::<BlockingPool>();
    send_sync::<CpuPool>();
    send_sync::<flowguard::pool::TaskHandle<u8>>();
    send_sync::<flowguard::pool::PoolMetrics>();
    fn unpin<T: Unpin>() {}
    unpin::<flowguard::pool::TaskHandle<u8>>();
}

// ---- issue 19: regressions -------------------------------------------------

/// Item 1: a task aborted before Tokio ever polled it resolves `Cancelled`
/// at once (the completion guard exists before the spawn), is counted, and
/// frees its slot.
#[tokio::test(start_paused = true)]
async fn abort_before_first_poll_resolves_cancelled() {
    let pool = pool(1, 0);
    let h = pool.try_submit(async { 1 }).unwrap();
    h.abort();
    // On the paused clock a hang shows up as this timeout, not as a stuck test.
    let r = tokio::time::timeout(Duration::from_secs(1), h).await;
    assert!(matches!(r, Ok(Err(TaskError::Cancelled))), "{r:?}");
    let m = pool.metrics();
    assert_eq!((m.cancelled, m.completed, m.running), (1, 0, 0));
    // The slot is free again.
    let again = pool.try_submit(async { 2 }).unwrap();
    assert_eq!(again.await.unwrap(), 2);
}

/// Item 1, the shutdown path: tasks that never ran are aborted by a zero
/// deadline and their handles resolve.
#[tokio::test(start_paused = true)]
async fn shutdown_zero_resolves_unpolled_running_tasks() {
    let pool = pool(2, 4);
    let handles: Vec<_> = (0..4)
        .map(|i| pool.try_submit(async move { i }).unwrap())
        .collect();
    let report = pool.shutdown_timeout(Duration::ZERO).await;
    assert!(!report.drained);
    assert_eq!(report.aborted_running, 2);
    assert_eq!(report.cancelled_queued, 2);
    for h in handles {
        let r = tokio::time::timeout(Duration::from_secs(1), h).await;
        assert!(matches!(r, Ok(Err(TaskError::Shutdown))), "{r:?}");
    }
    let m = pool.metrics();
    assert_eq!((m.cancelled, m.running, m.queued), (4, 0, 0));
}

/// Item 2: when the pool closes mid-stream, `map` still yields in input
/// order: the task already admitted first, then the refused inputs.
#[tokio::test(start_paused = true)]
async fn map_keeps_input_order_when_the_pool_closes() {
    let pool = pool(2, 0);
    let mut results = pool.map(0..4u64, |i| async move {
        sleep(Duration::from_millis(10 * (i + 1))).await;
        i
    });
    assert_eq!(results.next().await.map(Result::unwrap), Some(0));
    pool.close();
    let rest: Vec<_> = results.collect().await;
    assert!(matches!(
        rest.as_slice(),
        [Ok(1), Err(TaskError::Closed), Err(TaskError::Closed)]
    ));
}

// ---- issue 15: priorities, clear_queue, timeouts, told-apart errors --------

/// A pool of one slot kept busy for `busy_ms`, so what is submitted next queues.
async fn busy_pool(builder: flowguard::pool::WorkerPoolBuilder, busy_ms: u64) -> WorkerPool {
    let pool = builder.max_concurrency(1).build().unwrap();
    let _busy = pool
        .submit(sleep(Duration::from_millis(busy_ms)))
        .await
        .unwrap();
    pool
}

type Log = Arc<std::sync::Mutex<Vec<(&'static str, u64)>>>;

/// A task that logs its name and start time (ms since `t0`), then runs `ms`.
fn logged(log: &Log, t0: Instant, name: &'static str, ms: u64) -> impl Future<Output = ()> + use<> {
    let log = log.clone();
    async move {
        let at = Instant::now().duration_since(t0).as_millis() as u64;
        log.lock().unwrap().push((name, at));
        sleep(Duration::from_millis(ms)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn queued_work_starts_by_priority_then_in_submission_order() {
    let t0 = Instant::now();
    let pool = busy_pool(WorkerPool::builder(), 10).await;
    let log = Log::default();
    let mut hs = Vec::new();
    for (name, priority) in [
        ("report", 0),
        ("checkout", 10),
        ("thumbnail", -5),
        ("login", 10),
        ("export", 0),
    ] {
        let work = logged(&log, t0, name, 10);
        hs.push(pool.submit_with_priority(work, priority).await.unwrap());
    }
    // try_submit_with_priority queues the same way.
    let work = logged(&log, t0, "alert", 10);
    hs.push(pool.try_submit_with_priority(work, 99).unwrap());
    // Plain submit is DEFAULT_PRIORITY (0): behind "export".
    hs.push(pool.submit(logged(&log, t0, "plain", 10)).await.unwrap());
    assert_eq!(pool.metrics().queued, 7);
    for h in hs {
        h.await.unwrap();
    }
    assert_eq!(
        *log.lock().unwrap(),
        [
            ("alert", 10),
            ("checkout", 20),
            ("login", 30),
            ("report", 40),
            ("export", 50),
            ("plain", 60),
            ("thumbnail", 70),
        ]
    );
}

/// A steady stream of priority-1 work: each task, when it starts, queues
/// the next. Returns when the priority-0 task that was queued first started.
async fn low_priority_start_under_a_stream(aging: Option<usize>) -> u64 {
    let t0 = Instant::now();
    let mut b = WorkerPool::builder().queue_capacity(4);
    if let Some(n) = aging {
        b = b.priority_aging(n);
    }
    let pool = busy_pool(b, 10).await;
    let log = Log::default();
    let low = pool
        .submit_with_priority(logged(&log, t0, "low", 10), 0)
        .await
        .unwrap();
    fn chain(
        pool: WorkerPool,
        log: Log,
        t0: Instant,
        left: u32,
    ) -> flowguard::pool::TaskHandle<()> {
        let next = pool.clone();
        let work = async move {
            if left > 1 {
                drop(chain(next, log.clone(), t0, left - 1));
            }
            logged(&log, t0, "high", 10).await;
        };
        pool.try_submit_with_priority(work, 1).unwrap()
    }
    drop(chain(pool.clone(), log.clone(), t0, 20));
    low.await.unwrap();
    let at = log
        .lock()
        .unwrap()
        .iter()
        .find(|(n, _)| *n == "low")
        .unwrap()
        .1;
    pool.shutdown_timeout(Duration::from_secs(10)).await;
    at
}

#[tokio::test(start_paused = true)]
async fn strict_priorities_starve_and_aging_bounds_the_wait() {
    // Strict: the low task waits for the whole stream of 20 (10 ms each).
    assert_eq!(low_priority_start_under_a_stream(None).await, 10 + 20 * 10);
    // Aging every 3 starts: a priority-1 task queued 3 starts after the low
    // one no longer overtakes it, so it starts 4th: after 3 highs.
    assert_eq!(
        low_priority_start_under_a_stream(Some(3)).await,
        10 + 3 * 10
    );
    // Aging every start: 1 start.
    assert_eq!(low_priority_start_under_a_stream(Some(1)).await, 10 + 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_and_cpu_pools_share_the_priority_queue() {
    let blocking = BlockingPool::builder().max_concurrency(1).build().unwrap();
    let cpu = CpuPool::builder().threads(1).build().unwrap();
    for pool in 0..2 {
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut work: Vec<(Box<dyn FnOnce() + Send>, i32)> =
            vec![(Box::new(move || rx.recv().unwrap()), 0)];
        for (i, p) in [(1, -1), (2, 5), (3, 0), (4, 5)] {
            let order = order.clone();
            work.push((Box::new(move || order.lock().unwrap().push(i)), p));
        }
        let mut hs = Vec::new();
        for (f, p) in work {
            hs.push(if pool == 0 {
                blocking.submit_with_priority(f, p).await.unwrap()
            } else {
                cpu.submit_with_priority(f, p).await.unwrap()
            });
        }
        tx.send(()).unwrap();
        for h in hs {
            h.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [2, 4, 3, 1], "pool {pool}");
    }
    cpu.shutdown_timeout(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn clear_queue_drops_queued_work_frees_room_and_keeps_running_work() {
    let pool = pool(1, 2);
    let running = pool
        .submit(async {
            sleep(Duration::from_millis(100)).await;
            "ran"
        })
        .await
        .unwrap();
    let b = pool.submit(async { "b" }).await.unwrap();
    let c = pool.submit(async { "c" }).await.unwrap();
    // A submitter waiting for queue room.
    let p2 = pool.clone();
    let waiting = tokio::spawn(async move { p2.submit(async { "d" }).await.unwrap().await });
    tokio::task::yield_now().await;
    assert_eq!(pool.metrics().queued, 2);

    assert_eq!(pool.clear_queue(), 2);
    assert_eq!(b.await, Err(TaskError::Cleared));
    assert_eq!(c.await, Err(TaskError::Cleared));
    assert!(!pool.is_closed(), "clearing is not closing");
    tokio::task::yield_now().await;
    assert_eq!(
        pool.metrics().queued,
        1,
        "the waiting submitter got the room"
    );
    assert_eq!(running.await, Ok("ran"));
    assert_eq!(waiting.await.unwrap(), Ok("d"));
    let m = pool.metrics();
    assert_eq!((m.cancelled, m.completed), (2, 2));
    assert_eq!(pool.clear_queue(), 0);
}

#[tokio::test(start_paused = true)]
async fn abort_clear_shutdown_and_a_second_poll_are_told_apart() {
    let pool = pool(1, 3);
    let running = pool.submit(sleep(Duration::from_secs(60))).await.unwrap();
    let aborted = pool.submit(async {}).await.unwrap();
    aborted.abort();
    assert_eq!(aborted.await, Err(TaskError::Cancelled));
    let cleared = pool.submit(async {}).await.unwrap();
    pool.clear_queue();
    assert_eq!(cleared.await, Err(TaskError::Cleared));
    let dropped = pool.submit(async {}).await.unwrap();
    let report = pool.shutdown_timeout(Duration::from_millis(5)).await;
    assert_eq!((report.cancelled_queued, report.aborted_running), (1, 1));
    assert_eq!(dropped.await, Err(TaskError::Shutdown));
    assert_eq!(running.await, Err(TaskError::Shutdown));
    for e in [
        TaskError::Cancelled,
        TaskError::Cleared,
        TaskError::Shutdown,
    ] {
        assert!(e.is_cancelled(), "{e}");
    }
    assert!(!TaskError::PolledAfterCompletion.is_cancelled());
    assert_eq!(pool.metrics().cancelled, 4);

    let pool = self::pool(1, 0);
    let mut h = pool.submit(async { 7 }).await.unwrap();
    assert_eq!((&mut h).await, Ok(7));
    assert!(h.is_finished());
    assert_eq!((&mut h).await, Err(TaskError::PolledAfterCompletion));
    let m = pool.metrics();
    assert_eq!(
        (m.completed, m.cancelled, m.failed),
        (1, 0, 0),
        "not an outcome"
    );

    // Aborting a task that finished but was not awaited yet (its Tokio
    // handle is kept until then) changes nothing: the result stays.
    let h = pool.submit(async { 8 }).await.unwrap();
    while !h.is_finished() {
        tokio::task::yield_now().await;
    }
    h.abort();
    assert_eq!(h.await, Ok(8));
    let m = pool.metrics();
    assert_eq!((m.completed, m.cancelled), (2, 0));
}

#[test]
fn a_task_dropped_by_its_runtime_shutting_down_resolves_shutdown() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let pool = rt.block_on(async { pool(1, 1) });
    let (running, queued) = rt.block_on(async {
        let r = pool.submit(std::future::pending::<()>()).await.unwrap();
        let q = pool.submit(async {}).await.unwrap();
        tokio::task::yield_now().await;
        (r, q)
    });
    drop(rt);
    assert_eq!(
        futures::executor::block_on(running),
        Err(TaskError::Shutdown)
    );
    // The freed slot went to the queued task, which the dead runtime could
    // not run: it too was stopped by the shutdown.
    assert_eq!(
        futures::executor::block_on(queued),
        Err(TaskError::Shutdown)
    );
}

#[tokio::test(start_paused = true)]
async fn cpu_pool_timeout_resolves_the_handle_while_the_closure_runs_on() {
    let pool = CpuPool::builder()
        .threads(1)
        .queue_capacity(1)
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel::<&'static str>();
    let start = Instant::now();
    let stuck = pool
        .submit(move || {
            gate.recv().unwrap();
            done_tx.send("ran to the end").unwrap();
            1
        })
        .await
        .unwrap();
    assert_eq!(stuck.await, Err(TaskError::TimedOut));
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(50),
        "exactly the timeout"
    );
    let m = pool.metrics();
    assert_eq!((m.running, m.timed_out, m.failed), (1, 1, 1));
    // The thread is still busy: the next closure queues.
    let next = pool.try_submit(|| 2).unwrap();
    assert_eq!(pool.metrics().queued, 1);
    release.send(()).unwrap();
    // A wait for an event on a real thread, not a sleep.
    assert_eq!(
        done.recv_timeout(Duration::from_secs(30)),
        Ok("ran to the end")
    );
    drop(next);
    assert_eq!(pool.metrics().timed_out, 1, "counted once, as timed out");
}

#[tokio::test(start_paused = true)]
async fn blocking_pool_timeout_is_exact_on_the_paused_clock() {
    let pool = BlockingPool::builder()
        .max_concurrency(1)
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let start = Instant::now();
    let mut stuck = pool.submit(move || gate.recv().unwrap()).await.unwrap();
    // Tokio pauses auto-advance while a blocking call runs: move time by hand.
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    tokio::time::advance(Duration::from_millis(49)).await;
    assert!(
        futures::poll!(&mut stuck).is_pending(),
        "not before the timeout"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(stuck.await, Err(TaskError::TimedOut));
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(pool.metrics().running, 1, "the call keeps its slot");
    release.send(()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_counts_uninterruptible_calls_as_still_running() {
    let blocking = BlockingPool::builder().max_concurrency(1).build().unwrap();
    let cpu = CpuPool::builder().threads(1).build().unwrap();
    for pool in 0..2 {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let stuck = move || {
            started_tx.send(()).unwrap();
            gate.recv().unwrap();
            "finished detached"
        };
        let (running, queued, report) = if pool == 0 {
            let r = blocking.submit(stuck).await.unwrap();
            let q = blocking.submit(|| "never").await.unwrap();
            started.recv().unwrap();
            (r, q, blocking.shutdown_timeout(Duration::ZERO).await)
        } else {
            let r = cpu.submit(stuck).await.unwrap();
            let q = cpu.submit(|| "never").await.unwrap();
            started.recv().unwrap();
            (r, q, cpu.shutdown_timeout(Duration::ZERO).await)
        };
        assert!(!report.drained);
        assert_eq!(
            (
                report.still_running,
                report.aborted_running,
                report.cancelled_queued
            ),
            (1, 0, 1),
            "pool {pool}"
        );
        assert_eq!(queued.await, Err(TaskError::Shutdown));
        release.send(()).unwrap();
        assert_eq!(running.await, Ok("finished detached"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_pool_counts_its_live_threads() {
    let pool = CpuPool::builder().threads(3).build().unwrap();
    assert_eq!(pool.live_threads(), 3);
    assert_eq!(pool.run(|| 1).await, Ok(1));
    assert_eq!(pool.live_threads(), 3, "threads stay up between calls");
    assert!(pool.shutdown_timeout(Duration::from_secs(5)).await.drained);
    assert_eq!(pool.live_threads(), 0, "joined");
}

#[tokio::test]
async fn new_builder_fields_are_validated() {
    let e = WorkerPool::builder().priority_aging(0).build().unwrap_err();
    assert_eq!(
        (e.component(), e.field(), e.kind()),
        ("worker_pool", "priority_aging", ConfigErrorKind::Zero)
    );
    let e = BlockingPool::builder()
        .priority_aging(0)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.component(), e.field()),
        ("blocking_pool", "priority_aging")
    );
    let e = CpuPool::builder()
        .threads(1)
        .priority_aging(0)
        .build()
        .unwrap_err();
    assert_eq!((e.component(), e.field()), ("cpu_pool", "priority_aging"));
    let e = CpuPool::builder()
        .threads(1)
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("timeout", ConfigErrorKind::Zero));
}

#[test]
fn a_cpu_pool_timeout_needs_a_runtime_for_its_timers() {
    let e = CpuPool::builder()
        .threads(1)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("runtime", ConfigErrorKind::Missing));
    // Without a timeout, no runtime is needed; with one given, it builds.
    assert!(CpuPool::builder().threads(1).build().is_ok());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let pool = CpuPool::builder()
        .threads(1)
        .timeout(Duration::from_secs(1))
        .runtime(rt.handle().clone())
        .build()
        .unwrap();
    assert_eq!(rt.block_on(pool.run(|| 3)), Ok(3));
}

// ---- run slots: work run in the caller's task under the pool's limit ----

/// A slot counts in `running`, blocks `try_slot` and `try_submit` alike,
/// and counts one `completed` when dropped.
#[tokio::test(start_paused = true)]
async fn a_slot_is_one_of_the_pools_slots() {
    let pool = pool(2, 0);
    let a = pool.slot().await.unwrap();
    let b = pool.try_slot().unwrap();
    assert_eq!(pool.metrics().running, 2);
    assert_eq!(pool.try_slot().unwrap_err(), SlotError::Full);
    assert!(matches!(
        pool.try_submit(async {}),
        Err(SubmitError::Full(_))
    ));
    assert_eq!(pool.metrics().rejected, 2);
    drop(a);
    let m = pool.metrics();
    assert_eq!((m.running, m.completed), (1, 1));
    let h = pool.try_submit(async { 7 }).unwrap();
    assert_eq!(h.await, Ok(7));
    drop(b);
    assert_eq!(pool.metrics().running, 0);
}

/// `try_slot` does not jump the queue: with room to run but work queued
/// ahead, it is refused.
#[tokio::test(start_paused = true)]
async fn try_slot_never_overtakes_queued_work() {
    let pool = pool(1, 4);
    let held = pool.slot().await.unwrap();
    let queued = pool.submit(async { 1 }).await.unwrap();
    assert_eq!(pool.metrics().queued, 1);
    assert_eq!(pool.try_slot().unwrap_err(), SlotError::Full);
    drop(held); // the queued task starts on the freed slot
    assert_eq!(queued.await, Ok(1));
    assert!(pool.try_slot().is_ok());
}

/// A slot waits its turn: queued tasks of a higher priority go first, the
/// slot comes when a running task ends, and the order is kept.
#[tokio::test(start_paused = true)]
async fn a_waiting_slot_takes_its_turn_in_the_queue() {
    let pool = pool(1, 8);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = |tag: &'static str| {
        let order = order.clone();
        async move {
            sleep(Duration::from_millis(10)).await;
            order.lock().unwrap().push(tag);
        }
    };
    let first = pool.submit(log("first")).await.unwrap();
    let urgent = pool.submit_with_priority(log("urgent"), 10).await.unwrap();
    let start = Instant::now();
    let slot = {
        let p = pool.clone();
        tokio::spawn(async move {
            let s = p.slot().await.unwrap();
            (Instant::now(), s)
        })
    };
    tokio::task::yield_now().await;
    let later = pool.submit(log("later")).await.unwrap();
    let (got_at, s) = slot.await.unwrap();
    // first (10 ms), then urgent (10 ms), then the slot.
    assert_eq!(got_at - start, Duration::from_millis(20));
    assert_eq!(*order.lock().unwrap(), ["first", "urgent"]);
    assert_eq!(pool.metrics().running, 1);
    drop(s);
    for h in [first, urgent, later] {
        h.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["first", "urgent", "later"]);
}

/// Cancelled while queued, the wait leaves the queue: the task behind it
/// gets the slot, and nothing stays counted as running.
#[tokio::test(start_paused = true)]
async fn a_cancelled_slot_wait_leaves_the_queue() {
    let pool = pool(1, 4);
    let held = pool.slot().await.unwrap();
    let waiting = {
        let p = pool.clone();
        tokio::spawn(async move { p.slot().await.map(drop) })
    };
    tokio::task::yield_now().await;
    assert_eq!(pool.metrics().queued, 1);
    let behind = pool.submit(async { "behind" }).await.unwrap();
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    let m = pool.metrics();
    assert_eq!((m.queued, m.cancelled), (1, 1));
    drop(held);
    assert_eq!(behind.await, Ok("behind"));
    assert_eq!(pool.metrics().running, 0);
}

/// `slot_deadline` gives up at the deadline to the nanosecond and leaves
/// nothing behind; a deadline already past still takes a free slot.
#[tokio::test(start_paused = true)]
async fn slot_deadline_gives_up_in_time() {
    let pool = pool(1, 4);
    let held = pool.slot().await.unwrap();
    let start = Instant::now();
    let r = pool.slot_deadline(start + Duration::from_millis(30)).await;
    assert_eq!(r.unwrap_err(), SlotError::TimedOut);
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    let m = pool.metrics();
    assert_eq!((m.running, m.queued), (1, 0));
    drop(held);
    let past = Instant::now() - Duration::from_millis(1);
    assert!(pool.slot_deadline(past).await.is_ok());
}

/// Clearing the queue fails a waiting slot with `Cleared`; closing fails
/// waits for queue room with `Closed` and refuses new slots.
#[tokio::test(start_paused = true)]
async fn clear_and_close_end_slot_waits() {
    let pool = pool(1, 1);
    let held = pool.slot().await.unwrap();
    let queued = {
        let p = pool.clone();
        tokio::spawn(async move { p.slot().await.map(drop) })
    };
    let at_admission = {
        let p = pool.clone();
        tokio::spawn(async move { p.slot().await.map(drop) })
    };
    tokio::task::yield_now().await;
    assert_eq!(pool.clear_queue(), 1);
    assert_eq!(queued.await.unwrap(), Err(SlotError::Cleared));
    // The cleared room let the second waiter in: it is queued now.
    tokio::task::yield_now().await;
    assert_eq!(pool.metrics().queued, 1);
    pool.close();
    assert_eq!(pool.try_slot().unwrap_err(), SlotError::Closed);
    assert_eq!(pool.slot().await.unwrap_err(), SlotError::Closed);
    // Queued work carries on after close: the queued wait gets its slot.
    drop(held);
    assert_eq!(at_admission.await.unwrap(), Ok(()));
}

/// A shutdown cannot abort work holding a slot: it reports it as still
/// running and the wait for it ends when the slot is dropped; a slot wait
/// still queued at the deadline fails with `Closed`.
#[tokio::test(start_paused = true)]
async fn shutdown_reports_held_slots_as_still_running() {
    let pool = pool(1, 2);
    let held = pool.slot().await.unwrap();
    let queued = {
        let p = pool.clone();
        tokio::spawn(async move { p.slot().await.map(drop) })
    };
    tokio::task::yield_now().await;
    let report = pool.shutdown_timeout(Duration::from_millis(5)).await;
    assert_eq!(report.still_running, 1);
    assert_eq!(report.cancelled_queued, 1);
    assert_eq!(queued.await.unwrap(), Err(SlotError::Closed));
    drop(held);
    assert_eq!(pool.metrics().running, 0);
}

/// Wait and run-time histograms, exact on the paused clock: one slot, a
/// queue of one; A runs 100 ms, B queues behind it, C waits for queue room
/// until A ends, then queues behind B.
#[tokio::test(start_paused = true)]
async fn wait_and_run_time_histograms() {
    // On by default.
    let pool = WorkerPool::builder()
        .max_concurrency(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let ms = Duration::from_millis;
    let nap = |d| async move { sleep(d).await };
    let a = pool.submit(nap(ms(100))).await.unwrap();
    let b = pool.submit(nap(ms(50))).await.unwrap();
    let c = pool.submit(nap(ms(10))).await.unwrap(); // waited 100 ms for room
    let _ = tokio::join!(a, b, c);
    let m = pool.metrics();
    assert_eq!(m.submit_wait.count(), 1);
    assert_eq!(m.submit_wait.max_duration(), ms(100));
    assert_eq!(m.queue_wait.count(), 2); // B 100 ms, C 50 ms
    assert_eq!(
        (m.queue_wait.min(), m.queue_wait.max()),
        (50_000_000, 100_000_000)
    );
    assert_eq!(m.run_time.count(), 3);
    assert_eq!(m.run_time.min(), 10_000_000);
    assert_eq!(m.run_time.max_duration(), ms(100));

    // Off on request: no clock read, nothing recorded.
    let off = WorkerPool::builder()
        .max_concurrency(1)
        .queue_capacity(1)
        .histograms(false)
        .build()
        .unwrap();
    let a = off.submit(tokio::time::sleep(ms(10))).await.unwrap();
    let b = off.submit(async {}).await.unwrap();
    let _ = tokio::join!(a, b);
    let m = off.metrics();
    assert_eq!(m.completed, 2);
    assert_eq!(
        (
            m.submit_wait.count(),
            m.queue_wait.count(),
            m.run_time.count()
        ),
        (0, 0, 0)
    );
}

/// Sampled timing (see `flowguard::histogram`): tasks at a low rate each
/// have their queue wait and run time timed, exactly; thousands a
/// millisecond are timed about one in 64, each standing for 64;
/// `histogram_max_one_in(1)` times every one. The counters stay exact.
#[tokio::test(start_paused = true)]
async fn queue_wait_and_run_time_sample_only_frequent_tasks() {
    let ms = Duration::from_millis;
    // Low rate: 300 rounds of two 1 ms tasks on one slot, the second
    // queued behind the first: every task timed.
    let pool = pool(1, 1);
    let nap = || async move { sleep(ms(1)).await };
    for _ in 0..300 {
        let a = pool.submit(nap()).await.unwrap();
        let b = pool.submit(nap()).await.unwrap();
        let _ = tokio::join!(a, b);
    }
    let m = pool.metrics();
    assert_eq!(
        (m.run_time.count(), m.run_time.min(), m.run_time.max()),
        (600, 1_000_000, 1_000_000)
    );
    assert_eq!(
        (m.queue_wait.count(), m.queue_wait.min(), m.queue_wait.max()),
        (300, 1_000_000, 1_000_000)
    );

    // High rate: 20,000 tasks at one instant (all timed: the window is
    // open), then 2 ms later two more (A starts, B queues behind it)
    // close both windows; 64,010 more are drawn at 1 in 64 (a count that
    // timing every one would not round to a multiple of 64).
    for max_one_in in [64, 1] {
        let pool = WorkerPool::builder()
            .max_concurrency(1)
            .queue_capacity(100_000)
            .histogram_max_one_in(max_one_in)
            .build()
            .unwrap();
        let run = |n: u64| {
            let pool = pool.clone();
            async move {
                let mut handles = Vec::new();
                for i in 0..n {
                    handles.push(pool.submit(async move { i }).await.unwrap());
                }
                for (i, h) in handles.into_iter().enumerate() {
                    assert_eq!(h.await, Ok(i as u64));
                }
            }
        };
        run(20_000).await;
        let m = pool.metrics();
        assert_eq!((m.run_time.count(), m.queue_wait.count()), (20_000, 19_999));
        tokio::time::advance(ms(2)).await;
        run(2).await;
        let m = pool.metrics();
        assert_eq!((m.run_time.count(), m.queue_wait.count()), (20_002, 20_000));
        run(64_010).await;
        let m = pool.metrics();
        assert_eq!(m.completed, 84_012, "counters are exact");
        assert_eq!(m.run_time.sum(), 0, "no task took time");
        let ran = m.run_time.count() - 20_002;
        let waited = m.queue_wait.count() - 20_000;
        if max_one_in == 1 {
            assert_eq!((ran, waited), (64_010, 64_009));
        } else {
            // About 1,000 timed of each (standard deviation 31; six allowed).
            for added in [ran, waited] {
                assert_eq!(added % 64, 0, "{added}");
                assert!((added / 64).abs_diff(1_000) <= 186, "{added}");
            }
        }
    }
}

/// Without a queue (`queue_capacity(0)`) no task waits in one: the run
/// time alone is sampled, as with a queue.
#[tokio::test(start_paused = true)]
async fn run_time_is_sampled_without_a_queue() {
    let pool = WorkerPool::builder()
        .max_concurrency(64)
        .queue_capacity(0)
        .build()
        .unwrap();
    let run = |n: u64| {
        let pool = pool.clone();
        async move {
            let mut handles = Vec::new();
            for i in 0..n {
                handles.push(pool.submit(async move { i }).await.unwrap());
            }
            for h in handles {
                h.await.unwrap();
            }
        }
    };
    run(20_000).await;
    tokio::time::advance(Duration::from_millis(2)).await;
    run(1).await;
    assert_eq!(pool.metrics().run_time.count(), 20_001);
    run(64_010).await;
    let m = pool.metrics();
    assert_eq!((m.completed, m.queue_wait.count()), (84_011, 0));
    let added = m.run_time.count() - 20_001;
    assert_eq!(added % 64, 0, "{added}");
    assert!((added / 64).abs_diff(1_000) <= 186, "{added}");
}

#[tokio::test]
async fn histogram_max_one_in_is_validated_by_every_pool() {
    for (n, kind) in [
        (0, ConfigErrorKind::Zero),
        (65_537, ConfigErrorKind::TooLarge),
    ] {
        let errors = [
            WorkerPool::builder()
                .histogram_max_one_in(n)
                .build()
                .unwrap_err(),
            BlockingPool::builder()
                .histogram_max_one_in(n)
                .build()
                .unwrap_err(),
            CpuPool::builder()
                .threads(1)
                .histogram_max_one_in(n)
                .build()
                .unwrap_err(),
        ];
        for e in errors {
            assert_eq!((e.field(), e.kind()), ("histogram_max_one_in", kind));
        }
    }
    assert!(
        WorkerPool::builder()
            .histogram_max_one_in(65_536)
            .build()
            .is_ok()
    );
}

/// Work too large to keep inline in its task's cell is boxed there: it
/// runs, queues, is cleared and comes back on refusal like small work.
#[tokio::test(start_paused = true)]
async fn large_futures_run_queue_clear_and_come_back() {
    let pool = pool(1, 4);
    let big = [7u8; 4096];
    let running = pool
        .submit(async move {
            sleep(Duration::from_millis(10)).await;
            big.iter().map(|&b| u64::from(b)).sum::<u64>()
        })
        .await
        .unwrap();
    let cleared = pool.submit(async move { big[1] }).await.unwrap();
    assert_eq!(pool.clear_queue(), 1);
    assert_eq!(cleared.await, Err(TaskError::Cleared));
    let queued = pool.submit(async move { big[2] }).await.unwrap();
    assert_eq!(pool.metrics().queued, 1);
    assert_eq!(running.await, Ok(7 * 4096));
    assert_eq!(queued.await, Ok(7));
    pool.close();
    let Err(SubmitError::Closed(back)) = pool.try_submit(async move { big.len() }) else {
        panic!("a closed pool admitted work");
    };
    assert_eq!(back.await, 4096);
}

/// Done at the deadline counts as done (as in `fanout` and the semaphore):
/// a task whose timer fires at the shutdown's deadline instant completes,
/// and the shutdown drained.
#[tokio::test(start_paused = true)]
async fn a_task_ending_at_the_shutdown_deadline_completes() {
    let pool = pool(1, 0);
    let h = pool
        .submit(async {
            sleep(Duration::from_secs(1)).await;
            1
        })
        .await
        .unwrap();
    let report = pool.shutdown_timeout(Duration::from_secs(1)).await;
    assert!(report.drained, "{report:?}");
    assert_eq!((report.completed, report.aborted_running), (1, 0));
    assert_eq!(h.await, Ok(1));
}

/// The same tie for `submit_timeout`: the slot freed at the timeout instant
/// itself is taken.
#[tokio::test(start_paused = true)]
async fn submit_timeout_takes_a_slot_freed_at_its_deadline() {
    let pool = pool(1, 0);
    let first = pool
        .submit(async {
            sleep(Duration::from_secs(1)).await;
            1
        })
        .await
        .unwrap();
    let second = pool
        .submit_timeout(async { 2 }, Duration::from_secs(1))
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!((first.await, second.await), (Ok(1), Ok(2)));
    // Strictly past the deadline it still times out.
    let _busy = pool.submit(sleep(Duration::from_secs(2))).await.unwrap();
    assert!(matches!(
        pool.submit_timeout(async {}, Duration::from_secs(1)).await,
        Err(SubmitError::TimedOut(_))
    ));
}

/// And for `slot_deadline` (a pipeline's bulkhead on a pool).
#[tokio::test(start_paused = true)]
async fn slot_deadline_takes_a_slot_freed_at_its_deadline() {
    let pool = pool(1, 0);
    let first = pool
        .submit(async {
            sleep(Duration::from_secs(1)).await;
            1
        })
        .await
        .unwrap();
    let slot = pool
        .slot_deadline(Instant::now() + Duration::from_secs(1))
        .await;
    assert!(slot.is_ok(), "{slot:?}");
    assert_eq!(first.await, Ok(1));
}

/// The naming grammar: every pool has `submit_deadline` beside
/// `submit_timeout`, and `WorkerPool` has `slot_timeout` beside
/// `slot_deadline`.
#[tokio::test(start_paused = true)]
async fn deadline_and_timeout_pairs_agree() {
    let soon = || Instant::now() + Duration::from_millis(50);
    let pool = pool(1, 0);
    let busy = pool.submit(sleep(Duration::from_secs(1))).await.unwrap();
    let start = Instant::now();
    assert!(matches!(
        pool.submit_deadline(async {}, soon()).await,
        Err(SubmitError::TimedOut(_))
    ));
    assert!(matches!(
        pool.slot_timeout(Duration::from_millis(50)).await,
        Err(SlotError::TimedOut)
    ));
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    busy.await.unwrap();
    let h = pool.submit_deadline(async { 7 }, soon()).await.unwrap();
    assert_eq!(h.await, Ok(7));
    assert!(pool.slot_timeout(Duration::ZERO).await.is_ok());

    let blocking = BlockingPool::builder().max_concurrency(1).build().unwrap();
    let h = blocking.submit_deadline(|| 8, soon()).await.unwrap();
    assert_eq!(h.await, Ok(8));
    let cpu = CpuPool::builder().threads(1).build().unwrap();
    let h = cpu.submit_deadline(|| 9, soon()).await.unwrap();
    assert_eq!(h.await, Ok(9));
    blocking.close();
    assert!(matches!(
        blocking.submit_deadline(|| 10, soon()).await,
        Err(SubmitError::Closed(_))
    ));
}

// Reference: tokio (tokio/src/sync/tests/semaphore_batch.rs,
// release_permits_at_drop), applied to a task handle and a queued slot
// wait: a waker replaced by a re-poll runs its owner's drop code, which
// may use the same pool.

/// A waker whose drop clears the queue of the pool it waits on (which
/// cancels the queued task or slot wait it was polled for).
struct ClearOnDrop(WorkerPool);

impl std::task::Wake for ClearOnDrop {
    fn wake(self: Arc<Self>) {}
}

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.clear_queue();
    }
}

/// Polls `f` once with `w`.
fn poll_with<F: std::future::Future + Unpin>(
    f: &mut F,
    w: &std::task::Waker,
) -> std::task::Poll<F::Output> {
    std::pin::Pin::new(f).poll(&mut std::task::Context::from_waker(w))
}

#[path = "support/deadlock.rs"]
mod deadlock;
use deadlock::without_deadlock;

#[test]
fn tokio_a_replaced_waker_may_clear_the_queue() {
    without_deadlock(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = WorkerPool::builder()
                .max_concurrency(1)
                .queue_capacity(2)
                .build()
                .unwrap();
            let waker = || std::task::Waker::from(Arc::new(ClearOnDrop(pool.clone())));
            let _running = pool.try_submit(std::future::pending::<()>()).unwrap();
            // A queued task's handle, re-polled with another waker.
            let mut queued = pool.try_submit(async {}).unwrap();
            assert!(poll_with(&mut queued, &waker()).is_pending());
            assert!(poll_with(&mut queued, &waker()).is_pending());
            assert_eq!(queued.await, Err(TaskError::Cleared));
            // A queued slot wait, the same.
            let mut slot = Box::pin(pool.slot());
            assert!(poll_with(&mut slot, &waker()).is_pending());
            assert!(poll_with(&mut slot, &waker()).is_pending());
            assert_eq!(slot.await.err(), Some(SlotError::Cleared));
            assert_eq!(pool.metrics().queued, 0);
        });
    });
}

/// A waker that only counts the references to it.
struct NoopWake;

impl std::task::Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

#[tokio::test(start_paused = true)]
async fn abandoned_shutdowns_keep_no_waker_of_theirs() {
    // Shutdowns given up while the pool is still busy (a `select!` that
    // took another branch, a task polled by many wakers) must not pile up
    // wakers: each would keep its task's memory alive until the pool idles.
    let pool = pool(1, 1);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = pool
        .submit(async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    let wakers: Vec<_> = (0..50).map(|_| Arc::new(NoopWake)).collect();
    for w in &wakers {
        let waker = std::task::Waker::from(w.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut fut = Box::pin(pool.shutdown_timeout(Duration::from_secs(3600)));
        assert!(futures::FutureExt::poll_unpin(&mut fut, &mut cx).is_pending());
    }
    // One shutdown polled by many tasks keeps only the latest waker.
    let mut shared = Box::pin(pool.shutdown_timeout(Duration::from_secs(3600)));
    for w in &wakers {
        let waker = std::task::Waker::from(w.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(futures::FutureExt::poll_unpin(&mut shared, &mut cx).is_pending());
    }
    let held: Vec<_> = wakers.iter().map(Arc::strong_count).collect();
    assert_eq!(held[..49], [1; 49], "dropped or replaced: not kept");
    assert!(
        held[49] > 1,
        "the pending shutdown's waker is kept (by its timer too)"
    );
    tx.send(()).unwrap();
    h.await.unwrap();
    assert!(shared.await.drained);
    assert_eq!(Arc::strong_count(&wakers[49]), 1);
}
