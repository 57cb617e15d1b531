//! Time per key for 10 000 concurrent loads of distinct keys through a
//! trivial batch function (`k -> k`), each loader at its default settings,
//! on a current-thread Tokio runtime (one task joins all 10 000 loads), in
//! two groups that differ only in how that task joins them.
//!
//! Peers in the same group: async-graphql's `DataLoader` (default: 1 ms
//! delay, batches of 1000; and `delay(0)`), and the `dataloader` crate's
//! non-cached `Loader` (default: 10 yields, batches of 200).

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::future::join_all;

const KEYS: u64 = 10_000;

struct AgLoader;

impl async_graphql::dataloader::Loader<u64> for AgLoader {
    type Value = u64;
    type Error = ();

    async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, ()> {
        Ok(keys.iter().map(|&k| (k, k)).collect())
    }
}

struct DlBatch;

impl dataloader::BatchFn<u64, u64> for DlBatch {
    async fn load(&mut self, keys: &[u64]) -> HashMap<u64, u64> {
        keys.iter().map(|&k| (k, k)).collect()
    }
}

/// Polls every still-pending future each time the task wakes: no per-future
/// wakers or ready queue, so it measures the loaders rather than the joiner.
/// One `Box::pin` per load, the same for every row.
async fn flat_join<F: Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    let mut live = pending.len();
    std::future::poll_fn(|cx| {
        for (f, o) in pending.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                if let Poll::Ready(v) = f.as_mut().poll(cx) {
                    *o = Some(v);
                    live -= 1;
                }
            }
        }
        if live == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

macro_rules! rows {
    ($group:ident, $rt:ident, $join:ident, $fg:ident, $ag:ident, $ag0:ident, $dl:ident) => {
        $group.bench_function("flowguard", |b| {
            b.to_async(&$rt)
                .iter(|| async { black_box($join((0..KEYS).map(|k| $fg.load(k))).await) })
        });
        $group.bench_function("async-graphql default", |b| {
            b.to_async(&$rt)
                .iter(|| async { black_box($join((0..KEYS).map(|k| $ag.load_one(k))).await) })
        });
        $group.bench_function("async-graphql delay(0)", |b| {
            b.to_async(&$rt)
                .iter(|| async { black_box($join((0..KEYS).map(|k| $ag0.load_one(k))).await) })
        });
        $group.bench_function("dataloader crate", |b| {
            b.to_async(&$rt)
                .iter(|| async { black_box($join((0..KEYS).map(|k| $dl.load(k))).await) })
        });
        // Not a loader: the joiner's own floor. Each future is pending once,
        // woken once and ready: the least any loader can cost per key.
        $group.bench_function("reference: yield_now (harness floor)", |b| {
            b.to_async(&$rt).iter(|| async {
                black_box($join((0..KEYS).map(|_| tokio::task::yield_now())).await)
            })
        });
    };
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fg = rt.block_on(async {
        flowguard::batch::Loader::new(|keys: Vec<u64>| async move {
            Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        })
    });
    let ag = async_graphql::dataloader::DataLoader::new(AgLoader, tokio::spawn);
    let ag0 =
        async_graphql::dataloader::DataLoader::new(AgLoader, tokio::spawn).delay(Duration::ZERO);
    let dl = dataloader::non_cached::Loader::new(DlBatch);

    // The loads joined by `futures::join_all` (a `FuturesOrdered` at this size).
    let mut group = c.benchmark_group("batch/10k_loads_join_all");
    group.throughput(Throughput::Elements(KEYS));
    group.sample_size(20);
    rows!(group, rt, join_all, fg, ag, ag0, dl);
    group.finish();

    // The same loads joined by `flat_join`.
    let mut group = c.benchmark_group("batch/10k_loads_flat_join");
    group.throughput(Throughput::Elements(KEYS));
    group.sample_size(20);
    rows!(group, rt, flat_join, fg, ag, ag0, dl);
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
