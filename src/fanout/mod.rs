//! Deadline fan-out: ask N backends at once, answer by the deadline with
//! what came back, cancel the stragglers.
//!
//! Latency of a fan-out is the slowest backend's, not the sum; with a
//! deadline it is at most the deadline ("The Tail at Scale", Dean and
//! Barroso, 2013):
//!
//! - [`gather_with_timeout`](crate::fanout::gather_with_timeout): run futures concurrently, return when all are
//!   done or at the deadline, one [`Outcome`](crate::fanout::Outcome) per input, in input order.
//!   Futures still running at the deadline are dropped; one that completes
//!   at the deadline instant counts as completed, in-task and spawned alike
//!   (see [`Gather::timeout`](crate::fanout::Gather::timeout)).
//! - [`Gather`](crate::fanout::Gather): the builder for the rest: `timeout`/`deadline`,
//!   `concurrency(n)`, `quorum(k)` (return at the k-th `Ok`, or as soon as
//!   k became impossible), `first_completed()` and `first_error()`
//!   (asyncio's `FIRST_COMPLETED` and `FIRST_EXCEPTION`; `fail_fast()` is
//!   the latter), `spawn()` (own Tokio task each, panics captured, aborted
//!   at the end, or with `detach_stragglers()` left running and handed
//!   back as [`Straggler`](crate::fanout::Straggler)s, as asyncio's `wait`
//!   does); results at once ([`GatherFuture`](crate::fanout::GatherFuture))
//!   or in completion order ([`GatherStream`](crate::fanout::GatherStream)).
//! - [`hedge`](crate::fanout::hedge) and [`hedge_with_attempt`](crate::fanout::hedge_with_attempt)
//!   (which tells each request its attempt number): send a request; if it
//!   is slow (a fixed delay, or a learned percentile of recent latencies),
//!   send another; first success wins. Errors declared final end the call
//!   at once; `hedge_on_error` sends the next attempt as soon as one fails;
//!   `max_extra_load` caps hedges to a fraction of calls; a failed call
//!   keeps every attempt's error.
//!
//! In-task gathers poll only the futures that were woken (each child has
//! its own waker feeding a ready queue), so a gather of `n` futures costs
//! O(wakes), like `FuturesUnordered`.
//!
//! # Compared with asyncio and Polly
//!
//! The stopping rules are asyncio's `wait` (`ALL_COMPLETED`,
//! `FIRST_COMPLETED`, `FIRST_EXCEPTION`, with a timeout that returns what
//! finished), and a future done at the deadline instant counts as done, as
//! a result ready exactly at `asyncio.timeout`'s deadline is kept. Where
//! this differs, deliberately:
//!
//! * **An empty gather finishes at once** under every rule, with no
//!   outcomes; `asyncio.wait` raises on an empty set. An empty fan-out is
//!   a valid request with an empty answer.
//! * **A zero or past deadline still polls each future once**
//!   ([`Gather::deadline`](crate::fanout::Gather::deadline)): what is
//!   ready at once counts. `asyncio.wait_for` with a timeout of 0 cancels
//!   a coroutine before it starts.
//! * **Spawned children cut off are aborted, not awaited**
//!   ([`Gather::spawn`](crate::fanout::Gather::spawn)): the gather returns
//!   at the deadline, and each aborted task's future is dropped when the
//!   runtime next runs it, a moment later. `asyncio.wait_for` returns only
//!   once the cancelled task has finished; waiting for the aborts would
//!   make the return time depend on how busy the runtime is, which is
//!   what a deadline is there to bound. A child that must be gone before
//!   you go on (it holds a lock, say) should be run in-task, where it is
//!   dropped before the gather returns.
//! * **Hedges**: 0 to 16 extra attempts (Polly: 1 to 10); with
//!   `hedge_on_error`, timed hedges stay at `k × delay` from the start,
//!   where Polly waits a full delay after each launch (see
//!   [`HedgePolicyBuilder`](crate::fanout::HedgePolicyBuilder)).
//!
//! # Examples
//!
//! ```
//! use flowguard::fanout::gather_with_timeout;
//! use std::time::Duration;
//! use tokio::time::{sleep, Instant};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let start = Instant::now();
//! let shards = (0..8u64).map(|shard| async move {
//!     let ms = if shard == 7 { 2000 } else { 200 };
//!     sleep(Duration::from_millis(ms)).await;
//!     shard
//! });
//! let gathered = gather_with_timeout(shards, Duration::from_millis(300)).await;
//! assert_eq!(gathered.completed_count(), 7);
//! assert_eq!(gathered.timed_out().collect::<Vec<_>>(), [7]);
//! assert_eq!(start.elapsed(), Duration::from_millis(300));
//! # }
//! ```

mod core;
mod error;
mod gather;
mod hedge;
mod wake;

pub use self::core::Finish;
pub use self::error::HedgeError;
pub use self::gather::{
    Gather, GatherFuture, GatherMetrics, GatherMode, GatherStream, Gathered, InTask, Outcome,
    Spawned, Straggler, gather_with_timeout,
};
pub use self::hedge::{
    HedgeFuture, HedgeMetrics, HedgePolicy, HedgePolicyBuilder, Hedged, hedge, hedge_with_attempt,
};
#[cfg(loom)]
#[doc(hidden)]
pub use self::wake::SettleModel;
