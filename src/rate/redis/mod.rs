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
//! * `limiter.rs` — the async shell: timeouts, health and probes, the
//!   failure policy, the reservation's lock, metrics.

mod core;
mod error;
mod limiter;
mod store;

pub use error::{RedisError, RedisErrorKind};
pub use limiter::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_PROBE_INTERVAL, FailurePolicy, KeyedRedisRateLimiter,
    RedisClient, RedisMetrics, RedisRateLimiter, RedisRateLimiterBuilder,
};
pub use store::MemoryStore;
