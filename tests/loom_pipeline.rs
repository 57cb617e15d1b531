//! Loom model of a pipeline shared by clones: layers that share state (a
//! bulkhead semaphore, a breaker, the pipeline's counters) under two
//! concurrent callers. No timers under loom: no timeouts, zero backoff.

#![cfg(loom)]

use std::time::Duration;

use flowguard::breaker::{CircuitBreaker, State};
use flowguard::pipeline::{Admission, Pipeline, PipelineError};
use flowguard::retry::{Backoff, RetryPolicy};
use flowguard::semaphore::Semaphore;
use loom::thread;

/// Two callers race for one bulkhead slot: each call ends exactly once
/// (served or shed), the slot always comes back, the counters add up and a
/// shed call costs the breaker nothing.
#[test]
fn concurrent_calls_share_the_bulkhead_and_the_counters() {
    loom::model(|| {
        let sem = Semaphore::new(1);
        let breaker = CircuitBreaker::builder()
            .without_failure_rate()
            .consecutive_failures(1)
            .build()
            .unwrap();
        let p = Pipeline::<u32, ()>::builder()
            .retry(
                RetryPolicy::new()
                    .max_retries(1)
                    .backoff(Backoff::constant(Duration::ZERO)),
            )
            .breaker(breaker.clone())
            .bulkhead_with(sem.clone(), Admission::Shed)
            .build()
            .unwrap();
        let hs: Vec<_> = (0..2)
            .map(|i| {
                let p = p.clone();
                thread::spawn(move || loom::future::block_on(p.call(|| async move { Ok(i) })))
            })
            .collect();
        let mut served = 0;
        for h in hs {
            match h.join().unwrap() {
                Ok(_) => served += 1,
                Err(PipelineError::BulkheadFull) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert!(served >= 1);
        assert_eq!(sem.available(), 1);
        assert_eq!(breaker.state(), State::Closed);
        let m = p.metrics();
        assert_eq!((m.calls, m.succeeded, m.failed), (2, served, 2 - served));
        assert_eq!(m.bulkhead_full, 2 - served);
    });
}
