//! Loom models of the breaker's concurrent invariants. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_breaker`.
#![cfg(loom)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use flowguard::breaker::{CircuitBreaker, State, StateChange};
use flowguard::clock::ManualClock;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

const WAIT: Duration = Duration::from_secs(1);

fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// A consecutive-failures breaker with `probes` probe slots, counting the
/// hook's calls per target state in `changes[to]`.
fn breaker(
    probes: u32,
    trip_after: u32,
    clock: &ManualClock,
) -> (CircuitBreaker<ManualClock>, Arc<[AtomicUsize; 5]>) {
    let changes: Arc<[AtomicUsize; 5]> = Arc::new(std::array::from_fn(|_| AtomicUsize::new(0)));
    let c = changes.clone();
    let b = CircuitBreaker::builder()
        .without_failure_rate()
        .without_slow_call_rate()
        .consecutive_failures(trip_after)
        .open_wait(WAIT)
        .permitted_probes(probes)
        .on_state_change(move |ch: &StateChange| {
            let i = match ch.to {
                State::Closed => 0,
                State::Open => 1,
                State::HalfOpen => 2,
                State::ForcedOpen => 3,
                _ => 4,
            };
            c[i].fetch_add(1, Ordering::SeqCst);
        })
        .build_with_clock(clock.clone())
        .unwrap();
    (b, changes)
}

/// Trips the breaker and lets the open wait pass.
fn open_and_wait(b: &CircuitBreaker<ManualClock>, clock: &ManualClock) {
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Open);
    clock.advance(WAIT);
}

/// With P = 2 probe slots and three concurrent callers in half-open, never
/// more than two probes are in flight, and every slot comes back.
#[test]
fn never_more_than_permitted_probes_in_flight() {
    loom::model(|| {
        let clock = ManualClock::new();
        let (b, _) = breaker(2, 1, &clock);
        open_and_wait(&b, &clock);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let b = b.clone();
                let in_flight = in_flight.clone();
                thread::spawn(move || {
                    if let Ok(p) = b.try_acquire() {
                        assert!(p.is_probe());
                        let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(n <= 2, "{n} probes in flight");
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        p.ignore();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let m = b.metrics();
        assert_eq!((m.state, m.probes_in_flight), (State::HalfOpen, 0));
    });
}

/// Two failures racing to trip a breaker that trips on two: exactly one
/// Closed → Open transition, seen once by the hook and once in the count.
#[test]
fn concurrent_trip_is_applied_exactly_once() {
    loom::model(|| {
        let clock = ManualClock::new();
        let (b, changes) = breaker(1, 2, &clock);
        let p1 = b.try_acquire_owned().unwrap();
        let p2 = b.try_acquire().unwrap();
        let t = thread::spawn(move || p1.failure());
        p2.failure();
        t.join().unwrap();
        assert_eq!(b.state(), State::Open);
        assert_eq!(changes[1].load(Ordering::SeqCst), 1);
        assert_eq!(b.metrics().transitions, 1);
    });
}

/// Two callers arriving after the open wait: exactly one Open → HalfOpen
/// transition, and with one slot exactly one of them becomes the probe.
#[test]
fn open_to_half_open_happens_once() {
    loom::model(|| {
        let clock = ManualClock::new();
        let (b, changes) = breaker(1, 1, &clock);
        open_and_wait(&b, &clock);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                // The permit comes back, so the slot stays taken until both tried.
                thread::spawn(move || b.try_acquire_owned().ok())
            })
            .collect();
        let permits: Vec<_> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(permits.len(), 1);
        assert!(permits[0].is_probe());
        assert_eq!(changes[2].load(Ordering::SeqCst), 1);
        assert_eq!(b.state(), State::HalfOpen);
    });
}

/// A probe whose `call` future is polled once and dropped gives its slot
/// back, racing with another caller: afterwards the slot is free.
#[test]
fn cancelled_probe_frees_its_slot() {
    loom::model(|| {
        let clock = ManualClock::new();
        let (b, _) = breaker(1, 1, &clock);
        open_and_wait(&b, &clock);
        let b2 = b.clone();
        let t = thread::spawn(move || {
            let mut fut = pin!(b2.call(std::future::pending::<Result<(), ()>>));
            // Pending (it holds the slot) or refused (the other caller has it).
            let _ = poll_once(fut.as_mut());
            // dropped here: cancelled mid-call
        });
        if let Ok(p) = b.try_acquire() {
            p.ignore();
        }
        t.join().unwrap();
        assert_eq!(b.metrics().probes_in_flight, 0);
        let p = b.try_acquire().expect("the slot is free again");
        p.success();
        assert_eq!(b.state(), State::Closed);
    });
}

/// `wait_until_ready` parked on a clock moved by hand is woken by the move
/// that ends the open wait, however the move races with its look.
#[test]
fn a_move_of_the_manual_clock_reaches_a_waiter() {
    loom::model(|| {
        let clock = ManualClock::new();
        let (b, _) = breaker(1, 1, &clock);
        b.try_acquire().unwrap().failure();
        let b2 = b.clone();
        let t = thread::spawn(move || loom::future::block_on(b2.wait_until_ready()));
        clock.advance(WAIT);
        t.join().unwrap();
        assert!(b.try_acquire().unwrap().is_probe());
    });
}

/// The lock-free refusal path while Open, racing a thread whose move of the
/// clock ends the open wait: every refusal is counted once (the refusal
/// count is a slot per thread outside loom, one atomic here), a refused caller is told
/// a wait inside the open period, and whoever is admitted after the wait is
/// the one probe.
#[test]
fn refusals_while_open_are_counted_and_race_the_end_of_the_wait() {
    loom::model(|| {
        let clock = ManualClock::new();
        let (b, _changes) = breaker(1, 1, &clock);
        let b = Arc::new(b);
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), State::Open);
        let refuse = |b: &CircuitBreaker<ManualClock>| match b.try_acquire() {
            Err(flowguard::breaker::Rejected::Open { retry_after }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= WAIT);
                0usize
            }
            // The other caller holds the one probe slot.
            Err(flowguard::breaker::Rejected::HalfOpenFull) => 0,
            Ok(p) => {
                assert!(p.is_probe());
                p.ignore();
                1
            }
            Err(e) => panic!("unexpected refusal {e:?}"),
        };
        let b2 = b.clone();
        let t = thread::spawn(move || refuse(&b2));
        let c2 = clock.clone();
        let mover = thread::spawn(move || c2.advance(WAIT));
        let admitted_here = refuse(&b);
        let admitted = t.join().unwrap() + admitted_here;
        mover.join().unwrap();
        assert_eq!(b.metrics().refused, 2 - admitted as u64);
    });
}

/// The lock-free success path racing a failure: a success counted without
/// the lock and a failure under it are both in the window, exactly once
/// each, whichever goes first.
#[test]
fn loom_lock_free_success_races_a_failure_and_both_count_once() {
    loom::model(|| {
        let clock = ManualClock::new();
        let (b, _) = breaker(1, 2, &clock);
        let b = Arc::new(b);
        let ok = b.try_acquire().unwrap();
        let b2 = b.clone();
        let t = thread::spawn(move || b2.try_acquire().unwrap().failure());
        ok.success();
        t.join().unwrap();
        let m = b.metrics();
        assert_eq!(b.state(), State::Closed);
        assert_eq!(
            (m.calls, m.failed_calls),
            (2, 1),
            "an outcome lost or doubled"
        );
        // The success reset the run only if it came after the failure.
        assert!(m.consecutive_failures <= 1);
    });
}

/// The lock-free success path racing the trip it cannot see: a success
/// admitted before the breaker opened is counted in that closed period or
/// dropped as stale, never carried into the next one.
#[test]
fn loom_lock_free_success_racing_a_trip_never_leaks_into_the_next_epoch() {
    loom::model(|| {
        let clock = ManualClock::new();
        let (b, changes) = breaker(1, 1, &clock);
        let b = Arc::new(b);
        let ok = b.try_acquire().unwrap();
        let b2 = b.clone();
        let t = thread::spawn(move || b2.try_acquire().unwrap().failure());
        ok.success();
        t.join().unwrap();
        assert_eq!(b.state(), State::Open);
        assert_eq!(changes[1].load(Ordering::SeqCst), 1);
        b.reset();
        let m = b.metrics();
        assert_eq!(
            (m.calls, m.failed_calls, m.consecutive_failures),
            (0, 0, 0),
            "a stale success reached the new closed period"
        );
        // And the path is open again for the new epoch.
        b.try_acquire().unwrap().success();
        assert_eq!(b.metrics().calls, 1);
    });
}
