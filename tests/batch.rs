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
