//! The flowguard tour: a miniature search service built from every module,
//! on simulated backends, in real time (about five seconds).
//!
//! ```text
//! keystrokes ─▶ Debouncer ─▶ query ─▶ gather_with_timeout over 8 shards
//!                                      each shard: Pipeline (deadline ▶ Retry+budget ▶ CircuitBreaker ▶ RateLimiter) ▶ backend
//!                            record ids ─▶ Loader (batched, cached record store)
//!                            records ─▶ CpuPool (scoring)
//!                            answer ─▶ bounded channel (force_send) ─▶ slow sink
//! ```
//!
//! Six simulated users type search phrases; each user's keystrokes are
//! debounced into queries. A query fans out to 8 shards and answers with
//! whatever came back by its deadline. Each shard call goes through one
//! `Pipeline`: the query's deadline, a retry (with a service-wide retry
//! budget) for the occasional transient 503, the shard's circuit breaker
//! and its rate limiter. Between 1.0 s and 2.2 s shard 5 fails every call;
//! its breaker opens (the retries stop at the open breaker), probes, and
//! closes again once the shard has recovered. The sink shows answers more slowly than they are
//! produced, so the channel fills and the oldest unshown answers are evicted.
//!
//! Everything runs on the real clock with simulated latencies, so the
//! numbers differ a little from run to run (and more on a busy machine);
//! every number printed is measured in this run, from the primitives'
//! `metrics()`/`snapshot()` or from the tour's own counters.
//!
//! At the end it prints the latency percentiles the primitives' own
//! histograms measured, and writes a chart of the run,
//! `target/tour.svg`: in-flight calls per shard, breaker states, channel
//! depth, rate-limit waits and query latency over time.
//!
//! Run: `cargo run --release --example tour`
//!
//! Watch it live: `cargo run --release --example tour --features metrics -- --serve`
//! serves the primitives' metrics in Prometheus text on
//! `http://127.0.0.1:9898/metrics` while it runs (and `--serve PORT` on
//! another port).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowguard::batch::Loader;
use flowguard::breaker::{CircuitBreaker, State, StateChange};
use flowguard::channel::{self, Receiver, Sender};
use flowguard::fanout::{Finish, Gather, Outcome};
use flowguard::histogram::{Histogram, HistogramSnapshot};
use flowguard::pipeline::{Pipeline, PipelineError};
use flowguard::pool::CpuPool;
use flowguard::rate::{Quota, RateLimiter};
use flowguard::retry::{Backoff, Jitter, RetryBudget, RetryPolicy};
use flowguard::timing::{Debouncer, TimingMetrics};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};

const SHARDS: usize = 8;
const TYPISTS: usize = 6;
const PHRASES_PER_TYPIST: usize = 7;
const DEBOUNCE: Duration = Duration::from_millis(70);
const DEADLINE: Duration = Duration::from_millis(150);
const FLAKY_SHARD: usize = 5;
const FAIL_FROM: Duration = Duration::from_millis(1000);
const FAIL_UNTIL: Duration = Duration::from_millis(2200);
/// Shard `i` admits `11 + 2 * (i % 4)` calls per second (replicas differ).
const SHARD_BASE_RATE_PER_SECOND: u32 = 11;
const SHARD_BURST: u32 = 3;
const SLOW_CALL_PERCENT: u64 = 3;
/// A backend call fails at once with a transient 503 this often; a retry
/// usually gets through.
const TRANSIENT_503_PERCENT: u64 = 6;
/// Retries per shard call (within the deadline, from a service-wide budget).
const SHARD_RETRIES: u32 = 2;
const SLOW_CALL: Duration = Duration::from_millis(300);
const RECORDS: u64 = 120;
const HITS_PER_SHARD: u64 = 3;
const BATCH_SIZE: usize = 16;
const BATCH_DELAY: Duration = Duration::from_millis(2);
const RECORD_CACHE: usize = 64;
const STORE_LATENCY: Duration = Duration::from_millis(4);
const CPU_THREADS: usize = 2;
const CHANNEL_CAPACITY: usize = 4;
const SINK_DELAY: Duration = Duration::from_millis(150);

const PHRASES: [&str; 12] = [
    "tokio semaphore",
    "rate limiter",
    "circuit breaker",
    "deadline fanout",
    "debounce input",
    "backpressure",
    "dataloader batch",
    "worker pool",
    "hedged request",
    "token bucket",
    "bounded channel",
    "cancel safety",
];

/// splitmix64: a tiny deterministic mixer, so the simulation needs no crate.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn text_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of a sorted slice.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Why a shard's backend call did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShardError {
    /// The backend answered "503": a failure for the breaker, retried.
    Unavailable,
}

#[derive(Debug, Default, Clone, Copy)]
struct ShardStats {
    calls: u64,
    answered: u64,
    /// Answered on a retry: a partial answer the retry layer avoided.
    recovered: u64,
    deadline_hits: u64,
    refused: u64,
    failed: u64,
    shed: u64,
}

struct Shard {
    id: usize,
    /// The shard's limiter (also inside the pipeline), for its wait histogram.
    limiter: RateLimiter,
    /// Calls in flight to this shard now, for the chart.
    in_flight: AtomicU64,
    /// deadline ▶ retry (budget) ▶ breaker ▶ rate limiter, around the backend.
    pipeline: Pipeline<Vec<u64>, ShardError>,
    breaker: CircuitBreaker,
    failing: Arc<AtomicBool>,
    stats: Mutex<ShardStats>,
}

impl Shard {
    /// One shard's part of a query, through the shard's pipeline. Returns
    /// the outcome and how many attempts the backend saw.
    async fn search(
        &self,
        qid: u64,
        text: &str,
    ) -> (Result<Vec<u64>, PipelineError<ShardError>>, u64) {
        let attempts = AtomicU64::new(0);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let r = self
            .pipeline
            .call(|| {
                let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
                self.backend(qid, text, attempt)
            })
            .await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        (r, attempts.load(Ordering::Relaxed))
    }

    /// The simulated backend: 8-43 ms, a slow tail of 300 ms, and "503"
    /// while the chaos switch is on.
    async fn backend(&self, qid: u64, text: &str, attempt: u64) -> Result<Vec<u64>, ShardError> {
        let r = mix((qid * SHARDS as u64 + self.id as u64) ^ (attempt << 48));
        if self.failing.load(Ordering::Relaxed) || (r >> 20) % 100 < TRANSIENT_503_PERCENT {
            sleep(Duration::from_millis(5)).await;
            return Err(ShardError::Unavailable);
        }
        let latency = if r % 100 < SLOW_CALL_PERCENT {
            SLOW_CALL
        } else {
            Duration::from_millis(8 + (r >> 8) % 36)
        };
        sleep(latency).await;
        let h = text_hash(text);
        Ok((0..HITS_PER_SHARD)
            .map(|k| mix(h ^ (self.id as u64 * 31 + k)) % RECORDS)
            .collect())
    }
}

#[derive(Debug, Clone)]
struct Record {
    id: u64,
    body: u64,
}

#[derive(Debug)]
struct Answer {
    qid: u64,
    typist: usize,
    text: String,
    answered: usize,
    missing: Vec<String>,
    top: Vec<(u64, f64)>,
    latency: Duration,
}

#[derive(Debug, Default)]
struct QueryStats {
    queries: u64,
    partial: u64,
    deadline_queries: u64,
    latencies: Vec<Duration>,
    evicted: u64,
    depth_sum: u64,
    depth_samples: u64,
}

struct Service {
    start: Instant,
    shards: Vec<Shard>,
    loader: Loader<u64, Record, String>,
    store_calls: Arc<AtomicU64>,
    cpu: CpuPool,
    results: Sender<Answer>,
    next_qid: AtomicU64,
    stats: Mutex<QueryStats>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Each shard call's time, start to outcome (gather's child latency).
    shard_latency: Arc<Histogram>,
    /// End-to-end query latency.
    query_latency: Histogram,
}

impl Service {
    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    async fn search(self: Arc<Self>, typist: usize, text: String) {
        let issued = Instant::now();
        let qid = self.next_qid.fetch_add(1, Ordering::Relaxed);

        // 1. Fan out to every shard; answer with what came back by the deadline.
        let gathered = Gather::new(self.shards.iter().map(|s| s.search(qid, &text)))
            .timeout(DEADLINE)
            .child_latency(&self.shard_latency)
            .build()
            .expect("valid gather")
            .await;
        let hit_deadline = gathered.finish() == Finish::Deadline;
        let mut ids = Vec::new();
        let mut missing = Vec::new();
        for (shard, outcome) in self.shards.iter().zip(gathered.into_outcomes()) {
            let mut s = shard.stats.lock().unwrap();
            s.calls += 1;
            let why = match outcome {
                Outcome::Completed((Ok(hits), attempts)) => {
                    s.answered += 1;
                    s.recovered += u64::from(attempts > 1);
                    ids.extend(hits);
                    continue;
                }
                Outcome::TimedOut
                | Outcome::Completed((
                    Err(PipelineError::Timeout { .. } | PipelineError::AttemptTimeout { .. }),
                    _,
                )) => {
                    s.deadline_hits += 1;
                    "deadline"
                }
                Outcome::Completed((Err(PipelineError::BreakerOpen { .. }), _)) => {
                    s.refused += 1;
                    "breaker open"
                }
                Outcome::Completed((
                    Err(PipelineError::RetriesExhausted { .. } | PipelineError::Inner(_)),
                    _,
                )) => {
                    s.failed += 1;
                    "503"
                }
                Outcome::Completed((Err(PipelineError::RateLimited { .. }), _)) => {
                    s.shed += 1;
                    "rate limited"
                }
                _ => "other",
            };
            missing.push(format!("{} {why}", shard.id));
        }
        let answered = SHARDS - missing.len();

        // 2. Record lookups: every shard's hits through one batching loader.
        let records: Vec<Record> = self
            .loader
            .load_many(ids)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect();

        // 3. Scoring is CPU work: off the runtime, onto the CPU pool.
        let h = text_hash(&text);
        let top = self
            .cpu
            .run(move || score(h, records))
            .await
            .unwrap_or_default();

        // 4. Hand the answer to the slow sink; a full channel drops its oldest.
        let latency = issued.elapsed();
        self.query_latency.record_duration(latency);
        let answer = Answer {
            qid,
            typist,
            text,
            answered,
            missing,
            top,
            latency,
        };
        let evicted = match self.results.force_send(answer) {
            Ok(evicted) => evicted.count() as u64,
            Err(_) => 0, // closed: only after every query task has finished
        };
        let depth = self.results.metrics().len as u64;
        let mut st = self.stats.lock().unwrap();
        st.queries += 1;
        st.partial += u64::from(answered < SHARDS);
        st.deadline_queries += u64::from(hit_deadline);
        st.latencies.push(latency);
        st.evicted += evicted;
        st.depth_sum += depth;
        st.depth_samples += 1;
    }
}

/// A deliberately CPU-heavy relevance score (a few milliseconds per query).
fn score(query: u64, records: Vec<Record>) -> Vec<(u64, f64)> {
    let mut seen = HashMap::new();
    for r in records {
        seen.entry(r.id).or_insert_with(|| {
            let mut x = query ^ r.body;
            for _ in 0..40_000 {
                x = mix(x);
            }
            (x % 1000) as f64 / 1000.0
        });
    }
    let mut ranked: Vec<(u64, f64)> = seen.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(3);
    ranked
}

/// One user typing phrases into a search box whose input is debounced.
async fn typist(id: usize, svc: Arc<Service>) -> TimingMetrics {
    let search = {
        let svc = svc.clone();
        Debouncer::builder(DEBOUNCE)
            .build_sync(move |text: String| {
                let task = tokio::spawn(svc.clone().search(id, text));
                svc.tasks.lock().unwrap().push(task);
            })
            .expect("valid debouncer settings")
    };
    let mut rng = mix(id as u64 + 1);
    sleep(Duration::from_millis(35 * id as u64)).await;
    for p in 0..PHRASES_PER_TYPIST {
        let phrase = PHRASES[(id * 5 + p * 7) % PHRASES.len()];
        let chars: Vec<char> = phrase.chars().collect();
        for (i, _) in chars.iter().enumerate() {
            let typed: String = chars[..=i].iter().collect();
            if i + 1 == chars.len() {
                // The last keystroke: wait until the debouncer has run the query.
                let _ = search.call_wait(typed).expect("debouncer is open").await;
            } else {
                search.call(typed).expect("debouncer is open");
                rng = mix(rng);
                sleep(Duration::from_millis(12 + rng % 28)).await;
            }
        }
        rng = mix(rng);
        sleep(Duration::from_millis(150 + rng % 120)).await;
    }
    search.metrics()
}

/// Shows answers at a human pace: slower than the service produces them.
async fn sink(rx: Receiver<Answer>, start: Instant) -> u64 {
    let mut shown = 0;
    while let Some(a) = rx.recv().await {
        shown += 1;
        let top: Vec<String> = a
            .top
            .iter()
            .map(|(id, s)| format!("doc-{id} ({s:.2})"))
            .collect();
        let missing = if a.missing.is_empty() {
            String::new()
        } else {
            format!(" missing: {}", a.missing.join(", "))
        };
        println!(
            "[{:5.2}s] sink: q{:<3} user {} {:<19} {}/{} shards {:>4.0} ms  top {}{missing}",
            start.elapsed().as_secs_f64(),
            a.qid,
            a.typist,
            format!("{:?}", a.text),
            a.answered,
            SHARDS,
            ms(a.latency),
            top.join(" "),
        );
        sleep(SINK_DELAY).await;
    }
    shown
}

/// A breaker state change: shard, time since the start, from, to.
type Transition = (usize, Duration, State, State);

fn shard_rate(id: usize) -> u32 {
    SHARD_BASE_RATE_PER_SECOND + 2 * (id % 4) as u32
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Closed => "closed",
        State::Open => "open",
        State::HalfOpen => "half-open",
        State::ForcedOpen => "forced-open",
        State::Disabled => "disabled",
        _ => "other",
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let serve_port = serve_arg();
    let start = Instant::now();
    println!("flowguard tour: a search service over {SHARDS} simulated shards (real clock)");
    if let Some(port) = serve_port {
        serve(port).await;
    }
    println!(
        "  {TYPISTS} users type, debounced {} ms | deadline {} ms | per shard: pipeline of retry ({SHARD_RETRIES}, budget) + breaker + limiter ({}-{}/s, burst {SHARD_BURST})",
        DEBOUNCE.as_millis(),
        DEADLINE.as_millis(),
        shard_rate(0),
        shard_rate(3)
    );
    println!(
        "  records via Loader (batches <= {BATCH_SIZE}, {} ms window, cache {RECORD_CACHE}) | scoring on a {CPU_THREADS}-thread CpuPool | channel of {CHANNEL_CAPACITY} to a sink taking {} ms per answer",
        BATCH_DELAY.as_millis(),
        SINK_DELAY.as_millis()
    );
    println!(
        "  chaos: shard {FLAKY_SHARD} fails from {:.1} s to {:.1} s; {TRANSIENT_503_PERCENT} % of all backend calls fail transiently\n",
        FAIL_FROM.as_secs_f64(),
        FAIL_UNTIL.as_secs_f64()
    );

    let transitions: Arc<Mutex<Vec<Transition>>> = Arc::default();
    let failing = Arc::new(AtomicBool::new(false));
    // One budget for the whole service: retries stay within 20 % of recent
    // shard calls (plus 10 a second), so a dead shard is not hammered.
    let retry_budget = RetryBudget::builder()
        .ratio(0.2)
        .min_per_sec(10)
        .build()
        .expect("valid budget");
    let shards = (0..SHARDS)
        .map(|id| {
            let log = transitions.clone();
            let breaker = CircuitBreaker::builder()
                .count_window(8)
                .minimum_calls(4)
                .failure_rate_threshold(50.0)
                .open_wait(Duration::from_millis(300))
                .open_backoff(2.0, Duration::from_millis(800))
                .permitted_probes(2)
                .name(format!("shard-{id}"))
                .histograms(true)
                .on_state_change(move |c: &StateChange| {
                    let at = c.at.saturating_duration_since(start);
                    println!(
                        "[{:5.2}s] shard {id} breaker {} -> {}",
                        at.as_secs_f64(),
                        state_name(c.from),
                        state_name(c.to)
                    );
                    log.lock().unwrap().push((id, at, c.from, c.to));
                })
                .build()
                .expect("valid breaker settings");
            let quota = Quota::per_second(shard_rate(id))
                .and_then(|q| q.with_burst(SHARD_BURST))
                .expect("valid quota");
            let limiter = RateLimiter::new(quota).name(format!("shard-{id}"));
            let pipeline = Pipeline::builder()
                .timeout(DEADLINE)
                .retry(
                    RetryPolicy::new()
                        .max_retries(SHARD_RETRIES)
                        .backoff(Backoff::exponential(Duration::from_millis(5), 2.0))
                        .jitter(Jitter::Full)
                        .attempt_margin(Duration::from_millis(15))
                        .budget(retry_budget.clone()),
                )
                .breaker(breaker.clone())
                .rate_limiter(limiter.clone())
                .build()
                .expect("valid pipeline");
            Shard {
                id,
                limiter,
                in_flight: AtomicU64::new(0),
                pipeline,
                breaker,
                failing: if id == FLAKY_SHARD {
                    failing.clone()
                } else {
                    Arc::default()
                },
                stats: Mutex::default(),
            }
        })
        .collect();

    let store_calls = Arc::new(AtomicU64::new(0));
    let loader = {
        let store_calls = store_calls.clone();
        Loader::builder(move |ids: Vec<u64>| {
            let store_calls = store_calls.clone();
            async move {
                store_calls.fetch_add(1, Ordering::Relaxed);
                sleep(STORE_LATENCY).await;
                Ok::<_, String>(
                    ids.into_iter()
                        .map(|id| (id, Record { id, body: mix(id) }))
                        .collect::<HashMap<_, _>>(),
                )
            }
        })
        .max_batch_size(BATCH_SIZE)
        .delay(BATCH_DELAY)
        .cache(RECORD_CACHE)
        .name("records")
        .build()
        .expect("valid loader settings")
    };
    let cpu = CpuPool::builder()
        .threads(CPU_THREADS)
        .name("scoring")
        .histograms(true)
        .build()
        .expect("valid pool settings");
    let (tx, rx) = channel::Builder::new(CHANNEL_CAPACITY)
        .name("answers")
        .build()
        .expect("valid capacity");

    let svc = Arc::new(Service {
        start,
        shards,
        loader,
        store_calls,
        cpu,
        results: tx,
        next_qid: AtomicU64::new(0),
        stats: Mutex::default(),
        tasks: Mutex::default(),
        shard_latency: Arc::new(Histogram::new()),
        query_latency: Histogram::new(),
    });
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample(svc.clone(), stop_sampling.clone()));

    let sink = tokio::spawn(sink(rx, start));
    let chaos = {
        let svc = svc.clone();
        tokio::spawn(async move {
            sleep_until(start + FAIL_FROM).await;
            failing.store(true, Ordering::Relaxed);
            println!(
                "[{:5.2}s] chaos: shard {FLAKY_SHARD} starts failing (503)",
                svc.t()
            );
            sleep_until(start + FAIL_UNTIL).await;
            failing.store(false, Ordering::Relaxed);
            println!(
                "[{:5.2}s] chaos: shard {FLAKY_SHARD} is healthy again",
                svc.t()
            );
        })
    };
    println!("[{:5.2}s] {TYPISTS} users start typing", svc.t());
    let typists: Vec<_> = (0..TYPISTS)
        .map(|id| tokio::spawn(typist(id, svc.clone())))
        .collect();
    let mut keys = TimingMetrics::default();
    for t in typists {
        let m = t.await.expect("typist task");
        keys.calls += m.calls;
        keys.invocations += m.invocations;
        keys.discarded += m.discarded;
    }
    chaos.await.expect("chaos task");
    println!(
        "[{:5.2}s] every user has finished typing; the sink works through what is left",
        svc.t()
    );
    // Every query was issued (call_wait above); wait for them to finish.
    loop {
        let batch: Vec<_> = std::mem::take(&mut *svc.tasks.lock().unwrap());
        if batch.is_empty() {
            break;
        }
        for task in batch {
            task.await.expect("query task");
        }
    }
    svc.results.close();
    let shown = sink.await.expect("sink task");
    let elapsed = start.elapsed();
    stop_sampling.store(true, Ordering::Relaxed);
    let samples = sampler.await.expect("sampler task");
    let pool = svc.cpu.metrics();
    svc.cpu.shutdown_timeout(Duration::from_secs(1)).await;

    report(
        &svc,
        &transitions.lock().unwrap(),
        keys,
        shown,
        pool,
        elapsed,
    );
    let path = chart::write(&samples, &transitions.lock().unwrap(), &svc);
    println!("\nchart        {} ({} samples)", path, samples.len());
}

/// `--serve [PORT]`: the port to serve `/metrics` on (default 9898).
fn serve_arg() -> Option<u16> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--serve" {
            return Some(args.next().and_then(|p| p.parse().ok()).unwrap_or(9898));
        }
    }
    None
}

/// Serves the named primitives' metrics in Prometheus text on
/// 127.0.0.1:`port` while the tour runs. Installed before any primitive is
/// built: their export handles come from this recorder.
#[cfg(feature = "metrics")]
async fn serve(port: u16) {
    use axum::routing::get;
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("no other recorder installed");
    flowguard::metrics::spawn_publisher(Duration::from_millis(250));
    let router = axum::Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => {
            println!("  serving metrics on http://127.0.0.1:{port}/metrics while the tour runs");
            tokio::spawn(async move { axum::serve(listener, router).await });
        }
        Err(e) => println!("  --serve: cannot listen on 127.0.0.1:{port}: {e}"),
    }
}

#[cfg(not(feature = "metrics"))]
async fn serve(_port: u16) {
    println!(
        "  --serve needs the `metrics` feature: cargo run --release --example tour --features metrics -- --serve"
    );
}

/// One moment of the run, for the chart.
struct Sample {
    t: f64,
    in_flight: [u64; SHARDS],
    breaker: [State; SHARDS],
    channel_depth: usize,
    rate_waiters: usize,
    /// Acquires that had to wait for a token so far, all shards.
    rate_waits: u64,
    query_p50_ms: f64,
    query_p99_ms: f64,
}

/// Samples the service every 25 ms until told to stop.
async fn sample(svc: Arc<Service>, stop: Arc<AtomicBool>) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let q = svc.query_latency.snapshot();
        let (mut rate_waiters, mut rate_waits) = (0, 0);
        for s in &svc.shards {
            let r = s.limiter.snapshot();
            rate_waiters += r.waiters;
            rate_waits += r.wait.count();
        }
        out.push(Sample {
            t: svc.t(),
            in_flight: std::array::from_fn(|i| svc.shards[i].in_flight.load(Ordering::Relaxed)),
            breaker: std::array::from_fn(|i| svc.shards[i].breaker.state()),
            channel_depth: svc.results.metrics().len,
            rate_waiters,
            rate_waits,
            query_p50_ms: ms(q.quantile_duration(0.5)),
            query_p99_ms: ms(q.quantile_duration(0.99)),
        });
    }
    out
}

/// The run as an SVG line chart, written by hand (no plotting crate).
mod chart {
    use std::fmt::Write;

    use super::{CHANNEL_CAPACITY, DEADLINE, SHARDS, Sample, Service, State, Transition, ms};

    const W: f64 = 960.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const PANEL: f64 = 110.0;
    const GAP: f64 = 42.0;
    const COLORS: [&str; SHARDS] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    ];

    /// Writes `target/tour.svg` (under `CARGO_TARGET_DIR` if set) and
    /// returns its path; on an I/O error returns the error's text.
    pub(super) fn write(samples: &[Sample], transitions: &[Transition], svc: &Service) -> String {
        let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
        let path = std::path::Path::new(&dir).join("tour.svg");
        let svg = render(samples, transitions, svc);
        match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, svg)) {
            Ok(()) => path.display().to_string(),
            Err(e) => format!("not written ({e})"),
        }
    }

    struct Panel<'a> {
        out: &'a mut String,
        top: f64,
        t_max: f64,
        y_max: f64,
    }

    impl Panel<'_> {
        fn x(&self, t: f64) -> f64 {
            LEFT + t / self.t_max * (W - LEFT - RIGHT)
        }
        fn y(&self, v: f64) -> f64 {
            self.top + PANEL - v.min(self.y_max) / self.y_max * PANEL
        }
        /// Title, border, time axis and, when `unit` is given, the value
        /// axis's top and bottom labels.
        fn frame(&mut self, title: &str, unit: Option<&str>) {
            let (top, x0, x1) = (self.top, LEFT, W - RIGHT);
            let _ = write!(
                self.out,
                r##"<text x="{x0}" y="{}" font-weight="bold">{title}</text><rect x="{x0}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="#999"/>"##,
                top - 6.0,
                x1 - x0,
            );
            if let Some(unit) = unit {
                let _ = write!(
                    self.out,
                    r##"<text x="{}" y="{}" text-anchor="end" font-size="11">{} {unit}</text><text x="{}" y="{}" text-anchor="end" font-size="11">0</text>"##,
                    x0 - 4.0,
                    top + 10.0,
                    fmt(self.y_max),
                    x0 - 4.0,
                    top + PANEL
                );
            }
            let mut t = 0.0;
            while t <= self.t_max {
                let x = self.x(t);
                let _ = write!(
                    self.out,
                    r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#eee"/><text x="{x}" y="{}" text-anchor="middle" font-size="10">{t:.0} s</text>"##,
                    top,
                    top + PANEL,
                    top + PANEL + 12.0
                );
                t += 1.0;
            }
        }
        fn line(&mut self, points: impl Iterator<Item = (f64, f64)>, color: &str, width: f64) {
            let pts: Vec<String> = points
                .map(|(t, v)| format!("{:.1},{:.1}", self.x(t), self.y(v)))
                .collect();
            let _ = write!(
                self.out,
                r##"<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{}"/>"##,
                pts.join(" ")
            );
        }
        fn legend(&mut self, i: usize, label: &str, color: &str) {
            let x = LEFT + 8.0 + i as f64 * 110.0;
            let _ = write!(
                self.out,
                r##"<rect x="{x}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}" font-size="11">{label}</text>"##,
                self.top + 4.0,
                x + 14.0,
                self.top + 13.0
            );
        }
    }

    fn fmt(v: f64) -> String {
        if v >= 10.0 || v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    }

    fn state_color(s: State) -> &'static str {
        match s {
            State::Closed => "#2ca02c",
            State::Open | State::ForcedOpen => "#d62728",
            State::HalfOpen => "#ffbf00",
            _ => "#999999",
        }
    }

    fn render(samples: &[Sample], transitions: &[Transition], svc: &Service) -> String {
        let t_max = samples.last().map_or(1.0, |s| s.t).max(1.0).ceil();
        let height = 40.0 + 5.0 * (PANEL + GAP);
        let mut out = format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="20" font-size="15" font-weight="bold">flowguard tour: {} queries, {} breaker transitions</text>"##,
            svc.query_latency.snapshot().count(),
            transitions.len()
        );
        let top = |i: f64| 40.0 + GAP * 0.6 + i * (PANEL + GAP);

        // 1. In-flight calls per shard.
        let peak = samples
            .iter()
            .flat_map(|s| s.in_flight)
            .max()
            .unwrap_or(1)
            .max(1);
        let mut p = Panel {
            out: &mut out,
            top: top(0.0),
            t_max,
            y_max: peak as f64,
        };
        p.frame("calls in flight per shard", Some("calls"));
        for (i, color) in COLORS.iter().enumerate() {
            p.line(
                samples.iter().map(|s| (s.t, s.in_flight[i] as f64)),
                color,
                1.2,
            );
        }
        for (i, color) in COLORS.iter().enumerate() {
            // A legend on the title's line, right-aligned.
            let x = W - RIGHT - (SHARDS - i) as f64 * 64.0;
            let _ = write!(
                p.out,
                r##"<rect x="{x}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}" font-size="11">shard {i}</text>"##,
                p.top - 15.0,
                x + 14.0,
                p.top - 6.0
            );
        }

        // 2. Breaker state per shard: one band each.
        let mut p = Panel {
            out: &mut out,
            top: top(1.0),
            t_max,
            y_max: SHARDS as f64,
        };
        p.frame(
            "breaker state per shard (green closed, red open, amber half-open)",
            None,
        );
        let band = PANEL / SHARDS as f64;
        for i in 0..SHARDS {
            // One rectangle per run of samples in the same state.
            let mut run = 0;
            for j in 1..=samples.len() {
                let end = j == samples.len() || samples[j].breaker[i] != samples[run].breaker[i];
                if !end {
                    continue;
                }
                let last = j.min(samples.len() - 1);
                let (x0, x1) = (p.x(samples[run].t), p.x(samples[last].t));
                if x1 > x0 {
                    let _ = write!(
                        p.out,
                        r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"##,
                        p.top + i as f64 * band,
                        (x1 - x0).max(0.5),
                        band - 1.0,
                        state_color(samples[run].breaker[i])
                    );
                }
                run = j;
            }
        }
        for i in 0..SHARDS {
            let _ = write!(
                p.out,
                r##"<text x="{}" y="{:.1}" text-anchor="end" font-size="10">shard {i}</text>"##,
                LEFT - 4.0,
                p.top + (i as f64 + 0.75) * band
            );
        }

        // 3. Channel depth.
        let mut p = Panel {
            out: &mut out,
            top: top(2.0),
            t_max,
            y_max: CHANNEL_CAPACITY as f64,
        };
        p.frame("answers queued in the channel", Some("answers"));
        p.line(
            samples.iter().map(|s| (s.t, s.channel_depth as f64)),
            "#1f77b4",
            1.5,
        );

        // 4. Rate-limit waits.
        let peak = samples
            .iter()
            .map(|s| s.rate_waiters)
            .max()
            .unwrap_or(1)
            .max(1);
        let mut p = Panel {
            out: &mut out,
            top: top(3.0),
            t_max,
            y_max: peak as f64,
        };
        let waits = samples.last().map_or(0, |s| s.rate_waits);
        p.frame(
            &format!("callers waiting for a rate-limit token, all shards ({waits} waited in all)"),
            Some("callers"),
        );
        p.line(
            samples.iter().map(|s| (s.t, s.rate_waiters as f64)),
            "#9467bd",
            1.5,
        );

        // 5. Query latency percentiles (so far), with the deadline.
        let y_max = ms(DEADLINE) * 1.5;
        let mut p = Panel {
            out: &mut out,
            top: top(4.0),
            t_max,
            y_max,
        };
        p.frame(
            "query latency so far, end to end (from the histogram)",
            Some("ms"),
        );
        p.line(
            samples.iter().map(|s| (s.t, s.query_p50_ms)),
            "#2ca02c",
            1.5,
        );
        p.line(
            samples.iter().map(|s| (s.t, s.query_p99_ms)),
            "#d62728",
            1.5,
        );
        p.line(
            [(0.0, ms(DEADLINE)), (t_max, ms(DEADLINE))].into_iter(),
            "#999",
            1.0,
        );
        p.legend(0, "p50", "#2ca02c");
        p.legend(1, "p99", "#d62728");
        p.legend(
            2,
            &format!("shard deadline {} ms", DEADLINE.as_millis()),
            "#999",
        );
        out.push_str("</svg>\n");
        out
    }
}

fn report(
    svc: &Service,
    transitions: &[Transition],
    keys: TimingMetrics,
    shown: u64,
    pool: flowguard::pool::PoolMetrics,
    elapsed: Duration,
) {
    let st = svc.stats.lock().unwrap();
    let mut lat = st.latencies.clone();
    lat.sort_unstable();
    let line = "-".repeat(78);
    println!(
        "\n{line}\nthe numbers of this run ({:.2} s real time)\n{line}",
        elapsed.as_secs_f64()
    );

    println!(
        "input        {} keystrokes debounced into {} queries ({} keystrokes never became a query)",
        keys.calls,
        keys.invocations,
        keys.calls - keys.invocations
    );
    println!(
        "latency      p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (end to end, {} queries, deadline {} ms)",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
        lat.len(),
        DEADLINE.as_millis()
    );
    println!(
        "fan-out      {} queries hit the deadline; {} answered partially (< {SHARDS} shards), {} complete",
        st.deadline_queries,
        st.partial,
        st.queries - st.partial
    );

    println!(
        "\nshard  calls answered retried-ok deadline refused 503  shed  retries budget-refused  breaker"
    );
    let mut total = ShardStats::default();
    let (mut retries, mut budget_refused) = (0, 0);
    for shard in &svc.shards {
        let s = *shard.stats.lock().unwrap();
        let b = shard.breaker.metrics();
        let r = shard.pipeline.metrics().retry.unwrap_or_default();
        println!(
            "{:>5} {:>6} {:>8} {:>10} {:>8} {:>7} {:>4} {:>5} {:>8} {:>14}  {} ({} transitions, {} refused)",
            shard.id,
            s.calls,
            s.answered,
            s.recovered,
            s.deadline_hits,
            s.refused,
            s.failed,
            s.shed,
            r.retries,
            r.budget_refusals,
            state_name(b.state),
            b.transitions,
            b.refused
        );
        total.calls += s.calls;
        total.answered += s.answered;
        total.recovered += s.recovered;
        total.deadline_hits += s.deadline_hits;
        total.refused += s.refused;
        total.failed += s.failed;
        total.shed += s.shed;
        retries += r.retries;
        budget_refused += r.budget_refusals;
    }
    println!(
        "  all {:>6} {:>8} {:>10} {:>8} {:>7} {:>4} {:>5} {:>8} {:>14}",
        total.calls,
        total.answered,
        total.recovered,
        total.deadline_hits,
        total.refused,
        total.failed,
        total.shed,
        retries,
        budget_refused
    );
    println!(
        "retries      {} shard answers came back on a retry (each would otherwise have left its query partial); {} retries in all, {} refused by the service-wide budget",
        total.recovered, retries, budget_refused
    );

    println!("\nbreaker transitions");
    if transitions.is_empty() {
        println!("  (none)");
    }
    for (id, at, from, to) in transitions {
        println!(
            "  {:5.2} s  shard {id}: {} -> {}",
            at.as_secs_f64(),
            state_name(*from),
            state_name(*to)
        );
    }

    let l = svc.loader.metrics();
    println!(
        "\nbatching     {} record lookups: {} from the cache, {} de-duplicated, {} loaded in {} batches (mean {:.1} keys), {} record-store calls",
        l.keys_requested,
        l.cache_hits,
        l.deduplicated,
        l.keys_loaded,
        l.batches_dispatched,
        l.mean_batch_size(),
        svc.store_calls.load(Ordering::Relaxed)
    );
    println!(
        "cpu pool     {} scoring jobs completed on {} threads ({} failed, {} rejected)",
        pool.completed, pool.max_concurrency, pool.failed, pool.rejected
    );
    let c = svc.results.metrics();
    println!(
        "channel      capacity {}: {} answers sent, {} shown by the sink (received: {}), {} evicted unshown (tour's count: {}); peak depth {}, mean depth after a send {:.1}",
        c.capacity,
        c.sent,
        shown,
        c.received,
        c.evicted,
        st.evicted,
        c.peak_len,
        st.depth_sum as f64 / st.depth_samples.max(1) as f64
    );

    // The primitives' own latency histograms (within 1 %).
    let pct = |h: &HistogramSnapshot| {
        if h.count() == 0 {
            return "none recorded".to_owned();
        }
        format!(
            "p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms  ({} values)",
            ms(h.quantile_duration(0.5)),
            ms(h.quantile_duration(0.99)),
            ms(h.max_duration()),
            h.count()
        )
    };
    println!("\nhistograms   (each primitive's own, from metrics(); within 1 %)");
    println!(
        "  query end to end        {}",
        pct(&svc.query_latency.snapshot())
    );
    println!(
        "  shard call (gather)     {}",
        pct(&svc.shard_latency.snapshot())
    );
    let (mut call, mut wait) = (Vec::new(), Vec::new());
    for shard in &svc.shards {
        call.push(shard.breaker.metrics().call_duration);
        wait.push(shard.limiter.snapshot().wait);
    }
    let worst = |v: &[HistogramSnapshot]| {
        v.iter()
            .max_by_key(|h| h.p99())
            .cloned()
            .unwrap_or_default()
    };
    println!(
        "  backend call (breaker)  {}  worst shard",
        pct(&worst(&call))
    );
    println!(
        "  rate-limit wait         {}  worst shard",
        pct(&worst(&wait))
    );
    println!("  record batch (loader)   {}", pct(&l.batch_latency));
    println!(
        "  record batch size       p50 {} keys  p99 {} keys  max {} keys",
        l.batch_size.p50(),
        l.batch_size.p99(),
        l.batch_size.max()
    );
    println!("  scoring queue wait      {}", pct(&pool.queue_wait));
    println!("  scoring run time        {}", pct(&pool.run_time));
}
