//! Loom models of the fan-out's shared state: the ready queue children are
//! woken into (from other threads) and closed at the finish, the hedge
//! policy's shared window and extra-load budget, and the wake/poll counts a
//! spawned gather settles on at its deadline.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release
//! --target-dir target/loom --test loom_fanout`
#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use flowguard::fanout::{
    Finish, Gather, HedgePolicy, Outcome, SettleModel, hedge, hedge_with_attempt,
};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// A one-shot signal another thread fires; the future stores the waker.
#[derive(Clone)]
struct Signal(Arc<Mutex<(bool, Option<Waker>)>>);

impl Signal {
    fn new() -> Self {
        Self(Arc::new(Mutex::new((false, None))))
    }

    fn fire(&self) {
        let waker = {
            let mut s = self.0.lock().unwrap();
            s.0 = true;
            s.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn wait(&self, value: usize, drops: Arc<AtomicUsize>) -> Wait {
        Wait {
            signal: self.clone(),
            value,
            drops,
        }
    }
}

struct Wait {
    signal: Signal,
    value: usize,
    drops: Arc<AtomicUsize>,
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

impl Future for Wait {
    type Output = usize;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        let mut s = self.signal.0.lock().unwrap();
        if s.0 {
            Poll::Ready(self.value)
        } else {
            s.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// Two children woken from two threads while the gather runs: both are
/// reported, with their own values (no lost or misrouted wake-up).
#[test]
fn wakes_from_other_threads_reach_the_right_child() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (a, b) = (Signal::new(), Signal::new());
        let g = Gather::new([a.wait(10, drops.clone()), b.wait(20, drops.clone())])
            .build()
            .unwrap();
        let ta = thread::spawn(move || a.fire());
        let tb = thread::spawn(move || b.fire());
        let out = loom::future::block_on(g);
        ta.join().unwrap();
        tb.join().unwrap();
        assert_eq!(out.into_completed(), [(0, 10), (1, 20)]);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    });
}

/// One child woken twice at once (two threads hold its waker): the gather
/// completes and the child is polled to completion exactly once.
#[test]
fn double_wake_is_deduplicated() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let a = Signal::new();
        let g = Gather::new([a.wait(1, drops.clone())]).build().unwrap();
        let a2 = a.clone();
        let t1 = thread::spawn(move || a.fire());
        let t2 = thread::spawn(move || a2.fire());
        let out = loom::future::block_on(g);
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(out.completed_count(), 1);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}

/// Quorum of 1 over two children fired from two threads: the gather stops
/// at the first, the other is cancelled (dropped) either way, never leaked.
#[test]
fn quorum_cancels_the_loser() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (a, b) = (Signal::new(), Signal::new());
        let ok = |s: &Signal, v: usize, d: &Arc<AtomicUsize>| {
            let w = s.wait(v, d.clone());
            async move { Ok::<usize, ()>(w.await) }
        };
        let g = Gather::new([ok(&a, 1, &drops), ok(&b, 2, &drops)])
            .quorum(1)
            .build()
            .unwrap();
        let ta = thread::spawn(move || a.fire());
        let tb = thread::spawn(move || b.fire());
        let out = loom::future::block_on(g);
        ta.join().unwrap();
        tb.join().unwrap();
        assert_eq!(out.success_count(), 1);
        assert_eq!(
            out.outcomes()
                .iter()
                .filter(|o| matches!(o, Outcome::Cancelled))
                .count()
                + out.completed_count(),
            2
        );
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    });
}

/// Polled once, then dropped while another thread wakes it: the child is
/// dropped exactly once and the late wake is harmless.
#[test]
fn drop_after_one_poll_races_a_wake() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let a = Signal::new();
        let mut g = Box::pin(Gather::new([a.wait(1, drops.clone())]).build().unwrap());
        let waker = futures::task::noop_waker();
        assert!(
            g.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        let t = thread::spawn(move || a.fire());
        drop(g);
        t.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}

/// Two threads calling through one learned policy: every call and every
/// latency sample is counted in the shared window.
#[test]
fn shared_window_counts_every_sample() {
    loom::model(|| {
        let policy = HedgePolicy::builder()
            .percentile(0.5)
            .window(4)
            .min_samples(1)
            .max_hedges(0)
            .build()
            .unwrap();
        let p2 = policy.clone();
        let t = thread::spawn(move || {
            p2.record_latency(Duration::from_millis(3));
            loom::future::block_on(hedge(|| async { Ok::<u8, ()>(1) }, &p2)).unwrap();
        });
        policy.record_latency(Duration::from_millis(1));
        loom::future::block_on(hedge(|| async { Ok::<u8, ()>(2) }, &policy)).unwrap();
        t.join().unwrap();
        let m = policy.metrics();
        assert_eq!((m.calls, m.samples), (2, 4));
    });
}

/// Spawned mode at the deadline: a child's timer fires and its task polls
/// it on another thread while the driver sees its own deadline. If the
/// driver decides to wait for that poll, the poll's end tells it (no lost
/// wake-up: it would hang); if it decides not to, the poll is over.
#[test]
fn settle_at_the_deadline_never_loses_the_childs_poll() {
    loom::model(|| {
        let settle = SettleModel::new(1);
        let told = Arc::new(AtomicUsize::new(0));
        let (s, t) = (settle.clone(), told.clone());
        let child = thread::spawn(move || {
            s.wake(0); // the timer due at the deadline
            let seen = s.poll_start(0);
            if s.poll_end(0, seen) {
                t.fetch_add(1, Ordering::SeqCst); // ReadyQueue::push
            }
            seen
        });
        let due = settle.watch(0);
        let waiting = due.map(|wake| (wake, settle.polled_since(0, wake)));
        let seen = child.join().unwrap();
        match waiting {
            // Nothing to wait for: the poll had already finished, unwatched.
            None => assert_eq!(told.load(Ordering::SeqCst), 0),
            Some((_, false)) => assert_eq!(told.load(Ordering::SeqCst), 1, "driver never woken"),
            Some((wake, true)) => assert!(seen >= wake),
        }
        // Either way, once the poll is over the driver is satisfied.
        assert!(due.is_none_or(|wake| settle.polled_since(0, wake)));
    });
}

/// A child woken again around the deadline is waited for only up to the
/// wakes the driver saw: one more poll satisfies it, later wakes do not
/// extend the wait.
#[test]
fn settle_waits_for_the_wakes_in_its_snapshot_only() {
    loom::model(|| {
        let settle = SettleModel::new(1);
        // First poll before the deadline: nobody watches yet.
        let seen = settle.poll_start(0);
        assert!(!settle.poll_end(0, seen));
        let s = settle.clone();
        let waker = thread::spawn(move || s.wake(0));
        let due = settle.watch(0);
        waker.join().unwrap();
        // The task runs again for the wake (seen by the snapshot or not)...
        let seen = settle.poll_start(0);
        assert!(
            settle.poll_end(0, seen),
            "watched: the poll tells the driver"
        );
        // ...and a wake after that poll does not extend the wait.
        settle.wake(0);
        if let Some(wake) = due {
            assert!(settle.polled_since(0, wake));
        }
    });
}

/// `first_completed` over two children fired from two threads: the gather
/// stops at whichever it sees first and closes its ready queue; the other
/// child's wake may land after that, and is dropped harmlessly (or, woken
/// by the time the gather drains its queue, it is polled and done too, as
/// in asyncio's done set).
#[test]
fn first_completed_closes_the_queue_under_a_late_wake() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (a, b) = (Signal::new(), Signal::new());
        let g = Gather::new([a.wait(1, drops.clone()), b.wait(2, drops.clone())])
            .first_completed()
            .build()
            .unwrap();
        let ta = thread::spawn(move || a.fire());
        let tb = thread::spawn(move || b.fire());
        let out = loom::future::block_on(g);
        ta.join().unwrap();
        tb.join().unwrap();
        assert_eq!(out.finish(), Finish::FirstCompleted);
        assert!((1..=2).contains(&out.completed_count()));
        assert_eq!(out.completed_count() + out.cancelled_count(), 2);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    });
}

/// Two threads call through one policy whose extra-load budget holds one
/// hedge: each call's primary fails and asks for a hedge at once
/// (`hedge_on_error`, no timer involved); exactly one gets it, whatever the
/// interleaving, and the refusal is counted.
#[test]
fn the_extra_load_budget_is_never_overspent() {
    loom::model(|| {
        let policy = HedgePolicy::builder()
            // Cold percentile rule: no timed hedges, only hedges on error.
            .percentile(0.5)
            .window(4)
            .min_samples(4)
            .max_hedges(1)
            .hedge_on_error(true)
            .max_extra_load(0.000_001)
            .extra_load_burst(1)
            .build()
            .unwrap();
        let call = |p: HedgePolicy| {
            loom::future::block_on(hedge_with_attempt(
                |attempt| async move { if attempt == 0 { Err(()) } else { Ok(attempt) } },
                &p,
            ))
            .is_ok()
        };
        let p2 = policy.clone();
        let t = thread::spawn(move || call(p2));
        let here = call(policy.clone());
        let there = t.join().unwrap();
        assert!(here ^ there, "exactly one call was hedged (and won)");
        let m = policy.metrics();
        assert_eq!((m.calls, m.hedges_sent, m.hedges_denied), (2, 1, 1));
        assert_eq!(m.budget_available, Some(0));
    });
}
