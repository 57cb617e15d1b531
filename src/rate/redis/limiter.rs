//! The async shell: [`RedisRateLimiter`], [`KeyedRedisRateLimiter`], their
//! builder, the failure policy and the metrics.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use tokio::time::Instant;

use super::core::{Ask, MAX_REDIS_TOLERANCE, Reply, Reservation, Spend, decode, share};
use super::error::{RedisError, RedisErrorKind};
use super::health::Health;
use super::store::{MemoryStore, RedisStore, Store};
use crate::clock::nanos_between as nanos_since;
use crate::clock::{Clock, TokioClock};
use crate::rate::{AcquireError, KeyedRateLimiter, Quota, RateLimiter, TryAcquireError};
use crate::rng::{SplitMix64, entropy_seed};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Mutex};
use crate::{ConfigError, ConfigErrorKind};

/// The `redis` crate's client, re-exported so that building a limiter does
/// not need a matching `redis` dependency of your own.
pub use ::redis::Client as RedisClient;

/// Default [`RedisRateLimiterBuilder::call_timeout`]: 100 ms.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(100);
/// Default [`RedisRateLimiterBuilder::probe_interval`]: 500 ms.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(500);

const COMPONENT: &str = "redis rate limiter";

/// What a limiter does while Redis cannot be asked (no connection, no
/// answer within the call timeout, an error reply).
///
/// | policy | while Redis is unreachable | the fleet admits at most | use when |
/// |---|---|---|---|
/// | [`FailClosed`](FailurePolicy::FailClosed) (default) | every check is refused with `Unavailable { cause }` | nothing | exceeding the quota is worse than refusing everything (a paid API, a hard contract) |
/// | [`FailOpen`](FailurePolicy::FailOpen) | every check is admitted | everything | the limiter protects a backend that can take a short overload, availability comes first |
/// | [`LocalShare { replicas }`](FailurePolicy::LocalShare) | each replica limits itself with a local bucket of `1/replicas` of the quota | the quota, if `replicas` is at least the real number of replicas (see below) | the usual choice: degraded but still limited |
///
/// With `LocalShare`, each replica's local bucket has the emission interval
/// `T * replicas` and the burst `burst / replicas` (rounded down, at least
/// 1), so `replicas` of them admit the quota's rate and at most
/// `max(burst, replicas)` at once. Fewer real replicas than `replicas`
/// admit less; more admit proportionally more. The local bucket is created
/// full when the limiter is built and kept across outages.
///
/// In every case a failed round trip counts as one
/// [`redis_errors`](RedisMetrics::redis_errors) and each decision the policy
/// makes as one [`fallbacks`](RedisMetrics::fallbacks). After a connection
/// failure or a timeout the limiter stops asking Redis and applies the policy
/// at once, letting one call through every
/// [`probe_interval`](RedisRateLimiterBuilder::probe_interval) to see whether
/// Redis is back (the connection itself is re-established by redis-rs's
/// `ConnectionManager`).
///
/// # Examples
///
/// ```
/// use flowguard::rate::{FailurePolicy, MemoryStore, Quota, RedisErrorKind, RedisRateLimiter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let store = MemoryStore::new();
/// let limiter = RedisRateLimiter::builder_in_memory(&store, "k", Quota::per_second(100).unwrap())
///     .failure_policy(FailurePolicy::LocalShare { replicas: 4 })
///     .build()
///     .unwrap();
/// store.set_fault(Some(RedisErrorKind::Connection));
/// let admitted = futures::future::join_all((0..100).map(|_| limiter.try_acquire(1))).await;
/// assert_eq!(admitted.iter().filter(|r| r.is_ok()).count(), 25); // this replica's share of the burst
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Refuse every check with
    /// [`TryAcquireError::Unavailable`] / [`AcquireError::Unavailable`].
    #[default]
    FailClosed,
    /// Admit every check.
    FailOpen,
    /// Limit with a local bucket holding this replica's share of the quota.
    LocalShare {
        /// How many replicas share the quota (at least 1).
        replicas: u32,
    },
}

/// Counters of a Redis limiter since it was built: plain numbers, cheap to
/// read (one atomic load each).
///
/// `calls = admitted + refused + (checks cancelled or in flight)`.
///
/// # Examples
///
/// ```
/// use flowguard::rate::{MemoryStore, Quota, RedisRateLimiter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let store = MemoryStore::new();
/// let limiter = RedisRateLimiter::builder_in_memory(&store, "k", Quota::per_second(1).unwrap())
///     .build()
///     .unwrap();
/// let _ = limiter.try_acquire(1).await;
/// let _ = limiter.try_acquire(1).await;
/// let m = limiter.metrics();
/// assert_eq!((m.calls, m.admitted, m.refused, m.round_trips, m.redis_errors), (2, 1, 1, 2, 0));
/// assert!(m.redis_healthy);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RedisMetrics {
    /// Checks asked for (`try_acquire` and `acquire` calls, `n == 0` included).
    pub calls: u64,
    /// Checks that ended admitted (by Redis, the reservation or the policy).
    pub admitted: u64,
    /// Checks that ended refused (not yet, never possible, or fail-closed).
    pub refused: u64,
    /// Script calls sent to Redis (an `acquire` may send several).
    pub round_trips: u64,
    /// Round trips that failed, timeouts included.
    pub redis_errors: u64,
    /// Of those, the ones that timed out.
    pub timeouts: u64,
    /// Decisions made by the [`FailurePolicy`] instead of Redis.
    pub fallbacks: u64,
    /// Times Redis had lost the script (`NOSCRIPT`) and it was sent again
    /// with `EVAL`.
    pub script_loads: u64,
    /// Checks served from the local reservation without a round trip.
    pub reservation_hits: u64,
    /// Reserved tokens dropped unused (expired, or beyond the cap).
    pub reservation_wasted: u64,
    /// Sum of the successful round trips' latency.
    pub round_trip_total: Duration,
    /// The slowest successful round trip.
    pub round_trip_max: Duration,
    /// Whether the last round trip reached Redis (`false`: the policy is in
    /// force and calls are probing).
    pub redis_healthy: bool,
}

impl RedisMetrics {
    /// Mean latency of the successful round trips; `None` before the first.
    pub fn round_trip_mean(&self) -> Option<Duration> {
        let ok = self.round_trips.checked_sub(self.redis_errors)?;
        if ok == 0 {
            return None;
        }
        Some(self.round_trip_total / u32::try_from(ok).unwrap_or(u32::MAX))
    }
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    admitted: AtomicU64,
    refused: AtomicU64,
    round_trips: AtomicU64,
    redis_errors: AtomicU64,
    timeouts: AtomicU64,
    fallbacks: AtomicU64,
    script_loads: AtomicU64,
    reservation_hits: AtomicU64,
    latency_total_ns: AtomicU64,
    latency_max_ns: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

enum StoreSpec {
    Client(RedisClient),
    Memory(MemoryStore),
}

/// Configures a [`RedisRateLimiter`] (or, with
/// [`build_keyed`](RedisRateLimiterBuilder::build_keyed), a
/// [`KeyedRedisRateLimiter`]).
///
/// # Examples
///
/// ```
/// use flowguard::rate::{FailurePolicy, MemoryStore, Quota, RedisRateLimiter};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let store = MemoryStore::new();
/// let limiter = RedisRateLimiter::builder_in_memory(&store, "search-api", Quota::per_second(500).unwrap())
///     .failure_policy(FailurePolicy::LocalShare { replicas: 10 })
///     .call_timeout(Duration::from_millis(50))
///     .local_reservation(5, Duration::from_millis(100))
///     .build()
///     .unwrap();
/// assert!(limiter.try_acquire(1).await.is_ok());
///
/// let err = RedisRateLimiter::builder_in_memory(&store, "k", Quota::per_second(5).unwrap())
///     .local_reservation(6, Duration::from_millis(100))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "local_reservation");
/// # }
/// ```
pub struct RedisRateLimiterBuilder<C: Clock = TokioClock> {
    store: StoreSpec,
    key: String,
    quota: Quota,
    policy: FailurePolicy,
    call_timeout: Duration,
    probe_interval: Duration,
    reservation: Option<(u32, Duration)>,
    clock: C,
}

impl<C: Clock> fmt::Debug for RedisRateLimiterBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiterBuilder")
            .field("key", &self.key)
            .field("quota", &self.quota)
            .field("policy", &self.policy)
            .field("call_timeout", &self.call_timeout)
            .field("probe_interval", &self.probe_interval)
            .field("reservation", &self.reservation)
            .finish()
    }
}

impl RedisRateLimiterBuilder<TokioClock> {
    fn new(store: StoreSpec, key: String, quota: Quota) -> Self {
        Self {
            store,
            key,
            quota,
            policy: FailurePolicy::default(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            reservation: None,
            clock: TokioClock,
        }
    }
}

impl<C: Clock> RedisRateLimiterBuilder<C> {
    /// What to do while Redis cannot be asked (default
    /// [`FailurePolicy::FailClosed`]).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The longest one round trip may take, connecting included, before the
    /// failure policy decides (default [`DEFAULT_CALL_TIMEOUT`]).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// While Redis is unreachable, one call per interval goes to Redis to see
    /// whether it is back; the others get the policy's answer at once
    /// (default [`DEFAULT_PROBE_INTERVAL`]).
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// Take up to `batch` tokens per round trip and spend the extra ones
    /// locally, for at most `max_age`.
    ///
    /// Cuts round trips by up to `batch` times under load. The price: a
    /// replica holds at most `batch - 1` tokens that Redis counted as spent,
    /// so **a fleet of `R` replicas admits at most `R * (batch - 1)` tokens
    /// above the quota in any window**; held tokens unused after `max_age`
    /// are dropped (admitting less). `batch` 1 turns it off (the default).
    pub fn local_reservation(mut self, batch: u32, max_age: Duration) -> Self {
        self.reservation = Some((batch, max_age));
        self
    }

    /// Reads local time from `clock` (default [`TokioClock`]): for retry
    /// instants, reservation ages and probe intervals only. Decisions use
    /// Redis's time, so a clock that is off by any constant changes nothing.
    pub fn clock<C2: Clock>(self, clock: C2) -> RedisRateLimiterBuilder<C2> {
        RedisRateLimiterBuilder {
            store: self.store,
            key: self.key,
            quota: self.quota,
            policy: self.policy,
            call_timeout: self.call_timeout,
            probe_interval: self.probe_interval,
            reservation: self.reservation,
            clock,
        }
    }

    fn engine(self) -> Result<Built<C>, ConfigError> {
        let q = self.quota.gcra();
        if q.tau() > MAX_REDIS_TOLERANCE {
            return Err(ConfigError::new(
                COMPONENT,
                "quota",
                ConfigErrorKind::TooLarge,
                format!(
                    "burst * emission interval must be at most {MAX_REDIS_TOLERANCE} ns (about 52 days: Lua numbers are doubles), got {:?}",
                    self.quota.tolerance()
                ),
            ));
        }
        if self.key.is_empty() {
            return Err(ConfigError::new(
                COMPONENT,
                "key",
                ConfigErrorKind::Zero,
                "must not be empty",
            ));
        }
        if self.call_timeout.is_zero() {
            return Err(ConfigError::new(
                COMPONENT,
                "call_timeout",
                ConfigErrorKind::Zero,
                "must be longer than zero",
            ));
        }
        if self.probe_interval.is_zero() {
            return Err(ConfigError::new(
                COMPONENT,
                "probe_interval",
                ConfigErrorKind::Zero,
                "must be longer than zero",
            ));
        }
        if let Some((batch, max_age)) = self.reservation {
            if batch == 0 || max_age.is_zero() {
                return Err(ConfigError::new(
                    COMPONENT,
                    "local_reservation",
                    ConfigErrorKind::Zero,
                    "batch and max_age must be at least 1 (batch 1 means no reservation)",
                ));
            }
            if batch > q.burst {
                return Err(ConfigError::new(
                    COMPONENT,
                    "local_reservation",
                    ConfigErrorKind::TooLarge,
                    format!("batch must be at most the burst {}, got {batch}", q.burst),
                ));
            }
        }
        let share = match self.policy {
            FailurePolicy::LocalShare { replicas } => Some(share_quota(&self.quota, replicas)?),
            _ => None,
        };
        let store = match self.store {
            StoreSpec::Memory(m) => Store::Memory(m),
            StoreSpec::Client(client) => {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(ConfigError::new(
                        COMPONENT,
                        "runtime",
                        ConfigErrorKind::Missing,
                        "build() must run inside a Tokio runtime (the connection manager spawns its reconnect task there)",
                    ));
                }
                let store = RedisStore::new(client, self.call_timeout).map_err(|e| {
                    ConfigError::new(
                        COMPONENT,
                        "client",
                        ConfigErrorKind::Conflict,
                        e.to_string(),
                    )
                })?;
                Store::Redis(store)
            }
        };
        let origin = self.clock.now();
        let engine = Engine {
            store,
            t: q.t,
            tau: q.tau(),
            burst: q.burst,
            policy: self.policy,
            share,
            call_timeout: self.call_timeout,
            probe_interval_ns: duration_ns(self.probe_interval),
            health: Health::new(),
            counters: Counters::default(),
            rng: Mutex::new(SplitMix64::new(entropy_seed())),
            origin,
            clock: self.clock,
        };
        Ok(Built {
            engine,
            key: self.key,
            reservation: self.reservation,
        })
    }

    /// Builds the limiter. It connects on first use (or on
    /// [`ping`](RedisRateLimiter::ping)); an unreachable Redis is the
    /// failure policy's business, not an error here.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the field: `quota` when its tolerance (burst ×
    /// emission interval) exceeds about 52 days; `key` when empty;
    /// `call_timeout`, `probe_interval` when zero; `local_reservation` for a
    /// zero batch or age, or a batch above the burst; `replicas` for a
    /// `LocalShare` whose share cannot be represented; `runtime` when a
    /// Redis client is used outside a Tokio runtime.
    ///
    /// # Panics
    ///
    /// Never.
    pub fn build(self) -> Result<RedisRateLimiter<C>, ConfigError> {
        let Built {
            engine,
            key,
            reservation,
        } = self.engine()?;
        let (batch, max_age) = reservation.unwrap_or((1, Duration::from_secs(1)));
        let fallback = engine
            .share
            .map(|q| RateLimiter::with_clock(q, engine.clock.clone()));
        Ok(RedisRateLimiter {
            inner: Arc::new(Single {
                key,
                fallback,
                reservation: Mutex::new(Reservation::new(batch, duration_ns(max_age))),
                engine,
            }),
        })
    }

    /// Builds a [`KeyedRedisRateLimiter`]: the key given to the builder is
    /// the prefix of every bucket's Redis key (`"<prefix>:<key>"`).
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build); `local_reservation` is
    /// [`ConfigErrorKind::Conflict`]: keyed limiters do not reserve (it
    /// would hold tokens for every key).
    ///
    /// # Panics
    ///
    /// Never.
    pub fn build_keyed<K: fmt::Display + ?Sized>(
        self,
    ) -> Result<KeyedRedisRateLimiter<K, C>, ConfigError> {
        if matches!(self.reservation, Some((b, _)) if b > 1) {
            return Err(ConfigError::new(
                COMPONENT,
                "local_reservation",
                ConfigErrorKind::Conflict,
                "a keyed limiter does not reserve tokens locally",
            ));
        }
        let Built {
            engine,
            key: prefix,
            ..
        } = self.engine()?;
        let fallback = engine
            .share
            .map(|q| KeyedRateLimiter::with_clock(q, engine.clock.clone()));
        Ok(KeyedRedisRateLimiter {
            inner: Arc::new(Keyed {
                prefix,
                fallback,
                engine,
            }),
            _key: PhantomData,
        })
    }
}

/// A validated configuration, before the limiter form is chosen.
struct Built<C> {
    engine: Engine<C>,
    key: String,
    reservation: Option<(u32, Duration)>,
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The quota one of `replicas` replicas enforces alone.
fn share_quota(quota: &Quota, replicas: u32) -> Result<Quota, ConfigError> {
    let err = |why: String| ConfigError::new(COMPONENT, "replicas", ConfigErrorKind::TooLarge, why);
    if replicas == 0 {
        return Err(ConfigError::new(
            COMPONENT,
            "replicas",
            ConfigErrorKind::Zero,
            "LocalShare needs at least 1 replica",
        ));
    }
    let q = quota.gcra();
    let (t, burst) = share(q.t, q.burst, replicas).ok_or_else(|| {
        err(format!(
            "{replicas} replicas overflow the emission interval"
        ))
    })?;
    Quota::with_period(1, Duration::from_nanos(t))
        .and_then(|s| s.with_burst(burst))
        .map_err(|e| {
            err(format!(
                "the share of {replicas} replicas is too slow: {}",
                e.reason()
            ))
        })
}

/// The local share's answer: a request larger than the share's burst is
/// not "never possible" (Redis could serve it), only not now.
fn share_answer(
    r: Result<(), TryAcquireError>,
    cause: RedisErrorKind,
) -> Result<(), TryAcquireError> {
    match r {
        Err(TryAcquireError::InsufficientCapacity { .. }) => {
            Err(TryAcquireError::Unavailable { cause })
        }
        r => r,
    }
}

/// What both limiter forms share: the store, the policy, health, counters.
struct Engine<C> {
    store: Store,
    t: u64,
    tau: u64,
    burst: u32,
    policy: FailurePolicy,
    share: Option<Quota>,
    call_timeout: Duration,
    probe_interval_ns: u64,
    /// Whether Redis answers; while not, who probes it next.
    health: Health,
    counters: Counters,
    /// Jitter for `acquire`'s retries.
    rng: Mutex<SplitMix64>,
    origin: Instant,
    clock: C,
}

/// Why a check did not get an answer from Redis.
enum Missed {
    /// Redis was asked and failed.
    Failed(RedisErrorKind),
    /// Redis is known down and this was not a probe.
    Skipped(RedisErrorKind),
}

impl Missed {
    fn cause(&self) -> RedisErrorKind {
        match self {
            Self::Failed(k) | Self::Skipped(k) => *k,
        }
    }
}

impl<C: Clock> Engine<C> {
    fn now(&self) -> u64 {
        nanos_since(self.origin, self.clock.now())
    }

    /// `Some(cause)` when Redis is down and this call is not the probe.
    fn skip(&self, now: u64) -> Option<RedisErrorKind> {
        self.health
            .skip(now, self.probe_interval_ns)
            .map(RedisErrorKind::from_u8)
    }

    /// One timed script call, decoded, with the counters and health updated.
    async fn round_trip(&self, key: &str, ask: &Ask) -> Result<Reply, RedisErrorKind> {
        let c = &self.counters;
        bump(&c.round_trips);
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.call_timeout, self.store.call(key, ask)).await
        {
            Ok(Ok(raw)) => {
                if raw.reloaded {
                    bump(&c.script_loads);
                    tracing::debug!(key, "redis had lost the rate limit script; sent it again");
                }
                decode(&raw.reply, ask).map_err(|e| {
                    RedisError::new(
                        RedisErrorKind::Protocol,
                        format!("{e} (reply {:?})", raw.reply),
                    )
                })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RedisError::new(
                RedisErrorKind::Timeout,
                format!("no answer within {:?}", self.call_timeout),
            )),
        };
        match outcome {
            Ok(reply) => {
                let took = duration_ns(started.elapsed());
                c.latency_total_ns.fetch_add(took, Ordering::Relaxed);
                c.latency_max_ns.fetch_max(took, Ordering::Relaxed);
                if self.health.answered() {
                    tracing::debug!(
                        key,
                        "redis answers again; the shared quota is back in force"
                    );
                }
                Ok(reply)
            }
            Err(e) => {
                bump(&c.redis_errors);
                let kind = e.kind();
                if kind == RedisErrorKind::Timeout {
                    bump(&c.timeouts);
                }
                if matches!(kind, RedisErrorKind::Connection | RedisErrorKind::Timeout) {
                    let next_probe_at = self.now().saturating_add(self.probe_interval_ns);
                    if self.health.unreachable(kind.as_u8(), next_probe_at) {
                        tracing::debug!(key, error = %e, policy = ?self.policy, "redis unreachable; the failure policy is in force");
                    }
                } else {
                    tracing::debug!(key, error = %e, "redis call failed");
                }
                Err(kind)
            }
        }
    }

    /// Asks Redis unless it is known down.
    async fn ask(&self, key: &str, ask: &Ask, now: u64) -> Result<Reply, Missed> {
        if let Some(cause) = self.skip(now) {
            return Err(Missed::Skipped(cause));
        }
        self.round_trip(key, ask).await.map_err(Missed::Failed)
    }

    fn refused_for(&self, reply: &Reply) -> TryAcquireError {
        TryAcquireError::NotUntil {
            retry_after: self.clock.now() + Duration::from_nanos(reply.wait_ns),
        }
    }

    /// The policy's answer for FailClosed / FailOpen; `None` for LocalShare.
    fn fixed_answer(&self, cause: RedisErrorKind) -> Option<Result<(), TryAcquireError>> {
        bump(&self.counters.fallbacks);
        match self.policy {
            FailurePolicy::FailOpen => Some(Ok(())),
            FailurePolicy::LocalShare { .. } => None,
            _ => Some(Err(TryAcquireError::Unavailable { cause })),
        }
    }

    fn insufficient(&self, n: u32) -> Option<TryAcquireError> {
        (n > self.burst).then_some(TryAcquireError::InsufficientCapacity {
            requested: n,
            burst: self.burst,
        })
    }

    fn count(&self, r: &Result<(), TryAcquireError>) {
        bump(if r.is_ok() {
            &self.counters.admitted
        } else {
            &self.counters.refused
        });
    }

    fn metrics(&self, wasted: u64) -> RedisMetrics {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RedisMetrics {
            calls: l(&c.calls),
            admitted: l(&c.admitted),
            refused: l(&c.refused),
            round_trips: l(&c.round_trips),
            redis_errors: l(&c.redis_errors),
            timeouts: l(&c.timeouts),
            fallbacks: l(&c.fallbacks),
            script_loads: l(&c.script_loads),
            reservation_hits: l(&c.reservation_hits),
            reservation_wasted: wasted,
            round_trip_total: Duration::from_nanos(l(&c.latency_total_ns)),
            round_trip_max: Duration::from_nanos(l(&c.latency_max_ns)),
            redis_healthy: self.health.is_up(),
        }
    }

    /// `acquire` on top of a `try_acquire`: sleep until the retry instant.
    async fn wait_loop<F, Fut>(
        &self,
        deadline: Option<Instant>,
        mut check: F,
    ) -> Result<(), AcquireError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), TryAcquireError>>,
    {
        loop {
            match check().await {
                Ok(()) => return Ok(()),
                Err(TryAcquireError::NotUntil { retry_after }) => {
                    if deadline.is_some_and(|d| retry_after > d) {
                        return Err(AcquireError::Timeout { retry_after });
                    }
                    // Replicas refused at the same moment would all wake at
                    // the same instant, and the one whose timer fires first
                    // would win every race: a random extra delay of up to
                    // one emission interval makes them take turns.
                    let jitter = self.rng.lock().between(0, self.t);
                    let now = self.clock.now();
                    let mut wait =
                        retry_after.saturating_duration_since(now) + Duration::from_nanos(jitter);
                    if let Some(d) = deadline {
                        // The delay never carries a wait past the caller's
                        // deadline (up to one emission interval late): the
                        // retry instant is within it, so ask then.
                        wait = wait.min(d.saturating_duration_since(now));
                    }
                    tokio::time::sleep(wait).await;
                }
                Err(TryAcquireError::InsufficientCapacity { requested, burst }) => {
                    return Err(AcquireError::InsufficientCapacity { requested, burst });
                }
                Err(TryAcquireError::Unavailable { cause }) => {
                    return Err(AcquireError::Unavailable { cause });
                }
            }
        }
    }
}

/// A rate limiter whose bucket lives in Redis, so that every replica of a
/// service that uses the same key shares one [`Quota`]: "at most R per
/// period, bursts up to B" for the whole fleet.
///
/// The same GCRA as [`RateLimiter`], run atomically in Redis by one Lua
/// script, on Redis's clock; the same [`try_acquire`](Self::try_acquire) and
/// [`acquire`](Self::acquire) with the same errors (plus
/// [`Unavailable`](TryAcquireError::Unavailable) under the fail-closed
/// policy), so moving from a local limiter means building this one instead
/// and adding `.await` to `try_acquire`. See the [module docs](crate::rate)
/// for how it works, what it costs and what a fleet may overshoot.
///
/// Clones share the connection, the reservation and the metrics.
///
/// # Examples
///
/// ```no_run
/// use flowguard::rate::{FailurePolicy, Quota, RedisClient, RedisRateLimiter, TryAcquireError};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = RedisClient::open("redis://127.0.0.1:6379/")?;
/// // 100 calls per second to the payments API, for all replicas together.
/// let limiter = RedisRateLimiter::builder(client, "ratelimit:payments-api", Quota::per_second(100)?)
///     .failure_policy(FailurePolicy::LocalShare { replicas: 8 })
///     .build()?;
/// match limiter.try_acquire(1).await {
///     Ok(()) => { /* call the API */ }
///     Err(TryAcquireError::NotUntil { retry_after }) => { /* shed, or come back at retry_after */ }
///     Err(e) => return Err(e.into()),
/// }
/// limiter.acquire(1).await?; // or wait for a token
/// # Ok(()) }
/// ```
///
/// With the in-process [`MemoryStore`] (for tests), on a paused clock:
///
/// ```
/// use flowguard::rate::{MemoryStore, Quota, RedisRateLimiter, TryAcquireError};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let store = MemoryStore::new();
/// let limiter = RedisRateLimiter::builder_in_memory(&store, "k", Quota::per_second(2).unwrap())
///     .build()
///     .unwrap();
/// limiter.try_acquire(2).await.unwrap();
/// let Err(TryAcquireError::NotUntil { retry_after }) = limiter.try_acquire(1).await else { panic!() };
/// assert_eq!(retry_after - tokio::time::Instant::now(), Duration::from_millis(500));
/// # }
/// ```
pub struct RedisRateLimiter<C: Clock = TokioClock> {
    inner: Arc<Single<C>>,
}

struct Single<C: Clock> {
    engine: Engine<C>,
    key: String,
    fallback: Option<RateLimiter<C>>,
    reservation: Mutex<Reservation>,
}

/// Hands borrowed reservation tokens back unless the round trip used them,
/// also when the check is cancelled mid-flight.
struct Borrowed<'a, C: Clock> {
    single: &'a Single<C>,
    tokens: u32,
}

impl<C: Clock> Drop for Borrowed<'_, C> {
    fn drop(&mut self) {
        if self.tokens > 0 {
            let now = self.single.engine.now();
            self.single.reservation.lock().give_back(self.tokens, now);
        }
    }
}

impl RedisRateLimiter<TokioClock> {
    /// Starts configuring a limiter on `client`, whose bucket is the Redis
    /// key `key`. Every replica that should share the quota uses the same
    /// key and quota.
    pub fn builder(
        client: RedisClient,
        key: impl Into<String>,
        quota: Quota,
    ) -> RedisRateLimiterBuilder {
        RedisRateLimiterBuilder::new(StoreSpec::Client(client), key.into(), quota)
    }

    /// Starts configuring a limiter on an in-process [`MemoryStore`]
    /// (tests, examples); limiters on clones of one store share it.
    pub fn builder_in_memory(
        store: &MemoryStore,
        key: impl Into<String>,
        quota: Quota,
    ) -> RedisRateLimiterBuilder {
        RedisRateLimiterBuilder::new(StoreSpec::Memory(store.clone()), key.into(), quota)
    }
}

impl<C: Clock> RedisRateLimiter<C> {
    /// Takes `n` tokens from the shared bucket now, or says when to come
    /// back. Never waits for tokens; waits at most one round trip (bounded by
    /// the call timeout), or not at all when the local reservation has them
    /// or Redis is known down.
    ///
    /// `n == 0` always succeeds without a round trip. The refusal's
    /// `retry_after` is exact in Redis's time: the bucket refuses the same
    /// request one nanosecond earlier and admits it then, if nobody else
    /// takes tokens. On the local clock it is the instant the answer arrived
    /// plus that wait, so at most one round trip late, never early.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::NotUntil`] when there are not enough tokens yet;
    /// [`TryAcquireError::InsufficientCapacity`] at once when `n` exceeds the
    /// burst; [`TryAcquireError::Unavailable`] when Redis cannot be asked
    /// and the policy is [`FailurePolicy::FailClosed`] (under `LocalShare`:
    /// the local bucket's own `NotUntil` instead, and `Unavailable` for an
    /// `n` above the share's burst).
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future never admits more than the quota: reserved tokens
    /// it had borrowed go back to the reservation. But the script may have
    /// run before the drop, in which case Redis counted tokens that nobody
    /// uses (the fleet admits *less*, never more). The same holds for a call
    /// that timed out.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::rate::{MemoryStore, Quota, RedisRateLimiter, TryAcquireError};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let store = MemoryStore::new();
    /// let limiter = RedisRateLimiter::builder_in_memory(&store, "k", Quota::per_second(3).unwrap())
    ///     .build()
    ///     .unwrap();
    /// assert!(limiter.try_acquire(3).await.is_ok());
    /// assert!(matches!(limiter.try_acquire(1).await, Err(TryAcquireError::NotUntil { .. })));
    /// assert!(matches!(
    ///     limiter.try_acquire(4).await,
    ///     Err(TryAcquireError::InsufficientCapacity { requested: 4, burst: 3 })
    /// ));
    /// # }
    /// ```
    pub async fn try_acquire(&self, n: u32) -> Result<(), TryAcquireError> {
        let engine = &self.inner.engine;
        bump(&engine.counters.calls);
        let r = self.check(n).await;
        engine.count(&r);
        r
    }

    async fn check(&self, n: u32) -> Result<(), TryAcquireError> {
        let single = &*self.inner;
        let engine = &single.engine;
        if n == 0 {
            return Ok(());
        }
        if let Some(e) = engine.insufficient(n) {
            return Err(e);
        }
        let now = engine.now();
        let spend = single.reservation.lock().spend(n, now);
        let borrowed = match spend {
            Spend::Local => {
                bump(&engine.counters.reservation_hits);
                return Ok(());
            }
            Spend::Remote { borrowed } => borrowed,
        };
        let mut guard = Borrowed {
            single,
            tokens: borrowed,
        };
        let ask = single
            .reservation
            .lock()
            .ask(n, borrowed, engine.t, engine.tau);
        match engine.ask(&single.key, &ask, now).await {
            Ok(reply) if reply.granted > 0 => {
                guard.tokens = 0;
                let now = engine.now();
                single
                    .reservation
                    .lock()
                    .settle(n, borrowed, reply.granted, now);
                Ok(())
            }
            Ok(reply) => Err(engine.refused_for(&reply)),
            Err(missed) => {
                drop(guard);
                let cause = missed.cause();
                match engine.fixed_answer(cause) {
                    Some(r) => r,
                    None => match &single.fallback {
                        Some(local) => share_answer(local.try_acquire(n), cause),
                        None => Err(TryAcquireError::Unavailable { cause }),
                    },
                }
            }
        }
    }

    /// Waits until `n` tokens are taken: asks, and when refused sleeps until
    /// the retry instant, plus a random delay of up to one emission
    /// interval, and asks again.
    ///
    /// # Fairness
    ///
    /// Not FIFO across the fleet (there is no queue in Redis): refused
    /// waiters race for the next token, each with its own round trip. The
    /// random delay makes them take turns; without it the replica whose
    /// timer happens to fire first would win nearly every race.
    ///
    /// # Errors
    ///
    /// [`AcquireError::InsufficientCapacity`] at once when `n` exceeds the
    /// burst; [`AcquireError::Unavailable`] when Redis cannot be asked under
    /// [`FailurePolicy::FailClosed`] (it does not wait for Redis to come
    /// back: retry, or pick another policy).
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// As [`try_acquire`](Self::try_acquire): cancelling never admits more;
    /// a round trip in flight may have consumed tokens nobody uses.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::rate::{MemoryStore, Quota, RedisRateLimiter};
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let store = MemoryStore::new();
    /// let limiter = RedisRateLimiter::builder_in_memory(&store, "k", Quota::per_second(2).unwrap())
    ///     .build()
    ///     .unwrap();
    /// let start = Instant::now();
    /// for _ in 0..4 {
    ///     limiter.acquire(1).await.unwrap();
    /// }
    /// // two at once, then one every 500 ms (plus up to 500 ms of jitter per wait)
    /// assert!(start.elapsed() >= Duration::from_secs(1));
    /// assert!(start.elapsed() <= Duration::from_secs(2));
    /// # }
    /// ```
    pub async fn acquire(&self, n: u32) -> Result<(), AcquireError> {
        self.acquire_inner(n, None).await
    }

    /// Like [`acquire`](Self::acquire), but fails at once, consuming
    /// nothing, when a refusal's retry instant lies beyond `timeout` from
    /// now (Go's `Limiter.Wait` with a deadline). The random delay added to
    /// each wait is cut at the deadline, so it never sleeps past it.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Timeout`] with that instant, or as
    /// [`acquire`](Self::acquire).
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::rate::{AcquireError, MemoryStore, Quota, RedisRateLimiter};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let store = MemoryStore::new();
    /// let limiter = RedisRateLimiter::builder_in_memory(&store, "k", Quota::per_second(10).unwrap().with_burst(1).unwrap())
    ///     .build()
    ///     .unwrap();
    /// limiter.acquire(1).await.unwrap();
    /// let err = limiter.acquire_timeout(1, Duration::from_millis(99)).await.unwrap_err();
    /// assert!(matches!(err, AcquireError::Timeout { .. }));
    /// limiter.acquire_timeout(1, Duration::from_millis(100)).await.unwrap();
    /// # }
    /// ```
    pub async fn acquire_timeout(&self, n: u32, timeout: Duration) -> Result<(), AcquireError> {
        let deadline = self.inner.engine.clock.now().checked_add(timeout);
        self.acquire_inner(n, deadline).await
    }

    /// [`acquire_timeout`](Self::acquire_timeout) with an absolute deadline
    /// on the limiter's clock.
    ///
    /// # Errors
    ///
    /// As [`acquire_timeout`](Self::acquire_timeout).
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    pub async fn acquire_deadline(&self, n: u32, deadline: Instant) -> Result<(), AcquireError> {
        self.acquire_inner(n, Some(deadline)).await
    }

    async fn acquire_inner(&self, n: u32, deadline: Option<Instant>) -> Result<(), AcquireError> {
        let engine = &self.inner.engine;
        bump(&engine.counters.calls);
        let r = engine.wait_loop(deadline, || self.check(n)).await;
        bump(if r.is_ok() {
            &engine.counters.admitted
        } else {
            &engine.counters.refused
        });
        r
    }

    /// One round trip that loads the script (`SCRIPT LOAD`) and reports how
    /// long it took: a readiness check that also saves the first call's
    /// `NOSCRIPT`. It does not change the failure policy's state.
    ///
    /// # Errors
    ///
    /// The [`RedisError`] (connection, timeout after the call timeout, or
    /// the server's error).
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it takes no tokens.
    pub async fn ping(&self) -> Result<Duration, RedisError> {
        ping(&self.inner.engine).await
    }

    /// The quota, shared with every replica using the same key.
    pub fn quota(&self) -> Quota {
        quota_of(&self.inner.engine)
    }

    /// The Redis key of the bucket.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The local bucket used under [`FailurePolicy::LocalShare`]: this
    /// replica's share of the quota. `None` under the other policies.
    pub fn fallback_quota(&self) -> Option<Quota> {
        self.inner.engine.share
    }

    /// Tokens held by the local reservation now.
    pub fn reserved(&self) -> u32 {
        self.inner.reservation.lock().held()
    }

    /// Counters since the limiter was built.
    pub fn metrics(&self) -> RedisMetrics {
        let wasted = self.inner.reservation.lock().wasted();
        self.inner.engine.metrics(wasted)
    }
}

async fn ping<C: Clock>(engine: &Engine<C>) -> Result<Duration, RedisError> {
    let started = Instant::now();
    match tokio::time::timeout(engine.call_timeout, engine.store.load()).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(RedisError::new(
            RedisErrorKind::Timeout,
            format!("no answer within {:?}", engine.call_timeout),
        )),
    }
}

fn quota_of<C>(engine: &Engine<C>) -> Quota {
    Quota::from_gcra(crate::rate::gcra::Gcra {
        t: engine.t,
        burst: engine.burst,
    })
}

impl<C: Clock> Clone for RedisRateLimiter<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Clock> fmt::Debug for RedisRateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("key", &self.inner.key)
            .field("quota", &self.quota())
            .field("policy", &self.inner.engine.policy)
            .field("store", &self.inner.engine.store)
            .field("metrics", &self.metrics())
            .finish()
    }
}

/// One Redis bucket per key (per user, per tenant, per IP), every bucket
/// with the same [`Quota`], shared by every replica using the same prefix.
///
/// The Redis key of `key` is `"<prefix>:<key>"` (`key` formatted with
/// `Display`); each bucket expires from Redis once it is full again, so idle
/// keys cost no memory. Built with
/// [`RedisRateLimiterBuilder::build_keyed`]; no local reservation (it would
/// hold tokens per key). Under [`FailurePolicy::LocalShare`] the fallback is
/// a local [`KeyedRateLimiter`] with the share quota per key, bounded by its
/// default `max_keys`.
///
/// # Examples
///
/// ```
/// use flowguard::rate::{KeyedRedisRateLimiter, MemoryStore, Quota, RedisRateLimiter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let store = MemoryStore::new();
/// let per_tenant: KeyedRedisRateLimiter<str> =
///     RedisRateLimiter::builder_in_memory(&store, "tenants", Quota::per_second(2).unwrap())
///         .build_keyed()
///         .unwrap();
/// assert!(per_tenant.try_acquire("acme", 2).await.is_ok());
/// assert!(per_tenant.try_acquire("acme", 1).await.is_err()); // acme is out
/// assert!(per_tenant.try_acquire("globex", 1).await.is_ok()); // globex is not
/// assert_eq!(store.len(), 2);
/// # }
/// ```
pub struct KeyedRedisRateLimiter<K: ?Sized, C: Clock = TokioClock> {
    inner: Arc<Keyed<C>>,
    _key: PhantomData<fn(&K)>,
}

struct Keyed<C: Clock> {
    engine: Engine<C>,
    prefix: String,
    fallback: Option<KeyedRateLimiter<String, C>>,
}

impl<K: fmt::Display + ?Sized, C: Clock> KeyedRedisRateLimiter<K, C> {
    /// Takes `n` tokens from `key`'s bucket now, or says when to come back.
    ///
    /// # Errors
    ///
    /// As [`RedisRateLimiter::try_acquire`].
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// As [`RedisRateLimiter::try_acquire`].
    pub async fn try_acquire(&self, key: &K, n: u32) -> Result<(), TryAcquireError> {
        let engine = &self.inner.engine;
        bump(&engine.counters.calls);
        let r = self.check(&self.redis_key(key), n).await;
        engine.count(&r);
        r
    }

    /// Waits until `n` tokens are taken from `key`'s bucket.
    ///
    /// # Errors
    ///
    /// As [`RedisRateLimiter::acquire`].
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// As [`RedisRateLimiter::acquire`].
    pub async fn acquire(&self, key: &K, n: u32) -> Result<(), AcquireError> {
        let engine = &self.inner.engine;
        bump(&engine.counters.calls);
        let redis_key = self.redis_key(key);
        let r = engine.wait_loop(None, || self.check(&redis_key, n)).await;
        bump(if r.is_ok() {
            &engine.counters.admitted
        } else {
            &engine.counters.refused
        });
        r
    }

    fn redis_key(&self, key: &K) -> String {
        format!("{}:{key}", self.inner.prefix)
    }

    async fn check(&self, redis_key: &str, n: u32) -> Result<(), TryAcquireError> {
        let keyed = &*self.inner;
        let engine = &keyed.engine;
        if n == 0 {
            return Ok(());
        }
        if let Some(e) = engine.insufficient(n) {
            return Err(e);
        }
        let ask = Ask {
            t: engine.t,
            tau: engine.tau,
            need: n,
            want: n,
        };
        match engine.ask(redis_key, &ask, engine.now()).await {
            Ok(reply) if reply.granted > 0 => Ok(()),
            Ok(reply) => Err(engine.refused_for(&reply)),
            Err(missed) => {
                let cause = missed.cause();
                match engine.fixed_answer(cause) {
                    Some(r) => r,
                    None => match &keyed.fallback {
                        Some(local) => {
                            share_answer(local.try_acquire(&redis_key.to_owned(), n), cause)
                        }
                        None => Err(TryAcquireError::Unavailable { cause }),
                    },
                }
            }
        }
    }

    /// As [`RedisRateLimiter::ping`].
    ///
    /// # Errors
    ///
    /// As [`RedisRateLimiter::ping`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it takes no tokens.
    pub async fn ping(&self) -> Result<Duration, RedisError> {
        ping(&self.inner.engine).await
    }

    /// The quota of every key.
    pub fn quota(&self) -> Quota {
        quota_of(&self.inner.engine)
    }

    /// Counters since the limiter was built (all keys together).
    pub fn metrics(&self) -> RedisMetrics {
        self.inner.engine.metrics(0)
    }
}

impl<K: ?Sized, C: Clock> Clone for KeyedRedisRateLimiter<K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            _key: PhantomData,
        }
    }
}

impl<K: ?Sized, C: Clock> fmt::Debug for KeyedRedisRateLimiter<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRedisRateLimiter")
            .field("prefix", &self.inner.prefix)
            .field("quota", &quota_of(&self.inner.engine))
            .field("policy", &self.inner.engine.policy)
            .field("store", &self.inner.engine.store)
            .finish()
    }
}
