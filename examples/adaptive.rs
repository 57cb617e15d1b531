//! An adaptive concurrency limit finding a backend's knee, on Tokio's
//! paused clock (so 30 simulated seconds run in a few real ones and every
//! number printed is exact).
//!
//! The backend has k servers of 100 ms each and a queue of 160: up to k
//! requests in flight it answers in 100 ms, beyond that each extra request
//! adds 100/k ms of queueing, and past the queue it answers 503 at once.
//! 3 000 requests a second arrive whatever happens (1.9 times what 160
//! servers serve); each is admitted or shed at once.
//!
//! 1. Windowed Vegas from a limit of 20, while k goes 160 → 80 (at 10 s) →
//!    160 (at 20 s): the chart shows the limit finding k and following it.
//! 2. The same backend with k = 160 throughout, adaptive against fixed
//!    limits: goodput and latency.
//! 3. The other algorithms on the first run's backend: Gradient2 reads a
//!    *change* of latency and keeps climbing under a load that never lets
//!    up; AIMD sees no drops (the queue is long) and creeps up by one per
//!    window; Vegas fed every sample swings by hundreds.
//!
//! Run it: `cargo run --release --example adaptive`.

#[path = "../tests/model/adaptive_sim.rs"]
mod sim;

use std::time::Duration;

use flowguard::adaptive::{AdaptiveLimiter, Aimd, Gradient2, LimitAlgorithm, Vegas, Windowed};
use flowguard::semaphore::Semaphore;
use sim::{Policy, Run, Scenario};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn scenario(changes: Vec<(Duration, usize)>) -> Scenario {
    Scenario {
        k: 160,
        changes,
        service: MS * 100,
        queue_bound: 160,
        tick: MS,
        per_tick: 3,
        duration: SEC * 30,
        chart_every: SEC,
    }
}

fn limiter() -> AdaptiveLimiter {
    let vegas = Vegas::builder().seed(7).build().expect("valid");
    let windowed = Windowed::builder(vegas)
        .min_window(MS * 100) // windows of two round trips
        .build()
        .expect("valid");
    AdaptiveLimiter::new(windowed)
}

fn windowed(algorithm: impl LimitAlgorithm) -> AdaptiveLimiter {
    let w = Windowed::builder(algorithm)
        .min_window(MS * 100)
        .build()
        .expect("valid");
    AdaptiveLimiter::new(w)
}

fn row(name: &str, r: &Run) {
    println!(
        "   {name:<14} {:>8.0} {:>6} {:>7} {:>7} {:>8?} {:>8?}",
        r.goodput,
        r.ok,
        r.dropped,
        r.shed,
        r.percentile(0.5),
        r.p99()
    );
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    println!("1. windowed Vegas while the backend's servers go 160 → 80 → 160");
    let changes = vec![(SEC * 10, 80), (SEC * 20, 160)];
    let run = sim::run(&scenario(changes), Policy::Adaptive(limiter())).await;
    println!("   time     k  limit  in flight   (# = limit, | = k; one column per 8)");
    for &(t, limit, k, inflight) in &run.chart {
        let bar: String = (0..=limit.max(k) / 8)
            .map(|i| match (i == k / 8, i < limit / 8) {
                (true, _) => '|',
                (false, true) => '#',
                (false, false) => ' ',
            })
            .collect();
        println!(
            "   {:>4.0}s {:>5} {:>6} {:>10}   {}",
            t.as_secs_f64(),
            k,
            limit,
            inflight,
            bar.trim_end()
        );
    }
    let cs = &run.change_samples;
    let end = run.trace.last().map_or(0, |t| t.0);
    let settle = |from, to, k: usize| {
        run.settled_after(from, to, k - k / 10, k + k / 10)
            .map_or("never".to_string(), |n| format!("{n} samples"))
    };
    println!("   within 10 % of k for good after:");
    println!("     the start (k = 160)   {}", settle(0, cs[0], 160));
    println!("     k halved to 80        {}", settle(cs[0], cs[1], 80));
    println!("     k doubled to 160      {}", settle(cs[1], end, 160));
    println!(
        "   answered {}, dropped by the backend {}, shed {}",
        run.ok, run.dropped, run.shed
    );

    println!();
    println!("2. k = 160 throughout, 30 s: adaptive against fixed limits");
    println!(
        "   {:<14} {:>8} {:>6} {:>7} {:>7} {:>8} {:>8}",
        "limit", "goodput", "ok", "503s", "shed", "p50", "p99"
    );
    let adaptive = sim::run(&scenario(vec![]), Policy::Adaptive(limiter())).await;
    row("adaptive", &adaptive);
    let mut best = 0.0f64;
    for fixed in [80, 120, 160, 200, 320, 480] {
        let r = sim::run(&scenario(vec![]), Policy::Fixed(Semaphore::new(fixed))).await;
        best = best.max(r.goodput);
        row(&format!("fixed {fixed}"), &r);
    }
    println!(
        "   adaptive goodput is {:.1} % of the best fixed limit's, with no limit to guess;",
        100.0 * adaptive.goodput / best
    );
    println!("   fixed 320 (2× too high) doubles latency, 480 overflows the queue into 503s.");

    println!();
    println!("3. the other algorithms, k = 160 → 80 → 160 as in 1: the limit every 5 s");
    println!("   {:<22} 160   160   80    80    160   160", "k");
    let changes = || vec![(SEC * 10, 80), (SEC * 20, 160)];
    let others: [(&str, AdaptiveLimiter); 4] = [
        ("windowed Vegas", limiter()),
        (
            "windowed Gradient2",
            windowed(
                Gradient2::builder()
                    .min_limit(1)
                    .max_limit(1000)
                    .build()
                    .expect("valid"),
            ),
        ),
        (
            "windowed AIMD",
            windowed(
                Aimd::builder()
                    .min_limit(1)
                    .max_limit(1000)
                    .build()
                    .expect("valid"),
            ),
        ),
        (
            "Vegas, every sample",
            AdaptiveLimiter::new(Vegas::builder().seed(7).build().expect("valid")),
        ),
    ];
    for (name, limiter) in others {
        let r = sim::run(&scenario(changes()), Policy::Adaptive(limiter)).await;
        let at: Vec<String> = r
            .chart
            .iter()
            .skip(4)
            .step_by(5)
            .map(|c| format!("{:<5}", c.1))
            .collect();
        println!("   {name:<22} {}   p99 {:?}", at.join(" "), r.p99());
    }
}
