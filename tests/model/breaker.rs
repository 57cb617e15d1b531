//! Model checker for `CircuitBreaker`, shared by `tests/prop_breaker.rs` and
//! the fuzz target `fuzz/fuzz_targets/breaker.rs`.
//!
//! The reference model is deliberately naive: it keeps every outcome since
//! the window was last emptied in a plain list and recounts the window from
//! it on every question (the last N entries, or the entries whose bucket is
//! within `buckets - 1` of now's), keeps probes in a list, and has no state
//! word, no epochs in atomics, no lazy clock reads. The real breaker runs on
//! a `ManualClock`; after every op the two must agree on every observable:
//! each admission or refusal (with its exact `retry_after`), state, window
//! counts and rates, consecutive failures, probes in flight, re-opens,
//! refusals and transitions.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use flowguard::breaker::{BreakerMetrics, CallPermit, CircuitBreaker, Rejected, State};
use flowguard::clock::{Clock, ManualClock};
use tokio::time::Instant;

/// The breaker's configuration, small enough to explore.
#[derive(Debug, Clone)]
pub struct Cfg {
    /// `Some(size)`: count window; `None`: time window.
    pub count_window: Option<u32>,
    /// Time window: bucket width and bucket count.
    pub bucket_ms: u64,
    pub buckets: u32,
    pub minimum_calls: u32,
    /// Whole percentages.
    pub failure_rate: Option<u32>,
    pub slow_rate: Option<u32>,
    pub slow_ms: u64,
    pub consecutive: Option<u32>,
    pub wait_ms: u64,
    pub multiplier: u32,
    pub max_wait_ms: u64,
    pub probes: u32,
    pub max_half_open_ms: Option<u64>,
}

/// One step applied to both the real breaker and the model.
#[derive(Debug, Clone)]
pub enum Op {
    /// Move the clock forward.
    Advance(u64),
    /// `try_acquire()` and hold the permit (at most 6 held).
    Acquire,
    /// Finish the i-th held permit: 0 success, 1 failure, 2 ignore, 3 drop.
    Finish(usize, u8),
    /// Acquire, let `ms` pass, report.
    Call {
        failure: bool,
        ms: u64,
    },
    /// `next_ready_at()` (applies the half-open deadline).
    NextReady,
    ForceOpen,
    Disable,
    Reset,
}

const MAX_HELD: usize = 6;

/// Decodes fuzzer bytes: 13 bytes of configuration, then two bytes per op.
pub fn cfg_and_ops_from_bytes(data: &[u8]) -> Option<(Cfg, Vec<Op>)> {
    if data.len() < 13 {
        return None;
    }
    let (c, rest) = data.split_at(13);
    let pick = |b: u8, opts: &[u32]| opts[b as usize % opts.len()];
    let mut cfg = Cfg {
        count_window: (c[0] % 3 != 0).then(|| 1 + u32::from(c[0]) % 6),
        bucket_ms: 1 + u64::from(c[1]) * 2,
        buckets: 1 + u32::from(c[2]) % 4,
        minimum_calls: 1 + u32::from(c[3]) % 6,
        failure_rate: (c[4] % 4 != 0).then(|| pick(c[4] / 4, &[20, 25, 50, 60, 100])),
        slow_rate: (c[5] % 2 == 0).then(|| pick(c[5] / 2, &[34, 50, 100])),
        slow_ms: 1 + u64::from(c[6]),
        consecutive: (c[7] % 2 == 0).then(|| 1 + u32::from(c[7] / 2) % 4),
        wait_ms: 1 + u64::from(c[8]) * 4,
        multiplier: 1 + u32::from(c[9]) % 3,
        max_wait_ms: 0,
        probes: 1 + u32::from(c[10]) % 3,
        max_half_open_ms: (c[11] % 2 == 0).then(|| 1 + u64::from(c[11]) * 8),
    };
    cfg.max_wait_ms = cfg.wait_ms * (1 + u64::from(c[12]) % 8);
    let ops = ops_from_bytes(rest);
    Some((cfg, ops))
}

/// Decodes fuzzer bytes into ops, two bytes each.
pub fn ops_from_bytes(data: &[u8]) -> Vec<Op> {
    data.chunks_exact(2)
        .map(|c| {
            let arg = c[1];
            match c[0] % 16 {
                0..=2 => Op::Advance(u64::from(arg) * 8),
                3..=5 => Op::Acquire,
                6..=8 => Op::Finish(usize::from(arg), arg % 4),
                9..=12 => Op::Call {
                    failure: arg % 2 == 0,
                    ms: u64::from(arg / 2) * 4,
                },
                13 => Op::NextReady,
                14 => match arg % 8 {
                    0 => Op::ForceOpen,
                    1 => Op::Disable,
                    2 => Op::Reset,
                    _ => Op::NextReady,
                },
                _ => Op::Advance(u64::from(arg)),
            }
        })
        .collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Closed,
    Probe,
    Untracked,
}

#[derive(Debug, Clone, Copy)]
struct Ticket {
    epoch: u64,
    kind: Kind,
    start: Instant,
}

/// The naive reference breaker.
struct Model {
    cfg: Cfg,
    origin: Instant,
    state: State,
    /// Admissions carry it; outcomes from an earlier epoch are dropped.
    epoch: u64,
    /// State changes (`from != to`) so far.
    transitions: u64,
    /// Every closed-state outcome since the window was emptied: (time, failure, slow).
    log: Vec<(Instant, bool, bool)>,
    consecutive: u32,
    open_until: Instant,
    reopens: u32,
    in_flight: u32,
    probe_log: Vec<(bool, bool)>,
    /// Open after a re-open: `probe_log` still holds the probes, and the
    /// metrics show them (resilience4j's `OpenState` keeps the metrics of
    /// the state it opened from).
    reopened: bool,
    half_open_since: Instant,
    refused: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Counts {
    calls: u64,
    failures: u64,
    slow: u64,
}

impl Model {
    fn window(&self, now: Instant) -> Counts {
        let mut c = Counts::default();
        let mut add = |f: bool, s: bool| {
            c.calls += 1;
            c.failures += u64::from(f);
            c.slow += u64::from(s);
        };
        match self.cfg.count_window {
            Some(n) => {
                for (_, f, s) in self.log.iter().rev().take(n as usize) {
                    add(*f, *s);
                }
            }
            None => {
                let width = ms(self.cfg.bucket_ms).as_nanos();
                let idx = |t: Instant| (t - self.origin).as_nanos() / width;
                for (t, f, s) in &self.log {
                    if idx(now) - idx(*t) < u128::from(self.cfg.buckets) {
                        add(*f, *s);
                    }
                }
            }
        }
        c
    }

    fn minimum(&self) -> u64 {
        u64::from(match self.cfg.count_window {
            Some(n) => self.cfg.minimum_calls.min(n),
            None => self.cfg.minimum_calls,
        })
    }

    fn at_least(part: u64, calls: u64, pct: u32) -> bool {
        calls > 0 && part * 100 >= u64::from(pct) * calls
    }

    fn expired(&self, now: Instant) -> bool {
        self.cfg
            .max_half_open_ms
            .is_some_and(|m| now >= self.half_open_since + ms(m))
    }

    fn go(&mut self, to: State) {
        assert_ne!(self.state, to, "model: a transition changes the state");
        self.state = to;
        self.epoch += 1;
        self.transitions += 1;
    }

    /// `force_open()` / `disable()`: nothing at all when in `to` already.
    fn manual(&mut self, to: State) {
        if self.state != to {
            // resilience4j's manual states start with fresh metrics.
            self.clear_closed();
            self.go(to);
        }
    }

    /// `reset()`: always empties; a transition only from another state, a
    /// new epoch either way.
    fn reset(&mut self) {
        self.reopens = 0;
        self.clear_closed();
        if self.state == State::Closed {
            self.epoch += 1;
        } else {
            self.go(State::Closed);
        }
    }

    fn open(&mut self, now: Instant) {
        self.reopened = self.state == State::HalfOpen;
        if self.reopened {
            self.reopens += 1;
        } else {
            self.probe_log.clear();
        }
        let mut wait = self.cfg.wait_ms;
        for _ in 0..self.reopens {
            wait = (wait * u64::from(self.cfg.multiplier)).min(self.cfg.max_wait_ms);
        }
        self.open_until = now + ms(wait.min(self.cfg.max_wait_ms));
        self.in_flight = 0;
        self.go(State::Open);
    }

    fn clear_closed(&mut self) {
        self.log.clear();
        self.consecutive = 0;
        self.in_flight = 0;
        self.probe_log.clear();
    }

    fn admit(&mut self, now: Instant) -> Result<Kind, Rejected> {
        let r = self.admit_inner(now);
        if r.is_err() {
            self.refused += 1;
        }
        r
    }

    fn admit_inner(&mut self, now: Instant) -> Result<Kind, Rejected> {
        match self.state {
            State::Closed => return Ok(Kind::Closed),
            State::Disabled => return Ok(Kind::Untracked),
            State::ForcedOpen => return Err(Rejected::ForcedOpen),
            State::Open => {
                if now < self.open_until {
                    return Err(Rejected::Open {
                        retry_after: self.open_until - now,
                    });
                }
                self.in_flight = 0;
                self.probe_log.clear();
                self.half_open_since = now;
                self.go(State::HalfOpen);
            }
            State::HalfOpen => {
                if self.expired(now) {
                    self.open(now);
                    return Err(Rejected::Open {
                        retry_after: self.open_until - now,
                    });
                }
            }
            _ => unreachable!(),
        }
        if (self.in_flight as usize + self.probe_log.len()) < self.cfg.probes as usize {
            self.in_flight += 1;
            Ok(Kind::Probe)
        } else {
            Err(Rejected::HalfOpenFull)
        }
    }

    fn finish(&mut self, t: Ticket, failure: Option<bool>, now: Instant) {
        let current = t.epoch == self.epoch;
        let Some(failure) = failure else {
            if current && t.kind == Kind::Probe && self.state == State::HalfOpen {
                self.in_flight -= 1;
            }
            return;
        };
        if !current {
            return;
        }
        let slow = self.cfg.slow_rate.is_some() && now - t.start > ms(self.cfg.slow_ms);
        match (self.state, t.kind) {
            (State::Closed, Kind::Closed) => {
                self.log.push((now, failure, slow));
                self.consecutive = if failure { self.consecutive + 1 } else { 0 };
                let c = self.window(now);
                let trip = self.cfg.consecutive.is_some_and(|n| self.consecutive >= n)
                    || (c.calls >= self.minimum()
                        && (self
                            .cfg
                            .failure_rate
                            .is_some_and(|p| Self::at_least(c.failures, c.calls, p))
                            || self
                                .cfg
                                .slow_rate
                                .is_some_and(|p| Self::at_least(c.slow, c.calls, p))));
                if trip {
                    self.open(now);
                }
            }
            (State::HalfOpen, Kind::Probe) => {
                self.in_flight -= 1;
                if self.expired(now) {
                    self.open(now);
                    return;
                }
                self.probe_log.push((failure, slow));
                if self.probe_log.len() < self.cfg.probes as usize {
                    return;
                }
                let calls = self.probe_log.len() as u64;
                let fails = self.probe_log.iter().filter(|p| p.0).count() as u64;
                let slows = self.probe_log.iter().filter(|p| p.1).count() as u64;
                let failing = match (self.cfg.failure_rate, self.cfg.consecutive) {
                    (Some(p), _) => Self::at_least(fails, calls, p),
                    (None, Some(_)) => fails > 0,
                    (None, None) => false,
                };
                let slowing = self
                    .cfg
                    .slow_rate
                    .is_some_and(|p| Self::at_least(slows, calls, p));
                if failing || slowing {
                    self.open(now);
                } else {
                    self.reopens = 0;
                    self.clear_closed();
                    self.go(State::Closed);
                }
            }
            _ => {}
        }
    }

    fn next_ready(&mut self, now: Instant) -> Option<Instant> {
        if self.state == State::HalfOpen && self.expired(now) {
            self.open(now);
        }
        match self.state {
            State::Closed | State::Disabled => Some(now),
            State::Open => Some(self.open_until.max(now)),
            State::HalfOpen => ((self.in_flight as usize + self.probe_log.len())
                < self.cfg.probes as usize)
                .then_some(now),
            _ => None,
        }
    }

    fn metrics(&self, now: Instant) -> (State, Counts, bool, u32, u32, u32, u64, u64) {
        let probes_shown =
            self.state == State::HalfOpen || (self.state == State::Open && self.reopened);
        let (c, enough) = if probes_shown {
            let mut c = Counts::default();
            for (f, s) in &self.probe_log {
                c.calls += 1;
                c.failures += u64::from(*f);
                c.slow += u64::from(*s);
            }
            (c, c.calls >= u64::from(self.cfg.probes))
        } else {
            let c = self.window(now);
            (c, c.calls >= self.minimum())
        };
        (
            self.state,
            c,
            enough,
            self.consecutive,
            self.in_flight,
            self.reopens,
            self.refused,
            self.transitions,
        )
    }
}

fn build(cfg: &Cfg, clock: ManualClock) -> CircuitBreaker<ManualClock> {
    let mut b = CircuitBreaker::builder()
        .minimum_calls(cfg.minimum_calls)
        .slow_call_duration_threshold(ms(cfg.slow_ms))
        .open_wait(ms(cfg.wait_ms))
        .open_backoff(f64::from(cfg.multiplier), ms(cfg.max_wait_ms))
        .permitted_probes(cfg.probes);
    b = match cfg.count_window {
        Some(n) => b.count_window(n),
        None => b.time_window(ms(cfg.bucket_ms * u64::from(cfg.buckets)), cfg.buckets),
    };
    b = match cfg.failure_rate {
        Some(p) => b.failure_rate_threshold(f64::from(p)),
        None => b.without_failure_rate(),
    };
    b = match cfg.slow_rate {
        Some(p) => b.slow_call_rate_threshold(f64::from(p)),
        None => b.without_slow_call_rate(),
    };
    if let Some(n) = cfg.consecutive {
        b = b.consecutive_failures(n);
    }
    if let Some(m) = cfg.max_half_open_ms {
        b = b.max_half_open_wait(ms(m));
    }
    b.build_with_clock(clock).expect("model configs are valid")
}

fn normalise(cfg: &Cfg) -> Cfg {
    let mut cfg = cfg.clone();
    if cfg.failure_rate.is_none() && cfg.slow_rate.is_none() && cfg.consecutive.is_none() {
        cfg.consecutive = Some(1);
    }
    cfg
}

fn compare(real: &BreakerMetrics, model: &Model, now: Instant, step: usize, op: &Op) {
    let (state, c, enough, consecutive, in_flight, reopens, refused, transitions) =
        model.metrics(now);
    let pct = |part: u64| (enough && c.calls > 0).then(|| part as f64 * 100.0 / c.calls as f64);
    let want = (
        state,
        c.calls,
        c.failures,
        c.slow,
        pct(c.failures),
        pct(c.slow),
        consecutive,
        in_flight,
        reopens,
        refused,
        transitions,
    );
    let got = (
        real.state,
        real.calls,
        real.failed_calls,
        real.slow_calls,
        real.failure_rate,
        real.slow_call_rate,
        real.consecutive_failures,
        real.probes_in_flight,
        real.reopens,
        real.refused,
        real.transitions,
    );
    assert_eq!(got, want, "after step {step} ({op:?})");
}

/// Runs `ops` against the real breaker and the model; panics on the first
/// disagreement.
pub fn check(cfg: &Cfg, ops: &[Op]) {
    let cfg = normalise(cfg);
    let clock = ManualClock::new();
    let breaker = build(&cfg, clock.clone());
    let origin = clock.now();
    let mut model = Model {
        cfg: cfg.clone(),
        origin,
        state: State::Closed,
        epoch: 0,
        transitions: 0,
        log: Vec::new(),
        consecutive: 0,
        open_until: origin,
        reopens: 0,
        in_flight: 0,
        probe_log: Vec::new(),
        reopened: false,
        half_open_since: origin,
        refused: 0,
    };
    let mut held: Vec<(CallPermit<'_, ManualClock>, Ticket)> = Vec::new();

    fn acquire<'a>(
        breaker: &'a CircuitBreaker<ManualClock>,
        model: &mut Model,
        now: Instant,
        step: usize,
    ) -> Option<(CallPermit<'a, ManualClock>, Ticket)> {
        let real = breaker.try_acquire();
        let want = model.admit(now);
        match (real, want) {
            (Ok(p), Ok(kind)) => {
                assert_eq!(p.is_probe(), kind == Kind::Probe, "step {step}");
                Some((
                    p,
                    Ticket {
                        epoch: model.epoch,
                        kind,
                        start: now,
                    },
                ))
            }
            (Err(r), Err(w)) => {
                assert_eq!(r, w, "refusal at step {step}");
                None
            }
            (r, w) => panic!("step {step}: real {r:?}, model {w:?}"),
        }
    }

    fn finish(
        breaker_permit: CallPermit<'_, ManualClock>,
        t: Ticket,
        how: u8,
        model: &mut Model,
        now: Instant,
    ) {
        match how % 4 {
            0 => {
                breaker_permit.success();
                model.finish(t, Some(false), now);
            }
            1 => {
                breaker_permit.failure();
                model.finish(t, Some(true), now);
            }
            2 => {
                breaker_permit.ignore();
                model.finish(t, None, now);
            }
            _ => {
                drop(breaker_permit);
                model.finish(t, None, now);
            }
        }
    }

    for (step, op) in ops.iter().enumerate() {
        let now = clock.now();
        match *op {
            Op::Advance(n) => clock.advance(ms(n)),
            Op::Acquire => {
                if held.len() < MAX_HELD {
                    if let Some(p) = acquire(&breaker, &mut model, now, step) {
                        held.push(p);
                    }
                }
            }
            Op::Finish(i, how) => {
                if !held.is_empty() {
                    let (p, t) = held.remove(i % held.len());
                    finish(p, t, how, &mut model, now);
                }
            }
            Op::Call { failure, ms: d } => {
                if let Some((p, t)) = acquire(&breaker, &mut model, now, step) {
                    clock.advance(ms(d));
                    finish(p, t, u8::from(failure), &mut model, clock.now());
                }
            }
            Op::NextReady => {
                assert_eq!(
                    breaker.next_ready_at(),
                    model.next_ready(now),
                    "step {step}"
                );
            }
            Op::ForceOpen => {
                breaker.force_open();
                model.manual(State::ForcedOpen);
            }
            Op::Disable => {
                breaker.disable();
                model.manual(State::Disabled);
            }
            Op::Reset => {
                breaker.reset();
                model.reset();
            }
        }
        let now = clock.now();
        compare(&breaker.metrics(), &model, now, step, op);
        assert_eq!(breaker.state(), model.state, "state word after step {step}");
    }
    // Dropping every held permit must leave no probe slot taken.
    held.clear();
    assert_eq!(breaker.metrics().probes_in_flight, 0);
}
