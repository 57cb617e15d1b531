//! Behaviour tests of `flowguard::pipeline`, the whole stack on Tokio's
//! paused clock: exact attempt times, breaker transitions, no retry into
//! an open breaker, the deadline to the millisecond, tokens and slots.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowguard::ConfigErrorKind;
use flowguard::breaker::{CircuitBreaker, State};
use flowguard::fanout::HedgePolicy;
use flowguard::pipeline::{Admission, Pipeline, PipelineError};
use flowguard::pool::WorkerPool;
use flowguard::rate::{Quota, RateLimiter};
use flowguard::retry::{Backoff, RetryPolicy};
use flowguard::semaphore::Semaphore;
use tokio::time::{Instant, sleep};

const MS: Duration = Duration::from_millis(1);

fn constant_retry(n: u32, ms: u64) -> RetryPolicy {
    RetryPolicy::new()
        .max_retries(n)
        .backoff(Backoff::constant(Duration::from_millis(ms)))
}

/// Records when each attempt's operation started, relative to `start`.
#[derive(Clone)]
struct Log {
    start: Instant,
    times: Arc<Mutex<Vec<Duration>>>,
}

impl Log {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            times: Arc::default(),
        }
    }
    fn hit(&self) -> usize {
        let mut t = self.times.lock().unwrap();
        t.push(self.start.elapsed());
        t.len()
    }
    fn times(&self) -> Vec<Duration> {
        self.times.lock().unwrap().clone()
    }
}

#[tokio::test(start_paused = true)]
async fn retries_until_the_backend_answers_at_exact_times() {
    let p = Pipeline::builder()
        .retry(constant_retry(3, 100))
        .build()
        .unwrap();
    let log = Log::new();
    let got = p
        .call(|| {
            let n = log.hit();
            async move { if n < 3 { Err("503") } else { Ok(n) } }
        })
        .await;
    assert_eq!(got, Ok(3));
    assert_eq!(log.times(), [0, 100, 200].map(|m| m * MS));
    let m = p.metrics();
    assert_eq!((m.calls, m.succeeded, m.failed), (1, 1, 0));
    assert_eq!(m.retry.unwrap().retries, 2);
}

/// The breaker counts every attempt; once it opens, the retry stops at
/// once instead of calling into it, and says when to come back.
#[tokio::test(start_paused = true)]
async fn no_retry_into_an_open_breaker() {
    let breaker = CircuitBreaker::builder()
        .without_failure_rate()
        .consecutive_failures(3)
        .open_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let p = Pipeline::builder()
        .retry(constant_retry(5, 10))
        .breaker(breaker.clone())
        .build()
        .unwrap();
    let log = Log::new();
    let err = p
        .call(|| {
            log.hit();
            async { Err::<(), _>("down") }
        })
        .await
        .unwrap_err();
    assert_eq!(
        log.times(),
        [0, 10, 20].map(|m| m * MS),
        "three attempts reach the backend"
    );
    assert_eq!(
        err,
        PipelineError::BreakerOpen {
            retry_after: Some(Duration::from_secs(5) - 10 * MS)
        }
    );
    assert_eq!(breaker.state(), State::Open);
    let m = p.metrics();
    assert_eq!(m.breaker_refusals, 1);
    assert_eq!(m.breaker.unwrap().refused, 1);
}

/// An attempt that panics counts as a breaker failure (the permit is
/// dropped by the unwinding panic), as a failed attempt does; the panic
/// reaches the caller.
#[tokio::test(start_paused = true)]
async fn a_panicking_attempt_is_a_breaker_failure() {
    let breaker = CircuitBreaker::builder()
        .without_failure_rate()
        .consecutive_failures(2)
        .build()
        .unwrap();
    let p = Pipeline::builder()
        .breaker(breaker.clone())
        .build()
        .unwrap();
    for _ in 0..2 {
        let p = p.clone();
        let joined = tokio::spawn(async move {
            let _ = p
                .call(|| async {
                    if true {
                        panic!("the backend client blew up");
                    }
                    Ok::<(), &str>(())
                })
                .await;
        })
        .await;
        assert!(joined.unwrap_err().is_panic());
    }
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.metrics().failed_calls, 2);
}

/// A slow attempt is cut by the attempt timeout, counted as a failure and
/// retried; the fast retry answers.
#[tokio::test(start_paused = true)]
async fn a_timed_out_attempt_is_a_retried_failure() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(10)
        .build()
        .unwrap();
    let p = Pipeline::builder()
        .retry(constant_retry(2, 50))
        .breaker(breaker.clone())
        .attempt_timeout(200 * MS)
        .build()
        .unwrap();
    let log = Log::new();
    let got = p
        .call(|| {
            let n = log.hit();
            async move {
                sleep(if n == 1 {
                    Duration::from_secs(1)
                } else {
                    10 * MS
                })
                .await;
                Ok::<_, ()>(n)
            }
        })
        .await;
    assert_eq!(got, Ok(2));
    assert_eq!(log.times(), [0, 250].map(|m| m * MS));
    assert_eq!(log.start.elapsed(), 260 * MS);
    let b = breaker.metrics();
    assert_eq!((b.calls, b.failed_calls), (2, 1));
}

/// The total deadline cuts the attempt in flight to the millisecond.
#[tokio::test(start_paused = true)]
async fn the_total_deadline_is_kept_to_the_millisecond() {
    let p = Pipeline::builder()
        .timeout(650 * MS)
        .retry(constant_retry(5, 100))
        .attempt_timeout(300 * MS)
        .build()
        .unwrap();
    let log = Log::new();
    let err = p
        .call(|| {
            log.hit();
            async {
                sleep(Duration::from_secs(10)).await;
                Ok::<(), ()>(())
            }
        })
        .await
        .unwrap_err();
    // Attempt 1 runs 0–300 (cut by its timeout), attempt 2 from 400 is cut
    // by the total deadline at 650.
    assert_eq!(log.times(), [0, 400].map(|m| m * MS));
    assert_eq!(log.start.elapsed(), 650 * MS);
    assert_eq!(
        err,
        PipelineError::Timeout {
            attempts: 2,
            last: None
        }
    );
    assert_eq!(p.metrics().timeouts, 1);
}

/// With a deadline, the retry never sleeps past it: the call ends early.
#[tokio::test(start_paused = true)]
async fn the_retry_never_sleeps_past_the_total_deadline() {
    let p = Pipeline::builder()
        .timeout(750 * MS)
        .retry(constant_retry(5, 100))
        .attempt_timeout(300 * MS)
        .build()
        .unwrap();
    let log = Log::new();
    let err = p
        .call(|| {
            log.hit();
            async { Err::<(), _>("500") }
        })
        .await
        .unwrap_err();
    assert_eq!(log.times(), [0, 100, 200, 300, 400, 500].map(|m| m * MS));
    assert_eq!(
        err,
        PipelineError::RetriesExhausted {
            last: "500",
            attempts: 6
        }
    );
    let p = Pipeline::builder()
        .timeout(250 * MS)
        .retry(constant_retry(5, 100))
        .build()
        .unwrap();
    let log = Log::new();
    let err = p
        .call(|| {
            log.hit();
            async { Err::<(), _>("500") }
        })
        .await
        .unwrap_err();
    // 0, 100, 200; a sleep to 300 would pass 250.
    assert_eq!(log.times(), [0, 100, 200].map(|m| m * MS));
    assert_eq!(log.start.elapsed(), 200 * MS);
    assert_eq!(
        err,
        PipelineError::Timeout {
            attempts: 3,
            last: Some("500")
        }
    );
}

/// A backend that fails, is slow, then recovers, under the whole stack.
#[tokio::test(start_paused = true)]
async fn fails_then_slow_then_recovers() {
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let t = transitions.clone();
    let start = Instant::now();
    let breaker = CircuitBreaker::builder()
        .without_failure_rate()
        .consecutive_failures(4)
        .open_wait(Duration::from_secs(1))
        .permitted_probes(1)
        .on_state_change(move |c| t.lock().unwrap().push((c.at - start, c.from, c.to)))
        .build()
        .unwrap();
    let p = Pipeline::builder()
        .timeout(Duration::from_secs(2))
        .retry(constant_retry(2, 100))
        .breaker(breaker.clone())
        .rate_limiter(RateLimiter::new(Quota::per_second(1000).unwrap()))
        .attempt_timeout(200 * MS)
        .build()
        .unwrap();
    // Failing until 1 s, slow (500 ms) until 3 s, then healthy.
    let backend = |at: Duration| async move {
        if at < Duration::from_secs(1) {
            Err("500")
        } else if at < Duration::from_secs(3) {
            sleep(500 * MS).await;
            Ok("slow")
        } else {
            Ok("fast")
        }
    };
    let log = Log::new();
    let mut results = Vec::new();
    for _ in 0..4 {
        let r = p
            .call(|| {
                log.hit();
                backend(start.elapsed())
            })
            .await;
        results.push((start.elapsed(), r));
        sleep(Duration::from_secs(1)).await;
    }
    // Call 1 at 0: attempts at 0, 100, 200 fail -> RetriesExhausted at 200.
    // Call 2 at 1.2 s: one slow attempt, timed out at 1.4 s (4th consecutive
    // failure: open) -> the retry hits the open breaker at 1.5 s.
    // Call 3 at 2.5 s: the open wait ended at 2.4 s; the one probe is slow,
    // times out at 2.7 s (open again), the retry is refused at 2.8 s.
    // Call 4 at 3.8 s: open wait over at 3.7 s, the probe is fast: closed.
    assert_eq!(
        results[0],
        (
            200 * MS,
            Err(PipelineError::RetriesExhausted {
                last: "500",
                attempts: 3
            })
        )
    );
    assert_eq!(
        results[1],
        (
            1500 * MS,
            Err(PipelineError::BreakerOpen {
                retry_after: Some(900 * MS)
            })
        )
    );
    assert_eq!(
        results[2],
        (
            2800 * MS,
            Err(PipelineError::BreakerOpen {
                retry_after: Some(900 * MS)
            })
        )
    );
    assert_eq!(results[3], (3800 * MS, Ok("fast")));
    assert_eq!(
        log.times(),
        [0, 100, 200, 1200, 2500, 3800].map(|m| m * MS),
        "no attempt reaches the backend while the breaker is open"
    );
    assert_eq!(
        *transitions.lock().unwrap(),
        [
            (1400 * MS, State::Closed, State::Open),
            (2500 * MS, State::Open, State::HalfOpen),
            (2700 * MS, State::HalfOpen, State::Open),
            (3800 * MS, State::Open, State::HalfOpen),
            (3800 * MS, State::HalfOpen, State::Closed),
        ]
    );
}

// ---- rate limiter and bulkhead ---------------------------------------------------

#[tokio::test(start_paused = true)]
async fn waiting_for_a_token_that_comes_too_late_is_refused_at_once() {
    let p = Pipeline::builder()
        .timeout(500 * MS)
        .rate_limiter(RateLimiter::new(Quota::per_second(1).unwrap()))
        .build()
        .unwrap();
    assert_eq!(p.call(|| async { Ok::<_, ()>(1) }).await, Ok(1));
    let start = Instant::now();
    let err = p.call(|| async { Ok::<_, ()>(2) }).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "refused without waiting");
    assert_eq!(
        err,
        PipelineError::RateLimited {
            retry_after: Some(Duration::from_secs(1))
        }
    );
    assert_eq!(p.metrics().rate_limited, 1);
}

#[tokio::test(start_paused = true)]
async fn a_shed_rate_limit_is_retried_after_its_retry_after() {
    let p = Pipeline::builder()
        .retry(constant_retry(1, 1))
        .rate_limiter_with(
            RateLimiter::new(Quota::per_second(4).unwrap().with_burst(1).unwrap()),
            Admission::Shed,
        )
        .build()
        .unwrap();
    assert_eq!(p.call(|| async { Ok::<_, ()>(1) }).await, Ok(1));
    let log = Log::new();
    let got = p
        .call(|| {
            log.hit();
            async { Ok::<_, ()>(2) }
        })
        .await;
    assert_eq!(got, Ok(2));
    assert_eq!(
        log.times(),
        [250 * MS],
        "the operation ran once, when the token came"
    );
}

#[tokio::test(start_paused = true)]
async fn a_breaker_refusal_costs_no_token() {
    let limiter = RateLimiter::new(Quota::per_hour(5).unwrap());
    let breaker = CircuitBreaker::new();
    breaker.force_open();
    let p = Pipeline::builder()
        .breaker(breaker)
        .rate_limiter(limiter.clone())
        .build()
        .unwrap();
    let err = p.call(|| async { Ok::<_, ()>(()) }).await.unwrap_err();
    assert_eq!(err, PipelineError::BreakerOpen { retry_after: None });
    assert_eq!(limiter.snapshot().available, 5);
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_sheds_and_gives_the_token_back() {
    let limiter = RateLimiter::new(Quota::per_hour(5).unwrap());
    let sem = Semaphore::new(1);
    let p = Pipeline::builder()
        .rate_limiter(limiter.clone())
        .bulkhead_with(sem.clone(), Admission::Shed)
        .build()
        .unwrap();
    let held = sem.try_acquire().unwrap();
    let err = p.call(|| async { Ok::<_, ()>(()) }).await.unwrap_err();
    assert_eq!(err, PipelineError::BulkheadFull);
    assert_eq!(limiter.snapshot().available, 5, "refunded");
    drop(held);
    assert_eq!(p.call(|| async { Ok::<_, ()>(()) }).await, Ok(()));
    assert_eq!(limiter.snapshot().available, 4);
    assert_eq!(p.metrics().bulkhead_full, 1);
}

/// A worker pool as the bulkhead: pipeline attempts and the pool's own
/// tasks share one limit. With 2 slots and one long task running, four
/// pipeline calls of 10 ms go one at a time on the other slot; a full pool
/// sheds and refunds the token.
#[tokio::test(start_paused = true)]
async fn a_worker_pool_bulkhead_shares_the_pools_limit() {
    let pool = WorkerPool::builder()
        .max_concurrency(2)
        .queue_capacity(8)
        .build()
        .unwrap();
    let p = Pipeline::<Duration, ()>::builder()
        .worker_pool(pool.clone())
        .build()
        .unwrap();
    let long = pool.submit(sleep(100 * MS)).await.unwrap();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (p, pool) = (p.clone(), pool.clone());
        tasks.spawn(async move {
            p.call(|| async {
                assert!(pool.metrics().running <= 2);
                sleep(10 * MS).await;
                Ok(start.elapsed())
            })
            .await
            .unwrap()
        });
    }
    let mut ends = Vec::new();
    while let Some(r) = tasks.join_next().await {
        ends.push(r.unwrap());
    }
    ends.sort();
    assert_eq!(ends, [10 * MS, 20 * MS, 30 * MS, 40 * MS]);
    assert_eq!(pool.metrics().running, 1, "the long task still runs");
    long.await.unwrap();
    assert_eq!(pool.metrics().completed, 5);
    assert_eq!(p.metrics().pool.unwrap().completed, 5);

    // Shed: a full pool refuses at once and the token comes back.
    let limiter = RateLimiter::new(Quota::per_hour(5).unwrap());
    let shed = Pipeline::<(), ()>::builder()
        .rate_limiter(limiter.clone())
        .worker_pool_with(pool.clone(), Admission::Shed)
        .build()
        .unwrap();
    let (a, b) = (pool.slot().await.unwrap(), pool.slot().await.unwrap());
    let err = shed.call(|| async { Ok(()) }).await.unwrap_err();
    assert_eq!(err, PipelineError::BulkheadFull);
    assert_eq!(limiter.snapshot().available, 5, "refunded");
    assert_eq!(shed.metrics().bulkhead_full, 1);
    drop((a, b));
    assert_eq!(shed.call(|| async { Ok(()) }).await, Ok(()));
}

/// Waiting for a pool slot ends at the pipeline's deadline, to the
/// millisecond, and leaves the pool's queue as it was.
#[tokio::test(start_paused = true)]
async fn a_worker_pool_wait_ends_at_the_deadline() {
    let pool = WorkerPool::builder().max_concurrency(1).build().unwrap();
    let p = Pipeline::<(), ()>::builder()
        .timeout(50 * MS)
        .worker_pool(pool.clone())
        .build()
        .unwrap();
    let held = pool.slot().await.unwrap();
    let start = Instant::now();
    let err = p.call(|| async { Ok(()) }).await.unwrap_err();
    assert!(
        matches!(
            err,
            PipelineError::BulkheadFull | PipelineError::Timeout { .. }
        ),
        "{err:?}"
    );
    assert_eq!(start.elapsed(), 50 * MS);
    let m = pool.metrics();
    assert_eq!((m.running, m.queued), (1, 0));
    drop(held);
    assert_eq!(p.call(|| async { Ok(()) }).await, Ok(()));
}

#[test]
fn a_pipeline_has_one_bulkhead() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let err = Pipeline::<(), ()>::builder()
        .bulkhead(Semaphore::new(1))
        .worker_pool(WorkerPool::builder().build().unwrap())
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "worker_pool");
    assert_eq!(err.kind(), ConfigErrorKind::Conflict);
}

#[tokio::test(start_paused = true)]
async fn the_bulkhead_bounds_concurrent_attempts() {
    let p = Pipeline::builder()
        .bulkhead(Semaphore::new(2))
        .build()
        .unwrap();
    let running = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (p, running, peak) = (p.clone(), running.clone(), peak.clone());
        tasks.spawn(async move {
            p.call(|| {
                let (running, peak) = (running.clone(), peak.clone());
                async move {
                    let n = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    sleep(100 * MS).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, ()>(())
                }
            })
            .await
        });
    }
    let start = Instant::now();
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), 300 * MS);
}

// ---- classifier, hedge, fallback ---------------------------------------------------

/// One classifier for breaker and retry: a 503 value is a retried failure,
/// a 404 error is neither retried nor counted against the backend.
#[tokio::test(start_paused = true)]
async fn one_classifier_for_breaker_and_retry() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(10)
        .build()
        .unwrap();
    let p = Pipeline::<u16, &str>::builder()
        .retry(constant_retry(2, 10))
        .breaker(breaker.clone())
        .failure_if(|r| matches!(r, Ok(503)) || matches!(r, Err(e) if *e != "404"))
        .build()
        .unwrap();
    let log = Log::new();
    let got = p
        .call(|| {
            log.hit();
            async { Ok(503) }
        })
        .await;
    assert_eq!(got, Ok(503), "retries ran out; the last value comes back");
    assert_eq!(log.times().len(), 3);
    assert_eq!(breaker.metrics().failed_calls, 3);
    let err = p.call(|| async { Err("404") }).await.unwrap_err();
    assert_eq!(err, PipelineError::Inner("404"));
    let b = breaker.metrics();
    assert_eq!(
        (b.calls, b.failed_calls),
        (4, 3),
        "a 404 is the backend working"
    );
}

#[tokio::test(start_paused = true)]
async fn the_retry_after_hook_sets_the_next_delay() {
    let p = Pipeline::<u16, Duration>::builder()
        .retry(constant_retry(1, 10))
        .retry_after(|r| r.err().copied())
        .build()
        .unwrap();
    let log = Log::new();
    let _ = p
        .call(|| {
            let n = log.hit();
            async move {
                if n == 1 {
                    Err(Duration::from_secs(3))
                } else {
                    Ok(200)
                }
            }
        })
        .await;
    assert_eq!(log.times(), [Duration::ZERO, Duration::from_secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn hedged_copies_each_take_a_token() {
    let limiter = RateLimiter::new(Quota::per_hour(10).unwrap());
    let p = Pipeline::builder()
        .hedge(HedgePolicy::builder().fixed_delay(50 * MS).build().unwrap())
        .rate_limiter(limiter.clone())
        .build()
        .unwrap();
    let log = Log::new();
    let got = p
        .call(|| {
            let n = log.hit();
            async move {
                sleep(if n == 1 {
                    Duration::from_secs(1)
                } else {
                    10 * MS
                })
                .await;
                Ok::<_, ()>(n)
            }
        })
        .await;
    assert_eq!(got, Ok(2));
    assert_eq!(log.times(), [0, 50].map(|m| m * MS));
    assert_eq!(log.start.elapsed(), 60 * MS);
    assert_eq!(limiter.snapshot().available, 8);
}

#[tokio::test(start_paused = true)]
async fn the_fallback_sees_which_layer_refused() {
    let breaker = CircuitBreaker::new();
    breaker.force_open();
    let p = Pipeline::<&str, &str>::builder()
        .breaker(breaker)
        .fallback(|e| match e {
            PipelineError::BreakerOpen { .. } => Ok("from cache"),
            other => Err(other),
        })
        .build()
        .unwrap();
    assert_eq!(p.call(|| async { Ok("live") }).await, Ok("from cache"));
    let m = p.metrics();
    assert_eq!((m.fallbacks, m.succeeded, m.breaker_refusals), (1, 1, 1));
}

// ---- cancellation, validation, types ---------------------------------------------

/// Dropping a call mid-attempt gives the half-open probe slot and the
/// bulkhead permit back, and makes no further attempt.
#[tokio::test(start_paused = true)]
async fn dropping_a_call_gives_everything_back() {
    let breaker = CircuitBreaker::builder()
        .without_failure_rate()
        .consecutive_failures(1)
        .open_wait(100 * MS)
        .permitted_probes(1)
        .build()
        .unwrap();
    let sem = Semaphore::new(1);
    let p = Pipeline::builder()
        .retry(constant_retry(3, 10))
        .breaker(breaker.clone())
        .bulkhead(sem.clone())
        .build()
        .unwrap();
    let _ = p.call(|| async { Err::<(), _>(()) }).await; // opens
    sleep(100 * MS).await;
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let p2 = p.clone();
    let probe = tokio::spawn(async move {
        p2.call(|| {
            c.fetch_add(1, Ordering::SeqCst);
            async {
                sleep(Duration::from_secs(60)).await;
                Ok::<(), ()>(())
            }
        })
        .await
    });
    sleep(10 * MS).await;
    assert_eq!(sem.available(), 0);
    probe.abort();
    let _ = probe.await;
    assert_eq!(sem.available(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The probe slot came back: the next call is admitted as a probe.
    assert_eq!(p.call(|| async { Ok::<_, ()>(()) }).await, Ok(()));
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn builders_validate_every_field() {
    let e = Pipeline::<(), ()>::builder()
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("timeout", ConfigErrorKind::Zero));
    let e = Pipeline::<(), ()>::builder()
        .attempt_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("attempt_timeout", ConfigErrorKind::Zero)
    );
    let e = Pipeline::<(), ()>::builder()
        .timeout(MS)
        .attempt_timeout(MS)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("attempt_timeout", ConfigErrorKind::Conflict)
    );
    let e = Pipeline::<(), ()>::builder()
        .retry(RetryPolicy::new().max_delay(Duration::ZERO))
        .build()
        .unwrap_err();
    assert_eq!((e.component(), e.field()), ("pipeline", "max_delay"));
    let e = Pipeline::<(), ()>::builder()
        .timeout(10 * MS)
        .retry(RetryPolicy::new().attempt_margin(10 * MS))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "attempt_margin");
}

#[test]
fn errors_say_which_layer() {
    let cases: [(PipelineError<&str>, &str, &str); 4] = [
        (
            PipelineError::Inner("x"),
            "operation",
            "operation failed: x",
        ),
        (
            PipelineError::RetriesExhausted {
                last: "x",
                attempts: 3,
            },
            "retry",
            "retries exhausted: x",
        ),
        (
            PipelineError::RateLimited {
                retry_after: Some(2 * MS),
            },
            "rate_limit",
            "rate limited; retry after 2ms",
        ),
        (PipelineError::BulkheadFull, "bulkhead", "bulkhead full"),
    ];
    for (e, layer, text) in cases {
        assert_eq!(e.layer(), layer);
        assert_eq!(e.to_string(), text);
    }
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Pipeline<u32, std::io::Error>>();
    send_sync::<PipelineError<std::io::Error>>();
    let p = Pipeline::<u32, ()>::builder().build().unwrap();
    send(&p.call(|| async { Ok(1) }));
}

#[tokio::test(start_paused = true)]
async fn a_keyed_rate_limit_holds_each_key_to_its_own_quota() {
    use flowguard::rate::KeyedRateLimiter;
    let per_key = KeyedRateLimiter::new(Quota::per_second(2).unwrap().with_burst(1).unwrap());
    let p = Pipeline::<u32, ()>::builder()
        .timeout(Duration::from_secs(1))
        .keyed_rate_limiter(per_key.clone())
        .build()
        .unwrap();
    let start = Instant::now();
    assert_eq!(p.call_keyed(&"a", || async { Ok(1) }).await, Ok(1));
    assert_eq!(
        p.call_keyed(&"b", || async { Ok(2) }).await,
        Ok(2),
        "b has its own bucket"
    );
    // a's next token comes in 500 ms, within the deadline: the call waits for it.
    assert_eq!(p.call_keyed(&"a", || async { Ok(3) }).await, Ok(3));
    assert_eq!(start.elapsed(), 500 * MS);
    // Shed instead: refused at once with the wait in the error.
    let shed = Pipeline::<u32, ()>::builder()
        .keyed_rate_limiter_with(per_key, Admission::Shed)
        .build()
        .unwrap();
    let err = shed.call_keyed(&"a", || async { Ok(4) }).await.unwrap_err();
    assert_eq!(
        err,
        PipelineError::RateLimited {
            retry_after: Some(500 * MS)
        }
    );
    assert_eq!(p.metrics().keyed_rate_limiter.unwrap().keys, 2);
}

// Reference: Python asyncio (Lib/test/test_asyncio/test_timeouts.py)

/// test_timeout_basic: the operation is cut, and dropped, at the timeout.
#[tokio::test(start_paused = true)]
async fn asyncio_timeout_cuts_and_drops_the_operation() {
    struct Dropped(Arc<AtomicU32>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicU32::new(0));
    let p = Pipeline::<(), ()>::builder()
        .timeout(10 * MS)
        .build()
        .unwrap();
    let start = Instant::now();
    let err = p
        .call(|| {
            let guard = Dropped(dropped.clone());
            async move {
                let _guard = guard;
                sleep(Duration::from_secs(10)).await;
                Ok(())
            }
        })
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), 10 * MS);
    assert_eq!(
        err,
        PipelineError::Timeout {
            attempts: 1,
            last: None
        }
    );
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    assert_eq!(p.metrics().timeouts, 1);
}

/// test_nested_timeouts: when the attempt timeout and the total timeout
/// are due at the same instant, the caller sees the outer one.
#[tokio::test(start_paused = true)]
async fn asyncio_nested_timeouts_due_together_report_the_total_timeout() {
    let p = Pipeline::builder()
        .timeout(650 * MS)
        .retry(constant_retry(5, 50))
        .attempt_timeout(300 * MS)
        .build()
        .unwrap();
    let log = Log::new();
    let err = p
        .call(|| {
            log.hit();
            async {
                sleep(Duration::from_secs(10)).await;
                Ok::<(), ()>(())
            }
        })
        .await
        .unwrap_err();
    // Attempt 1: 0–300 (attempt timeout); attempt 2 from 350, whose
    // attempt timeout is due at 650, the total deadline.
    assert_eq!(log.times(), [0, 350].map(|m| m * MS));
    assert_eq!(log.start.elapsed(), 650 * MS);
    assert_eq!(
        err,
        PipelineError::Timeout {
            attempts: 2,
            last: None
        }
    );
    assert_eq!(p.metrics().timeouts, 1);
}

/// An operation that ends at the timeout instant itself keeps its value,
/// under the total timeout and under the attempt timeout alike.
#[tokio::test(start_paused = true)]
async fn asyncio_an_operation_done_exactly_at_the_timeout_keeps_its_value() {
    let total = Pipeline::<u32, ()>::builder()
        .timeout(100 * MS)
        .build()
        .unwrap();
    let each = Pipeline::<u32, ()>::builder()
        .attempt_timeout(100 * MS)
        .build()
        .unwrap();
    for p in [total, each] {
        let start = Instant::now();
        let got = p
            .call(|| async {
                sleep(100 * MS).await;
                Ok(7)
            })
            .await;
        assert_eq!(got, Ok(7));
        assert_eq!(start.elapsed(), 100 * MS);
        assert_eq!(p.metrics().timeouts, 0);
    }
}

/// test_foreign_exception_passed: an error raised inside the timeout comes
/// back as it is, not as a timeout.
#[tokio::test(start_paused = true)]
async fn asyncio_an_error_inside_the_timeout_passes_through() {
    let p = Pipeline::<(), &str>::builder()
        .timeout(10 * MS)
        .build()
        .unwrap();
    let err = p.call(|| async { Err("KeyError") }).await.unwrap_err();
    assert_eq!(err, PipelineError::Inner("KeyError"));
    assert_eq!(p.metrics().timeouts, 0);
}
