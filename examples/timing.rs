//! Debounce and throttle, on Tokio's paused clock (finishes at once).
//!
//! A typist hits keys at irregular intervals; searches are debounced to run
//! 300 ms after the last keystroke. A sensor reports at 1 kHz; it is throttled
//! to 10 Hz (one reading per 100 ms, the latest one).
//!
//! Run with `cargo run --example timing`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowguard::timing::{Debouncer, Throttler};
use tokio::time::{Instant, sleep};

/// A tiny deterministic pseudo-random sequence (no extra dependency).
fn next_rand(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *state >> 33
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let start = Instant::now();
    let ms = move || start.elapsed().as_millis();

    println!("-- a typist, debounced into searches (wait 300 ms) --");
    let searches = Arc::new(Mutex::new(0u32));
    let counted = searches.clone();
    let search = Debouncer::builder(Duration::from_millis(300))
        .build_sync(move |query: String| {
            *counted.lock().unwrap() += 1;
            println!("{:>6} ms  SEARCH for {query:?}", ms());
        })
        .unwrap();
    let mut rng = 7;
    let mut typed = String::new();
    for word in ["flow", "guard", "debounce"] {
        for ch in word.chars() {
            typed.push(ch);
            println!("{:>6} ms  key {ch:?}", ms());
            search.call(typed.clone()).unwrap();
            // 40..240 ms between keys; the pauses below 300 ms never search.
            sleep(Duration::from_millis(40 + next_rand(&mut rng) % 200)).await;
        }
        typed.push(' ');
        println!("{:>6} ms  (thinking...)", ms());
        sleep(Duration::from_millis(800)).await;
    }
    println!(
        "{} keystrokes became {} searches\n",
        typed.trim().chars().filter(|c| *c != ' ').count(),
        searches.lock().unwrap()
    );

    println!("-- a 1 kHz sensor for one second, throttled to 10 Hz --");
    let t0 = Instant::now();
    let samples = Arc::new(Mutex::new(0u32));
    let counted = samples.clone();
    let sensor = Throttler::builder(Duration::from_millis(100))
        .build_sync(move |(at, reading): (u128, f64)| {
            *counted.lock().unwrap() += 1;
            println!(
                "{:>6} ms  SAMPLE reading {reading:.3} (measured at {at} ms)",
                t0.elapsed().as_millis()
            );
        })
        .unwrap();
    for i in 0..1000u32 {
        let reading = 20.0 + f64::from(i % 97) / 97.0;
        sensor.call((t0.elapsed().as_millis(), reading)).unwrap();
        sleep(Duration::from_millis(1)).await;
    }
    sleep(Duration::from_millis(200)).await;
    println!(
        "1000 readings became {} samples (leading at 0 ms, then one per 100 ms)",
        samples.lock().unwrap()
    );
}
