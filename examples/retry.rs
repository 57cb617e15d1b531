//! Retry with backoff, jitter, a deadline and a budget, on Tokio's paused
//! clock (so it runs instantly and the times printed are exact).
//!
//! 1. A flaky backend answers on the third try: exponential backoff
//!    (200 ms, 400 ms, …) brings the answer back.
//! 2. A 429 says "come back in 3 s": the `retry_after` hook waits exactly
//!    that, instead of the backoff.
//! 3. A deadline of 1 s: the retry never starts a sleep that would end past
//!    it, so the caller hears back in time.
//! 4. A dead backend and 1 000 callers: without a budget every caller
//!    retries 3 times (4 000 calls); with a 10 % budget the backend sees
//!    1 100 calls.
//!
//! Run it: `cargo run --example retry`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flowguard::retry::{Backoff, Jitter, Retry, RetryBudget, RetryError};
use tokio::time::Instant;

#[derive(Debug)]
enum HttpError {
    Unavailable,
    TooManyRequests { retry_after: Duration },
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    // 1. Flaky backend.
    println!("1. a backend that answers on the third try");
    let retry = Retry::<&str, HttpError>::builder()
        .max_retries(4)
        .backoff(Backoff::exponential(Duration::from_millis(200), 2.0))
        .retry_after(|r| match r {
            Err(HttpError::TooManyRequests { retry_after }) => Some(*retry_after),
            _ => None,
        })
        .build()
        .expect("valid settings");
    let start = Instant::now();
    let answer = retry
        .call_with_attempt(|attempt| async move {
            println!("   attempt {attempt} at {:?}", start.elapsed());
            if attempt < 3 {
                Err(HttpError::Unavailable)
            } else {
                Ok("hello")
            }
        })
        .await;
    println!("   -> {answer:?} after {:?}\n", start.elapsed());

    // 2. The server says when to come back.
    println!("2. a 429 with Retry-After: 3 s");
    let start = Instant::now();
    let answer = retry
        .call_with_attempt(|attempt| async move {
            println!("   attempt {attempt} at {:?}", start.elapsed());
            match attempt {
                1 => Err(HttpError::TooManyRequests {
                    retry_after: Duration::from_secs(3),
                }),
                _ => Ok("served"),
            }
        })
        .await;
    println!("   -> {answer:?} after {:?}\n", start.elapsed());

    // 3. A deadline.
    println!("3. a backend that is down, with a 1 s deadline");
    let quick = Retry::<(), HttpError>::builder()
        .max_retries(10)
        .backoff(Backoff::exponential(Duration::from_millis(100), 2.0))
        .timeout(Duration::from_secs(1))
        .build()
        .expect("valid settings");
    let start = Instant::now();
    let err = quick
        .call_with_attempt(|attempt| async move {
            println!("   attempt {attempt} at {:?}", start.elapsed());
            Err(HttpError::Unavailable)
        })
        .await
        .unwrap_err();
    println!(
        "   -> gave up after {} attempts at {:?}: {:?} (the next sleep would have ended past 1 s)\n",
        err.attempts(),
        start.elapsed(),
        err.error()
    );

    // 4. A retry storm, with and without a budget.
    println!("4. 1 000 callers, a dead backend, 3 retries each");
    for budget in [None, Some(0.1)] {
        let mut b = Retry::<(), HttpError>::builder()
            .max_retries(3)
            .backoff(Backoff::exponential(Duration::from_millis(50), 2.0))
            .jitter(Jitter::Full)
            .seed(7);
        if let Some(ratio) = budget {
            b = b.budget(
                RetryBudget::builder()
                    .ratio(ratio)
                    .min_per_sec(0)
                    .build()
                    .expect("valid budget"),
            );
        }
        let retry = b.build().expect("valid settings");
        let backend_calls = Arc::new(AtomicU32::new(0));
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..1000 {
            let (retry, calls) = (retry.clone(), backend_calls.clone());
            callers.spawn(async move {
                retry
                    .call(|| {
                        calls.fetch_add(1, Ordering::Relaxed);
                        async { Err(HttpError::Unavailable) }
                    })
                    .await
            });
        }
        let mut refused_by_budget = 0;
        while let Some(r) = callers.join_next().await {
            if let Err(RetryError::BudgetExhausted { .. }) = r.expect("no panic") {
                refused_by_budget += 1;
            }
        }
        let m = retry.metrics();
        println!(
            "   budget {:>8}: backend saw {:>5} calls ({} retries); {} callers stopped by the budget",
            budget.map_or("none".to_owned(), |r| format!("{:.0} %", r * 100.0)),
            backend_calls.load(Ordering::Relaxed),
            m.retries,
            refused_by_budget
        );
    }
}
