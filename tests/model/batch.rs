//! Model checker for `flowguard::batch::Loader`, shared by proptest
//! (`tests/prop_batch.rs`) and the fuzz target (`fuzz/fuzz_targets/batch.rs`).
//!
//! `check` runs a random schedule of loads, scheduler turns, time advances,
//! cancellations, clears and primes against the real loader (current-thread
//! runtime, paused clock; its cache FIFO or LRU, with or without a time to
//! live) and against a naive model, and asserts after every step that both
//! agree on: the batches called and their contents, each waiter's answer
//! (or that it is still waiting), and what `prime` answered.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use flowguard::batch::{CacheEviction, Load, LoadError, LoadErrorKind, Loader};

/// One step of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Only meaningful as the first op: the loader's `max_batch_size`
    /// (1 + n % 4), whether it caches, and how: LRU if `n & 4`, a time to
    /// live of `TTL_MS` if `n & 8`. Without it: 3, no cache.
    Configure(u8, bool),
    /// Start a load of this key (polled once right away).
    Load(u8),
    /// Let spawned tasks run for a few scheduler turns.
    Tick,
    /// Advance the paused clock this many milliseconds.
    Advance(u8),
    /// Drop the n-th waiter (modulo the number started).
    Cancel(u8),
    /// `clear(key)`.
    Clear(u8),
    /// `clear_all()`.
    ClearAll,
    /// `prime(key, 1000 + key)`.
    Prime(u8),
}

#[derive(Debug, Clone, Copy)]
struct Config {
    max_batch_size: usize,
    cache: bool,
    lru: bool,
    ttl: bool,
}

const KEYS: u8 = 8;
const CACHE_ENTRIES: usize = 4;
const LATENCY_MS: u64 = 10;
/// The cache's time to live, when it has one.
const TTL_MS: u64 = 25;
/// A batch holding this key fails as a whole.
const POISON: u64 = 7;

/// Turns fuzz bytes into a schedule; the first byte configures the loader.
pub(crate) fn ops_from_bytes(bytes: &[u8]) -> Vec<Op> {
    let first = bytes.first().copied().unwrap_or(0);
    let configure = Op::Configure(first % 16, first & 16 != 0);
    std::iter::once(configure)
        .chain(bytes.iter().skip(1).map(|&b| {
            let arg = b >> 3;
            match b % 8 {
                0..=2 => Op::Load(arg % KEYS),
                3 => Op::Tick,
                4 => Op::Advance(arg % 16),
                5 => Op::Cancel(arg),
                6 if arg % 4 == 0 => Op::ClearAll,
                6 => Op::Clear(arg % KEYS),
                _ => Op::Prime(arg % KEYS),
            }
        }))
        .collect()
}

/// A waiter's answer, comparable between the real loader and the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Waiting,
    Value(u64),
    NotFound,
    BatchFailed,
    Other,
}

fn outcome(r: Result<u64, LoadError<String>>) -> Outcome {
    match r.map_err(LoadError::into_kind) {
        Ok(v) => Outcome::Value(v),
        Err(LoadErrorKind::NotFound) => Outcome::NotFound,
        Err(LoadErrorKind::Batch(_)) => Outcome::BatchFailed,
        Err(_) => Outcome::Other,
    }
}

/// What the batch function answers for `key` in a batch holding `keys`.
fn answer(keys: &[u64], key: u64) -> Outcome {
    if keys.contains(&POISON) {
        Outcome::BatchFailed
    } else if key % 5 == 4 {
        Outcome::NotFound
    } else {
        Outcome::Value(key * 10)
    }
}

#[derive(Debug)]
struct ModelBatch {
    keys: Vec<u64>,
    dispatched: bool,
    done_at: Option<u64>,
    done: bool,
}

#[derive(Debug)]
enum ModelWaiter {
    Resolved(Outcome),
    On(usize, u64),
    Cancelled,
}

/// The naive reference: plain vectors and maps, no concurrency.
#[derive(Debug, Default)]
struct Model {
    max_batch_size: usize,
    cache_on: bool,
    lru: bool,
    ttl: Option<u64>,
    now_ms: u64,
    batches: Vec<ModelBatch>,
    open: Option<usize>,
    /// key -> (its batch, whether that batch's answer is cached for it:
    /// false once cleared while the batch was pending, until loaded again).
    in_flight: HashMap<u64, (usize, bool)>,
    /// (key, value, stored at ms), front = the next to evict.
    cache: VecDeque<(u64, u64, u64)>,
    waiters: Vec<ModelWaiter>,
}

impl Model {
    fn expired(&self, stored: u64, now: u64) -> bool {
        self.ttl.is_some_and(|ttl| now >= stored + ttl)
    }

    /// A live entry for `key` at `now`; an expired one is dropped. With
    /// `touch` under LRU, the entry becomes the most recently used.
    fn cache_get(&mut self, key: u64, now: u64, touch: bool) -> Option<u64> {
        let pos = self.cache.iter().position(|e| e.0 == key)?;
        let (k, v, stored) = self.cache[pos];
        if self.expired(stored, now) {
            self.cache.remove(pos);
            return None;
        }
        if touch && self.lru {
            self.cache.remove(pos);
            self.cache.push_back((k, v, stored));
        }
        Some(v)
    }

    fn cache_insert(&mut self, key: u64, value: u64, now: u64) {
        self.cache.retain(|e| e.0 != key);
        self.cache.push_back((key, value, now));
        // Expired entries at the front go first, then the oldest past the bound.
        while self.cache.front().is_some_and(|e| self.expired(e.2, now)) {
            self.cache.pop_front();
        }
        while self.cache.len() > CACHE_ENTRIES {
            self.cache.pop_front();
        }
    }

    fn load(&mut self, key: u64) {
        if self.cache_on {
            if let Some(v) = self.cache_get(key, self.now_ms, true) {
                self.waiters.push(ModelWaiter::Resolved(Outcome::Value(v)));
                return;
            }
        }
        if let Some((b, cache)) = self.in_flight.get_mut(&key) {
            *cache = true;
            self.waiters.push(ModelWaiter::On(*b, key));
            return;
        }
        let b = match self.open {
            Some(b) => b,
            None => {
                self.batches.push(ModelBatch {
                    keys: Vec::new(),
                    dispatched: false,
                    done_at: None,
                    done: false,
                });
                self.batches.len() - 1
            }
        };
        self.batches[b].keys.push(key);
        self.in_flight.insert(key, (b, true));
        self.waiters.push(ModelWaiter::On(b, key));
        self.open = if self.batches[b].keys.len() >= self.max_batch_size {
            None // sealed: dispatched at the next turn
        } else {
            Some(b)
        };
    }

    fn tick(&mut self) {
        self.open = None;
        for b in &mut self.batches {
            if !b.dispatched {
                b.dispatched = true;
                b.done_at = Some(self.now_ms + LATENCY_MS);
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        self.tick();
        self.now_ms += ms;
        for id in 0..self.batches.len() {
            let b = &self.batches[id];
            if b.done || b.done_at.is_none_or(|t| t > self.now_ms) {
                continue;
            }
            self.batches[id].done = true;
            let done_at = self.batches[id].done_at.unwrap_or(self.now_ms);
            let keys = self.batches[id].keys.clone();
            for &k in &keys {
                if self.in_flight.get(&k).is_some_and(|&(b, _)| b == id) {
                    let (_, cache) = self.in_flight.remove(&k).unwrap_or_default();
                    if self.cache_on && cache {
                        if let Outcome::Value(v) = answer(&keys, k) {
                            self.cache_insert(k, v, done_at);
                        }
                    }
                }
            }
            for w in &mut self.waiters {
                if let ModelWaiter::On(wb, k) = *w {
                    if wb == id {
                        *w = ModelWaiter::Resolved(answer(&keys, k));
                    }
                }
            }
        }
    }

    fn is_pending(&self, b: usize) -> bool {
        !self.batches[b].dispatched
    }

    /// A pending key stays in its batch but loses its claim on the cache;
    /// a running key is forgotten.
    fn clear(&mut self, key: u64) {
        self.cache.retain(|e| e.0 != key);
        if let Some(&(b, _)) = self.in_flight.get(&key) {
            if self.is_pending(b) {
                self.in_flight.insert(key, (b, false));
            } else {
                self.in_flight.remove(&key);
            }
        }
    }

    fn clear_all(&mut self) {
        self.cache.clear();
        let pending: Vec<bool> = (0..self.batches.len())
            .map(|b| self.is_pending(b))
            .collect();
        self.in_flight.retain(|_, (b, cache)| {
            *cache = false;
            pending[*b]
        });
    }

    /// DataLoader: a key cached or being loaded is present; prime refuses it.
    fn prime(&mut self, key: u64) -> bool {
        let loading = self.in_flight.get(&key).is_some_and(|&(_, cache)| cache);
        let now = self.now_ms;
        if self.cache_on && self.cache_get(key, now, false).is_none() && !loading {
            self.cache_insert(key, 1000 + key, now);
            true
        } else {
            false
        }
    }

    fn outcome(&self, i: usize) -> Option<Outcome> {
        match self.waiters[i] {
            ModelWaiter::Resolved(o) => Some(o),
            ModelWaiter::On(..) => Some(Outcome::Waiting),
            ModelWaiter::Cancelled => None,
        }
    }
}

async fn turns() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

/// Runs `ops` against the real loader and the model; panics on the first
/// disagreement.
pub(crate) fn check(ops: &[Op]) {
    let config = match ops.first() {
        Some(Op::Configure(n, cache)) => Config {
            max_batch_size: 1 + usize::from(n % 4),
            cache: *cache,
            lru: n & 4 != 0,
            ttl: n & 8 != 0,
        },
        _ => Config {
            max_batch_size: 3,
            cache: false,
            lru: false,
            ttl: false,
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(run(config, ops));
}

async fn run(config: Config, ops: &[Op]) {
    let calls: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
    let c = Arc::clone(&calls);
    let mut builder = Loader::builder(move |keys: Vec<u64>| {
        c.lock().unwrap().push(keys.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(LATENCY_MS)).await;
            if keys.contains(&POISON) {
                return Err("poisoned batch".to_string());
            }
            Ok(keys
                .into_iter()
                .filter(|k| k % 5 != 4)
                .map(|k| (k, k * 10))
                .collect::<HashMap<_, _>>())
        }
    })
    .max_batch_size(config.max_batch_size);
    if config.cache {
        builder = builder.cache(CACHE_ENTRIES);
        if config.lru {
            builder = builder.cache_eviction(CacheEviction::Lru);
        }
        if config.ttl {
            builder = builder.cache_ttl(Duration::from_millis(TTL_MS));
        }
    }
    let loader = builder.build().expect("valid config");
    let mut model = Model {
        max_batch_size: config.max_batch_size,
        cache_on: config.cache,
        lru: config.lru,
        ttl: config.ttl.then_some(TTL_MS),
        ..Model::default()
    };
    let mut real: Vec<Option<Load<u64, u64, String>>> = Vec::new();
    let mut real_done: Vec<Option<Outcome>> = Vec::new();

    let waker = futures::task::noop_waker();
    let poll_all = |real: &mut Vec<Option<Load<u64, u64, String>>>,
                    real_done: &mut Vec<Option<Outcome>>| {
        let mut cx = Context::from_waker(&waker);
        for (slot, done) in real.iter_mut().zip(real_done.iter_mut()) {
            if let Some(load) = slot {
                match std::pin::Pin::new(load).poll(&mut cx) {
                    Poll::Ready(r) => {
                        *done = Some(outcome(r));
                        *slot = None;
                    }
                    Poll::Pending => *done = Some(Outcome::Waiting),
                }
            }
        }
    };

    let all = ops
        .iter()
        .copied()
        .chain([Op::Advance(255), Op::Advance(255)]);
    for (step, op) in all.enumerate() {
        match op {
            Op::Configure(..) => {}
            Op::Load(k) => {
                let k = u64::from(k);
                model.load(k);
                real.push(Some(loader.load(k)));
                real_done.push(None);
            }
            Op::Tick => {
                model.tick();
                turns().await;
            }
            Op::Advance(ms) => {
                let ms = u64::from(ms).min(4 * LATENCY_MS);
                model.advance(ms);
                turns().await;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                turns().await;
            }
            Op::Cancel(i) => {
                if !real.is_empty() {
                    let i = usize::from(i) % real.len();
                    real[i] = None;
                    real_done[i] = None;
                    model.waiters[i] = ModelWaiter::Cancelled;
                }
            }
            Op::Clear(k) => {
                model.clear(u64::from(k));
                loader.clear(&u64::from(k));
            }
            Op::ClearAll => {
                model.clear_all();
                loader.clear_all();
            }
            Op::Prime(k) => {
                let expected = model.prime(u64::from(k));
                let stored = loader.prime(u64::from(k), 1000 + u64::from(k));
                assert_eq!(stored, expected, "prime's answer at step {step} ({op:?})");
            }
        }
        poll_all(&mut real, &mut real_done);

        let dispatched: Vec<Vec<u64>> = model
            .batches
            .iter()
            .filter(|b| b.dispatched)
            .map(|b| b.keys.clone())
            .collect();
        assert_eq!(
            *calls.lock().unwrap(),
            dispatched,
            "batch calls differ after step {step} ({op:?})"
        );
        assert_eq!(
            loader.metrics().cache_entries,
            model.cache.len(),
            "cache entries held after step {step} ({op:?})"
        );
        for (i, done) in real_done.iter().enumerate() {
            if let Some(expected) = model.outcome(i) {
                let got = done.expect("live waiter was polled");
                if got == Outcome::Waiting || expected == Outcome::Waiting {
                    assert_eq!(got, expected, "waiter {i} after step {step} ({op:?})");
                } else {
                    assert_eq!(
                        got, expected,
                        "waiter {i} answer after step {step} ({op:?})"
                    );
                }
            }
        }
    }
    let m = loader.metrics();
    assert_eq!(m.batches_dispatched as usize, model.batches.len());
    assert_eq!(
        m.keys_loaded as usize,
        model.batches.iter().map(|b| b.keys.len()).sum::<usize>()
    );
    assert_eq!(
        (m.in_flight_batches, m.keys_in_flight, m.keys_waiting),
        (0, 0, 0)
    );
}
