//! Token-bucket rate limiters: "at most R per period, bursts up to B".
//!
//! * [`Quota`](crate::rate::Quota) — the rate and the burst, validated; its docs give the exact
//!   formula (emission interval `T = period / n`, tolerance `tau = B * T`) and
//!   what burst means.
//! * [`RateLimiter`](crate::rate::RateLimiter) — one bucket (GCRA): a lock-free
//!   [`try_acquire`](crate::rate::RateLimiter::try_acquire) with an exact retry instant,
//!   a fair FIFO [`acquire`](crate::rate::RateLimiter::acquire), `acquire_timeout` with
//!   Go's fail-at-once semantics, [`refund`](crate::rate::RateLimiter::refund),
//!   [`set_quota`](crate::rate::RateLimiter::set_quota) and a [`snapshot`](crate::rate::RateLimiter::snapshot).
//! * [`KeyedRateLimiter`](crate::rate::KeyedRateLimiter) — one bucket per key, sharded, with idle keys
//!   evicted as it goes and a hard `max_keys` cap.
//!
//! Both read time through a [`Clock`](crate::clock::Clock) (default
//! [`FastClock`](crate::clock::FastClock): a calibrated CPU counter when made
//! inside a multi-thread runtime; Tokio's own clock anywhere else, so
//! `tokio::time::pause()` drives checks and waits alike).
//!
//! # Spacing
//!
//! "At most one call every 200 ms, no bursts" is a quota with burst 1:
//!
//! ```
//! use flowguard::rate::{Quota, RateLimiter};
//! use std::time::Duration;
//! use tokio::time::Instant;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let spacing = RateLimiter::new(Quota::with_period(1, Duration::from_millis(200)).unwrap());
//! let start = Instant::now();
//! for _ in 0..3 {
//!     spacing.acquire(1).await.unwrap();
//! }
//! assert_eq!(start.elapsed(), Duration::from_millis(400));
//! # }
//! ```

// The Redis limiter's guide (feature `redis`) lives beside its code.
#![cfg_attr(feature = "redis", doc = include_str!("redis/GUIDE.md"))]

mod error;
pub(crate) mod gcra;
mod keyed;
mod limiter;
mod quota;
// Without the feature, loom still builds the Redis limiter's pure core and
// health flag for their models (`--lib` under `--cfg loom`): the `redis`
// crate itself does not build under loom.
#[cfg(any(feature = "redis", all(loom, test)))]
mod redis;

pub use error::{AcquireError, TryAcquireError};
pub use keyed::{
    DEFAULT_MAX_KEYS, DEFAULT_SHARDS, KeyedRateLimiter, KeyedRateLimiterBuilder, KeyedSnapshot,
};
pub use limiter::{Acquire, RateLimiter, RateSnapshot};
pub use quota::Quota;
#[cfg(feature = "redis")]
pub use redis::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_PROBE_INTERVAL, FailurePolicy, KeyedRedisRateLimiter,
    MemoryStore, RedisClient, RedisError, RedisErrorKind, RedisMetrics, RedisRateLimiter,
    RedisRateLimiterBuilder,
};
