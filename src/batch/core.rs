//! The batch-collection rules, as a plain state machine.
//!
//! No runtime, no clock, no locks: the shell calls these methods under its
//! lock and acts on what they return. Every rule about *which* keys go into
//! *which* batch lives here, so the property tests and the fuzz target drive
//! exactly this code.
//!
//! A batch moves through three stages:
//!
//! | stage | where it lives | keys can join? |
//! |---|---|---|
//! | open | `open` (at most one) | yes, new keys are appended |
//! | sealed (full, not yet taken by its task) | `sealed` | only duplicates |
//! | in flight (taken by its task, running) | only in `in_flight` | only duplicates |
//!
//! `in_flight` maps every key of every open, sealed or running batch to that
//! batch, which is what makes de-duplication against running batches work.
//! Each entry also says whether the batch's answer may be cached for the key:
//! [`Collector::clear`] takes that right away from a key whose batch has not
//! started (the key stays in the batch), and a later request gives it back.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// Identifies one batch for the lifetime of a loader (never reused).
pub(crate) type BatchId = u64;

/// What [`Collector::request`] did with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The key was already in this batch (open, sealed or running): the caller
    /// joins it and nothing is fetched twice.
    Joined(BatchId),
    /// The key opened a new batch: the caller must start that batch's task.
    Opened(BatchId),
    /// The key was appended to the open batch.
    Added(BatchId),
}

impl Admission {
    /// The batch the key belongs to.
    pub(crate) fn batch(self) -> BatchId {
        match self {
            Admission::Joined(id) | Admission::Opened(id) | Admission::Added(id) => id,
        }
    }
}

/// Where a key is being loaded.
#[derive(Debug)]
struct Loading<B> {
    id: BatchId,
    tag: B,
    /// Whether the batch's answer may be written to the cache for this key:
    /// false after a `clear` while the batch was pending, until the key is
    /// requested again.
    cache: bool,
}

#[derive(Debug)]
struct Open<K, B> {
    id: BatchId,
    tag: B,
    keys: Vec<K>,
}

/// The collector of keys into batches.
///
/// `B` is an opaque tag the shell attaches to each batch (its shared cell);
/// tests use `()` or plain numbers.
#[derive(Debug)]
pub(crate) struct Collector<K, B> {
    max_batch_size: usize,
    next_id: BatchId,
    open: Option<Open<K, B>>,
    /// Full batches whose task has not yet taken them.
    sealed: HashMap<BatchId, Vec<K>>,
    /// Every key of every batch not yet completed.
    in_flight: HashMap<K, Loading<B>>,
}

impl<K: Eq + Hash + Clone, B: Clone> Collector<K, B> {
    /// A collector that seals a batch once it holds `max_batch_size` keys.
    pub(crate) fn new(max_batch_size: usize) -> Self {
        Self {
            max_batch_size: max_batch_size.max(1),
            next_id: 0,
            open: None,
            sealed: HashMap::new(),
            in_flight: HashMap::new(),
        }
    }

    /// Puts `key` into a batch and returns that batch's tag and what happened.
    ///
    /// `new_tag` is called only when a new batch is opened. The second value
    /// is `true` when this key filled the batch: it is sealed and its task
    /// should take it now instead of waiting out its window.
    pub(crate) fn request(
        &mut self,
        key: K,
        new_tag: impl FnOnce(BatchId) -> B,
    ) -> (B, Admission, bool) {
        if let Some(loading) = self.in_flight.get_mut(&key) {
            // Requested again after a clear: as DataLoader caches the new
            // load's promise, this batch's answer is the key's again.
            loading.cache = true;
            return (loading.tag.clone(), Admission::Joined(loading.id), false);
        }
        let (tag, admission) = match &mut self.open {
            Some(open) => {
                open.keys.push(key.clone());
                (open.tag.clone(), Admission::Added(open.id))
            }
            None => {
                let id = self.next_id;
                self.next_id += 1;
                let tag = new_tag(id);
                let mut keys = Vec::with_capacity(self.max_batch_size.min(1024));
                keys.push(key.clone());
                self.open = Some(Open {
                    id,
                    tag: tag.clone(),
                    keys,
                });
                (tag, Admission::Opened(id))
            }
        };
        self.in_flight.insert(
            key,
            Loading {
                id: admission.batch(),
                tag: tag.clone(),
                cache: true,
            },
        );
        let full = match &self.open {
            Some(open) if open.keys.len() >= self.max_batch_size => {
                let open = self.open.take().expect("just matched");
                self.sealed.insert(open.id, open.keys);
                true
            }
            _ => false,
        };
        (tag, admission, full)
    }

    /// The batch's task takes its keys: the window is over, or it was sealed.
    ///
    /// Returns `None` if the batch was already taken (never happens for a
    /// well-behaved shell; harmless if it does).
    pub(crate) fn take(&mut self, id: BatchId) -> Option<Vec<K>> {
        if self.open.as_ref().is_some_and(|o| o.id == id) {
            return self.open.take().map(|o| o.keys);
        }
        self.sealed.remove(&id)
    }

    /// The batch `id` answered: its keys stop being in flight.
    ///
    /// Returns the keys whose answer may be written to a cache: those that
    /// still belonged to this batch (a key cleared with [`clear`](Self::clear)
    /// while running and requested again may by now belong to a newer batch)
    /// and were not cleared while it was pending without being requested
    /// again. Any other write (a prime after a clear) is newer than this
    /// answer, so it must not be overwritten.
    pub(crate) fn complete<'k>(&mut self, id: BatchId, keys: &'k [K]) -> Vec<&'k K> {
        let mut cacheable = Vec::with_capacity(keys.len());
        for key in keys {
            let ours = self.in_flight.get(key).is_some_and(|l| l.id == id);
            if ours && self.in_flight.remove(key).is_some_and(|l| l.cache) {
                cacheable.push(key);
            }
        }
        cacheable
    }

    /// Whether `key` is being loaded and its answer will be cached for it:
    /// it is in an open, sealed or running batch, and not cleared since it
    /// was last requested. (DataLoader's "the key's promise is cached".)
    pub(crate) fn is_loading(&self, key: &K) -> bool {
        self.in_flight.get(key).is_some_and(|l| l.cache)
    }

    /// Forgets `key` for the cache's sake.
    ///
    /// A key of a *running* batch is forgotten entirely: the next request
    /// starts a fresh fetch, and the running batch's answer is not cached for
    /// it. A key of a batch not yet started stays in it (its fetch has not
    /// happened, so it cannot be stale; a later request joins it), but that
    /// answer is cached only if the key is requested again first.
    pub(crate) fn clear(&mut self, key: &K) {
        let pending = match self.in_flight.get(key) {
            Some(l) => self.is_pending(l.id),
            None => return,
        };
        if pending {
            if let Some(l) = self.in_flight.get_mut(key) {
                l.cache = false;
            }
        } else {
            self.in_flight.remove(key);
        }
    }

    /// [`clear`](Self::clear) for every key.
    pub(crate) fn clear_all(&mut self) {
        let open = self.open.as_ref().map(|o| o.id);
        let sealed = &self.sealed;
        self.in_flight.retain(|_, l| {
            l.cache = false;
            Some(l.id) == open || sealed.contains_key(&l.id)
        });
    }

    fn is_pending(&self, id: BatchId) -> bool {
        self.open.as_ref().is_some_and(|o| o.id == id) || self.sealed.contains_key(&id)
    }

    /// Keys in open, sealed or running batches.
    pub(crate) fn keys_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Keys waiting in the open batch.
    pub(crate) fn open_len(&self) -> usize {
        self.open.as_ref().map_or(0, |o| o.keys.len())
    }
}

/// Which cached answer a full loader cache drops to make room.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use flowguard::batch::{CacheEviction, Loader};
///
/// let loader = Loader::builder(|keys: Vec<u32>| async move {
///     Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
/// })
/// .cache(1000)
/// .cache_eviction(CacheEviction::Lru)
/// .build()
/// .unwrap();
/// # let _ = loader;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheEviction {
    /// The entry stored first (the default): a hit is one hash lookup with
    /// no bookkeeping, and a key read often still ages out, so a value
    /// cannot stay forever by being popular.
    #[default]
    Fifo,
    /// The entry used least recently: a hit also moves the entry to the
    /// back (amortised O(1)), so hot keys stay cached.
    Lru,
}

struct Entry<V> {
    value: V,
    /// Matches the entry's latest place in `order`.
    seq: u64,
    /// When it was stored, for the TTL (`None` without one).
    stored: Option<Instant>,
}

/// A bounded map with FIFO or LRU eviction and an optional time to live.
///
/// Both orders are one queue of `(key, seq)` with lazy deletion: an entry's
/// current `seq` marks its live place; older places of the same key (a
/// replaced value, or an LRU hit that moved it) are skipped when they reach
/// the front and compacted away once they outnumber the live ones, so the
/// queue stays under `2 × max_entries + 1`.
///
/// Time is an argument, never read here: `now` is `Some` whenever a TTL is
/// set (the shell reads the clock only then). An entry stored at `t` is
/// absent from `t + ttl` on (dropped when next touched, or when it reaches
/// the front of the queue).
pub(crate) struct Cache<K, V> {
    max_entries: usize,
    eviction: CacheEviction,
    ttl: Option<Duration>,
    seq: u64,
    map: HashMap<K, Entry<V>>,
    order: VecDeque<(K, u64)>,
    evictions: u64,
    expirations: u64,
}

impl<K, V> std::fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("max_entries", &self.max_entries)
            .field("eviction", &self.eviction)
            .field("ttl", &self.ttl)
            .field("len", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V> Cache<K, V> {
    /// An empty cache holding at most `max_entries` (at least one).
    pub(crate) fn new(max_entries: usize, eviction: CacheEviction, ttl: Option<Duration>) -> Self {
        Self {
            max_entries: max_entries.max(1),
            eviction,
            ttl,
            seq: 0,
            map: HashMap::new(),
            order: VecDeque::new(),
            evictions: 0,
            expirations: 0,
        }
    }

    fn expired(&self, entry: &Entry<V>, now: Option<Instant>) -> bool {
        match (self.ttl, entry.stored, now) {
            (Some(ttl), Some(stored), Some(now)) => {
                stored.checked_add(ttl).is_some_and(|end| now >= end)
            }
            _ => false,
        }
    }

    /// The cached value for `key`, unless it expired (then it is dropped).
    /// Under LRU, a hit makes the entry the most recently used.
    pub(crate) fn get(&mut self, key: &K, now: Option<Instant>) -> Option<&V> {
        let entry = self.map.get(key)?;
        if self.expired(entry, now) {
            self.map.remove(key);
            self.expirations += 1;
            return None;
        }
        if self.eviction == CacheEviction::Lru {
            self.seq += 1;
            let seq = self.seq;
            self.order.push_back((key.clone(), seq));
            if let Some(entry) = self.map.get_mut(key) {
                entry.seq = seq;
            }
            self.compact();
        }
        self.map.get(key).map(|e| &e.value)
    }

    /// Whether `key` holds a live (unexpired) entry; changes no order.
    pub(crate) fn contains(&mut self, key: &K, now: Option<Instant>) -> bool {
        match self.map.get(key) {
            Some(entry) if self.expired(entry, now) => {
                self.map.remove(key);
                self.expirations += 1;
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Inserts or replaces `key` (as the newest entry), dropping expired
    /// entries at the front, then evicting past the bound.
    pub(crate) fn insert(&mut self, key: K, value: V, now: Option<Instant>) {
        self.seq += 1;
        let seq = self.seq;
        let stored = self.ttl.and(now);
        self.map.insert(key.clone(), Entry { value, seq, stored });
        self.order.push_back((key, seq));
        // Expired entries first: they are gone anyway.
        while let Some((k, s)) = self.order.front() {
            match self.map.get(k) {
                Some(e) if e.seq == *s && self.expired(e, now) => {
                    let (k, _) = self.order.pop_front().expect("front exists");
                    self.map.remove(&k);
                    self.expirations += 1;
                }
                Some(e) if e.seq == *s => break,
                // A stale place: skip it.
                _ => {
                    self.order.pop_front();
                }
            }
        }
        while self.map.len() > self.max_entries {
            match self.order.pop_front() {
                Some((k, s)) => {
                    if self.map.get(&k).is_some_and(|e| e.seq == s) {
                        self.map.remove(&k);
                        self.evictions += 1;
                    }
                }
                None => break,
            }
        }
        self.compact();
    }

    /// Drops stale places once they outnumber the live ones.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.max_entries {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|e| e.seq == *s));
        }
    }

    /// Removes `key`; returns whether it was cached (expired or not).
    pub(crate) fn remove(&mut self, key: &K) -> bool {
        self.map.remove(key).is_some()
    }

    /// Removes everything.
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    /// Entries held (expired ones not yet dropped included).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Entries evicted to keep the bound.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Entries dropped because their time to live ran out.
    pub(crate) fn expirations(&self) -> u64 {
        self.expirations
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn req(c: &mut Collector<u32, u64>, k: u32) -> (Admission, bool) {
        let (tag, a, full) = c.request(k, |id| id);
        assert_eq!(tag, a.batch());
        (a, full)
    }

    #[test]
    fn first_key_opens_then_keys_are_added() {
        let mut c = Collector::new(10);
        assert_eq!(req(&mut c, 1), (Admission::Opened(0), false));
        assert_eq!(req(&mut c, 2), (Admission::Added(0), false));
        assert_eq!(c.open_len(), 2);
        assert_eq!(c.take(0), Some(vec![1, 2]));
        assert_eq!(c.take(0), None);
    }

    #[test]
    fn duplicate_joins_open_and_running_batches() {
        let mut c = Collector::new(10);
        req(&mut c, 1);
        assert_eq!(req(&mut c, 1), (Admission::Joined(0), false));
        assert_eq!(c.take(0), Some(vec![1]));
        // Running now: a duplicate still joins, a new key opens batch 1.
        assert_eq!(req(&mut c, 1), (Admission::Joined(0), false));
        assert_eq!(req(&mut c, 2), (Admission::Opened(1), false));
        assert_eq!(c.complete(0, &[1]), vec![&1]);
        assert_eq!(req(&mut c, 1), (Admission::Added(1), false));
    }

    #[test]
    fn full_batch_is_sealed_and_next_key_opens_new_one() {
        let mut c = Collector::new(2);
        req(&mut c, 1);
        assert_eq!(req(&mut c, 2), (Admission::Added(0), true));
        assert_eq!(c.open_len(), 0);
        assert_eq!(req(&mut c, 2), (Admission::Joined(0), false));
        assert_eq!(req(&mut c, 3), (Admission::Opened(1), false));
        assert_eq!(c.take(0), Some(vec![1, 2]));
        assert_eq!(c.take(1), Some(vec![3]));
    }

    #[test]
    fn max_batch_size_one_seals_every_key() {
        let mut c = Collector::new(1);
        assert_eq!(req(&mut c, 1), (Admission::Opened(0), true));
        assert_eq!(req(&mut c, 2), (Admission::Opened(1), true));
    }

    #[test]
    fn clear_forgets_running_keys_only() {
        let mut c = Collector::new(10);
        req(&mut c, 1);
        c.clear(&1);
        assert_eq!(
            req(&mut c, 1),
            (Admission::Joined(0), false),
            "open batch kept"
        );
        c.take(0);
        c.clear(&1);
        assert_eq!(req(&mut c, 1), (Admission::Opened(1), false));
        // Batch 0 completes: key 1 now belongs to batch 1, so 0 must not own it.
        assert!(c.complete(0, &[1]).is_empty());
        assert_eq!(c.keys_in_flight(), 1);
        c.take(1);
        c.clear_all();
        assert_eq!(c.keys_in_flight(), 0);
    }

    #[test]
    fn a_pending_key_cleared_is_not_cached_unless_requested_again() {
        let mut c = Collector::new(10);
        req(&mut c, 1);
        req(&mut c, 2);
        req(&mut c, 3);
        assert!(c.is_loading(&1));
        c.clear(&1);
        c.clear(&2);
        assert!(!c.is_loading(&1), "a prime may store now");
        assert_eq!(req(&mut c, 2), (Admission::Joined(0), false));
        assert!(c.is_loading(&2), "requested again");
        assert_eq!(c.keys_in_flight(), 3, "still in the batch");
        assert_eq!(c.take(0), Some(vec![1, 2, 3]));
        assert_eq!(c.complete(0, &[1, 2, 3]), vec![&2, &3]);
        assert_eq!(c.keys_in_flight(), 0);
        // clear_all: the same for every pending key.
        req(&mut c, 4);
        c.clear_all();
        assert!(!c.is_loading(&4));
        assert_eq!(c.keys_in_flight(), 1);
        c.take(1);
        assert!(c.complete(1, &[4]).is_empty());
    }

    fn fifo(n: usize) -> Cache<u32, &'static str> {
        Cache::new(n, CacheEviction::Fifo, None)
    }

    #[test]
    fn cache_evicts_oldest_and_stays_bounded() {
        let mut cache = fifo(2);
        cache.insert(1, "a", None);
        cache.insert(2, "b", None);
        cache.insert(3, "c", None);
        assert_eq!(cache.get(&1, None), None);
        assert_eq!(cache.get(&3, None), Some(&"c"));
        assert_eq!(cache.evictions(), 1);
        for i in 0..100 {
            cache.insert(2, "x", None);
            cache.remove(&(i + 100));
        }
        assert!(cache.order.len() <= 5);
        assert_eq!(cache.len(), 2);
        assert!(cache.remove(&2));
        cache.clear();
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn fifo_ignores_hits_lru_keeps_the_recently_used() {
        for (eviction, survivor) in [(CacheEviction::Fifo, 2), (CacheEviction::Lru, 1)] {
            let mut cache = Cache::new(2, eviction, None);
            cache.insert(1, "a", None);
            cache.insert(2, "b", None);
            assert_eq!(cache.get(&1, None), Some(&"a")); // 1 is now the most recent (LRU)
            cache.insert(3, "c", None);
            assert!(cache.contains(&survivor, None), "{eviction:?}");
            assert!(cache.contains(&3, None));
            assert_eq!(cache.len(), 2);
            assert_eq!(cache.evictions(), 1);
        }
    }

    #[test]
    fn lru_order_stays_bounded_under_many_hits() {
        let mut cache = Cache::new(3, CacheEviction::Lru, None);
        for k in 0..3 {
            cache.insert(k, "v", None);
        }
        for i in 0..1000 {
            assert!(cache.get(&(i % 3), None).is_some());
            assert!(cache.order.len() <= 2 * 3 + 1, "{}", cache.order.len());
        }
        // Least recently used now: 1 (999 % 3 = 0 was last, then 2 before it).
        cache.insert(9, "new", None);
        assert!(!cache.contains(&1, None));
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn entries_expire_at_exactly_their_ttl() {
        let t0 = Instant::now();
        let at = |ms| Some(t0 + Duration::from_millis(ms));
        let mut cache = Cache::new(10, CacheEviction::Lru, Some(Duration::from_millis(100)));
        cache.insert(1, "a", at(0));
        cache.insert(2, "b", at(50));
        assert_eq!(cache.get(&1, at(99)), Some(&"a"));
        // A hit does not extend the life (the TTL counts from the store).
        assert_eq!(cache.get(&1, at(100)), None);
        assert_eq!(cache.expirations(), 1);
        assert!(cache.contains(&2, at(149)));
        assert!(!cache.contains(&2, at(150)));
        assert_eq!((cache.expirations(), cache.len()), (2, 0));
        // Replacing a value restarts its life.
        cache.insert(3, "c", at(200));
        cache.insert(3, "c2", at(290));
        assert_eq!(cache.get(&3, at(350)), Some(&"c2"));
    }

    #[test]
    fn inserting_drops_expired_entries_at_the_front() {
        let t0 = Instant::now();
        let at = |ms| Some(t0 + Duration::from_millis(ms));
        let mut cache = Cache::new(10, CacheEviction::Fifo, Some(Duration::from_millis(10)));
        for k in 0..5 {
            cache.insert(k, "old", at(0));
        }
        cache.insert(9, "new", at(10));
        assert_eq!(cache.len(), 1, "the five expired ones were dropped");
        assert_eq!((cache.expirations(), cache.evictions()), (5, 0));
    }

    #[test]
    fn without_a_ttl_time_is_ignored() {
        let mut cache = fifo(2);
        cache.insert(1, "a", Some(Instant::now()));
        let later = Instant::now() + Duration::from_secs(86_400);
        assert_eq!(cache.get(&1, Some(later)), Some(&"a"));
    }
}
