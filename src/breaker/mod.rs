//! Circuit breakers: stop calling a backend that is failing, probe it, recover.
//!
//! A [`CircuitBreaker`] sits in front of calls to another system. While the
//! backend is healthy it is **closed** and calls go through; it watches their
//! outcomes and, when a trip policy holds, **opens**: calls are then refused
//! at once with [`Rejected::Open`] without touching the backend. After the
//! open wait it lets a fixed number of **probe** calls through (**half-open**)
//! and decides from their outcomes whether to close again or re-open with a
//! longer wait.
//!
//! The rules follow resilience4j's breaker; every boundary is written down in
//! the [state machine's documentation](CircuitBreaker#state-machine).
//!
//! Where this differs, deliberately:
//!
//! * **The slow-call policy is off by default** (see [`Builder`]).
//! * **Half-open decides once all probes have reported, whatever the
//!   policy.** With the consecutive-failures policy (gobreaker's and Polly's
//!   classic breaker) and no failure-rate threshold, a failed probe
//!   re-opens the breaker when the last of the
//!   [`permitted_probes`](Builder::permitted_probes) outcomes is in;
//!   gobreaker re-opens at the first failed probe. Until then the breaker
//!   stays half-open and admits the rest of the probes. The cost is up to
//!   `permitted_probes − 1` more calls to a backend seen failing; in
//!   return every policy decides by one rule, on the whole sample (as the
//!   rate policies need), and the same probe outcomes always give the same
//!   decision, whatever order concurrent probes finish in (in gobreaker, a
//!   failure that lands after the successes needed to close is dropped).
//!   With `permitted_probes(1)` (gobreaker's default `MaxRequests`) the two
//!   behave the same.
//! * **…and whatever `minimum_calls`**: resilience4j decides half-open after
//!   `min(minimumNumberOfCalls, permittedNumberOfCallsInHalfOpenState)`
//!   outcomes, so a `minimum_calls` below `permitted_probes` cuts the probe
//!   sample short. Here `minimum_calls` governs the closed window only and
//!   `permitted_probes` is the probe sample. With the defaults (100 and 10)
//!   the two agree.
//! * **The rate policy is judged after every recorded outcome, a success
//!   included** (resilience4j's rule): with `minimum_calls` 3 and a 50 %
//!   threshold, failure, failure, success trips on the success, which
//!   brings the sample to its minimum at 67 % failures. Polly's advanced
//!   breaker and gobreaker's `ReadyToTrip` are consulted only when a call
//!   fails, so there the same sample trips at the next failure instead.
//!   Judging on every outcome means the window's rate decides, not which
//!   kind of call happened to complete the sample. (The consecutive policy
//!   only ever trips on a failure, as in both.)
//!
//! ```
//! use flowguard::breaker::{BreakerError, CircuitBreaker, Rejected, State};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let breaker = CircuitBreaker::builder()
//!     .consecutive_failures(3)
//!     .open_wait(Duration::from_secs(10))
//!     .build()
//!     .unwrap();
//!
//! for _ in 0..3 {
//!     let r: Result<(), _> = breaker.call(|| async { Err("down") }).await;
//!     assert!(matches!(r, Err(BreakerError::Inner("down"))));
//! }
//! assert_eq!(breaker.state(), State::Open);
//! let r: Result<(), BreakerError<&str>> = breaker.call(|| async { Ok(()) }).await;
//! assert_eq!(
//!     r.unwrap_err().rejected(),
//!     Some(Rejected::Open { retry_after: Duration::from_secs(10) })
//! );
//! # }
//! ```

mod error;
mod state;
mod window;

use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::{Clock, FastClock, tokio_wake_at};
use crate::histogram::{HistogramSnapshot, Recorder, Timed};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Mutex, StdArc, ThreadCounter};
use crate::{ConfigError, ConfigErrorKind};

pub use error::{BreakerError, Rejected};
pub use state::State;

use state::{
    Backoff, Core, Readiness, Settings, StateWord, Ticket, TicketKind, Transition, WindowKind,
};
use window::Record;

const COMPONENT: &str = "circuit breaker";
/// Longest open wait, backoff cap or half-open wait accepted (365 days).
const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);
/// Largest count window (one byte per call).
const MAX_COUNT_WINDOW: u32 = 1 << 20;
/// Most buckets in a time window.
const MAX_BUCKETS: u32 = 4096;
/// Most probe calls in half-open.
const MAX_PROBES: u32 = 1 << 16;

/// How a finished call counts, as decided by a classifier.
///
/// # Examples
///
/// ```
/// use flowguard::breaker::{CircuitBreaker, Outcome};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let breaker = CircuitBreaker::new();
/// // A "not found" is the caller's problem, not the backend's: ignore it.
/// let r: Result<u32, &str> = breaker
///     .call_with(
///         || async { Err("not found") },
///         |r| match r {
///             Ok(_) => Outcome::Success,
///             Err("not found") => Outcome::Ignored,
///             Err(_) => Outcome::Failure,
///         },
///     )
///     .await
///     .map_err(|e| e.into_inner().unwrap());
/// assert_eq!(r, Err("not found"));
/// assert_eq!(breaker.metrics().calls, 0);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The backend did its job.
    Success,
    /// The backend failed; counts towards tripping.
    Failure,
    /// Neither: the permit is released and nothing is recorded.
    Ignored,
}

/// A state change, as given to the [`on_state_change`](Builder::on_state_change) hook.
///
/// # Examples
///
/// ```
/// use flowguard::breaker::{CircuitBreaker, State, StateChange};
/// use std::sync::{Arc, Mutex};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let breaker = CircuitBreaker::builder()
///     .on_state_change(move |c: &StateChange| log.lock().unwrap().push((c.from, c.to)))
///     .build()
///     .unwrap();
/// breaker.force_open();
/// breaker.reset();
/// assert_eq!(
///     *seen.lock().unwrap(),
///     vec![(State::Closed, State::ForcedOpen), (State::ForcedOpen, State::Closed)]
/// );
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateChange {
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// When it happened, on the breaker's clock.
    pub at: Instant,
    /// The number of transitions so far, this one included. Hooks run on
    /// the thread that caused the change, outside the breaker's lock, so two
    /// concurrent changes may reach the hook out of order: this orders them.
    pub seq: u64,
}

/// A snapshot of a breaker's numbers, from [`CircuitBreaker::metrics`].
///
/// The counts are those the current state decides on: the closed-state
/// window in `Closed`, the probes' outcomes in `HalfOpen`. `Open` keeps the
/// counts of the state it opened from, as resilience4j's `OpenState` does:
/// the window after a trip, the probes after a re-open. `ForcedOpen` and
/// `Disabled` start empty (entering them empties the window, as
/// resilience4j's manual states start with fresh metrics). The window is
/// emptied again when the breaker closes.
///
/// # Examples
///
/// ```
/// use flowguard::breaker::{CircuitBreaker, State};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let breaker = CircuitBreaker::builder().minimum_calls(2).build().unwrap();
/// breaker.try_acquire().unwrap().success();
/// assert_eq!(breaker.metrics().failure_rate, None); // below minimum_calls
/// breaker.try_acquire().unwrap().failure();
/// let m = breaker.metrics();
/// assert_eq!((m.state, m.calls, m.failed_calls), (State::Open, 2, 1));
/// assert_eq!(m.failure_rate, Some(50.0));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BreakerMetrics {
    /// The current state.
    pub state: State,
    /// Failed calls as a percentage of `calls`; `None` until the window holds
    /// the minimum number of calls (all probes, in half-open and after a
    /// re-open).
    pub failure_rate: Option<f64>,
    /// Slow calls as a percentage of `calls`, with the same `None` rule.
    pub slow_call_rate: Option<f64>,
    /// Calls in the window (or probes decided, in half-open and after a
    /// re-open).
    pub calls: u64,
    /// Failed calls among them.
    pub failed_calls: u64,
    /// Slow calls among them.
    pub slow_calls: u64,
    /// The current run of consecutive failures in `Closed`.
    pub consecutive_failures: u32,
    /// Probe calls admitted and not yet finished.
    pub probes_in_flight: u32,
    /// Re-opens since the breaker last closed (the backoff exponent).
    pub reopens: u32,
    /// Calls refused since the breaker was built.
    pub refused: u64,
    /// State transitions since the breaker was built (a manual call to the
    /// state the breaker is in is none).
    pub transitions: u64,
    /// How long calls took, from admission to their reported outcome
    /// (nanoseconds); ignored and dropped calls are not in it. Kept only
    /// with [`histograms`](Builder::histograms) on (by default: when the
    /// slow-call policy is on). With the slow-call policy on, every call is
    /// in it. Without, calls are **sampled** once more than about 128
    /// complete per millisecond: a timed call drawn at 1 in 2^k counts as
    /// 2^k calls, so `count`, `sum` and quantiles estimate all calls and
    /// `min`/`max` are those of the timed ones (see
    /// [sampled timing](crate::histogram#sampled-timing);
    /// [`histogram_max_one_in(1)`](Builder::histogram_max_one_in) times
    /// every call). The counts above are exact either way.
    pub call_duration: HistogramSnapshot,
}

type Hook = Box<dyn Fn(&StateChange) + Send + Sync>;

/// Configures a [`CircuitBreaker`]; [`build`](Builder::build) checks every field.
///
/// Defaults (resilience4j's, but one): failure-rate threshold 50 %, a count
/// window of the last 100 calls, `minimum_calls` 100, a fixed 60 s open wait,
/// 10 probes in half-open, no half-open deadline, no consecutive-failures
/// policy. The policies combine: the breaker trips when any enabled one holds.
///
/// The one difference: the slow-call policy is **off** until
/// [`slow_call_rate_threshold`](Self::slow_call_rate_threshold) turns it on
/// (resilience4j has it on at 100 % / 60 s, where it almost never fires).
/// Timing a call costs two clock reads, several times the rest of the
/// closed-state path, so only breakers that use it pay for it.
///
/// # Examples
///
/// ```
/// use flowguard::breaker::CircuitBreaker;
/// use std::time::Duration;
///
/// let breaker = CircuitBreaker::builder()
///     .failure_rate_threshold(25.0)
///     .slow_call_rate_threshold(50.0)
///     .slow_call_duration_threshold(Duration::from_millis(500))
///     .time_window(Duration::from_secs(30), 30)
///     .minimum_calls(20)
///     .open_wait(Duration::from_secs(5))
///     .open_backoff(2.0, Duration::from_secs(120))
///     .open_jitter(0.2)
///     .permitted_probes(3)
///     .max_half_open_wait(Duration::from_secs(30))
///     .build()
///     .unwrap();
/// # drop(breaker);
/// let err = CircuitBreaker::builder().permitted_probes(0).build().unwrap_err();
/// assert_eq!(err.field(), "permitted_probes");
/// ```
pub struct Builder {
    failure_rate: Option<f64>,
    slow_rate: Option<f64>,
    slow_duration: Duration,
    consecutive_failures: Option<u32>,
    window: WindowKind,
    minimum_calls: u32,
    open_wait: Duration,
    backoff: Option<(f64, Duration)>,
    jitter: f64,
    jitter_seed: Option<u64>,
    permitted_probes: u32,
    max_half_open_wait: Option<Duration>,
    hook: Option<Hook>,
    histograms: Option<bool>,
    histogram_max_one_in: u32,
    name: Option<String>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            failure_rate: Some(50.0),
            slow_rate: None,
            slow_duration: Duration::from_secs(60),
            consecutive_failures: None,
            window: WindowKind::Count { size: 100 },
            minimum_calls: 100,
            open_wait: Duration::from_secs(60),
            backoff: None,
            jitter: 0.0,
            jitter_seed: None,
            permitted_probes: 10,
            max_half_open_wait: None,
            hook: None,
            histograms: None,
            histogram_max_one_in: crate::histogram::DEFAULT_MAX_ONE_IN,
            name: None,
        }
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("failure_rate", &self.failure_rate)
            .field("slow_rate", &self.slow_rate)
            .field("slow_duration", &self.slow_duration)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("window", &self.window)
            .field("minimum_calls", &self.minimum_calls)
            .field("open_wait", &self.open_wait)
            .field("backoff", &self.backoff)
            .field("jitter", &self.jitter)
            .field("permitted_probes", &self.permitted_probes)
            .field("max_half_open_wait", &self.max_half_open_wait)
            .field("hook", &self.hook.as_ref().map(|_| ".."))
            .finish()
    }
}

fn check_percent(field: &'static str, v: f64) -> Result<f64, ConfigError> {
    if v.is_nan() || v < 0.0 {
        return Err(ConfigError::new(
            COMPONENT,
            field,
            ConfigErrorKind::TooSmall,
            format!("must be a percentage in (0, 100], got {v}"),
        ));
    }
    if v == 0.0 {
        return Err(ConfigError::new(
            COMPONENT,
            field,
            ConfigErrorKind::Zero,
            "must be above 0 % (a 0 % threshold would trip on the first call)",
        ));
    }
    if v > 100.0 {
        return Err(ConfigError::new(
            COMPONENT,
            field,
            ConfigErrorKind::TooLarge,
            format!("must be at most 100 %, got {v}"),
        ));
    }
    Ok(v)
}

fn check_wait(field: &'static str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::new(
            COMPONENT,
            field,
            ConfigErrorKind::Zero,
            "must be longer than zero",
        ));
    }
    if d > MAX_WAIT {
        return Err(ConfigError::new(
            COMPONENT,
            field,
            ConfigErrorKind::TooLarge,
            format!("must be at most 365 days, got {d:?}"),
        ));
    }
    Ok(d)
}

fn check_range(field: &'static str, v: u32, max: u32) -> Result<u32, ConfigError> {
    if v == 0 {
        return Err(ConfigError::new(
            COMPONENT,
            field,
            ConfigErrorKind::Zero,
            "must be at least 1, got 0",
        ));
    }
    if v > max {
        return Err(ConfigError::new(
            COMPONENT,
            field,
            ConfigErrorKind::TooLarge,
            format!("must be at most {max}, got {v}"),
        ));
    }
    Ok(v)
}

impl Builder {
    /// Trip when failed calls are at least `percent` % of the window
    /// (inclusive: 50.0 trips at exactly half), once the window holds
    /// `minimum_calls`. In half-open, the probes are judged by the same
    /// threshold. Must be in (0, 100]. Default 50.
    pub fn failure_rate_threshold(mut self, percent: f64) -> Self {
        self.failure_rate = Some(percent);
        self
    }

    /// Turns the failure-rate policy off (e.g. to trip on consecutive
    /// failures only).
    pub fn without_failure_rate(mut self) -> Self {
        self.failure_rate = None;
        self
    }

    /// Trip when slow calls are at least `percent` % of the window
    /// (inclusive), once the window holds `minimum_calls`, whether or not they
    /// failed. Must be in (0, 100]. Off by default; setting it turns the
    /// slow-call policy on, and calls are then timed.
    pub fn slow_call_rate_threshold(mut self, percent: f64) -> Self {
        self.slow_rate = Some(percent);
        self
    }

    /// Turns the slow-call policy off (the default); calls are then not timed.
    pub fn without_slow_call_rate(mut self) -> Self {
        self.slow_rate = None;
        self
    }

    /// Names the breaker: its state-change `tracing` events carry the
    /// name, and with the `metrics` feature its metrics are published under
    /// it (see `flowguard::metrics`); unnamed breakers
    /// are not.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Whether to keep the [`call_duration`](BreakerMetrics::call_duration)
    /// histogram. Default: on exactly when the slow-call policy is on,
    /// whose timing of every call already reads the clock (the histogram
    /// then records every call from those reads). Otherwise timing a call
    /// costs two clock reads, several times the rest of the closed-state
    /// path, so it is opt-in and sampled: every call is timed while fewer
    /// than about 128 complete per millisecond, a random one in up to
    /// [`histogram_max_one_in`](Self::histogram_max_one_in) above that
    /// (see [sampled timing](crate::histogram#sampled-timing)); the call
    /// counts stay exact either way.
    pub fn histograms(mut self, on: bool) -> Self {
        self.histograms = Some(on);
        self
    }

    /// The most calls one timed call may stand for in the
    /// [`call_duration`](BreakerMetrics::call_duration) histogram when
    /// calls are frequent (default
    /// [`DEFAULT_MAX_ONE_IN`](crate::histogram::DEFAULT_MAX_ONE_IN), 64;
    /// rounded down to a power of two, at most
    /// [`MAX_ONE_IN_LIMIT`](crate::histogram::MAX_ONE_IN_LIMIT)); 1 times
    /// every call, at two clock reads each. With the slow-call policy on,
    /// every call is timed anyway and this has no effect.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::breaker::CircuitBreaker;
    ///
    /// let every = CircuitBreaker::builder().histograms(true).histogram_max_one_in(1);
    /// assert!(every.build().is_ok());
    /// let err = CircuitBreaker::builder().histogram_max_one_in(0).build().unwrap_err();
    /// assert_eq!(err.field(), "histogram_max_one_in");
    /// ```
    pub fn histogram_max_one_in(mut self, n: u32) -> Self {
        self.histogram_max_one_in = n;
        self
    }

    /// A call is slow when it takes strictly longer than `threshold`, from
    /// admission to its outcome. Must be above zero (at zero every call
    /// would be slow; resilience4j rejects it too), whether or not the
    /// slow-call policy is on. Default 60 s.
    pub fn slow_call_duration_threshold(mut self, threshold: Duration) -> Self {
        self.slow_duration = threshold;
        self
    }

    /// Also trip after `n` failures in a row in `Closed` (inclusive: the
    /// `n`-th trips; successes reset the run, ignored calls do not). With no
    /// failure-rate threshold, any failed probe then re-opens from half-open,
    /// once all probes have reported (gobreaker re-opens at the first failed
    /// probe: see the [module docs](crate::breaker); with
    /// [`permitted_probes(1)`](Self::permitted_probes) the two agree).
    /// Must be at least 1. Off by default.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = Some(n);
        self
    }

    /// Judge the last `size` calls (1 ..= 2^20; one byte each). The
    /// effective minimum is `min(minimum_calls, size)`. Default 100.
    pub fn count_window(mut self, size: u32) -> Self {
        self.window = WindowKind::Count { size };
        self
    }

    /// Judge the calls of the last `length`, kept in `buckets` buckets
    /// (1 ..= 4096) of `length / buckets` each: an outcome leaves the
    /// window between `length - length/buckets` and `length` after it was
    /// recorded. `length` is at most 365 days and at least `buckets` ns.
    pub fn time_window(mut self, length: Duration, buckets: u32) -> Self {
        self.window = WindowKind::Time { length, buckets };
        self
    }

    /// Rates are judged only once the window holds at least this many calls
    /// (inclusive). Must be at least 1. Default 100. The closed-state window
    /// only: half-open judges all [`permitted_probes`](Self::permitted_probes)
    /// (resilience4j judges `min(minimum_calls, permitted_probes)` of them).
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.minimum_calls = n;
        self
    }

    /// How long the breaker stays open before admitting probes (the first
    /// attempt at `now ≥ opened + wait` is admitted). With
    /// [`open_backoff`](Self::open_backoff) this is the first wait. Must be
    /// above zero and at most 365 days. Default 60 s.
    pub fn open_wait(mut self, wait: Duration) -> Self {
        self.open_wait = wait;
        self
    }

    /// Exponential backoff: each re-open from half-open multiplies the wait
    /// by `multiplier` (finite, ≥ 1), up to `max` (≥ `open_wait`, ≤ 365
    /// days); closing resets it. Off by default (fixed wait).
    pub fn open_backoff(mut self, multiplier: f64, max: Duration) -> Self {
        self.backoff = Some((multiplier, max));
        self
    }

    /// Shortens each open wait by a random fraction in `[0, fraction)`, so
    /// that breakers opened together do not probe together. The cap stays a
    /// cap. Must be in [0, 1). Default 0.
    pub fn open_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Seeds the jitter's generator, for reproducible waits in tests.
    /// Default: a random seed.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// How many probe calls half-open admits (1 ..= 65536); it decides once
    /// all of them have reported, under every policy (a failed probe does
    /// not re-open at once, as in gobreaker). Default 10.
    pub fn permitted_probes(mut self, n: u32) -> Self {
        self.permitted_probes = n;
        self
    }

    /// Re-open if half-open has not decided within `wait` (the first event
    /// at `now ≥ entered + wait`). Must be above zero, at most 365 days.
    /// Off by default: half-open waits for its probes.
    pub fn max_half_open_wait(mut self, wait: Duration) -> Self {
        self.max_half_open_wait = Some(wait);
        self
    }

    /// Calls `hook` after every state change, outside the breaker's lock (it
    /// may use the breaker), on the thread that caused the change.
    pub fn on_state_change(mut self, hook: impl Fn(&StateChange) + Send + Sync + 'static) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    /// Builds a breaker on the default [`FastClock`].
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field, as documented on
    /// each setter; `failure_rate_threshold` with kind `Missing` when no trip
    /// policy is enabled.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        self.build_with_clock(FastClock::new())
    }

    /// Builds a breaker that reads time from `clock`.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_with_clock<C: Clock>(self, clock: C) -> Result<CircuitBreaker<C>, ConfigError> {
        let histograms = self.histograms.unwrap_or(self.slow_rate.is_some());
        let name = self.name.clone();
        let max_one_in = self.histogram_max_one_in;
        let (settings, hook) = self.validate()?;
        let max_one_in = crate::histogram::check_max_one_in("breaker", max_one_in)?;
        let mut breaker =
            CircuitBreaker::from_parts(settings, clock, hook, (histograms, max_one_in));
        if let Some(name) = name {
            if let Some(inner) = Arc::get_mut(&mut breaker.inner) {
                inner.name = StdArc::from(name.as_str());
            }
            #[cfg(all(feature = "metrics", not(loom)))]
            breaker.export(&name);
        }
        Ok(breaker)
    }

    fn validate(self) -> Result<(Settings, Option<Hook>), ConfigError> {
        let failure_rate = self
            .failure_rate
            .map(|v| check_percent("failure_rate_threshold", v))
            .transpose()?;
        let slow_rate = self
            .slow_rate
            .map(|v| check_percent("slow_call_rate_threshold", v))
            .transpose()?;
        if self.slow_duration.is_zero() {
            return Err(ConfigError::new(
                COMPONENT,
                "slow_call_duration_threshold",
                ConfigErrorKind::Zero,
                "must be longer than zero (every call would be slow)",
            ));
        }
        let consecutive_failures = self
            .consecutive_failures
            .map(|n| check_range("consecutive_failures", n, u32::MAX))
            .transpose()?;
        if failure_rate.is_none() && slow_rate.is_none() && consecutive_failures.is_none() {
            return Err(ConfigError::new(
                COMPONENT,
                "failure_rate_threshold",
                ConfigErrorKind::Missing,
                "is off and so are the slow-call and consecutive-failure policies: nothing could trip the breaker",
            ));
        }
        match self.window {
            WindowKind::Count { size } => {
                check_range("count_window", size, MAX_COUNT_WINDOW)?;
            }
            WindowKind::Time { length, buckets } => {
                check_range("time_window", buckets, MAX_BUCKETS)?;
                check_wait("time_window", length)?;
                if length.as_nanos() < u128::from(buckets) {
                    return Err(ConfigError::new(
                        COMPONENT,
                        "time_window",
                        ConfigErrorKind::TooSmall,
                        format!("length {length:?} is shorter than {buckets} buckets of 1 ns"),
                    ));
                }
            }
        }
        let minimum_calls = check_range("minimum_calls", self.minimum_calls, u32::MAX)?;
        let open_wait = check_wait("open_wait", self.open_wait)?;
        let backoff = match self.backoff {
            None => Backoff {
                initial: open_wait,
                multiplier: 1.0,
                max: open_wait,
                jitter: 0.0,
            },
            Some((multiplier, max)) => {
                if !multiplier.is_finite() || multiplier < 1.0 {
                    return Err(ConfigError::new(
                        COMPONENT,
                        "open_backoff",
                        ConfigErrorKind::TooSmall,
                        format!("multiplier must be finite and at least 1, got {multiplier}"),
                    ));
                }
                let max = check_wait("open_backoff", max)?;
                if max < open_wait {
                    return Err(ConfigError::new(
                        COMPONENT,
                        "open_backoff",
                        ConfigErrorKind::Conflict,
                        format!("max {max:?} is below open_wait {open_wait:?}"),
                    ));
                }
                Backoff {
                    initial: open_wait,
                    multiplier,
                    max,
                    jitter: 0.0,
                }
            }
        };
        if self.jitter.is_nan() || self.jitter < 0.0 {
            return Err(ConfigError::new(
                COMPONENT,
                "open_jitter",
                ConfigErrorKind::TooSmall,
                format!("must be a fraction in [0, 1), got {}", self.jitter),
            ));
        }
        if self.jitter >= 1.0 {
            return Err(ConfigError::new(
                COMPONENT,
                "open_jitter",
                ConfigErrorKind::TooLarge,
                format!("must be below 1 (a zero wait), got {}", self.jitter),
            ));
        }
        let permitted_probes = check_range("permitted_probes", self.permitted_probes, MAX_PROBES)?;
        let max_half_open_wait = self
            .max_half_open_wait
            .map(|d| check_wait("max_half_open_wait", d))
            .transpose()?;
        let jitter_seed = self.jitter_seed.unwrap_or_else(|| {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
        });
        Ok((
            Settings {
                failure_rate,
                slow_rate,
                slow_duration: self.slow_duration,
                consecutive_failures,
                window: self.window,
                minimum_calls,
                backoff: Backoff {
                    jitter: self.jitter,
                    ..backoff
                },
                permitted_probes,
                max_half_open_wait,
                jitter_seed,
            },
            self.hook,
        ))
    }
}

/// A circuit breaker; clones share one breaker.
///
/// # State machine
///
/// | state | admission | leaves when |
/// |---|---|---|
/// | `Closed` | every call (one atomic load) | a trip policy holds after an outcome → `Open` |
/// | `Open` | refused with [`Rejected::Open`] | the first attempt at `now ≥ opened + wait` → `HalfOpen` (and is admitted as a probe); reads never make this move |
/// | `HalfOpen` | `permitted_probes` probes in flight or decided; others get [`Rejected::HalfOpenFull`] | all probes reported → `Closed` or `Open`; or `max_half_open_wait` passed → `Open` |
/// | `ForcedOpen` | refused with [`Rejected::ForcedOpen`], whatever the waits | [`reset`](Self::reset) / [`disable`](Self::disable) |
/// | `Disabled` | every call, nothing recorded | [`reset`](Self::reset) / [`force_open`](Self::force_open) |
///
/// Trip policies (any one trips; all thresholds inclusive):
/// `consecutive failures ≥ n`; with the window holding `≥ minimum_calls`
/// calls, `failure rate ≥ X %` or `slow rate ≥ Y %`, where a call is slow if
/// it took strictly more than the slow-call duration. Half-open decides once
/// all probes reported: re-open if the probes' failure rate `≥ X %` (with no
/// rate threshold but a consecutive policy: if any probe failed) or their
/// slow rate `≥ Y %`, else close. A re-open grows the backoff; closing resets
/// it and empties the window.
///
/// An ignored call, and a call whose permit or future is dropped, counts as
/// nothing, and a probe gives its slot back: half-open cannot get stuck on
/// cancelled probes. A permit dropped by a panic unwinding through the
/// call counts as a failure (see [`CallPermit`]). Outcomes of calls
/// admitted before the latest transition
/// are dropped.
///
/// # Memory
///
/// Fixed at build time, whatever the call rate: one byte per call of a
/// count window (at most 1 MiB), 24 bytes per bucket of a time window (at
/// most 4096 buckets), and a few counters. Waiters in
/// [`wait_until_ready`](Self::wait_until_ready) live in their own futures.
///
/// # Memory ordering and cost
///
/// In `Closed` (and `Disabled`) admission is a single `Acquire` load of the
/// state word; with the slow-call policy on, the permit also reads the clock
/// to time the call. Recording an outcome takes a short uncontended-in-practice
/// mutex. Refusal in `Open` is two atomic loads, a clock read (a counter
/// read with the default [`FastClock`], no instant is built) and a plain
/// add to the calling thread's own slot of the refusal count, without the
/// lock or a locked instruction.
/// Everything else (half-open probes, transitions) happens under the
/// mutex, and the state word is republished before the lock is released.
///
/// # Examples
///
/// ```
/// use flowguard::breaker::{CircuitBreaker, State};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let breaker = CircuitBreaker::builder()
///     .count_window(4)
///     .minimum_calls(4)
///     .failure_rate_threshold(50.0)
///     .open_wait(Duration::from_secs(1))
///     .permitted_probes(1)
///     .build()
///     .unwrap();
/// for ok in [true, true, false, false] {
///     let _ = breaker.call(|| async move { if ok { Ok(()) } else { Err(()) } }).await;
/// }
/// assert_eq!(breaker.state(), State::Open);
/// breaker.wait_until_ready().await; // one second later, on the paused clock
/// let r: Result<(), _> = breaker.call(|| async { Ok::<_, ()>(()) }).await;
/// assert!(r.is_ok());
/// assert_eq!(breaker.state(), State::Closed);
/// # }
/// ```
pub struct CircuitBreaker<C: Clock = FastClock> {
    inner: Arc<Inner<C>>,
}

impl<C: Clock> Clone for CircuitBreaker<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<C: Clock> fmt::Debug for CircuitBreaker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new()
    }
}

struct Inner<C> {
    /// The [`StateWord`]; stored only under `core`'s lock.
    word: AtomicU64,
    /// Successes counted without the lock (see [`FastWord`]).
    fast: AtomicU64,
    /// Nanoseconds from `origin` to the end of the open wait; stored before
    /// `word` under the lock.
    open_until: AtomicU64,
    /// Written by every refusal: a slot per thread, so that refusing
    /// threads do not share a cache line or take a locked instruction.
    refused: ThreadCounter,
    origin: Instant,
    measures_duration: bool,
    /// The slow-call threshold in nanoseconds (saturated).
    slow_nanos: u64,
    core: Mutex<Core>,
    clock: C,
    /// Woken on every transition and freed probe slot.
    ready: Notify,
    hook: Option<Hook>,
    /// Admission to outcome, of the calls whose outcome was reported.
    call_duration: Recorder,
    /// For `tracing` events: the builder's name, or "breaker".
    name: StdArc<str>,
}

impl CircuitBreaker {
    /// A breaker with the [default settings](Builder) on the default [`FastClock`].
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::breaker::{CircuitBreaker, State};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// assert_eq!(CircuitBreaker::new().state(), State::Closed);
    /// # }
    /// ```
    pub fn new() -> Self {
        match Builder::default().validate() {
            Ok((settings, hook)) => Self::from_parts(settings, FastClock::new(), hook, (false, 1)),
            // The defaults are valid (a unit test checks it).
            Err(_) => unreachable!("default breaker settings are valid"),
        }
    }

    /// A builder with the default settings.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<C: Clock> CircuitBreaker<C> {
    /// `histograms`: whether to keep the call-duration histogram, and its
    /// sampling cap (unused when the slow-call policy times every call).
    fn from_parts(
        settings: Settings,
        clock: C,
        hook: Option<Hook>,
        (histograms, max_one_in): (bool, u32),
    ) -> Self {
        let origin = clock.epoch();
        let now = clock.now();
        let measures_duration = settings.measures_duration();
        let slow_duration = settings.slow_duration;
        let core = Core::new(settings, now);
        Self {
            inner: Arc::new(Inner {
                word: AtomicU64::new(core.word().0),
                fast: AtomicU64::new(FastWord::for_core(&core)),
                open_until: AtomicU64::new(0),
                refused: ThreadCounter::new(),
                origin,
                measures_duration,
                slow_nanos: u64::try_from(slow_duration.as_nanos()).unwrap_or(u64::MAX),
                core: Mutex::new(core),
                clock,
                ready: Notify::new(),
                hook,
                call_duration: Recorder::with_sampling(
                    histograms,
                    if measures_duration { 1 } else { max_one_in },
                ),
                name: StdArc::from("breaker"),
            }),
        }
    }

    /// The current state, as of the last transition (one atomic load).
    ///
    /// Reading never moves the breaker. After the open wait it reports
    /// `Open` until a call arrives: that call makes the move to `HalfOpen`
    /// and is admitted as the first probe (resilience4j's default, with
    /// `automaticTransitionFromOpenToHalfOpenEnabled` off). Meanwhile
    /// [`next_ready_at`](Self::next_ready_at) already returns a time not
    /// after now: that is how a dashboard tells "open, refusing" from "open,
    /// the next call probes". Likewise `HalfOpen` is reported past
    /// [`max_half_open_wait`](Builder::max_half_open_wait) until the next
    /// call, outcome, `next_ready_at` or `wait_until_ready` re-opens it.
    ///
    /// Why reads do not make the move: a half-open period started by an
    /// observer would start the half-open deadline with no probe in sight,
    /// so a dashboard polling the state could re-open the breaker, and grow
    /// its backoff, without a single call reaching the backend.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::breaker::{CircuitBreaker, State};
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::builder()
    ///     .consecutive_failures(1)
    ///     .open_wait(Duration::from_secs(1))
    ///     .build()
    ///     .unwrap();
    /// breaker.try_acquire().unwrap().failure();
    /// tokio::time::advance(Duration::from_secs(5)).await;
    /// assert_eq!(breaker.state(), State::Open); // the wait is over, no call yet
    /// assert_eq!(breaker.next_ready_at(), Some(Instant::now()));
    /// assert_eq!(breaker.state(), State::Open); // asking moves nothing
    /// let probe = breaker.try_acquire().unwrap(); // the call makes the move
    /// assert_eq!((probe.is_probe(), breaker.state()), (true, State::HalfOpen));
    /// # }
    /// ```
    pub fn state(&self) -> State {
        StateWord(self.inner.word.load(Ordering::Acquire)).state()
    }

    /// Asks for permission to make one call, for callers that run the call
    /// themselves; report its outcome on the permit. Dropping the permit
    /// counts as [`ignore`](CallPermit::ignore).
    ///
    /// # Errors
    ///
    /// [`Rejected`] when the breaker is open (with the time left), half-open
    /// with every probe slot taken, or forced open.
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::breaker::CircuitBreaker;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let breaker = CircuitBreaker::new();
    /// let permit = breaker.try_acquire().expect("closed");
    /// let ok = true; // ... make the call ...
    /// if ok { permit.success() } else { permit.failure() }
    /// assert_eq!(breaker.metrics().calls, 1);
    /// # }
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<CallPermit<'_, C>, Rejected> {
        let w = StateWord(self.inner.word.load(Ordering::Acquire));
        if w.is_closed() {
            return Ok(self.inner.permit(
                Ticket {
                    epoch: w.epoch(),
                    kind: TicketKind::Closed,
                },
                None,
            ));
        }
        self.inner.not_closed(w)
    }

    /// Like [`try_acquire`](Self::try_acquire), returning a `'static`
    /// permit that can move into another task or thread.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire).
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Examples
    ///
    /// See [`OwnedCallPermit`].
    #[inline]
    pub fn try_acquire_owned(&self) -> Result<OwnedCallPermit<C>, Rejected> {
        self.try_acquire().map(|p| p.into_owned(self.inner.clone()))
    }

    /// Runs `f()` if the breaker admits it, records `Ok` as a success and
    /// `Err` as a failure, and returns the call's result.
    ///
    /// # Errors
    ///
    /// [`BreakerError::Rejected`] if the breaker refused (and `f` was not
    /// called); [`BreakerError::Inner`] with the call's own error.
    ///
    /// # Panics
    ///
    /// Never, unless `f` or its future panic. The panic then reaches the
    /// caller unchanged, and the call counts as a **failure** (as in
    /// gobreaker's `Execute`, and as an unhandled exception does in Polly
    /// and resilience4j): a backend call that blew up did not succeed.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future while the call runs drops the call and its
    /// permit: the outcome counts as nothing and a half-open probe slot is
    /// given back.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::breaker::CircuitBreaker;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let breaker = CircuitBreaker::new();
    /// let v = breaker.call(|| async { Ok::<_, std::io::Error>(42) }).await.unwrap();
    /// assert_eq!(v, 42);
    /// # }
    /// ```
    pub async fn call<F, Fut, T, E>(&self, f: F) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(f, |r| {
            if r.is_ok() {
                Outcome::Success
            } else {
                Outcome::Failure
            }
        })
        .await
    }

    /// Like [`call`](Self::call), with `classify` deciding from the call's
    /// result whether it was a success, a failure or to be ignored.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call): the result comes back as it was, errors
    /// wrapped in [`BreakerError::Inner`] even when classified a success.
    ///
    /// # Panics
    ///
    /// Never, unless `f`, its future or `classify` panic; the call then
    /// counts as a failure, as in [`call`](Self::call).
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Self::call).
    ///
    /// # Examples
    ///
    /// See [`Outcome`].
    pub async fn call_with<F, Fut, T, E, K>(&self, f: F, classify: K) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        K: FnOnce(&Result<T, E>) -> Outcome,
    {
        // A panic in `f`, its future or `classify` drops the permit while
        // unwinding, which counts as a failure.
        let permit = self.try_acquire()?;
        let out = f().await;
        match classify(&out) {
            Outcome::Success => permit.success(),
            Outcome::Failure => permit.failure(),
            Outcome::Ignored => permit.ignore(),
        }
        out.map_err(BreakerError::Inner)
    }

    /// When a call could next be admitted: now (or earlier) if it would be
    /// admitted now, the end of the open wait when open, `None` when it
    /// depends on other calls (half-open with every probe slot taken) or on a
    /// manual action (forced open).
    ///
    /// It never moves the breaker out of `Open`: once the wait is over it
    /// returns now while [`state`](Self::state) still reports `Open`, and the
    /// next call makes the move. It does apply the half-open deadline, as any
    /// event does: past [`max_half_open_wait`](Builder::max_half_open_wait)
    /// it re-opens the breaker and returns the end of the new wait.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::breaker::CircuitBreaker;
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::builder()
    ///     .consecutive_failures(1)
    ///     .open_wait(Duration::from_secs(3))
    ///     .build()
    ///     .unwrap();
    /// let t0 = Instant::now();
    /// assert!(breaker.next_ready_at().unwrap() <= t0);
    /// breaker.try_acquire().unwrap().failure();
    /// assert_eq!(breaker.next_ready_at(), Some(t0 + Duration::from_secs(3)));
    /// breaker.force_open();
    /// assert_eq!(breaker.next_ready_at(), None);
    /// # }
    /// ```
    pub fn next_ready_at(&self) -> Option<Instant> {
        let now = self.inner.clock.now();
        match self.inner.readiness(now) {
            Readiness::Now => Some(now),
            Readiness::At(t) => Some(t),
            Readiness::Unknown(_) => None,
        }
    }

    /// Waits until a call would be admitted: returns at once when closed,
    /// at the end of the open wait when open, when a probe slot frees up in
    /// half-open, and only after a manual [`reset`](Self::reset) or
    /// [`disable`](Self::disable) when forced open. Another caller may still
    /// take the slot first; `try_acquire` can then refuse.
    ///
    /// It sleeps on Tokio's timer for the time left on the breaker's clock;
    /// with a clock moved by hand ([`ManualClock`](crate::clock::ManualClock))
    /// it parks until the clock is moved instead and looks again after each
    /// move.
    ///
    /// # Panics
    ///
    /// Only as [`tokio::time::sleep`] does: when it has to sleep on Tokio's
    /// timer (until the end of the open wait or a half-open deadline) and is
    /// polled outside a Tokio runtime with time enabled. With a clock moved
    /// by hand it never needs a runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it holds nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::breaker::CircuitBreaker;
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let breaker = CircuitBreaker::builder()
    ///     .consecutive_failures(1)
    ///     .open_wait(Duration::from_secs(3))
    ///     .build()
    ///     .unwrap();
    /// breaker.try_acquire().unwrap().failure();
    /// let t0 = Instant::now();
    /// breaker.wait_until_ready().await;
    /// assert_eq!(t0.elapsed(), Duration::from_secs(3));
    /// # }
    /// ```
    pub async fn wait_until_ready(&self) {
        let clock = &self.inner.clock;
        loop {
            let mut notified = pin!(self.inner.ready.notified());
            // Register before looking, so a change in between is not missed;
            // the same for a move of a clock moved by hand (made before the
            // clock is read, it sees every later move).
            notified.as_mut().enable();
            let mut moved = clock.moves().map(|m| m.moved());
            let now = clock.now();
            let wake_at = match self.inner.readiness(now) {
                Readiness::Now => return,
                Readiness::At(t) => Some(t),
                // Half-open with every slot taken: a freed slot notifies; a
                // half-open deadline needs a look when it passes.
                Readiness::Unknown(recheck) => recheck,
            };
            let mut sleep = pin!(match wake_at {
                Some(t) if moved.is_none() => Some(tokio::time::sleep_until(tokio_wake_at(t, now))),
                _ => None,
            });
            std::future::poll_fn(|cx| {
                let changed = notified.as_mut().poll(cx).is_ready();
                let timed = wake_at.is_some()
                    && (moved
                        .as_mut()
                        .is_some_and(|m| Pin::new(m).poll(cx).is_ready())
                        || sleep
                            .as_mut()
                            .as_pin_mut()
                            .is_some_and(|s| s.poll(cx).is_ready()));
                if changed || timed {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
        }
    }

    /// Opens the breaker until [`reset`](Self::reset): every call is refused
    /// with [`Rejected::ForcedOpen`], whatever the open wait. When forced open
    /// already it does nothing: no state change is published or counted.
    pub fn force_open(&self) {
        self.inner.manual(Core::force_open);
    }

    /// Disables the breaker until [`reset`](Self::reset): every call is
    /// admitted and nothing is recorded. When disabled already it does
    /// nothing: no state change is published or counted.
    pub fn disable(&self) {
        self.inner.manual(Core::disable);
    }

    /// Closes the breaker with an empty window and the backoff reset, from
    /// any state. Outcomes of calls admitted before are dropped. On a closed
    /// breaker it still empties the window, but it is no state change:
    /// nothing is published to the hook or tracing, nor counted in
    /// [`BreakerMetrics::transitions`] (as in resilience4j).
    pub fn reset(&self) {
        self.inner.manual(Core::reset);
    }

    /// A snapshot of the breaker's numbers.
    pub fn metrics(&self) -> BreakerMetrics {
        self.metrics_with(true)
    }

    /// Publishes a named breaker's metrics (feature `metrics`).
    #[cfg(all(feature = "metrics", not(loom)))]
    fn export(&self, name: &str) {
        let h = crate::metrics::Handles::new("breaker", name);
        self.inner
            .call_duration
            .export_to(h.histogram("call_seconds"));
        let (state, rate, calls) = (h.gauge("state"), h.gauge("failure_rate"), h.gauge("calls"));
        let (refused, transitions) = (h.counter("refused_total"), h.counter("transitions_total"));
        let weak = Arc::downgrade(&self.inner);
        crate::metrics::register(move || {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            let m = CircuitBreaker { inner }.metrics_with(false);
            state.set(match m.state {
                State::Closed => 0.0,
                State::Open => 1.0,
                State::HalfOpen => 2.0,
                State::ForcedOpen => 3.0,
                State::Disabled => 4.0,
            });
            // Unjudged is -1, as resilience4j's failure rate: a gauge cannot
            // be unset, and leaving it would show 0 before the first
            // judgement and the last judged rate after the window empties.
            rate.set(m.failure_rate.unwrap_or(-1.0));
            calls.set(m.calls as f64);
            refused.absolute(m.refused);
            transitions.absolute(m.transitions);
            true
        });
    }

    fn metrics_with(&self, histogram: bool) -> BreakerMetrics {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let mut core = inner.lock_core();
        let (counts, enough) = core.counts(now);
        let word = core.word();
        let m = BreakerMetrics {
            state: word.state(),
            failure_rate: if enough {
                counts.failure_percent()
            } else {
                None
            },
            slow_call_rate: if enough { counts.slow_percent() } else { None },
            calls: counts.calls,
            failed_calls: counts.failures,
            slow_calls: counts.slow,
            consecutive_failures: core.consecutive_failures(),
            probes_in_flight: core.probes_in_flight(),
            reopens: core.reopens(),
            refused: inner.refused.sum(),
            transitions: core.transitions(),
            call_duration: HistogramSnapshot::default(),
        };
        drop(core);
        if !histogram {
            return m;
        }
        BreakerMetrics {
            call_duration: inner.call_duration.snapshot(),
            ..m
        }
    }
}

impl<C: Clock> Inner<C> {
    #[inline]
    fn permit(&self, ticket: Ticket, started: Option<u64>) -> CallPermit<'_, C> {
        // The slow-call policy times every call: the histogram takes each
        // from the same reads. Otherwise the histogram draws which to time.
        let timed = if self.measures_duration {
            Some(Timed::EVERY)
        } else {
            self.call_duration.sample()
        };
        let (started, timed) = match (started, timed, ticket.kind) {
            (Some(t), _, _) => (Some(t), Timed::EVERY),
            (None, Some(timed), TicketKind::Closed | TicketKind::Probe) => {
                (Some(self.start_timing()), timed)
            }
            _ => (None, Timed::EVERY),
        };
        CallPermit {
            inner: self,
            slot: Slot {
                ticket,
                started,
                timed,
                finished: false,
            },
        }
    }

    /// When a timed call starts, in nanoseconds from the origin. Out of
    /// line: the untimed admission stays small enough to inline.
    #[inline(never)]
    fn start_timing(&self) -> u64 {
        self.clock.nanos_since(self.origin)
    }

    /// Reports a success. The common case inline: a closed-state call
    /// that nobody times (so no slow-call check and no histogram) is
    /// counted with one compare-and-swap when the breaker is in a state
    /// where a success only adds to the window.
    #[inline]
    fn succeed(&self, slot: &mut Slot) {
        if !slot.finished
            && slot.ticket.kind == TicketKind::Closed
            && slot.started.is_none()
            && self.count_success(slot.ticket.epoch)
        {
            slot.finished = true;
            return;
        }
        self.finish(slot, Some(false));
    }

    /// Reports a permit's outcome (`None`: ignored or dropped) once.
    fn finish(&self, slot: &mut Slot, failure: Option<bool>) {
        if slot.finished {
            return;
        }
        slot.finished = true;
        match (slot.ticket.kind, failure) {
            (TicketKind::Untracked, _) | (TicketKind::Closed, None) => {}
            (TicketKind::Probe, None) => self.release(slot.ticket),
            (TicketKind::Closed | TicketKind::Probe, Some(failure)) => {
                if !failure && slot.ticket.kind == TicketKind::Closed && !self.measures_duration {
                    // Only the histogram wants the duration here.
                    let end = slot.started.map(|start| {
                        let end = self.clock.nanos_since(self.origin);
                        self.call_duration.record_sampled(
                            slot.timed,
                            end.saturating_sub(start),
                            end,
                        );
                        end
                    });
                    if !self.count_success(slot.ticket.epoch) {
                        self.record(
                            slot.ticket,
                            Record {
                                failure,
                                slow: false,
                            },
                            end,
                        );
                    }
                    return;
                }
                // Durations in nanoseconds from the clock's origin: with the
                // default clock a counter read and a subtraction, no
                // `Instant` built unless the core needs the end time.
                let (slow, end) = match slot.started {
                    Some(start) => {
                        let end = self.clock.nanos_since(self.origin);
                        let took = end.saturating_sub(start);
                        self.call_duration.record_sampled(slot.timed, took, end);
                        (self.measures_duration && took > self.slow_nanos, Some(end))
                    }
                    None => (false, None),
                };
                self.record(slot.ticket, Record { failure, slow }, end);
            }
        }
    }

    /// Counts a closed-state success of `epoch` with one compare-and-swap
    /// on the [`FastWord`], if the breaker is in a state where a success
    /// only adds to the window; false: record it under the lock.
    #[inline]
    fn count_success(&self, epoch: u64) -> bool {
        let open_for = FastWord::enabled(epoch);
        let mut v = self.fast.load(Ordering::Relaxed);
        loop {
            if v & !FastWord::COUNT_MASK != open_for
                || v & FastWord::COUNT_MASK == FastWord::COUNT_MASK
            {
                return false;
            }
            match self
                .fast
                .compare_exchange(v, v + 1, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
    }

    /// The core, with the successes counted without the lock folded in;
    /// until the guard drops, successes take the lock.
    fn lock_core(&self) -> CoreGuard<'_> {
        let mut core = self.core.lock();
        let v = self.fast.swap(FastWord::CLOSED, Ordering::Acquire);
        if v & FastWord::ENABLED != 0
            && v & !FastWord::COUNT_MASK == FastWord::enabled(core.word().epoch())
        {
            core.record_successes(v & FastWord::COUNT_MASK);
        }
        CoreGuard {
            core,
            fast: &self.fast,
        }
    }

    #[inline]
    fn nanos_since_origin(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Admission when the word is not `Closed`. The refusal while `Open`
    /// is the one path here that can be hot (every call during an outage):
    /// kept in this small function, the rest in the cold one.
    #[inline(never)]
    fn not_closed(&self, w: StateWord) -> Result<CallPermit<'_, C>, Rejected> {
        if w.state() == State::Open {
            let until = self.open_until.load(Ordering::Acquire);
            // Nanoseconds since the clock's own epoch: with the default
            // clock a counter read, no instant is built.
            let now_nanos = self.clock.nanos_since(self.origin);
            // Re-check the word: `until` must belong to this open period
            // (or a later one), not to one that has since ended.
            if now_nanos < until && self.word.load(Ordering::Acquire) == w.0 {
                self.refused.add(1);
                return Err(Rejected::Open {
                    retry_after: Duration::from_nanos(until - now_nanos),
                });
            }
        }
        self.try_acquire_slow(w)
    }

    #[cold]
    #[inline(never)]
    fn try_acquire_slow(&self, w: StateWord) -> Result<CallPermit<'_, C>, Rejected> {
        match w.state() {
            State::Disabled => Ok(self.permit(
                Ticket {
                    epoch: w.epoch(),
                    kind: TicketKind::Untracked,
                },
                None,
            )),
            State::ForcedOpen => {
                self.refused.add(1);
                Err(Rejected::ForcedOpen)
            }
            // Open past its wait (`not_closed` refused the rest), or moved on.
            State::Open | State::Closed | State::HalfOpen => self.admit_locked(self.clock.now()),
        }
    }

    fn admit_locked(&self, now: Instant) -> Result<CallPermit<'_, C>, Rejected> {
        let mut core = self.lock_core();
        let (result, transition) = core.try_admit(now);
        if transition.is_some() {
            self.publish(&core);
        }
        drop(core);
        if let Some(t) = transition {
            self.emit(t);
        }
        match result {
            Ok(ticket) => Ok(self.permit(
                ticket,
                self.measures_duration.then(|| self.nanos_since_origin(now)),
            )),
            Err(refusal) => {
                self.refused.add(1);
                Err(match refusal {
                    state::Refusal::Open { until } => Rejected::Open {
                        retry_after: until.saturating_duration_since(now),
                    },
                    state::Refusal::HalfOpenFull => Rejected::HalfOpenFull,
                    state::Refusal::ForcedOpen => Rejected::ForcedOpen,
                })
            }
        }
    }

    /// Publishes the core's state for lock-free readers; call under the lock.
    fn publish(&self, core: &Core) {
        self.open_until.store(
            self.nanos_since_origin(core.open_until()),
            Ordering::Release,
        );
        self.word.store(core.word().0, Ordering::Release);
    }

    /// Reports a transition; call after releasing the lock.
    fn emit(&self, t: Transition) {
        tracing::debug!(
            breaker = %self.name,
            from = ?t.from,
            to = ?t.to,
            seq = t.seq,
            "circuit breaker state change"
        );
        if let Some(hook) = &self.hook {
            hook(&StateChange {
                from: t.from,
                to: t.to,
                at: t.at,
                seq: t.seq,
            });
        }
        self.ready.notify_waiters();
    }

    fn readiness(&self, now: Instant) -> Readiness {
        let mut core = self.lock_core();
        let transition = core.tick(now);
        if transition.is_some() {
            self.publish(&core);
        }
        let r = core.readiness(now);
        drop(core);
        if let Some(t) = transition {
            self.emit(t);
        }
        r
    }

    fn manual(&self, op: fn(&mut Core, Instant) -> Option<Transition>) {
        let now = self.clock.now();
        let mut core = self.lock_core();
        let transition = op(&mut core, now);
        self.publish(&core);
        drop(core);
        if let Some(t) = transition {
            self.emit(t);
        }
    }

    /// Records an outcome; `end` (nanoseconds from the origin) is the end
    /// of the call, if it was timed.
    fn record(&self, ticket: Ticket, r: Record, end: Option<u64>) {
        let mut core = self.lock_core();
        let transition = core.record(ticket, r, || match end {
            Some(nanos) => self.origin + Duration::from_nanos(nanos),
            None => self.clock.now(),
        });
        if transition.is_some() {
            self.publish(&core);
        }
        drop(core);
        if let Some(t) = transition {
            self.emit(t);
        }
    }

    fn release(&self, ticket: Ticket) {
        let freed = self.lock_core().release(ticket);
        if freed {
            self.ready.notify_waiters();
        }
    }
}

/// The lock-free success path: `epoch (40 bits) | ENABLED | count (23
/// bits)`, in its own atomic. While the core says a success would only add
/// to the window ([`Core::success_needs_no_lock`]), the word is ENABLED for
/// the current epoch and a success of that epoch adds one to `count` with a
/// compare-and-swap, without the lock. Whoever takes the lock swaps the word
/// to closed (0) first and folds the count into the window, and stores it
/// again, enabled or not, when it lets go (`CoreGuard`): so a transition, a
/// failure or a metrics read always sees every success counted before it,
/// and a success of an older epoch (the breaker moved since its admission)
/// never matches and goes to the lock, which drops it. Epochs compare in
/// 40 bits: a permit would have to outlive 2^40 transitions to be mistaken.
struct FastWord;

impl FastWord {
    const COUNT_BITS: u32 = 23;
    const COUNT_MASK: u64 = (1 << Self::COUNT_BITS) - 1;
    const ENABLED: u64 = 1 << Self::COUNT_BITS;
    const EPOCH_SHIFT: u32 = Self::COUNT_BITS + 1;
    const CLOSED: u64 = 0;

    /// The word of `epoch`, enabled, with no success counted.
    #[inline]
    const fn enabled(epoch: u64) -> u64 {
        (epoch << Self::EPOCH_SHIFT) | Self::ENABLED
    }

    fn for_core(core: &Core) -> u64 {
        if core.success_needs_no_lock() {
            Self::enabled(core.word().epoch())
        } else {
            Self::CLOSED
        }
    }
}

/// The core's lock, from [`Inner::lock_core`]; dropping it re-opens (or
/// not) the lock-free success path for the state it leaves.
struct CoreGuard<'a> {
    core: crate::sync::MutexGuard<'a, Core>,
    fast: &'a AtomicU64,
}

impl std::ops::Deref for CoreGuard<'_> {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl std::ops::DerefMut for CoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.core
    }
}

impl Drop for CoreGuard<'_> {
    fn drop(&mut self) {
        self.fast
            .store(FastWord::for_core(&self.core), Ordering::Release);
    }
}

/// Permission to make one call, from [`CircuitBreaker::try_acquire`].
///
/// Report the outcome with [`success`](Self::success),
/// [`failure`](Self::failure) or [`ignore`](Self::ignore). Dropping the
/// permit without reporting counts as `ignore`: nothing is recorded and a
/// half-open probe slot is given back, so a cancelled call can never wedge
/// the breaker. Dropped by a panic unwinding through the call, it counts
/// as a **failure** (gobreaker, Polly and resilience4j count a panic or an
/// unhandled exception in the call as one): a backend call that keeps
/// blowing up trips the breaker, wherever the permit is held (a
/// [`call`](CircuitBreaker::call), the pipeline, the tower layer, or your
/// own code). When the slow-call policy is on, the permit times the call
/// from its creation to the report.
///
/// # Examples
///
/// ```
/// use flowguard::breaker::{CircuitBreaker, Rejected, State};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let breaker = CircuitBreaker::builder()
///     .consecutive_failures(1)
///     .open_wait(Duration::from_secs(1))
///     .permitted_probes(1)
///     .build()
///     .unwrap();
/// breaker.try_acquire().unwrap().failure();
/// tokio::time::advance(Duration::from_secs(1)).await;
/// let probe = breaker.try_acquire().unwrap();
/// assert_eq!(breaker.state(), State::HalfOpen);
/// assert_eq!(breaker.try_acquire().unwrap_err(), Rejected::HalfOpenFull);
/// drop(probe); // cancelled: the slot comes back
/// breaker.try_acquire().unwrap().success();
/// assert_eq!(breaker.state(), State::Closed);
/// # }
/// ```
#[must_use = "dropping the permit at once counts the call as ignored"]
pub struct CallPermit<'a, C: Clock = FastClock> {
    inner: &'a Inner<C>,
    slot: Slot,
}

/// What a permit carries: its ticket, when the call started, and whether
/// the outcome was reported.
#[derive(Debug, Clone, Copy)]
struct Slot {
    ticket: Ticket,
    /// Nanoseconds from the breaker's origin, when timed.
    started: Option<u64>,
    /// How many calls the call stands for in the histogram, when timed.
    timed: Timed,
    finished: bool,
}

impl<C: Clock> fmt::Debug for CallPermit<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallPermit")
            .field("probe", &self.is_probe())
            .field("started_nanos", &self.slot.started)
            .finish_non_exhaustive()
    }
}

impl<C: Clock> CallPermit<'_, C> {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.slot.ticket.kind == TicketKind::Probe
    }

    /// The call succeeded (it still counts as slow if it took too long).
    pub fn success(mut self) {
        self.inner.succeed(&mut self.slot);
    }

    /// The call failed.
    pub fn failure(mut self) {
        self.inner.finish(&mut self.slot, Some(true));
    }

    /// The call counts as nothing: the permit is released unrecorded.
    pub fn ignore(mut self) {
        self.inner.finish(&mut self.slot, None);
    }

    /// Hands the permit's duty to an [`OwnedCallPermit`] holding `breaker`.
    fn into_owned(mut self, inner: Arc<Inner<C>>) -> OwnedCallPermit<C> {
        let slot = self.slot;
        self.slot.finished = true;
        OwnedCallPermit { inner, slot }
    }
}

impl<C: Clock> Drop for CallPermit<'_, C> {
    fn drop(&mut self) {
        if !self.slot.finished {
            // Dropped by a panic unwinding through the call: a failure.
            let failed = std::thread::panicking().then_some(true);
            self.inner.finish(&mut self.slot, failed);
        }
    }
}

/// A [`CallPermit`] that owns a handle on its breaker, so it is `'static`
/// and can move into a spawned task or thread; from
/// [`CircuitBreaker::try_acquire_owned`]. Same rules: report once, drop =
/// ignore.
///
/// # Examples
///
/// ```
/// use flowguard::breaker::CircuitBreaker;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let breaker = CircuitBreaker::new();
/// let permit = breaker.try_acquire_owned().unwrap();
/// tokio::spawn(async move {
///     // ... the call ...
///     permit.success();
/// })
/// .await
/// .unwrap();
/// assert_eq!(breaker.metrics().calls, 1);
/// # }
/// ```
#[must_use = "dropping the permit at once counts the call as ignored"]
pub struct OwnedCallPermit<C: Clock = FastClock> {
    inner: Arc<Inner<C>>,
    slot: Slot,
}

impl<C: Clock> fmt::Debug for OwnedCallPermit<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedCallPermit")
            .field("probe", &self.is_probe())
            .field("started_nanos", &self.slot.started)
            .finish_non_exhaustive()
    }
}

impl<C: Clock> OwnedCallPermit<C> {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.slot.ticket.kind == TicketKind::Probe
    }

    /// The call succeeded (it still counts as slow if it took too long).
    pub fn success(mut self) {
        self.inner.succeed(&mut self.slot);
    }

    /// The call failed.
    pub fn failure(mut self) {
        self.inner.finish(&mut self.slot, Some(true));
    }

    /// The call counts as nothing: the permit is released unrecorded.
    pub fn ignore(mut self) {
        self.inner.finish(&mut self.slot, None);
    }
}

impl<C: Clock> Drop for OwnedCallPermit<C> {
    fn drop(&mut self) {
        if !self.slot.finished {
            // Dropped by a panic unwinding through the call: a failure.
            let failed = std::thread::panicking().then_some(true);
            self.inner.finish(&mut self.slot, failed);
        }
    }
}

impl<C> fmt::Debug for Inner<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_resilience4j_but_slow_calls() {
        let (s, _) = Builder::default().validate().expect("valid");
        assert_eq!(s.failure_rate, Some(50.0));
        assert_eq!(s.slow_rate, None, "deliberately off by default");
        assert_eq!(s.slow_duration, Duration::from_secs(60));
        assert_eq!(s.window, WindowKind::Count { size: 100 });
        assert_eq!(s.minimum_calls, 100);
        assert_eq!(s.backoff.initial, Duration::from_secs(60));
        assert_eq!(s.permitted_probes, 10);
    }
}
