//! A fast producer and a slow consumer on a bounded channel.
//!
//! Run with `cargo run --example channel`. Time is Tokio's paused clock, so
//! the "seconds" below pass instantly and the numbers are exact.
//!
//! Part 1: `send().await` backpressure: the queue never holds more than its
//! capacity and the producer is slowed to the consumer's pace.
//! Part 2: `force_send` for "latest wins": the producer never waits; the
//! oldest values are dropped instead.

use std::time::Duration;

use flowguard::channel;
use tokio::time::Instant;

const CAPACITY: usize = 8;
const MESSAGES: u64 = 40;
const CONSUMER_DELAY: Duration = Duration::from_millis(100);

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    println!("capacity {CAPACITY}, {MESSAGES} messages, consumer takes 100 ms per message\n");

    println!("== 1. send().await: the producer slows down ==");
    let (tx, rx) = channel::bounded::<u64>(CAPACITY).unwrap();
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut received = 0;
        while let Some(_v) = rx.recv().await {
            received += 1;
            tokio::time::sleep(CONSUMER_DELAY).await;
        }
        (received, rx.metrics())
    });
    for i in 0..MESSAGES {
        tx.send(i).await.unwrap();
        if i % 8 == 7 {
            let m = tx.metrics();
            println!(
                "t={:>5} ms  sent {:>2}  queued {:>2}  storage {:>2} slots",
                start.elapsed().as_millis(),
                i + 1,
                m.len,
                m.allocated
            );
        }
    }
    let producer_done = start.elapsed();
    drop(tx);
    let (received, m) = consumer.await.unwrap();
    println!(
        "producer needed {} ms for {MESSAGES} sends (held back by the consumer)",
        producer_done.as_millis()
    );
    println!(
        "consumer received {received}; peak queue {} (capacity {CAPACITY}); evicted {}\n",
        m.peak_len, m.evicted
    );

    println!("== 2. force_send: latest wins, the oldest are dropped ==");
    let (tx, rx) = channel::bounded::<u64>(CAPACITY).unwrap();
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(v) = rx.recv().await {
            got.push(v);
            tokio::time::sleep(CONSUMER_DELAY).await;
        }
        (got, rx.metrics())
    });
    let mut dropped = 0;
    for i in 0..MESSAGES {
        dropped += tx.force_send(i).unwrap().count();
        // A producer that emits every 10 ms no matter what.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "producer needed {} ms for {MESSAGES} sends (never waited); {dropped} oldest dropped",
        start.elapsed().as_millis()
    );
    drop(tx);
    let (got, m) = consumer.await.unwrap();
    println!(
        "consumer received {} values, the newest: {:?}",
        got.len(),
        &got[got.len().saturating_sub(CAPACITY)..]
    );
    println!(
        "metrics: sent {}, received {}, evicted {}, peak queue {}",
        m.sent, m.received, m.evicted, m.peak_len
    );
}
