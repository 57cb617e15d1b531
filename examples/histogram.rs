//! The latency histogram on its own, and the one inside a primitive's
//! `metrics()`: eight tasks record simulated request latencies into one
//! shared `Histogram` (lock-free, no allocation per record); then a rate
//! limiter's own wait histogram shows who had to queue for a token.
//!
//! Run: `cargo run --example histogram`

use std::sync::Arc;
use std::time::Duration;

use flowguard::histogram::{Histogram, HistogramSnapshot};
use flowguard::rate::{Quota, RateLimiter};

fn line(what: &str, s: &HistogramSnapshot) {
    println!(
        "{what:<28} n={:<5} p50 {:>9.3?}  p90 {:>9.3?}  p99 {:>9.3?}  p999 {:>9.3?}  max {:>9.3?}",
        s.count(),
        s.quantile_duration(0.5),
        s.quantile_duration(0.9),
        s.quantile_duration(0.99),
        s.quantile_duration(0.999),
        s.max_duration()
    );
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    // 1. A shared histogram: 8 tasks x 1000 requests, a fast body and a slow tail.
    let latency = Arc::new(Histogram::new());
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let latency = latency.clone();
            tokio::spawn(async move {
                for i in 0..1000u64 {
                    let x = (t * 1000 + i).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                    let micros = if x % 100 == 0 {
                        50_000 + x % 50_000
                    } else {
                        800 + x % 2_000
                    };
                    latency.record_duration(Duration::from_micros(micros));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    line("simulated requests", &latency.snapshot());

    // 2. A primitive's own histogram: 20 acquires against 10/s, burst 5.
    let limiter = RateLimiter::new(Quota::per_second(10).unwrap().with_burst(5).unwrap());
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire(1).await.unwrap() })
        })
        .collect();
    for c in callers {
        c.await.unwrap();
    }
    let wait = limiter.snapshot().wait;
    line("rate-limit waits (queued)", &wait);
    println!(
        "{} of 20 callers queued (the burst of 5 went through at once); the last waited {:?}",
        wait.count(),
        wait.max_duration()
    );
    assert_eq!(wait.count(), 15);
    assert_eq!(wait.max_duration(), Duration::from_millis(1500));
}
