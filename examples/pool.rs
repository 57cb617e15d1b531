//! The seeds' claims about worker pools, with real numbers.
//!
//! `cargo run --example pool`
//!
//! Part 1 runs 1000 "requests" that each wait 100 ms of simulated I/O, first
//! one after another, then through `WorkerPool`s of 8, 64 and 1000. It uses
//! Tokio's paused clock, so the 100 s of simulated waiting take no real time
//! and the totals are exact.
//!
//! Part 1b queues one low-priority report behind a steady stream of
//! high-priority requests and prints when it starts: never while the stream
//! lasts with strict priorities, within a bounded number of starts with
//! `priority_aging`.
//!
//! Part 2 runs CPU-heavy work next to a 10 ms heartbeat task, first inline on
//! the async runtime, then on a `CpuPool`, and prints how late the heartbeat
//! fired. This part uses the real clock.

use std::time::{Duration, Instant as StdInstant};

use flowguard::pool::{CpuPool, WorkerPool};
use futures::StreamExt;
use tokio::time::{Instant, sleep};

const REQUESTS: usize = 1000;
const IO_WAIT: Duration = Duration::from_millis(100);

async fn fake_request(i: usize) -> usize {
    sleep(IO_WAIT).await; // a database or HTTP round trip
    i
}

async fn io_bound() {
    println!("Part 1: {REQUESTS} requests, each waiting {IO_WAIT:?} on I/O (simulated clock)\n");

    let start = Instant::now();
    for i in 0..REQUESTS {
        fake_request(i).await;
    }
    let sequential = start.elapsed();
    println!(
        "  one after another        : {:>8.1} s",
        sequential.as_secs_f64()
    );

    for limit in [8, 64, 1000] {
        let pool = WorkerPool::builder()
            .max_concurrency(limit)
            .queue_capacity(REQUESTS)
            .build()
            .expect("valid pool config");
        let start = Instant::now();
        let done = pool
            .map_unordered(0..REQUESTS, fake_request)
            .filter(|r| std::future::ready(r.is_ok()))
            .count()
            .await;
        let took = start.elapsed();
        let m = pool.metrics();
        println!(
            "  WorkerPool, {limit:>4} at once : {:>8.1} s  ({done} done, {} completed in metrics, {:.0}x faster)",
            took.as_secs_f64(),
            m.completed,
            sequential.as_secs_f64() / took.as_secs_f64(),
        );
    }
    println!(
        "\n  Latency is ceil({REQUESTS} / limit) rounds of {IO_WAIT:?}: the wait overlaps, the work does not pile up.\n"
    );
}

/// One slot; a report at priority 0 queued behind a stream of priority-10
/// requests of 10 ms each (each queues the next as it starts). Returns when
/// the report started.
async fn report_start(aging: Option<usize>, stream: usize) -> Duration {
    let mut builder = WorkerPool::builder().max_concurrency(1);
    if let Some(n) = aging {
        builder = builder.priority_aging(n);
    }
    let pool = builder.build().expect("valid pool config");
    let t0 = Instant::now();
    let busy = pool
        .submit(sleep(Duration::from_millis(10)))
        .await
        .expect("open");
    let report = pool
        .submit_with_priority(async move { t0.elapsed() }, 0)
        .await
        .expect("open");
    fn request(pool: WorkerPool, left: usize) {
        let next = pool.clone();
        let work = async move {
            if left > 1 {
                request(next, left - 1);
            }
            sleep(Duration::from_millis(10)).await;
        };
        drop(pool.try_submit_with_priority(work, 10));
    }
    request(pool.clone(), stream);
    busy.await.expect("ran");
    report.await.expect("ran")
}

async fn priorities() {
    println!(
        "Part 1b: one low-priority report behind a stream of 100 urgent requests (simulated clock)\n"
    );
    let strict = report_start(None, 100).await;
    println!(
        "  strict priorities        : report starts at {:>5} ms (after the whole stream)",
        strict.as_millis()
    );
    for n in [5, 20] {
        let aged = report_start(Some(n), 100).await;
        println!(
            "  priority_aging({n:>2})       : report starts at {:>5} ms (newcomers 10 levels higher overtake it for 10 x {n} = {} starts at most)",
            aged.as_millis(),
            10 * n
        );
    }
    println!();
}

/// About `ms` milliseconds of real CPU work.
fn crunch(ms: u64) -> u64 {
    let until = StdInstant::now() + Duration::from_millis(ms);
    let mut x = 0u64;
    while StdInstant::now() < until {
        for i in 0..10_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
    }
    x
}

/// Runs a 10 ms heartbeat for `span` and returns the worst lateness seen.
async fn heartbeat(span: Duration) -> Duration {
    let mut worst = Duration::ZERO;
    let end = StdInstant::now() + span;
    let mut next = StdInstant::now() + Duration::from_millis(10);
    while StdInstant::now() < end {
        tokio::time::sleep_until(next.into()).await;
        worst = worst.max(StdInstant::now().saturating_duration_since(next));
        next += Duration::from_millis(10);
    }
    worst
}

async fn cpu_bound() {
    println!("Part 2: 4 jobs of 100 ms CPU work beside a 10 ms heartbeat (real clock)\n");

    // Inline: the CPU work runs on the runtime's only thread.
    let beat = tokio::spawn(heartbeat(Duration::from_millis(600)));
    tokio::task::yield_now().await;
    for _ in 0..4 {
        std::hint::black_box(crunch(100));
        tokio::task::yield_now().await;
    }
    let inline_worst = beat.await.expect("heartbeat task");
    println!(
        "  CPU work inline on the runtime : heartbeat up to {:>6.1} ms late",
        ms(inline_worst)
    );

    // On a CpuPool: the runtime thread stays free.
    let pool = CpuPool::builder()
        .threads(2)
        .build()
        .expect("valid pool config");
    let beat = tokio::spawn(heartbeat(Duration::from_millis(600)));
    let jobs: Vec<_> = (0..4).map(|_| pool.run(|| crunch(100))).collect();
    for r in futures::future::join_all(jobs).await {
        std::hint::black_box(r.expect("job ran"));
    }
    let pooled_worst = beat.await.expect("heartbeat task");
    println!(
        "  CPU work on a CpuPool          : heartbeat up to {:>6.1} ms late",
        ms(pooled_worst)
    );
    let report = pool.shutdown_timeout(Duration::from_secs(5)).await;
    println!(
        "\n  CpuPool shut down: drained = {}, {} jobs completed in all.",
        report.drained,
        pool.metrics().completed
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    paused.block_on(io_bound());
    paused.block_on(priorities());

    let real = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    real.block_on(cpu_bound());
}
