//! Retry overhead against a hand-written retry loop (the peer a user would
//! otherwise write), for a call that succeeds at once and for one that
//! fails once and succeeds on a zero-delay retry; plus the shared budget's
//! deposit + withdraw. Futures are polled by hand (no runtime, no timer:
//! zero delays skip the sleep), so the numbers are the wrapper's own cost.
//! Run: `cargo bench --bench retry -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use flowguard::retry::{Backoff, Retry, RetryBudget};
use futures::FutureExt;

#[inline(never)]
async fn backend(fail: bool) -> Result<u64, u64> {
    if black_box(fail) {
        Err(black_box(2))
    } else {
        Ok(black_box(1))
    }
}

/// What a user writes without a library: a loop, a counter, a classifier.
async fn hand_rolled(fail_first: bool, max_retries: u32) -> Result<u64, u64> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = backend(fail_first && attempt == 1).await;
        match r {
            Err(e) if attempt > max_retries => return Err(e),
            Err(_) => continue,
            ok => return ok,
        }
    }
}

fn retry() -> Retry<u64, u64> {
    Retry::builder()
        .max_retries(3)
        .backoff(Backoff::constant(Duration::ZERO))
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("retry/first_try_succeeds");
    g.bench_function("hand_rolled", |b| {
        b.iter(|| hand_rolled(false, 3).now_or_never().unwrap())
    });
    let r = retry();
    g.bench_function("flowguard", |b| {
        b.iter(|| r.call(|| backend(false)).now_or_never().unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("retry/one_retry");
    g.bench_function("hand_rolled", |b| {
        b.iter(|| hand_rolled(true, 3).now_or_never().unwrap())
    });
    g.bench_function("flowguard", |b| {
        b.iter(|| {
            let mut first = true;
            r.call(|| backend(std::mem::replace(&mut first, false)))
                .now_or_never()
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("retry/budget");
    let budget = RetryBudget::builder().ratio(1.0).build().unwrap();
    g.bench_function("deposit_and_withdraw", |b| {
        b.iter(|| {
            budget.deposit();
            black_box(budget.try_withdraw())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
