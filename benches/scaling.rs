//! Every shared hot path at 1, 2, 4, 8 and 16 threads (capped at the
//! machine's cores), flowguard beside its peers in the same criterion group
//! (issue 17). Run all of it (a few minutes on 16 cores) with
//! `cargo bench --bench scaling`, or one group with a filter, e.g.
//! `cargo bench --bench scaling -- scaling/rate_check`.
//!
//! Two kinds of rows:
//!
//! * **Threads** (`semaphore_try`, `rate_check`, `keyed_*`, `breaker_*`):
//!   `t` OS threads released together by a barrier each run the operation
//!   `iters` times; the time reported is the slowest thread's, so a row
//!   reads "time per operation, per thread, with `t` threads at it".
//! * **Runtime** (`semaphore_acquire`, `channel_*`, `pool_*`,
//!   `gather_spawn`): one `t`-worker multi-thread Tokio runtime per thread
//!   count, a fixed workload per iteration, reported per element
//!   (`Throughput::Elements`).
//!
//! Record the machine (cores, model), the load average before and after,
//! and the date with every table made from this file.

// Receivers of some peers need `&mut` to receive, others do not.
#![allow(unused_mut)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use failsafe::CircuitBreaker as _;
use flowguard::breaker::CircuitBreaker;
use flowguard::fanout::Gather;
use flowguard::pool::WorkerPool;
use flowguard::rate::{KeyedRateLimiter, Quota, RateLimiter};

/// Keeps a value (a permit: dropped right here) without letting the
/// compiler see through it.
#[inline]
fn sink<T>(t: T) {
    black_box(t);
}

/// The thread counts measured: 1, 2, 4, 8, 16, none above the machine's cores.
fn thread_counts() -> Vec<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    [1, 2, 4, 8, 16]
        .into_iter()
        .filter(|&t| t <= cores)
        .collect()
}

/// A short group: 10 samples, ~1.5 s per row.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200));
    g
}

/// Runs `op(thread_index, i)` for `i in 0..iters` on each of `threads` OS
/// threads started together; returns the slowest thread's time (criterion
/// divides by `iters`: time per operation per thread).
fn on_threads(threads: usize, iters: u64, op: impl Fn(usize, u64) + Sync) -> Duration {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, op) = (&barrier, &op);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        op(t, i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
    })
}

/// Builds a primitive as a service does, inside its (multi-thread) runtime:
/// its default clock then reads the CPU counter (see `clock::FastClock`).
/// Built outside any runtime it reads Tokio's clock; the `_tokio_clock`
/// rows measure that.
fn built_in_runtime<T>(make: impl FnOnce() -> T) -> T {
    let rt = runtime(1);
    let _in = rt.enter();
    make()
}

/// A `workers`-worker multi-thread Tokio runtime.
fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- semaphore

fn semaphore_try(c: &mut Criterion) {
    let mut g = group(c, "scaling/semaphore_try_acquire_drop");
    let fg = flowguard::semaphore::Semaphore::new(1024);
    let tk = tokio::sync::Semaphore::new(1024);
    for t in thread_counts() {
        g.bench_function(BenchmarkId::new("flowguard", t), |b| {
            b.iter_custom(|n| on_threads(t, n, |_, _| sink(fg.try_acquire())))
        });
        g.bench_function(BenchmarkId::new("tokio", t), |b| {
            b.iter_custom(|n| on_threads(t, n, |_, _| sink(tk.try_acquire())))
        });
    }
    g.finish();
}

const SEM_ROUNDS: u64 = 200;

/// 4 tasks per worker, permits = workers / 2 (at least 1), each task
/// `SEM_ROUNDS` times: acquire, yield, release.
fn semaphore_acquire(c: &mut Criterion) {
    let mut g = group(c, "scaling/semaphore_acquire_yield");
    for w in thread_counts() {
        let rt = runtime(w);
        let tasks = 4 * w as u64;
        let permits = (w / 2).max(1);
        g.throughput(Throughput::Elements(tasks * SEM_ROUNDS));
        g.bench_function(BenchmarkId::new("flowguard", w), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let sem = flowguard::semaphore::Semaphore::new(permits);
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..tasks {
                        let sem = sem.clone();
                        set.spawn(async move {
                            for _ in 0..SEM_ROUNDS {
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
        g.bench_function(BenchmarkId::new("tokio", w), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let sem = Arc::new(tokio::sync::Semaphore::new(permits));
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..tasks {
                        let sem = sem.clone();
                        set.spawn(async move {
                            for _ in 0..SEM_ROUNDS {
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
    }
    g.finish();
}

// --------------------------------------------------------------------- rate

const RATE: u32 = 1_000_000_000; // one token per ns: checks are admitted
const BURST: u32 = u32::MAX;

fn fg_quota() -> Quota {
    Quota::per_second(RATE).unwrap().with_burst(BURST).unwrap()
}

fn gov_quota() -> governor::Quota {
    governor::Quota::per_second(NonZeroU32::new(RATE).unwrap())
        .allow_burst(NonZeroU32::new(BURST).unwrap())
}

/// Each crate with its default clock.
fn rate_check(c: &mut Criterion) {
    let mut g = group(c, "scaling/rate_check");
    let fg = built_in_runtime(|| RateLimiter::new(fg_quota()));
    let fg_tokio = RateLimiter::new(fg_quota());
    let gov = governor::RateLimiter::direct(gov_quota());
    for t in thread_counts() {
        g.bench_function(BenchmarkId::new("flowguard", t), |b| {
            b.iter_custom(|n| on_threads(t, n, |_, _| sink(fg.try_acquire(1))))
        });
        g.bench_function(BenchmarkId::new("flowguard_tokio_clock", t), |b| {
            b.iter_custom(|n| on_threads(t, n, |_, _| sink(fg_tokio.try_acquire(1))))
        });
        g.bench_function(BenchmarkId::new("governor", t), |b| {
            b.iter_custom(|n| on_threads(t, n, |_, _| sink(gov.check())))
        });
    }
    g.finish();
}

/// The keyed rows' quota: one token a second, a burst of 10^9. Every check
/// is admitted and leaves its key busy (its bucket refills only after a
/// second), so flowguard's idle-key sweep keeps every key: with one token
/// per ns, as in `rate_check`, every key would be idle again a nanosecond
/// later and each check would measure an eviction and an insert, which
/// governor (it never evicts) does not do.
const KEYED_BURST: u32 = 1_000_000_000;

/// Thread `t` of `threads` walks the keys from its own offset.
#[inline]
fn key(keys: u64, threads: usize, t: usize, i: u64) -> u64 {
    (i + t as u64 * (keys / threads as u64)) % keys
}

fn keyed(c: &mut Criterion, keys: u64) {
    let mut g = group(c, &format!("scaling/keyed_check_{keys}_keys"));
    // Room for every key: the cap is not what is measured here.
    let fg = built_in_runtime(|| {
        KeyedRateLimiter::<u64>::builder(
            Quota::per_second(1)
                .unwrap()
                .with_burst(KEYED_BURST)
                .unwrap(),
        )
        .max_keys(2 * keys as usize)
        .build()
        .unwrap()
    });
    let gov = governor::RateLimiter::keyed(
        governor::Quota::per_second(NonZeroU32::new(1).unwrap())
            .allow_burst(NonZeroU32::new(KEYED_BURST).unwrap()),
    );
    for k in 0..keys {
        let _ = fg.try_acquire(&k, 1);
        let _ = gov.check_key(&k);
    }
    for t in thread_counts() {
        g.bench_function(BenchmarkId::new("flowguard", t), |b| {
            b.iter_custom(|n| {
                on_threads(t, n, |th, i| sink(fg.try_acquire(&key(keys, t, th, i), 1)))
            })
        });
        g.bench_function(BenchmarkId::new("governor", t), |b| {
            b.iter_custom(|n| on_threads(t, n, |th, i| sink(gov.check_key(&key(keys, t, th, i)))))
        });
    }
    g.finish();
}

fn keyed_10k(c: &mut Criterion) {
    keyed(c, 10_000);
}

fn keyed_1m(c: &mut Criterion) {
    keyed(c, 1_000_000);
}

// ------------------------------------------------------------------ breaker

const LONG: Duration = Duration::from_secs(3600);

#[inline(never)]
fn backend(ok: bool) -> Result<u64, u64> {
    if black_box(ok) {
        Ok(black_box(1))
    } else {
        Err(black_box(2))
    }
}

/// The breaker as a manual caller uses it: permit, call, report.
#[inline]
fn through(b: &CircuitBreaker, ok: bool) -> Result<u64, u64> {
    match b.try_acquire() {
        Ok(p) => {
            let r = backend(ok);
            if r.is_ok() {
                p.success()
            } else {
                p.failure()
            }
            r
        }
        Err(_) => Err(0),
    }
}

fn fg_consecutive() -> CircuitBreaker {
    CircuitBreaker::builder()
        .without_failure_rate()
        .without_slow_call_rate()
        .consecutive_failures(5)
        .open_wait(LONG)
        .build()
        .unwrap()
}

fn fg_default() -> CircuitBreaker {
    CircuitBreaker::builder().open_wait(LONG).build().unwrap()
}

fn fs_consecutive() -> impl failsafe::CircuitBreaker + Sync {
    failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            5,
            failsafe::backoff::constant(LONG),
        ))
        .build()
}

fn breaker_closed(c: &mut Criterion) {
    let mut g = group(c, "scaling/breaker_closed_call");
    let fc = built_in_runtime(fg_consecutive);
    let fd = built_in_runtime(fg_default);
    let fs = fs_consecutive();
    let rc = recloser::Recloser::custom().open_wait(LONG).build();
    for t in thread_counts() {
        g.bench_function(BenchmarkId::new("flowguard_consecutive", t), |b| {
            b.iter_custom(|n| on_threads(t, n, |_, _| sink(through(&fc, true))))
        });
        g.bench_function(BenchmarkId::new("flowguard_default", t), |b| {
            b.iter_custom(|n| on_threads(t, n, |_, _| sink(through(&fd, true))))
        });
        g.bench_function(BenchmarkId::new("failsafe_consecutive", t), |b| {
            b.iter_custom(|n| on_threads(t, n, |_, _| sink(fs.call(|| backend(true)))))
        });
        g.bench_function(BenchmarkId::new("recloser", t), |b| {
            b.iter_custom(|n| on_threads(t, n, |_, _| sink(rc.call(|| backend(true)))))
        });
    }
    g.finish();
}

fn breaker_open(c: &mut Criterion) {
    let mut g = group(c, "scaling/breaker_open_refusal");
    let fc = built_in_runtime(fg_consecutive);
    for _ in 0..5 {
        let _ = through(&fc, false);
    }
    assert!(fc.try_acquire().is_err());
    let fs = fs_consecutive();
    for _ in 0..5 {
        let _ = fs.call(|| backend(false));
    }
    assert!(!fs.is_call_permitted());
    let rc = recloser::Recloser::custom()
        .closed_len(4)
        .open_wait(LONG)
        .build();
    for _ in 0..10 {
        let _ = rc.call(|| backend(false));
    }
    assert!(matches!(
        rc.call(|| backend(true)),
        Err(recloser::Error::Rejected)
    ));
    for t in thread_counts() {
        g.bench_function(BenchmarkId::new("flowguard", t), |b| {
            b.iter_custom(|n| on_threads(t, n, |_, _| sink(through(&fc, true))))
        });
        g.bench_function(BenchmarkId::new("failsafe_consecutive", t), |b| {
            b.iter_custom(|n| on_threads(t, n, |_, _| sink(fs.call(|| backend(true)))))
        });
        g.bench_function(BenchmarkId::new("recloser", t), |b| {
            b.iter_custom(|n| on_threads(t, n, |_, _| sink(rc.call(|| backend(true)))))
        });
    }
    g.finish();
}

// ------------------------------------------------------------------ channel

const MSGS: u64 = 50_000;
const CAP: usize = 1024;

/// `producers` x `consumers` over one channel of capacity `CAP`, `MSGS`
/// messages in all; every message is counted on the way out.
macro_rules! channel_run {
    ($name:ident, make: $make:expr, send: |$tx:ident, $v:ident| $send:expr,
     recv: |$rx:ident| $recv:expr, clone_rx: |$crx:ident| $clone_rx:expr) => {
        async fn $name(producers: u64, consumers: u64) {
            let (tx, rx) = $make;
            let mut ps = Vec::new();
            for _ in 0..producers {
                let tx = tx.clone();
                ps.push(tokio::spawn(async move {
                    for i in 0..MSGS / producers {
                        let $tx = &tx;
                        let $v = i;
                        $send;
                    }
                }));
            }
            drop(tx);
            let mut rx = Some(rx);
            let mut cs = Vec::new();
            for c in 0..consumers {
                let mut rx = if c + 1 == consumers {
                    rx.take().unwrap()
                } else {
                    let $crx = rx.as_ref().unwrap();
                    $clone_rx
                };
                cs.push(tokio::spawn(async move {
                    let mut got = 0u64;
                    loop {
                        let $rx = &mut rx;
                        match $recv {
                            Some(v) => {
                                black_box(v);
                                got += 1;
                            }
                            None => break,
                        }
                    }
                    got
                }));
            }
            let mut got = 0;
            for c in cs {
                got += c.await.unwrap();
            }
            assert_eq!(got, MSGS / producers * producers);
            for p in ps {
                p.await.unwrap();
            }
        }
    };
}

channel_run!(fg_chan, make: flowguard::channel::bounded::<u64>(CAP).unwrap(),
    send: |tx, v| tx.send(v).await.unwrap(), recv: |rx| rx.recv().await,
    clone_rx: |rx| rx.clone());
channel_run!(tk_chan, make: tokio::sync::mpsc::channel::<u64>(CAP),
    send: |tx, v| tx.send(v).await.unwrap(), recv: |rx| rx.recv().await,
    clone_rx: |_rx| unreachable!("tokio mpsc has one receiver"));
channel_run!(ac_chan, make: async_channel::bounded::<u64>(CAP),
    send: |tx, v| tx.send(v).await.unwrap(), recv: |rx| rx.recv().await.ok(),
    clone_rx: |rx| rx.clone());
channel_run!(fl_chan, make: flume::bounded::<u64>(CAP),
    send: |tx, v| tx.send_async(v).await.unwrap(), recv: |rx| rx.recv_async().await.ok(),
    clone_rx: |rx| rx.clone());
channel_run!(kn_chan, make: kanal::bounded_async::<u64>(CAP),
    send: |tx, v| tx.send(v).await.unwrap(), recv: |rx| rx.recv().await.ok(),
    clone_rx: |rx| rx.clone());

/// MPSC: `t` producers, one consumer, on `t` workers.
fn channel_mpsc(c: &mut Criterion) {
    let mut g = group(c, "scaling/channel_mpsc_cap1024");
    g.throughput(Throughput::Elements(MSGS));
    for t in thread_counts() {
        let rt = runtime(t);
        let p = t as u64;
        g.bench_function(BenchmarkId::new("flowguard", t), |b| {
            b.iter(|| rt.block_on(fg_chan(p, 1)))
        });
        g.bench_function(BenchmarkId::new("tokio_mpsc", t), |b| {
            b.iter(|| rt.block_on(tk_chan(p, 1)))
        });
        g.bench_function(BenchmarkId::new("async_channel", t), |b| {
            b.iter(|| rt.block_on(ac_chan(p, 1)))
        });
        g.bench_function(BenchmarkId::new("flume", t), |b| {
            b.iter(|| rt.block_on(fl_chan(p, 1)))
        });
        g.bench_function(BenchmarkId::new("kanal", t), |b| {
            b.iter(|| rt.block_on(kn_chan(p, 1)))
        });
    }
    g.finish();
}

/// MPMC: `t/2` producers x `t/2` consumers (at least one each), on `t` workers.
fn channel_mpmc(c: &mut Criterion) {
    let mut g = group(c, "scaling/channel_mpmc_cap1024");
    g.throughput(Throughput::Elements(MSGS));
    for t in thread_counts() {
        let rt = runtime(t);
        let h = (t as u64 / 2).max(1);
        g.bench_function(BenchmarkId::new("flowguard", t), |b| {
            b.iter(|| rt.block_on(fg_chan(h, h)))
        });
        g.bench_function(BenchmarkId::new("async_channel", t), |b| {
            b.iter(|| rt.block_on(ac_chan(h, h)))
        });
        g.bench_function(BenchmarkId::new("flume", t), |b| {
            b.iter(|| rt.block_on(fl_chan(h, h)))
        });
        g.bench_function(BenchmarkId::new("kanal", t), |b| {
            b.iter(|| rt.block_on(kn_chan(h, h)))
        });
    }
    g.finish();
}

// --------------------------------------------------------- pool and gather

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

/// 1000 tasks, 64 at once, ready or yielding once: `WorkerPool` (with a
/// queue and without) against `JoinSet` + tokio `Semaphore`.
fn pool(c: &mut Criterion) {
    let mut g = group(c, "scaling/pool_1000_tasks_64_at_once");
    g.throughput(Throughput::Elements(TASKS));
    for w in thread_counts() {
        let rt = runtime(w);
        let (queued, unqueued) = rt.block_on(async {
            let b = || WorkerPool::builder().max_concurrency(LIMIT);
            (
                b().queue_capacity(TASKS as usize).build().unwrap(),
                b().queue_capacity(0).build().unwrap(),
            )
        });
        for (label, y) in [("ready", false), ("yield", true)] {
            g.bench_function(BenchmarkId::new(format!("flowguard/{label}"), w), |b| {
                b.iter(|| rt.block_on(flowguard_pool(&queued, y)))
            });
            g.bench_function(
                BenchmarkId::new(format!("flowguard_queue0/{label}"), w),
                |b| b.iter(|| rt.block_on(flowguard_pool(&unqueued, y))),
            );
            g.bench_function(
                BenchmarkId::new(format!("joinset_semaphore/{label}"), w),
                |b| b.iter(|| rt.block_on(hand_rolled(y))),
            );
        }
    }
    g.finish();
}

/// 1000 ready futures spawned and gathered: `Gather::spawn` against `JoinSet`.
fn gather_spawn(c: &mut Criterion) {
    let mut g = group(c, "scaling/gather_spawn_1000");
    g.throughput(Throughput::Elements(TASKS));
    for w in thread_counts() {
        let rt = runtime(w);
        g.bench_function(BenchmarkId::new("flowguard", w), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let futs = (0..TASKS).map(|i| async move { black_box(i) });
                    black_box(Gather::new(futs).spawn().build().unwrap().await)
                })
            })
        });
        g.bench_function(BenchmarkId::new("joinset", w), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut set = tokio::task::JoinSet::new();
                    for i in 0..TASKS {
                        set.spawn(async move { black_box(i) });
                    }
                    let mut out = Vec::with_capacity(TASKS as usize);
                    while let Some(v) = set.join_next().await {
                        out.push(v.unwrap());
                    }
                    black_box(out)
                })
            })
        });
    }
    g.finish();
}

criterion_group!(
    scaling,
    semaphore_try,
    semaphore_acquire,
    rate_check,
    keyed_10k,
    keyed_1m,
    breaker_closed,
    breaker_open,
    channel_mpsc,
    channel_mpmc,
    pool,
    gather_spawn
);
criterion_main!(scaling);
