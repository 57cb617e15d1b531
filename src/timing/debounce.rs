//! The debounce timer rules: a plain state machine driven by time values.
//!
//! This is lodash's `debounce` (v4.17.21) written as a state machine. It never
//! reads a clock and holds no values: the caller passes `now` into every step,
//! keeps the latest value itself, and is told when to invoke. One timer slot
//! stands for lodash's `setTimeout` handle; the async shells keep one `Sleep`
//! armed at [`DebounceCore::deadline`] and call [`DebounceCore::timer_fired`]
//! when it completes.
//!
//! Like lodash, the timer is *not* pushed back on every call: it stays where it
//! was armed, and when it fires early (calls kept coming) it is re-armed for the
//! time still remaining. That is what keeps a call in a burst down to a few
//! comparisons, with no timer work at all.
//!
//! One deliberate difference: lodash's `flush` forgets its timer handle without
//! clearing the timer, so a stale timer can still fire later and, with
//! `maxWait`, invoke earlier than the live one would. Here `flush` clears the
//! timer slot, exactly as `cancel` does.

use std::time::Duration;

use tokio::time::Instant;

use crate::{ConfigError, ConfigErrorKind};

/// How far in the future "never" is when a deadline would overflow `Instant`.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `now + d`, saturating at thirty years from `now` instead of overflowing.
#[inline]
pub(crate) fn add(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or_else(|| now + FAR_FUTURE)
}

/// The options lodash's `debounce` and `throttle` take, validated.
///
/// | option | meaning | debounce default | throttle default |
/// |---|---|---|---|
/// | `wait` | quiet time after the last call before the trailing invocation | — | — |
/// | `leading` | invoke on the first call of a burst | `false` | `true` |
/// | `trailing` | invoke after the burst with the latest value | `true` | `true` |
/// | `max_wait` | the longest a call may be delayed during a continuous burst | none | `wait` |
///
/// A throttle is exactly a debounce with `max_wait = wait` and both edges on:
/// during a continuous burst it invokes at most once per `wait`.
///
/// A `max_wait` below `wait` is raised to `wait`, as lodash does
/// (`maxWait = Math.max(maxWait, wait)`); [`DebounceOptions::max_wait`] reports
/// the raised value. Durations too large for the clock saturate at about
/// thirty years ("never").
///
/// # Examples
///
/// ```
/// use flowguard::timing::DebounceOptions;
/// use std::time::Duration;
///
/// let opts = DebounceOptions::builder(Duration::from_millis(100))
///     .leading(true)
///     .max_wait(Duration::from_millis(50)) // below wait: raised to wait
///     .build()
///     .unwrap();
/// assert_eq!(opts.max_wait(), Some(Duration::from_millis(100)));
///
/// let t = DebounceOptions::throttle(Duration::from_millis(100));
/// assert!(t.leading() && t.trailing());
/// assert_eq!(t.max_wait(), Some(Duration::from_millis(100)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebounceOptions {
    wait: Duration,
    max_wait: Option<Duration>,
    leading: bool,
    trailing: bool,
}

impl DebounceOptions {
    /// Debounce defaults: trailing only, no `max_wait`.
    pub fn debounce(wait: Duration) -> Self {
        Self {
            wait,
            max_wait: None,
            leading: false,
            trailing: true,
        }
    }

    /// Throttle defaults: leading and trailing, `max_wait = wait`.
    pub fn throttle(wait: Duration) -> Self {
        Self {
            wait,
            max_wait: Some(wait),
            leading: true,
            trailing: true,
        }
    }

    /// A builder starting from the debounce defaults.
    pub fn builder(wait: Duration) -> DebounceOptionsBuilder {
        DebounceOptionsBuilder {
            opts: Self::debounce(wait),
        }
    }

    /// A builder starting from the throttle defaults (`max_wait` is fixed to
    /// `wait`; only the edges can be changed, as in lodash's `throttle`).
    pub fn throttle_builder(wait: Duration) -> DebounceOptionsBuilder {
        DebounceOptionsBuilder {
            opts: Self::throttle(wait),
        }
    }

    /// The quiet time.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The longest delay during a burst, already raised to at least `wait`.
    pub fn max_wait(&self) -> Option<Duration> {
        self.max_wait
    }

    /// Whether the first call of a burst invokes at once.
    pub fn leading(&self) -> bool {
        self.leading
    }

    /// Whether the end of a burst invokes with the latest value.
    pub fn trailing(&self) -> bool {
        self.trailing
    }
}

/// Builds [`DebounceOptions`]; see there for the meaning of each option.
///
/// # Examples
///
/// ```
/// use flowguard::timing::DebounceOptions;
/// use flowguard::ConfigErrorKind;
/// use std::time::Duration;
///
/// let err = DebounceOptions::builder(Duration::from_millis(10))
///     .leading(false)
///     .trailing(false)
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "trailing");
/// assert_eq!(err.kind(), ConfigErrorKind::Conflict);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DebounceOptionsBuilder {
    opts: DebounceOptions,
}

impl DebounceOptionsBuilder {
    /// Invoke on the first call of a burst (lodash `leading`).
    pub fn leading(mut self, leading: bool) -> Self {
        self.opts.leading = leading;
        self
    }

    /// Invoke after a burst with the latest value (lodash `trailing`).
    pub fn trailing(mut self, trailing: bool) -> Self {
        self.opts.trailing = trailing;
        self
    }

    /// The longest a call may be delayed during a continuous burst (lodash
    /// `maxWait`). Values below `wait` are raised to `wait`.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.opts.max_wait = Some(max_wait);
        self
    }

    /// Validates the options.
    ///
    /// # Errors
    ///
    /// [`ConfigErrorKind::Conflict`] on field `trailing` when both `leading`
    /// and `trailing` are off: the handler would never run (lodash accepts
    /// this silently; here it is refused).
    pub fn build(self) -> Result<DebounceOptions, ConfigError> {
        let mut opts = self.opts;
        if !opts.leading && !opts.trailing {
            return Err(ConfigError::new(
                "timing",
                "trailing",
                ConfigErrorKind::Conflict,
                "must be on when leading is off, or nothing would ever be invoked",
            ));
        }
        opts.max_wait = opts.max_wait.map(|m| m.max(opts.wait));
        Ok(opts)
    }
}

/// What a [`DebounceCore`] step asks its driver to do.
///
/// # Examples
///
/// ```
/// use flowguard::timing::{DebounceCore, DebounceOptions, Step};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let t0 = Instant::now();
/// let opts = DebounceOptions::builder(Duration::from_millis(10)).leading(true).build().unwrap();
/// let mut core = DebounceCore::new(opts);
/// assert_eq!(core.call(t0), Step::Invoke); // the leading edge
/// assert_eq!(core.call(t0), Step::Idle); // kept for the trailing edge
/// assert_eq!(core.cancel(), Step::Discard);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Nothing to do (the value, if any, is kept as the latest).
    Idle,
    /// Invoke now with the latest value, then forget it.
    Invoke,
    /// Drop the latest value without invoking (a trailing edge with
    /// `trailing` off, or a `cancel`).
    Discard,
}

/// lodash's debounce rules as a pure state machine (time is an argument).
///
/// The driver keeps the latest value next to the core: on [`call`] it stores
/// the value first, then acts on the returned [`Step`]. It keeps one timer at
/// [`deadline`] and calls [`timer_fired`] when it completes (late is fine, as
/// in JavaScript; early is ignored).
///
/// [`call`]: DebounceCore::call
/// [`deadline`]: DebounceCore::deadline
/// [`timer_fired`]: DebounceCore::timer_fired
///
/// # Examples
///
/// ```
/// use flowguard::timing::{DebounceCore, DebounceOptions, Step};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let ms = Duration::from_millis;
/// let t0 = Instant::now();
/// let mut core = DebounceCore::new(DebounceOptions::debounce(ms(100)));
/// assert_eq!(core.call(t0), Step::Idle);
/// assert_eq!(core.call(t0 + ms(40)), Step::Idle);
/// // The timer armed by the first call fires early and is re-armed.
/// assert_eq!(core.timer_fired(t0 + ms(100)), Step::Idle);
/// assert_eq!(core.deadline(), Some(t0 + ms(140)));
/// assert_eq!(core.timer_fired(t0 + ms(140)), Step::Invoke);
/// assert_eq!(core.deadline(), None);
/// ```
#[derive(Debug, Clone)]
pub struct DebounceCore {
    opts: DebounceOptions,
    /// lodash `lastArgs !== undefined`.
    has_value: bool,
    /// lodash `lastCallTime` (None = undefined).
    last_call: Option<Instant>,
    /// lodash `lastInvokeTime` (None = 0, "long ago").
    last_invoke: Option<Instant>,
    /// lodash `timerId` with the instant it fires.
    timer: Option<Instant>,
}

impl DebounceCore {
    /// A core with no calls yet.
    pub fn new(opts: DebounceOptions) -> Self {
        Self {
            opts,
            has_value: false,
            last_call: None,
            last_invoke: None,
            timer: None,
        }
    }

    /// The options.
    pub fn options(&self) -> &DebounceOptions {
        &self.opts
    }

    /// When the timer should fire, if one is armed.
    #[inline]
    pub fn deadline(&self) -> Option<Instant> {
        self.timer
    }

    /// Whether a value is waiting for a trailing invocation.
    #[inline]
    pub fn is_pending(&self) -> bool {
        self.has_value && self.opts.trailing
    }

    /// Whether a value is held (waiting, or to be discarded at the trailing
    /// edge when `trailing` is off).
    #[inline]
    pub fn has_value(&self) -> bool {
        self.has_value
    }

    fn should_invoke(&self, now: Instant) -> bool {
        let Some(last_call) = self.last_call else {
            return true;
        };
        // lodash also invokes when the clock went backwards; a monotonic
        // Instant never does, but a caller may pass one out of order.
        let Some(since_call) = now.checked_duration_since(last_call) else {
            return true;
        };
        since_call >= self.opts.wait
            || self
                .opts
                .max_wait
                .is_some_and(|max| self.since_invoke(now) >= max)
    }

    /// Time since the last invocation; "forever" before the first one.
    fn since_invoke(&self, now: Instant) -> Duration {
        match self.last_invoke {
            Some(t) => now.saturating_duration_since(t),
            None => Duration::MAX,
        }
    }

    /// Only called when `should_invoke(now)` is false, so nothing underflows.
    fn remaining_wait(&self, now: Instant) -> Duration {
        let since_call = self.last_call.map_or(Duration::ZERO, |t| now - t);
        let waiting = self.opts.wait.saturating_sub(since_call);
        match self.opts.max_wait {
            Some(max) => waiting.min(max.saturating_sub(self.since_invoke(now))),
            None => waiting,
        }
    }

    fn invoke(&mut self, now: Instant) -> Step {
        self.has_value = false;
        self.last_invoke = Some(now);
        Step::Invoke
    }

    /// A call at `now`; the driver has already stored its value as the latest.
    ///
    /// Returns [`Step::Invoke`] on a leading edge with `leading` on, and when
    /// `max_wait` forces an invocation during a burst whose timer is late.
    /// Check [`deadline`](Self::deadline) afterwards: a call may arm the timer.
    #[inline]
    pub fn call(&mut self, now: Instant) -> Step {
        let invoking = self.should_invoke(now);
        self.has_value = true;
        self.last_call = Some(now);
        if invoking {
            if self.timer.is_none() {
                return self.leading_edge(now);
            }
            if self.opts.max_wait.is_some() {
                // lodash: "handle invocations in a tight loop" — the timer is
                // overdue, so invoke here and restart it.
                self.timer = Some(add(now, self.opts.wait));
                return self.invoke(now);
            }
        }
        if self.timer.is_none() {
            self.timer = Some(add(now, self.opts.wait));
        }
        Step::Idle
    }

    #[cold]
    fn leading_edge(&mut self, now: Instant) -> Step {
        self.last_invoke = Some(now);
        self.timer = Some(add(now, self.opts.wait));
        if self.opts.leading {
            self.invoke(now)
        } else {
            Step::Idle
        }
    }

    fn trailing_edge(&mut self, now: Instant) -> Step {
        self.timer = None;
        if self.has_value {
            if self.opts.trailing {
                return self.invoke(now);
            }
            self.has_value = false;
            return Step::Discard;
        }
        Step::Idle
    }

    /// The timer fired at `now`.
    ///
    /// Early or stray fires (no timer, or `now` before [`deadline`](Self::deadline))
    /// do nothing. A fire during a burst re-arms the timer for the time left.
    pub fn timer_fired(&mut self, now: Instant) -> Step {
        match self.timer {
            Some(at) if now >= at => {}
            _ => return Step::Idle,
        }
        if self.should_invoke(now) {
            return self.trailing_edge(now);
        }
        self.timer = Some(add(now, self.remaining_wait(now)));
        Step::Idle
    }

    /// Runs the trailing edge now if a timer is armed (lodash `flush`).
    ///
    /// Returns [`Step::Invoke`] if a value was waiting (and `trailing` is on).
    pub fn flush(&mut self, now: Instant) -> Step {
        if self.timer.is_none() {
            return Step::Idle;
        }
        self.trailing_edge(now)
    }

    /// Forgets everything, as if no call had ever been made (lodash `cancel`).
    ///
    /// Returns [`Step::Discard`] if a value was held, which the driver drops.
    pub fn cancel(&mut self) -> Step {
        let had = self.has_value;
        *self = Self::new(self.opts);
        if had { Step::Discard } else { Step::Idle }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives a core through calls at the given offsets, firing the timer on
    /// time in between, and returns the offsets of the invocations.
    ///
    /// Calls at an instant run before a timer due at that same instant, as
    /// the synchronous code of a JavaScript tick runs before its timers.
    fn run(opts: DebounceOptions, calls: &[u64], until: u64) -> Vec<u64> {
        let t0 = Instant::now();
        let mut core = DebounceCore::new(opts);
        let mut out = Vec::new();
        let fire_until = |core: &mut DebounceCore, t: u64, out: &mut Vec<u64>| {
            while let Some(d) = core.deadline() {
                if d >= t0 + ms(t) {
                    break;
                }
                if core.timer_fired(d) == Step::Invoke {
                    out.push((d - t0).as_millis() as u64);
                }
            }
        };
        for &c in calls {
            fire_until(&mut core, c, &mut out);
            if core.call(t0 + ms(c)) == Step::Invoke {
                out.push(c);
            }
        }
        fire_until(&mut core, until + 1, &mut out);
        out
    }

    #[test]
    fn trailing_only_invokes_once_after_quiet() {
        let d = DebounceOptions::debounce(ms(32));
        assert_eq!(run(d, &[0, 10, 20], 200), vec![52]);
    }

    #[test]
    fn leading_only_invokes_once_per_burst() {
        let d = DebounceOptions::builder(ms(32))
            .leading(true)
            .trailing(false)
            .build()
            .unwrap();
        assert_eq!(run(d, &[0, 10, 20, 100, 110], 300), vec![0, 100]);
    }

    #[test]
    fn both_edges_trailing_needs_a_second_call() {
        let d = DebounceOptions::builder(ms(32))
            .leading(true)
            .build()
            .unwrap();
        assert_eq!(run(d, &[0], 200), vec![0]);
        assert_eq!(run(d, &[0, 5], 200), vec![0, 37]);
    }

    #[test]
    fn max_wait_forces_invocations_in_a_burst() {
        let d = DebounceOptions::builder(ms(32))
            .max_wait(ms(64))
            .build()
            .unwrap();
        let calls: Vec<u64> = (0..20).map(|i| i * 10).collect();
        // first call at 0: max_wait counts from there; last call at 190.
        assert_eq!(run(d, &calls, 400), vec![64, 128, 192]);
    }

    #[test]
    fn throttle_rate_over_a_long_burst() {
        let t = DebounceOptions::throttle(ms(100));
        let calls: Vec<u64> = (0..1000).collect();
        let inv = run(t, &calls, 2000);
        // The call at 100 finds the timer due and invokes ("tight loop").
        let want: Vec<u64> = (0..=10).map(|i| i * 100).collect();
        assert_eq!(inv, want);
    }

    #[test]
    fn wait_zero_batches_calls_of_one_instant() {
        let d = DebounceOptions::debounce(ms(0));
        assert_eq!(run(d, &[0, 0, 0, 5], 10), vec![0, 5]);
    }

    #[test]
    fn flush_and_cancel() {
        let t0 = Instant::now();
        let mut c = DebounceCore::new(DebounceOptions::debounce(ms(10)));
        assert_eq!(c.flush(t0), Step::Idle);
        c.call(t0);
        assert!(c.is_pending());
        assert_eq!(c.flush(t0 + ms(1)), Step::Invoke);
        assert_eq!(c.deadline(), None);
        c.call(t0 + ms(2));
        assert_eq!(c.cancel(), Step::Discard);
        assert!(!c.is_pending());
        assert_eq!(c.deadline(), None);
        assert_eq!(c.timer_fired(t0 + ms(100)), Step::Idle);
    }

    #[test]
    fn trailing_off_discards() {
        let t0 = Instant::now();
        let opts = DebounceOptions::builder(ms(10))
            .leading(true)
            .trailing(false)
            .build()
            .unwrap();
        let mut c = DebounceCore::new(opts);
        assert_eq!(c.call(t0), Step::Invoke);
        assert_eq!(c.call(t0 + ms(1)), Step::Idle);
        assert_eq!(c.timer_fired(t0 + ms(11)), Step::Discard);
    }

    #[test]
    fn late_timer_with_max_wait_invokes_in_the_call() {
        let t0 = Instant::now();
        let mut c = DebounceCore::new(DebounceOptions::throttle(ms(10)));
        assert_eq!(c.call(t0), Step::Invoke);
        // The timer (due at 10) has not been serviced yet at 15.
        assert_eq!(c.call(t0 + ms(15)), Step::Invoke);
        assert_eq!(c.deadline(), Some(t0 + ms(25)));
    }

    #[test]
    fn a_call_right_at_the_boundary() {
        let t0 = Instant::now();
        let opts = DebounceOptions::debounce(ms(10));
        // Before the timer due at 10 has fired: the call joins (and extends)
        // the burst, so the first value is never invoked.
        let mut c = DebounceCore::new(opts);
        c.call(t0);
        assert_eq!(c.call(t0 + ms(10)), Step::Idle);
        assert_eq!(c.timer_fired(t0 + ms(10)), Step::Idle);
        assert_eq!(c.deadline(), Some(t0 + ms(20)));
        assert_eq!(c.timer_fired(t0 + ms(20)), Step::Invoke);
        // After it fired: the call starts a new burst.
        let mut c = DebounceCore::new(opts);
        c.call(t0);
        assert_eq!(c.timer_fired(t0 + ms(10)), Step::Invoke);
        assert_eq!(c.call(t0 + ms(10)), Step::Idle);
        assert_eq!(c.deadline(), Some(t0 + ms(20)));
        // With max_wait, a call finding the timer overdue invokes itself.
        let mut c = DebounceCore::new(DebounceOptions::throttle(ms(10)));
        assert_eq!(c.call(t0), Step::Invoke);
        c.call(t0 + ms(5));
        assert_eq!(c.call(t0 + ms(10)), Step::Invoke);
        assert_eq!(c.timer_fired(t0 + ms(10)), Step::Idle, "timer was reset");
    }

    #[test]
    fn huge_durations_saturate() {
        let t0 = Instant::now();
        let mut c = DebounceCore::new(DebounceOptions::throttle(Duration::MAX));
        assert_eq!(c.call(t0), Step::Invoke);
        assert_eq!(c.call(t0 + ms(1)), Step::Idle);
        assert!(c.deadline().unwrap() > t0 + Duration::from_secs(86_400 * 365));
    }
}
