//! [`KeyedRateLimiter`]: one GCRA bucket per key, sharded, bounded.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::hash::{BuildHasherDefault, Hasher};
use std::marker::PhantomData;
use std::time::Duration;

use tokio::time::Instant;

use super::error::{AcquireError, TryAcquireError};
use super::gcra::{Gcra, Refusal};
use super::quota::Quota;
use crate::clock::{Clock, FastClock, tokio_wake_at};
use crate::sync::{Arc, Mutex};
use crate::{ConfigError, ConfigErrorKind};

/// Default [`KeyedRateLimiterBuilder::max_keys`].
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// Default [`KeyedRateLimiterBuilder::shards`].
pub const DEFAULT_SHARDS: usize = 16;
const MAX_SHARDS: usize = 4096;
/// How many entries a full shard samples to choose whom to evict.
const EVICTION_SAMPLE: usize = 8;
/// A shard sweeps idle keys after at least this many operations (and at
/// least as many operations as it holds keys, so sweeping is O(1) amortised).
const MIN_SWEEP_INTERVAL: usize = 64;

/// A rate limiter with one bucket per key: per user, per IP, per tenant.
///
/// Every key gets the same [`Quota`]; an unseen key starts with a full
/// bucket. Clones share the buckets.
///
/// # Memory is bounded
///
/// * **Idle keys are evicted automatically.** A key whose bucket has refilled
///   completely is indistinguishable from an unseen key, so dropping it
///   changes no decision. Each shard sweeps its idle keys after as many
///   operations as it holds keys (at least 64): O(1) amortised per call, no
///   background task.
/// * **`max_keys` caps the map** (default [`DEFAULT_MAX_KEYS`]), split evenly
///   over the shards. **Policy when a shard is full:** the new key is
///   admitted and evicts the most-refilled of 8 sampled keys of that shard
///   (an idle one if the sample has one). The evicted key, should it come
///   back, starts with a full bucket, so a flood of distinct keys can forgive
///   another key at most its current debt (less than one burst), never more;
///   the limiter never refuses a key because of the cap, and memory never
///   exceeds `max_keys` entries.
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
    shards: Box<[Mutex<Shard<K>>]>,
    hasher: RandomState,
    origin: Instant,
    clock: C,
    max_keys: usize,
}

struct Shard<K> {
    /// key -> TAT (ns since origin).
    map: Table<K>,
    cap: usize,
    ops_since_sweep: usize,
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
    shards: usize,
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
}

impl<K: Hash + Eq + Clone> KeyedRateLimiterBuilder<K> {
    /// The most keys held at once (default [`DEFAULT_MAX_KEYS`]).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// How many independently locked shards (default [`DEFAULT_SHARDS`]).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
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
        if self.shards == 0 {
            return Err(ConfigError::new(
                C_NAME,
                "shards",
                ConfigErrorKind::Zero,
                "must be at least 1",
            ));
        }
        if self.shards > MAX_SHARDS {
            return Err(ConfigError::new(
                C_NAME,
                "shards",
                ConfigErrorKind::TooLarge,
                format!("must be at most {MAX_SHARDS}, got {}", self.shards),
            ));
        }
        if self.shards > self.max_keys {
            return Err(ConfigError::new(
                C_NAME,
                "shards",
                ConfigErrorKind::Conflict,
                format!(
                    "must not exceed max_keys ({}), got {}: every shard needs room for a key",
                    self.max_keys, self.shards
                ),
            ));
        }
        let base = self.max_keys / self.shards;
        let extra = self.max_keys % self.shards;
        let shards = (0..self.shards)
            .map(|i| {
                Mutex::new(Shard {
                    map: Table::default(),
                    cap: base + usize::from(i < extra),
                    ops_since_sweep: 0,
                    evicted_while_full: 0,
                })
            })
            .collect();
        let origin = clock.epoch();
        Ok(KeyedRateLimiter {
            inner: Arc::new(KeyedInner {
                gcra: self.quota.gcra(),
                shards,
                hasher: RandomState::new(),
                origin,
                clock,
                max_keys: self.max_keys,
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
            shards: DEFAULT_SHARDS,
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
    /// Costs a hash, a shard lock, a map lookup (and an insert for a new key).
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
        let hash = inner.hasher.hash_one(key);
        let mut shard = inner.shard(hash).lock();
        shard.tick(now);
        if let Some(tat) = shard.map.get_mut(hash, key) {
            return match g.take(*tat, now, n) {
                Ok(new) => {
                    *tat = new;
                    Ok(())
                }
                Err(Refusal::NotUntil(at)) => Err(TryAcquireError::NotUntil {
                    retry_after: inner.origin + Duration::from_nanos(at),
                }),
                Err(Refusal::Insufficient) => Err(TryAcquireError::InsufficientCapacity {
                    requested: n,
                    burst: g.burst,
                }),
            };
        }
        // An unseen key has a full bucket, and n <= burst.
        let new = g.take(0, now, n).unwrap_or(now);
        shard.insert(hash, key.clone(), new, now);
        Ok(())
    }

    /// Waits until `n` tokens are taken from `key`'s bucket.
    ///
    /// Sleeps (on `tokio::time`) until the exact retry instant and tries
    /// again; with a clock moved by hand
    /// ([`ManualClock`](crate::clock::ManualClock)) it parks until the clock
    /// is moved instead and tries again after each move. Unlike
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
        loop {
            // Made before the check, so that a move after it wakes us.
            let moved = clock.moves().map(|m| m.moved());
            match self.try_acquire(key, n) {
                Ok(()) => return Ok(()),
                Err(TryAcquireError::InsufficientCapacity { requested, burst }) => {
                    return Err(AcquireError::InsufficientCapacity { requested, burst });
                }
                Err(TryAcquireError::NotUntil { retry_after }) => match moved {
                    Some(moved) => moved.await,
                    None => tokio::time::sleep_until(tokio_wake_at(retry_after, clock.now())).await,
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
        let mut shard = inner.shard(hash).lock();
        if let Some(tat) = shard.map.get_mut(hash, key) {
            *tat = inner.gcra.refund(*tat, now, n);
        }
    }

    /// How many keys are held (idle keys not yet swept included).
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.lock().map.len()).sum()
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
            s.lock().sweep(now);
        }
    }

    /// Keys held, the cap, and evictions forced by the cap.
    #[doc(alias = "metrics")]
    pub fn snapshot(&self) -> KeyedSnapshot {
        let mut keys = 0;
        let mut evicted = 0;
        for s in self.inner.shards.iter() {
            let s = s.lock();
            keys += s.map.len();
            evicted += s.evicted_while_full;
        }
        KeyedSnapshot {
            keys,
            max_keys: self.inner.max_keys,
            evicted_while_full: evicted,
        }
    }
}

impl<K: Hash + Eq, C> KeyedInner<K, C> {
    #[inline]
    fn shard(&self, hash: u64) -> &Mutex<Shard<K>> {
        // Middle bits: the table uses the low ones for the slot and the top
        // seven as its tag.
        let i = ((hash >> 32) as usize) % self.shards.len();
        &self.shards[i]
    }
}

impl<K: Hash + Eq> Shard<K> {
    #[inline]
    fn tick(&mut self, now: u64) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep >= self.map.len().max(MIN_SWEEP_INTERVAL) {
            self.sweep(now);
        }
    }

    fn sweep(&mut self, now: u64) {
        self.ops_since_sweep = 0;
        self.map.retain(|tat| !Gcra::is_full(tat, now));
    }

    fn insert(&mut self, hash: u64, key: K, tat: u64, now: u64)
    where
        K: Clone,
    {
        if self.map.len() >= self.cap {
            // Sweeping a full shard early is still O(1) amortised: it
            // happens at most once per cap / 4 operations.
            if self.ops_since_sweep >= (self.map.len() / 4).max(MIN_SWEEP_INTERVAL) {
                self.sweep(now);
            }
            if self.map.len() >= self.cap {
                self.evict_one();
            }
        }
        self.map.insert(hash, key, tat);
    }

    #[cold]
    fn evict_one(&mut self) {
        if self.map.evict_most_refilled(EVICTION_SAMPLE) {
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

/// A hash table keyed by the key's SipHash, computed once per call and
/// shared with shard selection (a second hashing pass cost about a third of
/// a keyed check). Distinct keys with equal 64-bit hashes share a slot.
struct Table<K> {
    map: HashMap<u64, Slot<K>, BuildHasherDefault<PreHashed>>,
    len: usize,
}

enum Slot<K> {
    One(K, u64),
    Many(Vec<(K, u64)>),
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Self {
            map: HashMap::default(),
            len: 0,
        }
    }
}

impl<K: Eq> Table<K> {
    #[inline]
    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn get_mut(&mut self, hash: u64, key: &K) -> Option<&mut u64> {
        match self.map.get_mut(&hash)? {
            Slot::One(k, tat) => (k == key).then_some(tat),
            Slot::Many(v) => v.iter_mut().find(|(k, _)| k == key).map(|(_, tat)| tat),
        }
    }

    /// Inserts a key known to be absent.
    fn insert(&mut self, hash: u64, key: K, tat: u64) {
        self.len += 1;
        match self.map.remove(&hash) {
            None => {
                self.map.insert(hash, Slot::One(key, tat));
            }
            Some(Slot::One(k, t)) => {
                self.map.insert(hash, Slot::Many(vec![(k, t), (key, tat)]));
            }
            Some(Slot::Many(mut v)) => {
                v.push((key, tat));
                self.map.insert(hash, Slot::Many(v));
            }
        }
    }

    fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        let mut len = 0;
        self.map.retain(|_, slot| match slot {
            Slot::One(_, tat) => {
                let k = keep(*tat);
                len += usize::from(k);
                k
            }
            Slot::Many(v) => {
                v.retain(|(_, tat)| keep(*tat));
                len += v.len();
                !v.is_empty()
            }
        });
        self.len = len;
    }

    /// Removes the entry with the smallest TAT among the first `sample` slots.
    fn evict_most_refilled(&mut self, sample: usize) -> bool {
        let min_tat = |slot: &Slot<K>| match slot {
            Slot::One(_, tat) => *tat,
            Slot::Many(v) => v.iter().map(|(_, t)| *t).min().unwrap_or(u64::MAX),
        };
        let Some(hash) = self
            .map
            .iter()
            .take(sample)
            .min_by_key(|(_, slot)| min_tat(slot))
            .map(|(h, _)| *h)
        else {
            return false;
        };
        self.len -= 1;
        if let Some(Slot::Many(v)) = self.map.get_mut(&hash) {
            if let Some(i) = (0..v.len()).min_by_key(|&i| v[i].1) {
                v.swap_remove(i);
            }
            if !v.is_empty() {
                return true;
            }
        }
        self.map.remove(&hash);
        true
    }
}

/// The table's hasher: the key was already hashed, pass the hash through.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else rather than panic.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
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

    #[test]
    fn colliding_hashes_keep_keys_apart() {
        let mut t = Table::<&str>::default();
        t.insert(7, "a", 10);
        t.insert(7, "b", 20);
        t.insert(8, "c", 5);
        assert_eq!(t.len(), 3);
        assert_eq!(t.get_mut(7, &"a").copied(), Some(10));
        assert_eq!(t.get_mut(7, &"b").copied(), Some(20));
        assert_eq!(t.get_mut(7, &"c"), None);
        *t.get_mut(7, &"b").unwrap() = 21;
        assert!(t.evict_most_refilled(8)); // "c", tat 5
        assert_eq!((t.len(), t.get_mut(8, &"c")), (2, None));
        assert!(t.evict_most_refilled(8)); // "a", tat 10
        assert_eq!(t.get_mut(7, &"a"), None);
        assert_eq!(t.get_mut(7, &"b").copied(), Some(21));
        t.insert(7, "a", 1);
        t.retain(|tat| tat > 1);
        assert_eq!(t.len(), 1);
        assert!(t.evict_most_refilled(8));
        assert!(!t.evict_most_refilled(8));
        assert_eq!(t.len(), 0);
    }
}
