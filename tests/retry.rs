//! Behaviour tests of `flowguard::retry`, on Tokio's paused clock: exact
//! delay schedules, jitter bounds, classifiers, the deadline, the budget,
//! cancellation and metrics.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flowguard::ConfigErrorKind;
use flowguard::retry::{Backoff, Jitter, Retry, RetryBudget, RetryError};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

/// Runs a call whose every attempt fails, and returns the offsets (from the
/// start) at which the attempts began.
async fn attempt_times(
    retry: &Retry<(), &'static str>,
) -> (Vec<Duration>, RetryError<&'static str>) {
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let t = times.clone();
    let err = retry
        .call(|| {
            t.lock().unwrap().push(start.elapsed());
            async { Err("down") }
        })
        .await
        .unwrap_err();
    let v = times.lock().unwrap().clone();
    (v, err)
}

fn gaps(times: &[Duration]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

// ---- schedules ---------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn exponential_schedule_is_exact() {
    let retry = Retry::builder()
        .max_retries(3)
        .backoff(Backoff::exponential(Duration::from_secs(2), 2.0))
        .build()
        .unwrap();
    let (times, err) = attempt_times(&retry).await;
    assert_eq!(
        times,
        [0, 2, 6, 14].map(Duration::from_secs),
        "2 s, 4 s, 8 s between attempts"
    );
    assert!(matches!(
        err,
        RetryError::Exhausted {
            error: "down",
            attempts: 4
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn constant_and_linear_schedules_are_exact() {
    let constant = Retry::builder()
        .max_retries(3)
        .backoff(Backoff::constant(250 * MS))
        .build()
        .unwrap();
    let (times, _) = attempt_times(&constant).await;
    assert_eq!(gaps(&times), [250 * MS; 3]);

    let linear = Retry::builder()
        .max_retries(4)
        .backoff(Backoff::Linear {
            base: 100 * MS,
            step: 50 * MS,
        })
        .build()
        .unwrap();
    let (times, _) = attempt_times(&linear).await;
    assert_eq!(gaps(&times), [100 * MS, 150 * MS, 200 * MS, 250 * MS]);
}

#[tokio::test(start_paused = true)]
async fn max_delay_caps_the_backoff() {
    let retry = Retry::builder()
        .max_retries(5)
        .backoff(Backoff::exponential(100 * MS, 3.0))
        .max_delay(500 * MS)
        .build()
        .unwrap();
    let (times, _) = attempt_times(&retry).await;
    assert_eq!(
        gaps(&times),
        [100 * MS, 300 * MS, 500 * MS, 500 * MS, 500 * MS]
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_within_its_bounds_and_repeats_with_a_seed() {
    let base = 100 * MS;
    let full_lo: fn(Duration) -> Duration = |_| Duration::ZERO;
    let half: fn(Duration) -> Duration = |t| t / 2;
    let same: fn(Duration) -> Duration = |t| t;
    for (jitter, lo, hi) in [(Jitter::Full, full_lo, same), (Jitter::Equal, half, same)] {
        let retry = Retry::builder()
            .max_retries(6)
            .backoff(Backoff::exponential(base, 2.0))
            .max_delay(2000 * MS)
            .jitter(jitter)
            .seed(42)
            .build()
            .unwrap();
        let (first, _) = attempt_times(&retry).await;
        for (i, g) in gaps(&first).into_iter().enumerate() {
            let temp = (base * 2u32.pow(i as u32)).min(2000 * MS);
            assert!(
                g >= lo(temp) && g <= hi(temp),
                "{jitter:?} retry {}: {g:?}",
                i + 1
            );
        }
        // Same seed, same sequence of calls: same delays.
        let again = Retry::builder()
            .max_retries(6)
            .backoff(Backoff::exponential(base, 2.0))
            .max_delay(2000 * MS)
            .jitter(jitter)
            .seed(42)
            .build()
            .unwrap();
        assert_eq!(attempt_times(&again).await.0, first);
    }
}

#[tokio::test(start_paused = true)]
async fn decorrelated_jitter_grows_from_the_base_within_three_times_the_last() {
    let retry = Retry::builder()
        .max_retries(20)
        .backoff(Backoff::constant(10 * MS))
        .max_delay(1000 * MS)
        .jitter(Jitter::Decorrelated)
        .seed(9)
        .build()
        .unwrap();
    let (times, _) = attempt_times(&retry).await;
    let mut prev = 10 * MS;
    for g in gaps(&times) {
        assert!(
            g >= 10 * MS && g <= (prev * 3).min(1000 * MS),
            "{g:?} after {prev:?}"
        );
        prev = g;
    }
}

// ---- classifier and hooks ------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn retryable_values_are_retried_and_the_last_is_returned() {
    let calls = AtomicU32::new(0);
    let retry = Retry::<u16, ()>::builder()
        .max_retries(2)
        .backoff(Backoff::constant(10 * MS))
        .retry_if(|r| matches!(r, Ok(503)))
        .build()
        .unwrap();
    let got = retry
        .call(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(503) }
        })
        .await;
    assert_eq!(
        got,
        Ok(503),
        "a retryable value that runs out is returned as is"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(retry.metrics().exhausted, 1);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_end_at_once() {
    let calls = AtomicU32::new(0);
    let retry = Retry::<(), &str>::builder()
        .retry_if(|r| matches!(r, Err("transient")))
        .build()
        .unwrap();
    let err = retry
        .call(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err("fatal") }
        })
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        RetryError::NotRetryable {
            error: "fatal",
            attempts: 1
        }
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(retry.metrics().not_retryable, 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_replaces_the_backoff_and_is_not_capped() {
    let retry = Retry::<(), Duration>::builder()
        .max_retries(2)
        .backoff(Backoff::constant(10 * MS))
        .max_delay(100 * MS)
        .jitter(Jitter::Full)
        .retry_after(|r| r.as_ref().err().copied())
        .build()
        .unwrap();
    let start = Instant::now();
    let times = Mutex::new(Vec::new());
    let _ = retry
        .call_with_attempt(|n| {
            times.lock().unwrap().push(start.elapsed());
            // The first error asks for 3 s, the second for nothing special.
            async move {
                Err(if n == 1 {
                    Duration::from_secs(3)
                } else {
                    7 * MS
                })
            }
        })
        .await;
    assert_eq!(
        *times.lock().unwrap(),
        [
            Duration::ZERO,
            Duration::from_secs(3),
            Duration::from_secs(3) + 7 * MS
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn attempt_numbers_count_from_one() {
    let seen = Mutex::new(Vec::new());
    let retry = Retry::<(), ()>::builder()
        .max_retries(2)
        .backoff(Backoff::constant(MS))
        .build()
        .unwrap();
    let _ = retry
        .call_with_attempt(|n| {
            seen.lock().unwrap().push(n);
            async { Err(()) }
        })
        .await;
    assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn zero_retries_means_one_call() {
    let retry = Retry::builder().max_retries(0).build().unwrap();
    let (times, err) = attempt_times(&retry).await;
    assert_eq!(times.len(), 1);
    assert_eq!(err.attempts(), 1);
}

// ---- deadline ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn never_sleeps_past_the_deadline() {
    let retry = Retry::builder()
        .max_retries(10)
        .backoff(Backoff::exponential(100 * MS, 2.0))
        .timeout(1000 * MS)
        .build()
        .unwrap();
    let (times, err) = attempt_times(&retry).await;
    // 0, 100, 300, 700; the next sleep (800 ms) would end at 1500 > 1000.
    assert_eq!(times, [0, 100, 300, 700].map(|m| m * MS));
    assert!(matches!(
        err,
        RetryError::Deadline {
            error: Some("down"),
            attempts: 4
        }
    ));
    assert_eq!(retry.metrics().deadline, 1);
}

#[tokio::test(start_paused = true)]
async fn attempt_margin_keeps_short_attempts_from_starting() {
    let retry = Retry::builder()
        .max_retries(10)
        .backoff(Backoff::constant(300 * MS))
        .timeout(1000 * MS)
        .attempt_margin(200 * MS)
        .build()
        .unwrap();
    let (times, err) = attempt_times(&retry).await;
    // 0, 300, 600: an attempt at 900 would have 100 ms < 200 ms margin.
    assert_eq!(times, [0, 300, 600].map(|m| m * MS));
    assert_eq!(err.attempts(), 3);
    assert!(err.is_deadline());
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_the_attempt_in_flight_to_the_millisecond() {
    let retry = Retry::<(), &str>::builder()
        .backoff(Backoff::constant(100 * MS))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = retry
        .call_deadline(start + 250 * MS, |n| async move {
            if n == 1 {
                Err("first")
            } else {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            }
        })
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), 250 * MS);
    assert!(matches!(
        err,
        RetryError::Deadline {
            error: Some("first"),
            attempts: 2
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_passed_deadline_starts_nothing() {
    let calls = AtomicU32::new(0);
    let retry = Retry::<(), ()>::builder().build().unwrap();
    let err = retry
        .call_deadline(Instant::now(), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        RetryError::Deadline {
            error: None,
            attempts: 0
        }
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn call_deadline_takes_the_earlier_of_its_deadline_and_the_timeout() {
    let retry = Retry::builder()
        .max_retries(100)
        .backoff(Backoff::constant(100 * MS))
        .timeout(350 * MS)
        .build()
        .unwrap();
    let start = Instant::now();
    let _ = retry
        .call_deadline(start + Duration::from_secs(10), |_| async {
            Err::<(), _>(())
        })
        .await;
    assert_eq!(start.elapsed(), 300 * MS);
}

// ---- budget -------------------------------------------------------------------------

/// 1 000 callers hit a dead backend at once, each allowed 3 retries: without
/// a budget that is 4 000 calls; with a 20 % budget (no floor) the retries
/// stay within 20 % of the first calls.
#[tokio::test(start_paused = true)]
async fn a_budget_keeps_a_dead_backend_from_a_retry_storm() {
    let budget = RetryBudget::builder()
        .ratio(0.2)
        .min_per_sec(0)
        .ttl(Duration::from_secs(10))
        .build()
        .unwrap();
    let retry = Retry::<(), &str>::builder()
        .max_retries(3)
        .backoff(Backoff::exponential(10 * MS, 2.0))
        .jitter(Jitter::Full)
        .seed(1)
        .budget(budget.clone())
        .build()
        .unwrap();
    let backend_calls = Arc::new(AtomicU32::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let retry = retry.clone();
        let calls = backend_calls.clone();
        tasks.spawn(async move {
            retry
                .call(|| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Err("dead") }
                })
                .await
        });
    }
    let mut refused = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap().unwrap_err() {
            RetryError::BudgetExhausted { error: "dead", .. } => refused += 1,
            RetryError::Exhausted { .. } => {}
            other => panic!("unexpected end: {other:?}"),
        }
    }
    let total = backend_calls.load(Ordering::SeqCst);
    let m = retry.metrics();
    assert_eq!(m.calls, 1000);
    assert_eq!(total as u64, m.attempts);
    assert_eq!(m.retries, 200, "exactly 20 % of 1 000 first calls");
    assert_eq!(total, 1200, "extra load 20 %, not 300 %");
    assert_eq!(m.budget_refusals, refused);
    assert!(refused >= 800);
    assert_eq!(budget.remaining(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_budget_floor_allows_some_retries_with_little_traffic() {
    let budget = RetryBudget::builder()
        .ratio(0.0)
        .min_per_sec(1)
        .ttl(Duration::from_secs(2))
        .build()
        .unwrap();
    assert_eq!(budget.remaining(), 2);
    let retry = Retry::<(), ()>::builder()
        .max_retries(5)
        .backoff(Backoff::constant(MS))
        .budget(budget)
        .build()
        .unwrap();
    let err = retry.call(|| async { Err(()) }).await.unwrap_err();
    assert!(matches!(
        err,
        RetryError::BudgetExhausted { attempts: 3, .. }
    ));
    // The withdrawals age out after the ttl: the floor is back.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(retry.budget().unwrap().remaining(), 2);
}

// ---- cancellation, sharing, metrics -------------------------------------------

#[tokio::test(start_paused = true)]
async fn dropping_the_call_stops_retrying() {
    let calls = Arc::new(AtomicU32::new(0));
    let retry = Retry::<(), ()>::builder()
        .max_retries(10)
        .backoff(Backoff::constant(100 * MS))
        .build()
        .unwrap();
    let c = calls.clone();
    let r = retry.clone();
    let call = tokio::spawn(async move {
        r.call(|| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Err(()) }
        })
        .await
    });
    tokio::time::sleep(150 * MS).await; // attempts at 0 and 100 ms
    call.abort();
    let _ = call.await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn clones_share_metrics() {
    let retry = Retry::<u32, ()>::builder()
        .backoff(Backoff::constant(MS))
        .build()
        .unwrap();
    let other = retry.clone();
    assert_eq!(retry.call(|| async { Ok(1) }).await, Ok(1));
    let n = AtomicU32::new(0);
    let got = other
        .call(|| async {
            if n.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(())
            } else {
                Ok(2)
            }
        })
        .await;
    assert_eq!(got, Ok(2));
    let m = retry.metrics();
    assert_eq!(
        (
            m.calls,
            m.attempts,
            m.retries,
            m.succeeded_first,
            m.succeeded_after_retry
        ),
        (2, 3, 1, 1, 1)
    );
}

#[test]
fn builders_validate_every_field() {
    let e = Retry::<(), ()>::builder()
        .backoff(Backoff::exponential(MS, f64::NAN))
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("backoff", ConfigErrorKind::TooSmall)
    );
    let e = Retry::<(), ()>::builder()
        .backoff(Backoff::constant(Duration::ZERO))
        .jitter(Jitter::Decorrelated)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("backoff", ConfigErrorKind::Conflict)
    );
    let e = Retry::<(), ()>::builder()
        .max_delay(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("max_delay", ConfigErrorKind::Zero));
    let e = Retry::<(), ()>::builder()
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("timeout", ConfigErrorKind::Zero));
    let e = Retry::<(), ()>::builder()
        .timeout(100 * MS)
        .attempt_margin(100 * MS)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("attempt_margin", ConfigErrorKind::Conflict)
    );
    // A zero constant delay is fine: retry at once.
    assert!(
        Retry::<(), ()>::builder()
            .backoff(Backoff::constant(Duration::ZERO))
            .build()
            .is_ok()
    );

    for (ratio, kind) in [
        (-0.1, ConfigErrorKind::TooSmall),
        (1000.5, ConfigErrorKind::TooLarge),
    ] {
        let e = RetryBudget::builder().ratio(ratio).build().unwrap_err();
        assert_eq!((e.field(), e.kind()), ("ratio", kind));
    }
    assert_eq!(
        RetryBudget::builder()
            .ratio(f64::NAN)
            .build()
            .unwrap_err()
            .field(),
        "ratio"
    );
    let e = RetryBudget::builder()
        .ttl(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("ttl", ConfigErrorKind::Zero));
    let e = RetryBudget::builder()
        .ttl(Duration::from_secs(7200))
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("ttl", ConfigErrorKind::TooLarge));
}

#[test]
fn errors_display_and_expose_their_parts() {
    let e: RetryError<std::io::Error> = RetryError::Exhausted {
        error: std::io::Error::other("boom"),
        attempts: 4,
    };
    assert_eq!(e.to_string(), "retries exhausted after 4 attempts: boom");
    assert!(std::error::Error::source(&e).is_some());
    let d: RetryError<&str> = RetryError::Deadline {
        error: None,
        attempts: 1,
    };
    assert_eq!(d.to_string(), "deadline reached after 1 attempt");
    assert_eq!(d.into_error(), None);
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Retry<u32, std::io::Error>>();
    send_sync::<RetryBudget>();
    send_sync::<RetryError<std::io::Error>>();
    let retry = Retry::<u32, ()>::builder().build().unwrap();
    send(&retry.call(|| async { Ok(1) }));
    send(&retry.call_deadline(Instant::now(), |_| async { Ok(1) }));
}

// Reference: App-vNext/Polly v8 (RetryResilienceStrategyTests.cs, RetryHelperTests.cs)
//
// Polly's `MaxRetryAttempts` is `max_retries`, `ShouldHandle` is `retry_if`,
// `DelayGenerator` is `retry_after` (`null` = `None`: use the backoff),
// `MaxDelay` is `max_delay`, and Polly's attempt index `k` (0 for the first
// retry) is `Backoff::delay(k + 1)`. Documented departures not ported: the
// default delays (Polly: a constant 2 s), Polly's jitters (±25 % for
// constant/linear, `DecorrelatedJitterBackoffV2` for exponential) and the
// `OnRetry` hook.

#[tokio::test(start_paused = true)]
async fn polly_retry_count_is_respected_for_handled_results() {
    let retry = Retry::<i32, ()>::builder()
        .max_retries(12)
        .backoff(Backoff::constant(Duration::ZERO))
        .retry_if(|r| matches!(r, Ok(0)))
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let r = retry
        .call(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(0) }
        })
        .await;
    // The last handled result comes back as it is.
    assert_eq!(r.unwrap(), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 13);
    let m = retry.metrics();
    assert_eq!((m.retries, m.exhausted), (12, 1));
}

#[tokio::test(start_paused = true)]
async fn polly_retry_count_is_respected_for_handled_errors() {
    let retry = Retry::<i32, &str>::builder()
        .max_retries(3)
        .backoff(Backoff::constant(Duration::ZERO))
        .retry_if(|r| matches!(r, Err("invalid operation")))
        .build()
        .unwrap();
    let err = retry
        .call(|| async { Err("invalid operation") })
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        RetryError::Exhausted {
            error: "invalid operation",
            attempts: 4
        }
    ));
    // An unhandled error is not retried.
    let err = retry.call(|| async { Err("argument") }).await.unwrap_err();
    assert!(matches!(
        err,
        RetryError::NotRetryable {
            error: "argument",
            attempts: 1
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn polly_multiple_retries_return_the_last_result() {
    let retry = Retry::<u32, ()>::builder()
        .max_retries(5)
        .backoff(Backoff::constant(Duration::ZERO))
        .retry_if(|_| true)
        .build()
        .unwrap();
    let r = retry.call_with_attempt(|n| async move { Ok(n) }).await;
    assert_eq!(r.unwrap(), 6);
}

#[tokio::test(start_paused = true)]
async fn polly_default_max_retry_attempts_is_three() {
    let retry = Retry::builder().build().unwrap();
    let (times, err) = attempt_times(&retry).await;
    assert_eq!((times.len(), err.attempts()), (4, 4));
}

/// Polly calls the `DelayGenerator` once per retry, not for the outcome
/// that ends the call, and sleeps exactly what it returns.
#[tokio::test(start_paused = true)]
async fn polly_delay_generator_is_respected_and_asked_once_per_retry() {
    let asked = Arc::new(AtomicU32::new(0));
    let a = asked.clone();
    let retry = Retry::<&str, ()>::builder()
        .max_retries(3)
        .backoff(Backoff::constant(Duration::from_secs(2)))
        .retry_if(|_| true)
        .retry_after(move |_| {
            a.fetch_add(1, Ordering::SeqCst);
            Some(120 * MS)
        })
        .build()
        .unwrap();
    let start = Instant::now();
    let times = Mutex::new(Vec::new());
    let r = retry
        .call(|| {
            times.lock().unwrap().push(start.elapsed());
            async { Ok("dummy") }
        })
        .await;
    assert_eq!(r.unwrap(), "dummy");
    assert_eq!(gaps(&times.lock().unwrap()), [120 * MS; 3]);
    assert_eq!(asked.load(Ordering::SeqCst), 3);
}

/// Polly: with a zero delay no timer is used at all. Here: the retry runs on
/// a runtime whose timers are disabled (a sleep would panic).
#[test]
fn polly_zero_delays_use_no_timer() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for hook in [false, true] {
        let mut b = Retry::<&str, ()>::builder()
            .max_retries(3)
            .backoff(Backoff::constant(Duration::ZERO))
            .retry_if(|_| true);
        if hook {
            b = b
                .backoff(Backoff::constant(Duration::from_secs(1)))
                .retry_after(|_| Some(Duration::ZERO));
        }
        let retry = b.build().unwrap();
        let r = rt.block_on(retry.call(|| async { Ok("dummy") }));
        assert_eq!(r.unwrap(), "dummy");
        assert_eq!(retry.metrics().retries, 3);
    }
}

#[tokio::test(start_paused = true)]
async fn polly_delay_generator_returning_none_uses_the_backoff() {
    let retry = Retry::builder()
        .max_retries(2)
        .backoff(Backoff::constant(2 * MS))
        .retry_after(|_| None)
        .build()
        .unwrap();
    let (times, _) = attempt_times(&retry).await;
    assert_eq!(gaps(&times), [2 * MS; 2]);
}

/// Polly's `OnRetry` sees 2 s, 4 s, 6 s for a linear backoff from 2 s.
#[tokio::test(start_paused = true)]
async fn polly_linear_delays_from_two_seconds() {
    let retry = Retry::builder()
        .max_retries(3)
        .backoff(Backoff::linear(Duration::from_secs(2)))
        .build()
        .unwrap();
    let (times, _) = attempt_times(&retry).await;
    assert_eq!(gaps(&times), [2, 4, 6].map(Duration::from_secs));
}

#[tokio::test(start_paused = true)]
async fn polly_max_delay_caps_a_linear_backoff() {
    let retry = Retry::builder()
        .max_retries(3)
        .backoff(Backoff::linear(Duration::from_secs(2)))
        .max_delay(123 * MS)
        .build()
        .unwrap();
    let (times, _) = attempt_times(&retry).await;
    assert_eq!(gaps(&times), [123 * MS; 3]);
}

/// `RetryHelperTests.Constant_Ok`, `Linear_Ok`, `Exponential_Ok` (zero and
/// one-second bases, attempts 0, 1, 2).
#[test]
fn polly_backoff_formulas() {
    let s = Duration::from_secs;
    for b in [
        Backoff::constant(Duration::ZERO),
        Backoff::linear(Duration::ZERO),
        Backoff::exponential(Duration::ZERO, 2.0),
    ] {
        assert_eq!([b.delay(1), b.delay(2), b.delay(3)], [Duration::ZERO; 3]);
    }
    let b = Backoff::constant(s(1));
    assert_eq!([b.delay(1), b.delay(2), b.delay(3)], [s(1), s(1), s(1)]);
    let b = Backoff::linear(s(1));
    assert_eq!([b.delay(1), b.delay(2), b.delay(3)], [s(1), s(2), s(3)]);
    let b = Backoff::exponential(s(1), 2.0);
    assert_eq!([b.delay(1), b.delay(2), b.delay(3)], [s(1), s(2), s(4)]);
    // `GetRetryDelay_Overflow_ReturnsMaxTimeSpan`.
    assert_eq!(
        Backoff::exponential(Duration::from_secs(86_400), 2.0).delay(1001),
        Duration::MAX
    );
}

/// `MaxDelay_Ok` for every backoff and jitter: attempt 2 (the third retry)
/// of a 10 s base capped at 1 s is 1 s without jitter, at most 1 s with.
/// `MaxDelay_DelayLessThanMaxDelay_Respected`: a cap above the delay does
/// nothing.
#[tokio::test(start_paused = true)]
async fn polly_max_delay_caps_every_backoff_and_jitter() {
    let ten = Duration::from_secs(10);
    for backoff in [
        Backoff::constant(ten),
        Backoff::linear(ten),
        Backoff::exponential(ten, 2.0),
    ] {
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ] {
            let retry = Retry::builder()
                .max_retries(3)
                .backoff(backoff)
                .jitter(jitter)
                .max_delay(Duration::from_secs(1))
                .seed(3)
                .build()
                .unwrap();
            let (times, _) = attempt_times(&retry).await;
            let third = gaps(&times)[2];
            if jitter == Jitter::None {
                assert_eq!(third, Duration::from_secs(1), "{backoff:?}");
            } else {
                assert!(
                    third <= Duration::from_secs(1),
                    "{backoff:?} {jitter:?}: {third:?}"
                );
            }
        }
    }
    let retry = Retry::builder()
        .max_retries(3)
        .backoff(Backoff::constant(Duration::from_secs(1)))
        .max_delay(Duration::from_secs(2))
        .build()
        .unwrap();
    let (times, _) = attempt_times(&retry).await;
    assert_eq!(gaps(&times)[2], Duration::from_secs(1));
}

/// `GetRetryDelay_OverflowWithMaxDelay_ReturnsMaxDelay`: an exponential
/// delay past `Duration::MAX` is capped at `max_delay`, not wrapped.
#[tokio::test(start_paused = true)]
async fn polly_overflowing_exponential_delay_is_capped_at_max_delay() {
    let day = Duration::from_secs(86_400);
    let retry = Retry::builder()
        .max_retries(70)
        .backoff(Backoff::exponential(day, 2.0))
        .max_delay(2 * day)
        .build()
        .unwrap();
    let (times, _) = attempt_times(&retry).await;
    let g = gaps(&times);
    assert_eq!(g.len(), 70);
    assert_eq!(g[0], day);
    assert!(g[1..].iter().all(|d| *d == 2 * day));
}

/// `GetRetryDelay_Exponential_Does_Not_Exceed_MaxDelay` /
/// `_Is_Positive_When_No_Maximum_Delay`, up to attempt 1025: an exponential
/// backoff from 2 s capped at 30 s never sleeps longer than the cap, and
/// the jitters that keep a floor (equal, decorrelated) never sleep zero.
#[tokio::test(start_paused = true)]
async fn polly_jittered_exponential_delays_stay_positive_and_under_the_cap() {
    let cap = Duration::from_secs(30);
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ] {
        let retry = Retry::builder()
            .max_retries(1025)
            .backoff(Backoff::exponential(Duration::from_secs(2), 2.0))
            .jitter(jitter)
            .max_delay(cap)
            .build()
            .unwrap();
        let (times, _) = attempt_times(&retry).await;
        let g = gaps(&times);
        assert_eq!(g.len(), 1025);
        assert!(g.iter().all(|d| *d <= cap), "{jitter:?}");
        if jitter != Jitter::Full {
            assert!(g.iter().all(|d| !d.is_zero()), "{jitter:?}");
        }
    }
}

/// `ExponentialWithJitter_EnsureRandomness`: two unseeded calls do not
/// sleep the same schedule.
#[tokio::test(start_paused = true)]
async fn polly_unseeded_jitter_differs_between_calls() {
    let retry = Retry::builder()
        .max_retries(20)
        .backoff(Backoff::exponential(Duration::from_millis(7800), 2.0))
        .jitter(Jitter::Full)
        .build()
        .unwrap();
    let (a, _) = attempt_times(&retry).await;
    let (b, _) = attempt_times(&retry).await;
    assert_ne!(gaps(&a), gaps(&b));
}

// Reference: Python asyncio (Lib/test/test_asyncio/test_timeouts.py, test_waitfor.py)

/// An attempt that ends at the deadline instant keeps its value (Tokio's
/// `timeout` polls the operation before its timer); one a millisecond
/// later is cut at the deadline.
#[tokio::test(start_paused = true)]
async fn asyncio_an_attempt_done_exactly_at_the_deadline_keeps_its_value() {
    let retry = Retry::<u32, &str>::builder()
        .timeout(100 * MS)
        .build()
        .unwrap();
    for (took, want) in [(100, Some(7)), (101, None)] {
        let start = Instant::now();
        let got = retry
            .call(|| async move {
                tokio::time::sleep(took * MS).await;
                Ok(7)
            })
            .await;
        assert_eq!(start.elapsed(), 100 * MS, "took {took} ms");
        match want {
            Some(v) => assert_eq!(got.ok(), Some(v)),
            None => assert!(got.unwrap_err().is_deadline()),
        }
    }
}
