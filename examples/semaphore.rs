//! The semaphore on its own, on Tokio's paused clock (so it runs instantly
//! and the times printed are exact).
//!
//! 1. Weighted, fair permits: 10 downloads share a 100 MB budget; big ones
//!    wait their turn and small ones do not overtake them.
//! 2. A bounded queue: at most 3 callers may wait; the rest are refused at
//!    once (oldest-first), or the oldest waiter gives way (newest-first).
//!
//! Run it: `cargo run --example semaphore`.

use std::time::Duration;

use flowguard::semaphore::{AcquireError, QueueOrder, Semaphore};
use tokio::time::{Instant, sleep};

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    println!("1. ten downloads share a 100 MB memory budget (FIFO, weighted)");
    let budget = Semaphore::new(100);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mb) in [60usize, 30, 50, 10, 20, 70, 5, 40, 25, 15]
        .into_iter()
        .enumerate()
    {
        let budget = budget.clone();
        tasks.spawn(async move {
            let _held = budget.acquire_many(mb).await.expect("open");
            let began = start.elapsed();
            sleep(Duration::from_millis(100)).await; // the download
            (i, mb, began)
        });
        sleep(Duration::from_millis(1)).await; // they arrive in this order
    }
    let mut rows = Vec::new();
    while let Some(r) = tasks.join_next().await {
        rows.push(r.expect("no panic"));
    }
    rows.sort();
    for (i, mb, began) in rows {
        println!("   download {i}: {mb:>2} MB, started at {began:?}");
    }
    println!(
        "   all done at {:?}; {} MB free\n",
        start.elapsed(),
        budget.available()
    );

    for order in [QueueOrder::OldestFirst, QueueOrder::NewestFirst] {
        println!("2. one permit, at most 3 waiters, {order:?}: 6 callers arrive 10 ms apart");
        let sem = Semaphore::builder()
            .capacity(1)
            .queue_limit(3)
            .order(order)
            .build()
            .expect("valid settings");
        let held = sem.acquire_owned().await.expect("open");
        let start = Instant::now();
        let mut callers = tokio::task::JoinSet::new();
        for caller in 0..6 {
            let sem = sem.clone();
            callers.spawn(async move {
                let r = sem.acquire().await.map(|_p| ());
                (caller, r, start.elapsed())
            });
            sleep(Duration::from_millis(10)).await;
        }
        drop(held);
        let mut rows = Vec::new();
        while let Some(r) = callers.join_next().await {
            rows.push(r.expect("no panic"));
        }
        rows.sort_by_key(|r| r.2);
        for (caller, r, at) in rows {
            let what = match r {
                Ok(()) => "got the permit".to_owned(),
                Err(AcquireError::QueueFull) => "refused: queue full".to_owned(),
                Err(AcquireError::Evicted) => "evicted by a newer caller".to_owned(),
                Err(e) => e.to_string(),
            };
            println!("   caller {caller}: {what} at {at:?}");
        }
        println!();
    }
}
