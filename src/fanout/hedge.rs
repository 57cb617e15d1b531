//! Hedged requests: if the first attempt is slow, send another; first
//! success wins ("The Tail at Scale", Dean and Barroso, 2013).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::core::{LatencyWindow, hedge_due};
use super::error::HedgeError;
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Mutex};
use crate::{ConfigError, ConfigErrorKind};

const COMPONENT: &str = "hedge";
/// Upper bound on `max_hedges`: every attempt is polled on each wake.
pub(crate) const MAX_HEDGES: usize = 16;
/// Upper bound on the rolling window: a percentile query copies it.
pub(crate) const MAX_WINDOW: usize = 65_536;

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
    rule: DelayRule,
    max_hedges: usize,
    window: Mutex<LatencyWindow>,
    calls: AtomicU64,
    hedges_sent: AtomicU64,
    hedge_wins: AtomicU64,
    failures: AtomicU64,
}

impl fmt::Debug for HedgePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgePolicy")
            .field("rule", &self.shared.rule)
            .field("max_hedges", &self.shared.max_hedges)
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
    /// Calls where every attempt failed.
    pub failures: u64,
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
}

impl HedgePolicyBuilder {
    /// Hedge after this fixed delay.
    pub fn fixed_delay(mut self, delay: Duration) -> Self {
        self.fixed = Some(delay);
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

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: neither `fixed_delay` nor
    /// `percentile` (`Missing`), or both (`Conflict`); `percentile` not in
    /// `(0, 1]` (`TooSmall`/`TooLarge`); `window` of 0 (`Zero`) or above
    /// 65 536 (`TooLarge`); `min_samples` of 0 (`Zero`) or above `window`
    /// (`TooLarge`); `window`, `min_samples` or `initial_delay` with
    /// `fixed_delay` (`Conflict`); `max_hedges` above 16 (`TooLarge`).
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
        Ok(HedgePolicy {
            shared: Arc::new(HedgeShared {
                rule,
                max_hedges,
                window: Mutex::new(LatencyWindow::new(window)),
                calls: AtomicU64::new(0),
                hedges_sent: AtomicU64::new(0),
                hedge_wins: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        })
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
/// attempt is running and none succeeded, the call fails with the
/// primary's error (hedges are not retries: a primary that fails before
/// the delay is not re-sent). Each successful attempt's latency, from its
/// own start, feeds the policy's rolling window.
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
/// [`HedgeError`] with the primary's error when every attempt sent failed.
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
    HedgeFuture {
        make_request,
        policy: policy.clone(),
        attempts: Vec::new(),
        live: 0,
        primary_error: None,
        start: None,
        delay: None,
        sleep: None,
    }
}

struct Attempt<Fut> {
    future: Option<Pin<Box<Fut>>>,
    started: Instant,
}

/// The future returned by [`hedge`].
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
    policy: HedgePolicy,
    attempts: Vec<Attempt<Fut>>,
    live: usize,
    /// The primary's `Err`, kept until every attempt has failed.
    primary_error: Option<Fut::Output>,
    start: Option<Instant>,
    delay: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
}

// Nothing in a `HedgeFuture` is ever pinned in place: attempts are boxed,
// the closure and the stored error are plain values.
impl<M, Fut: Future> Unpin for HedgeFuture<M, Fut> {}

impl<M, Fut: Future> fmt::Debug for HedgeFuture<M, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeFuture")
            .field("attempts", &self.attempts.len())
            .field("live", &self.live)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl<M, Fut, T, E> HedgeFuture<M, Fut>
where
    M: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    fn launch(&mut self, now: Instant) {
        let k = self.attempts.len();
        self.attempts.push(Attempt {
            future: Some(Box::pin((self.make_request)())),
            started: now,
        });
        self.live += 1;
        if k > 0 {
            self.policy
                .shared
                .hedges_sent
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(hedge = k, "hedge sent");
        }
    }

    /// Arms the timer for the next hedge, if one is due.
    fn arm(&mut self) {
        let (Some(start), Some(delay)) = (self.start, self.delay) else {
            return;
        };
        let sent_hedges = self.attempts.len() - 1;
        let next = if sent_hedges < self.policy.shared.max_hedges {
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
}

impl<M, Fut, T, E> Future for HedgeFuture<M, Fut>
where
    M: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    type Output = Result<Hedged<T>, HedgeError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.start.is_none() {
            let now = Instant::now();
            this.policy.shared.calls.fetch_add(1, Ordering::Relaxed);
            this.start = Some(now);
            this.delay = this.policy.current_delay();
            this.launch(now);
            this.arm();
        }
        loop {
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
                match result {
                    Ok(value) => {
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
                    Err(e) if k == 0 => this.primary_error = Some(Err(e)),
                    Err(_) => {}
                }
            }
            if this.live == 0 {
                this.policy.shared.failures.fetch_add(1, Ordering::Relaxed);
                this.sleep = None;
                let attempts = this.attempts.len();
                this.attempts.clear();
                return match this.primary_error.take() {
                    Some(Err(error)) => Poll::Ready(Err(HedgeError { error, attempts })),
                    // Unreachable: the primary is the first attempt and it finished.
                    _ => Poll::Pending,
                };
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
