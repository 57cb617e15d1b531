//! Behaviour tests of `flowguard::adaptive`, on Tokio's paused clock: the
//! simulation of a backend with a queueing knee (convergence, following
//! the knee, goodput and p99 against fixed limits), release order, the
//! backlog, timeouts, cancellation, partitions, bypass, the permit's
//! reports, metrics and history, the pool and pipeline integrations, and
//! inflight never above the limit under 100 tasks; then ports of Netflix
//! concurrency-limits' own tests (each section names its file).

#[path = "model/adaptive_sim.rs"]
mod sim;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowguard::adaptive::{
    AcquireError, AdaptiveLimiter, Aimd, Gradient2, LimitAlgorithm, Order, Permit, Sample, Untimed,
    Vegas, Windowed,
};
use flowguard::pipeline::{Admission, Pipeline, PipelineError};
use flowguard::pool::WorkerPool;
use flowguard::rate::{Quota, RateLimiter};
use flowguard::semaphore::Semaphore;
use sim::{Policy, Run, Scenario};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

// ---- the simulation ------------------------------------------------------------

/// 160 servers of 100 ms, a queue of 160, 3 000 requests a second (1.9×
/// what 160 servers serve) for `secs` seconds.
fn scenario(changes: Vec<(Duration, usize)>, secs: u32) -> Scenario {
    Scenario {
        k: 160,
        changes,
        service: MS * 100,
        queue_bound: 160,
        tick: MS,
        per_tick: 3,
        duration: SEC * secs,
        chart_every: SEC,
    }
}

/// Vegas with its defaults, one decision per window of two round trips.
fn windowed_vegas() -> AdaptiveLimiter {
    let vegas = Vegas::builder().seed(7).build().unwrap();
    let windowed = Windowed::builder(vegas)
        .min_window(MS * 100)
        .build()
        .unwrap();
    AdaptiveLimiter::new(windowed)
}

fn within(k: usize, percent: usize) -> (usize, usize) {
    (k - k * percent / 100, k + k * percent / 100)
}

/// The limit settles within 10 % of k in at most 4 000 samples from the
/// start (a ramp from 20 of about 2.5 s), follows k down within 1 500
/// samples when it halves and back within 3 000 when it doubles, and stays
/// there to the end of each phase.
#[tokio::test(start_paused = true)]
async fn converges_to_the_knee_and_follows_it() {
    let changes = vec![(SEC * 10, 80), (SEC * 20, 160)];
    let r = sim::run(&scenario(changes, 30), Policy::Adaptive(windowed_vegas())).await;
    let cs = &r.change_samples;
    assert_eq!(cs.len(), 2);
    let end = r.trace.last().unwrap().0;
    let (lo, hi) = within(160, 10);
    let first = r.settled_after(0, cs[0], lo, hi).expect("settles at 160");
    assert!(first <= 4_000, "took {first} samples");
    let (lo, hi) = within(80, 10);
    let halved = r
        .settled_after(cs[0], cs[1], lo, hi)
        .expect("follows k to 80");
    assert!(halved <= 1_500, "took {halved} samples");
    let (lo, hi) = within(160, 10);
    let doubled = r
        .settled_after(cs[1], end, lo, hi)
        .expect("follows k back to 160");
    assert!(doubled <= 3_000, "took {doubled} samples");
    // Vegas keeps a small queue: the limit sits above the knee, not below.
    let at = |secs: usize| r.chart[secs].1;
    assert!((161..=176).contains(&at(9)), "{}", at(9));
    assert!((81..=88).contains(&at(19)), "{}", at(19));
    assert!((161..=176).contains(&at(29)), "{}", at(29));
    assert_eq!(
        r.dropped, 0,
        "the limit kept the backend's queue from overflowing"
    );
}

/// Goodput within 10 % of the best fixed limit's; p99 below that of a
/// fixed limit set twice too high (320).
#[tokio::test(start_paused = true)]
async fn goodput_and_p99_against_fixed_limits() {
    let adaptive = sim::run(&scenario(vec![], 30), Policy::Adaptive(windowed_vegas())).await;
    let mut fixed: Vec<(usize, Run)> = Vec::new();
    for limit in [120, 160, 200, 320] {
        let run = sim::run(&scenario(vec![], 30), Policy::Fixed(Semaphore::new(limit))).await;
        fixed.push((limit, run));
    }
    let best = fixed.iter().map(|(_, r)| r.goodput).fold(0.0, f64::max);
    assert!(best > 1_580.0, "160 servers at 100 ms: {best}");
    assert!(
        adaptive.goodput >= 0.9 * best,
        "adaptive {} vs best fixed {best}",
        adaptive.goodput
    );
    let too_high = &fixed.iter().find(|(l, _)| *l == 320).unwrap().1;
    // Up to 160 queued behind 160 servers: nearly two service times.
    assert!(too_high.p99() >= MS * 190, "{:?}", too_high.p99());
    assert!(
        adaptive.p99() < too_high.p99(),
        "adaptive p99 {:?} vs fixed 320 {:?}",
        adaptive.p99(),
        too_high.p99()
    );
    assert!(
        adaptive.percentile(0.5) <= MS * 110,
        "{:?}",
        adaptive.percentile(0.5)
    );
}

/// Why the default is windowed: fed every sample at 3 000 requests a
/// second, Vegas moves by up to beta per sample while the feedback takes a
/// round trip, and the limit swings far past the knee and back.
#[tokio::test(start_paused = true)]
async fn vegas_fed_every_sample_swings() {
    let limiter = AdaptiveLimiter::new(Vegas::builder().seed(7).build().unwrap());
    let r = sim::run(&scenario(vec![], 5), Policy::Adaptive(limiter)).await;
    let seen: Vec<usize> = r.trace[2_000..].iter().map(|(_, l)| *l).collect();
    let (min, max) = (seen.iter().min().unwrap(), seen.iter().max().unwrap());
    assert!(
        *max > 2 * 160 && *min < 160 / 2,
        "swings from {min} to {max}"
    );
}

// ---- release order, backlog, timeouts, cancellation -----------------------------

fn fixed(limit: usize) -> Aimd {
    Aimd::builder()
        .initial_limit(limit)
        .min_limit(limit)
        .max_limit(limit)
        .build()
        .unwrap()
}

/// Spawns waiters named 0..n one after the other, each queued before the
/// next; returns the order in which they got a permit.
async fn release_order(order: Order) -> Vec<usize> {
    let limiter = AdaptiveLimiter::builder()
        .algorithm(fixed(1))
        .order(order)
        .build()
        .unwrap();
    let first = limiter.try_acquire().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (l, got) = (limiter.clone(), got.clone());
        tasks.push(tokio::spawn(async move {
            let p = l.acquire().await.unwrap();
            got.lock().unwrap().push(i);
            tokio::time::sleep(MS).await;
            p.success();
        }));
        tokio::task::yield_now().await;
        assert_eq!(limiter.metrics().waiting, i + 1);
    }
    first.success();
    for t in tasks {
        t.await.unwrap();
    }
    std::mem::take(&mut *got.lock().unwrap())
}

#[tokio::test(start_paused = true)]
async fn fifo_releases_the_longest_waiting_first() {
    assert_eq!(release_order(Order::Fifo).await, [0, 1, 2, 3]);
}

/// Netflix's `LifoBlockingLimiterTest`: the latest arrival goes first.
#[tokio::test(start_paused = true)]
async fn lifo_releases_the_latest_arrival_first() {
    assert_eq!(release_order(Order::Lifo).await, [3, 2, 1, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_full_backlog_refuses_at_once() {
    let limiter = AdaptiveLimiter::builder()
        .algorithm(fixed(1))
        .max_backlog(2)
        .build()
        .unwrap();
    let _held = limiter.try_acquire().unwrap();
    let l = limiter.clone();
    let waiters = tokio::spawn(async move { tokio::join!(l.acquire(), l.acquire()) });
    tokio::task::yield_now().await;
    assert_eq!(limiter.metrics().waiting, 2);
    let start = Instant::now();
    assert_eq!(
        limiter.acquire().await.unwrap_err(),
        AcquireError::BacklogFull
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(limiter.try_acquire().unwrap_err(), AcquireError::Limited);
    assert_eq!(limiter.metrics().rejections, 2);
    waiters.abort();
    let _ = waiters.await;
    assert_eq!(
        limiter.metrics().waiting,
        0,
        "aborted waiters left the backlog"
    );

    let shed = AdaptiveLimiter::builder()
        .algorithm(fixed(1))
        .max_backlog(0)
        .build()
        .unwrap();
    let _held = shed.try_acquire().unwrap();
    assert_eq!(shed.acquire().await.unwrap_err(), AcquireError::BacklogFull);
}

#[tokio::test(start_paused = true)]
async fn acquire_timeout_waits_exactly_and_takes_a_free_permit_at_once() {
    let limiter = AdaptiveLimiter::new(fixed(1));
    let held = limiter.acquire_timeout(Duration::ZERO).await.unwrap();
    let start = Instant::now();
    let err = limiter.acquire_timeout(MS * 250).await.unwrap_err();
    assert_eq!(err, AcquireError::TimedOut);
    assert_eq!(start.elapsed(), MS * 250);
    let m = limiter.metrics();
    assert_eq!((m.rejections, m.waiting), (1, 0));

    let l = limiter.clone();
    let waiter =
        tokio::spawn(async move { l.acquire_timeout(MS * 100).await.map(Permit::success) });
    tokio::time::sleep(MS * 40).await;
    held.success();
    assert_eq!(waiter.await.unwrap(), Ok(()));
    assert_eq!(
        start.elapsed(),
        MS * 290,
        "served when the permit came back"
    );
}

/// A future granted a permit and then dropped before it was polled hands
/// the permit on to the next caller, unreported.
#[tokio::test(start_paused = true)]
async fn a_cancelled_grant_passes_the_permit_on() {
    let limiter = AdaptiveLimiter::new(fixed(1));
    let held = limiter.try_acquire().unwrap();
    let mut first = Box::pin(limiter.acquire());
    assert!(futures::poll!(first.as_mut()).is_pending());
    let l = limiter.clone();
    let second = tokio::spawn(async move { l.acquire().await.unwrap().success() });
    tokio::task::yield_now().await;
    assert_eq!(limiter.metrics().waiting, 2);
    held.ignore(); // granted to `first`, which is never polled again
    assert_eq!(limiter.metrics().waiting, 1);
    drop(first);
    second.await.unwrap();
    let m = limiter.metrics();
    // The cancelled grant was never handed out: not counted as a request.
    assert_eq!((m.inflight, m.waiting, m.samples, m.ignored), (0, 0, 1, 1));
    assert!(limiter.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn waiters_do_not_get_barged() {
    let limiter = AdaptiveLimiter::new(fixed(1));
    let held = limiter.try_acquire().unwrap();
    let l = limiter.clone();
    let waiter = tokio::spawn(async move { l.acquire().await.unwrap() });
    tokio::task::yield_now().await;
    held.ignore();
    // The permit is the waiter's even before it runs again.
    assert_eq!(limiter.try_acquire().unwrap_err(), AcquireError::Limited);
    let p = waiter.await.unwrap();
    assert_eq!(p.inflight_at_start(), 1);
}

// ---- partitions and bypass -------------------------------------------------------

fn partitioned() -> AdaptiveLimiter {
    AdaptiveLimiter::builder()
        .algorithm(fixed(10))
        .partition("live", 0.7)
        .partition("batch", 0.3)
        .bypass_if(|label| label == "health")
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn batch_borrows_the_whole_limit_while_live_is_idle() {
    let limiter = partitioned();
    let batch = limiter.labelled("batch");
    let held: Vec<_> = (0..10).map(|_| batch.try_acquire().unwrap()).collect();
    let m = limiter.metrics();
    assert_eq!(m.partitions[2].name, "batch");
    assert_eq!(
        (m.partitions[2].inflight, m.partitions[2].guaranteed),
        (10, 3)
    );
    assert_eq!(m.partitions[1].guaranteed, 7);
    assert_eq!(
        m.partitions[0].guaranteed, 0,
        "the default partition only borrows"
    );
    assert!(
        limiter.labelled("live").try_acquire().is_err(),
        "never above the limit"
    );
    drop(held);
}

/// Both partitions queue: every permit batch returns goes to live until
/// live holds its 70 %; then they share in arrival order.
#[tokio::test(start_paused = true)]
async fn live_gets_its_share_back_as_batch_returns_permits() {
    let limiter = partitioned();
    let (live, batch) = (limiter.labelled("live"), limiter.labelled("batch"));
    let mut batch_held: Vec<_> = (0..10).map(|_| batch.try_acquire().unwrap()).collect();
    // Batch queues first, then live: FIFO alone would serve batch.
    let mut waiting = Vec::new();
    for l in [
        &batch, &batch, &live, &live, &live, &live, &live, &live, &live, &live,
    ] {
        let l = l.clone();
        waiting.push(tokio::spawn(async move { l.acquire().await.unwrap() }));
        tokio::task::yield_now().await;
    }
    assert_eq!(limiter.metrics().waiting, 10);
    for _ in 0..7 {
        batch_held.pop().unwrap().success();
    }
    let m = limiter.metrics();
    assert_eq!(m.partitions[1].inflight, 7, "live reached its guarantee");
    assert_eq!(m.partitions[2].inflight, 3);
    // Live is at its share and batch (2 held) under its 3: batch is served.
    batch_held.pop().unwrap().success();
    let m = limiter.metrics();
    assert_eq!((m.partitions[1].inflight, m.partitions[2].inflight), (7, 3));
    assert_eq!(m.partitions[2].waiting, 1);
    assert_eq!(m.inflight, 10);
    for t in waiting {
        t.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn bypassed_callers_pass_uncounted_and_unknown_labels_use_the_default() {
    let limiter = partitioned();
    let all: Vec<_> = (0..10).map(|_| limiter.try_acquire().unwrap()).collect();
    let health = limiter.labelled("health");
    let h = health.try_acquire().unwrap();
    let h2 = health.acquire().await.unwrap();
    assert!(h.is_bypass() && h2.is_bypass());
    assert_eq!(h.inflight_at_start(), 0);
    h.dropped(); // not a sample
    let m = limiter.metrics();
    assert_eq!((m.inflight, m.bypassed, m.samples, m.drops), (10, 2, 0, 0));
    assert_eq!(
        m.partitions[0].inflight, 10,
        "unlabelled: the default partition"
    );
    drop((all, h2));
    let other = limiter.labelled("no such partition");
    let _p = other.try_acquire().unwrap();
    assert_eq!(limiter.metrics().partitions[0].inflight, 1);
}

// ---- the permit, metrics, history --------------------------------------------------

#[tokio::test(start_paused = true)]
async fn reports_feed_the_algorithm_with_rtt_and_inflight() {
    #[derive(Debug, Clone, Default)]
    struct Spy(Arc<Mutex<Vec<Sample>>>);
    impl LimitAlgorithm for Spy {
        fn limit(&self) -> usize {
            4
        }
        fn update(&mut self, s: &Sample) -> usize {
            self.0.lock().unwrap().push(*s);
            4
        }
        fn bounds(&self) -> (usize, usize) {
            (4, 4)
        }
    }
    let spy = Spy::default();
    let limiter = AdaptiveLimiter::new(spy.clone());
    let t0 = Instant::now();
    let a = limiter.try_acquire().unwrap();
    tokio::time::sleep(MS * 30).await;
    let b = limiter.acquire().await.unwrap();
    let c = limiter.try_acquire().unwrap();
    tokio::time::sleep(MS * 20).await;
    b.dropped();
    a.success();
    c.ignore();
    let d = limiter.try_acquire().unwrap();
    drop(d); // unreported: ignored
    let seen = spy.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            Sample::new(t0 + MS * 30, MS * 20, 2, true),
            Sample::new(t0, MS * 50, 1, false),
        ]
    );
    let m = limiter.metrics();
    assert_eq!((m.samples, m.drops, m.ignored, m.inflight), (2, 1, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn history_is_bounded_and_timed_and_the_hook_sees_every_change() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let limiter = AdaptiveLimiter::builder()
        .algorithm(
            Aimd::builder()
                .initial_limit(10)
                .min_limit(1)
                .build()
                .unwrap(),
        )
        .history(3)
        .on_limit_change(move |c| log.lock().unwrap().push((c.seq, c.from, c.to)))
        .build()
        .unwrap();
    let t0 = Instant::now();
    for i in 1..=5u32 {
        tokio::time::sleep(MS * 10).await;
        limiter.try_acquire().unwrap().dropped();
        assert_eq!(
            limiter.metrics().history.last().unwrap().at,
            t0 + MS * 10 * i
        );
    }
    // 10 → 9 → 8 → 7 → 6 → 5
    assert_eq!(
        *seen.lock().unwrap(),
        [(1, 10, 9), (2, 9, 8), (3, 8, 7), (4, 7, 6), (5, 6, 5)]
    );
    let h = limiter.metrics().history;
    assert_eq!(
        h.iter().map(|c| (c.seq, c.to)).collect::<Vec<_>>(),
        [(3, 7), (4, 6), (5, 5)]
    );
    assert_eq!(limiter.limit(), 5);
}

/// A shrink never revokes a held permit, and nothing is handed out until
/// the holders are back under the new limit.
#[tokio::test(start_paused = true)]
async fn a_shrink_retires_permits_as_they_come_back() {
    let limiter = AdaptiveLimiter::new(
        Aimd::builder()
            .initial_limit(10)
            .min_limit(1)
            .backoff_ratio(0.5)
            .build()
            .unwrap(),
    );
    let mut held: Vec<_> = (0..10).map(|_| limiter.try_acquire().unwrap()).collect();
    held.pop().unwrap().dropped(); // 10 → 5 with 9 held
    assert_eq!(limiter.limit(), 5);
    for _ in 0..4 {
        held.pop().unwrap().ignore();
        assert!(limiter.try_acquire().is_err(), "still at or above 5 held");
    }
    held.pop().unwrap().ignore(); // 4 held
    let p = limiter.try_acquire().unwrap();
    assert_eq!(p.inflight_at_start(), 5);
    assert!(limiter.try_acquire().is_err());
}

// ---- inflight never above the limit ------------------------------------------------

/// Netflix's test with 100 threads: 100 tasks on 4 worker threads, each
/// acquiring and releasing 50 times; the number holding a permit never
/// exceeds the limit (fixed here), nor, with a moving limit, its maximum.
/// The third run has AIMD ask for one permit in 8 to be timed: the
/// untimed successes, counted on four threads, all reach the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inflight_never_above_the_limit_under_100_tasks() {
    /// AIMD, timing one permit in 8; counts the untimed reports.
    #[derive(Debug)]
    struct TimedOneIn8(Aimd, Arc<AtomicUsize>);
    impl LimitAlgorithm for TimedOneIn8 {
        fn limit(&self) -> usize {
            self.0.limit()
        }
        fn update(&mut self, s: &Sample) -> usize {
            self.0.update(s)
        }
        fn bounds(&self) -> (usize, usize) {
            self.0.bounds()
        }
        fn timing_stride(&self) -> usize {
            8
        }
        fn add_untimed(&mut self, u: &Untimed) {
            self.1.fetch_add(u.count as usize, Ordering::SeqCst);
        }
    }
    let untimed = Arc::new(AtomicUsize::new(0));
    let aimd = || {
        Aimd::builder()
            .initial_limit(10)
            .min_limit(1)
            .max_limit(16)
            .build()
            .unwrap()
    };
    for run in 0..3 {
        let moving = run > 0;
        let algorithm: Box<dyn LimitAlgorithm> = match run {
            0 => Box::new(fixed(10)),
            1 => Box::new(aimd()),
            _ => Box::new(TimedOneIn8(aimd(), untimed.clone())),
        };
        let limiter = AdaptiveLimiter::builder()
            .algorithm(algorithm)
            .max_backlog(100)
            .build()
            .unwrap();
        let holding = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for t in 0..100 {
            let (l, holding, peak) = (limiter.clone(), holding.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    let p = l.acquire().await.unwrap();
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    holding.fetch_sub(1, Ordering::SeqCst);
                    if (t + i) % 7 == 0 {
                        p.dropped()
                    } else {
                        p.success()
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        let bound = if moving { 16 } else { 10 };
        assert!(peak <= bound, "peak {peak} above {bound}");
        assert!(peak >= 2, "tasks did overlap");
        let m = limiter.metrics();
        assert_eq!((m.inflight, m.waiting, m.samples), (0, 0, 5_000));
        if run == 2 {
            // About 7 in 8 of the samples; each thread's first is timed.
            let n = untimed.load(Ordering::SeqCst);
            assert!((2_500..5_000).contains(&n), "{n} untimed");
        }
        // Every permit is back: exactly `limit` can be taken.
        let all: Vec<_> = (0..m.limit)
            .map(|_| limiter.try_acquire().unwrap())
            .collect();
        assert!(limiter.try_acquire().is_err());
        drop(all);
    }
}

// ---- with a WorkerPool and in a Pipeline ---------------------------------------------

/// The pool takes its concurrency from the limiter: submissions acquire
/// first and report from the task; the limit is mirrored into the pool.
#[tokio::test(start_paused = true)]
async fn a_worker_pool_runs_under_the_adaptive_limit() {
    let pool = WorkerPool::builder().max_concurrency(4).build().unwrap();
    let mirror = pool.clone();
    let limiter = AdaptiveLimiter::builder()
        .algorithm(
            Aimd::builder()
                .initial_limit(4)
                .min_limit(1)
                .max_limit(8)
                .build()
                .unwrap(),
        )
        .on_limit_change(move |c| mirror.set_max_concurrency(c.to).unwrap())
        .build()
        .unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    let mut pool_queued = 0;
    for i in 0..40u64 {
        let permit = limiter.acquire().await.unwrap();
        let (running, peak) = (running.clone(), peak.clone());
        handles.push(
            pool.submit(async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(MS * 10).await;
                running.fetch_sub(1, Ordering::SeqCst);
                if i == 20 {
                    permit.dropped()
                } else {
                    permit.success()
                }
                i
            })
            .await
            .unwrap(),
        );
        pool_queued = pool_queued.max(pool.metrics().queued);
    }
    let mut sum = 0;
    for h in handles {
        sum += h.await.unwrap();
    }
    assert_eq!(sum, (0..40).sum::<u64>());
    assert!(peak.load(Ordering::SeqCst) <= 8);
    let m = limiter.metrics();
    assert_eq!((m.samples, m.drops), (40, 1));
    assert_eq!(pool.metrics().max_concurrency, limiter.limit(), "mirrored");
    assert_eq!(pool_queued, 0, "the limiter queued, not the pool");
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_reports_to_the_limiter_by_its_classifier() {
    let limiter = AdaptiveLimiter::new(
        Aimd::builder()
            .initial_limit(10)
            .min_limit(1)
            .backoff_ratio(0.5)
            .build()
            .unwrap(),
    );
    let pipeline = Pipeline::<u16, &str>::builder()
        .attempt_timeout(MS * 100)
        .failure_if(|r| matches!(r, Ok(503) | Err(&"timeout")))
        .adaptive_limit(limiter.clone())
        .build()
        .unwrap();
    // A 404 is an answer: a success for the limit.
    assert_eq!(pipeline.call(|| async { Ok(404) }).await, Ok(404));
    // An error the classifier does not count: a success too.
    let e = pipeline
        .call(|| async { Err("bad request") })
        .await
        .unwrap_err();
    assert!(matches!(e, PipelineError::Inner("bad request")));
    assert_eq!((limiter.metrics().samples, limiter.metrics().drops), (2, 0));
    // A 503 the classifier counts: dropped.
    assert_eq!(pipeline.call(|| async { Ok(503) }).await, Ok(503));
    assert_eq!(limiter.limit(), 5);
    // An attempt timeout: dropped.
    let e = pipeline
        .call(|| async {
            tokio::time::sleep(SEC).await;
            Ok(200)
        })
        .await
        .unwrap_err();
    assert!(matches!(e, PipelineError::AttemptTimeout { attempts: 1 }));
    let m = limiter.metrics();
    assert_eq!((m.samples, m.drops, m.limit), (4, 2, 2));
    assert_eq!(pipeline.metrics().adaptive.unwrap().drops, 2);
    // A call cancelled half-way: ignored.
    let slow = pipeline.call(|| async {
        tokio::time::sleep(MS * 50).await;
        Ok(200)
    });
    assert!(tokio::time::timeout(MS * 10, slow).await.is_err());
    let m = limiter.metrics();
    assert_eq!((m.samples, m.ignored, m.inflight), (4, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_refused_by_the_limiter_returns_the_token_and_is_not_retried() {
    let limiter = AdaptiveLimiter::new(fixed(1));
    let rate = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(10).unwrap());
    let pipeline = Pipeline::<(), &str>::builder()
        .retry(flowguard::retry::RetryPolicy::new().max_retries(3))
        .rate_limiter(rate.clone())
        .adaptive_limit_with(limiter.clone(), Admission::Shed)
        .build()
        .unwrap();
    let _held = limiter.try_acquire().unwrap();
    let before = rate.snapshot();
    let err = pipeline.call(|| async { Ok(()) }).await.unwrap_err();
    assert!(matches!(err, PipelineError::ConcurrencyLimited));
    assert_eq!(err.layer(), "adaptive_limit");
    let m = pipeline.metrics();
    assert_eq!((m.adaptive_limited, m.retry.unwrap().attempts), (1, 1));
    assert_eq!(rate.snapshot(), before, "the token was refunded");

    // Waiting admission: refused only when the deadline passes.
    let waiting = Pipeline::<(), &str>::builder()
        .timeout(MS * 300)
        .adaptive_limit(limiter.clone())
        .build()
        .unwrap();
    let start = Instant::now();
    let err = waiting.call(|| async { Ok(()) }).await.unwrap_err();
    assert!(matches!(
        err,
        PipelineError::Timeout { .. } | PipelineError::ConcurrencyLimited
    ));
    assert_eq!(start.elapsed(), MS * 300);
}

// ---- types -----------------------------------------------------------------------

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<AdaptiveLimiter>();
    send_sync::<Permit>();
    send_sync::<AcquireError>();
    send_sync::<Vegas>();
    send_sync::<Windowed<Aimd>>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let limiter = AdaptiveLimiter::new(fixed(1));
    send(&limiter.acquire());
    send(&limiter.acquire_timeout(MS));
}

/// Asks for one permit in 4 to be timed; records what it is fed.
#[derive(Debug, Default, Clone)]
struct Strided {
    timed: Arc<Mutex<Vec<Sample>>>,
    untimed: Arc<Mutex<Vec<Untimed>>>,
}

impl LimitAlgorithm for Strided {
    fn limit(&self) -> usize {
        10
    }
    fn update(&mut self, s: &Sample) -> usize {
        self.timed.lock().unwrap().push(*s);
        10
    }
    fn bounds(&self) -> (usize, usize) {
        (10, 10)
    }
    fn timing_stride(&self) -> usize {
        4
    }
    fn add_untimed(&mut self, u: &Untimed) {
        self.untimed.lock().unwrap().push(*u);
    }
}

/// With a timing stride of 4, about one permit in 4 is timed; the others'
/// successes are counted and handed over in one go before the next timed
/// sample, an untimed drop at once; nothing is lost, partitions' counts
/// come home. The plain algorithms time every permit.
#[tokio::test(start_paused = true)]
async fn untimed_reports_are_counted_and_handed_over() {
    for stride in [
        Aimd::new().timing_stride(),
        Vegas::new().timing_stride(),
        Gradient2::new().timing_stride(),
    ] {
        assert_eq!(stride, 1);
    }
    let algo = Strided::default();
    let limiter = AdaptiveLimiter::builder()
        .algorithm(algo.clone())
        .partition("live", 0.5)
        .build()
        .unwrap();
    let live = limiter.labelled("live");
    for i in 0..400 {
        let p = if i % 2 == 0 { &limiter } else { &live }
            .try_acquire()
            .unwrap();
        tokio::time::advance(MS).await;
        p.success();
    }
    let m = limiter.metrics();
    assert_eq!((m.samples, m.inflight), (400, 0));
    assert!(m.partitions.iter().all(|p| p.inflight == 0), "{m:?}");
    let timed = algo.timed.lock().unwrap().clone();
    let untimed: u64 = algo.untimed.lock().unwrap().iter().map(|u| u.count).sum();
    assert_eq!(timed.len() as u64 + untimed, 400);
    assert!(
        (50..=200).contains(&timed.len()),
        "about 100: {}",
        timed.len()
    );
    assert!(timed.iter().all(|s| s.rtt == MS && s.inflight == 1));
    assert!(
        algo.untimed
            .lock()
            .unwrap()
            .iter()
            .all(|u| u.max_inflight == 1 && !u.dropped)
    );

    // Drops until one is untimed: handed over at once, flagged, counted.
    let mut untimed_drop = None;
    for _ in 0..50 {
        let before = algo.untimed.lock().unwrap().len();
        limiter.try_acquire().unwrap().dropped();
        let after = algo.untimed.lock().unwrap().clone();
        if after.len() > before && after.last().unwrap().dropped {
            untimed_drop = after.last().copied();
            break;
        }
    }
    let u = untimed_drop.expect("an untimed drop within 50");
    assert_eq!((u.count, u.max_inflight, u.dropped), (1, 1, true));
    let m = limiter.metrics();
    assert_eq!(m.samples, 400 + m.drops);
    assert_eq!(m.inflight, 0);
}

/// A permit released at the deadline instant itself, by a task whose timer
/// fired with the waiter's, is taken, as the semaphore's is.
#[tokio::test(start_paused = true)]
async fn a_permit_released_at_the_deadline_instant_is_taken() {
    let aimd = Aimd::builder()
        .initial_limit(1)
        .min_limit(1)
        .build()
        .unwrap();
    let limiter = AdaptiveLimiter::new(aimd);
    let held = limiter.acquire().await.unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        held.success();
    });
    let permit = limiter.acquire_timeout(Duration::from_secs(1)).await;
    assert!(permit.is_ok());
    assert_eq!(limiter.metrics().rejections, 0);
}

// ---- ported from Netflix concurrency-limits --------------------------------------

/// A sample at `t` of `rtt`, started with `inflight` in flight.
fn at(t: Instant, rtt: Duration, inflight: usize, dropped: bool) -> Sample {
    Sample::new(t, rtt, inflight, dropped)
}

/// Netflix's `SettableLimit`: the test sets the limit; the limiter reads
/// it at the next report (flowguard's algorithms move only on samples).
#[derive(Debug, Clone)]
struct Settable(Arc<AtomicUsize>);

impl Settable {
    fn starting_at(n: usize) -> Self {
        Self(Arc::new(AtomicUsize::new(n)))
    }
    fn set(&self, n: usize) {
        self.0.store(n, Ordering::SeqCst);
    }
}

impl LimitAlgorithm for Settable {
    fn limit(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
    fn update(&mut self, _: &Sample) -> usize {
        self.limit()
    }
    fn bounds(&self) -> (usize, usize) {
        (1, flowguard::adaptive::MAX_LIMIT)
    }
}

// Reference: Netflix concurrency-limits (limit/AIMDLimitTest.java)

/// `testDefault`: `initialLimit(10)` is the limit. Netflix keeps the
/// default min 20 and starts below it; flowguard refuses that (documented)
/// and takes 10 once the floor allows it.
#[test]
fn aimd_initial_limit_is_the_limit() {
    let err = Aimd::builder().initial_limit(10).build().unwrap_err();
    assert_eq!(err.field(), "initial_limit");
    let aimd = Aimd::builder()
        .initial_limit(10)
        .min_limit(1)
        .build()
        .unwrap();
    assert_eq!(aimd.limit(), 10);
}

/// `increaseOnSuccess`: from 20, a 1 ms success with 10 in flight: 21.
#[test]
fn aimd_increases_by_one_on_success() {
    let mut aimd = Aimd::builder().initial_limit(20).build().unwrap();
    assert_eq!(aimd.update(&at(Instant::now(), MS, 10, false)), 21);
    assert_eq!(aimd.limit(), 21);
}

/// `decreaseOnDrops`: from 30, a drop (rtt 0, nothing in flight): 27.
#[test]
fn aimd_backs_off_by_the_ratio_on_a_drop() {
    let mut aimd = Aimd::builder().initial_limit(30).build().unwrap();
    assert_eq!(
        aimd.update(&at(Instant::now(), Duration::ZERO, 0, true)),
        27
    );
}

/// `successOverflow`: at the max (21), a success stays at 21. Netflix's
/// `minLimit(0)` is refused here (documented), so the floor is 1.
#[test]
fn aimd_success_at_the_max_stays_at_the_max() {
    assert_eq!(
        Aimd::builder()
            .initial_limit(21)
            .max_limit(21)
            .min_limit(0)
            .build()
            .unwrap_err()
            .field(),
        "min_limit"
    );
    let mut aimd = Aimd::builder()
        .initial_limit(21)
        .max_limit(21)
        .min_limit(1)
        .build()
        .unwrap();
    assert_eq!(aimd.update(&at(Instant::now(), MS, 10, false)), 21);
}

/// `AIMDLimit`'s rules: an RTT above the timeout is a drop (at it, not);
/// under half the limit in flight, no growth; the floor holds.
#[test]
fn aimd_timeout_is_a_drop_and_app_limited_samples_do_not_grow() {
    let t = Instant::now();
    let mut aimd = Aimd::builder()
        .initial_limit(100)
        .min_limit(50)
        .timeout(SEC)
        .build()
        .unwrap();
    assert_eq!(aimd.update(&at(t, SEC, 50, false)), 101, "at the timeout");
    assert_eq!(aimd.update(&at(t, SEC + MS, 50, false)), 90, "⌊101 × 0.9⌋");
    assert_eq!(aimd.update(&at(t, MS, 44, false)), 90, "44 × 2 < 90");
    assert_eq!(aimd.update(&at(t, MS, 45, false)), 91, "45 × 2 >= 90");
    for _ in 0..10 {
        aimd.update(&at(t, MS, 0, true));
    }
    assert_eq!(aimd.limit(), 50, "min_limit");
}

/// Through the limiter: a permit held past AIMD's timeout and reported as
/// a success counts as a drop; an ignored one moves nothing.
#[tokio::test(start_paused = true)]
async fn aimd_under_the_limiter_counts_a_slow_success_as_a_drop() {
    let aimd = Aimd::builder()
        .initial_limit(10)
        .min_limit(1)
        .timeout(SEC)
        .build()
        .unwrap();
    let limiter = AdaptiveLimiter::new(aimd);
    let held: Vec<_> = (0..5).map(|_| limiter.try_acquire().unwrap()).collect();
    let slow = limiter.try_acquire().unwrap(); // 6 in flight
    tokio::time::advance(SEC + MS).await;
    slow.success();
    assert_eq!(limiter.limit(), 9, "⌊10 × 0.9⌋");
    let p = limiter.try_acquire().unwrap();
    tokio::time::advance(SEC).await;
    p.success(); // at the timeout, 6 in flight: 6 × 2 >= 9
    assert_eq!(limiter.limit(), 10);
    limiter.try_acquire().unwrap().ignore();
    assert_eq!(limiter.limit(), 10);
    let m = limiter.metrics();
    assert_eq!((m.samples, m.drops, m.ignored), (2, 0, 1));
    drop(held);
}

// Reference: Netflix concurrency-limits (limit/VegasLimitTest.java)

/// Netflix's `create()`: alpha 3, beta 6, smoothing 1, initial 10, max 20
/// (alpha and beta are multiples of `log` here; equal below 100).
fn netflix_vegas() -> Vegas {
    Vegas::builder()
        .alpha(3)
        .beta(6)
        .smoothing(1.0)
        .initial_limit(10)
        .max_limit(20)
        .seed(3)
        .build()
        .unwrap()
}

#[test]
fn vegas_initial_limit() {
    assert_eq!(netflix_vegas().limit(), 10);
}

/// `increaseLimit`: the first sample sets the no-load RTT; the second, no
/// queue: + beta.
#[test]
fn vegas_increases_by_beta_without_a_queue() {
    let t = Instant::now();
    let mut v = netflix_vegas();
    assert_eq!(v.update(&at(t, MS * 10, 10, false)), 10);
    assert_eq!(v.update(&at(t, MS * 10, 11, false)), 16);
}

/// `decreaseLimit`: 50 ms against 10 ms: queue ⌈10 × 0.8⌉ = 8 > 6: 9.
#[test]
fn vegas_decreases_past_beta() {
    let t = Instant::now();
    let mut v = netflix_vegas();
    assert_eq!(v.update(&at(t, MS * 10, 10, false)), 10);
    assert_eq!(v.update(&at(t, MS * 50, 11, false)), 9);
}

/// `noChangeIfWithinThresholds`: 14 ms: queue ⌈10 × 4/14⌉ = 3, in [3, 6].
#[test]
fn vegas_holds_within_alpha_and_beta() {
    let t = Instant::now();
    let mut v = netflix_vegas();
    assert_eq!(v.update(&at(t, MS * 10, 10, false)), 10);
    assert_eq!(v.update(&at(t, MS * 14, 14, false)), 10);
}

/// `largeLimitIncrease`: from 10 000 (log 4), no queue: + 6 × 4.
#[test]
fn vegas_large_limit_increases_by_six_log() {
    let t = Instant::now();
    let mut v = Vegas::builder()
        .initial_limit(10_000)
        .max_limit(20_000)
        .seed(3)
        .build()
        .unwrap();
    assert_eq!(v.update(&at(t, SEC * 10, 5_000, false)), 10_000);
    assert_eq!(v.update(&at(t, SEC * 10, 6_000, false)), 10_024);
}

/// `decreaseSmoothing` / `decreaseWithoutSmoothing` use a custom decrease
/// function (`current / 2`), which flowguard does not offer; with its own
/// decrease (half the excess over beta, documented) smoothing 0.5 still
/// takes half of each step. From 100, RTT twice the no-load one: queue
/// 50, log 2, beta 12: − 19 → 81; smoothed 90.5. Then queue ⌈45.25⌉ = 46,
/// log 1, beta 6: − 20 → 70.5; smoothed 80.5.
#[test]
fn vegas_smoothing_takes_half_of_each_decrease() {
    let t = Instant::now();
    let build = |smoothing| {
        Vegas::builder()
            .smoothing(smoothing)
            .initial_limit(100)
            .max_limit(200)
            .seed(3)
            .build()
            .unwrap()
    };
    let mut v = build(0.5);
    assert_eq!(v.update(&at(t, MS * 10, 100, false)), 100);
    assert_eq!(v.update(&at(t, MS * 20, 100, false)), 90);
    assert_eq!(v.estimate(), 90.5);
    assert_eq!(v.update(&at(t, MS * 20, 100, false)), 80);
    assert_eq!(v.estimate(), 80.5);
    let mut v = build(1.0);
    v.update(&at(t, MS * 10, 100, false));
    assert_eq!(v.update(&at(t, MS * 20, 100, false)), 81);
    // queue ⌈40.5⌉ = 41, log 1: − ⌊35 / 2⌋
    assert_eq!(v.update(&at(t, MS * 20, 100, false)), 64);
}

/// `VegasLimit`'s drop rule: a drop decreases by `log` whatever the load.
#[test]
fn vegas_drop_decreases_even_when_app_limited() {
    let t = Instant::now();
    let mut v = netflix_vegas();
    v.update(&at(t, MS * 10, 10, false));
    assert_eq!(v.update(&at(t, MS * 10, 1, true)), 9);
    assert_eq!(v.update(&at(t, MS * 10, 1, false)), 9, "1 × 2 < 9");
}

// Reference: Netflix concurrency-limits (limit/functions/Log10RootFunctionTest.java)

/// Vegas's steps are `max(1, ⌊log10 limit⌋)`: 1 at 0..99 (`test0Index`),
/// 2 at 100 (`testInRange`), 4 at 10 000 (`testOutofLookupRange`, above);
/// seen as the no-queue step `+ 6 × log`.
#[test]
fn vegas_steps_follow_the_log10_root() {
    let t = Instant::now();
    for (initial, grown) in [(1, 7), (99, 105), (100, 112), (999, 1011), (1000, 1018)] {
        let mut v = Vegas::builder()
            .initial_limit(initial)
            .max_limit(2000)
            .seed(3)
            .build()
            .unwrap();
        v.update(&at(t, MS * 10, initial, false));
        assert_eq!(
            v.update(&at(t, MS * 10, initial, false)),
            grown,
            "{initial}"
        );
    }
}

// Reference: Netflix concurrency-limits (limit/ExpAvgMeasurementTest.java
// and limit/Gradient2Limit.java: no Gradient2LimitTest or GradientLimitTest
// could be read, so these follow the rules of Gradient2Limit's `_update`)

fn gradient2(initial: usize) -> flowguard::adaptive::Gradient2Builder {
    Gradient2::builder().initial_limit(initial).min_limit(1)
}

/// No queueing (short = long RTT): + smoothing × queue size per sample.
#[test]
fn gradient2_grows_by_smoothing_times_queue_size_at_steady_latency() {
    let t = Instant::now();
    let mut g = Gradient2::builder().build().unwrap(); // 20, Fixed(4), 0.2
    assert_eq!(g.update(&at(t, MS * 10, 20, false)), 20);
    assert!((g.estimate() - 20.8).abs() < 1e-9);
    assert_eq!(g.update(&at(t, MS * 10, 20, false)), 21);
    assert!((g.estimate() - 21.6).abs() < 1e-9);
}

/// Under half the estimate in flight: no change.
#[test]
fn gradient2_does_not_grow_while_app_limited() {
    let t = Instant::now();
    let mut g = gradient2(100).build().unwrap();
    for _ in 0..20 {
        assert_eq!(g.update(&at(t, MS * 10, 49, false)), 100);
    }
    assert_eq!(g.estimate(), 100.0);
}

/// The gradient is clamped to 0.5: a hundredfold RTT halves the limit at
/// most (smoothing 1, no queue allowance).
#[test]
fn gradient2_cuts_by_at_most_half() {
    let t = Instant::now();
    let mut g = gradient2(100)
        .smoothing(1.0)
        .queue_size(flowguard::adaptive::QueueSize::Fixed(0))
        .build()
        .unwrap();
    for _ in 0..10 {
        g.update(&at(t, MS * 10, 0, false));
    }
    assert_eq!(g.update(&at(t, SEC, 100, false)), 50);
    assert_eq!(g.estimate(), 50.0);
}

/// `ExpAvgMeasurementTest`: the long RTT is a plain mean over the first
/// 10 samples, then an EMA with factor 2 / (window + 1). Seen through the
/// gradient (tolerance 1, smoothing 1, no queue allowance): ten 10 ms
/// samples, then 15 ms with window 100: long = (10 × 99 + 15 × 2) / 101.
#[test]
fn gradient2_long_rtt_warms_up_as_a_mean_then_averages_exponentially() {
    let t = Instant::now();
    let build = || {
        gradient2(100)
            .tolerance(1.0)
            .smoothing(1.0)
            .long_window(100)
            .queue_size(flowguard::adaptive::QueueSize::Fixed(0))
            .build()
            .unwrap()
    };
    let mut g = build();
    for _ in 0..10 {
        assert_eq!(g.update(&at(t, MS * 10, 0, false)), 100);
    }
    g.update(&at(t, MS * 15, 100, false));
    let long = (10.0 * 99.0 + 15.0 * 2.0) / 101.0;
    assert!(
        (g.estimate() - 100.0 * long / 15.0).abs() < 1e-9,
        "{}",
        g.estimate()
    );
    assert_eq!(g.limit(), 67);
    // In the warm-up: mean(10, 20, 15) = 15 = short: gradient 1.
    let mut g = build();
    g.update(&at(t, MS * 10, 0, false));
    g.update(&at(t, MS * 20, 0, false));
    g.update(&at(t, MS * 15, 100, false));
    assert_eq!(g.estimate(), 100.0);
}

/// Netflix's Gradient2 reads latency only: a drop moves it as a success
/// with the same RTT would (documented).
#[test]
fn gradient2_ignores_drops() {
    let t = Instant::now();
    let mut a = gradient2(50).build().unwrap();
    let mut b = gradient2(50).build().unwrap();
    for i in 0..30u32 {
        let rtt = MS * (10 + i % 7);
        a.update(&at(t, rtt, 50, false));
        b.update(&at(t, rtt, 50, true));
    }
    assert_eq!(a.estimate(), b.estimate());
}

/// Clamped to `[min_limit, max_limit]`.
#[test]
fn gradient2_stays_within_min_and_max() {
    let t = Instant::now();
    let mut g = Gradient2::builder()
        .initial_limit(30)
        .min_limit(25)
        .max_limit(32)
        .build()
        .unwrap();
    for _ in 0..50 {
        g.update(&at(t, MS * 10, 100, false));
    }
    assert_eq!(g.limit(), 32);
    for _ in 0..50 {
        g.update(&at(t, SEC * 10, 100, false));
    }
    assert_eq!(g.limit(), 25);
}

// Reference: Netflix concurrency-limits (limit/functions/SquareRootFunctionTest.java)

#[test]
fn square_root_queue_size_matches_netflix() {
    let f = flowguard::adaptive::QueueSize::SquareRoot { min: 4 };
    assert_eq!(f.at(0), 4, "confirm0Index");
    assert_eq!(f.at(999), 31, "confirmMaxIndex");
    assert_eq!(f.at(1105), 33, "confirmOutofLookupRange");
}

// Reference: Netflix concurrency-limits (limit/WindowedLimit.java and
// limit/window/ImmutableAverageSampleWindowTest.java; no WindowedLimitTest
// is in the stored index)

/// Records what a `Windowed` hands to its inner algorithm.
#[derive(Debug, Default, Clone)]
struct Fed(Arc<Mutex<Vec<Sample>>>);

impl LimitAlgorithm for Fed {
    fn limit(&self) -> usize {
        10
    }
    fn update(&mut self, s: &Sample) -> usize {
        self.0.lock().unwrap().push(*s);
        10
    }
    fn bounds(&self) -> (usize, usize) {
        (10, 10)
    }
}

/// `calculateAverage` and `droppedSampleShouldNotChangeTrackedAverage`:
/// the window's RTT is the mean of its samples, a dropped one's included
/// (the threshold set to 0, as Netflix's window class has none).
#[test]
fn windowed_rtt_is_the_mean_dropped_samples_included() {
    let ns = Duration::from_nanos;
    let t0 = Instant::now();
    for with_drop in [false, true] {
        let fed = Fed::default();
        let mut w = Windowed::builder(fed.clone())
            .min_window(MS * 100)
            .min_samples(3)
            .min_rtt(Duration::ZERO)
            .build()
            .unwrap();
        w.update(&at(t0, MS, 1, false)); // Netflix's first deadline is 0: closes at once
        w.update(&at(t0 + MS * 10, ns(5_000), 1, false));
        w.update(&at(t0 + MS * 20, ns(500), 1, false));
        if with_drop {
            w.update(&at(t0 + MS * 30, ns(10), 1, false));
            w.update(&at(t0 + MS * 200, ns(5_000), 1, true)); // closes
        } else {
            w.update(&at(t0 + MS * 200, ns(10), 1, false)); // closes
        }
        let seen = fed.0.lock().unwrap().clone();
        let want = if with_drop {
            at(t0 + MS * 200, ns((5_000 + 500 + 10 + 5_000) / 4), 1, true)
        } else {
            at(t0 + MS * 200, ns((5_000 + 500 + 10) / 3), 1, false)
        };
        assert_eq!(seen, [want]);
    }
}

/// `isWindowReady`: a window decides with at least `windowSize` (10)
/// samples above the 100 µs threshold; with 9 it is discarded, not carried.
#[test]
fn windowed_decides_with_window_size_samples_and_discards_fewer() {
    let t0 = Instant::now();
    let fed = Fed::default();
    let mut w = Windowed::new(fed.clone()); // 1 s, 10 samples, 100 µs
    w.update(&at(t0, MS, 1, false)); // ends at 1 ms; the next window at 1 001 ms
    for i in 0..8u32 {
        w.update(&at(t0 + MS * (10 + i), MS, 2, false));
    }
    w.update(&at(t0 + MS * 50, Duration::from_micros(99), 9, false)); // too fast
    w.update(&at(t0 + MS * 1_100, MS, 3, false)); // the 9th: closes
    assert!(fed.0.lock().unwrap().is_empty(), "9 samples: discarded");
    for i in 0..9u32 {
        w.update(&at(t0 + MS * (1_200 + i), MS * 2, 4, false));
    }
    w.update(&at(t0 + MS * 2_200, MS * 2, 5, false)); // the 10th: closes
    let seen = fed.0.lock().unwrap().clone();
    assert_eq!(seen, [at(t0 + MS * 2_200, MS * 2, 5, false)]);
}

/// `nextUpdateTime = endTime + clamp(2 × the window's lowest RTT, min,
/// max)`, and a sample closes the window only when it ends *after* it.
#[test]
fn windowed_next_window_is_twice_the_lowest_rtt_and_closes_strictly_after() {
    let t0 = Instant::now();
    let fed = Fed::default();
    let mut w = Windowed::builder(fed.clone())
        .min_window(MS * 100)
        .max_window(SEC)
        .min_samples(1)
        .build()
        .unwrap();
    w.update(&at(t0, MS * 300, 1, false)); // ends at 300: next at 300 + 600
    assert_eq!(fed.0.lock().unwrap().len(), 1);
    w.update(&at(t0 + MS * 400, MS * 500, 2, false)); // ends at 900: not after
    assert_eq!(fed.0.lock().unwrap().len(), 1);
    w.update(&at(
        t0 + MS * 400,
        MS * 500 + Duration::from_nanos(1),
        3,
        false,
    ));
    let seen = fed.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].inflight, 3, "max inflight of the window");
}

// Reference: Netflix concurrency-limits (limiter/SimpleLimiterTest.java)

#[tokio::test(start_paused = true)]
async fn simple_uses_capacity_until_the_total_limit() {
    let limiter = AdaptiveLimiter::new(fixed(10));
    let live = limiter.labelled("live");
    let held: Vec<_> = (0..10).map(|_| live.try_acquire().unwrap()).collect();
    assert_eq!(live.try_acquire().unwrap_err(), AcquireError::Limited);
    assert_eq!(limiter.inflight(), 10);
    assert_eq!(limiter.metrics().rejections, 1);
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn simple_release_returns_one_permit() {
    let limiter = AdaptiveLimiter::new(fixed(10));
    let first = limiter.try_acquire().unwrap();
    let rest: Vec<_> = (1..10).map(|_| limiter.try_acquire().unwrap()).collect();
    assert_eq!(limiter.inflight(), 10);
    assert!(limiter.try_acquire().is_err());
    first.success();
    assert_eq!(limiter.inflight(), 9);
    let again = limiter.try_acquire().unwrap();
    assert_eq!(limiter.inflight(), 10);
    drop((rest, again));
}

#[tokio::test(start_paused = true)]
async fn simple_bypass_lets_admin_through_at_the_limit() {
    let limiter = AdaptiveLimiter::builder()
        .algorithm(fixed(10))
        .bypass_if(|label| label == "admin")
        .build()
        .unwrap();
    let (live, admin) = (limiter.labelled("live"), limiter.labelled("admin"));
    let mut held = Vec::new();
    for i in 0..10 {
        held.push(live.try_acquire().unwrap());
        assert_eq!(limiter.inflight(), i + 1);
    }
    for _ in 0..10 {
        assert!(live.try_acquire().is_err());
        held.push(admin.try_acquire().unwrap());
    }
    assert_eq!(limiter.inflight(), 10);
    assert_eq!(limiter.metrics().bypassed, 10);
}

#[tokio::test(start_paused = true)]
async fn simple_bypasses_nobody_by_default() {
    let limiter = AdaptiveLimiter::new(fixed(10));
    let held: Vec<_> = (0..10)
        .map(|_| limiter.labelled("live").try_acquire().unwrap())
        .collect();
    assert!(limiter.labelled("live").try_acquire().is_err());
    assert!(limiter.labelled("admin").try_acquire().is_err());
    drop(held);
}

// Reference: Netflix concurrency-limits (limiter/AbstractPartitionedLimiterTest.java)

fn batch_live(limit: impl LimitAlgorithm) -> AdaptiveLimiter {
    AdaptiveLimiter::builder()
        .algorithm(limit)
        .partition("batch", 0.3)
        .partition("live", 0.7)
        .build()
        .unwrap()
}

/// Partition `name`'s (inflight, guaranteed).
fn part(limiter: &AdaptiveLimiter, name: &str) -> (usize, usize) {
    let m = limiter.metrics();
    let p = m.partitions.iter().find(|p| p.name == name).unwrap();
    (p.inflight, p.guaranteed)
}

#[tokio::test(start_paused = true)]
async fn partitions_are_allocated_their_share_of_the_limit() {
    let limiter = batch_live(fixed(10));
    assert_eq!(part(&limiter, "batch").1, 3);
    assert_eq!(part(&limiter, "live").1, 7);
}

#[tokio::test(start_paused = true)]
async fn a_partition_uses_excess_capacity_until_the_total_limit() {
    let limiter = batch_live(fixed(10));
    let batch = limiter.labelled("batch");
    let mut held = Vec::new();
    for i in 0..10 {
        held.push(batch.try_acquire().unwrap());
        assert_eq!(part(&limiter, "batch").0, i + 1);
    }
    assert!(batch.try_acquire().is_err());
}

/// `exceedTotalLimitForUnusedBin`: Netflix lets live take its 7 on top of
/// batch's 10 (17 of 10); flowguard never exceeds the total limit
/// (documented), so live waits for batch's permits instead.
#[tokio::test(start_paused = true)]
async fn an_unused_partition_does_not_exceed_the_total_limit() {
    let limiter = batch_live(fixed(10));
    let (batch, live) = (limiter.labelled("batch"), limiter.labelled("live"));
    let mut held: Vec<_> = (0..10).map(|_| batch.try_acquire().unwrap()).collect();
    assert!(batch.try_acquire().is_err());
    assert!(live.try_acquire().is_err());
    held.pop().unwrap().success();
    let p = live.try_acquire().unwrap();
    assert_eq!((part(&limiter, "live").0, limiter.inflight()), (1, 10));
    drop((held, p));
}

#[tokio::test(start_paused = true)]
async fn partitions_reject_once_all_limits_are_reached() {
    let limiter = batch_live(fixed(10));
    let (batch, live) = (limiter.labelled("batch"), limiter.labelled("live"));
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(batch.try_acquire().unwrap());
        assert_eq!(
            (part(&limiter, "batch").0, limiter.inflight()),
            (i + 1, i + 1)
        );
    }
    for i in 0..7 {
        held.push(live.try_acquire().unwrap());
        assert_eq!(
            (part(&limiter, "live").0, limiter.inflight()),
            (i + 1, i + 4)
        );
    }
    assert!(batch.try_acquire().is_err());
    assert!(live.try_acquire().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_partition_release_returns_one_permit() {
    let limiter = batch_live(fixed(10));
    let batch = limiter.labelled("batch");
    let first = batch.try_acquire().unwrap();
    let rest: Vec<_> = (1..10).map(|_| batch.try_acquire().unwrap()).collect();
    assert_eq!(limiter.inflight(), 10);
    assert!(batch.try_acquire().is_err());
    first.success();
    assert_eq!((part(&limiter, "batch").0, limiter.inflight()), (9, 9));
    let again = batch.try_acquire().unwrap();
    assert_eq!((part(&limiter, "batch").0, limiter.inflight()), (10, 10));
    drop((rest, again));
}

/// `setLimitReservesBusy`: a new limit re-divides the shares and keeps
/// what is held (here it takes effect at the next report).
#[tokio::test(start_paused = true)]
async fn a_new_limit_resizes_shares_and_keeps_held_permits() {
    let limit = Settable::starting_at(10);
    let limiter = batch_live(limit.clone());
    let batch = limiter.labelled("batch");
    assert_eq!(part(&limiter, "batch").1, 3);
    let kept = batch.try_acquire().unwrap();
    let reporter = batch.try_acquire().unwrap();
    limit.set(20);
    reporter.success();
    assert_eq!(limiter.limit(), 20);
    assert_eq!(part(&limiter, "batch"), (1, 6));
    assert_eq!(limiter.inflight(), 1);
    drop(kept);
}

#[tokio::test(start_paused = true)]
async fn partitioned_bypass_passes_when_every_partition_is_full() {
    let limiter = AdaptiveLimiter::builder()
        .algorithm(fixed(10))
        .partition("batch", 0.1)
        .partition("live", 0.9)
        .bypass_if(|label| label.contains("admin"))
        .build()
        .unwrap();
    let (batch, live, admin) = (
        limiter.labelled("batch"),
        limiter.labelled("live"),
        limiter.labelled("admin"),
    );
    let mut held = vec![batch.try_acquire().unwrap()];
    assert_eq!(part(&limiter, "batch").0, 1);
    held.push(admin.try_acquire().unwrap());
    for i in 0..9 {
        held.push(live.try_acquire().unwrap());
        assert_eq!(part(&limiter, "live").0, i + 1);
        held.push(admin.try_acquire().unwrap());
    }
    assert!(batch.try_acquire().is_err());
    assert!(live.try_acquire().is_err());
    assert_eq!(part(&limiter, "batch").0, 1);
    assert_eq!(part(&limiter, "live").0, 9);
    assert_eq!(limiter.inflight(), 10);
    assert!(admin.try_acquire().unwrap().is_bypass());
}

#[tokio::test(start_paused = true)]
async fn simple_bypass_does_not_count_in_flight() {
    let limiter = AdaptiveLimiter::builder()
        .algorithm(fixed(10))
        .bypass_if(|label| label.contains("admin"))
        .build()
        .unwrap();
    let (request, admin) = (limiter.labelled("request"), limiter.labelled("admin"));
    let mut held = Vec::new();
    for i in 0..5 {
        held.push(request.try_acquire().unwrap());
        assert_eq!(limiter.inflight(), i + 1);
    }
    for _ in 0..15 {
        held.push(admin.try_acquire().unwrap());
        assert_eq!(limiter.inflight(), 5);
    }
    for i in 0..5 {
        held.push(request.try_acquire().unwrap());
        assert_eq!(limiter.inflight(), 6 + i);
    }
    for _ in 0..10 {
        assert!(request.try_acquire().is_err());
        held.push(admin.try_acquire().unwrap());
    }
}

/// `testConcurrentPartitions`: 15 tasks on 4 threads over three partitions
/// (0.5, 0.3, 0.2) of 20; every attempt is a success or a rejection, and
/// the total in flight never exceeds 20 (Netflix allows 20 + 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_partitions_never_exceed_the_limit() {
    let limiter = AdaptiveLimiter::builder()
        .algorithm(fixed(20))
        .partition("A", 0.5)
        .partition("B", 0.3)
        .partition("C", 0.2)
        .build()
        .unwrap();
    let holding = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for name in ["A", "B", "C"] {
        for _ in 0..5 {
            let (l, holding, peak) = (limiter.labelled(name), holding.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut refused) = (0, 0);
                for _ in 0..500 {
                    match l.try_acquire() {
                        Ok(p) => {
                            let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            ok += 1;
                            tokio::task::yield_now().await;
                            holding.fetch_sub(1, Ordering::SeqCst);
                            p.success();
                        }
                        Err(_) => refused += 1,
                    }
                }
                (ok, refused)
            }));
        }
    }
    let mut successes = 0;
    for t in tasks {
        let (ok, refused) = t.await.unwrap();
        assert_eq!(ok + refused, 500);
        successes += ok;
    }
    assert!(peak.load(Ordering::SeqCst) <= 20);
    let m = limiter.metrics();
    assert_eq!((m.samples, m.rejections), (successes, 7_500 - successes));
    assert_eq!(m.inflight, 0);
}

// Reference: Netflix concurrency-limits (limiter/BlockingLimiterTest.java)

/// `test`: ten held, the limit set to 1, all ten released: the next
/// acquire gets a permit and does not block.
#[tokio::test(start_paused = true)]
async fn blocking_acquire_succeeds_after_the_limit_shrinks_and_all_return() {
    let limit = Settable::starting_at(10);
    let limiter = AdaptiveLimiter::new(limit.clone());
    let held: Vec<_> = (0..10).map(|_| limiter.try_acquire().unwrap()).collect();
    limit.set(1);
    for p in held {
        p.success();
    }
    assert_eq!(limiter.limit(), 1);
    let p = limiter.acquire_timeout(Duration::ZERO).await.unwrap();
    assert!(limiter.try_acquire().is_err());
    drop(p);
}

/// `testMultipleBlockedThreads`: eight callers on a limit of 1 all get
/// through, one at a time.
#[tokio::test(start_paused = true)]
async fn blocking_many_waiters_on_a_limit_of_one_all_get_through() {
    let limiter = AdaptiveLimiter::new(fixed(1));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let l = limiter.clone();
        tasks.push(tokio::spawn(async move {
            let p = l.acquire().await.unwrap();
            tokio::time::sleep(MS).await;
            p.success();
        }));
    }
    let all = async {
        for t in tasks {
            t.await.unwrap();
        }
    };
    tokio::time::timeout(SEC, all)
        .await
        .expect("all eight done");
    assert_eq!(limiter.metrics().samples, 8);
}

/// `testTimeout`: the second acquire gives up after (exactly) 50 ms.
#[tokio::test(start_paused = true)]
async fn blocking_acquire_times_out_after_the_timeout() {
    let limiter = AdaptiveLimiter::new(fixed(1));
    let _held = limiter.acquire_timeout(MS * 50).await.unwrap();
    let start = Instant::now();
    let err = limiter.acquire_timeout(MS * 50).await.unwrap_err();
    assert_eq!(err, AcquireError::TimedOut);
    assert_eq!(start.elapsed(), MS * 50);
}

/// `testNoTimeout`: without a timeout the acquire is still waiting after
/// a second.
#[tokio::test(start_paused = true)]
async fn blocking_acquire_without_timeout_keeps_waiting() {
    let limiter = AdaptiveLimiter::new(fixed(1));
    let _held = limiter.try_acquire().unwrap();
    assert!(tokio::time::timeout(SEC, limiter.acquire()).await.is_err());
    assert_eq!(limiter.metrics().waiting, 0, "the cancelled wait left");
}

/// `failOnHighTimeout`: Netflix refuses a timeout above an hour; flowguard
/// has no such cap, and a day-long (or unbounded) timeout is a plain wait
/// that a returned permit ends.
#[tokio::test(start_paused = true)]
async fn blocking_acquire_accepts_a_very_long_timeout() {
    let limiter = AdaptiveLimiter::new(fixed(1));
    for timeout in [Duration::from_secs(86_400), Duration::MAX] {
        let held = limiter.try_acquire().unwrap();
        let l = limiter.clone();
        let waiter =
            tokio::spawn(async move { l.acquire_timeout(timeout).await.map(Permit::ignore) });
        tokio::time::sleep(SEC * 3_600).await;
        assert!(!waiter.is_finished(), "still waiting after an hour");
        assert_eq!(limiter.metrics().waiting, 1);
        held.ignore();
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }
    assert_eq!(limiter.metrics().rejections, 0);
}

// Reference: Netflix concurrency-limits (limiter/LifoBlockingLimiterTest.java)

/// Netflix's fixture: a limit of 4 (settable), LIFO, a backlog of 10, and
/// its backlog timeout of 1 s as `acquire_timeout(SEC)`.
fn lifo(limit: impl LimitAlgorithm) -> AdaptiveLimiter {
    AdaptiveLimiter::builder()
        .algorithm(limit)
        .order(Order::Lifo)
        .max_backlog(10)
        .build()
        .unwrap()
}

fn acquire_n(limiter: &AdaptiveLimiter, n: usize) -> Vec<Permit> {
    (0..n).map(|_| limiter.try_acquire().unwrap()).collect()
}

#[tokio::test(start_paused = true)]
async fn lifo_blocks_when_full_and_times_out() {
    let limiter = lifo(fixed(4));
    let _held = acquire_n(&limiter, 4);
    let start = Instant::now();
    assert_eq!(
        limiter.acquire_timeout(SEC).await.unwrap_err(),
        AcquireError::TimedOut
    );
    assert_eq!(start.elapsed(), SEC);
}

#[tokio::test(start_paused = true)]
async fn lifo_unblocks_when_a_permit_returns_before_the_timeout() {
    let limiter = lifo(fixed(4));
    let mut held = acquire_n(&limiter, 4);
    let first = held.remove(0);
    tokio::spawn(async move {
        tokio::time::sleep(MS * 250).await;
        first.success();
    });
    let start = Instant::now();
    let p = limiter.acquire_timeout(SEC).await.unwrap();
    assert_eq!(start.elapsed(), MS * 250);
    drop((p, held));
}

#[tokio::test(start_paused = true)]
async fn lifo_rejects_at_once_when_the_backlog_is_full() {
    let limiter = lifo(fixed(4));
    let mut tasks = Vec::new();
    for _ in 0..14 {
        let l = limiter.clone();
        tasks.push(tokio::spawn(async move {
            let p = l.acquire_timeout(SEC).await;
            tokio::time::sleep(SEC * 10).await;
            p.map(Permit::success)
        }));
    }
    tokio::time::sleep(MS * 250).await;
    let m = limiter.metrics();
    assert_eq!((m.inflight, m.waiting), (4, 10));
    let start = Instant::now();
    assert_eq!(
        limiter.acquire_timeout(SEC).await.unwrap_err(),
        AcquireError::BacklogFull
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
    for t in tasks {
        t.abort();
    }
}

/// `adaptWhenLimitIncreases`: the limit raised from 4 to 5 lets the next
/// caller in at once. Here the new limit is read at a report, and the
/// permits it frees go to the backlog first: one waiter and one new caller.
#[tokio::test(start_paused = true)]
async fn lifo_adapts_when_the_limit_increases() {
    let limit = Settable::starting_at(4);
    let limiter = lifo(limit.clone());
    let mut held = acquire_n(&limiter, 4);
    let l = limiter.clone();
    let waiter = tokio::spawn(async move { l.acquire_timeout(SEC).await });
    tokio::task::yield_now().await;
    limit.set(6);
    held.pop().unwrap().success(); // 3 held of 6
    let start = Instant::now();
    let w = waiter.await.unwrap().unwrap();
    let p = limiter.acquire_timeout(SEC).await.unwrap();
    let q = limiter.acquire_timeout(SEC).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(limiter.inflight(), 6);
    assert!(limiter.try_acquire().is_err());
    drop((held, w, p, q));
}

/// `adaptWhenLimitDecreases`: four held, the limit cut to 3, one
/// returned: the next acquire waits out its timeout.
#[tokio::test(start_paused = true)]
async fn lifo_adapts_when_the_limit_decreases() {
    let limit = Settable::starting_at(4);
    let limiter = lifo(limit.clone());
    let mut held = acquire_n(&limiter, 4);
    limit.set(3);
    held.remove(0).success();
    assert_eq!(limiter.limit(), 3);
    let start = Instant::now();
    assert_eq!(
        limiter.acquire_timeout(SEC).await.unwrap_err(),
        AcquireError::TimedOut
    );
    assert_eq!(start.elapsed(), SEC);
}

/// `verifyFifoOrder` (which checks LIFO): five callers queue 50 ms apart;
/// the first batch of four returns 100 ms apart; each caller returns its
/// permit at once; they are served newest first.
#[tokio::test(start_paused = true)]
async fn lifo_serves_the_newest_waiter_first() {
    let limiter = lifo(fixed(4));
    let first_batch = acquire_n(&limiter, 4);
    let values = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        tokio::time::sleep(MS * 50).await;
        let (l, values) = (limiter.clone(), values.clone());
        tasks.push(tokio::spawn(async move {
            match l.acquire_timeout(SEC).await {
                Ok(p) => {
                    values.lock().unwrap().push(i);
                    p.success();
                }
                Err(_) => values.lock().unwrap().push(-1),
            }
        }));
    }
    for p in first_batch {
        tokio::time::sleep(MS * 100).await;
        p.success();
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*values.lock().unwrap(), [4, 3, 2, 1, 0]);
}

/// `timeoutAcquireRaceCondition`: ten callers time out together while the
/// first to time out returns the last permit; no permit is lost (three
/// held after each round).
#[tokio::test(start_paused = true)]
async fn lifo_timeout_racing_a_release_loses_no_permit() {
    let limiter = AdaptiveLimiter::builder()
        .algorithm(fixed(4))
        .order(Order::Lifo)
        .max_backlog(1000)
        .build()
        .unwrap();
    let _three = acquire_n(&limiter, 3);
    for _ in 0..10 {
        let one = Arc::new(Mutex::new(Some(limiter.try_acquire().unwrap())));
        let first_timeout = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (l, one, first) = (limiter.clone(), one.clone(), first_timeout.clone());
            tasks.push(tokio::spawn(async move {
                match l.acquire_timeout(MS * 10).await {
                    Ok(p) => p.success(),
                    Err(_) => {
                        if !first.swap(true, Ordering::SeqCst) {
                            one.lock().unwrap().take().unwrap().success();
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(first_timeout.load(Ordering::SeqCst));
        let m = limiter.metrics();
        assert_eq!((m.inflight, m.waiting), (3, 0));
    }
    assert!(limiter.try_acquire().is_ok(), "the fourth permit is free");
}

// Reference: tokio (tokio/src/sync/tests/semaphore_batch.rs,
// release_permits_at_drop), applied to the backlog: a waker replaced by a
// re-poll, or dropped with a cancelled wait, runs its owner's drop code,
// which may return a permit to the same limiter.

/// A waker that owns a permit of the limiter it waits on.
struct PermitInWaker(#[allow(dead_code)] Mutex<Option<Permit>>);

impl std::task::Wake for PermitInWaker {
    fn wake(self: Arc<Self>) {}
}

fn permit_waker(p: Permit) -> std::task::Waker {
    std::task::Waker::from(Arc::new(PermitInWaker(Mutex::new(Some(p)))))
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
fn tokio_a_waiters_dropped_waker_may_return_a_permit() {
    without_deadlock(|| {
        let limiter = AdaptiveLimiter::new(fixed(2));
        let (a, b) = (
            limiter.try_acquire().unwrap(),
            limiter.try_acquire().unwrap(),
        );
        let mut waiting = limiter.acquire();
        assert!(poll_with(&mut waiting, &permit_waker(a)).is_pending());
        // Re-polled with another waker: the first is dropped and returns
        // its permit, which goes to this very waiter.
        assert!(poll_with(&mut waiting, &permit_waker(b)).is_pending());
        let held = match poll_with(&mut waiting, std::task::Waker::noop()) {
            std::task::Poll::Ready(p) => p.unwrap(),
            std::task::Poll::Pending => panic!("the returned permit was not handed on"),
        };
        assert_eq!(limiter.inflight(), 1);
        // Cancelled: its waker is dropped and returns its permit.
        let c = limiter.try_acquire().unwrap();
        let mut cancelled = limiter.acquire();
        assert!(poll_with(&mut cancelled, &permit_waker(c)).is_pending());
        drop(cancelled);
        assert_eq!(limiter.inflight(), 1);
        held.ignore();
        assert_eq!(limiter.inflight(), 0);
    });
}
