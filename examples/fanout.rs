//! Deadline fan-out, for real, on Tokio's paused (virtual) clock so it runs
//! in well under a second:
//!
//! 1. 8 shards at 200 ms each: sequential (~1600 ms) vs gathered (~200 ms).
//! 2. One shard stuck at 2 s with a 300 ms deadline: 7 results at 300 ms.
//! 3. A backend with a slow 1 % tail, queried 10 000 times with and
//!    without hedging at the learned p95, then hedging at the median
//!    without and with an extra-load cap of 2 % ("The Tail at Scale").
//! 4. The same stuck shard, gathered with `detach_stragglers`: the answer
//!    comes at the deadline and the straggler's result is still collected.
//!
//! Run: `cargo run --example fanout`

use std::time::Duration;

use flowguard::fanout::{Gather, HedgePolicy, Outcome, gather_with_timeout, hedge};
use tokio::time::{Instant, sleep};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn shard(id: u64, latency: Duration) -> String {
    sleep(latency).await;
    format!("shard {id}")
}

/// xorshift64*: a tiny deterministic generator, so the example needs no crate.
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// 99 % of requests take 8-12 ms, 1 % take 500 ms.
fn backend_latency(rng: &mut Rng) -> Duration {
    if rng.next_f64() < 0.01 {
        ms(500)
    } else {
        Duration::from_micros(8_000 + (rng.next_f64() * 4_000.0) as u64)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn report(label: &str, mut latencies: Vec<Duration>, extra: u64) {
    latencies.sort_unstable();
    let show = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!(
        "  {label:<16} p50 {:>9}   p99 {:>9}   p99.9 {:>9}   extra requests {extra}",
        show(percentile(&latencies, 0.50)),
        show(percentile(&latencies, 0.99)),
        show(percentile(&latencies, 0.999)),
    );
}

async fn run() {
    println!("1. Eight shards, 200 ms each");
    let start = Instant::now();
    for id in 0..8 {
        shard(id, ms(200)).await;
    }
    println!("  sequential: {} ms", start.elapsed().as_millis());
    let start = Instant::now();
    let gathered = gather_with_timeout((0..8).map(|id| shard(id, ms(200))), ms(1000)).await;
    println!(
        "  gathered:   {} ms, {} of 8 answered",
        start.elapsed().as_millis(),
        gathered.completed_count()
    );

    println!("2. Shard 7 is stuck for 2 s; deadline 300 ms");
    let start = Instant::now();
    let shards = (0..8).map(|id| shard(id, if id == 7 { ms(2000) } else { ms(200) }));
    let gathered = gather_with_timeout(shards, ms(300)).await;
    println!(
        "  returned at {} ms with {} results; timed out: {:?} (cancelled, not left running)",
        start.elapsed().as_millis(),
        gathered.completed_count(),
        gathered.timed_out().collect::<Vec<_>>()
    );

    println!("3. 10 000 queries to a backend whose slowest 1 % take 500 ms");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut plain = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let start = Instant::now();
        sleep(backend_latency(&mut rng)).await;
        plain.push(start.elapsed());
    }
    report("without hedging", plain, 0);

    let policy = HedgePolicy::builder()
        .percentile(0.95)
        .window(1000)
        .min_samples(100)
        .max_hedges(1)
        .build()
        .expect("valid policy");
    let mut hedged = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let start = Instant::now();
        let result = hedge(
            || {
                let latency = backend_latency(&mut rng);
                async move {
                    sleep(latency).await;
                    Ok::<_, std::convert::Infallible>(())
                }
            },
            &policy,
        )
        .await;
        assert!(result.is_ok());
        hedged.push(start.elapsed());
    }
    let m = policy.metrics();
    report("hedged at p95", hedged, m.hedges_sent);
    println!(
        "  learned hedge delay {:.1} ms; {} of {} calls won by the hedge ({:.1} % extra load)",
        m.current_delay.unwrap_or_default().as_secs_f64() * 1000.0,
        m.hedge_wins,
        m.calls,
        m.hedges_sent as f64 / m.calls as f64 * 100.0
    );
}

/// 10 000 hedged calls through `policy`; returns their latencies.
async fn hedged_calls(policy: &HedgePolicy, rng: &mut Rng) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let start = Instant::now();
        let result = hedge(
            || {
                let latency = backend_latency(rng);
                async move {
                    sleep(latency).await;
                    Ok::<_, std::convert::Infallible>(())
                }
            },
            policy,
        )
        .await;
        assert!(result.is_ok());
        latencies.push(start.elapsed());
    }
    latencies
}

async fn capped() {
    println!("   hedging at the median instead, without and with a 2 % extra-load cap:");
    let mut uncapped_load = 0.0;
    for cap in [None, Some(0.02)] {
        let mut builder = HedgePolicy::builder()
            .percentile(0.50)
            .window(1000)
            .min_samples(100)
            .max_hedges(1);
        if let Some(ratio) = cap {
            builder = builder.max_extra_load(ratio);
        }
        let policy = builder.build().expect("valid policy");
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let latencies = hedged_calls(&policy, &mut rng).await;
        let m = policy.metrics();
        let load = m.hedges_sent as f64 / m.calls as f64 * 100.0;
        let label = match cap {
            None => "p50, no cap".to_owned(),
            Some(r) => format!("p50, cap {:.0} %", r * 100.0),
        };
        report(&label, latencies, m.hedges_sent);
        match cap {
            None => uncapped_load = load,
            Some(_) => {
                println!(
                    "  the cap refused {} hedges: {load:.1} % extra load instead of {uncapped_load:.1} %",
                    m.hedges_denied
                );
                println!(
                    "  (a cap spends its budget first come: at the median most of it goes to calls that\n   were about to finish, so the slow tail goes unhedged; hedge late, at p95, and keep\n   the cap as the safety net against a latency shift)"
                );
            }
        }
    }
}

async fn stragglers() {
    println!("4. Shard 7 stuck for 2 s again; deadline 300 ms, stragglers detached");
    let start = Instant::now();
    let shards: Vec<_> = (0..8)
        .map(|id| shard(id, if id == 7 { ms(2000) } else { ms(200) }))
        .collect();
    let mut gathered = Gather::new(shards)
        .spawn()
        .timeout(ms(300))
        .detach_stragglers()
        .build()
        .expect("valid gather")
        .await;
    println!(
        "  answered at {} ms with {} results; still running: {:?}",
        start.elapsed().as_millis(),
        gathered.completed_count(),
        gathered.detached().collect::<Vec<_>>()
    );
    for straggler in gathered.take_stragglers() {
        let index = straggler.index();
        if let Outcome::Completed(late) = straggler.await {
            println!(
                "  shard {index} finished later anyway ({late} at {} ms), e.g. to warm a cache",
                start.elapsed().as_millis()
            );
        }
    }
}

fn main() {
    println!("(times are on Tokio's paused clock: real timers, virtual time)\n");
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
        .block_on(async {
            run().await;
            capped().await;
            stragglers().await;
        });
}
