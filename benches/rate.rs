//! flowguard::rate against governor 0.10 (std and quanta clocks) and
//! leaky-bucket, peers in the same criterion groups.
//!
//! Every row checks a quota so generous that checks are admitted (the
//! measured path is the admission CAS, not the refusal).

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use flowguard::clock::{ManualClock, TokioClock};
use flowguard::rate::{KeyedRateLimiter, Quota, RateLimiter};
use governor::clock::{MonotonicClock, QuantaClock};

const RATE: u32 = 1_000_000_000; // one token per ns
const BURST: u32 = u32::MAX; // ~4.3 s of tokens: a stopped ManualClock lasts the run

fn fg_quota() -> Quota {
    Quota::per_second(RATE).unwrap().with_burst(BURST).unwrap()
}

fn gov_quota() -> governor::Quota {
    governor::Quota::per_second(NonZeroU32::new(RATE).unwrap())
        .allow_burst(NonZeroU32::new(BURST).unwrap())
}

// The keyed rows: one token a second per key, a burst no run exhausts. A
// key used every thousand checks stays busy, so every check is of a held
// key. With `RATE` a key's bucket refills within nanoseconds of a check:
// on a clock that moves, every key is idle (its bucket full) at once, and
// flowguard reclaims idle keys whenever a new key needs room (governor
// keeps them until `retain_recent`), so those rows measured a key's
// re-insertion about every other check, not a check.
const KEYED_RATE: u32 = 1;
const KEYED_BURST: u32 = 1_000_000_000;

fn fg_keyed_quota() -> Quota {
    Quota::per_second(KEYED_RATE)
        .unwrap()
        .with_burst(KEYED_BURST)
        .unwrap()
}

fn gov_keyed_quota() -> governor::Quota {
    governor::Quota::per_second(NonZeroU32::new(KEYED_RATE).unwrap())
        .allow_burst(NonZeroU32::new(KEYED_BURST).unwrap())
}

fn direct_1_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate/direct_check_1_thread");
    let fg_tokio = RateLimiter::with_clock(fg_quota(), TokioClock);
    g.bench_function("flowguard/tokio_clock", |b| {
        b.iter(|| black_box(fg_tokio.try_acquire(1)))
    });
    let fg_manual = RateLimiter::with_clock(fg_quota(), ManualClock::new());
    g.bench_function("flowguard/manual_clock", |b| {
        b.iter(|| black_box(fg_manual.try_acquire(1)))
    });
    let gov_std = governor::RateLimiter::direct_with_clock(gov_quota(), MonotonicClock);
    g.bench_function("governor/std_clock", |b| {
        b.iter(|| black_box(gov_std.check()))
    });
    let gov_quanta = governor::RateLimiter::direct_with_clock(gov_quota(), QuantaClock::default());
    g.bench_function("governor/quanta_clock", |b| {
        b.iter(|| black_box(gov_quanta.check()))
    });
    g.finish();
}

/// Two threads hammer one limiter; the time reported is per check per thread.
fn contended<F: Fn() + Sync>(iters: u64, check: F) -> Duration {
    let barrier = Barrier::new(2);
    let mut total = Duration::ZERO;
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        check();
                    }
                    start.elapsed()
                })
            })
            .collect();
        for h in hs {
            total = total.max(h.join().unwrap());
        }
    });
    total
}

fn direct_2_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate/direct_check_2_threads_contended");
    let fg_tokio = RateLimiter::with_clock(fg_quota(), TokioClock);
    g.bench_function("flowguard/tokio_clock", |b| {
        b.iter_custom(|iters| {
            contended(iters, || {
                let _ = black_box(fg_tokio.try_acquire(1));
            })
        })
    });
    let fg_manual = RateLimiter::with_clock(fg_quota(), ManualClock::new());
    g.bench_function("flowguard/manual_clock", |b| {
        b.iter_custom(|iters| {
            contended(iters, || {
                let _ = black_box(fg_manual.try_acquire(1));
            })
        })
    });
    let gov_std = governor::RateLimiter::direct_with_clock(gov_quota(), MonotonicClock);
    g.bench_function("governor/std_clock", |b| {
        b.iter_custom(|iters| {
            contended(iters, || {
                let _ = black_box(gov_std.check());
            })
        })
    });
    let gov_quanta = governor::RateLimiter::direct_with_clock(gov_quota(), QuantaClock::default());
    g.bench_function("governor/quanta_clock", |b| {
        b.iter_custom(|iters| {
            contended(iters, || {
                let _ = black_box(gov_quanta.check());
            })
        })
    });
    g.finish();
}

fn keyed_1000(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate/keyed_check_1000_keys");
    let fg_tokio = KeyedRateLimiter::<u64>::builder(fg_keyed_quota())
        .build_with_clock(TokioClock)
        .unwrap();
    let mut k = 0u64;
    g.bench_function("flowguard/tokio_clock", |b| {
        b.iter(|| {
            k = (k + 1) % 1000;
            black_box(fg_tokio.try_acquire(&k, 1))
        })
    });
    let fg_manual = KeyedRateLimiter::<u64>::builder(fg_keyed_quota())
        .build_with_clock(ManualClock::new())
        .unwrap();
    g.bench_function("flowguard/manual_clock", |b| {
        b.iter(|| {
            k = (k + 1) % 1000;
            black_box(fg_manual.try_acquire(&k, 1))
        })
    });
    let gov_std = governor::RateLimiter::dashmap_with_clock(gov_keyed_quota(), MonotonicClock);
    g.bench_function("governor/std_clock", |b| {
        b.iter(|| {
            k = (k + 1) % 1000;
            black_box(gov_std.check_key(&k))
        })
    });
    let gov_quanta =
        governor::RateLimiter::dashmap_with_clock(gov_keyed_quota(), QuantaClock::default());
    g.bench_function("governor/quanta_clock", |b| {
        b.iter(|| {
            k = (k + 1) % 1000;
            black_box(gov_quanta.check_key(&k))
        })
    });
    g.finish();
}

fn fair_acquire(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("rate/fair_acquire_uncontended");
    let fg = {
        let _e = rt.enter();
        RateLimiter::new(fg_quota())
    };
    g.bench_function("flowguard/acquire", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(fg.acquire(1).await) })
    });
    let lb = {
        let _e = rt.enter();
        leaky_bucket::RateLimiter::builder()
            .max(usize::MAX / 2)
            .initial(usize::MAX / 2)
            .refill(usize::MAX / 4)
            .interval(Duration::from_millis(1))
            .fair(true)
            .build()
    };
    g.bench_function("leaky_bucket/acquire", |b| {
        b.to_async(&rt).iter(|| async { lb.acquire(1).await })
    });
    g.finish();
}

criterion_group!(
    benches,
    direct_1_thread,
    direct_2_threads,
    keyed_1000,
    fair_acquire
);
criterion_main!(benches);
