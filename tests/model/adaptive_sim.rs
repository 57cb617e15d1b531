//! A backend with a real queueing knee, and an open-loop load against it,
//! on Tokio's paused clock. Shared by `tests/adaptive.rs` (which asserts
//! on the numbers) and `examples/adaptive.rs` (which prints them).
//!
//! The backend has `k` servers; a request takes a free server for exactly
//! `service`, or waits in a FIFO queue for one, so its latency is `service`
//! while at most `k` are in flight and rises by `service / k` for each
//! request beyond (Little's law). A request that finds the queue at its
//! bound is dropped at once (an instant 503). `k` can change mid-run.
//!
//! The load is open-loop: `per_tick` new requests every `tick`, whatever
//! happened to the earlier ones, each admitted or shed at once by the
//! policy under test (an `AdaptiveLimiter`'s `try_acquire`, or a fixed
//! `Semaphore`'s).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowguard::adaptive::AdaptiveLimiter;
use flowguard::semaphore::Semaphore;
use tokio::time::{Instant, sleep, sleep_until};

/// The backend: `k` servers, one service time, a bounded queue.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    servers: Semaphore,
    service: Duration,
    queue_bound: usize,
    queued: Arc<AtomicUsize>,
}

/// The backend refused the request: its queue was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dropped;

impl Backend {
    pub(crate) fn new(k: usize, service: Duration, queue_bound: usize) -> Self {
        Self {
            servers: Semaphore::new(k),
            service,
            queue_bound,
            queued: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Changes the number of servers; requests being served finish.
    pub(crate) fn set_servers(&self, k: usize) {
        self.servers.set_capacity(k).expect("a small k");
    }

    pub(crate) fn servers(&self) -> usize {
        self.servers.capacity()
    }

    pub(crate) async fn call(&self) -> Result<(), Dropped> {
        let _server = match self.servers.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                if self.queued.load(Ordering::Relaxed) >= self.queue_bound {
                    return Err(Dropped);
                }
                self.queued.fetch_add(1, Ordering::Relaxed);
                let p = self.servers.acquire().await.expect("never closed");
                self.queued.fetch_sub(1, Ordering::Relaxed);
                p
            }
        };
        sleep(self.service).await;
        Ok(())
    }
}

/// What admits a request: the adaptive limiter or a fixed limit.
#[derive(Debug, Clone)]
pub(crate) enum Policy {
    Adaptive(AdaptiveLimiter),
    Fixed(Semaphore),
}

/// A run's plan.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    /// Servers at the start.
    pub(crate) k: usize,
    /// `(at, k)`: the backend's servers change to `k` at `at`.
    pub(crate) changes: Vec<(Duration, usize)>,
    pub(crate) service: Duration,
    pub(crate) queue_bound: usize,
    pub(crate) tick: Duration,
    pub(crate) per_tick: usize,
    pub(crate) duration: Duration,
    /// How often the chart samples the limit.
    pub(crate) chart_every: Duration,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Run {
    /// Requests that got an answer.
    pub(crate) ok: u64,
    /// Requests the backend dropped.
    pub(crate) dropped: u64,
    /// Requests the policy shed.
    pub(crate) shed: u64,
    /// `ok` per second of the run.
    pub(crate) goodput: f64,
    /// Latencies of the answered requests, sorted.
    pub(crate) latencies: Vec<Duration>,
    /// After each sample the adaptive limiter took: `(samples so far, limit)`.
    pub(crate) trace: Vec<(u64, usize)>,
    /// `(samples so far)` at each change of `k`, in order.
    pub(crate) change_samples: Vec<u64>,
    /// `(time, limit, k, inflight)` every `chart_every`.
    pub(crate) chart: Vec<(Duration, usize, usize, usize)>,
}

impl Run {
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1]
    }

    pub(crate) fn p99(&self) -> Duration {
        self.percentile(0.99)
    }

    /// Samples, counted from the `from`-th sample, until the limit enters
    /// `[lo, hi]` and stays there up to the `to`-th sample; `None` if it
    /// never settles.
    pub(crate) fn settled_after(&self, from: u64, to: u64, lo: usize, hi: usize) -> Option<u64> {
        let window: Vec<_> = self
            .trace
            .iter()
            .filter(|(s, _)| *s > from && *s <= to)
            .collect();
        let last_out = window.iter().rposition(|(_, l)| !(lo..=hi).contains(l));
        match last_out {
            None => Some(0),
            Some(i) if i + 1 < window.len() => Some(window[i + 1].0 - from),
            Some(_) => None,
        }
    }
}

/// Runs `scenario` against `policy`. Call on a paused current-thread runtime.
pub(crate) async fn run(scenario: &Scenario, policy: Policy) -> Run {
    let backend = Backend::new(scenario.k, scenario.service, scenario.queue_bound);
    let start = Instant::now();
    let ok = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let trace = Arc::new(Mutex::new(Vec::new()));
    let mut shed = 0;
    let mut change_samples = Vec::new();
    let mut chart = Vec::new();
    let mut changes = scenario.changes.iter().peekable();
    let mut next_chart = Duration::ZERO;
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = 0u32;
    let samples = |p: &Policy| match p {
        Policy::Adaptive(l) => l.metrics().samples,
        Policy::Fixed(_) => 0,
    };
    loop {
        let now = scenario.tick * tick;
        if now >= scenario.duration {
            break;
        }
        sleep_until(start + now).await;
        while let Some(&&(at, k)) = changes.peek() {
            if at > now {
                break;
            }
            backend.set_servers(k);
            change_samples.push(samples(&policy));
            changes.next();
        }
        if now >= next_chart {
            let (limit, inflight) = match &policy {
                Policy::Adaptive(l) => (l.limit(), l.inflight()),
                Policy::Fixed(s) => (s.capacity(), s.capacity() - s.available()),
            };
            chart.push((now, limit, backend.servers(), inflight));
            next_chart += scenario.chart_every;
        }
        for _ in 0..scenario.per_tick {
            let backend = backend.clone();
            let (ok, dropped, latencies) = (ok.clone(), dropped.clone(), latencies.clone());
            match &policy {
                Policy::Adaptive(limiter) => {
                    let Ok(permit) = limiter.try_acquire() else {
                        shed += 1;
                        continue;
                    };
                    let (limiter, trace) = (limiter.clone(), trace.clone());
                    tasks.spawn(async move {
                        let t = Instant::now();
                        match backend.call().await {
                            Ok(()) => {
                                permit.success();
                                ok.fetch_add(1, Ordering::Relaxed);
                                latencies.lock().unwrap().push(t.elapsed());
                            }
                            Err(Dropped) => {
                                permit.dropped();
                                dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        let m = limiter.metrics();
                        trace.lock().unwrap().push((m.samples, m.limit));
                    });
                }
                Policy::Fixed(sem) => {
                    let Ok(permit) = sem.try_acquire_owned() else {
                        shed += 1;
                        continue;
                    };
                    tasks.spawn(async move {
                        let t = Instant::now();
                        let r = backend.call().await;
                        drop(permit);
                        match r {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                latencies.lock().unwrap().push(t.elapsed());
                            }
                            Err(Dropped) => {
                                dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            }
        }
        // Finished tasks are reaped as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
        tick += 1;
    }
    // Count only what the run's span answered: abandon the stragglers.
    tasks.abort_all();
    let ok = ok.load(Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort();
    let trace = std::mem::take(&mut *trace.lock().unwrap());
    Run {
        ok,
        dropped: dropped.load(Ordering::Relaxed),
        shed,
        goodput: ok as f64 / scenario.duration.as_secs_f64(),
        latencies,
        trace,
        change_samples,
        chart,
    }
}
