//! Behaviour of `flowguard::breaker` on the paused Tokio clock, including
//! resilience4j's state-machine scenarios.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowguard::ConfigErrorKind;
use flowguard::breaker::{
    BreakerError, BreakerMetrics, Builder, CallPermit, CircuitBreaker, Outcome, Rejected, State,
    StateChange,
};
use tokio::time::{Instant, advance, sleep};

const S1: Duration = Duration::from_secs(1);

/// A failure-rate breaker over a count window, no slow policy.
fn rate_breaker(window: u32, minimum: u32, wait: Duration) -> CircuitBreaker {
    CircuitBreaker::builder()
        .failure_rate_threshold(50.0)
        .without_slow_call_rate()
        .count_window(window)
        .minimum_calls(minimum)
        .open_wait(wait)
        .permitted_probes(3)
        .build()
        .unwrap()
}

fn consecutive(n: u32, wait: Duration, probes: u32) -> Builder {
    CircuitBreaker::builder()
        .without_failure_rate()
        .without_slow_call_rate()
        .consecutive_failures(n)
        .open_wait(wait)
        .permitted_probes(probes)
}

async fn ok(b: &CircuitBreaker) -> Result<u32, BreakerError<&'static str>> {
    b.call(|| async { Ok(1) }).await
}

async fn err(b: &CircuitBreaker) -> Result<u32, BreakerError<&'static str>> {
    b.call(|| async { Err("boom") }).await
}

fn refused_for(r: Result<u32, BreakerError<&'static str>>) -> Option<Duration> {
    match r {
        Err(BreakerError::Rejected(Rejected::Open { retry_after })) => Some(retry_after),
        _ => None,
    }
}

fn m(b: &CircuitBreaker) -> BreakerMetrics {
    b.metrics()
}

// ---- resilience4j scenarios -------------------------------------------------

#[tokio::test(start_paused = true)]
async fn r4j_sssee_stays_closed_at_40_percent_and_sixth_error_trips_at_50() {
    let b = rate_breaker(10, 5, S1);
    for _ in 0..3 {
        assert_eq!(ok(&b).await.unwrap(), 1);
    }
    for _ in 0..2 {
        assert!(matches!(err(&b).await, Err(BreakerError::Inner("boom"))));
    }
    let mm = m(&b);
    assert_eq!(mm.state, State::Closed);
    assert_eq!(mm.failure_rate, Some(40.0));
    assert_eq!((mm.calls, mm.failed_calls), (5, 2));

    assert!(matches!(err(&b).await, Err(BreakerError::Inner("boom"))));
    let mm = m(&b);
    assert_eq!(mm.state, State::Open);
    assert_eq!(mm.failure_rate, Some(50.0));
    assert_eq!(refused_for(ok(&b).await), Some(S1));
    assert_eq!(m(&b).refused, 1);
}

#[tokio::test(start_paused = true)]
async fn r4j_rate_is_not_judged_below_minimum_calls() {
    let b = rate_breaker(10, 5, S1);
    for _ in 0..4 {
        let _ = err(&b).await;
    }
    // 100 % failures, but only 4 of the 5 calls needed.
    assert_eq!(b.state(), State::Closed);
    assert_eq!(m(&b).failure_rate, None);
    let _ = err(&b).await;
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn r4j_slow_calls_trip_while_failure_rate_is_below_threshold() {
    let b = CircuitBreaker::builder()
        .failure_rate_threshold(50.0)
        .slow_call_rate_threshold(50.0)
        .slow_call_duration_threshold(Duration::from_millis(100))
        .count_window(4)
        .minimum_calls(4)
        .build()
        .unwrap();
    let slow = |d: u64| {
        let b = b.clone();
        async move {
            b.call(|| async move {
                sleep(Duration::from_millis(d)).await;
                Ok::<_, ()>(())
            })
            .await
        }
    };
    slow(10).await.unwrap();
    slow(100).await.unwrap(); // exactly the threshold: not slow
    slow(101).await.unwrap(); // slow
    assert_eq!(m(&b).slow_calls, 1);
    assert_eq!(b.state(), State::Closed);
    slow(500).await.unwrap(); // 2 of 4 slow = 50 %, no failures at all
    let mm = m(&b);
    assert_eq!(mm.state, State::Open);
    assert_eq!(mm.failure_rate, Some(0.0));
    assert_eq!(mm.slow_call_rate, Some(50.0));
}

#[tokio::test(start_paused = true)]
async fn r4j_half_open_closes_when_probe_failure_rate_is_below_threshold() {
    let b = rate_breaker(4, 4, S1);
    for _ in 0..4 {
        let _ = err(&b).await;
    }
    assert_eq!(b.state(), State::Open);
    advance(S1).await;
    // 3 probes: 1 failure of 3 = 33 % < 50 %.
    let p1 = b.try_acquire().unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    let p2 = b.try_acquire().unwrap();
    let p3 = b.try_acquire().unwrap();
    assert!(p1.is_probe() && p2.is_probe() && p3.is_probe());
    assert_eq!(b.try_acquire().unwrap_err(), Rejected::HalfOpenFull);
    p1.failure();
    p2.success();
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(m(&b).failure_rate, None); // not all probes in
    p3.success();
    let mm = m(&b);
    assert_eq!(mm.state, State::Closed);
    assert_eq!(mm.calls, 0, "closing empties the window");
}

#[tokio::test(start_paused = true)]
async fn r4j_half_open_reopens_when_probe_failure_rate_reaches_threshold() {
    let b = CircuitBreaker::builder()
        .failure_rate_threshold(50.0)
        .without_slow_call_rate()
        .count_window(2)
        .minimum_calls(2)
        .open_wait(S1)
        .permitted_probes(2)
        .build()
        .unwrap();
    let _ = err(&b).await;
    let _ = err(&b).await;
    advance(S1).await;
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    p1.success();
    p2.failure(); // 1 of 2 = 50 %: inclusive, re-opens
    assert_eq!(b.state(), State::Open);
    assert_eq!(refused_for(ok(&b).await), Some(S1));
}

/// resilience4j's `OpenState` takes the metrics of the state it opened
/// from: after a re-open from half-open, the probes' outcomes (not the
/// closed window of the first trip).
#[tokio::test(start_paused = true)]
async fn r4j_reopen_reports_the_probes_that_reopened_it() {
    let b = CircuitBreaker::builder()
        .failure_rate_threshold(50.0)
        .without_slow_call_rate()
        .count_window(5)
        .minimum_calls(5)
        .open_wait(S1)
        .permitted_probes(4)
        .build()
        .unwrap();
    for fail in [true, true, true, false, false] {
        let _ = if fail { err(&b).await } else { ok(&b).await };
    }
    let mm = m(&b);
    assert_eq!((mm.state, mm.calls, mm.failed_calls), (State::Open, 5, 3));
    assert_eq!(mm.failure_rate, Some(60.0), "open after a trip: the window");
    advance(S1).await;
    for fail in [true, true, false, false] {
        let _ = if fail { err(&b).await } else { ok(&b).await };
    }
    let mm = m(&b);
    assert_eq!((mm.state, mm.calls, mm.failed_calls), (State::Open, 4, 2));
    assert_eq!(
        mm.failure_rate,
        Some(50.0),
        "open after a re-open: the probes"
    );
    advance(S1).await;
    let _ = ok(&b).await;
    let mm = m(&b);
    assert_eq!(
        (mm.state, mm.calls, mm.failure_rate),
        (State::HalfOpen, 1, None)
    );
}

/// resilience4j's `ForcedOpenState` and `DisabledState` start with fresh
/// metrics: the closed window does not show through them.
#[tokio::test(start_paused = true)]
async fn r4j_forced_open_and_disabled_start_with_empty_metrics() {
    for force in [true, false] {
        let b = rate_breaker(4, 3, S1);
        let _ = err(&b).await;
        let _ = ok(&b).await;
        let _ = err(&b).await;
        let mm = m(&b);
        assert_eq!((mm.state, mm.calls, mm.failed_calls), (State::Open, 3, 2));
        if force {
            b.force_open();
        } else {
            b.disable();
        }
        let mm = m(&b);
        assert_eq!(
            (
                mm.calls,
                mm.failed_calls,
                mm.failure_rate,
                mm.consecutive_failures
            ),
            (0, 0, None, 0),
            "force_open: {force}"
        );
    }
}

/// resilience4j judges half-open probes with `minimumNumberOfCalls =
/// min(minimum_calls, permitted_probes)` (its half-open metrics are a count
/// window of `permitted_probes`): with a minimum of 2 and 4 probes it
/// decides after 2 outcomes. flowguard documents that it waits for all
/// `permitted_probes`; kept as a record of the difference.
#[tokio::test(start_paused = true)]
#[ignore = "documented difference from resilience4j: half-open decides after all permitted_probes, not min(minimum_calls, permitted_probes)"]
async fn r4j_half_open_decides_after_min_of_minimum_calls_and_probes() {
    let b = CircuitBreaker::builder()
        .failure_rate_threshold(50.0)
        .without_slow_call_rate()
        .count_window(2)
        .minimum_calls(2)
        .open_wait(S1)
        .permitted_probes(4)
        .build()
        .unwrap();
    let _ = err(&b).await;
    let _ = err(&b).await;
    advance(S1).await;
    let _ = ok(&b).await;
    let _ = ok(&b).await;
    assert_eq!(b.state(), State::Closed, "2 of 2 judged probes succeeded");
}

#[tokio::test(start_paused = true)]
async fn r4j_forced_open_ignores_the_wait_until_reset() {
    let b = rate_breaker(4, 4, S1);
    b.force_open();
    advance(Duration::from_secs(3600)).await;
    assert!(matches!(
        ok(&b).await,
        Err(BreakerError::Rejected(Rejected::ForcedOpen))
    ));
    assert_eq!(b.next_ready_at(), None);
    b.reset();
    assert_eq!(ok(&b).await.unwrap(), 1);
    assert_eq!(b.state(), State::Closed);
}

// ---- open wait and backoff ---------------------------------------------------

#[tokio::test(start_paused = true)]
async fn open_wait_boundary_is_inclusive_with_exact_retry_after() {
    let b = consecutive(1, Duration::from_millis(500), 1)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let _ = err(&b).await;
    advance(Duration::from_millis(200)).await;
    assert_eq!(refused_for(ok(&b).await), Some(Duration::from_millis(300)));
    advance(Duration::from_millis(299)).await;
    assert_eq!(refused_for(ok(&b).await), Some(Duration::from_millis(1)));
    assert_eq!(b.next_ready_at(), Some(t0 + Duration::from_millis(500)));
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        ok(&b).await.unwrap(),
        1,
        "now = opened + wait admits a probe"
    );
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_on_each_reopen_caps_and_resets_on_close() {
    let b = consecutive(1, S1, 1)
        .open_backoff(3.0, Duration::from_secs(20))
        .build()
        .unwrap();
    let _ = err(&b).await;
    let mut waits = Vec::new();
    for _ in 0..4 {
        let wait = refused_for(ok(&b).await).unwrap();
        waits.push(wait);
        advance(wait).await;
        let _ = err(&b).await; // failed probe: re-open
        assert_eq!(m(&b).state, State::Open);
    }
    waits.push(refused_for(ok(&b).await).unwrap());
    assert_eq!(
        waits,
        [1, 3, 9, 20, 20].map(Duration::from_secs).to_vec(),
        "1 s, ×3, ×3, capped at 20 s"
    );
    assert_eq!(m(&b).reopens, 4);
    advance(Duration::from_secs(20)).await;
    ok(&b).await.unwrap();
    assert_eq!(m(&b).reopens, 0);
    let _ = err(&b).await;
    assert_eq!(refused_for(ok(&b).await), Some(S1));
}

#[tokio::test(start_paused = true)]
async fn jittered_waits_are_shorter_never_longer_and_reproducible() {
    let run = || async {
        let b = consecutive(1, Duration::from_secs(10), 1)
            .open_jitter(0.5)
            .jitter_seed(42)
            .build()
            .unwrap();
        let mut waits = Vec::new();
        for _ in 0..5 {
            let _ = err(&b).await;
            waits.push(refused_for(ok(&b).await).unwrap());
            b.reset();
        }
        waits
    };
    let a = run().await;
    assert_eq!(a, run().await);
    for w in &a {
        assert!(
            *w > Duration::from_secs(5) && *w <= Duration::from_secs(10),
            "{w:?}"
        );
    }
}

// ---- half-open ---------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn cancelled_probe_gives_its_slot_back() {
    let b = consecutive(1, S1, 1).build().unwrap();
    let _ = err(&b).await;
    advance(S1).await;
    // A probe whose call never finishes, cancelled by a timeout.
    let r = tokio::time::timeout(
        Duration::from_millis(10),
        b.call(std::future::pending::<Result<u32, &str>>),
    )
    .await;
    assert!(r.is_err());
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(m(&b).probes_in_flight, 0);
    // The slot is free again: the next call is admitted and decides.
    assert_eq!(ok(&b).await.unwrap(), 1);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn ignored_probe_is_not_counted_and_frees_the_slot() {
    let b = consecutive(1, S1, 2).build().unwrap();
    let _ = err(&b).await;
    advance(S1).await;
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    assert_eq!(b.try_acquire().unwrap_err(), Rejected::HalfOpenFull);
    p1.ignore();
    let p3 = b.try_acquire().unwrap();
    p2.success();
    p3.success();
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn consecutive_only_breaker_reopens_on_any_failed_probe() {
    let b = consecutive(5, S1, 3).build().unwrap();
    for _ in 0..5 {
        let _ = err(&b).await;
    }
    assert_eq!(b.state(), State::Open);
    advance(S1).await;
    let p: Vec<CallPermit<'_>> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    let mut p = p.into_iter();
    p.next().unwrap().success();
    p.next().unwrap().success();
    p.next().unwrap().failure();
    assert_eq!(b.state(), State::Open);
}

/// A deliberate departure from gobreaker (documented in the module docs):
/// a failed probe does not re-open at once; half-open admits the rest of
/// its probes and re-opens when the last one has reported.
#[tokio::test(start_paused = true)]
async fn consecutive_only_breaker_reopens_after_the_last_probe_not_the_first_failure() {
    let b = consecutive(1, S1, 3).build().unwrap();
    let _ = err(&b).await;
    advance(S1).await;
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(ok(&b).await.unwrap(), 1, "still admitted as a probe");
    assert_eq!(b.state(), State::HalfOpen);
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), State::Open);
    assert!(matches!(b.try_acquire(), Err(Rejected::Open { .. })));
}

#[tokio::test(start_paused = true)]
async fn max_half_open_wait_reopens_and_drops_late_probes() {
    let b = consecutive(1, S1, 1)
        .max_half_open_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let _ = err(&b).await;
    advance(S1).await;
    let probe = b.try_acquire().unwrap();
    advance(Duration::from_millis(4999)).await;
    assert_eq!(b.try_acquire().unwrap_err(), Rejected::HalfOpenFull);
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        b.try_acquire().unwrap_err(),
        Rejected::Open { retry_after: S1 }
    );
    assert_eq!(b.state(), State::Open);
    assert_eq!(m(&b).reopens, 1);
    probe.success(); // too late: belongs to the half-open that expired
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn at_most_permitted_probes_run_among_many_tasks() {
    let b = consecutive(1, S1, 3).build().unwrap();
    let _ = err(&b).await;
    advance(S1).await;
    let running = Arc::new(Mutex::new((0u32, 0u32))); // (now, max)
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let b = b.clone();
        let running = running.clone();
        tasks.push(tokio::spawn(async move {
            b.call(|| async {
                {
                    let mut r = running.lock().unwrap();
                    r.0 += 1;
                    r.1 = r.1.max(r.0);
                }
                sleep(Duration::from_millis(10)).await;
                running.lock().unwrap().0 -= 1;
                Ok::<_, ()>(())
            })
            .await
        }));
    }
    let mut admitted = 0;
    let mut full = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => admitted += 1,
            Err(BreakerError::Rejected(Rejected::HalfOpenFull)) => full += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((admitted, full), (3, 7));
    assert_eq!(running.lock().unwrap().1, 3);
    assert_eq!(b.state(), State::Closed);
}

// ---- classification, outcomes, manual control ---------------------------------

#[tokio::test(start_paused = true)]
async fn classifier_decides_and_ignored_calls_are_not_counted() {
    let b = consecutive(2, S1, 1).build().unwrap();
    let classify = |r: &Result<u32, &str>| match r {
        Ok(_) => Outcome::Success,
        Err("not found") => Outcome::Ignored,
        Err("slow down") => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    let _ = b.call_with(|| async { Err("boom") }, classify).await;
    let r = b.call_with(|| async { Err("not found") }, classify).await;
    assert!(matches!(r, Err(BreakerError::Inner("not found"))));
    // The ignored call did not break the run of failures.
    assert_eq!(m(&b).consecutive_failures, 1);
    assert_eq!(m(&b).calls, 1);
    // An error classified a success resets the run but still comes back.
    let r = b.call_with(|| async { Err("slow down") }, classify).await;
    assert!(matches!(r, Err(BreakerError::Inner("slow down"))));
    assert_eq!(m(&b).consecutive_failures, 0);
    let _ = b.call_with(|| async { Err("boom") }, classify).await;
    let _ = b.call_with(|| async { Err("boom") }, classify).await;
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn inner_error_comes_back_without_clone_or_debug() {
    struct Opaque(u32);
    let b = CircuitBreaker::new();
    let r: Result<(), _> = b.call(|| async { Err(Opaque(7)) }).await;
    match r {
        Err(e) => {
            assert_eq!(format!("{e:?}"), "Inner(..)");
            assert_eq!(e.into_inner().map(|o| o.0), Some(7));
        }
        Ok(()) => panic!("expected an error"),
    }
}

#[tokio::test(start_paused = true)]
async fn dropped_permit_in_closed_counts_as_nothing() {
    let b = consecutive(1, S1, 1).build().unwrap();
    drop(b.try_acquire().unwrap());
    let p = b.try_acquire().unwrap();
    p.ignore();
    assert_eq!(m(&b).calls, 0);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn outcomes_of_calls_admitted_before_a_transition_are_dropped() {
    let b = consecutive(2, S1, 1).build().unwrap();
    let old = b.try_acquire().unwrap();
    let _ = err(&b).await;
    let _ = err(&b).await; // trips
    b.reset();
    old.failure();
    assert_eq!(m(&b).consecutive_failures, 0);
    assert_eq!(m(&b).calls, 0);
}

#[tokio::test(start_paused = true)]
async fn disabled_admits_everything_and_records_nothing() {
    let b = consecutive(1, S1, 1).build().unwrap();
    b.disable();
    for _ in 0..10 {
        assert!(matches!(err(&b).await, Err(BreakerError::Inner(_))));
    }
    let mm = m(&b);
    assert_eq!((mm.state, mm.calls, mm.refused), (State::Disabled, 0, 0));
    b.force_open();
    assert!(matches!(
        ok(&b).await,
        Err(BreakerError::Rejected(Rejected::ForcedOpen))
    ));
    b.reset();
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn reset_closes_with_an_empty_window() {
    let b = rate_breaker(10, 3, S1);
    let _ = err(&b).await;
    let _ = err(&b).await;
    b.reset();
    assert_eq!(m(&b).calls, 0);
    let _ = err(&b).await;
    let _ = ok(&b).await;
    let _ = ok(&b).await; // 1 of 3: still closed, the old errors are gone
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_failures() {
    let b = CircuitBreaker::builder()
        .failure_rate_threshold(50.0)
        .without_slow_call_rate()
        .time_window(Duration::from_secs(10), 10)
        .minimum_calls(4)
        .build()
        .unwrap();
    let _ = err(&b).await;
    let _ = err(&b).await;
    advance(Duration::from_secs(10)).await; // both are out of the window now
    assert_eq!(m(&b).calls, 0);
    let _ = err(&b).await;
    let _ = ok(&b).await;
    let _ = ok(&b).await;
    assert_eq!(b.state(), State::Closed);
    assert_eq!(m(&b).calls, 3);
    advance(Duration::from_secs(9)).await; // still in the window
    let _ = err(&b).await; // 2 of 4 = 50 %
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_breaker() {
    let a = consecutive(2, S1, 1).build().unwrap();
    let b = a.clone();
    let _ = err(&a).await;
    let _ = err(&b).await;
    assert_eq!(a.state(), State::Open);
    assert!(refused_for(ok(&b).await).is_some());
    assert_eq!(a.metrics().refused, 1);
}

// ---- readiness -----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn wait_until_ready_waits_exactly_the_open_wait() {
    let b = consecutive(1, Duration::from_millis(750), 1)
        .build()
        .unwrap();
    b.wait_until_ready().await; // closed: at once
    let t0 = Instant::now();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    let _ = err(&b).await;
    b.wait_until_ready().await;
    assert_eq!(t0.elapsed(), Duration::from_millis(750));
    assert_eq!(ok(&b).await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn wait_until_ready_wakes_when_a_probe_slot_frees() {
    let b = consecutive(1, S1, 1).build().unwrap();
    let _ = err(&b).await;
    advance(S1).await;
    let probe = b.try_acquire().unwrap();
    assert_eq!(b.next_ready_at(), None);
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            b.wait_until_ready().await;
            t.elapsed()
        })
    };
    sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());
    drop(probe);
    assert_eq!(waiter.await.unwrap(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn wait_until_ready_in_forced_open_waits_for_reset() {
    let b = CircuitBreaker::new();
    b.force_open();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            b.wait_until_ready().await;
            t.elapsed()
        })
    };
    sleep(Duration::from_secs(100)).await;
    assert!(!waiter.is_finished());
    b.reset();
    assert_eq!(waiter.await.unwrap(), Duration::from_secs(100));
}

// ---- hook ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn hook_sees_every_transition_with_its_time() {
    let seen: Arc<Mutex<Vec<StateChange>>> = Arc::default();
    let log = seen.clone();
    let b = consecutive(1, S1, 1)
        .on_state_change(move |c: &StateChange| log.lock().unwrap().push(*c))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let _ = err(&b).await;
    advance(S1).await;
    let _ = err(&b).await; // probe fails: re-open
    advance(S1).await;
    let _ = ok(&b).await; // probe succeeds: close
    let got: Vec<(State, State, Duration, u64)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| (c.from, c.to, c.at - t0, c.seq))
        .collect();
    use State::*;
    assert_eq!(
        got,
        vec![
            (Closed, Open, Duration::ZERO, 1),
            (Open, HalfOpen, S1, 2),
            (HalfOpen, Open, S1, 3),
            (Open, HalfOpen, 2 * S1, 4),
            (HalfOpen, Closed, 2 * S1, 5),
        ]
    );
    assert_eq!(m(&b).transitions, 5);
}

#[tokio::test(start_paused = true)]
async fn hook_may_call_back_into_the_breaker() {
    let cell: Arc<Mutex<Option<CircuitBreaker>>> = Arc::default();
    let c2 = cell.clone();
    let b = consecutive(1, S1, 1)
        .on_state_change(move |c: &StateChange| {
            let b = c2.lock().unwrap().clone();
            if let Some(b) = b.filter(|_| c.to == State::Open) {
                let _ = b.metrics();
                let _ = b.try_acquire();
            }
        })
        .build()
        .unwrap();
    *cell.lock().unwrap() = Some(b.clone());
    let _ = err(&b).await; // must not deadlock
    assert_eq!(b.state(), State::Open);
    cell.lock().unwrap().take();
}

// ---- configuration ----------------------------------------------------------------

#[test]
fn every_builder_field_is_validated() {
    let d = Duration::from_secs(1);
    let cases: Vec<(Builder, &str, ConfigErrorKind)> = vec![
        (
            CircuitBreaker::builder().failure_rate_threshold(0.0),
            "failure_rate_threshold",
            ConfigErrorKind::Zero,
        ),
        (
            CircuitBreaker::builder().failure_rate_threshold(100.5),
            "failure_rate_threshold",
            ConfigErrorKind::TooLarge,
        ),
        (
            CircuitBreaker::builder().failure_rate_threshold(f64::NAN),
            "failure_rate_threshold",
            ConfigErrorKind::TooSmall,
        ),
        (
            CircuitBreaker::builder().failure_rate_threshold(-1.0),
            "failure_rate_threshold",
            ConfigErrorKind::TooSmall,
        ),
        (
            CircuitBreaker::builder().slow_call_duration_threshold(Duration::ZERO),
            "slow_call_duration_threshold",
            ConfigErrorKind::Zero,
        ),
        (
            // Zero is meaningless whether or not the slow-call policy is on.
            CircuitBreaker::builder()
                .slow_call_rate_threshold(100.0)
                .slow_call_duration_threshold(Duration::ZERO),
            "slow_call_duration_threshold",
            ConfigErrorKind::Zero,
        ),
        (
            CircuitBreaker::builder().slow_call_rate_threshold(0.0),
            "slow_call_rate_threshold",
            ConfigErrorKind::Zero,
        ),
        (
            CircuitBreaker::builder().slow_call_rate_threshold(f64::INFINITY),
            "slow_call_rate_threshold",
            ConfigErrorKind::TooLarge,
        ),
        (
            CircuitBreaker::builder().consecutive_failures(0),
            "consecutive_failures",
            ConfigErrorKind::Zero,
        ),
        (
            CircuitBreaker::builder()
                .without_failure_rate()
                .without_slow_call_rate(),
            "failure_rate_threshold",
            ConfigErrorKind::Missing,
        ),
        (
            CircuitBreaker::builder().count_window(0),
            "count_window",
            ConfigErrorKind::Zero,
        ),
        (
            CircuitBreaker::builder().count_window(u32::MAX),
            "count_window",
            ConfigErrorKind::TooLarge,
        ),
        (
            CircuitBreaker::builder().time_window(d, 0),
            "time_window",
            ConfigErrorKind::Zero,
        ),
        (
            CircuitBreaker::builder().time_window(d, 100_000),
            "time_window",
            ConfigErrorKind::TooLarge,
        ),
        (
            CircuitBreaker::builder().time_window(Duration::ZERO, 1),
            "time_window",
            ConfigErrorKind::Zero,
        ),
        (
            CircuitBreaker::builder().time_window(Duration::MAX, 1),
            "time_window",
            ConfigErrorKind::TooLarge,
        ),
        (
            CircuitBreaker::builder().time_window(Duration::from_nanos(3), 4),
            "time_window",
            ConfigErrorKind::TooSmall,
        ),
        (
            CircuitBreaker::builder().minimum_calls(0),
            "minimum_calls",
            ConfigErrorKind::Zero,
        ),
        (
            CircuitBreaker::builder().open_wait(Duration::ZERO),
            "open_wait",
            ConfigErrorKind::Zero,
        ),
        (
            CircuitBreaker::builder().open_wait(Duration::MAX),
            "open_wait",
            ConfigErrorKind::TooLarge,
        ),
        (
            CircuitBreaker::builder().open_backoff(0.5, d * 60),
            "open_backoff",
            ConfigErrorKind::TooSmall,
        ),
        (
            CircuitBreaker::builder().open_backoff(f64::NAN, d * 60),
            "open_backoff",
            ConfigErrorKind::TooSmall,
        ),
        (
            CircuitBreaker::builder().open_backoff(2.0, d),
            "open_backoff",
            ConfigErrorKind::Conflict,
        ),
        (
            CircuitBreaker::builder().open_backoff(2.0, Duration::MAX),
            "open_backoff",
            ConfigErrorKind::TooLarge,
        ),
        (
            CircuitBreaker::builder().open_backoff(2.0, Duration::ZERO),
            "open_backoff",
            ConfigErrorKind::Zero,
        ),
        (
            CircuitBreaker::builder().open_jitter(-0.1),
            "open_jitter",
            ConfigErrorKind::TooSmall,
        ),
        (
            CircuitBreaker::builder().open_jitter(1.0),
            "open_jitter",
            ConfigErrorKind::TooLarge,
        ),
        (
            CircuitBreaker::builder().open_jitter(f64::NAN),
            "open_jitter",
            ConfigErrorKind::TooSmall,
        ),
        (
            CircuitBreaker::builder().permitted_probes(0),
            "permitted_probes",
            ConfigErrorKind::Zero,
        ),
        (
            CircuitBreaker::builder().permitted_probes(1 << 17),
            "permitted_probes",
            ConfigErrorKind::TooLarge,
        ),
        (
            CircuitBreaker::builder().max_half_open_wait(Duration::ZERO),
            "max_half_open_wait",
            ConfigErrorKind::Zero,
        ),
        (
            CircuitBreaker::builder().max_half_open_wait(Duration::MAX),
            "max_half_open_wait",
            ConfigErrorKind::TooLarge,
        ),
    ];
    for (builder, field, kind) in cases {
        let e = builder.build().expect_err(field);
        assert_eq!((e.field(), e.kind()), (field, kind), "{e}");
        assert_eq!(e.component(), "circuit breaker");
        assert!(
            e.to_string()
                .starts_with("invalid circuit breaker config: ")
        );
    }
}

#[test]
fn extreme_but_valid_settings_build_and_do_not_panic() {
    let b = CircuitBreaker::builder()
        .failure_rate_threshold(100.0)
        .slow_call_duration_threshold(Duration::MAX)
        .consecutive_failures(u32::MAX)
        .count_window(1 << 20)
        .minimum_calls(u32::MAX)
        .open_wait(Duration::from_nanos(1))
        .open_backoff(f64::MAX, Duration::from_secs(365 * 24 * 3600))
        .open_jitter(0.999)
        .permitted_probes(1 << 16)
        .max_half_open_wait(Duration::from_nanos(1))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..100 {
            let _ = err(&b).await;
        }
    });
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn display_is_lower_case() {
    let r = Rejected::Open {
        retry_after: Duration::from_millis(5),
    };
    assert_eq!(r.to_string(), "circuit breaker is open; retry after 5ms");
    assert_eq!(r.retry_after(), Some(Duration::from_millis(5)));
    assert_eq!(Rejected::HalfOpenFull.retry_after(), None);
    let e: BreakerError<std::io::Error> = BreakerError::Inner(std::io::Error::other("x"));
    assert!(std::error::Error::source(&e).is_some());
    assert_eq!(e.to_string(), "the call through the circuit breaker failed");
    let e: BreakerError<std::io::Error> = Rejected::HalfOpenFull.into();
    assert_eq!(e.rejected(), Some(Rejected::HalfOpenFull));
}

#[test]
fn public_types_are_send_sync_and_futures_are_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<CircuitBreaker>();
    send_sync::<CallPermit<'static>>();
    send_sync::<flowguard::breaker::OwnedCallPermit>();
    send_sync::<Rejected>();
    send_sync::<BreakerError<std::io::Error>>();
    send_sync::<BreakerMetrics>();
    send_sync::<StateChange>();
    send_sync::<Builder>();
    let b = CircuitBreaker::new();
    send(&b.call(|| async { Ok::<_, ()>(()) }));
    send(&b.wait_until_ready());
}

#[tokio::test(start_paused = true)]
async fn wait_until_ready_sees_the_half_open_deadline_pass() {
    let b = consecutive(1, S1, 1)
        .max_half_open_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let _ = err(&b).await;
    advance(S1).await;
    let _stuck_probe = b.try_acquire().unwrap();
    let t0 = Instant::now();
    b.wait_until_ready().await;
    // Re-opened at the 5 s deadline, then waited the 1 s open wait.
    assert_eq!(t0.elapsed(), Duration::from_secs(6));
    assert_eq!(m(&b).reopens, 1);
    assert!(b.try_acquire().unwrap().is_probe());
}

// ---- transitions to the current state publish nothing (issue 19, item 9) ----

/// Every (from, to, seq) the hook saw.
type ChangeLog = Arc<Mutex<Vec<(State, State, u64)>>>;

/// A breaker whose hook logs every change.
fn logged(b: Builder) -> (CircuitBreaker, ChangeLog) {
    let seen: ChangeLog = Arc::default();
    let log = seen.clone();
    let b = b
        .on_state_change(move |c: &StateChange| log.lock().unwrap().push((c.from, c.to, c.seq)))
        .build()
        .unwrap();
    (b, seen)
}

#[tokio::test(start_paused = true)]
async fn manual_calls_to_the_current_state_publish_nothing() {
    let (b, seen) = logged(consecutive(2, S1, 1));
    b.reset(); // closed already
    b.force_open();
    b.force_open(); // forced open already
    b.disable();
    b.disable(); // disabled already
    b.reset();
    b.reset(); // closed already
    use State::*;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (Closed, ForcedOpen, 1),
            (ForcedOpen, Disabled, 2),
            (Disabled, Closed, 3)
        ]
    );
    assert_eq!(m(&b).transitions, 3);
    assert_eq!(b.state(), Closed);
}

#[tokio::test(start_paused = true)]
async fn reset_of_a_closed_breaker_still_empties_it_without_a_transition() {
    let (b, seen) = logged(
        CircuitBreaker::builder()
            .failure_rate_threshold(100.0)
            .count_window(10)
            .minimum_calls(10)
            .consecutive_failures(3),
    );
    let _ = err(&b).await;
    let _ = err(&b).await;
    let _ = ok(&b).await;
    let _ = err(&b).await;
    let _ = err(&b).await;
    let in_flight = b.try_acquire().unwrap(); // admitted before the reset
    assert_eq!((m(&b).calls, m(&b).consecutive_failures), (5, 2));
    b.reset();
    let after = m(&b);
    assert_eq!(
        (after.calls, after.failed_calls, after.consecutive_failures),
        (0, 0, 0)
    );
    in_flight.failure(); // documented: outcomes of calls admitted before are dropped
    assert_eq!(m(&b).calls, 0);
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!((m(&b).transitions, b.state()), (0, State::Closed));
}

// ---- the move out of Open is made by a call (issue 19, item 8) ----

#[tokio::test(start_paused = true)]
async fn after_the_open_wait_reads_report_open_and_the_next_call_probes() {
    let (b, seen) = logged(consecutive(1, S1, 1).max_half_open_wait(Duration::from_secs(2)));
    let t0 = Instant::now();
    let _ = err(&b).await;
    advance(S1).await;
    // The wait is over: a call would be admitted now ...
    assert_eq!(b.next_ready_at(), Some(t0 + S1));
    // ... but no read moves the breaker, however long it is watched (not
    // even past the half-open deadline a read-made half-open would have had).
    for _ in 0..10 {
        assert_eq!(b.state(), State::Open);
        assert_eq!(m(&b).state, State::Open);
        assert_eq!(b.next_ready_at(), Some(Instant::now()));
        advance(S1).await;
    }
    b.wait_until_ready().await;
    assert_eq!(
        (b.state(), m(&b).transitions, m(&b).reopens),
        (State::Open, 1, 0)
    );
    // The next call makes the move, at its own time, and is the probe.
    let probe = b.try_acquire().unwrap();
    assert!(probe.is_probe());
    assert_eq!(b.state(), State::HalfOpen);
    use State::*;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(Closed, Open, 1), (Open, HalfOpen, 2)]
    );
    probe.success();
    assert_eq!((b.state(), m(&b).transitions), (Closed, 3));
}

// ---- waiting on a manual clock parks until it moves (issue 19) ----

#[tokio::test(start_paused = true)]
async fn wait_until_ready_on_a_manual_clock_parks_until_the_clock_moves() {
    use flowguard::clock::{Clock, ManualClock};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let clock = ManualClock::new();
    let b = consecutive(1, S1, 1)
        .build_with_clock(clock.clone())
        .unwrap();
    b.try_acquire().unwrap().failure();
    let polls = Arc::new(AtomicUsize::new(0));
    let (b2, p2) = (b.clone(), polls.clone());
    let h = tokio::spawn(async move {
        let mut wait = std::pin::pin!(b2.wait_until_ready());
        std::future::poll_fn(|cx| {
            p2.fetch_add(1, Ordering::SeqCst);
            wait.as_mut().poll(cx)
        })
        .await
    });
    tokio::task::yield_now().await;
    // Tokio's clock passes the end of the wait; the breaker's does not move.
    advance(Duration::from_secs(5)).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(polls.load(Ordering::SeqCst), 1, "parked, not re-checking");
    assert_eq!(b.next_ready_at(), Some(clock.now() + S1));
    clock.advance(S1);
    h.await.unwrap();
    assert_eq!(polls.load(Ordering::SeqCst), 2);
    assert!(b.try_acquire().unwrap().is_probe());
}

#[test]
fn wait_until_ready_on_a_manual_clock_needs_no_runtime() {
    let clock = flowguard::clock::ManualClock::new();
    let b = consecutive(1, S1, 1)
        .build_with_clock(clock.clone())
        .unwrap();
    b.try_acquire().unwrap().failure();
    futures::executor::block_on(async {
        futures::join!(b.wait_until_ready(), async { clock.advance(S1) })
    });
    assert!(b.try_acquire().unwrap().is_probe());
}

/// The call-duration histogram: opt-in (two clock reads per call), on by
/// default with the slow-call policy; exact on the paused clock.
#[tokio::test(start_paused = true)]
async fn call_duration_histogram() {
    let timed = CircuitBreaker::builder().histograms(true).build().unwrap();
    let plain = CircuitBreaker::builder().build().unwrap();
    let slow_policy = CircuitBreaker::builder()
        .slow_call_rate_threshold(100.0)
        .build()
        .unwrap();
    for (b, ms) in [(&timed, 40), (&timed, 10), (&plain, 40), (&slow_policy, 25)] {
        b.call(|| async move {
            sleep(Duration::from_millis(ms)).await;
            Ok::<_, &str>(())
        })
        .await
        .unwrap();
    }
    let d = m(&timed).call_duration;
    assert_eq!((d.count(), d.min(), d.max()), (2, 10_000_000, 40_000_000));
    assert_eq!(m(&plain).call_duration.count(), 0);
    assert_eq!(
        m(&slow_policy).call_duration.max_duration(),
        Duration::from_millis(25)
    );
    assert_eq!(m(&plain).calls, 1); // the outcome still counts
}

/// Sampled timing (see `flowguard::histogram`): a breaker calling at a low
/// rate times every call; one calling thousands of times a millisecond
/// times about one call in 64, each standing for 64, while its counts stay
/// exact; with the slow-call policy on, every call is timed anyway.
#[tokio::test(start_paused = true)]
async fn call_duration_histogram_samples_only_frequent_calls() {
    async fn calls(b: &CircuitBreaker, n: u64) {
        for _ in 0..n {
            b.call(|| async { Ok::<_, &str>(()) }).await.unwrap();
        }
    }
    // Low rate: 300 calls of 1 ms each, one after another: every one.
    let quiet = CircuitBreaker::builder().histograms(true).build().unwrap();
    for _ in 0..300 {
        quiet
            .call(|| async {
                sleep(Duration::from_millis(1)).await;
                Ok::<_, &str>(())
            })
            .await
            .unwrap();
    }
    let d = m(&quiet).call_duration;
    assert_eq!((d.count(), d.min(), d.max()), (300, 1_000_000, 1_000_000));

    // High rate: 20,000 calls at one instant (all timed: the first window
    // is still open), then 2 ms later one more closes the window.
    let window = 1_000_000u32;
    let busy = CircuitBreaker::builder()
        .histograms(true)
        .count_window(window)
        .minimum_calls(window)
        .build()
        .unwrap();
    let policy = CircuitBreaker::builder()
        .slow_call_rate_threshold(100.0)
        .count_window(window)
        .minimum_calls(window)
        .build()
        .unwrap();
    for b in [&busy, &policy] {
        calls(b, 20_000).await;
        advance(Duration::from_millis(2)).await;
        calls(b, 1).await;
        assert_eq!(m(b).call_duration.count(), 20_001);
        calls(b, 64_000).await;
        assert_eq!(m(b).calls, 84_001, "every call counted");
    }
    // 64,000 calls at 1 in 64: about 1,000 timed (binomial, standard
    // deviation 31; six allowed), each recorded with a count of 64.
    let added = m(&busy).call_duration.count() - 20_001;
    assert_eq!(added % 64, 0, "{added}");
    assert!((added / 64).abs_diff(1_000) <= 186, "{added}");
    // The slow-call policy times every call: the histogram has each.
    assert_eq!(m(&policy).call_duration.count(), 84_001);

    // Every call timed when asked.
    let every = CircuitBreaker::builder()
        .histograms(true)
        .histogram_max_one_in(1)
        .build()
        .unwrap();
    calls(&every, 20_000).await;
    advance(Duration::from_millis(2)).await;
    calls(&every, 10_000).await;
    assert_eq!(m(&every).call_duration.count(), 30_000);
}

#[test]
fn histogram_max_one_in_is_validated() {
    for (n, kind) in [
        (0, ConfigErrorKind::Zero),
        (65_537, ConfigErrorKind::TooLarge),
    ] {
        let e = CircuitBreaker::builder()
            .histogram_max_one_in(n)
            .build()
            .unwrap_err();
        assert_eq!((e.field(), e.kind()), ("histogram_max_one_in", kind));
    }
    assert!(
        CircuitBreaker::builder()
            .histogram_max_one_in(65_536)
            .build()
            .is_ok()
    );
}

// Reference: sony/gobreaker (gobreaker_test.go, v2/gobreaker_test.go)
//
// gobreaker's settings map onto the builder: `MaxRequests` is
// `permitted_probes`, `Timeout` is `open_wait`, the default `ReadyToTrip`
// (more than 5 consecutive failures) is `consecutive_failures(6)` with no
// failure rate, a `ReadyToTrip` of "at least N requests and a failure ratio
// of at least R" is `minimum_calls(N)` + `failure_rate_threshold(100 R)`,
// `Interval` (+ `BucketPeriod`) is a time window, `IsSuccessful` is a
// classifier, the two-step breaker is `try_acquire` + a permit. Documented
// departures adapted below: reads never move Open to HalfOpen (the next call
// does), and Open keeps the counts it tripped on instead of zeroing them.

/// gobreaker's `Settings{}`: one probe, a 60 s timeout, trip on the 6th
/// failure in a row.
fn gobreaker_default() -> Builder {
    CircuitBreaker::builder()
        .without_failure_rate()
        .consecutive_failures(6)
        .permitted_probes(1)
        .open_wait(Duration::from_secs(60))
}

/// gobreaker's `newCustom()`/`newRollingWindow()`: 3 probes, a 90 s timeout,
/// trip at >= 3 requests and a failure ratio >= 0.6, the given window.
fn gobreaker_custom(window_buckets: u32, log: Arc<Mutex<Vec<(State, State)>>>) -> CircuitBreaker {
    CircuitBreaker::builder()
        .failure_rate_threshold(60.0)
        .minimum_calls(3)
        .time_window(Duration::from_secs(30), window_buckets)
        .permitted_probes(3)
        .open_wait(Duration::from_secs(90))
        .on_state_change(move |c: &StateChange| log.lock().unwrap().push((c.from, c.to)))
        .build()
        .unwrap()
}

/// (calls, failed calls, consecutive failures): gobreaker's `Counts`
/// without the successes, which are `calls - failed`.
fn counts(b: &CircuitBreaker) -> (u64, u64, u32) {
    let mm = b.metrics();
    (mm.calls, mm.failed_calls, mm.consecutive_failures)
}

#[tokio::test(start_paused = true)]
async fn gobreaker_default_trips_on_the_sixth_consecutive_failure_and_probes_once() {
    let b = gobreaker_default().build().unwrap();
    for _ in 0..5 {
        assert!(matches!(err(&b).await, Err(BreakerError::Inner("boom"))));
    }
    assert_eq!((b.state(), counts(&b)), (State::Closed, (5, 5, 5)));
    ok(&b).await.unwrap();
    assert_eq!((b.state(), counts(&b)), (State::Closed, (6, 5, 0)));
    let _ = err(&b).await;
    assert_eq!((b.state(), counts(&b)), (State::Closed, (7, 6, 1)));
    for _ in 0..5 {
        let _ = err(&b).await;
    }
    assert_eq!(b.state(), State::Open);
    // Refused without running, and nothing counted.
    assert_eq!(refused_for(ok(&b).await), Some(Duration::from_secs(60)));
    assert_eq!(refused_for(err(&b).await), Some(Duration::from_secs(60)));
    assert_eq!(counts(&b), (12, 11, 6));
    advance(Duration::from_secs(59)).await;
    assert_eq!(refused_for(ok(&b).await), Some(S1));
    advance(S1).await;
    // The failed probe re-opens for another full timeout.
    assert!(matches!(err(&b).await, Err(BreakerError::Inner("boom"))));
    assert_eq!(b.state(), State::Open);
    assert_eq!(refused_for(ok(&b).await), Some(Duration::from_secs(60)));
    advance(Duration::from_secs(60)).await;
    ok(&b).await.unwrap();
    assert_eq!((b.state(), counts(&b)), (State::Closed, (0, 0, 0)));
}

#[tokio::test(start_paused = true)]
async fn gobreaker_two_step_permits_follow_the_same_rules() {
    let b = gobreaker_default().build().unwrap();
    for _ in 0..5 {
        b.try_acquire().unwrap().failure();
    }
    b.try_acquire().unwrap().success();
    assert_eq!((b.state(), counts(&b)), (State::Closed, (6, 5, 0)));
    for _ in 0..6 {
        b.try_acquire().unwrap().failure();
    }
    assert_eq!(b.state(), State::Open);
    assert!(matches!(b.try_acquire(), Err(Rejected::Open { .. })));
    advance(Duration::from_secs(60)).await;
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Open);
    advance(Duration::from_secs(60)).await;
    b.try_acquire().unwrap().success();
    assert_eq!((b.state(), counts(&b)), (State::Closed, (0, 0, 0)));
}

#[tokio::test(start_paused = true)]
async fn gobreaker_custom_interval_clears_counts_and_max_requests_probes_close() {
    let log: Arc<Mutex<Vec<(State, State)>>> = Arc::default();
    let b = gobreaker_custom(1, log.clone());
    for _ in 0..5 {
        ok(&b).await.unwrap();
        let _ = err(&b).await;
    }
    assert_eq!((b.state(), counts(&b)), (State::Closed, (10, 5, 1)));
    advance(Duration::from_secs(29)).await;
    ok(&b).await.unwrap();
    assert_eq!(counts(&b), (11, 5, 0));
    advance(S1).await; // the 30 s interval is over: a fresh count
    let _ = err(&b).await;
    assert_eq!((b.state(), counts(&b)), (State::Closed, (1, 1, 1)));
    ok(&b).await.unwrap();
    let _ = err(&b).await; // 2 of 3 failed: 0.67 >= 0.6
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        log.lock().unwrap().last(),
        Some(&(State::Closed, State::Open))
    );
    advance(Duration::from_secs(90)).await;
    ok(&b).await.unwrap();
    assert_eq!(
        log.lock().unwrap().last(),
        Some(&(State::Open, State::HalfOpen))
    );
    ok(&b).await.unwrap();
    assert_eq!(
        (b.state(), m(&b).calls, m(&b).failed_calls),
        (State::HalfOpen, 2, 0)
    );
    let third = b.try_acquire().unwrap();
    assert_eq!(m(&b).probes_in_flight, 1);
    // Over MaxRequests: gobreaker's ErrTooManyRequests.
    assert_eq!(
        ok(&b).await.unwrap_err().rejected(),
        Some(Rejected::HalfOpenFull)
    );
    third.success();
    assert_eq!((b.state(), counts(&b)), (State::Closed, (0, 0, 0)));
    assert_eq!(
        log.lock().unwrap().last(),
        Some(&(State::HalfOpen, State::Closed))
    );
}

#[tokio::test(start_paused = true)]
async fn gobreaker_rolling_window_drops_the_oldest_bucket() {
    let log: Arc<Mutex<Vec<(State, State)>>> = Arc::default();
    // Interval 30 s in buckets of 3 s.
    let b = gobreaker_custom(10, log.clone());
    for _ in 0..5 {
        ok(&b).await.unwrap();
        let _ = err(&b).await;
    }
    assert_eq!(counts(&b), (10, 5, 1));
    advance(Duration::from_secs(3)).await;
    ok(&b).await.unwrap();
    assert_eq!(counts(&b), (11, 5, 0));
    advance(Duration::from_secs(2)).await;
    ok(&b).await.unwrap();
    advance(Duration::from_secs(2)).await;
    ok(&b).await.unwrap();
    assert_eq!(counts(&b), (13, 5, 0));
    advance(Duration::from_secs(2)).await; // 9 s
    let _ = err(&b).await;
    assert_eq!(counts(&b), (14, 6, 1));
    for i in 0..6 {
        advance(Duration::from_secs(3)).await;
        ok(&b).await.unwrap();
        let _ = err(&b).await;
        assert_eq!(counts(&b), (16 + 2 * i, 7 + i, 1));
    }
    assert_eq!(b.state(), State::Closed);
    // 30 s: the first bucket (10 calls, 5 failed) leaves the window.
    advance(Duration::from_secs(3)).await;
    let _ = err(&b).await;
    assert_eq!(counts(&b), (17, 8, 2));
    for i in 0..5 {
        let _ = err(&b).await; // up to 13 of 22: 0.59
        assert_eq!(counts(&b), (18 + i, 9 + i, 3 + i as u32));
    }
    assert_eq!(b.state(), State::Closed);
    let _ = err(&b).await; // 14 of 23: 0.61
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        log.lock().unwrap().last(),
        Some(&(State::Closed, State::Open))
    );
    advance(Duration::from_secs(90)).await;
    for _ in 0..3 {
        ok(&b).await.unwrap();
    }
    assert_eq!((b.state(), counts(&b)), (State::Closed, (0, 0, 0)));
}

/// gobreaker counts a panic in the request as a failure and re-panics.
#[tokio::test(start_paused = true)]
async fn gobreaker_panic_in_the_request_counts_as_a_failure() {
    let b = gobreaker_default().build().unwrap();
    let b2 = b.clone();
    let joined = tokio::spawn(async move {
        let _: Result<u32, BreakerError<&str>> = b2.call(|| async { panic!("oops") }).await;
    })
    .await;
    assert!(joined.unwrap_err().is_panic());
    assert_eq!(counts(&b), (1, 1, 1));
    // A call that is dropped (cancelled) without panicking still counts as nothing.
    let r = tokio::time::timeout(S1, b.call(std::future::pending::<Result<u32, &str>>)).await;
    assert!(r.is_err());
    assert_eq!(counts(&b), (1, 1, 1));
}

/// A permit from `try_acquire` held by the caller's own code, dropped by a
/// panic unwinding through the call, reports a failure too.
#[tokio::test(start_paused = true)]
async fn a_permit_dropped_by_a_panic_counts_as_a_failure() {
    let b = gobreaker_default().build().unwrap();
    let b2 = b.clone();
    let joined = tokio::spawn(async move {
        let _permit = b2.try_acquire().unwrap();
        tokio::task::yield_now().await;
        panic!("the call blew up");
    })
    .await;
    assert!(joined.unwrap_err().is_panic());
    assert_eq!(counts(&b), (1, 1, 1));
    // Dropped without a panic: nothing.
    drop(b.try_acquire().unwrap());
    assert_eq!(counts(&b), (1, 1, 1));
}

/// gobreaker's generations: a result from before the breaker changed state
/// is not counted, even once it has closed again.
#[tokio::test(start_paused = true)]
async fn gobreaker_result_from_an_earlier_generation_is_not_counted() {
    let b = gobreaker_default().build().unwrap();
    let early = b.try_acquire().unwrap();
    for _ in 0..6 {
        let _ = err(&b).await;
    }
    advance(Duration::from_secs(60)).await;
    ok(&b).await.unwrap();
    assert_eq!(b.state(), State::Closed);
    early.failure();
    assert_eq!((b.state(), counts(&b)), (State::Closed, (0, 0, 0)));
}

/// gobreaker's `Interval` starts a new generation: a request admitted before
/// the interval ended is not counted after it. flowguard's time window counts
/// an outcome in the bucket of the instant it is reported (as resilience4j's
/// and Polly's windows do), so the late success lands in the new bucket.
#[tokio::test(start_paused = true)]
async fn gobreaker_interval_late_result_is_counted_in_the_bucket_it_finishes_in() {
    let b = gobreaker_custom(1, Arc::default());
    advance(Duration::from_secs(29)).await;
    ok(&b).await.unwrap();
    let late = b.try_acquire().unwrap();
    advance(Duration::from_millis(500)).await;
    assert_eq!(counts(&b), (1, 0, 0));
    advance(Duration::from_millis(500)).await; // over the interval
    assert_eq!(counts(&b), (0, 0, 0));
    late.success();
    // gobreaker: (0, 0, 0).
    assert_eq!(counts(&b), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn gobreaker_custom_is_successful_counts_errors_as_successes() {
    let b = gobreaker_default().build().unwrap();
    for _ in 0..5 {
        let r = b
            .call_with(|| async { Err::<u32, _>("fail") }, |_| Outcome::Success)
            .await;
        assert!(matches!(r, Err(BreakerError::Inner("fail"))));
    }
    assert_eq!((b.state(), counts(&b)), (State::Closed, (5, 0, 0)));
    b.reset();
    for _ in 0..6 {
        let _ = err(&b).await;
    }
    assert_eq!(b.state(), State::Open);
}

#[test]
fn gobreaker_counts_stay_exact_in_parallel() {
    let rate = CircuitBreaker::builder()
        .failure_rate_threshold(60.0)
        .minimum_calls(3)
        .count_window(1 << 20)
        .build()
        .unwrap();
    let consecutive_only = gobreaker_default().count_window(1 << 20).build().unwrap();
    for b in [rate, consecutive_only] {
        std::thread::scope(|s| {
            for _ in 0..10 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        b.try_acquire().unwrap().success();
                    }
                });
            }
        });
        assert_eq!((b.state(), counts(&b)), (State::Closed, (100_000, 0, 0)));
    }
}

#[test]
fn gobreaker_error_messages_name_the_state() {
    let open = Rejected::Open {
        retry_after: Duration::from_secs(60),
    };
    assert!(open.to_string().starts_with("circuit breaker is open"));
    assert!(Rejected::HalfOpenFull.to_string().contains("half-open"));
}

// Reference: App-vNext/Polly v8 (CircuitBreakerResiliencePipelineBuilderTests.cs,
// CircuitStateControllerTests.cs, CircuitBreakerResilienceStrategyTests.cs,
// AdvancedCircuitBehaviorTests.cs, RollingHealthMetricsTests.cs)
//
// Polly's advanced breaker maps onto `failure_rate_threshold(100 ·
// FailureRatio)`, `minimum_calls(MinimumThroughput)`,
// `time_window(SamplingDuration, 10)`, `open_wait(BreakDuration)` and one
// probe; `ShouldHandle` is a classifier; `Isolate`/`Close` are
// `force_open`/`reset`.

fn polly(ratio_percent: f64, throughput: u32, sampling: Duration, brk: Duration) -> Builder {
    CircuitBreaker::builder()
        .failure_rate_threshold(ratio_percent)
        .minimum_calls(throughput)
        .time_window(sampling, 10)
        .open_wait(brk)
        .permitted_probes(1)
}

/// Polly's `ShouldHandle = args.Result is -1`.
fn handle_minus_one(r: &Result<i32, &str>) -> Outcome {
    match r {
        Ok(-1) => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    }
}

#[tokio::test(start_paused = true)]
async fn polly_integration_opens_half_opens_reopens_and_closes() {
    let seen: Arc<Mutex<Vec<State>>> = Arc::default();
    let log = seen.clone();
    let b = polly(50.0, 10, Duration::from_secs(10), S1)
        .on_state_change(move |c: &StateChange| log.lock().unwrap().push(c.to))
        .build()
        .unwrap();
    let times = |to: State| seen.lock().unwrap().iter().filter(|s| **s == to).count();
    for _ in 0..10 {
        // A handled result is returned as it is, and counted as a failure.
        assert_eq!(
            b.call_with(|| async { Ok(-1) }, handle_minus_one)
                .await
                .unwrap(),
            -1
        );
    }
    assert_eq!(
        (
            times(State::Open),
            times(State::HalfOpen),
            times(State::Closed)
        ),
        (1, 0, 0)
    );
    let r = b.call_with(|| async { Ok(0) }, handle_minus_one).await;
    assert_eq!(
        r.unwrap_err().rejected(),
        Some(Rejected::Open { retry_after: S1 })
    );
    advance(S1).await;
    assert_eq!(
        b.call_with(|| async { Ok(-1) }, handle_minus_one)
            .await
            .unwrap(),
        -1
    );
    let r = b.call_with(|| async { Ok(0) }, handle_minus_one).await;
    assert!(matches!(
        r,
        Err(BreakerError::Rejected(Rejected::Open { .. }))
    ));
    assert_eq!(
        (
            times(State::Open),
            times(State::HalfOpen),
            times(State::Closed)
        ),
        (2, 1, 0)
    );
    advance(S1).await;
    assert_eq!(
        b.call_with(|| async { Ok(0) }, handle_minus_one)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        (
            times(State::Open),
            times(State::HalfOpen),
            times(State::Closed)
        ),
        (2, 2, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn polly_half_open_admits_one_probe_and_a_failed_probe_reopens() {
    let brk = Duration::from_secs(5);
    let b = polly(10.0, 1, Duration::from_secs(30), brk)
        .build()
        .unwrap();
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Open);
    advance(brk).await;
    let probe = b.try_acquire().unwrap();
    assert!(probe.is_probe());
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.try_acquire().unwrap_err(), Rejected::HalfOpenFull);
    probe.failure();
    assert_eq!(b.state(), State::Open);
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        b.try_acquire().unwrap_err(),
        Rejected::Open {
            retry_after: brk - Duration::from_millis(1)
        }
    );
    advance(brk + brk).await;
    b.try_acquire().unwrap().success();
    assert_eq!((b.state(), m(&b).calls), (State::Closed, 0));
}

/// Polly: a failure reported while open (or isolated) neither extends the
/// break nor changes the state; a success reported while isolated does not
/// close it.
#[tokio::test(start_paused = true)]
async fn polly_outcomes_reported_while_open_or_isolated_change_nothing() {
    let brk = Duration::from_secs(5);
    let b = polly(10.0, 1, Duration::from_secs(30), brk)
        .build()
        .unwrap();
    let late = b.try_acquire().unwrap();
    b.try_acquire().unwrap().failure();
    advance(S1).await;
    late.failure();
    assert_eq!(
        b.try_acquire().unwrap_err(),
        Rejected::Open {
            retry_after: brk - S1
        }
    );
    b.reset();
    let late = b.try_acquire().unwrap();
    b.force_open();
    late.success();
    assert_eq!(b.state(), State::ForcedOpen);
}

#[tokio::test(start_paused = true)]
async fn polly_isolate_refuses_without_a_retry_time_until_closed() {
    let seen: Arc<Mutex<Vec<(State, State)>>> = Arc::default();
    let log = seen.clone();
    let b = polly(10.0, 100, Duration::from_secs(30), Duration::from_secs(5))
        .on_state_change(move |c: &StateChange| log.lock().unwrap().push((c.from, c.to)))
        .build()
        .unwrap();
    b.force_open();
    let refusal = b.try_acquire().unwrap_err();
    assert_eq!(
        (refusal, refusal.retry_after()),
        (Rejected::ForcedOpen, None)
    );
    advance(Duration::from_secs(3600)).await;
    assert_eq!(b.try_acquire().unwrap_err(), Rejected::ForcedOpen);
    b.reset();
    assert_eq!(
        b.call_with(|| async { Ok(0) }, handle_minus_one)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (State::Closed, State::ForcedOpen),
            (State::ForcedOpen, State::Closed)
        ]
    );
}

/// Polly's strategy: a handled result is a failure, an unhandled result a
/// success, an unhandled exception is not recorded at all.
#[tokio::test(start_paused = true)]
async fn polly_should_handle_maps_to_failure_success_or_nothing() {
    let b = polly(10.0, 100, Duration::from_secs(30), S1)
        .build()
        .unwrap();
    let classify = |r: &Result<i32, &str>| match r {
        Ok(-1) | Err("invalid operation") => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Ignored,
    };
    assert_eq!(
        b.call_with(|| async { Ok(-1) }, classify).await.unwrap(),
        -1
    );
    assert_eq!((m(&b).calls, m(&b).failed_calls), (1, 1));
    assert_eq!(b.call_with(|| async { Ok(0) }, classify).await.unwrap(), 0);
    assert_eq!((m(&b).calls, m(&b).failed_calls), (2, 1));
    let r = b
        .call_with(|| async { Err("invalid operation") }, classify)
        .await;
    assert!(matches!(r, Err(BreakerError::Inner("invalid operation"))));
    assert_eq!((m(&b).calls, m(&b).failed_calls), (3, 2));
    let r = b.call_with(|| async { Err("argument") }, classify).await;
    assert!(matches!(r, Err(BreakerError::Inner("argument"))));
    assert_eq!((m(&b).calls, m(&b).failed_calls), (3, 2));
}

/// Polly's `AdvancedCircuitBehavior`: break when throughput >= minimum and
/// failure ratio >= threshold, both inclusive (the failures come last, so
/// the decision is made on a failure, as in Polly).
#[tokio::test(start_paused = true)]
async fn polly_break_needs_minimum_throughput_and_ratio_both_inclusive() {
    // (successes, failures, minimum throughput, threshold %, breaks)
    for (ok_n, fail_n, min, threshold, breaks) in [
        (10, 0, 10, 10.0, false),
        (9, 1, 10, 10.0, true),
        (8, 2, 10, 10.0, true),
        (9, 2, 10, 10.0, true),
        (8, 1, 10, 10.0, false),
    ] {
        let b = polly(threshold, min, Duration::from_secs(30), S1)
            .build()
            .unwrap();
        for _ in 0..ok_n {
            b.try_acquire().unwrap().success();
        }
        for _ in 0..fail_n {
            if let Ok(p) = b.try_acquire() {
                p.failure();
            }
        }
        let got = b.state() == State::Open;
        assert_eq!(got, breaks, "{ok_n} ok, {fail_n} failed, minimum {min}");
    }
}

/// Polly's rolling health metrics over a 10 s sampling duration in 10
/// windows: a window leaves the sample once the sampling duration has
/// passed since it started.
#[tokio::test(start_paused = true)]
async fn polly_rolling_health_respects_the_sampling_duration() {
    let sampling = Duration::from_secs(10);
    let two = Duration::from_secs(2);
    // A minimum that is never reached: the breaker only counts.
    let b = polly(100.0, 1000, sampling, S1).build().unwrap();
    let mut health = Vec::new();
    for i in 0..5 {
        if i < 2 {
            b.try_acquire().unwrap().failure();
        } else {
            b.try_acquire().unwrap().success();
        }
        b.try_acquire().unwrap().success();
        advance(two).await;
        health.push((m(&b).calls, m(&b).failed_calls));
    }
    advance(two).await;
    health.push((m(&b).calls, m(&b).failed_calls));
    assert_eq!(health, vec![(2, 1), (4, 2), (6, 2), (8, 2), (8, 1), (6, 0)]);

    // Capacity: one success a second, the oldest leaves after 10 s.
    let b = polly(100.0, 1000, sampling, S1).build().unwrap();
    for _ in 0..10 {
        b.try_acquire().unwrap().success();
        advance(S1).await;
    }
    assert_eq!(m(&b).calls, 9);
    advance(S1).await;
    assert_eq!(m(&b).calls, 8);

    // Everything leaves after exactly the sampling duration.
    let b = polly(100.0, 1000, sampling, S1).build().unwrap();
    b.try_acquire().unwrap().success();
    b.try_acquire().unwrap().success();
    advance(sampling).await;
    assert_eq!(m(&b).calls, 0);
}

/// Polly's `AdvancedCircuitBehavior` (and gobreaker's `ReadyToTrip`) is
/// consulted only when a call fails, so a success that brings the sample
/// up to the minimum throughput never breaks the circuit. flowguard judges
/// after every recorded outcome (resilience4j's rule, a documented
/// departure from Polly and gobreaker): F, F, S with a minimum of 3 and
/// 50 % trips on the success.
#[tokio::test(start_paused = true)]
#[ignore = "documented departure (breaker module docs): the rate policy is judged after every outcome, as in resilience4j; Polly and gobreaker judge on failures only"]
async fn polly_a_success_never_breaks_the_circuit() {
    let b = polly(50.0, 3, Duration::from_secs(30), S1).build().unwrap();
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), State::Closed);
}
