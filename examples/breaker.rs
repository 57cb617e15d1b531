//! A flaky backend behind a circuit breaker, on Tokio's paused clock (so it
//! runs instantly and the times printed are exact).
//!
//! The backend is healthy, then fails for four seconds, then recovers. The
//! breaker trips on the failures, refuses calls while open without touching
//! the backend, probes it after the open wait (doubling the wait each time
//! the probe fails) and closes once the probes succeed.
//!
//! Run it: `cargo run --example breaker`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flowguard::breaker::{BreakerError, CircuitBreaker, Rejected, StateChange};
use tokio::time::Instant;

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let start = Instant::now();
    let secs = move |t: Instant| (t - start).as_secs_f64();

    let breaker = CircuitBreaker::builder()
        .count_window(6)
        .minimum_calls(4)
        .failure_rate_threshold(50.0)
        .open_wait(Duration::from_millis(800))
        .open_backoff(2.0, Duration::from_secs(4))
        .permitted_probes(2)
        .on_state_change(move |c: &StateChange| {
            println!("  [{:5.2}s] breaker {:?} -> {:?}", secs(c.at), c.from, c.to);
        })
        .build()
        .expect("valid settings");

    // Down from t = 1 s to t = 5 s.
    let backend_calls = Arc::new(AtomicU32::new(0));
    let backend = {
        let backend_calls = backend_calls.clone();
        move || {
            let backend_calls = backend_calls.clone();
            async move {
                backend_calls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
                let t = secs(Instant::now());
                if (1.0..5.0).contains(&t) {
                    Err("503 service unavailable")
                } else {
                    Ok("200 ok")
                }
            }
        }
    };

    let (mut ok, mut failed, mut refused) = (0, 0, 0);
    for i in 0..50 {
        let result = breaker.call(backend.clone()).await;
        // The time the call's fate was known.
        let t = secs(Instant::now());
        match result {
            Ok(body) => {
                ok += 1;
                println!("[{t:5.2}s] call {i:2}: {body}");
            }
            Err(BreakerError::Inner(e)) => {
                failed += 1;
                println!("[{t:5.2}s] call {i:2}: failed: {e}");
            }
            Err(BreakerError::Rejected(r)) => {
                refused += 1;
                match r {
                    Rejected::Open { retry_after } => println!(
                        "[{t:5.2}s] call {i:2}: refused, breaker open for {:.2}s more",
                        retry_after.as_secs_f64()
                    ),
                    other => println!("[{t:5.2}s] call {i:2}: refused: {other}"),
                }
            }
            Err(e) => println!("[{t:5.2}s] call {i:2}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(180)).await;
    }

    let m = breaker.metrics();
    println!();
    println!("{ok} succeeded, {failed} failed, {refused} refused without touching the backend");
    println!(
        "the backend saw {} calls; breaker is {:?} after {} transitions",
        backend_calls.load(Ordering::Relaxed),
        m.state,
        m.transitions
    );
}
