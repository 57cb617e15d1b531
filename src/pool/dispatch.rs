//! The state every pool shares: admission, the queue of submissions waiting
//! for a slot, the hand-off from a finishing task to the next one, and the
//! counters behind `metrics()`.
//!
//! A submission first takes an *admission* permit from the crate
//! [`Semaphore`] (capacity `max_concurrency + queue_capacity`): that is the
//! backpressure, FIFO among waiting submitters, and `close()` fails them at
//! once. Admitted work either starts at once (a run slot is free) or waits
//! in the queue, using no runtime resources. When a task ends its
//! [`RunSlot`] is dropped, and under the same lock the next queued job is
//! started on that slot: no dispatcher task, no lost hand-off.
//!
//! The queue starts its highest-priority job first, first-in first-out
//! within a priority, with optional aging (the rule is in `queue.rs`).
//! Priority orders the queue only: admission (waiting for queue room) stays
//! first come, first served whatever the priority.
//!
//! Invariants (checked by the loom models below):
//! * `running <= max_concurrency`, except transiently after a shrink, and
//!   no new job starts until `running < max_concurrency`;
//! * the queue is non-empty only while `running >= max_concurrency`, so at
//!   most `queue_capacity` jobs queue.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::TaskError;
use super::queue::PriorityQueue;
use tokio::time::Instant;

use crate::clock::{FastClock, Stamp};
use crate::histogram::{Recorder, Timed};
use crate::semaphore::{OwnedPermit, Semaphore};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Mutex, StdArc, WaitList, Waiter, Wakers};

/// Identifies a submission for `abort`.
pub(crate) type TaskId = u64;

/// Work that can be started on a run slot. Shared (`StdArc`), so that a
/// submission's one allocation can be its handle's completion slot, its
/// queue entry and its abort control at once (see `TaskCell`).
pub(crate) trait Job: Send + Sync + 'static {
    /// Starts the work; the slot must be dropped when it ends.
    fn start(self: StdArc<Self>, slot: RunSlot);
    /// The work will never start (aborted while queued, cleared, or dropped
    /// at a shutdown deadline): resolve its handle with `why`.
    fn cancel(self: StdArc<Self>, why: TaskError);
}

/// A job as the queue holds it.
pub(crate) type JobRef = StdArc<dyn Job>;

/// The part of a running task the pool can reach to abort it.
pub(crate) trait Control: Send + Sync {
    /// Stops the running task; its handle resolves with `why`.
    fn abort_running(&self, why: TaskError);
}

/// A running task's [`Control`]: the task's own completion slot, shared
/// (one reference count, no allocation of its own).
pub(crate) type ControlRef = StdArc<dyn Control>;

struct Queued {
    id: TaskId,
    job: JobRef,
    admit: OwnedPermit,
    control: Option<ControlRef>,
    /// When it was queued, if its queue wait is timed (sampled, see
    /// `Dispatcher::queue_wait`).
    since: Option<(Stamp, Timed)>,
}

impl Queued {
    /// Registers the job as running (its `running` count is already
    /// taken); returns what starts it once the lock is let go. `run` is
    /// its run-time sampling decision, drawn and stamped (`now`) by the
    /// caller before it took the lock.
    fn register(self, st: &mut State, run: Option<Timed>, now: Option<Stamp>) -> Starting {
        let started = now.zip(run);
        let key = SlotKey::new(
            st.register(Live {
                control: self.control,
                _admit: self.admit,
                started,
            }),
            started.is_some(),
        );
        Starting {
            job: self.job,
            since: self.since,
            now,
            key,
        }
    }
}

/// A queued job taken off the queue and registered, to start outside the lock.
struct Starting {
    job: JobRef,
    /// When it was queued, if its wait is timed.
    since: Option<(Stamp, Timed)>,
    /// The caller's clock read, if it made one: the end of the wait.
    now: Option<Stamp>,
    key: SlotKey,
}

impl Starting {
    fn start(self, this: &Arc<Dispatcher>) {
        if let Some((since, timed)) = self.since {
            let now = self.now.unwrap_or_else(|| this.clock.stamp());
            let (waited, now) = this.clock.between_and_now_nanos(since, now, this.origin);
            this.queue_wait.record_sampled(timed, waited, now);
        }
        self.job.start(RunSlot::new(this, self.key));
    }
}

/// A running task's index in `State::live`, with one more bit (the top
/// one, which no index reaches: a `Vec` of entries of more than one byte
/// holds fewer than `usize::MAX / 2`) saying whether its run time is
/// timed, so `finish` knows before it takes the lock whether to read the
/// clock, and a `RunSlot` stays two words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotKey(usize);

impl SlotKey {
    const TIMED: usize = 1 << (usize::BITS - 1);

    fn new(index: usize, timed: bool) -> Self {
        debug_assert!(index < Self::TIMED);
        Self(if timed { index | Self::TIMED } else { index })
    }

    fn index(self) -> usize {
        self.0 & !Self::TIMED
    }

    fn timed(self) -> bool {
        self.0 & Self::TIMED != 0
    }
}

/// What the pool keeps of a running task (the task itself only carries its
/// key, so its `RunSlot` stays two words): how a shutdown aborts it, its
/// queue room (given back after the hand-off), and when it started (for
/// the run-time histogram).
struct Live {
    control: Option<ControlRef>,
    /// Held for its drop: the task's queue room.
    _admit: OwnedPermit,
    /// When it started, if its run time is timed (sampled).
    started: Option<(Stamp, Timed)>,
}

struct State {
    queue: PriorityQueue<Queued>,
    running: usize,
    max_concurrency: usize,
    closed: bool,
    next_id: TaskId,
    /// Every running task's entry (its control is `None` when it cannot
    /// be aborted), by the key its `RunSlot` carries.
    live: Vec<Option<Live>>,
    free_live: Vec<usize>,
    /// `Idle` futures, signalled when the pool goes idle.
    idle_waiters: WaitList,
}

impl State {
    fn register(&mut self, live: Live) -> usize {
        match self.free_live.pop() {
            Some(i) => {
                self.live[i] = Some(live);
                i
            }
            None => {
                self.live.push(Some(live));
                self.live.len() - 1
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.running == 0 && self.queue.is_empty()
    }
}

/// Monotonic counters; see `PoolMetrics` for their meaning.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) completed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) rejected: AtomicU64,
}

impl Counters {
    pub(crate) fn record<T>(&self, outcome: &Result<T, super::TaskError>) {
        use super::TaskError::*;
        let c = match outcome {
            Ok(_) => &self.completed,
            Err(Panicked { .. }) => &self.panicked,
            Err(TimedOut) => &self.timed_out,
            Err(Cancelled | Cleared | Shutdown) => &self.cancelled,
            Err(Closed) => &self.rejected,
            // Not an outcome of the task; never recorded.
            Err(PolledAfterCompletion) => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) struct Dispatcher {
    pub(crate) admit: Semaphore,
    state: Mutex<State>,
    pub(crate) counters: Counters,
    pub(crate) queue_capacity: usize,
    pub(crate) name: String,
    /// Time queued work waited for a run slot (work started at once:
    /// none). Sampled (see `crate::histogram`, "Sampled timing"): the
    /// decision is drawn when the job queues.
    pub(crate) queue_wait: Recorder,
    /// Time from a task's start to its end; sampled, drawn at its start.
    pub(crate) run_time: Recorder,
    /// The histograms' clock: the CPU's counter in a multi-thread
    /// runtime, else Tokio's (see `FastClock::for_histograms`).
    clock: FastClock,
    /// `clock`'s epoch, the sampling windows' time origin.
    origin: Instant,
    /// Whether each task runs in a `pool_task` span.
    pub(crate) trace_tasks: bool,
}

/// A running task's claim on one unit of concurrency; dropping it frees the
/// slot or hands it to the next queued job. Two words: the rest of what the
/// pool keeps of a running task is in its `Live` entry, so the task Tokio
/// allocates and moves stays small.
pub(crate) struct RunSlot {
    pool: Arc<Dispatcher>,
    key: SlotKey,
}

/// Why [`Dispatcher::try_claim`] gave no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Full,
    Closed,
}

/// What [`Dispatcher::abort_all`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Aborted {
    /// Queued jobs dropped unrun.
    pub(crate) cancelled_queued: usize,
    /// Running tasks told to stop.
    pub(crate) aborted_running: usize,
    /// Running tasks that cannot be interrupted (blocking and CPU calls).
    pub(crate) still_running: usize,
}

/// Running and queued counts read together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) running: usize,
    pub(crate) queued: usize,
    pub(crate) max_concurrency: usize,
}

impl Dispatcher {
    pub(crate) fn new(
        max_concurrency: usize,
        queue_capacity: usize,
        name: String,
        (histograms, max_one_in): (bool, u32),
        trace_tasks: bool,
    ) -> Arc<Self> {
        let clock = FastClock::for_histograms(histograms);
        let origin = crate::clock::Clock::epoch(&clock);
        Arc::new(Self {
            admit: Semaphore::with_sampled_histograms(
                max_concurrency + queue_capacity,
                histograms,
                max_one_in,
            ),
            state: Mutex::new(State {
                queue: PriorityQueue::new(),
                running: 0,
                max_concurrency,
                closed: false,
                next_id: 0,
                live: Vec::new(),
                free_live: Vec::new(),
                idle_waiters: WaitList::new(),
            }),
            counters: Counters::default(),
            queue_capacity,
            name,
            queue_wait: Recorder::with_sampling(histograms, max_one_in),
            run_time: Recorder::with_sampling(histograms, max_one_in),
            clock,
            origin,
            trace_tasks,
        })
    }

    /// Queued tasks gain one priority level per `every` starts while they
    /// wait (`None`: strict priorities). Set once, before any submission.
    pub(crate) fn set_priority_aging(&self, every: Option<usize>) {
        let every = every.map(|n| u64::try_from(n).unwrap_or(u64::MAX));
        self.state.lock().queue.set_aging(every);
    }

    /// Starts `job` now if a slot is free and nobody queues ahead, or queues
    /// it at `priority`. Fails (handing the job back) once the pool is closed.
    pub(crate) fn dispatch(
        this: &Arc<Self>,
        job: JobRef,
        admit: OwnedPermit,
        control: Option<ControlRef>,
        priority: i32,
    ) -> Result<TaskId, JobRef> {
        // Whether it starts or queues is known only under the lock. The
        // run time (most jobs start at once) is drawn and stamped before
        // it; the queue wait is drawn only for a job that queues (a pool
        // whose jobs never queue would otherwise never leave the
        // every-event rate of its idle queue-wait sampler, and read the
        // clock on every submission), and reads the clock under the lock
        // only if drawn with no stamp at hand: rare when queueing is
        // frequent, cheap when it is not.
        let run = this.run_time.sample();
        let now = run.map(|_| this.clock.stamp());
        let mut st = this.state.lock();
        if st.closed {
            return Err(job);
        }
        let id = st.next_id;
        st.next_id += 1;
        if st.running < st.max_concurrency && st.queue.is_empty() {
            st.running += 1;
            let started = run.and_then(|t| Some((now?, t)));
            let key = SlotKey::new(
                st.register(Live {
                    control,
                    _admit: admit,
                    started,
                }),
                started.is_some(),
            );
            drop(st);
            job.start(RunSlot::new(this, key));
        } else {
            st.queue.push(
                priority,
                Queued {
                    id,
                    job,
                    admit,
                    control,
                    since: this
                        .queue_wait
                        .sample()
                        .map(|t| (now.unwrap_or_else(|| this.clock.stamp()), t)),
                },
            );
        }
        Ok(id)
    }

    /// A run slot now, without queueing (work run in the caller's task):
    /// `Err(Full)` when every slot is busy or work is queued ahead,
    /// `Err(Closed)` once the pool is closed. The admission permit travels
    /// with the slot, or is dropped on refusal.
    pub(crate) fn try_claim(this: &Arc<Self>, admit: OwnedPermit) -> Result<RunSlot, Refused> {
        let started = this.run_time.sample().map(|t| (this.clock.stamp(), t));
        let mut st = this.state.lock();
        if st.closed {
            return Err(Refused::Closed);
        }
        if st.running < st.max_concurrency && st.queue.is_empty() {
            st.running += 1;
            let key = SlotKey::new(
                st.register(Live {
                    control: None,
                    _admit: admit,
                    started,
                }),
                started.is_some(),
            );
            drop(st);
            Ok(RunSlot::new(this, key))
        } else {
            Err(Refused::Full)
        }
    }

    /// Removes a still-queued job and cancels it. False if it already started.
    pub(crate) fn abort_queued(&self, id: TaskId) -> bool {
        let found = {
            let mut st = self.state.lock();
            st.queue.remove_first(|q| q.id == id)
        };
        match found {
            Some(q) => {
                self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                q.job.cancel(TaskError::Cancelled);
                drop(q.admit);
                true
            }
            None => false,
        }
    }

    fn finish(this: &Arc<Self>, key: SlotKey) {
        // At most one read, outside the lock, when something is timed:
        // this task's end, the start of the job it may hand its slot to
        // (drawn now, used only if there is one), and the end of that
        // job's wait (read after the lock if only the wait is timed).
        let next_run = this.run_time.sample();
        let now = (key.timed() || next_run.is_some()).then(|| this.clock.stamp());
        let mut st = this.state.lock();
        let ended = st.live[key.index()].take();
        st.free_live.push(key.index());
        // This task ends: running - 1 < max  <=>  running <= max.
        let next = if st.running <= st.max_concurrency {
            st.queue.pop()
        } else {
            None
        };
        match next {
            Some(q) => {
                let next = q.register(&mut st, next_run, now);
                drop(st);
                next.start(this);
            }
            None => {
                st.running -= 1;
                let idle = if st.is_idle() {
                    st.idle_waiters.signal()
                } else {
                    Wakers::default()
                };
                drop(st);
                idle.wake();
            }
        }
        // Hand-off first, then the queue room goes back.
        if let Some(ended) = ended {
            if let Some(((started, timed), now)) = ended.started.zip(now) {
                let (ran, now) = this.clock.between_and_now_nanos(started, now, this.origin);
                this.run_time.record_sampled(timed, ran, now);
            }
            drop(ended);
        }
    }

    /// Sets the concurrency limit; starts queued work if it grew.
    pub(crate) fn set_max_concurrency(this: &Arc<Self>, n: usize) {
        let mut start = Vec::new();
        {
            // Rare: one read whenever the histograms are on.
            let now = this.run_time.enabled().then(|| this.clock.stamp());
            let mut st = this.state.lock();
            st.max_concurrency = n;
            // Cannot fail: the caller validated n + queue_capacity.
            let _ = this.admit.set_capacity(n + this.queue_capacity);
            while st.running < st.max_concurrency {
                let Some(q) = st.queue.pop() else { break };
                st.running += 1;
                let run = this.run_time.sample();
                start.push(q.register(&mut st, run, now));
            }
        }
        for next in start {
            next.start(this);
        }
        tracing::debug!(pool = %this.name, max_concurrency = n, "pool resized");
    }

    /// Stops intake: waiting and later submissions fail; queued and running
    /// work carries on. Returns true the first time.
    pub(crate) fn close(&self) -> bool {
        let first = {
            let mut st = self.state.lock();
            !std::mem::replace(&mut st.closed, true)
        };
        self.admit.close();
        first
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    pub(crate) fn load(&self) -> Load {
        let st = self.state.lock();
        Load {
            running: st.running,
            queued: st.queue.len(),
            max_concurrency: st.max_concurrency,
        }
    }

    /// Whether nothing runs and nothing is queued right now.
    pub(crate) fn is_idle(&self) -> bool {
        self.state.lock().is_idle()
    }

    /// Resolves once nothing runs and nothing is queued, now or at some
    /// moment after its first poll (the pool is closed when it is used, so
    /// idle then means drained).
    pub(crate) fn idle(&self) -> Idle<'_> {
        Idle {
            pool: self,
            waiter: None,
        }
    }

    /// Drops every queued job unrun (their handles resolve to `Cleared`)
    /// and returns how many; running work carries on.
    pub(crate) fn clear_queue(&self) -> usize {
        let queued = self.state.lock().queue.drain();
        let dropped = queued.len();
        self.counters
            .cancelled
            .fetch_add(dropped as u64, Ordering::Relaxed);
        for q in queued {
            q.job.cancel(TaskError::Cleared);
            // The queue room goes back only after the handle resolved.
            drop(q.admit);
        }
        dropped
    }

    /// At a shutdown deadline: cancels every queued job and aborts every
    /// running task that can be aborted.
    pub(crate) fn abort_all(&self) -> Aborted {
        let (queued, aborted_running, still_running) = {
            let mut st = self.state.lock();
            let queued = st.queue.drain();
            let (mut aborted, mut still) = (0, 0);
            for live in st.live.iter().flatten() {
                match &live.control {
                    Some(c) => {
                        c.abort_running(TaskError::Shutdown);
                        aborted += 1;
                    }
                    None => still += 1,
                }
            }
            (queued, aborted, still)
        };
        let cancelled_queued = queued.len();
        self.counters
            .cancelled
            .fetch_add(cancelled_queued as u64, Ordering::Relaxed);
        for q in queued {
            q.job.cancel(TaskError::Shutdown);
        }
        Aborted {
            cancelled_queued,
            aborted_running,
            still_running,
        }
    }
}

impl RunSlot {
    fn new(pool: &Arc<Dispatcher>, key: SlotKey) -> Self {
        Self {
            pool: pool.clone(),
            key,
        }
    }

    /// The task's `pool_task` span (debug level), if the pool traces tasks.
    pub(crate) fn span(&self) -> Option<tracing::Span> {
        self.pool
            .trace_tasks
            .then(|| tracing::debug_span!("pool_task", pool = %self.pool.name))
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.pool.counters
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        Dispatcher::finish(&self.pool, self.key);
    }
}

/// Future of [`Dispatcher::idle`]: ready once the pool is idle, or went
/// idle at some moment since it was first polled. One entry in the pool's
/// list while pending, however many tasks poll it; none once dropped.
pub(crate) struct Idle<'a> {
    pool: &'a Dispatcher,
    waiter: Option<Waiter>,
}

impl Future for Idle<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut st = this.pool.state.lock();
        let (ready, stale) = if st.is_idle() {
            let left = this
                .waiter
                .take()
                .and_then(|mut w| st.idle_waiters.remove(&mut w));
            (Poll::Ready(()), left)
        } else {
            let waiter = this.waiter.get_or_insert_with(|| st.idle_waiters.waiter());
            st.idle_waiters.poll(waiter, cx.waker())
        };
        drop(st);
        // A replaced waker is dropped unlocked (its drop may run a job's
        // code that submits to this pool).
        drop(stale);
        ready
    }
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        if let Some(mut waiter) = self.waiter.take() {
            let left = self.pool.state.lock().idle_waiters.remove(&mut waiter);
            drop(left);
        }
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    //! (d) the pool never runs more than N at once, with the real dispatcher,
    //! admission semaphore and hand-off; jobs run on loom threads.
    use super::*;
    use crate::sync::atomic::AtomicUsize;
    use loom::thread;

    struct Probe {
        inside: Arc<AtomicUsize>,
        ran: Arc<AtomicUsize>,
        limit: usize,
    }

    struct NoControl;
    impl Control for NoControl {
        fn abort_running(&self, _: TaskError) {}
    }

    impl Job for Probe {
        fn start(self: StdArc<Self>, slot: RunSlot) {
            thread::spawn(move || {
                let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(
                    now <= self.limit,
                    "{now} running with a limit of {}",
                    self.limit
                );
                self.inside.fetch_sub(1, Ordering::SeqCst);
                self.ran.fetch_add(1, Ordering::SeqCst);
                drop(slot);
            });
        }
        fn cancel(self: StdArc<Self>, _: TaskError) {}
    }

    fn submit(pool: &Arc<Dispatcher>, inside: &Arc<AtomicUsize>, ran: &Arc<AtomicUsize>) {
        let admit = crate::sync::block_on(pool.admit.acquire_owned()).unwrap();
        let job = StdArc::new(Probe {
            inside: inside.clone(),
            ran: ran.clone(),
            limit: 1,
        });
        assert!(Dispatcher::dispatch(pool, job, admit, Some(StdArc::new(NoControl)), 0).is_ok());
    }

    #[test]
    fn loom_pool_never_runs_more_than_max_concurrency() {
        loom::model(|| {
            let pool = Dispatcher::new(1, 1, "loom".into(), (true, 64), false);
            let inside = Arc::new(AtomicUsize::new(0));
            let ran = Arc::new(AtomicUsize::new(0));
            let (p2, i2, r2) = (pool.clone(), inside.clone(), ran.clone());
            let t = thread::spawn(move || submit(&p2, &i2, &r2));
            submit(&pool, &inside, &ran);
            t.join().unwrap();
            crate::sync::block_on(pool.idle());
            assert_eq!(ran.load(Ordering::SeqCst), 2, "a queued job was stranded");
            // Every admission permit comes home (this would hang if one leaked).
            let all = crate::sync::block_on(pool.admit.acquire_many_owned(2)).unwrap();
            assert_eq!(all.num_permits(), 2);
        });
    }

    /// Holds its run slot until the model lets it go.
    struct Hold(Arc<Mutex<Option<RunSlot>>>);

    impl Job for Hold {
        fn start(self: StdArc<Self>, slot: RunSlot) {
            *self.0.lock() = Some(slot);
        }
        fn cancel(self: StdArc<Self>, _: TaskError) {}
    }

    /// A pool of one slot with a queue of `queue`, its slot taken by a job
    /// that runs until the returned run slot is taken and dropped.
    fn busy_pool(queue: usize) -> (Arc<Dispatcher>, Arc<Mutex<Option<RunSlot>>>) {
        let pool = Dispatcher::new(1, queue, "loom".into(), (true, 64), false);
        let held = Arc::new(Mutex::new(None));
        let admit = crate::sync::block_on(pool.admit.acquire_owned()).unwrap();
        let hold = StdArc::new(Hold(held.clone()));
        assert!(Dispatcher::dispatch(&pool, hold, admit, None, 0).is_ok());
        (pool, held)
    }

    /// An idle wait given up while the last job ends on another thread,
    /// beside one that stays: whatever the interleaving, the one that stays
    /// resolves, and the pool's list keeps no entry of either.
    #[test]
    fn loom_an_abandoned_idle_wait_leaves_no_entry_and_misses_no_wake() {
        loom::model(|| {
            let (pool, held) = busy_pool(1);
            let ender = thread::spawn(move || drop(held.lock().take()));
            let p2 = pool.clone();
            let quitter = thread::spawn(move || {
                let mut idle = Box::pin(p2.idle());
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let _ = idle.as_mut().poll(&mut cx);
            });
            crate::sync::block_on(pool.idle());
            ender.join().unwrap();
            quitter.join().unwrap();
            assert!(pool.state.lock().idle_waiters.is_empty());
        });
    }

    /// Records its priority when it starts and ends at once.
    struct Mark {
        priority: i32,
        order: Arc<Mutex<Vec<i32>>>,
    }

    impl Job for Mark {
        fn start(self: StdArc<Self>, slot: RunSlot) {
            self.order.lock().push(self.priority);
            drop(slot);
        }
        fn cancel(self: StdArc<Self>, _: TaskError) {
            self.order.lock().push(i32::MIN);
        }
    }

    fn mark(pool: &Arc<Dispatcher>, order: &Arc<Mutex<Vec<i32>>>, priority: i32) {
        let admit = crate::sync::block_on(pool.admit.acquire_owned()).unwrap();
        let job = StdArc::new(Mark {
            priority,
            order: order.clone(),
        });
        assert!(Dispatcher::dispatch(pool, job, admit, None, priority).is_ok());
    }

    /// Two submitters race to queue behind a busy slot: whatever the
    /// interleaving, the higher priority starts first once the slot frees.
    #[test]
    fn loom_queued_work_starts_by_priority_whoever_queued_first() {
        loom::model(|| {
            let (pool, held) = busy_pool(2);
            let order = Arc::new(Mutex::new(Vec::new()));
            let (p2, o2) = (pool.clone(), order.clone());
            let t = thread::spawn(move || mark(&p2, &o2, 1));
            mark(&pool, &order, 0);
            t.join().unwrap();
            assert!(
                order.lock().is_empty(),
                "nothing starts while the slot is held"
            );
            drop(held.lock().take());
            assert_eq!(*order.lock(), [1, 0]);
            assert!(pool.is_idle());
        });
    }

    /// A slot freed while another thread queues: the queued job is either
    /// started by the hand-off or starts at once, never stranded, and a
    /// concurrent `clear_queue` resolves it exactly once otherwise.
    #[test]
    fn loom_clear_queue_races_the_hand_off() {
        loom::model(|| {
            let (pool, held) = busy_pool(1);
            let order = Arc::new(Mutex::new(Vec::new()));
            mark(&pool, &order, 7);
            let p2 = pool.clone();
            let t = thread::spawn(move || p2.clear_queue());
            drop(held.lock().take());
            let cleared = t.join().unwrap();
            let seen = order.lock().clone();
            match cleared {
                1 => assert_eq!(seen, [i32::MIN]),
                0 => assert_eq!(seen, [7]),
                n => panic!("cleared {n} of one job"),
            }
            assert!(pool.is_idle());
            let all = crate::sync::block_on(pool.admit.acquire_many_owned(2)).unwrap();
            assert_eq!(all.num_permits(), 2);
        });
    }
}
