//! The async shell: the `Loader` handle, its load futures and the batch task.
//!
//! Shape (tower's buffer, split per batch): the handle registers each key
//! with the shared state (the "message": a key plus the batch cell its
//! answer will land in), and the first key of a batch spawns that batch's
//! worker task. The worker waits out the window (one scheduler turn, or the
//! configured `delay`, or until the batch is full), takes the batch's keys,
//! waits for a batch slot, calls the batch function and publishes the
//! answer into the cell. One task per batch instead of one long-lived worker
//! means there is no shutdown protocol and batches run concurrently.
//!
//! Locking: two kinds of short critical sections, never nested and never
//! held across an `.await` — the loader's `inner` (collector + cache) and
//! each batch's `cell` (answer + wakers). Wakers are woken outside both.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::core::{Admission, BatchId, Cache, CacheEviction, Collector};
use super::error::{LoadError, LoadErrorKind};
use crate::histogram::{HistogramSnapshot, Recorder};
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{Arc, Mutex, StdArc};
use crate::{ConfigError, ConfigErrorKind};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type BatchFn<K, V, E> = Box<dyn Fn(Vec<K>) -> BoxFuture<Answer<K, V, E>> + Send + Sync>;

/// The largest `max_batch_size` accepted.
pub const MAX_BATCH_SIZE: usize = 1 << 20;
/// The longest `delay` accepted.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
const COMPONENT: &str = "loader";

/// What a batch answered, in the form the waiters read it.
pub(crate) enum Answer<K, V, E> {
    /// A map answer: keys missing from it are `NotFound`.
    Map(HashMap<K, V>),
    /// A per-key answer (from a `Vec<Result<V, E>>`).
    PerKey(HashMap<K, Result<V, StdArc<E>>>),
    /// The whole batch failed.
    Failed(LoadErrorKind<E>),
}

impl<K: Eq + Hash, V: Clone, E> Answer<K, V, E> {
    #[inline]
    fn get(&self, key: &K) -> Result<V, LoadErrorKind<E>> {
        match self {
            Answer::Map(map) => map.get(key).cloned().ok_or(LoadErrorKind::NotFound),
            Answer::PerKey(map) => match map.get(key) {
                Some(Ok(v)) => Ok(v.clone()),
                Some(Err(e)) => Err(LoadErrorKind::Key(StdArc::clone(e))),
                None => Err(LoadErrorKind::NotFound),
            },
            Answer::Failed(e) => Err(e.clone()),
        }
    }

    /// What the cache may keep for `key`: values always; `NotFound` and
    /// per-key errors only when asked; whole-batch failures never
    /// (DataLoader's rule: a failed dispatch is retried by the next load).
    fn cacheable(&self, key: &K, cache_errors: bool) -> Option<Result<V, LoadErrorKind<E>>> {
        match self.get(key) {
            Ok(v) => Some(Ok(v)),
            Err(e @ (LoadErrorKind::NotFound | LoadErrorKind::Key(_))) if cache_errors => {
                Some(Err(e))
            }
            Err(_) => None,
        }
    }
}

/// One batch's rendezvous: its answer and the wakers of everyone waiting.
struct Cell<K, V, E> {
    /// Set (under `state`'s lock, before any waiter is woken) once `answer`
    /// is in. Lets a re-polled waiter whose waker is already registered
    /// return `Pending` without taking the lock.
    answered: AtomicBool,
    state: Mutex<CellState<K, V, E>>,
}

struct CellState<K, V, E> {
    /// Full: the worker should take it now.
    sealed: bool,
    /// The batch's worker, while it waits out the window.
    worker: Option<Waker>,
    answer: Option<Answer<K, V, E>>,
    /// One slot per waiting load; `None` once woken or cancelled.
    waiters: Vec<Option<Waker>>,
}

impl<K, V, E> Cell<K, V, E> {
    fn new() -> Self {
        Self {
            answered: AtomicBool::new(false),
            state: Mutex::new(CellState {
                sealed: false,
                worker: None,
                answer: None,
                waiters: Vec::new(),
            }),
        }
    }

    fn seal(&self) {
        let worker = {
            let mut st = self.state.lock();
            st.sealed = true;
            st.worker.take()
        };
        if let Some(w) = worker {
            w.wake();
        }
    }

    fn publish(&self, answer: Answer<K, V, E>) {
        let waiters = {
            let mut st = self.state.lock();
            st.answer = Some(answer);
            self.answered.store(true, Ordering::Release);
            std::mem::take(&mut st.waiters)
        };
        for w in waiters.into_iter().flatten() {
            w.wake();
        }
    }
}

struct Config {
    name: StdArc<str>,
    max_batch_size: usize,
    delay: Option<Duration>,
    max_concurrent_batches: Option<usize>,
    cache_max_entries: Option<usize>,
    cache_errors: bool,
    cache_eviction: CacheEviction,
    cache_ttl: Option<Duration>,
}

/// Maps each key to the key it is cached and fetched under.
type CacheKeyFn<K> = Box<dyn Fn(&K) -> K + Send + Sync>;

struct Inner<K, V, E> {
    collector: Collector<K, Arc<Cell<K, V, E>>>,
    cache: Option<Cache<K, Result<V, LoadErrorKind<E>>>>,
    /// Per-key counters, kept under the lock every key takes anyway (one
    /// atomic read-modify-write less per key).
    keys_requested: u64,
    cache_hits: u64,
    deduplicated: u64,
}

#[derive(Default)]
struct Counters {
    batches_dispatched: AtomicU64,
    keys_loaded: AtomicU64,
    failed_batches: AtomicU64,
    in_flight_batches: AtomicUsize,
}

struct Shared<K, V, E> {
    inner: Mutex<Inner<K, V, E>>,
    batch_fn: BatchFn<K, V, E>,
    cache_key: Option<CacheKeyFn<K>>,
    config: Config,
    slots: Option<BatchSlots>,
    counters: Counters,
    /// Keys per batch call.
    batch_size: Recorder,
    /// Time each batch call took, from dispatch to its answer.
    batch_latency: Recorder,
    #[cfg(not(loom))]
    runtime: Option<tokio::runtime::Handle>,
}

/// Bounds the batches running at once: the crate's fair FIFO semaphore, so
/// batches start in the order their windows closed.
type BatchSlots = crate::semaphore::Semaphore;

/// A DataLoader: turns concurrent lookups by key into few calls of one
/// batch function.
///
/// Keys requested in the same scheduler turn (or within
/// [`delay`](LoaderBuilder::delay)) go into one call of the batch function;
/// a batch is sent early once [`max_batch_size`](LoaderBuilder::max_batch_size)
/// keys wait. A key already waiting or being fetched is never fetched twice:
/// its second caller joins the first one's batch, with or without a cache
/// (DataLoader with `cache: false` fetches it again).
///
/// Batches run on their own Tokio task: cancelling the load that started a
/// batch does not cancel it for the others. Clones share one loader.
///
/// # Memory
///
/// The open batch holds at most `max_batch_size` keys; each waiting load
/// holds one waker slot in its batch; the optional cache holds at most
/// `max_entries` answers (evicting the oldest first, or the least recently
/// used with [`CacheEviction::Lru`]; expired entries go first). With
/// `max_concurrent_batches`, batches waiting for a slot keep their keys (one
/// entry per distinct key, held for callers already waiting on them).
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use flowguard::batch::Loader;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let users = Loader::new(|ids: Vec<u32>| async move {
///     // One query for all ids: SELECT ... WHERE id IN (...)
///     Ok::<_, std::io::Error>(ids.into_iter().map(|id| (id, format!("user {id}"))).collect::<HashMap<_, _>>())
/// });
/// let (a, b) = tokio::join!(users.load(1), users.load(2));
/// assert_eq!(a.unwrap(), "user 1");
/// assert_eq!(b.unwrap(), "user 2");
/// assert_eq!(users.metrics().batches_dispatched, 1);
/// # }
/// ```
pub struct Loader<K, V, E> {
    shared: Arc<Shared<K, V, E>>,
}

impl<K, V, E> Clone for Loader<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, V, E> fmt::Debug for Loader<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loader")
            .field("name", &self.shared.config.name)
            .field("max_batch_size", &self.shared.config.max_batch_size)
            .field("delay", &self.shared.config.delay)
            .field(
                "max_concurrent_batches",
                &self.shared.config.max_concurrent_batches,
            )
            .field("cache_max_entries", &self.shared.config.cache_max_entries)
            .finish_non_exhaustive()
    }
}

/// A snapshot of a loader's counters, as plain numbers.
///
/// # Examples
///
/// ```
/// # use std::collections::HashMap;
/// # use flowguard::batch::Loader;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let loader = Loader::new(|keys: Vec<u8>| async move {
///     Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
/// });
/// let _ = tokio::join!(loader.load(1), loader.load(1), loader.load(2));
/// let m = loader.metrics();
/// assert_eq!((m.keys_requested, m.deduplicated, m.keys_loaded), (3, 1, 2));
/// assert_eq!(m.mean_batch_size(), 2.0);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LoaderMetrics {
    /// The loader's [`name`](LoaderBuilder::name), to label exported metrics.
    pub name: StdArc<str>,
    /// Calls of the batch function started.
    pub batches_dispatched: u64,
    /// Keys asked for by callers: each `load`, each key of a `load_many`,
    /// and each [`try_load`](Loader::try_load), hit or miss (a `try_load`
    /// that misses and the `load` after it count twice).
    /// `cache_hits / keys_requested` is the cache's hit ratio.
    pub keys_requested: u64,
    /// Keys handed to the batch function (after de-duplication).
    pub keys_loaded: u64,
    /// Keys answered from the cache, by `load`, `load_many` or `try_load`
    /// (each also counted in `keys_requested`).
    pub cache_hits: u64,
    /// Keys that joined a batch already holding them (waiting or being
    /// fetched; with or without a cache).
    pub deduplicated: u64,
    /// Batches that failed as a whole (error, panic or no runtime).
    pub failed_batches: u64,
    /// Batches whose function is running now.
    pub in_flight_batches: usize,
    /// Keys in the batch still collecting.
    pub keys_waiting: usize,
    /// Distinct keys in batches not yet answered (collecting, waiting for a
    /// slot, or running).
    pub keys_in_flight: usize,
    /// Entries in the cache.
    pub cache_entries: usize,
    /// Cache entries evicted to keep `max_entries`.
    pub cache_evictions: u64,
    /// Cache entries dropped because their [time to live](LoaderBuilder::cache_ttl) ran out.
    pub cache_expirations: u64,
    /// Keys per batch call (after de-duplication), one value per batch
    /// dispatched. Empty when built with
    /// [`histograms(false)`](LoaderBuilder::histograms).
    pub batch_size: HistogramSnapshot,
    /// How long batch calls took, from dispatch to answer (nanoseconds),
    /// of the batches that answered (not those that panicked or were cut
    /// off by a runtime shutdown).
    pub batch_latency: HistogramSnapshot,
}

impl LoaderMetrics {
    /// Keys per batch call so far (0 before the first batch).
    pub fn mean_batch_size(&self) -> f64 {
        if self.batches_dispatched == 0 {
            0.0
        } else {
            self.keys_loaded as f64 / self.batches_dispatched as f64
        }
    }
}

/// Configures a [`Loader`]; made by [`Loader::builder`] or [`Loader::builder_vec`].
///
/// Defaults: `max_batch_size` 1000, batching within one scheduler turn (no
/// `delay`), unbounded concurrent batches, no cache. DataLoader's differ
/// (`maxBatchSize` unbounded, cache on and unbounded): see the
/// [module docs](crate::batch) for why.
///
/// # Examples
///
/// ```
/// use std::{collections::HashMap, time::Duration};
/// use flowguard::batch::Loader;
///
/// let loader = Loader::builder(|keys: Vec<u64>| async move {
///     Ok::<_, String>(keys.into_iter().map(|k| (k, k * 2)).collect::<HashMap<_, _>>())
/// })
/// .max_batch_size(100)
/// .delay(Duration::from_millis(2))
/// .max_concurrent_batches(4)
/// .cache(10_000)
/// .build()
/// .unwrap();
/// # let _ = loader;
/// ```
pub struct LoaderBuilder<K, V, E> {
    batch_fn: BatchFn<K, V, E>,
    name: String,
    max_batch_size: usize,
    delay: Option<Duration>,
    max_concurrent_batches: Option<usize>,
    cache_max_entries: Option<usize>,
    cache_errors: bool,
    cache_eviction: Option<CacheEviction>,
    cache_ttl: Option<Duration>,
    cache_key: Option<CacheKeyFn<K>>,
    histograms: bool,
    /// Whether `name` was set (only named loaders are exported).
    named: bool,
}

impl<K, V, E> fmt::Debug for LoaderBuilder<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoaderBuilder")
            .field("name", &self.name)
            .field("max_batch_size", &self.max_batch_size)
            .field("delay", &self.delay)
            .field("max_concurrent_batches", &self.max_concurrent_batches)
            .field("cache_max_entries", &self.cache_max_entries)
            .field("cache_errors", &self.cache_errors)
            .field("cache_eviction", &self.cache_eviction)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_key", &self.cache_key.is_some())
            .finish_non_exhaustive()
    }
}

impl<K, V, E> LoaderBuilder<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    fn with_fn(batch_fn: BatchFn<K, V, E>) -> Self {
        Self {
            batch_fn,
            name: COMPONENT.to_owned(),
            max_batch_size: 1000,
            delay: None,
            max_concurrent_batches: None,
            cache_max_entries: None,
            cache_errors: false,
            cache_eviction: None,
            cache_ttl: None,
            cache_key: None,
            histograms: true,
            named: false,
        }
    }

    /// A name for this loader: every [`LoadError`] it answers carries it
    /// (and prints it first), as do [`LoaderMetrics::name`] and its
    /// `tracing` events. Default `"loader"`. With the `metrics` feature,
    /// a named loader's metrics are published under it (see
    /// `flowguard::metrics`); unnamed loaders are not.
    ///
    /// # Examples
    ///
    /// See [`LoadError`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self.named = true;
        self
    }

    /// Whether to keep the [`batch_size`](LoaderMetrics::batch_size) and
    /// [`batch_latency`](LoaderMetrics::batch_latency) histograms (default
    /// on). Off, a batch reads no clock for them.
    pub fn histograms(mut self, on: bool) -> Self {
        self.histograms = on;
        self
    }

    /// Sends a batch as soon as it holds this many keys (1 to [`MAX_BATCH_SIZE`]).
    /// Default 1000, where DataLoader's `maxBatchSize` is unbounded: a
    /// backend bounds one request (SQL `IN` lists, bind parameters, body
    /// sizes).
    pub fn max_batch_size(mut self, max_batch_size: usize) -> Self {
        self.max_batch_size = max_batch_size;
        self
    }

    /// Waits this long after a batch's first key before sending it (at most
    /// [`MAX_DELAY`]), collecting more keys. Without it, a batch collects the
    /// keys requested in the current scheduler turn.
    ///
    /// The window includes its last instant: keys requested when the delay
    /// ends (in that scheduler turn, e.g. by a task whose timer fired at the
    /// same instant) join the batch.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Runs at most this many batch calls at once (at least 1); further
    /// batches wait, first come first served. Unbounded if not set.
    pub fn max_concurrent_batches(mut self, max_concurrent_batches: usize) -> Self {
        self.max_concurrent_batches = Some(max_concurrent_batches);
        self
    }

    /// Caches answers, keeping at most `max_entries` (at least 1), the
    /// oldest evicted first (see [`cache_eviction`](Self::cache_eviction)
    /// for LRU and [`cache_ttl`](Self::cache_ttl) for expiry).
    ///
    /// Off by default, where DataLoader's cache is on and unbounded: a
    /// DataLoader lives for one request, a flowguard loader is meant to be
    /// long-lived and shared, and an unbounded cache on by default would
    /// then be a leak serving stale answers. De-duplication of keys waiting
    /// or being fetched needs no cache. A cached key answers on the load's
    /// first poll, without waiting for a batch (DataLoader resolves it when
    /// the current batch is dispatched).
    ///
    /// Cached: every value; a whole-batch failure never (the next load
    /// retries); `NotFound` and per-key errors only with
    /// [`cache_errors`](Self::cache_errors). An answer is cached only if its
    /// key was not [cleared](Loader::clear) since its last load, so it never
    /// overwrites a value [primed](Loader::prime) after a clear.
    pub fn cache(mut self, max_entries: usize) -> Self {
        self.cache_max_entries = Some(max_entries);
        self
    }

    /// Also caches `NotFound` and per-key errors (needs [`cache`](Self::cache)).
    pub fn cache_errors(mut self, cache_errors: bool) -> Self {
        self.cache_errors = cache_errors;
        self
    }

    /// Which entry a full cache drops (needs [`cache`](Self::cache)):
    /// [`CacheEviction::Fifo`] (the default) or [`CacheEviction::Lru`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::collections::HashMap;
    /// use flowguard::batch::{CacheEviction, Loader};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let loader = Loader::builder(|keys: Vec<u32>| async move {
    ///     Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    /// })
    /// .cache(2)
    /// .cache_eviction(CacheEviction::Lru)
    /// .build()
    /// .unwrap();
    /// loader.prime(1, 10);
    /// loader.prime(2, 20);
    /// loader.load(1).await.unwrap(); // a hit: 1 is now the most recently used
    /// loader.prime(3, 30); // evicts 2, the least recently used
    /// assert!(loader.try_load(&1).is_some());
    /// assert!(loader.try_load(&2).is_none());
    /// # }
    /// ```
    pub fn cache_eviction(mut self, eviction: CacheEviction) -> Self {
        self.cache_eviction = Some(eviction);
        self
    }

    /// Cached answers (values, primed entries and cached errors alike)
    /// expire `ttl` after they were stored: from then on a load fetches the
    /// key again. Hits do not extend the life. Needs [`cache`](Self::cache).
    /// Time is the Tokio clock, so a paused test clock governs it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::collections::HashMap;
    /// use flowguard::batch::Loader;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let loader = Loader::builder(|keys: Vec<u32>| async move {
    ///     Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    /// })
    /// .cache(100)
    /// .cache_ttl(Duration::from_secs(60))
    /// .build()
    /// .unwrap();
    /// loader.load(1).await.unwrap();
    /// tokio::time::advance(Duration::from_secs(59)).await;
    /// assert!(loader.try_load(&1).is_some());
    /// tokio::time::advance(Duration::from_secs(1)).await;
    /// assert!(loader.try_load(&1).is_none()); // expired: the next load fetches
    /// assert_eq!(loader.metrics().cache_expirations, 1);
    /// # }
    /// ```
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = Some(ttl);
        self
    }

    /// Maps every key to the key it is known by (DataLoader's
    /// `cacheKeyFn`): two keys with the same cache key are one key, fetched
    /// once, cached once, de-duplicated against each other. Every method
    /// that takes a key (`load`, `load_many`, `try_load`, `prime`,
    /// `prime_error`, `clear`) maps it first.
    ///
    /// Unlike DataLoader, which hands the batch function the first caller's
    /// original key, the batch function here receives the mapped keys and
    /// answers for them: a Rust key already has value equality, so the
    /// mapping's job is normalising (case, whitespace, fields that do not
    /// change the answer), and the keys the function sees are then the
    /// ones its answer is looked up by.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::collections::HashMap;
    /// use flowguard::batch::Loader;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let by_email = Loader::builder(|emails: Vec<String>| async move {
    ///     assert_eq!(emails, ["ada@example.com"]); // one fetch for both spellings
    ///     Ok::<_, ()>(emails.into_iter().map(|e| (e, 7)).collect::<HashMap<_, _>>())
    /// })
    /// .cache_key(|email: &String| email.trim().to_lowercase())
    /// .build()
    /// .unwrap();
    /// let (a, b) = tokio::join!(
    ///     by_email.load("Ada@Example.com".into()),
    ///     by_email.load(" ada@example.com".into()),
    /// );
    /// assert_eq!((a.unwrap(), b.unwrap()), (7, 7));
    /// assert_eq!(by_email.metrics().deduplicated, 1);
    /// # }
    /// ```
    pub fn cache_key(mut self, cache_key: impl Fn(&K) -> K + Send + Sync + 'static) -> Self {
        self.cache_key = Some(Box::new(cache_key));
        self
    }

    /// Builds the loader.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `max_batch_size` zero or above
    /// [`MAX_BATCH_SIZE`]; `delay` above [`MAX_DELAY`];
    /// `max_concurrent_batches` zero or above
    /// [`semaphore::MAX_PERMITS`](crate::semaphore::MAX_PERMITS);
    /// `max_entries` zero; `cache_ttl` zero; `cache_errors`,
    /// `cache_eviction` or `cache_ttl` without a cache.
    pub fn build(self) -> Result<Loader<K, V, E>, ConfigError> {
        if self.max_batch_size == 0 {
            return Err(ConfigError::new(
                COMPONENT,
                "max_batch_size",
                ConfigErrorKind::Zero,
                "must be at least 1, got 0",
            ));
        }
        if self.max_batch_size > MAX_BATCH_SIZE {
            return Err(ConfigError::new(
                COMPONENT,
                "max_batch_size",
                ConfigErrorKind::TooLarge,
                format!(
                    "must be at most {MAX_BATCH_SIZE}, got {}",
                    self.max_batch_size
                ),
            ));
        }
        if let Some(d) = self.delay {
            if d > MAX_DELAY {
                return Err(ConfigError::new(
                    COMPONENT,
                    "delay",
                    ConfigErrorKind::TooLarge,
                    format!("must be at most {MAX_DELAY:?}, got {d:?}"),
                ));
            }
        }
        if let Some(n) = self.max_concurrent_batches {
            if n == 0 {
                return Err(ConfigError::new(
                    COMPONENT,
                    "max_concurrent_batches",
                    ConfigErrorKind::Zero,
                    "must be at least 1, got 0",
                ));
            }
            if n > crate::semaphore::MAX_PERMITS {
                return Err(ConfigError::new(
                    COMPONENT,
                    "max_concurrent_batches",
                    ConfigErrorKind::TooLarge,
                    format!("must be at most {}, got {n}", crate::semaphore::MAX_PERMITS),
                ));
            }
        }
        if self.cache_max_entries == Some(0) {
            return Err(ConfigError::new(
                COMPONENT,
                "max_entries",
                ConfigErrorKind::Zero,
                "must be at least 1, got 0",
            ));
        }
        for (set, field) in [
            (self.cache_errors, "cache_errors"),
            (self.cache_eviction.is_some(), "cache_eviction"),
            (self.cache_ttl.is_some(), "cache_ttl"),
        ] {
            if set && self.cache_max_entries.is_none() {
                return Err(ConfigError::new(
                    COMPONENT,
                    field,
                    ConfigErrorKind::Conflict,
                    "needs a cache: call cache(max_entries) too",
                ));
            }
        }
        if self.cache_ttl == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                COMPONENT,
                "cache_ttl",
                ConfigErrorKind::Zero,
                "must be greater than zero (leave it unset for no expiry)",
            ));
        }
        #[cfg(all(feature = "metrics", not(loom)))]
        let named = self.named;
        let loader = self.assemble();
        #[cfg(all(feature = "metrics", not(loom)))]
        if named {
            loader.export();
        }
        Ok(loader)
    }

    /// Builds without validating: only for settings known to be valid.
    fn assemble(self) -> Loader<K, V, E> {
        let config = Config {
            name: StdArc::from(self.name),
            max_batch_size: self.max_batch_size,
            delay: self.delay,
            max_concurrent_batches: self.max_concurrent_batches,
            cache_max_entries: self.cache_max_entries,
            cache_errors: self.cache_errors,
            cache_eviction: self.cache_eviction.unwrap_or_default(),
            cache_ttl: self.cache_ttl,
        };
        Loader {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    collector: Collector::new(config.max_batch_size),
                    cache: config
                        .cache_max_entries
                        .map(|n| Cache::new(n, config.cache_eviction, config.cache_ttl)),
                    keys_requested: 0,
                    cache_hits: 0,
                    deduplicated: 0,
                }),
                batch_fn: self.batch_fn,
                cache_key: self.cache_key,
                slots: config.max_concurrent_batches.map(BatchSlots::new),
                config,
                counters: Counters::default(),
                batch_size: Recorder::new(self.histograms),
                batch_latency: Recorder::new(self.histograms),
                #[cfg(not(loom))]
                runtime: tokio::runtime::Handle::try_current().ok(),
            }),
        }
    }
}

impl<K, V, E> Loader<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// A loader with the default settings (see [`LoaderBuilder`]) around a
    /// batch function that answers a map; keys it leaves out are
    /// [`LoadErrorKind::NotFound`].
    ///
    /// # Examples
    ///
    /// See [`Loader`].
    pub fn new<F, Fut>(batch_fn: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<K, V>, E>> + Send + 'static,
    {
        // The defaults pass every check in `build`.
        Self::builder(batch_fn).assemble()
    }

    /// A builder around a batch function that answers a map.
    ///
    /// # Examples
    ///
    /// See [`LoaderBuilder`].
    pub fn builder<F, Fut>(batch_fn: F) -> LoaderBuilder<K, V, E>
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<K, V>, E>> + Send + 'static,
    {
        LoaderBuilder::with_fn(Box::new(move |keys| {
            let fut = batch_fn(keys);
            Box::pin(async move {
                match fut.await {
                    Ok(map) => Answer::Map(map),
                    Err(e) => Answer::Failed(LoadErrorKind::Batch(StdArc::new(e))),
                }
            }) as BoxFuture<_>
        }))
    }

    /// A builder around a batch function that answers one `Result` per key,
    /// in the order of the keys it was given (graphql/dataloader's shape).
    ///
    /// A per-key `Err` is [`LoadErrorKind::Key`] for that key only; an
    /// answer of the wrong length fails every key with
    /// [`LoadErrorKind::WrongLength`].
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::batch::{LoadErrorKind, Loader};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let loader = Loader::builder_vec(|keys: Vec<i32>| async move {
    ///     Ok::<_, String>(
    ///         keys.iter()
    ///             .map(|&k| if k >= 0 { Ok(k * 10) } else { Err(format!("negative {k}")) })
    ///             .collect(),
    ///     )
    /// })
    /// .build()
    /// .unwrap();
    /// let (ok, bad) = tokio::join!(loader.load(4), loader.load(-1));
    /// assert_eq!(ok.unwrap(), 40);
    /// assert!(matches!(bad.unwrap_err().kind(), LoadErrorKind::Key(e) if **e == "negative -1"));
    /// # }
    /// ```
    pub fn builder_vec<F, Fut>(batch_fn: F) -> LoaderBuilder<K, V, E>
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Result<V, E>>, E>> + Send + 'static,
    {
        LoaderBuilder::with_fn(Box::new(move |keys: Vec<K>| {
            let expected = keys.len();
            let fut = batch_fn(keys.clone());
            Box::pin(async move {
                match fut.await {
                    Ok(values) if values.len() == expected => Answer::PerKey(
                        keys.into_iter()
                            .zip(values)
                            .map(|(k, r)| (k, r.map_err(StdArc::new)))
                            .collect(),
                    ),
                    Ok(values) => Answer::Failed(LoadErrorKind::WrongLength {
                        expected,
                        actual: values.len(),
                    }),
                    Err(e) => Answer::Failed(LoadErrorKind::Batch(StdArc::new(e))),
                }
            }) as BoxFuture<_>
        }))
    }

    /// Loads one key, batched with the other keys requested meanwhile.
    ///
    /// Nothing happens until the future is first polled. A key found in the
    /// [cache](LoaderBuilder::cache) answers on that first poll (DataLoader
    /// answers a cached load only when the current batch is dispatched).
    ///
    /// # Errors
    ///
    /// A [`LoadError`] naming this loader, of kind
    /// [`NotFound`](LoadErrorKind::NotFound) if the answer lacks the key,
    /// [`Batch`](LoadErrorKind::Batch) if the batch failed,
    /// [`Key`](LoadErrorKind::Key) / [`WrongLength`](LoadErrorKind::WrongLength)
    /// from a [`Vec` answer](Self::builder_vec) (or a
    /// [primed error](Self::prime_error)), [`Aborted`](LoadErrorKind::Aborted)
    /// if the batch function panicked, [`NoRuntime`](LoadErrorKind::NoRuntime)
    /// if polled outside a Tokio runtime.
    ///
    /// # Panics
    ///
    /// Only if the [`cache_key`](LoaderBuilder::cache_key) function panics:
    /// it runs here, in the caller (as DataLoader's `cacheKeyFn` throws in
    /// `load`). Never otherwise.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives up only this caller's interest: the batch
    /// still runs for every other caller (and fills the cache).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::collections::HashMap;
    /// # use flowguard::batch::Loader;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let loader = Loader::new(|keys: Vec<u32>| async move {
    ///     Ok::<_, ()>(keys.into_iter().filter(|k| k % 2 == 0).map(|k| (k, k)).collect::<HashMap<_, _>>())
    /// });
    /// assert_eq!(loader.load(2).await.unwrap(), 2);
    /// assert!(loader.load(3).await.unwrap_err().is_not_found());
    /// # }
    /// ```
    pub fn load(&self, key: K) -> Load<K, V, E> {
        Load {
            state: LoadState::Start(self.shared.cache_key(key)),
            shared: Arc::clone(&self.shared),
        }
    }

    /// Loads several keys, answering in their order.
    ///
    /// # Errors
    ///
    /// Per key, as [`load`](Self::load).
    ///
    /// # Panics
    ///
    /// As [`load`](Self::load): only if the `cache_key` function panics.
    ///
    /// # Cancel safety
    ///
    /// As [`load`](Self::load), for each key.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::collections::HashMap;
    /// # use flowguard::batch::Loader;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let loader = Loader::new(|keys: Vec<u32>| async move {
    ///     Ok::<_, ()>(keys.into_iter().map(|k| (k, k + 1)).collect::<HashMap<_, _>>())
    /// });
    /// let values: Vec<u32> = loader.load_many([1, 2, 3]).await.into_iter().map(Result::unwrap).collect();
    /// assert_eq!(values, [2, 3, 4]);
    /// assert_eq!(loader.metrics().batches_dispatched, 1);
    /// # }
    /// ```
    pub fn load_many(&self, keys: impl IntoIterator<Item = K>) -> LoadMany<K, V, E> {
        let loads: Vec<_> = keys.into_iter().map(|k| self.load(k)).collect();
        LoadMany {
            outputs: loads.iter().map(|_| None).collect(),
            loads,
        }
    }

    /// Answers from the cache alone: `None` if the key is not cached (never
    /// starts a fetch). Counted in [`keys_requested`](LoaderMetrics::keys_requested),
    /// and in [`cache_hits`](LoaderMetrics::cache_hits) when it answers.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::collections::HashMap;
    /// # use flowguard::batch::Loader;
    /// let loader = Loader::builder(|keys: Vec<u32>| async move {
    ///     Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    /// })
    /// .cache(100)
    /// .build()
    /// .unwrap();
    /// assert!(loader.try_load(&7).is_none());
    /// loader.prime(7, 70);
    /// assert_eq!(loader.try_load(&7).unwrap().unwrap(), 70);
    /// ```
    pub fn try_load(&self, key: &K) -> Option<Result<V, LoadError<E>>> {
        let key = self.shared.cache_key_of(key);
        let mut inner = self.shared.inner.lock();
        // Counted as `register` counts a load's key: every lookup, so that
        // `cache_hits / keys_requested` stays a ratio.
        inner.keys_requested += 1;
        let now = self.shared.now();
        let hit = inner.cache.as_mut()?.get(&key, now)?.clone();
        inner.cache_hits += 1;
        drop(inner);
        Some(hit.map_err(|kind| self.shared.error(kind)))
    }

    /// Puts `value` in the cache for `key` unless the key is present: cached
    /// already, or being loaded (in a batch that is collecting, waiting for
    /// a slot or running). As graphql/dataloader's `prime`, which finds the
    /// promise a load cached at load time: an in-flight key counts as
    /// present, and its batch's answer is what gets cached.
    ///
    /// Returns `true` if the value was stored, `false` if the key was present
    /// or the loader has no cache (then nothing changed).
    ///
    /// To overwrite, [`clear`](Self::clear) first: `clear(k)` then
    /// `prime(k, v)` always stores `v` (with a cache), and a fetch of `k`
    /// that was in flight at the `clear` never overwrites it when it lands:
    /// the later write wins. The loads already waiting on that fetch still
    /// get its answer.
    ///
    /// # Examples
    ///
    /// See [`try_load`](Self::try_load), and:
    ///
    /// ```
    /// # use std::collections::HashMap;
    /// # use flowguard::batch::Loader;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let loader = Loader::builder(|keys: Vec<u32>| async move {
    ///     Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    /// })
    /// .cache(100)
    /// .build()
    /// .unwrap();
    /// let load = loader.load(1);
    /// let (fetched, primed) = tokio::join!(load, async {
    ///     let refused = loader.prime(1, 10); // 1 is being loaded
    ///     loader.clear(&1);
    ///     (refused, loader.prime(1, 10)) // now stored
    /// });
    /// assert_eq!(fetched.unwrap(), 1); // the waiting load gets its fetch
    /// assert_eq!(primed, (false, true));
    /// assert_eq!(loader.try_load(&1).unwrap().unwrap(), 10); // the later write
    /// # }
    /// ```
    pub fn prime(&self, key: K, value: V) -> bool {
        self.shared.prime(key, Ok(value))
    }

    /// [`prime`](Self::prime) with an error (DataLoader's `prime(key,
    /// error)`): loads of `key` answer [`LoadErrorKind::Key`] with `error`
    /// from the cache until it is [cleared](Self::clear) (or evicted, or
    /// expires), without calling the batch function. Cached whether or not
    /// [`cache_errors`](LoaderBuilder::cache_errors) is on: priming is an
    /// explicit request. Same presence rules and return value as `prime`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::collections::HashMap;
    /// use flowguard::batch::{LoadErrorKind, Loader};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let users = Loader::builder(|ids: Vec<u32>| async move {
    ///     Ok::<_, String>(ids.into_iter().map(|id| (id, "someone")).collect::<HashMap<_, _>>())
    /// })
    /// .cache(100)
    /// .build()
    /// .unwrap();
    /// // Known to be banned: answer without asking the database.
    /// assert!(users.prime_error(13, "account suspended".to_owned()));
    /// let err = users.load(13).await.unwrap_err();
    /// assert!(matches!(err.kind(), LoadErrorKind::Key(e) if **e == "account suspended"));
    /// assert_eq!(users.metrics().batches_dispatched, 0);
    /// # }
    /// ```
    pub fn prime_error(&self, key: K, error: E) -> bool {
        self.shared
            .prime(key, Err(LoadErrorKind::Key(StdArc::new(error))))
    }

    /// The loader's [`name`](LoaderBuilder::name).
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Forgets `key`: drops its cached answer, and makes sure no fetch of
    /// `key` already in flight writes its answer to the cache. Returns
    /// whether a cached answer was dropped.
    ///
    /// Loads already waiting on an in-flight fetch of `key` still get its
    /// answer. What happens to that fetch depends on how far its batch got:
    ///
    /// - **Dispatched** (the batch's window has closed: it waits for a
    ///   [slot](LoaderBuilder::max_concurrent_batches) or its function runs):
    ///   `key` is forgotten, and the next load of `key` starts a fresh fetch
    ///   in a new batch.
    /// - **Not dispatched yet** (the batch is still collecting, or full and
    ///   about to be taken by its task): `key` stays in that batch, whose
    ///   fetch has not happened and so cannot be stale. A later load of `key`
    ///   joins it (no second fetch), and only then is its answer cached for
    ///   `key` again.
    ///
    /// So `clear(k)` followed by [`prime`](Self::prime)`(k, v)` stores `v`,
    /// whatever the stage of a fetch of `k`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::collections::HashMap;
    /// # use flowguard::batch::Loader;
    /// let loader = Loader::builder(|keys: Vec<u32>| async move {
    ///     Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    /// })
    /// .cache(100)
    /// .build()
    /// .unwrap();
    /// loader.prime(1, 10);
    /// assert!(loader.clear(&1));
    /// assert!(loader.try_load(&1).is_none());
    /// ```
    pub fn clear(&self, key: &K) -> bool {
        let key = self.shared.cache_key_of(key);
        let mut inner = self.shared.inner.lock();
        inner.collector.clear(&key);
        inner.cache.as_mut().is_some_and(|c| c.remove(&key))
    }

    /// [`clear`](Self::clear) for every key.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::collections::HashMap;
    /// # use flowguard::batch::Loader;
    /// let loader = Loader::builder(|keys: Vec<u32>| async move {
    ///     Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    /// })
    /// .cache(100)
    /// .build()
    /// .unwrap();
    /// loader.prime(1, 10);
    /// loader.clear_all();
    /// assert_eq!(loader.metrics().cache_entries, 0);
    /// ```
    pub fn clear_all(&self) {
        let mut inner = self.shared.inner.lock();
        inner.collector.clear_all();
        if let Some(cache) = inner.cache.as_mut() {
            cache.clear();
        }
        drop(inner);
        tracing::debug!(loader = %self.shared.config.name, "loader cache cleared");
    }

    /// Publishes a named loader's metrics (feature `metrics`).
    #[cfg(all(feature = "metrics", not(loom)))]
    fn export(&self) {
        let h = crate::metrics::Handles::new("loader", &self.shared.config.name);
        self.shared.batch_size.export_to(h.histogram("batch_size"));
        self.shared
            .batch_latency
            .export_to(h.histogram("batch_seconds"));
        let (batches, requested) = (
            h.counter("batches_total"),
            h.counter("keys_requested_total"),
        );
        let (loaded, hits) = (
            h.counter("keys_loaded_total"),
            h.counter("cache_hits_total"),
        );
        let (failed, in_flight) = (
            h.counter("failed_batches_total"),
            h.gauge("in_flight_batches"),
        );
        let weak = Arc::downgrade(&self.shared);
        crate::metrics::register(move || {
            let Some(shared) = weak.upgrade() else {
                return false;
            };
            let c = &shared.counters;
            batches.absolute(c.batches_dispatched.load(Ordering::Relaxed));
            loaded.absolute(c.keys_loaded.load(Ordering::Relaxed));
            failed.absolute(c.failed_batches.load(Ordering::Relaxed));
            in_flight.set(c.in_flight_batches.load(Ordering::Relaxed) as f64);
            let inner = shared.inner.lock();
            requested.absolute(inner.keys_requested);
            hits.absolute(inner.cache_hits);
            true
        });
    }

    /// A snapshot of the counters.
    ///
    /// # Examples
    ///
    /// See [`LoaderMetrics`].
    pub fn metrics(&self) -> LoaderMetrics {
        let c = &self.shared.counters;
        let (keys_requested, cache_hits, deduplicated);
        let (keys_waiting, keys_in_flight, cache_entries, cache_evictions, cache_expirations) = {
            let inner = self.shared.inner.lock();
            (keys_requested, cache_hits, deduplicated) =
                (inner.keys_requested, inner.cache_hits, inner.deduplicated);
            (
                inner.collector.open_len(),
                inner.collector.keys_in_flight(),
                inner.cache.as_ref().map_or(0, Cache::len),
                inner.cache.as_ref().map_or(0, Cache::evictions),
                inner.cache.as_ref().map_or(0, Cache::expirations),
            )
        };
        LoaderMetrics {
            name: StdArc::clone(&self.shared.config.name),
            batches_dispatched: c.batches_dispatched.load(Ordering::Relaxed),
            keys_requested,
            keys_loaded: c.keys_loaded.load(Ordering::Relaxed),
            cache_hits,
            deduplicated,
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
            in_flight_batches: c.in_flight_batches.load(Ordering::Relaxed),
            keys_waiting,
            keys_in_flight,
            cache_entries,
            cache_evictions,
            cache_expirations,
            batch_size: self.shared.batch_size.snapshot(),
            batch_latency: self.shared.batch_latency.snapshot(),
        }
    }
}

/// What a load's first poll found.
enum Registered<K, V, E> {
    Cached(Result<V, LoadErrorKind<E>>),
    Waiting(Arc<Cell<K, V, E>>),
}

impl<K, V, E> Shared<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// The key `key` is cached and fetched under.
    fn cache_key(&self, key: K) -> K {
        match &self.cache_key {
            Some(f) => f(&key),
            None => key,
        }
    }

    /// [`cache_key`](Self::cache_key) of a borrowed key.
    fn cache_key_of(&self, key: &K) -> K {
        match &self.cache_key {
            Some(f) => f(key),
            None => key.clone(),
        }
    }

    /// The time the cache needs: the clock only with a TTL.
    fn now(&self) -> Option<tokio::time::Instant> {
        self.config.cache_ttl.map(|_| tokio::time::Instant::now())
    }

    /// This loader's error of `kind`.
    fn error(&self, kind: LoadErrorKind<E>) -> LoadError<E> {
        LoadError::new(kind, StdArc::clone(&self.config.name))
    }

    /// `prime` and `prime_error`: stores `entry` unless `key` is present.
    fn prime(&self, key: K, entry: Result<V, LoadErrorKind<E>>) -> bool {
        let key = self.cache_key(key);
        let now = self.now();
        let mut inner = self.inner.lock();
        let Inner {
            collector, cache, ..
        } = &mut *inner;
        let Some(cache) = cache.as_mut() else {
            return false;
        };
        if cache.contains(&key, now) || collector.is_loading(&key) {
            return false;
        }
        cache.insert(key, entry, now);
        true
    }

    /// Puts `key` (already mapped) into a batch (or answers it from the cache).
    fn register(this: &Arc<Self>, key: &K) -> Registered<K, V, E> {
        let (cell, admission, full) = {
            let now = this.now();
            let mut inner = this.inner.lock();
            inner.keys_requested += 1;
            if let Some(hit) = inner.cache.as_mut().and_then(|c| c.get(key, now)) {
                let hit = hit.clone();
                inner.cache_hits += 1;
                return Registered::Cached(hit);
            }
            let (cell, admission, full) = inner
                .collector
                .request(key.clone(), |_| Arc::new(Cell::new()));
            if let Admission::Joined(_) = admission {
                inner.deduplicated += 1;
            }
            (cell, admission, full)
        };
        match admission {
            Admission::Joined(_) => {}
            Admission::Opened(id) => Self::spawn_worker(this, id, Arc::clone(&cell)),
            Admission::Added(_) => {}
        }
        if full {
            cell.seal();
        }
        Registered::Waiting(cell)
    }

    /// Starts batch `id`'s worker task.
    fn spawn_worker(this: &Arc<Self>, id: BatchId, cell: Arc<Cell<K, V, E>>) {
        let guard = WorkerGuard {
            shared: Arc::clone(this),
            cell,
            id,
            keys: None,
            in_flight: false,
            done: false,
            abort: LoadErrorKind::Aborted,
        };
        #[cfg(not(loom))]
        {
            let handle = tokio::runtime::Handle::try_current()
                .ok()
                .or_else(|| this.runtime.clone());
            match handle {
                Some(handle) => drop(handle.spawn(run_batch(guard))),
                None => {
                    let mut guard = guard;
                    guard.abort = LoadErrorKind::NoRuntime;
                    drop(guard);
                }
            }
        }
        #[cfg(loom)]
        {
            let worker = run_batch(guard);
            drop(crate::sync::thread::Builder::new().spawn(move || crate::sync::block_on(worker)));
        }
    }

    /// Publishes batch `id`'s answer: cache, in-flight bookkeeping, waiters.
    fn finish(&self, id: BatchId, keys: &[K], cell: &Cell<K, V, E>, answer: Answer<K, V, E>) {
        if matches!(answer, Answer::Failed(_)) {
            self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(loader = %self.config.name, batch = id, keys = keys.len(), "batch failed");
        } else {
            tracing::debug!(loader = %self.config.name, batch = id, keys = keys.len(), "batch answered");
        }
        {
            let now = self.now();
            let mut inner = self.inner.lock();
            let Inner {
                collector, cache, ..
            } = &mut *inner;
            let owned = collector.complete(id, keys);
            if let Some(cache) = cache.as_mut() {
                for key in owned {
                    if let Some(entry) = answer.cacheable(key, self.config.cache_errors) {
                        cache.insert(key.clone(), entry, now);
                    }
                }
            }
        }
        cell.publish(answer);
    }
}

/// Owns a batch from its creation: if the worker is dropped before it
/// answers (never spawned, the batch function panicked, the runtime shut
/// down), the batch fails with `abort` instead of leaving its waiters hanging.
struct WorkerGuard<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    shared: Arc<Shared<K, V, E>>,
    cell: Arc<Cell<K, V, E>>,
    id: BatchId,
    keys: Option<Vec<K>>,
    in_flight: bool,
    done: bool,
    abort: LoadErrorKind<E>,
}

impl<K, V, E> Drop for WorkerGuard<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let keys = match self.keys.take() {
            Some(keys) => keys,
            None => self
                .shared
                .inner
                .lock()
                .collector
                .take(self.id)
                .unwrap_or_default(),
        };
        if self.in_flight {
            self.shared
                .counters
                .in_flight_batches
                .fetch_sub(1, Ordering::Relaxed);
        }
        let abort = self.abort.clone();
        self.shared
            .finish(self.id, &keys, &self.cell, Answer::Failed(abort));
    }
}

/// The worker of one batch: window, slot, call, publish.
async fn run_batch<K, V, E>(mut guard: WorkerGuard<K, V, E>)
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    let shared = Arc::clone(&guard.shared);
    let cell = Arc::clone(&guard.cell);
    let id = guard.id;
    window(&cell, shared.config.delay).await;
    let keys = shared.inner.lock().collector.take(id).unwrap_or_default();
    guard.keys = Some(keys.clone());
    let _slot = match &shared.slots {
        // Never closed, so this only fails if it were; then run unbounded.
        Some(slots) => slots.acquire().await.ok(),
        None => None,
    };
    let n = keys.len();
    let c = &shared.counters;
    c.batches_dispatched.fetch_add(1, Ordering::Relaxed);
    c.keys_loaded.fetch_add(n as u64, Ordering::Relaxed);
    c.in_flight_batches.fetch_add(1, Ordering::Relaxed);
    guard.in_flight = true;
    tracing::debug!(loader = %shared.config.name, batch = id, keys = n, "batch dispatched");
    shared.batch_size.record(n as u64);
    let started = shared
        .batch_latency
        .enabled()
        .then(tokio::time::Instant::now);
    let answer = (shared.batch_fn)(keys).await;
    if let Some(started) = started {
        shared.batch_latency.record_duration(started.elapsed());
    }
    let keys = guard.keys.take().unwrap_or_default();
    guard.done = true;
    c.in_flight_batches.fetch_sub(1, Ordering::Relaxed);
    shared.finish(id, &keys, &cell, answer);
}

/// Waits until the batch is sealed (full) or its window is over: the
/// `delay` if any, then the rest of that scheduler turn (two yields, so
/// that batches closing together start in the order they opened).
async fn window<K, V, E>(cell: &Cell<K, V, E>, delay: Option<Duration>) {
    #[cfg(not(loom))]
    {
        let mut sleep = delay.map(|d| Box::pin(tokio::time::sleep(d)));
        // Two yields, not one: Tokio wakes the tasks that yielded in one
        // turn in one order (last first, today), so batches of several
        // loaders closing in the same turn would start in the reverse of
        // the order they opened. Two rounds of the same order restore it,
        // whichever order that is: batch functions are called in the order
        // their batches opened, as DataLoader calls them.
        let mut turn = std::pin::pin!(async {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        });
        std::future::poll_fn(|cx| {
            {
                let mut st = cell.state.lock();
                if st.sealed {
                    return Poll::Ready(());
                }
                match &st.worker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => st.worker = Some(cx.waker().clone()),
                }
            }
            // The delay, then one scheduler turn: keys requested at the
            // instant the delay ends (by tasks woken with this one) still
            // join, whichever of them the runtime runs first.
            if let Some(s) = sleep.as_mut() {
                if s.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                sleep = None;
            }
            turn.as_mut().poll(cx)
        })
        .await;
    }
    #[cfg(loom)]
    {
        // The worker is its own loom thread: whatever it finds is "this turn".
        let _ = (cell, delay);
    }
}

enum LoadState<K, V, E> {
    Start(K),
    Waiting {
        cell: Arc<Cell<K, V, E>>,
        key: K,
        /// Index in the cell's waiters, and a copy of the waker put there.
        slot: Option<(usize, Waker)>,
    },
    Done,
}

/// The future of [`Loader::load`].
///
/// `Send` and `Unpin`; dropping it is always safe (see the cancel-safety
/// notes on [`Loader::load`]).
///
/// # Examples
///
/// ```
/// use flowguard::batch::Loader;
/// use std::collections::HashMap;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let loader = Loader::new(|keys: Vec<u32>| async move {
///     Ok::<_, ()>(keys.into_iter().map(|k| (k, k * 10)).collect::<HashMap<_, _>>())
/// });
/// // Two `Load`s made before either is awaited share one batch.
/// let (a, b) = (loader.load(1), loader.load(2));
/// let (a, b) = futures::join!(a, b);
/// assert_eq!((a.unwrap(), b.unwrap()), (10, 20));
/// assert_eq!(loader.metrics().batches_dispatched, 1);
/// # }
/// ```
pub struct Load<K, V, E> {
    shared: Arc<Shared<K, V, E>>,
    state: LoadState<K, V, E>,
}

impl<K, V, E> fmt::Debug for Load<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            LoadState::Start(_) => "start",
            LoadState::Waiting { .. } => "waiting",
            LoadState::Done => "done",
        };
        f.debug_struct("Load").field("state", &state).finish()
    }
}

impl<K, V, E> Unpin for Load<K, V, E> {}

impl<K, V, E> Future for Load<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    type Output = Result<V, LoadError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let LoadState::Start(_) = this.state {
            let LoadState::Start(key) = std::mem::replace(&mut this.state, LoadState::Done) else {
                return Poll::Pending;
            };
            match Shared::register(&this.shared, &key) {
                Registered::Cached(answer) => {
                    return Poll::Ready(answer.map_err(|kind| this.shared.error(kind)));
                }
                Registered::Waiting(cell) => {
                    this.state = LoadState::Waiting {
                        cell,
                        key,
                        slot: None,
                    }
                }
            }
        }
        match &mut this.state {
            LoadState::Waiting { cell, key, slot } => {
                // Fast path: not answered yet and this very waker is registered.
                if let Some((_, registered)) = slot {
                    if registered.will_wake(cx.waker()) && !cell.answered.load(Ordering::Acquire) {
                        return Poll::Pending;
                    }
                }
                let mut st = cell.state.lock();
                if let Some(answer) = st.answer.as_ref() {
                    let out = answer.get(key);
                    drop(st);
                    this.state = LoadState::Done;
                    return Poll::Ready(out.map_err(|kind| this.shared.error(kind)));
                }
                let waker = cx.waker().clone();
                // Both copies of a replaced waker are dropped after the
                // lock: a waker's drop runs its owner's code, which may use
                // this batch (drop another of its loads, say) and so take
                // the lock again.
                let stale = match slot {
                    Some((i, registered)) => {
                        let listed = st
                            .waiters
                            .get_mut(*i)
                            .and_then(|w| w.replace(waker.clone()));
                        (listed, Some(std::mem::replace(registered, waker)))
                    }
                    None => {
                        *slot = Some((st.waiters.len(), waker.clone()));
                        st.waiters.push(Some(waker));
                        (None, None)
                    }
                };
                drop(st);
                drop(stale);
                Poll::Pending
            }
            // Polled after completion: stay pending rather than panic.
            _ => Poll::Pending,
        }
    }
}

impl<K, V, E> Drop for Load<K, V, E> {
    fn drop(&mut self) {
        if let LoadState::Waiting {
            cell,
            slot: Some((i, _)),
            ..
        } = &self.state
        {
            let listed = cell.state.lock().waiters.get_mut(*i).and_then(Option::take);
            // Dropped unlocked, as in `poll`.
            drop(listed);
        }
    }
}

/// The future of [`Loader::load_many`]: one answer per key, in key order.
///
/// # Cancel safety
///
/// As [`Load`], for each key.
///
/// # Examples
///
/// ```
/// use flowguard::batch::Loader;
/// use std::collections::HashMap;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let loader = Loader::new(|keys: Vec<u32>| async move {
///     Ok::<_, ()>(keys.into_iter().filter(|k| *k != 2).map(|k| (k, k)).collect::<HashMap<_, _>>())
/// });
/// let results = loader.load_many([1, 2, 3]).await; // in the keys' order
/// assert_eq!(results[0].as_ref().ok(), Some(&1));
/// assert!(results[1].as_ref().unwrap_err().is_not_found());
/// assert_eq!(results[2].as_ref().ok(), Some(&3));
/// # }
/// ```
pub struct LoadMany<K, V, E> {
    loads: Vec<Load<K, V, E>>,
    outputs: Vec<Option<Result<V, LoadError<E>>>>,
}

impl<K, V, E> fmt::Debug for LoadMany<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadMany")
            .field("keys", &self.loads.len())
            .field(
                "answered",
                &self.outputs.iter().filter(|o| o.is_some()).count(),
            )
            .finish()
    }
}

impl<K, V, E> Unpin for LoadMany<K, V, E> {}

impl<K, V, E> Future for LoadMany<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    type Output = Vec<Result<V, LoadError<E>>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut pending = false;
        for (load, out) in this.loads.iter_mut().zip(this.outputs.iter_mut()) {
            if out.is_none() {
                match Pin::new(load).poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        // Every load answered (the fallback below is unreachable).
        let name = this
            .loads
            .first()
            .map(|l| StdArc::clone(&l.shared.config.name));
        this.loads.clear();
        let aborted = || LoadError::new(LoadErrorKind::Aborted, name.clone().unwrap_or_default());
        Poll::Ready(
            std::mem::take(&mut this.outputs)
                .into_iter()
                .map(|o| o.unwrap_or_else(|| Err(aborted())))
                .collect(),
        )
    }
}
