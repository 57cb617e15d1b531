//! Behaviour tests of `flowguard::timing` on the paused Tokio clock.
//!
//! The cases follow lodash's own test suite for `debounce` and `throttle`;
//! every time is asserted exactly.

// The counting allocator below is the only unsafe code; the library itself
// forbids it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowguard::ConfigErrorKind;
use flowguard::timing::{
    CallError, Closed, DebounceCore, DebounceOptions, Debounced, Debouncer, Step, Throttler,
    TimingStreamExt,
};
use futures::{FutureExt, Stream, StreamExt};
use tokio::time::{Instant, sleep};

// ---- allocation counting -------------------------------------------------

/// Counts allocations made by the current thread while `COUNTING` is set.
struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every request is forwarded unchanged to `System`; the counters are
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNTING.try_with(|c| {
            if c.get() {
                let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
            }
        });
        // SAFETY: same contract as ours, forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn count_allocs<R>(f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, ALLOCS.with(|a| a.get()))
}

// ---- helpers ---------------------------------------------------------------

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

type Log<T> = Arc<Mutex<Vec<(u64, T)>>>;

/// A sync handler that records (ms since `start`, value).
fn recorder<T: Send + 'static>(start: Instant) -> (Log<T>, impl FnMut(T) + Send + 'static) {
    let log: Log<T> = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    (log, move |v| {
        l.lock()
            .unwrap()
            .push((start.elapsed().as_millis() as u64, v))
    })
}

fn taken<T: Clone>(log: &Log<T>) -> Vec<(u64, T)> {
    log.lock().unwrap().clone()
}

/// Calls `d` with `values` at the given offsets from `start` (sleeping in between).
async fn call_at<R>(d: &Debouncer<u32, R>, start: Instant, calls: &[(u64, u32)]) {
    for &(at, v) in calls {
        tokio::time::sleep_until(start + ms(at)).await;
        d.call(v).unwrap();
    }
}

// ---- lodash's behaviours ----------------------------------------------------

#[tokio::test(start_paused = true)]
async fn debounce_trailing_only_invokes_once_with_latest() {
    let start = Instant::now();
    let (log, h) = recorder(start);
    let d = Debouncer::builder(ms(32)).build_sync(h).unwrap();
    call_at(&d, start, &[(0, 1), (10, 2), (20, 3)]).await;
    assert!(d.is_pending());
    sleep(ms(200)).await;
    assert_eq!(taken(&log), vec![(52, 3)]);
    assert!(!d.is_pending());
    // A second burst.
    call_at(&d, start, &[(300, 4), (301, 5)]).await;
    sleep(ms(100)).await;
    assert_eq!(taken(&log), vec![(52, 3), (333, 5)]);
    let m = d.metrics();
    assert_eq!((m.calls, m.invocations, m.pending), (5, 2, false));
}

#[tokio::test(start_paused = true)]
async fn debounce_leading_only() {
    let start = Instant::now();
    let (log, h) = recorder(start);
    let d = Debouncer::builder(ms(32))
        .leading(true)
        .trailing(false)
        .build_sync(h)
        .unwrap();
    call_at(&d, start, &[(0, 1), (10, 2), (20, 3)]).await;
    sleep(ms(100)).await;
    call_at(&d, start, &[(200, 4), (210, 5)]).await;
    sleep(ms(100)).await;
    assert_eq!(taken(&log), vec![(0, 1), (200, 4)]);
    assert_eq!(d.metrics().discarded, 2);
}

#[tokio::test(start_paused = true)]
async fn leading_and_trailing_trailing_needs_more_than_one_call() {
    let start = Instant::now();
    let (log, h) = recorder(start);
    let d = Debouncer::builder(ms(32))
        .leading(true)
        .build_sync(h)
        .unwrap();
    call_at(&d, start, &[(0, 1)]).await;
    sleep(ms(100)).await;
    assert_eq!(taken(&log), vec![(0, 1)], "one call: leading only");
    call_at(&d, start, &[(200, 2), (205, 3)]).await;
    sleep(ms(100)).await;
    assert_eq!(taken(&log), vec![(0, 1), (200, 2), (237, 3)]);
}

/// lodash's "should reset `lastCalled` after cancelling" (leading on): the
/// leading invocation of 1 has not started when the leading edge of 2
/// comes due (no yield between the calls), and still both run, then the
/// trailing edge of 3.
#[tokio::test(start_paused = true)]
async fn leading_edges_after_a_cancel_in_one_tick_each_invoke() {
    let start = Instant::now();
    let (log, h) = recorder(start);
    let d = Debouncer::builder(ms(32))
        .leading(true)
        .build_sync(h)
        .unwrap();
    d.call(1).unwrap();
    d.cancel();
    d.call(2).unwrap();
    d.call(3).unwrap();
    sleep(ms(64)).await;
    assert_eq!(taken(&log), vec![(0, 1), (0, 2), (32, 3)]);
    assert_eq!((d.metrics().invocations, d.metrics().folded), (3, 0));
}

/// The same lodash test for the throttler.
#[tokio::test(start_paused = true)]
async fn throttle_leading_edges_after_a_cancel_in_one_tick_each_invoke() {
    let start = Instant::now();
    let (log, h) = recorder(start);
    let t = Throttler::builder(ms(32)).build_sync(h).unwrap();
    t.call(1).unwrap();
    t.cancel();
    t.call(2).unwrap();
    t.call(3).unwrap();
    sleep(ms(64)).await;
    assert_eq!(taken(&log), vec![(0, 1), (0, 2), (32, 3)]);
}

/// Edges decided before the idle handler starts wait in order, 16 at most:
/// the 17th and later fold into the 16th (latest value wins).
#[tokio::test(start_paused = true)]
async fn at_most_sixteen_invocations_wait_for_an_idle_handler() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let d = Debouncer::builder(ms(32))
        .leading(true)
        .build_sync(move |v: u32| {
            s.lock().unwrap().push(v);
            v * 10
        })
        .unwrap();
    let waits: Vec<_> = (1..=20)
        .map(|v| {
            let w = d.call_wait(v).unwrap();
            d.cancel();
            w
        })
        .collect();
    sleep(ms(64)).await;
    let mut expected: Vec<u32> = (1..=15).collect();
    expected.push(20);
    assert_eq!(*seen.lock().unwrap(), expected);
    assert_eq!((d.metrics().invocations, d.metrics().folded), (16, 4));
    let mut results = Vec::new();
    for w in waits {
        results.push(w.await.unwrap());
    }
    // Callers folded into the 16th invocation receive its result.
    let mut want: Vec<u32> = (1..=15).map(|v| v * 10).collect();
    want.extend([200; 5]);
    assert_eq!(results, want);
}

#[tokio::test(start_paused = true)]
async fn max_wait_forces_invocations_during_a_burst() {
    let start = Instant::now();
    let (log, h) = recorder(start);
    let d = Debouncer::builder(ms(32))
        .max_wait(ms(64))
        .build_sync(h)
        .unwrap();
    // A call every 10 ms for 200 ms: without max_wait nothing would run
    // until the burst ends.
    let calls: Vec<(u64, u32)> = (0..20).map(|i| (i * 10, i as u32)).collect();
    call_at(&d, start, &calls).await;
    sleep(ms(200)).await;
    assert_eq!(taken(&log), vec![(64, 6), (128, 12), (192, 19)]);
}

#[tokio::test(start_paused = true)]
async fn max_wait_below_wait_is_raised_to_wait() {
    let d = Debouncer::builder(ms(100))
        .max_wait(ms(10))
        .build_sync(|_: u32| ())
        .unwrap();
    assert_eq!(d.options().max_wait(), Some(ms(100)));
    let start = Instant::now();
    let (log, h) = recorder(start);
    let d = Debouncer::builder(ms(100))
        .max_wait(ms(10))
        .build_sync(h)
        .unwrap();
    let calls: Vec<(u64, u32)> = (0..30).map(|i| (i * 10, i as u32)).collect();
    call_at(&d, start, &calls).await;
    sleep(ms(300)).await;
    // Forced every 100 ms, not every 10 ms.
    let times: Vec<u64> = taken(&log).iter().map(|e| e.0).collect();
    assert_eq!(times, vec![100, 200, 300]);
}

#[tokio::test(start_paused = true)]
async fn wait_zero_folds_calls_of_one_instant() {
    let start = Instant::now();
    let (log, h) = recorder(start);
    let d = Debouncer::builder(Duration::ZERO).build_sync(h).unwrap();
    d.call(1).unwrap();
    d.call(2).unwrap();
    assert!(taken(&log).is_empty(), "deferred, as setTimeout(0)");
    sleep(ms(5)).await;
    assert_eq!(taken(&log), vec![(0, 2)]);
    d.call(3).unwrap();
    sleep(ms(5)).await;
    assert_eq!(taken(&log), vec![(0, 2), (5, 3)]);
}

#[tokio::test(start_paused = true)]
async fn flush_runs_now_and_cancel_drops() {
    let start = Instant::now();
    let (log, h) = recorder(start);
    let d = Debouncer::builder(ms(100)).build_sync(h).unwrap();
    assert!(!d.flush(), "nothing to flush");
    d.call(1).unwrap();
    sleep(ms(10)).await;
    assert!(d.flush());
    assert!(!d.is_pending());
    sleep(ms(1)).await;
    assert_eq!(taken(&log), vec![(10, 1)]);
    d.call(2).unwrap();
    assert!(d.cancel());
    assert!(!d.cancel(), "nothing left to cancel");
    sleep(ms(500)).await;
    assert_eq!(taken(&log), vec![(10, 1)]);
    assert_eq!(d.metrics().cancelled, 1);
    // After cancel the next call starts afresh.
    d.call(3).unwrap();
    sleep(ms(150)).await;
    assert_eq!(taken(&log), vec![(10, 1), (611, 3)]);
}

#[tokio::test(start_paused = true)]
async fn throttle_rate_over_a_long_burst() {
    let start = Instant::now();
    let (log, h) = recorder(start);
    let t = Throttler::builder(ms(100)).build_sync(h).unwrap();
    // 1 kHz for one second.
    for i in 0..1000u32 {
        tokio::time::sleep_until(start + ms(u64::from(i))).await;
        t.call(i).unwrap();
    }
    sleep(ms(300)).await;
    let got = taken(&log);
    let times: Vec<u64> = got.iter().map(|e| e.0).collect();
    // Leading at 0, then one per 100 ms with the latest reading.
    assert_eq!(times, (0..=10).map(|i| i * 100).collect::<Vec<_>>());
    assert_eq!(got[0].1, 0);
    assert_eq!(got[10].1, 999);
    for (at, v) in &got[1..10] {
        // The call at the boundary instant and the timer due then are woken
        // together; whichever runs first, the latest value is used.
        assert!(*at - u64::from(*v) <= 1, "latest value at {at}: {v}");
    }
}

#[tokio::test(start_paused = true)]
async fn throttle_single_call_is_leading_only() {
    let start = Instant::now();
    let (log, h) = recorder(start);
    let t = Throttler::builder(ms(50)).build_sync(h).unwrap();
    t.call(7).unwrap();
    sleep(ms(200)).await;
    assert_eq!(taken(&log), vec![(0, 7)]);
    let opts = t.options();
    assert_eq!(
        (opts.leading(), opts.trailing(), opts.max_wait()),
        (true, true, Some(ms(50)))
    );
}

// ---- awaiting results -------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn call_wait_gets_the_result_of_the_folded_invocation() {
    let d = Debouncer::builder(ms(50))
        .build(|v: u32| async move { v * 10 })
        .unwrap();
    let a = d.call_wait(1).unwrap();
    d.call(2).unwrap();
    let b = d.call_wait(3).unwrap();
    let start = Instant::now();
    assert_eq!(a.await, Ok(30));
    assert_eq!(start.elapsed(), ms(50));
    assert_eq!(b.await, Ok(30));
    // A new batch after the invocation.
    assert_eq!(d.call_wait(4).unwrap().await, Ok(40));
}

#[tokio::test(start_paused = true)]
async fn call_wait_reports_cancel_and_discard() {
    let d = Debouncer::builder(ms(50)).build_sync(|v: u32| v).unwrap();
    let w = d.call_wait(1).unwrap();
    d.cancel();
    assert_eq!(w.await, Err(CallError::Cancelled));

    let lead = Debouncer::builder(ms(50))
        .leading(true)
        .trailing(false)
        .build_sync(|v: u32| v)
        .unwrap();
    assert_eq!(lead.call_wait(1).unwrap().await, Ok(1));
    let w = lead.call_wait(2).unwrap();
    assert_eq!(w.await, Err(CallError::Discarded));
}

#[tokio::test(start_paused = true)]
async fn invocations_never_overlap_and_calls_during_a_run_are_kept() {
    let start = Instant::now();
    let running = Arc::new(Mutex::new((0u32, 0u32))); // (now, max)
    let log: Log<u32> = Arc::new(Mutex::new(Vec::new()));
    let (r, l) = (running.clone(), log.clone());
    let d = Debouncer::builder(ms(10))
        .leading(true)
        .build(move |v: u32| {
            let (r, l) = (r.clone(), l.clone());
            async move {
                {
                    let mut g = r.lock().unwrap();
                    g.0 += 1;
                    g.1 = g.1.max(g.0);
                }
                l.lock()
                    .unwrap()
                    .push((start.elapsed().as_millis() as u64, v));
                sleep(ms(100)).await;
                r.lock().unwrap().0 -= 1;
            }
        })
        .unwrap();
    // Leading at 0 starts a 100 ms run. The timer keeps its time meanwhile:
    // the trailing edge for the call at 5 comes due at 15 and waits behind
    // the running handler; the leading edge of the burst at 40 comes due
    // too and is folded into it (latest value wins).
    call_at(&d, start, &[(0, 1), (5, 2), (40, 3)]).await;
    assert!(d.metrics().running);
    sleep(ms(100)).await;
    // During the second run three invocations come due: the leading one of
    // the burst at 150, the flush of 5, and the leading one of the burst at
    // 170. Only one waits behind the running handler: the later two are
    // folded into it (latest value wins).
    call_at(&d, start, &[(150, 4), (155, 5)]).await;
    assert!(d.flush());
    call_at(&d, start, &[(170, 6)]).await;
    sleep(ms(400)).await;
    assert_eq!(taken(&log), vec![(0, 1), (100, 3), (200, 6)]);
    assert_eq!(running.lock().unwrap().1, 1, "never more than one at once");
    assert_eq!(d.metrics().folded, 3);
}

#[tokio::test(start_paused = true)]
async fn a_trailing_edge_due_during_a_run_is_not_swallowed_by_a_later_burst() {
    let start = Instant::now();
    let log: Log<u32> = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let d = Debouncer::builder(ms(100))
        .build(move |v: u32| {
            let l = l.clone();
            async move {
                l.lock()
                    .unwrap()
                    .push((start.elapsed().as_millis() as u64, v));
                sleep(ms(300)).await;
            }
        })
        .unwrap();
    // 1 runs from 100 to 400. The burst of 2 ends at 250: its trailing
    // edge comes due then, during the run, and runs right after it (400).
    // A new burst starts at 260 and goes on past 400 (a call every 80 ms
    // until 980): it must not absorb 2.
    call_at(&d, start, &[(0, 1), (150, 2)]).await;
    let burst: Vec<(u64, u32)> = (0..10).map(|i| (260 + 80 * i, 10 + i as u32)).collect();
    call_at(&d, start, &burst).await;
    sleep(ms(1000)).await;
    assert_eq!(taken(&log), vec![(100, 1), (400, 2), (1080, 19)]);
    let m = d.metrics();
    assert_eq!((m.invocations, m.folded), (3, 0));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_closes_and_returns_values() {
    let d = Debouncer::builder(ms(10))
        .build_sync(|v: u32| {
            if v == 13 {
                panic!("unlucky");
            }
            v
        })
        .unwrap();
    let w = d.call_wait(13).unwrap();
    assert_eq!(w.await, Err(CallError::Closed));
    assert!(d.is_closed());
    assert_eq!(d.call(5), Err(Closed(5)));
    assert_eq!(d.call_wait(6).unwrap_err().into_inner(), 6);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_debouncer() {
    let start = Instant::now();
    let (log, h) = recorder(start);
    let d = Debouncer::builder(ms(30)).build_sync(h).unwrap();
    let d2 = d.clone();
    let task = tokio::spawn(async move {
        sleep(ms(10)).await;
        d2.call(2).unwrap();
    });
    d.call(1).unwrap();
    task.await.unwrap();
    sleep(ms(100)).await;
    assert_eq!(taken(&log), vec![(40, 2)]);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_drops_a_pending_value_and_stops() {
    let start = Instant::now();
    let (log, h) = recorder(start);
    let d = Debouncer::builder(ms(30)).build_sync(h).unwrap();
    let w = d.call_wait(1).unwrap();
    drop(d);
    assert_eq!(w.await, Err(CallError::Closed));
    sleep(ms(100)).await;
    assert!(taken(&log).is_empty());
}

#[test]
fn a_worker_dropped_before_its_first_poll_closes_and_fails_waiters() {
    // The runtime shuts down before the spawned worker ever runs (the
    // future that built the debouncer finishes in its first poll), so the
    // worker future is dropped unpolled. Waiters must hear `Closed`, not hang.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let (d, t) = rt.block_on(async {
        let d = Debouncer::builder(ms(10)).build_sync(|v: u32| v).unwrap();
        let t = Throttler::builder(ms(10)).build_sync(|v: u32| v).unwrap();
        (d, t)
    });
    let w = d.call_wait(1).unwrap();
    let tw = t.call_wait(1).unwrap();
    assert!(
        !d.is_closed(),
        "the worker is only gone once the runtime is"
    );
    drop(rt);
    assert!(d.is_closed());
    assert!(t.is_closed());
    assert_eq!(w.now_or_never(), Some(Err(CallError::Closed)));
    assert_eq!(tw.now_or_never(), Some(Err(CallError::Closed)));
    assert_eq!(d.call(2), Err(Closed(2)));
    assert_eq!(t.call_wait(3).unwrap_err().into_inner(), 3);
}

// ---- bad input ----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn both_edges_off_is_refused() {
    let err = Debouncer::builder(ms(10))
        .leading(false)
        .trailing(false)
        .build_sync(|_: u32| ())
        .unwrap_err();
    assert_eq!(
        (err.field(), err.kind()),
        ("trailing", ConfigErrorKind::Conflict)
    );
    let err = Throttler::builder(ms(10))
        .leading(false)
        .trailing(false)
        .build_sync(|_: u32| ())
        .unwrap_err();
    assert_eq!(err.field(), "trailing");
    assert!(
        err.to_string()
            .starts_with("invalid timing config: trailing")
    );
}

#[test]
fn building_outside_a_runtime_is_refused() {
    let err = Debouncer::builder(ms(10))
        .build_sync(|_: u32| ())
        .unwrap_err();
    assert_eq!(
        (err.field(), err.kind()),
        ("runtime", ConfigErrorKind::Missing)
    );
    let err = Throttler::builder(ms(10))
        .build_sync(|_: u32| ())
        .unwrap_err();
    assert_eq!(err.field(), "runtime");
}

#[tokio::test(start_paused = true)]
async fn extreme_durations_do_not_panic() {
    for wait in [Duration::ZERO, Duration::from_nanos(1), Duration::MAX] {
        let d = Debouncer::builder(wait)
            .leading(true)
            .max_wait(Duration::MAX)
            .build_sync(|v: u32| v)
            .unwrap();
        assert_eq!(d.call_wait(1).unwrap().await, Ok(1));
        d.call(2).unwrap();
        d.flush();
        d.cancel();
        let s: Vec<u32> = futures::stream::iter([1, 2, 3])
            .throttle(wait)
            .collect()
            .await;
        // lodash: with wait 0 every throttled call finds the window over.
        let want = if wait.is_zero() {
            vec![1, 2, 3]
        } else {
            vec![1, 3]
        };
        assert_eq!(s, want);
    }
}

// ---- streams ---------------------------------------------------------------

/// Items at the given offsets (ms), from a task, through a channel.
fn timed<T: Send + 'static>(
    start: Instant,
    items: Vec<(u64, T)>,
) -> impl futures::Stream<Item = T> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        for (at, v) in items {
            tokio::time::sleep_until(start + ms(at)).await;
            if tx.send(v).await.is_err() {
                return;
            }
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn collect_timed<S: futures::Stream>(start: Instant, s: S) -> Vec<(u64, S::Item)> {
    s.map(|v| (start.elapsed().as_millis() as u64, v))
        .collect()
        .await
}

#[tokio::test(start_paused = true)]
async fn stream_debounce_yields_after_quiet_and_flushes_at_end() {
    let start = Instant::now();
    let items = vec![(0, 'a'), (10, 'b'), (100, 'c'), (110, 'd'), (120, 'e')];
    let s = timed(start, items).debounce(ms(50));
    // 'b' at 60; 'e' flushed when the inner stream ends at 120.
    assert_eq!(collect_timed(start, s).await, vec![(60, 'b'), (120, 'e')]);
}

#[tokio::test(start_paused = true)]
async fn stream_throttle_leading_and_trailing() {
    let start = Instant::now();
    let items: Vec<(u64, u32)> = (0..25).map(|i| (i * 10, i as u32)).collect();
    let s = timed(start, items).throttle(ms(100));
    let got = collect_timed(start, s).await;
    assert_eq!(got, vec![(0, 0), (100, 9), (200, 19), (240, 24)]);
}

#[tokio::test(start_paused = true)]
async fn stream_end_with_trailing_off_drops_the_held_item() {
    let opts = DebounceOptions::builder(ms(50))
        .leading(true)
        .trailing(false)
        .build()
        .unwrap();
    let got: Vec<u32> = futures::stream::iter([1, 2, 3])
        .debounce_with(opts)
        .collect()
        .await;
    assert_eq!(got, vec![1]);
    let opts = DebounceOptions::throttle_builder(ms(50))
        .leading(false)
        .build()
        .unwrap();
    let got: Vec<u32> = futures::stream::iter([1, 2, 3])
        .throttle_with(opts)
        .collect()
        .await;
    assert_eq!(got, vec![3]);
}

#[tokio::test(start_paused = true)]
async fn stream_slow_consumer_loses_no_burst() {
    let start = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let inner = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut s = Box::pin(inner.debounce(ms(10)));
    tx.send(1).await.unwrap();
    assert_eq!(futures::poll!(s.next()), std::task::Poll::Pending);
    // The consumer stops polling; the burst's timer comes due meanwhile and
    // the next burst has already started when it polls again.
    sleep(ms(50)).await;
    tx.send(2).await.unwrap();
    drop(tx);
    assert_eq!(s.next().await, Some(1));
    assert_eq!(s.next().await, Some(2));
    assert_eq!(s.next().await, None);
    assert_eq!(start.elapsed(), ms(50));
}

/// A stream fed by hand through a channel, so a test decides exactly which
/// items are ready at which instant.
fn fed<T: Send + 'static>() -> (
    tokio::sync::mpsc::Sender<T>,
    impl futures::Stream<Item = T> + Unpin,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    (tx, futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

#[tokio::test(start_paused = true)]
async fn stream_debounce_wait_zero_folds_items_of_one_instant() {
    // lodash: with wait 0, calls made at one instant fold into one invocation.
    let got: Vec<u32> = futures::stream::iter([1, 2, 3])
        .debounce(Duration::ZERO)
        .collect()
        .await;
    assert_eq!(got, vec![3]);

    // The same while the inner stream stays open, so the timer (not the end
    // of the stream) yields.
    let start = Instant::now();
    let (tx, inner) = fed();
    let mut s = Box::pin(inner.debounce(Duration::ZERO));
    for v in [1, 2, 3] {
        tx.send(v).await.unwrap();
    }
    assert_eq!(s.next().await, Some(3));
    assert_eq!(start.elapsed(), ms(0));
    sleep(ms(5)).await;
    for v in [4, 5] {
        tx.send(v).await.unwrap();
    }
    assert_eq!(s.next().await, Some(5));
    assert_eq!(start.elapsed(), ms(5));
    drop(tx);
    assert_eq!(s.next().await, None);
}

#[tokio::test(start_paused = true)]
async fn stream_debounce_item_ready_when_the_timer_is_due_extends_the_burst() {
    // The core's boundary rule with the call first: an item at exactly
    // `last + wait` joins the ending burst (the timer re-arms), as the
    // synchronous calls of a JavaScript tick run before its timers.
    let start = Instant::now();
    let (tx, inner) = fed();
    let mut s = Box::pin(inner.debounce(ms(10)));
    tx.send(1).await.unwrap();
    assert_eq!(futures::poll!(s.next()), std::task::Poll::Pending);
    tokio::time::sleep_until(start + ms(10)).await;
    tx.send(2).await.unwrap();
    assert_eq!(s.next().await, Some(2));
    assert_eq!(start.elapsed(), ms(20));
    drop(tx);
    assert_eq!(s.next().await, None);
}

#[tokio::test(start_paused = true)]
async fn stream_throttle_item_ready_at_the_trailing_edge_is_the_trailing_item() {
    let start = Instant::now();
    let (tx, inner) = fed();
    let mut s = Box::pin(inner.throttle(ms(100)));
    tx.send(1).await.unwrap();
    assert_eq!(s.next().await, Some(1)); // leading
    sleep(ms(50)).await;
    tx.send(2).await.unwrap();
    assert_eq!(futures::poll!(s.next()), std::task::Poll::Pending);
    // The window ends at 100 and an item is ready at that very instant: it
    // is a call at 100, taken before the due timer, so the one invocation at
    // 100 has the latest value (lodash's "tight loop" with maxWait).
    tokio::time::sleep_until(start + ms(100)).await;
    tx.send(3).await.unwrap();
    assert_eq!(s.next().await, Some(3));
    assert_eq!(start.elapsed(), ms(100));
    drop(tx);
    assert_eq!(s.next().await, None, "nothing left for a trailing edge");
    assert_eq!(start.elapsed(), ms(100));
}

// ---- no allocation per call ---------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_call_allocates_nothing() {
    let d = Debouncer::builder(ms(100))
        .max_wait(ms(1000))
        .build_sync(|v: u64| v)
        .unwrap();
    d.call(0).unwrap(); // arms the timer
    tokio::task::yield_now().await; // the worker registers and resets its Sleep
    let ((), allocs) = count_allocs(|| {
        for i in 0..10_000 {
            d.call(i).unwrap();
        }
    });
    assert_eq!(allocs, 0);
    // The same through a few timer periods, with the worker running.
    let mut total = 0;
    for round in 0..5u64 {
        let ((), a) = count_allocs(|| {
            for i in 0..1000 {
                d.call(round * 1000 + i).unwrap();
            }
        });
        total += a;
        sleep(ms(150)).await;
    }
    assert_eq!(total, 0);
    assert_eq!(d.metrics().invocations, 5);
}

#[tokio::test(start_paused = true)]
async fn a_stream_item_allocates_nothing() {
    let mut s: std::pin::Pin<Box<Debounced<_>>> =
        Box::pin(futures::stream::iter(0..100_000u64).debounce(ms(100)));
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    // Every poll takes up to a budget of items, all folded at one instant.
    let (polls, allocs) = count_allocs(|| {
        let mut polls = 0;
        loop {
            polls += 1;
            match Stream::poll_next(s.as_mut(), &mut cx) {
                std::task::Poll::Ready(v) => break (polls, v),
                std::task::Poll::Pending => {}
            }
        }
    });
    assert_eq!(polls.1, Some(99_999), "flushed at end");
    assert!(polls.0 > 100);
    assert_eq!(allocs, 0);
}

// ---- ported from lodash's own suite -------------------------------------------
//
// Each test below is one of lodash's, with its `setTimeout` times on the
// paused clock. Where lodash checks the count right after a synchronous
// call, these check it after `settle()`: the handler runs on the worker
// task, so a leading invocation happens at the worker's next turn (see
// `Debouncer`'s docs). Where lodash checks a call's return value (the result
// of the *previous* invocation), these check `call_wait`, which resolves with
// the result of the invocation the call is folded into (the module docs).

/// Lets the worker run what the calls so far have made due.
async fn settle() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

/// A handler that records (ms since `start`, value) and returns the value.
fn echo<T: Clone + Send + 'static>(
    start: Instant,
) -> (Log<T>, impl FnMut(T) -> T + Send + 'static) {
    let (log, mut h) = recorder(start);
    (log, move |v: T| {
        h(v.clone());
        v
    })
}

/// lodash's `++callCount` handler: returns the number of invocations so far.
fn counter(start: Instant) -> (Log<()>, impl FnMut(()) -> usize + Send + 'static) {
    let (log, mut h) = recorder(start);
    let l = log.clone();
    (log, move |()| {
        h(());
        l.lock().unwrap().len()
    })
}

fn times<T: Clone>(log: &Log<T>) -> Vec<u64> {
    taken(log).into_iter().map(|e| e.0).collect()
}

async fn at(start: Instant, t: u64) {
    tokio::time::sleep_until(start + ms(t)).await;
}

/// `_.debounce` or `_.throttle`, for lodash's "debounce and throttle" tests.
enum Funced<T, R> {
    Debounce(Debouncer<T, R>),
    Throttle(Throttler<T, R>),
}

impl<T, R> std::ops::Deref for Funced<T, R> {
    type Target = Debouncer<T, R>;

    fn deref(&self) -> &Debouncer<T, R> {
        match self {
            Funced::Debounce(d) => d,
            Funced::Throttle(t) => t,
        }
    }
}

fn funced<T, R>(
    debounce: bool,
    wait: Duration,
    leading: Option<bool>,
    h: impl FnMut(T) -> R + Send + 'static,
) -> Funced<T, R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    if debounce {
        let b = Debouncer::builder(wait);
        let b = leading.map_or(b, |l| b.leading(l));
        Funced::Debounce(b.build_sync(h).unwrap())
    } else {
        let b = Throttler::builder(wait);
        let b = leading.map_or(b, |l| b.leading(l));
        Funced::Throttle(b.build_sync(h).unwrap())
    }
}

// Reference: lodash (test/debounce.spec.js)

#[tokio::test(start_paused = true)]
async fn lodash_debounce_should_debounce_a_function() {
    let start = Instant::now();
    let (log, h) = echo(start);
    let d = Debouncer::builder(ms(32)).build_sync(h).unwrap();
    let first: Vec<_> = ['a', 'b', 'c'].map(|v| d.call_wait(v).unwrap()).into();
    settle().await;
    assert!(taken(&log).is_empty());
    at(start, 128).await;
    assert_eq!(taken(&log), vec![(32, 'c')]);
    let second: Vec<_> = ['d', 'e', 'f'].map(|v| d.call_wait(v).unwrap()).into();
    settle().await;
    assert_eq!(taken(&log).len(), 1);
    at(start, 256).await;
    assert_eq!(taken(&log), vec![(32, 'c'), (160, 'f')]);
    for w in first {
        assert_eq!(w.await, Ok('c'));
    }
    for w in second {
        assert_eq!(w.await, Ok('f'));
    }
}

/// lodash: a later call returns the *previous* result ('a', not 'b').
/// Adapted: `call_wait` resolves with the invocation the call joins.
#[tokio::test(start_paused = true)]
async fn lodash_debounce_later_calls_resolve_with_their_own_invocation() {
    let start = Instant::now();
    let (log, h) = echo(start);
    let d = Debouncer::builder(ms(32)).build_sync(h).unwrap();
    d.call('a').unwrap();
    at(start, 64).await;
    assert_eq!(d.call_wait('b').unwrap().await, Ok('b'));
    assert_eq!(start.elapsed(), ms(96));
    at(start, 128).await;
    assert_eq!(d.call_wait('c').unwrap().await, Ok('c'));
    assert_eq!(times(&log), vec![32, 96, 160]);
}

#[tokio::test(start_paused = true)]
async fn lodash_debounce_wait_zero_does_not_invoke_immediately() {
    let start = Instant::now();
    let (log, h) = counter(start);
    let d = Debouncer::builder(Duration::ZERO).build_sync(h).unwrap();
    d.call(()).unwrap();
    d.call(()).unwrap();
    assert!(taken(&log).is_empty());
    at(start, 5).await;
    assert_eq!(times(&log), vec![0]);
}

#[tokio::test(start_paused = true)]
async fn lodash_debounce_applies_default_options() {
    let start = Instant::now();
    let (log, h) = counter(start);
    let d = Debouncer::builder(ms(32)).build_sync(h).unwrap();
    let o = d.options();
    assert_eq!(
        (o.leading(), o.trailing(), o.max_wait()),
        (false, true, None)
    );
    d.call(()).unwrap();
    settle().await;
    assert!(taken(&log).is_empty());
    at(start, 64).await;
    assert_eq!(times(&log), vec![32]);
}

#[tokio::test(start_paused = true)]
async fn lodash_debounce_supports_a_leading_option() {
    let start = Instant::now();
    let (with_leading_log, h0) = counter(start);
    let (both_log, h1) = counter(start);
    let with_leading = Debouncer::builder(ms(32))
        .leading(true)
        .build_sync(h0)
        .unwrap();
    let both = Debouncer::builder(ms(32))
        .leading(true)
        .build_sync(h1)
        .unwrap();
    with_leading.call(()).unwrap();
    settle().await;
    assert_eq!(times(&with_leading_log), vec![0]);
    both.call(()).unwrap();
    both.call(()).unwrap();
    settle().await;
    assert_eq!(times(&both_log), vec![0]);
    at(start, 64).await;
    assert_eq!(
        times(&with_leading_log),
        vec![0],
        "one call: no trailing edge"
    );
    assert_eq!(times(&both_log), vec![0, 32]);
    with_leading.call(()).unwrap();
    settle().await;
    assert_eq!(times(&with_leading_log), vec![0, 64]);
}

/// lodash: `[debounced('a'), debounced('b')]` is `['a', 'a']`. Adapted:
/// 'b' joins no invocation (trailing off), so its `call_wait` is `Discarded`.
#[tokio::test(start_paused = true)]
async fn lodash_debounce_leading_only_later_calls_are_discarded() {
    let start = Instant::now();
    let (log, h) = echo(start);
    let d = Debouncer::builder(ms(32))
        .leading(true)
        .trailing(false)
        .build_sync(h)
        .unwrap();
    let (a, b) = (d.call_wait('a').unwrap(), d.call_wait('b').unwrap());
    assert_eq!(a.await, Ok('a'));
    assert_eq!(b.await, Err(CallError::Discarded));
    at(start, 64).await;
    let (c, e) = (d.call_wait('c').unwrap(), d.call_wait('d').unwrap());
    assert_eq!(c.await, Ok('c'));
    assert_eq!(e.await, Err(CallError::Discarded));
    assert_eq!(taken(&log), vec![(0, 'a'), (64, 'c')]);
}

/// lodash's `{ trailing: false }` alone (leading off too) never invokes and
/// is accepted silently; here the builder refuses it (documented).
#[tokio::test(start_paused = true)]
async fn lodash_debounce_supports_a_trailing_option() {
    let start = Instant::now();
    let (log, h) = counter(start);
    let with_trailing = Debouncer::builder(ms(32))
        .trailing(true)
        .build_sync(h)
        .unwrap();
    with_trailing.call(()).unwrap();
    settle().await;
    assert!(taken(&log).is_empty());
    at(start, 64).await;
    assert_eq!(times(&log), vec![32]);
    let err = Debouncer::builder(ms(32))
        .trailing(false)
        .build_sync(|(): ()| ())
        .unwrap_err();
    assert_eq!(
        (err.field(), err.kind()),
        ("trailing", ConfigErrorKind::Conflict)
    );
}

#[tokio::test(start_paused = true)]
async fn lodash_debounce_supports_a_max_wait_option() {
    let start = Instant::now();
    let (log, h) = counter(start);
    let d = Debouncer::builder(ms(32))
        .max_wait(ms(64))
        .build_sync(h)
        .unwrap();
    d.call(()).unwrap();
    d.call(()).unwrap();
    settle().await;
    assert!(taken(&log).is_empty());
    at(start, 128).await;
    assert_eq!(times(&log), vec![32]);
    d.call(()).unwrap();
    d.call(()).unwrap();
    settle().await;
    assert_eq!(times(&log), vec![32]);
    at(start, 256).await;
    assert_eq!(times(&log), vec![32, 160]);
}

/// lodash's tight loop, one call per millisecond for 320 ms: only the
/// debouncer with `maxWait` invokes during it.
#[tokio::test(start_paused = true)]
async fn lodash_debounce_supports_max_wait_in_a_tight_loop() {
    let start = Instant::now();
    let (with_log, h0) = counter(start);
    let (without_log, h1) = counter(start);
    let with_max_wait = Debouncer::builder(ms(64))
        .max_wait(ms(128))
        .build_sync(h0)
        .unwrap();
    let without_max_wait = Debouncer::builder(ms(96)).build_sync(h1).unwrap();
    for t in 0..320 {
        at(start, t).await;
        with_max_wait.call(()).unwrap();
        without_max_wait.call(()).unwrap();
    }
    settle().await;
    assert_eq!(times(&with_log), vec![128, 256]);
    assert!(taken(&without_log).is_empty());
}

/// The same tight loop on the pure core, where (as in a synchronous
/// JavaScript loop) no timer runs until the loop ends: the calls themselves
/// invoke once `maxWait` has passed.
#[test]
fn lodash_debounce_max_wait_in_a_tight_loop_invokes_from_the_calls() {
    let t0 = Instant::now();
    let with = DebounceOptions::builder(ms(64))
        .max_wait(ms(128))
        .build()
        .unwrap();
    let mut with = DebounceCore::new(with);
    let mut without = DebounceCore::new(DebounceOptions::debounce(ms(96)));
    let mut invoked = (Vec::new(), Vec::new());
    for t in 0..320 {
        if with.call(t0 + ms(t)) == Step::Invoke {
            invoked.0.push(t);
        }
        if without.call(t0 + ms(t)) == Step::Invoke {
            invoked.1.push(t);
        }
    }
    assert_eq!(invoked, (vec![128, 256], vec![]));
}

#[tokio::test(start_paused = true)]
async fn lodash_debounce_queues_a_trailing_call_after_max_wait() {
    let start = Instant::now();
    let (log, h) = counter(start);
    let d = Debouncer::builder(ms(200))
        .max_wait(ms(200))
        .build_sync(h)
        .unwrap();
    for t in [0, 190, 200, 210] {
        at(start, t).await;
        d.call(()).unwrap();
    }
    at(start, 500).await;
    assert_eq!(times(&log), vec![200, 400]);
}

#[tokio::test(start_paused = true)]
async fn lodash_debounce_cancels_max_delayed_when_delayed_is_invoked() {
    let start = Instant::now();
    let (log, h) = counter(start);
    let d = Debouncer::builder(ms(32))
        .max_wait(ms(64))
        .build_sync(h)
        .unwrap();
    d.call(()).unwrap();
    at(start, 128).await;
    d.call(()).unwrap();
    settle().await;
    assert_eq!(times(&log), vec![32]);
    at(start, 192).await;
    assert_eq!(times(&log), vec![32, 160]);
}

/// lodash calls in a loop until the result says the second invocation
/// happened; that invocation (forced by `maxWait`) has the latest value and
/// no trailing invocation follows it.
#[tokio::test(start_paused = true)]
async fn lodash_debounce_invokes_the_trailing_call_with_the_latest_value() {
    let start = Instant::now();
    let (log, h) = echo(start);
    let d = Debouncer::builder(ms(32))
        .leading(true)
        .max_wait(ms(64))
        .build_sync(h)
        .unwrap();
    let mut last = 0u64;
    // lodash loops until the result says so; bounded here so a bug fails.
    for t in 0..200 {
        at(start, t).await;
        if taken(&log).len() >= 2 {
            break;
        }
        d.call(t).unwrap();
        last = t;
    }
    at(start, last + 64).await;
    let got = taken(&log);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], (0, 0));
    assert_eq!(got[1], (64, last));
}

/// The same loop on the pure core (no timer runs during a synchronous loop):
/// the call at 64 invokes itself, and the timer then finds nothing left.
#[test]
fn lodash_debounce_trailing_call_in_a_tight_loop_on_the_core() {
    let t0 = Instant::now();
    let opts = DebounceOptions::builder(ms(32))
        .leading(true)
        .max_wait(ms(64))
        .build()
        .unwrap();
    let mut core = DebounceCore::new(opts);
    let invoked: Vec<u64> = (0..=64)
        .filter(|&t| core.call(t0 + ms(t)) == Step::Invoke)
        .collect();
    assert_eq!(invoked, vec![0, 64]);
    let fired = core.deadline().unwrap();
    assert_eq!(core.timer_fired(fired), Step::Idle);
    assert_eq!(core.deadline(), None);
}

// Reference: lodash (test/throttle.spec.js)

#[tokio::test(start_paused = true)]
async fn lodash_throttle_should_throttle_a_function() {
    let start = Instant::now();
    let (log, h) = echo(start);
    let t = Throttler::builder(ms(32)).build_sync(h).unwrap();
    for v in 1..=3u32 {
        t.call(v).unwrap();
    }
    settle().await;
    assert_eq!(taken(&log), vec![(0, 1)]);
    at(start, 64).await;
    assert_eq!(taken(&log), vec![(0, 1), (32, 3)]);
}

/// lodash: both calls return the first call's result, `['a', 'a']`; two
/// calls later 'c' returns 'b' and 'd' returns 'c'. Adapted: each
/// `call_wait` resolves with the invocation it joins.
#[tokio::test(start_paused = true)]
async fn lodash_throttle_calls_resolve_with_the_invocation_they_join() {
    let start = Instant::now();
    let (log, h) = echo(start);
    let t = Throttler::builder(ms(32)).build_sync(h).unwrap();
    let (a, b) = (t.call_wait('a').unwrap(), t.call_wait('b').unwrap());
    assert_eq!(a.await, Ok('a'));
    assert_eq!(b.await, Ok('b'));
    at(start, 64).await;
    let (c, d) = (t.call_wait('c').unwrap(), t.call_wait('d').unwrap());
    assert_eq!(c.await, Ok('c'));
    assert_eq!(d.await, Ok('d'));
    assert_eq!(taken(&log), vec![(0, 'a'), (32, 'b'), (64, 'c'), (96, 'd')]);
}

#[tokio::test(start_paused = true)]
async fn lodash_throttle_does_not_trigger_a_trailing_call_when_invoked_once() {
    let start = Instant::now();
    let (log, h) = counter(start);
    let t = Throttler::builder(ms(32)).build_sync(h).unwrap();
    t.call(()).unwrap();
    settle().await;
    assert_eq!(times(&log), vec![0]);
    at(start, 64).await;
    assert_eq!(times(&log), vec![0]);
}

/// Called every millisecond for 320 ms, with and without `leading`.
#[tokio::test(start_paused = true)]
async fn lodash_throttle_triggers_calls_when_invoked_repeatedly() {
    for leading in [true, false] {
        let start = Instant::now();
        let (log, h) = counter(start);
        let t = Throttler::builder(ms(32))
            .leading(leading)
            .build_sync(h)
            .unwrap();
        for i in 0..320 {
            at(start, i).await;
            t.call(()).unwrap();
        }
        settle().await;
        let first = if leading { 0 } else { 1 };
        let want: Vec<u64> = (first..10).map(|i| i * 32).collect();
        assert_eq!(times(&log), want, "leading {leading}");
        at(start, 400).await;
        assert_eq!(
            times(&log).last(),
            Some(&320),
            "trailing, leading {leading}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn lodash_throttle_triggers_a_second_call_as_soon_as_possible() {
    let start = Instant::now();
    let (log, h) = counter(start);
    let t = Throttler::builder(ms(128))
        .leading(false)
        .build_sync(h)
        .unwrap();
    t.call(()).unwrap();
    at(start, 192).await;
    assert_eq!(times(&log), vec![128]);
    t.call(()).unwrap();
    at(start, 254).await;
    assert_eq!(times(&log), vec![128]);
    at(start, 384).await;
    assert_eq!(times(&log), vec![128, 320]);
}

#[tokio::test(start_paused = true)]
async fn lodash_throttle_applies_default_options() {
    let start = Instant::now();
    let (log, h) = counter(start);
    let t = Throttler::builder(ms(32)).build_sync(h).unwrap();
    t.call(()).unwrap();
    t.call(()).unwrap();
    settle().await;
    assert_eq!(times(&log), vec![0]);
    at(start, 128).await;
    assert_eq!(times(&log), vec![0, 32]);
}

/// lodash: without `leading` the call returns `undefined` (nothing invoked
/// yet). Adapted: its `call_wait` resolves at the trailing edge.
#[tokio::test(start_paused = true)]
async fn lodash_throttle_supports_a_leading_option() {
    let start = Instant::now();
    let with_leading = Throttler::builder(ms(32))
        .leading(true)
        .build_sync(|v: char| v)
        .unwrap();
    assert_eq!(with_leading.call_wait('a').unwrap().await, Ok('a'));
    assert_eq!(start.elapsed(), ms(0));
    let without_leading = Throttler::builder(ms(32))
        .leading(false)
        .build_sync(|v: char| v)
        .unwrap();
    assert_eq!(without_leading.call_wait('a').unwrap().await, Ok('a'));
    assert_eq!(start.elapsed(), ms(32));
}

/// lodash: both throttlers return `'a'` for 'b' (the last result).
/// Adapted: with trailing 'b' is invoked at the trailing edge; without, it
/// is discarded.
#[tokio::test(start_paused = true)]
async fn lodash_throttle_supports_a_trailing_option() {
    let start = Instant::now();
    let (with_log, h0) = echo(start);
    let (without_log, h1) = echo(start);
    let with_trailing = Throttler::builder(ms(64))
        .trailing(true)
        .build_sync(h0)
        .unwrap();
    let without_trailing = Throttler::builder(ms(64))
        .trailing(false)
        .build_sync(h1)
        .unwrap();
    let w = [with_trailing.call_wait('a'), with_trailing.call_wait('b')];
    let wo = [
        without_trailing.call_wait('a'),
        without_trailing.call_wait('b'),
    ];
    let [wa, wb] = w.map(Result::unwrap);
    let [woa, wob] = wo.map(Result::unwrap);
    assert_eq!(wa.await, Ok('a'));
    assert_eq!(woa.await, Ok('a'));
    assert_eq!(wb.await, Ok('b'));
    assert_eq!(wob.await, Err(CallError::Discarded));
    at(start, 256).await;
    assert_eq!(taken(&with_log), vec![(0, 'a'), (64, 'b')]);
    assert_eq!(taken(&without_log), vec![(0, 'a')]);
}

#[tokio::test(start_paused = true)]
async fn lodash_throttle_trailing_off_does_not_update_last_called_at_the_timeout() {
    let start = Instant::now();
    let (log, h) = counter(start);
    let t = Throttler::builder(ms(64))
        .trailing(false)
        .build_sync(h)
        .unwrap();
    t.call(()).unwrap();
    t.call(()).unwrap();
    at(start, 96).await;
    t.call(()).unwrap();
    t.call(()).unwrap();
    at(start, 192).await;
    assert_eq!(times(&log), vec![0, 96]);
    assert_eq!(t.metrics().discarded, 2);
}

/// lodash fakes `Date.now` jumping far ahead; on the pure core that is a
/// call long after the window: it invokes itself and restarts the timer, so
/// the stale timer finds nothing and the count is lodash's 2.
#[test]
fn lodash_throttle_clears_the_timer_when_a_call_invokes() {
    let t0 = Instant::now();
    let mut core = DebounceCore::new(DebounceOptions::throttle(ms(32)));
    assert_eq!(core.call(t0), Step::Invoke);
    assert_eq!(core.call(t0 + ms(1)), Step::Idle);
    let late = t0 + Duration::from_secs(3600);
    assert_eq!(core.call(late), Step::Invoke);
    assert_eq!(core.deadline(), Some(late + ms(32)));
    assert_eq!(
        core.timer_fired(t0 + ms(32)),
        Step::Idle,
        "the old timer is gone"
    );
    assert_eq!(core.timer_fired(late + ms(32)), Step::Idle);
    assert_eq!(core.deadline(), None);
}

// Reference: lodash (docs of `_.debounce`, the `batchLog` example)

/// `_.debounce(batchLog, 250, { maxWait: 1000 })` on a message every 100 ms:
/// invoked once a second while messages keep coming.
#[tokio::test(start_paused = true)]
async fn lodash_doc_debounce_max_wait_invokes_once_a_second_in_a_stream() {
    let start = Instant::now();
    let (log, h) = counter(start);
    let d = Debouncer::builder(ms(250))
        .max_wait(ms(1000))
        .build_sync(h)
        .unwrap();
    for t in (0..3000).step_by(100) {
        at(start, t).await;
        d.call(()).unwrap();
    }
    at(start, 4000).await;
    assert_eq!(times(&log), vec![1000, 2000, 3000]);
}

// Reference: lodash (test/debounce-and-throttle.spec.js)

/// lodash's default `wait` is 0; here `wait` is required, so it is given.
#[tokio::test(start_paused = true)]
async fn lodash_debounce_and_throttle_wait_zero() {
    for debounce in [true, false] {
        let start = Instant::now();
        let (log, h) = counter(start);
        let f = funced(debounce, Duration::ZERO, None, h);
        f.call(()).unwrap();
        at(start, 32).await;
        f.call(()).unwrap();
        if debounce {
            assert_eq!(times(&log), vec![0], "the second call is deferred");
        } else {
            settle().await;
            assert_eq!(times(&log), vec![0, 32], "every call is a new window");
        }
        at(start, 64).await;
        assert_eq!(times(&log), vec![0, 32], "debounce {debounce}");
    }
}

/// lodash's `this` binding test, by its counts: debounce called once invokes
/// once; throttle called twice invokes twice (leading and trailing).
#[tokio::test(start_paused = true)]
async fn lodash_debounce_and_throttle_invoke_with_the_callers_value() {
    for debounce in [true, false] {
        let start = Instant::now();
        let (log, h) = echo(start);
        let f = funced(debounce, ms(32), None, h);
        f.call('o').unwrap();
        if !debounce {
            f.call('p').unwrap();
        }
        at(start, 64).await;
        let want = if debounce {
            vec![(32, 'o')]
        } else {
            vec![(0, 'o'), (32, 'p')]
        };
        assert_eq!(taken(&log), want);
    }
}

/// The handler calls the debounced function itself with the next value.
#[tokio::test(start_paused = true)]
async fn lodash_debounce_and_throttle_support_recursive_calls() {
    for debounce in [true, false] {
        let start = Instant::now();
        let slot: Arc<Mutex<Option<Funced<char, ()>>>> = Arc::new(Mutex::new(None));
        let queue = Arc::new(Mutex::new(vec!['c', 'b']));
        let (log, mut rec) = recorder(start);
        let (s, q) = (slot.clone(), queue.clone());
        let f = funced(debounce, ms(32), None, move |v: char| {
            rec(v);
            if let Some(next) = q.lock().unwrap().pop() {
                s.lock().unwrap().as_ref().unwrap().call(next).unwrap();
            }
        });
        *slot.lock().unwrap() = Some(f);
        slot.lock().unwrap().as_ref().unwrap().call('a').unwrap();
        settle().await;
        assert_eq!(taken(&log).len(), if debounce { 0 } else { 1 });
        at(start, 256).await;
        let want = if debounce {
            vec![(32, 'a'), (64, 'b'), (96, 'c')]
        } else {
            vec![(0, 'a'), (32, 'b'), (32, 'c')]
        };
        assert_eq!(taken(&log), want, "debounce {debounce}");
        drop(slot.lock().unwrap().take()); // the handler held a handle
    }
}

/// lodash's "system time set backwards", on the pure core (the handles read
/// a monotonic clock): a call dated before the previous one counts as the
/// wait having passed, and the counts stay lodash's (debounce 1, throttle 2).
#[test]
fn lodash_debounce_and_throttle_work_if_the_time_goes_backwards() {
    let t0 = Instant::now() + ms(1000);
    for debounce in [true, false] {
        let opts = if debounce {
            DebounceOptions::debounce(ms(32))
        } else {
            DebounceOptions::throttle(ms(32))
        };
        let mut core = DebounceCore::new(opts);
        let mut invoked = 0;
        invoked += usize::from(core.call(t0) == Step::Invoke);
        invoked += usize::from(core.call(t0 - ms(500)) == Step::Invoke);
        for _ in 0..8 {
            let Some(d) = core.deadline() else { break };
            invoked += usize::from(core.timer_fired(d) == Step::Invoke);
        }
        assert_eq!(core.deadline(), None);
        assert_eq!(invoked, if debounce { 1 } else { 2 });
    }
}

#[tokio::test(start_paused = true)]
async fn lodash_debounce_and_throttle_support_cancelling_delayed_calls() {
    for debounce in [true, false] {
        let start = Instant::now();
        let (log, h) = counter(start);
        let f = funced(debounce, ms(32), Some(false), h);
        let w = f.call_wait(()).unwrap();
        assert!(f.cancel());
        assert_eq!(w.await, Err(CallError::Cancelled));
        at(start, 64).await;
        assert!(taken(&log).is_empty(), "debounce {debounce}");
    }
}

/// lodash: `funced()` returns 1, then after `cancel` 2; three invocations.
#[tokio::test(start_paused = true)]
async fn lodash_debounce_and_throttle_reset_last_called_after_cancelling() {
    for debounce in [true, false] {
        let start = Instant::now();
        let (log, h) = counter(start);
        let f = funced(debounce, ms(32), Some(true), h);
        let first = f.call_wait(()).unwrap();
        f.cancel();
        let second = f.call_wait(()).unwrap();
        let third = f.call_wait(()).unwrap();
        assert_eq!(first.await, Ok(1));
        assert_eq!(second.await, Ok(2));
        assert_eq!(third.await, Ok(3));
        at(start, 64).await;
        assert_eq!(times(&log), vec![0, 0, 32], "debounce {debounce}");
    }
}

/// lodash: `flush()` returns 1 (the result); here `flush` says whether it
/// invoked and `call_wait` carries the result.
#[tokio::test(start_paused = true)]
async fn lodash_debounce_and_throttle_support_flushing_delayed_calls() {
    for debounce in [true, false] {
        let start = Instant::now();
        let (log, h) = counter(start);
        let f = funced(debounce, ms(32), Some(false), h);
        let w = f.call_wait(()).unwrap();
        assert!(f.flush());
        assert_eq!(w.await, Ok(1));
        assert_eq!(start.elapsed(), ms(0));
        at(start, 64).await;
        assert_eq!(times(&log), vec![0], "debounce {debounce}");
    }
}

#[tokio::test(start_paused = true)]
async fn lodash_debounce_and_throttle_noop_cancel_and_flush_when_nothing_is_queued() {
    for debounce in [true, false] {
        let start = Instant::now();
        let (log, h) = counter(start);
        let f = funced(debounce, ms(32), None, h);
        assert!(!f.cancel());
        assert!(!f.flush());
        at(start, 64).await;
        assert!(taken(&log).is_empty());
        let m = f.metrics();
        assert_eq!((m.calls, m.cancelled, m.invocations), (0, 0, 0));
    }
}

// Reference: lodash (test/debounce.spec.js, test/throttle.spec.js), the
// timing cases through the stream adapters

/// Items at the given offsets; the stream stays open until `close_at`, so
/// the timers (not the end of the stream) yield.
fn timed_open<T: Send + 'static>(
    start: Instant,
    items: Vec<(u64, T)>,
    close_at: u64,
) -> impl futures::Stream<Item = T> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        for (t, v) in items {
            at(start, t).await;
            tx.send(v).await.unwrap();
        }
        at(start, close_at).await;
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(start_paused = true)]
async fn lodash_stream_debounce_supports_a_max_wait_option() {
    let start = Instant::now();
    let opts = DebounceOptions::builder(ms(32))
        .max_wait(ms(64))
        .build()
        .unwrap();
    let items = vec![(0, 1), (0, 2), (128, 3), (128, 4)];
    let s = timed_open(start, items, 300).debounce_with(opts);
    assert_eq!(collect_timed(start, s).await, vec![(32, 2), (160, 4)]);
}

#[tokio::test(start_paused = true)]
async fn lodash_stream_debounce_queues_a_trailing_call_after_max_wait() {
    let start = Instant::now();
    let opts = DebounceOptions::builder(ms(200))
        .max_wait(ms(200))
        .build()
        .unwrap();
    let items = vec![(0, 0), (190, 190), (200, 200), (210, 210)];
    let s = timed_open(start, items, 500).debounce_with(opts);
    let got = collect_timed(start, s).await;
    // At 200 the timer and the item sent then are due together; which the
    // adapter sees first is up to the runtime (lodash's timer, armed first,
    // fires first and invokes with 190).
    assert_eq!(
        (got.len(), got[0].0, got[1]),
        (2, 200, (400, 210)),
        "{got:?}"
    );
    assert!([190, 200].contains(&got[0].1), "{got:?}");
}

#[tokio::test(start_paused = true)]
async fn lodash_stream_throttle_triggers_a_second_call_as_soon_as_possible() {
    let start = Instant::now();
    let opts = DebounceOptions::throttle_builder(ms(128))
        .leading(false)
        .build()
        .unwrap();
    let s = timed_open(start, vec![(0, 'a'), (192, 'b')], 400).throttle_with(opts);
    assert_eq!(collect_timed(start, s).await, vec![(128, 'a'), (320, 'b')]);
}

#[tokio::test(start_paused = true)]
async fn lodash_stream_throttle_trailing_off_does_not_update_last_called() {
    let start = Instant::now();
    let opts = DebounceOptions::throttle_builder(ms(64))
        .trailing(false)
        .build()
        .unwrap();
    let items = vec![(0, 'a'), (0, 'b'), (96, 'c'), (96, 'd')];
    let s = timed_open(start, items, 192).throttle_with(opts);
    assert_eq!(collect_timed(start, s).await, vec![(0, 'a'), (96, 'c')]);
}

#[tokio::test(start_paused = true)]
async fn lodash_stream_throttle_should_throttle() {
    let start = Instant::now();
    let items = vec![(0, 1), (0, 2), (0, 3)];
    let s = timed_open(start, items, 64).throttle(ms(32));
    assert_eq!(collect_timed(start, s).await, vec![(0, 1), (32, 3)]);
}

// ---- compile-time guarantees -------------------------------------------------

#[allow(dead_code)]
fn assert_send_sync() {
    fn send_sync<X: Send + Sync>() {}
    fn send<X: Send>() {}
    fn unpin<X: Unpin>() {}
    send_sync::<Debouncer<u32, u32>>();
    send_sync::<Throttler<String>>();
    send_sync::<flowguard::timing::CallWait<u32>>();
    unpin::<flowguard::timing::CallWait<u32>>();
    send_sync::<DebounceOptions>();
    send_sync::<CallError>();
    send::<Debounced<futures::stream::Iter<std::vec::IntoIter<u32>>>>();
}

#[path = "support/deadlock.rs"]
mod deadlock;
use deadlock::without_deadlock;

/// A value whose drop reads the debouncer it was given to.
struct ReadsOnDrop(Arc<Mutex<Option<Debouncer<ReadsOnDrop>>>>);

impl Drop for ReadsOnDrop {
    fn drop(&mut self) {
        if let Some(d) = self.0.lock().unwrap().as_ref() {
            let _ = d.metrics();
        }
    }
}

/// A value the debouncer gives up (discarded with `trailing` off, folded
/// behind a running handler, or left over when the worker stops) is
/// dropped after the state lock is released: its drop may use the
/// debouncer.
#[test]
fn a_value_given_up_may_use_the_debouncer_in_its_drop() {
    without_deadlock(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let slot = Arc::new(Mutex::new(None));
            let value = || ReadsOnDrop(slot.clone());
            // Discarded: leading only, the burst's second value.
            let d = Debouncer::builder(ms(10))
                .leading(true)
                .trailing(false)
                .build_sync(drop)
                .unwrap();
            *slot.lock().unwrap() = Some(d.clone());
            d.call(value()).ok().unwrap();
            d.call(value()).ok().unwrap();
            sleep(ms(20)).await;
            assert_eq!(d.metrics().discarded, 1);
            // Folded: three trailing edges come due while the handler runs.
            let d = Debouncer::builder(ms(10))
                .build(|v: ReadsOnDrop| async move {
                    sleep(ms(100)).await;
                    drop(v);
                })
                .unwrap();
            *slot.lock().unwrap() = Some(d.clone());
            for _ in 0..4 {
                d.call(value()).ok().unwrap();
                sleep(ms(20)).await;
            }
            assert_eq!(d.metrics().folded, 2);
            *slot.lock().unwrap() = None;
        });
    });
}

/// A waker that only counts the references to it.
struct NoopWake;

impl std::task::Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

#[tokio::test(start_paused = true)]
async fn abandoned_call_waits_keep_no_waker_of_theirs() {
    // Without `max_wait`, a debouncer called again and again never
    // invokes, so its batch stays open: waits given up on it (a request
    // timing out) must not leave their wakers in it.
    let d = Debouncer::builder(ms(50))
        .build(|v: u32| async move { v })
        .unwrap();
    let wakers: Vec<_> = (0..50).map(|_| Arc::new(NoopWake)).collect();
    for w in &wakers {
        let waker = std::task::Waker::from(w.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut wait = d.call_wait(1).unwrap();
        assert!(wait.poll_unpin(&mut cx).is_pending());
    }
    // One wait polled by many tasks keeps only the latest waker.
    let mut shared = d.call_wait(2).unwrap();
    for w in &wakers {
        let waker = std::task::Waker::from(w.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(shared.poll_unpin(&mut cx).is_pending());
    }
    let held: Vec<_> = wakers.iter().map(Arc::strong_count).collect();
    assert_eq!(held[..49], [1; 49], "dropped or replaced: not kept");
    assert_eq!(held[49], 2, "the pending wait's waker is kept");
    assert_eq!(shared.await, Ok(2));
    assert_eq!(Arc::strong_count(&wakers[49]), 1);
}
