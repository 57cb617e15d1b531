//! The Redis-backed limiter (feature `redis`); the user guide is
//! `GUIDE.md`, rendered in the `rate` module's docs.
//!
//! Layers, as everywhere in the crate:
//!
//! * `core.rs` — pure: the script's arguments and reply, the rule the Lua
//!   script runs (in Rust, on `gcra.rs`), the reservation's accounting, the
//!   fallback share. `gcra.lua` is the script itself.
//! * `store.rs` — where buckets live: Redis (EVALSHA, EVAL on NOSCRIPT) or
//!   the in-process `MemoryStore`.
//! * `health.rs` — shared state: is Redis answering, who probes it next
//!   (two atomics; loom models of it and of the reservation's lock).
//! * `limiter.rs` — the async shell: timeouts, health and probes, the
//!   failure policy, the reservation's lock, metrics.

// Under `--cfg loom` without the feature only `core` and `health` are built,
// for the loom models in `health.rs`.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
mod core;
#[cfg(feature = "redis")]
mod error;
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
mod health;
#[cfg(feature = "redis")]
mod limiter;
#[cfg(feature = "redis")]
mod store;

#[cfg(feature = "redis")]
pub use error::{RedisError, RedisErrorKind};
#[cfg(feature = "redis")]
pub use limiter::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_PROBE_INTERVAL, FailurePolicy, KeyedRedisRateLimiter,
    RedisClient, RedisMetrics, RedisRateLimiter, RedisRateLimiterBuilder,
};
#[cfg(feature = "redis")]
pub use store::MemoryStore;
