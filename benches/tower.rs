//! The tower layers' own cost, each group with tower's layer for the same
//! policy side by side, through `ServiceExt::oneshot` on a service that
//! answers at once (on a current-thread runtime; `tower/rate_limit` on a
//! multi-thread runtime too, as `<side>/multi_thread`, since flowguard's
//! default clock reads differently there):
//!
//! * `tower/concurrency_limit`: 64 in flight; flowguard's
//!   `ConcurrencyLimitLayer` (and `LoadShedLayer`, which never waits)
//!   against tower's `ConcurrencyLimitLayer`.
//! * `tower/rate_limit`: a quota that never runs out (10⁹ per second);
//!   flowguard's `RateLimitLayer::wait` (wait for a token, one budget
//!   shared by every clone) and `::shed`, and `PerServiceRateLimitLayer::wait`
//!   (tower's policy: a budget per service value, held inline), against
//!   tower's `RateLimitLayer`.
//! * `tower/timeout`: one hour; flowguard's `TimeoutLayer` against tower's.
//!
//! Each iteration makes one service call on one long-lived service value
//! (`(&mut svc).oneshot(req)`: `poll_ready`, then `call`, then the
//! response). The target (issue 12) is flowguard at most 1.0× tower for
//! the same policy. Run:
//! `cargo bench --bench tower -- --warm-up-time 1 --measurement-time 3`.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use flowguard::rate::{Quota, RateLimiter};
use flowguard::tower as fg;
use tower::{Layer, Service, ServiceExt, service_fn};

const LONG: Duration = Duration::from_secs(3600);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn echo()
-> impl Service<u64, Response = u64, Error = Infallible, Future = Ready<Result<u64, Infallible>>> + Clone
{
    service_fn(|n: u64| ready(Ok(black_box(n))))
}

/// Times `iters` calls of `svc`, one after another.
fn run<S>(rt: &tokio::runtime::Runtime, svc: &mut S, iters: u64) -> Duration
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..iters {
            black_box((&mut *svc).oneshot(i).await.unwrap());
        }
        start.elapsed()
    })
}

fn quota() -> Quota {
    Quota::per_second(1_000_000_000)
        .unwrap()
        .with_burst(1_000_000_000)
        .unwrap()
}

fn limiter() -> RateLimiter {
    RateLimiter::new(quota())
}

fn concurrency_limit(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("tower/concurrency_limit");
    let mut svc = fg::ConcurrencyLimitLayer::new(64).unwrap().layer(echo());
    g.bench_function("flowguard", |b| b.iter_custom(|n| run(&rt, &mut svc, n)));
    let mut svc = fg::LoadShedLayer::new(64).unwrap().layer(echo());
    g.bench_function("flowguard_load_shed", |b| {
        b.iter_custom(|n| run(&rt, &mut svc, n))
    });
    let mut svc = tower::limit::ConcurrencyLimitLayer::new(64).layer(echo());
    g.bench_function("tower", |b| b.iter_custom(|n| run(&rt, &mut svc, n)));
    g.finish();
}

fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn rate_limit(c: &mut Criterion) {
    let mut g = c.benchmark_group("tower/rate_limit");
    // Both flavours, each side's services made inside the runtime that
    // drives them (tower's limiter arms a timer when built; flowguard's
    // default clock reads the CPU counter when made inside a multi-thread
    // runtime, Tokio's clock inside a current-thread one).
    for (flavour, rt) in [
        ("current_thread", runtime()),
        ("multi_thread", multi_thread_runtime()),
    ] {
        let mut svc = rt.block_on(async { fg::RateLimitLayer::wait(limiter()).layer(echo()) });
        g.bench_function(format!("flowguard_wait/{flavour}"), |b| {
            b.iter_custom(|n| run(&rt, &mut svc, n))
        });
        let mut svc = rt.block_on(async { fg::RateLimitLayer::shed(limiter()).layer(echo()) });
        g.bench_function(format!("flowguard_shed/{flavour}"), |b| {
            b.iter_custom(|n| run(&rt, &mut svc, n))
        });
        // tower's policy exactly: a budget per service value, waiting.
        let mut svc =
            rt.block_on(async { fg::PerServiceRateLimitLayer::wait(quota()).layer(echo()) });
        g.bench_function(format!("flowguard_per_service/{flavour}"), |b| {
            b.iter_custom(|n| run(&rt, &mut svc, n))
        });
        let mut svc = rt.block_on(async {
            tower::limit::RateLimitLayer::new(1_000_000_000, Duration::from_secs(1)).layer(echo())
        });
        g.bench_function(format!("tower/{flavour}"), |b| {
            b.iter_custom(|n| run(&rt, &mut svc, n))
        });
    }
    g.finish();
}

fn timeout(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("tower/timeout");
    let mut svc = fg::TimeoutLayer::new(LONG).unwrap().layer(echo());
    g.bench_function("flowguard", |b| b.iter_custom(|n| run(&rt, &mut svc, n)));
    let mut svc = tower::timeout::TimeoutLayer::new(LONG).layer(echo());
    g.bench_function("tower", |b| b.iter_custom(|n| run(&rt, &mut svc, n)));
    g.finish();
}

criterion_group!(benches, concurrency_limit, rate_limit, timeout);
criterion_main!(benches);
