//! The adaptive limiter's acquire + release against the plain Semaphore
//! it is built on (the target: at most 1.5× its cost), with the permit's
//! report: `success` feeds the algorithm a sample (two clock reads and the
//! windowed Vegas update under the limiter's lock), `ignore` only returns
//! the permit. No peer crate does adaptive limits for Tokio; tokio's own
//! semaphore is in the same groups as the floor.
//!
//! `cargo bench --bench adaptive`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use flowguard::adaptive::AdaptiveLimiter;
use flowguard::semaphore::Semaphore;

const PERMITS: usize = 64;

fn try_acquire_release(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("adaptive/try_acquire+release");
    let sem = Semaphore::new(PERMITS);
    g.bench_function("flowguard Semaphore (owned permit)", |b| {
        b.iter(|| drop(black_box(sem.try_acquire_owned().unwrap())))
    });
    let tk = std::sync::Arc::new(tokio::sync::Semaphore::new(PERMITS));
    g.bench_function("tokio Semaphore (owned permit)", |b| {
        b.iter(|| drop(black_box(tk.clone().try_acquire_owned().unwrap())))
    });
    let limiter = AdaptiveLimiter::builder().build().unwrap();
    g.bench_function("AdaptiveLimiter + success", |b| {
        b.iter(|| black_box(limiter.try_acquire().unwrap()).success())
    });
    g.bench_function("AdaptiveLimiter + ignore", |b| {
        b.iter(|| black_box(limiter.try_acquire().unwrap()).ignore())
    });
    g.finish();
}

fn acquire_await_release(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("adaptive/acquire.await+release (current_thread)");
    let sem = Semaphore::new(PERMITS);
    g.bench_function("flowguard Semaphore", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(black_box(sem.acquire_owned().await.unwrap())) })
    });
    let limiter = rt.block_on(async { AdaptiveLimiter::builder().build().unwrap() });
    g.bench_function("AdaptiveLimiter + success", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(limiter.acquire().await.unwrap()).success() })
    });
    g.finish();
}

criterion_group!(benches, try_acquire_release, acquire_await_release);
criterion_main!(benches);
