//! One pipeline that wraps a call in every policy: timeout, retry, circuit
//! breaker, hedging, rate limit, bulkhead, adaptive concurrency limit,
//! per-attempt timeout, fallback.
//!
//! # The order, and why
//!
//! Layers run outermost first; each one present wraps the ones below it.
//!
//! | # | layer | sees | why here |
//! |---|---|---|---|
//! | 1 | fallback | the final error | last word: turns any failure (a refusal included) into a value |
//! | 2 | total timeout | the whole call | the caller's deadline covers retries, sleeps and every wait below; retry knows it and never sleeps past it |
//! | 3 | retry | each attempt's outcome | outside the breaker, so every attempt is counted by it; a breaker refusal is *not* retried (the breaker exists to keep calls away) |
//! | 4 | circuit breaker | one outcome per attempt | a call refused while open costs no token and takes no bulkhead slot; refusals by the limiter or the bulkhead below count as nothing |
//! | 5 | hedge | copies of one attempt | every copy is a real downstream call, so each goes through the limiter and bulkhead below; the breaker sees the group's outcome |
//! | 6 | rate limiter, plain and/or keyed | each attempt and hedge copy | the quota protects the downstream, which sees every attempt; a keyed limiter takes the key given to [`call_keyed`](crate::pipeline::Pipeline::call_keyed) (a tenant, an API key) |
//! | 7 | bulkhead: a [`Semaphore`] or a [`WorkerPool`]'s run slots | each admitted attempt | a slot is held only while the operation runs, never while waiting for a token; refused after the token was taken, the token is refunded; with a pool, pipeline calls and the pool's own tasks share one limit and one queue |
//! | 8 | adaptive limit | each admitted attempt, and its outcome | the bulkhead's place, inside it so its latency samples time the operation and not the wait for a slot; reports by the classifier: a failure or an attempt timeout is *dropped*, any other outcome a *success*; a refusal by it returns the tokens (plain and keyed) and the slot |
//! | 9 | attempt timeout | the operation | bounds the downstream call itself, not the queueing above it |
//!
//! This is .NET's standard resilience handler (rate limiter → total
//! timeout → retry → circuit breaker → attempt timeout) with one deliberate
//! difference: its outer "rate limiter" is a *concurrency* limiter on
//! logical requests, while here the rate limiter and the bulkhead sit
//! *inside* retry and breaker, so they count downstream attempts (a retry
//! costs a token; an open breaker's refusal does not). Polly nests
//! strategies in the order they are added and resilience4j's decorators the
//! other way round; here the order is fixed, so a pipeline reads the same
//! whatever order the builder methods are called in.
//!
//! **One classifier** ([`failure_if`](PipelineBuilder::failure_if)) decides
//! what is a failure, for the breaker (recorded as a failure) and for retry
//! (retried): by default every `Err`. An `Err` it does not count is
//! returned as [`PipelineError::Inner`] at once and recorded by the breaker
//! as a success (resilience4j's rule for exceptions it does not record); a
//! value it counts (say, an HTTP 503 response) is retried and, if retries
//! run out, returned as `Ok`. A per-attempt timeout is always a failure.
//! Rate-limited attempts are retried after the limiter's `retry_after`
//! (when that fits before the deadline); breaker, bulkhead and adaptive
//! limit refusals are not retried. An attempt dropped half-way (the caller
//! gave up, the total timeout fired) returns its adaptive permit
//! unreported: an abandoned call says nothing about the backend.
//!
//! Absent layers cost nothing: each is an `Option` checked once per call
//! or attempt, and a call allocates only what the layers present need.
//!
//! # Examples
//!
//! ```
//! use flowguard::breaker::CircuitBreaker;
//! use flowguard::pipeline::{Pipeline, PipelineError};
//! use flowguard::rate::{Quota, RateLimiter};
//! use flowguard::retry::{Backoff, RetryPolicy};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let pipeline = Pipeline::builder()
//!     .timeout(Duration::from_secs(2))
//!     .retry(RetryPolicy::new().max_retries(3).backoff(Backoff::constant(Duration::from_millis(100))))
//!     .breaker(CircuitBreaker::builder().consecutive_failures(5).build().unwrap())
//!     .rate_limiter(RateLimiter::new(Quota::per_second(100).unwrap()))
//!     .attempt_timeout(Duration::from_millis(300))
//!     .build()
//!     .unwrap();
//!
//! let mut calls = 0;
//! let answer = pipeline
//!     .call(|| {
//!         calls += 1;
//!         let fail = calls < 3;
//!         async move { if fail { Err("503") } else { Ok("hello") } }
//!     })
//!     .await;
//! assert_eq!(answer, Ok("hello"));
//! assert_eq!(pipeline.metrics().retry.unwrap().retries, 2);
//! # }
//! ```

mod error;

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

pub use self::error::PipelineError;
use crate::adaptive::{AdaptiveLimiter, AdaptiveMetrics};
use crate::breaker::{BreakerMetrics, CircuitBreaker, Rejected};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::fanout::{HedgeMetrics, HedgePolicy, hedge};
use crate::pool::{PoolMetrics, PoolSlot, WorkerPool};
use crate::rate::{
    AcquireError as RateAcquireError, KeyedRateLimiter, KeyedSnapshot, RateLimiter, RateSnapshot,
    TryAcquireError,
};
use crate::retry::{Next, Retry, RetryError, RetryMetrics, RetryPolicy};
use crate::semaphore::{Permit, Semaphore, SemaphoreMetrics};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Mutex, StdArc};

type Classifier<T, E> = dyn Fn(Result<&T, &E>) -> bool + Send + Sync;

/// The pipeline's one classifier: `None` is the default rule (every `Err`
/// is a failure), tested inline without an indirect call.
struct FailureIf<T, E>(Option<StdArc<Classifier<T, E>>>);

impl<T, E> Clone for FailureIf<T, E> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T, E> FailureIf<T, E> {
    #[inline]
    fn test(&self, r: Result<&T, &E>) -> bool {
        match &self.0 {
            None => r.is_err(),
            Some(f) => f(r),
        }
    }
}
type RetryAfterHook<T, E> = dyn Fn(Result<&T, &E>) -> Option<Duration> + Send + Sync;
type Fallback<T, E> = dyn Fn(PipelineError<E>) -> Result<T, PipelineError<E>> + Send + Sync;

/// What a rate limiter or bulkhead does when it cannot admit at once.
///
/// # Examples
///
/// ```
/// use flowguard::pipeline::{Admission, Pipeline, PipelineError};
/// use flowguard::semaphore::Semaphore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let slots = Semaphore::new(1);
/// let pipeline = Pipeline::builder()
///     .bulkhead_with(slots.clone(), Admission::Shed)
///     .build()
///     .unwrap();
/// let _busy = slots.acquire().await.unwrap();
/// let refused = pipeline.call(|| async { Ok::<_, ()>(1) }).await;
/// assert!(matches!(refused, Err(PipelineError::BulkheadFull)));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Admission {
    /// Wait (in FIFO order) for a token or slot, up to the pipeline's
    /// deadline; refuse at once when the wait could not end in time.
    #[default]
    Wait,
    /// Refuse at once (load shedding).
    Shed,
}

/// Composes the resilience policies around a call, in the documented order
/// (see the [module docs](self)). Clones share every layer and the
/// metrics; the layers' own handles (a breaker, a limiter, a semaphore
/// given to the builder) can also be shared with code outside it.
///
/// # Examples
///
/// A fallback turns any refusal or failure into a value:
///
/// ```
/// use flowguard::pipeline::Pipeline;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pipeline = Pipeline::<&str, &str>::builder()
///     .fallback(|_err| Ok("cached answer"))
///     .build()
///     .unwrap();
/// assert_eq!(pipeline.call(|| async { Err("down") }).await, Ok("cached answer"));
/// assert_eq!(pipeline.metrics().fallbacks, 1);
/// # }
/// ```
pub struct Pipeline<T, E, K = ()> {
    inner: Arc<Inner<T, E, K>>,
}

/// One attempt's outcome below the retry layer.
enum Attempt<E> {
    Inner(E),
    /// The per-attempt timeout fired.
    Timeout,
    Breaker(Rejected),
    RateLimited(Option<Duration>),
    BulkheadFull,
    AdaptiveLimited,
}

struct Inner<T, E, K> {
    timeout: Option<Duration>,
    retry: Option<Retry<T, Attempt<E>>>,
    breaker: Option<CircuitBreaker>,
    hedge: Option<HedgePolicy>,
    limiter: Option<(RateLimiter, Admission)>,
    keyed: Option<(KeyedRateLimiter<K>, Admission)>,
    bulkhead: Option<(Bulkhead, Admission)>,
    adaptive: Option<(AdaptiveLimiter, Admission)>,
    attempt_timeout: Option<Duration>,
    fallback: Option<Box<Fallback<T, E>>>,
    failure_if: FailureIf<T, E>,
    /// Its own allocation: the `metrics` feature's publisher holds it
    /// weakly without needing the operation's types to be `Send`.
    counters: StdArc<Counters>,
    /// The pipeline's name, if each call runs in a `pipeline_call` span.
    trace_calls: Option<StdArc<str>>,
}

/// Layer 7: a semaphore's permits or a worker pool's run slots.
enum Bulkhead {
    Semaphore(Semaphore),
    Pool(WorkerPool),
}

/// What an admitted attempt holds of the bulkhead while it runs.
enum Slot<'a> {
    Permit(#[allow(dead_code)] Permit<'a>),
    Pool(#[allow(dead_code)] PoolSlot),
}

impl Bulkhead {
    /// A slot at once if one is free (no allocation, nothing awaited), else
    /// by the admission rule. The wait is boxed so that the call's future
    /// stays small for the common case (see the module docs' note on cost).
    async fn enter(&self, admission: Admission, deadline: Option<Instant>) -> Option<Slot<'_>> {
        match self {
            Self::Semaphore(sem) => {
                if let Ok(p) = sem.try_acquire() {
                    return Some(Slot::Permit(p));
                }
                let wait: Pin<Box<dyn Future<Output = _> + Send + '_>> = match (admission, deadline)
                {
                    (Admission::Shed, _) => return None,
                    (Admission::Wait, None) => Box::pin(sem.acquire()),
                    (Admission::Wait, Some(d)) => Box::pin(sem.acquire_deadline(d)),
                };
                wait.await.ok().map(Slot::Permit)
            }
            Self::Pool(pool) => match (admission, deadline) {
                (Admission::Shed, _) => pool.try_slot().ok().map(Slot::Pool),
                (Admission::Wait, d) => {
                    if let Ok(s) = pool.try_slot_uncounted() {
                        return Some(Slot::Pool(s));
                    }
                    let wait: Pin<Box<dyn Future<Output = _> + Send + '_>> = match d {
                        None => Box::pin(pool.slot()),
                        Some(d) => Box::pin(pool.slot_deadline(d)),
                    };
                    wait.await.ok().map(Slot::Pool)
                }
            },
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    succeeded: AtomicU64,
    failed: AtomicU64,
    fallbacks: AtomicU64,
    timeouts: AtomicU64,
    breaker_refusals: AtomicU64,
    rate_limited: AtomicU64,
    bulkhead_full: AtomicU64,
    adaptive_limited: AtomicU64,
}

/// A pipeline's own counters and every layer's metrics, in one snapshot.
///
/// # Examples
///
/// ```
/// use flowguard::pipeline::Pipeline;
/// use flowguard::retry::RetryPolicy;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let pipeline = Pipeline::builder()
///     .retry(RetryPolicy::new().max_retries(1))
///     .build()
///     .unwrap();
/// let mut tries = 0;
/// let answer = pipeline
///     .call(|| {
///         tries += 1;
///         let fail = tries == 1;
///         async move { if fail { Err("503") } else { Ok(7) } }
///     })
///     .await;
/// assert_eq!(answer, Ok(7));
/// let m = pipeline.metrics();
/// assert_eq!((m.calls, m.succeeded, m.failed), (1, 1, 0));
/// assert_eq!(m.retry.unwrap().retries, 1);
/// assert!(m.breaker.is_none()); // no breaker in this pipeline
/// # }
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PipelineMetrics {
    /// Calls that ended (a call in flight is counted when it ends; one
    /// atomic add per successful call).
    pub calls: u64,
    /// Calls that returned `Ok` (a fallback's value included).
    pub succeeded: u64,
    /// Calls that returned an error.
    pub failed: u64,
    /// Calls whose error the fallback handled (turned into `Ok` or not).
    pub fallbacks: u64,
    /// Calls ended by the total or the per-attempt timeout.
    pub timeouts: u64,
    /// Calls ended by a breaker refusal.
    pub breaker_refusals: u64,
    /// Calls ended by the rate limiter.
    pub rate_limited: u64,
    /// Calls ended by a full bulkhead.
    pub bulkhead_full: u64,
    /// Calls ended by the adaptive limit.
    pub adaptive_limited: u64,
    /// The retry layer's metrics, if there is one.
    pub retry: Option<RetryMetrics>,
    /// The breaker's metrics, if there is one.
    pub breaker: Option<BreakerMetrics>,
    /// The rate limiter's snapshot, if there is one.
    pub rate_limiter: Option<RateSnapshot>,
    /// The keyed rate limiter's snapshot, if there is one.
    pub keyed_rate_limiter: Option<KeyedSnapshot>,
    /// The bulkhead semaphore's metrics, if there is one.
    pub bulkhead: Option<SemaphoreMetrics>,
    /// The worker pool's metrics, if it is the bulkhead
    /// ([`worker_pool`](PipelineBuilder::worker_pool)).
    pub pool: Option<PoolMetrics>,
    /// The adaptive limiter's metrics, if there is one.
    pub adaptive: Option<AdaptiveMetrics>,
    /// The hedge policy's metrics, if there is one.
    pub hedge: Option<HedgeMetrics>,
}

/// Configures a [`Pipeline`]. Every layer is optional; the order they run
/// in is fixed (see the [module docs](self)), not the order of these calls.
/// Defaults: no layer, every `Err` is a failure.
///
/// # Examples
///
/// ```
/// use flowguard::pipeline::Pipeline;
/// use std::time::Duration;
///
/// let err = Pipeline::<(), ()>::builder()
///     .timeout(Duration::from_secs(1))
///     .attempt_timeout(Duration::from_secs(2))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "attempt_timeout");
/// ```
pub struct PipelineBuilder<T, E, K = ()> {
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    retry_after: Option<StdArc<RetryAfterHook<T, E>>>,
    breaker: Option<CircuitBreaker>,
    hedge: Option<HedgePolicy>,
    limiter: Option<(RateLimiter, Admission)>,
    keyed: Option<(KeyedRateLimiter<K>, Admission)>,
    bulkhead: Option<(Semaphore, Admission)>,
    pool: Option<(WorkerPool, Admission)>,
    adaptive: Option<(AdaptiveLimiter, Admission)>,
    attempt_timeout: Option<Duration>,
    fallback: Option<Box<Fallback<T, E>>>,
    failure_if: FailureIf<T, E>,
    name: String,
    /// Whether `name` was called (only named pipelines are published).
    named: bool,
    trace_calls: bool,
}

impl<T, E, K> PipelineBuilder<T, E, K>
where
    T: 'static,
    E: 'static,
{
    /// A deadline for the whole call (layer 2), counted from its start.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Retries failures with this policy (layer 3).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// When an outcome says how long to wait before the next attempt (a
    /// 429's `Retry-After`), that replaces the backoff for that retry.
    pub fn retry_after(
        mut self,
        f: impl Fn(Result<&T, &E>) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.retry_after = Some(StdArc::new(f));
        self
    }

    /// A circuit breaker around each attempt (layer 4). Give it a clone to
    /// share it with other code.
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Hedges each attempt with this policy (layer 5).
    pub fn hedge(mut self, policy: HedgePolicy) -> Self {
        self.hedge = Some(policy);
        self
    }

    /// A rate limiter taking one token per attempt (layer 6), waiting for
    /// it up to the deadline ([`Admission::Wait`]).
    pub fn rate_limiter(self, limiter: RateLimiter) -> Self {
        self.rate_limiter_with(limiter, Admission::Wait)
    }

    /// As [`rate_limiter`](Self::rate_limiter), choosing whether to wait or shed.
    pub fn rate_limiter_with(mut self, limiter: RateLimiter, admission: Admission) -> Self {
        self.limiter = Some((limiter, admission));
        self
    }

    /// A concurrency limit on running attempts (layer 7): one permit of
    /// `semaphore` per attempt, waited for up to the deadline.
    pub fn bulkhead(self, semaphore: Semaphore) -> Self {
        self.bulkhead_with(semaphore, Admission::Wait)
    }

    /// As [`bulkhead`](Self::bulkhead), choosing whether to wait or shed.
    pub fn bulkhead_with(mut self, semaphore: Semaphore, admission: Admission) -> Self {
        self.bulkhead = Some((semaphore, admission));
        self
    }

    /// A [`WorkerPool`]'s concurrency limit on running attempts (layer 7,
    /// instead of a semaphore [`bulkhead`](Self::bulkhead)): each attempt
    /// holds one of the pool's run slots ([`WorkerPool::slot`]) while it
    /// runs, in the caller's task, so pipeline calls and tasks submitted to
    /// the pool share one limit and one queue (by priority: the attempt
    /// queues at [`DEFAULT_PRIORITY`](crate::pool::DEFAULT_PRIORITY)). It
    /// waits for the slot up to the deadline ([`Admission::Wait`]). The
    /// operation need not be `Send`: it is not spawned.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pipeline::{Admission, Pipeline, PipelineError};
    /// use flowguard::pool::WorkerPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = WorkerPool::builder().max_concurrency(1).build().unwrap();
    /// let pipeline = Pipeline::<u32, ()>::builder()
    ///     .worker_pool_with(pool.clone(), Admission::Shed)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(pipeline.call(|| async { Ok(1) }).await, Ok(1));
    /// let busy = pool.slot().await.unwrap(); // the pool's only slot
    /// let err = pipeline.call(|| async { Ok(2) }).await.unwrap_err();
    /// assert_eq!(err, PipelineError::BulkheadFull);
    /// drop(busy);
    /// assert_eq!(pipeline.metrics().pool.unwrap().completed, 2);
    /// # }
    /// ```
    pub fn worker_pool(self, pool: WorkerPool) -> Self {
        self.worker_pool_with(pool, Admission::Wait)
    }

    /// As [`worker_pool`](Self::worker_pool), choosing whether to wait or shed.
    pub fn worker_pool_with(mut self, pool: WorkerPool, admission: Admission) -> Self {
        self.pool = Some((pool, admission));
        self
    }

    /// An adaptive concurrency limit on running attempts (layer 8): one
    /// permit of `limiter` per attempt, waited for (in its backlog) up to
    /// the deadline. Each attempt reports to it by the classifier: a
    /// failure or an attempt timeout as *dropped*, any other outcome as a
    /// *success*. Give it a [`labelled`](AdaptiveLimiter::labelled) handle
    /// to count the attempts in a partition.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::adaptive::{AdaptiveLimiter, Aimd};
    /// use flowguard::pipeline::Pipeline;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let limiter = AdaptiveLimiter::new(Aimd::builder().min_limit(1).build().unwrap());
    /// let pipeline = Pipeline::builder().adaptive_limit(limiter.clone()).build().unwrap();
    /// let _ = pipeline.call(|| async { Err::<(), _>("503") }).await;
    /// assert_eq!(limiter.limit(), 18); // a failure is a drop: ⌊20 × 0.9⌋
    /// assert_eq!(pipeline.metrics().adaptive.unwrap().drops, 1);
    /// # }
    /// ```
    pub fn adaptive_limit(self, limiter: AdaptiveLimiter) -> Self {
        self.adaptive_limit_with(limiter, Admission::Wait)
    }

    /// As [`adaptive_limit`](Self::adaptive_limit), choosing whether to
    /// wait or shed.
    pub fn adaptive_limit_with(mut self, limiter: AdaptiveLimiter, admission: Admission) -> Self {
        self.adaptive = Some((limiter, admission));
        self
    }

    /// A time limit on each attempt's operation (layer 9); a timed-out
    /// attempt is a failure.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Turns the final error into a value, or passes it on (layer 1).
    pub fn fallback(
        mut self,
        f: impl Fn(PipelineError<E>) -> Result<T, PipelineError<E>> + Send + Sync + 'static,
    ) -> Self {
        self.fallback = Some(Box::new(f));
        self
    }

    /// Which outcomes are failures, for the breaker and for retry (default:
    /// every `Err`).
    pub fn failure_if(
        mut self,
        f: impl Fn(Result<&T, &E>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.failure_if = FailureIf(Some(StdArc::new(f)));
        self
    }

    /// A name for the retry layer's tracing events (and the
    /// [`trace_calls`](Self::trace_calls) span). With the `metrics`
    /// feature, a named pipeline publishes its own counters under it
    /// (`flowguard_pipeline_*`, see `flowguard::metrics`); its layers
    /// publish theirs under their own names, if they have one.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self.named = true;
        self
    }

    /// Runs each call inside a `pipeline_call` span at `debug` level, with
    /// the pipeline's name as field `pipeline`, so the events of its
    /// layers and of the operation carry it. Off by default: creating a
    /// span costs time even when no subscriber wants it.
    pub fn trace_calls(mut self, on: bool) -> Self {
        self.trace_calls = on;
        self
    }

    /// Validates the configuration and creates the pipeline.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `timeout` or `attempt_timeout` (zero),
    /// `attempt_timeout` (not shorter than `timeout`: it could never fire),
    /// `worker_pool` (set together with a semaphore `bulkhead`: one layer 7),
    /// or a field of the retry policy (as [`RetryBuilder::build`](crate::retry::RetryBuilder::build)).
    pub fn build(self) -> Result<Pipeline<T, E, K>, ConfigError> {
        const C: &str = "pipeline";
        for (field, value) in [
            ("timeout", self.timeout),
            ("attempt_timeout", self.attempt_timeout),
        ] {
            if value == Some(Duration::ZERO) {
                return Err(ConfigError::new(
                    C,
                    field,
                    ConfigErrorKind::Zero,
                    "must be positive",
                ));
            }
        }
        if let (Some(total), Some(each)) = (self.timeout, self.attempt_timeout) {
            if each >= total {
                return Err(ConfigError::new(
                    C,
                    "attempt_timeout",
                    ConfigErrorKind::Conflict,
                    format!(
                        "must be shorter than timeout {total:?}, got {each:?} (it could never fire)"
                    ),
                ));
            }
        }
        let bulkhead = match (self.bulkhead, self.pool) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    C,
                    "worker_pool",
                    ConfigErrorKind::Conflict,
                    "a pipeline has one bulkhead: a semaphore or a worker pool, not both",
                ));
            }
            (Some((sem, a)), None) => Some((Bulkhead::Semaphore(sem), a)),
            (None, Some((pool, a))) => Some((Bulkhead::Pool(pool), a)),
            (None, None) => None,
        };
        let retry = match self.retry {
            None => None,
            Some(policy) => {
                policy.validate(C, self.timeout)?;
                Some(retry_layer(
                    policy,
                    &self.failure_if,
                    self.retry_after,
                    self.name.clone(),
                ))
            }
        };
        let counters = StdArc::new(Counters::default());
        #[cfg(all(feature = "metrics", not(loom)))]
        if self.named {
            export(&self.name, StdArc::downgrade(&counters));
        }
        Ok(Pipeline {
            inner: Arc::new(Inner {
                timeout: self.timeout,
                retry,
                breaker: self.breaker,
                hedge: self.hedge,
                limiter: self.limiter,
                keyed: self.keyed,
                bulkhead,
                adaptive: self.adaptive,
                attempt_timeout: self.attempt_timeout,
                fallback: self.fallback,
                failure_if: self.failure_if,
                counters,
                trace_calls: self.trace_calls.then(|| StdArc::from(self.name)),
            }),
        })
    }
}

impl<T, E> PipelineBuilder<T, E, ()> {
    /// A rate limiter with one bucket per key (layer 6, beside or instead
    /// of the plain one), one token per attempt from the bucket of the key
    /// given to [`Pipeline::call_keyed`], waited for up to the deadline.
    /// The pipeline is then called with `call_keyed(&key, op)`; `call`
    /// (which has no key) is no longer available, so no call can bypass
    /// the keyed limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::pipeline::{Pipeline, PipelineError};
    /// use flowguard::rate::{KeyedRateLimiter, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let per_tenant = KeyedRateLimiter::new(Quota::per_hour(1).unwrap());
    /// let pipeline = Pipeline::<u32, ()>::builder()
    ///     .timeout(std::time::Duration::from_secs(1))
    ///     .keyed_rate_limiter(per_tenant)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(pipeline.call_keyed(&"acme", || async { Ok(1) }).await, Ok(1));
    /// assert_eq!(pipeline.call_keyed(&"globex", || async { Ok(2) }).await, Ok(2));
    /// let err = pipeline.call_keyed(&"acme", || async { Ok(3) }).await.unwrap_err();
    /// assert!(matches!(err, PipelineError::RateLimited { .. }));
    /// # }
    /// ```
    pub fn keyed_rate_limiter<K>(self, limiter: KeyedRateLimiter<K>) -> PipelineBuilder<T, E, K>
    where
        K: Hash + Eq + Clone,
    {
        self.keyed_rate_limiter_with(limiter, Admission::Wait)
    }

    /// As [`keyed_rate_limiter`](Self::keyed_rate_limiter), choosing whether to wait or shed.
    pub fn keyed_rate_limiter_with<K>(
        self,
        limiter: KeyedRateLimiter<K>,
        admission: Admission,
    ) -> PipelineBuilder<T, E, K>
    where
        K: Hash + Eq + Clone,
    {
        PipelineBuilder {
            timeout: self.timeout,
            retry: self.retry,
            retry_after: self.retry_after,
            breaker: self.breaker,
            hedge: self.hedge,
            limiter: self.limiter,
            keyed: Some((limiter, admission)),
            bulkhead: self.bulkhead,
            pool: self.pool,
            adaptive: self.adaptive,
            attempt_timeout: self.attempt_timeout,
            fallback: self.fallback,
            failure_if: self.failure_if,
            name: self.name,
            named: self.named,
            trace_calls: self.trace_calls,
        }
    }
}

/// The retry layer over attempts: the pipeline's classifier decides what
/// is retried; refusals by the breaker, the bulkhead and the adaptive limit
/// are not; a rate limiter's refusal is retried after its `retry_after`.
fn retry_layer<T: 'static, E: 'static>(
    policy: RetryPolicy,
    failure_if: &FailureIf<T, E>,
    hook: Option<StdArc<RetryAfterHook<T, E>>>,
    name: String,
) -> Retry<T, Attempt<E>> {
    let classify = failure_if.clone();
    let retry_if = move |r: &Result<T, Attempt<E>>| match r {
        Ok(v) => classify.test(Ok(v)),
        Err(Attempt::Inner(e)) => classify.test(Err(e)),
        Err(Attempt::Timeout) => true,
        Err(Attempt::RateLimited(after)) => after.is_some(),
        Err(Attempt::Breaker(_) | Attempt::BulkheadFull | Attempt::AdaptiveLimited) => false,
    };
    let retry_after = move |r: &Result<T, Attempt<E>>| match r {
        Err(Attempt::RateLimited(after)) => *after,
        Ok(v) => hook.as_ref().and_then(|h| h(Ok(v))),
        Err(Attempt::Inner(e)) => hook.as_ref().and_then(|h| h(Err(e))),
        _ => None,
    };
    Retry::from_parts(
        policy,
        None,
        Box::new(retry_if),
        Some(Box::new(retry_after)),
        name,
    )
}

impl<T, E> Pipeline<T, E>
where
    T: 'static,
    E: 'static,
{
    /// A builder with no layer and every `Err` counted as a failure.
    pub fn builder() -> PipelineBuilder<T, E> {
        PipelineBuilder {
            timeout: None,
            retry: None,
            retry_after: None,
            breaker: None,
            hedge: None,
            limiter: None,
            keyed: None,
            bulkhead: None,
            pool: None,
            adaptive: None,
            attempt_timeout: None,
            fallback: None,
            failure_if: FailureIf(None),
            name: "pipeline".to_owned(),
            named: false,
            trace_calls: false,
        }
    }
}

impl<T, E> Pipeline<T, E> {
    /// Runs `op` through every layer. `op` is called once per attempt (and
    /// per hedge copy), only once the layers above have admitted it.
    ///
    /// # Errors
    ///
    /// A [`PipelineError`] naming the layer that ended the call, with the
    /// operation's error untouched when it ended on one.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the attempt in flight (or
    /// the wait for a token, a slot or the next retry); its breaker permit
    /// counts as nothing (a half-open probe slot is given back), its
    /// bulkhead permit is returned, and no further attempt is made. A token
    /// already taken for an attempt that was then dropped is not refunded.
    // Not an `async fn`: returning `call_inner`'s future directly spares
    // every call one layer of state machine.
    pub fn call<F, Fut>(&self, op: F) -> impl Future<Output = Result<T, PipelineError<E>>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_inner(None, op)
    }
}

impl<T, E, K: Hash + Eq + Clone> Pipeline<T, E, K> {
    /// [`call`](Pipeline::call) for a pipeline with a keyed rate limiter:
    /// each attempt takes its token from `key`'s bucket.
    ///
    /// # Errors
    ///
    /// As [`call`](Pipeline::call).
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Pipeline::call).
    pub fn call_keyed<F, Fut>(
        &self,
        key: &K,
        op: F,
    ) -> impl Future<Output = Result<T, PipelineError<E>>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_inner(Some(key), op)
    }

    async fn call_inner<F, Fut>(&self, key: Option<&K>, mut op: F) -> Result<T, PipelineError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = &*self.inner;
        let deadline = inner.timeout.and_then(|t| Instant::now().checked_add(t));
        let result = match &inner.trace_calls {
            None => self.run(key, &mut op, deadline).await,
            Some(name) => {
                // Boxed: a traced call pays for its span; an untraced one
                // keeps its future small.
                use tracing::Instrument;
                let span = tracing::debug_span!("pipeline_call", pipeline = %name);
                Box::pin(self.run(key, &mut op, deadline))
                    .instrument(span)
                    .await
            }
        };
        let result = match (result, &inner.fallback) {
            (Err(e), Some(fallback)) => {
                self.count_error(&e);
                Counters::bump(&inner.counters.fallbacks);
                fallback(e)
            }
            (Err(e), None) => {
                self.count_error(&e);
                Err(e)
            }
            (ok, _) => ok,
        };
        Counters::bump(if result.is_ok() {
            &inner.counters.succeeded
        } else {
            &inner.counters.failed
        });
        result
    }

    /// Every layer's metrics and the pipeline's own counters.
    pub fn metrics(&self) -> PipelineMetrics {
        let inner = &*self.inner;
        let c = &inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (succeeded, failed) = (l(&c.succeeded), l(&c.failed));
        PipelineMetrics {
            calls: succeeded + failed,
            succeeded,
            failed,
            fallbacks: l(&c.fallbacks),
            timeouts: l(&c.timeouts),
            breaker_refusals: l(&c.breaker_refusals),
            rate_limited: l(&c.rate_limited),
            bulkhead_full: l(&c.bulkhead_full),
            adaptive_limited: l(&c.adaptive_limited),
            retry: inner.retry.as_ref().map(Retry::metrics),
            breaker: inner.breaker.as_ref().map(CircuitBreaker::metrics),
            rate_limiter: inner.limiter.as_ref().map(|(l, _)| l.snapshot()),
            keyed_rate_limiter: inner.keyed.as_ref().map(|(l, _)| l.snapshot()),
            bulkhead: match &inner.bulkhead {
                Some((Bulkhead::Semaphore(s), _)) => Some(s.metrics()),
                _ => None,
            },
            pool: match &inner.bulkhead {
                Some((Bulkhead::Pool(p), _)) => Some(p.metrics()),
                _ => None,
            },
            adaptive: inner.adaptive.as_ref().map(|(a, _)| a.metrics()),
            hedge: inner.hedge.as_ref().map(HedgePolicy::metrics),
        }
    }

    /// The circuit breaker layer, if any (to read its state or reset it).
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.inner.breaker.as_ref()
    }

    fn count_error(&self, e: &PipelineError<E>) {
        let c = &self.inner.counters;
        match e {
            PipelineError::Timeout { .. } | PipelineError::AttemptTimeout { .. } => {
                Counters::bump(&c.timeouts)
            }
            PipelineError::BreakerOpen { .. } => Counters::bump(&c.breaker_refusals),
            PipelineError::RateLimited { .. } => Counters::bump(&c.rate_limited),
            PipelineError::BulkheadFull => Counters::bump(&c.bulkhead_full),
            PipelineError::ConcurrencyLimited => Counters::bump(&c.adaptive_limited),
            _ => {}
        }
    }

    /// Layers 2 and 3: the total deadline and retry.
    async fn run<F, Fut>(
        &self,
        key: Option<&K>,
        op: &mut F,
        deadline: Option<Instant>,
    ) -> Result<T, PipelineError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let Some(retry) = &self.inner.retry else {
            let attempt = self.attempt(key, op, deadline);
            let outcome = match deadline {
                None => attempt.await,
                Some(d) => match tokio::time::timeout_at(d, attempt).await {
                    Ok(o) => o,
                    Err(_) => {
                        return Err(PipelineError::Timeout {
                            attempts: 1,
                            last: None,
                        });
                    }
                },
            };
            return match outcome {
                Ok(v) => Ok(v),
                Err(a) => Err(refusal_or_inner(a, 1)),
            };
        };
        // The retry's loop, stepped here so each attempt can borrow `op`.
        let mut run = retry.start(deadline);
        loop {
            if let Err(e) = run.begin() {
                return Err(from_retry(e));
            }
            let attempt = self.attempt(key, &mut *op, deadline);
            let outcome = match deadline {
                None => attempt.await,
                Some(d) => match tokio::time::timeout_at(d, attempt).await {
                    Ok(o) => o,
                    Err(_) => return Err(from_retry(run.cut())),
                },
            };
            match run.finish(outcome) {
                Next::Done(result) => return result.map_err(from_retry),
                Next::Sleep(delay) => {
                    if !delay.is_zero() {
                        // Boxed: a retry's sleep is rare next to the calls
                        // that need none, and would grow every call's future.
                        Box::pin(tokio::time::sleep(delay)).await;
                    }
                }
            }
        }
    }

    /// Layers 4 and 5: the breaker around one attempt (hedged or not).
    async fn attempt<F, Fut>(
        &self,
        key: Option<&K>,
        op: &mut F,
        deadline: Option<Instant>,
    ) -> Result<T, Attempt<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = &*self.inner;
        let permit = match &inner.breaker {
            Some(b) => Some(b.try_acquire().map_err(Attempt::Breaker)?),
            None => None,
        };
        let outcome = match &inner.hedge {
            None => self.admitted(key, op, deadline).await,
            Some(policy) => {
                // Hedge copies run at once: they share the operation, locked
                // only while it builds a future.
                // Boxed: hedging allocates anyway, and its state would grow
                // every call's future, hedged or not.
                let shared = Mutex::new(op);
                Box::pin(hedge(
                    || self.admitted(key, || (*shared.lock())(), deadline),
                    policy,
                ))
                .await
                .map(|h| h.value)
                .map_err(|e| e.error)
            }
        };
        if let Some(p) = permit {
            match &outcome {
                Ok(v) if inner.failure_if.test(Ok(v)) => p.failure(),
                Ok(_) => p.success(),
                Err(Attempt::Inner(e)) if inner.failure_if.test(Err(e)) => p.failure(),
                Err(Attempt::Inner(_)) => p.success(),
                Err(Attempt::Timeout) => p.failure(),
                // Refused below: the backend was not called.
                Err(_) => p.ignore(),
            }
        }
        outcome
    }

    /// Layers 6 to 9 and the operation: a token, a slot, an adaptive
    /// permit, the attempt timeout; `make` builds the operation's future
    /// once admitted.
    async fn admitted<M, Fut>(
        &self,
        key: Option<&K>,
        make: M,
        deadline: Option<Instant>,
    ) -> Result<T, Attempt<E>>
    where
        M: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = &*self.inner;
        if let Some((limiter, admission)) = &inner.limiter {
            // A token that is there is taken without entering the waiting
            // state machine (the limiter's `try_acquire` defers to queued
            // waiters, so FIFO order is kept); only a refusal goes on.
            if let Err(refused) = limiter.try_acquire(1) {
                take_token(limiter, refused, *admission, deadline).await?;
            }
        }
        if let (Some((keyed, admission)), Some(key)) = (&inner.keyed, key) {
            if let Err(refused) = take_keyed_token(keyed, key, *admission, deadline).await {
                if let Some((limiter, _)) = &inner.limiter {
                    limiter.refund(1);
                }
                return Err(refused);
            }
        }
        let _slot = match &inner.bulkhead {
            None => None,
            Some((bulkhead, admission)) => match bulkhead.enter(*admission, deadline).await {
                Some(slot) => Some(slot),
                None => {
                    // The tokens taken above bought nothing: give them back.
                    if let Some((limiter, _)) = &inner.limiter {
                        limiter.refund(1);
                    }
                    if let (Some((keyed, _)), Some(key)) = (&inner.keyed, key) {
                        keyed.refund(key, 1);
                    }
                    return Err(Attempt::BulkheadFull);
                }
            },
        };
        let permit = match &inner.adaptive {
            None => None,
            Some((limiter, admission)) => {
                // The waits are boxed: they would otherwise grow every
                // call's future, adaptive layer or not.
                let permit = match (admission, deadline) {
                    (Admission::Shed, _) => limiter.try_acquire(),
                    (Admission::Wait, None) => Box::pin(limiter.acquire()).await,
                    (Admission::Wait, Some(d)) => Box::pin(limiter.acquire_deadline(d)).await,
                };
                match permit {
                    Ok(p) => Some(p),
                    Err(_) => {
                        // The slot above is dropped on return; the tokens
                        // bought nothing either.
                        if let Some((limiter, _)) = &inner.limiter {
                            limiter.refund(1);
                        }
                        if let (Some((keyed, _)), Some(key)) = (&inner.keyed, key) {
                            keyed.refund(key, 1);
                        }
                        return Err(Attempt::AdaptiveLimited);
                    }
                }
            }
        };
        let fut = make();
        let outcome = match inner.attempt_timeout {
            None => fut.await.map_err(Attempt::Inner),
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r.map_err(Attempt::Inner),
                Err(_) => Err(Attempt::Timeout),
            },
        };
        if let Some(p) = permit {
            let failed = match &outcome {
                Ok(v) => inner.failure_if.test(Ok(v)),
                Err(Attempt::Inner(e)) => inner.failure_if.test(Err(e)),
                Err(_) => true,
            };
            if failed { p.dropped() } else { p.success() }
        }
        outcome
    }
}

/// One token after `try_acquire` refused it (`first`), by the admission
/// rule; only a real wait builds the (boxed) waiting future.
async fn take_token<E>(
    limiter: &RateLimiter,
    first: TryAcquireError,
    admission: Admission,
    deadline: Option<Instant>,
) -> Result<(), Attempt<E>> {
    let refused = match first {
        TryAcquireError::NotUntil { retry_after } => match (admission, deadline) {
            (Admission::Shed, _) => Some(retry_after),
            (Admission::Wait, None) => match Box::pin(limiter.acquire(1)).await {
                Ok(()) => return Ok(()),
                Err(_) => None,
            },
            (Admission::Wait, Some(d)) => match Box::pin(limiter.acquire_deadline(1, d)).await {
                Ok(()) => return Ok(()),
                Err(RateAcquireError::Timeout { retry_after }) => Some(retry_after),
                Err(_) => None,
            },
        },
        _ => None,
    };
    let after = refused.map(|at| at.saturating_duration_since(Instant::now()));
    Err(Attempt::RateLimited(after))
}

/// How the retry layer ended, as the pipeline's error.
fn from_retry<E>(e: RetryError<Attempt<E>>) -> PipelineError<E> {
    match e {
        RetryError::Exhausted { error, attempts }
        | RetryError::BudgetExhausted { error, attempts } => match error {
            Attempt::Inner(last) => PipelineError::RetriesExhausted { last, attempts },
            other => refusal_or_inner(other, attempts),
        },
        RetryError::NotRetryable { error, attempts } => refusal_or_inner(error, attempts),
        RetryError::Deadline { error, attempts } => match error {
            Some(Attempt::Inner(last)) => PipelineError::Timeout {
                attempts,
                last: Some(last),
            },
            // The deadline ended a wait for a token: say so.
            Some(r @ Attempt::RateLimited(_)) => refusal_or_inner(r, attempts),
            _ => PipelineError::Timeout {
                attempts,
                last: None,
            },
        },
    }
}

/// One token from `key`'s bucket, by the admission rule: waits (no later
/// than the deadline) for the instant the bucket gives it.
async fn take_keyed_token<K: Hash + Eq + Clone, E>(
    limiter: &KeyedRateLimiter<K>,
    key: &K,
    admission: Admission,
    deadline: Option<Instant>,
) -> Result<(), Attempt<E>> {
    loop {
        match limiter.try_acquire(key, 1) {
            Ok(()) => return Ok(()),
            Err(TryAcquireError::NotUntil { retry_after }) => {
                if admission == Admission::Shed || deadline.is_some_and(|d| retry_after > d) {
                    let after = retry_after.saturating_duration_since(Instant::now());
                    return Err(Attempt::RateLimited(Some(after)));
                }
                Box::pin(tokio::time::sleep_until(retry_after)).await;
            }
            Err(_) => return Err(Attempt::RateLimited(None)),
        }
    }
}

/// A refusal below the retry layer, or the operation's own error.
fn refusal_or_inner<E>(a: Attempt<E>, attempts: u32) -> PipelineError<E> {
    match a {
        Attempt::Inner(e) => PipelineError::Inner(e),
        Attempt::Timeout => PipelineError::AttemptTimeout { attempts },
        Attempt::Breaker(r) => PipelineError::BreakerOpen {
            retry_after: r.retry_after(),
        },
        Attempt::RateLimited(retry_after) => PipelineError::RateLimited { retry_after },
        Attempt::BulkheadFull => PipelineError::BulkheadFull,
        Attempt::AdaptiveLimited => PipelineError::ConcurrencyLimited,
    }
}

/// Publishes a named pipeline's own counters (feature `metrics`).
#[cfg(all(feature = "metrics", not(loom)))]
fn export(name: &str, counters: crate::sync::StdWeak<Counters>) {
    crate::metrics::Handles::new("pipeline", name).publish_each(
        [
            "succeeded_total",
            "failed_total",
            "fallbacks_total",
            "timeouts_total",
            "breaker_refusals_total",
            "rate_limited_total",
            "bulkhead_full_total",
            "adaptive_limited_total",
        ],
        move || {
            let c = counters.upgrade()?;
            let l = |a: &AtomicU64| Some(a.load(Ordering::Relaxed) as f64);
            Some([
                l(&c.succeeded),
                l(&c.failed),
                l(&c.fallbacks),
                l(&c.timeouts),
                l(&c.breaker_refusals),
                l(&c.rate_limited),
                l(&c.bulkhead_full),
                l(&c.adaptive_limited),
            ])
        },
    );
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl<T, E, K> Clone for Pipeline<T, E, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T, E, K> fmt::Debug for Pipeline<T, E, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.inner;
        f.debug_struct("Pipeline")
            .field("timeout", &i.timeout)
            .field("retry", &i.retry)
            .field("breaker", &i.breaker.is_some())
            .field("hedge", &i.hedge.is_some())
            .field("rate_limiter", &i.limiter.as_ref().map(|(_, a)| a))
            .field("keyed_rate_limiter", &i.keyed.as_ref().map(|(_, a)| a))
            .field(
                "bulkhead",
                &i.bulkhead.as_ref().map(|(b, a)| {
                    let kind = match b {
                        Bulkhead::Semaphore(_) => "semaphore",
                        Bulkhead::Pool(_) => "worker_pool",
                    };
                    (kind, a)
                }),
            )
            .field("adaptive", &i.adaptive.as_ref().map(|(_, a)| a))
            .field("attempt_timeout", &i.attempt_timeout)
            .field("fallback", &i.fallback.is_some())
            .finish()
    }
}

impl<T, E, K> fmt::Debug for PipelineBuilder<T, E, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker.is_some())
            .field("hedge", &self.hedge.is_some())
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}
