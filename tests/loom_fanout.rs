//! Loom models of the fan-out's shared state: the ready queue children are
//! woken into (from other threads) and the hedge policy's shared window.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release
//! --target-dir target/loom --test loom_fanout`
#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use flowguard::fanout::{Gather, HedgePolicy, Outcome, hedge};
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
