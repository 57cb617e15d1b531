//! [`KeyedRateLimiter`]: one GCRA bucket per key, sharded, bounded.

#[cfg(not(loom))]
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::time::Duration;

use hashbrown::HashTable;
use tokio::time::Instant;

use super::error::{AcquireError, TryAcquireError};
use super::gcra::{Gcra, Refusal, TIMER_SLACK_NANOS};
use super::quota::Quota;
use crate::clock::{Clock, FastClock, tokio_wake_at};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, RwLock, RwLockWriteGuard, ThreadCounter};
use crate::{ConfigError, ConfigErrorKind};

/// Default [`KeyedRateLimiterBuilder::max_keys`].
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// The fewest shards by default: [`KeyedRateLimiterBuilder::shards`]
/// defaults to four per core rounded up to a power of two, at least this
/// many (and never more than `max_keys`).
pub const DEFAULT_SHARDS: usize = 16;
const MAX_SHARDS: usize = 4096;
/// How many entries a full shard samples to choose whom to evict.
const EVICTION_SAMPLE: usize = 8;

/// A rate limiter with one bucket per key: per user, per IP, per tenant.
///
/// Every key gets the same [`Quota`]; an unseen key starts with a full
/// bucket. Clones share the buckets.
///
/// # Memory is bounded
///
/// * **Idle keys are evicted automatically.** A key whose bucket has refilled
///   completely is indistinguishable from an unseen key, so dropping it
///   changes no decision. A shard drops its idle keys when a new key needs
///   room: before its table would grow, and when it holds its share of
///   `max_keys`; at most once per a quarter of its keys in new keys, so
///   O(1) amortised per new key, no background task, and no work at all on
///   calls for keys already held. Until then [`len`](Self::len) counts
///   idle keys too; [`evict_idle`](Self::evict_idle) drops them at once.
/// * **`max_keys` caps the map** (default [`DEFAULT_MAX_KEYS`]), split evenly
///   over the shards. **Policy when a shard is full:** the new key is
///   admitted and evicts the most-refilled of 8 sampled keys of that shard
///   (an idle one if the sample has one). The evicted key, should it come
///   back, starts with a full bucket, so a flood of distinct keys can forgive
///   another key at most its current debt (less than one burst), never more;
///   the limiter never refuses a key because of the cap, and memory never
///   exceeds `max_keys` entries.
///
/// # Concurrency
///
/// Keys are spread over shards (four per core by default). A check of a
/// key its shard already holds takes the shard's reader-writer lock
/// *shared* and updates the key's bucket with a compare-and-swap on the
/// key's own atomic cell, so checks of held keys never wait for each other
/// (the design of governor's dashmap-backed keyed state). Only a new key
/// takes its shard's lock exclusively, to insert it and, when it needs
/// room, to sweep idle keys or evict one; a key is never removed while a
/// check is using its bucket.
///
/// The [`snapshot`](Self::snapshot) counts are exact and cost a check no
/// locked instruction: each thread counts in a slot of its own, which the
/// snapshot adds up.
///
/// # Examples
///
/// ```
/// use flowguard::rate::{KeyedRateLimiter, Quota};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let per_tenant = KeyedRateLimiter::new(Quota::per_second(2).unwrap());
/// assert!(per_tenant.try_acquire(&"acme", 2).is_ok());
/// assert!(per_tenant.try_acquire(&"acme", 1).is_err()); // acme is out
/// assert!(per_tenant.try_acquire(&"globex", 1).is_ok()); // globex is not
/// assert_eq!(per_tenant.len(), 2);
/// # }
/// ```
pub struct KeyedRateLimiter<K, C: Clock = FastClock> {
    inner: Arc<KeyedInner<K, C>>,
}

struct KeyedInner<K, C> {
    gcra: Gcra,
    shards: Box<[Shard<K>]>,
    hasher: KeyHasher,
    origin: Instant,
    clock: C,
    max_keys: usize,
    /// Checks admitted and refused, over all keys: a slot per thread, so
    /// that counting adds no locked instruction to a check and no line
    /// that every thread writes (read only by [`KeyedRateLimiter::snapshot`]).
    admitted: ThreadCounter,
    refused: ThreadCounter,
}

/// The keys' hasher: std's randomly keyed SipHash.
#[cfg(not(loom))]
type KeyHasher = RandomState;

/// Under loom, SipHash with fixed keys and a seed set by the model
/// ([`KeyedRateLimiterBuilder::hasher_seed`]). Loom replays a model's
/// recorded choices from the start on every iteration, so the model must
/// do the same steps in the same order each time. A random hasher gives
/// each iteration its own table layout, so a sweep visits the keys in
/// another order and a replayed choice of "which store this load reads"
/// lands on another key's cell: loom then reports values no execution can
/// produce (a cell read as 0, a TAT read stale under an exclusive lock).
#[cfg(loom)]
#[derive(Debug, Clone, Copy)]
struct KeyHasher(u64);

#[cfg(loom)]
impl BuildHasher for KeyHasher {
    type Hasher = std::hash::DefaultHasher;

    fn build_hasher(&self) -> Self::Hasher {
        use std::hash::Hasher;
        let mut h = std::hash::DefaultHasher::new();
        h.write_u64(self.0);
        h
    }
}

/// One shard: its keys behind a reader-writer lock.
///
/// A check of a key the shard holds takes the lock *shared* and moves the
/// key's TAT with a compare-and-swap on the key's own atomic cell, so
/// checks of held keys on one shard run side by side (as a dashmap read
/// guard plus governor's CAS cell do). The lock is taken exclusively only
/// to insert a new key, and with it to sweep or evict: no check holds a
/// cell while its key is removed, so a reclaimed key's next check starts
/// from a fresh cell and no token is lost or counted twice.
///
/// On cache lines of its own, so that threads working on neighbouring
/// shards do not contend for one line.
#[repr(align(128))] // two lines: adjacent-line prefetch pairs them on x86
struct Shard<K> {
    keys: RwLock<Keys<K>>,
}

/// What the exclusive lock guards: the table's shape and the sweep's books.
struct Keys<K> {
    /// key -> TAT (ns since origin) in an atomic cell.
    map: Table<K>,
    cap: usize,
    /// New keys inserted since the last sweep.
    inserts_since_sweep: usize,
    evicted_while_full: u64,
}

/// Builds a [`KeyedRateLimiter`] with a key cap and a shard count.
///
/// # Examples
///
/// ```
/// use flowguard::rate::{KeyedRateLimiter, Quota};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let limiter = KeyedRateLimiter::<u64>::builder(Quota::per_second(100).unwrap())
///     .max_keys(10_000)
///     .shards(8)
///     .build()
///     .unwrap();
/// assert_eq!(limiter.max_keys(), 10_000);
/// # }
/// ```
pub struct KeyedRateLimiterBuilder<K> {
    quota: Quota,
    max_keys: usize,
    /// `None`: four per core, see [`DEFAULT_SHARDS`].
    shards: Option<usize>,
    /// The fixed hasher's seed under loom.
    #[cfg(loom)]
    hasher_seed: u64,
    _key: PhantomData<fn() -> K>,
}

impl<K> fmt::Debug for KeyedRateLimiterBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiterBuilder")
            .field("quota", &self.quota)
            .field("max_keys", &self.max_keys)
            .field("shards", &self.shards)
            .finish()
    }
}

/// A plain-number picture of a [`KeyedRateLimiter`].
///
/// # Examples
///
/// ```
/// use flowguard::rate::{KeyedRateLimiter, Quota};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let limiter = KeyedRateLimiter::<u32>::builder(Quota::per_hour(1).unwrap())
///     .max_keys(2)
///     .shards(1)
///     .build()
///     .unwrap();
/// for user in 0..3 {
///     limiter.try_acquire(&user, 1).unwrap(); // the third evicts one
/// }
/// let s = limiter.snapshot();
/// assert_eq!((s.keys, s.max_keys, s.evicted_while_full), (2, 2, 1));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyedSnapshot {
    /// Keys currently held.
    pub keys: usize,
    /// The cap on keys.
    pub max_keys: usize,
    /// Keys evicted early because their shard was full (not counting idle sweeps).
    pub evicted_while_full: u64,
    /// Checks that took tokens, over all keys (`try_acquire` successes and
    /// each `acquire` that completed; `n == 0` is not counted).
    pub admitted: u64,
    /// Checks refused because the key's bucket was short (an `acquire`
    /// that waits counts one per try). Requests above the burst are refused
    /// before any key is looked at and are not counted.
    pub refused: u64,
}

impl<K: Hash + Eq + Clone> KeyedRateLimiterBuilder<K> {
    /// The most keys held at once (default [`DEFAULT_MAX_KEYS`]).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// How many shards, each with its own lock (default: four per core,
    /// rounded up to a power of two, at least [`DEFAULT_SHARDS`], at most
    /// 4096 and at most `max_keys`).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Under `--cfg loom` only: the seed of the keys' hasher (default 0),
    /// fixed so that every iteration of a loom model lays out the shard's
    /// table alike (loom replays its recorded choices and needs the model to
    /// be deterministic); a model loops over seeds to cover several
    /// layouts. Outside loom the hasher is std's randomly keyed one.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn hasher_seed(mut self, seed: u64) -> Self {
        self.hasher_seed = seed;
        self
    }

    /// Builds the limiter on the default [`FastClock`](crate::clock::FastClock).
    ///
    /// # Errors
    ///
    /// `max_keys` or `shards` is [`ConfigErrorKind::Zero`] when 0; `shards`
    /// is [`ConfigErrorKind::TooLarge`] above 4096 and
    /// [`ConfigErrorKind::Conflict`] above `max_keys`.
    pub fn build(self) -> Result<KeyedRateLimiter<K>, ConfigError> {
        self.build_with_clock(FastClock::new())
    }

    /// Builds the limiter reading time from `clock`.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_with_clock<C: Clock>(
        self,
        clock: C,
    ) -> Result<KeyedRateLimiter<K, C>, ConfigError> {
        const C_NAME: &str = "keyed_rate_limiter";
        if self.max_keys == 0 {
            return Err(ConfigError::new(
                C_NAME,
                "max_keys",
                ConfigErrorKind::Zero,
                "must be at least 1",
            ));
        }
        let shards = self
            .shards
            .unwrap_or_else(|| default_shards().min(self.max_keys));
        if shards == 0 {
            return Err(ConfigError::new(
                C_NAME,
                "shards",
                ConfigErrorKind::Zero,
                "must be at least 1",
            ));
        }
        if shards > MAX_SHARDS {
            return Err(ConfigError::new(
                C_NAME,
                "shards",
                ConfigErrorKind::TooLarge,
                format!("must be at most {MAX_SHARDS}, got {shards}"),
            ));
        }
        if shards > self.max_keys {
            return Err(ConfigError::new(
                C_NAME,
                "shards",
                ConfigErrorKind::Conflict,
                format!(
                    "must not exceed max_keys ({}), got {}: every shard needs room for a key",
                    self.max_keys, shards
                ),
            ));
        }
        let base = self.max_keys / shards;
        let extra = self.max_keys % shards;
        let shards = (0..shards)
            .map(|i| Shard {
                keys: RwLock::new(Keys {
                    map: Table::default(),
                    cap: base + usize::from(i < extra),
                    inserts_since_sweep: 0,
                    evicted_while_full: 0,
                }),
            })
            .collect();
        let origin = clock.epoch();
        Ok(KeyedRateLimiter {
            inner: Arc::new(KeyedInner {
                gcra: self.quota.gcra(),
                shards,
                #[cfg(not(loom))]
                hasher: RandomState::new(),
                #[cfg(loom)]
                hasher: KeyHasher(self.hasher_seed),
                origin,
                clock,
                max_keys: self.max_keys,
                admitted: ThreadCounter::new(),
                refused: ThreadCounter::new(),
            }),
        })
    }
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K, FastClock> {
    /// A keyed limiter on the Tokio clock with the default cap and shards.
    ///
    /// # Panics
    ///
    /// Never.
    pub fn new(quota: Quota) -> Self {
        Self::with_clock(quota, FastClock::new())
    }

    /// A builder to set `max_keys` and `shards`.
    pub fn builder(quota: Quota) -> KeyedRateLimiterBuilder<K> {
        KeyedRateLimiterBuilder {
            quota,
            max_keys: DEFAULT_MAX_KEYS,
            shards: None,
            #[cfg(loom)]
            hasher_seed: 0,
            _key: PhantomData,
        }
    }
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedRateLimiter<K, C> {
    /// A keyed limiter reading time from `clock`, default cap and shards.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::clock::ManualClock;
    /// use flowguard::rate::{KeyedRateLimiter, Quota};
    ///
    /// let clock = ManualClock::new();
    /// let limiter = KeyedRateLimiter::with_clock(Quota::per_second(1).unwrap(), clock.clone());
    /// assert!(limiter.try_acquire(&7u32, 1).is_ok());
    /// clock.advance(std::time::Duration::from_secs(1));
    /// assert!(limiter.try_acquire(&7u32, 1).is_ok());
    /// ```
    ///
    /// # Panics
    ///
    /// Never.
    pub fn with_clock(quota: Quota, clock: C) -> Self {
        match KeyedRateLimiter::<K>::builder(quota).build_with_clock(clock) {
            Ok(l) => l,
            // The defaults are valid by construction.
            Err(_) => unreachable!("default keyed limiter config is valid"),
        }
    }

    /// Takes `n` tokens from `key`'s bucket now, or says when to come back.
    ///
    /// Exact `retry_after` as [`RateLimiter::try_acquire`](super::RateLimiter::try_acquire).
    /// Costs a hash, a shard's lock taken shared, a map lookup, a
    /// compare-and-swap on the key's cell and a plain add to the calling
    /// thread's own count; a new key takes the shard's lock exclusively to
    /// insert it.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::NotUntil`] or, for `n` above the burst,
    /// [`TryAcquireError::InsufficientCapacity`].
    ///
    /// # Panics
    ///
    /// Never.
    pub fn try_acquire(&self, key: &K, n: u32) -> Result<(), TryAcquireError> {
        self.try_acquire_woken(key, n, Woken::No)
    }

    /// [`try_acquire`](Self::try_acquire) for a waiter woken after its
    /// tokens may have become ready: it takes them as of that instant
    /// ([`Gcra::charge_at`]), as `RateLimiter::acquire` charges its head.
    #[inline]
    fn try_acquire_woken(&self, key: &K, n: u32, woken: Woken) -> Result<(), TryAcquireError> {
        if n == 0 {
            return Ok(());
        }
        let inner = &*self.inner;
        let g = inner.gcra;
        if n > g.burst {
            return Err(TryAcquireError::InsufficientCapacity {
                requested: n,
                burst: g.burst,
            });
        }
        let now = inner.clock.nanos_since(inner.origin);
        let slack = match woken {
            Woken::No => 0,
            // Up to 1 ms late, the timer's rounding; later, a busy runtime.
            Woken::Timer => TIMER_SLACK_NANOS,
            // As if the clock had passed through every instant since the
            // last check, which the tokens were not ready at.
            Woken::Moved { checked } => now.saturating_sub(checked),
        };
        let hash = inner.hasher.hash_one(key);
        let shard = inner.shard(hash);
        {
            let keys = shard.keys.read();
            if let Some(cell) = keys.map.get(hash, key) {
                return inner.take(cell, now, n, slack);
            }
        }
        let mut keys = shard.write();
        // Another check may have inserted the key since the shared look.
        if let Some(cell) = keys.map.get(hash, key) {
            return inner.take(cell, now, n, slack);
        }
        // An unseen key has a full bucket, and n <= burst.
        let new = g.take(0, now, n).unwrap_or(now);
        keys.insert(hash, key.clone(), new, now, &inner.hasher);
        drop(keys);
        inner.admitted.add(1);
        Ok(())
    }

    /// Waits until `n` tokens are taken from `key`'s bucket.
    ///
    /// Sleeps (on `tokio::time`) until the exact retry instant and tries
    /// again; with a clock moved by hand
    /// ([`ManualClock`](crate::clock::ManualClock)) it parks until the clock
    /// is moved instead and tries again after each move. Woken by Tokio's
    /// timer, which rounds up to 1 ms, it takes its tokens as of the exact
    /// instant they were ready, as [`RateLimiter::acquire`](super::RateLimiter::acquire)
    /// does, so the rounding costs no rate. Unlike
    /// [`RateLimiter::acquire`](super::RateLimiter::acquire) waiters on one
    /// key are **not** queued FIFO among themselves (no per-key queue is
    /// kept, which keeps idle keys free to evict).
    ///
    /// # Errors
    ///
    /// [`AcquireError::InsufficientCapacity`] at once when `n` exceeds the burst.
    ///
    /// # Panics
    ///
    /// Only as [`tokio::time::sleep`] does: when it has to wait on Tokio's
    /// timer and is polled outside a Tokio runtime with time enabled. Tokens
    /// that are there are taken without a runtime, and with a clock moved by
    /// hand it never needs one.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: tokens are taken only at the moment the future completes.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::rate::{KeyedRateLimiter, Quota};
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let limiter = KeyedRateLimiter::new(Quota::per_second(1).unwrap());
    /// let start = Instant::now();
    /// limiter.acquire(&"k", 1).await.unwrap();
    /// limiter.acquire(&"k", 1).await.unwrap();
    /// assert_eq!(start.elapsed(), Duration::from_secs(1));
    /// # }
    /// ```
    pub async fn acquire(&self, key: &K, n: u32) -> Result<(), AcquireError> {
        let clock = &self.inner.clock;
        // Back-dating only after a sleep on Tokio's timer.
        let mut woken = Woken::No;
        loop {
            // On a clock moved by hand: a wait made before the check, so
            // that a move after it wakes us, and the time of the check (no
            // later than its own reading of the clock).
            let moved = clock
                .moves()
                .map(|m| (m.moved(), clock.nanos_since(self.inner.origin)));
            match self.try_acquire_woken(key, n, woken) {
                Ok(()) => return Ok(()),
                Err(TryAcquireError::InsufficientCapacity { requested, burst }) => {
                    return Err(AcquireError::InsufficientCapacity { requested, burst });
                }
                Err(TryAcquireError::NotUntil { retry_after }) => match moved {
                    Some((moved, checked)) => {
                        moved.await;
                        woken = Woken::Moved { checked };
                    }
                    None => {
                        tokio::time::sleep_until(tokio_wake_at(retry_after, clock.now())).await;
                        woken = Woken::Timer;
                    }
                },
                // Only Redis limiters refuse this way.
                #[cfg(feature = "redis")]
                Err(TryAcquireError::Unavailable { cause }) => {
                    return Err(AcquireError::Unavailable { cause });
                }
            }
        }
    }

    /// Gives `n` tokens back to `key`'s bucket (never beyond full).
    ///
    /// # Panics
    ///
    /// Never.
    pub fn refund(&self, key: &K, n: u32) {
        let inner = &*self.inner;
        let now = inner.clock.nanos_since(inner.origin);
        let hash = inner.hasher.hash_one(key);
        let keys = inner.shard(hash).keys.read();
        if let Some(cell) = keys.map.get(hash, key) {
            // Never fails: relaxed, as every access to a cell (the lock
            // orders a cell's insertion and removal against its uses).
            let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some(inner.gcra.refund(tat, now, n))
            });
        }
    }

    /// How many keys are held (idle keys not yet swept included).
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.keys.read().map.len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cap on keys.
    pub fn max_keys(&self) -> usize {
        self.inner.max_keys
    }

    /// The clock the limiter reads (for turning a refusal's instant into
    /// a wait on the same clock).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn clock(&self) -> &C {
        &self.inner.clock
    }

    /// The quota every key gets.
    pub fn quota(&self) -> Quota {
        Quota::from_gcra(self.inner.gcra)
    }

    /// Drops every idle key now (a full sweep; normally not needed).
    pub fn evict_idle(&self) {
        let now = self.inner.clock.nanos_since(self.inner.origin);
        for s in self.inner.shards.iter() {
            s.write().sweep(now);
        }
    }

    /// Keys held, the cap, and evictions forced by the cap.
    #[doc(alias = "metrics")]
    pub fn snapshot(&self) -> KeyedSnapshot {
        let mut snap = KeyedSnapshot {
            keys: 0,
            max_keys: self.inner.max_keys,
            evicted_while_full: 0,
            admitted: self.inner.admitted.sum(),
            refused: self.inner.refused.sum(),
        };
        for s in self.inner.shards.iter() {
            let keys = s.keys.read();
            snap.keys += keys.map.len();
            snap.evicted_while_full += keys.evicted_while_full;
        }
        snap
    }
}

impl<K, C> KeyedRateLimiter<K, C>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    C: Clock,
{
    /// Names the limiter: with the `metrics` feature its totals and key
    /// count are published under `name` (see `flowguard::metrics`; never
    /// a label per key, so the number of series stays bounded); without
    /// the feature, the name is not used. Chain it on the constructor or
    /// the builder's `build`; naming a limiter twice publishes it twice.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::rate::{KeyedRateLimiter, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let per_user = KeyedRateLimiter::<u64>::new(Quota::per_second(5).unwrap()).name("per_user");
    /// assert!(per_user.try_acquire(&1, 1).is_ok());
    /// assert_eq!(per_user.snapshot().admitted, 1);
    /// # }
    /// ```
    pub fn name(self, name: impl Into<String>) -> Self {
        let name: String = name.into();
        #[cfg(all(feature = "metrics", not(loom)))]
        {
            let weak = Arc::downgrade(&self.inner);
            crate::metrics::Handles::new("keyed_rate", &name).publish_each(
                [
                    "keys",
                    "max_keys",
                    "admitted_total",
                    "refused_total",
                    "evicted_total",
                ],
                move || {
                    let s = KeyedRateLimiter {
                        inner: weak.upgrade()?,
                    }
                    .snapshot();
                    Some([
                        Some(s.keys as f64),
                        Some(s.max_keys as f64),
                        Some(s.admitted as f64),
                        Some(s.refused as f64),
                        Some(s.evicted_while_full as f64),
                    ])
                },
            );
        }
        let _ = name;
        self
    }
}

impl<K: Hash + Eq, C> KeyedInner<K, C> {
    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K> {
        // Bits 24..56 scaled onto the shard count (a multiply, not a
        // division): the table uses the low bits for the slot and the top
        // seven as its tag, so the shard index must not come from either.
        let x = (hash >> 24) & 0xFFFF_FFFF;
        let i = ((x * self.shards.len() as u64) >> 32) as usize;
        &self.shards[i]
    }

    /// Takes `n <= burst` tokens from a held key's cell at `now`: a
    /// compare-and-swap loop, under the shard's lock (shared or exclusive)
    /// that keeps the cell in the table meanwhile.
    #[inline]
    fn take(&self, cell: &AtomicU64, now: u64, n: u32, slack: u64) -> Result<(), TryAcquireError> {
        let g = self.gcra;
        // Relaxed: the cell is the only data a check reads or writes
        // through it, and one location's read-modify-writes are totally
        // ordered whatever the ordering.
        let mut tat = cell.load(Ordering::Relaxed);
        loop {
            let at = if slack == 0 {
                now
            } else {
                g.charge_at(tat, now, n, slack)
            };
            match g.take(tat, at, n) {
                Ok(new) => {
                    match cell.compare_exchange_weak(tat, new, Ordering::Relaxed, Ordering::Relaxed)
                    {
                        Ok(_) => {
                            self.admitted.add(1);
                            return Ok(());
                        }
                        Err(current) => tat = current,
                    }
                }
                Err(refusal) => {
                    self.refused.add(1);
                    return Err(match refusal {
                        Refusal::NotUntil(at) => TryAcquireError::NotUntil {
                            retry_after: self.origin + Duration::from_nanos(at),
                        },
                        Refusal::Insufficient => TryAcquireError::InsufficientCapacity {
                            requested: n,
                            burst: g.burst,
                        },
                    });
                }
            }
        }
    }
}

/// How a keyed waiter came to check again (see
/// [`KeyedRateLimiter::acquire`]).
#[derive(Debug, Clone, Copy)]
enum Woken {
    /// A plain check, or the first one: charged now.
    No,
    /// Tokio's timer woke it at its tokens' instant, up to 1 ms late.
    Timer,
    /// A clock moved by hand moved past its last check, made at `checked`.
    Moved { checked: u64 },
}

#[cfg(all(test, not(loom)))]
thread_local! {
    /// Exclusive acquisitions of a shard's lock by this thread (tests only).
    static EXCLUSIVE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl<K> Shard<K> {
    /// The shard's lock taken exclusively: to insert, sweep or evict.
    #[inline]
    fn write(&self) -> RwLockWriteGuard<'_, Keys<K>> {
        #[cfg(all(test, not(loom)))]
        EXCLUSIVE.with(|c| c.set(c.get() + 1));
        self.keys.write()
    }
}

/// Four shards per core, a power of two, at least [`DEFAULT_SHARDS`] and at
/// most [`MAX_SHARDS`] (what dashmap picks, with a floor).
fn default_shards() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores.saturating_mul(4))
        .checked_next_power_of_two()
        .unwrap_or(MAX_SHARDS)
        .clamp(DEFAULT_SHARDS, MAX_SHARDS)
}

impl<K: Hash + Eq> Keys<K> {
    fn sweep(&mut self, now: u64) {
        self.inserts_since_sweep = 0;
        self.map.retain(|tat| !Gcra::is_full(tat, now));
    }

    fn insert(&mut self, hash: u64, key: K, tat: u64, now: u64, hasher: &KeyHasher)
    where
        K: Clone,
    {
        self.inserts_since_sweep += 1;
        let len = self.map.len();
        if len >= self.cap || len >= self.map.capacity() {
            // Full, or about to grow: drop the idle keys first. O(1)
            // amortised: a sweep of `len` keys happens at most once per
            // `len / 4` new keys.
            if self.inserts_since_sweep > len / 4 {
                self.sweep(now);
            }
            if self.map.len() >= self.cap {
                self.evict_one(hasher);
            }
        }
        self.map.insert(hash, key, tat, |k| hasher.hash_one(k));
    }

    #[cold]
    fn evict_one(&mut self, hasher: &KeyHasher) {
        if self
            .map
            .evict_most_refilled(EVICTION_SAMPLE, |k| hasher.hash_one(k))
        {
            self.evicted_while_full += 1;
            if self.evicted_while_full == 1 {
                tracing::debug!(
                    cap = self.cap,
                    "keyed rate limiter shard full: evicting keys"
                );
            }
        }
    }
}

/// The keys of a shard and their TATs, in a hash table that takes the
/// key's SipHash from the caller: it is computed once per call and shared
/// with shard selection (a second hashing pass cost about a third of a keyed
/// check), and entries are just `(key, TAT)` (16 bytes for a `u64` key, the
/// fewer cache lines the better with a million keys). Growing the table
/// rehashes the keys with the limiter's hasher.
struct Table<K> {
    table: HashTable<(K, AtomicU64)>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
        }
    }
}

impl<K: Hash + Eq> Table<K> {
    #[inline]
    fn len(&self) -> usize {
        self.table.len()
    }

    /// How many keys fit before the table grows.
    #[inline]
    fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// The key's TAT cell.
    #[inline]
    fn get(&self, hash: u64, key: &K) -> Option<&AtomicU64> {
        self.table.find(hash, |(k, _)| k == key).map(|(_, tat)| tat)
    }

    /// Inserts a key known to be absent. `hash_of` must give every key the
    /// hash it is looked up by (it rehashes the keys when the table grows).
    fn insert(&mut self, hash: u64, key: K, tat: u64, hash_of: impl Fn(&K) -> u64) {
        self.table
            .insert_unique(hash, (key, AtomicU64::new(tat)), |(k, _)| hash_of(k));
    }

    fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        // Relaxed: the caller holds the shard's lock exclusively.
        self.table
            .retain(|(_, tat)| keep(tat.load(Ordering::Relaxed)));
    }

    /// Removes the entry with the smallest TAT among the first `sample`.
    fn evict_most_refilled(&mut self, sample: usize, hash_of: impl Fn(&K) -> u64) -> bool {
        let Some((hash, at)) = self
            .table
            .iter()
            .take(sample)
            .min_by_key(|(_, tat)| tat.load(Ordering::Relaxed))
            .map(|e| (hash_of(&e.0), std::ptr::from_ref(e)))
        else {
            return false;
        };
        // The very entry found above: nothing moved in between.
        match self.table.find_entry(hash, |e| std::ptr::eq(e, at)) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }
}

impl<K, C: Clock> Clone for KeyedRateLimiter<K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, C: Clock> fmt::Debug for KeyedRateLimiter<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("quota", &Quota::from_gcra(self.inner.gcra))
            .field("max_keys", &self.inner.max_keys)
            .field("shards", &self.inner.shards.len())
            .field("clock", &self.inner.clock)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    impl<K: Hash + Eq> Table<K> {
        fn tat(&self, hash: u64, key: &K) -> Option<u64> {
            self.get(hash, key).map(|c| c.load(Ordering::Relaxed))
        }
    }

    #[test]
    fn colliding_hashes_keep_keys_apart() {
        // Keys 1 and 2 collide on all 64 bits; the rest do not.
        let h = |k: &u64| if *k <= 2 { 7 } else { k << 20 };
        let mut t = Table::<u64>::default();
        t.insert(7, 1, 10, h);
        t.insert(7, 2, 20, h);
        t.insert(h(&3), 3, 5, h);
        for k in 100..300 {
            t.insert(h(&k), k, 99, h); // grows the table: rehashed with `h`
        }
        t.retain(|tat| tat != 99);
        assert_eq!(t.len(), 3);
        assert_eq!(t.tat(7, &1), Some(10));
        assert_eq!(t.tat(7, &2), Some(20));
        assert_eq!(t.tat(h(&3), &3), Some(5));
        t.get(7, &2).unwrap().store(21, Ordering::Relaxed);
        t.retain(|tat| tat > 5);
        assert_eq!((t.len(), t.tat(h(&3), &3)), (2, None));
        assert_eq!(t.tat(7, &2), Some(21));
        assert_eq!(t.tat(7, &1), Some(10));
    }

    #[test]
    fn eviction_takes_the_most_refilled_of_the_sample() {
        let h = RandomState::new();
        let mut t = Table::<u32>::default();
        let hash_of = |k: &u32| h.hash_one(k);
        for (k, tat) in [(1u32, 30u64), (2, 10), (3, 20)] {
            t.insert(h.hash_one(k), k, tat, hash_of);
        }
        assert!(t.evict_most_refilled(8, hash_of));
        assert_eq!(t.len(), 2);
        assert_eq!(t.tat(h.hash_one(2u32), &2), None, "smallest TAT goes");
        assert!(t.evict_most_refilled(8, hash_of));
        assert_eq!(t.tat(h.hash_one(3u32), &3), None);
        assert_eq!(t.tat(h.hash_one(1u32), &1), Some(30));
        assert!(t.evict_most_refilled(8, hash_of));
        assert!(!t.evict_most_refilled(8, hash_of));
        assert_eq!(t.len(), 0);
    }

    /// The exclusive lock is taken once per new key (insert, with its
    /// sweep or eviction), and never by a check, refusal or refund of a
    /// held key.
    #[test]
    fn only_new_keys_take_a_shard_exclusively() {
        let exclusive = || EXCLUSIVE.with(std::cell::Cell::get);
        let clock = crate::clock::ManualClock::new();
        let l = KeyedRateLimiter::<u64>::builder(Quota::per_hour(2).unwrap())
            .max_keys(1000)
            .shards(1)
            .build_with_clock(clock.clone())
            .unwrap();
        let start = exclusive();
        for k in 0..1000 {
            l.try_acquire(&k, 1).unwrap();
        }
        assert_eq!(exclusive() - start, 1000);
        for k in 0..1000 {
            l.try_acquire(&k, 1).unwrap(); // admitted: the last token
            assert!(l.try_acquire(&k, 1).is_err()); // refused
            l.refund(&k, 1);
        }
        let s = l.snapshot();
        assert_eq!((s.admitted, s.refused, s.keys), (2000, 1000, 1000));
        assert_eq!(exclusive() - start, 1000, "no held key took it");
        // The cap: a new key evicts one, still one exclusive lock each.
        for k in 1000..1100 {
            l.try_acquire(&k, 1).unwrap();
        }
        assert_eq!(exclusive() - start, 1100);
        assert_eq!(l.snapshot().evicted_while_full, 100);
    }

    /// The two orders a check of an idle key and a new key's sweep can
    /// take the shard's lock in, made by hand, on 64 limiters (each with its
    /// own random hasher, so the sweep visits the two idle keys in either
    /// order): the check first makes its key busy and the sweep keeps it
    /// with its debt; the sweep first drops it and the check starts a fresh
    /// bucket, which is what the dropped one held. Either way the key's
    /// next check is refused, idle key 2 is swept and nothing is evicted.
    #[test]
    fn a_sweep_racing_a_check_loses_no_debt_in_either_order() {
        for check_first in [true, false] {
            for _ in 0..64 {
                let clock = crate::clock::ManualClock::new();
                let l = KeyedRateLimiter::<u8>::builder(Quota::per_hour(1).unwrap())
                    .shards(1)
                    .max_keys(2)
                    .build_with_clock(clock.clone())
                    .unwrap();
                l.try_acquire(&1, 1).unwrap();
                l.try_acquire(&2, 1).unwrap();
                clock.advance(Duration::from_secs(3600)); // both idle
                let before = EXCLUSIVE.with(std::cell::Cell::get);
                if check_first {
                    l.try_acquire(&1, 1).unwrap(); // busy again, shared lock
                    l.try_acquire(&3, 1).unwrap(); // sweeps key 2 only
                } else {
                    l.try_acquire(&3, 1).unwrap(); // sweeps keys 1 and 2
                    l.try_acquire(&1, 1).unwrap(); // re-inserted, full bucket
                }
                let exclusive = EXCLUSIVE.with(std::cell::Cell::get) - before;
                assert_eq!(exclusive, if check_first { 1 } else { 2 });
                assert!(l.try_acquire(&1, 1).is_err(), "key 1's debt kept");
                let s = l.snapshot();
                assert_eq!((s.keys, s.evicted_while_full), (2, 0), "swept, not evicted");
                assert!(l.try_acquire(&2, 1).is_ok(), "key 2 was idle: swept");
            }
        }
    }

    #[test]
    fn shard_index_is_in_range_and_spread() {
        let l = KeyedRateLimiter::<u64>::builder(Quota::per_second(1).unwrap())
            .shards(7)
            .build_with_clock(crate::clock::ManualClock::new())
            .unwrap();
        let mut seen = [0usize; 7];
        for k in 0..7000u64 {
            let hash = l.inner.hasher.hash_one(k);
            let s = l.inner.shard(hash);
            let i = l
                .inner
                .shards
                .iter()
                .position(|p| std::ptr::eq(p, s))
                .unwrap();
            seen[i] += 1;
        }
        assert!(seen.iter().all(|&n| n > 700), "{seen:?}");
        assert!(default_shards().is_power_of_two());
        assert!((DEFAULT_SHARDS..=MAX_SHARDS).contains(&default_shards()));
    }
}
