//! Circuit breaker overhead against failsafe 1.3 (its default policy and its
//! consecutive-failures policy) and recloser, with a bare call as the floor,
//! on one thread and two. Run:
//! `cargo bench --bench breaker -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::CircuitBreaker as _;
use flowguard::breaker::CircuitBreaker;
use futures::FutureExt;
use recloser::Recloser;

const LONG: Duration = Duration::from_secs(3600);

#[inline(never)]
fn backend(ok: bool) -> Result<u64, u64> {
    if black_box(ok) {
        Ok(black_box(1))
    } else {
        Err(black_box(2))
    }
}

/// The breaker as a manual caller uses it: permit, call, report.
#[inline]
fn through(b: &CircuitBreaker, ok: bool) -> Result<u64, u64> {
    match b.try_acquire() {
        Ok(p) => {
            let r = backend(ok);
            if r.is_ok() {
                p.success()
            } else {
                p.failure()
            }
            r
        }
        Err(_) => Err(0),
    }
}

/// flowguard with only the consecutive-failures policy (no clock reads).
fn fg_consecutive() -> CircuitBreaker {
    CircuitBreaker::builder()
        .without_failure_rate()
        .without_slow_call_rate()
        .consecutive_failures(5)
        .open_wait(LONG)
        .build()
        .unwrap()
}

/// flowguard with its defaults: failure rate over the last 100 calls.
/// `fg_consecutive` made inside a multi-thread runtime, as a server's
/// breakers are: its default clock then reads the CPU's counter (made
/// outside one, as the others here, it reads Tokio's clock, which a paused
/// test clock can move).
fn fg_consecutive_counter_clock() -> CircuitBreaker {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let _in_runtime = rt.enter();
    fg_consecutive()
}

fn fg_default() -> CircuitBreaker {
    CircuitBreaker::builder().open_wait(LONG).build().unwrap()
}

/// The defaults plus resilience4j's slow-call policy: every call is timed.
fn fg_slow() -> CircuitBreaker {
    CircuitBreaker::builder()
        .slow_call_rate_threshold(100.0)
        .open_wait(LONG)
        .build()
        .unwrap()
}

/// A time-based window, like failsafe's default policy (one clock read per
/// recorded outcome).
fn fg_time_window() -> CircuitBreaker {
    CircuitBreaker::builder()
        .time_window(Duration::from_secs(30), 30)
        .open_wait(LONG)
        .build()
        .unwrap()
}

fn fs_consecutive() -> impl failsafe::CircuitBreaker + Sync {
    failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            5,
            failsafe::backoff::constant(LONG),
        ))
        .build()
}

fn fs_default() -> impl failsafe::CircuitBreaker + Sync {
    failsafe::Config::new().build()
}

fn rc() -> Recloser {
    Recloser::custom().open_wait(LONG).build()
}

/// Keeps a result alive without paying for it.
#[inline]
fn sink<T>(t: T) {
    black_box(t);
}

/// Time for `iters` rounds in which each of two threads makes one call.
fn two_threads(iters: u64, f: impl Fn() + Sync) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..iters {
                    f();
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let t = Instant::now();
        barrier.wait();
        t.elapsed()
    })
}

fn closed(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_closed_1t");
    g.bench_function("bare_call", |b| b.iter(|| backend(true)));
    // The clock read every timed call pays (tokio's, with test-util compiled
    // in as it is for every dev build of this crate), and std's under it.
    g.bench_function("clock_read_tokio", |b| b.iter(tokio::time::Instant::now));
    g.bench_function("clock_read_std", |b| b.iter(Instant::now));
    let fc = fg_consecutive();
    g.bench_function("flowguard_consecutive", |b| b.iter(|| through(&fc, true)));
    let fd = fg_default();
    g.bench_function("flowguard_default", |b| b.iter(|| through(&fd, true)));
    let fs = fg_slow();
    g.bench_function("flowguard_slow_calls", |b| b.iter(|| through(&fs, true)));
    let ft = fg_time_window();
    g.bench_function("flowguard_time_window", |b| b.iter(|| through(&ft, true)));
    g.bench_function("flowguard_default_async_call", |b| {
        b.iter(|| {
            fd.call(|| async { backend(true) })
                .now_or_never()
                .expect("ready")
        })
    });
    let sc = fs_consecutive();
    g.bench_function("failsafe_consecutive", |b| {
        b.iter(|| sc.call(|| backend(true)))
    });
    let sd = fs_default();
    g.bench_function("failsafe_default", |b| b.iter(|| sd.call(|| backend(true))));
    let r = rc();
    g.bench_function("recloser", |b| b.iter(|| r.call(|| backend(true))));
    g.finish();

    let mut g = c.benchmark_group("breaker_closed_2t");
    g.bench_function("bare_call", |b| {
        b.iter_custom(|n| two_threads(n, || sink(backend(true))))
    });
    g.bench_function("flowguard_consecutive", |b| {
        b.iter_custom(|n| two_threads(n, || sink(through(&fc, true))))
    });
    g.bench_function("flowguard_default", |b| {
        b.iter_custom(|n| two_threads(n, || sink(through(&fd, true))))
    });
    g.bench_function("flowguard_time_window", |b| {
        b.iter_custom(|n| two_threads(n, || sink(through(&ft, true))))
    });
    g.bench_function("failsafe_consecutive", |b| {
        b.iter_custom(|n| two_threads(n, || sink(sc.call(|| backend(true)))))
    });
    g.bench_function("failsafe_default", |b| {
        b.iter_custom(|n| two_threads(n, || sink(sd.call(|| backend(true)))))
    });
    g.bench_function("recloser", |b| {
        b.iter_custom(|n| two_threads(n, || sink(r.call(|| backend(true)))))
    });
    g.finish();
}

fn open(c: &mut Criterion) {
    let fc = fg_consecutive();
    for _ in 0..5 {
        let _ = through(&fc, false);
    }
    assert!(fc.try_acquire().is_err());
    let sc = fs_consecutive();
    for _ in 0..5 {
        let _ = sc.call(|| backend(false));
    }
    assert!(!sc.is_call_permitted());
    let sd = fs_default();
    for _ in 0..10 {
        let _ = sd.call(|| backend(false));
    }
    assert!(!sd.is_call_permitted());
    let r = Recloser::custom().closed_len(4).open_wait(LONG).build();
    for _ in 0..10 {
        let _ = r.call(|| backend(false));
    }
    assert!(matches!(
        r.call(|| backend(true)),
        Err(recloser::Error::Rejected)
    ));

    let forced = fg_consecutive();
    forced.force_open();
    let counter = fg_consecutive_counter_clock();
    for _ in 0..5 {
        let _ = through(&counter, false);
    }
    assert!(counter.try_acquire().is_err());

    let mut g = c.benchmark_group("breaker_open_refusal_1t");
    g.bench_function("flowguard", |b| b.iter(|| through(&fc, true)));
    g.bench_function("flowguard_counter_clock", |b| {
        b.iter(|| through(&counter, true))
    });
    // Forced open refuses without reading the clock: the rest of the path.
    g.bench_function("flowguard_forced_open", |b| {
        b.iter(|| through(&forced, true))
    });
    g.bench_function("failsafe_consecutive", |b| {
        b.iter(|| sc.call(|| backend(true)))
    });
    g.bench_function("failsafe_default", |b| b.iter(|| sd.call(|| backend(true))));
    g.bench_function("recloser", |b| b.iter(|| r.call(|| backend(true))));
    g.finish();

    let mut g = c.benchmark_group("breaker_open_refusal_2t");
    g.bench_function("flowguard", |b| {
        b.iter_custom(|n| two_threads(n, || sink(through(&fc, true))))
    });
    g.bench_function("flowguard_counter_clock", |b| {
        b.iter_custom(|n| two_threads(n, || sink(through(&counter, true))))
    });
    g.bench_function("failsafe_consecutive", |b| {
        b.iter_custom(|n| two_threads(n, || sink(sc.call(|| backend(true)))))
    });
    g.bench_function("failsafe_default", |b| {
        b.iter_custom(|n| two_threads(n, || sink(sd.call(|| backend(true)))))
    });
    g.bench_function("recloser", |b| {
        b.iter_custom(|n| two_threads(n, || sink(r.call(|| backend(true)))))
    });
    g.finish();
}

criterion_group!(benches, closed, open);
criterion_main!(benches);
