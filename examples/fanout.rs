//! Deadline fan-out, for real, on Tokio's paused (virtual) clock so it runs
//! in well under a second:
//!
//! 1. 8 shards at 200 ms each: sequential (~1600 ms) vs gathered (~200 ms).
//! 2. One shard stuck at 2 s with a 300 ms deadline: 7 results at 300 ms.
//! 3. A backend with a slow 1 % tail, queried 10 000 times with and
//!    without hedging at the learned p95.
//!
//! Run: `cargo run --example fanout`

use std::time::Duration;

use flowguard::fanout::{HedgePolicy, gather_with_timeout, hedge};
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

fn main() {
    println!("(times are on Tokio's paused clock: real timers, virtual time)\n");
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
        .block_on(run());
}
