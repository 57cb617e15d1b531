//! The adaptive limiter's acquire + release against the plain Semaphore
//! it is built on (the target: at most 1.5× its cost), with the permit's
//! report: `success` feeds the algorithm (the default windowed Vegas,
//! under this load, has one permit in 16 timed once its first 1 s window
//! has closed, inside criterion's warm-up: that one reads the clock twice
//! and takes the lock, the others count their report in the add that
//! returns the permit), `ignore` only returns the permit. "every permit
//! timed" is the same limiter with `max_time_one_in(1)`, as Netflix's
//! limiters time every request. No peer
//! crate does adaptive limits for Tokio; tokio's own semaphore is in the
//! same groups as the floor.
//!
//! Each group runs in both runtime flavours, both sides in the same
//! flavour: the limiter's default clock (`FastClock`) reads the CPU's
//! counter when built inside a multi-thread runtime and Tokio's clock
//! inside a current-thread one.
//!
//! `cargo bench --bench adaptive`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use flowguard::adaptive::{AdaptiveLimiter, Vegas, Windowed};
use flowguard::semaphore::Semaphore;
use tokio::runtime::{Builder, Runtime};

const PERMITS: usize = 64;

fn runtimes() -> [(&'static str, Runtime); 2] {
    [
        (
            "current_thread",
            Builder::new_current_thread().enable_time().build().unwrap(),
        ),
        (
            "multi_thread",
            Builder::new_multi_thread()
                .worker_threads(2)
                .enable_time()
                .build()
                .unwrap(),
        ),
    ]
}

/// The default limiter, and one timing every permit; built inside `rt`.
fn limiters(rt: &Runtime) -> (AdaptiveLimiter, AdaptiveLimiter) {
    let _guard = rt.enter();
    let every = Windowed::builder(Vegas::new())
        .max_time_one_in(1)
        .build()
        .unwrap();
    (
        AdaptiveLimiter::builder().build().unwrap(),
        AdaptiveLimiter::new(every),
    )
}

fn try_acquire_release(c: &mut Criterion) {
    for (flavour, rt) in runtimes() {
        let _guard = rt.enter();
        let mut g = c.benchmark_group(format!("adaptive/try_acquire+release ({flavour})"));
        let sem = Semaphore::new(PERMITS);
        g.bench_function("flowguard Semaphore (owned permit)", |b| {
            b.iter(|| drop(black_box(sem.try_acquire_owned().unwrap())))
        });
        let tk = std::sync::Arc::new(tokio::sync::Semaphore::new(PERMITS));
        g.bench_function("tokio Semaphore (owned permit)", |b| {
            b.iter(|| drop(black_box(tk.clone().try_acquire_owned().unwrap())))
        });
        let (limiter, every) = limiters(&rt);
        g.bench_function("AdaptiveLimiter + success", |b| {
            b.iter(|| black_box(limiter.try_acquire().unwrap()).success())
        });
        g.bench_function("AdaptiveLimiter + ignore", |b| {
            b.iter(|| black_box(limiter.try_acquire().unwrap()).ignore())
        });
        g.bench_function("AdaptiveLimiter, every permit timed + success", |b| {
            b.iter(|| black_box(every.try_acquire().unwrap()).success())
        });
        g.finish();
    }
}

fn acquire_await_release(c: &mut Criterion) {
    for (flavour, rt) in runtimes() {
        let mut g = c.benchmark_group(format!("adaptive/acquire.await+release ({flavour})"));
        let sem = Semaphore::new(PERMITS);
        g.bench_function("flowguard Semaphore", |b| {
            b.to_async(&rt)
                .iter(|| async { drop(black_box(sem.acquire_owned().await.unwrap())) })
        });
        let (limiter, every) = limiters(&rt);
        g.bench_function("AdaptiveLimiter + success", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(limiter.acquire().await.unwrap()).success() })
        });
        g.bench_function("AdaptiveLimiter, every permit timed + success", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(every.acquire().await.unwrap()).success() })
        });
        g.finish();
    }
}

criterion_group!(benches, try_acquire_release, acquire_await_release);
criterion_main!(benches);
