//! Model checker for `flowguard::channel`, shared by proptest
//! (`tests/prop_channel.rs`) and the fuzz target (`fuzz/fuzz_targets/channel.rs`).
//!
//! `check(ops)` drives a real weighted channel through its public API
//! (polling futures by hand with a no-op waker, so no runtime is needed) and
//! a naive `VecDeque` model side by side, and asserts after every step that
//! they agree: every value received in the model's order (FIFO, no loss, no
//! duplication), same refusals with the same value handed back, same
//! length, weight, reservations and waiting senders; `len + reserved` never
//! above the capacity (unless it was just shrunk) and weight never above
//! `max_weight`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use flowguard::channel::{Builder, Permit, SendError, SendFuture, TryRecvError, TrySendError};

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
                _ => Op::PollSend(arg),
            }
        })
        .collect()
}

type Item = (u32, usize);

#[derive(Debug)]
struct MWaiter {
    item: Item,
    /// Value already moved into the queue by a receiver.
    granted: bool,
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
        self.waiters.iter().filter(|w| !w.granted).count()
    }
    fn grant(&mut self) {
        if self.closed {
            return;
        }
        for i in 0..self.waiters.len() {
            if self.waiters[i].granted {
                continue;
            }
            let item = self.waiters[i].item;
            if !self.fits(item.1) {
                break;
            }
            self.queue.push_back(item);
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
    let mut pending: Vec<SendFuture<'_, Item>> = Vec::new();
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
                                pending.push(f);
                                m.waiters.push(MWaiter {
                                    item,
                                    granted: false,
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
                    if !w.granted {
                        accounted += 1; // dropped unsent with its future
                        let was_head = !m.waiters[..i].iter().any(|w| !w.granted);
                        if was_head {
                            m.grant();
                        }
                    }
                } else {
                    let got = poll(&mut pending[i]);
                    let w = &m.waiters[i];
                    let expect = if w.granted {
                        Poll::Ready(Ok(()))
                    } else if m.closed {
                        Poll::Ready(Err(SendError::Closed(w.item)))
                    } else {
                        Poll::Pending
                    };
                    assert_eq!(got, expect, "{}", ctx!());
                    if let Poll::Ready(r) = got {
                        if r.is_err() {
                            accounted += 1;
                        }
                        pending.remove(i);
                        m.waiters.remove(i);
                    }
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
        let real_waiting = m.waiters.iter().filter(|w| !w.granted).count();
        assert_eq!(got.waiting_senders, real_waiting, "{}", ctx!());
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
    drop(permits);
    m.reserved = 0;
    m.grant();
    rx.close();
    m.closed = true;
    for (mut f, w) in pending.drain(..).zip(m.waiters.drain(..)) {
        match poll(&mut f) {
            Poll::Ready(Ok(())) => assert!(w.granted),
            Poll::Ready(Err(SendError::Closed(v))) => {
                assert!(!w.granted);
                assert_eq!(v, w.item);
                accounted += 1;
            }
            other => panic!("pending send after close: {other:?}"),
        }
    }
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
