//! Time per key for 10 000 concurrent loads of distinct keys through a
//! trivial batch function (`k -> k`), each loader at its default settings,
//! on a current-thread Tokio runtime (one task joins all 10 000 loads).
//!
//! Peers in the same group: async-graphql's `DataLoader` (default: 1 ms
//! delay, batches of 1000; and `delay(0)`), and the `dataloader` crate's
//! non-cached `Loader` (default: 10 yields, batches of 200).

use std::collections::HashMap;
use std::hint::black_box;
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

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("batch/10k_concurrent_loads");
    group.throughput(Throughput::Elements(KEYS));
    group.sample_size(20);

    let fg = rt.block_on(async {
        flowguard::batch::Loader::new(|keys: Vec<u64>| async move {
            Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        })
    });
    group.bench_function("flowguard", |b| {
        b.to_async(&rt).iter(|| async {
            let out = join_all((0..KEYS).map(|k| fg.load(k))).await;
            black_box(out);
        })
    });

    let ag = async_graphql::dataloader::DataLoader::new(AgLoader, tokio::spawn);
    group.bench_function("async-graphql default", |b| {
        b.to_async(&rt).iter(|| async {
            let out = join_all((0..KEYS).map(|k| ag.load_one(k))).await;
            black_box(out);
        })
    });

    let ag0 =
        async_graphql::dataloader::DataLoader::new(AgLoader, tokio::spawn).delay(Duration::ZERO);
    group.bench_function("async-graphql delay(0)", |b| {
        b.to_async(&rt).iter(|| async {
            let out = join_all((0..KEYS).map(|k| ag0.load_one(k))).await;
            black_box(out);
        })
    });

    let dl = dataloader::non_cached::Loader::new(DlBatch);
    group.bench_function("dataloader crate", |b| {
        b.to_async(&rt).iter(|| async {
            let out = join_all((0..KEYS).map(|k| dl.load(k))).await;
            black_box(out);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
