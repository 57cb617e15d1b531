//! Model checker for `flowguard::pipeline`, shared by
//! `tests/prop_pipeline.rs` (proptest) and `fuzz/fuzz_targets/pipeline.rs`.
//!
//! A random configuration (each of total timeout, retry, breaker,
//! attempt timeout and a `WorkerPool` bulkhead present or not) and a scripted backend (each attempt
//! answers `Ok`, `Err`, or `Ok` after a delay) are run by one sequential
//! caller on Tokio's paused clock, and by a sequential model written from
//! the module docs' rules in whole milliseconds. After every call the two
//! must agree on the result (value, error variant and its fields), the
//! time it ended, and the number of backend calls.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flowguard::breaker::CircuitBreaker;
use flowguard::pipeline::{Pipeline, PipelineError};
use flowguard::pool::WorkerPool;
use flowguard::retry::{Backoff, RetryPolicy};
use tokio::time::{Instant, sleep};

/// What the backend does on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Ok,
    Err,
    /// `Ok` after this many milliseconds.
    Slow(u16),
}

/// A configuration; `None` leaves the layer out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) timeout_ms: Option<u16>,
    /// (max retries, constant delay in ms)
    pub(crate) retry: Option<(u8, u16)>,
    /// (consecutive failures to open, open wait in ms)
    pub(crate) breaker: Option<(u8, u16)>,
    pub(crate) attempt_timeout_ms: Option<u16>,
    /// A one-slot `WorkerPool` as the bulkhead: one sequential caller never
    /// waits for it, and every backend call holds its slot once.
    pub(crate) pool: bool,
}

/// One call: idle this long first, then call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call {
    pub(crate) gap_ms: u16,
}

pub(crate) fn from_bytes(data: &[u8]) -> (Config, Vec<Answer>, Vec<Call>) {
    let g = |i: usize| data.get(i).copied().unwrap_or(0);
    let opt = |flag: u8, v: u16| (flag % 2 == 1).then_some(v);
    let config = Config {
        timeout_ms: opt(g(0), 1 + u16::from(g(1)) * 8),
        retry: (g(2) % 2 == 1).then_some((g(3) % 5, u16::from(g(4)) * 2)),
        breaker: (g(5) % 2 == 1).then_some((1 + g(6) % 4, 1 + u16::from(g(7)) * 4)),
        attempt_timeout_ms: opt(g(8), 1 + u16::from(g(9)) * 4),
        pool: g(10) % 2 == 1,
    };
    let rest = data.get(11..).unwrap_or(&[]);
    let answers = rest
        .iter()
        .map(|b| match b % 4 {
            0 | 1 => Answer::Err,
            2 => Answer::Ok,
            _ => Answer::Slow(u16::from(b / 4) * 8),
        })
        .collect();
    let calls = rest
        .iter()
        .step_by(3)
        .map(|b| Call {
            gap_ms: u16::from(*b) * 8,
        })
        .collect();
    (config, answers, calls)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Breaker {
    Closed(u32),
    Open { until: u64 },
    HalfOpen,
}

/// The sequential model, in milliseconds.
struct Model {
    config: Config,
    answers: Vec<Answer>,
    next: usize,
    now: u64,
    breaker: Breaker,
}

type Outcome = Result<u32, PipelineError<u32>>;

impl Model {
    fn record(&mut self, failed: bool) {
        let Some((k, wait)) = self.config.breaker else {
            return;
        };
        self.breaker = match (self.breaker, failed) {
            (Breaker::Closed(_), false) | (Breaker::HalfOpen, false) => Breaker::Closed(0),
            (Breaker::Closed(n), true) if n + 1 < u32::from(k) => Breaker::Closed(n + 1),
            (_, true) => Breaker::Open {
                until: self.now + u64::from(wait),
            },
            (b @ Breaker::Open { .. }, false) => b,
        };
    }

    fn call(&mut self) -> Outcome {
        let deadline = self.config.timeout_ms.map(|t| self.now + u64::from(t));
        let (max_retries, delay) = self
            .config
            .retry
            .map_or((0, 0), |(n, d)| (u32::from(n), u64::from(d)));
        let mut attempts = 0u32;
        let mut last_err: Option<u32> = None;
        loop {
            if deadline.is_some_and(|d| self.now >= d) {
                return Err(PipelineError::Timeout {
                    attempts,
                    last: last_err,
                });
            }
            attempts += 1;
            if self.config.breaker.is_some() {
                if let Breaker::Open { until } = self.breaker {
                    if self.now < until {
                        return Err(PipelineError::BreakerOpen {
                            retry_after: Some(Duration::from_millis(until - self.now)),
                        });
                    }
                    self.breaker = Breaker::HalfOpen;
                }
            }
            let answer = self.answers.get(self.next).copied().unwrap_or(Answer::Ok);
            let index = self.next as u32;
            self.next += 1;
            let takes = match answer {
                Answer::Slow(ms) => u64::from(ms),
                _ => 0,
            };
            let attempt_cut = self
                .config
                .attempt_timeout_ms
                .map(u64::from)
                .filter(|a| takes > *a);
            let ends = self.now + attempt_cut.unwrap_or(takes);
            if let Some(d) = deadline {
                if ends > d {
                    // Cut by the total deadline: the breaker permit is dropped
                    // unreported (counts as nothing).
                    // unreported (counts as nothing; a half-open probe slot
                    // is given back and the breaker stays half-open).
                    self.now = d;
                    return Err(PipelineError::Timeout {
                        attempts,
                        last: last_err,
                    });
                }
            }
            self.now = ends;
            let result: Result<u32, Option<u32>> = match (answer, attempt_cut) {
                (_, Some(_)) => Err(None),
                (Answer::Err, _) => Err(Some(index)),
                _ => Ok(index),
            };
            self.record(result.is_err());
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if self.config.retry.is_none() {
                return Err(match err {
                    Some(e) => PipelineError::Inner(e),
                    None => PipelineError::AttemptTimeout { attempts },
                });
            }
            if attempts > max_retries {
                return Err(match err {
                    Some(e) => PipelineError::RetriesExhausted { last: e, attempts },
                    None => PipelineError::AttemptTimeout { attempts },
                });
            }
            if deadline.is_some_and(|d| self.now + delay >= d) {
                return Err(PipelineError::Timeout {
                    attempts,
                    last: err,
                });
            }
            last_err = err;
            self.now += delay;
        }
    }
}

/// Runs the scenario; panics on the first divergence.
pub(crate) fn check(config: Config, answers: &[Answer], calls: &[Call]) {
    let mut b = Pipeline::<u32, u32>::builder();
    if let Some(t) = config.timeout_ms {
        b = b.timeout(Duration::from_millis(t.into()));
    }
    if let Some((n, d)) = config.retry {
        b = b.retry(
            RetryPolicy::new()
                .max_retries(n.into())
                .backoff(Backoff::constant(Duration::from_millis(d.into()))),
        );
    }
    if let Some((k, wait)) = config.breaker {
        b = b.breaker(
            CircuitBreaker::builder()
                .without_failure_rate()
                .consecutive_failures(k.into())
                .open_wait(Duration::from_millis(wait.into()))
                .permitted_probes(1)
                .build()
                .unwrap(),
        );
    }
    if let Some(a) = config.attempt_timeout_ms {
        b = b.attempt_timeout(Duration::from_millis(a.into()));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let pool = config.pool.then(|| {
        let _guard = rt.enter();
        WorkerPool::builder()
            .max_concurrency(1)
            .queue_capacity(1)
            .build()
            .unwrap()
    });
    if let Some(pool) = &pool {
        b = b.worker_pool(pool.clone());
    }
    let pipeline = match b.build() {
        Ok(p) => p,
        Err(e) => {
            // The one refusal these configurations can reach.
            assert_eq!(e.field(), "attempt_timeout", "{config:?}: {e}");
            assert!(config.attempt_timeout_ms >= config.timeout_ms);
            return;
        }
    };
    let mut model = Model {
        config,
        answers: answers.to_vec(),
        next: 0,
        now: 0,
        breaker: Breaker::Closed(0),
    };
    rt.block_on(async {
        let start = Instant::now();
        let next = AtomicUsize::new(0);
        for (i, call) in calls.iter().enumerate() {
            sleep(Duration::from_millis(call.gap_ms.into())).await;
            model.now += u64::from(call.gap_ms);
            let got = pipeline
                .call(|| {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let answer = answers.get(k).copied().unwrap_or(Answer::Ok);
                    async move {
                        match answer {
                            Answer::Ok => Ok(k as u32),
                            Answer::Err => Err(k as u32),
                            Answer::Slow(ms) => {
                                sleep(Duration::from_millis(ms.into())).await;
                                Ok(k as u32)
                            }
                        }
                    }
                })
                .await;
            let expect = model.call();
            let ctx = || format!("call {i} of {calls:?}\nconfig {config:?}\nanswers {answers:?}");
            assert_eq!(got, expect, "{}", ctx());
            assert_eq!(
                start.elapsed(),
                Duration::from_millis(model.now),
                "{}",
                ctx()
            );
            assert_eq!(next.load(Ordering::SeqCst), model.next, "{}", ctx());
            if let Some(pool) = &pool {
                // Every backend call held the slot once, and gave it back.
                let m = pool.metrics();
                assert_eq!(m.completed as usize, model.next, "{}", ctx());
                assert_eq!((m.running, m.queued), (0, 0), "{}", ctx());
            }
        }
    });
}
