//! # flowguard
//!
//! Async flow-control and resilience primitives for Tokio: the pieces a
//! service needs to stay within its limits and survive its dependencies.
//! See them work together in one program with
//! `cargo run --release --example tour`: a small search service whose
//! queries are debounced, fanned out to eight shards under a deadline, each
//! shard behind a circuit breaker and a rate limiter, record lookups
//! batched, scoring on a CPU pool and answers streamed through a bounded
//! channel.
//!
//! | module | primitive | what it answers |
//! |---|---|---|
//! | [`semaphore`] | [`Semaphore`](semaphore::Semaphore) | the async, fair, weighted, resizable permit counter every bounded thing here is built on |
//! | [`pool`] | [`WorkerPool`](pool::WorkerPool), [`BlockingPool`](pool::BlockingPool), [`CpuPool`](pool::CpuPool) | "run at most N of these at once": I/O futures, blocking calls, CPU work; queued work by priority (strict or aged) |
//! | [`channel`] | [`bounded`](channel::bounded), [`Sender`](channel::Sender), [`Receiver`](channel::Receiver) | "a fast producer must slow down, not eat memory": bounded MPMC with backpressure |
//! | [`rate`] | [`RateLimiter`](rate::RateLimiter), [`KeyedRateLimiter`](rate::KeyedRateLimiter) | "at most R per period, bursts up to B": token bucket (GCRA) |
//! | [`breaker`] | [`CircuitBreaker`](breaker::CircuitBreaker) | "stop calling a backend that is failing, probe it, recover" |
//! | [`fanout`] | [`gather_with_timeout`](fanout::gather_with_timeout), [`Gather`](fanout::Gather), [`hedge`](fanout::hedge) | "ask N backends, answer by the deadline with what came back" |
//! | [`timing`] | [`Debouncer`](timing::Debouncer), [`Throttler`](timing::Throttler), [`TimingStreamExt`](timing::TimingStreamExt) | "collapse bursts of events" |
//! | [`batch`] | [`Loader`](batch::Loader) | "turn N concurrent lookups into ⌈N/size⌉ batch calls" (DataLoader) |
//! | [`retry`] | [`Retry`](retry::Retry), [`RetryBudget`](retry::RetryBudget) | "try again, later, but not forever and not all at once": backoff, jitter, deadline, budget |
//! | [`pipeline`] | [`Pipeline`](pipeline::Pipeline) | "wrap this call in all of it": timeout, retry, breaker, hedge, rate limit, bulkhead, adaptive limit, attempt timeout, fallback in one documented order |
//! | [`adaptive`] | [`AdaptiveLimiter`](adaptive::AdaptiveLimiter), [`Vegas`](adaptive::Vegas), [`Gradient2`](adaptive::Gradient2), [`Aimd`](adaptive::Aimd) | "find the backend's concurrency limit instead of guessing it" |
//! | [`histogram`] | [`Histogram`](histogram::Histogram), [`HistogramSnapshot`](histogram::HistogramSnapshot) | "how long did they wait, p50 to p999?": the fixed-memory, lock-free latency histogram in every `metrics()` |
//! | [`clock`] | [`Clock`](clock::Clock), [`ManualClock`](clock::ManualClock) | the time source cores read; Tokio's clock by default, a manual one for tests |
//! | `tower` (feature `tower`, off by default) | a `Layer` per primitive, `Refusal` → 429/503/504 | "drop it into axum, tonic or hyper": concurrency limit, load shedding, plain and keyed rate limits, breaker, timeout, retry, hedge, the whole pipeline |
//!
//! ## Which primitive?
//!
//! * **Async I/O** (HTTP, a database with an async driver): submit it to a
//!   bounded [`WorkerPool`](pool::WorkerPool); `submit` waits when the pool
//!   is saturated, `try_submit` sheds load.
//! * **A blocking library** (a synchronous driver, file I/O, FFI): a
//!   [`BlockingPool`](pool::BlockingPool), so at most N blocking threads are
//!   busy and the queue is bounded.
//! * **CPU-bound work** (parsing, scoring, hashing, compression): a
//!   [`CpuPool`](pool::CpuPool), whose own threads keep the runtime
//!   responsive.
//! * **Calls to other systems**: a [`RateLimiter`](rate::RateLimiter) so you
//!   stay within their quota (a [`KeyedRateLimiter`](rate::KeyedRateLimiter)
//!   per tenant or endpoint), a [`CircuitBreaker`](breaker::CircuitBreaker)
//!   so a failing backend is left alone to recover, and a deadline
//!   ([`gather_with_timeout`](fanout::gather_with_timeout) or
//!   [`Gather`](fanout::Gather) for many backends at once,
//!   [`hedge`](fanout::hedge) against a slow tail): usually all three;
//!   and a [`Retry`](retry::Retry) for the failures that are transient,
//!   with a [`RetryBudget`](retry::RetryBudget) so a dead backend is not
//!   hit by a retry storm. A [`Pipeline`](pipeline::Pipeline) composes
//!   all of these around each call in one documented order, with one
//!   classifier and one error that names the layer that refused.
//! * **Bursts of events** (keystrokes, file-system notifications, sensor
//!   readings): a [`Debouncer`](timing::Debouncer) acts once the burst is
//!   over, a [`Throttler`](timing::Throttler) at most once per period; both
//!   exist as [stream adapters](timing::TimingStreamExt) too.
//! * **N+1 lookups** (resolving the author of each of 1000 posts): a
//!   [`Loader`](batch::Loader) turns the concurrent `load(key)` calls into
//!   a few batch calls, de-duplicated and optionally cached.
//! * **Producers and consumers**: a bounded [`channel`]; `send` waits for
//!   room, `force_send` drops the oldest instead, watermarks tell a producer
//!   when to pause.
//! * **A concurrency limit you would otherwise guess** ("max 64 at once"
//!   to a backend whose speed varies): an
//!   [`AdaptiveLimiter`](adaptive::AdaptiveLimiter) measures latency and
//!   drops and moves the limit to the backend's knee (Netflix's Vegas,
//!   Gradient2 and AIMD), alone, in front of a
//!   [`WorkerPool`](pool::WorkerPool), or as a pipeline layer.
//! * **Anything else that must be bounded** (connections, bytes in flight):
//!   the [`Semaphore`](semaphore::Semaphore) directly.
//!
//! ## Cancel safety
//!
//! Every public `async fn`, and every method that returns a future, may be
//! dropped at any await point (by `select!`, a timeout or an aborted task)
//! without leaking a permit, a token, a queue slot, a probe slot or an
//! in-flight batch entry. What a dropped future means for *your* work:
//!
//! | module | method (future) | if the future is dropped before it completes |
//! |---|---|---|
//! | `semaphore` | [`acquire`](semaphore::Semaphore::acquire), [`acquire_many`](semaphore::Semaphore::acquire_many), [`acquire_owned`](semaphore::Semaphore::acquire_owned), [`acquire_many_owned`](semaphore::Semaphore::acquire_many_owned), `acquire[_many]_timeout`, `acquire[_many]_deadline` | permits already assigned to it pass to the next waiter; its place in the queue is given up |
//! | `pool` | [`WorkerPool::submit`](pool::WorkerPool::submit), `submit_timeout`, `submit_with_priority`; the same on [`BlockingPool`](pool::BlockingPool::submit) and [`CpuPool`](pool::CpuPool::submit) | while waiting for room: nothing is queued, the work is dropped unrun, the place goes to the next waiter |
//! | `pool` | [`BlockingPool::run`](pool::BlockingPool::run), [`CpuPool::run`](pool::CpuPool::run) | while waiting for room: nothing runs; once started: the call runs to its end, its result is discarded |
//! | `pool` | awaiting a [`TaskHandle`](pool::TaskHandle) | only the result is lost; the task carries on (use `abort` to stop it) |
//! | `pool` | [`WorkerPool::map`](pool::WorkerPool::map) and variants (a stream) | inputs not yet submitted are dropped; submitted tasks carry on detached |
//! | `pool` | `shutdown`, `shutdown_timeout` (all three pools) | the pool stays closed, its work keeps running |
//! | `channel` | [`Sender::send`](channel::Sender::send), `send_timeout`, `send_deadline` | the value is either fully queued or dropped unsent, never half-enqueued; to keep it, [`reserve`](channel::Sender::reserve) first |
//! | `channel` | [`reserve`](channel::Sender::reserve), `reserve_many`, `reserve_owned` | room already granted to it is returned and handed on |
//! | `channel` | [`Receiver::recv`](channel::Receiver::recv), `recv_timeout`, `recv_deadline`, `recv_many`, the `Stream` | no value is lost: values are taken only in the poll that returns them |
//! | `channel` | [`drained`](channel::Sender::drained) (sender and receiver) | only its registration is removed |
//! | `rate` | [`RateLimiter::acquire`](rate::RateLimiter::acquire), `acquire_timeout`, `acquire_deadline` | no token is consumed; the next caller in the queue moves up |
//! | `rate` | [`KeyedRateLimiter::acquire`](rate::KeyedRateLimiter::acquire) | no token is consumed (tokens are taken only when it completes) |
//! | `breaker` | [`CircuitBreaker::call`](breaker::CircuitBreaker::call), [`call_with`](breaker::CircuitBreaker::call_with) | the call and its permit are dropped: the outcome counts as nothing, a half-open probe slot is given back |
//! | `breaker` | [`wait_until_ready`](breaker::CircuitBreaker::wait_until_ready) | nothing: it holds nothing |
//! | `fanout` | [`gather_with_timeout`](fanout::gather_with_timeout), [`Gather`](fanout::Gather)'s [`GatherFuture`](fanout::GatherFuture) and [`GatherStream`](fanout::GatherStream) | every future still held is dropped (spawned ones aborted) |
//! | `fanout` | [`hedge`](fanout::hedge), [`hedge_with_attempt`](fanout::hedge_with_attempt) | every attempt in flight is dropped |
//! | `fanout` | awaiting a [`Straggler`](fanout::Straggler) | only the outcome is lost; the task carries on (use `abort` to stop it) |
//! | `timing` | [`Debouncer::call_wait`](timing::Debouncer::call_wait)'s [`CallWait`](timing::CallWait) (also through a [`Throttler`](timing::Throttler)) | the call is not undone; only the waiting stops |
//! | `timing` | [`Debounced`](timing::Debounced) (a stream) | the held item is dropped with the stream |
//! | `batch` | [`Loader::load`](batch::Loader::load), [`load_many`](batch::Loader::load_many) | only this caller's interest is given up; the batch still runs for the other callers (and fills the cache) |
//! | `retry` | [`Retry::call`](retry::Retry::call), `call_with_attempt`, `call_deadline` | the attempt in flight (or the sleep) is dropped and no further attempt is made |
//! | `pipeline` | [`Pipeline::call`](pipeline::Pipeline::call) | the attempt in flight (or the wait) is dropped: its breaker permit counts as nothing, its bulkhead permit returns, its adaptive permit returns unreported, no further attempt is made |
//! | `tower` (feature) | a service made ready then dropped; a response future dropped | a permit taken in `poll_ready` returns to its semaphore, a token is refunded, a wait leaves its queue; a breaker permit counts as nothing; the attempt in flight is dropped |
//! | `adaptive` | [`AdaptiveLimiter::acquire`](adaptive::AdaptiveLimiter::acquire), `acquire_timeout`, `acquire_deadline` | it leaves the backlog; a permit already granted to it goes to the next caller, unreported |
//! | `adaptive` | a held [`Permit`](adaptive::Permit) dropped with its task | returned as ignored: no sample |
//!
//! ## Examples, one per module
//!
//! Where time matters they run on Tokio's paused clock, so they finish at
//! once and the times they assert are exact.
//!
//! ### `semaphore`: bound anything
//!
//! ```
//! use flowguard::semaphore::Semaphore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let connections = Semaphore::new(3);
//! let big = connections.acquire_many(2).await.unwrap(); // weighted
//! assert!(connections.try_acquire_many(2).is_err()); // only 1 left
//! drop(big); // RAII: the permits come back
//! assert_eq!(connections.available(), 3);
//! # }
//! ```
//!
//! ### `pool`: at most N at once
//!
//! ```
//! use flowguard::pool::{CpuPool, WorkerPool};
//! use futures::StreamExt;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), flowguard::ConfigError> {
//! let io = WorkerPool::builder()
//!     .max_concurrency(8)
//!     .timeout(Duration::from_secs(2))
//!     .build()?;
//! let lengths: Vec<usize> = io
//!     .map(["a", "bb", "ccc"], |s| async move {
//!         tokio::time::sleep(Duration::from_millis(50)).await; // a backend call
//!         s.len()
//!     })
//!     .map(|r| r.unwrap_or(0))
//!     .collect()
//!     .await;
//! assert_eq!(lengths, vec![1, 2, 3]);
//! assert_eq!(io.metrics().completed, 3);
//!
//! let cpu = CpuPool::builder().threads(2).build()?;
//! let sum = cpu.run(|| (1..=1_000u64).sum::<u64>()).await.unwrap();
//! assert_eq!(sum, 500_500);
//! # Ok::<(), flowguard::ConfigError>(())
//! # }
//! ```
//!
//! ### `channel`: backpressure or eviction
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let (tx, rx) = flowguard::channel::bounded::<u32>(2).unwrap();
//! tx.send(1).await.unwrap();
//! tx.send(2).await.unwrap(); // full now: another `send` would wait
//! let evicted: Vec<u32> = tx.force_send(3).unwrap().collect();
//! assert_eq!(evicted, [1]); // the oldest made room
//! assert_eq!(rx.recv().await, Some(2));
//! assert_eq!(rx.recv().await, Some(3));
//! assert_eq!(rx.metrics().evicted, 1);
//! # }
//! ```
//!
//! ### `rate`: R per period, bursts of B
//!
//! ```
//! use flowguard::rate::{Quota, RateLimiter};
//! use std::time::Duration;
//! use tokio::time::Instant;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let quota = Quota::per_second(10).unwrap().with_burst(5).unwrap();
//! let limiter = RateLimiter::new(quota);
//! let start = Instant::now();
//! for _ in 0..7 {
//!     limiter.acquire(1).await.unwrap();
//! }
//! // 5 at once (the burst), then one every 100 ms.
//! assert_eq!(start.elapsed(), Duration::from_millis(200));
//! assert!(limiter.try_acquire(1).is_err());
//! # }
//! ```
//!
//! ### `breaker`: leave a failing backend alone
//!
//! ```
//! use flowguard::breaker::{BreakerError, CircuitBreaker, State};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let breaker = CircuitBreaker::builder()
//!     .consecutive_failures(2)
//!     .open_wait(Duration::from_secs(5))
//!     .build()
//!     .unwrap();
//! for _ in 0..2 {
//!     let r: Result<(), _> = breaker.call(|| async { Err("503") }).await;
//!     assert!(matches!(r, Err(BreakerError::Inner("503"))));
//! }
//! assert_eq!(breaker.state(), State::Open); // refuses without calling
//! let r: Result<(), BreakerError<&str>> = breaker.call(|| async { Ok(()) }).await;
//! assert!(r.unwrap_err().rejected().is_some());
//!
//! tokio::time::sleep(Duration::from_secs(5)).await; // the open wait
//! breaker.call(|| async { Ok::<_, &str>(()) }).await.unwrap(); // a probe
//! assert_eq!(breaker.metrics().refused, 1);
//! # }
//! ```
//!
//! ### `fanout`: answer by the deadline with what came back
//!
//! ```
//! use flowguard::fanout::gather_with_timeout;
//! use std::time::Duration;
//! use tokio::time::{Instant, sleep};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let start = Instant::now();
//! let shards = (0..4u64).map(|id| async move {
//!     sleep(Duration::from_millis(if id == 3 { 5_000 } else { 40 * (id + 1) })).await;
//!     id
//! });
//! let answers = gather_with_timeout(shards, Duration::from_millis(300)).await;
//! assert_eq!(start.elapsed(), Duration::from_millis(300));
//! assert_eq!(answers.completed_count(), 3);
//! assert_eq!(answers.timed_out().collect::<Vec<_>>(), [3]); // dropped, not left running
//! # }
//! ```
//!
//! ### `timing`: collapse bursts
//!
//! ```
//! use flowguard::timing::Debouncer;
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let searches = Arc::new(Mutex::new(Vec::new()));
//! let log = searches.clone();
//! let search = Debouncer::builder(Duration::from_millis(300))
//!     .build_sync(move |query: String| log.lock().unwrap().push(query))
//!     .unwrap();
//! for typed in ["r", "ru", "rus", "rust"] {
//!     search.call(typed.to_string()).unwrap();
//!     tokio::time::sleep(Duration::from_millis(100)).await; // typing
//! }
//! tokio::time::sleep(Duration::from_millis(300)).await; // the user pauses
//! assert_eq!(*searches.lock().unwrap(), ["rust"]);
//! assert_eq!((search.metrics().calls, search.metrics().invocations), (4, 1));
//! # }
//! ```
//!
//! ### `batch`: N lookups, one batch call
//!
//! ```
//! use flowguard::batch::Loader;
//! use std::collections::HashMap;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let users = Loader::new(|ids: Vec<u32>| async move {
//!     // One query for all the ids: SELECT .. WHERE id IN (..)
//!     Ok::<_, String>(ids.into_iter().map(|id| (id, format!("user {id}"))).collect::<HashMap<_, _>>())
//! });
//! let (a, b, c) = tokio::join!(users.load(1), users.load(2), users.load(1));
//! assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), ("user 1".into(), "user 2".into(), "user 1".into()));
//! let m = users.metrics();
//! assert_eq!((m.batches_dispatched, m.keys_loaded, m.deduplicated), (1, 2, 1));
//! # }
//! ```
//!
//! ### `retry`: again, later, not forever
//!
//! ```
//! use flowguard::retry::{Backoff, Retry, RetryError};
//! use std::time::Duration;
//! use tokio::time::Instant;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let retry = Retry::builder()
//!     .max_retries(3) // up to 4 calls
//!     .backoff(Backoff::exponential(Duration::from_secs(2), 2.0)) // 2 s, 4 s, 8 s
//!     .build()
//!     .unwrap();
//! let start = Instant::now();
//! let err = retry.call(|| async { Err::<(), _>("503") }).await.unwrap_err();
//! assert!(matches!(err, RetryError::Exhausted { error: "503", attempts: 4 }));
//! assert_eq!(start.elapsed(), Duration::from_secs(14));
//! # }
//! ```
//!
//! ### `pipeline`: all of it around one call
//!
//! ```
//! use flowguard::breaker::CircuitBreaker;
//! use flowguard::pipeline::{Pipeline, PipelineError};
//! use flowguard::retry::RetryPolicy;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let pipeline = Pipeline::builder()
//!     .timeout(Duration::from_secs(1))
//!     .retry(RetryPolicy::new().max_retries(5))
//!     .breaker(CircuitBreaker::builder().consecutive_failures(3).build().unwrap())
//!     .build()
//!     .unwrap();
//! let err = pipeline.call(|| async { Err::<(), _>("503") }).await.unwrap_err();
//! // Three attempts open the breaker; the retry does not call into it.
//! assert!(matches!(err, PipelineError::BreakerOpen { .. }));
//! assert_eq!(pipeline.metrics().retry.unwrap().attempts, 4);
//! # }
//! ```
//!
//! ### `adaptive`: find the limit instead of guessing it
//!
//! ```
//! use flowguard::adaptive::{AdaptiveLimiter, Aimd};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let limiter = AdaptiveLimiter::new(Aimd::builder().min_limit(1).build().unwrap()); // 20
//! let mut permits: Vec<_> = (0..20).map(|_| limiter.try_acquire().unwrap()).collect();
//! assert!(limiter.try_acquire().is_err()); // shed: at the limit
//! permits.pop().unwrap().success(); // busy and fine: + 1
//! assert_eq!(limiter.limit(), 21);
//! permits.pop().unwrap().dropped(); // a timeout or a 503: × 0.9
//! assert_eq!(limiter.limit(), 18);
//! let m = limiter.metrics();
//! assert_eq!((m.inflight, m.samples, m.drops, m.history.len()), (18, 2, 1, 2));
//! # }
//! ```
//!
//! ### `clock`: drive time by hand
//!
//! ```
//! use flowguard::clock::ManualClock;
//! use flowguard::rate::{Quota, RateLimiter};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let limiter = RateLimiter::with_clock(Quota::per_second(1).unwrap(), clock.clone());
//! assert!(limiter.try_acquire(1).is_ok());
//! assert!(limiter.try_acquire(1).is_err()); // no runtime, no sleeping
//! clock.advance(Duration::from_secs(1));
//! assert!(limiter.try_acquire(1).is_ok());
//! ```
//!
//! ## Guarantees
//!
//! * **Cancel safety**, as tabled above.
//! * **Errors, not panics.** Builders return [`ConfigError`] naming the bad
//!   field; impossible requests (more permits than the capacity, more tokens
//!   than the burst) fail at once with a typed error, never an endless wait.
//! * **Bounded memory.** Every queue, map and cache has a bound you set or
//!   can read from `metrics()`.
//! * **Observable.** Each primitive has a cheap `metrics()` or `snapshot()`
//!   of plain numbers; state transitions emit `tracing` events at `debug`.
//! * **Checked.** Each primitive has loom models of its concurrent
//!   invariants, a property test and a fuzz target against a reference
//!   model, and paused-clock behaviour tests.

// The library has no unsafe code. (Cargo.toml only denies it, so that a test
// may install a counting global allocator.)
#![forbid(unsafe_code)]

pub mod adaptive;
pub mod batch;
pub mod breaker;
/// Bounded MPMC channels with backpressure, weights, watermarks and eviction.
pub mod channel;
pub mod clock;
mod error;
/// Deadline fan-out: `gather_with_timeout`, the `Gather` builder (quorum, fail-fast, spawn) and hedged requests.
pub mod fanout;
pub mod histogram;
#[cfg(all(feature = "metrics", not(loom)))]
pub mod metrics;
pub mod pipeline;
pub mod pool;
/// Token-bucket rate limiters (GCRA): plain, FIFO-fair and keyed.
pub mod rate;
pub mod retry;
mod rng;
pub mod semaphore;
mod sync;
/// Debounce and throttle with lodash semantics: handles and stream adapters.
pub mod timing;
#[cfg(feature = "tower")]
pub mod tower;

pub use error::{ConfigError, ConfigErrorKind};
