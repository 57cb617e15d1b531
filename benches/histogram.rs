//! What the histograms cost. `record` alone against the one atomic add a
//! plain counter costs; then each instrumented hot path with its
//! histograms on and off, in the same group: a queued semaphore acquire
//! (the only acquire that records), a pool submit-and-await, a breaker
//! call, a channel send that waits for room (the only send that records).
//! Target: on within +10 % of off. The semaphore's and breaker's
//! histograms sample when events are frequent (see `flowguard::histogram`,
//! "Sampled timing"): a run times every event for its first millisecond,
//! then about one in 64; the row "every event timed"
//! (`histogram_max_one_in(1)`) shows what timing each one costs. Run:
//! `cargo bench --bench histogram -- --warm-up-time 1 --measurement-time 3`.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use flowguard::breaker::CircuitBreaker;
use flowguard::histogram::Histogram;
use flowguard::pool::WorkerPool;
use flowguard::semaphore::Semaphore;

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("histogram/record");
    let h = Histogram::new();
    let mut v = 1u64;
    g.bench_function("flowguard Histogram::record", |b| {
        b.iter(|| {
            // A spread of magnitudes, as latencies in ns have.
            v = v
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            h.record(black_box(v >> 40));
        })
    });
    let counter = AtomicU64::new(0);
    g.bench_function("AtomicU64::fetch_add (a plain counter)", |b| {
        b.iter(|| counter.fetch_add(black_box(1), Ordering::Relaxed))
    });
    g.finish();
}

/// One acquire that queues: poll (enqueue), release, poll (granted).
fn queued_acquire(sem: &Semaphore) {
    let cx = &mut Context::from_waker(Waker::noop());
    let held = sem.try_acquire().unwrap();
    let mut waiting = pin!(sem.acquire());
    assert!(waiting.as_mut().poll(cx).is_pending());
    drop(held);
    match waiting.as_mut().poll(cx) {
        Poll::Ready(p) => drop(black_box(p.unwrap())),
        Poll::Pending => unreachable!("the permit was handed over"),
    }
}

/// Both runtime flavours: the semaphore times waits with a `FastClock`
/// made when it is built, which reads the CPU's counter inside a
/// multi-thread runtime and Tokio's clock elsewhere. Iterations run inside
/// the runtime's context, as an acquire in a task does.
fn semaphore(c: &mut Criterion) {
    let mut g = c.benchmark_group("histogram/semaphore queued acquire");
    let flavours = [
        (
            "current-thread",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        ),
        (
            "multi-thread",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap(),
        ),
    ];
    for (flavour, rt) in &flavours {
        let _in_runtime = rt.enter();
        for (on, max_one_in, state) in [
            (true, 64, "on"),
            (false, 64, "off"),
            (true, 1, "on, every event timed"),
        ] {
            let sem = Semaphore::builder()
                .capacity(1)
                .histograms(on)
                .histogram_max_one_in(max_one_in)
                .build()
                .unwrap();
            g.bench_function(format!("histograms {state}, {flavour} runtime"), |b| {
                b.iter(|| queued_acquire(&sem))
            });
        }
    }
    g.finish();
}

fn pool(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("histogram/pool submit+await");
    for on in [true, false] {
        let pool = rt.block_on(async {
            WorkerPool::builder()
                .max_concurrency(4)
                .histograms(on)
                .build()
                .unwrap()
        });
        g.bench_function(
            if on {
                "histograms on"
            } else {
                "histograms off"
            },
            |b| {
                b.to_async(&rt).iter(|| async {
                    black_box(pool.submit(async { 1u32 }).await.unwrap().await.unwrap())
                })
            },
        );
    }
    g.finish();
}

fn breaker(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // The breaker's default clock is Tokio's when the breaker is made in a
    // current-thread runtime (a paused test clock can move it) and the
    // CPU's counter when made in a multi-thread one, as a server's are:
    // timing a call costs two reads of it, so both are measured.
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("histogram/breaker call");
    for (on, counter_clock, max_one_in) in [
        (true, false, 64),
        (false, false, 64),
        (true, true, 64),
        (false, true, 64),
        (true, false, 1),
        (true, true, 1),
    ] {
        let make = || {
            CircuitBreaker::builder()
                .histograms(on)
                .histogram_max_one_in(max_one_in)
                .build()
                .unwrap()
        };
        let b = if counter_clock {
            let _in_multi = multi.enter();
            make()
        } else {
            rt.block_on(async { make() })
        };
        let name = match (on, counter_clock, max_one_in) {
            (true, false, 1) => "histograms on, every call timed",
            (true, true, 1) => "histograms on, every call timed, counter clock",
            (true, false, _) => "histograms on",
            (false, false, _) => "histograms off",
            (true, true, _) => "histograms on, counter clock",
            (false, true, _) => "histograms off, counter clock",
        };
        g.bench_function(name, |bench| {
            bench
                .to_async(&rt)
                .iter(|| async { black_box(b.call(|| async { Ok::<_, ()>(1u32) }).await.unwrap()) })
        });
    }
    g.finish();
}

/// One send that waits for room: poll (queued, the channel is full),
/// receive (room), poll (sent), receive again. Histograms are on by
/// default; the waiting send reads `std::time::Instant` twice.
fn channel(c: &mut Criterion) {
    let mut g = c.benchmark_group("histogram/channel queued send");
    for on in [true, false] {
        let (tx, rx) = flowguard::channel::Builder::<u32>::new(1)
            .histograms(on)
            .build()
            .unwrap();
        tx.try_send(0).unwrap();
        let cx = &mut Context::from_waker(Waker::noop());
        g.bench_function(
            if on {
                "histograms on"
            } else {
                "histograms off"
            },
            |b| {
                b.iter(|| {
                    let mut send = pin!(tx.send(1));
                    assert!(send.as_mut().poll(cx).is_pending());
                    black_box(rx.try_recv().unwrap());
                    assert!(send.as_mut().poll(cx).is_ready());
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, record, semaphore, pool, breaker, channel);
criterion_main!(benches);
