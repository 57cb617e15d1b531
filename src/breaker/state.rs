//! The breaker's state machine: pure, time as an argument.
//!
//! Everything the breaker decides is decided here, under the shell's mutex,
//! except the one decision that must not take a lock: admission in `Closed`
//! (and `Disabled`), which the shell makes from the published [`StateWord`].
//!
//! # Rules (every boundary stated)
//!
//! - **Closed → Open** after an outcome is recorded, when any enabled policy
//!   holds:
//!   - consecutive failures `≥ n` (a success resets the run, an ignored call
//!     does not);
//!   - the window holds `≥ minimum_calls` outcomes (for a count window, at
//!     most its size) **and** failure rate `≥` the failure threshold;
//!   - same minimum **and** slow-call rate `≥` the slow threshold, where a
//!     call is slow when its duration is strictly `>` the slow-call duration.
//! - **Open → HalfOpen** on the first admission attempt at
//!   `now ≥ opened_at + wait` (inclusive); never on a read or a readiness
//!   query, which only report that the wait is over. The wait is the backoff's value for the number of
//!   re-opens since the breaker last closed, minus jitter.
//! - **HalfOpen**: `permitted_probes` slots. A probe holds its slot while in
//!   flight; an ignored or cancelled probe gives it back uncounted. Once all
//!   `permitted_probes` outcomes are in, it decides: **Open** (a re-open:
//!   the backoff grows) if the probes' failure rate `≥` the failure threshold
//!   (or, with no rate threshold but a consecutive policy, if any probe
//!   failed), or their slow rate `≥` the slow threshold; else **Closed**, with
//!   an empty window and the backoff reset. With `max_half_open_wait`, the
//!   first event at `now ≥ entered + max_half_open_wait` re-opens it instead.
//! - **ForcedOpen** refuses everything, ignoring waits; **Disabled** admits
//!   everything and records nothing. Both last until `reset()` (→ Closed,
//!   empty window) or another manual call, and entering either empties the
//!   window (nothing decides on it before the reset that would; their
//!   metrics start fresh, as resilience4j's manual states do).
//! - **Metrics** show what the state decides on: the window in `Closed`, the
//!   probes in `HalfOpen`; `Open` keeps those of the state it opened from
//!   (the window after a trip, the probes after a re-open), as
//!   resilience4j's `OpenState` does.
//! - A manual call to the state the breaker is in is no transition: nothing
//!   is published or counted (as in resilience4j). `reset()` of a closed
//!   breaker still empties the window and starts a new epoch.
//! - Every transition bumps the epoch. An outcome is recorded only if the
//!   call was admitted in the current epoch: results of calls admitted
//!   before a transition (or a reset) describe the backend as it was, and
//!   are dropped.

use std::time::Duration;

use tokio::time::Instant;

use super::window::{CountWindow, Counts, Record, TimeWindow, Window};

/// The state of a circuit breaker.
///
/// # Examples
///
/// ```
/// use flowguard::breaker::{CircuitBreaker, State};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let breaker = CircuitBreaker::new();
/// assert_eq!(breaker.state(), State::Closed);
/// breaker.force_open();
/// assert_eq!(breaker.state(), State::ForcedOpen);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls go through; outcomes are recorded and may trip the breaker.
    Closed,
    /// Calls are refused until the open wait has passed; the first call
    /// after it moves the breaker to `HalfOpen`.
    Open,
    /// A limited number of probe calls decide between `Closed` and `Open`.
    HalfOpen,
    /// Manually opened: every call is refused until `reset()`.
    ForcedOpen,
    /// Manually disabled: every call goes through, nothing is recorded.
    Disabled,
}

impl State {
    /// The state's name in lower case, as gobreaker prints its states and
    /// as logs and metric labels want it: `"closed"`, `"open"`,
    /// `"half-open"`, `"forced-open"`, `"disabled"`. The same text as
    /// [`Display`](std::fmt::Display).
    ///
    /// ```
    /// use flowguard::breaker::State;
    ///
    /// assert_eq!(State::HalfOpen.as_str(), "half-open");
    /// assert_eq!(State::Closed.to_string(), "closed");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
            State::ForcedOpen => "forced-open",
            State::Disabled => "disabled",
        }
    }

    const fn tag(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
        }
    }

    const fn from_tag(tag: u64) -> Self {
        match tag {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            _ => State::Disabled,
        }
    }
}

/// The published state word: what lock-free readers (admission in `Closed`,
/// `state()`, refusal in `Open`) see.
///
/// ```text
///  63                                   3 2     0
/// +--------------------------------------+-------+
/// |               epoch                  |  tag  |
/// +--------------------------------------+-------+
///
///  tag  state       admission without the lock
///  000  Closed      yes (permit tagged with the epoch)
///  001  Open        refused if now < open_until (second atomic), else lock
///  010  HalfOpen    no: probe slots are counted under the lock
///  011  ForcedOpen  refused
///  100  Disabled    yes (permit records nothing)
///  101..111         never written
/// ```
///
/// The epoch counts transitions and resets of a closed breaker (61 bits: it
/// cannot wrap in practice); permits carry it, so outcomes from an earlier
/// epoch are dropped. Only the holder of the core's mutex stores the word,
/// after the core changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StateWord(pub(crate) u64);

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StateWord {
    const TAG_BITS: u32 = 3;
    const TAG_MASK: u64 = (1 << Self::TAG_BITS) - 1;

    #[inline]
    pub(crate) const fn new(state: State, epoch: u64) -> Self {
        Self((epoch << Self::TAG_BITS) | state.tag())
    }

    #[inline]
    pub(crate) const fn state(self) -> State {
        State::from_tag(self.0 & Self::TAG_MASK)
    }

    #[inline]
    pub(crate) const fn epoch(self) -> u64 {
        self.0 >> Self::TAG_BITS
    }

    #[inline]
    pub(crate) const fn is_closed(self) -> bool {
        self.0 & Self::TAG_MASK == 0
    }
}

/// Which window the closed state keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowKind {
    Count { size: u32 },
    Time { length: Duration, buckets: u32 },
}

/// How long the breaker stays open: `initial · multiplier^reopens`, capped at
/// `max`, then shortened by a random fraction in `[0, jitter)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) multiplier: f64,
    pub(crate) max: Duration,
    pub(crate) jitter: f64,
}

impl Backoff {
    /// The wait before the `reopens`-th re-open's probe (0 = first opening),
    /// before jitter.
    pub(crate) fn base_wait(&self, reopens: u32) -> Duration {
        if self.multiplier <= 1.0 || reopens == 0 {
            return self.initial.min(self.max);
        }
        // In nanoseconds, so whole multipliers of whole waits stay exact
        // (below 2^53 ns, about 104 days; the cap is 365 days).
        let factor = self.multiplier.powi(reopens.min(4096) as i32);
        let nanos = self.initial.as_nanos() as f64 * factor;
        if nanos.is_nan() || nanos >= self.max.as_nanos() as f64 {
            return self.max;
        }
        Duration::from_nanos(nanos as u64)
    }
}

/// Validated settings (the builder in `mod.rs` checks every field).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_rate: Option<f64>,
    pub(crate) slow_duration: Duration,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) window: WindowKind,
    pub(crate) minimum_calls: u32,
    pub(crate) backoff: Backoff,
    pub(crate) permitted_probes: u32,
    pub(crate) max_half_open_wait: Option<Duration>,
    pub(crate) jitter_seed: u64,
}

impl Settings {
    /// Whether a call's duration matters (the slow-call policy is on).
    pub(crate) fn measures_duration(&self) -> bool {
        self.slow_rate.is_some()
    }

    fn effective_minimum(&self) -> u64 {
        match self.window {
            WindowKind::Count { size } => u64::from(self.minimum_calls.min(size)),
            WindowKind::Time { .. } => u64::from(self.minimum_calls),
        }
    }
}

/// What an admitted call carries back when it finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) epoch: u64,
    pub(crate) kind: TicketKind,
}

/// How an admitted call's outcome is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TicketKind {
    /// Admitted in `Closed`: the outcome goes into the window.
    Closed,
    /// Admitted in `HalfOpen`: holds a probe slot.
    Probe,
    /// Admitted in `Disabled`: nothing is recorded.
    Untracked,
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Open { until: Instant },
    HalfOpenFull,
    ForcedOpen,
}

/// A state change (`from != to`), for the hook and tracing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) from: State,
    pub(crate) to: State,
    pub(crate) at: Instant,
    /// Transitions so far, this one included.
    pub(crate) seq: u64,
}

/// When a call could next be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    Now,
    At(Instant),
    /// Depends on other calls finishing or on a manual action; worth
    /// re-checking at the given instant (the half-open deadline) if any.
    Unknown(Option<Instant>),
}

/// Reads the time at most once, only if something needs it.
struct LazyNow<F> {
    read: Option<F>,
    value: Option<Instant>,
}

impl<F: FnOnce() -> Instant> LazyNow<F> {
    fn get(&mut self) -> Instant {
        if let Some(t) = self.value {
            return t;
        }
        let t = match self.read.take() {
            Some(read) => read(),
            // Unreachable: `read` is taken only when `value` is set.
            None => Instant::now(),
        };
        self.value = Some(t);
        t
    }
}

/// The whole breaker state, without any synchronisation.
#[derive(Debug, Clone)]
pub(crate) struct Core {
    s: Settings,
    state: State,
    epoch: u64,
    /// Transitions so far (the epoch also counts closed-state resets).
    transitions: u64,
    window: Window,
    consecutive: u32,
    open_until: Instant,
    reopens: u32,
    probes_in_flight: u32,
    probes: Counts,
    /// Open after a re-open from half-open: `probes` still holds the
    /// outcomes that re-opened it, and the metrics show them.
    reopened_by_probes: bool,
    half_open_since: Instant,
    rng: u64,
}

impl Core {
    /// A closed breaker with an empty window at `now`.
    pub(crate) fn new(s: Settings, now: Instant) -> Self {
        let window = match s.window {
            WindowKind::Count { size } => Window::Count(CountWindow::new(size)),
            WindowKind::Time { length, buckets } => {
                Window::Time(TimeWindow::new(now, length, buckets))
            }
        };
        let rng = s.jitter_seed | 1;
        Self {
            s,
            state: State::Closed,
            epoch: 0,
            transitions: 0,
            window,
            consecutive: 0,
            open_until: now,
            reopens: 0,
            probes_in_flight: 0,
            probes: Counts::default(),
            reopened_by_probes: false,
            half_open_since: now,
            rng,
        }
    }

    pub(crate) fn word(&self) -> StateWord {
        StateWord::new(self.state, self.epoch)
    }

    /// Whether a success of the current epoch could be counted without the
    /// lock (and folded in later with [`record_successes`](Self::record_successes)):
    /// closed, no failure run to reset, no call timing, a count window (its
    /// outcomes need no time), and no rate a success could raise: either no
    /// failure-rate policy or a full window (a success into a full window
    /// cannot raise a rate, see `record`). Such a success changes nothing
    /// but the window's counts and can never trip the breaker.
    pub(crate) fn success_needs_no_lock(&self) -> bool {
        self.state == State::Closed
            && self.consecutive == 0
            && !self.s.measures_duration()
            && !self.window.is_time_based()
            && (self.s.failure_rate.is_none() || self.window.is_full_count())
    }

    /// Records `n` successes of the current epoch counted while
    /// [`success_needs_no_lock`](Self::success_needs_no_lock) held: the
    /// same as `n` calls of [`record`](Self::record), which then never
    /// trip.
    pub(crate) fn record_successes(&mut self, n: u64) {
        let ok = Record {
            failure: false,
            slow: false,
        };
        let size = match self.s.window {
            WindowKind::Count { size } => u64::from(size),
            // Not counted without the lock; nothing to do.
            WindowKind::Time { .. } => return,
        };
        // Only the last `size` can still be in the window.
        for _ in 0..n.min(size) {
            self.window.record(self.half_open_since, ok);
        }
        if n > 0 {
            self.consecutive = 0;
        }
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// When the current (or last) open period ends.
    pub(crate) fn open_until(&self) -> Instant {
        self.open_until
    }

    pub(crate) fn probes_in_flight(&self) -> u32 {
        self.probes_in_flight
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    pub(crate) fn reopens(&self) -> u32 {
        self.reopens
    }

    /// State transitions so far.
    pub(crate) fn transitions(&self) -> u64 {
        self.transitions
    }

    /// The counts the current state decides on: the probes in `HalfOpen`,
    /// the closed window otherwise; in `Open`, those of the state it opened
    /// from (the probes after a re-open). Also whether the minimum is
    /// reached.
    pub(crate) fn counts(&mut self, now: Instant) -> (Counts, bool) {
        if self.state == State::HalfOpen || (self.state == State::Open && self.reopened_by_probes) {
            (
                self.probes,
                self.probes.calls >= u64::from(self.s.permitted_probes),
            )
        } else {
            let c = self.window.counts(now);
            (c, c.calls >= self.s.effective_minimum())
        }
    }

    /// Applies time-driven rules that need no call: the half-open deadline.
    pub(crate) fn tick(&mut self, now: Instant) -> Option<Transition> {
        if self.state == State::HalfOpen && self.half_open_expired(now) {
            return Some(self.open(now));
        }
        None
    }

    fn half_open_expired(&self, now: Instant) -> bool {
        match self.s.max_half_open_wait {
            Some(max) => self
                .half_open_since
                .checked_add(max)
                .is_some_and(|deadline| now >= deadline),
            None => false,
        }
    }

    /// Decides whether a call may run now.
    pub(crate) fn try_admit(
        &mut self,
        now: Instant,
    ) -> (Result<Ticket, Refusal>, Option<Transition>) {
        let mut transition = None;
        match self.state {
            State::Closed => return (Ok(self.ticket(TicketKind::Closed)), None),
            State::Disabled => return (Ok(self.ticket(TicketKind::Untracked)), None),
            State::ForcedOpen => return (Err(Refusal::ForcedOpen), None),
            State::Open => {
                if now < self.open_until {
                    return (
                        Err(Refusal::Open {
                            until: self.open_until,
                        }),
                        None,
                    );
                }
                transition = Some(self.half_open(now));
            }
            State::HalfOpen => {
                if self.half_open_expired(now) {
                    let t = self.open(now);
                    return (
                        Err(Refusal::Open {
                            until: self.open_until,
                        }),
                        Some(t),
                    );
                }
            }
        }
        // Half-open: a slot is free while in-flight + decided < permitted.
        let taken = u64::from(self.probes_in_flight) + self.probes.calls;
        if taken < u64::from(self.s.permitted_probes) {
            self.probes_in_flight += 1;
            (Ok(self.ticket(TicketKind::Probe)), transition)
        } else {
            (Err(Refusal::HalfOpenFull), transition)
        }
    }

    fn ticket(&self, kind: TicketKind) -> Ticket {
        Ticket {
            epoch: self.epoch,
            kind,
        }
    }

    /// Records a finished call. `now` is read only if needed.
    pub(crate) fn record(
        &mut self,
        ticket: Ticket,
        r: Record,
        now: impl FnOnce() -> Instant,
    ) -> Option<Transition> {
        if ticket.epoch != self.epoch {
            return None;
        }
        let mut now = LazyNow {
            read: Some(now),
            value: None,
        };
        match (self.state, ticket.kind) {
            (State::Closed, TicketKind::Closed) => {
                let t = if self.window.is_time_based() {
                    now.get()
                } else {
                    // Unused by a count window.
                    self.half_open_since
                };
                // A clean success into a full count window cannot raise any
                // rate (calls stay at the size, failures and slow calls can
                // only leave), and every earlier outcome was judged below
                // the thresholds: the steady-state success skips the check.
                let cannot_trip = !r.failure && !r.slow && self.window.is_full_count();
                self.window.record(t, r);
                if r.failure {
                    self.consecutive = self.consecutive.saturating_add(1);
                } else {
                    self.consecutive = 0;
                }
                if !cannot_trip && self.should_trip(t) {
                    let at = now.get();
                    return Some(self.open(at));
                }
                None
            }
            (State::HalfOpen, TicketKind::Probe) => {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                let at = now.get();
                if self.half_open_expired(at) {
                    return Some(self.open(at));
                }
                self.probes.add(r);
                if self.probes.calls < u64::from(self.s.permitted_probes) {
                    return None;
                }
                if self.probes_say_open() {
                    Some(self.open(at))
                } else {
                    Some(self.close(at))
                }
            }
            _ => None,
        }
    }

    /// An admitted call that counts as nothing (ignored or cancelled).
    /// Returns whether a probe slot was freed.
    pub(crate) fn release(&mut self, ticket: Ticket) -> bool {
        if ticket.epoch == self.epoch
            && ticket.kind == TicketKind::Probe
            && self.state == State::HalfOpen
        {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
            return true;
        }
        false
    }

    fn should_trip(&mut self, now: Instant) -> bool {
        if self
            .s
            .consecutive_failures
            .is_some_and(|n| self.consecutive >= n)
        {
            return true;
        }
        if self.s.failure_rate.is_none() && self.s.slow_rate.is_none() {
            return false;
        }
        let c = self.window.counts(now);
        if c.calls < self.s.effective_minimum() {
            return false;
        }
        self.s
            .failure_rate
            .is_some_and(|t| c.failure_rate_at_least(t))
            || self.s.slow_rate.is_some_and(|t| c.slow_rate_at_least(t))
    }

    fn probes_say_open(&self) -> bool {
        let c = self.probes;
        let failing = match (self.s.failure_rate, self.s.consecutive_failures) {
            (Some(t), _) => c.failure_rate_at_least(t),
            (None, Some(_)) => c.failures > 0,
            (None, None) => false,
        };
        failing || self.s.slow_rate.is_some_and(|t| c.slow_rate_at_least(t))
    }

    fn transition(&mut self, to: State, at: Instant) -> Transition {
        debug_assert_ne!(self.state, to, "a transition changes the state");
        let from = self.state;
        self.state = to;
        self.epoch += 1;
        self.transitions += 1;
        Transition {
            from,
            to,
            at,
            seq: self.transitions,
        }
    }

    fn open(&mut self, now: Instant) -> Transition {
        // Open shows the metrics of the state it opened from, as
        // resilience4j's `OpenState` does: after a re-open, the probes'.
        self.reopened_by_probes = self.state == State::HalfOpen;
        if self.reopened_by_probes {
            self.reopens = self.reopens.saturating_add(1);
        } else {
            self.probes = Counts::default();
        }
        let wait = self.jittered(self.s.backoff.base_wait(self.reopens));
        // Waits are capped far below Instant's range by the builder.
        self.open_until = now.checked_add(wait).unwrap_or(now);
        self.probes_in_flight = 0;
        self.transition(State::Open, now)
    }

    fn half_open(&mut self, now: Instant) -> Transition {
        self.probes_in_flight = 0;
        self.probes = Counts::default();
        self.half_open_since = now;
        self.transition(State::HalfOpen, now)
    }

    fn close(&mut self, now: Instant) -> Transition {
        self.reopens = 0;
        self.clear_closed();
        self.transition(State::Closed, now)
    }

    fn clear_closed(&mut self) {
        self.window.clear();
        self.consecutive = 0;
        self.probes_in_flight = 0;
        self.probes = Counts::default();
    }

    fn jittered(&mut self, wait: Duration) -> Duration {
        let j = self.s.backoff.jitter;
        if j <= 0.0 {
            return wait;
        }
        // xorshift64*: deterministic for a given seed, good enough to spread
        // re-opens of many breakers apart.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        let u = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        wait.mul_f64(1.0 - j * u)
    }

    /// `force_open()`: refuse everything until reset. No transition (and no
    /// change at all) when forced open already.
    pub(crate) fn force_open(&mut self, now: Instant) -> Option<Transition> {
        if self.state == State::ForcedOpen {
            return None;
        }
        // Nothing decides on the window until `reset()` empties it anyway;
        // resilience4j's manual states start with fresh metrics.
        self.clear_closed();
        Some(self.transition(State::ForcedOpen, now))
    }

    /// `disable()`: admit everything, record nothing. No transition (and no
    /// change at all) when disabled already.
    pub(crate) fn disable(&mut self, now: Instant) -> Option<Transition> {
        if self.state == State::Disabled {
            return None;
        }
        self.clear_closed();
        Some(self.transition(State::Disabled, now))
    }

    /// `reset()`: closed, empty window, backoff reset. When closed already
    /// this is no transition, but the window is still emptied and a new
    /// epoch starts, so outcomes of calls admitted before are dropped.
    pub(crate) fn reset(&mut self, now: Instant) -> Option<Transition> {
        self.reopens = 0;
        self.clear_closed();
        if self.state == State::Closed {
            self.epoch += 1;
            return None;
        }
        Some(self.transition(State::Closed, now))
    }

    /// When a call could be admitted, after `tick(now)`.
    pub(crate) fn readiness(&self, now: Instant) -> Readiness {
        match self.state {
            State::Closed | State::Disabled => Readiness::Now,
            State::Open if now >= self.open_until => Readiness::Now,
            State::Open => Readiness::At(self.open_until),
            State::HalfOpen => {
                let taken = u64::from(self.probes_in_flight) + self.probes.calls;
                if taken < u64::from(self.s.permitted_probes) {
                    Readiness::Now
                } else {
                    Readiness::Unknown(
                        self.s
                            .max_half_open_wait
                            .and_then(|max| self.half_open_since.checked_add(max)),
                    )
                }
            }
            State::ForcedOpen => Readiness::Unknown(None),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn settings() -> Settings {
        Settings {
            failure_rate: Some(50.0),
            slow_rate: None,
            slow_duration: Duration::from_secs(1),
            consecutive_failures: None,
            window: WindowKind::Count { size: 5 },
            minimum_calls: 5,
            backoff: Backoff {
                initial: 100 * MS,
                multiplier: 1.0,
                max: 100 * MS,
                jitter: 0.0,
            },
            permitted_probes: 2,
            max_half_open_wait: None,
            jitter_seed: 7,
        }
    }

    const OK: Record = Record {
        failure: false,
        slow: false,
    };
    const ERR: Record = Record {
        failure: true,
        slow: false,
    };

    fn call(core: &mut Core, now: Instant, r: Record) -> Option<Transition> {
        let (t, tr) = core.try_admit(now);
        assert!(tr.is_none());
        core.record(t.expect("admitted"), r, || now)
    }

    #[test]
    fn state_word_round_trips_every_state() {
        for s in [
            State::Closed,
            State::Open,
            State::HalfOpen,
            State::ForcedOpen,
            State::Disabled,
        ] {
            let w = StateWord::new(s, 12345);
            assert_eq!(w.state(), s);
            assert_eq!(w.epoch(), 12345);
            assert_eq!(w.is_closed(), s == State::Closed);
        }
    }

    #[test]
    fn a_success_needs_no_lock_only_where_it_cannot_change_a_decision() {
        let t0 = Instant::now();
        // Failure-rate policy: only once the count window is full.
        let mut c = Core::new(settings(), t0);
        for _ in 0..4 {
            call(&mut c, t0, OK);
            assert!(!c.success_needs_no_lock(), "a success could still trip");
        }
        call(&mut c, t0, OK);
        assert!(c.success_needs_no_lock());
        // A failure run pending: a success must reset it under the lock.
        call(&mut c, t0, ERR);
        assert!(!c.success_needs_no_lock());
        call(&mut c, t0, OK);
        assert!(c.success_needs_no_lock());
        // No rate policy: from the first call.
        let c = Core::new(
            Settings {
                failure_rate: None,
                consecutive_failures: Some(3),
                ..settings()
            },
            t0,
        );
        assert!(c.success_needs_no_lock());
        // Timed calls, time windows and other states: never.
        let slow = Settings {
            slow_rate: Some(50.0),
            failure_rate: None,
            ..settings()
        };
        assert!(!Core::new(slow, t0).success_needs_no_lock());
        let timed = Settings {
            failure_rate: None,
            window: WindowKind::Time {
                length: Duration::from_secs(1),
                buckets: 2,
            },
            ..settings()
        };
        assert!(!Core::new(timed, t0).success_needs_no_lock());
        let mut c = Core::new(
            Settings {
                failure_rate: None,
                consecutive_failures: Some(1),
                ..settings()
            },
            t0,
        );
        call(&mut c, t0, ERR).expect("trips");
        assert!(!c.success_needs_no_lock());
    }

    #[test]
    fn folded_successes_are_the_same_as_recorded_ones() {
        let t0 = Instant::now();
        for n in [0, 1, 3, 5, 7, 12] {
            let mut folded = Core::new(settings(), t0);
            let mut recorded = Core::new(settings(), t0);
            for c in [&mut folded, &mut recorded] {
                for r in [ERR, OK, OK, OK, OK] {
                    call(c, t0, r);
                }
            }
            folded.record_successes(n);
            for _ in 0..n {
                assert_eq!(call(&mut recorded, t0, OK), None);
            }
            assert_eq!(folded.counts(t0), recorded.counts(t0), "n = {n}");
            assert_eq!(folded.consecutive_failures(), 0);
        }
    }

    #[test]
    fn forty_percent_stays_closed_fifty_trips() {
        let t0 = Instant::now();
        let mut c = Core::new(
            Settings {
                window: WindowKind::Count { size: 10 },
                ..settings()
            },
            t0,
        );
        for r in [OK, OK, OK, ERR, ERR] {
            assert_eq!(call(&mut c, t0, r), None);
        }
        assert_eq!(c.state(), State::Closed);
        let tr = call(&mut c, t0, ERR).expect("trips at 3/6");
        assert_eq!((tr.from, tr.to, tr.seq), (State::Closed, State::Open, 1));
        assert_eq!(c.open_until(), t0 + 100 * MS);
    }

    #[test]
    fn open_wait_boundary_is_inclusive() {
        let t0 = Instant::now();
        let mut c = Core::new(
            Settings {
                consecutive_failures: Some(1),
                ..settings()
            },
            t0,
        );
        call(&mut c, t0, ERR).expect("trips");
        let (r, tr) = c.try_admit(t0 + 100 * MS - Duration::from_nanos(1));
        assert_eq!(
            r,
            Err(Refusal::Open {
                until: t0 + 100 * MS
            })
        );
        assert!(tr.is_none());
        let (r, tr) = c.try_admit(t0 + 100 * MS);
        assert_eq!(r.map(|t| t.kind), Ok(TicketKind::Probe));
        assert_eq!(tr.map(|t| t.to), Some(State::HalfOpen));
    }

    #[test]
    fn backoff_grows_on_reopen_and_resets_on_close() {
        let t0 = Instant::now();
        let mut c = Core::new(
            Settings {
                consecutive_failures: Some(1),
                permitted_probes: 1,
                backoff: Backoff {
                    initial: 100 * MS,
                    multiplier: 2.0,
                    max: 300 * MS,
                    jitter: 0.0,
                },
                ..settings()
            },
            t0,
        );
        let mut now = t0;
        call(&mut c, now, ERR);
        let mut waits = vec![c.open_until() - now];
        for _ in 0..3 {
            now = c.open_until();
            let (t, _) = c.try_admit(now);
            c.record(t.unwrap(), ERR, || now).expect("re-opens");
            waits.push(c.open_until() - now);
        }
        assert_eq!(waits, vec![100 * MS, 200 * MS, 300 * MS, 300 * MS]);
        now = c.open_until();
        let (t, _) = c.try_admit(now);
        assert_eq!(
            c.record(t.unwrap(), OK, || now).map(|t| t.to),
            Some(State::Closed)
        );
        call(&mut c, now, ERR);
        assert_eq!(c.open_until() - now, 100 * MS);
    }

    #[test]
    fn jitter_shortens_within_bounds() {
        let t0 = Instant::now();
        let mut c = Core::new(
            Settings {
                consecutive_failures: Some(1),
                backoff: Backoff {
                    initial: 1000 * MS,
                    multiplier: 1.0,
                    max: 1000 * MS,
                    jitter: 0.5,
                },
                ..settings()
            },
            t0,
        );
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            c.reset(t0);
            call(&mut c, t0, ERR);
            let w = c.open_until() - t0;
            assert!(w > 500 * MS && w <= 1000 * MS, "{w:?}");
            seen.insert(w);
        }
        assert!(seen.len() > 1);
    }

    #[test]
    fn stale_epoch_outcomes_are_dropped() {
        let t0 = Instant::now();
        let mut c = Core::new(
            Settings {
                consecutive_failures: Some(2),
                ..settings()
            },
            t0,
        );
        let (old, _) = c.try_admit(t0);
        c.reset(t0);
        assert_eq!(c.record(old.unwrap(), ERR, || t0), None);
        assert_eq!(c.consecutive_failures(), 0);
    }

    #[test]
    fn released_probe_frees_its_slot() {
        let t0 = Instant::now();
        let mut c = Core::new(
            Settings {
                consecutive_failures: Some(1),
                permitted_probes: 1,
                ..settings()
            },
            t0,
        );
        call(&mut c, t0, ERR);
        let now = t0 + 100 * MS;
        let (p, _) = c.try_admit(now);
        let p = p.unwrap();
        assert_eq!(c.try_admit(now).0, Err(Refusal::HalfOpenFull));
        assert_eq!(c.readiness(now), Readiness::Unknown(None));
        assert!(c.release(p));
        assert_eq!(c.readiness(now), Readiness::Now);
        assert!(c.try_admit(now).0.is_ok());
    }

    #[test]
    fn half_open_deadline_reopens() {
        let t0 = Instant::now();
        let mut c = Core::new(
            Settings {
                consecutive_failures: Some(1),
                max_half_open_wait: Some(50 * MS),
                ..settings()
            },
            t0,
        );
        call(&mut c, t0, ERR);
        let now = t0 + 100 * MS;
        let (p, _) = c.try_admit(now);
        assert!(c.tick(now + 49 * MS).is_none());
        let tr = c.tick(now + 50 * MS).expect("re-opens");
        assert_eq!((tr.from, tr.to), (State::HalfOpen, State::Open));
        // The late probe's outcome belongs to a past epoch.
        assert!(c.record(p.unwrap(), OK, || now + 60 * MS).is_none());
        assert_eq!(c.state(), State::Open);
    }

    /// The closed-state path reads the clock only when something needs the
    /// time: never for a count window that does not trip, once for a trip
    /// (the open wait starts then), once per outcome for a time window.
    #[test]
    fn closed_outcomes_read_the_clock_only_when_needed() {
        use std::cell::Cell;
        let t0 = Instant::now();
        let reads = Cell::new(0);
        let now = || {
            reads.set(reads.get() + 1);
            t0
        };
        let mut c = Core::new(settings(), t0); // count window of 5, 50 %
        for r in [OK, OK, OK, OK, OK, OK, ERR, ERR] {
            let (t, _) = c.try_admit(t0);
            assert_eq!(c.record(t.unwrap(), r, now), None);
        }
        assert_eq!(reads.get(), 0, "count window, no trip");
        let (t, _) = c.try_admit(t0);
        let tr = c.record(t.unwrap(), ERR, now).expect("3 of 5 trips");
        assert_eq!((tr.to, reads.get()), (State::Open, 1));

        reads.set(0);
        let mut c = Core::new(
            Settings {
                window: WindowKind::Time {
                    length: Duration::from_secs(10),
                    buckets: 10,
                },
                ..settings()
            },
            t0,
        );
        for r in [OK, OK, ERR] {
            let (t, _) = c.try_admit(t0);
            assert_eq!(c.record(t.unwrap(), r, now), None);
        }
        assert_eq!(reads.get(), 3, "a time window needs each outcome's time");
    }

    #[test]
    fn base_wait_saturates() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            multiplier: 10.0,
            max: Duration::from_secs(3600),
            jitter: 0.0,
        };
        assert_eq!(b.base_wait(0), Duration::from_secs(1));
        assert_eq!(b.base_wait(3), Duration::from_secs(1000));
        assert_eq!(b.base_wait(u32::MAX), Duration::from_secs(3600));
    }
}
