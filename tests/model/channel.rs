//! Model checker for `flowguard::channel`, shared by proptest
//! (`tests/prop_channel.rs`) and the fuzz target (`fuzz/fuzz_targets/channel.rs`).
//!
//! `check(ops)` drives a real weighted channel through its public API
//! (polling futures by hand with a no-op waker, so no runtime is needed) and
//! a naive `VecDeque` model side by side, and asserts after every step that
//! they agree: every value received in the model's order (FIFO, no loss, no
//! duplication), same refusals with the same value handed back, same
//! length, weight, reservations and waiting senders (waiting reservations
//! included: a shrink refuses those that can no longer fit, and a refused
//! one never holds back a sender that fits); `len + reserved` never
//! above the capacity (unless it was just shrunk) and weight never above
//! `max_weight`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use flowguard::channel::{
    Builder, Permit, Permits, ReserveError, ReserveManyFuture, SendError, SendFuture, TryRecvError,
    TrySendError,
};

/// One step. Arguments are reduced modulo what makes sense at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `try_send` a new value of this weight.
    TrySend(u8),
    /// `send` a new value, polled once; if it waits it is kept pending.
    Send(u8),
    /// `force_send` a new value of this weight.
    ForceSend(u8),
    /// Poll the pending send at this index (mod the count).
    PollSend(u8),
    /// Drop (cancel) the pending send at this index.
    CancelSend(u8),
    /// `try_recv`.
    TryRecv,
    /// `recv_many(limit)`, polled once and then dropped.
    RecvMany(u8),
    /// `try_reserve_many(n)`; the permits are kept.
    TryReserve(u8),
    /// Send a (weight 0) value through one kept permit.
    PermitSend,
    /// Drop one kept permit unused.
    DropPermit,
    /// `set_capacity(n % 6 + 1)`.
    SetCapacity(u8),
    /// `reserve_many(n % 3 + 1)`, polled once; if it waits it is kept
    /// pending beside the waiting sends (same index space).
    Reserve(u8),
    /// `close()`.
    Close,
}

/// Decodes bytes into a capacity/max-weight header (first two bytes) and ops.
pub(crate) fn ops_from_bytes(data: &[u8]) -> Vec<Op> {
    data.chunks(2)
        .map(|c| {
            let arg = c.get(1).copied().unwrap_or(0);
            match c[0] % 14 {
                0 | 1 => Op::TrySend(arg),
                2 | 3 => Op::Send(arg),
                4 => Op::ForceSend(arg),
                5 => Op::PollSend(arg),
                6 => Op::CancelSend(arg),
                7 | 8 => Op::TryRecv,
                9 => Op::RecvMany(arg),
                10 => Op::TryReserve(arg),
                11 => Op::PermitSend,
                12 => match arg % 8 {
                    0 => Op::DropPermit,
                    1 => Op::Close,
                    _ => Op::SetCapacity(arg),
                },
                _ => Op::Reserve(arg),
            }
        })
        .collect()
}

type Item = (u32, usize);

#[derive(Debug)]
struct MWaiter {
    /// The value of a waiting send; for a reservation, `(0, 0)`.
    item: Item,
    /// `Some(n)`: a waiting reservation of `n` slots.
    reserve: Option<usize>,
    /// Value already moved into the queue (send), or room reserved.
    granted: bool,
    /// A reservation the capacity shrank below: it waits only to be collected.
    refused: bool,
}

/// A future kept pending, at the same index as its model waiter.
enum Pending<'a> {
    Send(SendFuture<'a, Item>),
    Reserve(ReserveManyFuture<'a, Item>),
}

/// What polling a pending future gave, in comparable form.
#[derive(Debug, PartialEq, Eq)]
enum Polled {
    Pending,
    Sent(Result<(), SendError<Item>>),
    /// `Ok(count)` or the error.
    Reserved(Result<usize, ReserveError>),
}

/// The naive reference.
#[derive(Debug)]
struct Model {
    queue: VecDeque<Item>,
    cap: usize,
    max_weight: usize,
    reserved: usize,
    closed: bool,
    /// Waiting sends in arrival order; indices match the harness's `pending`.
    waiters: Vec<MWaiter>,
    /// Largest capacity since the last time the queue fit the current one.
    shrunk: bool,
}

impl Model {
    fn weight(&self) -> usize {
        self.queue.iter().map(|i| i.1).sum()
    }
    fn fits(&self, w: usize) -> bool {
        self.queue.len() + self.reserved < self.cap && self.weight() + w <= self.max_weight
    }
    fn waiting(&self) -> usize {
        self.waiters
            .iter()
            .filter(|w| !w.granted && !w.refused)
            .count()
    }
    fn grant(&mut self) {
        if self.closed {
            return;
        }
        for i in 0..self.waiters.len() {
            let w = &self.waiters[i];
            if w.granted || w.refused {
                continue;
            }
            match w.reserve {
                Some(n) => {
                    if self.queue.len() + self.reserved + n > self.cap {
                        break;
                    }
                    self.reserved += n;
                }
                None => {
                    let item = w.item;
                    if !self.fits(item.1) {
                        break;
                    }
                    self.queue.push_back(item);
                }
            }
            self.waiters[i].granted = true;
        }
    }
    fn recv(&mut self) -> Result<Item, TryRecvError> {
        match self.queue.pop_front() {
            Some(i) => {
                self.grant();
                Ok(i)
            }
            None if self.closed && self.reserved == 0 => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }
}

fn poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(f).poll(&mut cx)
}

/// Polls a pending future; a granted reservation's permits go to `permits`.
fn poll_pending<'a>(f: &mut Pending<'a>, permits: &mut Vec<Permit<'a, Item>>) -> Polled {
    match f {
        Pending::Send(f) => match poll(f) {
            Poll::Pending => Polled::Pending,
            Poll::Ready(r) => Polled::Sent(r),
        },
        Pending::Reserve(f) => match poll(f) {
            Poll::Pending => Polled::Pending,
            Poll::Ready(r) => Polled::Reserved(r.map(|p: Permits<'a, Item>| {
                let before = permits.len();
                permits.extend(p);
                permits.len() - before
            })),
        },
    }
}

/// Runs `ops` against the real channel and the model; panics on divergence.
pub(crate) fn check(ops: &[Op]) {
    check_with(3, 12, ops);
}

/// As [`check`] with a given starting capacity and weight bound.
pub(crate) fn check_with(cap: usize, max_weight: usize, ops: &[Op]) {
    let (tx, rx) = Builder::<Item>::new(cap)
        .weigh(|i: &Item| i.1)
        .max_weight(max_weight)
        .build()
        .unwrap();
    let mut m = Model {
        queue: VecDeque::new(),
        cap,
        max_weight,
        reserved: 0,
        closed: false,
        waiters: Vec::new(),
        shrunk: false,
    };
    let mut next = 0u32;
    let mut pending: Vec<Pending<'_>> = Vec::new();
    let mut permits: Vec<Permit<'_, Item>> = Vec::new();
    // Fates, for the no-loss / no-duplication count at the end.
    let mut created = 0usize;
    let mut accounted = 0usize;

    for (step, op) in ops.iter().enumerate() {
        macro_rules! ctx {
            () => {
                format!("step {step}: {op:?}\nmodel: {m:?}")
            };
        }
        match *op {
            Op::TrySend(w) | Op::Send(w) | Op::ForceSend(w) => {
                let w = usize::from(w) % (max_weight + 3);
                let item = (next, w);
                next += 1;
                created += 1;
                match *op {
                    Op::TrySend(_) => {
                        let expect = if m.closed {
                            Err(TrySendError::Closed(item))
                        } else if w > m.max_weight {
                            Err(TrySendError::TooHeavy(item))
                        } else if m.waiting() > 0 || !m.fits(w) {
                            Err(TrySendError::Full(item))
                        } else {
                            m.queue.push_back(item);
                            Ok(())
                        };
                        if expect.is_err() {
                            accounted += 1;
                        }
                        assert_eq!(tx.try_send(item), expect, "{}", ctx!());
                    }
                    Op::ForceSend(_) => {
                        let got = tx.force_send(item);
                        if m.closed {
                            assert_eq!(got.unwrap_err(), TrySendError::Closed(item), "{}", ctx!());
                            accounted += 1;
                        } else if w > m.max_weight {
                            assert_eq!(
                                got.unwrap_err(),
                                TrySendError::TooHeavy(item),
                                "{}",
                                ctx!()
                            );
                            accounted += 1;
                        } else if !(m.reserved < m.cap && w <= m.max_weight) {
                            assert_eq!(got.unwrap_err(), TrySendError::Full(item), "{}", ctx!());
                            accounted += 1;
                        } else {
                            let mut expect = Vec::new();
                            while !m.fits(w) {
                                match m.queue.pop_front() {
                                    Some(i) => expect.push(i),
                                    None => break,
                                }
                            }
                            m.queue.push_back(item);
                            if !expect.is_empty() {
                                m.grant();
                            }
                            let got: Vec<Item> = got.expect("force_send refused").collect();
                            accounted += got.len();
                            assert_eq!(got, expect, "{}", ctx!());
                        }
                    }
                    _ => {
                        let mut f = tx.send(item);
                        let expect_now = if m.closed {
                            Some(Err(SendError::Closed(item)))
                        } else if w > m.max_weight {
                            Some(Err(SendError::TooHeavy(item)))
                        } else if m.waiting() == 0 && m.fits(w) {
                            m.queue.push_back(item);
                            Some(Ok(()))
                        } else {
                            None
                        };
                        match (poll(&mut f), expect_now) {
                            (Poll::Ready(r), Some(e)) => {
                                if r.is_err() {
                                    accounted += 1;
                                }
                                assert_eq!(r, e, "{}", ctx!());
                            }
                            (Poll::Pending, None) => {
                                pending.push(Pending::Send(f));
                                m.waiters.push(MWaiter {
                                    item,
                                    reserve: None,
                                    granted: false,
                                    refused: false,
                                });
                            }
                            (got, e) => panic!("send: got {got:?}, expected {e:?}\n{}", ctx!()),
                        }
                    }
                }
            }
            Op::PollSend(i) | Op::CancelSend(i) => {
                if pending.is_empty() {
                    continue;
                }
                let i = usize::from(i) % pending.len();
                if matches!(op, Op::CancelSend(_)) {
                    drop(pending.remove(i));
                    let w = m.waiters.remove(i);
                    match (w.reserve, w.granted) {
                        // Dropped unsent with its future.
                        (None, false) => accounted += 1,
                        // Room granted but never collected goes back.
                        (Some(n), true) => m.reserved -= n,
                        _ => {}
                    }
                    // Whoever it held back may fit now.
                    m.grant();
                } else {
                    let got = poll_pending(&mut pending[i], &mut permits);
                    let w = &m.waiters[i];
                    let expect = match (w.reserve, w.granted, m.closed, w.refused) {
                        (None, true, _, _) => Polled::Sent(Ok(())),
                        (None, false, true, _) => Polled::Sent(Err(SendError::Closed(w.item))),
                        (None, false, false, _) => Polled::Pending,
                        (Some(n), true, _, _) => Polled::Reserved(Ok(n)),
                        (Some(_), false, true, _) => Polled::Reserved(Err(ReserveError::Closed)),
                        (Some(_), false, false, true) => {
                            Polled::Reserved(Err(ReserveError::TooMany))
                        }
                        (Some(_), false, false, false) => Polled::Pending,
                    };
                    assert_eq!(got, expect, "{}", ctx!());
                    if got != Polled::Pending {
                        if matches!(got, Polled::Sent(Err(_))) {
                            accounted += 1;
                        }
                        pending.remove(i);
                        m.waiters.remove(i);
                        m.grant();
                    }
                }
            }
            Op::Reserve(n) => {
                let n = usize::from(n % 3) + 1;
                let mut f = tx.reserve_many(n);
                let expect = if m.closed {
                    Some(Err(ReserveError::Closed))
                } else if n > m.cap {
                    Some(Err(ReserveError::TooMany))
                } else if m.waiting() == 0 && m.queue.len() + m.reserved + n <= m.cap {
                    m.reserved += n;
                    Some(Ok(n))
                } else {
                    None
                };
                let got = match poll(&mut f) {
                    Poll::Pending => None,
                    Poll::Ready(r) => Some(r.map(|p| {
                        let before = permits.len();
                        permits.extend(p);
                        permits.len() - before
                    })),
                };
                assert_eq!(got, expect, "{}", ctx!());
                if got.is_none() {
                    pending.push(Pending::Reserve(f));
                    m.waiters.push(MWaiter {
                        item: (0, 0),
                        reserve: Some(n),
                        granted: false,
                        refused: false,
                    });
                }
            }
            Op::TryRecv => {
                let expect = m.recv();
                let got = rx.try_recv();
                assert_eq!(got, expect, "{}", ctx!());
                if got.is_ok() {
                    accounted += 1;
                }
            }
            Op::RecvMany(limit) => {
                let limit = usize::from(limit % 5);
                let mut expect = Vec::new();
                let mut model_pending = false;
                if limit > 0 {
                    while expect.len() < limit {
                        match m.recv() {
                            Ok(i) => expect.push(i),
                            Err(TryRecvError::Empty) if expect.is_empty() => {
                                model_pending = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
                let mut buf = Vec::new();
                let got = poll(&mut rx.recv_many(&mut buf, limit));
                if model_pending {
                    assert_eq!(got, Poll::Pending, "{}", ctx!());
                } else {
                    assert_eq!(got, Poll::Ready(expect.len()), "{}", ctx!());
                }
                accounted += buf.len();
                assert_eq!(buf, expect, "{}", ctx!());
            }
            Op::TryReserve(n) => {
                let n = usize::from(n % 3) + 1;
                let ok = !m.closed
                    && n <= m.cap
                    && m.waiting() == 0
                    && m.queue.len() + m.reserved + n <= m.cap;
                match tx.try_reserve_many(n) {
                    Ok(p) => {
                        assert!(ok, "{}", ctx!());
                        m.reserved += n;
                        permits.extend(p);
                    }
                    Err(_) => assert!(!ok, "{}", ctx!()),
                }
            }
            Op::PermitSend => {
                if let Some(p) = permits.pop() {
                    let item = (next, 0);
                    next += 1;
                    created += 1;
                    p.send(item);
                    m.reserved -= 1;
                    m.queue.push_back(item);
                }
            }
            Op::DropPermit => {
                if let Some(p) = permits.pop() {
                    drop(p);
                    m.reserved -= 1;
                    m.grant();
                }
            }
            Op::SetCapacity(n) => {
                let n = usize::from(n % 6) + 1;
                tx.set_capacity(n).unwrap();
                if n < m.cap {
                    m.shrunk = true;
                }
                m.cap = n;
                for w in &mut m.waiters {
                    if !w.granted && w.reserve.is_some_and(|r| r > n) {
                        w.refused = true;
                    }
                }
                m.grant();
            }
            Op::Close => {
                let first = !m.closed;
                m.closed = true;
                assert_eq!(rx.close(), first, "{}", ctx!());
            }
        }

        // Invariants after every step.
        let got = rx.metrics();
        assert_eq!(got.len, m.queue.len(), "{}", ctx!());
        assert_eq!(got.weight, m.weight(), "{}", ctx!());
        assert_eq!(got.reserved, m.reserved, "{}", ctx!());
        assert_eq!(got.capacity, m.cap, "{}", ctx!());
        assert_eq!(got.waiting_senders, m.waiting(), "{}", ctx!());
        assert!(m.weight() <= m.max_weight, "{}", ctx!());
        if m.queue.len() + m.reserved <= m.cap {
            m.shrunk = false;
        }
        assert!(
            m.shrunk || m.queue.len() + m.reserved <= m.cap,
            "{}",
            ctx!()
        );
    }

    // End: close, settle the pending sends, drain; every value has one fate.
    // Kept permits go back; room granted to a still-pending reservation is
    // held until that future is polled or dropped below.
    m.reserved -= permits.len();
    drop(permits);
    m.grant();
    rx.close();
    m.closed = true;
    let mut late_permits = Vec::new();
    for (mut f, w) in pending.drain(..).zip(m.waiters.drain(..)) {
        match (poll_pending(&mut f, &mut late_permits), w.reserve) {
            (Polled::Sent(Ok(())), None) => assert!(w.granted),
            (Polled::Sent(Err(SendError::Closed(v))), None) => {
                assert!(!w.granted);
                assert_eq!(v, w.item);
                accounted += 1;
            }
            (Polled::Reserved(Ok(n)), Some(want)) => assert!(w.granted && n == want),
            (Polled::Reserved(Err(ReserveError::Closed)), Some(_)) => assert!(!w.granted),
            (other, _) => panic!("pending future after close: {other:?}"),
        }
    }
    drop(late_permits);
    m.reserved = 0;
    loop {
        let expect = m.recv();
        let got = rx.try_recv();
        assert_eq!(got, expect);
        match got {
            Ok(_) => accounted += 1,
            Err(_) => break,
        }
    }
    assert_eq!(accounted, created, "values lost or duplicated");
}
