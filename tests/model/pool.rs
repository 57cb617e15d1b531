//! Model checker for `WorkerPool`, shared by `tests/prop_pool.rs` and the
//! fuzz target `fuzz/fuzz_targets/pool.rs`.
//!
//! The model is a plain discrete-time priority list scheduler: at most `k`
//! tasks run, up to `q` more wait, a finishing task starts the waiting one
//! of highest priority (the oldest among equals) at the same instant
//! (unless a shrink left more than `k` running). With aging every `n`, each
//! waiting task's priority rises by `1/n` whenever a waiting task starts:
//! the model keeps that count per task and compares `priority × n + count`
//! literally, rather than the pool's closed form. The real pool runs on
//! Tokio's paused clock; each task records when it started. Start times,
//! outcomes and the running/queued counts must match.

#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowguard::pool::{TaskError, TaskHandle, WorkerPool};
use tokio::time::Instant;

/// One step applied to the pool and the model.
#[derive(Debug, Clone)]
pub enum Op {
    /// `try_submit_with_priority` a task that sleeps `ms` (1..=50) once
    /// started, at `priority` (-1..=2).
    TrySubmit { ms: u64, priority: i32 },
    /// Let `n` ms (0..=60) of paused time pass.
    Advance(u64),
    /// `set_max_concurrency(n)` (1..=4).
    Resize(usize),
    /// `abort()` the i-th submitted task (modulo the count).
    Abort(usize),
    /// `clear_queue()`.
    ClearQueue,
}

/// Decodes fuzzer bytes into ops, two bytes each.
pub fn ops_from_bytes(data: &[u8]) -> Vec<Op> {
    data.chunks_exact(2)
        .map(|c| {
            let a = c[1] as u64;
            match c[0] % 16 {
                0..=7 => Op::TrySubmit {
                    ms: 1 + a % 50,
                    priority: i32::from(c[0] >> 6) - 1,
                },
                8..=11 => Op::Advance(a % 61),
                12 | 13 => Op::Resize(1 + (a as usize) % 4),
                14 => Op::Abort(a as usize),
                _ => Op::ClearQueue,
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Fate {
    Rejected,
    Done { started_ms: u64 },
    Cancelled { started_ms: Option<u64> },
    Cleared,
}

/// A waiting task in the model.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    id: usize,
    dur: u64,
    priority: i32,
    /// Waiting tasks started since this one queued.
    aged: u64,
}

struct Model {
    k: usize,
    q: usize,
    aging: Option<u64>,
    now: u64,
    running: Vec<(usize, u64)>, // (task, end time)
    queue: Vec<Waiting>,        // in submission order
    fates: Vec<Option<Fate>>,   // None while pending
    started: Vec<Option<u64>>,
}

impl Model {
    fn start(&mut self, id: usize, dur: u64) {
        self.started[id] = Some(self.now);
        self.running.push((id, self.now + dur));
    }

    /// Takes the waiting task to start next, ageing the others.
    fn take_next(&mut self) -> Option<(usize, u64)> {
        let rank = |w: &Waiting| match self.aging {
            None => i128::from(w.priority),
            Some(n) => i128::from(w.priority) * i128::from(n) + i128::from(w.aged),
        };
        // Highest rank; `max_by_key` keeps the last maximum, so scan in
        // reverse to prefer the oldest.
        let pos = (0..self.queue.len())
            .rev()
            .max_by_key(|&i| rank(&self.queue[i]))?;
        let w = self.queue.remove(pos);
        for other in &mut self.queue {
            other.aged += 1;
        }
        Some((w.id, w.dur))
    }

    fn fill(&mut self) {
        while self.running.len() < self.k {
            let Some((id, dur)) = self.take_next() else {
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
            if let Some((id, dur)) = self.take_next() {
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

/// Runs `ops` on a `WorkerPool(k, q)` (with `priority_aging(n)` when
/// `aging` is `Some(n)`, `n >= 1`) and the model; panics on any difference.
pub fn check(k: usize, q: usize, aging: Option<usize>, ops: &[Op]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(run(k, q, aging, ops));
}

async fn run(k: usize, q: usize, aging: Option<usize>, ops: &[Op]) {
    let mut builder = WorkerPool::builder().max_concurrency(k).queue_capacity(q);
    if let Some(n) = aging {
        builder = builder.priority_aging(n);
    }
    let pool = builder.build().unwrap();
    let t0 = Instant::now();
    let mut m = Model {
        k,
        q,
        aging: aging.map(|n| n as u64),
        now: 0,
        running: Vec::new(),
        queue: Vec::new(),
        fates: Vec::new(),
        started: Vec::new(),
    };
    let starts: Arc<Mutex<Vec<Option<u64>>>> = Arc::default();
    let mut handles: Vec<Option<TaskHandle<()>>> = Vec::new();

    for op in ops {
        match *op {
            Op::TrySubmit { ms: dur, priority } => {
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
                match pool.try_submit_with_priority(task, priority) {
                    Ok(h) => {
                        assert!(admitted, "pool admitted a task the model refused: {ops:?}");
                        handles.push(Some(h));
                        if m.running.len() < m.k && m.queue.is_empty() {
                            m.start(id, dur);
                        } else {
                            m.queue.push(Waiting {
                                id,
                                dur,
                                priority,
                                aged: 0,
                            });
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
                if let Some(pos) = m.queue.iter().position(|w| w.id == i) {
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
            Op::ClearQueue => {
                let cleared = pool.clear_queue();
                assert_eq!(cleared, m.queue.len(), "cleared count in {ops:?}");
                for w in m.queue.drain(..) {
                    m.fates[w.id] = Some(Fate::Cleared);
                }
            }
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
        + m.queue.iter().map(|w| w.dur).sum::<u64>();
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
                Err(TaskError::Cleared) => Fate::Cleared,
                Err(e) => panic!("unexpected task error {e}"),
            },
        };
        assert_eq!(Some(got), m.fates[id], "fate of task {id} in {ops:?}");
    }
    let metrics = pool.metrics();
    assert_eq!((metrics.running, metrics.queued), (0, 0));
}
