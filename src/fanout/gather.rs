//! Gathering: run N futures at once, collect what came back by a deadline.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

use super::core::{Finish, Tally};
use super::wake::{ChildWaker, ReadyQueue, Settle, TaskWaker};
use crate::histogram::Histogram;
use crate::sync::{Mutex, StdArc};
use crate::{ConfigError, ConfigErrorKind};

const COMPONENT: &str = "gather";

/// What became of one gathered future.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::{gather_with_timeout, Outcome};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let fast = Box::pin(async { "fast" }) as std::pin::Pin<Box<dyn Future<Output = _>>>;
/// let slow = Box::pin(async {
///     tokio::time::sleep(Duration::from_secs(5)).await;
///     "slow"
/// });
/// let gathered = gather_with_timeout([fast, slow], Duration::from_secs(1)).await;
/// assert!(matches!(gathered.outcomes()[0], Outcome::Completed("fast")));
/// assert!(matches!(gathered.outcomes()[1], Outcome::TimedOut));
/// # }
/// ```
#[non_exhaustive]
pub enum Outcome<T> {
    /// The future finished in time with this value.
    Completed(T),
    /// The deadline passed first; the future was cancelled (or never started,
    /// when `concurrency` kept it waiting).
    TimedOut,
    /// The gather finished early (quorum reached or impossible, or
    /// `fail_fast`), so this future was cancelled or never started.
    Cancelled,
    /// Spawned mode only: the task panicked; this is the panic payload
    /// (hand it to `std::panic::resume_unwind` to re-raise it).
    Panicked(Box<dyn Any + Send + 'static>),
    /// Spawned mode with [`Gather::detach_stragglers`] only: the task was
    /// still running when the gather finished and was left running; its
    /// [`Straggler`] handle is in [`Gathered::take_stragglers`].
    Detached,
}

/// Outcomes compare as their values do; two `Panicked` are equal when both
/// payloads are the same string (`panic!("boom")` and
/// `panic!("{}", "boom")` alike), or else are the very same payload.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::{gather_with_timeout, Outcome};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let gathered = gather_with_timeout((1..=2).map(|i| async move { i }), Duration::from_secs(1)).await;
/// assert_eq!(gathered.into_outcomes(), [Outcome::Completed(1), Outcome::Completed(2)]);
/// assert_eq!(Outcome::<u8>::Panicked(Box::new("boom")), Outcome::Panicked(Box::new(String::from("boom"))));
/// # }
/// ```
impl<T: PartialEq> PartialEq for Outcome<T> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Outcome::Completed(a), Outcome::Completed(b)) => a == b,
            (Outcome::TimedOut, Outcome::TimedOut)
            | (Outcome::Cancelled, Outcome::Cancelled)
            | (Outcome::Detached, Outcome::Detached) => true,
            (Outcome::Panicked(a), Outcome::Panicked(b)) => {
                PanicKey::of(&**a) == PanicKey::of(&**b)
            }
            _ => false,
        }
    }
}

impl<T: Eq> Eq for Outcome<T> {}

/// What identifies a panic payload for `Outcome`'s equality: its message
/// if it is a string, else its type and address (an equivalence either way).
#[derive(PartialEq)]
enum PanicKey<'a> {
    Message(&'a str),
    Payload(std::any::TypeId, *const ()),
}

impl<'a> PanicKey<'a> {
    fn of(payload: &'a (dyn Any + Send)) -> Self {
        if let Some(s) = payload.downcast_ref::<&'static str>() {
            PanicKey::Message(s)
        } else if let Some(s) = payload.downcast_ref::<String>() {
            PanicKey::Message(s)
        } else {
            let address = payload as *const (dyn Any + Send) as *const ();
            PanicKey::Payload(payload.type_id(), address)
        }
    }
}

impl<T> Outcome<T> {
    /// The value, if the future completed.
    pub fn completed(self) -> Option<T> {
        match self {
            Outcome::Completed(v) => Some(v),
            _ => None,
        }
    }

    /// Whether the future completed.
    pub fn is_completed(&self) -> bool {
        matches!(self, Outcome::Completed(_))
    }

    /// Whether the deadline cut the future off.
    pub fn is_timed_out(&self) -> bool {
        matches!(self, Outcome::TimedOut)
    }
}

impl<T> fmt::Debug for Outcome<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Completed(_) => f.write_str("Completed(..)"),
            Outcome::TimedOut => f.write_str("TimedOut"),
            Outcome::Cancelled => f.write_str("Cancelled"),
            Outcome::Panicked(_) => f.write_str("Panicked(..)"),
            Outcome::Detached => f.write_str("Detached"),
        }
    }
}

/// The result of a gather: one [`Outcome`] per input future, in input order.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::gather_with_timeout;
/// use std::time::Duration;
/// use tokio::time::sleep;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let shards = (0..4u64).map(|i| async move {
///     sleep(Duration::from_millis(100 * (i + 1))).await;
///     i * 10
/// });
/// let gathered = gather_with_timeout(shards, Duration::from_millis(250)).await;
/// assert_eq!(gathered.completed().collect::<Vec<_>>(), [(0, &0), (1, &10)]);
/// assert_eq!(gathered.timed_out().collect::<Vec<_>>(), [2, 3]);
/// assert_eq!((gathered.completed_count(), gathered.timed_out_count()), (2, 2));
/// # }
/// ```
pub struct Gathered<T> {
    outcomes: Vec<Outcome<T>>,
    finish: Finish,
    stragglers: Vec<Straggler<T>>,
}

impl<T> fmt::Debug for Gathered<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gathered")
            .field("outcomes", &self.outcomes)
            .field("finish", &self.finish)
            .field("stragglers", &self.stragglers.len())
            .finish()
    }
}

impl<T> Gathered<T> {
    /// Why the gather stopped.
    pub fn finish(&self) -> Finish {
        self.finish
    }

    /// Number of input futures.
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    /// Whether there were no input futures.
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    /// Every outcome, in input order.
    pub fn outcomes(&self) -> &[Outcome<T>] {
        &self.outcomes
    }

    /// Every outcome, in input order, by value.
    pub fn into_outcomes(self) -> Vec<Outcome<T>> {
        self.outcomes
    }

    /// `(input index, value)` of each completed future, in input order.
    pub fn completed(&self) -> impl Iterator<Item = (usize, &T)> + '_ {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Outcome::Completed(v) => Some((i, v)),
                _ => None,
            })
    }

    /// `(input index, value)` of each completed future, by value.
    pub fn into_completed(self) -> Vec<(usize, T)> {
        self.outcomes
            .into_iter()
            .enumerate()
            .filter_map(|(i, o)| o.completed().map(|v| (i, v)))
            .collect()
    }

    /// Input indices of the futures the deadline cut off.
    pub fn timed_out(&self) -> impl Iterator<Item = usize> + '_ {
        self.indices(Outcome::is_timed_out)
    }

    /// Input indices of the futures cancelled because the gather finished early.
    pub fn cancelled(&self) -> impl Iterator<Item = usize> + '_ {
        self.indices(|o| matches!(o, Outcome::Cancelled))
    }

    /// Input indices of the spawned futures that panicked.
    pub fn panicked(&self) -> impl Iterator<Item = usize> + '_ {
        self.indices(|o| matches!(o, Outcome::Panicked(_)))
    }

    /// How many futures completed.
    pub fn completed_count(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_completed()).count()
    }

    /// How many futures the deadline cut off.
    pub fn timed_out_count(&self) -> usize {
        self.timed_out().count()
    }

    /// How many futures were cancelled because the gather finished early.
    pub fn cancelled_count(&self) -> usize {
        self.cancelled().count()
    }

    /// How many spawned futures panicked.
    pub fn panicked_count(&self) -> usize {
        self.panicked().count()
    }

    /// Input indices of the tasks left running ([`Outcome::Detached`]).
    pub fn detached(&self) -> impl Iterator<Item = usize> + '_ {
        self.indices(|o| matches!(o, Outcome::Detached))
    }

    /// Takes the handles of the tasks left running by
    /// [`Gather::detach_stragglers`], in input order (empty otherwise, and
    /// the second time). Dropping a handle leaves its task running.
    pub fn take_stragglers(&mut self) -> Vec<Straggler<T>> {
        std::mem::take(&mut self.stragglers)
    }

    fn indices(&self, keep: fn(&Outcome<T>) -> bool) -> impl Iterator<Item = usize> + '_ {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(move |(i, o)| keep(o).then_some(i))
    }
}

impl<T, E> Gathered<Result<T, E>> {
    /// `(input index, value)` of each future that completed with `Ok`.
    pub fn successes(&self) -> impl Iterator<Item = (usize, &T)> + '_ {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Outcome::Completed(Ok(v)) => Some((i, v)),
                _ => None,
            })
    }

    /// How many futures completed with `Ok`.
    pub fn success_count(&self) -> usize {
        self.successes().count()
    }
}

/// Plain numbers about a running gather.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::Gather;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let gather = Gather::new((1..=2).map(|i| async move { i })).build().unwrap();
/// let m = gather.metrics();
/// assert_eq!((m.total, m.started, m.in_flight), (2, 0, 0));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GatherMetrics {
    /// Number of input futures.
    pub total: usize,
    /// How many have been started (polled or spawned) so far.
    pub started: usize,
    /// How many are running now.
    pub in_flight: usize,
    /// How many finished as a success (every completion, without a quorum or `fail_fast`).
    pub succeeded: usize,
    /// How many finished as a failure (`Err` or a panic).
    pub failed: usize,
}

/// The mode where every future is polled inside the task that awaits the
/// gather (the default): no `'static` bound, no spawn cost, one core.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::{Gather, InTask};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let local = String::from("borrowed, not 'static");
/// let g: flowguard::fanout::GatherFuture<_, InTask> =
///     Gather::new([async { local.len() }]).build().unwrap();
/// assert_eq!(g.await.into_completed(), [(0, 21)]);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct InTask;

/// The mode where every future runs on its own Tokio task (`Gather::spawn`):
/// parallel on a multi-threaded runtime, panics captured as
/// [`Outcome::Panicked`], tasks aborted when the gather finishes or is dropped.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::{Gather, Outcome};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let ok = Box::pin(async { 1 }) as std::pin::Pin<Box<dyn Future<Output = i32> + Send>>;
/// let boom = Box::pin(async { panic!("boom") });
/// let gathered = Gather::new([ok, boom]).spawn().build().unwrap().await;
/// assert!(matches!(gathered.outcomes()[0], Outcome::Completed(1)));
/// assert!(matches!(gathered.outcomes()[1], Outcome::Panicked(_)));
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Spawned;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::InTask {}
    impl Sealed for super::Spawned {}
}

/// How a gather runs its futures: [`InTask`] or [`Spawned`]. Sealed.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::{Gather, GatherFuture, InTask, Spawned};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // The mode is a type parameter: in the awaiting task by default ...
/// let here: GatherFuture<_, InTask> = Gather::new([1, 2].map(|n| async move { n })).build().unwrap();
/// assert_eq!(here.await.into_completed(), [(0, 1), (1, 2)]);
/// // ... or one Tokio task per future.
/// let there: GatherFuture<_, Spawned> =
///     Gather::new([3, 4].map(|n| async move { n })).spawn().build().unwrap();
/// assert_eq!(there.await.into_completed().len(), 2);
/// # }
/// ```
pub trait GatherMode<F>: sealed::Sealed {
    /// The value each future yields.
    type Output;
    #[doc(hidden)]
    type Slot: Unpin;
    #[doc(hidden)]
    type Shared;
    /// Whether children are polled by the driver with their own wakers
    /// (in-task) or report themselves through the ready queue (spawned).
    #[doc(hidden)]
    const POLLED: bool;
    #[doc(hidden)]
    #[allow(private_interfaces)] // sealed: only this crate implements or calls it
    fn shared(total: usize, queue: &StdArc<ReadyQueue>, deadline: bool) -> Self::Shared;
    #[doc(hidden)]
    fn launch(future: F, index: usize, shared: &Self::Shared) -> Self::Slot;
    #[doc(hidden)]
    fn poll_slot(
        slot: &mut Self::Slot,
        index: usize,
        shared: &Self::Shared,
        cx: &mut Context<'_>,
    ) -> Poll<Outcome<Self::Output>>;
    #[doc(hidden)]
    fn cancel(slot: Self::Slot);
    /// Leaves the child running and hands back its handle (spawned mode;
    /// in-task children cannot outlive the gather: cancelled, `None`).
    #[doc(hidden)]
    fn detach(
        slot: Self::Slot,
        index: usize,
        shared: &Self::Shared,
    ) -> Option<Straggler<Self::Output>>;
    /// At the deadline, spawned mode: from now on child `index` tells the
    /// driver of each poll it finishes; returns the wake count to wait for
    /// if it was woken and not polled since (in-task children are polled by
    /// the driver as soon as they are woken: `None`).
    #[doc(hidden)]
    fn watch(shared: &Self::Shared, index: usize) -> Option<u64>;
    /// Whether child `index` finished a poll after its `wake`-th wake.
    #[doc(hidden)]
    fn polled_since(shared: &Self::Shared, index: usize, wake: u64) -> bool;
}

impl<F: Future> GatherMode<F> for InTask {
    type Output = F::Output;
    type Slot = Pin<Box<F>>;
    type Shared = ();
    const POLLED: bool = true;

    #[inline]
    #[allow(private_interfaces)]
    fn shared(_: usize, _: &StdArc<ReadyQueue>, _: bool) {}

    #[inline]
    fn launch(future: F, _: usize, _: &()) -> Self::Slot {
        Box::pin(future)
    }

    #[inline]
    fn poll_slot(
        slot: &mut Self::Slot,
        _: usize,
        _: &(),
        cx: &mut Context<'_>,
    ) -> Poll<Outcome<F::Output>> {
        slot.as_mut().poll(cx).map(Outcome::Completed)
    }

    #[inline]
    fn cancel(slot: Self::Slot) {
        drop(slot);
    }

    fn detach(slot: Self::Slot, _: usize, _: &()) -> Option<Straggler<F::Output>> {
        drop(slot);
        None
    }

    #[inline]
    fn watch(_: &(), _: usize) -> Option<u64> {
        None
    }

    #[inline]
    fn polled_since(_: &(), _: usize, _: u64) -> bool {
        true
    }
}

/// Where spawned tasks leave their outcome: one cell per input index,
/// written once by the task, taken once by the driver.
#[doc(hidden)]
#[derive(Debug)]
pub struct SpawnShared<T> {
    /// One cell per child, each with its own lock: two workers reporting
    /// at once do not wait for each other (one lock for all of them was
    /// contended on a 2-worker runtime).
    results: Box<[Mutex<Option<Outcome<T>>>]>,
    queue: StdArc<ReadyQueue>,
    /// Wake and poll counts for the deadline's wait (see [`Settle`]); only
    /// a gather with a deadline has them, so without one a child's future
    /// is polled with its task's own waker, nothing counted.
    settle: Option<StdArc<Settle>>,
}

/// A spawned task the gather left running
/// ([`Gather::detach_stragglers`], asyncio's `wait`): await it for its
/// [`Outcome`], or [`abort`](Self::abort) it.
///
/// It resolves to [`Outcome::Completed`] or [`Outcome::Panicked`] when the
/// task ends, or [`Outcome::Cancelled`] if it was aborted (or its runtime
/// shut down); polled again after that, to `Cancelled`. Dropping it leaves
/// the task running, as dropping a `JoinHandle` does.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::{Gather, Outcome};
/// use std::time::Duration;
/// use tokio::time::sleep;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let replicas = [10u64, 500].map(|ms| async move {
///     sleep(Duration::from_millis(ms)).await;
///     ms
/// });
/// let mut gathered = Gather::new(replicas)
///     .spawn()
///     .timeout(Duration::from_millis(100))
///     .detach_stragglers()
///     .build()
///     .unwrap()
///     .await;
/// assert_eq!(gathered.outcomes(), [Outcome::Completed(10), Outcome::Detached]);
/// let slow = gathered.take_stragglers().pop().unwrap();
/// assert_eq!(slow.index(), 1);
/// assert_eq!(slow.await, Outcome::Completed(500)); // it ran on
/// # }
/// ```
pub struct Straggler<T> {
    index: usize,
    task: JoinHandle<()>,
    shared: StdArc<SpawnShared<T>>,
    resolved: bool,
}

impl<T> Straggler<T> {
    /// The input index of the future this task runs.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Aborts the task: it stops at its next `.await`, and this handle then
    /// resolves to [`Outcome::Cancelled`] (unless it finished first).
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Whether the task has ended (awaiting this handle would not wait).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl<T> fmt::Debug for Straggler<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Straggler")
            .field("index", &self.index)
            .field("finished", &self.task.is_finished())
            .finish()
    }
}

impl<T> Future for Straggler<T> {
    type Output = Outcome<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        let this = self.get_mut();
        if this.resolved {
            return Poll::Ready(Outcome::Cancelled);
        }
        // The task reports its outcome before it ends (or, aborted, while
        // it is dropped), so once it has ended the outcome is there.
        match Pin::new(&mut this.task).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                this.resolved = true;
                let outcome = this.shared.results[this.index].lock().take();
                Poll::Ready(outcome.unwrap_or(Outcome::Cancelled))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// Runs inside the spawned task: catches a panic of the user's future
    /// and, on completion, panic or abort (drop), reports exactly once.
    ///
    /// The future lives inline, not in a box of its own: one allocation a
    /// child (the Tokio task), made and, once the driver dropped its
    /// handle, freed by the thread that spawned it (a box freed by the
    /// worker that ran the task took the spawning thread's allocator arena
    /// lock, a contended wait on a 2-worker runtime).
    struct Reporter<F: Future> {
        #[pin]
        future: F,
        index: usize,
        shared: StdArc<SpawnShared<F::Output>>,
        reported: bool,
        // With a deadline: the future's waker, the task's with each wake
        // counted in `Settle`.
        waker: Option<(StdArc<TaskWaker>, Waker)>,
    }

    impl<F: Future> PinnedDrop for Reporter<F> {
        fn drop(this: Pin<&mut Self>) {
            // Aborted (by the gather, ignored then) or dropped by a runtime
            // shutting down: say so, so the gather never waits for it.
            let this = this.project();
            report(this.reported, *this.index, this.shared, Outcome::Cancelled);
        }
    }
}

/// A child's outcome into its cell and its index onto the ready queue, the
/// first time only.
#[inline]
fn report<T>(reported: &mut bool, index: usize, shared: &SpawnShared<T>, outcome: Outcome<T>) {
    if !*reported {
        *reported = true;
        *shared.results[index].lock() = Some(outcome);
        shared.queue.push(index);
    }
}

/// Polls a spawned child once, its panic caught: `None` while it is pending.
#[inline]
fn poll_caught<F: Future>(future: Pin<&mut F>, cx: &mut Context<'_>) -> Option<Outcome<F::Output>> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.poll(cx))) {
        Ok(Poll::Pending) => None,
        Ok(Poll::Ready(v)) => Some(Outcome::Completed(v)),
        Err(payload) => Some(Outcome::Panicked(payload)),
    }
}

impl<F: Future> Future for Reporter<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let index = *this.index;
        let shared: &SpawnShared<F::Output> = this.shared;
        let future = this.future;
        let Some(settle) = &shared.settle else {
            // No deadline: nothing to count, the task's waker as it is.
            let Some(outcome) = poll_caught(future, cx) else {
                return Poll::Pending;
            };
            report(this.reported, index, shared, outcome);
            return Poll::Ready(());
        };
        let waker = match this.waker {
            Some((task_waker, waker)) => {
                task_waker.set_task(cx.waker());
                &*waker
            }
            None => {
                let task_waker = TaskWaker::new(index, settle.clone(), cx.waker());
                let waker = Waker::from(task_waker.clone());
                &this.waker.insert((task_waker, waker)).1
            }
        };
        let seen = settle.poll_start(index);
        let outcome = poll_caught(future, &mut Context::from_waker(waker));
        let done = outcome.is_some();
        if let Some(outcome) = outcome {
            report(this.reported, index, shared, outcome);
        }
        // A report already woke the driver; a poll that left the child
        // pending must, too, if the driver waits at its deadline.
        if settle.poll_end(index, seen) && !done {
            shared.queue.push(index);
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    }
}

impl<F> GatherMode<F> for Spawned
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;
    type Slot = JoinHandle<()>;
    type Shared = StdArc<SpawnShared<F::Output>>;
    const POLLED: bool = false;

    #[allow(private_interfaces)]
    fn shared(total: usize, queue: &StdArc<ReadyQueue>, deadline: bool) -> Self::Shared {
        StdArc::new(SpawnShared {
            results: (0..total).map(|_| Mutex::new(None)).collect(),
            queue: queue.clone(),
            settle: deadline.then(|| Settle::new(total)),
        })
    }

    #[inline]
    fn launch(future: F, index: usize, shared: &Self::Shared) -> Self::Slot {
        tokio::spawn(Reporter {
            future,
            index,
            shared: shared.clone(),
            reported: false,
            waker: None,
        })
    }

    #[inline]
    fn poll_slot(
        _: &mut Self::Slot,
        index: usize,
        shared: &Self::Shared,
        _: &mut Context<'_>,
    ) -> Poll<Outcome<F::Output>> {
        match shared.results[index].lock().take() {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }

    #[inline]
    fn cancel(slot: Self::Slot) {
        slot.abort();
    }

    fn detach(
        slot: Self::Slot,
        index: usize,
        shared: &Self::Shared,
    ) -> Option<Straggler<F::Output>> {
        Some(Straggler {
            index,
            task: slot,
            shared: shared.clone(),
            resolved: false,
        })
    }

    fn watch(shared: &Self::Shared, index: usize) -> Option<u64> {
        shared.settle.as_ref()?.watch(index)
    }

    fn polled_since(shared: &Self::Shared, index: usize, wake: u64) -> bool {
        shared
            .settle
            .as_ref()
            .is_none_or(|settle| settle.polled_since(index, wake))
    }
}

/// When the gather's deadline is, as given to the builder.
#[derive(Debug, Clone, Copy)]
enum Limit {
    None,
    Timeout(Duration),
    Deadline(Instant),
}

/// Builder for a gather: deadline, concurrency bound, quorum, fail-fast and
/// spawned mode.
///
/// [`build`](Gather::build) checks the settings and returns a
/// [`GatherFuture`] to await (or turn into a [`GatherStream`]).
///
/// # Examples
///
/// Three replicas, answer with the first two successes or whatever came
/// back in 50 ms, at most two requests in flight:
///
/// ```
/// use flowguard::fanout::{Finish, Gather};
/// use std::time::Duration;
/// use tokio::time::{sleep, Instant};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let start = Instant::now();
/// let replicas = [10u64, 20, 30].map(|ms| async move {
///     sleep(Duration::from_millis(ms)).await;
///     Ok::<u64, std::io::Error>(ms)
/// });
/// let gathered = Gather::new(replicas)
///     .timeout(Duration::from_millis(50))
///     .concurrency(2)
///     .quorum(2)
///     .build()
///     .unwrap()
///     .await;
/// assert_eq!(gathered.finish(), Finish::QuorumReached);
/// assert_eq!(gathered.success_count(), 2);
/// assert_eq!(start.elapsed(), Duration::from_millis(20));
/// # }
/// ```
pub struct Gather<F, M = InTask>
where
    M: GatherMode<F>,
{
    futures: Vec<F>,
    limit: Limit,
    conflict: bool,
    concurrency: usize,
    quorum: Option<usize>,
    fail_fast: bool,
    first_completed: bool,
    detach: bool,
    is_success: Option<fn(&M::Output) -> bool>,
    child_latency: Option<StdArc<Histogram>>,
    name: Option<StdArc<str>>,
    _mode: PhantomData<M>,
}

impl<F, M: GatherMode<F>> fmt::Debug for Gather<F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gather")
            .field("futures", &self.futures.len())
            .field("limit", &self.limit)
            .field("concurrency", &self.concurrency)
            .field("quorum", &self.quorum)
            .field("fail_fast", &self.fail_fast)
            .field("first_completed", &self.first_completed)
            .field("detach_stragglers", &self.detach)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Gather<F, InTask> {
    /// Starts a builder over these futures. Nothing runs until the built
    /// future is polled.
    ///
    /// Defaults: no deadline, no concurrency bound, wait for all, polled in
    /// the awaiting task.
    pub fn new(futures: impl IntoIterator<Item = F>) -> Self {
        Self {
            futures: futures.into_iter().collect(),
            limit: Limit::None,
            conflict: false,
            concurrency: usize::MAX,
            quorum: None,
            fail_fast: false,
            first_completed: false,
            detach: false,
            is_success: None,
            child_latency: None,
            name: None,
            _mode: PhantomData,
        }
    }

    /// Runs each future on its own Tokio task instead of in the awaiting task.
    ///
    /// Panics are captured as [`Outcome::Panicked`]; tasks still running
    /// when the gather finishes (deadline, quorum, fail-fast) or is dropped
    /// are aborted, so they stop at their next `.await`. The gather does not
    /// wait for the aborts: each aborted future is dropped when the runtime
    /// next runs its task, just after the gather returns (see the
    /// [module docs](crate::fanout#compared-with-asyncio-and-polly)).
    ///
    /// Cost: one Tokio task per child with the future inline in it, as a
    /// `JoinSet` spawn; a gather with a deadline adds one small waker per
    /// child that counts its wakes (so that at the deadline it can wait
    /// for the children woken by then). A finished child's task is freed
    /// by the thread driving the gather, the one that spawned it.
    pub fn spawn(self) -> Gather<F, Spawned>
    where
        F: Send + 'static,
        F::Output: Send + 'static,
    {
        Gather {
            futures: self.futures,
            limit: self.limit,
            conflict: self.conflict,
            concurrency: self.concurrency,
            quorum: self.quorum,
            fail_fast: self.fail_fast,
            first_completed: self.first_completed,
            detach: false,
            // Same output type in both modes, so the classifier carries over.
            is_success: self.is_success,
            child_latency: self.child_latency,
            name: self.name,
            _mode: PhantomData,
        }
    }
}

impl<F> Gather<F, Spawned>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// When the gather finishes early (deadline, quorum, first error or
    /// first completion), leaves the tasks still running **running**
    /// instead of aborting them, as asyncio's `wait` does: their outcome is
    /// [`Outcome::Detached`] and their handles are in
    /// [`Gathered::take_stragglers`] (or
    /// [`GatherStream::take_stragglers`]). Futures a
    /// [`concurrency`](Gather::concurrency) bound kept from starting are
    /// not started (they are `TimedOut` or `Cancelled` as usual). Dropping
    /// the gather before it finishes still aborts everything.
    ///
    /// Spawned mode only: an in-task future cannot outlive the task that
    /// polls it.
    ///
    /// # Examples
    ///
    /// See [`Straggler`].
    pub fn detach_stragglers(mut self) -> Self {
        self.detach = true;
        self
    }
}

impl<F, M: GatherMode<F>> Gather<F, M> {
    /// Stop at `timeout` after the gather is built; futures still running
    /// then are cancelled and reported as [`Outcome::TimedOut`].
    ///
    /// **Done at the deadline counts as done**, in both modes (as asyncio's
    /// `wait`, where timers due at the deadline have already run): before it
    /// cuts anyone off, the gather lets every future that was woken by then
    /// (by a timer due at that very instant, say) take its poll. In-task it
    /// polls them itself, outside Tokio's cooperative budget if that ran
    /// out; spawned, it waits for each such task's next poll, so a task
    /// that blocks in that poll delays the cut-off. A future that keeps
    /// waking itself gets one poll, not more. On a current-thread runtime
    /// (and so under a paused clock) every timer due at an instant has
    /// fired before any task runs at it, which makes this exact; on a
    /// multi-thread runtime "the same instant" is as exact as its timer.
    ///
    /// Like `tokio::time::timeout`, the clock starts at `build()`. A timeout
    /// too large to represent means no deadline. Conflicts with `deadline`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.conflict |= !matches!(self.limit, Limit::None);
        self.limit = Limit::Timeout(timeout);
        self
    }

    /// Stop at this instant (see [`timeout`](Gather::timeout)). An instant
    /// already past leaves only what is ready on the first poll (in spawned
    /// mode, on each task's first poll).
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.conflict |= !matches!(self.limit, Limit::None);
        self.limit = Limit::Deadline(deadline);
        self
    }

    /// Run at most `n` futures at once; the rest start, in input order, as
    /// running ones finish. `n` must be at least 1.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Records each future's latency, from its start to its outcome
    /// (completed, failed or panicked; not those cut off or cancelled), in
    /// nanoseconds into `histogram`. A gather is built per call, so the
    /// histogram is the caller's, usually one shared by every gather of a
    /// kind. Off by default: timing costs two clock reads per future.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::fanout::Gather;
    /// use flowguard::histogram::Histogram;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let shard_latency = Arc::new(Histogram::new());
    /// let shards = [10, 30].map(|ms| tokio::time::sleep(Duration::from_millis(ms)));
    /// Gather::new(shards).child_latency(&shard_latency).build().unwrap().await;
    /// let s = shard_latency.snapshot();
    /// assert_eq!((s.count(), s.max_duration()), (2, Duration::from_millis(30)));
    /// # }
    /// ```
    pub fn child_latency(mut self, histogram: &StdArc<Histogram>) -> Self {
        self.child_latency = Some(StdArc::clone(histogram));
        self
    }

    /// Names the gather: its "gather finished" `tracing` event carries the
    /// name, and with the `metrics` feature a gather that finishes adds to
    /// the `flowguard_gather_*{name}` counters (every gather of a kind
    /// shares one name, so the series stay few; see `flowguard::metrics`)
    /// and, with [`child_latency`](Self::child_latency) on, records each
    /// child's latency in `flowguard_gather_child_seconds` too. A gather
    /// dropped before it finishes adds nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::fanout::Gather;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let gathered = Gather::new([1, 2].map(|i| async move { i })).name("shards").build().unwrap().await;
    /// assert_eq!(gathered.completed_count(), 2);
    /// # }
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(StdArc::from(name.into()));
        self
    }

    /// Returns as soon as any future completes, whatever it returned (or,
    /// spawned, if it panicked), cancelling the rest: asyncio's
    /// `FIRST_COMPLETED`. The finish is [`Finish::FirstCompleted`]. Unlike
    /// `quorum(1)`, it needs no `Result` output and an `Err` counts. As in
    /// asyncio's done set, every future found done at that instant (woken
    /// at the same time as the first, or, in-task, started in the same poll
    /// within the concurrency bound) is `Completed`, not cancelled; so is
    /// it with `first_error` (a quorum stops at exactly its k-th `Ok`).
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::fanout::{Finish, Gather, Outcome};
    /// use std::time::Duration;
    /// use tokio::time::sleep;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mirrors = [30u64, 10, 20].map(|ms| async move {
    ///     sleep(Duration::from_millis(ms)).await;
    ///     Err::<u64, _>(format!("mirror {ms} ms: 404"))
    /// });
    /// let gathered = Gather::new(mirrors).first_completed().build().unwrap().await;
    /// assert_eq!(gathered.finish(), Finish::FirstCompleted);
    /// assert_eq!(gathered.completed().map(|(i, _)| i).collect::<Vec<_>>(), [1]);
    /// assert_eq!(gathered.outcomes()[0], Outcome::Cancelled);
    /// # }
    /// ```
    #[doc(alias = "FIRST_COMPLETED")]
    pub fn first_completed(mut self) -> Self {
        self.first_completed = true;
        self
    }

    /// Checks the settings and returns the gather, ready to be awaited.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `concurrency` of 0 (`Zero`);
    /// `quorum` of 0 (`Zero`) or above the number of futures (`TooLarge`);
    /// `timeout` together with `deadline`, `quorum` together with
    /// `fail_fast`, or `first_completed` with either (`Conflict`).
    ///
    /// # Panics
    ///
    /// Never on any setting. With a deadline, it must be called inside a
    /// Tokio runtime with time enabled (it arms a `tokio::time::Sleep`), as
    /// `tokio::time::timeout` must.
    pub fn build(self) -> Result<GatherFuture<F, M>, ConfigError> {
        if self.conflict {
            return Err(ConfigError::new(
                COMPONENT,
                "deadline",
                ConfigErrorKind::Conflict,
                "cannot be combined with timeout (or set twice); pick one",
            ));
        }
        if self.concurrency == 0 {
            return Err(ConfigError::new(
                COMPONENT,
                "concurrency",
                ConfigErrorKind::Zero,
                "must be at least 1, got 0",
            ));
        }
        if self.first_completed && (self.quorum.is_some() || self.fail_fast) {
            return Err(ConfigError::new(
                COMPONENT,
                "first_completed",
                ConfigErrorKind::Conflict,
                "cannot be combined with quorum or fail_fast/first_error; pick one stopping rule",
            ));
        }
        if let Some(k) = self.quorum {
            if k == 0 {
                return Err(ConfigError::new(
                    COMPONENT,
                    "quorum",
                    ConfigErrorKind::Zero,
                    "must be at least 1, got 0",
                ));
            }
            if k > self.futures.len() {
                return Err(ConfigError::new(
                    COMPONENT,
                    "quorum",
                    ConfigErrorKind::TooLarge,
                    format!(
                        "must be at most the number of futures ({}), got {k}",
                        self.futures.len()
                    ),
                ));
            }
            if self.fail_fast {
                return Err(ConfigError::new(
                    COMPONENT,
                    "fail_fast",
                    ConfigErrorKind::Conflict,
                    "cannot be combined with quorum, which already stops once k is impossible",
                ));
            }
        }
        let deadline = match self.limit {
            Limit::None => None,
            Limit::Timeout(t) => Instant::now().checked_add(t),
            Limit::Deadline(d) => Some(d),
        };
        let mut driver = Driver::new(
            self.futures,
            deadline,
            self.concurrency,
            self.quorum,
            self.fail_fast,
            self.is_success,
        );
        driver.tally.set_first_completed(self.first_completed);
        driver.detach = self.detach;
        driver.child_latency = self.child_latency;
        #[cfg(all(feature = "metrics", not(loom)))]
        {
            driver.export = self.name.as_deref().map(GatherExport::new).map(Box::new);
        }
        driver.name = self.name;
        Ok(GatherFuture {
            driver,
            outcomes: Vec::new(),
        })
    }
}

impl<F, M, T, E> Gather<F, M>
where
    M: GatherMode<F, Output = Result<T, E>>,
{
    /// Return as soon as `k` futures completed with `Ok`, cancelling the
    /// rest; return early, too, once so many failed (`Err`, or a panic in
    /// spawned mode) that `k` successes can no longer arrive.
    pub fn quorum(mut self, k: usize) -> Self {
        self.quorum = Some(k);
        self.is_success = Some(Result::is_ok);
        self
    }

    /// Return at the first `Err` (or panic, in spawned mode), cancelling the rest.
    pub fn fail_fast(mut self) -> Self {
        self.fail_fast = true;
        self.is_success = Some(Result::is_ok);
        self
    }

    /// Asyncio's name for [`fail_fast`](Self::fail_fast) (`FIRST_EXCEPTION`):
    /// return at the first `Err` (or panic, in spawned mode), cancelling the
    /// rest, or when all completed if none failed. The finish is
    /// [`Finish::FailedFast`] after a failure, [`Finish::AllCompleted`]
    /// when none failed.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::fanout::{Finish, Gather};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let writes = [Ok(1), Err("disk full"), Ok(3)].map(|r| async move { r });
    /// let gathered = Gather::new(writes).first_error().build().unwrap().await;
    /// assert_eq!(gathered.finish(), Finish::FailedFast);
    /// # }
    /// ```
    #[doc(alias = "FIRST_EXCEPTION")]
    pub fn first_error(self) -> Self {
        self.fail_fast()
    }
}

/// Runs `futures` concurrently in the current task and returns when all are
/// done or `timeout` has passed, whichever comes first.
///
/// The [`Gathered`] keeps input order: [`Outcome::Completed`] for each
/// future that finished in time, [`Outcome::TimedOut`] for the rest, which
/// are dropped (cancelled) at the deadline: nothing keeps running after this
/// returns. Latency is the slowest future's or the timeout, never the sum.
/// The clock starts when this is called, as with `tokio::time::timeout`.
///
/// For a concurrency bound, a quorum, fail-fast or spawned tasks use
/// [`Gather`].
///
/// # Examples
///
/// ```
/// use flowguard::fanout::gather_with_timeout;
/// use std::time::Duration;
/// use tokio::time::{sleep, Instant};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let start = Instant::now();
/// let shards = [200u64, 200, 2000].map(|ms| async move {
///     sleep(Duration::from_millis(ms)).await;
///     ms
/// });
/// let gathered = gather_with_timeout(shards, Duration::from_millis(300)).await;
/// assert_eq!(gathered.completed_count(), 2);
/// assert_eq!(gathered.timed_out().collect::<Vec<_>>(), [2]);
/// assert_eq!(start.elapsed(), Duration::from_millis(300));
/// # }
/// ```
///
/// # Panics
///
/// Never on any argument; it must be called inside a Tokio runtime with
/// time enabled, as `tokio::time::timeout` must.
///
/// # Cancel safety
///
/// Dropping the returned future drops every future it holds; nothing leaks.
pub fn gather_with_timeout<F>(
    futures: impl IntoIterator<Item = F>,
    timeout: Duration,
) -> GatherFuture<F, InTask>
where
    F: Future,
{
    let futures: Vec<F> = futures.into_iter().collect();
    let deadline = Instant::now().checked_add(timeout);
    GatherFuture {
        driver: Driver::new(futures, deadline, usize::MAX, None, false, None),
        outcomes: Vec::new(),
    }
}

/// A gather in progress; resolves to a [`Gathered`].
///
/// Made by [`Gather::build`] or [`gather_with_timeout`].
///
/// # Examples
///
/// ```
/// use flowguard::fanout::Gather;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let g = Gather::new((1..=3).map(|i| async move { i * i })).build().unwrap();
/// let squares: Vec<i32> = g.await.into_completed().into_iter().map(|(_, v)| v).collect();
/// assert_eq!(squares, [1, 4, 9]);
/// # }
/// ```
///
/// # Cancel safety
///
/// Dropping it cancels every future still held: in-task futures are
/// dropped, spawned tasks aborted.
pub struct GatherFuture<F, M = InTask>
where
    M: GatherMode<F>,
{
    driver: Driver<F, M>,
    outcomes: Vec<Option<Outcome<M::Output>>>,
}

impl<F, M: GatherMode<F>> fmt::Debug for GatherFuture<F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatherFuture")
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

impl<F, M: GatherMode<F>> GatherFuture<F, M> {
    /// A snapshot of the gather's progress.
    pub fn metrics(&self) -> GatherMetrics {
        self.driver.metrics()
    }

    /// Yields each outcome as it happens instead of all at the end.
    pub fn into_stream(self) -> GatherStream<F, M> {
        GatherStream {
            driver: self.driver,
            buffer: VecDeque::new(),
        }
    }
}

// Futures are only pinned once boxed (or spawned); the queue of unstarted
// ones is moved freely, as `FuturesUnordered` does.
impl<F, M: GatherMode<F>> Unpin for GatherFuture<F, M> {}
impl<F, M: GatherMode<F>> Unpin for GatherStream<F, M> {}

impl<F, M: GatherMode<F>> Future for GatherFuture<F, M> {
    type Output = Gathered<M::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.outcomes.is_empty() {
            this.outcomes
                .resize_with(this.driver.tally.total(), || None);
        }
        let outcomes = &mut this.outcomes;
        match this
            .driver
            .poll_drive(cx, &mut |i, o| outcomes[i] = Some(o))
        {
            Poll::Pending => Poll::Pending,
            Poll::Ready(finish) => {
                let outcomes = std::mem::take(&mut this.outcomes)
                    .into_iter()
                    // Every index was reported before Ready; the fallback is unreachable.
                    .map(|o| o.unwrap_or(Outcome::Cancelled))
                    .collect();
                let stragglers = std::mem::take(&mut this.driver.stragglers);
                Poll::Ready(Gathered {
                    outcomes,
                    finish,
                    stragglers,
                })
            }
        }
    }
}

/// A gather as a `Stream` of `(input index, Outcome)` in completion order.
///
/// Every input index is yielded exactly once: completions as they happen,
/// then, when the gather stops early, the rest as `TimedOut` or `Cancelled`
/// in input order. Made by [`GatherFuture::into_stream`].
///
/// # Examples
///
/// ```
/// use flowguard::fanout::{Gather, Outcome};
/// use futures::StreamExt;
/// use std::time::Duration;
/// use tokio::time::sleep;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let futs = [30u64, 10, 20].map(|ms| async move {
///     sleep(Duration::from_millis(ms)).await;
///     ms
/// });
/// let order: Vec<usize> = Gather::new(futs)
///     .build()
///     .unwrap()
///     .into_stream()
///     .map(|(i, _)| i)
///     .collect()
///     .await;
/// assert_eq!(order, [1, 2, 0]);
/// # }
/// ```
///
/// # Cancel safety
///
/// As [`GatherFuture`]: dropping it cancels what it still holds.
pub struct GatherStream<F, M = InTask>
where
    M: GatherMode<F>,
{
    driver: Driver<F, M>,
    buffer: VecDeque<(usize, Outcome<M::Output>)>,
}

impl<F, M: GatherMode<F>> fmt::Debug for GatherStream<F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatherStream")
            .field("metrics", &self.metrics())
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl<F, M: GatherMode<F>> GatherStream<F, M> {
    /// A snapshot of the gather's progress.
    pub fn metrics(&self) -> GatherMetrics {
        self.driver.metrics()
    }

    /// Why the gather stopped, once it has.
    pub fn finish(&self) -> Option<Finish> {
        self.driver.finished
    }

    /// Takes the handles of the tasks left running by
    /// [`Gather::detach_stragglers`] (available once the stream has yielded
    /// their [`Outcome::Detached`]; empty otherwise).
    pub fn take_stragglers(&mut self) -> Vec<Straggler<M::Output>> {
        std::mem::take(&mut self.driver.stragglers)
    }
}

impl<F, M: GatherMode<F>> futures_core::Stream for GatherStream<F, M> {
    type Item = (usize, Outcome<M::Output>);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(item) = this.buffer.pop_front() {
            return Poll::Ready(Some(item));
        }
        let buffer = &mut this.buffer;
        let state = this
            .driver
            .poll_drive(cx, &mut |i, o| buffer.push_back((i, o)));
        match (this.buffer.pop_front(), state) {
            (Some(item), _) => Poll::Ready(Some(item)),
            (None, Poll::Ready(_)) => Poll::Ready(None),
            (None, Poll::Pending) => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.buffer.len() + (self.driver.tally.total() - self.driver.reported);
        (left, Some(left))
    }
}

/// The engine shared by [`GatherFuture`] and [`GatherStream`].
struct Driver<F, M: GatherMode<F>> {
    pending: std::vec::IntoIter<F>,
    next_index: usize,
    /// Futures actually started (unstarted ones cut off do not count).
    started: usize,
    slots: Vec<Slot<M::Slot>>,
    /// Spawned mode: handles of children whose outcome was taken in the
    /// last poll, dropped at the start of the next one (or with the
    /// driver; at most one handle per child). A child reports from inside its task's poll, so a handle
    /// dropped at once was often the task's last reference while its
    /// worker was still finishing it: the worker then freed the task, a
    /// cross-thread free that takes the spawning thread's allocator arena
    /// lock under glibc. One poll later the task has ended and the
    /// spawning (driving) thread frees it, as a `JoinSet` does.
    retired: Vec<M::Slot>,
    free_wakers: Vec<StdArc<ChildWaker>>,
    queue: StdArc<ReadyQueue>,
    shared: M::Shared,
    batch: Vec<usize>,
    in_flight: usize,
    concurrency: usize,
    tally: Tally,
    is_success: Option<fn(&M::Output) -> bool>,
    deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Once the deadline is seen (spawned mode): the running children that
    /// were woken by then and not yet polled, with the wake to wait for.
    due: Option<Vec<(usize, u64)>>,
    /// In-task children that stayed pending in this poll after Tokio's
    /// cooperative budget ran out (their `Pending` may be the budget's, not
    /// theirs; a deferred wake polls them again later).
    starved: Vec<usize>,
    finished: Option<Finish>,
    /// How many outcomes went to the sink (for `size_hint`).
    reported: usize,
    /// Leave running children running at an early finish (spawned mode).
    detach: bool,
    /// Their handles, once detached, until taken.
    stragglers: Vec<Straggler<M::Output>>,
    /// Where each child's start-to-outcome time goes, if anywhere.
    child_latency: Option<StdArc<Histogram>>,
    /// For the "gather finished" event.
    name: Option<StdArc<str>>,
    #[cfg(all(feature = "metrics", not(loom)))]
    export: Option<Box<GatherExport>>,
}

/// A named gather's handles (feature `metrics`): added to when it finishes.
#[cfg(all(feature = "metrics", not(loom)))]
struct GatherExport {
    calls: ::metrics::Counter,
    children: ::metrics::Counter,
    succeeded: ::metrics::Counter,
    failed: ::metrics::Counter,
    unfinished: ::metrics::Counter,
    child_seconds: ::metrics::Histogram,
}

#[cfg(all(feature = "metrics", not(loom)))]
impl GatherExport {
    fn new(name: &str) -> Self {
        let h = crate::metrics::Handles::new("gather", name);
        Self {
            calls: h.counter("calls_total"),
            children: h.counter("children_total"),
            succeeded: h.counter("succeeded_total"),
            failed: h.counter("failed_total"),
            unfinished: h.counter("unfinished_total"),
            child_seconds: h.histogram("child_seconds"),
        }
    }
}

struct Slot<S> {
    running: Option<S>,
    /// When it started, if child latencies are recorded.
    started: Option<Instant>,
    /// The child's waker while someone other than the driver holds it.
    waker: Option<StdArc<ChildWaker>>,
}

impl<F, M: GatherMode<F>> Driver<F, M> {
    fn new(
        futures: Vec<F>,
        deadline: Option<Instant>,
        concurrency: usize,
        quorum: Option<usize>,
        fail_fast: bool,
        is_success: Option<fn(&M::Output) -> bool>,
    ) -> Self {
        let total = futures.len();
        let sleep = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        let queue = ReadyQueue::new();
        Self {
            shared: M::shared(total, &queue, deadline.is_some()),
            pending: futures.into_iter(),
            next_index: 0,
            started: 0,
            slots: Vec::new(),
            retired: Vec::new(),
            free_wakers: Vec::new(),
            queue,
            batch: Vec::new(),
            in_flight: 0,
            concurrency,
            tally: Tally::new(total, quorum, fail_fast),
            is_success,
            deadline,
            sleep,
            due: None,
            starved: Vec::new(),
            finished: None,
            reported: 0,
            detach: false,
            stragglers: Vec::new(),
            child_latency: None,
            name: None,
            #[cfg(all(feature = "metrics", not(loom)))]
            export: None,
        }
    }

    fn metrics(&self) -> GatherMetrics {
        GatherMetrics {
            total: self.tally.total(),
            started: self.started,
            in_flight: self.in_flight,
            succeeded: self.tally.succeeded(),
            failed: self.tally.failed(),
        }
    }

    /// Runs the gather as far as it can go now, reporting every outcome to
    /// `sink`. Ready once every index has been reported.
    fn poll_drive(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut impl FnMut(usize, Outcome<M::Output>),
    ) -> Poll<Finish> {
        self.retired.clear();
        if let Some(finish) = self.finished {
            return Poll::Ready(finish);
        }
        if self.slots.is_empty() {
            if self.tally.total() > 0 {
                self.slots.reserve_exact(self.tally.total());
            }
            if let Some(finish) = self.tally.verdict() {
                return Poll::Ready(self.finish(finish, sink));
            }
        }
        self.queue.register(cx.waker());
        // Last poll's starved children were woken (deferred) since: queued.
        self.starved.clear();

        // Children woken since the last poll.
        if let Some(finish) = self.poll_woken(cx, sink) {
            return Poll::Ready(self.finish(finish, sink));
        }

        // Start what the concurrency bound allows; a child that finishes on
        // its first poll frees its slot for the next at once. After a first
        // completion (or first error) the slots that were free when this
        // loop began are still filled, as spawned mode launches them all
        // at once: each of those children is done at this instant or
        // cancelled with the rest, as asyncio's `wait` sees tasks it
        // started together.
        let (free, started_before) = (
            self.concurrency.saturating_sub(self.in_flight),
            self.started,
        );
        let mut verdict = None;
        while self.in_flight < self.concurrency {
            if verdict.is_some() && self.started - started_before >= free {
                break;
            }
            let Some(future) = self.pending.next() else {
                break;
            };
            let index = self.next_index;
            self.next_index += 1;
            self.started += 1;
            self.slots.push(Slot {
                started: self.child_latency.as_ref().map(|_| Instant::now()),
                running: Some(M::launch(future, index, &self.shared)),
                waker: None,
            });
            self.in_flight += 1;
            // Spawned tasks report themselves; only in-task children need a first poll.
            if !M::POLLED {
                // Started after the deadline was seen: its first poll is due
                // now, as an in-task child's is (below).
                if let (Some(due), Some(wake)) = (&mut self.due, M::watch(&self.shared, index)) {
                    due.push((index, wake));
                }
                continue;
            }
            verdict = verdict.or(self.poll_child(index, cx, sink));
            if verdict.is_some_and(|f| !keeps_its_instant(f)) {
                break;
            }
        }
        if let Some(finish) = verdict {
            return Poll::Ready(self.finish(finish, sink));
        }

        // Completions first, then the clock: a future done exactly at the
        // deadline counts as completed.
        if let Some(sleep) = &mut self.sleep {
            let expired = sleep.as_mut().poll(cx).is_ready()
                || self.deadline.is_some_and(|d| d <= Instant::now());
            if expired {
                if !self.children_due_have_run() {
                    return Poll::Pending;
                }
                // What was woken or reported since the drain above counts
                // too (another thread may have run a child meanwhile).
                if let Some(finish) = self.poll_woken(cx, sink) {
                    return Poll::Ready(self.finish(finish, sink));
                }
                if let Some(finish) = self.poll_starved(cx, sink) {
                    return Poll::Ready(self.finish(finish, sink));
                }
                return Poll::Ready(self.finish(Finish::Deadline, sink));
            }
        }
        Poll::Pending
    }

    /// Polls the children woken (or, spawned, reported) since the last
    /// drain; returns a verdict if one of them finished the gather.
    #[inline]
    fn poll_woken(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut impl FnMut(usize, Outcome<M::Output>),
    ) -> Option<Finish> {
        let mut batch = std::mem::take(&mut self.batch);
        self.queue.drain_into(&mut batch);
        let mut verdict = None;
        for &index in &batch {
            let finished = self.poll_child(index, cx, sink);
            verdict = verdict.or(finished);
            if verdict.is_some_and(|f| !keeps_its_instant(f)) {
                break;
            }
        }
        batch.clear();
        self.batch = batch;
        verdict
    }

    /// At the deadline, in-task: polls once more, outside Tokio's
    /// cooperative budget, each child the budget kept from a real poll in
    /// this poll (a gather of more than ~128 children woken at once), so a
    /// child due at the deadline counts as completed however many there
    /// are. Returns a verdict if one of them finished the gather.
    #[cold]
    fn poll_starved(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut impl FnMut(usize, Outcome<M::Output>),
    ) -> Option<Finish> {
        let mut starved = std::mem::take(&mut self.starved);
        let mut verdict = None;
        for &index in &starved {
            let poll = std::future::poll_fn(|cx| Poll::Ready(self.poll_child(index, cx, sink)));
            let mut poll = std::pin::pin!(tokio::task::unconstrained(poll));
            if let Poll::Ready(Some(finish)) = poll.as_mut().poll(cx) {
                verdict = verdict.or(Some(finish));
            }
            if verdict.is_some_and(|f| !keeps_its_instant(f)) {
                break;
            }
        }
        starved.clear();
        self.starved = starved;
        verdict
    }

    /// At the deadline: whether every running child that was woken by now
    /// has had the poll it was woken for.
    ///
    /// In-task children were just polled above, so this is only a wait in
    /// spawned mode: a child whose timer fired at the deadline instant is
    /// scheduled but may not have run yet when the driver sees the same
    /// instant. Waiting for exactly those polls (a snapshot, so a child
    /// that keeps waking itself cannot hold the gather) makes "done at the
    /// deadline counts as completed" hold in both modes, whatever order
    /// the runtime runs the tasks in. Each such poll wakes the driver.
    fn children_due_have_run(&mut self) -> bool {
        if M::POLLED {
            return true;
        }
        let Self {
            due, slots, shared, ..
        } = self;
        let due = due.get_or_insert_with(|| {
            slots
                .iter()
                .enumerate()
                .filter(|(_, slot)| slot.running.is_some())
                .filter_map(|(index, _)| M::watch(shared, index).map(|wake| (index, wake)))
                .collect()
        });
        due.retain(|&(index, wake)| {
            slots[index].running.is_some() && !M::polled_since(shared, index, wake)
        });
        due.is_empty()
    }

    /// Polls child `index` if it is still running; returns a verdict if its
    /// completion finished the gather.
    #[inline]
    fn poll_child(
        &mut self,
        index: usize,
        parent: &mut Context<'_>,
        sink: &mut impl FnMut(usize, Outcome<M::Output>),
    ) -> Option<Finish> {
        let slot = &mut self.slots[index];
        let running = slot.running.as_mut()?;
        if !M::POLLED {
            return match M::poll_slot(running, index, &self.shared, parent) {
                Poll::Pending => None,
                Poll::Ready(outcome) => {
                    if let Some(handle) = slot.running.take() {
                        self.retired.push(handle);
                    }
                    self.in_flight -= 1;
                    self.complete(index, outcome, sink)
                }
            };
        }
        let mut waker = match slot.waker.take() {
            Some(w) => {
                w.clear();
                w
            }
            None => match self.free_wakers.pop() {
                Some(mut w) => {
                    // Unshared when freed and nobody could clone it since.
                    let reassigned = ChildWaker::reassign(&mut w, index);
                    debug_assert!(reassigned);
                    w
                }
                None => ChildWaker::new(index, self.queue.clone()),
            },
        };
        let poll = {
            let w = Waker::from(waker.clone());
            let mut cx = Context::from_waker(&w);
            M::poll_slot(running, index, &self.shared, &mut cx)
        };
        let unshared = ChildWaker::is_unshared(&mut waker);
        match poll {
            Poll::Pending => {
                if !tokio::task::coop::has_budget_remaining() {
                    self.starved.push(index);
                }
                if unshared {
                    // The child kept no waker: lend this one to the next
                    // poll. If it woke itself, its index is already queued.
                    self.free_wakers.push(waker);
                } else {
                    slot.waker = Some(waker);
                }
                None
            }
            Poll::Ready(outcome) => {
                slot.running = None;
                self.in_flight -= 1;
                if unshared {
                    self.free_wakers.push(waker);
                }
                self.complete(index, outcome, sink)
            }
        }
    }

    #[inline]
    fn complete(
        &mut self,
        index: usize,
        outcome: Outcome<M::Output>,
        sink: &mut impl FnMut(usize, Outcome<M::Output>),
    ) -> Option<Finish> {
        let started = self.slots.get(index).and_then(|slot| slot.started);
        if let (Some(h), Some(started)) = (&self.child_latency, started) {
            if matches!(outcome, Outcome::Completed(_) | Outcome::Panicked(_)) {
                let took = started.elapsed();
                h.record_duration(took);
                #[cfg(all(feature = "metrics", not(loom)))]
                if let Some(e) = &self.export {
                    e.child_seconds.record(took.as_secs_f64());
                }
            }
        }
        let success = match (&outcome, self.is_success) {
            (Outcome::Completed(v), Some(is_success)) => is_success(v),
            (Outcome::Completed(_), None) => true,
            _ => false,
        };
        self.reported += 1;
        sink(index, outcome);
        self.tally.record(success)
    }

    /// Cancels everything still running or waiting and reports it.
    #[cold]
    fn finish(
        &mut self,
        finish: Finish,
        sink: &mut impl FnMut(usize, Outcome<M::Output>),
    ) -> Finish {
        self.finished = Some(finish);
        self.sleep = None;
        self.queue.close();
        let mut cut_off = 0usize;
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if let Some(running) = slot.running.take() {
                slot.waker = None;
                cut_off += 1;
                let detached = if self.detach {
                    M::detach(running, index, &self.shared)
                } else {
                    M::cancel(running);
                    None
                };
                match detached {
                    Some(straggler) => {
                        self.stragglers.push(straggler);
                        sink(index, Outcome::Detached);
                    }
                    None => sink(index, left_over(finish)),
                }
            }
        }
        self.reported += cut_off;
        for future in self.pending.by_ref() {
            drop(future);
            let index = self.next_index;
            self.next_index += 1;
            cut_off += 1;
            self.reported += 1;
            sink(index, left_over(finish));
        }
        self.in_flight = 0;
        self.free_wakers = Vec::new();
        self.slots = Vec::new();
        tracing::debug!(
            gather = self.name.as_deref().unwrap_or("gather"),
            ?finish,
            total = self.tally.total(),
            succeeded = self.tally.succeeded(),
            failed = self.tally.failed(),
            cut_off,
            "gather finished"
        );
        #[cfg(all(feature = "metrics", not(loom)))]
        if let Some(e) = &self.export {
            e.calls.increment(1);
            e.children.increment(self.tally.total() as u64);
            e.succeeded.increment(self.tally.succeeded() as u64);
            e.failed.increment(self.tally.failed() as u64);
            e.unfinished.increment(cut_off as u64);
        }
        finish
    }
}

/// Whether, past this verdict, the rest of the children woken (or
/// reported) by now are still polled: asyncio's `wait` returns every
/// future done by then, so the first completion or first error keeps the
/// completions of its instant; a quorum stops at exactly its k-th success.
fn keeps_its_instant(finish: Finish) -> bool {
    matches!(finish, Finish::FirstCompleted | Finish::FailedFast)
}

fn left_over<T>(finish: Finish) -> Outcome<T> {
    if finish == Finish::Deadline {
        Outcome::TimedOut
    } else {
        Outcome::Cancelled
    }
}

impl<F, M: GatherMode<F>> Drop for Driver<F, M> {
    fn drop(&mut self) {
        // Spawned tasks outlive their JoinHandle unless aborted.
        for slot in self.slots.drain(..) {
            if let Some(running) = slot.running {
                M::cancel(running);
            }
        }
    }
}
