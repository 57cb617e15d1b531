//! One pipeline around every call to a flaky downstream service, on Tokio's
//! paused clock (so it runs instantly and the times printed are exact).
//!
//! The downstream answers in 20 ms, except: from 1 s to 3 s it fails (a
//! 503) and from 3 s to 4 s it hangs. A caller makes a request every
//! 100 ms for 6 s through
//!
//!   fallback → 800 ms total timeout → retry (2, exponential 50 ms, budget)
//!   → circuit breaker → rate limit (20/s) → bulkhead (4) → 150 ms attempt timeout
//!
//! and the output shows the breaker's transitions, what each second's
//! callers got, and every layer's metrics at the end.
//!
//! Run it: `cargo run --example pipeline`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flowguard::breaker::{CircuitBreaker, StateChange};
use flowguard::pipeline::{Pipeline, PipelineError};
use flowguard::rate::{Quota, RateLimiter};
use flowguard::retry::{Backoff, RetryBudget, RetryPolicy};
use flowguard::semaphore::Semaphore;
use tokio::time::{Instant, sleep};

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Live(u32),
    Stale,
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let start = Instant::now();
    let secs = move |t: Instant| (t - start).as_secs_f64();

    let breaker = CircuitBreaker::builder()
        .count_window(10)
        .minimum_calls(5)
        .failure_rate_threshold(50.0)
        .open_wait(Duration::from_millis(700))
        .permitted_probes(2)
        .on_state_change(move |c: &StateChange| {
            println!("  [{:4.2}s] breaker {:?} -> {:?}", secs(c.at), c.from, c.to);
        })
        .build()
        .expect("valid breaker");
    let budget = RetryBudget::builder()
        .ratio(0.2)
        .min_per_sec(2)
        .build()
        .expect("valid budget");
    let pipeline = Pipeline::<Answer, &'static str>::builder()
        .timeout(Duration::from_millis(800))
        .retry(
            RetryPolicy::new()
                .max_retries(2)
                .backoff(Backoff::exponential(Duration::from_millis(50), 2.0))
                .budget(budget),
        )
        .breaker(breaker)
        .rate_limiter(RateLimiter::new(
            Quota::per_second(20).expect("valid quota"),
        ))
        .bulkhead(Semaphore::new(4))
        .attempt_timeout(Duration::from_millis(150))
        .fallback(|err| match err {
            // A refusal says nothing about our request: serve the cache.
            PipelineError::BreakerOpen { .. } | PipelineError::RateLimited { .. } => {
                Ok(Answer::Stale)
            }
            other => Err(other),
        })
        .build()
        .expect("valid pipeline");

    let downstream_calls = Arc::new(AtomicU32::new(0));
    let downstream = {
        let calls = downstream_calls.clone();
        move || {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            let at = start.elapsed();
            async move {
                if at >= Duration::from_secs(1) && at < Duration::from_secs(3) {
                    sleep(Duration::from_millis(20)).await;
                    Err("503")
                } else if at >= Duration::from_secs(3) && at < Duration::from_secs(4) {
                    sleep(Duration::from_secs(30)).await; // hangs
                    Ok(Answer::Live(n))
                } else {
                    sleep(Duration::from_millis(20)).await;
                    Ok(Answer::Live(n))
                }
            }
        }
    };

    println!("60 requests, one every 100 ms; the downstream fails 1–3 s, hangs 3–4 s:");
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..60u64 {
        let (pipeline, downstream) = (pipeline.clone(), downstream.clone());
        callers.spawn(async move {
            sleep(Duration::from_millis(100 * i)).await;
            let sent = Instant::now();
            let r = pipeline.call(downstream).await;
            (sent, r, sent.elapsed())
        });
    }
    // Per second: what the callers got.
    let mut table: BTreeMap<u64, BTreeMap<&'static str, u32>> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    while let Some(joined) = callers.join_next().await {
        let (sent, r, took) = joined.expect("caller panicked");
        slowest = slowest.max(took);
        let what = match r {
            Ok(Answer::Live(_)) => "live",
            Ok(Answer::Stale) => "stale (fallback)",
            Err(e) => match e.layer() {
                "retry" => "failed after retries",
                other => other,
            },
        };
        *table
            .entry((sent - start).as_secs())
            .or_default()
            .entry(what)
            .or_default() += 1;
    }
    println!("\n  second | what the 10 callers got");
    for (s, counts) in &table {
        let row: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!("  {s}–{}s   | {}", s + 1, row.join(", "));
    }
    let m = pipeline.metrics();
    let r = m.retry.expect("retry layer");
    let b = m.breaker.expect("breaker layer");
    println!("\n  slowest answer: {slowest:?} (the total timeout is 800 ms)");
    println!(
        "  downstream calls: {} for {} requests ({} retries, {} refused by the budget)",
        downstream_calls.load(Ordering::Relaxed),
        m.calls,
        r.retries,
        r.budget_refusals
    );
    println!(
        "  pipeline: {} ok ({} from the fallback), {} failed, {} timeouts, {} breaker refusals",
        m.succeeded, m.fallbacks, m.failed, m.timeouts, m.breaker_refusals
    );
    println!(
        "  breaker: {:?} after {} transitions",
        b.state, b.transitions
    );
}
