//! flowguard's Semaphore beside tokio's, row by row in the same groups.
//!
//! `cargo bench --bench semaphore`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};

const TASKS: usize = 64;
const PERMITS: usize = 8;
const ROUNDS: usize = 50;

fn try_acquire_drop(c: &mut Criterion) {
    let mut g = c.benchmark_group("semaphore/try_acquire+drop");
    let fg = flowguard::semaphore::Semaphore::new(PERMITS);
    g.bench_function("flowguard", |b| {
        b.iter(|| drop(black_box(fg.try_acquire().unwrap())))
    });
    let tk = tokio::sync::Semaphore::new(PERMITS);
    g.bench_function("tokio", |b| {
        b.iter(|| drop(black_box(tk.try_acquire().unwrap())))
    });
    g.finish();
}

fn acquire_await_drop(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("semaphore/acquire.await+drop (current_thread)");
    let fg = flowguard::semaphore::Semaphore::new(PERMITS);
    g.bench_function("flowguard", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(black_box(fg.acquire().await.unwrap())) })
    });
    let tk = tokio::sync::Semaphore::new(PERMITS);
    g.bench_function("tokio", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(black_box(tk.acquire().await.unwrap())) })
    });
    g.finish();
}

fn contended(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("semaphore/64 tasks x 50 acquires on 8 permits (2 workers)");
    g.bench_function("flowguard", |b| {
        b.iter(|| {
            rt.block_on(async {
                let sem = flowguard::semaphore::Semaphore::new(PERMITS);
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..TASKS {
                    let sem = sem.clone();
                    set.spawn(async move {
                        for _ in 0..ROUNDS {
                            let p = sem.acquire().await.unwrap();
                            tokio::task::yield_now().await;
                            drop(p);
                        }
                    });
                }
                set.join_all().await;
            })
        })
    });
    g.bench_function("tokio", |b| {
        b.iter(|| {
            rt.block_on(async {
                let sem = Arc::new(tokio::sync::Semaphore::new(PERMITS));
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..TASKS {
                    let sem = sem.clone();
                    set.spawn(async move {
                        for _ in 0..ROUNDS {
                            let p = sem.acquire().await.unwrap();
                            tokio::task::yield_now().await;
                            drop(p);
                        }
                    });
                }
                set.join_all().await;
            })
        })
    });
    g.finish();
}

criterion_group!(benches, try_acquire_drop, acquire_await_drop, contended);
criterion_main!(benches);
