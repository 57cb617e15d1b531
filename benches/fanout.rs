//! Fan-out overhead: gather 1000 ready futures and 1000 futures that yield
//! once, against `futures::future::join_all`, `FuturesUnordered` (in-task)
//! and `tokio::task::JoinSet` (spawned), each in the same group.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use flowguard::fanout::{Gather, gather_with_timeout};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::task::JoinSet;

const N: u64 = 1000;

/// Pending once (waking itself), then ready: the cheapest real suspension.
struct YieldOnce(Option<u64>, bool);

impl Future for YieldOnce {
    type Output = u64;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        if self.1 {
            Poll::Ready(self.0.take().unwrap_or(0))
        } else {
            self.1 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn ready(i: u64) -> std::future::Ready<u64> {
    std::future::ready(i)
}

fn yield_once(i: u64) -> YieldOnce {
    YieldOnce(Some(i), false)
}

fn in_task<F, Fut>(c: &mut Criterion, group: &str, make: F)
where
    F: Fn(u64) -> Fut + Copy,
    Fut: Future<Output = u64> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group(group);
    g.bench_function("futures::join_all", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(futures::future::join_all((0..N).map(make)).await) })
    });
    g.bench_function("FuturesUnordered", |b| {
        b.to_async(&rt).iter(|| async {
            let mut set: FuturesUnordered<_> = (0..N).map(make).collect();
            let mut out = Vec::with_capacity(N as usize);
            while let Some(v) = set.next().await {
                out.push(v);
            }
            black_box(out)
        })
    });
    g.bench_function("flowguard Gather", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(Gather::new((0..N).map(make)).build().unwrap().await) })
    });
    g.bench_function("flowguard gather_with_timeout", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(gather_with_timeout((0..N).map(make), Duration::from_secs(10)).await)
        })
    });
    g.finish();
}

fn spawned<F, Fut>(c: &mut Criterion, group: &str, make: F)
where
    F: Fn(u64) -> Fut + Copy,
    Fut: Future<Output = u64> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group(group);
    g.bench_function("JoinSet", |b| {
        b.to_async(&rt).iter(|| async {
            let mut set = JoinSet::new();
            for i in 0..N {
                set.spawn(make(i));
            }
            let mut out = Vec::with_capacity(N as usize);
            while let Some(v) = set.join_next().await {
                out.push(v.unwrap());
            }
            black_box(out)
        })
    });
    g.bench_function("flowguard Gather::spawn", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(Gather::new((0..N).map(make)).spawn().build().unwrap().await)
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    in_task(c, "fanout/in_task_ready_1000", ready);
    in_task(c, "fanout/in_task_yield_once_1000", yield_once);
    spawned(c, "fanout/spawned_ready_1000", ready);
    spawned(c, "fanout/spawned_yield_once_1000", yield_once);
}

criterion_group!(fanout, benches);
criterion_main!(fanout);
