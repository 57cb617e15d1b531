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
//! Run: `cargo run --release --example tour`

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowguard::batch::Loader;
use flowguard::breaker::{CircuitBreaker, State, StateChange};
use flowguard::channel::{self, Receiver, Sender};
use flowguard::fanout::{Finish, Outcome, gather_with_timeout};
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
        let r = self
            .pipeline
            .call(|| {
                let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
                self.backend(qid, text, attempt)
            })
            .await;
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
}

impl Service {
    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    async fn search(self: Arc<Self>, typist: usize, text: String) {
        let issued = Instant::now();
        let qid = self.next_qid.fetch_add(1, Ordering::Relaxed);

        // 1. Fan out to every shard; answer with what came back by the deadline.
        let gathered =
            gather_with_timeout(self.shards.iter().map(|s| s.search(qid, &text)), DEADLINE).await;
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
    let start = Instant::now();
    println!("flowguard tour: a search service over {SHARDS} simulated shards (real clock)");
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
                .rate_limiter(RateLimiter::new(quota))
                .build()
                .expect("valid pipeline");
            Shard {
                id,
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
        .build()
        .expect("valid loader settings")
    };
    let cpu = CpuPool::builder()
        .threads(CPU_THREADS)
        .build()
        .expect("valid pool settings");
    let (tx, rx) = channel::bounded(CHANNEL_CAPACITY).expect("valid capacity");

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
    });

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
}
