//! A counter that many threads add to at once without sharing a cache line.

use crate::sync::CachePadded;
use crate::sync::atomic::{AtomicU64, Ordering};

/// Stripes at most: enough for 64 threads adding at once without sharing.
const MAX_STRIPES: usize = 64;

/// A sum kept in one cache-line-sized stripe per group of threads: `add`
/// writes only the calling thread's stripe, `sum` reads them all.
///
/// For numbers written on a hot path by every thread and read rarely (the
/// breaker's refusal count): with one shared atomic, every refusal on every
/// core would write the same line. Under loom there is a single stripe.
#[derive(Debug)]
pub(crate) struct StripedCounter {
    stripes: Box<[Stripe]>,
}

type Stripe = CachePadded<AtomicU64>;

impl StripedCounter {
    /// One stripe per core (a power of two, at most 64).
    pub(crate) fn new() -> Self {
        let n = if cfg!(loom) {
            1
        } else {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .next_power_of_two()
                .min(MAX_STRIPES)
        };
        Self {
            stripes: (0..n).map(|_| Stripe::default()).collect(),
        }
    }

    #[inline]
    pub(crate) fn add(&self, v: u64) {
        let i = thread_index() & (self.stripes.len() - 1);
        self.stripes[i].0.fetch_add(v, Ordering::Relaxed);
    }

    /// The total of every `add` that happened before (a snapshot, not
    /// atomic across stripes).
    pub(crate) fn sum(&self) -> u64 {
        self.stripes
            .iter()
            .fold(0u64, |s, x| s.wrapping_add(x.0.load(Ordering::Relaxed)))
    }
}

/// A small number per thread, handed out in order of first use.
#[cfg(not(loom))]
#[inline]
fn thread_index() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|c| {
        let i = c.get();
        if i != usize::MAX {
            return i;
        }
        let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        c.set(i);
        i
    })
}

#[cfg(loom)]
#[inline]
fn thread_index() -> usize {
    0
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn sums_every_add_from_every_thread() {
        let c = StripedCounter::new();
        assert!(c.stripes.len().is_power_of_two() && c.stripes.len() <= MAX_STRIPES);
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let c = &c;
                s.spawn(move || {
                    for _ in 0..1000 {
                        c.add(t + 1);
                    }
                });
            }
        });
        assert_eq!(c.sum(), 1000 * (1..=8).sum::<u64>());
        assert_eq!(std::mem::align_of::<Stripe>(), 128);
    }
}
