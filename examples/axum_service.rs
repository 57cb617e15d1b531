//! flowguard's tower layers in a real axum server, driven by a real HTTP
//! client over loopback.
//!
//! * A **downstream** server on 127.0.0.1 (a port the OS picks) answers
//!   `/quote`; it can be told to fail with 500s for a while.
//! * The **front** server has a global concurrency limit and a per-client
//!   rate limit (keyed by the `x-client` header) on its routes; its
//!   `/api/quote` handler calls the downstream through a `PipelineLayer`:
//!   total timeout, retry with a budget, circuit breaker, attempt timeout,
//!   with a 5xx counted as a failure.
//! * A **driver** sends requests through hyper's client and prints what it
//!   saw: 200s, 429s with `Retry-After`, 502s while the downstream fails,
//!   503s with `Retry-After` while the breaker is open, the recovery, and
//!   latency percentiles.
//!
//! Run: `cargo run --example axum_service` (a few seconds of wall time).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::extract::Request;
use axum::routing::get;
use flowguard::breaker::CircuitBreaker;
use flowguard::pipeline::Pipeline;
use flowguard::rate::{KeyedRateLimiter, Quota};
use flowguard::retry::{Backoff, RetryBudget, RetryPolicy};
use flowguard::tower::{
    BoxError, ConcurrencyLimitLayer, KeyedRateLimitLayer, PipelineLayer, error_response,
    handle_error,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// The downstream: a quote, or a 500 while `failing`.
async fn downstream(failing: Arc<AtomicBool>, hits: Arc<AtomicU32>) -> String {
    let router = Router::new().route(
        "/quote",
        get(move || {
            let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
            let fail = failing.load(Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                if fail {
                    (http::StatusCode::INTERNAL_SERVER_ERROR, "down".to_owned())
                } else {
                    (http::StatusCode::OK, format!("quote #{n}"))
                }
            }
        }),
    );
    serve(router).await
}

fn client_key(req: &Request<Body>) -> String {
    req.headers()
        .get("x-client")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned()
}

/// The front server, and the handles to watch its layers.
async fn front(down: String) -> (String, CircuitBreaker, ConcurrencyLimitLayer) {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(4)
        .open_wait(Duration::from_secs(2))
        .permitted_probes(1)
        .build()
        .unwrap();
    let budget = RetryBudget::builder()
        .ratio(0.2)
        .min_per_sec(5)
        .build()
        .unwrap();
    let pipeline = Pipeline::<http::Response<Incoming>, BoxError>::builder()
        .timeout(Duration::from_secs(1))
        .retry(
            RetryPolicy::new()
                .max_retries(2)
                .backoff(Backoff::constant(Duration::from_millis(20)))
                .budget(budget),
        )
        .breaker(breaker.clone())
        .attempt_timeout(Duration::from_millis(300))
        .failure_if(|r| r.is_err() || r.is_ok_and(|resp| resp.status().is_server_error()))
        .build()
        .unwrap();
    let downstream_call = ServiceBuilder::new()
        .layer(PipelineLayer::new(pipeline))
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());

    let quote = move || {
        let (call, url) = (downstream_call.clone(), format!("{down}/quote"));
        async move {
            let req = http::Request::get(url).body(Empty::new()).unwrap();
            match call.oneshot(req).await {
                Ok(resp) if resp.status().is_server_error() => http::Response::builder()
                    .status(http::StatusCode::BAD_GATEWAY)
                    .body("downstream failed\n".to_owned())
                    .unwrap(),
                Ok(resp) => {
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    http::Response::new(String::from_utf8_lossy(&body).into_owned())
                }
                // Breaker open: 503 + Retry-After; timed out: 504.
                Err(e) => error_response(&*e),
            }
        }
    };

    let limit = ConcurrencyLimitLayer::new(32).unwrap();
    // Per client: bursts of 10, then 20 a second.
    let per_client = KeyedRateLimiter::new(Quota::per_second(20).unwrap().with_burst(10).unwrap());
    let router = Router::new().route("/api/quote", get(quote)).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(handle_error))
            .layer(limit.clone())
            .layer(KeyedRateLimitLayer::new(per_client, client_key)),
    );
    (serve(router).await, breaker, limit)
}

/// What one request saw.
#[derive(Debug, Clone)]
struct Seen {
    status: u16,
    retry_after: Option<String>,
    latency: Duration,
}

async fn get_as(c: &HttpClient, url: &str, who: &str) -> Seen {
    let req = http::Request::get(url)
        .header("x-client", who)
        .body(Empty::new())
        .unwrap();
    let start = Instant::now();
    let resp = c.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    resp.into_body().collect().await.unwrap();
    Seen {
        status,
        retry_after,
        latency: start.elapsed(),
    }
}

/// "200 ×3, 502 ×2, 503 ×7 (Retry-After: 2)".
fn runs(seen: &[Seen]) -> String {
    let mut out: Vec<(u16, Option<String>, usize)> = Vec::new();
    for s in seen {
        match out.last_mut() {
            Some((st, ra, n)) if *st == s.status && *ra == s.retry_after => *n += 1,
            _ => out.push((s.status, s.retry_after.clone(), 1)),
        }
    }
    out.iter()
        .map(|(st, ra, n)| match ra {
            Some(ra) => format!("{st} ×{n} (Retry-After: {ra})"),
            None => format!("{st} ×{n}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let failing = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicU32::new(0));
    let down = downstream(failing.clone(), hits.clone()).await;
    let (base, breaker, limit) = front(down.clone()).await;
    let url = format!("{base}/api/quote");
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut all: Vec<Seen> = Vec::new();
    println!("downstream {down}, front {base}\n");

    // 1. Healthy: two polite clients, one request every 60 ms each.
    let mut seen = Vec::new();
    for _ in 0..8 {
        seen.push(get_as(&c, &url, "alice").await);
        seen.push(get_as(&c, &url, "bob").await);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    println!("1. healthy, alice and bob:        {}", runs(&seen));
    all.extend(seen);

    // 2. A greedy client fires 30 at once: its burst of 10 passes, the rest are 429s.
    let burst: Vec<_> = (0..30)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { get_as(&c, &url, "mallory").await })
        })
        .collect();
    let mut seen = Vec::new();
    for b in burst {
        seen.push(b.await.unwrap());
    }
    seen.sort_by_key(|s| s.status);
    println!("2. mallory, 30 at once:           {}", runs(&seen));
    let after_burst = get_as(&c, &url, "alice").await;
    println!(
        "   alice meanwhile:                {}",
        runs(std::slice::from_ref(&after_burst))
    );
    all.extend(seen);
    all.push(after_burst);

    // 3. The downstream fails: retries, then 502s; the breaker opens: 503s.
    failing.store(true, Ordering::SeqCst);
    let hits_before = hits.load(Ordering::SeqCst);
    let mut seen = Vec::new();
    for _ in 0..15 {
        seen.push(get_as(&c, &url, "alice").await);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    println!("3. downstream failing:            {}", runs(&seen));
    println!(
        "   downstream hits meanwhile: {} (the breaker keeps the rest away); breaker {:?}",
        hits.load(Ordering::SeqCst) - hits_before,
        breaker.state()
    );
    all.extend(seen);

    // 4. The downstream recovers; after the open wait a probe closes the breaker.
    failing.store(false, Ordering::SeqCst);
    let recovering = Instant::now();
    let mut seen = Vec::new();
    loop {
        let s = get_as(&c, &url, "alice").await;
        let ok = s.status == 200;
        seen.push(s);
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered_after = recovering.elapsed();
    for _ in 0..3 {
        seen.push(get_as(&c, &url, "alice").await);
    }
    println!("4. downstream back:               {}", runs(&seen));
    println!(
        "   first 200 after {:.1} s; breaker {:?}",
        recovered_after.as_secs_f64(),
        breaker.state()
    );
    all.extend(seen);

    // Latency by status.
    println!("\nlatency (client side, loopback):");
    let mut statuses: Vec<u16> = all.iter().map(|s| s.status).collect();
    statuses.sort_unstable();
    statuses.dedup();
    for st in statuses {
        let mut l: Vec<Duration> = all
            .iter()
            .filter(|s| s.status == st)
            .map(|s| s.latency)
            .collect();
        l.sort_unstable();
        println!(
            "  {st}: n={:3}  p50 {:>8.2?}  p90 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}",
            l.len(),
            percentile(&l, 0.5),
            percentile(&l, 0.9),
            percentile(&l, 0.99),
            l[l.len() - 1]
        );
    }
    let m = breaker.metrics();
    println!(
        "\nbreaker: {:?} after {} state changes, {} calls refused while open; \
         concurrency limit: {} of {} free",
        m.state,
        m.transitions,
        m.refused,
        limit.semaphore().available(),
        limit.semaphore().capacity()
    );
}
