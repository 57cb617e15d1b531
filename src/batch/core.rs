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

use std::collections::HashMap;
use std::hash::Hash;

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

/// A bounded map that evicts the oldest inserted entry when full (FIFO).
///
/// FIFO rather than LRU keeps a hit to one hash lookup with no bookkeeping;
/// DataLoader caches are per-request memoisation, where recency matters less
/// than a hard bound.
#[derive(Debug)]
pub(crate) struct Cache<K, V> {
    max_entries: usize,
    seq: u64,
    map: HashMap<K, (V, u64)>,
    /// Insertion order; entries whose seq no longer matches the map are stale.
    order: std::collections::VecDeque<(K, u64)>,
    evictions: u64,
}

impl<K: Eq + Hash + Clone, V> Cache<K, V> {
    /// An empty cache holding at most `max_entries` (at least one).
    pub(crate) fn new(max_entries: usize) -> Self {
        Self {
            max_entries: max_entries.max(1),
            seq: 0,
            map: HashMap::new(),
            order: std::collections::VecDeque::new(),
            evictions: 0,
        }
    }

    /// The cached value for `key`.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    /// Inserts or replaces `key`, evicting the oldest entries past the bound.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        self.seq += 1;
        let seq = self.seq;
        self.map.insert(key.clone(), (value, seq));
        self.order.push_back((key, seq));
        while self.map.len() > self.max_entries {
            match self.order.pop_front() {
                Some((k, s)) => {
                    if self.map.get(&k).is_some_and(|(_, cur)| *cur == s) {
                        self.map.remove(&k);
                        self.evictions += 1;
                    }
                }
                None => break,
            }
        }
        // Stale order entries (from replaced or cleared keys) are bounded by
        // compacting once they outnumber the live ones.
        if self.order.len() > 2 * self.max_entries {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|(_, cur)| cur == s));
        }
    }

    /// Removes `key`; returns whether it was cached.
    pub(crate) fn remove(&mut self, key: &K) -> bool {
        self.map.remove(key).is_some()
    }

    /// Removes everything.
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Entries evicted to keep the bound.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
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

    #[test]
    fn cache_evicts_oldest_and_stays_bounded() {
        let mut cache = Cache::new(2);
        cache.insert(1, "a");
        cache.insert(2, "b");
        cache.insert(3, "c");
        assert_eq!(cache.get(&1), None);
        assert_eq!(cache.get(&3), Some(&"c"));
        assert_eq!(cache.evictions(), 1);
        for i in 0..100 {
            cache.insert(2, "x");
            cache.remove(&(i + 100));
        }
        assert!(cache.order.len() <= 4);
        assert_eq!(cache.len(), 2);
        assert!(cache.remove(&2));
        cache.clear();
        assert_eq!(cache.len(), 0);
    }
}
