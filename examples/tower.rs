//! flowguard's tower layers on a plain `service_fn`, stacked with tower's
//! `ServiceBuilder` the way an axum or tonic server stacks middleware. No
//! network: the example calls the service itself, on Tokio's paused clock
//! (so it runs instantly and the times printed are exact).
//!
//! The stack, outermost first:
//!
//! * `TimeoutLayer` (1 s): a call slower than that answers "timed out".
//! * `RateLimitLayer::shed` (5 per second, bursts of 5): the sixth call in
//!   a burst is refused at once with the time to wait.
//! * `LoadShedLayer` (2 in flight): a third call while two run is refused
//!   at once rather than queued.
//!
//! Every clone of the service shares the same limiter and the same two
//! slots: the limits hold for the server, not per connection.
//!
//! Part 4 shows the other policy, tower's own `RateLimit`'s:
//! `PerServiceRateLimitLayer` gives each service value (say, one per
//! connection) a bucket of its own.
//!
//! Each refusal is a `Refusal` inside the `BoxError`; `to_response` turns
//! it into the HTTP answer a server would send (429, 503, 504).
//!
//! Run it: `cargo run --example tower`.

use std::time::Duration;

use flowguard::rate::{Quota, RateLimiter};
use flowguard::tower::{
    BoxError, LoadShedLayer, PerServiceRateLimitLayer, RateLimitLayer, Refusal, TimeoutLayer,
};
use tokio::time::{Instant, sleep};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// The handler: "work" for the number of milliseconds asked for.
async fn handler(ms: u64) -> Result<String, BoxError> {
    sleep(Duration::from_millis(ms)).await;
    Ok(format!("done in {ms} ms"))
}

/// What a caller of the stack sees, in one line.
fn show(what: &str, out: Result<String, BoxError>) {
    match out {
        Ok(body) => println!("  {what}: 200 {body}"),
        Err(err) => match Refusal::find(&*err) {
            Some(refusal) => {
                let resp = refusal.to_response::<String>();
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| format!(", Retry-After: {}", v.to_str().unwrap_or("?")))
                    .unwrap_or_default();
                println!("  {what}: {} ({refusal}{retry})", resp.status());
            }
            None => println!("  {what}: error {err}"),
        },
    }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), BoxError> {
    let start = Instant::now();
    let limiter = RateLimiter::new(Quota::per_second(5)?.with_burst(5)?);
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1))?)
        .layer(RateLimitLayer::shed(limiter))
        .layer(LoadShedLayer::new(2)?)
        .service(service_fn(handler));

    println!("1. the rate limit: six 1 ms calls in a row, bursts of 5:");
    for i in 1..=6 {
        show(&format!("call {i}"), svc.clone().oneshot(1).await);
    }
    sleep(Duration::from_millis(200)).await;
    show(
        "200 ms later (one token back)",
        svc.clone().oneshot(1).await,
    );

    sleep(Duration::from_secs(1)).await; // the bucket refills
    println!("2. three calls at once, two may run (load shedding):");
    let mut calls = Vec::new();
    for ms in [100, 100, 100] {
        let mut s = svc.clone();
        // Made ready one after the other, so the third sees both slots taken.
        s.ready().await?;
        calls.push(tokio::spawn(s.call(ms)));
    }
    for (i, call) in calls.into_iter().enumerate() {
        show(&format!("call {}", i + 1), call.await?);
    }

    println!("3. a quick call and a slow one (the timeout is 1 s):");
    show("10 ms", svc.clone().oneshot(10).await);
    show("5 s", svc.clone().oneshot(5_000).await);

    println!("4. a budget per connection: two per second each, three calls on each:");
    let per_connection = PerServiceRateLimitLayer::shed(Quota::per_second(2)?);
    for conn in ["a", "b"] {
        // One service value per connection, as a server makes per accept.
        let mut svc = ServiceBuilder::new()
            .layer(per_connection.clone())
            .service(service_fn(handler));
        for i in 1..=3 {
            show(
                &format!("conn {conn}, call {i}"),
                (&mut svc).oneshot(1).await,
            );
        }
    }

    println!("all of it took {:?} of (paused) time", start.elapsed());
    Ok(())
}
