//! Model checker for `WorkerPool`, shared by `tests/prop_pool.rs` and the
//! fuzz target `fuzz/fuzz_targets/pool.rs`.
//!
//! The model is a plain discrete-time FIFO list scheduler: at most `k` tasks
//! run, up to `q` more wait, a finishing task starts the oldest waiting one
//! at the same instant (unless a shrink left more than `k` running). The
//! real pool runs on Tokio's paused clock; each task records when it
//! started. Start times, outcomes and the running/queued counts must match.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowguard::pool::{TaskError, TaskHandle, WorkerPool};
use tokio::time::Instant;

/// One step applied to the pool and the model.
#[derive(Debug, Clone)]
pub enum Op {
    /// `try_submit` a task that sleeps `n` ms (1..=50) once started.
    TrySubmit(u64),
    /// Let `n` ms (0..=60) of paused time pass.
    Advance(u64),
    /// `set_max_concurrency(n)` (1..=4).
    Resize(usize),
    /// `abort()` the i-th submitted task (modulo the count).
    Abort(usize),
}

/// Decodes fuzzer bytes into ops, two bytes each.
pub fn ops_from_bytes(data: &[u8]) -> Vec<Op> {
    data.chunks_exact(2)
        .map(|c| {
            let a = c[1] as u64;
            match c[0] % 8 {
                0..=3 => Op::TrySubmit(1 + a % 50),
                4..=5 => Op::Advance(a % 61),
                6 => Op::Resize(1 + (a as usize) % 4),
                _ => Op::Abort(a as usize),
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Fate {
    Rejected,
    Done { started_ms: u64 },
    Cancelled { started_ms: Option<u64> },
}

struct Model {
    k: usize,
    q: usize,
    now: u64,
    running: Vec<(usize, u64)>,    // (task, end time)
    queue: VecDeque<(usize, u64)>, // (task, duration)
    fates: Vec<Option<Fate>>,      // None while pending
    started: Vec<Option<u64>>,
}

impl Model {
    fn start(&mut self, id: usize, dur: u64) {
        self.started[id] = Some(self.now);
        self.running.push((id, self.now + dur));
    }

    fn fill(&mut self) {
        while self.running.len() < self.k {
            let Some((id, dur)) = self.queue.pop_front() else {
                break;
            };
            self.start(id, dur);
        }
    }

    /// Removes a running task (finished or aborted); hands its slot on.
    fn end(&mut self, pos: usize) {
        let over = self.running.len() > self.k;
        self.running.remove(pos);
        if !over {
            if let Some((id, dur)) = self.queue.pop_front() {
                self.start(id, dur);
            }
        }
    }

    fn advance(&mut self, by: u64) {
        let until = self.now + by;
        loop {
            let next = self
                .running
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, end))| *end);
            match next {
                Some((pos, &(id, end))) if end <= until => {
                    self.now = end;
                    self.fates[id] = Some(Fate::Done {
                        started_ms: self.started[id].expect("running task started"),
                    });
                    self.end(pos);
                }
                _ => break,
            }
        }
        self.now = until;
    }
}

async fn settle() {
    for _ in 0..32 {
        tokio::task::yield_now().await;
    }
}

/// Runs `ops` on a `WorkerPool(k, q)` and the model; panics on any difference.
pub fn check(k: usize, q: usize, ops: &[Op]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(run(k, q, ops));
}

async fn run(k: usize, q: usize, ops: &[Op]) {
    let pool = WorkerPool::builder()
        .max_concurrency(k)
        .queue_capacity(q)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let mut m = Model {
        k,
        q,
        now: 0,
        running: Vec::new(),
        queue: VecDeque::new(),
        fates: Vec::new(),
        started: Vec::new(),
    };
    let starts: Arc<Mutex<Vec<Option<u64>>>> = Arc::default();
    let mut handles: Vec<Option<TaskHandle<()>>> = Vec::new();

    for op in ops {
        match *op {
            Op::TrySubmit(dur) => {
                let id = handles.len();
                m.fates.push(None);
                m.started.push(None);
                starts.lock().unwrap().push(None);
                let rec = starts.clone();
                let task = async move {
                    let at = Instant::now().duration_since(t0).as_millis() as u64;
                    rec.lock().unwrap()[id] = Some(at);
                    tokio::time::sleep(Duration::from_millis(dur)).await;
                };
                let admitted = m.running.len() + m.queue.len() < m.k + m.q;
                match pool.try_submit(task) {
                    Ok(h) => {
                        assert!(admitted, "pool admitted a task the model refused: {ops:?}");
                        handles.push(Some(h));
                        if m.running.len() < m.k && m.queue.is_empty() {
                            m.start(id, dur);
                        } else {
                            m.queue.push_back((id, dur));
                        }
                    }
                    Err(_) => {
                        assert!(!admitted, "pool refused a task the model admitted: {ops:?}");
                        handles.push(None);
                        m.fates[id] = Some(Fate::Rejected);
                    }
                }
            }
            Op::Advance(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                m.advance(ms);
            }
            Op::Resize(n) => {
                pool.set_max_concurrency(n).unwrap();
                m.k = n;
                m.fill();
            }
            Op::Abort(i) if !handles.is_empty() => {
                let i = i % handles.len();
                if let Some(h) = &handles[i] {
                    h.abort();
                }
                if let Some(pos) = m.queue.iter().position(|&(id, _)| id == i) {
                    m.queue.remove(pos);
                    m.fates[i] = Some(Fate::Cancelled { started_ms: None });
                } else if let Some(pos) = m.running.iter().position(|&(id, _)| id == i) {
                    m.fates[i] = Some(Fate::Cancelled {
                        started_ms: m.started[i],
                    });
                    m.end(pos);
                }
            }
            Op::Abort(_) => {}
        }
        settle().await;
        let metrics = pool.metrics();
        assert_eq!(
            (metrics.running, metrics.queued),
            (m.running.len(), m.queue.len()),
            "running/queued after {op:?} at {} ms in {ops:?}",
            m.now
        );
        assert_eq!(
            *starts.lock().unwrap(),
            m.started,
            "start times after {op:?} in {ops:?}"
        );
    }

    // Run everything out and compare every task's fate.
    let rest = m.running.iter().map(|&(_, e)| e).max().unwrap_or(m.now) - m.now
        + m.queue.iter().map(|&(_, d)| d).sum::<u64>();
    tokio::time::sleep(Duration::from_millis(rest + 1)).await;
    m.advance(rest + 1);
    settle().await;
    for (id, h) in handles.into_iter().enumerate() {
        let got = match h {
            None => Fate::Rejected,
            Some(h) => match h.await {
                Ok(()) => Fate::Done {
                    started_ms: starts.lock().unwrap()[id].expect("completed task started"),
                },
                Err(TaskError::Cancelled) => Fate::Cancelled {
                    started_ms: starts.lock().unwrap()[id],
                },
                Err(e) => panic!("unexpected task error {e}"),
            },
        };
        assert_eq!(Some(got), m.fates[id], "fate of task {id} in {ops:?}");
    }
    let metrics = pool.metrics();
    assert_eq!((metrics.running, metrics.queued), (0, 0));
}
