//! Model checker for the tower admission layers (`ConcurrencyLimit`,
//! `LoadShed`), shared by `tests/prop_tower.rs` and the fuzz target
//! `fuzz/fuzz_targets/tower.rs`.
//!
//! A case drives clones of one service (all sharing one semaphore of
//! `limit` permits) through random `poll_ready`, `call`, drop of a service,
//! completion and drop of response futures. The model is naive: a count of
//! free permits, a FIFO of waiting clones (a concurrency limit queues; a
//! load shedder never does), and per clone whether it holds a permit. After
//! every step the real layer must agree with it on `poll_ready`'s answer,
//! on what `call` returns, on the semaphore's free count and on the number
//! of inner calls in flight, which never exceeds `limit`. At the end,
//! with everything dropped, every permit is back.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use flowguard::semaphore::Semaphore;
use flowguard::tower::{
    BoxError, ConcurrencyLimitLayer, LoadShedLayer, NotReady, Refusal, ResponseFuture,
};
use tower::{Layer, Service};

/// One step.
#[derive(Debug, Clone)]
pub enum Op {
    /// Clone the i-th service (modulo the number alive); at most 6 alive.
    Clone(usize),
    /// `poll_ready` the i-th service.
    PollReady(usize),
    /// `call` the i-th service.
    Call(usize),
    /// Drop the i-th service.
    DropService(usize),
    /// Let the i-th response future's inner call finish, and poll it.
    Complete(usize),
    /// Drop the i-th response future.
    DropFuture(usize),
}

/// A whole case: which layer, its limit, the steps.
#[derive(Debug, Clone)]
pub struct Case {
    /// `true`: `LoadShedLayer`; `false`: `ConcurrencyLimitLayer`.
    pub shed: bool,
    /// Permits, 1..=4.
    pub limit: usize,
    pub ops: Vec<Op>,
}

impl Case {
    /// Decodes fuzzer bytes: the first byte picks the layer and limit, then
    /// two bytes per step.
    pub fn from_bytes(data: &[u8]) -> Self {
        let head = data.first().copied().unwrap_or(0);
        let ops = data
            .get(1..)
            .unwrap_or(&[])
            .chunks_exact(2)
            .map(|c| {
                let i = c[1] as usize;
                match c[0] % 6 {
                    0 => Op::Clone(i),
                    1 => Op::PollReady(i),
                    2 => Op::Call(i),
                    3 => Op::DropService(i),
                    4 => Op::Complete(i),
                    _ => Op::DropFuture(i),
                }
            })
            .collect();
        Self {
            shed: head & 1 == 1,
            limit: 1 + (head as usize >> 1) % 4,
            ops,
        }
    }
}

/// The request: a gate the inner call's future waits on.
type Gate = Arc<AtomicBool>;

/// The service below: counts its calls in flight (futures alive).
#[derive(Clone)]
struct Inner {
    in_flight: Arc<AtomicUsize>,
}

struct InnerFuture {
    gate: Gate,
    in_flight: Arc<AtomicUsize>,
}

impl Future for InnerFuture {
    type Output = Result<(), BoxError>;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        if self.gate.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl Drop for InnerFuture {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service<Gate> for Inner {
    type Response = ();
    type Error = BoxError;
    type Future = InnerFuture;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, gate: Gate) -> InnerFuture {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InnerFuture {
            gate,
            in_flight: self.in_flight.clone(),
        }
    }
}

/// Either layer's service, driven through one interface.
enum Svc {
    Limit(flowguard::tower::ConcurrencyLimit<Inner>),
    Shed(flowguard::tower::LoadShed<Inner>),
}

type Fut = ResponseFuture<InnerFuture, flowguard::semaphore::OwnedPermit>;

impl Svc {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Self::Limit(s) => s.poll_ready(cx),
            Self::Shed(s) => s.poll_ready(cx),
        }
    }
    fn call(&mut self, gate: Gate) -> Fut {
        match self {
            Self::Limit(s) => s.call(gate),
            Self::Shed(s) => s.call(gate),
        }
    }
    fn clone_svc(&self) -> Self {
        match self {
            Self::Limit(s) => Self::Limit(s.clone()),
            Self::Shed(s) => Self::Shed(s.clone()),
        }
    }
}

/// What the model knows of one clone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum M {
    Idle,
    /// In the semaphore's queue (concurrency limit only), by ticket.
    Waiting(u64),
    /// Queued, and handed a returned permit; not yet polled since, so
    /// the service has not seen it (a `call` now is still not ready).
    Assigned,
    /// Holds a permit `poll_ready` saw.
    Holding,
    /// `poll_ready` said ready without a permit: the next call is shed.
    Shed,
}

/// What the model expects of one response future.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum F {
    Running,
    Failed(Expect),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Overloaded,
    NotReady,
}

struct Model {
    free: usize,
    /// Tickets of waiting clones, oldest first.
    queue: VecDeque<u64>,
}

impl Model {
    /// A permit comes back: to the oldest waiter, else to the free count.
    fn release(&mut self, clones: &mut [(Svc, M)]) {
        if let Some(t) = self.queue.pop_front() {
            if let Some(c) = clones.iter_mut().find(|c| c.1 == M::Waiting(t)) {
                c.1 = M::Assigned;
                return;
            }
        }
        self.free += 1;
    }
}

/// Runs a case; panics on the first disagreement.
pub fn check(case: &Case) {
    let limit = case.limit;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let inner = Inner {
        in_flight: in_flight.clone(),
    };
    let sem = Semaphore::new(limit);
    let first = if case.shed {
        Svc::Shed(LoadShedLayer::with_semaphore(sem.clone()).layer(inner))
    } else {
        Svc::Limit(ConcurrencyLimitLayer::with_semaphore(sem.clone()).layer(inner))
    };
    let mut cx = Context::from_waker(Waker::noop());
    let mut clones: Vec<(Svc, M)> = vec![(first, M::Idle)];
    let mut futs: Vec<(Fut, Gate, F)> = Vec::new();
    let mut m = Model {
        free: limit,
        queue: VecDeque::new(),
    };
    let mut ticket = 0u64;

    for (step, op) in case.ops.iter().enumerate() {
        match *op {
            Op::Clone(i) => {
                if !clones.is_empty() && clones.len() < 6 {
                    let i = i % clones.len();
                    let c = clones[i].0.clone_svc();
                    clones.push((c, M::Idle));
                }
            }
            Op::PollReady(i) => {
                if clones.is_empty() {
                    continue;
                }
                let i = i % clones.len();
                let got = clones[i].0.poll_ready(&mut cx);
                let want_ready = match clones[i].1 {
                    M::Holding => true,
                    M::Assigned => {
                        clones[i].1 = M::Holding;
                        true
                    }
                    M::Waiting(_) => false,
                    M::Idle | M::Shed if m.free > 0 => {
                        m.free -= 1;
                        clones[i].1 = M::Holding;
                        true
                    }
                    M::Idle | M::Shed if case.shed => {
                        clones[i].1 = M::Shed;
                        true
                    }
                    M::Idle | M::Shed => {
                        ticket += 1;
                        m.queue.push_back(ticket);
                        clones[i].1 = M::Waiting(ticket);
                        false
                    }
                };
                match got {
                    Poll::Ready(Ok(())) => assert!(want_ready, "step {step}: ready, model pending"),
                    Poll::Pending => assert!(!want_ready, "step {step}: pending, model ready"),
                    Poll::Ready(Err(e)) => panic!("step {step}: poll_ready failed: {e}"),
                }
            }
            Op::Call(i) => {
                if clones.is_empty() {
                    continue;
                }
                let i = i % clones.len();
                let gate = Gate::default();
                let fut = clones[i].0.call(gate.clone());
                let f = match clones[i].1 {
                    M::Holding => F::Running,
                    M::Shed => F::Failed(Expect::Overloaded),
                    M::Idle => F::Failed(Expect::NotReady),
                    M::Waiting(t) => {
                        // A call while queued leaves the queue.
                        m.queue.retain(|&q| q != t);
                        F::Failed(Expect::NotReady)
                    }
                    M::Assigned => F::Failed(Expect::NotReady),
                };
                let gave_back = clones[i].1 == M::Assigned;
                clones[i].1 = M::Idle;
                if gave_back {
                    m.release(&mut clones);
                }
                futs.push((fut, gate, f));
            }
            Op::DropService(i) => {
                if clones.is_empty() {
                    continue;
                }
                let i = i % clones.len();
                let (svc, state) = clones.remove(i);
                drop(svc);
                match state {
                    M::Holding | M::Assigned => m.release(&mut clones),
                    M::Waiting(t) => m.queue.retain(|&q| q != t),
                    M::Idle | M::Shed => {}
                }
            }
            Op::Complete(i) => {
                if futs.is_empty() {
                    continue;
                }
                let i = i % futs.len();
                let (mut fut, gate, f) = futs.remove(i);
                gate.store(true, Ordering::SeqCst);
                let out = match Pin::new(&mut fut).poll(&mut cx) {
                    Poll::Ready(out) => out,
                    Poll::Pending => panic!("step {step}: a finished call is pending"),
                };
                match f {
                    F::Running => {
                        assert!(out.is_ok(), "step {step}: {out:?}");
                        // Released at completion, before the future is dropped.
                        m.release(&mut clones);
                        assert_eq!(
                            sem.available(),
                            m.free,
                            "step {step}: released at completion"
                        );
                    }
                    F::Failed(Expect::Overloaded) => assert_eq!(
                        Refusal::find(&*out.unwrap_err()),
                        Some(&Refusal::Overloaded),
                        "step {step}"
                    ),
                    F::Failed(Expect::NotReady) => {
                        assert!(out.unwrap_err().is::<NotReady>(), "step {step}");
                    }
                }
                drop(fut);
            }
            Op::DropFuture(i) => {
                if futs.is_empty() {
                    continue;
                }
                let i = i % futs.len();
                let (fut, _, f) = futs.remove(i);
                drop(fut);
                if f == F::Running {
                    m.release(&mut clones);
                }
            }
        }
        let running = futs.iter().filter(|f| f.2 == F::Running).count();
        assert_eq!(
            in_flight.load(Ordering::SeqCst),
            running,
            "step {step}: in flight"
        );
        assert!(
            running <= limit,
            "step {step}: {running} in flight over {limit}"
        );
        assert_eq!(
            sem.available(),
            m.free,
            "step {step}: free permits after {op:?}"
        );
        let held = clones
            .iter()
            .filter(|c| matches!(c.1, M::Holding | M::Assigned))
            .count();
        assert_eq!(
            m.free + held + running,
            limit,
            "step {step}: the model lost a permit"
        );
    }
    drop(futs);
    drop(clones);
    assert_eq!(in_flight.load(Ordering::SeqCst), 0);
    assert_eq!(sem.available(), limit, "every permit back at the end");
    assert_eq!(sem.waiters(), 0);
}
