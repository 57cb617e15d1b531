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
//!
//! # Compared with Go's `x/time/rate` and resilience4j
//!
//! The bucket is Go's: `B` tokens at the start, refilled continuously at
//! one every `T`, a request of `n > B` refused at once. As in Go, a waiter
//! is admitted as of the instant its tokens are ready, not the instant it
//! happens to run: woken by Tokio's timer (up to 1 ms late) or by a
//! [`ManualClock`](crate::clock::ManualClock) moved in one step past that
//! instant, it is charged at the instant itself, and a wait with a deadline
//! succeeds when that instant is within the deadline. A test that moves a
//! manual clock coarsely sees what one moving it finely sees. Where this
//! differs, deliberately:
//!
//! * **Continuous refill, not cycles.** resilience4j's limiter refreshes
//!   `limitForPeriod` permits at the start of each `limitRefreshPeriod`;
//!   half a period after draining it has none, this one has half. Over
//!   any window both admit at most `B` plus the period's rate, and this
//!   one has no cycle edge where two periods' permits go out back to back
//!   (unless the burst allows it). [`set_quota`](crate::rate::RateLimiter::set_quota)
//!   takes effect at once, with the tokens saved so far carried over, as
//!   Go's `SetLimit` does (resilience4j waits for the next cycle).
//! * **A zero or past deadline still takes what is there.**
//!   `acquire_timeout(n, Duration::ZERO)` (or an `acquire_deadline` already
//!   past) is a `try_acquire` that answers with the acquire's error type;
//!   Go's `Wait` with an expired context fails even when tokens are there.
//! * **No reservations.** There is no `Reserve` returning a delay to sleep
//!   yourself: [`try_acquire`](crate::rate::RateLimiter::try_acquire)
//!   refuses with the exact instant to retry at (resilience4j's
//!   `reservePermission` and Go's `Reserve` take the tokens ahead, which
//!   lets the bucket go negative). [`refund`](crate::rate::RateLimiter::refund)
//!   gives `n` tokens back (never beyond a full bucket) whenever it is
//!   called, where Go's `Reservation.Cancel` restores only what later
//!   reservations have not used.
//! * **Whole tokens in snapshots.** `snapshot().available` counts whole
//!   tokens and ignores queued waiters; Go's `Tokens()` is fractional and
//!   resilience4j's `availablePermissions` goes negative with
//!   reservations.
//! * **No infinite rate, no zero burst.** Both are configuration errors:
//!   a limiter that admits everything is no limiter (leave it out), and
//!   one that admits nothing is a closed door (Go's `Limit(0)` with burst
//!   0).

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
