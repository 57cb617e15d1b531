//! N replicas share one quota through Redis: each takes tokens as fast as
//! the shared bucket allows for a few seconds, then each one's count and the
//! total are printed against what the quota allows.
//!
//! ```text
//! FLOWGUARD_REDIS_URL=redis://127.0.0.1:6379/ cargo run --example redis_fleet --features redis -- 8 3
//! ```
//!
//! Arguments: replicas (default 8) and seconds (default 3). Without a Redis
//! at `FLOWGUARD_REDIS_URL` it runs the same fleet on the in-process
//! `MemoryStore` and says so.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowguard::rate::{AcquireError, MemoryStore, Quota, RedisClient, RedisRateLimiter};
use tokio::time::Instant;

const RATE: u32 = 100;
const BURST: u32 = 10;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let replicas: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let quota = Quota::per_second(RATE).unwrap().with_burst(BURST).unwrap();
    let url =
        std::env::var("FLOWGUARD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let key = format!(
        "flowguard-example:{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );

    // One limiter per replica, each with its own connection.
    let memory = MemoryStore::new();
    let mut limiters = Vec::new();
    let probe = RedisRateLimiter::builder(
        RedisClient::open(url.as_str()).unwrap(),
        key.as_str(),
        quota,
    )
    .build()
    .unwrap();
    let on_redis = probe.ping().await.is_ok();
    for _ in 0..replicas {
        let builder = if on_redis {
            RedisRateLimiter::builder(
                RedisClient::open(url.as_str()).unwrap(),
                key.as_str(),
                quota,
            )
        } else {
            RedisRateLimiter::builder_in_memory(&memory, key.as_str(), quota)
        };
        limiters.push(
            builder
                .call_timeout(Duration::from_secs(1))
                .build()
                .unwrap(),
        );
    }
    if on_redis {
        println!(
            "{replicas} replicas sharing {RATE}/s (burst {BURST}) in Redis at {url}, for {seconds} s"
        );
    } else {
        println!(
            "no Redis at {url}: {replicas} replicas on the in-process MemoryStore instead, for {seconds} s"
        );
    }

    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = limiters
        .iter()
        .cloned()
        .map(|limiter| {
            tokio::spawn(async move {
                let mut admitted = 0u64;
                loop {
                    match limiter.acquire_deadline(1, end).await {
                        Ok(()) => admitted += 1,
                        Err(AcquireError::Timeout { .. }) => return admitted,
                        Err(e) => {
                            eprintln!("replica stopped: {e}");
                            return admitted;
                        }
                    }
                }
            })
        })
        .collect();
    let mut total = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        let n = task.await.unwrap();
        total += n;
        let m = limiters[i].metrics();
        println!(
            "replica {i}: admitted {n:5}  round trips {:6}  mean round trip {:?}",
            m.round_trips,
            m.round_trip_mean().unwrap_or_default()
        );
    }
    let elapsed = start.elapsed();
    let allowed =
        u64::from(BURST) + (elapsed.as_nanos() / quota.emission_interval().as_nanos()) as u64;
    println!(
        "total admitted {total} in {elapsed:.2?}; the quota allows at most {allowed} (burst {BURST} + {RATE}/s)"
    );
}
