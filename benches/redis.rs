//! flowguard::rate::RedisRateLimiter against a local Redis: admitted checks
//! per second from one process, one round trip per check vs the local
//! reservation (10 tokens per round trip), beside the naive fixed-window
//! limiter (`INCR` + `EXPIRE` in one pipeline) on the same server, in one
//! criterion group.
//!
//! Needs a server: `FLOWGUARD_REDIS_URL` (default `redis://127.0.0.1:6379/`).
//! Without one it says so and measures nothing. Every quota is so generous
//! that every check is admitted (the measured path is the admission).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use flowguard::rate::{Quota, RedisClient, RedisRateLimiter};

fn url() -> String {
    std::env::var("FLOWGUARD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn quota() -> Quota {
    Quota::per_second(u32::MAX).unwrap()
}

fn single_check(c: &mut Criterion) {
    let url = url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reachable = rt.block_on(async {
        let client = redis::Client::open(url.as_str()).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    });
    if reachable.is_none() {
        eprintln!("benches/redis: no Redis at {url} (set FLOWGUARD_REDIS_URL); nothing measured");
        return;
    }
    let mut g = c.benchmark_group("redis/admitted_check_1_task");
    let build = |key: &str, batch: u32| {
        let _guard = rt.enter();
        let mut b =
            RedisRateLimiter::builder(RedisClient::open(url.as_str()).unwrap(), key, quota())
                .call_timeout(Duration::from_secs(1));
        if batch > 1 {
            b = b.local_reservation(batch, Duration::from_millis(50));
        }
        b.build().unwrap()
    };
    let single = build("flowguard-bench:single", 1);
    g.bench_function("flowguard/round_trip_per_check", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(single.try_acquire(1).await) })
    });
    let reserved = build("flowguard-bench:reserved", 10);
    g.bench_function("flowguard/local_reservation_10", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(reserved.try_acquire(1).await) })
    });
    let conn = rt.block_on(async {
        redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    });
    g.bench_function("naive/incr_expire_fixed_window", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = conn.clone();
            async move {
                // One-second window: INCR, set the expiry on first use, compare.
                let (count,): (u64,) = redis::pipe()
                    .cmd("INCR")
                    .arg("flowguard-bench:naive")
                    .cmd("EXPIRE")
                    .arg("flowguard-bench:naive")
                    .arg(1)
                    .arg("NX")
                    .ignore()
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                black_box(count <= u64::from(u32::MAX))
            }
        })
    });
    g.finish();
}

criterion_group!(benches, single_check);
criterion_main!(benches);
