//! Run slots for work that runs in the caller's own task: the pool's
//! concurrency limit and queue, without spawning.
//!
//! A slot is claimed through the same admission and queue as a submitted
//! task (so it waits its turn by priority, counts in `running`, and is
//! handed off to the next queued job when dropped); the work then runs
//! wherever the caller is, so it need not be `Send` or `'static`. The
//! pipeline's bulkhead layer uses this to put a `WorkerPool`'s limit around
//! each attempt.

use std::fmt;
use std::future::poll_fn;
use std::task::{Poll, Waker};

use tokio::time::Instant;

use super::dispatch::{Dispatcher, Job, Refused, RunSlot, TaskId};
use super::{DEFAULT_PRIORITY, TaskError};
use crate::semaphore::AcquireError;
use crate::sync::atomic::Ordering;
use crate::sync::{Arc, Mutex, StdArc};

/// One of a [`WorkerPool`](super::WorkerPool)'s run slots, held by work that
/// runs in the caller's own task; see
/// [`WorkerPool::slot`](super::WorkerPool::slot).
///
/// While held it counts in the pool's `running`, like a task. Dropping it
/// frees the slot (the next queued task starts on it) and counts one
/// `completed` in the pool's metrics. A pool shutdown cannot abort the work
/// holding it (it is not the pool's task): the shutdown report counts it as
/// `still_running`, and `shutdown` waits for the slot to be dropped.
///
/// # Examples
///
/// ```
/// use flowguard::pool::WorkerPool;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = WorkerPool::builder().max_concurrency(1).build().unwrap();
/// let slot = pool.slot().await.unwrap();
/// assert_eq!(pool.metrics().running, 1);
/// assert!(pool.try_slot().is_err()); // the only slot is held
/// drop(slot);
/// assert_eq!(pool.metrics().completed, 1);
/// # }
/// ```
pub struct PoolSlot {
    slot: Option<RunSlot>,
}

impl fmt::Debug for PoolSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolSlot").finish_non_exhaustive()
    }
}

impl Drop for PoolSlot {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.counters().completed.fetch_add(1, Ordering::Relaxed);
            drop(slot);
        }
    }
}

/// Why no [`PoolSlot`] was given.
///
/// # Examples
///
/// ```
/// use flowguard::pool::{SlotError, WorkerPool};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = WorkerPool::builder().max_concurrency(1).build().unwrap();
/// let slot = pool.try_slot().unwrap();
/// assert_eq!(pool.try_slot().err(), Some(SlotError::Full));
/// drop(slot);
/// pool.close();
/// assert_eq!(pool.try_slot().err(), Some(SlotError::Closed));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotError {
    /// [`try_slot`](super::WorkerPool::try_slot) only: every slot is busy
    /// or tasks are queued ahead (counted as `rejected`).
    Full,
    /// The pool is closed or shutting down.
    Closed,
    /// [`slot_deadline`](super::WorkerPool::slot_deadline) only: no slot
    /// came free by the deadline.
    TimedOut,
    /// The wait was removed from the queue by `clear_queue()`.
    Cleared,
}

impl fmt::Display for SlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "every run slot of the pool is busy",
            Self::Closed => "the pool is closed",
            Self::TimedOut => "no run slot came free in time",
            Self::Cleared => "the wait for a run slot was cleared from the queue",
        })
    }
}

impl std::error::Error for SlotError {}

/// A slot now, or why not; `count` says whether a refusal is counted as
/// `rejected`.
pub(crate) fn try_slot(d: &Arc<Dispatcher>, count: bool) -> Result<PoolSlot, SlotError> {
    let admit = match d.admit.try_acquire_owned() {
        Ok(p) => p,
        Err(AcquireError::Closed) => return Err(SlotError::Closed),
        Err(_) => {
            if count {
                d.counters.rejected.fetch_add(1, Ordering::Relaxed);
            }
            return Err(SlotError::Full);
        }
    };
    match Dispatcher::try_claim(d, admit) {
        Ok(slot) => Ok(PoolSlot { slot: Some(slot) }),
        Err(Refused::Closed) => Err(SlotError::Closed),
        Err(Refused::Full) => {
            if count {
                d.counters.rejected.fetch_add(1, Ordering::Relaxed);
            }
            Err(SlotError::Full)
        }
    }
}

/// Waits for queue room, then for a slot, until `deadline` if there is one.
pub(crate) async fn slot(
    d: &Arc<Dispatcher>,
    deadline: Option<Instant>,
) -> Result<PoolSlot, SlotError> {
    match deadline {
        None => wait_slot(d).await,
        // A slot freed at the deadline instant itself counts.
        Some(at) => crate::clock::timeout_at_inclusive(at, wait_slot(d))
            .await
            .unwrap_or(Err(SlotError::TimedOut)),
    }
}

async fn wait_slot(d: &Arc<Dispatcher>) -> Result<PoolSlot, SlotError> {
    // Fast path: a free slot and nobody queued.
    if let Ok(admit) = d.admit.try_acquire_owned() {
        return match Dispatcher::try_claim(d, admit) {
            Ok(slot) => Ok(PoolSlot { slot: Some(slot) }),
            Err(Refused::Closed) => Err(SlotError::Closed),
            // Room in the queue but no free slot: queue up below.
            Err(Refused::Full) => queued_slot(d).await,
        };
    }
    queued_slot(d).await
}

/// Admission (FIFO among waiters), then a place in the queue.
async fn queued_slot(d: &Arc<Dispatcher>) -> Result<PoolSlot, SlotError> {
    let admit = d
        .admit
        .acquire_owned()
        .await
        .map_err(|_| SlotError::Closed)?;
    let cell = Arc::new(Mutex::new(Cell::default()));
    let job = StdArc::new(SlotJob { cell: cell.clone() });
    let id = Dispatcher::dispatch(d, job, admit, None, DEFAULT_PRIORITY)
        .map_err(|_| SlotError::Closed)?;
    let mut waiting = Waiting {
        d,
        id,
        cell: &cell,
        done: false,
    };
    let got = poll_fn(|cx| {
        let mut c = cell.lock();
        if let Some(slot) = c.slot.take() {
            return Poll::Ready(Ok(PoolSlot { slot: Some(slot) }));
        }
        if let Some(why) = c.failed.take() {
            return Poll::Ready(Err(match why {
                TaskError::Cleared => SlotError::Cleared,
                _ => SlotError::Closed,
            }));
        }
        let stale = match &c.waker {
            Some(w) if w.will_wake(cx.waker()) => None,
            _ => c.waker.replace(cx.waker().clone()),
        };
        drop(c);
        // A replaced waker is dropped unlocked: its drop may cancel this
        // wait (a `clear_queue`), which takes this lock.
        drop(stale);
        Poll::Pending
    })
    .await;
    waiting.done = true;
    got
}

/// Where a queued slot request learns its outcome.
#[derive(Default)]
struct Cell {
    slot: Option<RunSlot>,
    failed: Option<TaskError>,
    waker: Option<Waker>,
    /// The waiter is gone: a slot handed over now is freed at once.
    abandoned: bool,
}

struct SlotJob {
    cell: Arc<Mutex<Cell>>,
}

impl Job for SlotJob {
    fn start(self: StdArc<Self>, slot: RunSlot) {
        let (waker, unused) = {
            let mut c = self.cell.lock();
            if c.abandoned {
                (None, Some(slot))
            } else {
                c.slot = Some(slot);
                (c.waker.take(), None)
            }
        };
        // Freed outside the lock: the hand-off may start the next job.
        drop(unused);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn cancel(self: StdArc<Self>, why: TaskError) {
        let waker = {
            let mut c = self.cell.lock();
            c.failed = Some(why);
            c.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Cancel safety of a queued wait: dropped before its slot arrived, it
/// leaves the queue, or frees the slot that was just handed to it.
struct Waiting<'a> {
    d: &'a Arc<Dispatcher>,
    id: TaskId,
    cell: &'a Arc<Mutex<Cell>>,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.d.abort_queued(self.id) {
            return;
        }
        // Started (or cancelled) meanwhile: give back what arrived.
        let unused = {
            let mut c = self.cell.lock();
            c.abandoned = true;
            c.slot.take()
        };
        drop(unused);
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    //! A slot handed over by a finishing task at the moment its waiter gives
    //! up is never lost: the real dispatcher, job and drop guard race on
    //! loom threads.
    use super::*;
    use loom::thread;

    #[test]
    fn loom_a_slot_handed_to_an_abandoned_wait_is_freed() {
        loom::model(|| {
            let d = Dispatcher::new(1, 1, "p".into(), (false, 1), false);
            let admit = d.admit.try_acquire_owned().unwrap();
            let held = Dispatcher::try_claim(&d, admit).ok().unwrap();
            let admit = d.admit.try_acquire_owned().unwrap();
            let cell = Arc::new(Mutex::new(Cell::default()));
            let job = StdArc::new(SlotJob { cell: cell.clone() });
            let id = Dispatcher::dispatch(&d, job, admit, None, 0).ok().unwrap();
            let finisher = thread::spawn(move || drop(held));
            drop(Waiting {
                d: &d,
                id,
                cell: &cell,
                done: false,
            });
            finisher.join().unwrap();
            let load = d.load();
            assert_eq!((load.running, load.queued), (0, 0), "a slot leaked");
            assert!(cell.lock().slot.is_none());
            assert!(d.admit.try_acquire_many(2).is_ok(), "queue room leaked");
        });
    }
}
