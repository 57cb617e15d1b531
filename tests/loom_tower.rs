//! Loom models of the tower admission layers' shared state: the permits a
//! `ConcurrencyLimit` takes in `poll_ready` on the crate's own semaphore
//! (through the `src/sync.rs` facade). Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --features tower --test loom_tower`.
//!
//! The layers build under loom (the `tower` feature pulls only
//! `tower-layer`, `tower-service` and `http`); the models drive them
//! through `tower_service::Service` on a hand-written inner service.
#![cfg(all(loom, feature = "tower"))]

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use flowguard::tower::{BoxError, ConcurrencyLimit, ConcurrencyLimitLayer};
use loom::future::block_on;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use tower_layer::Layer;
use tower_service::Service;

/// Answers at once; counts the calls in flight (from `call` to the
/// response) and fails the model if they ever exceed `limit`.
#[derive(Clone)]
struct Counting {
    in_flight: Arc<AtomicUsize>,
    limit: usize,
}

/// Out of flight when it answers, or when dropped before answering.
struct CountingFuture {
    in_flight: Arc<AtomicUsize>,
    done: bool,
}

impl Future for CountingFuture {
    type Output = Result<(), BoxError>;
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.done {
            self.done = true;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for CountingFuture {
    fn drop(&mut self) {
        if !self.done {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Service<()> for Counting {
    type Response = ();
    type Error = BoxError;
    type Future = CountingFuture;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, (): ()) -> CountingFuture {
        let before = self.in_flight.fetch_add(1, Ordering::SeqCst);
        assert!(
            before < self.limit,
            "{} in flight over {}",
            before + 1,
            self.limit
        );
        CountingFuture {
            in_flight: self.in_flight.clone(),
            done: false,
        }
    }
}

fn service(limit: usize) -> ConcurrencyLimit<Counting> {
    ConcurrencyLimitLayer::new(limit).unwrap().layer(Counting {
        in_flight: Arc::new(AtomicUsize::new(0)),
        limit,
    })
}

fn ready(svc: &mut ConcurrencyLimit<Counting>) {
    block_on(poll_fn(|cx| svc.poll_ready(cx))).unwrap();
}

/// A clone made ready and dropped without `call` gives its permit back:
/// the other clone, waiting on the one permit, gets it (else `block_on`
/// deadlocks and loom reports it).
#[test]
fn permit_returns_when_a_ready_service_is_dropped() {
    loom::model(|| {
        let mut a = service(1);
        let mut b = a.clone();
        let t = thread::spawn(move || {
            ready(&mut b);
            block_on(b.call(())).unwrap();
        });
        ready(&mut a);
        drop(a);
        t.join().unwrap();
    });
}

/// A response future dropped before it completes gives its permit back.
#[test]
fn permit_returns_when_the_response_future_is_dropped() {
    loom::model(|| {
        let mut a = service(1);
        let mut b = a.clone();
        let sem = a.semaphore().clone();
        let t = thread::spawn(move || {
            ready(&mut b);
            block_on(b.call(())).unwrap();
        });
        ready(&mut a);
        let fut = a.call(());
        drop(fut);
        t.join().unwrap();
        drop(a);
        assert_eq!(sem.available(), 1);
    });
}

/// Clones share the limit: two clones on two threads and one permit never
/// have two calls in flight, a waiter polled once and then dropped leaves
/// the queue, and every permit is back at the end.
#[test]
fn clones_never_exceed_the_limit() {
    loom::model(|| {
        let mut a = service(1);
        let mut b = a.clone();
        let mut c = a.clone();
        let sem = a.semaphore().clone();
        let t = thread::spawn(move || {
            ready(&mut b);
            block_on(b.call(())).unwrap();
        });
        // c polls once (maybe queued), then gives up.
        let _ = c.poll_ready(&mut Context::from_waker(Waker::noop()));
        drop(c);
        ready(&mut a);
        let mut fut = pin!(a.call(()));
        block_on(fut.as_mut()).unwrap();
        t.join().unwrap();
        drop(a);
        assert_eq!(sem.available(), 1);
        assert_eq!(sem.waiters(), 0);
    });
}
