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
//!
//! Most pools queue everything at one priority, so the ordered map has a
//! fast lane in front of it: a FIFO of entries whose ranks only grow. An
//! entry that ranks after the lane's last one (the common case: same
//! priority, later sequence number; with aging, a key that only decreases
//! as starts go by) is appended to the lane with no allocation beyond the
//! ring buffer's amortised growth; only an entry that would jump ahead of
//! the lane's tail goes to the map. `pop` takes the smaller of the two
//! heads, so the order is exactly the map's. (Profiled: with a 1000-deep
//! queue the map's node allocations and moves were a third of a task's
//! cost.)

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

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
    /// Entries in increasing rank order, appended at the back.
    lane: VecDeque<(Rank, T)>,
    /// Entries that ranked before the lane's tail when pushed.
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
            lane: VecDeque::new(),
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
        match self.lane.back() {
            Some((last, _)) if rank < *last => {
                self.entries.insert(rank, item);
            }
            _ => self.lane.push_back((rank, item)),
        }
    }

    /// The entry to start next.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let from_lane = match (self.lane.front(), self.entries.first_key_value()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((lane, _)), Some((map, _))) => lane < map,
        };
        let item = if from_lane {
            self.lane.pop_front().map(|(_, item)| item)
        } else {
            self.entries.pop_first().map(|(_, item)| item)
        };
        self.popped += 1;
        item
    }

    /// Removes the first entry (in start order) that `matches`; does not
    /// count as a start.
    pub(crate) fn remove_first(&mut self, mut matches: impl FnMut(&T) -> bool) -> Option<T> {
        let in_lane = self.lane.iter().position(|(_, item)| matches(item));
        let in_map = self
            .entries
            .iter()
            .find(|(_, item)| matches(item))
            .map(|(rank, _)| *rank);
        match (in_lane, in_map) {
            (None, None) => None,
            (Some(i), Some(rank)) if rank < self.lane[i].0 => self.entries.remove(&rank),
            (Some(i), _) => self.lane.remove(i).map(|(_, item)| item),
            (None, Some(rank)) => self.entries.remove(&rank),
        }
    }

    /// Removes every entry, in start order; none counts as a start.
    pub(crate) fn drain(&mut self) -> Vec<T> {
        let mut lane = std::mem::take(&mut self.lane).into_iter().peekable();
        let mut map = std::mem::take(&mut self.entries).into_iter().peekable();
        let mut out = Vec::with_capacity(lane.len() + map.len());
        loop {
            let from_lane = match (lane.peek(), map.peek()) {
                (None, None) => return out,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((a, _)), Some((b, _))) => a < b,
            };
            let next = if from_lane { lane.next() } else { map.next() };
            out.extend(next.map(|(_, item)| item));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lane.len() + self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lane.is_empty() && self.entries.is_empty()
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

    /// The fast path is taken: work queued at one priority (or, with aging,
    /// at a constant priority) never touches the ordered map; only an entry
    /// that jumps ahead of the lane's tail does.
    #[test]
    fn one_priority_stays_in_the_lane() {
        for aging in [None, Some(3)] {
            let mut q = PriorityQueue::new();
            q.set_aging(aging);
            for i in 0..100 {
                q.push(0, i);
                if i % 3 == 0 {
                    q.pop();
                }
            }
            assert!(q.entries.is_empty(), "{aging:?}");
            q.push(5, 1000);
            assert_eq!(q.entries.len(), 1, "a higher priority goes to the map");
            if aging.is_none() {
                assert_eq!(q.pop(), Some(1000));
            }
        }
    }

    /// The fast lane and the map together hand entries out in exactly the
    /// order of one ordered collection, whatever the mix of priorities,
    /// aging, removals and drains.
    mod lane_matches_one_ordered_queue {
        use super::super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Push(i32),
            Pop,
            Remove(u32),
            Drain,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (-2i32..3).prop_map(Op::Push),
                4 => Just(Op::Pop),
                1 => (0u32..40).prop_map(Op::Remove),
                1 => Just(Op::Drain),
            ]
        }

        proptest! {
            #[test]
            fn same_order(aging in prop_oneof![Just(None), (1u64..4).prop_map(Some)],
                          ops in proptest::collection::vec(op(), 0..80)) {
                let mut q = PriorityQueue::new();
                q.set_aging(aging);
                // The model: (key, seq, id), handed out smallest (−key, seq) first.
                let mut model: Vec<(i128, u64, u32)> = Vec::new();
                let (mut popped, mut seq, mut next_id) = (0u64, 0u64, 0u32);
                let take_min = |model: &mut Vec<(i128, u64, u32)>| {
                    let i = (0..model.len()).min_by_key(|&i| (Reverse(model[i].0), model[i].1))?;
                    Some(model.remove(i).2)
                };
                for op in ops {
                    match op {
                        Op::Push(p) => {
                            let key = match aging {
                                None => i128::from(p),
                                Some(n) => i128::from(p) * i128::from(n) - i128::from(popped),
                            };
                            model.push((key, seq, next_id));
                            q.push(p, next_id);
                            seq += 1;
                            next_id += 1;
                        }
                        Op::Pop => {
                            let want = take_min(&mut model);
                            if want.is_some() {
                                popped += 1;
                            }
                            prop_assert_eq!(q.pop(), want);
                        }
                        Op::Remove(id) => {
                            let want = model.iter().position(|e| e.2 == id).map(|i| model.remove(i).2);
                            prop_assert_eq!(q.remove_first(|&x| x == id), want);
                        }
                        Op::Drain => {
                            let mut want = Vec::new();
                            while let Some(id) = take_min(&mut model) {
                                want.push(id);
                            }
                            prop_assert_eq!(q.drain(), want);
                        }
                    }
                    prop_assert_eq!(q.len(), model.len());
                    prop_assert_eq!(q.is_empty(), model.is_empty());
                }
            }
        }
    }
}
