//! Shared state of a gather: the queue of children that were woken.
//!
//! Each running child is polled with its own waker, a [`ChildWaker`] that
//! knows the child's index. Waking it pushes the index onto the gather's
//! [`ReadyQueue`] (once: `queued` deduplicates) and wakes the task that
//! drives the gather. The driver drains the queue and polls only those
//! children, so a gather of `n` futures costs O(wakes), not O(n) per wake.
//!
//! Memory: an index is queued at most once per waker until the driver
//! clears `queued` before re-polling, so the queue never holds more than
//! one entry per waker ever created, and wakers are created at most once
//! per child (fewer: a waker nobody kept is reused for the next child).

use std::task::{Wake, Waker};

use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Mutex, StdArc};

#[derive(Debug)]
pub(crate) struct ReadyQueue {
    inner: Mutex<QueueInner>,
}

#[derive(Debug, Default)]
struct QueueInner {
    ready: Vec<usize>,
    parent: Option<Waker>,
    /// The parent was woken since the last drain; further pushes need not
    /// wake it again.
    notified: bool,
}

impl ReadyQueue {
    pub(crate) fn new() -> StdArc<Self> {
        StdArc::new(Self {
            inner: Mutex::new(QueueInner::default()),
        })
    }

    /// Stores the waker of the task driving the gather.
    #[inline]
    pub(crate) fn register(&self, waker: &Waker) {
        let mut inner = self.inner.lock();
        match &inner.parent {
            Some(w) if w.will_wake(waker) => {}
            _ => inner.parent = Some(waker.clone()),
        }
    }

    /// Moves every queued index into `out` (which must be empty) and re-arms
    /// the parent notification.
    #[inline]
    pub(crate) fn drain_into(&self, out: &mut Vec<usize>) {
        let mut inner = self.inner.lock();
        std::mem::swap(&mut inner.ready, out);
        inner.notified = false;
    }

    pub(crate) fn push(&self, index: usize) {
        let parent = {
            let mut inner = self.inner.lock();
            inner.ready.push(index);
            if inner.notified {
                None
            } else {
                inner.notified = true;
                inner.parent.clone()
            }
        };
        // Wake outside the lock: the parent may run (and drain) at once.
        if let Some(parent) = parent {
            parent.wake();
        }
    }
}

/// The waker one child is polled with.
#[derive(Debug)]
pub(crate) struct ChildWaker {
    /// Only changed through `StdArc::get_mut`, i.e. when nobody else holds
    /// this waker, so every wake reports the child it was handed to.
    index: usize,
    queued: AtomicBool,
    queue: StdArc<ReadyQueue>,
}

impl ChildWaker {
    pub(crate) fn new(index: usize, queue: StdArc<ReadyQueue>) -> StdArc<Self> {
        StdArc::new(Self {
            index,
            queued: AtomicBool::new(false),
            queue,
        })
    }

    /// Hands an unshared waker to another child. Returns `false` (and
    /// changes nothing) if someone still holds it.
    #[inline]
    pub(crate) fn reassign(this: &mut StdArc<Self>, index: usize) -> bool {
        match StdArc::get_mut(this) {
            Some(w) => {
                w.index = index;
                w.queued = AtomicBool::new(false);
                true
            }
            None => false,
        }
    }

    /// Whether anyone besides the driver still holds this waker.
    #[inline]
    pub(crate) fn is_unshared(this: &mut StdArc<Self>) -> bool {
        StdArc::get_mut(this).is_some()
    }

    /// Called by the driver right before it polls the child, so a wake that
    /// arrives during or after the poll queues the child again. AcqRel
    /// pairs with the waker's swap: whatever the waking side did before
    /// waking is visible to the poll that follows.
    #[inline]
    pub(crate) fn clear(&self) {
        self.queued.swap(false, Ordering::AcqRel);
    }
}

impl Wake for ChildWaker {
    fn wake(self: StdArc<Self>) {
        self.wake_by_ref();
    }

    #[inline]
    fn wake_by_ref(self: &StdArc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.queue.push(self.index);
        }
    }
}
