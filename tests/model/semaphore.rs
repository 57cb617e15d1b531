//! Model checker for `Semaphore`, shared by `tests/prop_semaphore.rs` and the
//! fuzz target `fuzz/fuzz_targets/semaphore.rs`.
//!
//! The reference model is deliberately naive: no partial assignment, no debt,
//! no state word. It keeps the capacity, the permits held and a queue of
//! requests, and grants the waiter being served (the oldest, or with
//! newest-first the newest) whenever `capacity - held >= needed`; a bounded
//! queue refuses a newcomer (oldest-first) or evicts its oldest waiter
//! (newest-first) when full. The real semaphore assigns returned permits to
//! the served waiter piecemeal; the two must agree on every observable:
//! which acquires complete, in which order, with what result, and the free
//! count once nobody waits.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use flowguard::semaphore::{AcquireError, AcquireOwned, OwnedPermit, QueueOrder, Semaphore};

/// One step applied to both the real semaphore and the model.
#[derive(Debug, Clone)]
pub enum Op {
    /// Start an `acquire_many(n)` and poll it once.
    Acquire(usize),
    /// `try_acquire_many(n)`.
    TryAcquire(usize),
    /// Drop the i-th held permit (modulo the number held).
    Release(usize),
    /// Drop the i-th pending acquire (modulo the number pending).
    Cancel(usize),
    /// `set_capacity(n)`.
    Resize(usize),
    /// `forget()` the i-th held permit.
    Forget(usize),
    /// `close()`.
    Close,
}

/// Decodes fuzzer bytes into ops, two bytes each.
pub fn ops_from_bytes(data: &[u8]) -> Vec<Op> {
    data.chunks_exact(2)
        .map(|c| {
            let arg = c[1] as usize;
            match c[0] % 16 {
                0..=3 => Op::Acquire(arg % 7),
                4..=5 => Op::TryAcquire(arg % 7),
                6..=8 => Op::Release(arg),
                9..=10 => Op::Cancel(arg),
                11 => Op::Resize(arg % 10),
                12 => Op::Forget(arg),
                13 if arg % 8 == 0 => Op::Close,
                _ => Op::Release(arg),
            }
        })
        .collect()
}

#[derive(Debug, Default)]
struct Model {
    capacity: usize,
    held: usize,
    closed: bool,
    /// (request id, needed), oldest first.
    queue: VecDeque<(usize, usize)>,
    newest_first: bool,
    limit: Option<usize>,
}

impl Model {
    fn free(&self) -> usize {
        self.capacity.saturating_sub(self.held)
    }

    /// Grants heads that fit; returns (id, result) in grant order.
    fn settle(&mut self, out: &mut Vec<(usize, Result<usize, AcquireError>)>) {
        // Requests that can never fit fail wherever they stand.
        let cap = self.capacity;
        self.queue.retain(|&(id, n)| {
            if n > cap {
                out.push((
                    id,
                    Err(AcquireError::TooLarge {
                        requested: n,
                        capacity: cap,
                    }),
                ));
                false
            } else {
                true
            }
        });
        loop {
            let served = if self.newest_first {
                self.queue.back()
            } else {
                self.queue.front()
            };
            let Some(&(id, n)) = served else { break };
            if self.free() < n {
                break;
            }
            if self.newest_first {
                self.queue.pop_back();
            } else {
                self.queue.pop_front();
            }
            self.held += n;
            out.push((id, Ok(n)));
        }
    }
}

struct Pending {
    id: usize,
    fut: Pin<Box<AcquireOwned>>,
}

/// Runs `ops` against a real semaphore and the model and panics on any
/// difference.
pub fn check(initial_capacity: usize, ops: &[Op]) {
    check_with(initial_capacity, QueueOrder::OldestFirst, None, ops);
}

/// As [`check`] with a queue order and an optional queue limit.
pub fn check_with(initial_capacity: usize, order: QueueOrder, limit: Option<usize>, ops: &[Op]) {
    let sem = match (order, limit) {
        (QueueOrder::OldestFirst, None) => Semaphore::new(initial_capacity),
        _ => {
            let mut b = Semaphore::builder().capacity(initial_capacity).order(order);
            if let Some(l) = limit {
                b = b.queue_limit(l);
            }
            b.build().unwrap()
        }
    };
    let mut model = Model {
        capacity: initial_capacity,
        newest_first: order == QueueOrder::NewestFirst,
        limit,
        ..Model::default()
    };
    let mut held: Vec<OwnedPermit> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut next_id = 0;
    let mut cx = Context::from_waker(Waker::noop());

    for op in ops {
        let mut expected: Vec<(usize, Result<usize, AcquireError>)> = Vec::new();
        let mut got = Vec::new();
        match *op {
            Op::Acquire(n) => {
                let id = next_id;
                next_id += 1;
                if model.closed {
                    expected.push((id, Err(AcquireError::Closed)));
                } else if n == 0 {
                    expected.push((id, Ok(0))); // empty permit at once, no queueing
                } else if n > model.capacity {
                    expected.push((
                        id,
                        Err(AcquireError::TooLarge {
                            requested: n,
                            capacity: model.capacity,
                        }),
                    ));
                } else if model.limit.is_some_and(|l| model.queue.len() >= l)
                    && (model.free() < n || !model.queue.is_empty())
                {
                    // Full, and the newcomer would have to wait.
                    if model.newest_first && !model.queue.is_empty() {
                        let (old, _) = model.queue.pop_front().unwrap();
                        expected.push((old, Err(AcquireError::Evicted)));
                        model.queue.push_back((id, n));
                    } else {
                        expected.push((id, Err(AcquireError::QueueFull)));
                    }
                } else {
                    model.queue.push_back((id, n));
                }
                // The acquire takes effect now (a newest-first newcomer may
                // evict an older waiter): poll it before the others.
                let mut fut = Box::pin(sem.acquire_many_owned(n));
                match fut.as_mut().poll(&mut cx) {
                    Poll::Pending => pending.push(Pending { id, fut }),
                    Poll::Ready(r) => {
                        got.push((id, r.as_ref().map(|p| p.num_permits()).map_err(|e| *e)));
                        if let Ok(permit) = r {
                            held.push(permit);
                        }
                    }
                }
            }
            Op::TryAcquire(n) => {
                let want = if model.closed {
                    Err(AcquireError::Closed)
                } else if n == 0 {
                    Ok(0)
                } else if !model.queue.is_empty() || model.free() < n {
                    if n > model.capacity {
                        Err(AcquireError::TooLarge {
                            requested: n,
                            capacity: model.capacity,
                        })
                    } else {
                        Err(AcquireError::NoPermits)
                    }
                } else {
                    model.held += n;
                    Ok(n)
                };
                let got = sem.try_acquire_many_owned(n);
                assert_eq!(
                    got.as_ref().map(|p| p.num_permits()).map_err(|e| *e),
                    want,
                    "try_acquire_many({n}) after {ops:?}"
                );
                if let Ok(p) = got {
                    held.push(p);
                }
            }
            Op::Release(i) if !held.is_empty() => {
                let p = held.swap_remove(i % held.len());
                model.held -= p.num_permits();
                drop(p);
            }
            Op::Cancel(i) if !pending.is_empty() => {
                let p = pending.remove(i % pending.len());
                model.queue.retain(|&(id, _)| id != p.id);
                drop(p);
            }
            Op::Resize(n) => {
                sem.set_capacity(n).unwrap();
                model.capacity = n;
            }
            Op::Forget(i) if !held.is_empty() => {
                let p = held.swap_remove(i % held.len());
                let n = p.num_permits();
                // Held permits beyond the capacity (after a shrink) were due
                // to be retired: forgetting them costs no capacity.
                let excess = model.held.saturating_sub(model.capacity);
                model.held -= n;
                model.capacity -= n.saturating_sub(excess);
                p.forget();
            }
            Op::Close => {
                sem.close();
                if !model.closed {
                    model.closed = true;
                    for (id, _) in model.queue.drain(..) {
                        expected.push((id, Err(AcquireError::Closed)));
                    }
                }
            }
            _ => {}
        }
        model.settle(&mut expected);
        expected.sort_by_key(|&(id, _)| id);

        // Poll every pending acquire; collect the ones that completed.
        pending.retain_mut(|p| match p.fut.as_mut().poll(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(r) => {
                got.push((p.id, r.as_ref().map(|p| p.num_permits()).map_err(|e| *e)));
                if let Ok(permit) = r {
                    held.push(permit);
                }
                false
            }
        });
        got.sort_by_key(|&(id, _)| id);
        assert_eq!(got, expected, "completions after {op:?} in {ops:?}");

        assert_eq!(sem.capacity(), model.capacity, "capacity after {ops:?}");
        assert_eq!(sem.is_closed(), model.closed);
        assert_eq!(sem.waiters(), model.queue.len(), "waiters after {ops:?}");
        if model.queue.is_empty() {
            assert_eq!(sem.available(), model.free(), "available after {ops:?}");
        } else {
            assert_eq!(sem.available(), 0, "free permits while waiters queue");
        }
        let held_total: usize = held.iter().map(|p| p.num_permits()).sum();
        assert_eq!(held_total, model.held);
    }

    // Quiescence: everything returns, nothing leaked.
    drop(pending);
    model.queue.clear();
    drop(held);
    assert_eq!(sem.available(), model.capacity, "leak after {ops:?}");
    assert_eq!(sem.waiters(), 0);
}
