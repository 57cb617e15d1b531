//! Pipeline overhead, each group with its peers side by side:
//!
//! * `pipeline/breaker_rate_timeout`: breaker + rate limiter + timeout as a
//!   `Pipeline`, against the same three used by hand (permit, token,
//!   `tokio::time::timeout`, report); the target is at most 1.2× by hand.
//! * `pipeline/retry_timeout_limit`: retry (3, no delay) + timeout +
//!   concurrency limit, as a `Pipeline`, by hand (a loop around a semaphore
//!   and a timeout) and as tower's `RetryLayer` + `TimeoutLayer` +
//!   `ConcurrencyLimitLayer`.
//!
//! The operation succeeds at once; the numbers are the layers' own cost on
//! a current-thread runtime. Run:
//! `cargo bench --bench pipeline -- --warm-up-time 1 --measurement-time 3`.

use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use flowguard::breaker::CircuitBreaker;
use flowguard::pipeline::{Admission, Pipeline};
use flowguard::rate::{Quota, RateLimiter};
use flowguard::retry::{Backoff, RetryPolicy};
use flowguard::semaphore::Semaphore;
use tower::{Service, ServiceBuilder, ServiceExt};

const LONG: Duration = Duration::from_secs(3600);

/// The operation's error (an `std::error::Error`, which tower's timeout
/// layer needs to box it).
#[derive(Debug)]
struct Fail;

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fail")
    }
}

impl std::error::Error for Fail {}

#[inline(never)]
async fn backend() -> Result<u64, Fail> {
    Ok(black_box(1))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn limiter() -> RateLimiter {
    let q = Quota::per_second(1_000_000_000)
        .unwrap()
        .with_burst(1_000_000_000)
        .unwrap();
    RateLimiter::new(q)
}

fn breaker() -> CircuitBreaker {
    CircuitBreaker::builder().open_wait(LONG).build().unwrap()
}

/// Retries up to 3 times on error (the tower peer's policy).
#[derive(Clone)]
struct Attempts(u32);

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for Attempts {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        match result {
            Err(_) if self.0 > 0 => {
                self.0 -= 1;
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

fn bench(c: &mut Criterion) {
    let rt = runtime();

    let mut g = c.benchmark_group("pipeline/breaker_rate_timeout");
    let (b, l) = (breaker(), limiter());
    g.bench_function("by_hand", |bench| {
        bench.to_async(&rt).iter(|| async {
            let permit = b.try_acquire().map_err(|_| Fail)?;
            l.try_acquire(1).map_err(|_| Fail)?;
            let r = match tokio::time::timeout(LONG, backend()).await {
                Ok(r) => r,
                Err(_) => Err(Fail),
            };
            if r.is_ok() {
                permit.success()
            } else {
                permit.failure()
            }
            r
        })
    });
    let p = Pipeline::<u64, Fail>::builder()
        .timeout(LONG)
        .breaker(breaker())
        .rate_limiter_with(limiter(), Admission::Shed)
        .build()
        .unwrap();
    g.bench_function("flowguard_pipeline", |bench| {
        bench.to_async(&rt).iter(|| p.call(backend))
    });
    g.finish();

    let mut g = c.benchmark_group("pipeline/retry_timeout_limit");
    let sem = Semaphore::new(64);
    g.bench_function("by_hand", |bench| {
        bench.to_async(&rt).iter(|| async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let _slot = sem.acquire().await.map_err(|_| Fail)?;
                let r = match tokio::time::timeout(LONG, backend()).await {
                    Ok(r) => r,
                    Err(_) => Err(Fail),
                };
                match r {
                    Err(_) if attempt <= 3 => continue,
                    r => return r,
                }
            }
        })
    });
    let p = Pipeline::<u64, Fail>::builder()
        .retry(
            RetryPolicy::new()
                .max_retries(3)
                .backoff(Backoff::constant(Duration::ZERO)),
        )
        .attempt_timeout(LONG)
        .bulkhead(Semaphore::new(64))
        .build()
        .unwrap();
    g.bench_function("flowguard_pipeline", |bench| {
        bench.to_async(&rt).iter(|| p.call(backend))
    });
    let svc = rt.block_on(async {
        ServiceBuilder::new()
            .retry(Attempts(3))
            .timeout(LONG)
            .concurrency_limit(64)
            .service_fn(|_: ()| backend())
    });
    g.bench_function("tower", |bench| {
        bench.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            async move { svc.ready().await?.call(()).await }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
