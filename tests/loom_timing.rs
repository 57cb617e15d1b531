//! Loom models of the debouncer's shared state: concurrent `call`s with
//! `flush`/`cancel`, driving the real handle and worker (without a timer:
//! invocations come from `flush` and leading edges).
//!
//! Invariants: every awaited call resolves (no lost wake-up); each value is
//! invoked at most once; a waiter's result is an invoked value; the value of
//! the last call before the final flush is never lost.

#![cfg(loom)]

use std::time::Duration;

use flowguard::timing::{CallError, Debouncer};
use loom::sync::Arc;
use loom::sync::Mutex;
use loom::thread;

type Log = Arc<Mutex<Vec<u32>>>;

fn debouncer(
    leading: bool,
) -> (
    Debouncer<u32, u32>,
    Log,
    impl std::future::Future<Output = ()>,
) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let (d, worker) = Debouncer::builder(Duration::from_secs(3600))
        .leading(leading)
        .build_unspawned(move |v: u32| {
            l.lock().unwrap().push(v);
            std::future::ready(v)
        })
        .unwrap();
    (d, log, worker)
}

#[test]
fn concurrent_calls_and_flush_lose_nothing() {
    loom::model(|| {
        let (d, log, worker) = debouncer(false);
        let w = thread::spawn(move || loom::future::block_on(worker));
        let d1 = d.clone();
        let t1 = thread::spawn(move || {
            let r = d1.call_wait(1).unwrap();
            d1.flush();
            loom::future::block_on(r)
        });
        let r2 = d.call_wait(2).unwrap();
        let got1 = t1.join().unwrap();
        d.flush();
        let got2 = loom::future::block_on(r2);
        assert!(!d.is_pending());
        drop(d);
        w.join().unwrap();

        let log = log.lock().unwrap().clone();
        // Each value at most once.
        assert!(!log.is_empty() && log.len() <= 2, "{log:?}");
        if log.len() == 2 {
            assert_ne!(log[0], log[1]);
        }
        // Every waiter got an invoked value, and the caller of the value
        // invoked last got its own value: the latest is never lost.
        for got in [got1, got2] {
            let v = got.expect("no cancel in this model");
            assert!(log.contains(&v), "{v} not invoked: {log:?}");
        }
        let last = *log.last().unwrap();
        assert_eq!(if last == 1 { got1 } else { got2 }, Ok(last));
    });
}

#[test]
fn cancel_racing_a_call_never_hangs_a_waiter() {
    loom::model(|| {
        let (d, log, worker) = debouncer(false);
        let w = thread::spawn(move || loom::future::block_on(worker));
        let d1 = d.clone();
        let t1 = thread::spawn(move || {
            d1.cancel();
        });
        let r = d.call_wait(7).unwrap();
        t1.join().unwrap();
        let flushed = d.flush();
        let got = loom::future::block_on(r);
        drop(d);
        w.join().unwrap();
        let log = log.lock().unwrap().clone();
        match got {
            Ok(7) => assert!(flushed && log == vec![7]),
            Err(CallError::Cancelled) => assert!(!flushed && log.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
    });
}

#[test]
fn leading_calls_from_two_threads_invoke_once_per_window() {
    loom::model(|| {
        let (d, log, worker) = debouncer(true);
        let w = thread::spawn(move || loom::future::block_on(worker));
        let d1 = d.clone();
        let t1 = thread::spawn(move || {
            d1.call(1).unwrap();
        });
        d.call(2).unwrap();
        t1.join().unwrap();
        // One window: the first call invokes at once (leading), the second
        // waits for the trailing edge, which the flush makes due.
        assert!(d.is_pending());
        assert!(d.flush());
        let m = d.metrics();
        drop(d);
        w.join().unwrap();
        let log = log.lock().unwrap().clone();
        // Two invocations came due, and both ran, in order: nothing folds
        // into an invocation the idle worker has not started, and at most
        // one waits behind a running one. Never more, never lost.
        assert_eq!((log.len(), m.folded), (2, 0), "{log:?}");
        assert_ne!(log[0], log[1]);
    });
}

/// The worker future is dropped before its first poll (its runtime shut
/// down first) while another thread calls and waits: the call is refused,
/// or its waiter hears `Closed`; it never hangs, and nothing is invoked.
#[test]
fn worker_dropped_unpolled_fails_a_racing_waiter() {
    loom::model(|| {
        let (d, log, worker) = debouncer(true);
        let d1 = d.clone();
        let t = thread::spawn(move || match d1.call_wait(1) {
            Ok(wait) => loom::future::block_on(wait),
            Err(closed) => {
                assert_eq!(closed.into_inner(), 1);
                Err(CallError::Closed)
            }
        });
        drop(worker);
        assert_eq!(t.join().unwrap(), Err(CallError::Closed));
        assert!(d.is_closed());
        assert!(log.lock().unwrap().is_empty());
    });
}
