//! Model checker for `flowguard::rate`, shared by `tests/prop_rate.rs`
//! (proptest) and `fuzz/fuzz_targets/rate.rs` (libfuzzer).
//!
//! The real limiters run on a `ManualClock`; the reference is a plain token
//! bucket in exact rational arithmetic (tokens are fractions, refilled at
//! `1 / T` per nanosecond, capped at the burst). After every op the two must
//! agree on: the admitted set, the exact retry-after instant of every
//! refusal, the tokens available and the next token's arrival. At the end,
//! over every window of admissions, admitted <= burst + window / T +
//! refunds, with the quota's emission interval `T` (`period / n` rounded
//! down to a whole nanosecond, at least 1 ns: the documented bound).
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

/// A `Start`'s quota from its first byte `x` and the next two (0 where
/// the input ran out): a rate of 1..=8 tokens a period of 1 ns and up, a
/// burst of 1..=8. Shared by both scenario decoders.
fn quota_from_bytes(x: u8, next: &mut impl FnMut() -> Option<u8>) -> (u32, u64, u32) {
    let y = next().unwrap_or(0);
    let z = next().unwrap_or(0);
    (
        1 + u32::from(x % 8),
        1 + u64::from(y) * (1 + u64::from(z % 8)),
        1 + u32::from(z / 8 % 8),
    )
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
                let (rate, period_ns, burst) = quota_from_bytes(x, &mut next);
                Op::Start {
                    rate,
                    period_ns,
                    burst,
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
/// against the documented rounding (`period / rate` rounded down, at least
/// 1 ns).
fn quota(rate: u32, period_ns: u64, burst: u32) -> (Quota, Ref) {
    let quota = Quota::with_period(rate, Duration::from_nanos(period_ns))
        .and_then(|q| q.with_burst(burst))
        .expect("model quotas are valid");
    let t = quota.emission_interval().as_nanos() as i128;
    // T = max(1, floor(period / rate)), as `Duration` division.
    assert_eq!(t, (i128::from(period_ns) / i128::from(rate)).max(1));
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
    /// Tokens per nanoseconds the windows are judged at: (1, T).
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
            stated: (1, reference.t.n as u64),
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
                // Windows are judged against one quota at a time.
                w.check_windows();
                w.events.clear();
                let (q, new) = quota(rate, period_ns, burst);
                w.stated = (1, new.t.n as u64);
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

// ---------------------------------------------------------------------------
// The per-service tower layer: one bucket per service value, same reference.

/// One step of a per-service scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SvcOp {
    /// Fresh services of `rate` per `period_ns`, burst `burst`; one service.
    Start {
        rate: u32,
        period_ns: u64,
        burst: u32,
    },
    /// Move the clock forward.
    Advance(u64),
    /// `poll_ready` then `call` on service `i % len` (shed: ready at once).
    Request(u8),
    /// `poll_ready` on service `i % len` without a `call` (a token held).
    Reserve(u8),
    /// Clone service `i % len` (a copy of its bucket, without a held token).
    Clone(u8),
    /// A new service from the layer (a full bucket).
    New,
    /// Compare `available()` of service `i % len` with the reference.
    Available(u8),
}

/// Decodes arbitrary bytes into a per-service scenario (never fails).
pub(crate) fn svc_ops_from_bytes(bytes: &[u8]) -> Vec<SvcOp> {
    let mut it = bytes.iter().copied();
    let mut next = move || it.next();
    let mut ops = Vec::new();
    while let Some(kind) = next() {
        let x = next().unwrap_or(0);
        let op = match kind % 8 {
            0 => {
                let (rate, period_ns, burst) = quota_from_bytes(x, &mut next);
                SvcOp::Start {
                    rate,
                    period_ns,
                    burst,
                }
            }
            1 | 2 => SvcOp::Advance(u64::from(x) * 4),
            3 | 4 => SvcOp::Request(x),
            5 => SvcOp::Reserve(x),
            6 => match x % 3 {
                0 => SvcOp::Clone(x / 3),
                1 => SvcOp::New,
                _ => SvcOp::Available(x / 3),
            },
            _ => SvcOp::Request(x),
        };
        ops.push(op);
    }
    ops
}

mod per_service {
    use std::future::{Ready, ready};
    use std::task::{Context, Poll, Waker};

    use flowguard::clock::ManualClock;
    use flowguard::tower::{
        BoxError, NotReady, PerServiceRateLimit, PerServiceRateLimitLayer, Refusal, Shedding,
    };
    use tower::{Layer, Service};

    use super::{Bucket, Q, Ref, SvcOp, quota};

    /// The inner service: answers its request at once.
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Echo;

    impl Service<u32> for Echo {
        type Response = u32;
        type Error = BoxError;
        type Future = Ready<Result<u32, BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, n: u32) -> Self::Future {
            ready(Ok(n))
        }
    }

    struct Svc {
        real: PerServiceRateLimit<Echo, ManualClock, Shedding>,
        bucket: Bucket,
        /// `poll_ready` took a token that no `call` spent yet.
        reserved: bool,
    }

    struct World {
        clock: ManualClock,
        layer: PerServiceRateLimitLayer<ManualClock, Shedding>,
        reference: Ref,
        now: u64,
        svcs: Vec<Svc>,
    }

    const MAX_SERVICES: usize = 8;

    impl World {
        fn new(rate: u32, period_ns: u64, burst: u32) -> World {
            let (q, reference) = quota(rate, period_ns, burst);
            let clock = ManualClock::new();
            let layer = PerServiceRateLimitLayer::shed(q).with_clock(clock.clone());
            let mut w = World {
                clock,
                layer,
                reference,
                now: 0,
                svcs: Vec::new(),
            };
            w.new_service();
            w
        }

        fn new_service(&mut self) {
            if self.svcs.len() < MAX_SERVICES {
                self.svcs.push(Svc {
                    real: self.layer.layer(Echo),
                    bucket: Bucket {
                        tokens: Q::int(i128::from(self.reference.burst)),
                        at: self.now,
                    },
                    reserved: false,
                });
            }
        }

        /// `poll_ready` (ready at once: shed) and what the reference says
        /// it decided: `Ok` a token, `Err(at)` refused until `at`.
        fn ready(&mut self, i: usize) -> Result<(), u64> {
            let cx = &mut Context::from_waker(Waker::noop());
            let s = &mut self.svcs[i];
            assert!(matches!(s.real.poll_ready(cx), Poll::Ready(Ok(()))));
            if s.reserved {
                return Ok(()); // holds its token: nothing taken twice
            }
            match self.reference.take(&mut s.bucket, self.now, 1) {
                Ok(()) => {
                    s.reserved = true;
                    Ok(())
                }
                Err(Some(at)) => Err(at),
                Err(None) => unreachable!("one token always fits a burst"),
            }
        }

        fn call(&mut self, i: usize, n: u32, model: Result<(), u64>) {
            let cx = &mut Context::from_waker(Waker::noop());
            let now = self.now;
            let s = &mut self.svcs[i];
            let mut fut = s.real.call(n);
            let Poll::Ready(answer) = std::pin::Pin::new(&mut fut).poll(cx) else {
                panic!("the response of a ready inner service is ready");
            };
            match (answer, model) {
                (Ok(m), Ok(())) => {
                    assert_eq!(m, n);
                    s.reserved = false;
                }
                (Err(e), Err(at)) => {
                    let r = *Refusal::find(&*e).unwrap_or_else(|| panic!("not a refusal: {e}"));
                    assert_eq!(
                        r,
                        Refusal::RateLimited {
                            retry_after: Some(std::time::Duration::from_nanos(at - now))
                        },
                        "retry_after of service {i} at {now}"
                    );
                }
                (real, model) => panic!("service {i} at {now}: real {real:?}, model {model:?}"),
            }
            // A second call without poll_ready is NotReady, calling nothing.
            let mut again = s.real.call(n);
            let Poll::Ready(Err(e)) = std::pin::Pin::new(&mut again).poll(cx) else {
                panic!("call without poll_ready must fail at once");
            };
            assert!(e.is::<NotReady>());
        }
    }

    use std::future::Future;

    /// Runs `ops` against per-service layers and one reference bucket per
    /// service; panics on any difference.
    pub(crate) fn check(ops: &[SvcOp]) {
        let mut w = World::new(3, 300, 2);
        for (step, &op) in ops.iter().enumerate() {
            let pick = |i: u8, w: &World| usize::from(i) % w.svcs.len();
            match op {
                SvcOp::Start {
                    rate,
                    period_ns,
                    burst,
                } => w = World::new(rate, period_ns, burst),
                SvcOp::Advance(d) => {
                    w.clock.advance(std::time::Duration::from_nanos(d));
                    w.now += d;
                }
                SvcOp::Request(i) => {
                    let i = pick(i, &w);
                    let model = w.ready(i);
                    w.call(i, step as u32, model);
                }
                SvcOp::Reserve(i) => {
                    let i = pick(i, &w);
                    let _ = w.ready(i);
                }
                SvcOp::Clone(i) => {
                    let i = pick(i, &w);
                    if w.svcs.len() < MAX_SERVICES {
                        let s = &w.svcs[i];
                        let copy = Svc {
                            real: s.real.clone(),
                            bucket: s.bucket.clone(),
                            reserved: false,
                        };
                        w.svcs.push(copy);
                    }
                }
                SvcOp::New => w.new_service(),
                SvcOp::Available(i) => {
                    let i = pick(i, &w);
                    let now = w.now;
                    let reference = w.reference;
                    let s = &mut w.svcs[i];
                    reference.refill(&mut s.bucket, now);
                    assert_eq!(
                        i128::from(s.real.available()),
                        s.bucket.tokens.floor(),
                        "available of service {i} at {now}"
                    );
                }
            }
        }
    }
}

/// The waiting per-service service against the same reference, one bucket
/// per service: `poll_ready` is ready exactly when the reference holds a
/// token, and pending otherwise; a service that waited is charged at the
/// instant its token came due (the clock is moved by hand, in coarse
/// steps); a `call` without a token (`Request` on a pending service, as a
/// caller breaking tower's contract would) still reaches the inner service
/// and costs a token, which may leave the bucket in debt.
mod per_service_wait {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use flowguard::clock::ManualClock;
    use flowguard::tower::{PerServiceRateLimit, PerServiceRateLimitLayer, Waiting};
    use tower::{Layer, Service};

    use super::per_service::Echo;
    use super::{Bucket, Q, Ref, SvcOp, quota};

    struct Svc {
        real: PerServiceRateLimit<Echo, ManualClock, Waiting>,
        bucket: Bucket,
        /// `poll_ready` took a token that no `call` spent yet.
        reserved: bool,
        /// The last `poll_ready` was pending: the next token is charged at
        /// the instant it came due.
        waiting: bool,
    }

    struct World {
        clock: ManualClock,
        layer: PerServiceRateLimitLayer<ManualClock, Waiting>,
        reference: Ref,
        now: u64,
        svcs: Vec<Svc>,
    }

    const MAX_SERVICES: usize = 8;

    impl World {
        fn new(rate: u32, period_ns: u64, burst: u32) -> World {
            let (q, reference) = quota(rate, period_ns, burst);
            let clock = ManualClock::new();
            let layer = PerServiceRateLimitLayer::wait(q).with_clock(clock.clone());
            let mut w = World {
                clock,
                layer,
                reference,
                now: 0,
                svcs: Vec::new(),
            };
            w.new_service();
            w
        }

        fn new_service(&mut self) {
            if self.svcs.len() < MAX_SERVICES {
                self.svcs.push(Svc {
                    real: self.layer.layer(Echo),
                    bucket: Bucket {
                        tokens: Q::int(i128::from(self.reference.burst)),
                        at: self.now,
                    },
                    reserved: false,
                    waiting: false,
                });
            }
        }

        /// `poll_ready`, checked against the reference; whether it was ready.
        fn ready(&mut self, i: usize) -> bool {
            let cx = &mut Context::from_waker(Waker::noop());
            let now = self.now;
            let reference = self.reference;
            let s = &mut self.svcs[i];
            let real = s.real.poll_ready(cx);
            let model = if s.reserved {
                true
            } else {
                // The reference bucket is only refilled by takes, charges and
                // refusals, so below one token its refill from `at` is linear
                // up to the instant the token comes due.
                let due = if Q::int(1).le(s.bucket.tokens) {
                    s.bucket.at
                } else {
                    let wait = Q::int(1).sub(s.bucket.tokens).mul(reference.t);
                    s.bucket.at + u64::try_from(wait.ceil()).unwrap()
                };
                let charge_at = if s.waiting && due <= now { due } else { now };
                match reference.take(&mut s.bucket, charge_at, 1) {
                    Ok(()) => {
                        s.reserved = true;
                        s.waiting = false;
                        true
                    }
                    Err(Some(_)) => {
                        s.waiting = true;
                        false
                    }
                    Err(None) => unreachable!("one token always fits a burst"),
                }
            };
            match (real, model) {
                (Poll::Ready(Ok(())), true) | (Poll::Pending, false) => model,
                (real, model) => panic!(
                    "service {i} at {now}: real {:?}, model ready {model}",
                    real.map(|r| r.is_ok())
                ),
            }
        }

        /// `call`: spends the reserved token, or charges one (a debt).
        fn call(&mut self, i: usize, n: u32) {
            let cx = &mut Context::from_waker(Waker::noop());
            let now = self.now;
            let reference = self.reference;
            let s = &mut self.svcs[i];
            let mut fut = s.real.call(n);
            let Poll::Ready(Ok(m)) = std::pin::Pin::new(&mut fut).poll(cx) else {
                panic!("a waiting service's call always reaches the inner service");
            };
            assert_eq!(m, n);
            if s.reserved {
                s.reserved = false;
            } else {
                reference.refill(&mut s.bucket, now);
                s.bucket.tokens = s.bucket.tokens.sub(Q::int(1));
            }
        }
    }

    pub(crate) fn check(ops: &[SvcOp]) {
        let mut w = World::new(3, 300, 2);
        for (step, &op) in ops.iter().enumerate() {
            let pick = |i: u8, w: &World| usize::from(i) % w.svcs.len();
            match op {
                SvcOp::Start {
                    rate,
                    period_ns,
                    burst,
                } => w = World::new(rate, period_ns, burst),
                SvcOp::Advance(d) => {
                    w.clock.advance(std::time::Duration::from_nanos(d));
                    w.now += d;
                }
                // Ready or not, the call goes through (a pending service's
                // call is one without a token).
                SvcOp::Request(i) => {
                    let i = pick(i, &w);
                    w.ready(i);
                    w.call(i, step as u32);
                }
                SvcOp::Reserve(i) => {
                    let i = pick(i, &w);
                    w.ready(i);
                }
                SvcOp::Clone(i) => {
                    let i = pick(i, &w);
                    if w.svcs.len() < MAX_SERVICES {
                        let s = &w.svcs[i];
                        let copy = Svc {
                            real: s.real.clone(),
                            bucket: s.bucket.clone(),
                            reserved: false,
                            waiting: false,
                        };
                        w.svcs.push(copy);
                    }
                }
                SvcOp::New => w.new_service(),
                SvcOp::Available(i) => {
                    let i = pick(i, &w);
                    let now = w.now;
                    let s = &w.svcs[i];
                    // On a copy: the bucket's own `at` stays where the
                    // due-instant rule above needs it.
                    let mut b = s.bucket.clone();
                    w.reference.refill(&mut b, now);
                    assert_eq!(
                        i128::from(s.real.available()),
                        b.tokens.floor().max(0),
                        "available of service {i} at {now}"
                    );
                }
            }
        }
    }
}

/// Runs a per-service scenario (see [`SvcOp`]) against both kinds of
/// per-service service.
pub(crate) fn check_per_service(ops: &[SvcOp]) {
    per_service::check(ops);
    per_service_wait::check(ops);
}
