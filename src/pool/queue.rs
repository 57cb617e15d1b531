//! The order in which queued work starts: the pure rule, no locks, no clock.
//!
//! Highest priority first; first-in, first-out within a priority. Without
//! aging the order is strict: a lower-priority task waits as long as
//! higher-priority work is queued, however long that is.
//!
//! With aging every `n`, a queued task gains one priority level for every
//! `n` tasks the queue hands out while it waits. Its rank is then the
//! exact rational `priority + started_since_enqueue / n`; since every
//! waiting task ages at the same rate, comparing two ranks is comparing
//! `priority × n − started_at_enqueue`, a key that never changes while the
//! task waits, so the queue stays an ordered map with `O(log n)` push and
//! pop. The guarantee this buys: a task of priority `p` is never overtaken
//! by a task of priority `q > p` enqueued `(q − p) × n` or more starts
//! after it, so with bounded priorities nothing waits forever.

use std::cmp::Reverse;
use std::collections::BTreeMap;

/// The priority of work submitted without one.
pub(crate) const DEFAULT_PRIORITY: i32 = 0;

/// Where an entry sits: higher key first, then lower sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    key: Reverse<i128>,
    seq: u64,
}

/// A priority queue with FIFO ties and optional aging (see the module docs).
#[derive(Debug)]
pub(crate) struct PriorityQueue<T> {
    entries: BTreeMap<Rank, T>,
    /// Starts per priority level gained while waiting; `None`: no aging.
    aging: Option<u64>,
    /// Entries handed out by `pop` so far (the aging clock).
    popped: u64,
    seq: u64,
}

impl<T> PriorityQueue<T> {
    pub(crate) fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
            aging: None,
            popped: 0,
            seq: 0,
        }
    }

    /// Turns aging on (`Some(n)`, `n >= 1`; the builders check it) or off.
    /// Only meant before the first push: entries already queued keep the
    /// rank they were given.
    pub(crate) fn set_aging(&mut self, every: Option<u64>) {
        self.aging = every.filter(|&n| n > 0);
    }

    /// Queues `item` behind everything of a higher rank and every earlier
    /// entry of the same rank.
    pub(crate) fn push(&mut self, priority: i32, item: T) {
        let key = match self.aging {
            None => i128::from(priority),
            Some(n) => i128::from(priority) * i128::from(n) - i128::from(self.popped),
        };
        let rank = Rank {
            key: Reverse(key),
            seq: self.seq,
        };
        self.seq += 1;
        self.entries.insert(rank, item);
    }

    /// The entry to start next.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let (_, item) = self.entries.pop_first()?;
        self.popped += 1;
        Some(item)
    }

    /// Removes the first entry (in start order) that `matches`; does not
    /// count as a start.
    pub(crate) fn remove_first(&mut self, mut matches: impl FnMut(&T) -> bool) -> Option<T> {
        let rank = *self.entries.iter().find(|(_, item)| matches(item))?.0;
        self.entries.remove(&rank)
    }

    /// Removes every entry, in start order; none counts as a start.
    pub(crate) fn drain(&mut self) -> Vec<T> {
        std::mem::take(&mut self.entries).into_values().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn order(q: &mut PriorityQueue<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn highest_priority_first_fifo_within_a_priority() {
        let mut q = PriorityQueue::new();
        assert!(q.is_empty());
        q.push(0, "a0");
        assert!(!q.is_empty());
        q.push(5, "b5");
        q.push(-3, "c-3");
        q.push(5, "d5");
        q.push(0, "e0");
        assert_eq!(q.len(), 5);
        assert_eq!(order(&mut q), ["b5", "d5", "a0", "e0", "c-3"]);
        assert!(q.is_empty());
    }

    #[test]
    fn without_aging_low_priority_waits_behind_every_newcomer() {
        let mut q = PriorityQueue::new();
        q.push(0, "low");
        for _ in 0..100 {
            q.push(1, "high");
            assert_eq!(q.pop(), Some("high"));
        }
        assert_eq!(q.pop(), Some("low"));
    }

    #[test]
    fn aging_lets_a_waiting_task_pass_later_arrivals() {
        // One level per 2 starts: "low" (0) enqueued at 0 starts ties with
        // a priority-1 task enqueued 2 starts later, and wins the tie (FIFO).
        let mut q = PriorityQueue::new();
        q.set_aging(Some(2));
        q.push(1, "h0");
        q.push(0, "low");
        q.push(1, "h1");
        assert_eq!(q.pop(), Some("h0")); // 1 start
        q.push(1, "h2"); // key 2 - 1 = 1 > low's 0
        assert_eq!(q.pop(), Some("h1")); // 2 starts
        q.push(1, "h3"); // key 2 - 2 = 0 == low's 0, later seq
        assert_eq!(order(&mut q), ["h2", "low", "h3"]);
    }

    #[test]
    fn aging_keeps_fifo_within_a_priority() {
        let mut q = PriorityQueue::new();
        q.set_aging(Some(1));
        q.push(3, "a");
        q.push(3, "b");
        assert_eq!(q.pop(), Some("a"));
        q.push(3, "c");
        assert_eq!(order(&mut q), ["b", "c"]);
    }

    #[test]
    fn aging_of_zero_is_no_aging() {
        let mut q = PriorityQueue::new();
        q.set_aging(Some(0));
        q.push(0, "low");
        q.pop();
        q.push(0, "low");
        for _ in 0..10 {
            q.push(1, "high");
            assert_eq!(q.pop(), Some("high"));
        }
        assert_eq!(q.pop(), Some("low"));
    }

    #[test]
    fn extreme_priorities_do_not_overflow() {
        let mut q = PriorityQueue::new();
        q.set_aging(Some(u64::MAX));
        q.push(i32::MIN, "min");
        q.push(i32::MAX, "max");
        assert_eq!(order(&mut q), ["max", "min"]);
    }

    #[test]
    fn remove_and_drain_do_not_age_the_queue() {
        let mut q = PriorityQueue::new();
        q.set_aging(Some(1));
        q.push(0, "old");
        q.push(2, "gone");
        assert_eq!(q.remove_first(|s| *s == "gone"), Some("gone"));
        assert_eq!(q.remove_first(|s| *s == "absent"), None);
        // Had the removal counted as a start, "old" would have aged one
        // level and the tie would go to it.
        q.push(1, "new");
        assert_eq!(q.drain(), ["new", "old"]);
        q.push(0, "old");
        q.push(1, "new");
        assert_eq!(order(&mut q), ["new", "old"]);
    }
}
