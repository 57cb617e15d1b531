//! Hedged requests: if the first attempt is slow, send another; first
//! success wins ("The Tail at Scale", Dean and Barroso, 2013).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::core::{LatencyWindow, LoadBudget, hedge_due};
use super::error::HedgeError;
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Mutex, StdArc};
use crate::{ConfigError, ConfigErrorKind};

const COMPONENT: &str = "hedge";
/// Upper bound on `max_hedges`: every attempt is polled on each wake.
pub(crate) const MAX_HEDGES: usize = 16;
/// Upper bound on the rolling window: a percentile query copies it.
pub(crate) const MAX_WINDOW: usize = 65_536;
/// Upper bound on `extra_load_burst`.
pub(crate) const MAX_BURST: u32 = 1_000_000;
/// The smallest `max_extra_load` that is not rounded to nothing.
const MIN_EXTRA_LOAD: f64 = 1e-6;

#[derive(Debug, Clone, Copy)]
enum DelayRule {
    Fixed(Duration),
    Percentile {
        percentile: f64,
        min_samples: usize,
        /// Delay used until `min_samples` exist; `None`: don't hedge yet.
        until_warm: Option<Duration>,
    },
}

/// When to send hedges, shared (by clone) between calls so a learned
/// delay is learned from all of them.
///
/// Either a fixed delay, or a latency percentile (e.g. p95) of the recent
/// successful attempts in a bounded rolling window, once it holds enough
/// samples. Up to `max_hedges` extra attempts (default 1) are sent, hedge
/// `k` at `k × delay` after the primary started.
///
/// Two options shape how much extra load hedging may add:
///
/// - [`hedge_on_error`](HedgePolicyBuilder::hedge_on_error): when an
///   attempt fails, send the next one at once instead of at its time (as
///   Polly's hedging does), still within `max_hedges`.
/// - [`max_extra_load`](HedgePolicyBuilder::max_extra_load): a budget, as
///   "The Tail at Scale" advises: hedges may add at most this fraction of
///   the calls (e.g. 5%), plus a small burst. A hedge the budget refuses is
///   not sent, and that call sends no more hedges.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::HedgePolicy;
/// use std::time::Duration;
///
/// let fixed = HedgePolicy::builder().fixed_delay(Duration::from_millis(20)).build().unwrap();
/// assert_eq!(fixed.current_delay(), Some(Duration::from_millis(20)));
///
/// let learned = HedgePolicy::builder()
///     .percentile(0.95)
///     .window(1000)
///     .min_samples(100)
///     .max_hedges(2)
///     .build()
///     .unwrap();
/// assert_eq!(learned.current_delay(), None); // no samples yet: no hedging
/// ```
#[derive(Clone)]
pub struct HedgePolicy {
    shared: Arc<HedgeShared>,
}

struct HedgeShared {
    /// For `tracing` events: the builder's name, or "hedge".
    name: StdArc<str>,
    rule: DelayRule,
    max_hedges: usize,
    hedge_on_error: bool,
    budget: Option<Mutex<LoadBudget>>,
    window: Mutex<LatencyWindow>,
    calls: AtomicU64,
    hedges_sent: AtomicU64,
    hedge_wins: AtomicU64,
    failures: AtomicU64,
    hedges_denied: AtomicU64,
}

impl HedgeShared {
    /// A call starts: counted, and it earns the budget its share.
    fn call_started(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(b) = &self.budget {
            b.lock().deposit();
        }
    }

    /// Whether one more hedge may be sent (takes its budget token).
    fn admit_hedge(&self) -> bool {
        let admitted = self.budget.as_ref().is_none_or(|b| b.lock().withdraw());
        if !admitted {
            self.hedges_denied.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(hedge = %self.name, "hedge refused by the extra-load budget");
        }
        admitted
    }
}

impl fmt::Debug for HedgePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgePolicy")
            .field("rule", &self.shared.rule)
            .field("max_hedges", &self.shared.max_hedges)
            .field("hedge_on_error", &self.shared.hedge_on_error)
            .field("budgeted", &self.shared.budget.is_some())
            .field("metrics", &self.metrics())
            .finish()
    }
}

/// Plain numbers about a [`HedgePolicy`] and every call made with it.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::HedgePolicy;
/// use std::time::Duration;
///
/// let policy = HedgePolicy::builder().fixed_delay(Duration::from_millis(5)).build().unwrap();
/// assert_eq!(policy.metrics().calls, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HedgeMetrics {
    /// Calls started.
    pub calls: u64,
    /// Extra attempts sent (not counting primaries).
    pub hedges_sent: u64,
    /// Calls won by a hedge rather than the primary.
    pub hedge_wins: u64,
    /// Calls that failed: every attempt failed, or one failed with a final
    /// error.
    pub failures: u64,
    /// Hedges the [`max_extra_load`](HedgePolicyBuilder::max_extra_load)
    /// budget refused (each ends hedging for its call).
    pub hedges_denied: u64,
    /// Whole hedges the extra-load budget would allow now (`None`: no budget).
    pub budget_available: Option<u64>,
    /// Latency samples in the rolling window.
    pub samples: usize,
    /// The delay a call started now would use; `None`: it would not hedge.
    pub current_delay: Option<Duration>,
}

impl HedgePolicy {
    /// Starts a builder. Set exactly one of `fixed_delay` or `percentile`.
    pub fn builder() -> HedgePolicyBuilder {
        HedgePolicyBuilder::default()
    }

    /// The delay a call started now would wait before its first hedge;
    /// `None` if it would not hedge (percentile rule, too few samples, no
    /// `initial_delay`; or `max_hedges(0)`).
    pub fn current_delay(&self) -> Option<Duration> {
        if self.shared.max_hedges == 0 {
            return None;
        }
        match self.shared.rule {
            DelayRule::Fixed(d) => Some(d),
            DelayRule::Percentile {
                percentile,
                min_samples,
                until_warm,
            } => self
                .shared
                .window
                .lock()
                .percentile(percentile, min_samples)
                .or(until_warm),
        }
    }

    /// A snapshot of the policy's counters and learned delay.
    pub fn metrics(&self) -> HedgeMetrics {
        // Own statement: the guard must be gone before current_delay locks.
        let samples = self.shared.window.lock().len();
        HedgeMetrics {
            calls: self.shared.calls.load(Ordering::Relaxed),
            hedges_sent: self.shared.hedges_sent.load(Ordering::Relaxed),
            hedge_wins: self.shared.hedge_wins.load(Ordering::Relaxed),
            failures: self.shared.failures.load(Ordering::Relaxed),
            hedges_denied: self.shared.hedges_denied.load(Ordering::Relaxed),
            budget_available: self.shared.budget.as_ref().map(|b| b.lock().available()),
            samples,
            current_delay: self.current_delay(),
        }
    }

    /// Adds a latency sample, as a successful attempt does (for warming a
    /// policy from history or tests).
    pub fn record_latency(&self, latency: Duration) {
        if matches!(self.shared.rule, DelayRule::Percentile { .. }) {
            self.shared.window.lock().record(latency);
        }
    }
}

/// Builder for [`HedgePolicy`].
///
/// # Examples
///
/// ```
/// use flowguard::fanout::HedgePolicy;
/// use flowguard::ConfigErrorKind;
///
/// let err = HedgePolicy::builder().percentile(1.5).build().unwrap_err();
/// assert_eq!((err.field(), err.kind()), ("percentile", ConfigErrorKind::TooLarge));
/// ```
#[derive(Debug, Clone, Default)]
pub struct HedgePolicyBuilder {
    fixed: Option<Duration>,
    percentile: Option<f64>,
    window: Option<usize>,
    min_samples: Option<usize>,
    initial_delay: Option<Duration>,
    max_hedges: Option<usize>,
    hedge_on_error: bool,
    max_extra_load: Option<f64>,
    extra_load_burst: Option<u32>,
    name: Option<String>,
}

impl HedgePolicyBuilder {
    /// Hedge after this fixed delay.
    pub fn fixed_delay(mut self, delay: Duration) -> Self {
        self.fixed = Some(delay);
        self
    }

    /// Names the policy: its `tracing` events carry the name, and with the
    /// `metrics` feature its counters and learned delay are published under it (`flowguard_hedge_*`, see
    /// `flowguard::metrics`); unnamed policies are not.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::fanout::HedgePolicy;
    /// use std::time::Duration;
    ///
    /// let p = HedgePolicy::builder()
    ///     .fixed_delay(Duration::from_millis(20))
    ///     .name("search")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(p.metrics().calls, 0);
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Hedge after this latency percentile (in `(0, 1]`, e.g. `0.95`) of
    /// recent successful attempts.
    pub fn percentile(mut self, percentile: f64) -> Self {
        self.percentile = Some(percentile);
        self
    }

    /// How many recent samples the percentile is taken over (default 1000,
    /// at most 65 536). Memory is this many `Duration`s, twice.
    pub fn window(mut self, samples: usize) -> Self {
        self.window = Some(samples);
        self
    }

    /// How many samples must exist before the percentile is trusted
    /// (default 20, at most `window`).
    pub fn min_samples(mut self, samples: usize) -> Self {
        self.min_samples = Some(samples);
        self
    }

    /// With `percentile`: the delay to use until `min_samples` exist
    /// (default: don't hedge until then).
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = Some(delay);
        self
    }

    /// At most this many extra attempts per call (default 1, at most 16;
    /// 0 turns hedging off but keeps the bookkeeping).
    pub fn max_hedges(mut self, hedges: usize) -> Self {
        self.max_hedges = Some(hedges);
        self
    }

    /// When an attempt fails (with an error that is not
    /// [final](HedgeFuture::final_error_if)), send the next hedge at once
    /// instead of waiting for its time, as Polly's hedging does (default
    /// off: a failed attempt then waits for the others, and the call fails
    /// once none is running and no hedge is due). Still at most `max_hedges` extra attempts,
    /// each within the [`max_extra_load`](Self::max_extra_load) budget;
    /// timed hedges keep their `k × delay` schedule. It applies even while
    /// a learned delay is not warm yet.
    ///
    /// Polly's hedging "only on failure" (an infinite `Delay`) is
    /// `fixed_delay(Duration::MAX)` with `hedge_on_error(true)`;
    /// `Duration::MAX` alone never hedges.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::fanout::{hedge_with_attempt, HedgePolicy};
    /// use std::time::Duration;
    /// use tokio::time::{sleep, Instant};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let policy = HedgePolicy::builder()
    ///     .fixed_delay(Duration::from_millis(100))
    ///     .hedge_on_error(true)
    ///     .build()
    ///     .unwrap();
    /// let start = Instant::now();
    /// let won = hedge_with_attempt(
    ///     |attempt| async move {
    ///         sleep(Duration::from_millis(5)).await;
    ///         if attempt == 0 { Err("connection reset") } else { Ok("from the hedge") }
    ///     },
    ///     &policy,
    /// )
    /// .await
    /// .unwrap();
    /// assert_eq!((won.value, won.winner), ("from the hedge", 1));
    /// assert_eq!(start.elapsed(), Duration::from_millis(10)); // not 105
    /// # }
    /// ```
    pub fn hedge_on_error(mut self, yes: bool) -> Self {
        self.hedge_on_error = yes;
        self
    }

    /// Caps the extra load hedging adds: over any run of calls, hedges sent
    /// stay within `ratio × calls` plus a burst (see
    /// [`extra_load_burst`](Self::extra_load_burst)), "The Tail at Scale"'s
    /// advice to hedge only within a few percent of load. `ratio` is in
    /// `[0.000001, 16]`, e.g. `0.05` for 5%. A token bucket counted in
    /// calls, not time: each call earns `ratio` of a hedge, each hedge
    /// spends one. A hedge it refuses is not sent, the call sends no more
    /// hedges, and [`HedgeMetrics::hedges_denied`] counts it. Shared by the
    /// policy's clones. Default: no cap.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::fanout::{hedge, HedgePolicy};
    /// use std::time::Duration;
    /// use tokio::time::sleep;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let policy = HedgePolicy::builder()
    ///     .fixed_delay(Duration::from_millis(10))
    ///     .max_extra_load(0.05)
    ///     .extra_load_burst(1)
    ///     .build()
    ///     .unwrap();
    /// for _ in 0..40 {
    ///     // Every call is slow enough to want a hedge.
    ///     hedge(|| async { sleep(Duration::from_millis(50)).await; Ok::<_, ()>(()) }, &policy)
    ///         .await
    ///         .unwrap();
    /// }
    /// let m = policy.metrics();
    /// // The burst of 1 (call 1), then one hedge per 20 calls (call 21).
    /// assert_eq!((m.calls, m.hedges_sent, m.hedges_denied), (40, 2, 38));
    /// # }
    /// ```
    pub fn max_extra_load(mut self, ratio: f64) -> Self {
        self.max_extra_load = Some(ratio);
        self
    }

    /// With [`max_extra_load`](Self::max_extra_load): how many hedges the
    /// budget can save up (default 10, 1 to 1 000 000). It starts full, so a
    /// new policy may send this many hedges before the ratio binds.
    pub fn extra_load_burst(mut self, hedges: u32) -> Self {
        self.extra_load_burst = Some(hedges);
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: neither `fixed_delay` nor
    /// `percentile` (`Missing`), or both (`Conflict`); `percentile` not in
    /// `(0, 1]` (`TooSmall`/`TooLarge`); `window` of 0 (`Zero`) or above
    /// 65 536 (`TooLarge`); `min_samples` of 0 (`Zero`) or above `window`
    /// (`TooLarge`); `window`, `min_samples` or `initial_delay` with
    /// `fixed_delay` (`Conflict`); `max_hedges` above 16 (`TooLarge`);
    /// `max_extra_load` not in `[0.000001, 16]` (`TooSmall`/`TooLarge`);
    /// `extra_load_burst` of 0 (`Zero`), above 1 000 000 (`TooLarge`) or
    /// without `max_extra_load` (`Conflict`).
    ///
    /// # Panics
    ///
    /// Never.
    pub fn build(self) -> Result<HedgePolicy, ConfigError> {
        let err =
            |field, kind, reason: String| Err(ConfigError::new(COMPONENT, field, kind, reason));
        let max_hedges = self.max_hedges.unwrap_or(1);
        if max_hedges > MAX_HEDGES {
            return err(
                "max_hedges",
                ConfigErrorKind::TooLarge,
                format!("must be at most {MAX_HEDGES}, got {max_hedges}"),
            );
        }
        let budget = match (self.max_extra_load, self.extra_load_burst) {
            (None, None) => None,
            (None, Some(_)) => {
                return err(
                    "extra_load_burst",
                    ConfigErrorKind::Conflict,
                    "only applies with max_extra_load".into(),
                );
            }
            (Some(ratio), burst) => {
                if ratio.is_nan() || ratio < MIN_EXTRA_LOAD {
                    return err(
                        "max_extra_load",
                        ConfigErrorKind::TooSmall,
                        format!("must be in [{MIN_EXTRA_LOAD}, {MAX_HEDGES}], got {ratio}"),
                    );
                }
                if ratio > MAX_HEDGES as f64 {
                    return err(
                        "max_extra_load",
                        ConfigErrorKind::TooLarge,
                        format!("must be in [{MIN_EXTRA_LOAD}, {MAX_HEDGES}], got {ratio}"),
                    );
                }
                let burst = burst.unwrap_or(10);
                if burst == 0 {
                    return err(
                        "extra_load_burst",
                        ConfigErrorKind::Zero,
                        "must be at least 1, got 0".into(),
                    );
                }
                if burst > MAX_BURST {
                    return err(
                        "extra_load_burst",
                        ConfigErrorKind::TooLarge,
                        format!("must be at most {MAX_BURST}, got {burst}"),
                    );
                }
                Some(Mutex::new(LoadBudget::new(ratio, burst)))
            }
        };
        let window = self.window.unwrap_or(1000);
        let (rule, window) = match (self.fixed, self.percentile) {
            (None, None) => {
                return err(
                    "fixed_delay",
                    ConfigErrorKind::Missing,
                    "or percentile must be set".into(),
                );
            }
            (Some(_), Some(_)) => {
                return err(
                    "percentile",
                    ConfigErrorKind::Conflict,
                    "cannot be combined with fixed_delay; pick one".into(),
                );
            }
            (Some(delay), None) => {
                for (set, field) in [
                    (self.window.is_some(), "window"),
                    (self.min_samples.is_some(), "min_samples"),
                    (self.initial_delay.is_some(), "initial_delay"),
                ] {
                    if set {
                        return err(
                            field,
                            ConfigErrorKind::Conflict,
                            "only applies to percentile, not fixed_delay".into(),
                        );
                    }
                }
                (DelayRule::Fixed(delay), 1)
            }
            (None, Some(p)) => {
                if p.is_nan() || p <= 0.0 {
                    return err(
                        "percentile",
                        ConfigErrorKind::TooSmall,
                        format!("must be in (0, 1], got {p}"),
                    );
                }
                if p > 1.0 {
                    return err(
                        "percentile",
                        ConfigErrorKind::TooLarge,
                        format!("must be in (0, 1], got {p}"),
                    );
                }
                if window == 0 {
                    return err(
                        "window",
                        ConfigErrorKind::Zero,
                        "must be at least 1, got 0".into(),
                    );
                }
                if window > MAX_WINDOW {
                    return err(
                        "window",
                        ConfigErrorKind::TooLarge,
                        format!("must be at most {MAX_WINDOW}, got {window}"),
                    );
                }
                let min_samples = self.min_samples.unwrap_or(20.min(window));
                if min_samples == 0 {
                    return err(
                        "min_samples",
                        ConfigErrorKind::Zero,
                        "must be at least 1, got 0".into(),
                    );
                }
                if min_samples > window {
                    return err(
                        "min_samples",
                        ConfigErrorKind::TooLarge,
                        format!("must be at most window ({window}), got {min_samples}"),
                    );
                }
                let rule = DelayRule::Percentile {
                    percentile: p,
                    min_samples,
                    until_warm: self.initial_delay,
                };
                (rule, window)
            }
        };
        let policy = HedgePolicy {
            shared: Arc::new(HedgeShared {
                name: StdArc::from(self.name.as_deref().unwrap_or("hedge")),
                rule,
                max_hedges,
                hedge_on_error: self.hedge_on_error,
                budget,
                window: Mutex::new(LatencyWindow::new(window)),
                calls: AtomicU64::new(0),
                hedges_sent: AtomicU64::new(0),
                hedge_wins: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                hedges_denied: AtomicU64::new(0),
            }),
        };
        #[cfg(all(feature = "metrics", not(loom)))]
        if let Some(name) = &self.name {
            policy.export(name);
        }
        Ok(policy)
    }
}

#[cfg(all(feature = "metrics", not(loom)))]
impl HedgePolicy {
    /// Publishes a named policy's metrics (feature `metrics`).
    fn export(&self, name: &str) {
        let weak = Arc::downgrade(&self.shared);
        let h = crate::metrics::Handles::new("hedge", name);
        if self.shared.budget.is_some() {
            let weak = weak.clone();
            h.publish_each(["budget_available"], move || {
                let shared = weak.upgrade()?;
                let available = shared.budget.as_ref().map(|b| b.lock().available());
                Some([available.map(|b| b as f64)])
            });
        }
        h.publish_each(
            [
                "calls_total",
                "hedges_sent_total",
                "hedge_wins_total",
                "failures_total",
                "hedges_denied_total",
                "samples",
                "delay_seconds",
            ],
            move || {
                let m = HedgePolicy {
                    shared: weak.upgrade()?,
                }
                .metrics();
                Some([
                    Some(m.calls as f64),
                    Some(m.hedges_sent as f64),
                    Some(m.hedge_wins as f64),
                    Some(m.failures as f64),
                    Some(m.hedges_denied as f64),
                    Some(m.samples as f64),
                    // 0 while a call would not hedge.
                    Some(m.current_delay.map_or(0.0, |d| d.as_secs_f64())),
                ])
            },
        );
    }
}

/// The winning value of a hedged call, which attempt won and how many
/// were sent.
///
/// # Examples
///
/// ```
/// use flowguard::fanout::{hedge, HedgePolicy};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let policy = HedgePolicy::builder().fixed_delay(Duration::from_millis(10)).build().unwrap();
/// let won = hedge(|| async { Ok::<_, ()>(7) }, &policy).await.unwrap();
/// assert_eq!((won.value, won.winner, won.attempts), (7, 0, 1));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Hedged<T> {
    /// The first successful attempt's value.
    pub value: T,
    /// Which attempt won: 0 is the primary, `k` the `k`-th hedge.
    pub winner: usize,
    /// How many attempts were sent (the primary plus hedges).
    pub attempts: usize,
}

/// Sends `make_request()` once and, while it is still running after the
/// policy's delay, again (up to `max_hedges` extra attempts, hedge `k` at
/// `k × delay`). The first `Ok` wins and the other attempts are dropped.
///
/// An `Err` does not win while another attempt is still running; once no
/// attempt is running, none succeeded and no hedge is due, the call fails
/// with the primary's error and every other attempt's (hedges are not
/// retries: a primary that fails before the delay is not re-sent, unless
/// the policy has [`hedge_on_error`](HedgePolicyBuilder::hedge_on_error);
/// one that fails at the delay instant, or with a zero delay, still gets
/// the hedge then due, as every hedge of a zero delay is sent at once, as
/// Polly's `Delay = TimeSpan.Zero`). An error
/// can be declared final with [`HedgeFuture::final_error_if`]. Each
/// successful attempt's latency, from its own start, feeds the policy's
/// rolling window.
///
/// To know which attempt a request is, use [`hedge_with_attempt`]; `hedge`
/// is the same call for a closure that takes no argument.
///
/// # Examples
///
/// A primary stuck for a second; the hedge sent at 50 ms answers in 10 ms:
///
/// ```
/// use flowguard::fanout::{hedge, HedgePolicy};
/// use std::time::Duration;
/// use tokio::time::{sleep, Instant};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let policy = HedgePolicy::builder().fixed_delay(Duration::from_millis(50)).build().unwrap();
/// let start = Instant::now();
/// let mut n = 0;
/// let won = hedge(
///     || {
///         n += 1;
///         let ms = if n == 1 { 1000 } else { 10 };
///         async move {
///             sleep(Duration::from_millis(ms)).await;
///             Ok::<_, ()>(ms)
///         }
///     },
///     &policy,
/// )
/// .await
/// .unwrap();
/// assert_eq!((won.value, won.winner, won.attempts), (10, 1, 2));
/// assert_eq!(start.elapsed(), Duration::from_millis(60));
/// # }
/// ```
///
/// # Errors
///
/// [`HedgeError`] when every attempt sent failed (with the primary's error
/// and the others'), or one failed with a final error.
///
/// # Panics
///
/// Never on any argument; it must be polled inside a Tokio runtime with
/// time enabled when it hedges. A panic in `make_request` or an attempt
/// propagates.
///
/// # Cancel safety
///
/// Dropping the future drops every attempt in flight.
pub fn hedge<M, Fut, T, E>(make_request: M, policy: &HedgePolicy) -> HedgeFuture<M, Fut>
where
    M: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    HedgeFuture::new(make_request, call_without_attempt::<M, Fut>, policy)
}

/// [`hedge`], passing each request its attempt number: 0 for the primary,
/// `k` for the `k`-th hedge (Polly's `AttemptNumber`). Use it to route
/// hedges to another replica, tag them in logs, or give them a different
/// timeout.
///
/// A new entry point rather than a change to `hedge`'s closure, so every
/// `hedge(|| ..)` caller keeps compiling; both return the same
/// [`HedgeFuture`] type.
///
/// # Examples
///
/// The hedge goes to the second replica:
///
/// ```
/// use flowguard::fanout::{hedge_with_attempt, HedgePolicy};
/// use std::time::Duration;
/// use tokio::time::sleep;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let replicas = ["replica-a (stuck)", "replica-b"];
/// let policy = HedgePolicy::builder().fixed_delay(Duration::from_millis(20)).build().unwrap();
/// let won = hedge_with_attempt(
///     |attempt| {
///         let replica = replicas[attempt % replicas.len()];
///         async move {
///             let ms = if attempt == 0 { 1000 } else { 5 };
///             sleep(Duration::from_millis(ms)).await;
///             Ok::<_, ()>(replica)
///         }
///     },
///     &policy,
/// )
/// .await
/// .unwrap();
/// assert_eq!((won.value, won.winner), ("replica-b", 1));
/// # }
/// ```
///
/// # Errors
///
/// As [`hedge`].
///
/// # Panics
///
/// As [`hedge`].
///
/// # Cancel safety
///
/// As [`hedge`].
pub fn hedge_with_attempt<M, Fut, T, E>(
    make_request: M,
    policy: &HedgePolicy,
) -> HedgeFuture<M, Fut>
where
    M: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    HedgeFuture::new(make_request, call_with_attempt::<M, Fut>, policy)
}

fn call_without_attempt<M: FnMut() -> Fut, Fut>(make_request: &mut M, _: usize) -> Fut {
    make_request()
}

fn call_with_attempt<M: FnMut(usize) -> Fut, Fut>(make_request: &mut M, attempt: usize) -> Fut {
    make_request(attempt)
}

/// A type-erased test on an attempt's outcome (`Err` values only).
trait FinalIf<O>: Send + Sync {
    fn is_final(&self, outcome: &O) -> bool;
}

/// Adapts a predicate over `&E` to the whole `Result<T, E>`, without
/// naming `T` or `E` in the `HedgeFuture` type.
struct OnErr<P>(P);

impl<T, E, P> FinalIf<Result<T, E>> for OnErr<P>
where
    P: Fn(&E) -> bool + Send + Sync,
{
    fn is_final(&self, outcome: &Result<T, E>) -> bool {
        matches!(outcome, Err(e) if (self.0)(e))
    }
}

struct Attempt<Fut> {
    future: Option<Pin<Box<Fut>>>,
    started: Instant,
}

/// The future returned by [`hedge`] and [`hedge_with_attempt`].
///
/// # Examples
///
/// ```
/// use flowguard::fanout::{hedge, HedgeFuture, HedgePolicy};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let policy = HedgePolicy::builder().fixed_delay(Duration::from_millis(10)).build().unwrap();
/// let fut = hedge(|| async { Ok::<u8, ()>(1) }, &policy);
/// assert_eq!(fut.await.unwrap().value, 1);
/// # }
/// ```
///
/// # Cancel safety
///
/// Dropping it drops every attempt in flight.
pub struct HedgeFuture<M, Fut>
where
    Fut: Future,
{
    make_request: M,
    call: fn(&mut M, usize) -> Fut,
    policy: HedgePolicy,
    attempts: Vec<Attempt<Fut>>,
    live: usize,
    /// Every failed attempt's `Err` so far, `(attempt, Err(e))`, in the
    /// order they failed.
    errors: Vec<(usize, Fut::Output)>,
    final_if: Option<Box<dyn FinalIf<Fut::Output>>>,
    /// No more hedges for this call (the budget refused one).
    stop_hedging: bool,
    start: Option<Instant>,
    delay: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
}

// Nothing in a `HedgeFuture` is ever pinned in place: attempts are boxed,
// the closure and the stored errors are plain values.
impl<M, Fut: Future> Unpin for HedgeFuture<M, Fut> {}

impl<M, Fut: Future> fmt::Debug for HedgeFuture<M, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeFuture")
            .field("attempts", &self.attempts.len())
            .field("live", &self.live)
            .field("errors", &self.errors.len())
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl<M, Fut: Future> HedgeFuture<M, Fut> {
    fn new(make_request: M, call: fn(&mut M, usize) -> Fut, policy: &HedgePolicy) -> Self {
        Self {
            make_request,
            call,
            policy: policy.clone(),
            attempts: Vec::new(),
            live: 0,
            errors: Vec::new(),
            final_if: None,
            stop_hedging: false,
            start: None,
            delay: None,
            sleep: None,
        }
    }
}

impl<M, Fut, T, E> HedgeFuture<M, Fut>
where
    Fut: Future<Output = Result<T, E>>,
{
    /// Declares which errors are final (Polly's `ShouldHandle`, inverted):
    /// an attempt failing with an error for which `is_final` is true ends
    /// the call at once with that error, dropping the attempts still in
    /// flight and sending no more hedges. Use it for answers another
    /// attempt would repeat (not found, invalid argument, permission
    /// denied). Other errors behave as without it: they wait for the other
    /// attempts (or, with `hedge_on_error`, trigger the next one).
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::fanout::{hedge_with_attempt, HedgePolicy};
    /// use std::time::Duration;
    /// use tokio::time::{sleep, Instant};
    ///
    /// #[derive(Debug, PartialEq)]
    /// enum Error { NotFound, Unavailable }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let policy = HedgePolicy::builder().fixed_delay(Duration::from_millis(10)).build().unwrap();
    /// let start = Instant::now();
    /// let err = hedge_with_attempt(
    ///     |attempt| async move {
    ///         // The primary hangs; the hedge learns the key does not exist.
    ///         let ms = if attempt == 0 { 1000 } else { 5 };
    ///         sleep(Duration::from_millis(ms)).await;
    ///         Err::<(), _>(Error::NotFound)
    ///     },
    ///     &policy,
    /// )
    /// .final_error_if(|e| *e == Error::NotFound)
    /// .await
    /// .unwrap_err();
    /// assert!(err.is_final());
    /// assert_eq!((err.attempt, err.error), (1, Error::NotFound));
    /// assert_eq!(start.elapsed(), Duration::from_millis(15)); // not 1000
    /// # }
    /// ```
    pub fn final_error_if<P>(mut self, is_final: P) -> Self
    where
        P: Fn(&E) -> bool + Send + Sync + 'static,
    {
        self.final_if = Some(Box::new(OnErr(is_final)));
        self
    }
}

impl<M, Fut, T, E> HedgeFuture<M, Fut>
where
    Fut: Future<Output = Result<T, E>>,
{
    /// Whether another attempt may be sent now.
    fn may_hedge(&self) -> bool {
        !self.stop_hedging && self.attempts.len() - 1 < self.policy.shared.max_hedges
    }

    fn launch(&mut self, now: Instant) {
        let k = self.attempts.len();
        if k > 0 {
            if !self.policy.shared.admit_hedge() {
                self.stop_hedging = true;
                return;
            }
            self.policy
                .shared
                .hedges_sent
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(hedge = k, "hedge sent");
        }
        self.attempts.push(Attempt {
            future: Some(Box::pin((self.call)(&mut self.make_request, k))),
            started: now,
        });
        self.live += 1;
    }

    /// Arms the timer for the next hedge, if one is due.
    fn arm(&mut self) {
        let (Some(start), Some(delay)) = (self.start, self.delay) else {
            return;
        };
        let sent_hedges = self.attempts.len() - 1;
        let next = if self.may_hedge() {
            u32::try_from(sent_hedges + 1)
                .ok()
                .and_then(|k| hedge_due(start, delay, k))
        } else {
            None
        };
        match (next, &mut self.sleep) {
            (Some(at), Some(sleep)) => sleep.as_mut().reset(at),
            (Some(at), None) => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            (None, _) => self.sleep = None,
        }
    }

    /// Whether the armed timer's hedge is due by now (its timer may not
    /// have been polled yet).
    fn hedge_is_due(&self) -> bool {
        self.sleep
            .as_ref()
            .is_some_and(|sleep| sleep.deadline() <= Instant::now())
    }

    /// Ends the call in failure with `(attempt, error)` as the reported one.
    fn fail(&mut self, attempt: usize, error: E, is_final: bool) -> HedgeError<E> {
        self.policy.shared.failures.fetch_add(1, Ordering::Relaxed);
        self.sleep = None;
        let attempts = self.attempts.len();
        // Attempts still in flight (a final error) are dropped here.
        self.attempts.clear();
        self.live = 0;
        let other_errors = std::mem::take(&mut self.errors)
            .into_iter()
            .filter_map(|(k, r)| r.err().map(|e| (k, e)))
            .collect();
        HedgeError::new(error, attempts, attempt, other_errors, is_final)
    }
}

impl<M, Fut, T, E> Future for HedgeFuture<M, Fut>
where
    Fut: Future<Output = Result<T, E>>,
{
    type Output = Result<Hedged<T>, HedgeError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.start.is_none() {
            let now = Instant::now();
            this.policy.shared.call_started();
            this.start = Some(now);
            this.delay = this.policy.current_delay();
            this.launch(now);
            this.arm();
        }
        loop {
            // Failures in this pass that ask for the next attempt at once.
            let mut relaunch = 0usize;
            for k in 0..this.attempts.len() {
                let attempt = &mut this.attempts[k];
                let Some(future) = attempt.future.as_mut() else {
                    continue;
                };
                let Poll::Ready(result) = future.as_mut().poll(cx) else {
                    continue;
                };
                attempt.future = None;
                this.live -= 1;
                if let Ok(value) = result {
                    let latency = Instant::now().saturating_duration_since(attempt.started);
                    this.policy.record_latency(latency);
                    if k > 0 {
                        this.policy
                            .shared
                            .hedge_wins
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(winner = k, "hedge won");
                    }
                    let attempts = this.attempts.len();
                    // Losers are dropped here, before we return.
                    this.attempts.clear();
                    this.live = 0;
                    this.sleep = None;
                    return Poll::Ready(Ok(Hedged {
                        value,
                        winner: k,
                        attempts,
                    }));
                }
                if this.final_if.as_ref().is_some_and(|f| f.is_final(&result)) {
                    tracing::debug!(attempt = k, "final error: hedging stops");
                    let Err(error) = result else {
                        unreachable!("only an Err is final")
                    };
                    return Poll::Ready(Err(this.fail(k, error, true)));
                }
                this.errors.push((k, result));
                if this.policy.shared.hedge_on_error {
                    relaunch += 1;
                }
            }
            let mut launched = false;
            for _ in 0..relaunch {
                if !this.may_hedge() {
                    break;
                }
                this.launch(Instant::now());
                launched = true;
            }
            if launched {
                this.arm();
                // Poll the new attempts (and re-check the timer) at once.
                continue;
            }
            if this.live == 0 && this.hedge_is_due() {
                // Every attempt so far failed, but the next hedge's time has
                // come (a failure at the delay instant, or a zero delay): it
                // is sent, as it would be were an attempt still running.
                this.launch(Instant::now());
                this.arm();
                continue;
            }
            if this.live == 0 {
                // The primary failed first in attempt order only if it
                // failed first in time; report it, as without hedging.
                let primary = this.errors.iter().position(|(k, _)| *k == 0);
                let (k, result) = match primary {
                    Some(i) => this.errors.remove(i),
                    // Unreachable: the primary is the first attempt and it finished.
                    None => return Poll::Pending,
                };
                let Err(error) = result else {
                    unreachable!("only failures are kept")
                };
                return Poll::Ready(Err(this.fail(k, error, false)));
            }
            let due = match &mut this.sleep {
                Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
                None => false,
            };
            if !due {
                return Poll::Pending;
            }
            this.launch(Instant::now());
            this.arm();
            // Loop: poll the new attempt (and re-check the timer) at once.
        }
    }
}
