//! Behaviour tests of `flowguard::tower`: every layer's `poll_ready` /
//! `call` contract by manual polling (tokio-test's mock task, a mock
//! service whose readiness and answers the test controls, Tokio's paused
//! clock), then the layers inside real axum servers on loopback ports the
//! OS picks, driven by a real HTTP client.
//!
//! The feature is on in `cargo test` through the dev-dependency on the
//! crate itself (see Cargo.toml).
#![cfg(all(feature = "tower", not(loom)))]

use std::collections::VecDeque;
use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use flowguard::breaker::{CircuitBreaker, Outcome, State};
use flowguard::clock::ManualClock;
use flowguard::fanout::HedgePolicy;
use flowguard::pipeline::{Admission, Pipeline};
use flowguard::rate::{KeyedRateLimiter, Quota, RateLimiter};
use flowguard::retry::{Backoff, Retry, RetryBudget, RetryPolicy};
use flowguard::semaphore::Semaphore;
use flowguard::tower::{
    BoxError, BreakerLayer, ConcurrencyLimitLayer, DeadlineLayer, HedgeLayer, KeyedRateLimitLayer,
    LoadShedLayer, NotReady, PerServiceRateLimitLayer, PipelineLayer, RateLimitLayer, Refusal,
    RetryLayer, ServerErrors, TimeoutLayer, error_response, parse_retry_after,
};
use tokio::sync::oneshot;
use tokio::time::{Instant, advance};
use tokio_test::task;
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------
// A mock service: readiness and answers under the test's control.

#[derive(Default)]
struct MockState {
    ready: bool,
    /// Hold each call's answer until `answer` is called.
    hold: bool,
    waker: Option<Waker>,
    ready_polls: usize,
    calls: Vec<u32>,
    held: VecDeque<oneshot::Sender<Result<u32, BoxError>>>,
}

#[derive(Clone, Default)]
struct Mock(Arc<Mutex<MockState>>);

impl Mock {
    fn ready() -> Self {
        let m = Mock::default();
        m.0.lock().unwrap().ready = true;
        m
    }
    fn holding() -> Self {
        let m = Mock::ready();
        m.0.lock().unwrap().hold = true;
        m
    }
    fn set_ready(&self, ready: bool) {
        let waker = {
            let mut s = self.0.lock().unwrap();
            s.ready = ready;
            s.waker.take()
        };
        if ready {
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
    fn calls(&self) -> Vec<u32> {
        self.0.lock().unwrap().calls.clone()
    }
    fn ready_polls(&self) -> usize {
        self.0.lock().unwrap().ready_polls
    }
    /// Answers the oldest held call whose future is still there.
    fn answer(&self, r: Result<u32, BoxError>) {
        let mut s = self.0.lock().unwrap();
        loop {
            let tx = s.held.pop_front().expect("a held call");
            if !tx.is_closed() {
                let _ = tx.send(r);
                return;
            }
        }
    }
}

impl Service<u32> for Mock {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let mut s = self.0.lock().unwrap();
        s.ready_polls += 1;
        if s.ready {
            Poll::Ready(Ok(()))
        } else {
            s.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn call(&mut self, req: u32) -> Self::Future {
        let mut s = self.0.lock().unwrap();
        s.calls.push(req);
        if s.hold {
            let (tx, rx) = oneshot::channel();
            s.held.push_back(tx);
            Box::pin(async move { rx.await.unwrap_or_else(|_| Err("answer dropped".into())) })
        } else {
            Box::pin(ready(Ok(req)))
        }
    }
}

/// Polls `svc.poll_ready` once inside `t`'s task context.
fn poll_ready<S: Service<u32>>(t: &mut task::Spawn<()>, svc: &mut S) -> Poll<Result<(), S::Error>> {
    t.enter(|cx, _| svc.poll_ready(cx))
}

fn refusal(err: &BoxError) -> Refusal {
    *Refusal::find(&**err).unwrap_or_else(|| panic!("not a refusal: {err}"))
}

// ---------------------------------------------------------------------------
// Compile-time guarantees: what axum and tokio::spawn need.

fn send_sync_clone<T: Send + Sync + Clone + 'static>(_: &T) {}
fn send<T: Send + 'static>(_: &T) {}

#[test]
fn services_are_send_sync_clone_and_futures_send() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _g = rt.enter();
    let m = Mock::ready();
    let mut c = ConcurrencyLimitLayer::new(1).unwrap().layer(m.clone());
    send_sync_clone(&c);
    send(&c.call(1));
    let mut l = LoadShedLayer::new(1).unwrap().layer(m.clone());
    send_sync_clone(&l);
    send(&l.call(1));
    let mut r =
        RateLimitLayer::wait(RateLimiter::new(Quota::per_second(1).unwrap())).layer(m.clone());
    send_sync_clone(&r);
    send(&r.call(1));
    let mut ps = PerServiceRateLimitLayer::wait(Quota::per_second(1).unwrap()).layer(m.clone());
    send_sync_clone(&ps);
    send(&ps.call(1));
    let mut k = KeyedRateLimitLayer::new(
        KeyedRateLimiter::new(Quota::per_second(1).unwrap()),
        |n: &u32| *n,
    )
    .layer(m.clone());
    send_sync_clone(&k);
    send(&k.call(1));
    let mut b = BreakerLayer::new(CircuitBreaker::new()).layer(m.clone());
    send_sync_clone(&b);
    send(&b.call(1));
    let mut t = TimeoutLayer::new(MS).unwrap().layer(m.clone());
    send_sync_clone(&t);
    send(&t.call(1));
    let mut d = DeadlineLayer::new(|_: &u32| None).layer(m.clone());
    send_sync_clone(&d);
    send(&d.call(1));
    let mut re = RetryLayer::<u32>::from_policy(RetryPolicy::new())
        .unwrap()
        .layer(m.clone());
    send_sync_clone(&re);
    send(&re.call(1));
    let policy = HedgePolicy::builder().fixed_delay(MS).build().unwrap();
    let mut h = HedgeLayer::new(policy).layer(m.clone());
    send_sync_clone(&h);
    send(&h.call(1));
    let mut p = PipelineLayer::new(Pipeline::<u32, BoxError>::builder().build().unwrap()).layer(m);
    send_sync_clone(&p);
    send(&p.call(1));
}

// ---------------------------------------------------------------------------
// Concurrency limit.

#[tokio::test]
async fn concurrency_limit_is_backpressure_and_frees_the_permit_when_the_answer_comes() {
    let layer = ConcurrencyLimitLayer::new(2).unwrap();
    let m = Mock::holding();
    let (mut a, mut b, mut c) = (
        layer.layer(m.clone()),
        layer.layer(m.clone()),
        layer.layer(m.clone()),
    );
    let mut ta = task::spawn(());
    let mut tc = task::spawn(());
    assert!(poll_ready(&mut ta, &mut a).is_ready());
    assert!(poll_ready(&mut ta, &mut b).is_ready());
    assert_eq!(layer.semaphore().available(), 0);
    // Full: c is not ready, and it is queued.
    assert!(poll_ready(&mut tc, &mut c).is_pending());
    assert_eq!(layer.semaphore().waiters(), 1);
    // The inner service was not even asked while c had no permit.
    assert_eq!(m.ready_polls(), 2);

    let mut fa = task::spawn(a.call(1));
    let _fb = b.call(2);
    assert!(fa.poll().is_pending());
    assert!(!tc.is_woken());
    m.answer(Ok(10));
    assert!(fa.is_woken());
    // The permit is released when the answer is taken, before the future is dropped.
    assert_eq!(fa.poll().map(|r| r.unwrap()), Poll::Ready(10));
    assert!(tc.is_woken());
    assert!(poll_ready(&mut tc, &mut c).is_ready());
    assert_eq!(m.calls(), [1, 2]);
}

#[tokio::test]
async fn concurrency_limit_service_made_ready_then_dropped_gives_its_permit_back() {
    let layer = ConcurrencyLimitLayer::new(1).unwrap();
    let m = Mock::ready();
    let (mut a, mut b) = (layer.layer(m.clone()), layer.layer(m.clone()));
    let mut ta = task::spawn(());
    let mut tb = task::spawn(());
    assert!(poll_ready(&mut ta, &mut a).is_ready());
    assert!(poll_ready(&mut tb, &mut b).is_pending());
    drop(a);
    assert!(tb.is_woken());
    assert!(poll_ready(&mut tb, &mut b).is_ready());
    // b holds it now; once b is dropped too, all is back.
    assert_eq!(layer.semaphore().available(), 0);
    drop(b);
    assert_eq!(layer.semaphore().available(), 1);
    assert!(m.calls().is_empty());
}

#[tokio::test]
async fn concurrency_limit_dropped_response_future_and_dropped_waiter_leak_nothing() {
    let layer = ConcurrencyLimitLayer::new(1).unwrap();
    let m = Mock::holding();
    let mut a = layer.layer(m.clone());
    let mut b = layer.layer(m.clone());
    let mut t = task::spawn(());
    assert!(poll_ready(&mut t, &mut a).is_ready());
    let fut = a.call(7);
    assert_eq!(layer.semaphore().available(), 0);
    assert!(poll_ready(&mut t, &mut b).is_pending());
    assert_eq!(layer.semaphore().waiters(), 1);
    // A waiting service dropped leaves the queue...
    drop(b);
    assert_eq!(layer.semaphore().waiters(), 0);
    // ...and a response future dropped before its answer frees the permit.
    drop(fut);
    assert_eq!(layer.semaphore().available(), 1);
    assert_eq!(m.calls(), [7]);
}

#[tokio::test]
async fn concurrency_limit_call_while_waiting_leaves_the_line_so_the_next_gets_the_permit() {
    let layer = ConcurrencyLimitLayer::new(1).unwrap();
    let m = Mock::ready();
    let mut x = layer.layer(m.clone());
    let (mut a, mut b) = (layer.layer(m.clone()), layer.layer(m.clone()));
    let (mut tx, mut ta, mut tb) = (task::spawn(()), task::spawn(()), task::spawn(()));
    assert!(poll_ready(&mut tx, &mut x).is_ready()); // x holds the permit
    assert!(poll_ready(&mut ta, &mut a).is_pending()); // first in line
    assert!(poll_ready(&mut tb, &mut b).is_pending()); // second
    // `call` without readiness is refused and takes a out of the line: a
    // service its owner may never poll again must not strand the permit.
    let err = a.call(9).await.unwrap_err();
    assert!(err.is::<NotReady>());
    assert_eq!(layer.semaphore().waiters(), 1);
    assert_eq!(x.call(1).await.unwrap(), 1); // the permit goes back
    assert!(tb.is_woken());
    assert!(poll_ready(&mut tb, &mut b).is_ready());
    assert!(poll_ready(&mut ta, &mut a).is_pending()); // a queues again, last
    assert_eq!(b.call(2).await.unwrap(), 2);
    assert!(ta.is_woken());
    assert!(poll_ready(&mut ta, &mut a).is_ready());
    assert_eq!(a.call(3).await.unwrap(), 3);
    assert_eq!(m.calls(), [1, 2, 3]);
}

#[tokio::test]
async fn concurrency_limit_clone_shares_the_limit_but_not_the_permit() {
    let layer = ConcurrencyLimitLayer::new(1).unwrap();
    let mut a = layer.layer(Mock::ready());
    let mut t = task::spawn(());
    assert!(poll_ready(&mut t, &mut a).is_ready());
    let mut a2 = a.clone();
    assert!(poll_ready(&mut t, &mut a2).is_pending());
    assert_eq!(layer.semaphore().available(), 0);
}

#[tokio::test]
async fn concurrency_limit_waits_for_the_inner_service_with_its_permit() {
    let layer = ConcurrencyLimitLayer::new(1).unwrap();
    let m = Mock::default(); // not ready
    let mut a = layer.layer(m.clone());
    let mut t = task::spawn(());
    assert!(poll_ready(&mut t, &mut a).is_pending());
    assert_eq!(layer.semaphore().available(), 0); // the permit is held meanwhile
    m.set_ready(true);
    assert!(t.is_woken());
    assert!(poll_ready(&mut t, &mut a).is_ready());
}

#[tokio::test]
async fn concurrency_limit_call_without_poll_ready_is_an_error_not_a_call() {
    let layer = ConcurrencyLimitLayer::new(1).unwrap();
    let m = Mock::ready();
    let err = layer.layer(m.clone()).call(1).await.unwrap_err();
    assert!(err.is::<NotReady>());
    assert!(m.calls().is_empty());
    assert_eq!(error_response::<String>(&*err).status(), 500);
}

#[tokio::test]
async fn concurrency_limit_resized_to_zero_or_closed_refuses_from_call() {
    let sem = Semaphore::new(1);
    let layer = ConcurrencyLimitLayer::with_semaphore(sem.clone());
    let m = Mock::ready();
    sem.set_capacity(0).unwrap();
    let err = layer.layer(m.clone()).oneshot(1).await.unwrap_err();
    assert_eq!(refusal(&err), Refusal::Overloaded);
    sem.set_capacity(1).unwrap();
    assert_eq!(layer.layer(m.clone()).oneshot(2).await.unwrap(), 2);
    sem.close();
    let err = layer.layer(m.clone()).oneshot(3).await.unwrap_err();
    assert_eq!(refusal(&err), Refusal::Closed);
    assert_eq!(m.calls(), [2]);
}

#[test]
fn concurrency_limit_of_zero_is_a_config_error() {
    assert_eq!(ConcurrencyLimitLayer::new(0).unwrap_err().field(), "max");
    assert_eq!(
        ConcurrencyLimitLayer::new(usize::MAX).unwrap_err().field(),
        "max"
    );
    assert_eq!(LoadShedLayer::new(0).unwrap_err().field(), "max");
    assert_eq!(
        TimeoutLayer::new(Duration::ZERO).unwrap_err().field(),
        "timeout"
    );
}

// ---------------------------------------------------------------------------
// Load shedding.

#[tokio::test]
async fn load_shed_refuses_at_once_when_full_without_touching_the_inner_service() {
    let layer = LoadShedLayer::new(1).unwrap();
    let m = Mock::holding();
    let (mut a, mut b) = (layer.layer(m.clone()), layer.layer(m.clone()));
    let mut t = task::spawn(());
    assert!(poll_ready(&mut t, &mut a).is_ready());
    let _running = a.call(1);
    assert_eq!(m.ready_polls(), 1);
    // Full: b is ready at once, to refuse.
    assert!(matches!(poll_ready(&mut t, &mut b), Poll::Ready(Ok(()))));
    assert_eq!(m.ready_polls(), 1);
    let err = b.call(2).await.unwrap_err();
    assert_eq!(refusal(&err), Refusal::Overloaded);
    let resp = error_response::<String>(&*err);
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(m.calls(), [1]);
}

#[tokio::test]
async fn load_shed_sheds_when_the_inner_service_is_not_ready_and_frees_the_permit() {
    let layer = LoadShedLayer::new(1).unwrap();
    let m = Mock::default();
    let mut a = layer.layer(m.clone());
    let mut t = task::spawn(());
    assert!(poll_ready(&mut t, &mut a).is_ready());
    assert_eq!(layer.semaphore().available(), 1);
    let err = a.call(1).await.unwrap_err();
    assert_eq!(refusal(&err), Refusal::Overloaded);
    // Ready below: admitted; made ready then dropped: the permit comes back.
    m.set_ready(true);
    let mut b = layer.layer(m.clone());
    assert!(poll_ready(&mut t, &mut b).is_ready());
    assert_eq!(layer.semaphore().available(), 0);
    drop(b);
    assert_eq!(layer.semaphore().available(), 1);
    assert!(m.calls().is_empty());
}

// ---------------------------------------------------------------------------
// Rate limit, plain.

#[tokio::test(start_paused = true)]
async fn rate_limit_shed_refuses_with_the_exact_retry_after_and_never_polls_below() {
    let limiter = RateLimiter::new(Quota::per_second(4).unwrap().with_burst(2).unwrap());
    let layer = RateLimitLayer::shed(limiter);
    let m = Mock::ready();
    for n in 0..2 {
        assert_eq!(layer.layer(m.clone()).oneshot(n).await.unwrap(), n);
    }
    assert_eq!(m.ready_polls(), 2);
    let err = layer.layer(m.clone()).oneshot(9).await.unwrap_err();
    assert_eq!(
        refusal(&err),
        Refusal::RateLimited {
            retry_after: Some(250 * MS)
        }
    );
    let resp = error_response::<String>(&*err);
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    // A refused request did not make the inner service ready.
    assert_eq!(m.ready_polls(), 2);
    advance(249 * MS).await;
    assert!(layer.layer(m.clone()).oneshot(9).await.is_err());
    advance(MS).await;
    assert_eq!(layer.layer(m.clone()).oneshot(3).await.unwrap(), 3);
    assert_eq!(m.calls(), [0, 1, 3]);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_wait_is_not_ready_until_the_token_comes() {
    let limiter = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(1).unwrap());
    let layer = RateLimitLayer::wait(limiter.clone());
    let m = Mock::ready();
    let start = Instant::now();
    layer.layer(m.clone()).oneshot(1).await.unwrap();
    let mut b = layer.layer(m.clone());
    let mut t = task::spawn(());
    assert!(poll_ready(&mut t, &mut b).is_pending());
    assert_eq!(limiter.snapshot().waiters, 1);
    advance(99 * MS).await;
    assert!(poll_ready(&mut t, &mut b).is_pending());
    advance(MS).await;
    assert!(t.is_woken());
    assert!(poll_ready(&mut t, &mut b).is_ready());
    assert_eq!(b.call(2).await.unwrap(), 2);
    assert_eq!(start.elapsed(), 100 * MS);
    // Through oneshot: a third waits its 100 ms too.
    layer.layer(m.clone()).oneshot(3).await.unwrap();
    assert_eq!(start.elapsed(), 200 * MS);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_call_while_waiting_leaves_the_line_so_the_next_gets_the_token() {
    let limiter = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(1).unwrap());
    let layer = RateLimitLayer::wait(limiter.clone());
    let m = Mock::ready();
    layer.layer(m.clone()).oneshot(1).await.unwrap();
    let (mut a, mut b) = (layer.layer(m.clone()), layer.layer(m.clone()));
    let (mut ta, mut tb) = (task::spawn(()), task::spawn(()));
    assert!(poll_ready(&mut ta, &mut a).is_pending()); // first in line
    assert!(poll_ready(&mut tb, &mut b).is_pending()); // second
    // `call` without readiness is refused and takes a out of the line, so
    // a service its owner no longer polls cannot hold up b.
    let err = a.call(9).await.unwrap_err();
    assert!(err.is::<NotReady>());
    assert_eq!(limiter.snapshot().waiters, 1);
    advance(100 * MS).await;
    assert!(tb.is_woken());
    assert!(poll_ready(&mut tb, &mut b).is_ready());
    assert_eq!(b.call(2).await.unwrap(), 2);
    assert!(poll_ready(&mut ta, &mut a).is_pending()); // a queues again
    advance(100 * MS).await;
    assert!(poll_ready(&mut ta, &mut a).is_ready());
    assert_eq!(a.call(3).await.unwrap(), 3);
    assert_eq!(m.calls(), [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_token_taken_by_poll_ready_is_refunded_on_drop() {
    let limiter = RateLimiter::new(Quota::per_minute(1).unwrap());
    for layer in [
        RateLimitLayer::shed(limiter.clone()),
        RateLimitLayer::wait(limiter.clone()),
    ] {
        let mut a = layer.layer(Mock::ready());
        let mut t = task::spawn(());
        assert!(poll_ready(&mut t, &mut a).is_ready());
        assert_eq!(limiter.snapshot().available, 0);
        drop(a);
        assert_eq!(limiter.snapshot().available, 1);
    }
    // A waiting service dropped leaves the queue without taking anything.
    limiter.try_acquire(1).unwrap();
    let mut w = RateLimitLayer::wait(limiter.clone()).layer(Mock::ready());
    let mut t = task::spawn(());
    assert!(poll_ready(&mut t, &mut w).is_pending());
    assert_eq!(limiter.snapshot().waiters, 1);
    drop(w);
    assert_eq!(limiter.snapshot().waiters, 0);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_holds_its_token_while_the_inner_service_is_not_ready() {
    let limiter = RateLimiter::new(Quota::per_minute(1).unwrap());
    let m = Mock::default();
    let mut a = RateLimitLayer::shed(limiter.clone()).layer(m.clone());
    let mut t = task::spawn(());
    assert!(poll_ready(&mut t, &mut a).is_pending());
    assert!(poll_ready(&mut t, &mut a).is_pending());
    // One token, not one per poll.
    assert_eq!(limiter.snapshot().available, 0);
    m.set_ready(true);
    assert!(t.is_woken());
    assert!(poll_ready(&mut t, &mut a).is_ready());
    assert_eq!(a.call(5).await.unwrap(), 5);
}

// ---------------------------------------------------------------------------
// Rate limit, per service.

#[tokio::test(start_paused = true)]
async fn per_service_rate_limit_gives_each_service_and_clone_its_own_exact_budget() {
    let layer =
        PerServiceRateLimitLayer::shed(Quota::per_second(4).unwrap().with_burst(2).unwrap());
    let m = Mock::ready();
    let mut a = layer.layer(m.clone());
    for n in 0..2 {
        assert_eq!((&mut a).oneshot(n).await.unwrap(), n);
    }
    let err = (&mut a).oneshot(9).await.unwrap_err();
    assert_eq!(
        refusal(&err),
        Refusal::RateLimited {
            retry_after: Some(250 * MS)
        }
    );
    let resp = error_response::<String>(&*err);
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    // A refused request did not make the inner service ready.
    assert_eq!(m.ready_polls(), 2);
    // Another service of the same layer: a full bucket of its own.
    let mut b = layer.layer(m.clone());
    for n in 10..12 {
        assert_eq!((&mut b).oneshot(n).await.unwrap(), n);
    }
    assert!((&mut b).oneshot(19).await.is_err());
    // A clone copies the bucket as it stands (empty) and then goes its own way.
    let mut c = a.clone();
    assert_eq!(c.available(), 0);
    advance(249 * MS).await;
    let err = (&mut c).oneshot(29).await.unwrap_err();
    assert_eq!(refusal(&err).retry_after(), Some(MS));
    advance(MS).await;
    // One token each, at the same instant: the budgets are independent.
    assert_eq!((&mut a).oneshot(3).await.unwrap(), 3);
    assert_eq!((&mut c).oneshot(20).await.unwrap(), 20);
    assert_eq!((&mut b).oneshot(12).await.unwrap(), 12);
    for svc in [&mut a, &mut b, &mut c] {
        let err = svc.oneshot(99).await.unwrap_err();
        assert_eq!(refusal(&err).retry_after(), Some(250 * MS));
    }
    assert_eq!(m.calls(), [0, 1, 10, 11, 3, 20, 12]);
}

#[tokio::test(start_paused = true)]
async fn per_service_rate_limit_bursts_exactly_the_burst_after_idling() {
    let layer =
        PerServiceRateLimitLayer::shed(Quota::per_second(10).unwrap().with_burst(3).unwrap());
    let mut a = layer.layer(Mock::ready());
    advance(Duration::from_secs(3600)).await;
    assert_eq!(a.available(), 3);
    for n in 0..3 {
        (&mut a).oneshot(n).await.unwrap();
    }
    let err = (&mut a).oneshot(3).await.unwrap_err();
    assert_eq!(refusal(&err).retry_after(), Some(100 * MS));
    // Half a token later: still refused, with the other half to wait.
    advance(50 * MS).await;
    let err = (&mut a).oneshot(3).await.unwrap_err();
    assert_eq!(refusal(&err).retry_after(), Some(50 * MS));
    advance(250 * MS).await;
    assert_eq!(a.available(), 3);
}

#[tokio::test(start_paused = true)]
async fn per_service_rate_limit_wait_is_not_ready_until_its_token_is_due() {
    let layer =
        PerServiceRateLimitLayer::wait(Quota::per_second(10).unwrap().with_burst(1).unwrap());
    let m = Mock::ready();
    let start = Instant::now();
    let mut a = layer.layer(m.clone());
    (&mut a).oneshot(1).await.unwrap();
    let mut t = task::spawn(());
    assert!(poll_ready(&mut t, &mut a).is_pending());
    // Another service is not held back by a's wait.
    let mut b = layer.layer(m.clone());
    assert!(poll_ready(&mut t, &mut b).is_ready());
    assert_eq!(b.call(7).await.unwrap(), 7);
    advance(99 * MS).await;
    assert!(!t.is_woken());
    assert!(poll_ready(&mut t, &mut a).is_pending());
    advance(MS).await;
    assert!(t.is_woken());
    assert!(poll_ready(&mut t, &mut a).is_ready());
    assert_eq!(a.call(2).await.unwrap(), 2);
    assert_eq!(start.elapsed(), 100 * MS);
    // Through oneshot: the next waits its 100 ms too.
    (&mut a).oneshot(3).await.unwrap();
    assert_eq!(start.elapsed(), 200 * MS);
    assert_eq!(m.calls(), [1, 7, 2, 3]);
}

/// tower's `RateLimit` panics on a `call` without `poll_ready`; the
/// waiting per-service limit, which keeps the inner service's error type
/// and so has no refusal to answer with, lets it through and charges its
/// token anyway: a debt the next `poll_ready`s wait out, so the rate holds.
#[tokio::test(start_paused = true)]
async fn per_service_rate_limit_wait_charges_a_call_without_poll_ready_as_a_debt() {
    let layer =
        PerServiceRateLimitLayer::wait(Quota::per_second(10).unwrap().with_burst(1).unwrap());
    let m = Mock::ready();
    let mut a = layer.layer(m.clone());
    let start = Instant::now();
    // Two calls without readiness: both reach the inner service.
    assert_eq!(a.call(1).await.unwrap(), 1);
    assert_eq!(a.call(2).await.unwrap(), 2);
    assert_eq!(a.available(), 0);
    // The burst of 1 was spent by the first; the second is 100 ms of debt.
    let mut t = task::spawn(());
    assert!(poll_ready(&mut t, &mut a).is_pending());
    advance(199 * MS).await;
    assert!(poll_ready(&mut t, &mut a).is_pending());
    // A call while waiting is charged too, and the wait moves with it.
    assert_eq!(a.call(3).await.unwrap(), 3);
    advance(MS).await;
    assert!(poll_ready(&mut t, &mut a).is_pending());
    (&mut a).oneshot(4).await.unwrap();
    assert_eq!(start.elapsed(), 300 * MS);
    assert_eq!(m.calls(), [1, 2, 3, 4]);
}

/// The waiting per-service limit keeps the inner service's error and
/// future types, as tower's `RateLimit` does: a service that cannot fail
/// (what an axum route must be) stays one that cannot fail.
#[tokio::test(start_paused = true)]
async fn per_service_rate_limit_wait_keeps_the_inner_error_type() {
    use std::convert::Infallible;
    fn infallible<S: Service<u32, Error = Infallible>>(s: S) -> S {
        s
    }
    let inner = tower::service_fn(|n: u32| std::future::ready(Ok::<_, Infallible>(n + 1)));
    let mut svc = infallible(
        PerServiceRateLimitLayer::wait(Quota::per_second(1).unwrap().with_burst(1).unwrap())
            .layer(inner),
    );
    let start = Instant::now();
    let Ok(two) = (&mut svc).oneshot(1).await;
    let Ok(three) = (&mut svc).oneshot(2).await;
    assert_eq!((two, three), (2, 3));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

/// Tokio's timer wakes a waiting service on the next millisecond; it takes
/// its token as of the exact instant it was due, so 100 calls at one token
/// every 1.5 ms take 150 ms (charged at the wake-up they took 200 ms).
#[tokio::test(start_paused = true)]
async fn per_service_rate_limit_wait_keeps_the_quotas_rate_through_the_timer() {
    let quota = Quota::with_period(2, Duration::from_micros(3000))
        .unwrap()
        .with_burst(1)
        .unwrap();
    let m = Mock::ready();
    let mut a = PerServiceRateLimitLayer::wait(quota).layer(m.clone());
    (&mut a).oneshot(0).await.unwrap();
    let start = Instant::now();
    for i in 0..100 {
        (&mut a).oneshot(i).await.unwrap();
    }
    assert!(start.elapsed() <= 151 * MS, "{:?}", start.elapsed());
    assert_eq!(a.available(), 0);
}

#[tokio::test(start_paused = true)]
async fn per_service_rate_limit_holds_one_token_while_the_inner_service_is_not_ready() {
    let m = Mock::default();
    let mut a = PerServiceRateLimitLayer::shed(Quota::per_minute(2).unwrap()).layer(m.clone());
    let mut t = task::spawn(());
    assert!(poll_ready(&mut t, &mut a).is_pending());
    assert!(poll_ready(&mut t, &mut a).is_pending());
    // One token, not one per poll.
    assert_eq!(a.available(), 1);
    // A clone does not get the held token.
    let c = a.clone();
    assert_eq!(c.available(), 1);
    m.set_ready(true);
    assert!(t.is_woken());
    assert!(poll_ready(&mut t, &mut a).is_ready());
    assert_eq!(a.call(5).await.unwrap(), 5);
    assert_eq!(a.available(), 1);
    // `call` without `poll_ready` is NotReady, and calls nothing.
    let err = a.call(6).await.unwrap_err();
    assert!(err.is::<NotReady>());
    assert_eq!(m.calls(), [5]);
}

#[test]
fn per_service_rate_limit_waits_on_a_manual_clock_without_a_runtime() {
    let clock = ManualClock::new();
    let layer =
        PerServiceRateLimitLayer::wait(Quota::per_second(2).unwrap().with_burst(1).unwrap())
            .with_clock(clock.clone());
    let m = Mock::ready();
    let mut a = layer.layer(m.clone());
    let mut t = task::spawn(());
    assert!(poll_ready(&mut t, &mut a).is_ready());
    drop(a.call(1));
    assert!(poll_ready(&mut t, &mut a).is_pending());
    clock.advance(Duration::from_millis(499));
    assert!(t.is_woken()); // every move wakes it to re-check
    assert!(poll_ready(&mut t, &mut a).is_pending());
    clock.advance(Duration::from_millis(1));
    assert!(t.is_woken());
    assert!(poll_ready(&mut t, &mut a).is_ready());
    drop(a.call(2));
    assert_eq!(m.calls(), [1, 2]);
}

/// A coarse move of a clock moved by hand past the token's instant charges
/// the token at that instant, as if the clock had passed through it: the
/// next token comes one interval after it, not after the move.
#[test]
fn per_service_rate_limit_charges_a_coarse_move_at_the_tokens_instant() {
    let clock = ManualClock::new();
    let layer =
        PerServiceRateLimitLayer::wait(Quota::per_second(2).unwrap().with_burst(1).unwrap())
            .with_clock(clock.clone());
    let m = Mock::ready();
    let mut a = layer.layer(m.clone());
    let mut t = task::spawn(());
    assert!(poll_ready(&mut t, &mut a).is_ready());
    drop(a.call(1));
    assert!(poll_ready(&mut t, &mut a).is_pending());
    clock.advance(Duration::from_millis(900)); // ready at 500
    assert!(poll_ready(&mut t, &mut a).is_ready());
    drop(a.call(2));
    // Charged at 500: the next token is due at 1000, 100 ms from now.
    assert!(poll_ready(&mut t, &mut a).is_pending());
    clock.advance(Duration::from_millis(100));
    assert!(poll_ready(&mut t, &mut a).is_ready());
    drop(a.call(3));
    assert_eq!(m.calls(), [1, 2, 3]);
}

// ---------------------------------------------------------------------------
// Rate limit, keyed.

#[tokio::test(start_paused = true)]
async fn keyed_rate_limit_limits_each_key_alone_with_its_retry_after() {
    let limiter = KeyedRateLimiter::new(Quota::per_second(2).unwrap());
    // The key is the request's tens digit: 10..19 is client 1, 20..29 client 2.
    let layer = KeyedRateLimitLayer::new(limiter.clone(), |n: &u32| n / 10);
    let m = Mock::ready();
    let mut refused = Vec::new();
    for n in [10, 11, 12, 20, 13, 21, 22] {
        if let Err(e) = layer.layer(m.clone()).oneshot(n).await {
            refused.push((n, refusal(&e)));
        }
    }
    let half = Refusal::RateLimited {
        retry_after: Some(500 * MS),
    };
    assert_eq!(refused, [(12, half), (13, half), (22, half)]);
    assert_eq!(m.calls(), [10, 11, 20, 21]);
    assert_eq!(limiter.len(), 2);
    advance(500 * MS).await;
    assert_eq!(layer.layer(m.clone()).oneshot(14).await.unwrap(), 14);
}

#[tokio::test(start_paused = true)]
async fn keyed_rate_limit_passes_backpressure_through() {
    let limiter = KeyedRateLimiter::new(Quota::per_second(1).unwrap());
    let m = Mock::default();
    let mut svc = KeyedRateLimitLayer::new(limiter.clone(), |_: &u32| ()).layer(m.clone());
    let mut t = task::spawn(());
    assert!(poll_ready(&mut t, &mut svc).is_pending());
    assert!(limiter.is_empty()); // no token is taken before the request is known
    m.set_ready(true);
    assert!(t.is_woken());
    assert!(poll_ready(&mut t, &mut svc).is_ready());
    assert_eq!(svc.call(4).await.unwrap(), 4);
}

// ---------------------------------------------------------------------------
// Circuit breaker.

fn status_service(
    status: Arc<AtomicU32>,
    hits: Arc<AtomicU32>,
) -> impl Service<
    (),
    Response = http::Response<String>,
    Error = BoxError,
    Future = impl Future<Output = Result<http::Response<String>, BoxError>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    service_fn(move |()| {
        hits.fetch_add(1, Ordering::SeqCst);
        let mut resp = http::Response::new(String::new());
        *resp.status_mut() =
            http::StatusCode::from_u16(status.load(Ordering::SeqCst) as u16).unwrap();
        ready(Ok::<_, BoxError>(resp))
    })
}

#[tokio::test(start_paused = true)]
async fn breaker_counts_5xx_as_failures_refuses_while_open_and_recovers() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(2)
        .open_wait(Duration::from_secs(10))
        .permitted_probes(1)
        .build()
        .unwrap();
    let status = Arc::new(AtomicU32::new(500));
    let hits = Arc::new(AtomicU32::new(0));
    let svc = BreakerLayer::new(breaker.clone())
        .classify(ServerErrors)
        .layer(status_service(status.clone(), hits.clone()));
    for _ in 0..2 {
        let resp = svc.clone().oneshot(()).await.unwrap();
        assert_eq!(resp.status(), 500); // passed through, counted as a failure
    }
    assert_eq!(breaker.state(), State::Open);
    advance(Duration::from_millis(2500)).await;
    let err = svc.clone().oneshot(()).await.unwrap_err();
    assert_eq!(
        refusal(&err),
        Refusal::BreakerOpen {
            retry_after: Some(Duration::from_millis(7500))
        }
    );
    let resp = error_response::<String>(&*err);
    assert_eq!(
        (resp.status().as_u16(), &resp.headers()["retry-after"]),
        (503, &"8".parse::<http::HeaderValue>().unwrap())
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2); // refused without a call
    // A 4xx is the caller's fault: a success for the breaker.
    status.store(404, Ordering::SeqCst);
    advance(Duration::from_millis(7500)).await;
    assert_eq!(svc.clone().oneshot(()).await.unwrap().status(), 404);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn breaker_dropped_response_future_counts_nothing_and_returns_the_probe_slot() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_wait(Duration::from_secs(1))
        .permitted_probes(1)
        .build()
        .unwrap();
    let m = Mock::holding();
    let layer = BreakerLayer::new(breaker.clone());
    let mut svc = layer.layer(m.clone());
    breaker.try_acquire().unwrap().failure();
    advance(Duration::from_secs(1)).await;
    // The probe's future is dropped before its answer...
    svc.ready().await.unwrap();
    let probe = svc.call(1);
    assert_eq!(breaker.state(), State::HalfOpen);
    let err = layer.layer(m.clone()).oneshot(2).await.unwrap_err();
    assert_eq!(refusal(&err), Refusal::BreakerOpen { retry_after: None });
    drop(probe);
    // ...so its slot is free again, and nothing was recorded.
    let mut svc = layer.layer(m.clone());
    svc.ready().await.unwrap();
    let probe = tokio::spawn(svc.call(3));
    tokio::task::yield_now().await;
    m.answer(Ok(3));
    assert_eq!(probe.await.unwrap().unwrap(), 3);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(m.calls(), [1, 3]);
}

#[tokio::test]
async fn breaker_classifier_closure_can_ignore_outcomes() {
    let breaker = CircuitBreaker::new();
    let svc = BreakerLayer::new(breaker.clone())
        .classify(|r: Result<&u32, &BoxError>| match r {
            Ok(0) => Outcome::Ignored,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        })
        .layer(Mock::ready());
    svc.clone().oneshot(0).await.unwrap();
    svc.clone().oneshot(1).await.unwrap();
    let m = breaker.metrics();
    assert_eq!((m.calls, m.failed_calls), (1, 0));
}

// ---------------------------------------------------------------------------
// Timeout and deadline.

fn sleeper() -> impl Service<
    u64,
    Response = u64,
    Error = BoxError,
    Future = impl Future<Output = Result<u64, BoxError>> + Send,
> + Clone {
    service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(ms)
    })
}

#[tokio::test(start_paused = true)]
async fn timeout_answers_up_to_the_limit_and_504s_at_it() {
    let layer = TimeoutLayer::new(100 * MS).unwrap();
    let start = Instant::now();
    assert_eq!(layer.layer(sleeper()).oneshot(99).await.unwrap(), 99);
    let t = Instant::now();
    let err = layer.layer(sleeper()).oneshot(101).await.unwrap_err();
    assert_eq!(t.elapsed(), 100 * MS);
    assert_eq!(refusal(&err), Refusal::TimedOut);
    let resp = error_response::<String>(&*err);
    assert_eq!(resp.status(), 504);
    assert!(resp.headers().get("retry-after").is_none());
    assert_eq!(start.elapsed(), 199 * MS);
}

#[tokio::test(start_paused = true)]
async fn deadline_comes_from_the_request() {
    let start = Instant::now();
    let layer =
        DeadlineLayer::new(move |ms: &u64| (*ms > 0).then(|| start + Duration::from_millis(50)));
    assert_eq!(layer.layer(sleeper()).oneshot(40).await.unwrap(), 40);
    let err = layer.layer(sleeper()).oneshot(40).await.unwrap_err();
    assert_eq!(refusal(&err), Refusal::TimedOut);
    assert_eq!(start.elapsed(), 50 * MS);
    // No deadline: no limit.
    assert_eq!(layer.layer(sleeper()).oneshot(0).await.unwrap(), 0);
}

/// A timeout past the clock's range arms no timer: the call answers
/// whenever it does.
#[tokio::test(start_paused = true)]
async fn timeout_beyond_the_clock_range_never_fires() {
    let mut svc = TimeoutLayer::new(Duration::MAX).unwrap().layer(sleeper());
    let fut = svc.ready().await.unwrap().call(10_000);
    assert!(format!("{fut:?}").contains("deadline: None"), "{fut:?}");
    assert_eq!(fut.await.unwrap(), 10_000);
    let mut svc = TimeoutLayer::new(100 * MS).unwrap().layer(sleeper());
    let fut = svc.ready().await.unwrap().call(1);
    assert!(format!("{fut:?}").contains("deadline: Some"), "{fut:?}");
}

/// The timer is made only when the response is not ready at its first
/// poll, but the time still counts from `call`: a response future first
/// polled after its deadline times out at once.
#[tokio::test(start_paused = true)]
async fn timeout_counts_from_call_though_the_timer_is_made_at_the_first_pending_poll() {
    let mut svc = TimeoutLayer::new(100 * MS).unwrap().layer(sleeper());
    let fut = svc.ready().await.unwrap().call(50);
    advance(150 * MS).await;
    let start = Instant::now();
    let err = fut.await.unwrap_err();
    assert_eq!(refusal(&err), Refusal::TimedOut);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

/// A response ready at once never touches the timer: it needs no runtime.
#[test]
fn timeout_of_a_ready_response_needs_no_runtime() {
    let mut svc = TimeoutLayer::new(100 * MS)
        .unwrap()
        .layer(service_fn(|n: u32| ready(Ok::<_, BoxError>(n + 1))));
    let out = futures::executor::block_on(async { svc.ready().await.unwrap().call(1).await });
    assert_eq!(out.unwrap(), 2);
}

// ---------------------------------------------------------------------------
// Retry, hedge, pipeline.

/// Fails the first `fails` calls (one error each), then answers.
fn flaky(
    fails: u32,
    calls: Arc<AtomicU32>,
) -> impl Service<
    u32,
    Response = u32,
    Error = BoxError,
    Future = impl Future<Output = Result<u32, BoxError>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    service_fn(move |n: u32| {
        let k = calls.fetch_add(1, Ordering::SeqCst);
        ready(if k < fails {
            Err(format!("fail {k}").into())
        } else {
            Ok(n)
        })
    })
}

#[tokio::test(start_paused = true)]
async fn retry_layer_retries_on_the_backoff_schedule_with_clones_made_ready() {
    let calls = Arc::new(AtomicU32::new(0));
    let layer = RetryLayer::from_policy(
        RetryPolicy::new()
            .max_retries(3)
            .backoff(Backoff::linear(10 * MS)),
    )
    .unwrap();
    // A concurrency limit below the retry: each attempt takes and frees a permit.
    let limit = ConcurrencyLimitLayer::new(1).unwrap();
    let svc = layer.layer(limit.layer(flaky(2, calls.clone())));
    let start = Instant::now();
    assert_eq!(svc.oneshot(7).await.unwrap(), 7);
    assert_eq!(start.elapsed(), 30 * MS); // 10 ms, then 20 ms
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(limit.semaphore().available(), 1);
    let m = layer.retry().metrics();
    assert_eq!((m.attempts, m.retries, m.succeeded_after_retry), (3, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn retry_layer_returns_the_last_error_and_504s_at_its_deadline() {
    let calls = Arc::new(AtomicU32::new(0));
    let layer = RetryLayer::from_policy(
        RetryPolicy::new()
            .max_retries(2)
            .backoff(Backoff::constant(MS)),
    )
    .unwrap();
    let err = layer
        .layer(flaky(10, calls.clone()))
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "fail 2");
    assert!(Refusal::find(&*err).is_none());

    let retry = Retry::<u64, BoxError>::builder()
        .timeout(100 * MS)
        .backoff(Backoff::constant(MS))
        .build()
        .unwrap();
    let err = RetryLayer::new(retry)
        .layer(sleeper())
        .oneshot(500)
        .await
        .unwrap_err();
    assert_eq!(refusal(&err), Refusal::TimedOut);
}

#[tokio::test(start_paused = true)]
async fn retry_layer_draws_on_a_shared_budget() {
    let budget = RetryBudget::builder()
        .ratio(0.0)
        .min_per_sec(1)
        .ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let layer = RetryLayer::from_policy(
        RetryPolicy::new()
            .max_retries(5)
            .backoff(Backoff::constant(MS))
            .budget(budget.clone()),
    )
    .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let svc = layer.layer(flaky(100, calls.clone()));
    // The first call may retry once (the floor), the second not at all.
    assert!(svc.clone().oneshot(1).await.is_err());
    assert!(svc.oneshot(2).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(layer.retry().metrics().budget_refusals, 2);
}

#[tokio::test(start_paused = true)]
async fn hedge_layer_sends_a_copy_of_a_slow_request_and_the_first_answer_wins() {
    let policy = HedgePolicy::builder().fixed_delay(20 * MS).build().unwrap();
    let sent = Arc::new(AtomicU32::new(0));
    let s = sent.clone();
    let svc = HedgeLayer::new(policy.clone()).layer(service_fn(move |()| {
        let ms = if s.fetch_add(1, Ordering::SeqCst) == 0 {
            500
        } else {
            5
        };
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, BoxError>(ms)
        }
    }));
    let start = Instant::now();
    assert_eq!(svc.oneshot(()).await.unwrap(), 5);
    assert_eq!(start.elapsed(), 25 * MS);
    assert_eq!(sent.load(Ordering::SeqCst), 2);
    assert_eq!(policy.metrics().hedge_wins, 1);
}

#[tokio::test(start_paused = true)]
async fn pipeline_layer_maps_each_refusal() {
    // A full bulkhead.
    let sem = Semaphore::new(1);
    let held = sem.try_acquire().unwrap();
    let p = Pipeline::<u32, BoxError>::builder()
        .bulkhead_with(sem.clone(), Admission::Shed)
        .build()
        .unwrap();
    let err = PipelineLayer::new(p)
        .layer(Mock::ready())
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(refusal(&err), Refusal::Overloaded);
    drop(held);
    // An empty bucket.
    let limiter = RateLimiter::new(Quota::per_second(1).unwrap());
    limiter.try_acquire(1).unwrap();
    let p = Pipeline::<u32, BoxError>::builder()
        .rate_limiter_with(limiter, Admission::Shed)
        .build()
        .unwrap();
    let err = PipelineLayer::new(p)
        .layer(Mock::ready())
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&err),
        Refusal::RateLimited {
            retry_after: Some(Duration::from_secs(1))
        }
    );
    // The total timeout.
    let p = Pipeline::<u64, BoxError>::builder()
        .timeout(10 * MS)
        .build()
        .unwrap();
    let err = PipelineLayer::new(p)
        .layer(sleeper())
        .oneshot(50)
        .await
        .unwrap_err();
    assert_eq!(refusal(&err), Refusal::TimedOut);
    // The operation's own error, after retries.
    let calls = Arc::new(AtomicU32::new(0));
    let p = Pipeline::<u32, BoxError>::builder()
        .retry(
            RetryPolicy::new()
                .max_retries(1)
                .backoff(Backoff::constant(MS)),
        )
        .build()
        .unwrap();
    let err = PipelineLayer::new(p)
        .layer(flaky(5, calls.clone()))
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "fail 1");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn pipeline_layer_first_attempt_uses_the_service_made_ready() {
    let m = Mock::ready();
    let p = Pipeline::<u32, BoxError>::builder()
        .retry(
            RetryPolicy::new()
                .max_retries(2)
                .backoff(Backoff::constant(MS)),
        )
        .failure_if(|r| r.is_err() || r.is_ok_and(|n| *n == 0))
        .build()
        .unwrap();
    let mut svc = PipelineLayer::new(p.clone()).layer(m.clone());
    svc.ready().await.unwrap();
    assert_eq!(m.ready_polls(), 1);
    // 0 is a failure value: retried twice, then returned as it is.
    assert_eq!(svc.call(0).await.unwrap(), 0);
    // One poll_ready by the caller, one by each retry's clone.
    assert_eq!(m.ready_polls(), 3);
    assert_eq!(m.calls(), [0, 0, 0]);
    assert_eq!(p.metrics().retry.unwrap().retries, 2);
}

// ---------------------------------------------------------------------------
// Every wrapper passes backpressure through and holds nothing once dropped.

/// `svc` wraps a `ConcurrencyLimit` on `sem` (capacity 1).
fn passes_backpressure<S>(name: &str, sem: &Semaphore, mut svc: S)
where
    S: Service<u32>,
    S::Error: std::fmt::Debug,
{
    let held = sem.try_acquire().unwrap();
    let mut t = task::spawn(());
    assert!(
        poll_ready(&mut t, &mut svc).is_pending(),
        "{name}: ready while full"
    );
    drop(held);
    assert!(t.is_woken(), "{name}: not woken");
    assert!(poll_ready(&mut t, &mut svc).is_ready(), "{name}: not ready");
    assert_eq!(sem.available(), 0, "{name}");
    drop(svc);
    assert_eq!(sem.available(), 1, "{name}: permit kept after drop");
}

#[tokio::test(start_paused = true)]
async fn every_wrapper_passes_backpressure_through_and_releases_on_drop() {
    let sem = Semaphore::new(1);
    let below = || ConcurrencyLimitLayer::with_semaphore(sem.clone()).layer(Mock::ready());
    let keyed = KeyedRateLimitLayer::new(
        KeyedRateLimiter::new(Quota::per_second(1).unwrap()),
        |_: &u32| (),
    );
    passes_backpressure("keyed", &sem, keyed.layer(below()));
    passes_backpressure(
        "rate shed",
        &sem,
        RateLimitLayer::shed(RateLimiter::new(Quota::per_second(9).unwrap())).layer(below()),
    );
    passes_backpressure(
        "breaker",
        &sem,
        BreakerLayer::new(CircuitBreaker::new()).layer(below()),
    );
    passes_backpressure(
        "timeout",
        &sem,
        TimeoutLayer::new(MS).unwrap().layer(below()),
    );
    passes_backpressure(
        "deadline",
        &sem,
        DeadlineLayer::new(|_: &u32| None).layer(below()),
    );
    passes_backpressure(
        "retry",
        &sem,
        RetryLayer::<u32>::from_policy(RetryPolicy::new())
            .unwrap()
            .layer(below()),
    );
    let policy = HedgePolicy::builder().fixed_delay(MS).build().unwrap();
    passes_backpressure("hedge", &sem, HedgeLayer::new(policy).layer(below()));
    let p = Pipeline::<u32, BoxError>::builder().build().unwrap();
    passes_backpressure("pipeline", &sem, PipelineLayer::new(p).layer(below()));
}

#[tokio::test(start_paused = true)]
async fn a_clone_of_a_ready_service_holds_nothing() {
    let sem = Semaphore::new(1);
    let limiter = RateLimiter::new(Quota::per_minute(1).unwrap());
    let mut svc = RateLimitLayer::wait(limiter.clone())
        .layer(ConcurrencyLimitLayer::with_semaphore(sem.clone()).layer(Mock::ready()));
    let mut t = task::spawn(());
    assert!(poll_ready(&mut t, &mut svc).is_ready());
    let mut clone = svc.clone();
    // The clone has neither the token nor the permit: it waits for both.
    assert!(poll_ready(&mut t, &mut clone).is_pending());
    assert_eq!(limiter.snapshot().waiters, 1);
    assert_eq!((sem.available(), limiter.snapshot().available), (0, 0));
    drop(svc);
    assert_eq!(sem.available(), 1);
    // The refunded token went to the waiting clone.
    assert!(t.is_woken());
    assert!(poll_ready(&mut t, &mut clone).is_ready());
    assert_eq!(clone.call(4).await.unwrap(), 4);
}

// ---------------------------------------------------------------------------
// HTTP mapping.

#[test]
fn refusals_map_to_status_and_retry_after() {
    let cases = [
        (
            Refusal::RateLimited {
                retry_after: Some(Duration::from_millis(1)),
            },
            429,
            Some("1"),
        ),
        (
            Refusal::RateLimited {
                retry_after: Some(Duration::from_secs(20)),
            },
            429,
            Some("20"),
        ),
        (Refusal::RateLimited { retry_after: None }, 429, None),
        (Refusal::Overloaded, 503, Some("1")),
        (
            Refusal::BreakerOpen {
                retry_after: Some(Duration::from_millis(29_001)),
            },
            503,
            Some("30"),
        ),
        (Refusal::BreakerOpen { retry_after: None }, 503, Some("1")),
        (Refusal::TimedOut, 504, None),
        (Refusal::Closed, 503, None),
    ];
    for (r, status, after) in cases {
        let resp = r.to_response::<String>();
        assert_eq!(resp.status().as_u16(), status, "{r:?}");
        assert_eq!(
            resp.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            after,
            "{r:?}"
        );
        assert_eq!(
            parse_retry_after(resp.headers()),
            after.map(|s| Duration::from_secs(s.parse().unwrap()))
        );
    }
}

#[test]
fn a_refusal_wrapped_as_a_source_is_still_found() {
    #[derive(Debug)]
    struct Wrapper(Refusal);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let err: BoxError = Wrapper(Refusal::TimedOut).into();
    assert_eq!(error_response::<String>(&*err).status(), 504);
}

// ---------------------------------------------------------------------------
// In a real server.

mod server {
    use super::*;
    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::error_handling::HandleErrorLayer;
    use axum::extract::Request;
    use axum::routing::get;
    use flowguard::tower::handle_error;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use tower::ServiceBuilder;

    type HttpClient = Client<HttpConnector, Empty<Bytes>>;

    fn client() -> HttpClient {
        Client::builder(TokioExecutor::new()).build_http()
    }

    /// Serves `router` on 127.0.0.1, on a port the OS picks.
    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    }

    /// GETs `url` as `client_id`: the status, the Retry-After header and the body.
    async fn get_as(c: &HttpClient, url: &str, client_id: &str) -> (u16, Option<String>, String) {
        let req = http::Request::get(url)
            .header("x-client", client_id)
            .body(Empty::new())
            .unwrap();
        // A watchdog, not a speed limit: a broken layer fails here instead of hanging.
        let resp = tokio::time::timeout(Duration::from_secs(60), c.request(req))
            .await
            .expect("no answer within 60 s")
            .unwrap();
        let status = resp.status().as_u16();
        let after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, after, String::from_utf8(body.to_vec()).unwrap())
    }

    fn client_key(req: &Request<Body>) -> String {
        req.headers()
            .get("x-client")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("anonymous")
            .to_owned()
    }

    #[tokio::test]
    async fn keyed_rate_limit_answers_429_with_retry_after_per_client() {
        let clock = ManualClock::new();
        let limiter = KeyedRateLimiter::with_clock(Quota::per_minute(3).unwrap(), clock.clone());
        let router = Router::new().route("/hello", get(|| async { "hi" })).layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_error))
                .layer(ConcurrencyLimitLayer::new(16).unwrap())
                .layer(KeyedRateLimitLayer::new(limiter.clone(), client_key)),
        );
        let base = serve(router).await;
        let c = client();
        let url = format!("{base}/hello");
        let mut alice = Vec::new();
        for _ in 0..5 {
            alice.push(get_as(&c, &url, "alice").await);
        }
        let ok = (200, None, "hi".to_owned());
        let limited = (429, Some("20".to_owned()), "rate limited\n".to_owned());
        assert_eq!(
            alice,
            [
                ok.clone(),
                ok.clone(),
                ok.clone(),
                limited.clone(),
                limited.clone()
            ]
        );
        // Bob has his own bucket.
        assert_eq!(get_as(&c, &url, "bob").await, ok);
        // 20 s later alice has one token again, and only one.
        clock.advance(Duration::from_secs(20));
        assert_eq!(get_as(&c, &url, "alice").await, ok);
        assert_eq!(get_as(&c, &url, "alice").await, limited);
        assert_eq!(limiter.len(), 2);
    }

    /// A handler that reports it started and waits until released.
    fn gated() -> (
        Router,
        tokio::sync::mpsc::UnboundedReceiver<()>,
        Arc<tokio::sync::Semaphore>,
    ) {
        let (entered_tx, entered) = tokio::sync::mpsc::unbounded_channel();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let router = Router::new().route(
            "/work",
            get(move || {
                let (tx, g) = (entered_tx.clone(), g.clone());
                async move {
                    tx.send(()).unwrap();
                    g.acquire().await.unwrap().forget();
                    "done"
                }
            }),
        );
        (router, entered, gate)
    }

    #[tokio::test]
    async fn load_shed_answers_503_when_every_slot_is_busy() {
        let (router, mut entered, gate) = gated();
        let shed = LoadShedLayer::new(2).unwrap();
        let router = router.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_error))
                .layer(shed.clone()),
        );
        let base = serve(router).await;
        let c = client();
        let url = format!("{base}/work");
        let busy: Vec<_> = (0..2)
            .map(|_| {
                let (c, url) = (c.clone(), url.clone());
                tokio::spawn(async move { get_as(&c, &url, "x").await })
            })
            .collect();
        entered.recv().await.unwrap();
        entered.recv().await.unwrap();
        assert_eq!(shed.semaphore().available(), 0);
        assert_eq!(
            get_as(&c, &url, "x").await,
            (503, Some("1".to_owned()), "overloaded\n".to_owned())
        );
        gate.add_permits(2);
        for b in busy {
            assert_eq!(b.await.unwrap().0, 200);
        }
        assert_eq!(shed.semaphore().available(), 2);
        gate.add_permits(1);
        assert_eq!(get_as(&c, &url, "x").await.0, 200);
    }

    #[tokio::test]
    async fn concurrency_limit_queues_the_request_beyond_the_limit() {
        let (router, mut entered, gate) = gated();
        let limit = ConcurrencyLimitLayer::new(1).unwrap();
        let router = router.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_error))
                .layer(limit.clone()),
        );
        let base = serve(router).await;
        let c = client();
        let url = format!("{base}/work");
        let spawn_get = || {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { get_as(&c, &url, "x").await })
        };
        let first = spawn_get();
        entered.recv().await.unwrap();
        let second = spawn_get();
        // The second request reaches the server and queues for the permit.
        let mut spins = 0;
        while limit.semaphore().waiters() == 0 {
            spins += 1;
            assert!(spins < 100_000, "the second request never queued");
            tokio::task::yield_now().await;
        }
        assert!(entered.try_recv().is_err()); // it has not started
        gate.add_permits(1);
        assert_eq!(first.await.unwrap().0, 200);
        entered.recv().await.unwrap();
        gate.add_permits(1);
        assert_eq!(second.await.unwrap().0, 200);
        assert_eq!(limit.semaphore().available(), 1);
    }

    #[tokio::test]
    async fn timeout_answers_504() {
        let router = Router::new()
            .route("/stuck", get(std::future::pending::<&'static str>))
            .route("/fast", get(|| async { "quick" }))
            .layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(handle_error))
                    .layer(TimeoutLayer::new(Duration::from_millis(50)).unwrap()),
            );
        let base = serve(router).await;
        let c = client();
        assert_eq!(get_as(&c, &format!("{base}/fast"), "x").await.0, 200);
        assert_eq!(
            get_as(&c, &format!("{base}/stuck"), "x").await,
            (504, None, "timed out\n".to_owned())
        );
    }

    /// A downstream server that answers 500 while `failing`, and counts hits.
    async fn downstream(failing: Arc<AtomicBool>, hits: Arc<AtomicU32>) -> String {
        let router = Router::new().route(
            "/data",
            get(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                let fail = failing.load(Ordering::SeqCst);
                async move {
                    if fail {
                        (http::StatusCode::INTERNAL_SERVER_ERROR, "down")
                    } else {
                        (http::StatusCode::OK, "fresh data")
                    }
                }
            }),
        );
        serve(router).await
    }

    /// The front server: `/api` calls the downstream through `call`,
    /// answering 502 for a downstream 5xx and the refusal's response for
    /// a refusal.
    fn front<S>(call: S, downstream: String) -> Router
    where
        S: Service<
                http::Request<Empty<Bytes>>,
                Response = http::Response<hyper::body::Incoming>,
                Error = BoxError,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send,
    {
        Router::new().route(
            "/api",
            get(move || {
                let (call, downstream) = (call.clone(), downstream.clone());
                async move {
                    let req = http::Request::get(format!("{downstream}/data"))
                        .body(Empty::new())
                        .unwrap();
                    match call.oneshot(req).await {
                        Ok(resp) if resp.status().is_server_error() => http::Response::builder()
                            .status(502)
                            .body(String::from("bad gateway\n"))
                            .unwrap(),
                        Ok(resp) => {
                            let body = resp.into_body().collect().await.unwrap().to_bytes();
                            http::Response::new(String::from_utf8(body.to_vec()).unwrap())
                        }
                        Err(e) => error_response(&*e),
                    }
                }
            }),
        )
    }

    #[tokio::test]
    async fn breaker_and_retry_around_a_failing_downstream_then_recovery() {
        let failing = Arc::new(AtomicBool::new(true));
        let hits = Arc::new(AtomicU32::new(0));
        let down = downstream(failing.clone(), hits.clone()).await;
        // The breaker on a manual clock, so its open wait passes on command.
        let clock = ManualClock::new();
        let breaker = CircuitBreaker::builder()
            .consecutive_failures(3)
            .open_wait(Duration::from_secs(30))
            .permitted_probes(1)
            .build_with_clock(clock.clone())
            .unwrap();
        // Retry 5xx answers and errors, but never a breaker refusal.
        let retry = Retry::<http::Response<hyper::body::Incoming>, BoxError>::builder()
            .max_retries(2)
            .backoff(Backoff::constant(Duration::ZERO))
            .retry_if(|r| match r {
                Ok(resp) => resp.status().is_server_error(),
                Err(e) => Refusal::find(&**e).is_none(),
            })
            .build()
            .unwrap();
        let call = ServiceBuilder::new()
            .layer(RetryLayer::new(retry.clone()))
            .layer(BreakerLayer::new(breaker.clone()).classify(ServerErrors))
            .layer(TimeoutLayer::new(Duration::from_secs(30)).unwrap())
            .service(client());
        let base = serve(front(call, down)).await;
        let c = client();
        let url = format!("{base}/api");

        // Three attempts, three 500s: 502 to the client, and the breaker opens.
        assert_eq!(get_as(&c, &url, "x").await.0, 502);
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        assert_eq!(breaker.state(), State::Open);
        // While open: 503 with the time left, and the downstream is left alone.
        clock.advance(Duration::from_millis(10_500));
        for _ in 0..3 {
            assert_eq!(
                get_as(&c, &url, "x").await,
                (
                    503,
                    Some("20".to_owned()),
                    "circuit breaker open\n".to_owned()
                )
            );
        }
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        // The downstream recovers; after the open wait a probe closes the breaker.
        failing.store(false, Ordering::SeqCst);
        clock.advance(Duration::from_millis(19_500));
        assert_eq!(
            get_as(&c, &url, "x").await,
            (200, None, "fresh data".to_owned())
        );
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(get_as(&c, &url, "x").await.0, 200);
        assert_eq!(hits.load(Ordering::SeqCst), 5);
        let m = retry.metrics();
        assert_eq!((m.calls, m.retries), (6, 2));
    }

    #[tokio::test]
    async fn pipeline_layer_around_a_failing_downstream() {
        let failing = Arc::new(AtomicBool::new(true));
        let hits = Arc::new(AtomicU32::new(0));
        let down = downstream(failing.clone(), hits.clone()).await;
        let breaker = CircuitBreaker::builder()
            .consecutive_failures(3)
            .open_wait(Duration::from_secs(30))
            .build()
            .unwrap();
        let pipeline = Pipeline::<http::Response<hyper::body::Incoming>, BoxError>::builder()
            .timeout(Duration::from_secs(30))
            .retry(
                RetryPolicy::new()
                    .max_retries(2)
                    .backoff(Backoff::constant(Duration::ZERO)),
            )
            .breaker(breaker.clone())
            .failure_if(|r| r.is_err() || r.is_ok_and(|resp| resp.status().is_server_error()))
            .build()
            .unwrap();
        let call = ServiceBuilder::new()
            .layer(PipelineLayer::new(pipeline.clone()))
            .service(client());
        let base = serve(front(call, down)).await;
        let c = client();
        let url = format!("{base}/api");
        assert_eq!(get_as(&c, &url, "x").await.0, 502);
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        let (status, after, _) = get_as(&c, &url, "x").await;
        assert_eq!(status, 503);
        // The open wait runs on the real clock here: 30 s less the time since it opened.
        let after: u64 = after.unwrap().parse().unwrap();
        assert!((1..=30).contains(&after), "retry-after {after}");
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        let m = pipeline.metrics();
        assert_eq!((m.calls, m.breaker_refusals), (2, 1));
    }
}
