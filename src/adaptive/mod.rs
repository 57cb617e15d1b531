//! Adaptive concurrency limits: find the backend's limit instead of guessing it.
//!
//! A fixed concurrency limit is a guess that is wrong the day the backend
//! slows down: too high and requests queue inside the backend until they
//! time out, too low and capacity is wasted. By Little's law a backend's
//! useful concurrency is its throughput times its latency; an
//! [`AdaptiveLimiter`] measures latency and drops on every request and lets
//! a [limit algorithm](LimitAlgorithm) move the limit, the way TCP's
//! congestion control finds a path's window. The algorithms and their
//! defaults follow Netflix's [concurrency-limits]; every rule is written
//! out in the algorithm's module docs, with each deliberate difference.
//!
//! | algorithm | signal | settles at | module |
//! |---|---|---|---|
//! | [`Vegas`] (the default, windowed) | latency above the lowest seen (a queue estimate) and drops | the knee plus a small queue (`+3..+6` for knees of 10–99) | [`vegas`] |
//! | [`Gradient2`] | short-term vs long-term latency | where latency stops rising relative to its own average | [`gradient`] |
//! | [`Aimd`] | drops and timeouts | a sawtooth under the point where drops start | [`aimd`] |
//! | [`Windowed`] (a wrapper) | one aggregate sample per window of about two round trips | as the algorithm it wraps, with fewer, steadier decisions | [`windowed`] |
//!
//! Each algorithm is a pure state machine ([`LimitAlgorithm`]) fed
//! [`Sample`]s (`start`, `rtt`, `inflight` when the request started,
//! `dropped`) and answering the new limit, so it can be driven, tested or
//! simulated without a runtime. No algorithm grows the limit while the
//! caller uses less than half of it: a limit that is not used says nothing.
//!
//! # The limiter
//!
//! [`AdaptiveLimiter`] enforces the current limit, changed live, with one
//! atomic word (the limit and the permits held; a permit is one
//! compare-and-swap): a shrink never revokes a held permit, and no permit
//! is handed out while as many as the limit are held. A request takes a [`Permit`] with
//! [`try_acquire`](AdaptiveLimiter::try_acquire) (shed at once when the
//! limit is reached) or [`acquire`](AdaptiveLimiter::acquire) (wait in a
//! bounded backlog, [FIFO or LIFO](Order); also with a timeout), and
//! reports on the permit how it went: [`success`](Permit::success),
//! [`dropped`](Permit::dropped) (a timeout or an overload error) or
//! [`ignore`](Permit::ignore). **A permit dropped without a report counts
//! as ignored**: no sample. [`metrics`](AdaptiveLimiter::metrics) gives the
//! limit, the load, the counts and the last changes of the limit with their
//! instants.
//!
//! **Partitions** share one limit between kinds of callers: a partition
//! named with [`partition(name, share)`](AdaptiveLimiterBuilder::partition)
//! is guaranteed `max(1, ⌈limit × share⌉)` permits while its callers want
//! them, and any partition may borrow what the others leave unused. The
//! rules: a free permit goes to whoever asks; when callers wait, a permit
//! that comes free goes first to a caller whose partition holds less than
//! its guarantee, then to the others, in the configured order. So with
//! "live" at 0.7 and "batch" at 0.3, batch alone may use the whole limit,
//! and once live callers queue, every permit batch returns goes to live
//! until live holds 70 %. Held permits are never revoked, so live waits for
//! batch's requests to finish, not for them to be cancelled. Callers
//! without a partition's label use the *default* partition, guaranteed
//! what the named ones leave (nothing when their shares add up to 1).
//! Netflix's partitioned limiter lets a partition under its share exceed
//! the total limit instead; here the total limit is never exceeded.
//!
//! **Labels and bypass**: [`labelled(label)`](AdaptiveLimiter::labelled)
//! gives a handle for callers with that label (a partition's name, a
//! route); a [bypass predicate](AdaptiveLimiterBuilder::bypass_if) on the
//! label lets some callers (health checks) through without a permit and
//! without a sample.
//!
//! # With a `WorkerPool`
//!
//! A [`WorkerPool`](crate::pool::WorkerPool) takes its concurrency from a
//! limiter by having each submission acquire first and report from inside
//! the task: the limiter bounds what runs (and sheds or queues the rest),
//! the pool runs it. Give the pool a `max_concurrency` of at least the
//! algorithm's maximum so it never queues what the limiter admitted, or
//! mirror the limit into it with
//! [`on_limit_change`](AdaptiveLimiterBuilder::on_limit_change) and
//! [`set_max_concurrency`](crate::pool::WorkerPool::set_max_concurrency) so
//! its metrics show the adaptive limit. Neither module imports the other.
//!
//! ```
//! use flowguard::adaptive::{AdaptiveLimiter, Aimd};
//! use flowguard::pool::WorkerPool;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let pool = WorkerPool::builder().max_concurrency(20).build().unwrap();
//! let mirror = pool.clone();
//! let limiter = AdaptiveLimiter::builder()
//!     .algorithm(Aimd::builder().min_limit(1).build().unwrap())
//!     .on_limit_change(move |c| {
//!         let _ = mirror.set_max_concurrency(c.to);
//!     })
//!     .build()
//!     .unwrap();
//!
//! let permit = limiter.acquire().await.unwrap(); // waits (or sheds) under the adaptive limit
//! let task = pool
//!     .submit(async move {
//!         let answer: Result<u32, &str> = Err("503"); // ... the backend call ...
//!         match &answer {
//!             Ok(_) => permit.success(),
//!             Err(_) => permit.dropped(),
//!         }
//!         answer
//!     })
//!     .await
//!     .unwrap();
//! assert!(task.await.unwrap().is_err());
//! assert_eq!(limiter.limit(), 18); // ⌊20 × 0.9⌋
//! assert_eq!(pool.metrics().max_concurrency, 18);
//! # }
//! ```
//!
//! # In a `Pipeline`
//!
//! [`PipelineBuilder::adaptive_limit`](crate::pipeline::PipelineBuilder::adaptive_limit)
//! puts a limiter at the bulkhead's place in a
//! [`Pipeline`](crate::pipeline::Pipeline): each attempt takes a permit and
//! reports by the pipeline's classifier.
//!
//! # Cancel safety
//!
//! [`acquire`](AdaptiveLimiter::acquire), [`acquire_timeout`](AdaptiveLimiter::acquire_timeout)
//! and [`acquire_deadline`](AdaptiveLimiter::acquire_deadline) may be
//! dropped at any await point: the caller leaves the backlog, and a permit
//! already granted to it goes to the next caller, unreported. A
//! [`Permit`] dropped (its task aborted, its future cancelled) is returned
//! as ignored.
//!
//! # Example
//!
//! ```
//! use flowguard::adaptive::{AdaptiveLimiter, Vegas, Windowed};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let vegas = Windowed::builder(Vegas::new())
//!     .min_window(Duration::from_millis(20)) // decide every two round trips
//!     .build()
//!     .unwrap();
//! let limiter = AdaptiveLimiter::new(vegas); // from 20
//! // A backend that answers in 10 ms whatever the load, called with the
//! // whole limit each round: no queueing is seen, so the limit grows.
//! for _ in 0..20 {
//!     let mut calls = Vec::new();
//!     for _ in 0..limiter.limit() {
//!         let permit = limiter.try_acquire().unwrap();
//!         calls.push(async move {
//!             tokio::time::sleep(Duration::from_millis(10)).await;
//!             permit.success();
//!         });
//!     }
//!     futures::future::join_all(calls).await;
//! }
//! assert_eq!(limiter.limit(), 50); // + beta (6) per window of two rounds
//! # }
//! ```
//!
//! [concurrency-limits]: https://github.com/Netflix/concurrency-limits

pub mod aimd;
mod error;
pub mod gradient;
mod limiter;
pub mod vegas;
pub mod windowed;

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

pub use self::aimd::{Aimd, AimdBuilder};
pub use self::error::AcquireError;
pub use self::gradient::{Gradient2, Gradient2Builder, QueueSize};
pub use self::limiter::{
    Acquire, AdaptiveLimiter, AdaptiveLimiterBuilder, AdaptiveMetrics, LimitChange, MAX_LIMIT,
    Order, PartitionMetrics, Permit,
};
pub use self::vegas::{Vegas, VegasBuilder};
pub use self::windowed::{Windowed, WindowedBuilder};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::semaphore::MAX_PERMITS;

/// One finished request, as a limit algorithm sees it.
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::Sample;
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let s = Sample::new(Instant::now(), Duration::from_millis(12), 7, false);
/// assert_eq!((s.rtt, s.inflight, s.dropped), (Duration::from_millis(12), 7, false));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When the request was admitted.
    pub start: Instant,
    /// How long it took, admission to report.
    pub rtt: Duration,
    /// Requests in flight when it was admitted, itself included.
    pub inflight: usize,
    /// Whether it was dropped for lack of capacity (a timeout, an overload error).
    pub dropped: bool,
}

impl Sample {
    /// A sample of a request admitted at `start` with `inflight` in flight
    /// (itself included), taking `rtt`, dropped or not.
    pub fn new(start: Instant, rtt: Duration, inflight: usize, dropped: bool) -> Self {
        Self {
            start,
            rtt,
            inflight,
            dropped,
        }
    }
}

/// A concurrency-limit algorithm: a pure state machine that is fed
/// [`Sample`]s and answers the limit.
///
/// Implementations must keep the limit within their [`bounds`](Self::bounds)
/// whatever the samples (zero RTTs, enormous ones, any `inflight`), and
/// must not read a clock: time comes in the samples. The
/// [`AdaptiveLimiter`] calls `update` under its lock, once per reported
/// request, and clamps the answer to `1..=`[`MAX_LIMIT`].
///
/// # Examples
///
/// A fixed limit, as the simplest algorithm (Netflix's `FixedLimit`):
///
/// ```
/// use flowguard::adaptive::{AdaptiveLimiter, LimitAlgorithm, Sample};
///
/// #[derive(Debug)]
/// struct Fixed(usize);
///
/// impl LimitAlgorithm for Fixed {
///     fn limit(&self) -> usize { self.0 }
///     fn update(&mut self, _: &Sample) -> usize { self.0 }
///     fn bounds(&self) -> (usize, usize) { (self.0, self.0) }
/// }
///
/// let limiter = AdaptiveLimiter::new(Fixed(3));
/// assert_eq!(limiter.limit(), 3);
/// ```
pub trait LimitAlgorithm: fmt::Debug + Send + 'static {
    /// The current limit.
    fn limit(&self) -> usize;

    /// Feeds one sample; returns the new limit.
    fn update(&mut self, sample: &Sample) -> usize;

    /// The smallest and largest limit it can answer.
    fn bounds(&self) -> (usize, usize);

    /// How many permits share one timed sample: 1 (the default) times
    /// every permit and feeds every report to [`update`](Self::update).
    /// An algorithm that only aggregates RTTs (the [`Windowed`] wrapper
    /// under load) may answer `n > 1`: the limiter then reads the clock
    /// for about one permit in `n` (each thread times its first permit,
    /// then one after a random gap of `n − 1` on average), and the
    /// successes of the others are counted without the lock and handed
    /// over through [`add_untimed`](Self::add_untimed) just before the
    /// next timed sample (or a [`metrics`](AdaptiveLimiter::metrics)
    /// snapshot). An untimed *drop* is handed over at once. Read when the
    /// limiter is built and after each `update`; 0 counts as 1.
    fn timing_stride(&self) -> usize {
        1
    }

    /// Reports of permits that were not timed (see
    /// [`timing_stride`](Self::timing_stride)); never called when the
    /// stride is 1. They cannot move the limit by themselves: the limit an
    /// algorithm answers is read after its next `update`. The default
    /// ignores them.
    fn add_untimed(&mut self, reports: &Untimed) {
        let _ = reports;
    }
}

/// Reports of permits that were not timed, handed to
/// [`LimitAlgorithm::add_untimed`] in one go.
///
/// # Examples
///
/// ```
/// use flowguard::adaptive::Untimed;
///
/// let u = Untimed::new(12, 9, false);
/// assert_eq!((u.count, u.max_inflight, u.dropped), (12, 9, false));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Untimed {
    /// How many reports.
    pub count: u64,
    /// The largest `inflight` at the start of any of them.
    pub max_inflight: usize,
    /// Whether any was dropped.
    pub dropped: bool,
}

impl Untimed {
    /// `count` untimed reports, the largest started with `max_inflight` in
    /// flight, any dropped or not.
    pub fn new(count: u64, max_inflight: usize, dropped: bool) -> Self {
        Self {
            count,
            max_inflight,
            dropped,
        }
    }
}

impl<A: LimitAlgorithm + ?Sized> LimitAlgorithm for Box<A> {
    fn limit(&self) -> usize {
        (**self).limit()
    }

    fn update(&mut self, sample: &Sample) -> usize {
        (**self).update(sample)
    }

    fn bounds(&self) -> (usize, usize) {
        (**self).bounds()
    }

    fn timing_stride(&self) -> usize {
        (**self).timing_stride()
    }

    fn add_untimed(&mut self, reports: &Untimed) {
        (**self).add_untimed(reports)
    }
}

/// The checks every algorithm's builder makes on its limits.
pub(crate) fn check_bounds(
    component: &'static str,
    initial: usize,
    min: usize,
    max: usize,
) -> Result<(), ConfigError> {
    if min == 0 {
        return Err(ConfigError::new(
            component,
            "min_limit",
            ConfigErrorKind::Zero,
            "must be at least 1, got 0",
        ));
    }
    if max > MAX_PERMITS {
        return Err(ConfigError::new(
            component,
            "max_limit",
            ConfigErrorKind::TooLarge,
            format!("must be at most {MAX_PERMITS}, got {max}"),
        ));
    }
    if min > max {
        return Err(ConfigError::new(
            component,
            "min_limit",
            ConfigErrorKind::Conflict,
            format!("must be at most max_limit {max}, got {min}"),
        ));
    }
    if !(min..=max).contains(&initial) {
        return Err(ConfigError::new(
            component,
            "initial_limit",
            ConfigErrorKind::Conflict,
            format!("must be within [min_limit, max_limit] = [{min}, {max}], got {initial}"),
        ));
    }
    Ok(())
}
