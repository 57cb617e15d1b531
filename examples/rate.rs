//! A client holding 10 requests/s with bursts of 5 against a burst of 100
//! calls, then a keyed limiter giving each tenant its own budget.
//!
//! Runs on Tokio's paused clock, so it finishes at once while printing the
//! times a real client would see.
//!
//! ```text
//! cargo run --example rate
//! ```

use std::time::Duration;

use flowguard::rate::{KeyedRateLimiter, Quota, RateLimiter, TryAcquireError};
use tokio::time::Instant;

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let quota = Quota::per_second(10).unwrap().with_burst(5).unwrap();
    println!(
        "quota: one token every {:?}, bursts of up to {}",
        quota.emission_interval(),
        quota.burst()
    );
    let limiter = RateLimiter::new(quota);

    // 100 calls arrive at once; each waits its turn in the fair queue.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for call in 0..100u32 {
        let limiter = limiter.clone();
        tasks.push(tokio::spawn(async move {
            limiter.acquire(1).await.unwrap();
            (call, start.elapsed())
        }));
        tokio::task::yield_now().await; // arrive in call order
    }
    let s = limiter.snapshot();
    println!(
        "queued after the burst: {} callers waiting for {} tokens",
        s.waiters, s.queued_tokens
    );
    let mut admitted = Vec::new();
    for t in tasks {
        admitted.push(t.await.unwrap());
    }
    for (call, at) in admitted.iter().filter(|(c, _)| *c < 8 || *c >= 97) {
        println!("call {call:>3} admitted at {:>6} ms", at.as_millis());
    }
    let last = admitted.last().unwrap().1;
    println!(
        "100 calls took {:.1} s: 5 at once, then 95 more at 10 per second",
        last.as_secs_f64()
    );

    // A caller that would rather not wait is told exactly when to retry.
    match limiter.try_acquire(1) {
        Err(TryAcquireError::NotUntil { retry_after }) => println!(
            "try_acquire now: refused, retry in {} ms",
            (retry_after - Instant::now()).as_millis()
        ),
        other => println!("try_acquire now: {other:?}"),
    }

    // One bucket per tenant: 2 requests per second each, bursts of 2.
    println!();
    let per_tenant = KeyedRateLimiter::new(Quota::per_second(2).unwrap());
    for (i, tenant) in ["acme", "acme", "acme", "globex", "acme", "globex", "globex"]
        .iter()
        .enumerate()
    {
        let verdict = match per_tenant.try_acquire(tenant, 1) {
            Ok(()) => "admitted".to_string(),
            Err(e) => format!(
                "refused, retry in {} ms",
                e.wait_time_from(Instant::now())
                    .unwrap_or_default()
                    .as_millis()
            ),
        };
        println!("request {i} from {tenant:<6}: {verdict}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "one second later acme: {:?}",
        per_tenant.try_acquire(&"acme", 2).map(|_| "2 admitted")
    );
    println!(
        "tenants tracked: {} (idle ones are evicted as the map is used)",
        per_tenant.len()
    );
}
