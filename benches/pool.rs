//! Per-task overhead of `WorkerPool` beside the hand-rolled pool users write
//! today (`JoinSet` + `tokio::sync::Semaphore`), in the same groups.
//!
//! `cargo bench --bench pool`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flowguard::pool::WorkerPool;

const TASKS: u64 = 1000;
const LIMIT: usize = 64;

async fn hand_rolled(yield_once: bool) -> u64 {
    let sem = Arc::new(tokio::sync::Semaphore::new(LIMIT));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..TASKS {
        let permit = sem.clone().acquire_owned().await.unwrap();
        set.spawn(async move {
            let _permit = permit;
            if yield_once {
                tokio::task::yield_now().await;
            }
            black_box(i)
        });
    }
    let mut sum = 0;
    while let Some(r) = set.join_next().await {
        sum += r.unwrap();
    }
    sum
}

async fn flowguard_pool(pool: &WorkerPool, yield_once: bool) -> u64 {
    let mut handles = Vec::with_capacity(TASKS as usize);
    for i in 0..TASKS {
        let h = pool
            .submit(async move {
                if yield_once {
                    tokio::task::yield_now().await;
                }
                black_box(i)
            })
            .await
            .unwrap();
        handles.push(h);
    }
    let mut sum = 0;
    for h in handles {
        sum += h.await.unwrap();
    }
    sum
}

fn per_task_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let pool = rt.block_on(async {
        WorkerPool::builder()
            .max_concurrency(LIMIT)
            .queue_capacity(TASKS as usize)
            .build()
            .unwrap()
    });
    // Same backpressure as the hand-rolled loop: no queue, the submitter
    // waits for a free slot.
    let unqueued = rt.block_on(async {
        WorkerPool::builder()
            .max_concurrency(LIMIT)
            .queue_capacity(0)
            .build()
            .unwrap()
    });
    let mut g = c.benchmark_group("pool/1000 tasks, 64 at once (2 workers)");
    g.throughput(Throughput::Elements(TASKS));
    for (label, y) in [("ready", false), ("yield once", true)] {
        g.bench_with_input(
            BenchmarkId::new("flowguard WorkerPool", label),
            &y,
            |b, &y| b.iter(|| rt.block_on(flowguard_pool(&pool, y))),
        );
        g.bench_with_input(
            BenchmarkId::new("flowguard WorkerPool, queue 0", label),
            &y,
            |b, &y| b.iter(|| rt.block_on(flowguard_pool(&unqueued, y))),
        );
        g.bench_with_input(
            BenchmarkId::new("JoinSet + tokio Semaphore", label),
            &y,
            |b, &y| b.iter(|| rt.block_on(hand_rolled(y))),
        );
    }
    g.finish();
}

criterion_group!(benches, per_task_overhead);
criterion_main!(benches);
