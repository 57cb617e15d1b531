//! Model checker for `flowguard::rate`, shared by `tests/prop_rate.rs`
//! (proptest) and `fuzz/fuzz_targets/rate.rs` (libfuzzer).
//!
//! The real limiters run on a `ManualClock`; the reference is a plain token
//! bucket in exact rational arithmetic (tokens are fractions, refilled at
//! `1 / T` per nanosecond, capped at the burst). After every op the two must
//! agree on: the admitted set, the exact retry-after instant of every
//! refusal, the tokens available and the next token's arrival. At the end,
//! over every window of admissions, admitted <= burst + rate * window +
//! refunds (with the *stated* rate `n / period`, not the rounded one).
//!
//! `set_quota` is checked against the documented carry-over rule: the
//! tokens available carry over, capped at the new burst, and the missing
//! ones are stored as a whole number of nanoseconds of debt, rounded up
//! (towards less credit). Re-applying the quota in force is the identity.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use flowguard::clock::{Clock, ManualClock};
use flowguard::rate::{KeyedRateLimiter, Quota, RateLimiter, TryAcquireError};

/// One step of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Replace both limiters with fresh ones: `rate` tokens per `period_ns`, burst `burst`.
    Start {
        rate: u32,
        period_ns: u64,
        burst: u32,
    },
    /// Move the clock forward.
    Advance(u64),
    /// `try_acquire(n)` on the plain limiter.
    TryAcquire(u32),
    /// `refund(n)` on the plain limiter.
    Refund(u32),
    /// `try_acquire(&key, n)` on the keyed limiter.
    KeyedTryAcquire(u8, u32),
    /// `refund(&key, n)` on the keyed limiter.
    KeyedRefund(u8, u32),
    /// Compare `snapshot()` with the reference.
    Snapshot,
    /// `set_quota` on the plain limiter: `rate` per `period_ns`, burst `burst`.
    SetQuota {
        rate: u32,
        period_ns: u64,
        burst: u32,
    },
    /// `set_quota(quota())` on the plain limiter: must change nothing.
    Reapply,
}

/// Decodes arbitrary bytes into a scenario (never fails).
pub(crate) fn ops_from_bytes(bytes: &[u8]) -> Vec<Op> {
    let mut it = bytes.iter().copied();
    let mut next = move || it.next();
    let mut ops = Vec::new();
    while let Some(kind) = next() {
        let x = next().unwrap_or(0);
        let op = match kind % 8 {
            0 => {
                let y = next().unwrap_or(0);
                let z = next().unwrap_or(0);
                Op::Start {
                    rate: 1 + u32::from(x % 8),
                    period_ns: 1 + u64::from(y) * (1 + u64::from(z % 8)),
                    burst: 1 + u32::from(z / 8 % 8),
                }
            }
            1 | 2 => Op::Advance(u64::from(x) * 4),
            3 => Op::TryAcquire(u32::from(x % 11)),
            4 => Op::Refund(u32::from(x % 5)),
            5 => Op::KeyedTryAcquire(x % 4, u32::from(x / 4 % 11)),
            6 => Op::KeyedRefund(x % 4, u32::from(x / 4 % 5)),
            _ => match x % 4 {
                0 => Op::Snapshot,
                1 | 2 => {
                    let y = next().unwrap_or(0);
                    let z = next().unwrap_or(0);
                    Op::SetQuota {
                        rate: 1 + u32::from(x / 4 % 8),
                        period_ns: 1 + u64::from(y) * (1 + u64::from(z % 8)),
                        burst: 1 + u32::from(z / 8 % 8),
                    }
                }
                _ => Op::Reapply,
            },
        };
        ops.push(op);
    }
    ops
}

/// An exact fraction `n / d`, `d > 0`, kept reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Q {
    n: i128,
    d: i128,
}

fn gcd(a: i128, b: i128) -> i128 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

impl Q {
    fn new(n: i128, d: i128) -> Q {
        let g = gcd(n, d);
        let s = if d < 0 { -1 } else { 1 };
        Q {
            n: s * n / g,
            d: s * d / g,
        }
    }
    fn int(n: i128) -> Q {
        Q { n, d: 1 }
    }
    fn add(self, o: Q) -> Q {
        Q::new(self.n * o.d + o.n * self.d, self.d * o.d)
    }
    fn sub(self, o: Q) -> Q {
        Q::new(self.n * o.d - o.n * self.d, self.d * o.d)
    }
    fn mul(self, o: Q) -> Q {
        Q::new(self.n * o.n, self.d * o.d)
    }
    fn min(self, o: Q) -> Q {
        if self.le(o) { self } else { o }
    }
    fn le(self, o: Q) -> bool {
        self.n * o.d <= o.n * self.d
    }
    fn floor(self) -> i128 {
        self.n.div_euclid(self.d)
    }
    fn ceil(self) -> i128 {
        -(-self.n).div_euclid(self.d)
    }
}

/// The reference: a token bucket with fractional tokens.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: Q,
    at: u64,
}

#[derive(Debug, Clone, Copy)]
struct Ref {
    /// nanoseconds per token, as a fraction (the limiter's rounded interval).
    t: Q,
    burst: u32,
}

impl Ref {
    fn refill(&self, b: &mut Bucket, now: u64) {
        let dt = Q::int(i128::from(now - b.at));
        b.tokens = b
            .tokens
            .add(dt.mul(Q::new(self.t.d, self.t.n)))
            .min(Q::int(i128::from(self.burst)));
        b.at = now;
    }
    /// Ok, or Err(Some(retry_at_ns)), or Err(None) for never.
    fn take(&self, b: &mut Bucket, now: u64, n: u32) -> Result<(), Option<u64>> {
        if n == 0 {
            return Ok(());
        }
        if n > self.burst {
            return Err(None);
        }
        self.refill(b, now);
        let want = Q::int(i128::from(n));
        if want.le(b.tokens) {
            b.tokens = b.tokens.sub(want);
            Ok(())
        } else {
            let wait = want.sub(b.tokens).mul(self.t);
            assert_eq!(wait.d, 1, "retry instant is a whole nanosecond");
            Err(Some(now + wait.n as u64))
        }
    }
    fn refund(&self, b: &mut Bucket, now: u64, n: u32) {
        self.refill(b, now);
        b.tokens = b
            .tokens
            .add(Q::int(i128::from(n)))
            .min(Q::int(i128::from(self.burst)));
    }
    /// `set_quota(new)` at `now`: the tokens carry over, capped at the new
    /// burst; the missing ones become whole nanoseconds of debt, rounded up.
    fn convert(&mut self, b: &mut Bucket, now: u64, new: Ref) {
        self.refill(b, now);
        let burst = Q::int(i128::from(new.burst));
        let missing = burst.sub(b.tokens);
        b.tokens = if missing.le(Q::int(0)) {
            burst
        } else {
            let debt_ns = missing.mul(new.t).ceil();
            burst.sub(Q::int(debt_ns).mul(Q::new(new.t.d, new.t.n)))
        };
        *self = new;
    }
}

/// The limiter's rounded interval for `rate` per `period_ns`, checked
/// against the stated rate.
fn quota(rate: u32, period_ns: u64, burst: u32) -> (Quota, Ref) {
    let quota = Quota::with_period(rate, Duration::from_nanos(period_ns))
        .and_then(|q| q.with_burst(burst))
        .expect("model quotas are valid");
    let t = quota.emission_interval().as_nanos() as i128;
    // The rounded interval never exceeds the stated rate: T >= period / rate.
    assert!(t * i128::from(rate) >= i128::from(period_ns));
    assert!((t - 1) * i128::from(rate) < i128::from(period_ns));
    (
        quota,
        Ref {
            t: Q::int(t),
            burst,
        },
    )
}

struct World {
    clock: ManualClock,
    plain: RateLimiter<ManualClock>,
    keyed: KeyedRateLimiter<u8, ManualClock>,
    /// The plain limiter's quota (changed by `SetQuota`).
    reference: Ref,
    /// The keyed limiter's quota (fixed at `Start`).
    keyed_reference: Ref,
    bucket: Bucket,
    keys: HashMap<u8, Bucket>,
    origin: tokio::time::Instant,
    now: u64,
    stated: (u32, u64),
    /// (time, +admitted / -refunded) of the plain limiter since Start.
    events: Vec<(u64, i64)>,
}

impl World {
    fn new(rate: u32, period_ns: u64, burst: u32) -> World {
        let (quota, reference) = quota(rate, period_ns, burst);
        let keyed_reference = reference;
        let clock = ManualClock::new();
        let origin = clock.now();
        World {
            plain: RateLimiter::with_clock(quota, clock.clone()),
            keyed: KeyedRateLimiter::<u8>::builder(quota)
                .shards(2)
                .max_keys(64)
                .build_with_clock(clock.clone())
                .expect("valid"),
            clock,
            reference,
            keyed_reference,
            bucket: Bucket {
                tokens: Q::int(i128::from(burst)),
                at: 0,
            },
            keys: HashMap::new(),
            origin,
            now: 0,
            stated: (rate, period_ns),
            events: Vec::new(),
        }
    }

    fn ns(&self, r: Result<(), TryAcquireError>, expected_burst: u32) -> Result<(), Option<u64>> {
        match r {
            Ok(()) => Ok(()),
            Err(TryAcquireError::NotUntil { retry_after }) => {
                Err(Some((retry_after - self.origin).as_nanos() as u64))
            }
            Err(TryAcquireError::InsufficientCapacity { requested, burst }) => {
                assert_eq!(burst, expected_burst);
                assert!(requested > burst);
                Err(None)
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    fn check_windows(&self) {
        let (rate, period) = (i128::from(self.stated.0), i128::from(self.stated.1));
        let burst = i128::from(self.reference.burst);
        for (i, &(t0, _)) in self.events.iter().enumerate() {
            let mut net: i128 = 0;
            for &(t1, delta) in &self.events[i..] {
                net += i128::from(delta);
                let w = i128::from(t1 - t0);
                // net <= burst + w * rate / period, in integers.
                assert!(
                    net * period <= burst * period + w * rate,
                    "window [{t0}, {t1}] admitted {net} net of refunds, over burst {burst} + {w}ns at {rate}/{period}ns"
                );
            }
        }
    }
}

/// Runs `ops` against the real limiters and the reference; panics on any difference.
pub(crate) fn check(ops: &[Op]) {
    let mut w = World::new(3, 300, 2);
    for &op in ops {
        match op {
            Op::Start {
                rate,
                period_ns,
                burst,
            } => {
                w.check_windows();
                w = World::new(rate, period_ns, burst);
            }
            Op::Advance(d) => {
                w.clock.advance(Duration::from_nanos(d));
                w.now += d;
            }
            Op::TryAcquire(n) => {
                let real = w.ns(w.plain.try_acquire(n), w.reference.burst);
                let model = w.reference.take(&mut w.bucket, w.now, n);
                assert_eq!(real, model, "try_acquire({n}) at {}", w.now);
                if real.is_ok() && n > 0 {
                    w.events.push((w.now, i64::from(n)));
                }
            }
            Op::Refund(n) => {
                w.plain.refund(n);
                w.reference.refund(&mut w.bucket, w.now, n);
                if n > 0 {
                    w.events.push((w.now, -i64::from(n)));
                }
            }
            Op::KeyedTryAcquire(k, n) => {
                let real = w.ns(w.keyed.try_acquire(&k, n), w.keyed_reference.burst);
                let burst = w.keyed_reference.burst;
                let b = w.keys.entry(k).or_insert(Bucket {
                    tokens: Q::int(i128::from(burst)),
                    at: w.now,
                });
                let model = w.keyed_reference.take(b, w.now, n);
                assert_eq!(real, model, "keyed try_acquire({k}, {n}) at {}", w.now);
                assert!(w.keyed.len() <= 4);
            }
            Op::KeyedRefund(k, n) => {
                w.keyed.refund(&k, n);
                if let Some(b) = w.keys.get_mut(&k) {
                    w.keyed_reference.refund(b, w.now, n);
                }
            }
            Op::Snapshot => {
                let s = w.plain.snapshot();
                w.reference.refill(&mut w.bucket, w.now);
                let tokens = w.bucket.tokens;
                assert_eq!(
                    i128::from(s.available),
                    tokens.floor(),
                    "available at {}",
                    w.now
                );
                let expect_next = if tokens.le(Q::int(i128::from(w.reference.burst)))
                    && tokens != Q::int(i128::from(w.reference.burst))
                {
                    let missing = Q::int(tokens.floor() + 1).sub(tokens).mul(w.reference.t);
                    assert_eq!(missing.d, 1);
                    Some(w.now + missing.n as u64)
                } else {
                    None
                };
                let real_next = s.next_token_at.map(|at| (at - w.origin).as_nanos() as u64);
                assert_eq!(real_next, expect_next, "next token at {}", w.now);
                assert_eq!(s.waiters, 0);
            }
            Op::SetQuota {
                rate,
                period_ns,
                burst,
            } => {
                // Windows are judged against one stated rate at a time.
                w.check_windows();
                w.events.clear();
                w.stated = (rate, period_ns);
                let (q, new) = quota(rate, period_ns, burst);
                w.plain.set_quota(q);
                w.reference.convert(&mut w.bucket, w.now, new);
                assert_eq!(w.plain.quota(), q);
            }
            Op::Reapply => {
                let before = format!("{:?}", w.plain);
                w.plain.set_quota(w.plain.quota());
                assert_eq!(format!("{:?}", w.plain), before, "set_quota(quota())");
                let same = w.reference;
                w.reference.convert(&mut w.bucket, w.now, same);
            }
        }
    }
    w.check_windows();
}
