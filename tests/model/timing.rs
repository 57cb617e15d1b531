//! Model checker for `flowguard::timing`, shared by `tests/prop_timing.rs`
//! and `fuzz/fuzz_targets/timing.rs`.
//!
//! The reference is lodash 4.17.21's `debounce`, transcribed line by line
//! (same variable names) over a simulated JavaScript timer queue. The real
//! [`DebounceCore`] is driven by the same op sequence; invocation times and
//! values, and the armed timer, must agree after every op.
//!
//! Time is whole milliseconds. `Advance(dt)` moves the clock to `now + dt`,
//! running every timer due *before* that instant (each at its own time);
//! `Tick` runs the timers due *at* the current instant. So `Advance(d), Call`
//! puts the call before a timer due at the same instant (the synchronous code
//! of a tick runs first) and `Advance(d), Tick, Call` after it.
//!
//! One deliberate deviation, also made by the real core: `flush` clears the
//! timer (lodash forgets `timerId` without `clearTimeout`).

#![allow(dead_code)]

use std::time::Duration;

use flowguard::timing::{DebounceCore, DebounceOptions, Step};
use tokio::time::Instant;

/// One step of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Start over with fresh instances with these options (milliseconds).
    Options {
        wait: u8,
        max_wait: Option<u8>,
        leading: bool,
        trailing: bool,
    },
    /// Move the clock forward, running timers due before the new instant.
    Advance(u8),
    /// Run the timers due at the current instant.
    Tick,
    /// `debounced(value)`.
    Call(u8),
    /// `debounced.flush()`.
    Flush,
    /// `debounced.cancel()`.
    Cancel,
}

/// Decodes arbitrary bytes into ops (two bytes per op; never fails).
pub(crate) fn ops_from_bytes(bytes: &[u8]) -> Vec<Op> {
    bytes
        .chunks(2)
        .map(|c| {
            let (a, b) = (c[0], c.get(1).copied().unwrap_or(0));
            match a % 16 {
                0 => Op::Options {
                    wait: b % 64,
                    max_wait: if a & 0x10 != 0 { Some(b / 2) } else { None },
                    leading: a & 0x20 != 0,
                    trailing: a & 0x40 == 0 || a & 0x20 == 0,
                },
                1..=4 => Op::Advance(b % 80),
                5 => Op::Tick,
                6..=12 => Op::Call(b),
                13 | 14 => Op::Flush,
                _ => Op::Cancel,
            }
        })
        .collect()
}

// ---- the reference: lodash's debounce, transcribed --------------------------

/// A JavaScript timer queue with a fake clock.
#[derive(Debug, Default)]
struct EventLoop {
    now: u64,
    next_id: u64,
    /// (fires at, timer id); ids grow, so (at, id) is the firing order.
    timers: Vec<(u64, u64)>,
}

impl EventLoop {
    fn set_timeout(&mut self, wait: u64) -> u64 {
        self.next_id += 1;
        self.timers.push((self.now + wait, self.next_id));
        self.next_id
    }

    fn clear_timeout(&mut self, id: u64) {
        self.timers.retain(|&(_, i)| i != id);
    }

    /// Removes and returns the next timer with `at < before` (or `<=` if inclusive).
    fn pop_due(&mut self, limit: u64, inclusive: bool) -> Option<(u64, u64)> {
        let (idx, &(at, id)) = self
            .timers
            .iter()
            .enumerate()
            .min_by_key(|&(_, &(at, id))| (at, id))?;
        if at < limit || (inclusive && at == limit) {
            self.timers.remove(idx);
            Some((at, id))
        } else {
            None
        }
    }
}

/// `debounce(func, wait, options)`'s closure state. `undefined` is `None`;
/// `lastInvokeTime` starts at 0 as in lodash (the model's clock starts at a
/// large offset so 0 is "long ago", as `Date.now()` is).
#[derive(Debug)]
struct Lodash {
    wait: u64,
    max_wait: Option<u64>,
    leading: bool,
    trailing: bool,
    last_args: Option<u8>,
    timer_id: Option<u64>,
    last_call_time: Option<u64>,
    last_invoke_time: u64,
    invoked: Vec<(u64, u8)>,
}

/// The model clock starts here, so `lastInvokeTime = 0` is far in the past.
const EPOCH: u64 = 1_000_000;

impl Lodash {
    fn new(wait: u64, max_wait: Option<u64>, leading: bool, trailing: bool) -> Self {
        Self {
            wait,
            // maxWait = nativeMax(toNumber(options.maxWait) || 0, wait)
            max_wait: max_wait.map(|m| m.max(wait)),
            leading,
            trailing,
            last_args: None,
            timer_id: None,
            last_call_time: None,
            last_invoke_time: 0,
            invoked: Vec::new(),
        }
    }

    fn invoke_func(&mut self, time: u64) {
        let args = self.last_args.take();
        self.last_invoke_time = time;
        if let Some(v) = args {
            self.invoked.push((time, v));
        }
    }

    fn leading_edge(&mut self, ev: &mut EventLoop, time: u64) {
        self.last_invoke_time = time;
        self.timer_id = Some(ev.set_timeout(self.wait));
        if self.leading {
            self.invoke_func(time);
        }
    }

    fn remaining_wait(&self, time: u64) -> u64 {
        let time_since_last_call = time - self.last_call_time.unwrap_or(0);
        let time_since_last_invoke = time - self.last_invoke_time;
        let time_waiting = self.wait - time_since_last_call;
        match self.max_wait {
            Some(m) => time_waiting.min(m - time_since_last_invoke),
            None => time_waiting,
        }
    }

    fn should_invoke(&self, time: u64) -> bool {
        let Some(last_call_time) = self.last_call_time else {
            return true;
        };
        let time_since_last_call = time as i64 - last_call_time as i64;
        let time_since_last_invoke = time - self.last_invoke_time;
        time_since_last_call >= self.wait as i64
            || time_since_last_call < 0
            || self.max_wait.is_some_and(|m| time_since_last_invoke >= m)
    }

    fn timer_expired(&mut self, ev: &mut EventLoop) {
        let time = ev.now;
        if self.should_invoke(time) {
            self.trailing_edge(time);
            return;
        }
        let remaining = self.remaining_wait(time);
        self.timer_id = Some(ev.set_timeout(remaining));
    }

    fn trailing_edge(&mut self, time: u64) {
        self.timer_id = None;
        if self.trailing && self.last_args.is_some() {
            self.invoke_func(time);
            return;
        }
        self.last_args = None;
    }

    fn cancel(&mut self, ev: &mut EventLoop) {
        if let Some(id) = self.timer_id {
            ev.clear_timeout(id);
        }
        self.last_invoke_time = 0;
        self.last_args = None;
        self.last_call_time = None;
        self.timer_id = None;
    }

    fn flush(&mut self, ev: &mut EventLoop) {
        if let Some(id) = self.timer_id {
            ev.clear_timeout(id); // the deviation: lodash leaves this timer armed
            self.trailing_edge(ev.now);
        }
    }

    fn debounced(&mut self, ev: &mut EventLoop, args: u8) {
        let time = ev.now;
        let is_invoking = self.should_invoke(time);
        self.last_args = Some(args);
        self.last_call_time = Some(time);
        if is_invoking {
            if self.timer_id.is_none() {
                self.leading_edge(ev, time);
                return;
            }
            if self.max_wait.is_some() {
                // Handle invocations in a tight loop.
                if let Some(id) = self.timer_id {
                    ev.clear_timeout(id);
                }
                self.timer_id = Some(ev.set_timeout(self.wait));
                self.invoke_func(time);
                return;
            }
        }
        if self.timer_id.is_none() {
            self.timer_id = Some(ev.set_timeout(self.wait));
        }
    }

    /// When the live timer fires, if armed.
    fn timer_at(&self, ev: &EventLoop) -> Option<u64> {
        let id = self.timer_id?;
        ev.timers.iter().find(|&&(_, i)| i == id).map(|&(at, _)| at)
    }
}

/// lodash's invocations `(ms, value)` for calls at the given offsets (ms,
/// non-decreasing) followed by `flush` at `end`, in the stream adapter's
/// order: the calls of an instant run before timers due at it, and the end
/// of the input comes before them too (see `TimingStreamExt`).
pub(crate) fn lodash_stream(
    (wait, max_wait, leading, trailing): (u8, Option<u8>, bool, bool),
    calls: &[(u64, u8)],
    end: u64,
) -> Vec<(u64, u8)> {
    let mut lodash = Lodash::new(u64::from(wait), max_wait.map(u64::from), leading, trailing);
    let mut ev = EventLoop {
        now: EPOCH,
        ..EventLoop::default()
    };
    let advance_to = |lodash: &mut Lodash, ev: &mut EventLoop, target: u64| {
        while let Some((at, id)) = ev.pop_due(target, false) {
            ev.now = at;
            if lodash.timer_id == Some(id) {
                lodash.timer_expired(ev);
            }
        }
        ev.now = target;
    };
    for &(at, v) in calls {
        advance_to(&mut lodash, &mut ev, EPOCH + at);
        lodash.debounced(&mut ev, v);
    }
    advance_to(&mut lodash, &mut ev, EPOCH + end);
    lodash.flush(&mut ev);
    lodash
        .invoked
        .iter()
        .map(|&(t, v)| (t - EPOCH, v))
        .collect()
}

// ---- the real core, driven the same way -------------------------------------

struct Real {
    t0: Instant,
    core: DebounceCore,
    latest: Option<u8>,
    invoked: Vec<(u64, u8)>,
}

impl Real {
    fn ms(&self, t: Instant) -> u64 {
        EPOCH + (t - self.t0).as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms - EPOCH)
    }

    fn record(&mut self, step: Step, now: u64) {
        match step {
            Step::Invoke => {
                let v = self.latest.take().expect("invoke without a value");
                self.invoked.push((now, v));
            }
            Step::Discard => self.latest = None,
            _ => {}
        }
    }

    /// Fires the timer while it is due before `limit` (or at it, if inclusive).
    fn run_timers(&mut self, limit: u64, inclusive: bool) {
        while let Some(d) = self.core.deadline() {
            let at = self.ms(d);
            if at < limit || (inclusive && at == limit) {
                let step = self.core.timer_fired(d);
                self.record(step, at);
            } else {
                break;
            }
        }
    }
}

/// Runs `ops` against lodash's algorithm and the real core; panics on the
/// first difference.
pub(crate) fn check(ops: &[Op]) {
    let t0 = Instant::now();
    let fresh = |wait: u8, max_wait: Option<u8>, leading: bool, trailing: bool| {
        let mut b = DebounceOptions::builder(Duration::from_millis(u64::from(wait)))
            .leading(leading)
            .trailing(trailing);
        if let Some(m) = max_wait {
            b = b.max_wait(Duration::from_millis(u64::from(m)));
        }
        let opts = b.build().ok()?;
        let lodash = Lodash::new(u64::from(wait), max_wait.map(u64::from), leading, trailing);
        Some((opts, lodash))
    };
    let (opts, mut lodash) = fresh(30, None, false, true).expect("default options");
    let mut ev = EventLoop {
        now: EPOCH,
        ..EventLoop::default()
    };
    let mut real = Real {
        t0,
        core: DebounceCore::new(opts),
        latest: None,
        invoked: Vec::new(),
    };

    for (i, &op) in ops.iter().enumerate() {
        match op {
            Op::Options {
                wait,
                max_wait,
                leading,
                trailing,
            } => {
                // Both edges off is refused by the builder; lodash would accept it.
                if let Some((opts, mut l)) = fresh(wait, max_wait, leading, trailing) {
                    assert!(leading || trailing);
                    l.invoked = std::mem::take(&mut lodash.invoked);
                    lodash = l;
                    ev.timers.clear();
                    real.core = DebounceCore::new(opts);
                    real.latest = None;
                }
            }
            Op::Advance(dt) => {
                let target = ev.now + u64::from(dt);
                while let Some((at, id)) = ev.pop_due(target, false) {
                    ev.now = at;
                    if lodash.timer_id == Some(id) {
                        lodash.timer_expired(&mut ev);
                    }
                }
                ev.now = target;
                real.run_timers(target, false);
            }
            Op::Tick => {
                while let Some((at, id)) = ev.pop_due(ev.now, true) {
                    ev.now = at;
                    if lodash.timer_id == Some(id) {
                        lodash.timer_expired(&mut ev);
                    }
                }
                real.run_timers(ev.now, true);
            }
            Op::Call(v) => {
                lodash.debounced(&mut ev, v);
                real.latest = Some(v);
                let step = real.core.call(real.at(ev.now));
                real.record(step, ev.now);
            }
            Op::Flush => {
                lodash.flush(&mut ev);
                let step = real.core.flush(real.at(ev.now));
                real.record(step, ev.now);
            }
            Op::Cancel => {
                lodash.cancel(&mut ev);
                let step = real.core.cancel();
                real.record(step, ev.now);
            }
        }
        assert_eq!(
            real.invoked, lodash.invoked,
            "invocations differ after op {i} ({op:?})"
        );
        assert_eq!(
            real.core.deadline().map(|d| real.ms(d)),
            lodash.timer_at(&ev),
            "armed timer differs after op {i} ({op:?})"
        );
        assert_eq!(
            real.core.has_value(),
            lodash.last_args.is_some(),
            "held value differs after op {i} ({op:?})"
        );
        assert_eq!(
            real.latest, lodash.last_args,
            "latest value differs after op {i} ({op:?})"
        );
    }
}
