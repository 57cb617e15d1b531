//! Model checker for `flowguard::rate::RedisRateLimiter`'s pure parts,
//! shared by `tests/prop_redis.rs` (proptest) and
//! `fuzz/fuzz_targets/redis.rs` (libfuzzer).
//!
//! The real limiter runs on a `MemoryStore` (the script's rule in Rust,
//! every reply encoded and decoded as from Redis) whose server clock is one
//! `ManualClock`, while the limiter reads another one set 10 s ahead: the
//! skew must change nothing. The reference is written from the
//! documentation alone, with no code shared with the crate:
//!
//! * the shared bucket as a plain token bucket of nanoseconds of credit
//!   (`credit = min(tau, credit + elapsed)`, `n` tokens cost `n * T`);
//! * the local reservation as a counter with an expiry: a round trip asks
//!   for at least the caller's tokens and up to `batch`, keeps at most
//!   `batch - 1`, and drops the ones it cannot keep or that expired;
//! * the failure policy: fail closed, fail open, or a local bucket with
//!   `T * replicas` and `max(1, burst / replicas)`;
//! * health: a connection or timeout failure stops the round trips until
//!   the probe interval has passed, then one call probes.
//!
//! After every op the two agree on the decision, the exact `retry_after`,
//! the tokens held, and every counter of `metrics()`.

#![allow(dead_code)]

use std::time::Duration;

use flowguard::clock::{Clock, ManualClock};
use flowguard::rate::{
    FailurePolicy, MemoryStore, Quota, RedisErrorKind, RedisMetrics, RedisRateLimiter,
    TryAcquireError,
};

/// The limiter under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cfg {
    pub(crate) rate: u32,
    pub(crate) period_ns: u64,
    pub(crate) burst: u32,
    /// Clamped to `1..=burst`.
    pub(crate) batch: u32,
    pub(crate) max_age_ns: u64,
    /// 0 fail closed, 1 fail open, else `LocalShare { replicas: policy - 1 }`.
    pub(crate) policy: u8,
    pub(crate) probe_ns: u64,
}

/// One step of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Both clocks move forward.
    Advance(u64),
    /// `try_acquire(n)`.
    Try(u32),
    /// Every store call fails from now on: 0 connection, 1 timeout, 2 server error.
    Fault(u8),
    /// The store answers again.
    Heal,
    /// The store forgets the script (`SCRIPT FLUSH`).
    FlushScripts,
    /// The store forgets the buckets (a restart without persistence).
    Clear,
}

/// Decodes arbitrary bytes into a configuration and a scenario.
pub(crate) fn case_from_bytes(bytes: &[u8]) -> (Cfg, Vec<Op>) {
    let g = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let burst = 1 + u32::from(g(2) % 8);
    let cfg = Cfg {
        rate: 1 + u32::from(g(0) % 8),
        period_ns: 1 + u64::from(g(1)) * 8,
        burst,
        batch: 1 + u32::from(g(3)) % burst,
        max_age_ns: 1 + u64::from(g(4)) * 16,
        policy: g(5) % 6,
        probe_ns: 1 + u64::from(g(6)) * 16,
    };
    let mut ops = Vec::new();
    let mut it = bytes.iter().skip(7).copied();
    while let Some(kind) = it.next() {
        let x = it.next().unwrap_or(0);
        ops.push(match kind % 10 {
            0..=2 => Op::Advance(u64::from(x) * 8),
            3..=6 => Op::Try(u32::from(x % 10)),
            7 => {
                if x % 3 == 0 {
                    Op::Heal
                } else {
                    Op::Fault(x % 3)
                }
            }
            8 => Op::FlushScripts,
            _ => Op::Clear,
        });
    }
    (cfg, ops)
}

/// A token bucket of nanoseconds of credit, refilled one per nanosecond.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    t: i128,
    tau: i128,
    credit: i128,
}

impl Bucket {
    fn new(t: u64, burst: u32) -> Self {
        let t = i128::from(t);
        let tau = t * i128::from(burst);
        Self {
            t,
            tau,
            credit: tau,
        }
    }
    fn advance(&mut self, dt: u64) {
        self.credit = (self.credit + i128::from(dt)).min(self.tau);
    }
    fn whole(&self) -> i128 {
        self.credit / self.t
    }
    /// Takes `need..=want` tokens (as many as there are), or the wait for `need`.
    fn take(&mut self, need: u32, want: u32) -> Result<u32, u64> {
        let whole = self.whole();
        if whole < i128::from(need) {
            return Err((i128::from(need) * self.t - self.credit) as u64);
        }
        let grant = whole.min(i128::from(want)) as u32;
        self.credit -= i128::from(grant) * self.t;
        Ok(grant)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    calls: u64,
    admitted: u64,
    refused: u64,
    round_trips: u64,
    redis_errors: u64,
    timeouts: u64,
    fallbacks: u64,
    script_loads: u64,
    hits: u64,
    wasted: u64,
}

struct Reference {
    cfg: Cfg,
    t: u64,
    burst: u32,
    now: u64,
    redis: Bucket,
    local: Option<Bucket>,
    batch: u32,
    held: u32,
    expires_at: u64,
    fault: Option<RedisErrorKind>,
    script_cached: bool,
    down: Option<RedisErrorKind>,
    next_probe: u64,
    c: Counts,
}

#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    Wait(u64),
    Insufficient,
    Unavailable(RedisErrorKind),
}

impl Reference {
    fn new(cfg: Cfg, t: u64, burst: u32) -> Self {
        let replicas = u32::from(cfg.policy.saturating_sub(1));
        Self {
            cfg,
            t,
            burst,
            now: 0,
            redis: Bucket::new(t, burst),
            local: (cfg.policy >= 2)
                .then(|| Bucket::new(t * u64::from(replicas), (burst / replicas).max(1))),
            batch: cfg.batch.clamp(1, burst),
            held: 0,
            expires_at: 0,
            fault: None,
            script_cached: true,
            down: None,
            next_probe: 0,
            c: Counts::default(),
        }
    }

    fn advance(&mut self, dt: u64) {
        self.now += dt;
        self.redis.advance(dt);
        if let Some(l) = &mut self.local {
            l.advance(dt);
        }
    }

    fn keep(&mut self, tokens: u32) {
        let room = (self.batch - 1).saturating_sub(self.held);
        let kept = tokens.min(room);
        self.c.wasted += u64::from(tokens - kept);
        self.held += kept;
    }

    fn try_acquire(&mut self, n: u32) -> Answer {
        self.c.calls += 1;
        let a = self.decide(n);
        if a == Answer::Ok {
            self.c.admitted += 1;
        } else {
            self.c.refused += 1;
        }
        a
    }

    fn decide(&mut self, n: u32) -> Answer {
        if n == 0 {
            return Answer::Ok;
        }
        if n > self.burst {
            return Answer::Insufficient;
        }
        if self.held > 0 && self.now >= self.expires_at {
            self.c.wasted += u64::from(self.held);
            self.held = 0;
        }
        if self.held >= n {
            self.held -= n;
            self.c.hits += 1;
            return Answer::Ok;
        }
        let borrowed = std::mem::take(&mut self.held);
        let give_back = |r: &mut Self| {
            if borrowed > 0 {
                if r.now >= r.expires_at {
                    r.c.wasted += u64::from(borrowed);
                } else {
                    r.keep(borrowed);
                }
            }
        };
        // Known down and not yet time to probe: the policy answers.
        let skipped = match self.down {
            Some(cause) if self.now < self.next_probe => Some(cause),
            Some(_) => {
                self.next_probe = self.now + self.cfg.probe_ns;
                None
            }
            None => None,
        };
        let cause = match skipped {
            Some(cause) => cause,
            None => {
                self.c.round_trips += 1;
                match self.fault {
                    Some(kind) => {
                        self.c.redis_errors += 1;
                        if kind == RedisErrorKind::Timeout {
                            self.c.timeouts += 1;
                        }
                        if kind != RedisErrorKind::Server {
                            self.down = Some(kind);
                            self.next_probe = self.now + self.cfg.probe_ns;
                        }
                        kind
                    }
                    None => {
                        self.down = None;
                        if !std::mem::replace(&mut self.script_cached, true) {
                            self.c.script_loads += 1;
                        }
                        let need = n - borrowed;
                        let want = n.max(self.batch).min(self.burst) - borrowed;
                        return match self.redis.take(need, want) {
                            Ok(grant) => {
                                let rest = borrowed + grant - n;
                                if rest > 0 {
                                    self.expires_at = self.now + self.cfg.max_age_ns;
                                    self.keep(rest);
                                }
                                Answer::Ok
                            }
                            Err(wait) => {
                                give_back(self);
                                Answer::Wait(wait)
                            }
                        };
                    }
                }
            }
        };
        give_back(self);
        self.c.fallbacks += 1;
        match self.cfg.policy {
            0 => Answer::Unavailable(cause),
            1 => Answer::Ok,
            _ => {
                let local = self.local.as_mut().expect("LocalShare has a local bucket");
                if i128::from(n) * local.t > local.tau {
                    // Above the share's burst: only Redis could serve it.
                    return Answer::Unavailable(cause);
                }
                match local.take(n, n) {
                    Ok(_) => Answer::Ok,
                    Err(wait) => Answer::Wait(wait),
                }
            }
        }
    }

    fn metrics_match(&self, m: &RedisMetrics) -> bool {
        let c = &self.c;
        (
            m.calls,
            m.admitted,
            m.refused,
            m.round_trips,
            m.redis_errors,
            m.timeouts,
            m.fallbacks,
            m.script_loads,
            m.reservation_hits,
            m.reservation_wasted,
            m.redis_healthy,
        ) == (
            c.calls,
            c.admitted,
            c.refused,
            c.round_trips,
            c.redis_errors,
            c.timeouts,
            c.fallbacks,
            c.script_loads,
            c.hits,
            c.wasted,
            self.down.is_none(),
        )
    }
}

/// Runs `ops` on a real limiter and on the reference; panics on the first
/// difference. Configurations the builder refuses are skipped.
pub(crate) fn check(cfg: Cfg, ops: &[Op]) {
    let Ok(quota) = Quota::with_period(cfg.rate, Duration::from_nanos(cfg.period_ns))
        .and_then(|q| q.with_burst(cfg.burst))
    else {
        return;
    };
    let server = ManualClock::new();
    let local = ManualClock::new();
    local.advance(Duration::from_secs(10)); // a replica whose clock is 10 s off
    let store = MemoryStore::with_clock(server.clone());
    let policy = match cfg.policy {
        0 => FailurePolicy::FailClosed,
        1 => FailurePolicy::FailOpen,
        p => FailurePolicy::LocalShare {
            replicas: u32::from(p - 1),
        },
    };
    let batch = cfg.batch.clamp(1, quota.burst());
    let limiter = RedisRateLimiter::builder_in_memory(&store, "model", quota)
        .failure_policy(policy)
        .probe_interval(Duration::from_nanos(cfg.probe_ns))
        .local_reservation(batch, Duration::from_nanos(cfg.max_age_ns))
        .clock(local.clone())
        .build()
        .expect("a valid configuration builds");
    let t = quota.emission_interval().as_nanos() as u64;
    let mut reference = Reference::new(cfg, t, quota.burst());
    if let Some(share) = limiter.fallback_quota() {
        let r = u64::from(cfg.policy - 1);
        assert_eq!(share.emission_interval().as_nanos() as u64, t * r);
        assert_eq!(share.burst(), (quota.burst() / (r as u32)).max(1));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Advance(dt) => {
                server.advance(Duration::from_nanos(dt));
                local.advance(Duration::from_nanos(dt));
                reference.advance(dt);
            }
            Op::Try(n) => {
                let got = rt.block_on(limiter.try_acquire(n));
                let want = reference.try_acquire(n);
                let got = match got {
                    Ok(()) => Answer::Ok,
                    Err(TryAcquireError::NotUntil { retry_after }) => {
                        Answer::Wait((retry_after - local.now()).as_nanos() as u64)
                    }
                    Err(TryAcquireError::InsufficientCapacity { requested, burst }) => {
                        assert_eq!((requested, burst), (n, quota.burst()));
                        Answer::Insufficient
                    }
                    Err(TryAcquireError::Unavailable { cause }) => Answer::Unavailable(cause),
                    Err(e) => panic!("op {i}: unexpected {e:?}"),
                };
                assert_eq!(got, want, "op {i} {op:?} of {ops:?} with {cfg:?}");
            }
            Op::Fault(k) => {
                let kind = [
                    RedisErrorKind::Connection,
                    RedisErrorKind::Timeout,
                    RedisErrorKind::Server,
                ][usize::from(k % 3)];
                store.set_fault(Some(kind));
                reference.fault = Some(kind);
            }
            Op::Heal => {
                store.set_fault(None);
                reference.fault = None;
            }
            Op::FlushScripts => {
                store.flush_scripts();
                reference.script_cached = false;
            }
            Op::Clear => {
                store.clear();
                reference.redis = Bucket::new(t, quota.burst());
            }
        }
        assert_eq!(
            limiter.reserved(),
            reference.held,
            "op {i} {op:?} of {ops:?}"
        );
        let m = limiter.metrics();
        assert!(
            reference.metrics_match(&m),
            "op {i} {op:?}: metrics {m:?} vs reference {:?} (down {:?}) with {cfg:?}",
            reference.c,
            reference.down
        );
        assert_eq!(m.calls, m.admitted + m.refused);
        assert!(limiter.reserved() < batch.max(1));
    }
}
