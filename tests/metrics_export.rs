//! The `metrics` feature against a real exporter: a Prometheus recorder is
//! installed, a named pool, rate limiter and breaker (and a keyed limiter,
//! a pipeline, a retry, a debouncer, a throttler, a hedge policy, a gather
//! and an adaptive limiter) are driven on the paused clock, the exposition
//! text is served on 127.0.0.1 and scraped
//! over HTTP, and the series and their values are asserted.
//!
//! One test in this file: the recorder is process-global.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::get;
use flowguard::adaptive::{AdaptiveLimiter, Aimd};
use flowguard::breaker::{BreakerError, CircuitBreaker};
use flowguard::fanout::{Gather, HedgePolicy, hedge};
use flowguard::histogram::Histogram;
use flowguard::pipeline::Pipeline;
use flowguard::pool::WorkerPool;
use flowguard::rate::{KeyedRateLimiter, Quota, RateLimiter};
use flowguard::retry::{Backoff, Retry};
use flowguard::timing::{Debouncer, Throttler};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::time::sleep;

/// Serves the exporter's text on `/metrics`, on a port the OS picks.
async fn serve(handle: metrics_exporter_prometheus::PrometheusHandle) -> String {
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                flowguard::metrics::publish(); // counters and gauges, as of now
                handle.render()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}/metrics")
}

/// GETs `url` and parses the exposition text into `series -> value`.
async fn scrape(url: &str) -> HashMap<String, f64> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = http::Request::get(url).body(Empty::new()).unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn pool_limiter_and_breaker_are_scraped_over_http() {
    // Before building the named primitives: their handles come from it.
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    let url = serve(handle).await;

    // A pool of one slot: three tasks of 100 ms, two queue (100 and 200 ms).
    let pool = WorkerPool::builder()
        .max_concurrency(1)
        .name("io")
        .histograms(true)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(
            pool.submit(async { sleep(Duration::from_millis(100)).await })
                .await
                .unwrap(),
        );
    }
    let unnamed = WorkerPool::builder().max_concurrency(1).build().unwrap();
    unnamed.submit(async {}).await.unwrap().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }

    // A limiter of 10/s, burst 1: the second and third acquire wait.
    let limiter =
        RateLimiter::new(Quota::per_second(10).unwrap().with_burst(1).unwrap()).name("api");
    for _ in 0..3 {
        limiter.acquire(1).await.unwrap();
    }

    // A breaker that trips after two failures in a row, then refuses.
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(2)
        .name("backend")
        .histograms(true)
        .build()
        .unwrap();
    for _ in 0..2 {
        let r: Result<(), _> = breaker
            .call(|| async {
                sleep(Duration::from_millis(30)).await;
                Err("503")
            })
            .await;
        assert!(matches!(r, Err(BreakerError::Inner("503"))));
    }
    let r: Result<(), BreakerError<&str>> = breaker.call(|| async { Ok(()) }).await;
    assert!(r.unwrap_err().rejected().is_some());

    // A breaker judged once (2 failures of 2: 100 %), then closed again by
    // a probe: its window is empty, so its failure rate is unjudged again
    // and must not keep showing the 100 % of the trip.
    let flappy = CircuitBreaker::builder()
        .count_window(2)
        .minimum_calls(2)
        .open_wait(Duration::from_secs(1))
        .permitted_probes(1)
        .name("flappy")
        .build()
        .unwrap();
    for _ in 0..2 {
        flappy.try_acquire().unwrap().failure();
    }
    flowguard::metrics::publish();
    sleep(Duration::from_secs(1)).await;
    flappy.try_acquire().unwrap().success();
    assert_eq!(flappy.metrics().failure_rate, None);

    // A keyed limiter of 1/s per key: "a" admitted then refused, "b" admitted.
    let keyed = KeyedRateLimiter::<&str>::new(Quota::per_second(1).unwrap()).name("per_user");
    keyed.try_acquire(&"a", 1).unwrap();
    assert!(keyed.try_acquire(&"a", 1).is_err());
    keyed.try_acquire(&"b", 1).unwrap();

    // A pipeline: two calls succeed, one fails.
    let pipeline = Pipeline::<u32, &str>::builder()
        .timeout(Duration::from_secs(1))
        .name("checkout")
        .build()
        .unwrap();
    for r in [Ok(1), Ok(2), Err("no stock")] {
        let _ = pipeline.call(move || async move { r }).await;
    }

    // A retry: the first call fails twice, then succeeds (two retries).
    let retry = Retry::<u32, &str>::builder()
        .max_retries(3)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .name("fetch")
        .build()
        .unwrap();
    let mut left = 2;
    let got = retry
        .call(|| {
            let fail = left > 0;
            left -= 1;
            async move { if fail { Err("flaky") } else { Ok(7) } }
        })
        .await;
    assert_eq!(got.unwrap(), 7);

    // A debouncer: three calls in a burst, one invocation.
    let debouncer = Debouncer::builder(Duration::from_millis(50))
        .build_sync(|v: u8| v)
        .unwrap()
        .name("typing");
    for v in 1..=3 {
        debouncer.call(v).unwrap();
        sleep(Duration::from_millis(10)).await;
    }
    sleep(Duration::from_millis(100)).await;
    assert_eq!(debouncer.metrics().invocations, 1);

    // A throttler: one call, invoked on the leading edge.
    let throttler = Throttler::builder(Duration::from_millis(100))
        .build_sync(|v: u8| v)
        .unwrap()
        .name("scroll");
    throttler.call(1).unwrap();
    sleep(Duration::from_millis(200)).await;

    // A hedge policy of 10 ms: the primary takes 50 ms, the hedge 5 ms.
    let policy = HedgePolicy::builder()
        .fixed_delay(Duration::from_millis(10))
        .name("search")
        .build()
        .unwrap();
    let mut attempt = 0;
    let won = hedge(
        || {
            attempt += 1;
            let took = if attempt == 1 { 50 } else { 5 };
            async move {
                sleep(Duration::from_millis(took)).await;
                Ok::<_, ()>(took)
            }
        },
        &policy,
    )
    .await
    .unwrap();
    assert_eq!((won.value, won.winner), (5, 1));

    // A named gather with child latencies: two of three children finish
    // (10 and 20 ms), the third is cut off by the 100 ms timeout.
    let latency = std::sync::Arc::new(Histogram::new());
    let children = [10u64, 20, 2000].map(|ms| sleep(Duration::from_millis(ms)));
    let gathered = Gather::new(children)
        .timeout(Duration::from_millis(100))
        .child_latency(&latency)
        .name("shards")
        .build()
        .unwrap()
        .await;
    assert_eq!(gathered.completed_count(), 2);
    // An adaptive limiter (AIMD from 4): two successes at the full limit
    // (+1 each), one drop (⌊6 × 0.9⌋ = 5), one refusal, one permit held.
    let aimd = Aimd::builder()
        .initial_limit(4)
        .min_limit(1)
        .build()
        .unwrap();
    let adaptive = AdaptiveLimiter::builder()
        .algorithm(aimd)
        .name("db")
        .build()
        .unwrap();
    for _ in 0..2 {
        let held: Vec<_> = (0..adaptive.limit() - 1)
            .map(|_| adaptive.try_acquire().unwrap())
            .collect();
        adaptive.try_acquire().unwrap().success();
        held.into_iter().for_each(|p| p.ignore());
    }
    adaptive.try_acquire().unwrap().dropped();
    let held: Vec<_> = (0..5).map(|_| adaptive.try_acquire().unwrap()).collect();
    assert!(adaptive.try_acquire().is_err());

    let m = scrape(&url).await;
    let v = |series: &str| -> f64 {
        *m.get(series)
            .unwrap_or_else(|| panic!("no series {series} in {m:#?}"))
    };
    // Pool: counters, gauges, and the histograms (rendered as summaries).
    assert_eq!(v(r#"flowguard_pool_completed_total{name="io"}"#), 3.0);
    assert_eq!(v(r#"flowguard_pool_rejected_total{name="io"}"#), 0.0);
    assert_eq!(v(r#"flowguard_pool_running{name="io"}"#), 0.0);
    assert_eq!(v(r#"flowguard_pool_max_concurrency{name="io"}"#), 1.0);
    assert_eq!(v(r#"flowguard_pool_run_seconds_count{name="io"}"#), 3.0);
    assert!((v(r#"flowguard_pool_run_seconds_sum{name="io"}"#) - 0.3).abs() < 1e-9);
    assert_eq!(
        v(r#"flowguard_pool_queue_wait_seconds_count{name="io"}"#),
        2.0
    );
    assert!((v(r#"flowguard_pool_queue_wait_seconds_sum{name="io"}"#) - 0.3).abs() < 1e-9);
    // Only named primitives are published.
    assert!(!m.keys().any(|k| k.contains(r#"name="worker_pool""#)));
    // Limiter: two waits of 100 ms.
    assert_eq!(v(r#"flowguard_rate_wait_seconds_count{name="api"}"#), 2.0);
    assert!((v(r#"flowguard_rate_wait_seconds_sum{name="api"}"#) - 0.2).abs() < 1e-9);
    assert_eq!(v(r#"flowguard_rate_waiters{name="api"}"#), 0.0);
    // Refilled (burst 1) during the later sections' sleeps.
    assert_eq!(v(r#"flowguard_rate_available{name="api"}"#), 1.0);
    // Breaker: open (1), one refusal, one transition, two timed calls.
    assert_eq!(v(r#"flowguard_breaker_state{name="backend"}"#), 1.0);
    assert_eq!(v(r#"flowguard_breaker_refused_total{name="backend"}"#), 1.0);
    assert_eq!(
        v(r#"flowguard_breaker_transitions_total{name="backend"}"#),
        1.0
    );
    assert_eq!(
        v(r#"flowguard_breaker_call_seconds_count{name="backend"}"#),
        2.0
    );
    assert!((v(r#"flowguard_breaker_call_seconds_sum{name="backend"}"#) - 0.06).abs() < 1e-9);
    let p50 = v(r#"flowguard_breaker_call_seconds{name="backend",quantile="0.5"}"#);
    assert!((p50 - 0.03).abs() < 0.03 * 0.02, "p50 {p50}");

    // Unjudged (below the minimum, or emptied on closing): -1, as
    // resilience4j's failure rate, never a stale judged value.
    assert_eq!(v(r#"flowguard_breaker_failure_rate{name="backend"}"#), -1.0);
    assert_eq!(v(r#"flowguard_breaker_state{name="flappy"}"#), 0.0);
    assert_eq!(v(r#"flowguard_breaker_failure_rate{name="flappy"}"#), -1.0);

    // Keyed limiter: totals over all keys and the key count, no key label.
    assert_eq!(v(r#"flowguard_keyed_rate_keys{name="per_user"}"#), 2.0);
    assert_eq!(
        v(r#"flowguard_keyed_rate_admitted_total{name="per_user"}"#),
        2.0
    );
    assert_eq!(
        v(r#"flowguard_keyed_rate_refused_total{name="per_user"}"#),
        1.0
    );
    assert_eq!(
        v(r#"flowguard_keyed_rate_evicted_total{name="per_user"}"#),
        0.0
    );
    assert!(
        !m.keys()
            .any(|k| k.contains(r#""a""#) || k.contains(r#""b""#))
    );
    // Pipeline: its own counters.
    assert_eq!(
        v(r#"flowguard_pipeline_succeeded_total{name="checkout"}"#),
        2.0
    );
    assert_eq!(
        v(r#"flowguard_pipeline_failed_total{name="checkout"}"#),
        1.0
    );
    assert_eq!(
        v(r#"flowguard_pipeline_timeouts_total{name="checkout"}"#),
        0.0
    );
    // Retry: one call, three attempts, two retries.
    assert_eq!(v(r#"flowguard_retry_calls_total{name="fetch"}"#), 1.0);
    assert_eq!(v(r#"flowguard_retry_attempts_total{name="fetch"}"#), 3.0);
    assert_eq!(v(r#"flowguard_retry_retries_total{name="fetch"}"#), 2.0);
    assert_eq!(
        v(r#"flowguard_retry_succeeded_after_retry_total{name="fetch"}"#),
        1.0
    );
    // Debouncer and throttler.
    assert_eq!(v(r#"flowguard_debounce_calls_total{name="typing"}"#), 3.0);
    assert_eq!(
        v(r#"flowguard_debounce_invocations_total{name="typing"}"#),
        1.0
    );
    assert_eq!(v(r#"flowguard_debounce_pending{name="typing"}"#), 0.0);
    assert_eq!(v(r#"flowguard_throttle_calls_total{name="scroll"}"#), 1.0);
    assert_eq!(
        v(r#"flowguard_throttle_invocations_total{name="scroll"}"#),
        1.0
    );
    // Hedge: one call, one hedge sent, which won; the fixed delay.
    assert_eq!(v(r#"flowguard_hedge_calls_total{name="search"}"#), 1.0);
    assert_eq!(
        v(r#"flowguard_hedge_hedges_sent_total{name="search"}"#),
        1.0
    );
    assert_eq!(v(r#"flowguard_hedge_hedge_wins_total{name="search"}"#), 1.0);
    assert_eq!(v(r#"flowguard_hedge_delay_seconds{name="search"}"#), 0.01);
    assert!(!m.contains_key(r#"flowguard_hedge_budget_available{name="search"}"#));

    // Gather: counted when it finished, child latencies as a histogram.
    assert_eq!(v(r#"flowguard_gather_calls_total{name="shards"}"#), 1.0);
    assert_eq!(v(r#"flowguard_gather_children_total{name="shards"}"#), 3.0);
    assert_eq!(v(r#"flowguard_gather_succeeded_total{name="shards"}"#), 2.0);
    assert_eq!(
        v(r#"flowguard_gather_unfinished_total{name="shards"}"#),
        1.0
    );
    assert_eq!(
        v(r#"flowguard_gather_child_seconds_count{name="shards"}"#),
        2.0
    );
    assert!((v(r#"flowguard_gather_child_seconds_sum{name="shards"}"#) - 0.03).abs() < 1e-9);
    // Adaptive limiter: its limit, load and counts.
    assert_eq!(v(r#"flowguard_adaptive_limit{name="db"}"#), 5.0);
    assert_eq!(v(r#"flowguard_adaptive_inflight{name="db"}"#), 5.0);
    assert_eq!(v(r#"flowguard_adaptive_waiting{name="db"}"#), 0.0);
    assert_eq!(v(r#"flowguard_adaptive_samples_total{name="db"}"#), 3.0);
    assert_eq!(v(r#"flowguard_adaptive_drops_total{name="db"}"#), 1.0);
    assert_eq!(v(r#"flowguard_adaptive_rejections_total{name="db"}"#), 1.0);
    drop(held);

    // Dropped primitives stop being published; their last values stay.
    drop(breaker);
    flowguard::metrics::publish();
    let m = scrape(&url).await;
    assert_eq!(m[r#"flowguard_breaker_state{name="backend"}"#], 1.0);
}
