//! Behaviour tests of `flowguard::batch::Loader`, on the paused clock.
//!
//! Modelled on graphql/dataloader's tested behaviours: batching within a
//! tick, max-batch-size splitting, de-duplication, cache, prime and clear,
//! per-key errors, and a batch answering the wrong number of values.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowguard::ConfigErrorKind;
use flowguard::batch::{
    CacheEviction, Load, LoadError, LoadErrorKind, LoadMany, Loader, LoaderBuilder, LoaderMetrics,
};
use futures::future::join_all;
use tokio::time::Instant;

type Calls = Arc<Mutex<Vec<Vec<u64>>>>;

/// A batch function answering `k -> k * 10` that records every call.
fn recording(
    calls: &Calls,
) -> impl Fn(Vec<u64>) -> futures::future::Ready<Result<HashMap<u64, u64>, String>> + Send + Sync + 'static
{
    let calls = Arc::clone(calls);
    move |keys: Vec<u64>| {
        calls.lock().unwrap().push(keys.clone());
        futures::future::ready(Ok(keys.into_iter().map(|k| (k, k * 10)).collect()))
    }
}

/// Like `recording`, but each call takes `latency` of (paused) time and
/// records when it started.
fn slow(
    calls: &Calls,
    starts: &Arc<Mutex<Vec<Instant>>>,
    latency: Duration,
) -> LoaderBuilder<u64, u64, String> {
    let calls = Arc::clone(calls);
    let starts = Arc::clone(starts);
    Loader::builder(move |keys: Vec<u64>| {
        calls.lock().unwrap().push(keys.clone());
        starts.lock().unwrap().push(Instant::now());
        async move {
            tokio::time::sleep(latency).await;
            Ok::<_, String>(
                keys.into_iter()
                    .map(|k| (k, k * 10))
                    .collect::<HashMap<_, _>>(),
            )
        }
    })
}

fn new_calls() -> Calls {
    Arc::new(Mutex::new(Vec::new()))
}

/// What went wrong, if the load failed.
fn kind<V, E>(r: &Result<V, LoadError<E>>) -> Option<&LoadErrorKind<E>> {
    r.as_ref().err().map(LoadError::kind)
}

#[tokio::test(start_paused = true)]
async fn keys_of_one_turn_make_one_batch_in_request_order() {
    let calls = new_calls();
    let loader = Loader::new(recording(&calls));
    let (a, b, c) = tokio::join!(loader.load(3), loader.load(1), loader.load(2));
    assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), (30, 10, 20));
    assert_eq!(*calls.lock().unwrap(), vec![vec![3, 1, 2]]);
}

#[tokio::test(start_paused = true)]
async fn loads_in_later_turns_make_new_batches() {
    let calls = new_calls();
    let loader = Loader::new(recording(&calls));
    assert_eq!(loader.load(1).await.unwrap(), 10);
    assert_eq!(loader.load(2).await.unwrap(), 20);
    assert_eq!(*calls.lock().unwrap(), vec![vec![1], vec![2]]);
}

#[tokio::test(start_paused = true)]
async fn max_batch_size_splits_batches() {
    let calls = new_calls();
    let loader = Loader::builder(recording(&calls))
        .max_batch_size(4)
        .build()
        .unwrap();
    let out = loader.load_many(0..10).await;
    let values: Vec<u64> = out.into_iter().map(Result::unwrap).collect();
    assert_eq!(values, (0..10).map(|k| k * 10).collect::<Vec<_>>());
    assert_eq!(
        *calls.lock().unwrap(),
        vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
    );
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_distinct_keys_make_exactly_one_hundred_batches() {
    let calls = new_calls();
    let loader = Loader::builder(recording(&calls))
        .max_batch_size(100)
        .build()
        .unwrap();
    let loads = (0..10_000u64).map(|k| loader.load(k));
    let out = join_all(loads).await;
    for (k, v) in out.into_iter().enumerate() {
        assert_eq!(v.unwrap(), k as u64 * 10);
    }
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 100);
    assert!(calls.iter().all(|b| b.len() == 100));
    let m = loader.metrics();
    assert_eq!(m.batches_dispatched, 100);
    assert_eq!(m.keys_loaded, 10_000);
    assert_eq!(m.mean_batch_size(), 100.0);
}

#[tokio::test(start_paused = true)]
async fn half_duplicate_keys_are_each_fetched_once() {
    let calls = new_calls();
    let loader = Loader::builder(recording(&calls))
        .max_batch_size(100)
        .build()
        .unwrap();
    // 10 000 loads over 5 000 distinct keys: every key asked twice, the
    // second ask arriving after its first batch was sealed and sent.
    let keys: Vec<u64> = (0..10_000u64).map(|i| i % 5_000).collect();
    let out = join_all(keys.iter().map(|&k| loader.load(k))).await;
    for (k, v) in keys.iter().zip(out) {
        assert_eq!(v.unwrap(), k * 10);
    }
    let calls = calls.lock().unwrap();
    let mut fetched: HashMap<u64, usize> = HashMap::new();
    for k in calls.iter().flatten() {
        *fetched.entry(*k).or_default() += 1;
    }
    assert_eq!(fetched.len(), 5_000);
    assert!(fetched.values().all(|&n| n == 1));
    assert_eq!(calls.len(), 50);
    let m = loader.metrics();
    assert_eq!(
        (m.keys_requested, m.deduplicated, m.keys_loaded),
        (10_000, 5_000, 5_000)
    );
}

#[tokio::test(start_paused = true)]
async fn duplicate_keys_within_a_batch_are_fetched_once() {
    let calls = new_calls();
    let loader = Loader::new(recording(&calls));
    let out = loader.load_many([1, 2, 1, 1, 2]).await;
    let values: Vec<u64> = out.into_iter().map(Result::unwrap).collect();
    assert_eq!(values, [10, 20, 10, 10, 20]);
    assert_eq!(*calls.lock().unwrap(), vec![vec![1, 2]]);
}

#[tokio::test(start_paused = true)]
async fn a_key_in_flight_joins_the_running_batch() {
    let calls = new_calls();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let loader = slow(&calls, &starts, Duration::from_millis(10))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let first = tokio::spawn({
        let loader = loader.clone();
        async move { (loader.load(7).await.unwrap(), Instant::now()) }
    });
    tokio::time::sleep(Duration::from_millis(4)).await;
    assert_eq!(loader.metrics().in_flight_batches, 1);
    let second = loader.load(7).await.unwrap();
    assert_eq!(
        t0.elapsed(),
        Duration::from_millis(10),
        "joined, not refetched"
    );
    assert_eq!(second, 70);
    assert_eq!(first.await.unwrap(), (70, t0 + Duration::from_millis(10)));
    assert_eq!(*calls.lock().unwrap(), vec![vec![7]]);
    assert_eq!(loader.metrics().deduplicated, 1);
}

#[tokio::test(start_paused = true)]
async fn delay_widens_the_window_exactly() {
    let calls = new_calls();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let loader = slow(&calls, &starts, Duration::ZERO)
        .delay(Duration::from_millis(5))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let l = loader.clone();
    let a = tokio::spawn(async move { l.load(1).await });
    tokio::time::sleep(Duration::from_millis(3)).await;
    let l = loader.clone();
    let b = tokio::spawn(async move { l.load(2).await });
    tokio::time::sleep(Duration::from_millis(3)).await; // t = 6 ms: window closed at 5
    let c = loader.load(3).await;
    assert_eq!(
        (
            a.await.unwrap().unwrap(),
            b.await.unwrap().unwrap(),
            c.unwrap()
        ),
        (10, 20, 30)
    );
    assert_eq!(*calls.lock().unwrap(), vec![vec![1, 2], vec![3]]);
    let starts = starts.lock().unwrap();
    assert_eq!(starts[0] - t0, Duration::from_millis(5));
    assert_eq!(starts[1] - t0, Duration::from_millis(11));
}

#[tokio::test(start_paused = true)]
async fn a_key_requested_at_the_instant_the_window_closes_joins_it() {
    // Keys requested at the instant the delay ends are in the window (as
    // the keys of one scheduler turn are without a delay), whichever task
    // the runtime happens to run first at that instant.
    for late_timer_first in [false, true] {
        let calls = new_calls();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let loader = slow(&calls, &starts, Duration::ZERO)
            .delay(Duration::from_millis(5))
            .build()
            .unwrap();
        let t0 = Instant::now();
        let at_close = |l: Loader<u64, u64, String>, key| async move {
            tokio::time::sleep_until(t0 + Duration::from_millis(5)).await;
            l.load(key).await
        };
        // A timer for the same instant armed before the batch's own...
        let early = late_timer_first.then(|| tokio::spawn(at_close(loader.clone(), 2)));
        let first = loader.load(1);
        let first = tokio::spawn(first);
        tokio::task::yield_now().await;
        // ...or after it.
        let late = tokio::spawn(at_close(loader.clone(), 3));
        assert_eq!(first.await.unwrap().unwrap(), 10);
        assert_eq!(late.await.unwrap().unwrap(), 30);
        let mut want = vec![1, 3];
        if let Some(early) = early {
            assert_eq!(early.await.unwrap().unwrap(), 20);
            want = vec![1, 2, 3];
        }
        let mut got = calls.lock().unwrap().clone();
        got.iter_mut().for_each(|b| b.sort_unstable());
        assert_eq!(got, vec![want], "timer order {late_timer_first}");
        assert_eq!(starts.lock().unwrap()[0] - t0, Duration::from_millis(5));
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_is_sent_without_waiting_for_the_delay() {
    let calls = new_calls();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let loader = slow(&calls, &starts, Duration::ZERO)
        .delay(Duration::from_secs(1))
        .max_batch_size(2)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let (a, b) = tokio::join!(loader.load(1), loader.load(2));
    assert_eq!((a.unwrap(), b.unwrap()), (10, 20));
    assert_eq!(t0.elapsed(), Duration::ZERO);
    let c = loader.load(3).await.unwrap();
    assert_eq!(c, 30);
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(1),
        "a lone key waits out the delay"
    );
    assert_eq!(*calls.lock().unwrap(), vec![vec![1, 2], vec![3]]);
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_caller_that_started_a_batch_does_not_cancel_it() {
    let calls = new_calls();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let loader = slow(&calls, &starts, Duration::from_millis(10))
        .build()
        .unwrap();
    let l = loader.clone();
    let starter = tokio::spawn(async move { l.load(1).await });
    tokio::time::sleep(Duration::from_millis(1)).await;
    let l = loader.clone();
    let other = tokio::spawn(async move { l.load(1).await });
    tokio::time::sleep(Duration::from_millis(1)).await;
    starter.abort();
    assert!(starter.await.unwrap_err().is_cancelled());
    assert_eq!(other.await.unwrap().unwrap(), 10);
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_load_before_dispatch_leaves_the_batch_for_others() {
    let calls = new_calls();
    let loader = Loader::new(recording(&calls));
    let mut first = loader.load(1);
    // Poll once so the key is registered, then drop the load.
    assert!(futures::poll!(&mut first).is_pending());
    drop(first);
    assert_eq!(loader.load(1).await.unwrap(), 10);
    assert_eq!(*calls.lock().unwrap(), vec![vec![1]]);
}

#[tokio::test(start_paused = true)]
async fn missing_keys_are_not_found_not_a_panic() {
    let loader = Loader::new(|keys: Vec<u64>| async move {
        Ok::<_, String>(
            keys.into_iter()
                .filter(|k| k % 2 == 0)
                .map(|k| (k, k))
                .collect::<HashMap<_, _>>(),
        )
    });
    let out = loader.load_many([1, 2, 3]).await;
    assert!(matches!(kind(&out[0]), Some(LoadErrorKind::NotFound)));
    assert_eq!(*out[1].as_ref().unwrap(), 2);
    assert!(out[2].as_ref().unwrap_err().is_not_found());
}

/// An error type without `Clone`.
#[derive(Debug, PartialEq)]
struct Backend(&'static str);
impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "backend {}", self.0)
    }
}
impl std::error::Error for Backend {}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_gives_every_key_the_same_shared_error() {
    let loader =
        Loader::new(|_keys: Vec<u64>| async move { Err::<HashMap<u64, u64>, _>(Backend("down")) });
    let out = loader.load_many([1, 2]).await;
    let (Some(LoadErrorKind::Batch(a)), Some(LoadErrorKind::Batch(b))) =
        (kind(&out[0]), kind(&out[1]))
    else {
        panic!("expected batch errors, got {out:?}");
    };
    assert!(Arc::ptr_eq(a, b));
    assert_eq!(**a, Backend("down"));
    let err = out[0].as_ref().unwrap_err();
    assert_eq!(
        err.to_string(),
        "loader `loader`: batch failed: backend down"
    );
    assert_eq!(err.kind().to_string(), "batch failed: backend down");
    assert_eq!(
        std::error::Error::source(err).unwrap().to_string(),
        "backend down"
    );
    assert_eq!(loader.metrics().failed_batches, 1);
}

#[tokio::test(start_paused = true)]
async fn vec_answers_give_per_key_errors() {
    let loader = Loader::builder_vec(|keys: Vec<i64>| async move {
        Ok::<_, Backend>(
            keys.iter()
                .map(|&k| {
                    if k < 0 {
                        Err(Backend("negative"))
                    } else {
                        Ok(k as u64)
                    }
                })
                .collect(),
        )
    })
    .build()
    .unwrap();
    let out = loader.load_many([1, -1, 2]).await;
    assert_eq!(*out[0].as_ref().unwrap(), 1);
    assert!(matches!(kind(&out[1]), Some(LoadErrorKind::Key(e)) if **e == Backend("negative")));
    assert_eq!(*out[2].as_ref().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_vec_answer_of_the_wrong_length_fails_every_key() {
    let loader = Loader::builder_vec(|keys: Vec<u64>| async move {
        Ok::<_, String>(keys.iter().skip(1).map(|&k| Ok(k)).collect())
    })
    .build()
    .unwrap();
    let out = loader.load_many([1, 2, 3]).await;
    for r in &out {
        assert!(
            matches!(
                kind(r),
                Some(LoadErrorKind::WrongLength {
                    expected: 3,
                    actual: 2
                })
            ),
            "{r:?}"
        );
    }
    assert_eq!(
        out[0].as_ref().unwrap_err().kind().to_string(),
        "batch answered 2 values for 3 keys"
    );
}

#[tokio::test(start_paused = true)]
async fn cache_answers_repeat_loads_and_prime_and_clear_work() {
    let calls = new_calls();
    let loader = Loader::builder(recording(&calls))
        .cache(100)
        .build()
        .unwrap();
    assert_eq!(loader.load(1).await.unwrap(), 10);
    assert_eq!(loader.load(1).await.unwrap(), 10);
    assert_eq!(calls.lock().unwrap().len(), 1);
    assert_eq!(loader.metrics().cache_hits, 1);

    assert!(loader.prime(2, 99));
    assert!(!loader.prime(2, 5), "prime does not overwrite");
    assert_eq!(loader.load(2).await.unwrap(), 99);

    assert!(loader.clear(&2));
    assert!(!loader.clear(&2));
    assert_eq!(loader.load(2).await.unwrap(), 20);
    loader.clear_all();
    assert_eq!(loader.try_load(&1).map(Result::unwrap), None);
    assert_eq!(loader.load(1).await.unwrap(), 10);
    assert_eq!(*calls.lock().unwrap(), vec![vec![1], vec![2], vec![1]]);
}

#[tokio::test(start_paused = true)]
async fn cache_is_bounded_and_evicts_oldest() {
    let calls = new_calls();
    let loader = Loader::builder(recording(&calls)).cache(2).build().unwrap();
    loader.load_many([1, 2, 3]).await;
    let m = loader.metrics();
    assert_eq!((m.cache_entries, m.cache_evictions), (2, 1));
    assert!(loader.try_load(&1).is_none());
    assert_eq!(loader.try_load(&3).unwrap().unwrap(), 30);
}

#[tokio::test(start_paused = true)]
async fn batch_failures_are_never_cached() {
    let fail = Arc::new(Mutex::new(true));
    let f = Arc::clone(&fail);
    let loader = Loader::builder(move |keys: Vec<u64>| {
        let failing = *f.lock().unwrap();
        async move {
            if failing {
                Err("down".to_string())
            } else {
                Ok(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
            }
        }
    })
    .cache(10)
    .cache_errors(true)
    .build()
    .unwrap();
    assert!(matches!(
        kind(&loader.load(1).await),
        Some(LoadErrorKind::Batch(_))
    ));
    *fail.lock().unwrap() = false;
    assert_eq!(loader.load(1).await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn not_found_is_cached_only_when_asked() {
    for cache_errors in [false, true] {
        let calls = new_calls();
        let c = Arc::clone(&calls);
        let loader = Loader::builder(move |keys: Vec<u64>| {
            c.lock().unwrap().push(keys);
            async { Ok::<_, String>(HashMap::<u64, u64>::new()) }
        })
        .cache(10)
        .cache_errors(cache_errors)
        .build()
        .unwrap();
        assert!(loader.load(1).await.unwrap_err().is_not_found());
        assert!(loader.load(1).await.unwrap_err().is_not_found());
        let expected = if cache_errors { 1 } else { 2 };
        assert_eq!(
            calls.lock().unwrap().len(),
            expected,
            "cache_errors {cache_errors}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn clearing_a_running_key_refetches_and_keeps_the_stale_answer_out() {
    let calls = new_calls();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let loader = slow(&calls, &starts, Duration::from_millis(10))
        .cache(10)
        .build()
        .unwrap();
    let l = loader.clone();
    let first = tokio::spawn(async move { l.load(1).await });
    tokio::time::sleep(Duration::from_millis(2)).await;
    loader.clear(&1);
    let second = loader.load(1).await.unwrap();
    assert_eq!((first.await.unwrap().unwrap(), second), (10, 10));
    assert_eq!(*calls.lock().unwrap(), vec![vec![1], vec![1]]);
    assert_eq!(loader.metrics().cache_entries, 1);
}

/// Polls `load` once: its key joins (or opens) a batch that is not yet
/// dispatched (the batch's task has not had its turn).
fn start(load: &mut Load<u64, u64, String>) {
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(std::pin::Pin::new(load).poll(&mut cx).is_pending());
}

#[tokio::test(start_paused = true)]
async fn prime_of_a_key_being_fetched_is_refused_and_the_fetch_is_cached() {
    // DataLoader caches a load's promise when the load is made, so a key
    // being loaded counts as present: prime does nothing and says so.
    let calls = new_calls();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let loader = slow(&calls, &starts, Duration::from_millis(10))
        .cache(10)
        .build()
        .unwrap();
    // Key 2's batch is running, key 1's is collecting (not yet dispatched).
    let l = loader.clone();
    let running = tokio::spawn(async move { l.load(2).await });
    tokio::time::sleep(Duration::from_millis(2)).await;
    let mut pending = loader.load(1);
    start(&mut pending);
    assert_eq!(calls.lock().unwrap().len(), 1, "only key 2's batch called");
    assert!(!loader.prime(2, 99), "key 2 is being fetched");
    assert!(
        !loader.prime(1, 99),
        "key 1 is in a batch not yet dispatched"
    );
    assert_eq!(pending.await.unwrap(), 10);
    assert_eq!(running.await.unwrap().unwrap(), 20);
    assert_eq!(loader.try_load(&1).unwrap().unwrap(), 10);
    assert_eq!(loader.try_load(&2).unwrap().unwrap(), 20);
    assert!(!loader.prime(1, 99), "cached");
    assert!(loader.prime(3, 99), "neither cached nor being fetched");
    assert_eq!(loader.load(3).await.unwrap(), 99);
    assert_eq!(*calls.lock().unwrap(), vec![vec![2], vec![1]]);
}

#[tokio::test(start_paused = true)]
async fn clear_then_prime_during_a_fetch_is_not_overwritten_by_it() {
    let calls = new_calls();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let loader = slow(&calls, &starts, Duration::from_millis(10))
        .cache(10)
        .build()
        .unwrap();
    // Key 1's batch is still collecting, key 2's is running.
    let l = loader.clone();
    let running = tokio::spawn(async move { l.load(2).await });
    tokio::time::sleep(Duration::from_millis(2)).await;
    let mut pending = loader.load(1);
    start(&mut pending);
    for key in [1, 2] {
        assert!(!loader.clear(&key), "nothing cached yet");
        assert!(loader.prime(key, 100 + key), "clear then prime stores");
    }
    // The loads already waiting get their batch's answer...
    assert_eq!(pending.await.unwrap(), 10);
    assert_eq!(running.await.unwrap().unwrap(), 20);
    // ...but the later write wins in the cache.
    assert_eq!(loader.try_load(&1).unwrap().unwrap(), 101);
    assert_eq!(loader.try_load(&2).unwrap().unwrap(), 102);
    assert_eq!(loader.load(1).await.unwrap(), 101);
    assert_eq!(*calls.lock().unwrap(), vec![vec![2], vec![1]]);
}

#[tokio::test(start_paused = true)]
async fn clearing_a_key_whose_batch_is_not_dispatched_keeps_it_in_that_batch() {
    let calls = new_calls();
    let loader = Loader::builder(recording(&calls))
        .cache(10)
        .build()
        .unwrap();
    // Cleared and not loaded again: fetched once for the waiting load, not
    // cached (the clear forgot it).
    let mut first = loader.load(1);
    start(&mut first);
    loader.clear(&1);
    assert_eq!(first.await.unwrap(), 10);
    assert!(loader.try_load(&1).is_none());
    // Loaded again after the clear: joins the same batch (its fetch has not
    // happened, so it cannot be stale) and that answer is cached.
    let mut first = loader.load(2);
    start(&mut first);
    loader.clear(&2);
    let mut second = loader.load(2);
    start(&mut second);
    assert!(!loader.prime(2, 99), "being loaded again");
    assert_eq!((first.await.unwrap(), second.await.unwrap()), (20, 20));
    assert_eq!(loader.try_load(&2).unwrap().unwrap(), 20);
    assert_eq!(*calls.lock().unwrap(), vec![vec![1], vec![2]]);
    assert_eq!(loader.metrics().deduplicated, 1);
}

#[tokio::test(start_paused = true)]
async fn max_concurrent_batches_bounds_running_batches() {
    let calls = new_calls();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let loader = slow(&calls, &starts, Duration::from_millis(10))
        .max_batch_size(2)
        .max_concurrent_batches(1)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let l = loader.clone();
    let probe = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        l.metrics()
    });
    let out = loader.load_many([1, 2, 3, 4, 5]).await;
    assert!(out.iter().all(Result::is_ok));
    assert_eq!(t0.elapsed(), Duration::from_millis(30));
    let starts: Vec<Duration> = starts.lock().unwrap().iter().map(|s| *s - t0).collect();
    assert_eq!(
        starts,
        [0, 10, 20].map(Duration::from_millis).to_vec(),
        "one batch at a time, in order"
    );
    let m: LoaderMetrics = probe.await.unwrap();
    assert_eq!(m.in_flight_batches, 1);
    assert_eq!(m.keys_in_flight, 5);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_batch_fails_its_keys_and_the_loader_goes_on() {
    let loader = Loader::new(|keys: Vec<u64>| async move {
        if keys.contains(&13) {
            panic!("unlucky");
        }
        Ok::<_, String>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    });
    let out = loader.load_many([12, 13]).await;
    assert!(matches!(kind(&out[0]), Some(LoadErrorKind::Aborted)));
    assert!(matches!(kind(&out[1]), Some(LoadErrorKind::Aborted)));
    assert_eq!(loader.load(12).await.unwrap(), 12);
    let m = loader.metrics();
    assert_eq!(
        (m.failed_batches, m.in_flight_batches, m.keys_in_flight),
        (1, 0, 0)
    );
}

#[test]
fn polling_outside_a_runtime_is_an_error_not_a_panic() {
    let loader = Loader::new(|keys: Vec<u64>| async move {
        Ok::<_, String>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    });
    let out = futures::executor::block_on(loader.load(1));
    assert!(matches!(kind(&out), Some(LoadErrorKind::NoRuntime)));
    assert_eq!(loader.metrics().keys_in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn metrics_count_requests_hits_and_batches() {
    let calls = new_calls();
    let loader = Loader::builder(recording(&calls))
        .cache(10)
        .build()
        .unwrap();
    let mut fresh = LoaderMetrics::default();
    fresh.name = "loader".into();
    assert_eq!(loader.metrics(), fresh);
    loader.load_many([1, 2, 2]).await;
    loader.load(1).await.unwrap();
    let m = loader.metrics();
    assert_eq!(m.batches_dispatched, 1);
    assert_eq!(m.keys_requested, 4);
    assert_eq!(m.keys_loaded, 2);
    assert_eq!(m.deduplicated, 1);
    assert_eq!(m.cache_hits, 1);
    assert_eq!(m.mean_batch_size(), 2.0);
    assert_eq!(
        (m.in_flight_batches, m.keys_waiting, m.keys_in_flight),
        (0, 0, 0)
    );
}

/// `try_load` counted its hits but not its requests, so the hit ratio
/// `cache_hits / keys_requested` could pass 1: every entry point now
/// counts each key it looks up in `keys_requested`, hit or miss.
#[tokio::test(start_paused = true)]
async fn try_load_counts_requests_as_well_as_hits() {
    let calls = new_calls();
    let loader = Loader::builder(recording(&calls))
        .cache(10)
        .build()
        .unwrap();
    assert!(loader.prime(1, 10));
    for _ in 0..3 {
        assert_eq!(loader.try_load(&1).unwrap().unwrap(), 10);
    }
    assert!(loader.try_load(&2).is_none());
    assert_eq!(loader.load(1).await.unwrap(), 10);
    let m = loader.metrics();
    assert_eq!((m.keys_requested, m.cache_hits), (5, 4));
    assert!(m.cache_hits <= m.keys_requested);

    let uncached = Loader::new(recording(&calls));
    assert!(uncached.try_load(&1).is_none());
    let m = uncached.metrics();
    assert_eq!((m.keys_requested, m.cache_hits), (1, 0));
}

fn builder() -> LoaderBuilder<u64, u64, String> {
    Loader::builder(|keys: Vec<u64>| async move {
        Ok::<_, String>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    })
}

#[test]
fn builder_rejects_each_bad_field() {
    let cases: Vec<(LoaderBuilder<u64, u64, String>, &str, ConfigErrorKind)> = vec![
        (
            builder().max_batch_size(0),
            "max_batch_size",
            ConfigErrorKind::Zero,
        ),
        (
            builder().max_batch_size(flowguard::batch::MAX_BATCH_SIZE + 1),
            "max_batch_size",
            ConfigErrorKind::TooLarge,
        ),
        (
            builder().delay(flowguard::batch::MAX_DELAY + Duration::from_nanos(1)),
            "delay",
            ConfigErrorKind::TooLarge,
        ),
        (
            builder().max_concurrent_batches(0),
            "max_concurrent_batches",
            ConfigErrorKind::Zero,
        ),
        (
            builder().max_concurrent_batches(usize::MAX),
            "max_concurrent_batches",
            ConfigErrorKind::TooLarge,
        ),
        (builder().cache(0), "max_entries", ConfigErrorKind::Zero),
        (
            builder().cache_errors(true),
            "cache_errors",
            ConfigErrorKind::Conflict,
        ),
    ];
    for (b, field, kind) in cases {
        let err = b.build().unwrap_err();
        assert_eq!(
            (err.component(), err.field(), err.kind()),
            ("loader", field, kind),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("invalid loader config: {field} "))
        );
    }
    assert!(
        builder()
            .max_batch_size(flowguard::batch::MAX_BATCH_SIZE)
            .delay(flowguard::batch::MAX_DELAY)
            .max_concurrent_batches(1)
            .cache(1)
            .cache_errors(true)
            .build()
            .is_ok()
    );
}

#[test]
fn public_types_are_send_sync_unpin() {
    fn send_sync<T: Send + Sync>() {}
    fn send_unpin<T: Send + Unpin>() {}
    send_sync::<Loader<u64, String, Backend>>();
    send_sync::<LoaderBuilder<u64, String, Backend>>();
    send_sync::<LoadError<Backend>>();
    send_sync::<LoaderMetrics>();
    send_unpin::<Load<u64, String, Backend>>();
    send_unpin::<LoadMany<u64, String, Backend>>();
}

// ---- issue 15: cache key, primed errors, LRU and TTL, the loader's name ----

#[tokio::test(start_paused = true)]
async fn a_cache_key_makes_equivalent_keys_one_key() {
    let calls = new_calls();
    // Keys that differ only in the hundreds digit are the same record.
    let loader = Loader::builder(recording(&calls))
        .cache(10)
        .cache_key(|k: &u64| k % 100)
        .build()
        .unwrap();
    let out = loader.load_many([101, 1, 201, 2]).await;
    let values: Vec<u64> = out.into_iter().map(Result::unwrap).collect();
    assert_eq!(values, [10, 10, 10, 20]);
    // One fetch per cache key, and the batch sees the mapped keys.
    assert_eq!(*calls.lock().unwrap(), [vec![1, 2]]);
    assert_eq!(loader.metrics().deduplicated, 2);
    // Every keyed method maps too.
    assert_eq!(loader.try_load(&301).unwrap().unwrap(), 10);
    assert!(!loader.prime(902, 0), "2 is cached, whatever its spelling");
    assert!(loader.clear(&502));
    assert!(loader.prime(2, 99));
    assert_eq!(loader.load(702).await.unwrap(), 99);
    assert_eq!(calls.lock().unwrap().len(), 1, "still one batch");
}

#[tokio::test(start_paused = true)]
async fn a_primed_error_answers_without_a_fetch_until_cleared() {
    let calls = new_calls();
    let loader = Loader::builder(recording(&calls))
        .name("users")
        .cache(10)
        .build()
        .unwrap();
    assert!(loader.prime_error(7, "suspended".to_owned()));
    assert!(!loader.prime_error(7, "again".to_owned()), "present");
    assert!(!loader.prime(7, 70), "an error counts as present too");
    for _ in 0..2 {
        let err = loader.load(7).await.unwrap_err();
        assert!(matches!(err.kind(), LoadErrorKind::Key(e) if **e == "suspended"));
        assert_eq!(err.loader(), "users");
        assert_eq!(
            err.to_string(),
            "loader `users`: load failed for this key: suspended"
        );
    }
    // Not only with `cache_errors`: priming is an explicit request.
    assert!(calls.lock().unwrap().is_empty());
    assert_eq!(loader.metrics().cache_hits, 2);
    assert!(loader.clear(&7));
    assert_eq!(loader.load(7).await.unwrap(), 70);
    assert_eq!(*calls.lock().unwrap(), [vec![7]]);
    // Without a cache there is nowhere to prime.
    let uncached = Loader::new(recording(&calls));
    assert!(!uncached.prime_error(1, "x".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn lru_keeps_what_is_read_fifo_evicts_it_anyway() {
    for (eviction, refetched) in [(CacheEviction::Fifo, 1), (CacheEviction::Lru, 2)] {
        let calls = new_calls();
        let loader = Loader::builder(recording(&calls))
            .cache(2)
            .cache_eviction(eviction)
            .build()
            .unwrap();
        loader.load_many([1, 2]).await;
        loader.load(1).await.unwrap(); // a hit
        loader.load(3).await.unwrap(); // a full cache drops one entry
        assert_eq!(loader.metrics().cache_evictions, 1);
        calls.lock().unwrap().clear();
        loader.load_many([1, 2]).await;
        assert_eq!(
            *calls.lock().unwrap(),
            [vec![refetched]],
            "{eviction:?} dropped {refetched}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn cached_answers_expire_exactly_at_their_ttl() {
    let calls = new_calls();
    let loader = Loader::builder(recording(&calls))
        .cache(10)
        .cache_ttl(Duration::from_millis(100))
        .cache_errors(true)
        .build()
        .unwrap();
    let t0 = Instant::now();
    loader.load(1).await.unwrap();
    assert!(loader.prime(2, 22));
    assert!(loader.prime_error(3, "gone".to_owned()));
    tokio::time::advance(Duration::from_millis(99)).await;
    loader.load_many([1, 2, 3]).await;
    assert_eq!(
        calls.lock().unwrap().len(),
        1,
        "all three still cached at 99 ms"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
    let out = loader.load_many([1, 2, 3]).await;
    assert_eq!(
        out.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        [10, 20, 30],
        "expired: fetched again, primed values and errors included"
    );
    assert_eq!(*calls.lock().unwrap(), [vec![1], vec![1, 2, 3]]);
    let m = loader.metrics();
    assert_eq!((m.cache_expirations, m.cache_entries), (3, 3));
    // The refetched answers live 100 ms from when they were stored.
    tokio::time::advance(Duration::from_millis(99)).await;
    assert!(loader.try_load(&1).is_some());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(loader.try_load(&1).is_none());
}

#[tokio::test(start_paused = true)]
async fn the_loader_name_is_in_its_errors_metrics_and_debug() {
    let loader = Loader::builder(|_keys: Vec<u64>| async {
        Err::<HashMap<u64, u64>, _>("timeout".to_owned())
    })
    .name("authors")
    .build()
    .unwrap();
    assert_eq!(loader.name(), "authors");
    let err = loader.load(1).await.unwrap_err();
    assert_eq!(err.loader(), "authors");
    assert_eq!(err.to_string(), "loader `authors`: batch failed: timeout");
    assert!(format!("{err:?}").contains("authors"), "{err:?}");
    assert_eq!(&*loader.metrics().name, "authors");
    assert!(format!("{loader:?}").contains("authors"));
    // The default name.
    let unnamed = Loader::new(recording(&new_calls()));
    assert_eq!(
        (unnamed.name(), &*unnamed.metrics().name),
        ("loader", "loader")
    );
}

#[test]
fn new_cache_settings_are_validated() {
    let calls = new_calls();
    let e = Loader::builder(recording(&calls))
        .cache_ttl(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("cache_ttl", ConfigErrorKind::Conflict)
    );
    let e = Loader::builder(recording(&calls))
        .cache_eviction(CacheEviction::Lru)
        .build()
        .unwrap_err();
    assert_eq!(
        (e.field(), e.kind()),
        ("cache_eviction", ConfigErrorKind::Conflict)
    );
    let e = Loader::builder(recording(&calls))
        .cache(1)
        .cache_ttl(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!((e.field(), e.kind()), ("cache_ttl", ConfigErrorKind::Zero));
}

/// Batch size and latency histograms: one value per batch, latency exact
/// on the paused clock; off with `histograms(false)`.
#[tokio::test(start_paused = true)]
async fn batch_size_and_latency_histograms() {
    let (calls, starts) = (new_calls(), Arc::new(Mutex::new(Vec::new())));
    let loader = slow(&calls, &starts, Duration::from_millis(20))
        .max_batch_size(3)
        .build()
        .unwrap();
    let r = join_all((0..5u64).map(|k| loader.load(k))).await;
    assert!(r.iter().all(Result::is_ok));
    let m = loader.metrics();
    assert_eq!(m.batches_dispatched, 2);
    assert_eq!(
        (m.batch_size.count(), m.batch_size.min(), m.batch_size.max()),
        (2, 2, 3)
    );
    assert_eq!(m.batch_latency.count(), 2);
    assert_eq!(m.batch_latency.max_duration(), Duration::from_millis(20));
    assert_eq!(m.batch_latency.min(), 20_000_000);

    let off = slow(&calls, &starts, Duration::from_millis(20))
        .histograms(false)
        .build()
        .unwrap();
    off.load(1).await.unwrap();
    let m = off.metrics();
    assert_eq!(
        (
            m.batches_dispatched,
            m.batch_size.count(),
            m.batch_latency.count()
        ),
        (1, 0, 0)
    );
}

// ---- ported from graphql/dataloader's own tests and README ----

type KeyCalls<K> = Arc<Mutex<Vec<Vec<K>>>>;

/// DataLoader's `idLoader`: answers every key with itself and records each
/// call's keys.
fn id_loader<K>() -> (LoaderBuilder<K, K, String>, KeyCalls<K>)
where
    K: Eq + std::hash::Hash + Clone + Send + Sync + 'static,
{
    let calls: KeyCalls<K> = Arc::new(Mutex::new(Vec::new()));
    let c = Arc::clone(&calls);
    let builder = Loader::builder(move |keys: Vec<K>| {
        c.lock().unwrap().push(keys.clone());
        futures::future::ready(Ok::<_, String>(
            keys.into_iter()
                .map(|k| (k.clone(), k))
                .collect::<HashMap<_, _>>(),
        ))
    });
    (builder, calls)
}

fn values<V, E: std::fmt::Debug>(out: Vec<Result<V, LoadError<E>>>) -> Vec<V> {
    out.into_iter().map(Result::unwrap).collect()
}

/// DataLoader's "evenLoader": even keys answer themselves, odd keys a
/// per-key error.
fn even_loader(calls: &Calls) -> Loader<u64, u64, String> {
    let c = Arc::clone(calls);
    Loader::builder_vec(move |keys: Vec<u64>| {
        c.lock().unwrap().push(keys.clone());
        let answer = keys
            .iter()
            .map(|&k| {
                if k % 2 == 0 {
                    Ok(k)
                } else {
                    Err(format!("Odd: {k}"))
                }
            })
            .collect();
        futures::future::ready(Ok::<_, String>(answer))
    })
    .build()
    .unwrap()
}

fn key_error<V>(r: &Result<V, LoadError<String>>) -> Option<&str> {
    match kind(r) {
        Some(LoadErrorKind::Key(e)) => Some(e.as_str()),
        _ => None,
    }
}

// Reference: graphql/dataloader (src/__tests__/dataloader.test.js)

#[tokio::test(start_paused = true)]
async fn a_simple_identity_loader_answers_a_load() {
    let (builder, calls) = id_loader::<u64>();
    assert_eq!(builder.build().unwrap().load(1).await.unwrap(), 1);
    assert_eq!(*calls.lock().unwrap(), [vec![1]]);
}

#[tokio::test(start_paused = true)]
async fn load_many_answers_in_order_and_an_empty_list_is_empty() {
    let (builder, calls) = id_loader::<u64>();
    let loader = builder.build().unwrap();
    assert_eq!(values(loader.load_many([1, 2]).await), [1, 2]);
    assert!(loader.load_many(Vec::new()).await.is_empty());
    assert_eq!(*calls.lock().unwrap(), [vec![1, 2]], "no call for no keys");
}

#[tokio::test(start_paused = true)]
async fn load_many_answers_per_key_errors_beside_values() {
    let loader = Loader::builder_vec(|keys: Vec<&'static str>| async move {
        Ok::<_, String>(
            keys.iter()
                .map(|&k| {
                    if k == "bad" {
                        Err("Bad Key".to_owned())
                    } else {
                        Ok(k)
                    }
                })
                .collect(),
        )
    })
    .build()
    .unwrap();
    let out = loader.load_many(["a", "b", "bad"]).await;
    assert_eq!(*out[0].as_ref().unwrap(), "a");
    assert_eq!(*out[1].as_ref().unwrap(), "b");
    assert_eq!(key_error(&out[2]), Some("Bad Key"));
}

#[tokio::test(start_paused = true)]
async fn two_loads_of_one_turn_are_one_batch() {
    let (builder, calls) = id_loader::<u64>();
    let loader = builder.build().unwrap();
    let (a, b) = tokio::join!(loader.load(1), loader.load(2));
    assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
    assert_eq!(*calls.lock().unwrap(), [vec![1, 2]]);
}

#[tokio::test(start_paused = true)]
async fn max_batch_size_two_sends_three_loads_as_two_batches() {
    let (builder, calls) = id_loader::<u64>();
    let loader = builder.max_batch_size(2).build().unwrap();
    let (a, b, c) = tokio::join!(loader.load(1), loader.load(2), loader.load(3));
    assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), (1, 2, 3));
    assert_eq!(*calls.lock().unwrap(), [vec![1, 2], vec![3]]);
}

#[tokio::test(start_paused = true)]
async fn duplicate_keys_do_not_count_towards_max_batch_size() {
    // DataLoader: maxBatchSize 3 with a 100 ms batchScheduleFn.
    let (builder, calls) = id_loader::<&'static str>();
    let loader = builder
        .max_batch_size(3)
        .delay(Duration::from_millis(100))
        .build()
        .unwrap();
    let keys = ["a", "b", "a", "a", "a", "b", "c"];
    let out = join_all(keys.iter().map(|&k| loader.load(k))).await;
    assert_eq!(values(out), keys);
    assert_eq!(*calls.lock().unwrap(), [vec!["a", "b", "c"]]);
}

/// DataLoader ("batches cached requests") resolves a primed load only when
/// the batch of the other loads resolves; flowguard answers a cache hit on
/// the load's first poll (a documented departure, see `batch`'s docs).
#[tokio::test(start_paused = true)]
async fn a_primed_load_answers_at_once_and_the_rest_are_batched() {
    let calls = new_calls();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let loader = slow(&calls, &starts, Duration::from_millis(10))
        .cache(10)
        .build()
        .unwrap();
    assert!(loader.prime(1, 1));
    let t0 = Instant::now();
    let mut first = loader.load(1);
    let mut second = loader.load(2);
    assert!(matches!(
        futures::poll!(&mut first),
        std::task::Poll::Ready(Ok(1))
    ));
    assert!(futures::poll!(&mut second).is_pending());
    assert_eq!(second.await.unwrap(), 20);
    assert_eq!(t0.elapsed(), Duration::from_millis(10));
    assert_eq!(*calls.lock().unwrap(), [vec![2]]);
}

#[tokio::test(start_paused = true)]
async fn max_batch_size_counts_only_keys_that_are_fetched() {
    let (builder, calls) = id_loader::<u64>();
    let loader = builder.max_batch_size(1).cache(10).build().unwrap();
    assert!(loader.prime(1, 1));
    let (a, b) = tokio::join!(loader.load(1), loader.load(2));
    assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
    assert_eq!(*calls.lock().unwrap(), [vec![2]]);
}

#[tokio::test(start_paused = true)]
async fn identical_loads_are_coalesced() {
    let (builder, calls) = id_loader::<u64>();
    let loader = builder.build().unwrap();
    let (a, b) = tokio::join!(loader.load(1), loader.load(1));
    assert_eq!((a.unwrap(), b.unwrap()), (1, 1));
    assert_eq!(*calls.lock().unwrap(), [vec![1]]);
}

#[tokio::test(start_paused = true)]
async fn identical_loads_are_coalesced_across_sized_batches() {
    let (builder, calls) = id_loader::<u64>();
    let loader = builder.max_batch_size(2).build().unwrap();
    let out = join_all([1, 2, 1, 3].map(|k| loader.load(k))).await;
    assert_eq!(values(out), [1, 2, 1, 3]);
    assert_eq!(*calls.lock().unwrap(), [vec![1, 2], vec![3]]);
}

#[tokio::test(start_paused = true)]
async fn the_cache_answers_repeated_loads() {
    let (builder, calls) = id_loader::<&'static str>();
    let loader = builder.cache(100).build().unwrap();
    assert_eq!(values(loader.load_many(["A", "B"]).await), ["A", "B"]);
    assert_eq!(values(loader.load_many(["A", "C"]).await), ["A", "C"]);
    assert_eq!(
        values(loader.load_many(["A", "B", "C"]).await),
        ["A", "B", "C"]
    );
    assert_eq!(*calls.lock().unwrap(), [vec!["A", "B"], vec!["C"]]);
}

#[tokio::test(start_paused = true)]
async fn clear_drops_one_cached_key() {
    let (builder, calls) = id_loader::<&'static str>();
    let loader = builder.cache(100).build().unwrap();
    loader.load_many(["A", "B"]).await;
    assert!(loader.clear(&"A"));
    assert_eq!(values(loader.load_many(["A", "B"]).await), ["A", "B"]);
    assert_eq!(*calls.lock().unwrap(), [vec!["A", "B"], vec!["A"]]);
}

#[tokio::test(start_paused = true)]
async fn clear_all_drops_every_cached_key() {
    let (builder, calls) = id_loader::<&'static str>();
    let loader = builder.cache(100).build().unwrap();
    loader.load_many(["A", "B"]).await;
    loader.clear_all();
    assert_eq!(values(loader.load_many(["A", "B"]).await), ["A", "B"]);
    assert_eq!(*calls.lock().unwrap(), [vec!["A", "B"], vec!["A", "B"]]);
}

#[tokio::test(start_paused = true)]
async fn a_primed_key_is_not_fetched() {
    let (builder, calls) = id_loader::<&'static str>();
    let loader = builder.cache(100).build().unwrap();
    assert!(loader.prime("A", "A"));
    assert_eq!(values(loader.load_many(["A", "B"]).await), ["A", "B"]);
    assert_eq!(*calls.lock().unwrap(), [vec!["B"]]);
}

#[tokio::test(start_paused = true)]
async fn prime_leaves_a_present_key_alone() {
    let (builder, calls) = id_loader::<&'static str>();
    let loader = builder.cache(100).build().unwrap();
    assert!(loader.prime("A", "X"));
    assert_eq!(loader.load("A").await.unwrap(), "X");
    assert_eq!(loader.load("B").await.unwrap(), "B");
    assert!(!loader.prime("A", "Y"));
    assert!(!loader.prime("B", "Y"));
    assert_eq!(loader.load("A").await.unwrap(), "X");
    assert_eq!(loader.load("B").await.unwrap(), "B");
    assert_eq!(*calls.lock().unwrap(), [vec!["B"]]);
}

#[tokio::test(start_paused = true)]
async fn clear_then_prime_overwrites_a_cached_key() {
    let (builder, calls) = id_loader::<&'static str>();
    let loader = builder.cache(100).build().unwrap();
    loader.prime("A", "X");
    assert_eq!(loader.load("A").await.unwrap(), "X");
    assert_eq!(loader.load("B").await.unwrap(), "B");
    for key in ["A", "B"] {
        assert!(loader.clear(&key));
        assert!(loader.prime(key, "Y"));
    }
    assert_eq!(loader.load("A").await.unwrap(), "Y");
    assert_eq!(loader.load("B").await.unwrap(), "Y");
    assert_eq!(*calls.lock().unwrap(), [vec!["B"]]);
}

#[tokio::test(start_paused = true)]
async fn a_per_key_error_fails_only_its_load() {
    let calls = new_calls();
    let loader = even_loader(&calls);
    assert_eq!(key_error(&loader.load(1).await), Some("Odd: 1"));
    assert_eq!(loader.load(2).await.unwrap(), 2);
    assert_eq!(*calls.lock().unwrap(), [vec![1], vec![2]]);
}

#[tokio::test(start_paused = true)]
async fn per_key_failures_and_successes_share_one_batch() {
    let calls = new_calls();
    let loader = even_loader(&calls);
    let (odd, even) = tokio::join!(loader.load(1), loader.load(2));
    assert_eq!(key_error(&odd), Some("Odd: 1"));
    assert_eq!(even.unwrap(), 2);
    assert_eq!(*calls.lock().unwrap(), [vec![1, 2]]);
}

/// DataLoader caches per-key errors; flowguard caches them only with
/// `cache_errors` (documented on `LoaderBuilder::cache`).
#[tokio::test(start_paused = true)]
async fn per_key_errors_are_cached_with_cache_errors_only() {
    for (cache_errors, fetches) in [(true, 1), (false, 2)] {
        let calls = new_calls();
        let c = Arc::clone(&calls);
        let loader = Loader::builder_vec(move |keys: Vec<u64>| {
            c.lock().unwrap().push(keys.clone());
            let answer = keys.iter().map(|k| Err::<u64, _>(format!("Error: {k}")));
            futures::future::ready(Ok::<_, String>(answer.collect()))
        })
        .cache(10)
        .cache_errors(cache_errors)
        .build()
        .unwrap();
        for _ in 0..2 {
            assert_eq!(key_error(&loader.load(1).await), Some("Error: 1"));
        }
        assert_eq!(
            calls.lock().unwrap().len(),
            fetches,
            "cache_errors {cache_errors}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_cached_per_key_error_can_be_cleared_and_fetched_again() {
    let calls = new_calls();
    let c = Arc::clone(&calls);
    let loader = Loader::builder_vec(move |keys: Vec<u64>| {
        c.lock().unwrap().push(keys.clone());
        let answer = keys.iter().map(|k| Err::<u64, _>(format!("Error: {k}")));
        futures::future::ready(Ok::<_, String>(answer.collect()))
    })
    .cache(10)
    .cache_errors(true)
    .build()
    .unwrap();
    for _ in 0..2 {
        let out = loader.load(1).await;
        assert_eq!(key_error(&out), Some("Error: 1"));
        assert!(loader.clear(&1), "the error was cached");
    }
    assert_eq!(*calls.lock().unwrap(), [vec![1], vec![1]]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_fails_every_load_alike_and_is_not_cached() {
    let calls = new_calls();
    let c = Arc::clone(&calls);
    let loader = Loader::builder(move |keys: Vec<u64>| {
        c.lock().unwrap().push(keys);
        futures::future::ready(Err::<HashMap<u64, u64>, _>(
            "I am a terrible loader".to_owned(),
        ))
    })
    .cache(10)
    .build()
    .unwrap();
    let (a, b) = tokio::join!(loader.load(1), loader.load(2));
    let (Some(LoadErrorKind::Batch(ea)), Some(LoadErrorKind::Batch(eb))) = (kind(&a), kind(&b))
    else {
        panic!("expected batch errors: {a:?} {b:?}");
    };
    assert!(Arc::ptr_eq(ea, eb), "the very same error");
    assert_eq!(**ea, "I am a terrible loader");
    assert!(loader.load(1).await.is_err());
    assert_eq!(*calls.lock().unwrap(), [vec![1, 2], vec![1]]);
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Obj {
    id: u32,
    tag: String,
}

#[tokio::test(start_paused = true)]
async fn struct_keys_are_batched_cached_and_cleared_by_value() {
    let (builder, calls) = id_loader::<Obj>();
    let loader = builder.cache(10).build().unwrap();
    let key = |id| Obj {
        id,
        tag: "x".into(),
    };
    assert_eq!(
        values(loader.load_many([key(1), key(2)]).await),
        [key(1), key(2)]
    );
    assert!(loader.clear(&key(1)));
    assert_eq!(
        values(loader.load_many([key(1), key(2)]).await),
        [key(1), key(2)]
    );
    assert_eq!(*calls.lock().unwrap(), [vec![key(1), key(2)], vec![key(1)]]);
}

/// DataLoader's `batch: false` is `max_batch_size(1)` here.
#[tokio::test(start_paused = true)]
async fn max_batch_size_one_disables_batching() {
    let (builder, calls) = id_loader::<u64>();
    let loader = builder.max_batch_size(1).build().unwrap();
    let (a, b) = tokio::join!(loader.load(1), loader.load(2));
    assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
    assert_eq!(*calls.lock().unwrap(), [vec![1], vec![2]]);
}

/// DataLoader's `cache: false` (and `cacheMap: null`) is flowguard's default.
#[tokio::test(start_paused = true)]
async fn without_a_cache_each_turn_fetches_again() {
    let (builder, calls) = id_loader::<&'static str>();
    let loader = builder.build().unwrap();
    assert_eq!(values(loader.load_many(["A", "B"]).await), ["A", "B"]);
    assert_eq!(values(loader.load_many(["A", "C"]).await), ["A", "C"]);
    assert_eq!(
        values(loader.load_many(["A", "B", "C"]).await),
        ["A", "B", "C"]
    );
    assert_eq!(loader.load("A").await.unwrap(), "A");
    assert_eq!(
        *calls.lock().unwrap(),
        [
            vec!["A", "B"],
            vec!["A", "C"],
            vec!["A", "B", "C"],
            vec!["A"]
        ]
    );
}

/// DataLoader with `cache: false` hands the batch function every key once per
/// load ("Keys are repeated in batch when cache disabled"); flowguard
/// de-duplicates without a cache (a documented departure).
#[tokio::test(start_paused = true)]
async fn without_a_cache_a_batch_still_holds_each_key_once() {
    let (builder, calls) = id_loader::<&'static str>();
    let loader = builder.build().unwrap();
    let (a, c, d, many) = tokio::join!(
        loader.load("A"),
        loader.load("C"),
        loader.load("D"),
        loader.load_many(["C", "D", "A", "A", "B"]),
    );
    assert_eq!((a.unwrap(), c.unwrap(), d.unwrap()), ("A", "C", "D"));
    assert_eq!(values(many), ["C", "D", "A", "A", "B"]);
    assert_eq!(*calls.lock().unwrap(), [vec!["A", "C", "D", "B"]]);
}

#[tokio::test(start_paused = true)]
async fn without_a_cache_prime_and_clear_change_nothing() {
    let (builder, calls) = id_loader::<&'static str>();
    let loader = builder.build().unwrap();
    assert!(!loader.prime("A", "X"));
    assert!(loader.try_load(&"A").is_none());
    assert!(!loader.clear(&"A"));
    loader.clear_all();
    assert_eq!(loader.load("A").await.unwrap(), "A", "nothing was primed");
    assert_eq!(loader.metrics().cache_entries, 0);
    assert_eq!(*calls.lock().unwrap(), [vec!["A"]]);
}

#[tokio::test(start_paused = true)]
async fn clear_all_inside_the_batch_function_keeps_its_answers_uncached() {
    type Ld = Loader<&'static str, &'static str, String>;
    let this: Arc<std::sync::OnceLock<Ld>> = Arc::default();
    let calls: KeyCalls<&'static str> = Arc::default();
    let (t, c) = (Arc::clone(&this), Arc::clone(&calls));
    let loader: Ld = Loader::builder(move |keys: Vec<&'static str>| {
        t.get().unwrap().clear_all();
        c.lock().unwrap().push(keys.clone());
        futures::future::ready(Ok(keys
            .into_iter()
            .map(|k| (k, k))
            .collect::<HashMap<_, _>>()))
    })
    .cache(10)
    .build()
    .unwrap();
    this.set(loader.clone()).unwrap();
    for _ in 0..2 {
        let out = loader.load_many(["A", "B", "A"]).await;
        assert_eq!(values(out), ["A", "B", "A"]);
    }
    assert_eq!(*calls.lock().unwrap(), [vec!["A", "B"], vec!["A", "B"]]);
    assert_eq!(loader.metrics().cache_entries, 0);
}

/// JS objects with the same fields in another order, as DataLoader's
/// `cacheKeyFn` test writes them: a list of fields, sorted by the cache key.
type Fields = Vec<(&'static str, u32)>;

fn sorted_fields_loader() -> (Loader<Fields, Fields, String>, KeyCalls<Fields>) {
    let (builder, calls) = id_loader::<Fields>();
    let loader = builder
        .cache(10)
        .cache_key(|k: &Fields| {
            let mut k = k.clone();
            k.sort_unstable();
            k
        })
        .build()
        .unwrap();
    (loader, calls)
}

fn ab() -> (Fields, Fields) {
    (vec![("a", 123), ("b", 321)], vec![("b", 321), ("a", 123)])
}

#[tokio::test(start_paused = true)]
async fn a_cache_key_makes_a_later_equivalent_key_a_cache_hit() {
    let (loader, calls) = sorted_fields_loader();
    let (k1, k2) = ab();
    let v1 = loader.load(k1.clone()).await.unwrap();
    let v2 = loader.load(k2).await.unwrap();
    // The batch function sees the mapped key (a documented departure).
    assert_eq!(*calls.lock().unwrap(), [vec![k1.clone()]]);
    assert_eq!((&v1, &v2), (&k1, &k1));
}

#[tokio::test(start_paused = true)]
async fn clear_by_an_equivalent_key_clears_the_entry() {
    let (loader, calls) = sorted_fields_loader();
    let (k1, k2) = ab();
    loader.load(k1.clone()).await.unwrap();
    assert!(loader.clear(&k2));
    loader.load(k1.clone()).await.unwrap();
    assert_eq!(*calls.lock().unwrap(), [vec![k1.clone()], vec![k1]]);
}

#[tokio::test(start_paused = true)]
async fn equivalent_keys_in_one_turn_are_fetched_once() {
    let (loader, calls) = sorted_fields_loader();
    let (k1, k2) = ab();
    let (a, b) = tokio::join!(loader.load(k1.clone()), loader.load(k2));
    assert_eq!((a.unwrap(), b.unwrap()), (k1.clone(), k1.clone()));
    assert_eq!(*calls.lock().unwrap(), [vec![k1]]);
}

#[tokio::test(start_paused = true)]
async fn priming_by_one_key_answers_an_equivalent_key() {
    let (loader, calls) = sorted_fields_loader();
    let (k1, k2) = ab();
    assert!(loader.prime(k1.clone(), k1.clone()));
    assert_eq!(loader.load(k1.clone()).await.unwrap(), k1);
    assert_eq!(loader.load(k2).await.unwrap(), k1);
    assert!(calls.lock().unwrap().is_empty());
}

/// DataLoader's manual `batchScheduleFn`: here the schedule is `delay`,
/// driven by the paused clock.
#[tokio::test(start_paused = true)]
async fn delay_decides_when_a_batch_is_dispatched() {
    let (builder, calls) = id_loader::<&'static str>();
    let loader = builder
        .cache(10)
        .delay(Duration::from_millis(100))
        .build()
        .unwrap();
    let spawn_load = |k| {
        let l = loader.clone();
        tokio::spawn(async move { l.load(k).await })
    };
    let (a, b) = (spawn_load("A"), spawn_load("B"));
    tokio::time::sleep(Duration::from_millis(101)).await;
    assert_eq!(*calls.lock().unwrap(), [vec!["A", "B"]]);
    let (a2, c) = (spawn_load("A"), spawn_load("C"));
    tokio::time::sleep(Duration::from_millis(101)).await;
    assert_eq!(*calls.lock().unwrap(), [vec!["A", "B"], vec!["C"]]);
    let d = spawn_load("D");
    tokio::time::sleep(Duration::from_millis(99)).await;
    assert_eq!(calls.lock().unwrap().len(), 2, "D's window is still open");
    for (task, want) in [(a, "A"), (b, "B"), (a2, "A"), (c, "C"), (d, "D")] {
        assert_eq!(task.await.unwrap().unwrap(), want);
    }
}

#[tokio::test(start_paused = true)]
async fn loads_made_in_nested_futures_of_one_turn_share_a_batch() {
    let (builder, calls) = id_loader::<&'static str>();
    let loader = builder.build().unwrap();
    let ready = || futures::future::ready(());
    let (a, (b, (c, d))) = tokio::join!(loader.load("A"), async {
        ready().await;
        tokio::join!(loader.load("B"), async {
            ready().await;
            ready().await;
            tokio::join!(loader.load("C"), async {
                ready().await;
                loader.load("D").await
            })
        })
    });
    assert_eq!([a, b, c, d].map(Result::unwrap), ["A", "B", "C", "D"]);
    assert_eq!(*calls.lock().unwrap(), [vec!["A", "B", "C", "D"]]);
}

type DeepKey = Vec<&'static str>;

/// DataLoader's "can call a loader from a loader": loaders `a` and `b`
/// each load their whole batch as one key of a third loader. Returns the
/// calls of `a`, `b` and the third loader.
async fn two_loaders_over_a_deep_one() -> (
    KeyCalls<&'static str>,
    KeyCalls<&'static str>,
    KeyCalls<DeepKey>,
) {
    let (deep_builder, deep_calls) = id_loader::<DeepKey>();
    let deep = deep_builder.build().unwrap();
    let via_deep = |calls: &KeyCalls<&'static str>| {
        let (deep, calls) = (deep.clone(), Arc::clone(calls));
        Loader::new(move |keys: Vec<&'static str>| {
            calls.lock().unwrap().push(keys.clone());
            let deep = deep.clone();
            async move {
                let answer = deep.load(keys.clone()).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(keys.into_iter().zip(answer).collect::<HashMap<_, _>>())
            }
        })
    };
    let (a_calls, b_calls) = (KeyCalls::default(), KeyCalls::default());
    let (a, b) = (via_deep(&a_calls), via_deep(&b_calls));
    let out = tokio::join!(a.load("A1"), b.load("B1"), a.load("A2"), b.load("B2"));
    assert_eq!(
        [out.0, out.1, out.2, out.3].map(Result::unwrap),
        ["A1", "B1", "A2", "B2"]
    );
    (a_calls, b_calls, deep_calls)
}

#[tokio::test(start_paused = true)]
async fn batch_functions_calling_one_loader_share_its_batch() {
    let (a_calls, b_calls, deep_calls) = two_loaders_over_a_deep_one().await;
    assert_eq!(*a_calls.lock().unwrap(), [vec!["A1", "A2"]]);
    assert_eq!(*b_calls.lock().unwrap(), [vec!["B1", "B2"]]);
    let mut deep_calls = deep_calls.lock().unwrap().clone();
    assert_eq!(deep_calls.len(), 1, "one batch of the deep loader");
    deep_calls[0].sort_unstable();
    assert_eq!(deep_calls, [vec![vec!["A1", "A2"], vec!["B1", "B2"]]]);
}

/// DataLoader calls `a`'s batch function first (its batch opened first),
/// so `a`'s keys lead the deep batch. Tokio wakes the tasks that yielded in
/// one turn last first; the window's two yields put them back in order.
#[tokio::test(start_paused = true)]
async fn batches_of_two_loaders_closing_in_one_turn_dispatch_in_opening_order() {
    let (_, _, deep_calls) = two_loaders_over_a_deep_one().await;
    assert_eq!(
        *deep_calls.lock().unwrap(),
        [vec![vec!["A1", "A2"], vec!["B1", "B2"]]]
    );
}

/// The same with three loaders whose batches are opened by three tasks.
#[tokio::test(start_paused = true)]
async fn batches_of_three_loaders_opened_by_three_tasks_dispatch_in_opening_order() {
    let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let loader = |name: &'static str| {
        let order = Arc::clone(&order);
        Loader::new(move |keys: Vec<u32>| {
            order.lock().unwrap().push(name);
            async move { Ok::<_, String>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) }
        })
    };
    let (a, b, c) = (loader("a"), loader("b"), loader("c"));
    let tasks = [a, b, c].map(|l| tokio::spawn(async move { l.load(1).await.unwrap() }));
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1);
    }
    assert_eq!(*order.lock().unwrap(), ["a", "b", "c"]);
}

// Reference: graphql/dataloader (src/__tests__/abuse.test.js)

#[tokio::test(start_paused = true)]
async fn a_vec_answer_of_another_length_fails_the_load_either_way() {
    for (answered, actual) in [(0usize, 0usize), (2, 2)] {
        let loader = Loader::builder_vec(move |_keys: Vec<u64>| async move {
            Ok::<_, String>(vec![Ok(7u64); answered])
        })
        .build()
        .unwrap();
        let out = loader.load(1).await;
        assert!(
            matches!(kind(&out), Some(LoadErrorKind::WrongLength { expected: 1, actual: a }) if *a == actual),
            "{out:?}"
        );
        assert_eq!(loader.metrics().failed_batches, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_map_answer_for_keys_not_asked_for_is_ignored() {
    // Answers 1 (asked for) and 101, 102 (never asked for).
    let loader = Loader::builder(|keys: Vec<u64>| async move {
        let wrong = keys.iter().map(|k| (k + 100, 0));
        Ok::<_, String>(wrong.chain([(1, 10)]).collect::<HashMap<_, _>>())
    })
    .cache(10)
    .cache_errors(true)
    .build()
    .unwrap();
    let out = loader.load_many([1, 2]).await;
    assert_eq!(*out[0].as_ref().unwrap(), 10);
    assert!(out[1].as_ref().unwrap_err().is_not_found());
    assert!(
        loader.try_load(&101).is_none(),
        "not cached under a key never asked"
    );
    assert!(loader.try_load(&102).is_none());
    assert_eq!(loader.metrics().cache_entries, 2, "1 and 2's NotFound");
}

#[tokio::test(start_paused = true)]
async fn a_batch_function_that_panics_before_its_future_fails_its_keys() {
    let loader = Loader::new(|keys: Vec<u64>| {
        assert!(!keys.contains(&13), "unlucky");
        futures::future::ready(Ok::<_, String>(
            keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>(),
        ))
    });
    let out = loader.load_many([12, 13]).await;
    assert!(
        out.iter()
            .all(|r| matches!(kind(r), Some(LoadErrorKind::Aborted))),
        "{out:?}"
    );
    assert_eq!(loader.load(12).await.unwrap(), 12);
    let m = loader.metrics();
    assert_eq!(
        (m.failed_batches, m.in_flight_batches, m.keys_in_flight),
        (1, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_batch_gives_back_its_concurrency_slot() {
    let loader = Loader::builder(|keys: Vec<u64>| async move {
        assert!(!keys.contains(&13), "unlucky");
        Ok::<_, String>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    })
    .max_concurrent_batches(1)
    .build()
    .unwrap();
    assert!(matches!(
        kind(&loader.load(13).await),
        Some(LoadErrorKind::Aborted)
    ));
    let next = tokio::time::timeout(Duration::from_secs(1), loader.load(12)).await;
    assert_eq!(next.expect("slot given back").unwrap(), 12);
}

// Reference: graphql/dataloader (src/__tests__/browser.test.js)

/// DataLoader batches without its preferred scheduling hook; a flowguard
/// load polled where no runtime is current still batches, on the runtime the
/// loader was built in.
#[test]
fn loads_polled_outside_a_runtime_batch_on_the_one_the_loader_was_built_in() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (builder, calls) = id_loader::<u64>();
    let loader = rt.block_on(async { builder.build().unwrap() });
    let (mut a, mut b) = (loader.load(1), loader.load(2));
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(std::pin::Pin::new(&mut a).poll(&mut cx).is_pending());
    assert!(std::pin::Pin::new(&mut b).poll(&mut cx).is_pending());
    let (a, b) = rt.block_on(async { (a.await, b.await) });
    assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
    assert_eq!(*calls.lock().unwrap(), [vec![1, 2]]);
}

// Reference: graphql/dataloader (README.md: "Loading by alternative keys")

#[tokio::test(start_paused = true)]
async fn a_batch_function_can_prime_another_loader() {
    let (by_name_builder, name_calls) = id_loader::<String>();
    let by_name = by_name_builder.cache(10).build().unwrap();
    let n = by_name.clone();
    let by_id = Loader::new(move |ids: Vec<u32>| {
        let users: HashMap<u32, String> = ids.iter().map(|id| (*id, format!("user{id}"))).collect();
        for name in users.values() {
            n.prime(name.clone(), format!("{name} (primed)"));
        }
        futures::future::ready(Ok::<_, String>(users))
    });
    assert_eq!(by_id.load(1).await.unwrap(), "user1");
    assert_eq!(
        by_name.load("user1".into()).await.unwrap(),
        "user1 (primed)"
    );
    assert!(name_calls.lock().unwrap().is_empty());
}

// Reference: tokio (tokio/src/sync/tests/semaphore_batch.rs,
// release_permits_at_drop), applied to a batch's waiters: a waker replaced
// by a re-poll runs its owner's drop code, which may use the same batch.

/// A waker that owns another load of the batch it waits on (dropping a
/// waiting load unregisters it from the batch, under the batch's lock).
struct LoadInWaker(#[allow(dead_code)] Mutex<Option<flowguard::batch::Load<u32, u32, ()>>>);

impl std::task::Wake for LoadInWaker {
    fn wake(self: Arc<Self>) {}
}

/// Polls `f` once with `w`.
fn poll_with<F: std::future::Future + Unpin>(
    f: &mut F,
    w: &std::task::Waker,
) -> std::task::Poll<F::Output> {
    std::pin::Pin::new(f).poll(&mut std::task::Context::from_waker(w))
}

#[path = "support/deadlock.rs"]
mod deadlock;
use deadlock::without_deadlock;

#[test]
fn tokio_a_replaced_waker_may_drop_a_load_of_the_same_batch() {
    without_deadlock(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let loader = Loader::new(|keys: Vec<u32>| async move {
                Ok::<_, ()>(
                    keys.into_iter()
                        .map(|k| (k, k * 10))
                        .collect::<HashMap<_, _>>(),
                )
            });
            let (mut a, mut b) = (loader.load(1), loader.load(2));
            assert!(poll_with(&mut b, std::task::Waker::noop()).is_pending());
            let w = std::task::Waker::from(Arc::new(LoadInWaker(Mutex::new(Some(b)))));
            assert!(poll_with(&mut a, &w).is_pending());
            drop(w);
            // Re-polled with another waker: the first is dropped, and with
            // it the other load, which leaves the batch.
            assert!(poll_with(&mut a, std::task::Waker::noop()).is_pending());
            assert_eq!(a.await.unwrap(), 10);
            assert_eq!(loader.metrics().batches_dispatched, 1);
        });
    });
}
