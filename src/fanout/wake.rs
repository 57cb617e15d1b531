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
//!
//! Spawned children are polled by their own tasks, not by the driver; for
//! them [`Settle`] counts wakes and finished polls, so that at the deadline
//! the driver can wait for the children woken by then to have had their
//! poll (see `Driver::children_due_have_run` in `gather.rs`).

use std::task::{Wake, Waker};

use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The gather is over (see `close`).
    closed: bool,
}

impl ReadyQueue {
    pub(crate) fn new() -> StdArc<Self> {
        StdArc::new(Self {
            inner: Mutex::new(QueueInner::default()),
        })
    }

    /// Stores the waker of the task driving the gather.
    ///
    /// A replaced waker is dropped after the lock is released: dropping a
    /// waker runs its owner's code, which may wake a child of this gather
    /// (drop a sender the child waits on, say), whose waker pushes here.
    #[inline]
    pub(crate) fn register(&self, waker: &Waker) {
        let mut inner = self.inner.lock();
        let stale = match &inner.parent {
            Some(w) if w.will_wake(waker) => None,
            _ => inner.parent.replace(waker.clone()),
        };
        drop(inner);
        drop(stale);
    }

    /// Moves every queued index into `out` (which must be empty) and re-arms
    /// the parent notification.
    #[inline]
    pub(crate) fn drain_into(&self, out: &mut Vec<usize>) {
        let mut inner = self.inner.lock();
        std::mem::swap(&mut inner.ready, out);
        inner.notified = false;
    }

    /// The gather is over: later pushes (detached or aborted tasks
    /// reporting) wake nobody, and what was queued is dropped.
    pub(crate) fn close(&self) {
        let parent = {
            let mut inner = self.inner.lock();
            inner.closed = true;
            inner.ready = Vec::new();
            inner.parent.take()
        };
        // Dropped unlocked, as in `register`.
        drop(parent);
    }

    pub(crate) fn push(&self, index: usize) {
        let parent = {
            let mut inner = self.inner.lock();
            if inner.closed {
                // Nobody will drain it.
                return;
            }
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

/// Spawned mode: for each child, how many times its task was woken and up to
/// which wake its polls have finished.
///
/// A child whose task was woken (by a timer due at the deadline, say) but
/// has not been polled since is about to run; the driver, once it sees its
/// deadline, waits for that poll before it cuts anyone off, as the in-task
/// driver polls every woken child before it looks at the clock.
///
/// Protocol: each child's `polled` word holds the wake count its last
/// finished poll answered, and a `WATCHED` bit the driver sets (with an
/// RMW) when it starts waiting at its deadline. The child ends each poll
/// with an RMW on the same word, so the two are ordered: either the driver
/// reads the finished poll, or the child reads `WATCHED` and wakes the
/// driver. A poll the driver waits for is never missed.
#[derive(Debug)]
pub(crate) struct Settle {
    woken: Box<[AtomicU64]>,
    polled: Box<[AtomicU64]>,
}

/// The top bit of a `polled` word: the driver waits on this child.
const WATCHED: u64 = 1 << 63;

impl Settle {
    /// `n` children. Each starts woken once: spawning a task schedules it.
    pub(crate) fn new(n: usize) -> StdArc<Self> {
        StdArc::new(Self {
            woken: (0..n).map(|_| AtomicU64::new(1)).collect(),
            polled: (0..n).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Child `index`'s task is being woken (called before the task's waker).
    #[inline]
    pub(crate) fn wake(&self, index: usize) {
        if let Some(w) = self.woken.get(index) {
            w.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Child `index` starts a poll; returns the wakes that poll answers.
    #[inline]
    pub(crate) fn poll_start(&self, index: usize) -> u64 {
        self.woken
            .get(index)
            .map_or(0, |w| w.load(Ordering::SeqCst))
    }

    /// Child `index` finished the poll that `poll_start` returned `seen`
    /// for. Returns whether the driver waits on it and must be told.
    #[inline]
    pub(crate) fn poll_end(&self, index: usize, seen: u64) -> bool {
        let Some(p) = self.polled.get(index) else {
            return false;
        };
        let prev = match p.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
            Some((v & WATCHED) | (seen & !WATCHED))
        }) {
            Ok(v) | Err(v) => v,
        };
        prev & WATCHED != 0
    }

    /// The driver, at its deadline, starts watching child `index`: returns
    /// the wake count to wait for if the child was woken after the start of
    /// its last finished poll. From now on its polls tell the driver.
    pub(crate) fn watch(&self, index: usize) -> Option<u64> {
        let polled = self.polled.get(index)?.fetch_or(WATCHED, Ordering::SeqCst) & !WATCHED;
        let woken = self.woken.get(index)?.load(Ordering::SeqCst);
        (woken > polled).then_some(woken)
    }

    /// Whether child `index` has finished a poll that started after its
    /// `wake`-th wake.
    pub(crate) fn polled_since(&self, index: usize, wake: u64) -> bool {
        self.polled
            .get(index)
            .is_none_or(|p| p.load(Ordering::SeqCst) & !WATCHED >= wake)
    }
}

/// The waker a spawned child's future is polled with: counts the wake in
/// [`Settle`], then wakes the child's task.
#[derive(Debug)]
pub(crate) struct TaskWaker {
    index: usize,
    settle: StdArc<Settle>,
    task: Mutex<Waker>,
}

impl TaskWaker {
    pub(crate) fn new(index: usize, settle: StdArc<Settle>, task: &Waker) -> StdArc<Self> {
        StdArc::new(Self {
            index,
            settle,
            task: Mutex::new(task.clone()),
        })
    }

    /// Points this waker at `task` (a task's waker may change between polls).
    #[inline]
    pub(crate) fn set_task(&self, task: &Waker) {
        let mut current = self.task.lock();
        if !current.will_wake(task) {
            *current = task.clone();
        }
    }
}

impl Wake for TaskWaker {
    fn wake(self: StdArc<Self>) {
        self.wake_by_ref();
    }

    #[inline]
    fn wake_by_ref(self: &StdArc<Self>) {
        // Counted first: whoever sees the count may rely on the task being
        // (about to be) scheduled.
        self.settle.wake(self.index);
        let task = self.task.lock().clone();
        task.wake();
    }
}

/// Loom models only: [`Settle`] for `tests/loom_fanout.rs` to drive (spawned
/// mode needs a Tokio runtime, which loom cannot run).
#[cfg(loom)]
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct SettleModel(StdArc<Settle>);

#[cfg(loom)]
#[allow(missing_docs)]
impl SettleModel {
    pub fn new(children: usize) -> Self {
        Self(Settle::new(children))
    }
    pub fn wake(&self, index: usize) {
        self.0.wake(index);
    }
    pub fn poll_start(&self, index: usize) -> u64 {
        self.0.poll_start(index)
    }
    pub fn poll_end(&self, index: usize, seen: u64) -> bool {
        self.0.poll_end(index, seen)
    }
    pub fn watch(&self, index: usize) -> Option<u64> {
        self.0.watch(index)
    }
    pub fn polled_since(&self, index: usize, wake: u64) -> bool {
        self.0.polled_since(index, wake)
    }
}
