//! ns per `call` during a burst: flowguard's `Debouncer` beside a hand-rolled
//! debouncer (a `tokio::sync::watch` plus a `Sleep` reset on every change),
//! in one group. Each sample is a burst of 1M calls from one thread while the
//! debouncer's worker is alive on a one-thread runtime; `wait` is long, so the
//! burst never ends during the measurement.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowguard::timing::{Debouncer, Throttler};
use tokio::sync::watch;
use tokio::time::Instant;

const BURST: u64 = 1_000_000;
const WAIT: Duration = Duration::from_secs(3600);

/// The usual hand-rolled debouncer: publish into a watch channel; a task
/// pushes its `Sleep` back on every change and runs when it completes.
fn hand_rolled(wait: Duration) -> watch::Sender<u64> {
    let (tx, mut rx) = watch::channel(0u64);
    tokio::spawn(async move {
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        let mut pending = false;
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    sleep.as_mut().reset(Instant::now() + wait);
                    pending = true;
                }
                () = &mut sleep, if pending => {
                    pending = false;
                    black_box(*rx.borrow_and_update());
                }
            }
        }
    });
    tx
}

fn call_burst(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();

    let mut group = c.benchmark_group("timing/call_during_1M_burst");
    group.throughput(Throughput::Elements(BURST));
    group.sample_size(10);

    let debouncer = Debouncer::builder(WAIT)
        .build_sync(|v: u64| {
            black_box(v);
        })
        .unwrap();
    group.bench_function("flowguard_debouncer", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                for i in 0..BURST {
                    debouncer.call(black_box(i)).unwrap();
                }
            }
            start.elapsed()
        })
    });

    let throttler = Throttler::builder(WAIT)
        .build_sync(|v: u64| {
            black_box(v);
        })
        .unwrap();
    group.bench_function("flowguard_throttler", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                for i in 0..BURST {
                    throttler.call(black_box(i)).unwrap();
                }
            }
            start.elapsed()
        })
    });

    let tx = hand_rolled(WAIT);
    group.bench_function("hand_rolled_watch_sleep_reset", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                for i in 0..BURST {
                    tx.send_replace(black_box(i));
                }
            }
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, call_burst);
criterion_main!(benches);
