//! Behaviour tests of `flowguard::adaptive`, on Tokio's paused clock: the
//! simulation of a backend with a queueing knee (convergence, following
//! the knee, goodput and p99 against fixed limits), release order, the
//! backlog, timeouts, cancellation, partitions, bypass, the permit's
//! reports, metrics and history, the pool and pipeline integrations, and
//! inflight never above the limit under 100 tasks.

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
