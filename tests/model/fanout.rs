//! Model checker for `flowguard::fanout`, shared by `tests/prop_fanout.rs`
//! (proptest) and `fuzz/fuzz_targets/fanout.rs` (libfuzzer).
//!
//! An op sequence describes a scenario: futures with a delay and an
//! `Ok`/`Err` result, a deadline, a concurrency bound, a quorum,
//! fail-fast or first-completed, detached stragglers, a hedge delay,
//! hedging on error, which errors are final, and latency samples for a
//! learned policy. [`check`] runs the real gather and hedge on a paused
//! Tokio clock and a naive event simulation, and asserts they agree on
//! per-index outcomes, the finish reason, the exact finish time, that every
//! future was dropped by the time the gather returned (or, detached, ran
//! to its own end), and for a hedge on the winner or every attempt's error.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flowguard::fanout::{Finish, Gather, HedgePolicy, Outcome, hedge_with_attempt};

const MAX_FUTURES: usize = 12;
const WINDOW: usize = 8;
const MIN_SAMPLES: usize = 3;
const PERCENTILE: f64 = 0.75;

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Add a future that sleeps `delay_ms` (at least 1) and yields `Ok` or `Err`.
    Future { delay_ms: u16, ok: bool },
    /// Gather with this timeout (last one wins).
    Timeout(u16),
    /// At most this many futures in flight (0 is read as 1).
    Concurrency(u8),
    /// Return at this many successes (clamped to the number of futures).
    Quorum(u8),
    /// Return at the first `Err` (ignored with a quorum).
    FailFast,
    /// Hedge delay for the hedging run (0 is read as 1).
    HedgeDelay(u16),
    /// `max_hedges` for the hedging run (mod 5).
    MaxHedges(u8),
    /// A latency sample fed to a learned (p75 of 8, min 3) policy.
    Sample(u16),
    /// Return at the first completion (wins over quorum and fail-fast).
    FirstCompleted,
    /// Spawned runs leave stragglers running (`detach_stragglers`).
    Detach,
    /// The hedging run sends the next attempt as soon as one fails.
    HedgeOnError,
    /// In the hedging run, the error of an attempt behaving like future `i`
    /// is final when bit `i % 8` is set.
    FinalErrors(u8),
}

/// Decodes bytes into ops, 3 bytes an op; never panics.
pub fn ops_from_bytes(bytes: &[u8]) -> Vec<Op> {
    bytes
        .chunks_exact(3)
        .map(|c| {
            let v = u16::from_le_bytes([c[1], c[2]]) % 400;
            match c[0] % 10 {
                0..=3 => Op::Future {
                    delay_ms: v.max(1),
                    ok: c[0] & 0x80 == 0,
                },
                4 => Op::Timeout(v),
                5 => Op::Concurrency(c[1]),
                6 => Op::Quorum(c[1]),
                7 => Op::FailFast,
                8 => {
                    if c[0] & 0x80 == 0 {
                        Op::HedgeDelay(v)
                    } else {
                        Op::MaxHedges(c[1])
                    }
                }
                _ if c[0] & 0x80 == 0 => Op::Sample(v),
                _ => match c[1] % 4 {
                    0 => Op::FirstCompleted,
                    1 => Op::Detach,
                    2 => Op::HedgeOnError,
                    _ => Op::FinalErrors(c[2]),
                },
            }
        })
        .collect()
}

#[derive(Debug, Default, Clone)]
struct Scenario {
    futures: Vec<(u64, bool)>,
    timeout: Option<u64>,
    concurrency: usize,
    quorum: Option<usize>,
    fail_fast: bool,
    first_completed: bool,
    detach: bool,
    hedge_delay: u64,
    max_hedges: usize,
    hedge_on_error: bool,
    final_mask: u8,
    samples: Vec<u64>,
}

fn scenario(ops: &[Op]) -> Scenario {
    let mut s = Scenario {
        concurrency: usize::MAX,
        hedge_delay: 10,
        max_hedges: 1,
        ..Scenario::default()
    };
    let mut quorum = None;
    for op in ops {
        match *op {
            Op::Future { delay_ms, ok } if s.futures.len() < MAX_FUTURES => {
                s.futures.push((u64::from(delay_ms.max(1)), ok));
            }
            Op::Future { .. } => {}
            Op::Timeout(t) => s.timeout = Some(u64::from(t)),
            Op::Concurrency(n) => s.concurrency = usize::from(n.max(1)),
            Op::Quorum(k) => quorum = Some(usize::from(k)),
            Op::FailFast => s.fail_fast = true,
            Op::HedgeDelay(d) => s.hedge_delay = u64::from(d.max(1)),
            Op::MaxHedges(m) => s.max_hedges = usize::from(m % 5),
            Op::Sample(v) => s.samples.push(u64::from(v)),
            Op::FirstCompleted => s.first_completed = true,
            Op::Detach => s.detach = true,
            Op::HedgeOnError => s.hedge_on_error = true,
            Op::FinalErrors(mask) => s.final_mask = mask,
        }
    }
    let n = s.futures.len();
    s.quorum = quorum.filter(|_| n > 0).map(|k| k.clamp(1, n));
    if s.quorum.is_some() {
        s.fail_fast = false;
    }
    if s.first_completed {
        s.quorum = None;
        s.fail_fast = false;
    }
    s
}

/// What the model expects for one index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Completed(bool),
    TimedOut,
    Cancelled,
    /// Completed at the very instant the gather finished early: either
    /// `Completed` or `Cancelled`, depending on which simultaneous
    /// completion the gather saw first.
    CompletedOrCancelled(bool),
    /// Running at an early finish and left running (spawned, detached): it
    /// completes at `end` ms with `ok`.
    Detached {
        ok: bool,
        end: u64,
    },
    /// Completed at the very instant the gather finished early, detached
    /// mode: seen (`Completed`) or left running until that same instant.
    CompletedOrDetached {
        ok: bool,
        end: u64,
    },
}

/// The reference: a plain event simulation over milliseconds. With
/// `detach`, futures running at an early finish are left to run.
fn model_gather(s: &Scenario, detach: bool) -> (Vec<Expect>, Finish, u64) {
    let n = s.futures.len();
    let mut expect: Vec<Option<Expect>> = vec![None; n];
    let mut end: Vec<Option<u64>> = vec![None; n]; // completion time of started ones
    let mut next = 0usize;
    let mut running = 0usize;
    let (mut ok_count, mut err_count) = (0usize, 0usize);
    let mut now = 0u64;
    let verdict = |ok: usize, err: usize| -> Option<Finish> {
        let unfinished = n - ok - err;
        if let Some(k) = s.quorum {
            if ok >= k {
                return Some(Finish::QuorumReached);
            }
            if ok + unfinished < k {
                return Some(Finish::QuorumImpossible);
            }
        }
        if s.fail_fast && err > 0 {
            return Some(Finish::FailedFast);
        }
        if s.first_completed && ok + err > 0 {
            return Some(Finish::FirstCompleted);
        }
        (unfinished == 0).then_some(Finish::AllCompleted)
    };
    // Unfinished futures at an early finish: started ones are detached (if
    // asked), the rest get `how`.
    let cut = |expect: &mut Vec<Option<Expect>>, end: &[Option<u64>], how: Expect| {
        for (i, e) in expect.iter_mut().enumerate().filter(|(_, e)| e.is_none()) {
            *e = Some(match end[i] {
                Some(end) if detach => Expect::Detached {
                    ok: s.futures[i].1,
                    end,
                },
                _ => how,
            });
        }
    };
    if let Some(f) = verdict(0, 0) {
        return (vec![], f, 0);
    }
    loop {
        while running < s.concurrency && next < n {
            end[next] = Some(now + s.futures[next].0);
            next += 1;
            running += 1;
        }
        let t = (0..n)
            .filter(|&i| expect[i].is_none())
            .filter_map(|i| end[i])
            .min()
            .expect("something is running");
        if let Some(d) = s.timeout {
            if t > d {
                cut(&mut expect, &end, Expect::TimedOut);
                let out = expect.into_iter().map(Option::unwrap).collect();
                return (out, Finish::Deadline, d);
            }
        }
        now = t;
        let batch: Vec<usize> = (0..n)
            .filter(|&i| expect[i].is_none() && end[i] == Some(t))
            .collect();
        for &i in &batch {
            let ok = s.futures[i].1;
            expect[i] = Some(Expect::Completed(ok));
            running -= 1;
            if ok {
                ok_count += 1;
            } else {
                err_count += 1;
            }
            if let Some(f) = verdict(ok_count, err_count) {
                if matches!(f, Finish::FirstCompleted | Finish::FailedFast) {
                    // asyncio's `wait`: every future done at the instant of
                    // the first completion (or error) is done.
                    for &j in &batch {
                        expect[j] = Some(Expect::Completed(s.futures[j].1));
                    }
                } else if f != Finish::AllCompleted && batch.len() > 1 {
                    // Same-instant completions may have been seen in any order.
                    for &j in &batch {
                        let ok = s.futures[j].1;
                        expect[j] = Some(if detach {
                            Expect::CompletedOrDetached { ok, end: t }
                        } else {
                            Expect::CompletedOrCancelled(ok)
                        });
                    }
                }
                cut(&mut expect, &end, Expect::Cancelled);
                let out = expect.into_iter().map(Option::unwrap).collect();
                return (out, f, t);
            }
        }
    }
}

/// How the model says a hedged call ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HedgeEnd {
    /// Attempt `k` won.
    Won(usize),
    /// Failed: the reported attempt, the other failed attempts in the
    /// order they failed, and whether a final error ended it.
    Failed {
        attempt: usize,
        others: Vec<usize>,
        is_final: bool,
    },
}

/// The reference for a hedged call with a fixed delay: attempt `k` behaves
/// like future `k % n`. Returns (how it ended, attempts sent, finish ms).
fn model_hedge(s: &Scenario) -> (HedgeEnd, usize, u64) {
    let n = s.futures.len();
    let spec = |k: usize| s.futures[k % n];
    let is_final = |k: usize| s.final_mask & (1 << ((k % n) % 8)) != 0;
    let mut ends: Vec<Option<u64>> = vec![Some(spec(0).0)];
    let mut failed: Vec<usize> = Vec::new();
    let mut t;
    loop {
        let launched = ends.len();
        let next_hedge = (launched - 1 < s.max_hedges).then(|| launched as u64 * s.hedge_delay);
        let next_done = ends.iter().flatten().min().copied();
        t = match (next_done, next_hedge) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, _) => unreachable!("a live attempt always exists here"),
        };
        // Completions at t first, in attempt order; the first Ok wins, the
        // first final error loses at once.
        let mut relaunch = 0;
        for k in 0..ends.len() {
            if ends[k] == Some(t) {
                ends[k] = None;
                if spec(k).1 {
                    return (HedgeEnd::Won(k), ends.len(), t);
                }
                if is_final(k) {
                    let end = HedgeEnd::Failed {
                        attempt: k,
                        others: failed,
                        is_final: true,
                    };
                    return (end, ends.len(), t);
                }
                failed.push(k);
                if s.hedge_on_error {
                    relaunch += 1;
                }
            }
        }
        // Failures send the next attempts at once.
        for _ in 0..relaunch {
            if ends.len() - 1 < s.max_hedges {
                let k = ends.len();
                ends.push(Some(t + spec(k).0));
            }
        }
        // The timer, on the k × delay schedule of what has been sent now:
        // a hedge due at t is sent even if every attempt has failed by t.
        let launched = ends.len();
        let due = launched - 1 < s.max_hedges && launched as u64 * s.hedge_delay == t;
        if ends.iter().all(Option::is_none) && !due {
            let others = failed.iter().copied().filter(|&k| k != 0).collect();
            let end = HedgeEnd::Failed {
                attempt: 0,
                others,
                is_final: false,
            };
            return (end, ends.len(), t);
        }
        if due {
            ends.push(Some(t + spec(launched).0));
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

struct DropCount(Arc<AtomicUsize>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs the scenario for real and against the model; panics on any difference.
pub fn check(ops: &[Op]) {
    let s = scenario(ops);
    check_window(&s);
    let rt = runtime();
    rt.block_on(async {
        check_gather(&s, false).await;
        check_gather(&s, true).await;
        if !s.futures.is_empty() {
            check_hedge(&s).await;
        }
    });
}

/// Runs the gather in-task or spawned: one model for both modes (a future
/// done at the deadline instant counts as completed in either).
async fn check_gather(s: &Scenario, spawned: bool) {
    let detach = spawned && s.detach;
    let (expect, finish, at) = model_gather(s, detach);
    let drops = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now();
    // When each future ran to its end, in ms since the start.
    let ended: Arc<std::sync::Mutex<Vec<Option<u64>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; s.futures.len()]));
    let futs: Vec<_> = s
        .futures
        .iter()
        .enumerate()
        .map(|(i, &(d, ok))| {
            let guard = DropCount(drops.clone());
            let ended = ended.clone();
            async move {
                let _guard = guard;
                tokio::time::sleep(Duration::from_millis(d)).await;
                ended.lock().unwrap()[i] = Some(start.elapsed().as_millis() as u64);
                if ok { Ok(i) } else { Err(i) }
            }
        })
        .collect();
    let mut g = Gather::new(futs).concurrency(s.concurrency);
    if let Some(t) = s.timeout {
        g = g.timeout(Duration::from_millis(t));
    }
    if let Some(k) = s.quorum {
        g = g.quorum(k);
    }
    if s.fail_fast {
        g = g.fail_fast();
    }
    if s.first_completed {
        g = g.first_completed();
    }
    let mut gathered = if detach {
        g.spawn()
            .detach_stragglers()
            .build()
            .expect("valid scenario")
            .await
    } else if spawned {
        g.spawn().build().expect("valid scenario").await
    } else {
        g.build().expect("valid scenario").await
    };
    let elapsed = start.elapsed();
    // Stragglers run to their own end; each must say what its future did.
    let stragglers = gathered.take_stragglers();
    assert_eq!(
        stragglers.iter().map(|s| s.index()).collect::<Vec<_>>(),
        gathered.detached().collect::<Vec<_>>(),
        "a handle for each detached index, in order"
    );
    for straggler in stragglers {
        let i = straggler.index();
        let ok = s.futures[i].1;
        let want = if ok { Ok(i) } else { Err(i) };
        assert_eq!(
            straggler.await,
            Outcome::Completed(want),
            "straggler {i} in {s:?}"
        );
        let end = ended.lock().unwrap()[i];
        let fine = match expect[i] {
            Expect::Detached { end: e, .. } | Expect::CompletedOrDetached { end: e, .. } => {
                end == Some(e)
            }
            _ => false,
        };
        assert!(
            fine,
            "straggler {i} ended at {end:?}, want {:?} in {s:?}",
            expect[i]
        );
    }
    if spawned {
        // Aborted tasks drop their future when the runtime next runs them.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(
        drops.load(Ordering::SeqCst),
        s.futures.len(),
        "every future dropped on return (spawned: {spawned})"
    );
    assert_eq!(
        gathered.finish(),
        finish,
        "finish reason for {s:?} (spawned: {spawned})"
    );
    assert_eq!(
        elapsed,
        Duration::from_millis(at),
        "finish time for {s:?} (spawned: {spawned})"
    );
    assert_eq!(gathered.len(), expect.len());
    for (i, (got, want)) in gathered.outcomes().iter().zip(&expect).enumerate() {
        let fine = match (got, *want) {
            (Outcome::Completed(r), Expect::Completed(ok)) => {
                r.is_ok() == ok && *r.as_ref().unwrap_or_else(|e| e) == i
            }
            (Outcome::Completed(r), Expect::CompletedOrCancelled(ok)) => r.is_ok() == ok,
            (Outcome::Cancelled, Expect::CompletedOrCancelled(_)) => true,
            (Outcome::TimedOut, Expect::TimedOut) => true,
            (Outcome::Cancelled, Expect::Cancelled) => true,
            (Outcome::Detached, Expect::Detached { .. }) => true,
            (Outcome::Completed(r), Expect::CompletedOrDetached { ok, .. }) => r.is_ok() == ok,
            (Outcome::Detached, Expect::CompletedOrDetached { .. }) => true,
            _ => false,
        };
        assert!(
            fine,
            "index {i}: got {got:?}, want {want:?} in {s:?} (spawned: {spawned})"
        );
    }
    if finish == Finish::FailedFast {
        assert!(
            gathered.completed().any(|(_, r)| r.is_err()),
            "an Err was seen"
        );
    }
    if finish == Finish::QuorumReached {
        assert_eq!(
            Some(gathered.success_count()),
            s.quorum,
            "exactly k successes"
        );
    }
}

async fn check_hedge(s: &Scenario) {
    let (end, attempts, at) = model_hedge(s);
    let policy = HedgePolicy::builder()
        .fixed_delay(Duration::from_millis(s.hedge_delay))
        .max_hedges(s.max_hedges)
        .hedge_on_error(s.hedge_on_error)
        .build()
        .expect("valid policy");
    let drops = Arc::new(AtomicUsize::new(0));
    let mut sent = 0usize;
    let start = tokio::time::Instant::now();
    let n = s.futures.len();
    let mask = s.final_mask;
    let result = hedge_with_attempt(
        |attempt| {
            assert_eq!(attempt, sent, "attempts are numbered in launch order");
            let (d, ok) = s.futures[attempt % n];
            sent += 1;
            let guard = DropCount(drops.clone());
            async move {
                let _guard = guard;
                tokio::time::sleep(Duration::from_millis(d)).await;
                if ok { Ok(attempt) } else { Err(attempt) }
            }
        },
        &policy,
    )
    .final_error_if(move |&k: &usize| mask & (1 << ((k % n) % 8)) != 0)
    .await;
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(at),
        "hedge finish time for {s:?}"
    );
    assert_eq!(
        drops.load(Ordering::SeqCst),
        attempts,
        "every attempt dropped"
    );
    match (result, &end) {
        (Ok(h), HedgeEnd::Won(w)) => {
            assert_eq!((h.value, h.winner, h.attempts), (*w, *w, attempts), "{s:?}");
        }
        (
            Err(e),
            HedgeEnd::Failed {
                attempt,
                others,
                is_final,
            },
        ) => {
            assert_eq!(e.attempts(), attempts, "{s:?}");
            assert_eq!(e.is_final(), *is_final, "{s:?}");
            assert_eq!(
                (e.attempt, e.error),
                (*attempt, *attempt),
                "the reported error"
            );
            let got: Vec<(usize, usize)> = e.other_errors.clone();
            let want: Vec<(usize, usize)> = others.iter().map(|&k| (k, k)).collect();
            assert_eq!(
                got, want,
                "every other attempt's error, in failure order, {s:?}"
            );
        }
        (r, end) => panic!(
            "hedge: got {:?}, model {end:?} for {s:?}",
            r.map(|h| h.winner)
        ),
    }
    let m = policy.metrics();
    assert_eq!(m.hedges_sent as usize, attempts - 1);
}

fn check_window(s: &Scenario) {
    let policy = HedgePolicy::builder()
        .percentile(PERCENTILE)
        .window(WINDOW)
        .min_samples(MIN_SAMPLES)
        .build()
        .expect("valid policy");
    let mut naive: Vec<u64> = Vec::new();
    for &v in &s.samples {
        policy.record_latency(Duration::from_millis(v));
        naive.push(v);
        let recent = &naive[naive.len().saturating_sub(WINDOW)..];
        let want = (recent.len() >= MIN_SAMPLES).then(|| {
            let mut sorted = recent.to_vec();
            sorted.sort_unstable();
            let rank = ((PERCENTILE * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            Duration::from_millis(sorted[rank - 1])
        });
        assert_eq!(policy.current_delay(), want, "percentile after {naive:?}");
        assert_eq!(policy.metrics().samples, recent.len());
    }
}
