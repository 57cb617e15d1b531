//! The semaphore's waiter-queue rules: a pure, synchronous state machine.
//!
//! It knows nothing about atomics or locks; the shared layer (`mod.rs`) keeps
//! it behind a mutex and feeds it the permits that come back. The rules:
//!
//! * **FIFO, weighted** (the default, [`QueueOrder::OldestFirst`]).
//!   Returned permits first pay off *debt* (capacity removed by a shrink
//!   while permits were held), then go to the waiter at the head of the
//!   queue; a head that needs more than is returned keeps the partial
//!   assignment and everything behind it waits. A later waiter never
//!   overtakes an earlier one, so a large head request holds back small ones.
//! * **LIFO** ([`QueueOrder::NewestFirst`]): the same with the newest waiter
//!   as the one served. A newcomer takes over the partial assignment of the
//!   waiter it displaces, so only the waiter being served ever holds one
//!   (and a newcomer is granted at once when that is enough).
//! * **Bounded.** With a queue limit, a newcomer to a full queue is refused
//!   (oldest-first) or the oldest waiter is evicted to make room
//!   (newest-first, .NET's `QueueProcessingOrder.NewestFirst`).
//! * **Cancellation returns everything.** A cancelled waiter gives back the
//!   permits it was already assigned (partially or fully), which flow on to
//!   the next waiter.
//! * **Impossible requests fail.** When the capacity shrinks below what a
//!   waiter needs, or the semaphore closes, the waiter fails and its assigned
//!   permits are returned.
//!
//! Waiters live in a slab with an index-linked list: O(1) enqueue, dequeue and
//! removal from the middle, and no allocation per waiter once the slab has
//! grown to the peak number of concurrent waiters.

use std::task::{Poll, Waker};

use super::QueueOrder;

/// Why a queued acquire failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Closed,
    TooLarge {
        requested: usize,
        capacity: usize,
    },
    /// Evicted from a full newest-first queue by a newer waiter.
    Evicted,
}

/// A handle on one queued waiter; owned by exactly one acquire future, which
/// must hand it back through [`WaitQueue::poll`] (until `Ready`) or
/// [`WaitQueue::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaiterKey(usize);

#[derive(Debug)]
enum Slot {
    Vacant {
        next_free: Option<usize>,
    },
    Waiting {
        needed: usize,
        assigned: usize,
        waker: Option<Waker>,
        prev: Option<usize>,
        next: Option<usize>,
    },
    Granted {
        permits: usize,
    },
    Failed(Failure),
}

/// Wakers collected under the lock and woken after it is released.
#[derive(Debug, Default)]
pub(crate) struct WakeList {
    inline: [Option<Waker>; 8],
    len: usize,
    spill: Vec<Waker>,
}

impl WakeList {
    pub(crate) fn push(&mut self, waker: Waker) {
        if self.len < self.inline.len() {
            self.inline[self.len] = Some(waker);
            self.len += 1;
        } else {
            self.spill.push(waker);
        }
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn wake_all(&mut self) {
        for slot in &mut self.inline[..self.len] {
            if let Some(w) = slot.take() {
                w.wake();
            }
        }
        self.len = 0;
        for w in self.spill.drain(..) {
            w.wake();
        }
    }
}

/// The queue of waiting acquirers plus the capacity bookkeeping that decides
/// where returned permits go.
#[derive(Debug)]
pub(crate) struct WaitQueue {
    slots: Vec<Slot>,
    free_head: Option<usize>,
    head: Option<usize>,
    tail: Option<usize>,
    waiting: usize,
    capacity: usize,
    debt: usize,
    closed: bool,
    order: QueueOrder,
    /// The most waiters queued at once (`None`: unbounded).
    limit: Option<usize>,
}

impl WaitQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self::with_policy(capacity, QueueOrder::OldestFirst, None)
    }

    pub(crate) fn with_policy(capacity: usize, order: QueueOrder, limit: Option<usize>) -> Self {
        Self {
            slots: Vec::new(),
            free_head: None,
            head: None,
            tail: None,
            waiting: 0,
            capacity,
            debt: 0,
            closed: false,
            order,
            limit,
        }
    }

    pub(crate) fn order(&self) -> QueueOrder {
        self.order
    }

    /// Whether a newcomer finds no room in the queue.
    pub(crate) fn is_full(&self) -> bool {
        self.limit.is_some_and(|l| self.waiting >= l)
    }

    /// The waiter returned permits go to: the oldest (FIFO) or the newest.
    fn served(&self) -> Option<usize> {
        match self.order {
            QueueOrder::OldestFirst => self.head,
            QueueOrder::NewestFirst => self.tail,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn debt(&self) -> usize {
        self.debt
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Number of waiters still queued (not yet granted or failed).
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// True when returned permits can bypass the queue: nobody waits and no
    /// debt is owed.
    pub(crate) fn is_idle(&self) -> bool {
        self.waiting == 0 && self.debt == 0
    }

    /// Permits the queued waiters have been assigned but not yet taken.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn assigned(&self) -> usize {
        self.slots
            .iter()
            .map(|s| match s {
                Slot::Waiting { assigned, .. } => *assigned,
                Slot::Granted { permits } => *permits,
                _ => 0,
            })
            .sum()
    }

    /// Queues a waiter that needs `needed` permits and already holds
    /// `assigned` of them (taken from the free pool by the caller). Returns
    /// its key and, newest-first, the partial assignment taken back from the
    /// waiter it displaces: the caller must pass those permits to
    /// [`release`](Self::release), which hands them to the newcomer first.
    ///
    /// Precondition: `assigned < needed <= capacity`, not closed, not full.
    pub(crate) fn enqueue(
        &mut self,
        needed: usize,
        assigned: usize,
        waker: Waker,
    ) -> (WaiterKey, usize) {
        debug_assert!(assigned < needed && needed <= self.capacity && !self.closed);
        let reclaimed = match (self.order, self.tail) {
            (QueueOrder::NewestFirst, Some(t)) => match &mut self.slots[t] {
                Slot::Waiting { assigned, .. } => std::mem::take(assigned),
                _ => 0,
            },
            _ => 0,
        };
        let slot = Slot::Waiting {
            needed,
            assigned,
            waker: Some(waker),
            prev: self.tail,
            next: None,
        };
        let index = match self.free_head {
            Some(i) => {
                let Slot::Vacant { next_free } = self.slots[i] else {
                    unreachable!("free list points at an occupied slot")
                };
                self.free_head = next_free;
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        match self.tail {
            Some(t) => self.set_next(t, Some(index)),
            None => self.head = Some(index),
        }
        self.tail = Some(index);
        self.waiting += 1;
        (WaiterKey(index), reclaimed)
    }

    /// Fails the oldest waiter to make room (newest-first, full queue).
    /// Returns the permits it had been assigned, for [`release`](Self::release).
    pub(crate) fn evict_oldest(&mut self, wakers: &mut WakeList) -> usize {
        let Some(h) = self.head else { return 0 };
        let Slot::Waiting { assigned, .. } = self.slots[h] else {
            unreachable!("queue head is not waiting")
        };
        if let Some(w) = self.finish(h, Slot::Failed(Failure::Evicted)) {
            wakers.push(w);
        }
        assigned
    }

    /// Distributes `n` returned permits: debt first, then the queue in FIFO
    /// order. Returns what is left for the free pool (non-zero only when the
    /// queue became idle).
    pub(crate) fn release(&mut self, mut n: usize, wakers: &mut WakeList) -> usize {
        let pay = n.min(self.debt);
        self.debt -= pay;
        n -= pay;
        // No `n > 0` guard: with nothing left, the head takes 0 and we return.
        while let Some(h) = self.served() {
            let Slot::Waiting {
                needed, assigned, ..
            } = &mut self.slots[h]
            else {
                unreachable!("served waiter is not waiting")
            };
            let want = *needed - *assigned;
            if n < want {
                *assigned += n;
                return 0;
            }
            n -= want;
            let permits = *needed;
            if let Some(w) = self.finish(h, Slot::Granted { permits }) {
                wakers.push(w);
            }
        }
        n
    }

    /// Polls a queued waiter. `Ready` consumes the key.
    ///
    /// A waker this replaces is moved into `stale`, for the caller to drop
    /// once the lock is released: dropping a waker runs its owner's code,
    /// which may return permits to this very semaphore (tokio's
    /// `release_permits_at_drop`).
    pub(crate) fn poll(
        &mut self,
        key: WaiterKey,
        waker: &Waker,
        stale: &mut Option<Waker>,
    ) -> Poll<Result<usize, Failure>> {
        match &mut self.slots[key.0] {
            Slot::Waiting { waker: slot, .. } => {
                // Keeping an equivalent waker only saves a clone (cargo-mutants'
                // "guard always false" is equivalent); a different one must
                // replace it (tested).
                match slot {
                    Some(w) if w.will_wake(waker) => {}
                    _ => *stale = slot.replace(waker.clone()),
                }
                Poll::Pending
            }
            Slot::Granted { permits } => {
                let permits = *permits;
                self.vacate(key.0);
                Poll::Ready(Ok(permits))
            }
            Slot::Failed(f) => {
                let f = *f;
                self.vacate(key.0);
                Poll::Ready(Err(f))
            }
            Slot::Vacant { .. } => unreachable!("waiter key used after completion"),
        }
    }

    /// Removes a waiter whatever its state; returns the permits it had been
    /// assigned, which the caller must pass to [`release`](Self::release),
    /// and its waker, which the caller must drop only after releasing the
    /// lock (see [`poll`](Self::poll)).
    pub(crate) fn cancel(&mut self, key: WaiterKey) -> (usize, Option<Waker>) {
        let returned = match &mut self.slots[key.0] {
            Slot::Waiting {
                assigned, waker, ..
            } => {
                let out = (*assigned, waker.take());
                self.unlink(key.0);
                out
            }
            Slot::Granted { permits } => (*permits, None),
            Slot::Failed(_) => (0, None),
            Slot::Vacant { .. } => unreachable!("waiter key used after completion"),
        };
        self.vacate(key.0);
        returned
    }

    /// Fails every waiter (queued or granted but not yet taken) with
    /// `Closed`. Returns the permits they gave back.
    pub(crate) fn close(&mut self, wakers: &mut WakeList) -> usize {
        self.closed = true;
        let mut returned = 0;
        for i in 0..self.slots.len() {
            match &self.slots[i] {
                Slot::Waiting { assigned, .. } => {
                    returned += *assigned;
                    if let Some(w) = self.finish(i, Slot::Failed(Failure::Closed)) {
                        wakers.push(w);
                    }
                }
                Slot::Granted { permits } => {
                    // Its waker was already taken when it was granted; the
                    // owner will poll and see the failure.
                    returned += *permits;
                    self.slots[i] = Slot::Failed(Failure::Closed);
                }
                _ => {}
            }
        }
        returned
    }

    /// Adds `by` to the capacity; returns the permits that become free, which
    /// the caller must pass to [`release`](Self::release) (growing first
    /// cancels outstanding debt).
    pub(crate) fn grow(&mut self, by: usize) -> usize {
        self.capacity += by;
        let cancel = by.min(self.debt);
        self.debt -= cancel;
        by - cancel
    }

    /// Permits held by a caller leave circulation for good: they first cancel
    /// debt (they were due to be retired anyway), then reduce the capacity.
    /// Returns permits to `release` from waiters that no longer fit.
    pub(crate) fn forget(&mut self, n: usize, wakers: &mut WakeList) -> usize {
        let pay = n.min(self.debt);
        self.debt -= pay;
        // The forgotten permits themselves are what leaves: "taken" in full.
        self.shrink(n - pay, n - pay, wakers)
    }

    /// Removes `by` from the capacity. `took_free` of it came out of the free
    /// pool; the rest is reclaimed from waiters' partial assignments (latest
    /// waiter first, so a FIFO head keeps its progress; newest-first, only the
    /// newest holds one) and what is still missing
    /// becomes debt, paid by held permits as they return. Debt therefore
    /// always equals the permits held beyond the capacity. Waiters that now
    /// need more than the capacity fail with `TooLarge`; the permits they held
    /// are returned (the caller must pass them to `release`).
    pub(crate) fn shrink(&mut self, by: usize, took_free: usize, wakers: &mut WakeList) -> usize {
        debug_assert!(took_free <= by && by <= self.capacity);
        self.capacity -= by;
        let mut missing = by - took_free;
        let mut cur = self.tail;
        while missing != 0 {
            let Some(i) = cur else { break };
            let Slot::Waiting { assigned, prev, .. } = &mut self.slots[i] else {
                unreachable!("queued slot is not waiting")
            };
            let take = (*assigned).min(missing);
            *assigned -= take;
            missing -= take;
            cur = *prev;
        }
        self.debt += missing;
        let capacity = self.capacity;
        let mut returned = 0;
        let mut cur = self.head;
        while let Some(i) = cur {
            let Slot::Waiting {
                needed,
                assigned,
                next,
                ..
            } = &self.slots[i]
            else {
                unreachable!("queued slot is not waiting")
            };
            cur = *next;
            if *needed > capacity {
                let requested = *needed;
                returned += *assigned;
                let f = Failure::TooLarge {
                    requested,
                    capacity,
                };
                if let Some(w) = self.finish(i, Slot::Failed(f)) {
                    wakers.push(w);
                }
            }
        }
        returned
    }

    /// Unlinks a waiting slot, replaces it with `with`, returns its waker.
    fn finish(&mut self, i: usize, with: Slot) -> Option<Waker> {
        self.unlink(i);
        match std::mem::replace(&mut self.slots[i], with) {
            Slot::Waiting { waker, .. } => waker,
            _ => None,
        }
    }

    fn unlink(&mut self, i: usize) {
        let Slot::Waiting { prev, next, .. } = self.slots[i] else {
            unreachable!("unlinking a slot that is not waiting")
        };
        match prev {
            Some(p) => self.set_next(p, next),
            None => self.head = next,
        }
        match next {
            Some(n) => self.set_prev(n, prev),
            None => self.tail = prev,
        }
        self.waiting -= 1;
    }

    fn vacate(&mut self, i: usize) {
        self.slots[i] = Slot::Vacant {
            next_free: self.free_head,
        };
        self.free_head = Some(i);
    }

    fn set_next(&mut self, i: usize, to: Option<usize>) {
        if let Slot::Waiting { next, .. } = &mut self.slots[i] {
            *next = to;
        }
    }

    fn set_prev(&mut self, i: usize, to: Option<usize>) {
        if let Slot::Waiting { prev, .. } = &mut self.slots[i] {
            *prev = to;
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn noop() -> Waker {
        Waker::noop().clone()
    }

    fn ready(q: &mut WaitQueue, k: WaiterKey) -> Poll<Result<usize, Failure>> {
        q.poll(k, &noop(), &mut None)
    }

    #[test]
    fn release_serves_head_first_even_when_a_later_waiter_would_fit() {
        let mut q = WaitQueue::new(10);
        let mut w = WakeList::default();
        let a = q.enqueue(5, 0, noop()).0;
        let b = q.enqueue(1, 0, noop()).0;
        assert_eq!(q.release(3, &mut w), 0);
        assert_eq!(ready(&mut q, a), Poll::Pending);
        assert_eq!(ready(&mut q, b), Poll::Pending, "b must not overtake a");
        assert_eq!(q.release(3, &mut w), 0);
        assert_eq!(ready(&mut q, a), Poll::Ready(Ok(5)));
        assert_eq!(ready(&mut q, b), Poll::Ready(Ok(1)));
        assert!(q.is_idle());
    }

    #[test]
    fn leftover_goes_back_only_when_queue_is_empty() {
        let mut q = WaitQueue::new(10);
        let mut w = WakeList::default();
        let a = q.enqueue(2, 0, noop()).0;
        assert_eq!(q.release(7, &mut w), 5);
        assert_eq!(ready(&mut q, a), Poll::Ready(Ok(2)));
    }

    #[test]
    fn cancel_returns_partial_assignment() {
        let mut q = WaitQueue::new(10);
        let mut w = WakeList::default();
        let a = q.enqueue(4, 1, noop()).0;
        let b = q.enqueue(3, 0, noop()).0;
        q.release(2, &mut w);
        let (back, waker) = q.cancel(a);
        assert_eq!(back, 3);
        assert!(waker.is_some(), "a waiting waiter's waker comes back");
        assert_eq!(q.release(back, &mut w), 0);
        assert_eq!(ready(&mut q, b), Poll::Ready(Ok(3)));
    }

    #[test]
    fn cancel_from_middle_keeps_order() {
        let mut q = WaitQueue::new(10);
        let mut w = WakeList::default();
        let a = q.enqueue(1, 0, noop()).0;
        let b = q.enqueue(1, 0, noop()).0;
        let c = q.enqueue(1, 0, noop()).0;
        assert_eq!(q.cancel(b).0, 0);
        assert_eq!(q.release(1, &mut w), 0);
        assert_eq!(ready(&mut q, a), Poll::Ready(Ok(1)));
        assert_eq!(ready(&mut q, c), Poll::Pending);
        assert_eq!(q.release(1, &mut w), 0);
        assert_eq!(ready(&mut q, c), Poll::Ready(Ok(1)));
        // Slots are reused: no growth past the peak.
        let _d = q.enqueue(1, 0, noop()).0;
        assert_eq!(q.slots.len(), 3);
    }

    #[test]
    fn debt_is_paid_before_waiters() {
        let mut q = WaitQueue::new(4);
        let mut w = WakeList::default();
        assert_eq!(q.shrink(2, 0, &mut w), 0);
        assert_eq!(q.capacity(), 2);
        let a = q.enqueue(1, 0, noop()).0;
        assert_eq!(q.release(2, &mut w), 0);
        assert_eq!(ready(&mut q, a), Poll::Pending);
        assert_eq!(q.release(1, &mut w), 0);
        assert_eq!(ready(&mut q, a), Poll::Ready(Ok(1)));
    }

    #[test]
    fn shrink_fails_waiters_that_no_longer_fit() {
        let mut q = WaitQueue::new(8);
        let mut w = WakeList::default();
        let a = q.enqueue(6, 2, noop()).0;
        let b = q.enqueue(2, 0, noop()).0;
        let back = q.shrink(4, 0, &mut w);
        // a's 2 assigned permits were reclaimed by the shrink; 2 more are owed.
        assert_eq!(back, 0);
        assert_eq!(q.debt(), 2);
        assert_eq!(
            ready(&mut q, a),
            Poll::Ready(Err(Failure::TooLarge {
                requested: 6,
                capacity: 4
            }))
        );
        assert_eq!(q.release(2, &mut w), 0);
        assert_eq!(q.debt(), 0);
        assert_eq!(ready(&mut q, b), Poll::Pending);
        assert_eq!(q.release(2, &mut w), 0);
        assert_eq!(ready(&mut q, b), Poll::Ready(Ok(2)));
    }

    #[test]
    fn shrink_reclaims_partial_assignments_before_making_debt() {
        let mut q = WaitQueue::new(4);
        let mut w = WakeList::default();
        let a = q.enqueue(3, 2, noop()).0; // 2 held elsewhere, 2 assigned to a
        assert_eq!(q.shrink(1, 0, &mut w), 0);
        assert_eq!(q.debt(), 0, "the assigned permit is retired, not owed");
        assert_eq!(q.assigned(), 1);
        assert_eq!(q.release(2, &mut w), 0);
        assert_eq!(ready(&mut q, a), Poll::Ready(Ok(3)));
    }

    #[test]
    fn grow_cancels_debt_first() {
        let mut q = WaitQueue::new(4);
        let mut w = WakeList::default();
        q.shrink(3, 1, &mut w);
        assert_eq!(q.debt(), 2);
        assert_eq!(q.grow(5), 3);
        assert_eq!(q.debt(), 0);
        assert_eq!(q.capacity(), 6);
    }

    #[test]
    fn close_fails_waiting_and_granted_and_returns_their_permits() {
        let mut q = WaitQueue::new(8);
        let mut w = WakeList::default();
        let a = q.enqueue(2, 0, noop()).0;
        let b = q.enqueue(5, 0, noop()).0;
        q.release(3, &mut w); // a granted 2, b assigned 1
        assert_eq!(
            q.assigned(),
            3,
            "granted-but-untaken permits count as assigned"
        );
        assert!(!q.is_closed());
        assert_eq!(q.close(&mut w), 3);
        assert!(q.is_closed());
        assert_eq!(ready(&mut q, a), Poll::Ready(Err(Failure::Closed)));
        assert_eq!(ready(&mut q, b), Poll::Ready(Err(Failure::Closed)));
        assert_eq!(q.waiting(), 0);
    }

    #[test]
    fn wake_list_spills_past_inline_capacity() {
        let mut q = WaitQueue::new(100);
        let mut w = WakeList::default();
        let keys: Vec<_> = (0..20).map(|_| q.enqueue(1, 0, noop()).0).collect();
        assert!(w.is_empty());
        assert_eq!(q.release(20, &mut w), 0);
        // The first eight stay inline (no allocation), the rest spill.
        assert_eq!((w.len, w.spill.len()), (8, 12));
        assert!(!w.is_empty());
        w.wake_all();
        assert!(w.is_empty());
        for k in keys {
            assert_eq!(ready(&mut q, k), Poll::Ready(Ok(1)));
        }
    }

    #[test]
    fn shrink_to_exactly_what_a_waiter_needs_keeps_it_waiting() {
        let mut q = WaitQueue::new(6);
        let mut w = WakeList::default();
        let a = q.enqueue(4, 0, noop()).0;
        assert_eq!(q.shrink(2, 2, &mut w), 0);
        assert_eq!(q.capacity(), 4);
        assert_eq!(ready(&mut q, a), Poll::Pending, "4 of 4 is still possible");
        assert_eq!(q.release(4, &mut w), 0);
        assert_eq!(ready(&mut q, a), Poll::Ready(Ok(4)));
    }

    /// A waiter re-polled with a new waker must be woken on the new one.
    #[test]
    fn repoll_with_a_new_waker_replaces_the_old_one() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::Wake;

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let first = Arc::new(Count(AtomicUsize::new(0)));
        let second = Arc::new(Count(AtomicUsize::new(0)));
        let mut q = WaitQueue::new(1);
        let mut w = WakeList::default();
        let a = q.enqueue(1, 0, Waker::from(first.clone())).0;
        // Same waker again: kept; a different one: replaces it, and the
        // replaced one comes back to be dropped outside the lock.
        let mut stale = None;
        let p = q.poll(a, &Waker::from(first.clone()), &mut stale);
        assert_eq!((p, stale.is_none()), (Poll::Pending, true));
        let p = q.poll(a, &Waker::from(second.clone()), &mut stale);
        assert_eq!(p, Poll::Pending);
        assert!(
            stale
                .take()
                .is_some_and(|w| w.will_wake(&Waker::from(first.clone())))
        );
        assert_eq!(q.release(1, &mut w), 0);
        w.wake_all();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert_eq!(ready(&mut q, a), Poll::Ready(Ok(1)));
    }

    #[test]
    fn newest_first_serves_the_newest_and_hands_it_the_partial_assignment() {
        let mut q = WaitQueue::with_policy(10, QueueOrder::NewestFirst, None);
        let mut w = WakeList::default();
        let (a, r) = q.enqueue(3, 0, noop());
        assert_eq!(r, 0);
        assert_eq!(q.release(2, &mut w), 0); // a: 2 of 3
        let (b, r) = q.enqueue(2, 0, noop());
        assert_eq!(r, 2, "b takes over a's partial assignment");
        assert_eq!(q.assigned(), 0);
        assert_eq!(q.release(r, &mut w), 0);
        assert_eq!(ready(&mut q, b), Poll::Ready(Ok(2)));
        assert_eq!(ready(&mut q, a), Poll::Pending);
        assert_eq!(q.release(3, &mut w), 0);
        assert_eq!(ready(&mut q, a), Poll::Ready(Ok(3)));
    }

    #[test]
    fn newest_first_release_order_is_lifo() {
        let mut q = WaitQueue::with_policy(10, QueueOrder::NewestFirst, None);
        let mut w = WakeList::default();
        let keys: Vec<_> = (0..3).map(|_| q.enqueue(1, 0, noop()).0).collect();
        assert_eq!(q.release(1, &mut w), 0);
        assert_eq!(ready(&mut q, keys[2]), Poll::Ready(Ok(1)));
        assert_eq!(ready(&mut q, keys[0]), Poll::Pending);
        assert_eq!(q.release(1, &mut w), 0);
        assert_eq!(ready(&mut q, keys[1]), Poll::Ready(Ok(1)));
        assert_eq!(q.release(1, &mut w), 0);
        assert_eq!(ready(&mut q, keys[0]), Poll::Ready(Ok(1)));
    }

    #[test]
    fn a_queue_limit_makes_the_queue_full_and_eviction_frees_the_oldest() {
        let mut q = WaitQueue::with_policy(10, QueueOrder::NewestFirst, Some(2));
        let mut w = WakeList::default();
        assert!(!q.is_full());
        let a = q.enqueue(3, 1, noop()).0;
        let b = q.enqueue(1, 0, noop()).0;
        assert!(q.is_full());
        assert_eq!(
            q.evict_oldest(&mut w),
            0,
            "a's partial went to b when b came"
        );
        assert!(!q.is_full());
        assert_eq!(ready(&mut q, a), Poll::Ready(Err(Failure::Evicted)));
        assert_eq!(q.waiting(), 1);
        assert_eq!(ready(&mut q, b), Poll::Pending);
        let mut fifo = WaitQueue::with_policy(10, QueueOrder::OldestFirst, Some(1));
        let c = fifo.enqueue(4, 2, noop()).0;
        assert!(fifo.is_full());
        assert_eq!(fifo.evict_oldest(&mut w), 2);
        assert_eq!(ready(&mut fifo, c), Poll::Ready(Err(Failure::Evicted)));
        assert_eq!(fifo.evict_oldest(&mut w), 0, "nothing left to evict");
    }
}
