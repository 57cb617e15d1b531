//! Retry: try again, later, but not forever and not all at once.
//!
//! A [`Retry`] runs an async operation, and when the outcome is one worth
//! retrying (an error, by default; any `Result` the classifier picks, such
//! as an HTTP 503 response) waits and runs it again:
//!
//! * **How often**: `max_retries` retries *after* the first call (Polly's
//!   convention, so `max_retries(3)` makes at most 4 calls; resilience4j's
//!   `maxAttempts` counts the first call too). Default 3.
//! * **How long between**: a [`Backoff`] (constant, linear, exponential)
//!   capped at `max_delay`, then a [`Jitter`] (none, full, equal,
//!   decorrelated; the AWS Architecture Blog's definitions) so that many
//!   clients do not retry in lock-step. Default: exponential from 100 ms,
//!   ×2, capped at 30 s, no jitter; use [`Jitter::Full`] for a fleet. A
//!   `retry_after` hook lets an outcome say when to come back (a 429's
//!   `Retry-After`, a rate limiter's `retry_after`, a breaker's
//!   `next_ready_at`): that delay replaces the backoff's for that retry.
//! * **Not past a deadline**: with [`timeout`](RetryBuilder::timeout) or
//!   [`call_deadline`](Retry::call_deadline) it never starts a sleep that
//!   ends past the deadline, never starts an attempt with less than
//!   [`attempt_margin`](RetryBuilder::attempt_margin) left, and cuts the
//!   attempt in flight when the deadline comes.
//! * **Not into a storm**: a [`RetryBudget`] shared by clones lets retries
//!   be at most a ratio of recent first calls plus a small floor, so a
//!   dead dependency gets `1 + ratio` times its load, not `1 + max_retries`.
//!
//! The delay schedule is a pure core (`backoff.rs`), the budget a pure core
//! behind one mutex (`budget.rs`); this file is the async shell. Sleeps use
//! `tokio::time`, so paused-clock tests see the exact schedule.
//!
//! Where this differs from Polly and resilience4j, deliberately:
//!
//! * **The default delays grow**: exponential from 100 ms, ×2, capped at
//!   30 s (100, 200, 400 ms for the 3 default retries). Polly's default is a
//!   constant 2 s (`Delay` 2 s, `BackoffType.Constant`, 3 retries);
//!   resilience4j's a fixed 500 ms (`waitDuration`, with `maxAttempts` 3:
//!   2 retries). A short first delay gets past a blip quickly, and a delay
//!   that doubles backs off from a dependency that stays down instead of
//!   retrying into it at a fixed rate. Pass [`Backoff::constant`] for
//!   Polly's or resilience4j's schedule.
//! * **Jitter is the AWS Architecture Blog's** ("Exponential Backoff And
//!   Jitter"): [`Jitter::Full`], [`Jitter::Equal`] and
//!   [`Jitter::Decorrelated`] (`min(max_delay, rand(base, 3 · previous))`),
//!   the same for every backoff. There is no Polly
//!   `DecorrelatedJitterBackoffV2` (what Polly's `UseJitter` gives an
//!   exponential backoff) and no Polly ±25 % jitter of a constant or linear
//!   delay. Each AWS formula has plain bounds (every sleep lies in a known
//!   interval, checked by the tests) and is reproducible with
//!   [`seed`](RetryBuilder::seed). The nearest to Polly's ±25 % is
//!   [`Jitter::Equal`], which draws a delay `d` from `[d/2, d]`.
//! * **No `OnRetry` hook** (Polly's `OnRetry`, resilience4j's retry event
//!   publisher): nothing of the caller's runs between an attempt and its
//!   sleep. What such a hook would see is available elsewhere: the
//!   operation gets its attempt number from
//!   [`call_with_attempt`](Retry::call_with_attempt) (and sees the previous
//!   outcome, which it produced); each retry emits a `tracing` debug event
//!   `"retrying"` with the retry's name, the attempt, the delay in ms and
//!   whether the delay came from the `retry_after` hook; [`RetryMetrics`]
//!   counts calls, attempts, retries and how each call ended; a failed call's
//!   [`RetryError`] carries the last error and the number of attempts.
//! * **Exponential delays are computed in `f64` seconds**: within a
//!   nanosecond of the exact product up to 2^53 ns (about 104 days),
//!   possibly a few nanoseconds off beyond, where `max_delay` has long
//!   capped them.
//!
//! # Examples
//!
//! ```
//! use flowguard::retry::{Backoff, Retry};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let retry = Retry::builder()
//!     .max_retries(3)
//!     .backoff(Backoff::exponential(Duration::from_secs(2), 2.0)) // 2 s, 4 s, 8 s
//!     .build()
//!     .unwrap();
//! let calls = AtomicU32::new(0);
//! let start = tokio::time::Instant::now();
//! let answer = retry
//!     .call(|| async {
//!         // Fails twice, then answers.
//!         if calls.fetch_add(1, Ordering::SeqCst) < 2 { Err("busy") } else { Ok(42) }
//!     })
//!     .await;
//! assert_eq!(answer.unwrap(), 42);
//! assert_eq!(start.elapsed(), Duration::from_secs(6)); // 2 s + 4 s
//! assert_eq!(retry.metrics().succeeded_after_retry, 1);
//! # }
//! ```

mod backoff;
mod budget;
mod error;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

pub(crate) use self::backoff::Schedule;
pub use self::backoff::{Backoff, Jitter};
pub use self::budget::{RetryBudget, RetryBudgetBuilder};
pub use self::error::RetryError;
use crate::error::{ConfigError, ConfigErrorKind};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, StdArc};

type Classifier<T, E> = dyn Fn(&Result<T, E>) -> bool + Send + Sync;
type RetryAfter<T, E> = dyn Fn(&Result<T, E>) -> Option<Duration> + Send + Sync;

/// Retries an async operation with backoff, jitter, a deadline and a
/// budget. Clones share one configuration, one budget and one set of
/// metrics.
///
/// `T` and `E` are the operation's `Ok` and `Err` types; they are usually
/// inferred from the first `call`.
///
/// # Examples
///
/// Retry on a *value*, and let the error say when to come back:
///
/// ```
/// use flowguard::retry::Retry;
/// use std::time::Duration;
///
/// #[derive(Debug, PartialEq)]
/// struct Response { status: u16, retry_after: Option<Duration> }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let retry = Retry::<Response, std::io::Error>::builder()
///     .retry_if(|r| matches!(r, Ok(resp) if resp.status == 503 || resp.status == 429) || r.is_err())
///     .retry_after(|r| r.as_ref().ok().and_then(|resp| resp.retry_after))
///     .build()
///     .unwrap();
/// let start = tokio::time::Instant::now();
/// let resp = retry
///     .call_with_attempt(|attempt| async move {
///         Ok(match attempt {
///             1 => Response { status: 429, retry_after: Some(Duration::from_secs(5)) },
///             _ => Response { status: 200, retry_after: None },
///         })
///     })
///     .await
///     .unwrap();
/// assert_eq!(resp.status, 200);
/// assert_eq!(start.elapsed(), Duration::from_secs(5)); // as the 429 asked
/// # }
/// ```
pub struct Retry<T, E> {
    inner: Arc<Inner<T, E>>,
}

struct Inner<T, E> {
    policy: RetryPolicy,
    timeout: Option<Duration>,
    retry_if: Box<Classifier<T, E>>,
    retry_after: Option<Box<RetryAfter<T, E>>>,
    name: String,
    /// Its own allocation: the `metrics` feature's publisher holds it
    /// weakly without needing the operation's types to be `Send`.
    counters: StdArc<Counters>,
}

/// The part of a retry's configuration that does not depend on the
/// operation's types: how many retries, how long between them, the
/// attempt margin and the budget. [`RetryBuilder`] takes the same settings
/// one by one; a [`Pipeline`](crate::pipeline::Pipeline) takes a whole
/// policy (its own classifier decides what is retried). Defaults as on
/// [`RetryBuilder`]; checked when the retry or pipeline is built.
///
/// # Examples
///
/// ```
/// use flowguard::retry::{Backoff, Jitter, Retry, RetryPolicy};
/// use std::time::Duration;
///
/// let policy = RetryPolicy::new()
///     .max_retries(2)
///     .backoff(Backoff::constant(Duration::from_millis(50)))
///     .jitter(Jitter::Equal);
/// let retry = Retry::<u32, ()>::builder().policy(policy.clone()).build().unwrap();
/// assert_eq!(retry.max_retries(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) backoff: Backoff,
    pub(crate) jitter: Jitter,
    pub(crate) max_delay: Duration,
    pub(crate) seed: Option<u64>,
    pub(crate) attempt_margin: Duration,
    pub(crate) budget: Option<RetryBudget>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryPolicy {
    /// The defaults: 3 retries, exponential from 100 ms ×2 capped at 30 s,
    /// no jitter, unseeded, no margin, no budget.
    pub fn new() -> Self {
        Self {
            max_retries: 3,
            backoff: Backoff::exponential(Duration::from_millis(100), 2.0),
            jitter: Jitter::None,
            max_delay: Duration::from_secs(30),
            seed: None,
            attempt_margin: Duration::ZERO,
            budget: None,
        }
    }

    /// See [`RetryBuilder::max_retries`].
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// See [`RetryBuilder::backoff`].
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// See [`RetryBuilder::max_delay`].
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }

    /// See [`RetryBuilder::jitter`].
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// See [`RetryBuilder::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// See [`RetryBuilder::attempt_margin`].
    pub fn attempt_margin(mut self, margin: Duration) -> Self {
        self.attempt_margin = margin;
        self
    }

    /// See [`RetryBuilder::budget`].
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Checks the policy (with the overall timeout it will run under).
    pub(crate) fn validate(
        &self,
        component: &'static str,
        timeout: Option<Duration>,
    ) -> Result<(), ConfigError> {
        let c = component;
        if let Backoff::Exponential { factor, .. } = self.backoff {
            if !factor.is_finite() || factor < 1.0 {
                return Err(ConfigError::new(
                    c,
                    "backoff",
                    ConfigErrorKind::TooSmall,
                    format!("exponential factor must be a finite number >= 1, got {factor}"),
                ));
            }
        }
        if self.jitter == Jitter::Decorrelated && self.backoff.base().is_zero() {
            return Err(ConfigError::new(
                c,
                "backoff",
                ConfigErrorKind::Conflict,
                "decorrelated jitter needs a non-zero first delay (it grows from it)",
            ));
        }
        if self.max_delay.is_zero() {
            return Err(ConfigError::new(
                c,
                "max_delay",
                ConfigErrorKind::Zero,
                "must be positive",
            ));
        }
        if let Some(t) = timeout {
            if t.is_zero() {
                return Err(ConfigError::new(
                    c,
                    "timeout",
                    ConfigErrorKind::Zero,
                    "must be positive (a call with no time could never run)",
                ));
            }
            if self.attempt_margin >= t {
                return Err(ConfigError::new(
                    c,
                    "attempt_margin",
                    ConfigErrorKind::Conflict,
                    format!(
                        "must be shorter than timeout {t:?}, got {:?} (no attempt could ever start)",
                        self.attempt_margin
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Counted when a call ends (one atomic add for a call that succeeds at
/// once); `calls` and `attempts` are derived from them.
#[derive(Debug, Default)]
struct Counters {
    /// Retries made by ended calls.
    retries: AtomicU64,
    /// Ended calls the deadline stopped before their first attempt.
    no_attempt: AtomicU64,
    /// Calls that needed a delay schedule: numbers them for seeding.
    schedules: AtomicU64,
    succeeded_first: AtomicU64,
    succeeded_after_retry: AtomicU64,
    exhausted: AtomicU64,
    not_retryable: AtomicU64,
    budget_refusals: AtomicU64,
    deadline: AtomicU64,
}

/// Publishes a named retry's counters (feature `metrics`).
#[cfg(all(feature = "metrics", not(loom)))]
fn export(name: &str, counters: crate::sync::StdWeak<Counters>) {
    crate::metrics::Handles::new("retry", name).publish_each(
        [
            "calls_total",
            "attempts_total",
            "retries_total",
            "succeeded_first_total",
            "succeeded_after_retry_total",
            "exhausted_total",
            "not_retryable_total",
            "budget_refusals_total",
            "deadline_total",
        ],
        move || {
            // One snapshot: every series from the same reads, so
            // `calls` is the sum of the outcomes published beside it.
            let m = counters.upgrade()?.snapshot();
            Some(
                [
                    m.calls,
                    m.attempts,
                    m.retries,
                    m.succeeded_first,
                    m.succeeded_after_retry,
                    m.exhausted,
                    m.not_retryable,
                    m.budget_refusals,
                    m.deadline,
                ]
                .map(|v| Some(v as f64)),
            )
        },
    );
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of a [`Retry`]'s counters (shared by its clones).
///
/// # Examples
///
/// ```
/// use flowguard::retry::{Backoff, Retry};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let retry = Retry::builder()
///     .max_retries(2)
///     .backoff(Backoff::constant(Duration::from_millis(10)))
///     .build()
///     .unwrap();
/// let _ = retry.call(|| async { Err::<(), _>("down") }).await;
/// let m = retry.metrics();
/// assert_eq!((m.calls, m.attempts, m.retries, m.exhausted), (1, 3, 2, 1));
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryMetrics {
    /// Calls that ended (`call` and its variants; a call in flight is
    /// counted when it ends).
    pub calls: u64,
    /// Attempts made by those calls, first attempts included.
    pub attempts: u64,
    /// Retries made by those calls (attempts after the first).
    pub retries: u64,
    /// Calls whose first attempt returned an `Ok` the classifier passed.
    /// Every call counts under exactly one ending: a call whose first
    /// attempt ends it otherwise counts under `not_retryable`, `exhausted`,
    /// `budget_refusals` or `deadline`.
    pub succeeded_first: u64,
    /// Calls that ended in `Ok` after at least one retry (a value the
    /// classifier passed).
    pub succeeded_after_retry: u64,
    /// Calls that ran out of retries.
    pub exhausted: u64,
    /// Calls that ended on an outcome the classifier would not retry, as an error.
    pub not_retryable: u64,
    /// Retries the budget refused (each ends its call).
    pub budget_refusals: u64,
    /// Calls ended by their deadline.
    pub deadline: u64,
}

/// Configures a [`Retry`]. Defaults: `max_retries` 3, backoff exponential
/// from 100 ms ×2, `max_delay` 30 s, no jitter, an unseeded random source,
/// no timeout, `attempt_margin` 0, retry on every `Err` and no `Ok`, no
/// `retry_after` hook, no budget, name `"retry"`. The delays differ from
/// Polly's (a constant 2 s) and resilience4j's (a fixed 500 ms, 3 attempts
/// in all): see the [module docs](crate::retry) for why.
///
/// # Examples
///
/// ```
/// use flowguard::retry::{Backoff, Retry};
/// use std::time::Duration;
///
/// let err = Retry::<(), ()>::builder()
///     .backoff(Backoff::exponential(Duration::from_millis(10), 0.5))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "backoff");
/// ```
pub struct RetryBuilder<T, E> {
    policy: RetryPolicy,
    timeout: Option<Duration>,
    retry_if: Box<Classifier<T, E>>,
    retry_after: Option<Box<RetryAfter<T, E>>>,
    name: String,
    /// Whether `name` was called (only named retries are published).
    named: bool,
}

impl<T, E> RetryBuilder<T, E> {
    /// Retries after the first call (0: no retry). At most `max_retries + 1`
    /// calls are made.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.policy.max_retries = n;
        self
    }

    /// How the delay grows (see [`Backoff`]). Default exponential from
    /// 100 ms ×2 (Polly: constant 2 s; resilience4j: fixed 500 ms);
    /// `Backoff::constant(Duration::from_secs(2))` gives Polly's.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.policy.backoff = backoff;
        self
    }

    /// The longest delay the backoff and jitter may produce (a
    /// `retry_after` hook's delay is not capped: the caller asked for it).
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.policy.max_delay = max;
        self
    }

    /// How each delay is randomised (see [`Jitter`]): the AWS
    /// Architecture Blog's full, equal or decorrelated jitter, not Polly's
    /// `DecorrelatedJitterBackoffV2`. Default none.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.policy.jitter = jitter;
        self
    }

    /// Seeds the jitter, so schedules are reproducible (the `k`-th call of
    /// this retry that needs a delay, counted from 0 across clones, uses a
    /// sequence derived from `seed` and `k`).
    pub fn seed(mut self, seed: u64) -> Self {
        self.policy.seed = Some(seed);
        self
    }

    /// An overall deadline for every call, counted from its start (see
    /// [`Retry::call_deadline`] for what it does).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The least time an attempt needs: with a deadline, no attempt starts
    /// with less than this left (the call ends with `Deadline` instead).
    pub fn attempt_margin(mut self, margin: Duration) -> Self {
        self.policy.attempt_margin = margin;
        self
    }

    /// A budget to draw each retry from (shared with whoever else holds it).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.policy.budget = Some(budget);
        self
    }

    /// Every setting of `policy` at once (replacing those set before).
    pub fn policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Which outcomes are retried (default: every `Err`, no `Ok`). Errors
    /// it rejects end the call with [`RetryError::NotRetryable`]; values it
    /// rejects are returned as they are.
    pub fn retry_if(mut self, f: impl Fn(&Result<T, E>) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Box::new(f);
        self
    }

    /// When an outcome says how long to wait (`Some`), that delay is used
    /// for the next retry instead of the backoff's. Called once per retry,
    /// with the outcome being retried: only for outcomes `retry_if` passes,
    /// and not for the last one when `max_retries` is spent (as Polly calls
    /// its `DelayGenerator`).
    pub fn retry_after(
        mut self,
        f: impl Fn(&Result<T, E>) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.retry_after = Some(Box::new(f));
        self
    }

    /// A name for tracing events. With the `metrics` feature, a named
    /// retry also publishes its counters under it (`flowguard_retry_*`,
    /// see `flowguard::metrics`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self.named = true;
        self
    }

    /// Validates the configuration and creates the retry.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `backoff` (an exponential factor below 1 or
    /// not finite; a zero base with decorrelated jitter, which could never
    /// grow), `max_delay` (zero), `timeout` (zero) or `attempt_margin`
    /// (not shorter than `timeout`: no attempt could start).
    pub fn build(self) -> Result<Retry<T, E>, ConfigError> {
        self.policy.validate("retry", self.timeout)?;
        let retry = Retry::from_parts(
            self.policy,
            self.timeout,
            self.retry_if,
            self.retry_after,
            self.name,
        );
        #[cfg(all(feature = "metrics", not(loom)))]
        if self.named {
            export(&retry.inner.name, StdArc::downgrade(&retry.inner.counters));
        }
        Ok(retry)
    }
}

impl<T, E> fmt::Debug for RetryBuilder<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBuilder")
            .field("policy", &self.policy)
            .field("timeout", &self.timeout)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T, E> Retry<T, E> {
    /// A builder with the defaults listed on [`RetryBuilder`].
    pub fn builder() -> RetryBuilder<T, E> {
        RetryBuilder {
            policy: RetryPolicy::new(),
            timeout: None,
            retry_if: Box::new(|r| r.is_err()),
            retry_after: None,
            name: "retry".to_owned(),
            named: false,
        }
    }

    /// A retry from validated parts (the builder's and the pipeline's way in).
    pub(crate) fn from_parts(
        policy: RetryPolicy,
        timeout: Option<Duration>,
        retry_if: Box<Classifier<T, E>>,
        retry_after: Option<Box<RetryAfter<T, E>>>,
        name: String,
    ) -> Self {
        Retry {
            inner: Arc::new(Inner {
                policy,
                timeout,
                retry_if,
                retry_after,
                name,
                counters: StdArc::default(),
            }),
        }
    }

    /// Runs `op`, retrying as configured.
    ///
    /// # Errors
    ///
    /// A [`RetryError`] saying how it ended, with the last error of `op`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the attempt in flight (or the
    /// sleep) and makes no further attempt. A budget withdrawal already
    /// made for a retry that was then dropped is not refunded.
    pub async fn call<F, Fut>(&self, mut op: F) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let deadline = self.default_deadline();
        self.run(deadline, |_| op()).await
    }

    /// As [`call`](Self::call), passing `op` the attempt number (1 for the
    /// first call, 2 for the first retry, …).
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Self::call).
    pub async fn call_with_attempt<F, Fut>(&self, op: F) -> Result<T, RetryError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let deadline = self.default_deadline();
        self.run(deadline, op).await
    }

    /// As [`call_with_attempt`](Self::call_with_attempt), with an overall
    /// `deadline` (the earlier of it and the builder's `timeout`). It never
    /// starts a sleep that would end past the deadline, never starts an
    /// attempt with less than `attempt_margin` left, and drops the attempt
    /// in flight when the deadline comes: each ends the call with
    /// [`RetryError::Deadline`].
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Self::call).
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::retry::{Backoff, Retry, RetryError};
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let retry = Retry::builder()
    ///     .max_retries(10)
    ///     .backoff(Backoff::constant(Duration::from_millis(400)))
    ///     .build()
    ///     .unwrap();
    /// let start = Instant::now();
    /// let deadline = start + Duration::from_secs(1);
    /// let err = retry
    ///     .call_deadline(deadline, |_| async { Err::<(), _>("down") })
    ///     .await
    ///     .unwrap_err();
    /// // Attempts at 0, 400 and 800 ms; a sleep to 1200 ms would pass the deadline.
    /// assert!(matches!(err, RetryError::Deadline { error: Some("down"), attempts: 3 }));
    /// assert_eq!(start.elapsed(), Duration::from_millis(800));
    /// # }
    /// ```
    pub async fn call_deadline<F, Fut>(&self, deadline: Instant, op: F) -> Result<T, RetryError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let deadline = match self.default_deadline() {
            Some(d) => d.min(deadline),
            None => deadline,
        };
        self.run(Some(deadline), op).await
    }

    /// The counters, shared by clones.
    pub fn metrics(&self) -> RetryMetrics {
        self.inner.counters.snapshot()
    }
}

impl Counters {
    fn snapshot(&self) -> RetryMetrics {
        let c = self;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (first, after, exhausted, not_retryable, budget, deadline) = (
            l(&c.succeeded_first),
            l(&c.succeeded_after_retry),
            l(&c.exhausted),
            l(&c.not_retryable),
            l(&c.budget_refusals),
            l(&c.deadline),
        );
        let calls = first + after + exhausted + not_retryable + budget + deadline;
        let retries = l(&c.retries);
        RetryMetrics {
            calls,
            attempts: (calls + retries).saturating_sub(l(&c.no_attempt)),
            retries,
            succeeded_first: first,
            succeeded_after_retry: after,
            exhausted,
            not_retryable,
            budget_refusals: budget,
            deadline,
        }
    }
}

impl<T, E> Retry<T, E> {
    /// The budget this retry draws from, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.inner.policy.budget.as_ref()
    }

    /// Retries after the first call, as configured.
    pub fn max_retries(&self) -> u32 {
        self.inner.policy.max_retries
    }

    fn default_deadline(&self) -> Option<Instant> {
        self.inner
            .timeout
            .and_then(|t| Instant::now().checked_add(t))
    }

    fn schedule(&self) -> Schedule {
        let p = &self.inner.policy;
        let call = self
            .inner
            .counters
            .schedules
            .fetch_add(1, Ordering::Relaxed);
        let seed = match p.seed {
            // Distinct, reproducible per call: SplitMix64 decorrelates
            // neighbouring seeds.
            Some(s) => s ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            None => crate::rng::entropy_seed(),
        };
        Schedule::new(p.backoff, p.jitter, p.max_delay, seed)
    }

    /// Whether the classifier wants `outcome` retried.
    fn worth_retrying(&self, outcome: &Result<T, E>) -> bool {
        (self.inner.retry_if)(outcome)
    }

    /// The `retry_after` hook's delay for `outcome`, if it gives one. Asked
    /// only once a retry is allowed by the count (as Polly asks its
    /// `DelayGenerator`), not for the outcome that ends the call.
    fn hook_delay(&self, outcome: &Result<T, E>) -> Option<Duration> {
        self.inner.retry_after.as_ref().and_then(|f| f(outcome))
    }

    /// The retry loop. `deadline: None` means no deadline.
    async fn run<F, Fut>(&self, deadline: Option<Instant>, mut op: F) -> Result<T, RetryError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut run = self.start(deadline);
        loop {
            let attempt = run.begin()?;
            let fut = op(attempt);
            let outcome = match deadline {
                None => fut.await,
                Some(d) => match tokio::time::timeout_at(d, fut).await {
                    Ok(o) => o,
                    Err(_) => return Err(run.cut()),
                },
            };
            match run.finish(outcome) {
                Next::Done(result) => return result,
                Next::Sleep(delay) => {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }

    /// Starts one call's run: the loop's state, stepped by whoever drives
    /// the attempts (this retry's own loop, or a pipeline's).
    pub(crate) fn start(&self, deadline: Option<Instant>) -> Run<'_, T, E> {
        if let Some(b) = &self.inner.policy.budget {
            b.deposit();
        }
        Run {
            retry: self,
            deadline,
            schedule: None,
            last_err: None,
            attempt: 0,
        }
    }

    /// Counts an ended call: its outcome and its retries.
    fn ended(&self, outcome: &AtomicU64, attempts: u32) {
        let c = &self.inner.counters;
        Counters::bump(outcome);
        match attempts {
            0 => Counters::bump(&c.no_attempt),
            1 => {}
            n => {
                c.retries.fetch_add(u64::from(n - 1), Ordering::Relaxed);
            }
        }
    }

    fn end_done(&self, outcome: Result<T, E>, attempts: u32) -> Result<T, RetryError<E>> {
        let c = &self.inner.counters;
        match outcome {
            Ok(v) => {
                let kind = if attempts == 1 {
                    &c.succeeded_first
                } else {
                    &c.succeeded_after_retry
                };
                self.ended(kind, attempts);
                Ok(v)
            }
            Err(error) => {
                self.ended(&c.not_retryable, attempts);
                Err(RetryError::NotRetryable { error, attempts })
            }
        }
    }

    fn end_deadline(&self, error: Option<E>, attempts: u32) -> RetryError<E> {
        self.ended(&self.inner.counters.deadline, attempts);
        tracing::debug!(retry = %self.inner.name, attempts, "retry deadline reached");
        RetryError::Deadline { error, attempts }
    }
}

/// What the driver of a [`Run`] does next.
pub(crate) enum Next<T, E> {
    /// Sleep this long, then [`Run::begin`] the next attempt.
    Sleep(Duration),
    /// The call is over.
    Done(Result<T, RetryError<E>>),
}

/// One call's retry loop as a state machine: [`begin`](Self::begin) before
/// each attempt, [`finish`](Self::finish) (or [`cut`](Self::cut), when the
/// deadline drops the attempt) after it. The driver owns the operation, so
/// it can borrow it mutably for each attempt.
pub(crate) struct Run<'r, T, E> {
    retry: &'r Retry<T, E>,
    deadline: Option<Instant>,
    schedule: Option<Schedule>,
    last_err: Option<E>,
    attempt: u32,
}

impl<T, E> Run<'_, T, E> {
    /// May the next attempt start? Its number, or the deadline's error.
    pub(crate) fn begin(&mut self) -> Result<u32, RetryError<E>> {
        let inner = &*self.retry.inner;
        if let Some(d) = self.deadline {
            let now = Instant::now();
            if now >= d || d - now < inner.policy.attempt_margin {
                return Err(self.retry.end_deadline(self.last_err.take(), self.attempt));
            }
        }
        self.attempt += 1;
        Ok(self.attempt)
    }

    /// The deadline dropped the attempt in flight.
    pub(crate) fn cut(&mut self) -> RetryError<E> {
        self.retry.end_deadline(self.last_err.take(), self.attempt)
    }

    /// Decides after an attempt: done, or sleep and try again.
    pub(crate) fn finish(&mut self, outcome: Result<T, E>) -> Next<T, E> {
        let retry = self.retry;
        let inner = &*retry.inner;
        let policy = &inner.policy;
        let c = &inner.counters;
        let attempt = self.attempt;
        if !retry.worth_retrying(&outcome) {
            return Next::Done(retry.end_done(outcome, attempt));
        }
        // Worth retrying: may we?
        if attempt > policy.max_retries {
            retry.ended(&c.exhausted, attempt);
            return Next::Done(match outcome {
                Ok(v) => Ok(v),
                Err(error) => Err(RetryError::Exhausted {
                    error,
                    attempts: attempt,
                }),
            });
        }
        let hook_delay = retry.hook_delay(&outcome);
        let delay = match hook_delay {
            Some(d) => d,
            None => self
                .schedule
                .get_or_insert_with(|| retry.schedule())
                .delay(attempt),
        };
        if let Some(d) = self.deadline {
            // The next attempt would start at `wake`: sleep only if `begin`
            // would then let it start (before the deadline, with its margin).
            let wake = Instant::now().checked_add(delay);
            let fits = wake.is_some_and(|w| w < d && d - w >= policy.attempt_margin);
            if !fits {
                return Next::Done(match outcome {
                    Ok(v) => {
                        retry.ended(&c.deadline, attempt);
                        Ok(v)
                    }
                    Err(e) => Err(retry.end_deadline(Some(e), attempt)),
                });
            }
        }
        if let Some(b) = &policy.budget {
            if !b.try_withdraw() {
                retry.ended(&c.budget_refusals, attempt);
                return Next::Done(match outcome {
                    Ok(v) => Ok(v),
                    Err(error) => Err(RetryError::BudgetExhausted {
                        error,
                        attempts: attempt,
                    }),
                });
            }
        }
        tracing::debug!(
            retry = %inner.name,
            attempt,
            delay_ms = delay.as_millis() as u64,
            from_hook = hook_delay.is_some(),
            "retrying"
        );
        self.last_err = outcome.err();
        Next::Sleep(delay)
    }
}

impl<T, E> Clone for Retry<T, E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T, E> fmt::Debug for Retry<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("name", &self.inner.name)
            .field("policy", &self.inner.policy)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}
