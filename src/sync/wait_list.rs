//! A list of tasks waiting for the next signal of something, with one entry
//! per waiting future however often it is polled, and none once it is
//! dropped.
//!
//! The crate's one mechanism for "wake everyone waiting when X happens"
//! (a manual clock moved, a pool gone idle, a debounced invocation done).
//! It is plain data, kept under its owner's lock, so that the check of the
//! condition and the registration happen under one lock; its owner wakes
//! what [`signal`](WaitList::signal) hands back *after* unlocking.
//!
//! Each future holds a [`Waiter`]: the list's generation when it started
//! waiting (a signal since then is the one it waited for) and its slot once
//! it has been pending. Polling again replaces the slot's waker rather than
//! adding one, so a future polled by many tasks, or many futures that were
//! dropped while waiting, cannot grow the list: memory is the most futures
//! pending at once since the last signal (a dropped one's slot is reused),
//! each operation O(1).

use std::task::{Poll, Waker};

/// Wakers of the futures waiting for the next signal.
#[derive(Debug, Default)]
pub(crate) struct WaitList {
    /// Bumped by every signal; a waiter made before the bump has seen it.
    generation: u64,
    /// One per pending waiter; `None` where its waiter left.
    slots: Vec<Option<Waker>>,
    /// Indices of `None` slots, for reuse.
    free: Vec<usize>,
}

/// One future's place in a [`WaitList`]: use it only with the list that
/// made it (a future that moves to another list makes a new one).
#[derive(Debug)]
pub(crate) struct Waiter {
    /// The list's generation when the waiter was made.
    since: u64,
    /// Its slot, once it has been pending (valid while `since` is current:
    /// a signal empties every slot).
    slot: Option<usize>,
}

impl WaitList {
    /// A list with nobody waiting.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A waiter for the first signal after this call. Make it *before*
    /// checking the condition it waits for (under the same lock), so that
    /// a signal after the check is not missed.
    pub(crate) fn waiter(&self) -> Waiter {
        Waiter {
            since: self.generation,
            slot: None,
        }
    }

    /// `Ready` once a signal came after `waiter` was made; else stores
    /// `waker` in the waiter's slot (taking one the first time) and returns
    /// `Pending` with the waker it replaced, which the caller drops after
    /// unlocking (dropping a waker runs its owner's code).
    pub(crate) fn poll(&mut self, waiter: &mut Waiter, waker: &Waker) -> (Poll<()>, Option<Waker>) {
        if waiter.since != self.generation {
            waiter.slot = None;
            return (Poll::Ready(()), None);
        }
        let stale = match waiter.slot {
            Some(i) => match &mut self.slots[i] {
                Some(w) if w.will_wake(waker) => None,
                slot => slot.replace(waker.clone()),
            },
            None => {
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i] = Some(waker.clone());
                        i
                    }
                    None => {
                        self.slots.push(Some(waker.clone()));
                        self.slots.len() - 1
                    }
                };
                waiter.slot = Some(i);
                None
            }
        };
        (Poll::Pending, stale)
    }

    /// Takes `waiter` off the list (its future is dropped or done) and
    /// returns its waker, for the caller to drop after unlocking.
    pub(crate) fn remove(&mut self, waiter: &mut Waiter) -> Option<Waker> {
        let i = waiter.slot.take()?;
        if waiter.since != self.generation {
            // A signal emptied the slots since; `i` may be someone else's.
            return None;
        }
        self.free.push(i);
        self.slots[i].take()
    }

    /// Every waiter made before now sees a signal: returns the wakers to
    /// wake, which the caller wakes after unlocking.
    pub(crate) fn signal(&mut self) -> Wakers {
        self.generation = self.generation.wrapping_add(1);
        self.free.clear();
        Wakers(std::mem::take(&mut self.slots))
    }

    /// Futures pending on the list now.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether no future is pending on the list.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The wakers a [`WaitList::signal`] took, to wake once unlocked.
#[derive(Debug, Default)]
#[must_use = "the waiters are woken only by `wake`"]
pub(crate) struct Wakers(Vec<Option<Waker>>);

impl Wakers {
    /// Wakes them all.
    pub(crate) fn wake(self) {
        self.0.into_iter().flatten().for_each(Waker::wake);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::StdArc as Arc;
    use crate::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn one_slot_per_waiter_however_many_wakers_poll_it() {
        let mut list = WaitList::new();
        let mut w = list.waiter();
        let wakers: Vec<_> = (0..10).map(|_| counting()).collect();
        for (_, waker) in &wakers {
            assert!(list.poll(&mut w, waker).0.is_pending());
        }
        assert_eq!(list.len(), 1);
        assert_eq!(list.slots.len(), 1);
        // Only the last waker is woken.
        list.signal().wake();
        let woken: Vec<_> = wakers
            .iter()
            .map(|(c, _)| c.0.load(Ordering::SeqCst))
            .collect();
        assert_eq!(woken, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(list.poll(&mut w, &wakers[0].1).0.is_ready());
    }

    #[test]
    fn a_replaced_waker_is_handed_back_and_the_same_one_is_kept() {
        let mut list = WaitList::new();
        let mut w = list.waiter();
        let (_, a) = counting();
        let (_, b) = counting();
        assert!(list.poll(&mut w, &a).1.is_none());
        assert!(
            list.poll(&mut w, &a).1.is_none(),
            "same waker: nothing replaced"
        );
        let stale = list.poll(&mut w, &b).1.expect("a replaced");
        assert!(stale.will_wake(&a));
    }

    #[test]
    fn removed_waiters_leave_no_entry_and_their_slots_are_reused() {
        let mut list = WaitList::new();
        let (_, waker) = counting();
        for _ in 0..100 {
            let mut w = list.waiter();
            let _ = list.poll(&mut w, &waker);
            assert!(list.remove(&mut w).is_some());
            assert!(list.remove(&mut w).is_none(), "removed once");
        }
        assert!(list.is_empty());
        assert_eq!(list.slots.len(), 1, "one slot, reused");
    }

    #[test]
    fn a_signal_readies_earlier_waiters_only() {
        let mut list = WaitList::new();
        let (count, waker) = counting();
        let mut before = list.waiter();
        let mut unpolled = list.waiter();
        let _ = list.poll(&mut before, &waker);
        list.signal().wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        let mut after = list.waiter();
        assert!(list.poll(&mut before, &waker).0.is_ready());
        assert!(
            list.poll(&mut unpolled, &waker).0.is_ready(),
            "made before: sees it unpolled"
        );
        assert!(list.poll(&mut after, &waker).0.is_pending());
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn removing_after_a_signal_touches_no_later_waiter() {
        let mut list = WaitList::new();
        let (_, waker) = counting();
        let mut old = list.waiter();
        let _ = list.poll(&mut old, &waker);
        list.signal().wake();
        // A later waiter takes slot 0 again.
        let mut new = list.waiter();
        let _ = list.poll(&mut new, &waker);
        assert!(list.remove(&mut old).is_none());
        assert_eq!(list.len(), 1, "the new waiter keeps its slot");
        assert!(list.remove(&mut new).is_some());
        assert!(list.is_empty());
    }

    /// One step against the list and its reference model.
    #[derive(Debug, Clone)]
    enum Op {
        /// A new waiter.
        Make,
        /// Poll waiter `i % len` with waker `k`.
        Poll(usize, usize),
        /// Drop waiter `i % len` (removes it).
        Drop(usize),
        Signal,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            2 => Just(Op::Make),
            4 => (any::<usize>(), 0_usize..4).prop_map(|(i, k)| Op::Poll(i, k)),
            2 => any::<usize>().prop_map(Op::Drop),
            1 => Just(Op::Signal),
        ]
    }

    /// The model's waiter: whether a signal came since it was made, and
    /// the waker it holds on the list (`None`: none, or not pending).
    struct Model {
        signalled: bool,
        held: Option<usize>,
    }

    proptest::proptest! {
        /// Against a model where each waiter holds at most one waker:
        /// `poll` is ready exactly when a signal came after the waiter was
        /// made; the list holds one entry per waiter pending on it; a
        /// signal wakes exactly the wakers the pending waiters last gave;
        /// a removal hands back exactly the waker its waiter held.
        #[test]
        fn wait_list_matches_a_one_waker_per_waiter_model(
            ops in proptest::collection::vec(op(), 0..64),
        ) {
            let counts: Vec<_> = (0..4).map(|_| counting()).collect();
            let mut list = WaitList::new();
            let mut live: Vec<(Waiter, Model)> = Vec::new();
            let mut woken = [0_usize; 4];
            for op in ops {
                match op {
                    Op::Make => live.push((list.waiter(), Model { signalled: false, held: None })),
                    Op::Poll(i, k) if !live.is_empty() => {
                        let n = live.len();
                        let (w, m) = &mut live[i % n];
                        let (ready, stale) = list.poll(w, &counts[k].1);
                        proptest::prop_assert_eq!(ready.is_ready(), m.signalled);
                        let replaced = if m.signalled {
                            None
                        } else {
                            m.held.replace(k).filter(|&old| old != k)
                        };
                        proptest::prop_assert_eq!(
                            stale.map(|w| counts.iter().position(|(_, c)| c.will_wake(&w))),
                            replaced.map(Some)
                        );
                    }
                    Op::Drop(i) if !live.is_empty() => {
                        let n = live.len();
                        let (mut w, m) = live.swap_remove(i % n);
                        let left = list.remove(&mut w);
                        proptest::prop_assert_eq!(
                            left.map(|w| counts.iter().position(|(_, c)| c.will_wake(&w))),
                            m.held.map(Some)
                        );
                    }
                    Op::Signal => {
                        list.signal().wake();
                        for (_, m) in &mut live {
                            m.signalled = true;
                            if let Some(k) = m.held.take() {
                                woken[k] += 1;
                            }
                        }
                    }
                    _ => {}
                }
                let pending = live.iter().filter(|(_, m)| m.held.is_some()).count();
                proptest::prop_assert_eq!(list.len(), pending);
                for (k, (count, _)) in counts.iter().enumerate() {
                    proptest::prop_assert_eq!(count.0.load(Ordering::SeqCst), woken[k]);
                }
            }
        }
    }
}
