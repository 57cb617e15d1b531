//! # flowguard
//!
//! Async flow-control and resilience primitives for Tokio: the pieces a
//! service needs to stay within its limits and survive its dependencies.
//!
//! | module | primitive | what it answers |
//! |---|---|---|
//! | [`semaphore`] | [`Semaphore`](semaphore::Semaphore) | the async, fair, weighted, resizable permit counter every bounded thing here is built on |
//! | [`pool`] | [`WorkerPool`](pool::WorkerPool), [`BlockingPool`](pool::BlockingPool), [`CpuPool`](pool::CpuPool) | "run at most N of these at once": I/O futures, blocking calls, CPU work |
//! | [`channel`] | [`bounded`](channel::bounded), [`Sender`](channel::Sender), [`Receiver`](channel::Receiver) | "a fast producer must slow down, not eat memory": bounded MPMC with backpressure |
//! | [`timing`] | [`Debouncer`](timing::Debouncer), [`Throttler`](timing::Throttler), [stream adapters](timing::TimingStreamExt) | "collapse bursts of events", with lodash's debounce/throttle semantics |
//! | [`breaker`] | [`CircuitBreaker`](breaker::CircuitBreaker) | "stop calling a backend that is failing, probe it, recover" |
//! | [`clock`] | [`Clock`](clock::Clock) | the time source cores read; Tokio's clock by default, a manual one for tests |
//!
//! ## Which primitive?
//!
//! * Async I/O (HTTP, a database with an async driver): submit it to a
//!   bounded [`WorkerPool`](pool::WorkerPool); `submit` waits when the pool
//!   is saturated, `try_submit` sheds load.
//! * A blocking library (a synchronous driver, file I/O, FFI): a
//!   [`BlockingPool`](pool::BlockingPool), so at most N blocking threads are
//!   busy and the queue is bounded.
//! * CPU-bound work (parsing, hashing, compression): a
//!   [`CpuPool`](pool::CpuPool), whose own threads keep the runtime responsive.
//! * Handing values from fast producers to slower consumers: a bounded
//!   [`channel`]; `send` waits for room, `force_send` drops the oldest
//!   instead, watermarks tell a producer when to pause.
//! * Calls to another system that can fail: behind a
//!   [`CircuitBreaker`](breaker::CircuitBreaker), so a failing backend is
//!   refused at once instead of piling up waiting callers, then probed.
//! * Anything else that must be bounded (connections, bytes in flight): the
//!   [`Semaphore`](semaphore::Semaphore) directly.
//!
//! ## Example
//!
//! ```
//! use flowguard::pool::WorkerPool;
//! use futures::StreamExt;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), flowguard::ConfigError> {
//! let pool = WorkerPool::builder()
//!     .max_concurrency(8)
//!     .timeout(Duration::from_secs(2))
//!     .build()?;
//!
//! let lengths: Vec<usize> = pool
//!     .map(["a", "bb", "ccc"], |s| async move {
//!         tokio::time::sleep(Duration::from_millis(50)).await; // a backend call
//!         s.len()
//!     })
//!     .map(|r| r.unwrap_or(0))
//!     .collect()
//!     .await;
//! assert_eq!(lengths, vec![1, 2, 3]);
//!
//! let m = pool.metrics();
//! assert_eq!((m.completed, m.running, m.queued), (3, 0, 0));
//! # Ok::<(), flowguard::ConfigError>(())
//! # }
//! ```
//!
//! ## Guarantees
//!
//! * **Cancel safety.** Every `async fn` documents it; dropping a future at
//!   any await point leaks no permit, slot or queue place.
//! * **Errors, not panics.** Builders return [`ConfigError`] naming the bad
//!   field; impossible requests (more permits than the capacity) fail at once.
//! * **Proven.** Each primitive has loom models of its concurrent invariants,
//!   a property test and a fuzz target against a reference model, and
//!   paused-clock behaviour tests.

// The library has no unsafe code. (Cargo.toml only denies it, so that a test
// may install a counting global allocator.)
#![forbid(unsafe_code)]

pub mod batch;
pub mod breaker;
/// Bounded MPMC channels with backpressure, weights, watermarks and eviction.
pub mod channel;
pub mod clock;
mod error;
/// Deadline fan-out: `gather_with_timeout`, the `Gather` builder (quorum, fail-fast, spawn) and hedged requests.
pub mod fanout;
pub mod pool;
/// Token-bucket rate limiters (GCRA): plain, FIFO-fair and keyed.
pub mod rate;
pub mod semaphore;
mod sync;
/// Debounce and throttle with lodash semantics: handles and stream adapters.
pub mod timing;

pub use error::{ConfigError, ConfigErrorKind};
