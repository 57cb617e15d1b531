//! Where the buckets live: a Redis server (through redis-rs's
//! `ConnectionManager`) or the in-process [`MemoryStore`] that runs the
//! script's rule for tests.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use super::core::{Ask, SCRIPT, UnixTime, step};
use super::error::{RedisError, RedisErrorKind};
use crate::clock::{Clock, TokioClock};
use crate::sync::{Arc, Mutex};

/// One script call's raw result.
#[derive(Debug)]
pub(crate) struct Raw {
    pub(crate) reply: Vec<i64>,
    /// The server had lost the script (`NOSCRIPT`) and it was sent again.
    pub(crate) reloaded: bool,
}

pub(crate) enum Store {
    Redis(RedisStore),
    Memory(MemoryStore),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis(r) => f.debug_tuple("Redis").field(&r.conn).finish(),
            Self::Memory(m) => f.debug_tuple("Memory").field(m).finish(),
        }
    }
}

impl Store {
    /// One script call on `key`. No timeout here: the caller sets one.
    pub(crate) async fn call(&self, key: &str, ask: &Ask) -> Result<Raw, RedisError> {
        match self {
            Self::Redis(r) => r.call(key, ask).await,
            Self::Memory(m) => m.call(key, ask).await,
        }
    }

    /// Loads the script (`SCRIPT LOAD`) and checks its digest.
    pub(crate) async fn load(&self) -> Result<(), RedisError> {
        match self {
            Self::Redis(r) => r.load().await,
            Self::Memory(m) => m.answer(None).await.map(|_| ()),
        }
    }
}

pub(crate) struct RedisStore {
    conn: ConnectionManager,
    sha: String,
}

impl RedisStore {
    /// Needs a Tokio runtime (the manager spawns its reconnect task); it
    /// connects on first use and reconnects by itself after that.
    pub(crate) fn new(
        client: redis::Client,
        connect_timeout: Duration,
    ) -> Result<Self, RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            // The limiter times every call itself and paces reconnects with
            // its probe interval, so one connection attempt per reconnect.
            .set_response_timeout(None)
            .set_number_of_retries(0)
            .set_min_delay(Duration::from_millis(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            sha: redis::Script::new(SCRIPT).get_hash().to_owned(),
        })
    }

    async fn call(&self, key: &str, ask: &Ask) -> Result<Raw, RedisError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(1).arg(key).arg(&ask.argv()[..]);
        match cmd.query_async::<Vec<i64>>(&mut conn).await {
            Ok(reply) => Ok(Raw {
                reply,
                reloaded: false,
            }),
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // SCRIPT FLUSH, a restart or a failover emptied the cache:
                // EVAL runs the script and caches it again.
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(SCRIPT).arg(1).arg(key).arg(&ask.argv()[..]);
                let reply = cmd.query_async::<Vec<i64>>(&mut conn).await?;
                Ok(Raw {
                    reply,
                    reloaded: true,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn load(&self) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SCRIPT)
            .query_async(&mut conn)
            .await?;
        if sha != self.sha {
            return Err(RedisError::new(
                RedisErrorKind::Protocol,
                format!("SCRIPT LOAD returned digest {sha}, expected {}", self.sha),
            ));
        }
        Ok(())
    }
}

/// Above this many buckets the memory store drops the full ones.
const MEMORY_SWEEP_AT: usize = 1024;

/// An in-process stand-in for Redis: it runs the limiter script's rule on
/// its own map, with server time from a [`Clock`], and can be told to fail
/// or to answer slowly.
///
/// For tests of code that uses a [`RedisRateLimiter`](crate::rate::RedisRateLimiter):
/// no server needed, and with a paused Tokio clock every decision and every
/// timeout is exact. Clones share one store, so several limiters built on
/// clones behave like replicas sharing one Redis. Buckets that are full
/// again are dropped (as Redis expires their keys), so memory stays bounded
/// by the buckets in use.
///
/// # Examples
///
/// ```
/// use flowguard::rate::{FailurePolicy, MemoryStore, Quota, RedisErrorKind, RedisRateLimiter, TryAcquireError};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let store = MemoryStore::new();
/// let quota = Quota::per_second(2).unwrap();
/// let a = RedisRateLimiter::builder_in_memory(&store, "api", quota).build().unwrap();
/// let b = RedisRateLimiter::builder_in_memory(&store, "api", quota).build().unwrap();
/// a.try_acquire(1).await.unwrap();
/// b.try_acquire(1).await.unwrap();
/// assert!(matches!(a.try_acquire(1).await, Err(TryAcquireError::NotUntil { .. }))); // shared quota
///
/// store.set_fault(Some(RedisErrorKind::Connection)); // "Redis is down"
/// assert_eq!(
///     b.try_acquire(1).await,
///     Err(TryAcquireError::Unavailable { cause: RedisErrorKind::Connection }) // fail closed, the default
/// );
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<MemoryInner>,
}

struct MemoryInner {
    state: Mutex<MemoryState>,
    now: Box<dyn Fn() -> Instant + Send + Sync>,
    /// Server time at `origin`: an arbitrary Unix time, as on a real server.
    epoch: UnixTime,
    origin: Instant,
}

#[derive(Debug, Default)]
struct MemoryState {
    buckets: HashMap<String, UnixTime>,
    script_cached: bool,
    fault: Option<RedisErrorKind>,
    latency: Duration,
    calls: u64,
}

impl MemoryStore {
    /// A store whose server time follows the Tokio clock (so
    /// `tokio::time::pause()` drives it).
    ///
    /// # Panics
    ///
    /// Never.
    pub fn new() -> Self {
        Self::with_clock(TokioClock)
    }

    /// A store whose server time follows `clock`, e.g. a
    /// [`ManualClock`](crate::clock::ManualClock) shared with the limiters,
    /// or one set apart from theirs to show that their clocks do not matter.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::clock::ManualClock;
    /// use flowguard::rate::{MemoryStore, Quota, RedisRateLimiter};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let server = ManualClock::new();
    /// let store = MemoryStore::with_clock(server.clone());
    /// let limiter = RedisRateLimiter::builder_in_memory(&store, "k", Quota::per_second(1).unwrap())
    ///     .build()
    ///     .unwrap();
    /// limiter.try_acquire(1).await.unwrap();
    /// assert!(limiter.try_acquire(1).await.is_err());
    /// server.advance(Duration::from_secs(1)); // only the server's time counts
    /// limiter.try_acquire(1).await.unwrap();
    /// # }
    /// ```
    pub fn with_clock<C: Clock>(clock: C) -> Self {
        let origin = clock.now();
        Self {
            inner: Arc::new(MemoryInner {
                state: Mutex::new(MemoryState {
                    script_cached: true,
                    ..MemoryState::default()
                }),
                now: Box::new(move || clock.now()),
                epoch: UnixTime {
                    secs: 1_700_000_000,
                    nanos: 0,
                },
                origin,
            }),
        }
    }

    /// From now on every call fails with `fault` (after the latency), or
    /// none does (`None`), as a Redis that is down, or answers errors, would.
    pub fn set_fault(&self, fault: Option<RedisErrorKind>) {
        self.inner.state.lock().fault = fault;
    }

    /// Every call takes `latency` (on the Tokio clock) before it is
    /// answered, as a slow Redis would; the limiter's call timeout applies.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.state.lock().latency = latency;
    }

    /// Forgets the script, as `SCRIPT FLUSH` does: the next call is answered
    /// as a Redis answers `EVAL` after `EVALSHA` got `NOSCRIPT`, and the
    /// limiter counts it in [`script_loads`](crate::rate::RedisMetrics::script_loads).
    pub fn flush_scripts(&self) {
        self.inner.state.lock().script_cached = false;
    }

    /// Forgets every bucket (`FLUSHALL`).
    pub fn clear(&self) {
        self.inner.state.lock().buckets.clear();
    }

    /// How many buckets it holds (full ones are dropped as it goes).
    pub fn len(&self) -> usize {
        self.inner.state.lock().buckets.len()
    }

    /// Whether it holds no bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many script calls it answered or failed, `ping`s included.
    pub fn calls(&self) -> u64 {
        self.inner.state.lock().calls
    }

    fn now(&self) -> UnixTime {
        let since = (self.inner.now)().saturating_duration_since(self.inner.origin);
        UnixTime::from_nanos(self.inner.epoch.as_nanos() + since.as_nanos())
    }

    /// Waits out the latency, then fails with the fault or runs `ask`.
    async fn answer(&self, ask: Option<(&str, &Ask)>) -> Result<Raw, RedisError> {
        let latency = {
            let mut s = self.inner.state.lock();
            s.calls += 1;
            s.latency
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let now = self.now();
        let mut s = self.inner.state.lock();
        if let Some(kind) = s.fault {
            return Err(RedisError::new(kind, "injected by MemoryStore::set_fault"));
        }
        let reloaded = !std::mem::replace(&mut s.script_cached, true);
        let Some((key, ask)) = ask else {
            return Ok(Raw {
                reply: Vec::new(),
                reloaded,
            });
        };
        let stored = s.buckets.get(key).copied();
        let (new, reply) = step(stored, now, ask);
        if let Some(tat) = new {
            if s.buckets.len() >= MEMORY_SWEEP_AT && !s.buckets.contains_key(key) {
                s.buckets.retain(|_, tat| *tat > now);
            }
            s.buckets.insert(key.to_owned(), tat);
        } else if stored.is_some_and(|tat| tat <= now) {
            s.buckets.remove(key);
        }
        Ok(Raw {
            reply: reply.encode().to_vec(),
            reloaded,
        })
    }

    async fn call(&self, key: &str, ask: &Ask) -> Result<Raw, RedisError> {
        self.answer(Some((key, ask))).await
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.inner.state.lock();
        f.debug_struct("MemoryStore")
            .field("buckets", &s.buckets.len())
            .field("fault", &s.fault)
            .field("latency", &s.latency)
            .field("calls", &s.calls)
            .finish()
    }
}
